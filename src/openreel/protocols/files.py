"""Stored files as every protocol serves them: from the API's own origin, so only as what they are
(``Content-Security-Policy: sandbox`` and the app-wide ``nosniff`` keep even a file opened as a page from
running script with the API's origin)."""

from __future__ import annotations

from typing import assert_never

from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from openreel.service.services import Services
from openreel.storage.base import LocalFile, Redirect, Stream

RESULTS = "results/"  # results/<job id>/<attempt>.mp4 (further samples .<n>.mp4); others are uploads


def result_disposition(job_id: str) -> str:
    """Inline, so browsers play it, with a name for when it is saved."""
    return f'inline; filename="openreel-{job_id}.mp4"'


def stored_file(
    svc: Services, key: str, media_type: str, *, redirect: bool, disposition: str | None
) -> Response | None:
    """The stored object as a response (None: it is gone) that never runs as a page of this origin,
    whatever a browser makes of it. ``redirect``: to the backend's own signed link where it has one."""
    served = svc.storage.serve(key, media_type, redirect=redirect, disposition=disposition)
    headers = {"Cache-Control": "private, max-age=3600", "Content-Security-Policy": "sandbox"}
    if disposition:
        headers["Content-Disposition"] = disposition
    response: Response
    match served:
        case None:
            return None
        case LocalFile(path):
            response = FileResponse(path, media_type=media_type, headers=headers)
        case Redirect(url):
            response = RedirectResponse(url, status_code=307, headers={"Content-Security-Policy": "sandbox"})
        case Stream(chunks, length):
            headers["Content-Length"] = str(length)
            response = StreamingResponse(chunks, media_type=media_type, headers=headers)
        case _:
            assert_never(served)
    return response
