"""The OpenAI-style videos API (``/v1/videos``) over the same jobs.

- ``POST /v1/videos``: create (multipart with an optional ``input_reference`` file, or JSON)
- ``GET /v1/videos/{id}``: retrieve; ``openai-poll-after-ms`` tells the SDK's poller how often
- ``GET /v1/videos?after=&limit=&order=``: the account's videos (every surface's jobs)
- ``DELETE /v1/videos/{id}``: OpenAI has no cancel, so deleting a queued or running video cancels
  it first (stopping the render at its next step) with a full refund, then deletes it
- ``GET /v1/videos/{id}/content?variant=video``: the MP4 (HTTP Range supported); the thumbnail and
  spritesheet variants are refused

Authentication: ``Authorization: Bearer afk_...``. ``Idempotency-Key`` (optional, not sent by the
SDK; pass it with ``extra_headers``) replays a create as on the Apiframe API, which guards against
the SDK's automatic retries of a create. Remix, edits, extensions and characters are not served
(OpenAI-shaped 404). Mapping, defaults and refusals: ``openreel.protocols.openai.wire``.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request, Security
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from openreel.domain.limits import MAX_IDEMPOTENCY_KEY, MAX_NEGATIVE_PROMPT, MAX_PROMPT, MAX_SEED
from openreel.domain.rules import Details
from openreel.ledger import jobs
from openreel.ledger.tables import ApiKey, JobRecord
from openreel.protocols import shaped_routes, submission
from openreel.protocols.deps import ServicesDep, services_of
from openreel.protocols.files import result_disposition, stored_file
from openreel.protocols.openai.wire import (
    ERROR_RESPONSES,
    FIELDS,
    POLL_AFTER_MS,
    FilePart,
    OpenAIError,
    VideoDeleted,
    VideoList,
    VideoObject,
    list_page,
    materialize,
    on_validation,
    parse_create,
    parse_video_id,
    refusal,
    video_object,
)
from openreel.protocols.openai.wire import video_id as openai_id
from openreel.service import job_service
from openreel.service.polls import Poll
from openreel.service.services import AuthError, Services, authenticate

router = APIRouter(tags=["OpenAI videos"], route_class=shaped_routes.shaped_route(on_validation))

_bearer = HTTPBearer(
    auto_error=False, scheme_name="OpenAIBearer", description="Authorization: Bearer afk_..."
)


async def openai_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None
) -> ApiKey:
    raw = credentials.credentials if credentials else None
    try:
        return await authenticate(services_of(request), raw)
    except AuthError as exc:
        if exc.status == 401 and not raw:
            raise OpenAIError(
                401,
                "You didn't provide an API key. Send your openreel key in the Authorization header "
                "(Authorization: Bearer afk_...).",
            ) from exc
        if exc.status == 401:
            raise OpenAIError(
                401,
                f"Incorrect API key provided: {(raw or '')[:8]}***. Use an openreel key (afk_...).",
                code="invalid_api_key",
            ) from exc
        if exc.status == 429:
            retry_after = getattr(exc, "retry_after", None)
            raise OpenAIError(
                429,
                exc.message,
                type="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": retry_after} if retry_after else None,
                retry=True,
            ) from exc
        raise OpenAIError(exc.status, exc.message, code="api_key_inactive") from exc


OpenAIKey = Annotated[ApiKey, Security(openai_key)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=MAX_IDEMPOTENCY_KEY,
        description="Not sent by the OpenAI SDK (use extra_headers): replays the first create for 24 h.",
    ),
]

_FILE_FIELD = {"type": "string", "format": "binary", "description": "the first frame (PNG, JPEG, WebP, GIF)"}
_CREATE_PROPERTIES: dict[str, Any] = {
    "prompt": {"type": "string", "maxLength": MAX_PROMPT},
    "model": {"type": "string", "default": "veo-3.1-fast"},
    "seconds": {"type": "string", "enum": ["4", "5", "6", "7", "8"], "default": "4"},
    "size": {
        "type": "string",
        "enum": ["1280x720", "720x1280", "1920x1080", "1080x1920"],
        "default": "720x1280",
    },
    "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED, "description": "openreel extension"},
    "negative_prompt": {
        "type": "string",
        "maxLength": MAX_NEGATIVE_PROMPT,
        "description": "openreel extension",
    },
    "generate_audio": {"type": "boolean", "description": "openreel extension"},
}
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {**_CREATE_PROPERTIES, "input_reference": _FILE_FIELD},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "additionalProperties": False,
                    "properties": {
                        **_CREATE_PROPERTIES,
                        "input_reference": {
                            "type": "object",
                            "description": "one of image_url (https or data: URL) or file_id (an upload id)",
                            "properties": {"image_url": {"type": "string"}, "file_id": {"type": "string"}},
                        },
                    },
                }
            },
        },
    }
}


async def _read_fields(request: Request, limit: int) -> dict[str, Any]:
    """The create parameters from a JSON, multipart or urlencoded body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            data = await request.json()
        except ValueError as exc:
            raise OpenAIError(400, "The request body is not valid JSON.", code="invalid_json") from exc
        if not isinstance(data, dict):
            raise OpenAIError(400, "The request body must be a JSON object.", code="invalid_json")
        return data
    form_types = ("multipart/form-data", "application/x-www-form-urlencoded")
    if media_type not in form_types:
        raise OpenAIError(
            400,
            "Send the parameters as multipart/form-data (with input_reference as a file part), or "
            f"{shaped_routes.AS_JSON}.",
            code="unsupported_content_type",
        )
    if media_type == form_types[1] and (await request.body()).lstrip()[:1] == b"{":
        message = f"The body looks like JSON but was sent as {media_type}. {shaped_routes.SEND_JSON}."
        raise OpenAIError(400, message, code="unsupported_content_type")
    fields: dict[str, Any] = {}
    try:
        async with request.form(max_files=1, max_fields=len(FIELDS) + 8) as form:
            for name, value in form.multi_items():
                if name in fields:
                    raise OpenAIError(400, f"Parameter '{name}' was given more than once.", param=name)
                if isinstance(value, UploadFile):
                    data = await value.read(limit + 1)
                    fields[name] = FilePart(value.filename, value.content_type, data)
                else:
                    fields[name] = value
    except HTTPException as exc:
        raise OpenAIError(400, f"Could not read the form: {exc.detail}") from exc
    return fields


async def _create(
    svc: Services, request: Request, key: ApiKey, fields: dict[str, Any], idem: str | None
) -> JSONResponse:
    details = Details()
    job_service.check_idempotency_key(details, "Idempotency-Key", idem)
    if details:
        raise OpenAIError(400, details["Idempotency-Key"][0], param="Idempotency-Key", code="invalid_value")
    base_url = svc.base_url(str(request.base_url))
    image = fields.get("input_reference") is not None  # an upload to look up or a file to read
    parse = partial(parse_create, svc, key.account_id, fields, base_url)
    create = await anyio.to_thread.run_sync(parse) if image else parse()
    submitted = await submission.submit(
        svc,
        key,
        create.spec,
        echo=create.echo,
        idem=idem,
        base_url=base_url,
        prepare=(lambda _: materialize(svc, key.account_id, base_url, create)) if image else None,
        refusal=refusal,
    )
    headers = {"openai-poll-after-ms": POLL_AFTER_MS}
    if not submitted.created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(video_object(submitted.job), headers=headers)


def _own_job(svc: Services, key: ApiKey, raw_id: str) -> JobRecord:
    job_id = parse_video_id(raw_id)
    job = None
    if job_id is not None:
        with svc.db.read() as session:
            job = jobs.read_for_account(session, key.account_id, job_id)
    if job is None:
        raise _not_found(raw_id)
    return job


def _not_found(raw_id: str) -> OpenAIError:
    return OpenAIError(404, f"Video with id '{raw_id}' not found.", param="video_id", code="not_found")


@router.post("/v1/videos", response_model=VideoObject, responses=ERROR_RESPONSES, openapi_extra=_CREATE_BODY)
async def create_video(
    request: Request, svc: ServicesDep, key: OpenAIKey, idem: IdempotencyKey = None
) -> JSONResponse:
    """Validates, charges and queues; the reply is the video object (``queued``)."""
    fields = await _read_fields(request, svc.settings.max_upload_image_bytes)
    return await _create(svc, request, key, fields, idem)


@router.get("/v1/videos", response_model=VideoList, responses=ERROR_RESPONSES)
def list_videos(
    svc: ServicesDep,
    key: OpenAIKey,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> JSONResponse:
    """Newest first by default; ``after`` is the last id of the previous page."""
    page, has_more = list_page(svc, key.account_id, after=after, limit=limit, order=order)
    data = [video_object(job) for job in page]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


@router.get("/v1/videos/{video_id}", response_model=VideoObject, responses=ERROR_RESPONSES)
async def retrieve_video(video_id: str, svc: ServicesDep, key: OpenAIKey) -> JSONResponse:
    """What clients poll (``polls``)."""
    job_id = parse_video_id(video_id)
    polled = await svc.polls(Poll(key.account_id, job_id, standing=False)) if job_id is not None else None
    if polled is None:
        raise _not_found(video_id)
    job = polled.job
    headers = {"openai-poll-after-ms": POLL_AFTER_MS} if job.status in jobs.ACTIVE else None
    return JSONResponse(video_object(job), headers=headers)


@router.delete("/v1/videos/{video_id}", response_model=VideoDeleted, responses=ERROR_RESPONSES)
def delete_video(video_id: str, svc: ServicesDep, key: OpenAIKey) -> dict[str, Any]:
    """A queued or running video is cancelled (and refunded) first, then deleted with its file."""
    job = _own_job(svc, key, video_id)
    ended = job_service.delete(svc, key.account_id, job.id, "Deleted by the user before it finished")
    if ended is None:
        raise _not_found(video_id)
    return {"id": openai_id(job.id), "object": "video.deleted", "deleted": True}


@router.get(
    "/v1/videos/{video_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}}, **ERROR_RESPONSES},
)
def download_video(
    video_id: str,
    svc: ServicesDep,
    key: OpenAIKey,
    variant: Annotated[str | None, Query(description="only 'video' is available")] = None,
) -> Response:
    if variant not in (None, "video"):
        raise OpenAIError(
            400,
            f"variant {variant!r} is not available: there are no thumbnails or spritesheets; use 'video'.",
            param="variant",
            code="invalid_value",
        )
    job = _own_job(svc, key, video_id)
    if job.status in jobs.ACTIVE:
        raise OpenAIError(
            400,
            f"Video {video_id} is not ready: it is {video_object(job)['status']} ({job.progress}%).",
            code="video_not_ready",
        )
    if job.status != jobs.COMPLETED or not job.result:
        raise OpenAIError(400, f"Video {video_id} has no content: it failed.", code="video_failed")
    disposition = result_disposition(job.id)
    response = stored_file(svc, job.result["key"], "video/mp4", redirect=False, disposition=disposition)
    if response is None:
        raise OpenAIError(
            404, f"The content of video {video_id} has expired or was deleted.", code="not_found"
        )
    return response


@router.api_route(
    "/v1/videos/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
def videos_not_served(rest: str, request: Request) -> JSONResponse:
    raise OpenAIError(
        404,
        f"{request.method} {request.url.path} is not served: openreel implements create, retrieve, list, "
        "delete and content of /v1/videos (no remix, edits, extensions or characters).",
        code="not_found",
    )
