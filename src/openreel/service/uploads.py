"""Storing user files (uploads, inline images of other wire protocols) as short-lived uploads.

Every surface that receives bytes goes through ``store_upload``, so type sniffing, size limits,
expiry and the signed URL that the engine later resolves are the same everywhere.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from sqlalchemy import delete
from sqlalchemy.orm import Session

from openreel.ledger import credits, uploads
from openreel.ledger.tables import Upload, new_id, utcnow
from openreel.service.services import Services
from openreel.service.views import iso
from openreel.storage.images import InputError, opened_image
from openreel.storage.sniff import SNIFF_BYTES, SUPPORTED, sniff

log = logging.getLogger("openreel.uploads")

CHUNK = 1024 * 1024


class UploadRejected(Exception):
    """The file's type is not accepted or it is too large; the message says which."""


class UploadQuotaFull(Exception):
    """The account's unexpired uploads leave no room for this one; some expire in ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def store_upload(
    svc: Services, account_id: str, stream: BinaryIO, base_url: str, *, within_quota: bool = False
) -> dict[str, Any]:
    """Save ``stream`` as an upload of the account; returns the wire ``Upload`` object. ``within_quota``:
    refused (``UploadQuotaFull``) where the account's unexpired uploads would pass
    ``max_account_upload_bytes`` with it; checked before the bytes are stored and again, under the
    account's lock, as its row goes in, so that concurrent uploads cannot pass it together."""
    quota = svc.settings.max_account_upload_bytes if within_quota else 0
    head = stream.read(SNIFF_BYTES)
    kind = sniff(head)
    if kind is None:
        raise UploadRejected(f"Unsupported file type; accepted: {SUPPORTED}")
    limit = (
        svc.settings.max_upload_video_bytes if kind.kind == "video" else svc.settings.max_upload_image_bytes
    )
    # Every stream here is whole already (a received body spooled, bytes fetched or decoded): its size
    # is known, and a file refused for it is refused before anything is staged.
    here = stream.tell()
    size = len(head) + stream.seek(0, os.SEEK_END) - here
    stream.seek(here)
    if size > limit:
        raise UploadRejected(f"{kind.kind} files are limited to {limit} bytes")
    if quota:
        with svc.db.read() as session:
            _check_room(session, account_id, size, quota, utcnow())
    upload_id = new_id()
    storage_key = f"uploads/{upload_id}.{kind.extension}"
    staged = svc.storage.staging_path(storage_key)
    now = utcnow()
    expires = now + timedelta(seconds=svc.settings.upload_ttl_s)
    try:
        with staged.open("wb") as out:
            out.write(head)
            shutil.copyfileobj(stream, out, CHUNK)
        if kind.kind == "image":  # its size read now: a job would fail on it, after charging
            try:
                opened_image(staged, source="the image", max_pixels=svc.settings.max_image_pixels).close()
            except InputError as exc:
                raise UploadRejected(str(exc)) from exc
        # The row before the file: a crash between the two leaves a row naming no file, which the sweep
        # removes when it expires; a file stored first would be named by nothing, for good.
        with svc.db.session() as session:
            if quota:
                credits.lock_totals(session, [account_id])
                _check_room(session, account_id, size, quota, utcnow())
            session.add(
                Upload(
                    id=upload_id,
                    account_id=account_id,
                    kind=kind.kind,
                    content_type=kind.content_type,
                    byte_size=size,
                    storage_key=storage_key,
                    created_at=now,
                    expires_at=expires,
                )
            )
        try:
            svc.storage.commit(staged, storage_key)
        except Exception:
            _take_back(svc, upload_id, storage_key)
            raise
    finally:
        if staged.exists():
            os.unlink(staged)
    return {
        "id": upload_id,
        "url": base_url + svc.signer.path(storage_key, int(expires.timestamp())),
        "kind": kind.kind,
        "contentType": kind.content_type,
        "byteSize": size,
        "expiresAt": iso(expires),
    }


def _check_room(session: Session, account_id: str, size: int, quota: int, now: datetime) -> None:
    if size > quota:  # never, however long the client waits
        raise UploadRejected(f"an account's uploads may hold {quota} bytes in all; this file is {size}")
    held = uploads.held(session, account_id, now)
    if held + size <= quota:
        return
    full = (
        f"this account's unexpired uploads hold {held} of the {quota} bytes it may keep, too many for "
        f"this file of {size}"
    )
    room_at = uploads.freed_by(session, account_id, now, held + size - quota)
    if room_at is None:  # some went between the two statements (each reads a snapshot of its own)
        raise UploadQuotaFull(f"{full}; try again", 1)
    wait = max(math.ceil((room_at - now).total_seconds()), 1)
    raise UploadQuotaFull(f"{full}; enough of them expire by {iso(room_at)}", wait)


def _take_back(svc: Services, upload_id: str, storage_key: str) -> None:
    """An upload the store failed: its object deleted (it may have arrived all the same, an answer lost),
    then its row. Whatever fails to go stays named by the row, and goes with it when it expires."""
    try:
        svc.storage.delete(storage_key)
        with svc.db.session() as session:
            session.execute(delete(Upload).where(Upload.id == upload_id))
    except Exception:
        log.exception("upload %s could not be taken back; it goes when it expires", upload_id)
