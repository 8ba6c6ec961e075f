"""``/metrics`` as Prometheus reads it: it parses, its counters and gauges move as jobs queue and end, and
it answers clients elsewhere only when the operator opens it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from openreel.app import create_app
from openreel.scheduler.dispatcher import PHASES
from openreel.service import metrics
from openreel.service.metrics import LEDGER_CACHE_S
from openreel.settings import Settings

from quick import FAIL, QuickExecutor
from support import SERVER_ENV, LiveServer, Receiver, quick_server, serving, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: LiveServer) -> Samples:
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def scrape_when_moved(
    server: LiveServer, before: Samples, name: tuple[str, tuple[tuple[str, str], ...]]
) -> Samples:
    """The ledger's totals are cached for a few seconds: scrape until this one has moved."""
    deadline = time.monotonic() + 3 * LEDGER_CACHE_S
    while (now := scrape(server)).get(name, 0) == before.get(name, 0) and time.monotonic() < deadline:
        time.sleep(0.5)
    return now


def test_job_counters_move_when_a_job_completes_and_when_one_is_cancelled(tmp_path: Path) -> None:
    """On a server of its own: the counters are the server's, and a shared server may finish another
    test's job meanwhile."""
    with quick_server(tmp_path, SERVER_ENV) as server:
        _counters_move(server)


def _counters_move(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    model = (("model", "veo-3.1-fast"),)
    completed = ("openreel_jobs_total", (*model, ("outcome", "completed")))
    ended = ("openreel_jobs_total", (*model, ("outcome", "cancelled")))
    charges = ("openreel_credits_total", (("kind", "charge"),))
    refunds = ("openreel_credits_total", (("kind", "refund"),))
    before = scrape(server)
    with server.client(key) as client:
        done = client.post(
            "/v2/videos/generate", json={"prompt": "a", "model": "veo-3.1-fast", "veoParams": {"duration": 4}}
        )
        job = wait_for(client, done.json()["jobId"])
        assert job["status"] == "COMPLETED"
        after = scrape_when_moved(server, before, completed)
        assert after[completed] == before.get(completed, 0) + 1
        assert after[charges] >= before.get(charges, 0) + job["creditCost"]
        for stage in ("render", "encode"):
            count = ("openreel_render_seconds_count", (*model, ("stage", stage)))
            assert after[count] == before.get(count, 0) + 1
        # The status write is timed once it has committed: a moment after the job reads COMPLETED.
        after = scrape_when_moved(
            server, before, ("openreel_job_phase_seconds_count", (("phase", "status"),))
        )
        for phase in PHASES:
            count = ("openreel_job_phase_seconds_count", (("phase", phase),))
            assert after[count] == before.get(count, 0) + 1, phase
        assert after[("openreel_worker_slots", (("state", "idle"),))] >= 1
        assert after[("openreel_engine_ready", ())] == 1

        queued = client.post("/v2/videos/generate", json={"prompt": "b", "model": "veo-3.1-fast"})
        client.post(f"/v2/jobs/{queued.json()['jobId']}/cancel").raise_for_status()
        cancelled = scrape_when_moved(server, after, ended)
    assert cancelled[ended] == after.get(ended, 0) + 1
    assert cancelled[refunds] > after.get(refunds, 0)


@pytest.mark.parametrize(
    "header",
    [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}, {"X-Real-IP": "203.0.113.9"}],
)
def test_a_client_forwarded_by_a_proxy_is_refused(server: LiveServer, header: dict[str, str]) -> None:
    forwarded = httpx.get(f"{server.url}/metrics", headers=header)
    assert forwarded.status_code == 403
    assert "OPENREEL_METRICS_PUBLIC" in forwarded.json()["error"]


def test_a_failed_job_moves_the_queue_gauge_the_failed_counter_and_the_webhook_deliveries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every scrape reads the ledger, so the gauge can be read while the jobs wait (the cache has its test).
    monkeypatch.setattr(metrics, "LEDGER_CACHE_S", 0.0)
    failed = ("openreel_jobs_total", (("model", "veo-3.1-fast"), ("outcome", "failed")))
    queued = ("openreel_jobs_active", (("state", "queued"),))
    running = ("openreel_jobs_active", (("state", "running"),))
    delivered = ("openreel_webhook_deliveries", (("state", "delivered"),))
    # A server of its own, with one worker slot and steps slow enough to hold it: the counts are exact.
    with serving(Receiver()) as url, quick_server(tmp_path, SERVER_ENV, step_s=0.2) as server:
        before = scrape(server)
        assert (before[queued], before[running], before.get(failed, 0)) == (0, 0, 0)
        with server.client(server.new_key()) as client:
            # The quality recipe's 43 steps keep the only slot busy for 9 s, so the failing job queues.
            holder = client.post("/v2/videos/generate", json={"prompt": "hold", "model": "veo-3.1"})
            doomed = client.post(
                "/v2/videos/generate",
                json={
                    "prompt": FAIL,
                    "model": "veo-3.1-fast",
                    "veoParams": {"duration": 4},
                    "webhookUrl": url,
                },
            )
            waiting = scrape(server)
            assert waiting[queued] + waiting[running] == 2 and waiting[queued] >= 1, waiting
            client.post(f"/v2/jobs/{holder.json()['jobId']}/cancel").raise_for_status()
            assert wait_for(client, doomed.json()["jobId"])["status"] == "FAILED"
        after = scrape_when_moved(server, before, delivered)
    assert after[failed] == 1
    assert (after[queued], after[running]) == (0, 0)
    assert after[delivered] == before[delivered] + 1


@pytest.mark.parametrize("public", ["0", "1"])
def test_metrics_public_serves_a_client_on_another_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, public: str
) -> None:
    monkeypatch.setenv("OPENREEL_METRICS_PUBLIC", public)
    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings, QuickExecutor(settings)), client=("203.0.113.9", 40000)) as remote:
        response = remote.get("/metrics")
    if public == "1":
        assert response.status_code == 200, response.text
        assert any(
            family.name == "openreel_jobs_active" for family in text_string_to_metric_families(response.text)
        )
    else:
        assert response.status_code == 403
        assert "OPENREEL_METRICS_PUBLIC" in response.json()["error"]
