"""A render actor's scratch folder: what an actor killed mid-render leaves is swept by the next one."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from openreel.executors.scratch import Scratch

KILLED_MID_RENDER = """
import os, signal, sys
from pathlib import Path
from openreel.executors.scratch import Scratch
scratch = Scratch(Path(sys.argv[1]))
(scratch.path / "clip-0.mp4").write_bytes(b"half a clip")
print(scratch.path, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_actors_folder_is_swept_by_the_next_and_a_live_ones_kept(tmp_path: Path) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_RENDER, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = Path(killed.stdout.strip())
    assert (left / "clip-0.mp4").read_bytes() == b"half a clip"
    first = Scratch(tmp_path)
    assert not left.exists()
    (first.path / "clip-0.mp4").write_bytes(b"rendering")
    second = Scratch(tmp_path)
    assert (first.path / "clip-0.mp4").exists()
    assert sorted(tmp_path.iterdir()) == sorted([first.path, second.path])
