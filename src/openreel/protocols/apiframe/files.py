"""``GET /v2/files/<key>``: results and uploads behind signed, expiring links, with HTTP Range.

A result is served as ``video/mp4``, inline (browsers and the Studio play it); an upload as the type
sniffed from its bytes when it was stored (its ``uploads`` row, not its name or what the uploader
declared), as an attachment. Every protocol's links point here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from openreel.ledger import uploads
from openreel.protocols.apiframe.errors import ApiError
from openreel.protocols.deps import ServicesDep
from openreel.protocols.files import RESULTS, result_disposition, stored_file
from openreel.service.services import Services
from openreel.service.views import iso

router = APIRouter(tags=["Files"])


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
