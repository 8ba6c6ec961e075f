"""Per-account rate limits and concurrency caps: 429 with Retry-After, nothing charged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openreel.service.ratelimit import RateLimiter

from support import LiveServer, quick_server

# One worker runs this module, so its module-scoped fixtures start once.
pytestmark = pytest.mark.xdist_group("limits")

FAST_4S = {"prompt": "p", "model": "veo-3.1-fast", "veoParams": {"duration": 4, "generate_audio": False}}


def test_token_bucket_allows_a_burst_then_paces() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") == 0.0
    now[0] = 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.acquire("a") == 0.0
    assert RateLimiter(per_minute=0, burst=0).acquire("a") == 0.0


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "OPENREEL_RATE_LIMIT_PER_MINUTE": "6",
        "OPENREEL_RATE_LIMIT_BURST": "5",
        "OPENREEL_MAX_CONCURRENT_JOBS": "1",
    }
    with quick_server(tmp_path_factory.mktemp("strict"), env) as live:
        yield live


def test_requests_over_the_rate_get_429_per_account(strict_server: LiveServer) -> None:
    noisy, quiet = strict_server.new_key(), strict_server.new_key()
    with strict_server.client(noisy) as client:
        codes = [client.get("/v2/me").status_code for _ in range(7)]
        limited = client.get("/v2/me")
    assert codes[:5] == [200] * 5 and 429 in codes[5:]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "Rate limit" in limited.json()["error"]
    with strict_server.client(quiet) as client:
        assert client.get("/v2/me").status_code == 200


def test_active_jobs_are_capped_per_account(strict_server: LiveServer) -> None:
    key = strict_server.new_key(credits=20)
    with strict_server.client(key) as client:
        first = client.post("/v2/videos/generate", json=FAST_4S)
        second = client.post("/v2/videos/generate", json=FAST_4S)
        assert first.status_code == 202
        assert second.status_code == 429 and second.headers["retry-after"] == "5"
        assert "Too many concurrent jobs" in second.json()["error"]
        assert client.get("/v2/me").json()["team"]["credits"] == 17
        assert client.get("/v2/me").json()["team"]["maxConcurrentJobs"] == 1
