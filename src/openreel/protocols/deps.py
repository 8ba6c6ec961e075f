"""FastAPI dependencies: the application services and the caller's API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from openreel.ledger.tables import ApiKey
from openreel.protocols.errors import ApiError
from openreel.service.services import AuthError, Services, authenticate


async def services(request: Request) -> Services:
    """Async, so FastAPI calls it on the event loop: a plain function would cost every request a hop
    to its thread pool and back."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


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
