"""Helpers shared by the tests: a live server process, the CLI, and the wire contract."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import psutil
from jsonschema import Draft202012Validator, FormatChecker
from PIL import Image
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from openreel.embedded import embedded_server
from openreel.engine import TINY_CHECKPOINT_DIR
from openreel.ledger import accounts, jobs
from openreel.ledger.db import Database
from openreel.ledger.tables import ApiKey, Upload
from openreel.settings import Settings
from openreel.storage.base import Storage

from quick import QuickExecutor

# A job that renders long enough on the tiny engine to be interrupted mid-render (11 steps over 25 latent
# frames, then 192 frames to encode: seconds, single-threaded) and still finishes in seconds once it is let
# be: for the tests that kill a worker or a server under a job. Cancelling tests take the quality recipe,
# whose 40 guided steps leave more time to catch it before the last one.
LONG = {"prompt": "long", "model": "veo-3.1-fast", "veoParams": {"duration": 8}}
# The settings of the session's shared servers (tests/conftest.py).
SERVER_ENV = {
    "OPENREEL_ALLOW_PRIVATE_URLS": "1",
    "OPENREEL_MAX_UPLOAD_IMAGE_BYTES": str(2 * 1024 * 1024),
    "OPENREEL_X264_PRESET": "ultrafast",
}
# A stored job spec that plans: 4 s of 720p, no images (the dispatcher's and the polls' tests).
SPEC: dict[str, object] = {
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
CONTRACT = json.loads((Path(__file__).parent / "contract" / "apiframe-v2-openapi.json").read_text())
_REGISTRY = Registry().with_resource("urn:contract", Resource(contents=CONTRACT, specification=DRAFT202012))


def assert_contract(body: Any, schema: str) -> None:
    """Validate a response body against a schema of the Apiframe v2 contract, formats included."""
    validator = Draft202012Validator(
        {"$ref": f"urn:contract#/components/schemas/{schema}"},
        registry=_REGISTRY,
        format_checker=FormatChecker(),
    )
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{schema}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "openreel", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


def queued(db: Database, spec: dict[str, object], cost: int = 5) -> tuple[str, str]:
    """A new account's job, queued through the ledger: (job id, account id)."""
    with db.session() as session:
        made = accounts.create_key(session, name="t", initial_credits=10)
        key = session.get(ApiKey, made.key_id)
        assert key is not None
        new = jobs.NewJob("veo-3.1-fast", {"prompt": "p"}, spec, cost, None, None, None, None)
        return jobs.submit(session, key, new)[0].id, key.account_id


def stored_upload(db: Database, storage: Storage, account_id: str, name: str, expires_at: datetime) -> str:
    """An uploaded image of the account, its file in storage and its row in the ledger; its key."""
    key = f"uploads/{name}.png"
    staged = storage.staging_path(key)
    staged.write_bytes(b"x")
    storage.commit(staged, key)
    with db.session() as session:
        session.add(
            Upload(
                account_id=account_id,
                kind="image",
                content_type="image/png",
                byte_size=1,
                storage_key=key,
                expires_at=expires_at,
            )
        )
    return key


@functools.cache
def tiny_checkpoint() -> Path:
    """The tiny checkpoint, built once per test process (3 s) and copied into each server's data: servers
    start as on a machine that has run openreel before. Building it is tested with the engine and by
    ``openreel generate`` on a fresh data directory."""
    from openreel.engine.tiny import save_tiny_checkpoint

    return save_tiny_checkpoint(Path(_builds().name) / TINY_CHECKPOINT_DIR)


@functools.cache
def _builds() -> tempfile.TemporaryDirectory[str]:
    """Removed when the test process exits."""
    return tempfile.TemporaryDirectory(prefix="openreel-tests-")


@dataclass
class LiveServer:
    data_dir: Path
    port: int
    engine: str = "tiny"
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> None:
        """Until the engine is loaded (or has failed): minutes when several processes import torch at
        once on a loaded 2-core machine (a Ray cluster's actor took over 120 s on one)."""
        models = self.data_dir / "models" / TINY_CHECKPOINT_DIR
        if self.engine == "tiny" and not models.exists():
            shutil.copytree(tiny_checkpoint(), models)
        for _ in range(3):
            self._launch()
            if self._ready(timeout):
                return
            if "address already in use" not in self.log():
                raise AssertionError(f"server exited:\n{self.log()}")
            # Another test's server took the port between free_port() and the bind: another port.
            self.port = free_port()
        raise AssertionError(f"no free port for the server:\n{self.log()}")

    def _launch(self) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openreel",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--engine",
                self.engine,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )

    def _ready(self, timeout: float) -> bool:
        """Whether the server came up (False: its process exited); whatever else answers on the port
        in the meantime (the port taken by another test) is not it."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        # One client for every poll: each new one builds an SSL context (17 ms of CPU), three times a
        # second for every server start (about 40 s of py-spy's samples over a run; BENCHMARKS.md).
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    health = client.get(self.url + "/healthz").json()
                    if health["engineReady"] or health["engineError"]:
                        return True
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    pass
                time.sleep(0.3)
        raise TimeoutError(f"server not ready:\n{self.log()}")

    def log(self) -> str:
        """The log's tail, without the access lines of the readiness polls that would fill it."""
        if self.log_path is None:
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines(keepends=True)
        return "".join(line for line in lines if '"GET /healthz ' not in line)[-5000:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def new_key(self, credits: int = 1000) -> str:
        """A key of a new account, made through the ledger in this process, as ``openreel keys create``
        makes it (whose own tests run the command): a second per key saved over a CLI process."""
        url = {**os.environ, **self.env}.get("OPENREEL_DATABASE_URL")  # as the server sees it
        settings = Settings(data_dir=self.data_dir, database_url=url)
        database = Database(settings.resolved_database_url())
        try:
            with database.session() as session:
                return accounts.create_key(session, name="test", initial_credits=credits).raw
        finally:
            database.dispose()

    def client(self, key: str | None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def quick_server(root: Path, env: dict[str, str], step_s: float = 0.05) -> Iterator[LiveServer]:
    """A server in this process rendering with the quick engine (tests/quick.py), for the tests of what
    surrounds the model; ``env`` as a live server would read it. It has no process: never ``start`` it."""
    settings = Settings(
        data_dir=root / "data", **{k.removeprefix("OPENREEL_").lower(): v for k, v in env.items()}
    )
    with embedded_server(settings, executor=QuickExecutor(settings, step_s), shared=True) as url:
        yield LiveServer(data_dir=settings.data_dir, port=int(url.rsplit(":", 1)[1]), env=env)


@contextmanager
def running_server(root: Path, env: dict[str, str], engine: str = "tiny") -> Iterator[LiveServer]:
    """A started server with its data under ``root``, stopped on exit (also when a test fails)."""
    live = LiveServer(data_dir=root / "data", port=free_port(), engine=engine, env=env)
    live.start()
    try:
        yield live
    finally:
        live.stop()


def mid_render(client: httpx.Client, job_id: str, timeout: float = 120) -> None:
    """Until the job's render has made progress: a worker is in the middle of it."""
    deadline = time.monotonic() + timeout
    while client.get(f"/v2/jobs/{job_id}").json()["progress"] < 5:
        assert time.monotonic() < deadline, f"job {job_id} never started rendering"
        time.sleep(0.05)


def worker_processes(server: LiveServer) -> list[psutil.Process]:
    """The server process's render workers (spawned children)."""
    assert server.process is not None
    children = psutil.Process(server.process.pid).children()
    return [p for p in children if "spawn_main" in " ".join(p.cmdline())]


def until(condition: Callable[[], object], timeout: float, what: str, every: float = 0.2) -> None:
    """Wait for ``condition``; fail saying ``what`` was awaited once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def wait_for(
    client: httpx.Client, job_id: str, timeout: float = 120, until: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Poll a job until it is terminal (or reaches one of ``until``), recording the progress seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v2/jobs/{job_id}").json()
        seen.append(job["progress"])
        if job["status"] in ("COMPLETED", "FAILED", "CANCELLED", *until):
            job["_progress_seen"] = seen
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} still {job['status']}")


def png(width: int, height: int, colour: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def undecodable_png() -> bytes:
    """A PNG whose header reads (64x64, so it is taken as an upload) but whose pixels end at once: a
    job with it fails when its image is decoded."""
    whole = png(64, 64)
    return whole[: whole.index(b"IDAT") + 6]


def mp4_summary(data: bytes) -> dict[str, Any]:
    """What a client checks of a downloaded clip, decoded with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return {
            "size": (video.codec_context.width, video.codec_context.height),
            "frames": frames,
            "fps": float(video.average_rate),
            "audio": bool(container.streams.audio),
        }


def balance(server: LiveServer, key: str) -> int:
    return int(httpx.get(server.url + "/v2/me", headers={"X-API-Key": key}).json()["team"]["credits"])


def price(server: LiveServer, model: str, variant: str) -> int:
    models = httpx.get(server.url + "/v2/models").json()["models"]
    return int(next(m for m in models if m["id"] == model)["prices"][variant])


class Receiver:
    """What a loopback webhook receiver does with each delivery: fail the first ``failures``, hang, or
    wait for a gate; every call is kept."""

    def __init__(self, failures: int = 0, failure_status: int = 500) -> None:
        self.failures = failures
        self.failure_status = failure_status
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.arrivals: list[tuple[float, str]] = []  # (monotonic time, jobId) of each request
        self.hang = False  # never answer (until the test ends)
        self.gate: threading.Event | None = None  # once failures are spent, answer only when set
        self.released = threading.Event()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output free of access logs."""

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def loopback(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serves ``handler`` on a free loopback port from a thread; yields the base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def serving(state: Receiver) -> Iterator[str]:
    """A loopback HTTP receiver acting out ``state``; yields its URL."""

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.arrivals.append((time.monotonic(), json.loads(body)["jobId"]))
            state.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            if state.hang:
                state.released.wait(30)
                return
            failing = state.failures > 0
            state.failures -= 1
            if not failing and state.gate is not None:
                state.gate.wait(30)
            self.send_response(state.failure_status if failing else 204)
            self.end_headers()

    with loopback(Handler) as url:
        try:
            yield url + "/hook"
        finally:
            state.released.set()
            if state.gate is not None:
                state.gate.set()
