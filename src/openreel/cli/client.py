"""The commands a user runs against a server's API: ``generate`` and ``jobs``, through the SDK."""

from __future__ import annotations

import logging
import os
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from openreel.cli.local import DataDir, catalog_of, opening_database, settings_of
from openreel.cli.terminal import Typer, columns, fail, say, sentence
from openreel.domain.limits import EXTEND_SECONDS, MAX_SAMPLES
from openreel.sdk.client import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from openreel.protocols.apiframe.schemas import JobOut
    from openreel.sdk import Client

jobs_app = Typer(help="The jobs of your account on a server.")

SERVER_ENV = "OPENREEL_BASE_URL"
KEY_ENV = "OPENREEL_API_KEY"
Server = Annotated[
    str,
    typer.Option(
        envvar=SERVER_ENV,
        show_envvar=True,
        metavar="URL",
        help=f"Base URL of the server (key from {KEY_ENV}).",
    ),
]
JobId = Annotated[str, typer.Argument(help="The job's id.")]


def _key() -> str:
    key = os.environ.get(KEY_ENV)
    if not key:
        fail(f"Set {KEY_ENV} to an API key of the server (openreel keys create prints one).")
    return key


def _reason(exc: BaseException) -> str:
    """One line for a failure from the server, the network or the disk, with all the server said."""
    from openreel.sdk import InsufficientCreditsError, JobError, OpenreelError
    from openreel.sdk.errors import details_of

    if isinstance(exc, InsufficientCreditsError):
        required, available = exc.required, exc.available
        known = required is not None and available is not None  # a proxy's 402 says neither
        counts = f": this job costs {required} credits, the account has {available}"
        return exc.message + (counts if known else "")
    if isinstance(exc, OpenreelError):
        details = details_of(exc.body).items()
        return "; ".join([exc.message, *(f"{path}: {'; '.join(m)}" for path, m in details)])
    if isinstance(exc, JobError):
        return f"job {exc.job.id} {exc.job.status.lower()}: {exc.job.error}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OSError):  # the file to upload or to write
        why = exc.strerror or str(exc)
        return f"{why}: {exc.filename}" if exc.filename else why
    return str(exc)


@contextmanager
def _client(server: str, key: str | None = None) -> Iterator[Client]:
    """An SDK client whose every failure, from the server or the network, ends the command in one line."""
    from openreel.sdk import Client, JobError, NetworkError, OpenreelError, WaitTimeout

    try:
        with Client(api_key=key or _key(), base_url=server) as client:
            yield client
    except (OpenreelError, JobError, NetworkError, WaitTimeout, OSError, ValueError) as exc:
        fail(_reason(exc))  # ValueError: a --server that is not a URL


def _follow(client: Client, job_id: str, timeout: float) -> JobOut:
    """Wait for the job with a progress bar that shows its queue position and the time it has left."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from openreel.cli.terminal import console
    from openreel.sdk import Backoff

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("queued", total=100)

        def show(job: JobOut) -> None:
            notes = [f"position {job.queuePosition}"] if job.queuePosition else []
            if job.etaSeconds is not None:
                notes.append(f"about {job.etaSeconds:.0f} s left")
            label = job.status.lower() + (f" ({', '.join(notes)})" if notes else "")
            bar.update(task, completed=job.progress or 0, description=label)

        return client.wait_for(job_id, timeout=timeout, on_progress=show, backoff=Backoff(0.25, 1.5, 1.0))


def _writable(out: Path) -> Path:
    """``out``, once a file can be written there: checked before a job is paid for and rendered, so a
    mistyped --out never leaves a charged video with nowhere to go."""
    if os.path.isdir(out):  # False, not an exception, for a name too long or a folder out of reach
        fail(f"--out {out} is a directory: name the file, e.g. --out {out / 'video.mp4'}")
    try:
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}."):
            pass
    except OSError as exc:
        fail(f"--out {out}: cannot write in {out.parent}: {exc.strerror or exc}")
    return out


def sample_path(out: Path, index: int) -> Path:
    """Where the video of sample ``index`` goes: ``out`` for the first, ``out``-2, -3, ... beside it."""
    return out if index == 0 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")


@dataclass(frozen=True)
class Origin:
    """The server a command used, as a later command reaches it again: a key file where the key was the
    data directory's own, and the server to start first where it ran in the command's own process."""

    server: str
    key_file: Path | None = None
    start: str | None = None

    def command(self, verb: str, job_id: str | None = None) -> str:
        """``openreel jobs VERB`` as pasted into a shell: ``wait`` or ``download`` for a job, or ``list``."""
        command = f"openreel jobs {verb}" + (f" {shlex.quote(job_id)} -o FILE" if job_id else "")
        if self.server != DEFAULT_BASE_URL:
            command += f" --server {shlex.quote(self.server)}"
        if self.key_file is not None:
            command = f"OPENREEL_API_KEY=$(cat {shlex.quote(str(self.key_file.resolve()))}) {command}"
        return f"{self.start}, then: {command}" if self.start else command


def _downloaded(client: Client, job: JobOut, out: Path, origin: Origin) -> None:
    """Write the job's videos; a failure now (a full disk, a dropped connection) names the job, which
    is paid for, and the command that downloads it again."""
    from openreel.protocols.apiframe.schemas import SampleVideo
    from openreel.sdk import NetworkError, OpenreelError

    result = job.result
    assert result is not None
    for index, video in enumerate(result.videos or [SampleVideo.model_validate(result.model_dump())]):
        if video.videoUrl is None:
            say(f"video {index + 1} (seed {video.seed}) failed, refunded: {video.error}", style="yellow")
            continue
        target = sample_path(out, index)
        try:
            path = client.download(job, target, sample=index)
        except (OSError, NetworkError, OpenreelError, KeyboardInterrupt) as exc:
            fail(
                f"job {job.id} completed, but its video could not be saved to {target}: {_reason(exc)}; "
                f"get it later with: {origin.command('download', job.id)}"
            )
        say(
            f"wrote {path} ({path.stat().st_size} bytes): {video.width}x{video.height}, "
            f"{video.durationSeconds} s, {'with' if video.hasAudio else 'no'} audio, seed {video.seed}"
        )
    say(f"{job.creditCost} credits")
    if result.enhancedPrompt is not None:
        say(f"rendered the enhanced prompt: {result.enhancedPrompt}")
    if result.notice:
        say(result.notice, style="yellow")


def _as_url(client: Client, value: str | None) -> str | None:
    """URLs pass through; a local file is uploaded first and its upload URL used."""
    if value is None or value.startswith(("http://", "https://")):
        return value
    path = Path(value)
    if not path.is_file():
        fail(f"{value} is neither an http(s) URL nor a file")
    return str(client.upload(path).url)


def _generate_with(
    server: str, key: str | None, request: dict[str, Any], files: dict[str, Any], out: Path, origin: Origin
) -> None:
    from openreel.sdk import NetworkError, OpenreelError, WaitTimeout

    with _client(server, key) as client:
        request["image"] = _as_url(client, files["image"])
        request["last_frame"] = _as_url(client, files["last_frame"])
        refs = [_as_url(client, r) for r in files["reference_images"]]
        request["reference_images"] = [r for r in refs if r] or None
        try:
            job_id = client.generate(request.pop("prompt"), **request).jobId
        except KeyboardInterrupt:
            fail(f"interrupted before the server answered; did it take the job? {origin.command('list')}")
        say(f"job {job_id} accepted")
        try:
            job = _follow(client, job_id, timeout=24 * 3600)
        except (OpenreelError, NetworkError, WaitTimeout, KeyboardInterrupt) as exc:
            fail(
                f"{_reason(exc)}; job {job_id} is paid for and kept: follow it with: "
                f"{origin.command('wait', job_id)}"
            )
        _downloaded(client, job, out, origin)


def generate(
    prompt: Annotated[str, typer.Argument(help="What the video shows.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the MP4.")],
    model: Annotated[
        str, typer.Option(help="Model id (openreel models list, GET /v2/models).")
    ] = "veo-3.1-fast",
    duration: Annotated[
        int | None, typer.Option(help="Seconds: 4, 6 or 8 (veo-2: 5 to 8).", show_default="8; veo-2: 5")
    ] = None,
    aspect_ratio: Annotated[str | None, typer.Option(help="16:9 or 9:16.", show_default="16:9")] = None,
    resolution: Annotated[str | None, typer.Option(help="720p or 1080p.", show_default="720p")] = None,
    image: Annotated[
        str | None, typer.Option(metavar="FILE|URL", help="First frame: a file or an http(s) URL.")
    ] = None,
    last_frame: Annotated[
        str | None, typer.Option(metavar="FILE|URL", help="Last frame: a file or an http(s) URL.")
    ] = None,
    reference: Annotated[
        list[str] | None,
        typer.Option(metavar="FILE|URL", help="Reference image: a file or an http(s) URL; up to 3 times."),
    ] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="What to avoid.")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for a repeatable result.", show_default="random")
    ] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Generate a silent video.")] = False,
    samples: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_SAMPLES,
            help="Videos to render, seeded seed, seed + 1, ..., each charged; written as OUT, OUT-2, ...",
        ),
    ] = 1,
    enhance_prompt: Annotated[
        bool,
        typer.Option("--enhance-prompt", help="Let the model's Gemma rewrite the prompt in detail first."),
    ] = False,
    extend: Annotated[
        str | None,
        typer.Option(
            metavar="JOB_ID",
            help=f"Continue this finished job's 720p video by {EXTEND_SECONDS} s instead; the MP4 is "
            "both, joined.",
        ),
    ] = None,
    extend_video: Annotated[
        int, typer.Option(min=0, metavar="N", help="With --extend: which of the job's videos (0: the first).")
    ] = 0,
    server: Annotated[
        str | None,
        typer.Option(
            envvar=SERVER_ENV,
            show_envvar=True,
            metavar="URL",
            help=f"Base URL of a running server (key from {KEY_ENV}); without it the service runs here.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Generate a video (or several: --samples) and write it to a file.

    It shows the queue position and progress while it waits. With --server it uses that server;
    without, the server running on the local data directory, else the service run in this process on
    that directory and its engine (a local run pays itself the job's credits).
    """
    if extend_video and not extend:
        fail(
            "--extend-video picks one of the videos of the job given with --extend; give --extend JOB_ID too"
        )
    _writable(out)
    request: dict[str, Any] = {
        "prompt": prompt,
        "model": model,
        "duration": duration,
        "aspect_ratio": aspect_ratio,
        "resolution": resolution,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "generate_audio": False if no_audio else None,
        "enhance_prompt": True if enhance_prompt else None,
        "sample_count": samples if samples > 1 else None,
        "extend_job_id": extend,
        "extend_video": extend_video if extend and extend_video else None,
    }
    files = {"image": image, "last_frame": last_frame, "reference_images": reference or []}
    if server is not None:
        _generate_with(server, None, request, files, out, Origin(server))
        return

    from openreel.embedded import KEY_FILE, StartFailed, embedded_server, local_key
    from openreel.storage.owner import owner_url

    settings = settings_of(data_dir)
    spec = catalog_of(settings).get(model)
    price = 0
    if spec is not None:
        seconds = EXTEND_SECONDS if extend else duration or spec.default_duration
        try:
            price = spec.price(seconds, spec.audio and not no_audio, extend=bool(extend)) * samples
        except KeyError:  # a request the server will refuse: enough credits to hear why
            price = max(spec.prices.values()) * samples
    with opening_database(settings):
        key = local_key(settings, price)
    key_file = settings.data_dir / KEY_FILE
    owner = owner_url(settings.data_dir)
    if owner is not None:  # not a second service on its queue and files
        say(f"sending the job to the openreel server running on {settings.data_dir} ({owner})")
        _generate_with(owner, key, request, files, out, Origin(owner, key_file))
        return
    logging.basicConfig(level=logging.WARNING)
    say(f"starting openreel in this process (engine {settings.engine}, data in {settings.data_dir})")
    serve = (
        f"start the server with: openreel serve --data-dir {shlex.quote(str(settings.data_dir.resolve()))}"
    )
    try:
        with embedded_server(settings) as url:
            _generate_with(url, key, request, files, out, Origin(settings.local_url, key_file, serve))
    except StartFailed as exc:
        fail(sentence(exc))


@jobs_app.command("list")
def jobs_list(
    server: Server = DEFAULT_BASE_URL,
    status: Annotated[
        str | None,
        typer.Option(help="Only jobs in this status: QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only jobs of this model id.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
) -> None:
    """List your jobs, newest first."""
    with _client(server) as client:
        listed = []
        for job in client.iter_jobs(status=status, model=model):
            listed.append(job)
            if len(listed) == limit:
                break
    columns(
        ("job", "model", "status", "progress", "credits", "created"),
        [
            (j.id, j.model, j.status, f"{j.progress or 0}%", str(j.creditCost or 0), j.createdAt)
            for j in listed
        ],
    )


@jobs_app.command("show")
def jobs_show(job_id: JobId, server: Server = DEFAULT_BASE_URL) -> None:
    """Print a job as the API returns it (JSON, for reading or for jq)."""
    with _client(server) as client:
        job = client.get_job(job_id)
    print(job.model_dump_json(indent=2))


@jobs_app.command("wait")
def jobs_wait(
    job_id: JobId,
    server: Server = DEFAULT_BASE_URL,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the MP4 here.")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 3600,
) -> None:
    """Follow a job with a progress bar until it ends.

    The exit status is 1 unless it completed."""
    if out is not None:
        _writable(out)
    with _client(server) as client:
        job = _follow(client, job_id, timeout)
        if out is not None:
            _downloaded(client, job, out, Origin(server))
        else:
            assert job.result is not None
            say(f"job {job.id} completed: {job.result.videoUrl}")


@jobs_app.command("download")
def jobs_download(
    job_id: JobId,
    server: Server = DEFAULT_BASE_URL,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the MP4.")] = None,
) -> None:
    """Write a completed job's MP4 to a file.

    The file is JOB_ID.mp4 unless --out says where."""
    out = _writable(out or Path(f"{job_id}.mp4"))
    with _client(server) as client:
        job = client.get_job(job_id)
        if job.result is None:
            fail(f"job {job.id} has no video yet: it is {job.status}")
        _downloaded(client, job, out, Origin(server))


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobId, server: Server = DEFAULT_BASE_URL) -> None:
    """Cancel a queued or running job; its credits are refunded."""
    with _client(server) as client:
        charged = client.get_job(job_id).creditCost or 0  # a cancelled job's cost reads 0
        job = client.cancel(job_id)
    say(f"job {job.id} {job.status.lower()}; {charged} credits refunded")
