"""What the compatibility surfaces share: model ids, job ids, inline images, cancel and delete, and
the route class that gives each surface its own error body; with the Apiframe surface, what a body
sent without its JSON Content-Type is told.

Nothing here knows a wire shape; ``google.wire`` and ``openai.wire`` do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from openreel.domain.catalog import Catalog
from openreel.domain.rules import VideoSpec
from openreel.ledger import jobs
from openreel.ledger.credits import InsufficientCredits
from openreel.ledger.tables import ApiKey, Job
from openreel.service.job_service import EngineUnavailable, Submitted, submit_job
from openreel.service.services import Services
from openreel.service.uploads import store_upload
from openreel.storage.sniff import IMAGE_TYPES, FileType, describe, sniff

# What a JSON route says of a body it could not read as JSON for want of the header (curl's -d, for
# one, sends application/x-www-form-urlencoded unless told otherwise).
AS_JSON = "as JSON with the header Content-Type: application/json"
SEND_JSON = f"Send the body {AS_JSON}"
# Where an image goes before the request is known to be valid: resolve_video_request checks only
# that a URL is absolute, and nothing is stored (or charged) for a request that is refused.
PENDING_IMAGE_URL = "https://inline.invalid/pending"


def unread_body(err: dict[str, Any]) -> bool:
    """Whether a validation error is about a JSON route's body that was not read as JSON because its
    Content-Type is missing or not JSON: FastAPI then hands the model the raw bytes."""
    return tuple(err["loc"]) == ("body",) and isinstance(err.get("input"), bytes)


class WireError(Exception):
    """An error already shaped for its surface."""

    def response(self) -> Response:
        raise NotImplementedError


def shaped_route(on_validation: Callable[[RequestValidationError], Response]) -> type[APIRoute]:
    """A route class whose handlers answer ``WireError`` and request validation errors in the
    surface's own shape, instead of the app-wide Apiframe envelope."""

    class ShapedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def shaped(request: Request) -> Response:
                try:
                    return await handler(request)
                except WireError as exc:
                    return exc.response()
                except RequestValidationError as exc:
                    return on_validation(exc)
                except HTTPException as exc:
                    if exc.status_code != 400:
                        raise
                    # FastAPI's own "error parsing the body" (malformed JSON), in the surface's shape.
                    error = {
                        "type": "json_invalid",
                        "loc": ("body",),
                        "msg": "Malformed JSON body",
                        "input": None,
                    }
                    return on_validation(RequestValidationError([error]))

            return shaped

    return ShapedRoute


# Google's Veo model ids (Gemini "-preview", Vertex "-001", Veo 2's "-exp") -> our catalog presets.
_GOOGLE_MODEL = re.compile(
    r"^veo-(?P<version>2\.0|3\.0|3\.1)(?:-(?P<tier>fast|lite))?-generate-(?:preview|exp|\d{3})$"
)
_GOOGLE_PRESETS = {
    ("3.1", None): "veo-3.1",
    ("3.1", "fast"): "veo-3.1-fast",
    ("3.1", "lite"): "veo-3.1-lite",
    ("3.0", None): "veo-3",
    ("3.0", "fast"): "veo-3-fast",
    ("2.0", None): "veo-2",
}
GOOGLE_MODEL_EXAMPLES = (
    "veo-3.1-fast-generate-preview, veo-3.1-generate-preview, veo-3.1-lite-generate-preview, "
    "veo-3.1-fast-generate-001, veo-3.1-generate-001, veo-3.0-generate-001, veo-3.0-fast-generate-001, "
    "veo-2.0-generate-001"
)


def catalog_model_id(catalog: Catalog, requested: str) -> str | None:
    """Our catalog id for a catalog id or a Google Veo model id; None if neither."""
    name = requested.removeprefix("models/")
    if catalog.get(name) is not None:
        return name
    match = _GOOGLE_MODEL.match(name)
    if match is None:
        return None
    preset = _GOOGLE_PRESETS.get((match["version"], match["tier"]))
    return preset if preset is not None and catalog.get(preset) is not None else None


def parse_job_id(raw: str) -> str | None:
    """A job UUID from its 32-hex form (what Google and OpenAI ids carry) or its dashed form."""
    if not re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F-]{36}", raw):
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def hex_id(job_id: str) -> str:
    return uuid.UUID(job_id).hex


@dataclass(frozen=True)
class InlineImage:
    """Image bytes received inline, checked but not stored yet."""

    data: bytes
    kind: FileType

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def store(self, svc: Services, account_id: str, base_url: str) -> str:
        """Save as an upload of the account; the signed URL goes into the job spec."""
        return str(store_upload(svc, account_id, io.BytesIO(self.data), base_url)["url"])


def decode_base64(text: str) -> bytes | None:
    """Standard or URL-safe base64 (proto3 JSON accepts both); whitespace and missing padding ignored."""
    compact = "".join(text.split()).translate(str.maketrans("-_", "+/"))
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def check_image(data: bytes, limit: int) -> tuple[InlineImage | None, str | None]:
    """The image, or why it is refused (type sniffed from the bytes, never trusted from a header)."""
    if not data:
        return None, "is empty"
    kind = sniff(data[:64])
    if kind is None or kind.kind != "image":
        return None, f"must be a {IMAGE_TYPES} image, but this is {describe(data[:64])}"
    if len(data) > limit:
        return None, f"is {len(data)} bytes; images are limited to {limit} bytes"
    return InlineImage(data, kind), None


# What ``submit_job`` refuses a request with; each surface shapes them with its own ``refusal``.
REFUSALS = (EngineUnavailable, InsufficientCredits, jobs.IdempotencyConflict, jobs.TooManyActiveJobs)


def submit(
    svc: Services,
    key: ApiKey,
    spec: VideoSpec,
    *,
    echo: dict[str, Any],
    idem: str | None,
    base_url: str,
    prepare: Callable[[VideoSpec], VideoSpec],
    refusal: Callable[[Exception], WireError],
) -> tuple[Submitted, Job]:
    """``submit_job`` with its refusals shaped by the surface's ``refusal``, and the job row to render."""
    try:
        submitted = submit_job(
            svc, key, spec, echo=echo, base_url=base_url, prepare=prepare, idempotency_key=idem
        )
    except REFUSALS as exc:
        raise refusal(exc) from exc
    with svc.db.read() as session:
        job = session.get(Job, submitted.job_id)
    assert job is not None
    return submitted, job
