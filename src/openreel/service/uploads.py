"""Storing user files (uploads, inline images of other wire protocols) as short-lived uploads.

Every surface that receives bytes goes through ``store_upload``, so type sniffing, size limits,
expiry and the signed URL that the engine later resolves are the same everywhere.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any, BinaryIO

from sqlalchemy import delete

from openreel.ledger.tables import Upload, new_id, utcnow
from openreel.service.services import Services
from openreel.service.views import iso
from openreel.storage.images import InputError, opened_image
from openreel.storage.sniff import SNIFF_BYTES, SUPPORTED, sniff

log = logging.getLogger("openreel.uploads")

CHUNK = 1024 * 1024


class UploadRejected(Exception):
    """The file's type is not accepted or it is too large; the message says which."""


def store_upload(svc: Services, account_id: str, stream: BinaryIO, base_url: str) -> dict[str, Any]:
    """Save ``stream`` as an upload of the account; returns the wire ``Upload`` object."""
    head = stream.read(SNIFF_BYTES)
    kind = sniff(head)
    if kind is None:
        raise UploadRejected(f"Unsupported file type; accepted: {SUPPORTED}")
    limit = (
        svc.settings.max_upload_video_bytes if kind.kind == "video" else svc.settings.max_upload_image_bytes
    )
    upload_id = new_id()
    storage_key = f"uploads/{upload_id}.{kind.extension}"
    staged = svc.storage.staging_path(storage_key)
    size = len(head)
    now = utcnow()
    expires = now + timedelta(seconds=svc.settings.upload_ttl_s)
    try:
        with staged.open("wb") as out:
            out.write(head)
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UploadRejected(f"{kind.kind} files are limited to {limit} bytes")
                out.write(chunk)
        if kind.kind == "image":  # its size read now: a job would fail on it, after charging
            try:
                opened_image(staged, source="the image", max_pixels=svc.settings.max_image_pixels).close()
            except InputError as exc:
                raise UploadRejected(str(exc)) from exc
        # The row before the file: a crash between the two leaves a row naming no file, which the sweep
        # removes when it expires; a file stored first would be named by nothing, for good.
        with svc.db.session() as session:
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


def _take_back(svc: Services, upload_id: str, storage_key: str) -> None:
    """An upload the store failed: its object deleted (it may have arrived all the same, an answer lost),
    then its row. Whatever fails to go stays named by the row, and goes with it when it expires."""
    try:
        svc.storage.delete(storage_key)
        with svc.db.session() as session:
            session.execute(delete(Upload).where(Upload.id == upload_id))
    except Exception:
        log.exception("upload %s could not be taken back; it goes when it expires", upload_id)
