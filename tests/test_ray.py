"""The Ray executor on a local two-node cluster (head plus one more node, both on this machine):
jobs run on both nodes, and a node that stops mid-job loses nothing."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from ray.cluster_utils import Cluster

from openreel.engine import TINY_CHECKPOINT_DIR
from openreel.executors.ray_cluster import SLOT_RESOURCE, node_command
from openreel.ledger.db import Database
from openreel.ledger.tables import CreditEntry, Job

from support import LONG, LiveServer, free_port, running_server, wait_for

# One worker runs this module: two Ray clusters at once would compete for this machine's few CPUs.
pytestmark = pytest.mark.xdist_group("ray")

FAST = {"prompt": "fast", "model": "veo-3.1-fast", "veoParams": {"duration": 4, "generate_audio": False}}
SLOW = {"prompt": "slow", "model": "veo-3.1", "veoParams": {"duration": 8}}


def test_worker_command_joins_the_head_with_its_slots() -> None:
    command = node_command("10.0.0.5:6379", 4)
    assert command[0].endswith("ray") and command[1] == "start"
    assert "--address=10.0.0.5:6379" in command and "--block" in command
    resources = next(a for a in command if a.startswith("--resources="))
    assert json.loads(resources.split("=", 1)[1]) == {SLOT_RESOURCE: 4}


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    # What `openreel worker` gives each node: its own data dir, where its actors cache weights.
    monkeypatch.setenv("OPENREEL_DATA_DIR", str(tmp_path / "node-data"))
    head = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "resources": {SLOT_RESOURCE: 1}, "include_dashboard": False},
    )
    try:
        yield head
    finally:
        head.shutdown()


def workers_of(server: LiveServer) -> dict[str, tuple[str | None, int, str]]:
    db = Database(f"sqlite:///{server.data_dir / 'openreel.db'}")
    try:
        with db.read() as session:
            return {j.id: (j.worker, j.attempts, j.status) for j in session.query(Job).all()}
    finally:
        db.dispose()


def slots(server: LiveServer) -> int:
    return int(httpx.get(server.url + "/healthz").json()["workers"]["slots"])


def until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.live
def test_two_nodes_share_jobs_and_a_node_lost_mid_job_loses_nothing(tmp_path: Path, cluster: Cluster) -> None:
    node = cluster.add_node(num_cpus=1, resources={SLOT_RESOURCE: 1})
    cluster.wait_for_nodes()
    env = {
        "OPENREEL_EXECUTOR": "ray",
        "OPENREEL_RAY_ADDRESS": cluster.address,
        "OPENREEL_X264_PRESET": "ultrafast",
        "OPENREEL_LEASE_TTL_S": "10",
    }
    with running_server(tmp_path, env) as server:
        until(lambda: slots(server) == 2, 240, "an actor on each node")
        head_id, node_id = cluster.head_node.node_id[:12], node.node_id[:12]
        key = server.new_key(credits=1000)
        with server.client(key) as client:
            first = [client.post("/v2/videos/generate", json=FAST).json()["jobId"] for _ in range(2)]
            assert all(wait_for(client, j, timeout=300)["status"] == "COMPLETED" for j in first)
            ran_on = {workers_of(server)[j][0].split(":")[1] for j in first}  # type: ignore[union-attr]
            assert ran_on == {head_id, node_id}

            second = [
                client.post("/v2/videos/generate", json=body).json()["jobId"] for body in (LONG, LONG, FAST)
            ]

            def running_on_node() -> str | None:
                for job_id, (worker, _, status) in workers_of(server).items():
                    if status == "PROCESSING" and worker and worker.split(":")[1] == node_id:
                        return job_id
                return None

            until(lambda: running_on_node() is not None, 240, "a job on the second node")
            victim = running_on_node()
            assert victim is not None
            until(lambda: client.get(f"/v2/jobs/{victim}").json()["progress"] >= 5, 240, "progress")
            cluster.remove_node(node)

            final = {j: wait_for(client, j, timeout=400) for j in first + second}
            assert all(job["status"] == "COMPLETED" for job in final.values()), final
            until(lambda: slots(server) == 1, 60, "the lost node's actor to be dropped")
            rows = workers_of(server)
            assert rows[victim][1] == 2 and rows[victim][0].split(":")[1] == head_id  # type: ignore[union-attr]
            assert sorted(attempts for _, attempts, _ in rows.values()) == [1, 1, 1, 1, 2]
            for job in final.values():
                assert httpx.get(job["result"]["videoUrl"], timeout=30).status_code == 200
            spent = sum(job["creditCost"] for job in final.values())
            assert client.get("/v2/me").json()["team"]["credits"] == 1000 - spent

    db = Database(f"sqlite:///{server.data_dir / 'openreel.db'}")
    with db.read() as session:
        charges = session.query(CreditEntry).filter(CreditEntry.kind == "charge").count()
        refunds = session.query(CreditEntry).filter(CreditEntry.kind == "refund").count()
    db.dispose()
    assert (charges, refunds) == (5, 0)
    assert not list((server.data_dir / "files").rglob("*.part"))
    assert len(list((server.data_dir / "files" / "results").rglob("*.mp4"))) == 5


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started processes, stopped with everything they started (Ray daemons included) at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    family = [psutil.Process(p.pid) for p in started if p.poll() is None]
    family += [child for parent in family for child in parent.children(recursive=True)]
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=15)
    for proc in alive:
        proc.kill()


@pytest.mark.live
def test_openreel_worker_joins_a_cluster_started_with_ray_start(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/scaling.md's recipe with the real CLIs: `ray start --head`, then `openreel worker` on a node;
    a job cancelled mid-render over Ray frees its actor at the next step and is refunded.
    `ray start --address` refuses the loopback-only mode, so these nodes use the machine's address."""
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    port = free_port()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    log = (tmp_path / "ray.log").open("ab")
    head = [
        ray_cli,
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=1",
        "--include-dashboard=false",
        "--block",
    ]
    processes.append(subprocess.Popen(head, stdout=log, stderr=log))
    deadline = time.monotonic() + 60
    while not listening(port):
        assert time.monotonic() < deadline, (tmp_path / "ray.log").read_text()
        time.sleep(0.2)
    address = f"127.0.0.1:{port}"
    node = [sys.executable, "-m", "openreel", "worker", "--address", address, "--slots", "1"]
    node += ["--data-dir", str(tmp_path / "node")]
    processes.append(subprocess.Popen(node, stdout=log, stderr=log))

    server_env = {
        "OPENREEL_EXECUTOR": "ray",
        "OPENREEL_RAY_ADDRESS": address,
        "OPENREEL_X264_PRESET": "ultrafast",
    }
    with running_server(tmp_path, server_env) as server:
        until(lambda: slots(server) == 1, 240, "the worker node's actor")
        key = server.new_key(credits=100)
        with server.client(key) as client:
            running = client.post("/v2/videos/generate", json=SLOW).json()["jobId"]
            until(lambda: client.get(f"/v2/jobs/{running}").json()["progress"] > 0, 240, "progress over Ray")
            assert client.post(f"/v2/jobs/{running}/cancel").json()["status"] == "CANCELLED"
            until(lambda: httpx.get(server.url + "/healthz").json()["workers"]["busy"] == 0, 60, "the actor")
            job_id = client.post("/v2/videos/generate", json=FAST).json()["jobId"]
            job = wait_for(client, job_id, timeout=300)
            assert client.get("/v2/me").json()["team"]["credits"] == 100 - job["creditCost"]
        assert job["status"] == "COMPLETED", job
        assert httpx.get(job["result"]["videoUrl"], timeout=30).status_code == 200
    assert (tmp_path / "node" / "models" / TINY_CHECKPOINT_DIR).is_dir(), (
        "the actor cached weights in its node's data dir"
    )
