"""Property-based fuzzing of every operation in the server's own OpenAPI (all three wire protocols):
no request, valid or not, may produce a 5xx or a response that contradicts the documented schema."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import LiveServer, quick_server

pytestmark = pytest.mark.live  # schemathesis runs as its own process

SEED = "78546478826495023804588340818380816738"


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "OPENREEL_RATE_LIMIT_PER_MINUTE": "0",
        "OPENREEL_MAX_CONCURRENT_JOBS": "1000",
        "OPENREEL_X264_PRESET": "ultrafast",
    }
    with quick_server(tmp_path_factory.mktemp("fuzz"), env) as live:
        yield live


class Failures(logging.Handler):
    """Every error the server logs (an exception in a route, in the dispatcher or a webhook sender)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors(fuzzed_server: LiveServer) -> Iterator[list[logging.LogRecord]]:
    """Watched once the server runs: starting uvicorn replaces its loggers' handlers."""
    failures = Failures()
    # uvicorn's loggers do not propagate to the root one: watch both.
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(failures)
    try:
        yield failures.records
    finally:
        for logger in loggers:
            logger.removeHandler(failures)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the fuzzing run's own limit is 600 s, and the server's start counts here too
def test_no_server_errors_and_responses_match_the_schema(
    fuzzed_server: LiveServer,
    server_errors: list[logging.LogRecord],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
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
    assert not server_errors, [(r.name, r.getMessage(), r.exc_text) for r in server_errors]
    assert "Traceback" not in capfd.readouterr().err  # a failed render prints its own
