"""Two local worker processes: kill -9 the one running a job and the job is retried on a worker and
completes, or, killed again on its last attempt, fails with a full refund; the other worker lives on."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from openreel.ledger.db import Database
from openreel.ledger.tables import Job

from support import LONG, LiveServer, running_server, wait_for

pytestmark = pytest.mark.live


def worker_of(server: LiveServer, job_id: str) -> tuple[int, int, str]:
    """(attempt, worker pid, status) from the ledger's record of who runs the job."""
    db = Database(f"sqlite:///{server.data_dir / 'openreel.db'}")
    try:
        with db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None
            pid = int(job.worker.rsplit(":", 1)[1]) if job.worker else 0
            return job.attempts, pid, job.status
    finally:
        db.dispose()


def kill_mid_render(server: LiveServer, client: httpx.Client, job_id: str, attempt: int) -> int:
    deadline = time.monotonic() + 240
    while True:
        attempts, pid, status = worker_of(server, job_id)
        progress = client.get(f"/v2/jobs/{job_id}").json()["progress"]
        if attempts == attempt and status == "PROCESSING" and progress >= 5:
            break
        assert time.monotonic() < deadline, (attempts, status, progress)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.slow
def test_a_killed_worker_costs_an_attempt_not_the_job(tmp_path: Path) -> None:
    env = {"OPENREEL_WORKERS": "2", "OPENREEL_X264_PRESET": "ultrafast", "OPENREEL_MAX_ATTEMPTS": "2"}
    with running_server(tmp_path, env) as server:
        assert server.process is not None
        key = server.new_key(credits=100)
        with server.client(key) as client:
            while httpx.get(server.url + "/healthz").json()["workers"]["slots"] != 2:
                time.sleep(0.2)
            survivor = client.post("/v2/videos/generate", json=LONG).json()["jobId"]
            killed = kill_mid_render(server, client, survivor, attempt=1)
            job = wait_for(client, survivor, timeout=300)
            assert job["status"] == "COMPLETED", job
            assert worker_of(server, survivor)[0] == 2
            assert httpx.get(job["result"]["videoUrl"], timeout=30).status_code == 200

            doomed = client.post("/v2/videos/generate", json=LONG).json()["jobId"]
            kill_mid_render(server, client, doomed, attempt=1)
            kill_mid_render(server, client, doomed, attempt=2)
            failed = wait_for(client, doomed, timeout=300)
            assert failed["status"] == "FAILED" and "no attempts left" in failed["error"], failed
            assert client.get("/v2/me").json()["team"]["credits"] == 100 - job["creditCost"]

        workers = [
            p for p in psutil.Process(server.process.pid).children() if "spawn_main" in " ".join(p.cmdline())
        ]
        assert len(workers) == 2 and killed not in [p.pid for p in workers]
