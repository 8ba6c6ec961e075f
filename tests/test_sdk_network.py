"""What the SDK and the CLI say when no answer comes, or an odd one: their own errors and one line,
never httpx's, json's or pydantic's."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from typer.testing import CliRunner

import openreel
from openreel.cli import app
from openreel.sdk import (
    InsufficientCreditsError,
    NetworkError,
    OpenreelError,
    RateLimitError,
    RequestTimedOut,
    ServerError,
    ServerUnreachable,
    UnexpectedResponseError,
    ValidationError,
)

from support import QuietHandler, free_port, loopback

Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def odd_server() -> Iterator[tuple[str, list[Answer]]]:
    """A server that gives every request the last answer put in its list (a proxy, a load balancer)."""
    answers: list[Answer] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            status, headers, body = answers[-1]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if status != 204:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with loopback(Handler) as url:
        yield url, answers


def _refusals(url: str) -> list[OpenreelError]:
    """What ``me()`` raises through each client, the same error from both."""
    with openreel.Client(api_key="afk_x", base_url=url) as client, pytest.raises(OpenreelError) as sync:
        client.me()

    async def call() -> None:
        async with openreel.AsyncClient(api_key="afk_x", base_url=url) as client:
            await client.me()

    with pytest.raises(OpenreelError) as asynchronous:
        asyncio.run(call())
    return [sync.value, asynchronous.value]


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (
            (200, {"Content-Type": "text/html"}, b"<html><body>Welcome to the proxy</body></html>"),
            "200: not an answer of the API (text/html): b'<html><body>Welcome to the proxy",
        ),
        ((204, {}, b""), "204: not an answer of the API (no content type): an empty body"),
        ((200, {"Content-Type": "application/json"}, b'{"id": 1}'), "200: not an answer of the API"),
        (
            (308, {"Location": "https://videos.example/v2/me"}, b""),
            "308: the server redirects to https://videos.example/v2/me: use its address as the base URL",
        ),
        ((302, {}, b""), "302: the server redirects (no Location)"),
    ],
    ids=["html", "empty", "other json", "redirect", "redirect nowhere"],
)
def test_a_success_that_is_not_the_apis_answer_is_an_unexpected_response(
    odd_server: tuple[str, list[Answer]], answer: Answer, says: str
) -> None:
    url, answers = odd_server
    answers.append(answer)
    for unexpected in _refusals(url):
        assert isinstance(unexpected, UnexpectedResponseError) and unexpected.status == answer[0]
        assert str(unexpected).startswith(says), unexpected
    out = CliRunner().invoke(app, ["jobs", "show", "j", "--server", url], env={"OPENREEL_API_KEY": "afk_x"})
    assert out.exit_code == 1 and out.output.strip().count("\n") == 0, out.output
    assert out.output.startswith(says.split(": ", 1)[1][:24]), out.output


@pytest.mark.parametrize(
    ("details", "read", "says"),
    [
        ({"veoParams.duration": ["must be 4, 6 or 8"]}, None, "; veoParams.duration: must be 4, 6 or 8"),
        (
            {"prompt": "required", "n": [1, 2]},
            {"prompt": ["required"], "n": ["1", "2"]},
            "; prompt: required; n: 1; 2",
        ),
        (["a list, from another server"], {}, ""),
        ("a sentence", {}, ""),
    ],
    ids=["openreel", "odd values", "a list", "a string"],
)
def test_a_400_lists_the_details_it_can_read_and_no_others(
    odd_server: tuple[str, list[Answer]], details: object, read: dict[str, list[str]] | None, says: str
) -> None:
    url, answers = odd_server
    body = json.dumps({"error": "Invalid request", "details": details}).encode()
    answers.append((400, {"Content-Type": "application/json"}, body))
    for refused in _refusals(url):
        assert isinstance(refused, ValidationError)
        assert refused.details == (details if read is None else read)
    out = CliRunner().invoke(app, ["jobs", "show", "j", "--server", url], env={"OPENREEL_API_KEY": "afk_x"})
    assert (out.exit_code, out.output) == (1, f"Invalid request{says}\n")


@pytest.mark.parametrize(
    ("body", "counts"),
    [
        (b'{"error": "Insufficient credits", "creditsRequired": 5, "creditsAvailable": 2}', (5, 2)),
        (b'{"error": "Insufficient credits", "creditsRequired": "5", "creditsAvailable": "2"}', (5, 2)),
        (b'{"error": "Payment Required"}', (None, None)),
        (b'{"error": "Payment Required", "creditsRequired": 1e999, "creditsAvailable": 2}', (None, 2)),
        (b'{"error": "Payment Required", "creditsRequired": [5], "creditsAvailable": 2.5}', (None, None)),
        (
            b'{"error": "Payment Required", "creditsRequired": %d, "creditsAvailable": true}' % 10**400,
            (10**400, None),
        ),
        (
            b'{"error": "Payment Required", "creditsRequired": "%d", "creditsAvailable": "1e2"}' % (9**18),
            (9**18, 100),
        ),
        (
            b'{"error": "Payment Required", "creditsRequired": "%s", "creditsAvailable": 3}' % (b"9" * 5000),
            (None, 3),
        ),
    ],
    ids=["openreel", "as strings", "a proxy", "overflowing", "not counts", "huge", "a long string", "absurd"],
)
def test_a_402_names_the_counts_it_has(
    odd_server: tuple[str, list[Answer]], body: bytes, counts: tuple[int | None, int | None]
) -> None:
    url, answers = odd_server
    answers.append((402, {"Content-Type": "application/json"}, body))
    for refused in _refusals(url):
        assert isinstance(refused, InsufficientCreditsError)
        assert (refused.required, refused.available) == counts
    out = CliRunner().invoke(app, ["jobs", "show", "j", "--server", url], env={"OPENREEL_API_KEY": "afk_x"})
    message = json.loads(body)["error"]
    if None not in counts:
        message += f": this job costs {counts[0]} credits, the account has {counts[1]}"
    assert (out.exit_code, out.output) == (1, message + "\n")


@pytest.mark.parametrize(("status", "error"), [(429, RateLimitError), (503, ServerError)])
def test_retry_after_as_an_http_date_or_nonsense(
    odd_server: tuple[str, list[Answer]], status: int, error: type[OpenreelError]
) -> None:
    """RFC 9110 allows an HTTP-date: seconds from now; what no one can read is None, not a ValueError."""
    url, answers = odd_server
    for retry_after, seconds in [
        (formatdate(time.time() + 30, usegmt=True), (28, 30)),
        ("7", (7, 7)),
        ("after lunch", None),
        ("Sat, 28 Nov 99999999999 00:00:00 GMT", None),  # a year past datetime's: OverflowError
    ]:
        answers.append((status, {"Retry-After": retry_after, "Content-Type": "text/plain"}, b"busy"))
        for refused in _refusals(url):
            assert isinstance(refused, error), refused
            waited = refused.retry_after
            if seconds is None:
                assert waited is None, retry_after
            else:
                assert waited is not None and seconds[0] <= waited <= seconds[1], (retry_after, waited)


def test_a_stopped_server_is_server_unreachable_sync_and_async() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        openreel.Client(api_key="afk_x", base_url=url) as client,
        pytest.raises(ServerUnreachable) as sync,
    ):
        client.me()
    assert sync.value.url.startswith(url) and "server unreachable" in str(sync.value)

    async def call() -> None:
        async with openreel.AsyncClient(api_key="afk_x", base_url=url) as client:
            await client.me()

    with pytest.raises(ServerUnreachable):
        asyncio.run(call())


def test_a_server_that_never_answers_is_request_timed_out(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}"
    client = openreel.Client(api_key="afk_x", base_url=url, timeout=0.3)
    with client, pytest.raises(RequestTimedOut) as timed_out:
        client.me()
    assert isinstance(timed_out.value, NetworkError) and "timed out" in str(timed_out.value)


def test_the_cli_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENREEL_API_KEY", "afk_x")
    url = f"http://127.0.0.1:{free_port()}"
    out = CliRunner().invoke(app, ["generate", "a fox", "--server", url, "--out", str(tmp_path / "a.mp4")])
    assert out.exit_code == 1
    assert out.output.strip().count("\n") == 0 and "server unreachable" in out.output, out.output
    assert not (tmp_path / "a.mp4").exists()


def test_a_paid_job_the_cli_cannot_follow_is_named_with_the_command_to_follow_it(tmp_path: Path) -> None:
    """The server goes away after accepting the job: the line says which job, and how to take it up."""

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self._json(201, {"jobId": "j9", "status": "QUEUED"})

        def do_GET(self) -> None:
            self._json(503, {"error": "the server is shutting down"})

        def _json(self, status: int, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with loopback(Handler) as url:
        out = CliRunner().invoke(
            app,
            ["generate", "a fox", "--server", url, "--duration", "4", "-o", str(tmp_path / "a.mp4")],
            env={"OPENREEL_API_KEY": "afk_x", "COLUMNS": "400"},
        )
    assert out.exit_code == 1
    lines = out.output.splitlines()
    assert [lines[0], lines[-1]] == [
        "job j9 accepted",
        "the server is shutting down; job j9 is paid for and kept: follow it with: "
        f"openreel jobs wait j9 -o FILE --server {url}",
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["jobs", "list", "--server", "http://[::1"], "the base URL 'http://[::1' is not a URL"),
        (
            ["generate", "a", "--server", "http://127.0.0.1:1", "--image", "nope.png", "-o", "a.mp4"],
            "nope.png is",
        ),
    ],
)
def test_a_bad_server_url_or_image_is_one_line(
    args: list[str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENREEL_API_KEY", "afk_x")
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 1 and out.output.strip().count("\n") == 0 and says in out.output, out.output


def test_version() -> None:
    out = CliRunner().invoke(app, ["--version"])
    assert (out.exit_code, out.output.strip()) == (0, f"openreel {openreel.__version__}")
