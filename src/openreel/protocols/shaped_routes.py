"""Routes that answer in their surface's own error shape (Google's and OpenAI's), and the words every
surface, Apiframe's included, has for a body sent without its JSON Content-Type and for the database
or the file store down."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

# What a JSON route says of a body it could not read as JSON for want of the header (curl's -d, for
# one, sends application/x-www-form-urlencoded unless told otherwise).
AS_JSON = "as JSON with the header Content-Type: application/json"
SEND_JSON = f"Send the body {AS_JSON}"


@dataclass(frozen=True)
class Outage:
    """What a request met down, said as a 503 in each surface's shape (``code``: OpenAI's error code)."""

    message: str
    code: str


# The database down (``ledger.db.unavailable``), or the file store out of reach (``StorageUnavailable``).
DATABASE_DOWN = Outage(
    "The database is unavailable for now: try again in a few seconds.", "database_unavailable"
)
STORE_DOWN = Outage(
    "The file store is out of reach for now: try again in a few seconds.", "storage_unavailable"
)
# For a refusal that holds only for now (the database down, a job of the account's to end, an image
# fetch slot to free up): when the same request may pass.
RETRY_SOON = {"Retry-After": "5"}


def unread_body(err: dict[str, Any]) -> bool:
    """Whether a validation error is about a JSON route's body that was not read as JSON because its
    Content-Type is missing or not JSON: FastAPI then hands the model the raw bytes."""
    return tuple(err["loc"]) == ("body",) and isinstance(err.get("input"), bytes)


class WireError(Exception):
    """An error already shaped for its surface."""

    def response(self) -> Response:
        raise NotImplementedError


def shaped_route(on_validation: Callable[[RequestValidationError], Response]) -> type[APIRoute]:
    """A route class whose handlers answer ``WireError`` and request validation errors in the surface's
    own shape, instead of the app-wide Apiframe envelope."""

    class ShapedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def shaped(request: Request) -> Response:
                try:
                    return await handler(request)
                except WireError as exc:
                    return exc.response()
                except RequestValidationError as exc:
                    return on_validation(exc)
                except HTTPException as exc:
                    if exc.status_code != 400:
                        raise
                    # FastAPI's own "error parsing the body" (malformed JSON), in the surface's shape.
                    error = {
                        "type": "json_invalid",
                        "loc": ("body",),
                        "msg": "Malformed JSON body",
                        "input": None,
                    }
                    return on_validation(RequestValidationError([error]))

            return shaped

    return ShapedRoute
