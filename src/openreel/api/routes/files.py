"""``GET /v2/files/<key>``: results and uploads behind signed, expiring links, with HTTP Range."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from openreel.api.deps import ServicesDep
from openreel.api.errors import ApiError

router = APIRouter(tags=["Files"])


@router.api_route("/v2/files/{key:path}", methods=["GET", "HEAD"], response_class=FileResponse)
def get_file(key: str, svc: ServicesDep, exp: str | None = None, sig: str | None = None) -> Response:
    if not svc.signer.verify(key, exp, sig):
        raise ApiError(403, "Invalid or expired link")
    media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    response = svc.storage.serve(key, media_type, redirect=True)
    if response is None:
        raise ApiError(404, "File not found")
    return response
