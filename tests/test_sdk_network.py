"""What the SDK and the CLI say when no answer comes: their own errors and one line, never httpx's."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import openreel
from openreel.cli import app
from openreel.sdk import NetworkError, RequestTimedOut, ServerUnreachable

from support import free_port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


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
