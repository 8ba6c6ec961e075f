"""Webhooks to a real receiver on loopback: Apiframe's signature, events, retries, webhookStatus."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from openreel.sdk.signatures import sign, verify_webhook

from support import LiveServer, running_server, wait_for


class Receiver:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[dict[str, str], bytes]] = []


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            failing = state.failures > 0
            state.failures -= 1
            self.send_response(500 if failing else 204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    httpd.shutdown()


def test_signature_is_hmac_of_the_body_keyed_with_the_key_digest() -> None:
    body = b'{"event":"completed"}'
    digest = hashlib.sha256(b"afk_secret").digest()
    assert sign(body, digest) == "sha256=" + hmac.new(digest, body, hashlib.sha256).hexdigest()
    header = sign(body, digest)
    assert verify_webhook(body, header, "afk_secret")
    assert verify_webhook(body, header.removeprefix("sha256="), "afk_secret")
    assert not verify_webhook(body + b" ", header, "afk_secret")
    assert not verify_webhook(body, header, "afk_other")
    assert not verify_webhook(body, None, "afk_secret")


def wait_status(server: LiveServer, key: str, job_id: str, status: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    with server.client(key) as client:
        while time.monotonic() < deadline:
            job = client.get(f"/v2/jobs/{job_id}").json()
            if job["webhookStatus"] == status:
                return job
            time.sleep(0.1)
    raise AssertionError(f"webhookStatus stayed {job['webhookStatus']}")


def test_progress_and_completed_events_are_signed_and_delivered(
    server: LiveServer, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    key = server.new_key()
    with server.client(key) as client:
        job_id = client.post(
            "/v2/videos/generate",
            json={
                "prompt": "p",
                "model": "veo-3.1-fast",
                "veoParams": {"duration": 4},
                "webhookUrl": url,
                "webhookEvents": ["progress", "completed"],
            },
        ).json()["jobId"]
        assert client.get(f"/v2/jobs/{job_id}").json()["webhookStatus"] == "pending"
        wait_for(client, job_id)
    wait_status(server, key, job_id, "delivered")
    digest = hashlib.sha256(key.encode()).digest()
    events = []
    for headers, body in state.calls:
        assert (
            headers["x-webhook-signature"] == "sha256=" + hmac.new(digest, body, hashlib.sha256).hexdigest()
        )
        payload = json.loads(body)
        assert headers["x-webhook-event"] == payload["event"] and payload["jobId"] == job_id
        events.append(payload)
    assert [e["event"] for e in events][-1] == "completed"
    assert any(e["event"] == "progress" for e in events)
    final = events[-1]
    assert final["status"] == "COMPLETED" and final["creditCost"] == 5 and final["progress"] == 100
    assert final["result"]["videoUrl"].startswith(server.url + "/v2/files/results/")
    assert httpx.get(final["result"]["videoUrl"], timeout=30).headers["content-type"] == "video/mp4"


def test_failed_event_is_retried_until_delivered(server: LiveServer, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.failures = 1
    key = server.new_key()
    with server.client(key) as client:
        job_id = client.post(
            "/v2/videos/generate",
            json={
                "prompt": "p",
                "model": "veo-3.1-fast",
                "veoParams": {"duration": 4, "image": "http://127.0.0.1:9/nothing.png"},
                "webhookUrl": url,
            },
        ).json()["jobId"]
        assert wait_for(client, job_id)["status"] == "FAILED"
    job = wait_status(server, key, job_id, "delivered")
    assert job["creditCost"] == 0
    assert len(state.calls) == 2
    payload = json.loads(state.calls[-1][1])
    assert (
        payload["event"] == "failed" and payload["status"] == "FAILED" and "nothing.png" in payload["error"]
    )


def test_pending_deliveries_survive_a_server_kill(receiver: tuple[Receiver, str], tmp_path: Path) -> None:
    state, url = receiver
    state.failures = 10**6
    env = {"OPENREEL_ALLOW_PRIVATE_URLS": "1", "OPENREEL_X264_PRESET": "ultrafast"}
    with running_server(tmp_path, env) as server:
        key = server.new_key()
        with server.client(key) as client:
            job_id = client.post(
                "/v2/videos/generate",
                json={
                    "prompt": "p",
                    "model": "veo-3.1-fast",
                    "veoParams": {"duration": 4},
                    "webhookUrl": url,
                },
            ).json()["jobId"]
            assert wait_for(client, job_id)["status"] == "COMPLETED"
        deadline = time.monotonic() + 30
        while not state.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.calls, "the first delivery was never tried"
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        state.failures = 0
        tried_before_restart = len(state.calls)
        server.start()
        job = wait_status(server, key, job_id, "delivered")
    assert len(state.calls) > tried_before_restart
    assert json.loads(state.calls[-1][1])["event"] == "completed" and job["status"] == "COMPLETED"
