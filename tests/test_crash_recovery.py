"""Kill -9 the server with jobs queued and running, restart it, and check the books."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from openreel.ledger.db import Database
from openreel.ledger.tables import CreditEntry, Job

from support import LONG, cli, mid_render, running_server, wait_for, worker_processes

pytestmark = pytest.mark.live

FAST = {"prompt": "fast", "model": "veo-3.1-fast", "veoParams": {"duration": 4, "generate_audio": False}}


@pytest.mark.slow
def test_server_killed_mid_job_loses_nothing_and_charges_exactly(tmp_path: Path) -> None:
    with running_server(
        tmp_path, {"OPENREEL_X264_PRESET": "ultrafast", "OPENREEL_LEASE_TTL_S": "3"}
    ) as server:
        grants = {server.new_key(credits=100): 100, server.new_key(credits=100): 100}
        submitted: list[tuple[str, str]] = []
        # The first account's long job is killed mid-render; the others wait in the queue behind it.
        for key, bodies in zip(grants, ((LONG, FAST), (FAST,)), strict=True):
            with server.client(key) as client:
                for body in bodies:
                    submitted.append((key, client.post("/v2/videos/generate", json=body).json()["jobId"]))
        running_key, running_id = submitted[0]
        with server.client(running_key) as client:
            mid_render(client, running_id)
        worker = worker_processes(server)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        assert len(worker) == 1
        worker[0].wait(10)
        assert not worker[0].is_running(), "the worker outlived its server"

        server.start()
        final = {}
        for key, job_id in submitted:
            with server.client(key) as client:
                final[job_id] = wait_for(client, job_id, timeout=300)
        assert all(job["status"] == "COMPLETED" for job in final.values()), final
        assert final[running_id]["result"]["videoUrl"].split("?")[0].endswith("/2.mp4")
        for key, granted in grants.items():
            with server.client(key) as client:
                balance = client.get("/v2/me").json()["team"]["credits"]
            spent = sum(final[j]["creditCost"] for k, j in submitted if k == key)
            assert balance == granted - spent
            assert "balance: " + str(balance) in cli(server.data_dir, "credits", "show", key)

    db = Database(f"sqlite:///{server.data_dir / 'openreel.db'}")
    with db.read() as session:
        jobs = session.query(Job).all()
        charges = session.query(CreditEntry).filter(CreditEntry.kind == "charge").count()
        refunds = session.query(CreditEntry).filter(CreditEntry.kind == "refund").count()
    db.dispose()
    assert charges == len(submitted) and refunds == 0
    assert sorted(j.attempts for j in jobs) == [1] * (len(submitted) - 1) + [2]
    assert not list((server.data_dir / "files").rglob("*.part"))
    results = sorted(p.name for p in (server.data_dir / "files" / "results").rglob("*.mp4"))
    assert len(results) == len(submitted)
