"""Google's Veo wire protocol: the ``predictLongRunning`` request, Google's rules, operations, errors, in
its Gemini and Vertex forms, as docs/google.md describes them (exact requests in the shared notes,
``client-wire.md``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from openreel.domain.limits import EXTEND_SECONDS
from openreel.domain.rules import Details, VideoSpec, check_strings, resolve_video_request
from openreel.ledger import jobs
from openreel.ledger.credits import InsufficientCredits
from openreel.ledger.tables import JobRecord
from openreel.protocols.inline_images import PENDING_IMAGE_URL, InlineImage, check_image, decode_base64
from openreel.protocols.job_ids import hex_id, parse_job_id
from openreel.protocols.model_ids import GOOGLE_MODEL_EXAMPLES, catalog_model_id
from openreel.protocols.shaped_routes import RETRY_SOON, SEND_JSON, Outage, WireError, unread_body
from openreel.protocols.submission import try_again_soon
from openreel.service.fetch_slots import FetchesBusy
from openreel.service.job_service import EngineUnavailable
from openreel.service.services import Services
from openreel.service.uploads import UploadRejected
from openreel.service.views import Standing, iso

Form = Literal["gemini", "vertex"]

GOOGLE_DEFAULT_DURATION = 8
# Lists are refused past these before their items are read: a body may hold a hundred megabytes (inline
# images), and a million empty instances took 3.6 s and 570 MB to validate. Below them, the request rules
# say what is wrong (one instance, three reference images). Vertex AI allows 64 labels.
MAX_LISTED = 16
MAX_LABELS = 64

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
RPC_CANCELLED, RPC_INTERNAL = 1, 13


class GoogleError(WireError):
    def __init__(
        self,
        code: int,
        message: str,
        status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        self.details = details
        self.headers = headers

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.code, headers=self.headers)


def invalid(details: Details) -> GoogleError:
    """400 INVALID_ARGUMENT naming every problem, keyed by the JSON path in Google's request."""
    message = "; ".join(f"{path}: {msg}" for path, msgs in details.items() for msg in msgs)
    violations = [{"field": path, "description": msg} for path, msgs in details.items() for msg in msgs]
    return GoogleError(
        400,
        message,
        details=[{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}],
    )


def _json_path(loc: tuple[Any, ...]) -> str:
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def on_validation(exc: RequestValidationError) -> JSONResponse:
    details = Details()
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "json_invalid":
            details.add("body", "Invalid JSON payload received.")
        elif err["type"] == "extra_forbidden":
            parent = _json_path(loc[:-1]) or "the request"
            details.add(_json_path(loc), f'Unknown name "{loc[-1]}" at {parent}: Cannot find field.')
        elif err["type"] == "missing" and len(loc) <= 1:
            details.add("body", "a JSON request body is required")
        elif unread_body(err):
            details.add("body", SEND_JSON)
        elif err["type"] == "missing":
            details.add(_json_path(loc), "is required")
        else:
            details.add(_json_path(loc) or "body", str(err["msg"]).removeprefix("Value error, "))
    return invalid(details).response()


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


GInt = Annotated[int, BeforeValidator(_no_bool)]


class _Wire(BaseModel):
    """Google's JSON: camelCase names (snake_case accepted too, as Google's proto JSON parser does);
    an unknown name is an error, never ignored."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class GoogleMedia(_Wire):
    """An image: inline ``bytesBase64Encoded`` (``gcsUri`` is refused), with an optional ``mimeType``."""

    bytes_base64_encoded: str | None = None
    gcs_uri: str | None = None
    mime_type: str | None = None


class GoogleReferenceImage(_Wire):
    image: GoogleMedia | None = None
    reference_type: str | None = None


class GoogleVideo(_Wire):
    """A video: a link (Gemini ``uri``, Vertex ``gcsUri``) or inline bytes (Gemini ``encodedVideo``,
    Vertex ``bytesBase64Encoded``) with its type (``encoding`` / ``mimeType``)."""

    uri: str | None = None
    gcs_uri: str | None = None
    encoded_video: str | None = None
    bytes_base64_encoded: str | None = None
    encoding: str | None = None
    mime_type: str | None = None


class GoogleInstance(_Wire):
    prompt: str | None = None
    image: GoogleMedia | None = None
    last_frame: GoogleMedia | None = None
    reference_images: Annotated[list[GoogleReferenceImage], Field(max_length=MAX_LISTED)] | None = None
    video: GoogleVideo | None = None
    mask: dict[str, Any] | None = None


class GoogleParameters(_Wire):
    sample_count: GInt | None = None
    duration_seconds: GInt | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None
    negative_prompt: str | None = None
    seed: GInt | None = None
    generate_audio: StrictBool | None = None
    enhance_prompt: StrictBool | None = None
    person_generation: str | None = None
    fps: GInt | None = None
    compression_quality: str | None = None
    resize_mode: str | None = None
    storage_uri: str | None = None
    pubsub_topic: str | None = None


class PredictRequest(_Wire):
    """The body of ``:predictLongRunning`` (Gemini and Vertex forms alike)."""

    instances: Annotated[list[GoogleInstance], Field(max_length=MAX_LISTED)]
    parameters: GoogleParameters | None = None
    webhook_config: dict[str, Any] | None = None
    labels: Annotated[dict[str, str], Field(max_length=MAX_LABELS)] | None = None


class FetchPredictOperationRequest(_Wire):
    operation_name: str


class RpcStatus(BaseModel):
    code: int
    message: str
    status: str | None = None
    details: list[dict[str, Any]] | None = None


class GoogleErrorBody(BaseModel):
    error: RpcStatus


class Operation(BaseModel):
    """A long-running operation: ``name`` always; ``response`` or ``error`` once ``done``."""

    name: str
    done: bool
    metadata: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    error: RpcStatus | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": GoogleErrorBody} for code in (400, 401, 403, 404, 409, 429, 503)
}


@dataclass
class Predict:
    """A valid request, its images not stored yet (nothing is stored for a refused request)."""

    spec: VideoSpec
    echo: dict[str, Any]
    image: InlineImage | None = None
    last_frame: InlineImage | None = None
    references: list[InlineImage] = field(default_factory=list)


_APIFRAME_PATHS = {
    "model": "model",
    "prompt": "instances[0].prompt",
    "veoParams.duration": "parameters.durationSeconds",
    "veoParams.aspect_ratio": "parameters.aspectRatio",
    "veoParams.resolution": "parameters.resolution",
    "veoParams.generate_audio": "parameters.generateAudio",
    "veoParams.seed": "parameters.seed",
    "veoParams.negative_prompt": "parameters.negativePrompt",
    "veoParams.image": "instances[0].image",
    "veoParams.last_frame": "instances[0].lastFrame",
    "veoParams.reference_images": "instances[0].referenceImages",
    "veoParams.sample_count": "parameters.sampleCount",
    "veoParams.extend_job_id": "instances[0].video",
    "veoParams.extend_video": "instances[0].video",
}
# Where this server's links to a job's video name it: a Gemini file (``files/<op>[s<n>]``, or
# ``[-<n>]`` as earlier versions wrote it) or a stored result (``results/<job>/<attempt>[.<n>].mp4``, in
# a signed link of this server or of S3).
_OWN_VIDEO = re.compile(
    r"/files/(?P<file>[0-9a-f]{32}(?:[s-]\d+)?)(?::download)?$|/results/(?P<job>[0-9a-f-]{36})/\d+(?:\.(?P<n>\d+))?\.mp4$"
)


def _continued(details: Details, video: GoogleVideo) -> tuple[str, int] | None:
    """(job id, which of its videos) that ``video`` links to; never fetched, the account's jobs decide."""
    link = video.uri or video.gcs_uri
    if link is None:
        inline = video.encoded_video is not None or video.bytes_base64_encoded is not None
        details.add(
            "instances[0].video",
            "only videos this server generated can be extended: pass the video of an earlier operation "
            "(its uri or gcsUri)" + ("; inline video bytes are not taken" if inline else ""),
        )
        return None
    try:
        match = _OWN_VIDEO.search(urlsplit(link).path)
    except ValueError:  # not a URL (an unclosed IPv6 bracket, say)
        match = None
    if match is None:
        details.add(
            "instances[0].video",
            f"{link!r} is not a video of this server; pass the video of an earlier operation as its "
            "response gave it",
        )
        return None
    if match["file"]:
        operation, sample = file_sample(match["file"])
        job_id = parse_job_id(operation)
        assert job_id is not None  # the pattern takes 32 hex digits only
        return job_id, sample
    return match["job"], int(match["n"] or 0)


def _google_path(path: str) -> str:
    if path in _APIFRAME_PATHS:
        return _APIFRAME_PATHS[path]
    match = re.fullmatch(r"veoParams\.reference_images\.(\d+)", path)
    return f"instances[0].referenceImages[{match[1]}]" if match else path


def _inline(details: Details, path: str, media: GoogleMedia | None, limit: int) -> InlineImage | None:
    if media is None:
        return None
    if media.gcs_uri is not None:
        details.add(
            path + ".gcsUri",
            "Cloud Storage inputs are not supported by this server; send the image inline as "
            "bytesBase64Encoded",
        )
        return None
    if media.bytes_base64_encoded is None:
        details.add(path, "needs bytesBase64Encoded (the image bytes, base64-encoded)")
        return None
    if media.mime_type is not None and not media.mime_type.lower().startswith("image/"):
        details.add(path + ".mimeType", f"must be an image type; got {media.mime_type!r}")
    if len(media.bytes_base64_encoded) > limit * 4 // 3 + 64:
        details.add(path + ".bytesBase64Encoded", f"images are limited to {limit} bytes")
        return None
    data = decode_base64(media.bytes_base64_encoded)
    if data is None:
        details.add(path + ".bytesBase64Encoded", "is not valid base64")
        return None
    image, why = check_image(data, limit)
    if why:
        details.add(path + ".bytesBase64Encoded", why)
    return image


def _labels(details: Details, labels: dict[str, str]) -> None:
    if len(labels) > 64:
        details.add("labels", "at most 64 labels")
    for name, value in labels.items():
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", name):
            details.add(
                f"labels.{name}",
                "keys start with a lowercase letter and hold at most 63 lowercase letters, digits, _ or -",
            )
        if not re.fullmatch(r"[\w-]{0,63}", value):
            details.add(f"labels.{name}", "values hold at most 63 letters, digits, _ or -")


def _unsupported(details: Details, p: GoogleParameters, body: PredictRequest) -> None:
    """Fields openreel cannot honour, unless they ask for what it does anyway."""
    if p.person_generation is not None:
        value = p.person_generation.lower()
        if value in ("allow_adult", "dont_allow"):
            details.add(
                "parameters.personGeneration",
                f"{p.person_generation!r} needs a person/age filter, which this server does not have; "
                "omit personGeneration or send 'allow_all'",
            )
        elif value != "allow_all":
            details.add("parameters.personGeneration", "must be allow_all, allow_adult or dont_allow")
    if p.fps is not None and p.fps != 24:
        details.add("parameters.fps", f"only 24 fps is generated; got {p.fps}")
    if p.compression_quality is not None and p.compression_quality.upper() != "OPTIMIZED":
        details.add(
            "parameters.compressionQuality",
            "only OPTIMIZED (H.264) output is available"
            if p.compression_quality.upper() == "LOSSLESS"
            else "must be OPTIMIZED or LOSSLESS",
        )
    if p.resize_mode is not None and p.resize_mode.lower() != "crop":
        details.add(
            "parameters.resizeMode",
            "padding is not supported: images are scaled to cover the frame and centre-cropped "
            "(resizeMode 'crop')"
            if p.resize_mode.lower() == "pad"
            else "must be pad or crop",
        )
    if p.storage_uri is not None:
        details.add(
            "parameters.storageUri",
            "this server does not write to Cloud Storage; omit storageUri: the finished operation "
            "links the video",
        )
    if p.pubsub_topic is not None:
        details.add("parameters.pubsubTopic", "Pub/Sub notifications are not supported; poll the operation")
    if body.webhook_config is not None:
        details.add(
            "webhookConfig",
            "Google-style webhooks are not supported; poll the operation, or submit through the "
            "Apiframe API (POST /v2/videos/generate with webhookUrl) for signed webhooks",
        )


def parse_predict(svc: Services, requested_model: str, body: PredictRequest, *, form: Form) -> Predict:
    """Google's request -> our spec, with Google's rules; raises GoogleError (nothing stored yet)."""
    model_id = catalog_model_id(svc.catalog, requested_model)
    if model_id is None:
        raise GoogleError(
            404,
            f"models/{requested_model} is not found or is not supported for predictLongRunning. "
            f"Supported: {GOOGLE_MODEL_EXAMPLES}, and this server's own ids {', '.join(svc.catalog.ids)}.",
        )
    model = svc.catalog.get(model_id)
    assert model is not None
    unstorable = Details()
    check_strings(unstorable, body.model_dump(by_alias=True, exclude_unset=True))
    if unstorable:
        raise invalid(Details({re.sub(r"\.(\d+)", r"[\1]", path): m for path, m in unstorable.items()}))
    details = Details()
    if len(body.instances) != 1:
        details.add("instances", f"exactly one instance is supported; got {len(body.instances)}")
    inst = body.instances[0] if body.instances else GoogleInstance()
    p = body.parameters or GoogleParameters()
    limit = svc.settings.max_upload_image_bytes

    prompt = inst.prompt or ""
    image = _inline(details, "instances[0].image", inst.image, limit)
    last_frame = _inline(details, "instances[0].lastFrame", inst.last_frame, limit)
    references: list[InlineImage] = []
    for i, ref in enumerate(inst.reference_images or []):
        path = f"instances[0].referenceImages[{i}]"
        if (ref.reference_type or "asset").lower() != "asset":
            details.add(
                path + ".referenceType", "only asset references are supported (style needs veo-2.0-exp)"
            )
        if ref.image is None:
            details.add(path + ".image", "is required")
        elif (inline := _inline(details, path + ".image", ref.image, limit)) is not None:
            references.append(inline)
    continued = _continued(details, inst.video) if inst.video is not None else None
    if inst.mask is not None:
        details.add("instances[0].mask", "masked editing (insert, remove, outpaint) is not supported")

    given: dict[str, Any] = {}
    # In the echo too: the job's input and its Idempotency-Key hash say what it extends.
    if continued is not None:
        given["extend_job_id"], given["extend_video"] = continued
    if p.duration_seconds is not None:
        given["duration"] = p.duration_seconds
    duration = given.get("duration", GOOGLE_DEFAULT_DURATION)
    if p.aspect_ratio is not None:
        given["aspect_ratio"] = p.aspect_ratio
    if p.resolution is not None:
        if p.resolution not in model.resolutions:
            extra = " (4k is not available on this server)" if p.resolution.lower() == "4k" else ""
            details.add(
                "parameters.resolution",
                f"{p.resolution!r} is not supported; supported: {', '.join(model.resolutions)}{extra}",
            )
        else:
            given["resolution"] = p.resolution
    if p.negative_prompt is not None:
        given["negative_prompt"] = p.negative_prompt
    if p.seed is not None:
        given["seed"] = p.seed
    if p.enhance_prompt is not None:
        given["enhance_prompt"] = p.enhance_prompt
    if p.sample_count is not None:
        given["sample_count"] = p.sample_count
    if p.generate_audio is not None:
        given["generate_audio"] = p.generate_audio
        if not model.accepts_audio_flag and p.generate_audio != model.audio:
            always = "always" if model.audio else "never"
            details.add(
                "parameters.generateAudio",
                f"{model.id} {always} generates audio; omit generateAudio or set it to "
                f"{str(model.audio).lower()}",
            )
    _unsupported(details, p, body)
    if body.labels:
        _labels(details, body.labels)

    # Google's own rules, on top of the catalog's.
    if inst.last_frame is not None and inst.image is None:
        details.add(
            "instances[0].lastFrame", "requires instances[0].image (Veo interpolates from a first frame)"
        )
    if inst.reference_images:
        if inst.image is not None or inst.last_frame is not None or inst.video is not None:
            details.add("instances[0].referenceImages", "cannot be combined with image, lastFrame or video")
        if duration != 8:
            details.add("instances[0].referenceImages", f"require durationSeconds 8; got {duration}")
    if given.get("resolution") == "1080p":
        if model.id == "veo-2":
            details.add("parameters.resolution", "veo-2 generates 720p only")
        elif duration in model.durations and duration != 8:
            details.add("parameters.resolution", f"1080p requires durationSeconds 8; got {duration}")

    params = dict(given)
    params["duration"] = duration
    # An extension's length is its own; Google takes only its default 8 with one.
    if inst.video is not None and params.pop("duration") != GOOGLE_DEFAULT_DURATION:
        details.add(
            "parameters.durationSeconds",
            f"must be {GOOGLE_DEFAULT_DURATION} (or absent) with video: an extension adds "
            f"{EXTEND_SECONDS} s to the clip",
        )
    # Google enhances unless told not to; a server whose workers cannot does not, unless told to.
    params.setdefault("enhance_prompt", svc.dispatcher.engine.enhance_error is None)
    if not model.accepts_audio_flag:
        params.pop("generate_audio", None)
    if inst.image is not None:
        params["image"] = PENDING_IMAGE_URL
    if inst.last_frame is not None:
        params["last_frame"] = PENDING_IMAGE_URL
    if inst.reference_images:
        params["reference_images"] = [PENDING_IMAGE_URL] * len(inst.reference_images)
    spec, resolved = resolve_video_request(
        model_id=model_id,
        prompt=prompt,
        params=params,
        catalog=svc.catalog,
        reference_images_supported=svc.dispatcher.engine.reference_images,
    )
    for path, messages in resolved.items():
        for message in messages:
            if message not in details.get(_google_path(path), []):
                details.add(_google_path(path), message)
    if details or spec is None:
        raise invalid(details)

    echo: dict[str, Any] = {
        "prompt": prompt,
        "model": model_id,
        "veoParams": given,
        "via": f"google-{form}",
        "requestedModel": requested_model,
    }
    keyframes = {"image": image, "last_frame": last_frame}
    hashes: dict[str, Any] = {name: img.sha256 for name, img in keyframes.items() if img is not None}
    if references:
        hashes["reference_images"] = [img.sha256 for img in references]
    if hashes:
        echo["inlineImagesSha256"] = hashes
    if body.labels:
        echo["labels"] = body.labels
    return Predict(spec, echo, image, last_frame, references)


def materialize(
    svc: Services, account_id: str, base_url: str, predict: Predict, spec: VideoSpec
) -> VideoSpec:
    """Store the inline images as uploads of the account and put their signed URLs in ``spec`` (the
    request's, as ``submit_job`` has it by now)."""
    try:
        image = predict.image.store(svc, account_id, base_url) if predict.image else None
        last = predict.last_frame.store(svc, account_id, base_url) if predict.last_frame else None
        refs = [img.store(svc, account_id, base_url) for img in predict.references]
    except UploadRejected as exc:
        raise GoogleError(400, f"instances[0]: {exc}") from exc
    return replace(spec, image=image, last_frame=last, reference_images=refs)


def unavailable(outage: Outage) -> JSONResponse:
    return GoogleError(503, outage.message, headers=RETRY_SOON).response()


def refusal(exc: Exception) -> GoogleError:
    """A refusal of ``submit_job`` (``submission.REFUSALS``) in Google's shape."""
    if isinstance(exc, EngineUnavailable):
        return GoogleError(503, str(exc))
    if isinstance(exc, InsufficientCredits):
        return GoogleError(
            429,
            f"Insufficient credits: this video costs {exc.required} credits and the account has "
            f"{exc.available}. Add credits (openreel credits grant) and try again.",
            details=[
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "INSUFFICIENT_CREDITS",
                    "domain": "openreel",
                    "metadata": {
                        "creditsRequired": str(exc.required),
                        "creditsAvailable": str(exc.available),
                    },
                }
            ],
        )
    if isinstance(exc, jobs.IdempotencyConflict):
        return GoogleError(409, str(exc))
    assert isinstance(exc, jobs.TooManyActiveJobs | FetchesBusy), exc
    return GoogleError(429, try_again_soon(exc), headers=RETRY_SOON)


_OPERATION_NAME = re.compile(
    r"^(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/[^/]+/)?(?:models/(?P<model>[^/]+)/)?"
    r"operations/(?P<id>[^/]+)$"
)


def operation_name(form: Form, requested_model: str, job_id: str) -> str:
    prefix = "publishers/google/" if form == "vertex" else ""
    return f"{prefix}models/{requested_model}/operations/{hex_id(job_id)}"


def operation_id(name: str) -> str | None:
    """The operation id (a job id, 32 hex digits) inside an operation name."""
    match = _OPERATION_NAME.match(name)
    return match["id"] if match else None


def file_uri(base_url: str, version: str, job_id: str, sample: int = 0) -> str:
    """Google's download uri of a job's video (``sample``: which of the request's samples); always https,
    because the SDK reads the file id only from https uris, and letters and digits alone, because it
    keeps only the id's leading run of them (``<op>-1`` would download ``<op>``)."""
    parts = urlsplit(base_url)
    file_id = hex_id(job_id) + (f"s{sample}" if sample else "")
    return f"https://{parts.netloc}{parts.path.rstrip('/')}/{version}/files/{file_id}:download?alt=media"


def file_sample(file_id: str) -> tuple[str, int]:
    """(operation id, sample index) of a file id as ``file_uri`` writes it (or wrote it: ``<op>-<n>``);
    a request has at most four samples, so a longer number names none."""
    operation, sample = file_id[:32], file_id[32:]
    if len(operation) == 32 and sample[:1] in ("s", "-") and sample[1:].isdecimal() and len(sample) <= 3:
        return operation, int(sample[1:])
    return file_id, 0


def operation(
    svc: Services,
    job: JobRecord,
    name: str,
    *,
    form: Form,
    base_url: str,
    version: str,
    standing: Standing,
) -> dict[str, Any]:
    """The job as an operation of the given form."""
    metadata: dict[str, Any] = {
        "state": job.status,
        "progressPercent": job.progress,
        "model": job.model,
        "creditCost": svc.presenter.charged(job),
        "createTime": iso(job.created_at),
    }
    if standing.position is not None:
        metadata["queuePosition"] = standing.position
    if job.status in jobs.ACTIVE:
        metadata["etaSeconds"] = standing.eta_s
    if job.completed_at is not None:
        metadata["endTime"] = iso(job.completed_at)
    body: dict[str, Any] = {"name": name, "done": job.status not in jobs.ACTIVE, "metadata": metadata}
    if job.status == jobs.COMPLETED:
        result = svc.presenter.result(job, base_url) or {}
        metadata.update(
            {
                "width": result.get("width"),
                "height": result.get("height"),
                "durationSeconds": result.get("durationSeconds"),
                "fps": result.get("fps"),
                "hasAudio": result.get("hasAudio"),
                "seed": result.get("seed"),
                "expired": svc.presenter.expired(job),
            }
        )
        if result.get("notice"):
            metadata["notice"] = result["notice"]
        for extra in ("enhancedPrompt", "extendedFrom"):
            if result.get(extra) is not None:
                metadata[extra] = result[extra]
        samples = result.get("videos", [])
        metadata["samples"] = samples
        made = [(i, sample) for i, sample in enumerate(samples) if "error" not in sample]
        if form == "gemini":
            generated = [
                {"video": {"uri": file_uri(base_url, version, job.id, i), "encoding": "video/mp4"}}
                for i, _ in made
            ]
            body["response"] = {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                "generateVideoResponse": {"generatedSamples": generated},
            }
        else:
            body["response"] = {
                "@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse",
                "raiMediaFilteredCount": 0,
                "videos": [{"gcsUri": sample["videoUrl"], "mimeType": "video/mp4"} for _, sample in made],
            }
    elif job.status == jobs.FAILED:
        body["error"] = {"code": RPC_INTERNAL, "message": job.error or "The video generation failed."}
    elif job.status == jobs.CANCELLED:
        body["error"] = {"code": RPC_CANCELLED, "message": job.error or "The operation was cancelled."}
    return body
