"""Property-based fuzzing of every operation in the server's own OpenAPI (all three wire protocols):
no request, valid or not, may produce a 5xx or a response that contradicts the documented schema."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import LiveServer, running_server

pytestmark = pytest.mark.live

SEED = "78546478826495023804588340818380816738"


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "OPENREEL_RATE_LIMIT_PER_MINUTE": "0",
        "OPENREEL_MAX_CONCURRENT_JOBS": "1000",
        "OPENREEL_X264_PRESET": "ultrafast",
    }
    with running_server(tmp_path_factory.mktemp("fuzz"), env) as live:
        yield live


@pytest.mark.timeout(900)  # the fuzzing run's own limit is 600 s, and the server's start counts here too
def test_no_server_errors_and_responses_match_the_schema(fuzzed_server: LiveServer, tmp_path: Path) -> None:
    key = fuzzed_server.new_key(credits=1_000_000)
    cli = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(cli),
            "run",
            fuzzed_server.url + "/openapi.json",
            "--no-color",
            "-n",
            "20",
            "--seed",
            SEED,
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "-H",
            f"X-API-Key: {key}",
            "-H",
            f"x-goog-api-key: {key}",
            "-H",
            f"Authorization: Bearer {key}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Tested: " in run.stdout and " passed" in run.stdout
    assert "Traceback" not in fuzzed_server.log()
