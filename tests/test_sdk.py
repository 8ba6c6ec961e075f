"""The Python SDK against a live server: typed results, typed errors, waiting, downloading."""

from __future__ import annotations

import asyncio
import io
import math
import re
import time
from itertools import islice
from pathlib import Path

import av
import httpx
import pytest
from PIL import Image

import openreel
from openreel.protocols.apiframe.schemas import JobOut
from openreel.sdk import (
    AuthenticationError,
    Backoff,
    ConflictError,
    InsufficientCreditsError,
    JobCancelled,
    JobFailed,
    NotFoundError,
    OpenreelError,
    ValidationError,
    WaitTimeout,
)

from support import LiveServer, undecodable_png

QUICK = {"model": "veo-3.1-fast", "duration": 4, "generate_audio": False}
VIDEO = {"width": 1280, "height": 720, "durationSeconds": 4.0, "fps": 24, "hasAudio": False, "seed": 1}


def job_out(status: str, video_url: str | None = None) -> JobOut:
    """A job ``j`` as a server answers it, with a result where a video URL is given."""
    return JobOut.model_validate(
        {
            **dict.fromkeys(("progress", "error", "creditCost", "webhookStatus", "completedAt", "input")),
            "id": "j",
            "status": status,
            "model": "veo-3.1-fast",
            "createdAt": "2026-11-28T00:00:00Z",
            "expired": False,
            "result": {**VIDEO, "videoUrl": video_url} if video_url else None,
        }
    )


def test_backoff_grows_to_its_cap() -> None:
    assert list(islice(Backoff(start=1, factor=2, cap=5), 5)) == [1, 2, 4, 5, 5]


def test_generate_wait_download(server: LiveServer, tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (320, 180), (0, 90, 200)).save(png, format="PNG")
    seen: list[int] = []
    with openreel.Client(api_key=server.new_key(credits=30), base_url=server.url) as client:
        upload = client.upload(png.getvalue(), filename="blue.png")
        assert upload.kind == "image"
        accepted = client.generate("blue sky", image=upload.url, seed=3, **QUICK)
        job = client.wait_for(
            accepted.jobId, on_progress=lambda j: seen.append(j.progress or 0), backoff=Backoff(0.1, 1.5, 0.5)
        )
        assert job.status == "COMPLETED" and job.result is not None and job.result.seed == 3
        path = client.download(job, tmp_path / "out.mp4")
        url = re.sub(r"sig=[^&]+", "sig=" + "0" * 64, job.result.videoUrl)
        video = job.result.videos[0].model_copy(update={"videoUrl": url})
        forged_result = job.result.model_copy(update={"videoUrl": url, "videos": [video]})
        forged = job.model_copy(update={"result": forged_result})
        with pytest.raises(
            AuthenticationError, match="download failed: Invalid link: its signature does not"
        ):
            client.download(forged, tmp_path / "forged.mp4")
        assert not (tmp_path / "forged.mp4").exists()
        assert client.me().team.credits == 27
        longer = client.wait_for(client.generate("more sky", extend_job_id=job.id, seed=4).jobId)
        assert longer.result is not None and longer.result.extendedFrom is not None
        assert longer.result.extendedFrom.jobId == job.id and longer.result.durationSeconds == 11
        client.delete(longer.id)
        assert client.me().team.credits == 27 - 7  # 7 s at 1 credit a second, silent or not
        assert [j.id for j in client.iter_jobs()] == [job.id]
        assert client.models().models[0].id == "veo-3.1-fast"
        client.delete(job.id)
        with pytest.raises(NotFoundError):
            client.get_job(job.id)
    assert seen == sorted(seen) and seen[-1] == 100
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height, stream.frames) == (1280, 720, 96)
        assert not container.streams.audio
    assert not list(tmp_path.glob(".*.part"))


def test_typed_errors(server: LiveServer) -> None:
    with (
        openreel.Client(api_key="afk_wrong", base_url=server.url) as client,
        pytest.raises(AuthenticationError),
    ):
        client.me()
    with openreel.Client(api_key=server.new_key(credits=4), base_url=server.url) as client:
        with pytest.raises(ValidationError) as invalid:
            client.generate("x", duration=5)
        assert "veoParams.duration" in invalid.value.details
        with pytest.raises(InsufficientCreditsError) as short:
            client.generate("x", duration=4)
        assert (short.value.required, short.value.available) == (5, 4)
        client.generate("x", idempotency_key="once", **QUICK)
        with pytest.raises(ConflictError):
            client.generate("other", idempotency_key="once", **QUICK)
        with pytest.raises(NotFoundError):
            client.cancel("6f1c0d1e-0000-4000-8000-000000000000")


def test_wait_for_raises_for_failed_cancelled_and_slow_jobs(server: LiveServer) -> None:
    with openreel.Client(api_key=server.new_key(credits=100), base_url=server.url) as client:
        broken = client.upload(undecodable_png(), filename="b.png")
        bad = client.generate("x", image=broken.url, **QUICK)
        with pytest.raises(JobFailed) as failed:
            client.wait_for(bad.jobId, backoff=Backoff(0.1))
        assert "could not be decoded" in (failed.value.job.error or "")
        slow = client.generate("x", model="veo-3.1", duration=8, resolution="1080p")
        with pytest.raises(WaitTimeout):
            client.wait_for(slow.jobId, timeout=0.3, backoff=Backoff(0.1))
        client.cancel(slow.jobId)
        with pytest.raises(JobCancelled):
            client.wait_for(slow.jobId, backoff=Backoff(0.1))
        assert client.me().team.credits == 100


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("done", [True, False], ids=["done at the deadline", "never done"])
def test_wait_for_polls_once_more_at_the_deadline(asynchronous: bool, done: bool) -> None:
    """Polls at 0 and 0.1 s, then a 30 s pause that would cross the 1 s deadline: cut to end there, where
    the job done since is seen done rather than timed out; one never done times out at the deadline."""
    started = time.monotonic()
    polls: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        polls.append(time.monotonic() - started)
        job = job_out("COMPLETED", "https://x/j.mp4") if done and len(polls) == 3 else job_out("PROCESSING")
        return httpx.Response(200, json=job.model_dump(mode="json"))

    transport, backoff = httpx.MockTransport(answer), Backoff(0.1, 300, 30)

    async def wait_async() -> JobOut:
        async with openreel.AsyncClient(api_key="k", base_url="http://api", transport=transport) as client:
            return await client.wait_for("j", timeout=1.0, backoff=backoff)

    def wait() -> JobOut:
        if asynchronous:
            return asyncio.run(wait_async())
        with openreel.Client(api_key="k", base_url="http://api", transport=transport) as client:
            return client.wait_for("j", timeout=1.0, backoff=backoff)

    if done:
        assert wait().status == "COMPLETED"
    else:
        with pytest.raises(WaitTimeout):
            wait()
    assert len(polls) == 3 and polls[-1] >= 1.0 > polls[-2], polls
    assert time.monotonic() - started < 15  # not the whole 30 s pause


@pytest.mark.parametrize("timeout", [math.nan, -1.0])
def test_wait_for_refuses_a_timeout_that_never_or_already_passed(timeout: float) -> None:
    polls: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: polls.append(request) or httpx.Response(500))
    refusal = pytest.raises(ValueError, match="timeout must be a number of seconds, 0 or more")
    with openreel.Client(api_key="k", base_url="http://api", transport=transport) as client, refusal:
        client.wait_for("j", timeout=timeout)

    async def wait_async() -> None:
        async with openreel.AsyncClient(api_key="k", base_url="http://api", transport=transport) as client:
            await client.wait_for("j", timeout=timeout)

    with pytest.raises(ValueError, match="timeout must be a number of seconds, 0 or more"):
        asyncio.run(wait_async())
    assert polls == []


@pytest.mark.parametrize(
    "pauses", [(0, 1.5, 5), (-1, 1.5, 5), (1, 0.5, 5), (1, 1.5, 0.5), (math.nan, 1.5, 5), (1, 1.5, math.inf)]
)
def test_a_backoff_that_would_not_pause_or_never_stop_growing_is_refused(
    pauses: tuple[float, float, float],
) -> None:
    with pytest.raises(ValueError, match="a backoff starts above 0 s"):
        Backoff(*pauses)


def test_async_client(server: LiveServer, tmp_path: Path) -> None:
    async def scenario() -> tuple[str, int, list[str]]:
        async with openreel.AsyncClient(api_key=server.new_key(credits=10), base_url=server.url) as client:
            accepted = await client.generate("async", **QUICK)
            job = await client.wait_for(accepted.jobId, backoff=Backoff(0.1, 1.5, 0.5))
            await client.download(job, tmp_path / "async.mp4")
            ids = [j.id async for j in client.iter_jobs()]
            return job.status, (await client.me()).team.credits, ids

    status, credits, ids = asyncio.run(scenario())
    assert status == "COMPLETED" and credits == 7 and len(ids) == 1
    assert (tmp_path / "async.mp4").stat().st_size > 0


def test_key_and_base_url_from_the_environment(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENREEL_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENREEL_API_KEY"):
        openreel.Client()
    monkeypatch.setenv("OPENREEL_API_KEY", server.new_key(credits=1))
    monkeypatch.setenv("OPENREEL_BASE_URL", server.url)
    with openreel.Client() as client:
        assert client.me().team.credits == 1


def test_a_refused_download_says_why_in_whatever_field_the_store_used(tmp_path: Path) -> None:
    answers = iter(
        [
            httpx.Response(403, json={"message": "Request has expired"}),
            httpx.Response(403, json={"error": {"code": 403, "message": "Access denied"}}),
            httpx.Response(404, json={}),
        ]
    )
    transport = httpx.MockTransport(lambda request: next(answers))
    job = job_out("COMPLETED", "https://bucket.s3.example.com/results/j.mp4")
    with openreel.Client(api_key="k", base_url="http://api", transport=transport) as client:
        for says in (
            "download failed: Request has expired",
            "download failed: Access denied$",
            "download failed: Not Found",
        ):
            with pytest.raises(OpenreelError, match=says):
                client.download(job, tmp_path / "j.mp4")
    assert list(tmp_path.iterdir()) == []


def test_a_video_link_on_another_host_is_fetched_without_the_key(tmp_path: Path) -> None:
    """An object store's presigned URL: the link is its own credential, and the API key stays home; a
    redirect it answers with (to https, to a CDN) is followed, not saved as the video."""
    seen: list[tuple[str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("X-API-Key")))
        if request.url.host == "bucket.s3.example.com":
            return httpx.Response(
                301, headers={"Location": "https://cdn.example.com/j.mp4"}, content=b"<html>301 Moved</html>"
            )
        return httpx.Response(200, content=b"mp4 bytes")

    job = job_out("COMPLETED", "https://bucket.s3.example.com/results/j.mp4?X-Amz-Signature=s")
    transport = httpx.MockTransport(answer)
    with openreel.Client(api_key="afk_secret", base_url="http://api.example", transport=transport) as client:
        assert client.download(job, tmp_path / "sync.mp4").read_bytes() == b"mp4 bytes"

    async def download_async() -> Path:
        async with openreel.AsyncClient(
            api_key="afk_secret", base_url="http://api.example", transport=transport
        ) as client:
            return await client.download(job, tmp_path / "async.mp4")

    assert asyncio.run(download_async()).read_bytes() == b"mp4 bytes"
    assert seen == [("bucket.s3.example.com", None), ("cdn.example.com", None)] * 2
