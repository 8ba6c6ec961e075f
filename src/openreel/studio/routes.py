"""Serves the Studio's static files: ``/studio`` is the page, ``/studio/<file>`` its assets.

The page is plain HTML, CSS and ES modules (no build step) and talks only to the public API, so
this router does nothing but hand out files from ``static/``. Paths are resolved and kept inside
that folder; anything else is a 404 in the API's error envelope.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from openreel.protocols.apiframe.errors import ApiError

STATIC = (Path(__file__).parent / "static").resolve()
# The page and its modules change with the server; always revalidate (cheap: ETag/Last-Modified). The
# page holds an API key: it runs only its own scripts and styles, talks only to this server, and is
# never framed. Videos may come from an object store's presigned URLs (any origin); images shown are
# blob: URLs of files to upload, or the URLs a job was given (any origin).
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data: https: http:; media-src "
    "'self' https: http:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

router = APIRouter(include_in_schema=False)


def _file(relative: str) -> FileResponse:
    path = (STATIC / relative).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file():
        raise ApiError(404, "Not found")
    media_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers=_HEADERS)


@router.get("/")
def front_door() -> RedirectResponse:
    """A person who opens the server's address in a browser lands on the Studio, not on a JSON 404."""
    return RedirectResponse("/studio", status_code=307)


@router.get("/studio")
@router.get("/studio/")
def studio_page() -> FileResponse:
    return _file("index.html")


@router.get("/studio/{asset:path}")
def studio_asset(asset: str) -> FileResponse:
    return _file(asset)
