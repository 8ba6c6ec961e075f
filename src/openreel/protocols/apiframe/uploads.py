"""``POST /v2/uploads``: a short-lived file whose signed URL works wherever a param takes a URL."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import JSONResponse

from openreel.protocols.apiframe.auth import KeyDep
from openreel.protocols.apiframe.errors import ApiError, validation_error
from openreel.protocols.apiframe.schemas import ErrorBody, UploadOut
from openreel.protocols.deps import ServicesDep
from openreel.service.uploads import UploadQuotaFull, UploadRejected, store_upload

router = APIRouter(tags=["Uploads"])


@router.post(
    "/v2/uploads",
    status_code=201,
    response_model=UploadOut,
    responses={400: {"model": ErrorBody}, 429: {"model": ErrorBody}},
)
async def create_upload(
    request: Request, svc: ServicesDep, key: KeyDep, file: Annotated[UploadFile | None, File()] = None
) -> JSONResponse:
    if file is None:
        raise validation_error({"file": ["Required: send the file as multipart field 'file'"]})
    # The form FastAPI read for ``file`` (kept on the request): nothing else in it goes unsaid.
    form = await request.form()
    problems = {
        name: ["Unrecognized field: an upload is one multipart field, 'file'"]
        for name in form
        if name != "file"
    }
    if len(form.getlist("file")) > 1:
        problems["file"] = ["one file per upload: send each in a request of its own"]
    if problems:
        raise validation_error(problems)
    base_url = svc.base_url(str(request.base_url))
    store = partial(store_upload, svc, key.account_id, file.file, base_url, within_quota=True)
    try:
        body = await anyio.to_thread.run_sync(store)
    except UploadRejected as exc:
        raise validation_error({"file": [str(exc)]}) from exc
    except UploadQuotaFull as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc
    return JSONResponse(body, status_code=201)
