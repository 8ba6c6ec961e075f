"""Every bash and Python block of the README and docs/ runs as pasted against a fresh server, so a broken
example fails CI. The only change made to a block is the server's address (``127.0.0.1:8000`` becomes the
test server's); a block that cannot run here says why in a ``<!-- not run: … -->`` line right above it.
The server and the blocks run on the embedded defaults but for the suite's faster x264 preset."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import LiveServer, mp4_summary, png, quick_server, wait_for

pytestmark = [pytest.mark.live, pytest.mark.xdist_group("docs_examples")]

ROOT = Path(__file__).parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(?:<!-- not run: (?P<reason>.*?) -->\n)?```(?P<lang>bash|python)\n(?P<code>.*?)^```$", re.S | re.M
)
ADDRESS = "127.0.0.1:8000"
FASTER = {"OPENREEL_X264_PRESET": "ultrafast"}


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    lang: str
    code: str
    not_run: str | None


def blocks(document: Path) -> list[Block]:
    text = document.read_text()
    return [
        Block(document, text.count("\n", 0, m.start("lang")) + 1, m["lang"], m["code"], m["reason"])
        for m in FENCE.finditer(text)
    ]


RUNNABLE = {d: [b for b in blocks(d) if b.not_run is None] for d in DOCUMENTS}


def test_blocks_are_found_and_every_one_left_out_says_why() -> None:
    every = [b for d in DOCUMENTS for b in blocks(d)]
    assert sum(len(found) for found in RUNNABLE.values()) >= 8
    assert all(b.not_run.strip() for b in every if b.not_run is not None)
    # A fence in another language would not be run: only bash and python are used for commands.
    for document in DOCUMENTS:
        langs = set(re.findall(r"^```(\w+)$", document.read_text(), re.M))
        assert langs <= {"bash", "python", "json", "yaml"}, (document.name, langs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server on the embedded defaults, as `make serve` runs it, but for its engine (the quick one: the
    examples exercise the wire, not the pixels)."""
    with quick_server(tmp_path_factory.mktemp("docs"), FASTER) as live:
        yield live


@pytest.fixture(scope="module")
def api_key(server: LiveServer) -> str:
    """The reader's key, with a finished job (the docs show how to list and download one)."""
    key = server.new_key(credits=1000)
    with server.client(key) as client:
        accepted = client.post(
            "/v2/videos/generate", json={"prompt": "a", "model": "veo-3.1-fast", "veoParams": {"duration": 4}}
        )
        assert wait_for(client, accepted.json()["jobId"])["status"] == "COMPLETED"
    return key


def run(block_list: list[Block], server: LiveServer, api_key: str, cwd: Path) -> None:
    """A document's bash blocks as one shell session (later blocks use earlier variables), then each
    Python block in its own interpreter."""
    env = {**os.environ, **FASTER, "OPENREEL_API_KEY": api_key, "OPENREEL_DATA_DIR": str(server.data_dir)}
    env.pop("OPENREEL_BASE_URL", None)
    shell = "\n".join(b.code for b in block_list if b.lang == "bash")
    commands = [["bash", "-euo", "pipefail", "-c", shell]] if shell else []
    commands += [[sys.executable, "-c", b.code] for b in block_list if b.lang == "python"]
    for command in commands:
        command[-1] = command[-1].replace(ADDRESS, f"127.0.0.1:{server.port}")
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if RUNNABLE[d]], ids=lambda d: d.name)
def test_every_block_runs_as_pasted(document: Path, server: LiveServer, api_key: str, tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "first.png").write_bytes(png(640, 360, (200, 120, 40)))
    run(RUNNABLE[document], server, api_key, tmp_path)
    code = "\n".join(b.code for b in RUNNABLE[document])
    commands = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("#"))
    for name in set(re.findall(r"[\w-]+\.mp4", commands)):
        video = tmp_path / name
        assert video.is_file(), f"{document.name}: its examples name {name} but did not write it"
        summary = mp4_summary(video.read_bytes())
        assert summary["frames"] > 0, (name, summary)
