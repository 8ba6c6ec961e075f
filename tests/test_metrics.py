"""``/metrics`` as Prometheus reads it: it parses, and its counters move when a job ends."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import LiveServer, wait_for

pytestmark = pytest.mark.live


def scrape(server: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_job_counters_move_when_a_job_completes_and_when_one_is_cancelled(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    model = (("model", "veo-3.1-fast"),)
    before = scrape(server)
    with server.client(key) as client:
        done = client.post(
            "/v2/videos/generate", json={"prompt": "a", "model": "veo-3.1-fast", "veoParams": {"duration": 4}}
        )
        job = wait_for(client, done.json()["jobId"])
        assert job["status"] == "COMPLETED"
        cost = job["creditCost"]
        after = scrape(server)
        assert (
            after[("openreel_jobs_total", (*model, ("outcome", "completed")))]
            == before.get(("openreel_jobs_total", (*model, ("outcome", "completed"))), 0) + 1
        )
        assert (
            after[("openreel_credits_total", (("kind", "charge"),))]
            >= before[("openreel_credits_total", (("kind", "charge"),))] + cost
        )
        for stage in ("render", "encode"):
            count = ("openreel_render_seconds_count", (*model, ("stage", stage)))
            assert after[count] == before.get(count, 0) + 1
        assert after[("openreel_worker_slots", (("state", "idle"),))] >= 1
        assert after[("openreel_engine_ready", ())] == 1

        queued = client.post("/v2/videos/generate", json={"prompt": "b", "model": "veo-3.1-fast"})
        client.post(f"/v2/jobs/{queued.json()['jobId']}/cancel").raise_for_status()
        cancelled = scrape(server)
    refunds = ("openreel_credits_total", (("kind", "refund"),))
    assert (
        cancelled[("openreel_jobs_total", (*model, ("outcome", "cancelled")))]
        == after.get(("openreel_jobs_total", (*model, ("outcome", "cancelled"))), 0) + 1
    )
    assert cancelled[refunds] > after.get(refunds, 0)


def test_only_direct_clients_on_this_machine_are_answered(server: LiveServer) -> None:
    forwarded = httpx.get(f"{server.url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert forwarded.status_code == 403
    assert "OPENREEL_METRICS_PUBLIC" in forwarded.json()["error"]
