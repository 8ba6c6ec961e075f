"""The servers sharing this database, as each reports itself every lease round."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openreel.ledger.tables import Server, database_now

# Reports older than this are deleted by the housekeeping: a server that stopped says nothing (its
# report counts for a lease's time only).
FORGOTTEN_AFTER = timedelta(days=1)


def report(session: Session, owner: str, engine_failed: bool) -> None:
    now = database_now(session)
    server = session.get(Server, owner)
    if server is None:
        session.add(Server(owner=owner, engine_failed=engine_failed, seen_at=now))
    else:
        server.engine_failed, server.seen_at = engine_failed, now


def forget_stopped(session: Session, now: datetime) -> None:
    session.execute(delete(Server).where(Server.seen_at < now - FORGOTTEN_AFTER))


def others_render(session: Session, owner: str, within_s: float) -> bool:
    """Whether another server whose engine has not failed (it renders, or is loading) has reported in
    the last ``within_s`` seconds."""
    since = database_now(session) - timedelta(seconds=within_s)
    found = session.scalar(
        select(Server.owner)
        .where(Server.owner != owner, Server.engine_failed.is_(False), Server.seen_at >= since)
        .limit(1)
    )
    return found is not None
