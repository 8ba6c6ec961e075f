"""The Ray executor on a local two-node cluster, started as docs/scaling.md says (``ray start --head``, then
``openreel worker`` on a node; both on this machine): jobs run on both nodes, a job cancelled over Ray frees
its actor, and a node that stops mid-job loses nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from openreel.engine import TINY_CHECKPOINT_DIR
from openreel.executors.ray_cluster import SLOT_RESOURCE, node_command
from openreel.ledger.db import Database
from openreel.ledger.tables import CreditEntry, Job

from support import LONG, LiveServer, free_port, running_server, until, wait_for

# One worker runs this module: a Ray cluster competes for this machine's few CPUs.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

FAST = {"prompt": "fast", "model": "veo-3.1-fast", "veoParams": {"duration": 4, "generate_audio": False}}
SLOW = {"prompt": "slow", "model": "veo-3.1", "veoParams": {"duration": 8}}
# Two videos from one job: both come back from the actor's machine.
PAIR = {**FAST, "veoParams": {**FAST["veoParams"], "sample_count": 2}}

# Ports Ray's components take by default (the dashboard agent's is in the ephemeral range): a head on
# one of them fails to start.
RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 52365})


def test_worker_command_joins_the_head_with_its_slots() -> None:
    command = node_command("10.0.0.5:6379", 4)
    assert command[0].endswith("ray") and command[1] == "start"
    assert "--address=10.0.0.5:6379" in command and "--block" in command
    resources = next(a for a in command if a.startswith("--resources="))
    assert json.loads(resources.split("=", 1)[1]) == {SLOT_RESOURCE: 4}


def workers_of(server: LiveServer) -> dict[str, tuple[str | None, int, str]]:
    db = Database(f"sqlite:///{server.data_dir / 'openreel.db'}")
    try:
        with db.read() as session:
            return {j.id: (j.worker, j.attempts, j.status) for j in session.query(Job).all()}
    finally:
        db.dispose()


def node_of(worker: str | None) -> str:
    """The node part of a Ray worker's name (ray:<node id>:<slot>)."""
    assert worker is not None
    return worker.split(":")[1]


def slots(server: LiveServer) -> int:
    return int(httpx.get(server.url + "/healthz").json()["workers"]["slots"])


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def family(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    parent = psutil.Process(process.pid)
    return [parent, *parent.children(recursive=True)]


def raylet_node_id(process: subprocess.Popen[bytes]) -> str:
    """The id of the Ray node a ``ray start`` process runs, read off its raylet's command line."""
    for proc in family(process):
        for arg in proc.cmdline():
            if arg.startswith("--node_id="):
                return arg.split("=", 1)[1][:12]
    raise AssertionError("no raylet under the node's process")


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM to a ``ray start --block`` process shuts its node down (seconds); SIGKILL what is left."""
    processes = family(process)
    process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for proc in alive:
        proc.kill()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started processes, stopped with everything they started (Ray daemons included) at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            stop(process)


@pytest.mark.live
def test_two_nodes_share_jobs_cancel_and_a_node_lost_mid_job_loses_nothing(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ray start --address` refuses the loopback-only mode, so these nodes use the machine's address."""
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    # Ray runs its workers at niceness 15, below the API server on a box of its own; here the render
    # actors would get almost no CPU beside the suite's other workers (3 s in 2 minutes, seen) and
    # never load. Equal footing for the cluster's processes and the tests around them.
    monkeypatch.setenv("RAY_worker_niceness", "0")
    port = free_port()
    while port in RAY_DEFAULT_PORTS:  # a free port that Ray's own components would then take
        port = free_port()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    log = (tmp_path / "ray.log").open("ab")
    head_command = [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
    head_command += [f"--resources={json.dumps({SLOT_RESOURCE: 1})}", "--block"]
    # The head's actors cache weights in its own data dir, as `openreel worker` gives a node.
    head_env = {**os.environ, "OPENREEL_DATA_DIR": str(tmp_path / "head")}
    processes.append(subprocess.Popen(head_command, stdout=log, stderr=log, env=head_env))
    until(lambda: listening(port), 60, "the Ray head")
    address = f"127.0.0.1:{port}"
    worker = [sys.executable, "-m", "openreel", "worker", "--address", address, "--slots", "1"]
    node = subprocess.Popen([*worker, "--data-dir", str(tmp_path / "node")], stdout=log, stderr=log)
    processes.append(node)

    env = {
        "OPENREEL_EXECUTOR": "ray",
        "OPENREEL_RAY_ADDRESS": address,
        "OPENREEL_X264_PRESET": "ultrafast",
        "OPENREEL_LEASE_TTL_S": "10",
    }
    with running_server(tmp_path, env) as server:
        until(lambda: slots(server) == 2, 240, "an actor on each node")
        head_id, node_id = raylet_node_id(processes[0]), raylet_node_id(node)
        key = server.new_key(credits=1000)
        with server.client(key) as client:
            first = [client.post("/v2/videos/generate", json=body).json()["jobId"] for body in (FAST, PAIR)]
            assert all(wait_for(client, j, timeout=300)["status"] == "COMPLETED" for j in first)
            assert {node_of(workers_of(server)[j][0]) for j in first} == {head_id, node_id}

            cancelled = client.post("/v2/videos/generate", json=SLOW).json()["jobId"]
            until(
                lambda: client.get(f"/v2/jobs/{cancelled}").json()["progress"] > 0, 240, "progress over Ray"
            )
            assert client.post(f"/v2/jobs/{cancelled}/cancel").json()["status"] == "CANCELLED"
            until(lambda: httpx.get(server.url + "/healthz").json()["workers"]["busy"] == 0, 60, "the actor")

            second = [
                client.post("/v2/videos/generate", json=body).json()["jobId"] for body in (LONG, LONG, FAST)
            ]

            def running_on_node() -> str | None:
                for job_id, (worker_name, _, status) in workers_of(server).items():
                    if status == "PROCESSING" and worker_name and node_of(worker_name) == node_id:
                        return job_id
                return None

            until(lambda: running_on_node() is not None, 240, "a job on the second node")
            victim = running_on_node()
            assert victim is not None
            until(lambda: client.get(f"/v2/jobs/{victim}").json()["progress"] >= 5, 240, "progress")
            for proc in family(node):  # the node is lost: every process of it at once
                proc.kill()

            final = {j: wait_for(client, j, timeout=400) for j in first + second}
            assert all(job["status"] == "COMPLETED" for job in final.values()), final
            until(lambda: slots(server) == 1, 60, "the lost node's actor to be dropped")
            rows = workers_of(server)
            assert rows[victim][1] == 2 and node_of(rows[victim][0]) == head_id
            assert sorted(attempts for _, attempts, _ in rows.values()) == [1, 1, 1, 1, 1, 2]
            for job in final.values():
                for video in job["result"]["videos"]:
                    assert httpx.get(video["videoUrl"], timeout=30).status_code == 200
            assert len(final[first[1]]["result"]["videos"]) == 2
            spent = sum(job["creditCost"] for job in final.values())
            assert client.get("/v2/me").json()["team"]["credits"] == 1000 - spent

    db = Database(f"sqlite:///{server.data_dir / 'openreel.db'}")
    with db.read() as session:
        charges = session.query(CreditEntry).filter(CreditEntry.kind == "charge").count()
        refunds = session.query(CreditEntry).filter(CreditEntry.kind == "refund").count()
    db.dispose()
    assert (charges, refunds) == (6, 1)
    assert not list((server.data_dir / "files").rglob("*.part"))
    assert len(list((server.data_dir / "files" / "results").rglob("*.mp4"))) == 6
    for data_dir in ("head", "node"):
        assert (tmp_path / data_dir / "models" / TINY_CHECKPOINT_DIR).is_dir(), (
            f"the actors cached weights in the {data_dir}'s data dir"
        )
