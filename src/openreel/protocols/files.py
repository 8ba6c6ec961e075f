"""``GET /v2/files/<key>``: results and uploads behind signed, expiring links, with HTTP Range.

These come from the API's own origin, so each is served only as what it is: a result as ``video/mp4``,
inline (browsers and the Studio play it); an upload as the type sniffed from its bytes when it was
stored (its ``uploads`` row, not its name or what the uploader declared), as an attachment.
``Content-Security-Policy: sandbox`` and the app-wide ``nosniff`` keep even a file opened as a page
from running script with the API's origin.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from openreel.ledger import uploads
from openreel.protocols.deps import ServicesDep
from openreel.protocols.errors import ApiError
from openreel.service.services import Services
from openreel.service.views import iso
from openreel.storage.base import LocalFile, Redirect, Stream

router = APIRouter(tags=["Files"])

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
    return response


def _presentation(svc: Services, key: str) -> tuple[str, str]:
    """The media type and Content-Disposition of a stored file (an upload without its row is gone)."""
    if key.startswith(RESULTS):
        return "video/mp4", result_disposition(key.removeprefix(RESULTS).split("/")[0])
    with svc.db.read() as session:
        upload = uploads.by_storage_key(session, key)
    if upload is None:
        raise ApiError(404, "File not found")
    return upload.content_type, f'attachment; filename="{PurePosixPath(key).name}"'


def _expired(key: str, exp: int) -> str:
    """A signed link past its expiry, and where a fresh one comes from."""
    when = iso(datetime.fromtimestamp(exp, UTC))
    if key.startswith(RESULTS):
        job_id = key.removeprefix(RESULTS).split("/")[0]
        fresh = f"read the job again (GET /v2/jobs/{job_id}; on Google's API, its operation) for a fresh link"
    else:
        fresh = "uploads are kept only that long: upload the file again (POST /v2/uploads)"
    return f"This link expired at {when}; {fresh}"


@router.get("/v2/files/{key:path}", response_class=FileResponse)
@router.head("/v2/files/{key:path}", response_class=FileResponse, operation_id="head_file")
def get_file(key: str, svc: ServicesDep, exp: str | None = None, sig: str | None = None) -> Response:
    verdict = svc.signer.check(key, exp, sig)
    if verdict == "forged":
        raise ApiError(
            403,
            "Invalid link: its signature does not match (the link was altered or cut short); use the "
            "link exactly as the API returned it",
        )
    if verdict == "expired":
        raise ApiError(410, _expired(key, int(exp or 0)))
    media_type, disposition = _presentation(svc, key)
    response = stored_file(svc, key, media_type, redirect=True, disposition=disposition)
    if response is None:
        raise ApiError(404, "File not found")
    return response
