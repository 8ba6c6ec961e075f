"""Submitting, cancelling and deleting jobs, shared by every wire protocol (Apiframe, Google, OpenAI).

Each surface parses its own request into a ``VideoSpec`` and maps the exceptions raised here to its
own error shapes; the charge, the job row, the idempotency record, the refund and the webhook
outbox row are the same for all.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from sqlalchemy.exc import IntegrityError

from openreel.domain.rules import Details, VideoSpec
from openreel.ledger import credits, deletions, jobs, uploads
from openreel.ledger.db import Database
from openreel.ledger.tables import ApiKey, Job
from openreel.netguard import BlockedURL, LookupsBusy, Unresolved, pin_url
from openreel.service.batching import Batcher
from openreel.service.extension import take_source
from openreel.service.fetch_slots import FetchesBusy
from openreel.service.services import Admissions, Services, on_loop_if_local
from openreel.service.uploads import UploadRejected, store_upload
from openreel.service.views import result_keys
from openreel.storage.images import InputError, fetch

# A webhook host that has not resolved by then at submit is left to the deliveries, which try it again.
SUBMIT_RESOLVE_S = 2.0


class EngineUnavailable(Exception):
    """The configured engine failed to load; nothing is charged."""


@dataclass(frozen=True)
class Submitted:
    """The job as the submission left it (a worker may have claimed it since); ``created`` is False
    for the replay of an Idempotency-Key."""

    job: Job
    created: bool


def _image_fields(spec: VideoSpec) -> list[tuple[str, str | None]]:
    fields = [("veoParams.image", spec.image), ("veoParams.last_frame", spec.last_frame)]
    return fields + [(f"veoParams.reference_images.{i}", u) for i, u in enumerate(spec.reference_images)]


def _own_upload(svc: Services, account_id: str, url: str) -> str | None:
    """Why a link to this server's uploads cannot be used, or None; not such a link: None too. Another
    account's upload is not one: its link may be read where that account left it (a page, a log)."""
    key = svc.signer.own_key(url)
    if key is None:
        if svc.signer.own_key(url, check_expiry=False) is not None:
            return "this upload link has expired; upload the file again"
        return None
    with svc.db.read() as session:
        upload = uploads.by_storage_key(session, key)
    if upload is None or upload.account_id != account_id or not svc.storage.exists(key):
        return "no upload of this account has this link (any more); upload the file again"
    if upload.kind != "image":
        return f"must be an image, but this upload is {upload.kind} ({upload.content_type})"
    return None


def take_images(
    svc: Services, account_id: str, spec: VideoSpec, base_url: str, details: Details
) -> VideoSpec:
    """The spec with every image an upload of the account, before anything is charged.

    Links to this server's uploads are checked; any other URL is fetched now, through the SSRF guard,
    and stored as an upload. A bad target is thus a 400 naming its field, and the dispatcher, which
    reads only uploads, never waits on the network.
    """
    remote: list[tuple[str, str]] = []
    for path, url in _image_fields(spec):
        if url is None:
            continue
        if svc.signer.own_key(url, check_expiry=False) is None:
            remote.append((path, url))
            continue
        problem = _own_upload(svc, account_id, url)
        if problem:
            details.add(path, problem)
    if not remote or details:
        return spec
    svc.fetches.take(account_id)
    taken: dict[str, str] = {}
    try:
        for path, url in remote:
            if url in taken:
                continue
            try:
                taken[url] = _fetched_upload(svc, account_id, url, base_url)
            except (InputError, UploadRejected) as exc:
                details.add(path, f"{exc}; a file can also be sent with POST /v2/uploads")
            except LookupsBusy as exc:
                raise FetchesBusy("the server is looking up too many host names just now") from exc
    finally:
        svc.fetches.give_back(account_id)
    if details:
        return spec
    return replace(
        spec,
        image=taken.get(spec.image or "", spec.image),
        last_frame=taken.get(spec.last_frame or "", spec.last_frame),
        reference_images=[taken.get(u, u) for u in spec.reference_images],
    )


def _fetched_upload(svc: Services, account_id: str, url: str, base_url: str) -> str:
    """The link of a new upload holding the image at ``url`` (``fetch`` refuses anything else)."""
    data = fetch(url, svc.settings, max_bytes=svc.settings.max_upload_image_bytes)
    return str(store_upload(svc, account_id, io.BytesIO(data), base_url)["url"])


def check_webhook_target(svc: Services, details: Details, path: str, url: str) -> None:
    """A webhook that could never be delivered (a refused address) is refused at submit; a host that
    does not resolve yet may by the time the job ends, and its deliveries are retried."""
    try:
        pin_url(url, svc.settings.allow_private_urls, SUBMIT_RESOLVE_S)
    except Unresolved:
        pass
    except BlockedURL as exc:
        details.add(path, str(exc))


def check_idempotency_key(details: Details, path: str, key: str | None) -> None:
    if key is not None and not key.strip():
        details.add(path, "must not be empty; leave the header out to submit without one")


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def submit_job(
    svc: Services,
    key: ApiKey,
    spec: VideoSpec,
    *,
    echo: dict[str, Any],
    base_url: str,
    prepare: Callable[[VideoSpec], VideoSpec] | None = None,
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> Submitted:
    """Charge and queue. Raises EngineUnavailable, InsufficientCredits, IdempotencyConflict,
    TooManyActiveJobs or SourceRejected (an extension's clip), and whatever ``prepare`` raises.

    ``prepare``, given where the request has files to store or fetch or anything else that may wait,
    returns the spec that names them; it runs only for a job that will be made, not for a replay of an
    Idempotency-Key. It and an extension's clip are read in a worker thread, the replay of an
    Idempotency-Key where the database is (``on_loop_if_local``); a request with none of these is checked
    on the event loop. The charge goes in with the submissions that arrive with it (``batching``).
    """
    webhook = (webhook_url, webhook_events)
    admission = partial(_admission, svc, key, spec, echo, base_url, prepare, idempotency_key, webhook)
    waits = prepare is not None or spec.extend is not None
    if waits or idempotency_key is not None:
        ready = await on_loop_if_local(svc, admission, offload=waits)
    else:  # nothing but checks and a price
        ready = admission()
    if isinstance(ready, Submitted):
        return ready
    for attempt in range(2):
        try:
            outcome = await svc.admissions((key, ready))
            break
        except IntegrityError:
            # Two first uses of one Idempotency-Key raced on PostgreSQL; the second read finds the winner.
            if attempt or idempotency_key is None:
                raise
    if isinstance(outcome, Exception):
        raise outcome
    submitted = Submitted(*outcome)
    if submitted.created:
        svc.dispatcher.wake()
    return submitted


def _admission(
    svc: Services,
    key: ApiKey,
    spec: VideoSpec,
    echo: dict[str, Any],
    base_url: str,
    prepare: Callable[[VideoSpec], VideoSpec] | None,
    idempotency_key: str | None,
    webhook: tuple[str | None, list[str] | None],
) -> Submitted | jobs.NewJob:
    """The job to charge and queue, or the replay of an Idempotency-Key: looked up first, a replay
    answers as the first request did whatever the engine's state now."""
    if idempotency_key is not None:
        with svc.db.read() as session:
            job = jobs.replayed(session, key.account_id, idempotency_key, request_hash(echo))
            if job is not None:
                return Submitted(job, created=False)
    engine = svc.dispatcher.engine
    if engine.error:
        raise EngineUnavailable(f"The {engine.name} engine is unavailable: {engine.error}")
    model = svc.catalog.get(spec.model)
    assert model is not None
    # The workers say which recipes their checkpoint can run (a missing LoRA or upsampler, the wrong
    # weights) and whether they loaded the adapter (missing there, or not fitting the checkpoint).
    reason = engine.recipe_errors.get(model.recipe)
    if reason:
        raise EngineUnavailable(f"{spec.model} cannot be served: {reason}")
    if spec.reference_images and engine.reference_error:
        raise EngineUnavailable(f"reference_images cannot be served: {engine.reference_error}")
    if spec.enhance_prompt and engine.enhance_error:
        raise EngineUnavailable(f"prompt enhancement cannot be served: {engine.enhance_error}")
    if spec.extend is not None:
        spec = take_source(svc, key.account_id, spec)
    cost = model.price(spec.duration, spec.generate_audio, extend=spec.extend is not None) * spec.sample_count
    if prepare is not None:
        # Fetching and storing the images is work a request refused for its balance or its account's
        # active jobs must not cost: checked first here, and again under the account's lock to charge.
        with svc.db.read() as session:
            jobs.check_room(credits.totals(session, key.account_id), cost, svc.settings.max_concurrent_jobs)
        spec = prepare(spec)
    return jobs.NewJob(
        model=spec.model,
        input=echo,
        spec=spec.to_json(),
        cost=cost,
        idempotency_key=idempotency_key,
        request_hash=request_hash(echo),
        webhook_url=webhook[0],
        webhook_events=webhook[1],
        base_url=base_url,
    )


def admissions(db: Database, max_active: int | None) -> Admissions:
    """Submissions charged and queued a group per transaction (``batching``)."""

    def run(batch: Sequence[tuple[ApiKey, jobs.NewJob]]) -> list[jobs.Admitted]:
        with db.session() as session:
            return jobs.submit_many(session, batch, max_active)

    # A first use of an Idempotency-Key racing another server's (PostgreSQL) breaks the unique key: that
    # request's alone, which submit_job retries.
    return Batcher(run, alone=(IntegrityError,))


@dataclass(frozen=True)
class Ended:
    """What ``cancel`` or ``delete`` did to a job."""

    job: Job
    cancelled: bool


def cancel(svc: Services, account_id: str, job_id: str, reason: str) -> Ended | None:
    """Cancel a queued or running job with a full refund; None if the account has no such job.
    ``cancelled`` is False when the job had already ended (then nothing changes)."""
    with svc.queue.changing(), svc.db.session() as session:
        job = jobs.get_for_account(session, account_id, job_id)
        if job is None:
            return None
        cancelled = jobs.end_with_refund(session, job_id, jobs.CANCELLED, reason)
        if cancelled:
            svc.webhooks.enqueue(session, job_id, "failed")
        else:  # it ended meanwhile (on PostgreSQL, between the read above and the update): as it ended
            session.refresh(job)
    if cancelled:
        svc.dispatcher.cancel(job_id)
    return Ended(job, cancelled)


def delete(svc: Services, account_id: str, job_id: str, cancel_reason: str | None) -> Ended | None:
    """Remove a job from the account. An active one is first cancelled (and refunded) when a
    ``cancel_reason`` is given, else ``jobs.JobActive`` is raised."""
    with svc.queue.changing(), svc.db.session() as session:
        job = jobs.get_for_account(session, account_id, job_id)
        if job is None:
            return None
        cancelled = False
        if job.status in jobs.ACTIVE:
            if cancel_reason is None:
                raise jobs.JobActive(job.status)
            cancelled = jobs.end_with_refund(session, job_id, jobs.CANCELLED, cancel_reason)
            if cancelled:
                svc.webhooks.enqueue(session, job_id, "failed")
            session.refresh(job)
        keys = result_keys(job.result)
        deletions.doom(session, keys)
        jobs.delete(session, job)
    if cancelled:
        svc.dispatcher.cancel(job_id)
    # The job is gone now: a store out of reach must not say otherwise.
    deletions.delete(svc.db, svc.storage, keys)
    return Ended(job, cancelled)
