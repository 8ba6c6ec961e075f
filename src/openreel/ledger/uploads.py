"""Upload records, and the sweep that removes them (and their files) once they expire."""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import unquote

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openreel.ledger.jobs import ACTIVE
from openreel.ledger.tables import Job, Upload
from openreel.storage.base import Storage


def by_storage_key(session: Session, key: str) -> Upload | None:
    return session.scalars(select(Upload).where(Upload.storage_key == key)).first()


def held(session: Session, account_id: str, now: datetime) -> int:
    """The bytes of the account's uploads that have not expired."""
    live = (Upload.account_id == account_id, Upload.expires_at > now)
    return int(session.scalar(select(func.coalesce(func.sum(Upload.byte_size), 0)).where(*live)) or 0)


def freed_by(session: Session, account_id: str, now: datetime, size: int) -> datetime | None:
    """When the account's unexpired uploads, expiring in turn, will have freed ``size`` bytes (None:
    never, they hold fewer)."""
    freed = (
        select(
            Upload.expires_at,
            func.sum(Upload.byte_size).over(order_by=(Upload.expires_at, Upload.id)).label("freed"),
        )
        .where(Upload.account_id == account_id, Upload.expires_at > now)
        .subquery()
    )
    return session.scalar(
        select(freed.c.expires_at).where(freed.c.freed >= size).order_by(freed.c.freed).limit(1)
    )


def sweep_expired(session: Session, storage: Storage, now: datetime) -> int:
    """Remove expired uploads, except those a queued or running job still names (a job's images are
    uploads, and a job may wait in the queue longer than a link lives): they go once it has ended."""
    expired = session.scalars(select(Upload).where(Upload.expires_at < now)).all()
    if not expired:
        return 0
    # Unquoted: a link names its key percent-encoded or not (``Signer.own_key`` unquotes it).
    named = unquote(
        " ".join(json.dumps(spec) for spec in session.scalars(select(Job.spec).where(Job.status.in_(ACTIVE))))
    )
    gone = [upload for upload in expired if upload.storage_key not in named]
    for upload in gone:
        storage.delete(upload.storage_key)
        session.delete(upload)
    return len(gone)
