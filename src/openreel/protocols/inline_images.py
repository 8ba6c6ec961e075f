"""Images sent inside a request (base64 in JSON, a multipart file, a data URL): decoded and checked as
uploads are, and stored as the account's uploads only once the request is known to be valid."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

from openreel.service.services import Services
from openreel.service.uploads import store_upload
from openreel.storage.images import image_type, not_an_image
from openreel.storage.sniff import SNIFF_BYTES, FileType

# Where an image goes before the request is known to be valid: resolve_video_request checks only
# that a URL is absolute, and nothing is stored (or charged) for a request that is refused.
PENDING_IMAGE_URL = "https://inline.invalid/pending"


@dataclass(frozen=True)
class InlineImage:
    """Image bytes received inline, checked but not stored yet."""

    data: bytes
    kind: FileType

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def store(self, svc: Services, account_id: str, base_url: str) -> str:
        """Save as an upload of the account; the signed URL goes into the job spec."""
        return str(store_upload(svc, account_id, io.BytesIO(self.data), base_url)["url"])


def decode_base64(text: str) -> bytes | None:
    """Standard or URL-safe base64 (proto3 JSON accepts both); whitespace and missing padding ignored."""
    compact = "".join(text.split()).translate(str.maketrans("-_", "+/"))
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def check_image(data: bytes, limit: int) -> tuple[InlineImage | None, str | None]:
    """The image, or why it is refused (type sniffed from the bytes, never trusted from a header)."""
    if not data:
        return None, "is empty"
    head = data[:SNIFF_BYTES]
    kind = image_type(head)
    if kind is None:
        return None, not_an_image(head)
    if len(data) > limit:
        return None, f"is {len(data)} bytes; images are limited to {limit} bytes"
    return InlineImage(data, kind), None
