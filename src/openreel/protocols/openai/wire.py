"""OpenAI's videos API (``/v1/videos``): the create parameters, the video object, list pages and errors,
as docs/openai.md describes them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from openreel.domain.rules import Details, VideoSpec, check_strings, resolve_video_request
from openreel.ledger import jobs
from openreel.ledger.credits import InsufficientCredits
from openreel.ledger.tables import JobRecord, Upload, utcnow
from openreel.protocols.inline_images import PENDING_IMAGE_URL, InlineImage, check_image, decode_base64
from openreel.protocols.job_ids import hex_id, parse_job_id
from openreel.protocols.model_ids import catalog_model_id
from openreel.protocols.shaped_routes import RETRY_SOON, Outage, WireError
from openreel.protocols.submission import try_again_soon
from openreel.service.fetch_slots import FetchesBusy
from openreel.service.job_service import EngineUnavailable, take_images
from openreel.service.services import Services
from openreel.service.uploads import UploadRejected

DEFAULT_MODEL = "veo-3.1-fast"
DEFAULT_SIZE = "720x1280"
DEFAULT_SECONDS = 4
POLL_AFTER_MS = "1000"
SIZES = {
    "1280x720": ("16:9", "720p"),
    "720x1280": ("9:16", "720p"),
    "1920x1080": ("16:9", "1080p"),
    "1080x1920": ("9:16", "1080p"),
}
FIELDS = ("prompt", "model", "seconds", "size", "input_reference")
EXTENSIONS = ("seed", "negative_prompt", "generate_audio")
STATUSES = {
    jobs.QUEUED: "queued",
    jobs.PROCESSING: "in_progress",
    jobs.COMPLETED: "completed",
    jobs.FAILED: "failed",
    jobs.CANCELLED: "failed",
}


class OpenAIError(WireError):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
        retry: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.headers = dict(headers or {})
        if not retry:
            self.headers["x-should-retry"] = "false"

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def on_validation(exc: RequestValidationError) -> JSONResponse:
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"] if part not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    return OpenAIError(
        400, f"Invalid value for '{param}': {err['msg']}", param=param, code="invalid_value"
    ).response()


class VideoError(BaseModel):
    code: str
    message: str


class VideoObject(BaseModel):
    id: str
    object: Literal["video"] = "video"
    model: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    seconds: str
    size: str
    prompt: str | None = None
    remixed_from_video_id: str | None = None
    error: VideoError | None = None


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorBody} for code in (400, 401, 403, 404, 409, 429, 503)
}

_PARAM_OF = {
    "prompt": "prompt",
    "model": "model",
    "veoParams.duration": "seconds",
    "veoParams.aspect_ratio": "size",
    "veoParams.resolution": "size",
    "veoParams.image": "input_reference",
    "veoParams.seed": "seed",
    "veoParams.negative_prompt": "negative_prompt",
    "veoParams.generate_audio": "generate_audio",
}


def video_id(job_id: str) -> str:
    return f"video_{hex_id(job_id)}"


def parse_video_id(raw: str) -> str | None:
    return parse_job_id(raw.removeprefix("video_"))


def _unix(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def size_of(spec: dict[str, Any]) -> str:
    for size, (aspect, resolution) in SIZES.items():
        if (spec.get("aspect_ratio"), spec.get("resolution")) == (aspect, resolution):
            return size
    return f"{spec.get('aspect_ratio')}@{spec.get('resolution')}"


def video_object(job: JobRecord) -> dict[str, Any]:
    spec = job.spec or {}
    # An extension's video is the clip it continues and the seconds it adds.
    seconds = spec.get("duration", 0) + ((spec.get("extend") or {}).get("seconds") or 0)
    error = None
    if job.status == jobs.FAILED:
        error = {"code": "generation_failed", "message": job.error or "The video generation failed."}
    elif job.status == jobs.CANCELLED:
        error = {"code": "cancelled", "message": job.error or "The video was cancelled."}
    return {
        "id": video_id(job.id),
        "object": "video",
        "model": job.model,
        "status": STATUSES.get(job.status, job.status.lower()),
        "progress": job.progress,
        "created_at": _unix(job.created_at),
        "completed_at": _unix(job.completed_at),
        "expires_at": None,
        "seconds": f"{seconds:g}" if "duration" in spec else "",
        "size": size_of(spec),
        "prompt": spec.get("prompt"),
        "remixed_from_video_id": None,
        "error": error,
    }


@dataclass(frozen=True)
class FilePart:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Create:
    """A valid create request; an inline first frame is stored only once the request is valid.
    ``unusable``: why its upload (``file_id``) cannot be used now, said to a new job only: a replay of
    its Idempotency-Key answers for as long as the key does, whatever became of the upload since."""

    spec: VideoSpec
    echo: dict[str, Any]
    image: InlineImage | None
    unusable: str | None = None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # Twenty digits are past every bound these numbers have: Python's int() refuses over 4,300.
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", value):
        return int(value)
    return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    return None


def _upload_url(svc: Services, account_id: str, file_id: str, base_url: str, details: Details) -> str | None:
    with svc.db.read() as session:
        upload = session.get(Upload, file_id)
    if upload is None or upload.account_id != account_id:
        details.add(
            "input_reference", f"no upload {file_id!r} in this account (file_id is a POST /v2/uploads id)"
        )
        return None
    if upload.expires_at < utcnow():
        details.add("input_reference", f"upload {file_id!r} has expired; upload the file again")
        return None
    if upload.kind != "image":
        details.add(
            "input_reference", f"upload {file_id!r} is {upload.kind} ({upload.content_type}), not an image"
        )
        return None
    return base_url + svc.signer.path(upload.storage_key, int(upload.expires_at.timestamp()))


def _reference(
    svc: Services, account_id: str, value: Any, base_url: str, details: Details, unusable: Details
) -> tuple[InlineImage | None, str | None, dict[str, Any] | None]:
    """(inline image, URL, its echo) for input_reference; problems go to ``details``, those of an upload
    named by its file_id to ``unusable``."""
    limit = svc.settings.max_upload_image_bytes
    if isinstance(value, FilePart):
        image, why = check_image(value.data, limit)
        if why:
            details.add("input_reference", f"the file {why}")
        return image, None, ({"sha256": image.sha256} if image else None)
    if isinstance(value, str):
        value = {"image_url": value}
    if not isinstance(value, dict) or len(value) != 1 or not ({"image_url", "file_id"} & set(value)):
        details.add("input_reference", "must be an image file, or an object with one of image_url or file_id")
        return None, None, None
    if "file_id" in value:
        file_id = value["file_id"]
        if not isinstance(file_id, str):
            details.add("input_reference", "file_id must be a string")
            return None, None, None
        return None, _upload_url(svc, account_id, file_id, base_url, unusable), {"file_id": file_id}
    url = value["image_url"]
    if not isinstance(url, str):
        details.add("input_reference", "image_url must be a string")
        return None, None, None
    if url.startswith("data:"):
        data_url = re.fullmatch(r"data:([^;,]*)((?:;[^;,]*)*),(.*)", url, flags=re.DOTALL)
        data = decode_base64(data_url[3]) if data_url and ";base64" in data_url[2] else None
        if data is None:
            details.add("input_reference", "a data URL must be base64-encoded (data:image/png;base64,...)")
            return None, None, None
        image, why = check_image(data, limit)
        if why:
            details.add("input_reference", f"the image {why}")
        return image, None, ({"sha256": image.sha256} if image else None)
    return None, url, {"image_url": url}


def parse_create(svc: Services, account_id: str, fields: dict[str, Any], base_url: str) -> Create:
    """OpenAI's create parameters -> our spec; raises OpenAIError naming the (first) bad parameter."""
    unstorable = Details()
    check_strings(unstorable, {k: v for k, v in fields.items() if not isinstance(v, FilePart)})
    for param, messages in unstorable.items():
        raise OpenAIError(400, f"{param}: {messages[0]}", param=param, code="invalid_value")
    for name in fields:
        if name not in FIELDS + EXTENSIONS:
            raise OpenAIError(
                400,
                f"Unknown parameter: '{name}'. Accepted: {', '.join(FIELDS + EXTENSIONS)}.",
                param=name,
                code="unknown_parameter",
            )
    prompt = fields.get("prompt")
    if prompt is None:
        raise OpenAIError(
            400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter"
        )
    requested = fields.get("model")
    if requested is None or requested == "":
        model_id: str | None = DEFAULT_MODEL
    elif not isinstance(requested, str):
        raise OpenAIError(400, "model must be a string", param="model", code="invalid_type")
    else:
        model_id = catalog_model_id(svc.catalog, requested)
    if model_id is None:
        sora = "OpenAI's Sora models are not served here. " if str(requested).startswith("sora") else ""
        raise OpenAIError(
            400,
            f"{sora}The model {requested!r} does not exist on this server; available: "
            f"{', '.join(svc.catalog.ids)} (default {DEFAULT_MODEL}).",
            param="model",
            code="model_not_found",
        )
    model = svc.catalog.get(model_id)
    assert model is not None

    details = Details()
    given: dict[str, Any] = {}
    if not isinstance(prompt, str):
        details.add("prompt", "must be a string")
        prompt = ""

    default_seconds = DEFAULT_SECONDS if DEFAULT_SECONDS in model.durations else min(model.durations)
    duration = default_seconds
    if fields.get("seconds") is not None:
        seconds = _int(fields["seconds"])
        if seconds is None:
            details.add("seconds", f"must be a whole number of seconds, e.g. '{default_seconds}'")
        else:
            duration = given["duration"] = seconds

    size = fields.get("size", DEFAULT_SIZE)
    if not isinstance(size, str) or size not in SIZES:
        details.add("size", f"{size!r} is not supported; supported: {', '.join(SIZES)}")
        aspect_ratio, resolution = SIZES[DEFAULT_SIZE]
    else:
        aspect_ratio, resolution = SIZES[size]
        given["size"] = size

    if fields.get("seed") is not None:
        seed = _int(fields["seed"])
        if seed is None:
            details.add("seed", "must be an integer")
        else:
            given["seed"] = seed
    if fields.get("negative_prompt") is not None:
        negative = fields["negative_prompt"]
        if not isinstance(negative, str):
            details.add("negative_prompt", "must be a string")
        else:
            given["negative_prompt"] = negative
    if fields.get("generate_audio") is not None:
        audio = _bool(fields["generate_audio"])
        if audio is None:
            details.add("generate_audio", "must be true or false")
        elif not model.accepts_audio_flag and audio != model.audio:
            always = "always" if model.audio else "never"
            details.add("generate_audio", f"{model.id} {always} generates audio")
        else:
            given["generate_audio"] = audio

    image: InlineImage | None = None
    image_url: str | None = None
    reference_echo = None
    unusable = Details()
    if fields.get("input_reference") is not None:
        image, image_url, reference_echo = _reference(
            svc, account_id, fields["input_reference"], base_url, details, unusable
        )

    params = {k: v for k, v in given.items() if k != "size"}
    params.update(duration=duration, aspect_ratio=aspect_ratio, resolution=resolution)
    if not model.accepts_audio_flag:
        params.pop("generate_audio", None)
    if image is not None or image_url is not None:
        params["image"] = image_url or PENDING_IMAGE_URL
    spec, resolved = resolve_video_request(
        model_id=model_id,
        prompt=prompt,
        params=params,
        catalog=svc.catalog,
        reference_images_supported=svc.dispatcher.engine.reference_images,
    )
    for path, messages in resolved.items():
        param = _PARAM_OF.get(path, path)
        for message in messages:
            if message not in details.get(param, []):
                details.add(param, message)
    if details or spec is None:
        param = next(iter(details))
        message = "; ".join(f"{p}: {m}" for p, msgs in details.items() for m in msgs)
        raise OpenAIError(400, message, param=param, code="invalid_value")

    echo: dict[str, Any] = {
        "prompt": prompt,
        "model": model_id,
        "veoParams": {k: v for k, v in given.items() if k != "size"},
        "via": "openai",
    }
    if requested:
        echo["requestedModel"] = requested
    if "size" in given:
        echo["size"] = given["size"]
    if reference_echo:
        echo["inputReference"] = reference_echo
    return Create(spec, echo, image, next((m[0] for m in unusable.values()), None))


def materialize(svc: Services, account_id: str, base_url: str, create: Create) -> VideoSpec:
    """The spec with its image stored as an upload of the account: sent inline, or fetched now."""
    if create.unusable is not None:
        raise OpenAIError(400, create.unusable, param="input_reference", code="invalid_value")
    if create.image is None:
        if create.spec.image is None:
            return create.spec
        problems = Details()
        spec = take_images(svc, account_id, create.spec, base_url, problems)
        for messages in problems.values():
            raise OpenAIError(400, messages[0], param="input_reference", code="invalid_value")
        return spec
    try:
        url = create.image.store(svc, account_id, base_url)
    except UploadRejected as exc:
        raise OpenAIError(400, str(exc), param="input_reference", code="invalid_value") from exc
    return VideoSpec.from_json({**create.spec.to_json(), "image": url})


def unavailable(outage: Outage) -> JSONResponse:
    return OpenAIError(
        503,
        outage.message,
        type="server_error",
        code=outage.code,
        retry=True,
        headers=RETRY_SOON,
    ).response()


def refusal(exc: Exception) -> OpenAIError:
    """A refusal of ``submit_job`` (``submission.REFUSALS``) in OpenAI's shape."""
    if isinstance(exc, EngineUnavailable):
        return OpenAIError(503, str(exc), type="server_error", code="engine_unavailable", retry=True)
    if isinstance(exc, InsufficientCredits):
        return OpenAIError(
            429,
            f"Insufficient credits: this video costs {exc.required} credits and the account has "
            f"{exc.available}.",
            type="insufficient_quota",
            code="insufficient_quota",
        )
    if isinstance(exc, jobs.IdempotencyConflict):
        return OpenAIError(
            409,
            str(exc),
            param="Idempotency-Key",
            code="idempotency_conflict",
        )
    assert isinstance(exc, jobs.TooManyActiveJobs | FetchesBusy), exc
    return OpenAIError(
        429, try_again_soon(exc), type="requests", code="rate_limit_exceeded", headers=RETRY_SOON, retry=True
    )


def list_page(
    svc: Services, account_id: str, *, after: str | None, limit: int, order: Literal["asc", "desc"]
) -> tuple[list[JobRecord], bool]:
    """The account's videos by (created_at, id), ``order`` either way, starting after ``after``."""
    with svc.db.read() as session:
        cursor = None
        if after is not None:
            job_id = parse_video_id(after)
            found = jobs.read_for_account(session, account_id, job_id) if job_id else None
            if found is None:
                raise OpenAIError(
                    400,
                    f"after: no video with id '{after}' in this account",
                    param="after",
                    code="invalid_value",
                )
            cursor = (found.created_at, found.id)
        return jobs.list_jobs(session, account_id, limit=limit, after=cursor, ascending=order == "asc")
