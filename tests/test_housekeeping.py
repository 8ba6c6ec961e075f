"""The housekeeping thread: half-written results of the last shutdown removed before anything else runs,
expired uploads swept on its own thread, and a stop that ends it."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from openreel.ledger import accounts
from openreel.ledger.db import Database, migrate
from openreel.ledger.tables import ApiKey, Upload, utcnow
from openreel.scheduler.housekeeping import Housekeeper
from openreel.storage.local import LocalStorage


def test_partials_go_at_start_and_expired_uploads_on_the_thread(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'openreel.db'}"
    migrate(url)
    db = Database(url)
    storage = LocalStorage(tmp_path / "files")
    half = storage.staging_path("results/j/1.mp4")
    half.write_bytes(b"half a video")
    staged = storage.staging_path("uploads/old.png")
    staged.write_bytes(b"x")
    storage.commit(staged, "uploads/old.png")
    with db.session() as session:
        key = session.get(ApiKey, accounts.create_key(session, name="t").key_id)
        assert key is not None
        session.add(
            Upload(
                account_id=key.account_id,
                kind="image",
                content_type="image/png",
                byte_size=1,
                storage_key="uploads/old.png",
                expires_at=utcnow() - timedelta(seconds=1),
            )
        )
    keeper = Housekeeper(db, storage, interval_s=0.05)
    try:
        keeper.start()
        assert not half.exists()
        deadline = time.monotonic() + 10
        while storage.exists("uploads/old.png"):
            assert time.monotonic() < deadline, "the expired upload was never swept"
            time.sleep(0.02)
        with db.read() as session:
            assert session.query(Upload).count() == 0
    finally:
        keeper.stop()
        db.dispose()
    assert not keeper._thread.is_alive()
