"""Google's Veo wire protocols (google-genai 2.x Gemini form, 3.x Vertex form) over the same jobs.

Gemini form (``Client(api_key=K, http_options=HttpOptions(base_url=BASE))`` of google-genai 2.x),
under ``/v1beta`` and ``/v1``:

- ``POST /v1beta/models/{model}:predictLongRunning`` -> ``{"name": "models/{model}/operations/{id}"}``
- ``GET /v1beta/models/{model}/operations/{id}`` (and ``/v1beta/operations/{id}``) -> the operation
- ``POST /v1beta/models/{model}/operations/{id}:cancel`` -> ``{}``, cancelled and refunded
- ``GET /v1beta/files/{id}:download?alt=media`` -> the MP4 (what ``client.files.download`` calls)

Vertex API-key form (``Client(enterprise=True, api_key=K, http_options=...)`` of google-genai 3.x),
under ``/v1beta1`` and ``/v1``:

- ``POST /v1beta1/publishers/google/models/{model}:predictLongRunning``
- ``POST /v1beta1/publishers/google/models/{model}:fetchPredictOperation`` with ``{"operationName"}``
- ``POST /v1beta1/publishers/google/models/{model}/operations/{id}:cancel``

Authentication: ``x-goog-api-key: afk_...`` (or ``?key=afk_...``). Any other path under ``/v1beta``
or ``/v1beta1`` is a Google-shaped 404. An ``Idempotency-Key`` header (not Google's; optional) makes
a submission replayable exactly as on the Apiframe API. Request mapping, refusals and defaults:
``openreel.protocols.google.wire``.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request, Security
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, APIKeyQuery
from sqlalchemy.orm import Session

from openreel.domain.limits import MAX_IDEMPOTENCY_KEY
from openreel.domain.rules import Details, VideoSpec, check_text
from openreel.ledger import jobs
from openreel.ledger.db import DATABASE_ERRORS, unavailable
from openreel.ledger.tables import ApiKey, Job, JobRecord
from openreel.protocols import job_ids, shaped_routes, submission
from openreel.protocols.deps import ServicesDep, services_of
from openreel.protocols.files import result_disposition, stored_file
from openreel.protocols.google.wire import (
    ERROR_RESPONSES,
    FetchPredictOperationRequest,
    Form,
    GoogleError,
    Operation,
    PredictRequest,
    file_sample,
    invalid,
    materialize,
    on_validation,
    operation,
    operation_id,
    operation_name,
    parse_predict,
    refusal,
)
from openreel.service import job_service
from openreel.service.extension import SourceRejected
from openreel.service.polls import Poll
from openreel.service.services import AuthError, Services, authenticate, on_loop_if_local
from openreel.service.standing import Standings
from openreel.service.views import Standing, stored_samples

log = logging.getLogger("openreel.google")
router = APIRouter(tags=["Google Veo"], route_class=shaped_routes.shaped_route(on_validation))

_header_key = APIKeyHeader(name="x-goog-api-key", auto_error=False, scheme_name="GoogleApiKey")
_query_key = APIKeyQuery(name="key", auto_error=False, scheme_name="GoogleApiKeyQuery")


async def google_key(
    request: Request,
    header: Annotated[str | None, Security(_header_key)] = None,
    query: Annotated[str | None, Security(_query_key)] = None,
) -> ApiKey:
    try:
        return await authenticate(services_of(request), header or query)
    except AuthError as exc:
        if exc.status == 401 and not (header or query):
            message = "Missing API key: send an openreel key (afk_...) in the x-goog-api-key header."
        elif exc.status == 401:
            message = "API key not valid. Please pass a valid openreel API key (afk_...)."
        else:
            message = exc.message
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": retry_after} if retry_after else None
        raise GoogleError(exc.status, message, headers=headers) from exc


GoogleKey = Annotated[ApiKey, Security(google_key)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=MAX_IDEMPOTENCY_KEY,
        description="Not part of Google's API: replays the first operation for 24 h, as on /v2.",
    ),
]


def _version(request: Request) -> str:
    return request.url.path.lstrip("/").split("/", 1)[0]


def _own_job(session: Session, key: ApiKey, op_id: str | None, what: str) -> JobRecord:
    job_id = job_ids.parse_job_id(op_id) if op_id else None
    job = jobs.read_for_account(session, key.account_id, job_id) if job_id is not None else None
    if job is None:
        raise GoogleError(404, f"{what} not found.")
    return job


def _operation_reply(
    svc: Services,
    request: Request,
    job: JobRecord,
    standing: Standing,
    name: str,
    form: Form,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = operation(
        svc,
        job,
        name,
        form=form,
        base_url=svc.base_url(str(request.base_url)),
        version=_version(request),
        standing=standing,
    )
    return JSONResponse(body, headers=headers)


def _submitted_operation(
    svc: Services, request: Request, job: Job, name: str, form: Form, headers: dict[str, str] | None
) -> JSONResponse:
    """The job is committed and charged by now: a database out of reach here costs the reply its queue
    place, never a 503 that a client without an idempotency key would answer with a second job."""
    try:
        with svc.db.read() as session:
            standing = Standings.of_server(svc, session, [job]).of(job)
    except DATABASE_ERRORS as exc:
        if not unavailable(exc):
            raise
        log.warning("job %s submitted; its queue place could not be read: %s", job.id, exc)
        standing = Standing()
    return _operation_reply(svc, request, job, standing, name, form, headers)


async def _polled_operation(
    svc: Services, request: Request, key: ApiKey, op_id: str, name: str, form: Form
) -> JSONResponse:
    """The account's operation ``name`` as it stands: what clients poll (``polls``)."""
    job_id = job_ids.parse_job_id(op_id)
    polled = await svc.polls(Poll(key.account_id, job_id)) if job_id is not None else None
    if polled is None:
        raise GoogleError(404, f"Operation {name} not found.")
    reply = partial(_operation_reply, svc, request, polled.job, polled.standing, name, form)
    return await on_loop_if_local(svc, reply)


async def _predict(
    svc: Services,
    request: Request,
    key: ApiKey,
    model: str,
    body: PredictRequest,
    idem: str | None,
    form: Form,
) -> JSONResponse:
    details = Details()
    job_service.check_idempotency_key(details, "Idempotency-Key", idem)
    if details:
        raise invalid(details)
    inline = any(i.image or i.last_frame or i.reference_images for i in body.instances)
    parse = partial(parse_predict, svc, model, body, form=form)
    predict = await anyio.to_thread.run_sync(parse) if inline else parse()  # decoding images takes a while
    base_url = svc.base_url(str(request.base_url))
    files = predict.image or predict.last_frame or predict.references

    def prepare(spec: VideoSpec) -> VideoSpec:
        return materialize(svc, key.account_id, base_url, predict, spec)

    try:
        submitted = await submission.submit(
            svc,
            key,
            predict.spec,
            echo=predict.echo,
            idem=idem,
            base_url=base_url,
            prepare=prepare if files else None,
            refusal=refusal,
        )
    except SourceRejected as exc:
        raise invalid(Details({"instances[0].video": [str(exc)]})) from exc
    headers = None if submitted.created else {"Idempotent-Replayed": "true"}
    job = submitted.job
    name = operation_name(form, model, job.id)
    reply = partial(_submitted_operation, svc, request, job, name, form, headers)
    return await on_loop_if_local(svc, reply)


def _cancel(svc: Services, key: ApiKey, op_id: str) -> dict[str, Any]:
    job_id = job_ids.parse_job_id(op_id)
    ended = job_service.cancel(svc, key.account_id, job_id, "Cancelled by the user") if job_id else None
    if ended is None:
        raise GoogleError(404, f"Operation {op_id} not found.")
    if not ended.cancelled:
        raise GoogleError(
            400, f"Operation {op_id} is already done ({ended.job.status}).", status="FAILED_PRECONDITION"
        )
    return {}


_PREDICT_DOC: dict[str, Any] = {"response_model": Operation, "responses": ERROR_RESPONSES}


@router.post("/v1beta/models/{model}:predictLongRunning", summary="Gemini: generate a video", **_PREDICT_DOC)
@router.post("/v1/models/{model}:predictLongRunning", summary="Gemini (v1): generate a video", **_PREDICT_DOC)
async def gemini_predict(
    model: str,
    body: PredictRequest,
    request: Request,
    svc: ServicesDep,
    key: GoogleKey,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Validates, charges and queues; the reply is the operation to poll (``done`` false)."""
    return await _predict(svc, request, key, model, body, idem, "gemini")


@router.get("/v1beta/models/{model}/operations/{op_id}", summary="Gemini: get an operation", **_PREDICT_DOC)
@router.get("/v1/models/{model}/operations/{op_id}", summary="Gemini (v1): get an operation", **_PREDICT_DOC)
async def gemini_operation(
    model: str, op_id: str, request: Request, svc: ServicesDep, key: GoogleKey
) -> JSONResponse:
    name = f"models/{model}/operations/{op_id}"
    return await _polled_operation(svc, request, key, op_id, name, "gemini")


@router.get("/v1beta/operations/{op_id}", summary="Gemini: get an operation (short name)", **_PREDICT_DOC)
@router.get("/v1/operations/{op_id}", summary="Gemini (v1): get an operation (short name)", **_PREDICT_DOC)
async def gemini_operation_short(
    op_id: str, request: Request, svc: ServicesDep, key: GoogleKey
) -> JSONResponse:
    name = f"operations/{op_id}"
    return await _polled_operation(svc, request, key, op_id, name, "gemini")


@router.post(
    "/v1beta/models/{model}/operations/{op_id}:cancel",
    summary="Gemini: cancel an operation",
    responses=ERROR_RESPONSES,
)
@router.post(
    "/v1/models/{model}/operations/{op_id}:cancel",
    summary="Gemini (v1): cancel an operation",
    responses=ERROR_RESPONSES,
)
def gemini_cancel(model: str, op_id: str, svc: ServicesDep, key: GoogleKey) -> dict[str, Any]:
    """Queued: cancelled at once; running: stops at the next denoising step. Refunded either way."""
    return _cancel(svc, key, op_id)


@router.get(
    "/v1beta/files/{file_id}:download",
    summary="Gemini: download a generated video",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}}, **ERROR_RESPONSES},
)
@router.get(
    "/v1/files/{file_id}:download",
    summary="Gemini (v1): download a generated video",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}}, **ERROR_RESPONSES},
)
def gemini_download(
    file_id: str, svc: ServicesDep, key: GoogleKey, alt: Annotated[str | None, Query()] = None
) -> Response:
    """The file id is the operation id, with ``s<n>`` for a request's further samples (``-<n>`` in
    earlier links); HTTP Range is supported."""
    if alt not in (None, "media"):
        raise GoogleError(400, f"alt={alt!r} is not supported here; use alt=media")
    op_id, sample = file_sample(file_id)
    with svc.db.read() as session:
        job = _own_job(session, key, op_id, f"File {file_id}")
    if job.status in jobs.ACTIVE:
        raise GoogleError(
            400,
            f"File {file_id} is not ready: its operation is {job.status} ({job.progress}%).",
            status="FAILED_PRECONDITION",
        )
    if job.status != jobs.COMPLETED or not job.result:
        raise GoogleError(404, f"File {file_id} has no video: its operation ended {job.status}.")
    # Streamed, never redirected: the SDK re-sends its API key to wherever a redirect points.
    disposition = result_disposition(job.id + (f"-{sample}" if sample else ""))
    stored = stored_samples(job.result)
    if sample >= len(stored) or "key" not in stored[sample]:
        raise GoogleError(404, f"File {file_id} has no video: its operation made no such sample.")
    response = stored_file(svc, stored[sample]["key"], "video/mp4", redirect=False, disposition=disposition)
    if response is None:
        raise GoogleError(404, f"File {file_id} has expired or was deleted.")
    return response


@router.post(
    "/v1beta1/publishers/google/models/{model}:predictLongRunning",
    summary="Vertex: generate a video",
    **_PREDICT_DOC,
)
@router.post(
    "/v1/publishers/google/models/{model}:predictLongRunning",
    summary="Vertex (v1): generate a video",
    **_PREDICT_DOC,
)
async def vertex_predict(
    model: str,
    body: PredictRequest,
    request: Request,
    svc: ServicesDep,
    key: GoogleKey,
    idem: IdempotencyKey = None,
) -> JSONResponse:
    """Validates, charges and queues; the reply is the operation to poll with fetchPredictOperation."""
    return await _predict(svc, request, key, model, body, idem, "vertex")


@router.post(
    "/v1beta1/publishers/google/models/{model}:fetchPredictOperation",
    summary="Vertex: get an operation",
    **_PREDICT_DOC,
)
@router.post(
    "/v1/publishers/google/models/{model}:fetchPredictOperation",
    summary="Vertex (v1): get an operation",
    **_PREDICT_DOC,
)
async def vertex_fetch(
    model: str, body: FetchPredictOperationRequest, request: Request, svc: ServicesDep, key: GoogleKey
) -> JSONResponse:
    """The finished video is ``response.videos[0].gcsUri``: a signed link, fetched without a key."""
    details = Details()
    check_text(details, "operationName", body.operation_name)
    if details:
        raise invalid(details)
    op_id = operation_id(body.operation_name)
    if op_id is None:
        raise GoogleError(400, f"operationName {body.operation_name!r} is not an operation name")
    name = body.operation_name
    return await _polled_operation(svc, request, key, op_id, name, "vertex")


@router.post(
    "/v1beta1/publishers/google/models/{model}/operations/{op_id}:cancel",
    summary="Vertex: cancel an operation",
    responses=ERROR_RESPONSES,
)
@router.post(
    "/v1/publishers/google/models/{model}/operations/{op_id}:cancel",
    summary="Vertex (v1): cancel an operation",
    responses=ERROR_RESPONSES,
)
def vertex_cancel(model: str, op_id: str, svc: ServicesDep, key: GoogleKey) -> dict[str, Any]:
    return _cancel(svc, key, op_id)


@router.api_route(
    "/v1beta/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
@router.api_route(
    "/v1beta1/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
def google_not_found(rest: str, request: Request) -> JSONResponse:
    raise GoogleError(
        404,
        f"{request.method} {request.url.path} is not served here: openreel implements Veo's "
        "predictLongRunning, operations, fetchPredictOperation and files:download.",
    )
