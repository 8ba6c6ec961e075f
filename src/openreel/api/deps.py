"""Request-scoped dependencies: the application services and the caller's API key."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request

from openreel.api.errors import ApiError
from openreel.api.present import Presenter
from openreel.catalog import Catalog
from openreel.executors.dispatcher import Dispatcher
from openreel.ledger import accounts
from openreel.ledger.db import Database
from openreel.ledger.tables import ApiKey
from openreel.ratelimit import RateLimiter, retry_after_header
from openreel.settings import Settings
from openreel.storage.base import Storage
from openreel.storage.signing import Signer
from openreel.webhooks import WebhookSender


@dataclass
class Services:
    settings: Settings
    db: Database
    storage: Storage
    signer: Signer
    catalog: Catalog
    dispatcher: Dispatcher
    presenter: Presenter
    webhooks: WebhookSender
    limiter: RateLimiter
    # Requests fetching image URLs at submit at once: each holds a request thread while it waits on
    # someone else's server, so slow hosts must not take all of them.
    fetches: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(8))

    def base_url(self, request: Request) -> str:
        return (self.settings.public_url or str(request.base_url)).rstrip("/")


def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


class AuthError(Exception):
    """Refused before the route runs: 401/403 for the key, 429 (with ``retry_after``) for the rate."""

    def __init__(self, status: int, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": self.retry_after} if self.retry_after else None


def authenticate(svc: Services, raw_key: str | None) -> ApiKey:
    """The active key behind ``raw_key``; every wire protocol maps AuthError to its own shape."""
    if not raw_key:
        raise AuthError(401, "API key is required")
    with svc.db.read() as session:
        key = accounts.find_key(session, raw_key)
    if key is None:
        raise AuthError(401, "Invalid API key")
    if not key.active:
        raise AuthError(403, "API key is inactive")
    wait = svc.limiter.acquire(key.account_id)
    if wait > 0:
        retry_after = retry_after_header(wait)
        raise AuthError(429, f"Rate limit exceeded; retry after {retry_after} s", retry_after)
    return key


def current_key(
    svc: ServicesDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key", include_in_schema=False)] = None,
) -> ApiKey:
    try:
        return authenticate(svc, x_api_key)
    except AuthError as exc:
        raise ApiError(exc.status, exc.message, headers=exc.headers) from exc


KeyDep = Annotated[ApiKey, Depends(current_key)]
