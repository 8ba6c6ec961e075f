"""Submitting a parsed request for the Google and OpenAI surfaces, its refusals in the surface's shape,
and what every surface says to a request refused for now (a 429 the same request may pass soon)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openreel.domain.rules import VideoSpec
from openreel.ledger import jobs
from openreel.ledger.credits import InsufficientCredits
from openreel.ledger.tables import ApiKey
from openreel.protocols.shaped_routes import WireError
from openreel.service.fetch_slots import FetchesBusy
from openreel.service.job_service import EngineUnavailable, Submitted, submit_job
from openreel.service.services import Services

# What ``submit_job`` refuses a request with; each surface shapes them with its own ``refusal``.
REFUSALS = (
    EngineUnavailable,
    InsufficientCredits,
    jobs.IdempotencyConflict,
    jobs.TooManyActiveJobs,
    FetchesBusy,
)


def try_again_soon(exc: jobs.TooManyActiveJobs | FetchesBusy) -> str:
    """The message of a 429 sent with ``RETRY_SOON``."""
    if isinstance(exc, FetchesBusy):
        return f"{exc}; retry in a few seconds"
    return f"Too many concurrent jobs: {exc}; wait for one to finish"


async def submit(
    svc: Services,
    key: ApiKey,
    spec: VideoSpec,
    *,
    echo: dict[str, Any],
    idem: str | None,
    base_url: str,
    prepare: Callable[[VideoSpec], VideoSpec] | None,
    refusal: Callable[[Exception], WireError],
) -> Submitted:
    """``submit_job`` with its refusals shaped by the surface's ``refusal``. Its job is as submitted, so
    a create answers "queued" even when a worker has already taken the job."""
    try:
        submitted = await submit_job(
            svc, key, spec, echo=echo, base_url=base_url, prepare=prepare, idempotency_key=idem
        )
    except REFUSALS as exc:
        raise refusal(exc) from exc
    return submitted
