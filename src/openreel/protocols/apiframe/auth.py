"""The caller's API key on the Apiframe API: the ``X-API-Key`` header, refused in Apiframe's shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from openreel.ledger.tables import ApiKey
from openreel.protocols.apiframe.errors import ApiError
from openreel.protocols.deps import ServicesDep
from openreel.service.services import AuthError, authenticate


async def current_key(
    svc: ServicesDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key", include_in_schema=False)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> ApiKey:
    try:
        return await authenticate(svc, x_api_key)
    except AuthError as exc:
        message = exc.message
        if not x_api_key and authorization:
            message += ": send it in the X-API-Key header (this API does not read Authorization)"
        raise ApiError(exc.status, message, headers=exc.headers) from exc


KeyDep = Annotated[ApiKey, Depends(current_key)]
