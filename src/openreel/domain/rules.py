"""The rules of a video request, for every wire protocol, after its schema has parsed it. Pure: no I/O.

Every field of ``veoParams`` is either resolved into the job spec or refused here with a message
keyed by its Apiframe JSON path (each protocol renames the paths to its own), so nothing a user sends is
silently ignored and no protocol keeps a rule of its own for what they share: lengths, counts, ranges.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

import httpx

from openreel.domain.catalog import Catalog, ModelSpec
from openreel.domain.limits import (
    EXTEND_SECONDS,
    MAX_NEGATIVE_PROMPT,
    MAX_PROMPT,
    MAX_REFERENCES,
    MAX_SAMPLES,
    MAX_SEED,
)

EXTEND_RESOLUTION = "720p"  # Google's rule: extension is 720p only


@dataclass(frozen=True)
class Extension:
    """The clip a request continues: one video (``video``, an index into ``result.videos``) of a finished
    job of the same account. The service fills in ``key``, where that video is stored, and ``seconds``,
    how long it is (the result is that and the seconds added)."""

    job_id: str
    video: int = 0
    # The aspect ratio the request named, if any: it must be the clip's own.
    asked_aspect_ratio: str | None = None
    key: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class VideoSpec:
    model: str
    prompt: str
    duration: int
    aspect_ratio: str
    resolution: str
    generate_audio: bool
    seed: int
    negative_prompt: str | None
    image: str | None
    last_frame: str | None
    reference_images: list[str]
    # Rewrite the prompt with the model's own Gemma before rendering (jobs stored before it have none).
    enhance_prompt: bool = False
    # Videos rendered for the request, seeded seed, seed + 1, ... (``seeds``), each charged.
    sample_count: int = 1
    # Continue this clip by ``duration`` seconds instead of making a new one; the result is both, joined.
    extend: Extension | None = None

    @property
    def seeds(self) -> list[int]:
        """Each sample's seed: the next one up, wrapping round the 32-bit range."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.sample_count)]

    def to_json(self) -> dict[str, Any]:
        # What ``asdict`` gives, without its deep copy of every value (a tenth of a submission's time).
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["reference_images"] = list(self.reference_images)
        data["extend"] = asdict(self.extend) if self.extend else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoSpec:
        extend = data.get("extend")
        return cls(**{**data, "extend": Extension(**extend) if extend else None})


class Details(dict[str, list[str]]):
    def add(self, path: str, message: str) -> None:
        messages = self.setdefault(path, [])
        if message not in messages:
            messages.append(message)


MAX_URL_LENGTH = 2048


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored: PostgreSQL text holds no NUL, and no database (nor a UTF-8
    response) holds an unpaired surrogate, which a JSON ``\\ud800`` escape decodes to."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogates (invalid Unicode)"
    return None


def check_text(details: Details, path: str, text: str | None) -> None:
    problem = text_problem(text) if text is not None else None
    if problem:
        details.add(path, problem)


def check_strings(details: Details, value: Any, path: str = "") -> None:
    """Every string anywhere in a request body, keys included, must be storable (see text_problem)."""
    if isinstance(value, str):
        check_text(details, path or "body", value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(details, path or "body", str(key))
            # The path goes back in the error body: a surrogate in it would break that response too.
            name = str(key).encode("utf-8", "backslashreplace").decode()
            check_strings(details, item, f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_strings(details, item, f"{path}.{i}" if path else str(i))


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def url_problem(url: str, *, hint: str = "") -> str | None:
    """Why ``url`` can never be fetched or posted to, or None; where it points is checked on use.
    A value that is no web URL at all is also told ``hint``: how the protocol takes a local file."""
    not_web = "must be an absolute http(s) URL" + (f" {hint}" if hint else "")
    problem = text_problem(url)
    if problem:
        return problem
    scheme = _SCHEME.match(url.strip())  # before the length: a base64 image is long
    if scheme is None or scheme[1].lower() not in ("http", "https"):
        return not_web
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not host:
        return not_web
    if port == 0:
        return "must not name port 0"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials"
    try:
        host.encode("idna")
        httpx.URL(url)  # the client that will send the request parses it again, more strictly
    except (UnicodeError, httpx.InvalidURL) as exc:
        return f"has an invalid host name {host!r} ({exc})"
    return None


def check_url(details: Details, path: str, url: str, *, hint: str = "") -> None:
    problem = url_problem(url, hint=hint)
    if problem:
        details.add(path, problem)


def resolve_video_request(
    *,
    model_id: str,
    prompt: str,
    params: dict[str, Any],
    catalog: Catalog,
    reference_images_supported: bool,
    image_hint: str = "",
) -> tuple[VideoSpec | None, Details]:
    """Apply defaults and rules; returns the spec, or None with the reasons keyed by JSON path. An image
    that is no web URL is told ``image_hint``: how the caller's protocol takes a local file."""
    details = Details()
    model = catalog.get(model_id)
    if model is None:
        details.add("model", f"Unknown model {model_id!r}; supported: {', '.join(catalog.ids)}")
        return None, details
    if not prompt.strip():
        details.add("prompt", "must not be blank")
    elif len(prompt) > MAX_PROMPT:
        details.add("prompt", f"must be at most {MAX_PROMPT} characters")
    check_text(details, "prompt", prompt)
    negative = params.get("negative_prompt")
    if negative is not None and len(negative) > MAX_NEGATIVE_PROMPT:
        details.add("veoParams.negative_prompt", f"must be at most {MAX_NEGATIVE_PROMPT} characters")
    check_text(details, "veoParams.negative_prompt", negative)
    spec = _resolve_params(model, prompt, params, details, reference_images_supported, image_hint, catalog)
    return (spec if not details else None), details


def _resolve_params(
    model: ModelSpec,
    prompt: str,
    params: dict[str, Any],
    details: Details,
    refs_supported: bool,
    image_hint: str,
    catalog: Catalog,
) -> VideoSpec:
    p = "veoParams."
    extend = _extension(model, params, details, catalog)
    duration = params.get("duration")
    if extend is not None:
        duration = EXTEND_SECONDS
    elif duration is None:
        duration = model.default_duration
    elif duration not in model.durations:
        details.add(p + "duration", f"must be one of {', '.join(map(str, model.durations))} for {model.id}")

    # Absent or null: the default; given but empty is refused as any other value would be.
    aspect_ratio = "16:9" if params.get("aspect_ratio") is None else params["aspect_ratio"]
    if aspect_ratio not in model.aspect_ratios:
        details.add(
            p + "aspect_ratio",
            f"{aspect_ratio!r} is not supported; supported: {', '.join(model.aspect_ratios)} "
            "(the engine generates only these natively and does not letterbox)",
        )

    resolution = "720p" if params.get("resolution") is None else params["resolution"]
    if resolution not in model.resolutions:
        details.add(p + "resolution", f"must be one of {', '.join(model.resolutions)}")

    generate_audio = params.get("generate_audio")
    if generate_audio is None:
        generate_audio = model.audio
    elif generate_audio and not model.audio:
        details.add(p + "generate_audio", f"{model.id} generates silent video only; set it to false")
    if "generate_audio" in params and not model.accepts_audio_flag:
        details.add(p + "generate_audio", f"is not accepted by {model.id}")

    seed = params.get("seed")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    elif not 0 <= seed <= MAX_SEED:
        details.add(p + "seed", f"must be between 0 and {MAX_SEED}")

    for field in ("image", "last_frame"):
        if params.get(field) is not None:
            check_url(details, p + field, params[field], hint=image_hint)

    references = list(params.get("reference_images") or [])
    if len(references) > MAX_REFERENCES:
        details.add(p + "reference_images", f"at most {MAX_REFERENCES} reference images")
    for i, url in enumerate(references):
        check_url(details, f"{p}reference_images.{i}", url, hint=image_hint)
    if references and not model.accepts_reference_images:
        details.add(p + "reference_images", f"is not accepted by {model.id}")
    elif references and not refs_supported:
        details.add(
            p + "reference_images",
            "reference images need a reference (IC-LoRA) adapter such as Lightricks' LTX-2.3 Ingredients, "
            "which this server does not have configured (OPENREEL_REFERENCE_ADAPTER); remove "
            "reference_images or ask the operator to enable it",
        )

    sample_count = params.get("sample_count")
    if sample_count is None:
        sample_count = 1
    elif not 1 <= sample_count <= MAX_SAMPLES:
        details.add(p + "sample_count", f"must be between 1 and {MAX_SAMPLES}")

    negative = params.get("negative_prompt")
    return VideoSpec(
        model=model.id,
        prompt=prompt,
        duration=int(duration),
        aspect_ratio=aspect_ratio,
        resolution=resolution,
        generate_audio=bool(generate_audio),
        seed=int(seed),
        negative_prompt=negative if negative and negative.strip() else None,
        image=params.get("image"),
        last_frame=params.get("last_frame"),
        reference_images=references,
        enhance_prompt=bool(params.get("enhance_prompt")),
        sample_count=int(sample_count),
        extend=extend,
    )


def _extension(
    model: ModelSpec, params: dict[str, Any], details: Details, catalog: Catalog
) -> Extension | None:
    """The clip to continue, with the rules that hold without looking at it (the service checks the rest):
    a model that extends, 720p, a length the extension sets itself, no keyframes or references."""
    job_id = params.get("extend_job_id")
    video = params.get("extend_video")
    p = "veoParams."
    if job_id is None:
        if video is not None:
            details.add(p + "extend_video", "needs veoParams.extend_job_id (the job whose video it picks)")
        return None
    if not model.extends:
        details.add(
            p + "extend_job_id", f"{model.id} does not extend clips; use {' or '.join(catalog.extending)}"
        )
    try:
        job_id = str(uuid.UUID(str(job_id)))
    except ValueError:
        details.add(p + "extend_job_id", "must be a job id (the jobId a submission returned)")
    if params.get("duration") is not None:
        details.add(p + "duration", f"an extension adds {EXTEND_SECONDS} s to the clip; leave duration out")
    if (params.get("resolution") or EXTEND_RESOLUTION) != EXTEND_RESOLUTION:
        details.add(
            p + "resolution", f"an extension is {EXTEND_RESOLUTION}, the size of the clip it continues"
        )
    for field in ("image", "last_frame", "reference_images"):
        if params.get(field):
            details.add(
                p + field, "cannot be combined with an extension (it continues the clip's last frames)"
            )
    if video is not None and video < 0:
        details.add(p + "extend_video", "must be 0 or more (an index into the job's result.videos)")
    return Extension(job_id=str(job_id), video=int(video or 0), asked_aspect_ratio=params.get("aspect_ratio"))
