"""Hundreds of concurrent submissions, some repeating an Idempotency-Key, on SQLite and PostgreSQL:
no duplicate job, no lost job, and every balance exact."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from databases import DIALECTS, throwaway_database
from support import LiveServer, quick_server

ACCOUNTS = 10
UNIQUE_PER_ACCOUNT = 20
REPEATS_PER_ACCOUNT = 10
COST = 3  # veo-3.1-fast, 4 s, silent
GRANT = 1000


@pytest.fixture(params=DIALECTS)
def busy_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    with throwaway_database(request.param, tmp_path) as url:
        env = {
            "OPENREEL_DATABASE_URL": url,
            "OPENREEL_MAX_CONCURRENT_JOBS": "1000",
            "OPENREEL_RATE_LIMIT_PER_MINUTE": "0",
            "OPENREEL_X264_PRESET": "ultrafast",
        }
        with quick_server(tmp_path, env) as live:
            yield live


def test_concurrent_submissions_with_repeated_idempotency_keys(busy_server: LiveServer) -> None:
    keys = [busy_server.new_key(credits=GRANT) for _ in range(ACCOUNTS)]
    body = {"prompt": "crowd", "model": "veo-3.1-fast", "veoParams": {"duration": 4, "generate_audio": False}}
    requests = [(key, f"unique-{i}") for key in keys for i in range(UNIQUE_PER_ACCOUNT)]
    requests += [(key, "repeated") for key in keys for _ in range(REPEATS_PER_ACCOUNT)]

    def submit(item: tuple[str, str]) -> tuple[str, str, int, str]:
        key, idem = item
        response = http.post(
            "/v2/videos/generate", json=body, headers={"X-API-Key": key, "Idempotency-Key": idem}
        )
        return key, idem, response.status_code, response.json().get("jobId", "")

    # One client shared by the threads (its 32 connections reused), as a client library would send them.
    limits = httpx.Limits(max_connections=32)
    with (
        httpx.Client(base_url=busy_server.url, timeout=120, limits=limits) as http,
        ThreadPoolExecutor(32) as pool,
    ):
        outcomes = list(pool.map(submit, requests))
    assert len(outcomes) == ACCOUNTS * (UNIQUE_PER_ACCOUNT + REPEATS_PER_ACCOUNT) == 300
    assert {status for _, _, status, _ in outcomes} == {202}

    for key in keys:
        mine = [(idem, job_id) for k, idem, _, job_id in outcomes if k == key]
        repeated = {job_id for idem, job_id in mine if idem == "repeated"}
        unique = [job_id for idem, job_id in mine if idem != "repeated"]
        assert len(repeated) == 1 and len(set(unique)) == UNIQUE_PER_ACCOUNT
        expected = set(unique) | repeated
        with busy_server.client(key) as client:
            listed = [j["id"] for j in client.get("/v2/jobs", params={"limit": 100}).json()["jobs"]]
            assert sorted(listed) == sorted(expected)
            assert client.get("/v2/me").json()["team"]["credits"] == GRANT - COST * len(expected)
            for job_id in expected:
                client.post(f"/v2/jobs/{job_id}/cancel")
            after = client.get("/v2/jobs", params={"limit": 100}).json()["jobs"]
            completed = sum(1 for j in after if j["status"] == "COMPLETED")
            assert {j["status"] for j in after} <= {"COMPLETED", "CANCELLED"}
            assert client.get("/v2/me").json()["team"]["credits"] == GRANT - COST * completed
