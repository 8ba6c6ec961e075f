"""``POST /v2/videos/generate``: validate everything, then charge and queue in one transaction."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from openreel.domain.limits import MAX_IDEMPOTENCY_KEY
from openreel.domain.rules import Details, VideoSpec, check_strings, check_url, resolve_video_request
from openreel.ledger import jobs
from openreel.ledger.credits import InsufficientCredits
from openreel.protocols.apiframe.auth import KeyDep
from openreel.protocols.apiframe.errors import ApiError, validation_error
from openreel.protocols.apiframe.schemas import (
    ErrorBody,
    GenerateVideoRequest,
    InsufficientCreditsBody,
    JobAccepted,
)
from openreel.protocols.deps import ServicesDep
from openreel.protocols.shaped_routes import RETRY_SOON
from openreel.protocols.submission import try_again_soon
from openreel.service.extension import SourceRejected
from openreel.service.fetch_slots import FetchesBusy
from openreel.service.job_service import (
    EngineUnavailable,
    check_idempotency_key,
    check_webhook_target,
    submit_job,
    take_images,
)

router = APIRouter(tags=["Videos"])
# What an image field that is not a web URL is told: this API takes a URL only, and where a request has
# a local file, the way in is an upload.
LOCAL_FILE_HINT = (
    "(a file path, base64 or a data: URI is not one); to use a local file, upload it first with "
    "POST /v2/uploads (multipart field 'file') and send the url it returns"
)


@router.post(
    "/v2/videos/generate",
    status_code=202,
    response_model=JobAccepted,
    responses={
        400: {"model": ErrorBody},
        401: {"model": ErrorBody},
        402: {"model": InsufficientCreditsBody},
        403: {"model": ErrorBody},
        409: {"model": ErrorBody},
        429: {"model": ErrorBody},
        503: {"model": ErrorBody},
    },
)
async def generate_video(
    body: GenerateVideoRequest,
    request: Request,
    svc: ServicesDep,
    key: KeyDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY)
    ] = None,
) -> JSONResponse:
    params = body.veoParams.model_dump(exclude_unset=True) if body.veoParams else {}
    echo = body.model_dump(exclude_unset=True)
    spec, details = resolve_video_request(
        model_id=body.model,
        prompt=body.prompt,
        params=params,
        catalog=svc.catalog,
        reference_images_supported=svc.dispatcher.engine.reference_images,
        image_hint=LOCAL_FILE_HINT,
    )
    check_strings(details, echo)
    check_idempotency_key(details, "Idempotency-Key", idempotency_key)
    if body.webhookUrl is not None:
        check_url(details, "webhookUrl", body.webhookUrl)
    if body.webhookEvents is not None and body.webhookUrl is None:
        details.add("webhookEvents", "needs webhookUrl")
    if not details and body.webhookUrl is not None:  # resolving its host may wait: not on the loop
        await anyio.to_thread.run_sync(check_webhook_target, svc, details, "webhookUrl", body.webhookUrl)
    if details or spec is None:
        raise validation_error(details)
    base_url = svc.base_url(str(request.base_url))

    def prepare(spec: VideoSpec) -> VideoSpec:
        problems = Details()
        spec = take_images(svc, key.account_id, spec, base_url, problems)
        if problems:
            raise validation_error(problems)
        return spec

    images = spec.image or spec.last_frame or spec.reference_images
    try:
        submitted = await submit_job(
            svc,
            key,
            spec,
            echo=echo,
            base_url=base_url,
            prepare=prepare if images else None,
            idempotency_key=idempotency_key,
            webhook_url=body.webhookUrl,
            webhook_events=list(body.webhookEvents) if body.webhookEvents else None,
        )
    except SourceRejected as exc:
        raise validation_error(Details({"veoParams.extend_job_id": [str(exc)]})) from exc
    except EngineUnavailable as exc:
        raise ApiError(503, str(exc)) from exc
    except InsufficientCredits as exc:
        raise ApiError(
            402, "Insufficient credits", creditsRequired=exc.required, creditsAvailable=exc.available
        ) from exc
    except jobs.IdempotencyConflict as exc:
        raise ApiError(409, str(exc)) from exc
    except (jobs.TooManyActiveJobs, FetchesBusy) as exc:
        raise ApiError(429, try_again_soon(exc), headers=RETRY_SOON) from exc
    headers = {} if submitted.created else {"Idempotent-Replayed": "true"}
    status = jobs.FAILED if submitted.job.status == jobs.CANCELLED else submitted.job.status
    return JSONResponse({"jobId": submitted.job.id, "status": status}, status_code=202, headers=headers)
