"""``openreel generate`` as a user runs it: against a server, and with no server at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from support import LiveServer, mp4_summary

pytestmark = pytest.mark.live


def generate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openreel", "generate", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_against_a_server_uploading_a_local_image(server: LiveServer, tmp_path: Path) -> None:
    picture = tmp_path / "first.png"
    Image.new("RGB", (200, 400), (10, 120, 10)).save(picture)
    key = server.new_key(credits=10)
    out = tmp_path / "clip.mp4"
    run = generate(
        "a green tower",
        "--server",
        server.url,
        "--duration",
        "4",
        "--aspect-ratio",
        "9:16",
        "--image",
        str(picture),
        "--no-audio",
        "--seed",
        "5",
        "--out",
        str(out),
        env={"OPENREEL_API_KEY": key},
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert "wrote" in run.stdout and "seed 5" in run.stdout and "3 credits" in run.stdout
    assert mp4_summary(out.read_bytes()) == {"size": (720, 1280), "frames": 96, "fps": 24.0, "audio": False}
    with server.client(key) as client:
        job = client.get("/v2/jobs").json()["jobs"][0]
    assert job["input"]["veoParams"]["image"].startswith(server.url + "/v2/files/uploads/")


def test_errors_are_shown_and_nothing_is_written(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "never.mp4"
    poor = generate(
        "x",
        "--server",
        server.url,
        "--duration",
        "4",
        "--out",
        str(out),
        env={"OPENREEL_API_KEY": server.new_key(credits=1)},
    )
    assert poor.returncode == 1 and "Insufficient credits" in poor.stdout
    invalid = generate(
        "x",
        "--server",
        server.url,
        "--duration",
        "5",
        "--out",
        str(out),
        env={"OPENREEL_API_KEY": server.new_key(credits=10)},
    )
    assert invalid.returncode == 1 and "veoParams.duration" in invalid.stdout
    no_key = generate("x", "--server", server.url, "--out", str(out), env={"OPENREEL_API_KEY": ""})
    assert no_key.returncode == 2 and "OPENREEL_API_KEY" in no_key.stderr
    assert not out.exists()


def test_without_a_server_on_embedded_defaults(tmp_path: Path) -> None:
    out = tmp_path / "local.mp4"
    run = generate(
        "a quiet lake",
        "--duration",
        "4",
        "--out",
        str(out),
        "--data-dir",
        str(tmp_path / "data"),
        env={"OPENREEL_X264_PRESET": "ultrafast"},
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert "random weights" in run.stdout
    assert mp4_summary(out.read_bytes()) == {"size": (1280, 720), "frames": 96, "fps": 24.0, "audio": True}
    assert (tmp_path / "data" / "cli.key").read_text().startswith("afk_")
