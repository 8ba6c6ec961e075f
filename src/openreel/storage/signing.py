"""Signed, expiring links for files served by this server (results and uploads).

A link is ``/v2/files/<key>?exp=<unix seconds>&sig=<hmac>``; the HMAC covers key and expiry, so a
link cannot be stretched in time or pointed at another file. Because only this server can make a
valid signature, a URL that verifies is known to be ours and is read from storage directly instead
of being fetched over the network.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

FILES_PREFIX = "/v2/files/"
# A link as this server made it, and not yet, or no longer, good; "forged" also covers one that was
# altered or cut short (any part of it, key and expiry included, breaks the signature).
Verdict = Literal["valid", "expired", "forged"]


@dataclass(frozen=True)
class Signer:
    secret: bytes

    def signature(self, key: str, expires: int) -> str:
        return hmac.new(self.secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def path(self, key: str, expires: int) -> str:
        return f"{FILES_PREFIX}{quote(key)}?exp={expires}&sig={self.signature(key, expires)}"

    def url(self, base_url: str, key: str, ttl_s: int, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + ttl_s)
        return base_url.rstrip("/") + self.path(key, expires)

    def check(
        self, key: str, expires: str | int | None, sig: str | None, now: float | None = None
    ) -> Verdict:
        """The signature first, so a link is called expired only when this server made it as it is."""
        try:
            exp = int(expires) if expires is not None else None
        except ValueError:
            exp = None
        if exp is None or sig is None:
            return "forged"
        if not hmac.compare_digest(self.signature(key, exp).encode(), sig.encode(errors="replace")):
            return "forged"
        return "expired" if exp < (now if now is not None else time.time()) else "valid"

    def verify(
        self,
        key: str,
        expires: str | int | None,
        sig: str | None,
        now: float | None = None,
        *,
        check_expiry: bool = True,
    ) -> bool:
        verdict = self.check(key, expires, sig, now)
        return verdict == "valid" or (verdict == "expired" and not check_expiry)

    def own_key(self, url: str, *, check_expiry: bool = True) -> str | None:
        """The storage key if ``url`` is a valid (and, by default, unexpired) link made by this server,
        whatever path the public URL it was made for puts before ``FILES_PREFIX``."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        _, found, quoted_key = parts.path.partition(FILES_PREFIX)
        if not found:
            return None
        key = unquote(quoted_key)
        query = parse_qs(parts.query)
        exp = query.get("exp", [None])[0]
        sig = query.get("sig", [None])[0]
        return key if self.verify(key, exp, sig, check_expiry=check_expiry) else None
