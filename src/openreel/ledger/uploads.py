"""Upload records, and the sweep that removes them (and their files) once they expire."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from openreel.ledger.tables import Upload
from openreel.storage.base import Storage


def by_storage_key(session: Session, key: str) -> Upload | None:
    return session.scalars(select(Upload).where(Upload.storage_key == key)).first()


def sweep_expired(session: Session, storage: Storage, now: datetime) -> int:
    expired = session.scalars(select(Upload).where(Upload.expires_at < now)).all()
    for upload in expired:
        storage.delete(upload.storage_key)
        session.delete(upload)
    return len(expired)
