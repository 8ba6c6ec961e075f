"""Jobs: read one, list a page, cancel. Another account's job is indistinguishable from none (404)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from openreel.domain.rules import Details, check_text
from openreel.ledger import jobs
from openreel.ledger.tables import Job, JobRecord
from openreel.protocols.apiframe.auth import KeyDep
from openreel.protocols.apiframe.errors import ApiError, validation_error
from openreel.protocols.apiframe.schemas import ErrorBody, JobList, JobOut, JobStatus
from openreel.protocols.deps import ServicesDep
from openreel.service import job_service
from openreel.service.polls import Poll
from openreel.service.services import Services, on_loop_if_local
from openreel.service.standing import Standings
from openreel.service.views import Standing

router = APIRouter(tags=["Jobs"])
NOT_FOUND = "Job not found"


def _job_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise ApiError(400, "Invalid job id: expected a UUID") from exc


def encode_cursor(job: JobRecord) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """What ``encode_cursor`` made: anything else (a naive or out-of-range time too) is a 400."""
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("a cursor's time carries its offset")
        return at.astimezone(UTC), str(uuid.UUID(job_id))
    except (ValueError, TypeError, OverflowError) as exc:
        raise validation_error({"cursor": ["Invalid cursor"]}) from exc


def _present(svc: Services, request: Request, job: JobRecord, standing: Standing) -> dict[str, Any]:
    return svc.presenter.job(job, svc.base_url(str(request.base_url)), standing)


@router.get(
    "/v2/jobs/{job_id}",
    response_model=JobOut,
    responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}},
)
async def get_job(job_id: str, request: Request, svc: ServicesDep, key: KeyDep) -> dict[str, Any]:
    """Polled every second or two by every waiting client (``polls``)."""
    polled = await svc.polls(Poll(key.account_id, _job_id(job_id)))
    if polled is None:
        raise ApiError(404, NOT_FOUND)
    return await on_loop_if_local(svc, partial(_present, svc, request, polled.job, polled.standing))


@router.get(
    "/v2/jobs",
    response_model=JobList,
    response_model_exclude_unset=True,
    responses={400: {"model": ErrorBody}},
)
def list_jobs(
    request: Request,
    svc: ServicesDep,
    key: KeyDep,
    status: JobStatus | None = None,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    scope: Literal["user", "team"] = "user",
    search: uuid.UUID | None = None,
    include_models: Literal["true", "false"] = "false",
) -> dict[str, Any]:
    """Accounts are single-team here: ``scope`` user and team both list the account's jobs."""
    details = Details()
    check_text(details, "model", model)
    if details:
        raise validation_error(details)
    after = decode_cursor(cursor) if cursor else None
    with svc.db.read() as session:
        page, has_more = jobs.list_jobs(
            session,
            key.account_id,
            limit=limit,
            status=status,
            model=model,
            search=str(search) if search else None,
            after=after,
        )
        models = jobs.account_models(session, key.account_id) if include_models == "true" else None
        standings = Standings.of_server(svc, session, page)
        base_url = svc.base_url(str(request.base_url))
        shown = [svc.presenter.job(job, base_url, standings.of(job)) for job in page]
    body: dict[str, Any] = {
        "jobs": shown,
        "nextCursor": encode_cursor(page[-1]) if has_more and page else None,
        "hasMore": has_more,
    }
    if models is not None:
        body["models"] = models
    return body


@router.post(
    "/v2/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def cancel_job(job_id: str, request: Request, svc: ServicesDep, key: KeyDep) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one stops at its next denoising step. Refunded."""
    ended = job_service.cancel(svc, key.account_id, _job_id(job_id), "Cancelled by the user")
    if ended is None:
        raise ApiError(404, NOT_FOUND)
    if not ended.cancelled:
        status = ended.job.status
        raise ApiError(409, f"Job is already {status}; only QUEUED or PROCESSING jobs can be cancelled")
    with svc.db.read() as session:
        # By id alone: the account may have deleted the job since it was cancelled.
        fresh = session.get(Job, ended.job.id)
        assert fresh is not None
        standing = Standings.of_server(svc, session, [fresh]).of(fresh)
    return _present(svc, request, fresh, standing)


@router.delete(
    "/v2/jobs/{job_id}",
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def delete_job(job_id: str, svc: ServicesDep, key: KeyDep) -> dict[str, Any]:
    """Remove a finished job and its video from the account (not part of Apiframe's API)."""
    job_id = _job_id(job_id)
    try:
        ended = job_service.delete(svc, key.account_id, job_id, cancel_reason=None)
    except jobs.JobActive as exc:
        raise ApiError(409, f"Job is {exc}; cancel it before deleting it") from exc
    if ended is None:
        raise ApiError(404, NOT_FOUND)
    return {"id": job_id, "deleted": True}
