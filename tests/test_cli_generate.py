"""``openreel generate`` as a user runs it: against a server, and with no server at all."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from openreel.cli import app
from openreel.cli.client import Origin, _reason
from openreel.ledger.db import Database
from openreel.ledger.tables import Job
from openreel.sdk import ValidationError
from openreel.sdk.client import DEFAULT_BASE_URL

from quick import HOLD
from support import LiveServer, balance, mp4_summary

pytestmark = pytest.mark.live


def generate(
    *args: str, env: dict[str, str] | None = None, disk_bytes: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``openreel generate``; ``disk_bytes``: a disk that is full past that many bytes in a file (a
    write beyond RLIMIT_FSIZE fails with EFBIG, Python ignoring the SIGXFSZ that comes with it)."""

    def limit() -> None:
        if disk_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (disk_bytes, disk_bytes))

    return subprocess.run(
        [sys.executable, "-m", "openreel", "generate", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        preexec_fn=limit,
    )


def test_against_a_server_uploading_a_local_image(server: LiveServer, tmp_path: Path) -> None:
    picture = tmp_path / "first.png"
    Image.new("RGB", (200, 400), (10, 120, 10)).save(picture)
    key = server.new_key(credits=20)
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
        "--samples",
        "2",
        "--out",
        str(out),
        env={"OPENREEL_API_KEY": key},
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert "wrote" in run.stdout and "seed 5" in run.stdout and "seed 6" in run.stdout
    assert "6 credits" in run.stdout  # two samples of 3
    silent_portrait = {"size": (720, 1280), "frames": 96, "fps": 24.0, "audio": False}
    assert mp4_summary(out.read_bytes()) == silent_portrait
    assert mp4_summary((tmp_path / "clip-2.mp4").read_bytes()) == silent_portrait
    with server.client(key) as client:
        job = client.get("/v2/jobs").json()["jobs"][0]
    assert job["input"]["veoParams"]["image"].startswith(server.url + "/v2/files/uploads/")
    # The second video continued by 7 s, with sound from there on.
    longer = tmp_path / "longer.mp4"
    env = {"OPENREEL_API_KEY": key, "OPENREEL_BASE_URL": server.url}
    run = generate(
        "the tower sways", "--extend", job["id"], "--extend-video", "1", "-o", str(longer), env=env
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert "7 credits" in run.stdout
    assert mp4_summary(longer.read_bytes()) == {
        "size": (720, 1280),
        "frames": 264,
        "fps": 24.0,
        "audio": True,
    }


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
    assert poor.returncode == 1, poor.stderr
    assert poor.stdout.strip() == "Insufficient credits: this job costs 5 credits, the account has 1"
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
    assert no_key.returncode == 1 and no_key.stdout.startswith("Set OPENREEL_API_KEY") and not no_key.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "out",
    [Path("."), Path("no-such-directory/clip.mp4"), Path("/sys/clip.mp4")],
    ids=["a directory", "in a missing directory", "where no one may write"],  # sysfs: not even root
)
def test_an_out_that_cannot_be_written_is_refused_before_the_job_is_paid_for(
    server: LiveServer, tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    key = server.new_key(credits=10)
    env = {"OPENREEL_API_KEY": key, "OPENREEL_BASE_URL": server.url}
    for command in (["generate", "x", "--duration", "4"], ["jobs", "wait", "j"], ["jobs", "download", "j"]):
        run = CliRunner().invoke(app, [*command, "-o", str(out)], env=env)
        assert run.exit_code == 1 and run.output.startswith(f"--out {out}"), run.output
        assert run.output.count("\n") == 1, run.output
    assert balance(server, key) == 10
    with server.client(key) as client:
        assert client.get("/v2/jobs").json()["jobs"] == []
    assert list(tmp_path.iterdir()) == []


def test_a_video_that_cannot_be_saved_names_its_paid_job(server: LiveServer, tmp_path: Path) -> None:
    """The disk fills while the video downloads: the line says which job to download again."""
    key = server.new_key(credits=10)
    out = tmp_path / "clip.mp4"
    full = generate(
        "x",
        "--duration",
        "4",
        "-o",
        str(out),
        env={"OPENREEL_API_KEY": key, "OPENREEL_BASE_URL": server.url},
        disk_bytes=4096,
    )
    with server.client(key) as client:
        [job] = client.get("/v2/jobs").json()["jobs"]
    assert full.returncode == 1 and not full.stderr, full.stderr
    line = full.stdout.splitlines()[-1]
    command = f"openreel jobs download {job['id']} -o FILE --server {server.url}"
    assert line == (
        f"job {job['id']} completed, but its video could not be saved to {out}: File too large; "
        f"get it later with: {command}"
    )
    assert list(tmp_path.iterdir()) == []
    # The command as pasted, in a shell that has the key but not the server.
    env = {k: v for k, v in os.environ.items() if k != "OPENREEL_BASE_URL"}
    pasted = line.split("get it later with: ")[1].replace("openreel", f"{sys.executable} -m openreel", 1)
    again = subprocess.run(
        pasted.replace("FILE", str(out)),
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "OPENREEL_API_KEY": key},
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert mp4_summary(out.read_bytes())["frames"] == 96


def test_the_command_to_follow_a_job_later_names_what_differs_from_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default server goes unsaid; a local run's key is read from its file, by a path that works
    from any folder and survives the shell; an in-process run's server must be started first."""
    assert Origin(DEFAULT_BASE_URL).command("download", "j1") == "openreel jobs download j1 -o FILE"
    assert Origin("http://h:1").command("list") == "openreel jobs list --server http://h:1"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my data").mkdir()
    start = "start the server with: openreel serve --data-dir DIR"
    assert Origin("http://127.0.0.1:9000", Path("my data/cli.key"), start).command("wait", "j1") == (
        f"{start}, then: OPENREEL_API_KEY=$(cat '{tmp_path.resolve()}/my data/cli.key') "
        "openreel jobs wait j1 -o FILE --server http://127.0.0.1:9000"
    )


def test_a_failure_line_keeps_all_the_server_said() -> None:
    """The same words whichever step failed: a refusal's field errors, an interrupt, the disk's error."""
    details = {"veoParams.durationSeconds": ["must be 4, 6 or 8"], "prompt": ["required", "too short"]}
    refused = ValidationError(400, "Invalid request", {"error": "Invalid request", "details": details})
    assert _reason(refused) == (
        "Invalid request; veoParams.durationSeconds: must be 4, 6 or 8; prompt: required; too short"
    )
    assert _reason(KeyboardInterrupt()) == "interrupted"
    assert _reason(OSError(28, "No space left on device", "/v.mp4")) == "No space left on device: /v.mp4"


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


def test_without_a_server_a_start_that_cannot_succeed_ends_in_one_line(tmp_path: Path) -> None:
    """A prices file the server cannot use, an engine that cannot load: what to mend, not a traceback."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"veo-3.1-fast": {"5s": 1}}))
    where = ("--out", str(tmp_path / "a.mp4"), "--data-dir", str(tmp_path / "data"))
    run = generate("a lake", *where, env={"OPENREEL_PRICES_FILE": str(prices)})
    assert run.returncode == 1 and run.stderr == "", run.stderr
    assert run.stdout.startswith(f"Cannot use the prices file {prices}: veo-3.1-fast has no variant '5s'")
    assert run.stdout.count("\n") == 1
    nowhere = tmp_path / "nowhere"
    run = generate("a lake", *where, env={"OPENREEL_ENGINE": "ltx2", "OPENREEL_CHECKPOINT": str(nowhere)})
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    last = run.stdout.splitlines()[-1]
    missing = f"WeightsMissing: {nowhere} is not a complete diffusers checkpoint directory"
    assert last == f"The ltx2 engine could not load: {missing}."
    assert not (tmp_path / "a.mp4").exists()


def test_without_a_server_named_the_job_goes_to_the_one_running_on_the_data_directory(
    server: LiveServer, tmp_path: Path
) -> None:
    """Not a second service on the same queue and files: the job is sent to the server that owns them."""
    out = tmp_path / "sent.mp4"
    run = generate(
        "a lighthouse at dusk", "--duration", "4", "--out", str(out), "--data-dir", str(server.data_dir)
    )
    assert run.returncode == 0, run.stderr + run.stdout
    assert f"sending the job to the openreel server running on {server.data_dir} ({server.url})" in run.stdout
    assert "starting openreel in this process" not in run.stdout
    assert mp4_summary(out.read_bytes())["frames"] == 96
    db = Database(f"sqlite:///{server.data_dir / 'openreel.db'}")
    try:
        with db.read() as session:
            rendered = session.scalars(select(Job).where(Job.status == "COMPLETED")).all()
    finally:
        db.dispose()
    assert any(job.input["prompt"] == "a lighthouse at dusk" for job in rendered)


def jobs(*args: str, key: str, server: LiveServer) -> subprocess.CompletedProcess[str]:
    """``openreel jobs``, the server given the way a shell profile gives it: in the environment."""
    return subprocess.run(
        [sys.executable, "-m", "openreel", "jobs", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "OPENREEL_API_KEY": key, "OPENREEL_BASE_URL": server.url},
    )


def test_jobs_commands_list_show_wait_download_and_cancel(server: LiveServer, tmp_path: Path) -> None:
    key = server.new_key(credits=30)
    with server.client(key) as client:
        first = client.post(
            "/v2/videos/generate",
            json={"prompt": "one", "model": "veo-3.1-fast", "veoParams": {"duration": 4}},
        ).json()["jobId"]
        waited = jobs("wait", first, "--out", str(tmp_path / "one.mp4"), key=key, server=server)
        assert waited.returncode == 0, waited.stderr + waited.stdout
        assert mp4_summary((tmp_path / "one.mp4").read_bytes())["frames"] == 96
        # Held until cancelled: the cancel below must find it running, however long the CLI takes to start.
        second = client.post("/v2/videos/generate", json={"prompt": HOLD, "model": "veo-3.1"}).json()["jobId"]
    listed = jobs("list", key=key, server=server)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["job", "model", "status", "progress", "credits", "created"]
    assert [line.split()[0] for line in lines[1:]] == [second, first]
    assert lines[2].split()[1:3] == ["veo-3.1-fast", "COMPLETED"]
    shown = jobs("show", first, key=key, server=server)
    assert json.loads(shown.stdout)["result"]["durationSeconds"] == 4.0
    cancelled = jobs("cancel", second, key=key, server=server)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"job {second} cancelled; 20 credits refunded"
    again = jobs("cancel", second, key=key, server=server)
    assert again.returncode == 1 and len(again.stdout.strip().splitlines()) == 1, again.stdout
    not_ready = jobs("download", second, key=key, server=server)
    assert not_ready.returncode == 1 and f"job {second} has no video yet" in not_ready.stdout
    waiting = jobs("wait", second, key=key, server=server)
    assert waiting.returncode == 1 and f"job {second} cancelled" in waiting.stdout
    unknown = jobs("show", "no-such-job", key=key, server=server)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stdout + unknown.stderr
