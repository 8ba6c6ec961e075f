"""Apiframe's error envelope: ``{"error": msg}``, plus ``details`` keyed by JSON path for a 400."""

from __future__ import annotations

import difflib
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from openreel.protocols.apiframe.schemas import GenerateVideoRequest, VeoParams
from openreel.protocols.shaped_routes import (
    RETRY_SOON,
    SEND_JSON,
    Outage,
    unread_body,
)


class ApiError(Exception):
    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error, **extra}
        self.headers = headers


def validation_error(details: dict[str, list[str]], message: str = "Validation error") -> ApiError:
    return ApiError(400, message, details=details)


def _path(err: dict[str, Any]) -> str:
    if err["type"] == "json_invalid":  # its location is a character offset, not a field
        return "body"
    parts = [str(p) for p in err["loc"]]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _unrecognized(loc: tuple[Any, ...]) -> str:
    """Name the field a camelCased, misplaced or misspelt key was probably meant to be."""
    nested = tuple(loc[1:-1]) == ("veoParams",)
    here: type[BaseModel] = VeoParams if nested else GenerateVideoRequest
    there: type[BaseModel] = GenerateVideoRequest if nested else VeoParams
    name = str(loc[-1])
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    close = difflib.get_close_matches(snake, list(here.model_fields), n=1, cutoff=0.8)
    match = next((repr(c) for c in (snake, *close) if c in here.model_fields), None)
    elsewhere = next((c for c in (name, snake) if c in there.model_fields), None)
    if elsewhere is not None:
        match = f"the top-level {elsewhere!r}" if nested else repr(f"veoParams.{elsewhere}")
    return f"Unrecognized key; did you mean {match}?" if match else "Unrecognized key"


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return _unrecognized(tuple(err["loc"]))
    if err["type"] == "json_invalid":
        reason = (err.get("ctx") or {}).get("error", "")
        return f"Malformed JSON at character {err['loc'][-1]}" + (f": {reason}" if reason else "")
    if err["type"] == "missing":
        return "Required"
    if unread_body(err):
        return SEND_JSON
    return str(err["msg"])


def unavailable(outage: Outage) -> Response:
    return JSONResponse({"error": outage.message}, status_code=503, headers=RETRY_SOON)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details: dict[str, list[str]] = {}
        for err in exc.errors():
            details.setdefault(_path(err), []).append(_message(err))
        return JSONResponse({"error": "Validation error", "details": details}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)
