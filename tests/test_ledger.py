"""The job ledger on a real SQLite database: charges, refunds, compare-and-set, idempotency."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import event, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from openreel.ledger import accounts, credits, jobs, uploads
from openreel.ledger import db as db_module
from openreel.ledger.db import Database, migrate
from openreel.ledger.tables import (
    Account,
    ApiKey,
    Base,
    CreditEntry,
    Job,
    JobRecord,
    Upload,
    new_id,
    utcnow,
)
from openreel.scheduler.queue_moves import QueueMoves
from openreel.service import queue_order
from openreel.service.queue_order import QueueOrder
from openreel.storage.local import LocalStorage

from databases import end_connections, throwaway_database
from support import stored_upload

LEASE = 30.0


def new_key(db: Database, credit: int) -> ApiKey:
    with db.session() as session:
        made = accounts.create_key(session, name="t", initial_credits=credit)
        key = session.get(ApiKey, made.key_id)
        assert key is not None
        return key


def job(cost: int = 5, idem: str | None = None, prompt: str = "p") -> jobs.NewJob:
    return jobs.NewJob(
        model="veo-3.1-fast",
        input={"prompt": prompt},
        spec={},
        cost=cost,
        idempotency_key=idem,
        request_hash=prompt,
        webhook_url=None,
        webhook_events=None,
    )


def balance(db: Database, account_id: str) -> int:
    """The account's balance, its totals checked against the rows they count: its credit entries and
    its active jobs."""
    with db.session() as session:
        total = credits.balance(session, account_id)
        assert total == sum(e.amount for e in credits.entries(session, account_id))
        account = session.get(Account, account_id)
        assert account is not None
        active = select(func.count()).where(Job.account_id == account_id, Job.status.in_(jobs.ACTIVE))
        assert account.active_jobs == session.scalar(active)
        return total


def test_migrations_match_the_models(db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_pooled_connections_the_server_closed_are_replaced_before_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL restart costs no request: the pool hands out new connections, for reads and writes.
    A connection in use moments ago is checked without a round trip; one idle for long is pinged."""
    with throwaway_database("postgresql", tmp_path) as url:
        migrate(url)
        database = Database(url)
        connects: list[object] = []
        pings: list[object] = []
        for engine in (database.engine, database.read_engine):  # writes and reads: a pool each
            event.listen(engine, "connect", lambda connection, _record: connects.append(connection))
            ping = engine.dialect.do_ping
            monkeypatch.setattr(
                engine.dialect, "do_ping", lambda c, ping=ping: bool(pings.append(c)) or ping(c)
            )
        try:
            key = new_key(database, 10)
            for _ in range(5):
                with database.read() as session:
                    assert credits.balance(session, key.account_id) == 10
            assert (len(connects), pings) == (2, [])

            end_connections(url)
            with database.read() as session:
                assert credits.balance(session, key.account_id) == 10
            end_connections(url)
            assert balance(database, new_key(database, 5).account_id) == 5
            with database.read() as session:
                assert credits.balance(session, key.account_id) == 10
            assert len(connects) == 5

            monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.0)
            with database.read() as session:
                assert credits.balance(session, key.account_id) == 10
            assert len(pings) == 1 and len(connects) == 5
            end_connections(url)  # found by the ping this time
            with database.read() as session:
                assert credits.balance(session, key.account_id) == 10
            assert len(pings) == 2 and len(connects) == 6
        finally:
            database.dispose()


def test_postgresql_reads_run_in_autocommit_and_describe_their_columns_plainly(tmp_path: Path) -> None:
    """Reads cost one round trip a statement (no BEGIN, no ROLLBACK), on connections that stay in
    autocommit; writes are transactions. A result's columns are described by name and type code."""
    with throwaway_database("postgresql", tmp_path) as url:
        migrate(url)
        database = Database(url)
        try:
            with database.read() as session:
                connection = session.connection().connection.driver_connection
                assert connection is not None and connection.autocommit
                one = session.execute(text("SELECT 1 AS one, 'a' AS letter")).one()
                assert (one.one, one.letter) == (1, "a")
            with database.session() as session:
                connection = session.connection().connection.driver_connection
                assert connection is not None and not connection.autocommit
                cursor = connection.execute("SELECT 1 AS one, 'a'::text AS letter")
                assert cursor.description == [
                    ("one", 23, None, None, None, None, None),  # int4
                    ("letter", 25, None, None, None, None, None),  # text
                ]
        finally:
            database.dispose()


@contextmanager
def upgraded_from(tmp_path: Path, revision: str, *inserts: str) -> Iterator[Database]:
    """A SQLite database at ``revision`` holding the rows of ``inserts``, then migrated to the newest."""
    with throwaway_database("sqlite", tmp_path) as url:
        migrate(url, revision)
        database = Database(url)
        try:
            with database.engine.begin() as connection:
                for insert in inserts:
                    connection.exec_driver_sql(insert)
            migrate(url)
            yield database
        finally:
            database.dispose()


def test_the_balance_migration_sums_the_existing_ledger(tmp_path: Path) -> None:
    with upgraded_from(
        tmp_path,
        "0005",
        "INSERT INTO accounts (id, name, email, plan, created_at) VALUES "
        "('a', 'a', '', 'p', '2026-01-01'), ('b', 'b', '', 'p', '2026-01-01')",
        "INSERT INTO credit_entries (account_id, amount, kind, created_at) VALUES "
        "('a', 100, 'grant', '2026-01-01'), ('a', -30, 'charge', '2026-01-01')",
    ) as database:
        assert balance(database, "a") == 70
        assert balance(database, "b") == 0


def test_the_active_jobs_migration_counts_the_queued_and_running_jobs(tmp_path: Path) -> None:
    jobs_of_a = [
        "INSERT INTO jobs (id, account_id, api_key_id, model, status, progress, input, spec, credit_cost, "
        f"attempts, created_at) VALUES ('{n}', 'a', 'k', 'm', '{status}', 0, '{{}}', '{{}}', 5, 0, "
        "'2026-01-01')"
        for n, status in enumerate(["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"])
    ]
    with upgraded_from(
        tmp_path,
        "0007",
        "INSERT INTO accounts (id, name, email, plan, created_at, balance) VALUES "
        "('a', 'a', '', 'p', '2026-01-01', 0), ('b', 'b', '', 'p', '2026-01-01', 0)",
        "INSERT INTO api_keys (id, account_id, name, key_hash, prefix, active, created_at) "
        "VALUES ('k', 'a', 'k', 'h', 'p', 1, '2026-01-01')",
        *jobs_of_a,
    ) as database:
        with database.read() as session:
            counted = {a.id: a.active_jobs for a in session.scalars(select(Account))}
        assert counted == {"a": 2, "b": 0}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_every_migration_steps_down_and_up_again_keeping_the_rows(tmp_path: Path, dialect: str) -> None:
    """Down to the first revision and back, with accounts, keys, jobs and ledger entries in the tables:
    SQLite rebuilds tables that other rows refer to on the way."""
    with throwaway_database(dialect, tmp_path) as url:
        migrate(url)
        database = Database(url)
        key = new_key(database, 100)
        with database.session() as session:
            done, queued = (jobs.submit(session, key, job(prompt=p))[0].id for p in ("a", "b"))
            claimed = jobs.claim_next(session, "dispatcher", LEASE)
            assert claimed is not None and claimed.id == done
            assert jobs.complete(session, done, 1, {"videos": []})
        database.dispose()
        config = Config()
        config.set_main_option("script_location", str(db_module.MIGRATIONS))
        config.set_main_option("sqlalchemy.url", url)
        command.downgrade(config, "0001")
        migrate(url)
        database = Database(url)
        try:
            assert balance(database, key.account_id) == 90
            with database.read() as session:
                assert {j.id: j.status for j in session.scalars(select(Job))} == {
                    done: jobs.COMPLETED,
                    queued: jobs.QUEUED,
                }
        finally:
            database.dispose()


def test_an_account_counts_its_active_jobs_until_each_ends_whichever_way(db: Database) -> None:
    """Completed, completed with failed samples, failed, cancelled, failed by the reaper; a re-queued
    job stays active. ``balance`` checks the count against the jobs at each step."""
    key = new_key(db, 100)
    with db.session() as session:
        ids = [jobs.submit(session, key, job(prompt=str(n)))[0].id for n in range(6)]
    assert balance(db, key.account_id) == 70
    with db.session() as session:
        claimed = [jobs.claim_next(session, "me", LEASE) for _ in range(4)]
        assert all(claimed)
        assert jobs.complete(session, ids[0], 1, {"key": "a"})
        session.get(Job, ids[1]).spec = {"sample_count": 5}  # type: ignore[union-attr]
        session.flush()
        assert jobs.complete(session, ids[1], 1, {"key": "b"}, failed_samples=1)
        assert jobs.end_with_refund(session, ids[2], jobs.FAILED, "boom", attempt=1)
        assert jobs.end_with_refund(session, ids[4], jobs.CANCELLED, None)
    assert balance(db, key.account_id) == 81
    expire_leases(db)
    with db.session() as session:
        session.get(Job, ids[3]).attempts = 2  # type: ignore[union-attr]
        assert reap(session) == ([], [ids[3]])
    with db.session() as session:
        assert jobs.claim_next(session, "me", LEASE) is not None
    expire_leases(db)
    with db.session() as session:
        assert reap(session) == ([ids[5]], [])
    assert balance(db, key.account_id) == 86
    with db.read() as session:
        assert session.get(Account, key.account_id).active_jobs == 1  # type: ignore[union-attr]


def test_charge_then_refund_exactly_once(db: Database) -> None:
    key = new_key(db, 12)
    with db.session() as session:
        made, created = jobs.submit(session, key, job())
    assert created and balance(db, key.account_id) == 7
    with db.session() as session:
        assert jobs.end_with_refund(session, made.id, jobs.FAILED, "boom")
    with db.session() as session:
        assert not jobs.end_with_refund(session, made.id, jobs.CANCELLED, None)
        assert not jobs.complete(session, made.id, 0, {"key": "x"})
    assert balance(db, key.account_id) == 12
    with db.session() as session:
        kinds = [e.kind for e in credits.entries(session, key.account_id)]
    assert kinds == ["grant", "charge", "refund"]


def test_insufficient_credits_leaves_no_job(db: Database) -> None:
    key = new_key(db, 4)
    with pytest.raises(credits.InsufficientCredits) as info, db.session() as session:
        jobs.submit(session, key, job(cost=5))
    assert (info.value.required, info.value.available) == (5, 4)
    with db.session() as session:
        assert session.scalars(select(Job)).all() == []
    assert balance(db, key.account_id) == 4


def test_concurrent_submissions_never_overdraw(db: Database) -> None:
    key = new_key(db, 20)
    outcomes: list[str] = []

    def submit(i: int) -> None:
        try:
            with db.session() as session:
                jobs.submit(session, key, job(prompt=str(i)))
            outcomes.append("ok")
        except credits.InsufficientCredits:
            outcomes.append("402")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 4 and outcomes.count("402") == 8
    assert balance(db, key.account_id) == 0


def test_idempotency_replay_and_conflict(db: Database) -> None:
    key = new_key(db, 20)
    with db.session() as session:
        first, created = jobs.submit(session, key, job(idem="k1"))
    with db.session() as session:
        again, created_again = jobs.submit(session, key, job(idem="k1"))
    assert created and not created_again and again.id == first.id
    with pytest.raises(jobs.IdempotencyConflict), db.session() as session:
        jobs.submit(session, key, job(idem="k1", prompt="other"))
    other_account = new_key(db, 20)
    with db.session() as session:
        _, created_elsewhere = jobs.submit(session, other_account, job(idem="k1"))
    assert created_elsewhere
    assert balance(db, key.account_id) == 15


def test_a_batch_checks_each_submission_against_what_the_earlier_ones_left(db: Database) -> None:
    key, other = new_key(db, 12), new_key(db, 5)
    batch = [
        (key, job(idem="a", prompt="1")),
        (key, job(idem="a", prompt="1")),  # the first one's replay, in the same transaction
        (key, job(idem="a", prompt="2")),  # that key with another body
        (other, job(cost=5)),
        (key, job()),
        (key, job()),  # 12 - 5 - 5 leaves 2: refused alone
        (other, job(cost=1)),  # the other account is at 0
    ]
    with db.session() as session:
        outcomes = jobs.submit_many(session, batch)
    first, replay = outcomes[0], outcomes[1]
    assert isinstance(first, tuple) and first[1]
    assert isinstance(replay, tuple) and replay == (first[0], False)
    assert isinstance(outcomes[2], jobs.IdempotencyConflict)
    assert isinstance(outcomes[3], tuple) and isinstance(outcomes[4], tuple)
    assert isinstance(outcomes[5], credits.InsufficientCredits) and outcomes[5].available == 2
    assert isinstance(outcomes[6], credits.InsufficientCredits) and outcomes[6].available == 0
    assert (balance(db, key.account_id), balance(db, other.account_id)) == (2, 0)
    with db.session() as session:
        assert len(session.scalars(select(Job)).all()) == 3


def test_a_batch_counts_its_own_jobs_against_the_active_cap(db: Database) -> None:
    key = new_key(db, 100)
    with db.session() as session:
        jobs.submit(session, key, job())
    with db.session() as session:
        outcomes = jobs.submit_many(session, [(key, job()) for _ in range(3)], max_active=3)
    assert [type(o).__name__ for o in outcomes] == ["tuple", "tuple", "TooManyActiveJobs"]
    assert balance(db, key.account_id) == 85


def test_stale_attempts_cannot_write(db: Database) -> None:
    key = new_key(db, 20)
    with db.session() as session:
        jobs.submit(session, key, job())
    with db.session() as session:
        claimed = jobs.claim_next(session, "me", LEASE)
        assert claimed is not None and claimed.attempts == 1
        job_id = claimed.id
    with db.session() as session:
        assert jobs.set_progress(session, job_id, 1, 40)
        assert not jobs.set_progress(session, job_id, 1, 30)
        assert jobs.requeue(session, job_id, 1)
    with db.session() as session:
        assert jobs.claim_next(session, "me", LEASE) is not None
    with db.session() as session:
        assert not jobs.set_progress(session, job_id, 1, 50)
        assert not jobs.complete(session, job_id, 1, {"key": "old"})
        assert jobs.complete(session, job_id, 2, {"key": "new"})
        done = session.get(Job, job_id)
        assert done is not None
        assert (done.status, done.progress, done.result) == ("COMPLETED", 100, {"key": "new"})
    assert balance(db, key.account_id) == 15


def reap(session: Session) -> tuple[list[str], list[str]]:
    """(re-queued, failed) by a reaper allowing two attempts; each one's attempt named as lapsed."""
    taken = jobs.reap_expired(session, max_attempts=2)
    assert sorted(lapsed.job_id for lapsed in taken.lapsed) == sorted(taken.requeued + taken.failed)
    return taken.requeued, taken.failed


def expire_leases(db: Database) -> None:
    with db.session() as session:
        session.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def test_expired_leases_are_requeued_then_failed_with_refund(db: Database) -> None:
    key = new_key(db, 20)
    with db.session() as session:
        jobs.submit(session, key, job(prompt="a"))
        jobs.submit(session, key, job(prompt="b"))
    with db.session() as session:
        first = jobs.claim_next(session, "gone", LEASE, worker="w1")
        second = jobs.claim_next(session, "gone", LEASE, worker="w2")
        assert first is not None and second is not None
        assert (first.lease_owner, first.worker) == ("gone", "w1") and first.lease_expires_at is not None
        second.attempts = 2
        ids = first.id, second.id
    with db.session() as session:
        assert reap(session) == ([], [])
    expire_leases(db)
    with db.session() as session:
        reaped = jobs.reap_expired(session, max_attempts=2)
    assert (reaped.requeued, reaped.failed) == ([ids[0]], [ids[1]])
    assert set(reaped.lapsed) == {jobs.Lapsed(ids[0], 1, 1), jobs.Lapsed(ids[1], 2, 1)}
    with db.session() as session:
        assert reap(session) == ([], [])
        rows = [session.get(Job, i) for i in ids]
        refunds = session.scalars(select(CreditEntry).where(CreditEntry.kind == "refund")).all()
    assert [(r.status, r.lease_owner) for r in rows if r] == [("QUEUED", None), ("FAILED", "gone")]
    assert [r.job_id for r in refunds] == [ids[1]]
    assert balance(db, key.account_id) == 15


def test_servers_whose_clocks_disagree_judge_leases_on_the_databases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, shared by servers: one whose clock runs an hour ahead reaps no healthy render, and
    one an hour behind renews its leases into the future, not into the past."""
    with throwaway_database("postgresql", tmp_path) as url:
        migrate(url)
        db = Database(url)
        try:
            key = new_key(db, 20)
            with db.session() as session:
                jobs.submit(session, key, job())
                claimed = jobs.claim_next(session, "here", LEASE)
                assert claimed is not None
                job_id = claimed.id
            real = utcnow
            monkeypatch.setattr(jobs, "utcnow", lambda: real() + timedelta(hours=1))
            with db.session() as session:
                assert reap(session) == ([], [])
            monkeypatch.setattr(jobs, "utcnow", lambda: real() - timedelta(hours=1))
            with db.session() as session:
                assert jobs.renew_leases(session, "here", [(job_id, 1)], LEASE) == jobs.Renewal()
            monkeypatch.setattr(jobs, "utcnow", real)
            with db.session() as session:
                assert reap(session) == ([], [])
                assert session.get_one(Job, job_id).status == "PROCESSING"
        finally:
            db.dispose()


def test_only_the_lease_holder_renews_and_a_reaped_job_is_lost_to_it(db: Database) -> None:
    key = new_key(db, 20)
    with db.session() as session:
        job_id = jobs.submit(session, key, job())[0].id
    with db.session() as session:
        claimed = jobs.claim_next(session, "a", LEASE)
        assert claimed is not None
    expire_leases(db)
    with db.session() as session:
        assert jobs.renew_leases(session, "b", [(job_id, 1)], LEASE).lost == {(job_id, 1)}
        assert jobs.renew_leases(session, "a", [(job_id, 1)], LEASE) == jobs.Renewal()
        assert reap(session) == ([], [])
    expire_leases(db)
    with db.session() as session:
        assert reap(session) == ([job_id], [])
        again = jobs.claim_next(session, "b", LEASE)
        assert again is not None and again.attempts == 2
    with db.session() as session:
        assert jobs.renew_leases(session, "a", [(job_id, 1)], LEASE).lost == {(job_id, 1)}
        # A server holding both attempts loses the old one only.
        assert jobs.renew_leases(session, "b", [(job_id, 1), (job_id, 2)], LEASE) == jobs.Renewal(
            lost=frozenset({(job_id, 1)})
        )
        assert not jobs.complete(session, job_id, 1, {"key": "late"})
        assert jobs.complete(session, job_id, 2, {"key": "b"})
    assert balance(db, key.account_id) == 15


def test_a_cancelled_job_has_ended_not_been_lost_and_a_requeued_one_cannot_be_failed_by_its_old_attempt(
    db: Database,
) -> None:
    key = new_key(db, 20)
    with db.session() as session:
        cancelled = jobs.submit(session, key, job(prompt="c"))[0].id
        requeued = jobs.submit(session, key, job(prompt="r"))[0].id
    with db.session() as session:
        assert jobs.claim_next(session, "a", LEASE) is not None
        assert jobs.claim_next(session, "a", LEASE) is not None
        assert jobs.end_with_refund(session, cancelled, jobs.CANCELLED, "by the user")
        assert jobs.requeue(session, requeued, 1)
    with db.session() as session:
        assert jobs.renew_leases(session, "a", [(cancelled, 1), (requeued, 1)], LEASE) == jobs.Renewal(
            lost=frozenset({(requeued, 1)}), ended=frozenset({(cancelled, 1)})
        )
        assert not jobs.end_with_refund(session, requeued, jobs.FAILED, "stale worker", attempt=1)
        assert jobs.status_of(session, requeued) == "QUEUED"
    assert balance(db, key.account_id) == 15


def test_keys_are_stored_as_hashes(db: Database) -> None:
    with db.session() as session:
        made = accounts.create_key(session, name="n")
        stored = session.get(ApiKey, made.key_id)
        assert stored is not None and made.raw.startswith("afk_")
        assert stored.key_hash == accounts.hash_key(made.raw) and made.raw not in stored.key_hash
        assert accounts.find_key(session, made.raw) is not None
        assert accounts.find_key(session, made.raw + "x") is None
        with pytest.raises(LookupError):
            accounts.create_key(session, name="n", account_id="missing")


def test_database_errors_leave_the_statements_parameters_out(db: Database) -> None:
    """Such errors are logged (a request that met the database down): a key's hash signs its webhooks."""
    secret = accounts.hash_key("afk_secret")
    for transaction in (db.session, db.read):
        with pytest.raises(DBAPIError) as raised, transaction() as session:
            session.execute(select(ApiKey).where(ApiKey.key_hash == secret, text("no_such_column = 1")))
        assert "no_such_column" in str(raised.value) and secret not in str(raised.value)


def test_idempotency_key_is_free_again_after_24_hours(db: Database) -> None:
    key = new_key(db, 20)
    with db.session() as session:
        first, _ = jobs.submit(session, key, job(idem="daily"))
    with db.session() as session:
        stored = session.get(Job, first.id)
        assert stored is not None
        stored.created_at = stored.created_at - jobs.IDEMPOTENCY_WINDOW - timedelta(seconds=1)
    with db.session() as session:
        second, created = jobs.submit(session, key, job(idem="daily", prompt="changed"))
    assert created and second.id != first.id
    assert balance(db, key.account_id) == 10


def test_a_key_at_the_end_of_its_window_is_judged_by_one_reading_of_the_clock(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept as under 24 hours old, its job is replayed even if the clock passes 24 hours meanwhile (the
    accounts' locks may be waited for): judged again, a new job took the key the old one still held,
    and the unique key sent the whole batch round again one by one."""
    key = new_key(db, 20)
    with db.session() as session:
        first, _ = jobs.submit(session, key, job(idem="edge"))
    start = utcnow()
    with db.session() as session:
        stored = session.get(Job, first.id)
        assert stored is not None
        stored.created_at = start - jobs.IDEMPOTENCY_WINDOW + timedelta(seconds=1)
    readings = (start + timedelta(seconds=2 * n) for n in range(100))
    monkeypatch.setattr(jobs, "utcnow", lambda: next(readings))
    with db.session() as session:
        again, created = jobs.submit(session, key, job(idem="edge"))
    assert not created and again.id == first.id
    assert balance(db, key.account_id) == 15  # charged once


def test_a_key_let_go_at_submission_while_its_old_job_completes_deadlocks_neither(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job still running past its key's 24 hours completes (its row, then its account's) while a new
    request of that key lets it go: both take the job's row first, so on PostgreSQL neither waits on
    the other in a cycle (the other way round, one of them failed with a deadlock)."""
    key = new_key(db, 20)
    with db.session() as session:
        old, _ = jobs.submit(session, key, job(idem="daily"))
        claimed = jobs.claim_next(session, "me", LEASE)
        assert claimed is not None and claimed.id == old.id
        claimed.created_at = claimed.created_at - jobs.IDEMPOTENCY_WINDOW - timedelta(seconds=1)
    job_locked = threading.Event()
    settle = credits.settle

    def settle_late(*args: Any, **kwargs: Any) -> None:
        job_locked.set()
        time.sleep(0.5)  # the submission reaches the job's row meanwhile
        settle(*args, **kwargs)

    monkeypatch.setattr(credits, "settle", settle_late)
    outcomes: dict[str, object] = {}

    def complete() -> None:
        with db.session() as session:
            outcomes["complete"] = jobs.complete(session, old.id, 1, {"key": "x"})

    def submit() -> None:
        assert job_locked.wait(10)
        with db.session() as session:
            outcomes["submit"] = jobs.submit(session, key, job(idem="daily", prompt="again"))[1]

    threads = [threading.Thread(target=complete), threading.Thread(target=submit)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == {"complete": True, "submit": True}
    assert balance(db, key.account_id) == 10


def test_an_accounts_unexpired_uploads_and_when_they_free_room(db: Database) -> None:
    mine, theirs = new_key(db, 10).account_id, new_key(db, 10).account_id
    now = utcnow().replace(microsecond=0)
    rows = [(mine, 300, 30), (mine, 100, 10), (mine, 500, 20), (mine, 1000, -1), (theirs, 700, 5)]
    with db.session() as session:
        for account_id, size, seconds in rows:
            expires = now + timedelta(seconds=seconds)
            session.add(
                Upload(
                    account_id=account_id,
                    kind="image",
                    content_type="image/png",
                    byte_size=size,
                    storage_key=f"uploads/{new_id()}.png",
                    expires_at=expires,
                )
            )
    with db.read() as session:
        assert uploads.held(session, mine, now) == 900  # the expired one and the other account's aside
        assert uploads.held(session, new_key(db, 1).account_id, now) == 0
        # In the order they expire: 100 bytes at 10 s, 600 at 20 s, 900 at 30 s.
        freed = {
            size: uploads.freed_by(session, mine, now, size) for size in (1, 100, 101, 600, 601, 900, 901)
        }
    at = {seconds: now + timedelta(seconds=seconds) for seconds in (10, 20, 30)}
    assert freed == {1: at[10], 100: at[10], 101: at[20], 600: at[20], 601: at[30], 900: at[30], 901: None}


def test_expired_uploads_are_swept_with_their_files(db: Database, tmp_path: Path) -> None:
    """An expired upload that a queued job still names stays until that job has ended, however the link
    that names it was written (this server knows its own links percent-encoded too)."""
    storage = LocalStorage(tmp_path / "files")
    key = new_key(db, 10)
    now = utcnow()
    names = (
        ("old", now - timedelta(seconds=1)),
        ("new", now + timedelta(hours=1)),
        ("queued", now),
        ("q2", now),
    )
    for name, expires in names:
        stored_upload(db, storage, key.account_id, name, expires)
    waiting = jobs.NewJob(
        "veo-3.1-fast",
        {},
        {
            "image": "http://h/v2/files/uploads/queued.png?exp=1&sig=s",
            "last_frame": "http://h/v2/files/%75ploads/q%32.png?exp=1&sig=s",
        },
        5,
        None,
        None,
        None,
        None,
    )
    with db.session() as session:
        queued, _ = jobs.submit(session, key, waiting)
    later = now + timedelta(seconds=1)
    with db.session() as session:
        assert uploads.sweep_expired(session, storage, later) == 1
    with db.session() as session:
        assert uploads.by_storage_key(session, "uploads/old.png") is None
        assert uploads.by_storage_key(session, "uploads/new.png") is not None
        assert uploads.by_storage_key(session, "uploads/queued.png") is not None
        assert uploads.by_storage_key(session, "uploads/q2.png") is not None
    assert not storage.exists("uploads/old.png") and storage.exists("uploads/new.png")
    with db.session() as session:
        jobs.end_with_refund(session, queued.id, jobs.CANCELLED, None)
    with db.session() as session:
        assert uploads.sweep_expired(session, storage, later) == 2
    assert not storage.exists("uploads/queued.png") and not storage.exists("uploads/q2.png")


def test_active_job_cap_is_per_account_and_frees_up(db: Database) -> None:
    key, other = new_key(db, 50), new_key(db, 50)
    with db.session() as session:
        first, _ = jobs.submit(session, key, job(prompt="1", idem="k"), max_active=1)
    with pytest.raises(jobs.TooManyActiveJobs) as capped, db.session() as session:
        jobs.submit(session, key, job(prompt="2"), max_active=1)
    assert (capped.value.active, capped.value.limit) == (1, 1)
    with db.session() as session:
        jobs.submit(session, other, job(prompt="3"), max_active=1)
        replay, created = jobs.submit(session, key, job(prompt="1", idem="k"), max_active=1)
    assert not created and replay.id == first.id
    with db.session() as session:
        jobs.end_with_refund(session, first.id, jobs.CANCELLED, None)
    with db.session() as session:
        jobs.submit(session, key, job(prompt="4"), max_active=1)
    assert balance(db, key.account_id) == 45


def test_a_job_read_as_a_row_shows_what_its_orm_instance_shows_to_its_own_account_only(
    db: Database,
) -> None:
    key, other = new_key(db, 100), new_key(db, 100)
    with db.session() as session:
        made, _ = jobs.submit(session, key, job())
        jobs.claim_next(session, "me", LEASE)
        jobs.complete(session, made.id, 1, {"key": "results/x/1.mp4", "seed": 7})
    shown = [name for name in dir(JobRecord) if not name.startswith("_")]
    assert len(shown) == 16
    with db.read() as session:
        row = jobs.read_for_account(session, key.account_id, made.id)
        orm = jobs.get_for_account(session, key.account_id, made.id)
        assert row is not None and orm is not None
        assert {name: getattr(row, name) for name in shown} == {name: getattr(orm, name) for name in shown}
        assert row.status == jobs.COMPLETED and row.result == {"key": "results/x/1.mp4", "seed": 7}
        assert row.created_at.tzinfo is not None
        assert jobs.read_for_account(session, other.account_id, made.id) is None
        assert jobs.read_for_account(session, key.account_id, new_id()) is None
    with db.session() as session:
        jobs.delete(session, session.get_one(Job, made.id))
    with db.read() as session:
        assert jobs.read_for_account(session, key.account_id, made.id) is None


def test_queue_positions_and_pages_follow_creation_time_then_id(db: Database) -> None:
    key = new_key(db, 100)
    with db.session() as session:
        made = [jobs.submit(session, key, job(prompt=str(i)))[0].id for i in range(5)]
        same = utcnow()
        # Three jobs made in the same instant: the id breaks the tie, in the queue and in the pages.
        session.execute(update(Job).where(Job.id.in_(made[1:4])).values(created_at=same))
        session.execute(update(Job).where(Job.id == made[0]).values(created_at=same - timedelta(seconds=1)))
        session.execute(update(Job).where(Job.id == made[4]).values(created_at=same + timedelta(seconds=1)))
    queue = [made[0], *sorted(made[1:4]), made[4]]
    with db.read() as session:
        shown = [session.get_one(Job, j) for j in made]
        positions = jobs.queue_positions(session, shown)
        assert positions == {j: jobs.queue_positions(session, [session.get_one(Job, j)])[j] for j in made}
        pages, after = [], None
        while True:
            page, more = jobs.list_jobs(session, key.account_id, limit=2, after=after)
            pages += [j.id for j in page]
            if not more:
                break
            after = (page[-1].created_at, page[-1].id)
    assert positions == {j: i + 1 for i, j in enumerate(queue)}
    assert pages == queue[::-1]
    with db.read() as session:
        assert jobs.queued_ids(session) == queue


def test_the_queue_order_is_read_once_until_a_job_leaves_the_queue_or_a_second_passes(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key(db, 100)
    with db.session() as session:
        made = [jobs.submit(session, key, job(prompt=str(i)))[0].id for i in range(3)]
    moves = QueueMoves()
    order = QueueOrder(moves)
    reads: list[int] = []
    real_queued_ids = jobs.queued_ids
    monkeypatch.setattr(jobs, "queued_ids", lambda session: reads.append(1) or real_queued_ids(session))

    def places() -> dict[str, int]:
        with db.read() as session:
            return order.places(session, [session.get_one(Job, j) for j in made])

    assert places() == {made[0]: 1, made[1]: 2, made[2]: 3} and places() == places()
    assert len(reads) == 1  # the polls of one moment share one read
    with db.session() as session:
        made.append(jobs.submit(session, key, job(prompt="new"))[0].id)
    assert places()[made[3]] == 4 and len(reads) == 1  # a newer job is counted, exactly
    with db.session() as session:
        assert jobs.claim_next(session, "me", LEASE) is not None
    # Claimed by another server: this one learns within a second (a newer job is counted at once).
    assert places() == {made[1]: 2, made[2]: 3, made[3]: 3}
    with moves.moving():  # this server's dispatcher is taking it: places are counted meanwhile
        assert places() == {made[1]: 1, made[2]: 2, made[3]: 3} and len(reads) == 1
    # and has taken it
    assert places() == {made[1]: 1, made[2]: 2, made[3]: 3} and len(reads) == 2
    with order.changing():
        with db.session() as session:
            jobs.end_with_refund(session, made[1], jobs.CANCELLED, None)
        assert places() == {made[2]: 1, made[3]: 2} and len(reads) == 2
    assert places() == {made[2]: 1, made[3]: 2} and len(reads) == 3
    with db.session() as session:
        assert jobs.claim_next(session, "other", LEASE) is not None
    monkeypatch.setattr(queue_order, "MAX_AGE_S", 0.0)
    assert places() == {made[3]: 1} and len(reads) == 4
