"""The housekeeping thread: half-written results of the last shutdown removed before anything else runs,
expired uploads swept on its own thread round after round, a stop that ends it; and a server whose start
fails part-way leaves none of its threads behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from openreel.app import create_app
from openreel.executors.base import EngineState
from openreel.ledger import accounts, servers
from openreel.ledger.db import Database, migrate
from openreel.ledger.tables import Server, Upload, utcnow
from openreel.scheduler.housekeeping import Housekeeper
from openreel.settings import Settings
from openreel.storage.local import LocalStorage
from openreel.storage.owner import owner_url

from quick import QuickExecutor
from support import stored_upload


def expired_upload(db: Database, storage: LocalStorage, name: str) -> str:
    with db.session() as session:
        account_id = accounts.create_key(session, name="t").account_id
    return stored_upload(db, storage, account_id, name, utcnow() - timedelta(seconds=1))


def swept(db: Database, storage: LocalStorage, key: str, timeout: float = 10) -> None:
    """Until the upload's file and row are both gone (the row goes when the sweep commits)."""
    deadline = time.monotonic() + timeout
    while True:
        with db.read() as session:
            rows = session.query(Upload).filter(Upload.storage_key == key).count()
        if rows == 0 and not storage.exists(key):
            return
        assert time.monotonic() < deadline, f"{key} was never swept"
        time.sleep(0.02)


def test_partials_go_at_start_and_expired_uploads_on_the_thread(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'openreel.db'}"
    migrate(url)
    db = Database(url)
    storage = LocalStorage(tmp_path / "files")
    half = storage.staging_path("results/j/1.mp4")
    half.write_bytes(b"half a video")
    first = expired_upload(db, storage, "first")
    with db.session() as session:  # a server that stopped long ago, and one reporting now
        servers.report(session, "gone", engine_failed=False)
        servers.report(session, "here", engine_failed=False)
        session.get_one(Server, "gone").seen_at = utcnow() - servers.FORGOTTEN_AFTER - timedelta(seconds=1)
    keeper = Housekeeper(db, storage, interval_s=0.05)
    try:
        keeper.remove_partials()
        assert not half.exists()
        keeper.start()
        swept(db, storage, first)
        later = expired_upload(db, storage, "later")  # a later round sweeps it too
        swept(db, storage, later)
        with db.read() as session:
            assert [server.owner for server in session.scalars(select(Server))] == ["here"]
    finally:
        keeper.stop()
        db.dispose()
    assert not keeper._thread.is_alive()


class Unstartable:
    """An executor whose workers cannot start."""

    engine = EngineState(name="broken", ready=False, slots=1)

    def start(self) -> None:
        raise RuntimeError("no workers today")


def server_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("openreel-")}


def test_a_server_cleans_up_at_start_and_stops_what_started_when_its_start_fails(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    url = settings.resolved_database_url()
    settings.data_dir.mkdir()
    migrate(url)
    db = Database(url)
    storage = LocalStorage(settings.data_dir / "files")
    half = storage.staging_path("results/j/1.mp4")
    key = expired_upload(db, storage, "old")
    before = server_threads()
    app = create_app(settings, Unstartable())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no workers today"), TestClient(app):
        pass
    try:
        assert not half.exists()
        swept(db, storage, key)
    finally:
        db.dispose()
    assert server_threads() == before


def test_a_second_server_on_a_data_directory_leaves_the_owners_half_written_files(tmp_path: Path) -> None:
    """The first server to start owns the directory (its URL in the lock file) until it stops; a second
    one sharing it removes none of the files the owner's workers are writing."""
    settings = Settings(data_dir=tmp_path / "data", port=8123)
    with TestClient(create_app(settings, QuickExecutor(settings))) as owner:
        storage = owner.app.state.services.storage  # type: ignore[attr-defined]
        writing = storage.staging_path("results/j/1.mp4")
        writing.write_bytes(b"half a video, still being written")
        assert owner_url(settings.data_dir) == "http://127.0.0.1:8123"
        with TestClient(create_app(settings, QuickExecutor(settings))):
            assert writing.exists()
    assert owner_url(settings.data_dir) is None
    with TestClient(create_app(settings, QuickExecutor(settings), shared=False)):  # openreel generate's
        assert not writing.exists()  # left by a server that stopped
        assert owner_url(settings.data_dir) is None  # owned, but not a server for others' jobs
        writing.write_bytes(b"half a video, still being written")
        with TestClient(create_app(settings, QuickExecutor(settings))):
            assert writing.exists()


def test_an_owner_restarted_beside_a_second_server_leaves_its_files_be(tmp_path: Path) -> None:
    """Owning the directory again says nothing of who else runs there: the second server's files stay
    until a server starts with no other running."""
    settings = Settings(data_dir=tmp_path / "data", port=8123)

    def server() -> TestClient:
        return TestClient(create_app(settings, QuickExecutor(settings)))

    first = server().__enter__()
    with server() as second:
        writing = second.app.state.services.storage.staging_path("results/j/1.mp4")  # type: ignore[attr-defined]
        writing.write_bytes(b"half a video, still being written")
        first.__exit__(None, None, None)
        assert owner_url(settings.data_dir) is None
        with server():
            assert owner_url(settings.data_dir) == "http://127.0.0.1:8123"  # the owner again
            assert writing.exists()
    with server():
        assert not writing.exists()


def test_a_killed_owner_owns_nothing(tmp_path: Path) -> None:
    """The kernel lets go of a dead process's lock, SIGKILL included: the next server removes its files."""
    data = tmp_path
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from openreel.storage.owner import Ownership; "
            "Ownership(Path(sys.argv[1])).take('http://127.0.0.1:9'); print('taken', flush=True); "
            "time.sleep(60)",
            str(data),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "taken\n"
        assert owner_url(data) == "http://127.0.0.1:9"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert owner_url(data) is None
