"""Polls that arrive together are read in one statement, and each poller still sees only its own job."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from openreel.app import create_app
from openreel.ledger import accounts, jobs
from openreel.ledger.db import Database
from openreel.ledger.tables import Job, new_id
from openreel.scheduler.eta import RenderTimes
from openreel.scheduler.queue_moves import QueueMoves
from openreel.service.polls import Poll, Polled, polls
from openreel.service.queue_order import QueueOrder
from openreel.settings import Settings

from quick import QuickExecutor
from support import SPEC, queued

SUBMIT = {"prompt": "a cat", "model": "veo-3.1-fast", "veoParams": {"duration": 4}}


def submitted(db: Database) -> tuple[str, str]:
    """A new account's queued job: (account id, job id)."""
    job_id, account_id = queued(db, SPEC)
    return account_id, job_id


def polled_together(db: Database, asked: list[Poll]) -> list[Polled | None]:
    dispatcher: Any = SimpleNamespace(render_times=RenderTimes(), engine=SimpleNamespace(slots=1))
    read = polls(db, QueueOrder(QueueMoves()), dispatcher)

    async def together() -> list[Polled | None]:
        return await asyncio.gather(*(read(one) for one in asked))

    return asyncio.run(together())


def test_polls_arriving_together_share_one_read_and_see_only_their_own_jobs(db: Database) -> None:
    (alice, first), (bob, second) = submitted(db), submitted(db)
    deleted_owner, deleted = submitted(db)
    with db.session() as session:
        row = session.get(Job, deleted)
        assert row is not None
        row.status, row.deleted_at = jobs.COMPLETED, row.created_at
    statements: list[str] = []
    event.listen(db.read_engine, "before_cursor_execute", lambda *call: statements.append(call[2]))
    asked = [
        Poll(alice, first),
        Poll(bob, first),  # another account's job
        Poll(bob, second),
        Poll(alice, first),  # the same poll twice in one batch
        Poll(alice, second),
        Poll(deleted_owner, deleted),  # deleted
        Poll(alice, new_id()),  # no such job
        Poll(bob, second, standing=False),
    ]
    seen = polled_together(db, asked)
    assert [None if polled is None else polled.job.id for polled in seen] == [
        first,
        None,
        second,
        first,
        None,
        None,
        None,
        second,
    ]
    positions = [polled.standing.position for polled in seen if polled is not None]
    assert positions == [1, 2, 1, None]
    assert len([s for s in statements if "IN (" in s.upper()]) == 1, statements


def test_a_job_whose_standing_cannot_be_worked_out_fails_no_other_poll(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    (alice, first), (bob, second) = submitted(db), submitted(db)
    with db.session() as session:
        row = session.get(Job, first)
        assert row is not None
        row.spec = {**SPEC, "no_such_field": 1}  # written by a newer server, say
    monkeypatch.setattr(jobs, "MAX_IDS_PER_STATEMENT", 1)  # and each poll its own statement
    seen = polled_together(db, [Poll(alice, first), Poll(bob, second)])
    assert [polled and (polled.job.id, polled.standing.position) for polled in seen] == [
        (first, None),
        (second, 2),
    ]


def test_every_protocols_job_poll_is_read_through_the_polls(tmp_path: Path) -> None:
    """Apiframe's job, Google's operation (Gemini, both names, and Vertex) and OpenAI's video: each poll
    is one request to ``svc.polls``, and another account's poll finds nothing there."""
    settings = Settings(data_dir=tmp_path, rate_limit_per_minute=0, x264_preset="ultrafast")
    with TestClient(create_app(settings, QuickExecutor(settings))) as client:
        svc = client.app.state.services  # type: ignore[attr-defined]
        with svc.db.session() as session:
            key, other = (accounts.create_key(session, name=n, initial_credits=100).raw for n in "ab")
        job_id = client.post("/v2/videos/generate", json=SUBMIT, headers={"X-API-Key": key}).json()["jobId"]
        asked: list[Poll] = []
        read = svc.polls

        async def counted(poll: Poll) -> Polled | None:
            asked.append(poll)
            return await read(poll)

        svc.polls = counted
        op = f"models/veo-3.1-fast-generate-preview/operations/{uuid.UUID(job_id).hex}"
        polls_by_route = [
            ("GET", f"/v2/jobs/{job_id}", None, "X-API-Key"),
            ("GET", f"/v1beta/{op}", None, "x-goog-api-key"),
            ("GET", f"/v1beta/operations/{uuid.UUID(job_id).hex}", None, "x-goog-api-key"),
            (
                "POST",
                "/v1/publishers/google/models/veo-3.1-fast-generate-preview:fetchPredictOperation",
                {"operationName": op},
                "x-goog-api-key",
            ),
            ("GET", f"/v1/videos/video_{uuid.UUID(job_id).hex}", None, "Authorization"),
        ]
        for method, path, body, header in polls_by_route:
            for raw, status in ((key, 200), (other, 404)):
                value = f"Bearer {raw}" if header == "Authorization" else raw
                reply = client.request(method, path, json=body, headers={header: value})
                assert reply.status_code == status, (path, reply.text)
                assert asked.pop().job_id == job_id and not asked, path
