"""The dispatcher's own loop, in-process against a fake executor: what it does with a job it cannot
prepare, without a worker process in the way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from openreel.domain.catalog import load_catalog
from openreel.executors import messages as m
from openreel.executors.base import EngineState
from openreel.ledger import accounts, credits, jobs
from openreel.ledger.db import Database, migrate
from openreel.ledger.tables import ApiKey, Job
from openreel.scheduler.dispatcher import Dispatcher
from openreel.settings import Settings
from openreel.storage import make_storage
from openreel.storage.signing import Signer


class FakeExecutor:
    """One idle slot; tasks handed to it are kept, never run."""

    def __init__(self) -> None:
        self.engine = EngineState(name="fake", ready=True, slots=1)
        self.submitted: list[m.RenderTask] = []

    def free_slot(self) -> int | None:
        return None if self.submitted else 0

    def submit(self, slot: int, task: m.RenderTask) -> None:
        self.submitted.append(task)


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[tuple[Dispatcher, FakeExecutor, Database]]:
    settings = Settings(data_dir=tmp_path)
    url = settings.resolved_database_url()
    migrate(url)
    db = Database(url)
    fake = FakeExecutor()
    dispatcher = Dispatcher(
        settings, db, make_storage(settings), Signer(b"s"), load_catalog(None), executor=fake
    )
    yield dispatcher, fake, db
    db.dispose()


def queue(db: Database, spec: dict[str, object]) -> tuple[str, str]:
    with db.session() as session:
        made = accounts.create_key(session, name="t", initial_credits=10)
        key = session.get(ApiKey, made.key_id)
        assert key is not None
        new = jobs.NewJob("veo-3.1-fast", {"prompt": "p"}, spec, 5, None, None, None, None)
        return jobs.submit(session, key, new)[0].id, key.account_id


GOOD = {
    "model": "veo-3.1-fast",
    "prompt": "p",
    "duration": 4,
    "aspect_ratio": "16:9",
    "resolution": "720p",
    "generate_audio": False,
    "seed": 1,
    "negative_prompt": None,
    "image": None,
    "last_frame": None,
    "reference_images": [],
}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"model": "veo-3.1-fast"}, "could not be prepared"),
        ({**GOOD, "image": "https://example.com/a.png"}, "not a file of this server"),
        ({**GOOD, "resolution": "4k"}, "could not be prepared"),
    ],
    ids=["unreadable spec", "remote image", "unplannable"],
)
def test_a_job_that_cannot_be_prepared_fails_at_once_with_a_refund(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], spec: dict[str, object], reason: str
) -> None:
    """It never waits for its lease to run out (nor reaches the network), and the next job goes on."""
    loop, fake, db = dispatcher
    bad, account = queue(db, spec)
    good, _ = queue(db, GOOD)
    assert loop._dispatch_next() and loop._dispatch_next()
    with db.session() as session:
        failed = session.get(Job, bad)
        assert failed is not None and failed.status == jobs.FAILED
        assert failed.error is not None and reason in failed.error, failed.error
        assert credits.balance(session, account) == 10
    assert [task.job_id for task in fake.submitted] == [good]
