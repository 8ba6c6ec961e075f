"""Apiframe-style webhook signatures, shared by the server (signing) and the SDK (verifying).

``X-Webhook-Signature: sha256=<hex>`` is the HMAC-SHA256 of the raw body keyed with the raw 32-byte
SHA-256 digest of the API key that submitted the job.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(body: bytes, key_digest: bytes) -> str:
    return "sha256=" + hmac.new(key_digest, body, hashlib.sha256).hexdigest()


def verify_webhook(body: bytes, signature: str | None, api_key: str) -> bool:
    """True when ``signature`` (the header value; a bare hex digest is accepted too) signs ``body``."""
    if not signature:
        return False
    expected = sign(body, hashlib.sha256(api_key.encode()).digest())
    given = signature if signature.startswith("sha256=") else "sha256=" + signature
    # As bytes: compare_digest refuses str with non-ASCII characters, which a forged header may carry.
    return hmac.compare_digest(expected.encode(), given.lower().encode(errors="replace"))
