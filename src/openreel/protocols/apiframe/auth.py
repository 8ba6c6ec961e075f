"""The caller's API key on the Apiframe API: the ``X-API-Key`` header, refused in Apiframe's shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from openreel.ledger.tables import ApiKey
from openreel.protocols.apiframe.errors import ApiError
from openreel.protocols.deps import services_of
from openreel.service.services import AuthError, authenticate

# Apiframe's own name and words for the scheme (their OpenAPI document, tests/contract).
_header_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyAuth",
    description="API key (`afk_...`), created with `openreel keys create`. Pass on every request as the "
    "`X-API-Key` header.",
)


async def current_key(request: Request, raw: Annotated[str | None, Security(_header_key)] = None) -> ApiKey:
    try:
        return await authenticate(services_of(request), raw)
    except AuthError as exc:
        message = exc.message
        if not raw and request.headers.get("authorization"):
            message += ": send it in the X-API-Key header (this API does not read Authorization)"
        raise ApiError(exc.status, message, headers=exc.headers) from exc


KeyDep = Annotated[ApiKey, Depends(current_key)]
