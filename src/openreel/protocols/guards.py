"""ASGI middleware in front of every route: a request body is read only for an active API key and
only up to a cap, and every response carries ``X-Content-Type-Options: nosniff``.

FastAPI reads a body (and Starlette spools a multipart one to disk) before any dependency runs, so
the key check in the routes comes too late to stop a caller without a key from making the server
hold or write whatever it sends. ``BodyGuard`` runs first and checks the credential of the path's
wire protocol. Without an active key the app is handed an empty body: the route answers its own
401/403, and the server drops the bytes as they arrive. With one, the body is capped: a declared
Content-Length over the cap is a 413 before anything is read, a chunked body a 413 as soon as its
count passes the cap (the guard itself holds no bytes), both in the protocol's own error shape; a JSON
body of more values than a request has (``MAX_JSON_VALUES``) is a 400 as soon as it has sent them.

A request that meets the database down, here or in a route, is a 503 in its protocol's shape too
(``database_down``, the app's handler of ``DATABASE_ERRORS``), as is one that meets the file store out
of reach (``store_down``, of ``StorageUnavailable``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openreel.ledger.db import DATABASE_ERRORS, unavailable
from openreel.protocols.apiframe import errors as apiframe
from openreel.protocols.google import wire as google
from openreel.protocols.openai import wire as openai
from openreel.protocols.shaped_routes import DATABASE_DOWN, STORE_DOWN, Outage
from openreel.service.services import Services
from openreel.settings import Settings

log = logging.getLogger("openreel.api")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Google's inline images are each up to max_upload_image_bytes, base64-encoded (4/3, plus the 64
# characters the route allows); a valid request carries at most three, since reference images cannot
# be combined with a first or a last frame.
INLINE_IMAGES = 3
JSON_OVERHEAD = 1024 * 1024  # the prompt, labels and the rest of the JSON around the images
MULTIPART_OVERHEAD = 1024 * 1024  # part headers and the form's text fields around the file
# Objects, arrays and commas a JSON body may hold: a request's own come to a few thousand at most (the
# commas of a 4,000-character prompt), inline images none. Parsed, each small value costs Python 50 to
# 100 bytes: a 100 MB body of empty objects, within Google's cap for three inline images, took
# gigabytes before any route could look at it.
MAX_JSON_VALUES = 100_000
_BODY_HEADERS = frozenset({b"content-length", b"content-type", b"transfer-encoding"})
_GOOGLE_PATHS = ("/v1beta/", "/v1beta1/", "/v1/models/", "/v1/publishers/", "/v1/operations/", "/v1/files/")


def json_body_limit(settings: Settings, images: int) -> int:
    """``max_json_body_bytes``, or room for a request with ``images`` inline base64 images."""
    room = images * (settings.max_upload_image_bytes * 4 // 3 + 64) + JSON_OVERHEAD
    return room if settings.max_json_body_bytes is None else min(room, settings.max_json_body_bytes)


def body_limit(settings: Settings, path: str, content_type: str) -> int:
    """A multipart body carries one file (any upload on ``/v2/uploads``, an image on OpenAI's create);
    any other body is JSON (or a small form): with inline images only on Google's predict (up to
    three) and OpenAI's create (a data: URL), else prompts, URLs and ids."""
    if not content_type.lower().startswith("multipart/"):
        if path.endswith(":predictLongRunning"):
            return json_body_limit(settings, INLINE_IMAGES)
        return json_body_limit(settings, 1 if path == "/v1/videos" else 0)
    file_limit = settings.max_upload_image_bytes
    if path == "/v2/uploads":
        file_limit = max(file_limit, settings.max_upload_video_bytes)
    return file_limit + MULTIPART_OVERHEAD


def _bearer(conn: HTTPConnection) -> str | None:
    """What FastAPI's ``HTTPBearer`` reads."""
    scheme, credentials = get_authorization_scheme_param(conn.headers.get("authorization"))
    return credentials if scheme.lower() == "bearer" and credentials else None


@dataclass(frozen=True)
class Wire:
    """Where a wire protocol carries its API key, its 413 for a body over ``limit`` bytes, its 400 for
    a JSON body of more than ``limit`` values, and its 503 for a request that met the database or the
    file store down."""

    key: Callable[[HTTPConnection], str | None]
    too_large: Callable[[int], Response]
    too_many_values: Callable[[int], Response]
    unavailable: Callable[[Outage], Response]


APIFRAME = Wire(
    key=lambda conn: conn.headers.get("x-api-key"),
    too_large=lambda limit: JSONResponse(
        {"error": f"Request body too large: the limit is {limit} bytes"}, status_code=413
    ),
    too_many_values=lambda limit: JSONResponse(
        {"error": "Validation error", "details": {"body": [f"holds more than {limit} JSON values"]}},
        status_code=400,
    ),
    unavailable=apiframe.unavailable,
)
GOOGLE = Wire(
    key=lambda conn: conn.headers.get("x-goog-api-key") or conn.query_params.get("key"),
    too_large=lambda limit: google.GoogleError(
        413, f"Request payload size exceeds the limit: {limit} bytes.", status="INVALID_ARGUMENT"
    ).response(),
    too_many_values=lambda limit: google.GoogleError(
        400, f"Request payload holds more than {limit} JSON values.", status="INVALID_ARGUMENT"
    ).response(),
    unavailable=google.unavailable,
)
OPENAI = Wire(
    key=_bearer,
    too_large=lambda limit: openai.OpenAIError(
        413, f"The request body is too large: the limit is {limit} bytes.", code="request_too_large"
    ).response(),
    too_many_values=lambda limit: openai.OpenAIError(
        400, f"The request body holds more than {limit} JSON values.", code="invalid_json"
    ).response(),
    unavailable=openai.unavailable,
)


def check_database_down(exc: Exception) -> None:
    """Log a request's meeting with the database down; raise a database error that is a fault instead
    (SQLite's no such table, say), to be answered as the 500 it is."""
    if not unavailable(exc):
        raise exc
    log.error("a request met the database unavailable", exc_info=exc)


async def database_down(request: Request, exc: Exception) -> Response:
    """The app's handler of ``DATABASE_ERRORS``: a request that met the database down is a 503 in its
    protocol's shape; a fault of the query or the schema is raised on, to be the 500 it is."""
    check_database_down(exc)
    return wire_of(request.scope["path"]).unavailable(DATABASE_DOWN)


async def store_down(request: Request, exc: Exception) -> Response:
    """The app's handler of ``StorageUnavailable``: the file store out of reach (S3 not answering, or
    refusing the credentials) is a 503 in the protocol's shape, the request to be tried again."""
    log.error("a request met the file store out of reach", exc_info=exc)
    return wire_of(request.scope["path"]).unavailable(STORE_DOWN)


def wire_of(path: str) -> Wire:
    """The protocol a path belongs to (as the routers lay them out); Apiframe for anything else."""
    if path == "/v1/videos" or path.startswith("/v1/videos/"):
        return OPENAI
    if path.startswith(_GOOGLE_PATHS):
        return GOOGLE
    return APIFRAME


def _declared_length(conn: HTTPConnection) -> int | None:
    try:
        return int(conn.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _without_body(scope: Scope) -> Scope:
    """The request as if it had no body, so no route mistakes the empty one for a malformed form."""
    return {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() not in _BODY_HEADERS]}


def _empty_body(receive: Receive) -> Receive:
    """An empty body first; later reads wait for the disconnect, dropping whatever was sent."""
    delivered = False

    async def empty() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message

    return empty


class _Capped:
    """One request whose body may not pass ``limit`` bytes, nor (JSON) ``wire``'s JSON values. Past
    either, the refusal goes out at once (if the app has not started its own answer), the app reads a
    disconnect, and what it sends later, or the error it raises over the cut-off body, is dropped. The
    values are counted by their openings and commas, strings' included: a bound, not a parse."""

    def __init__(self, app: ASGIApp, limit: int, wire: Wire, json: bool) -> None:
        self.app = app
        self.limit = limit
        self.wire = wire
        self.json = json
        self.received = 0
        self.values = 0
        self.cut = False
        self.started = False
        self.answered = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def capped_receive() -> Message:
            if self.cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                self.received += len(body)
                if self.json:
                    self.values += body.count(b"{") + body.count(b"[") + body.count(b",")
                refusal = None
                if self.received > self.limit:
                    refusal = self.wire.too_large(self.limit)
                elif self.values > MAX_JSON_VALUES:
                    refusal = self.wire.too_many_values(MAX_JSON_VALUES)
                if refusal is not None:
                    self.cut = True
                    if not self.started:
                        self.answered = True
                        await refusal(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if self.answered:
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not self.answered:
                raise


class BodyGuard:
    """Bodies (POST, PUT, PATCH) only for an active key of the path's protocol, and within the cap."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        svc: Services = conn.app.state.services
        wire = wire_of(scope["path"])
        raw_key = wire.key(conn)
        try:
            key = await svc.keys.find(raw_key) if raw_key else None
        except DATABASE_ERRORS as exc:
            check_database_down(exc)
            await wire.unavailable(DATABASE_DOWN)(scope, receive, send)
            return
        if key is None or not key.active:
            await self.app(_without_body(scope), _empty_body(receive), send)
            return
        content_type = conn.headers.get("content-type", "")
        limit = body_limit(svc.settings, scope["path"], content_type)
        declared = _declared_length(conn)
        if declared is not None and declared > limit:
            await wire.too_large(limit)(scope, receive, send)
            return
        json = not content_type.lower().startswith("multipart/")
        await _Capped(self.app, limit, wire, json)(scope, receive, send)


class NoSniff:
    """``X-Content-Type-Options: nosniff`` on every response, so no browser renders a file (an
    upload above all) as a type other than the one it was served as."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                MutableHeaders(scope=message)["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_nosniff)
