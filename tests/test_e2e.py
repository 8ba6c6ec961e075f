"""End to end over real HTTP: submit, watch progress, download, decode the MP4."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from databases import DIALECTS
from support import LiveServer, QuietHandler, assert_contract, loopback, wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.xdist_group("live")]


@pytest.fixture(params=DIALECTS)
def server(request: pytest.FixtureRequest) -> LiveServer:
    """Every test of this module runs against the SQLite and the PostgreSQL server process."""
    return request.getfixturevalue(f"live_{request.param}_server")


EXAMPLES = Path(__file__).parent / "contract"


def decode(data: bytes) -> dict[str, object]:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        info: dict[str, object] = {
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "codec": video.codec_context.name,
            "frames": len(frames),
            "fps": float(video.average_rate),
            "first": frames[0],
            "audio": None,
        }
    with av.open(io.BytesIO(data)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(audio=0))
            info["audio"] = {"codec": stream.codec_context.name, "seconds": samples / stream.sample_rate}
    return info


def test_text_to_video_4s_720p_with_audio(server: LiveServer) -> None:
    key = server.new_key(credits=20)
    with server.client(key) as client:
        accepted = client.post(
            "/v2/videos/generate",
            json={
                "prompt": "a cat sitting on a windowsill watching rain fall outside",
                "model": "veo-3.1-fast",
                "veoParams": {"duration": 4, "generate_audio": True, "seed": 7},
            },
        )
        assert accepted.status_code == 202, accepted.text
        assert_contract(accepted.json(), "JobAccepted")
        assert accepted.json()["status"] == "QUEUED"
        assert client.get("/v2/me").json()["team"]["credits"] == 15

        job = wait_for(client, accepted.json()["jobId"])
        assert job["status"] == "COMPLETED", job
        assert_contract({k: v for k, v in job.items() if not k.startswith("_")}, "Job")
        assert job["progress"] == 100 and job["creditCost"] == 5
        assert any(0 < p < 100 for p in job["_progress_seen"]), job["_progress_seen"]
        assert job["_progress_seen"] == sorted(job["_progress_seen"])
        result = job["result"]
        assert result["videoUrl"].startswith(server.url + "/v2/files/")
        assert (result["width"], result["height"], result["fps"], result["seed"]) == (1280, 720, 24, 7)
        assert result["durationSeconds"] == 4.0 and result["hasAudio"] is True
        assert "random weights" in result["notice"]

    download = httpx.get(result["videoUrl"], timeout=30)
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    assert download.headers["accept-ranges"] == "bytes"
    clip = decode(download.content)
    assert (clip["width"], clip["height"], clip["frames"], clip["fps"]) == (1280, 720, 96, 24.0)
    assert clip["codec"] == "h264"
    assert clip["audio"]["codec"] == "aac"
    assert abs(clip["audio"]["seconds"] - 4.0) < 0.05

    partial = httpx.get(result["videoUrl"], headers={"Range": "bytes=100-1099"}, timeout=30)
    assert partial.status_code == 206
    assert partial.content == download.content[100:1100]
    assert partial.headers["content-range"] == f"bytes 100-1099/{len(download.content)}"

    tampered = result["videoUrl"].replace("sig=", "sig=0")
    assert httpx.get(tampered, timeout=30).status_code == 403


def test_the_tiny_engine_extends_a_clip_in_its_worker(live_sqlite_server: LiveServer) -> None:
    server = live_sqlite_server
    key = server.new_key(credits=30)
    body = {"prompt": "waves on a beach at night", "model": "veo-3.1-fast", "veoParams": {"duration": 4}}
    with server.client(key) as client:
        first = wait_for(client, client.post("/v2/videos/generate", json=body).json()["jobId"])
        more = {
            "prompt": "the tide comes in",
            "model": "veo-3.1-fast",
            "veoParams": {"extend_job_id": first["id"]},
        }
        longer = wait_for(client, client.post("/v2/videos/generate", json=more).json()["jobId"], timeout=300)
    assert longer["status"] == "COMPLETED", longer
    # Rendered from the clip's last 57 frames and their sound, both pinned at every stage.
    kinds = sorted((c["kind"], c["stage"], c["frames"]) for c in longer["result"]["recipe"]["conditions"])
    assert kinds == [("extend", 0, 57), ("extend", 1, 57), ("extend_audio", 0, 59), ("extend_audio", 1, 59)]
    old = decode(httpx.get(first["result"]["videoUrl"], timeout=30).content)
    new = decode(httpx.get(longer["result"]["videoUrl"], timeout=30).content)
    assert (new["width"], new["height"], new["frames"], new["fps"]) == (1280, 720, 264, 24.0)
    assert abs(new["audio"]["seconds"] - 11.0) < 0.05  # sound as long as the video
    # The clip comes first, encoded once more.
    assert np.abs(new["first"].astype(int) - old["first"].astype(int)).mean() < 3


def test_portrait_without_audio_and_same_seed_is_identical(server: LiveServer) -> None:
    """With the prompt enhanced too: the worker's Gemma writes the same rewrite for the same seed."""
    key = server.new_key(credits=20)
    params = {"duration": 4, "aspect_ratio": "9:16", "generate_audio": False, "seed": 11}
    body = {"prompt": "waves", "model": "veo-3.1-fast", "veoParams": {**params, "enhance_prompt": True}}
    with server.client(key) as client:
        ids = [client.post("/v2/videos/generate", json=body).json()["jobId"] for _ in range(2)]
        jobs = [wait_for(client, i) for i in ids]
    assert all(j["status"] == "COMPLETED" for j in jobs), jobs
    assert jobs[0]["creditCost"] == 3
    clips = [httpx.get(j["result"]["videoUrl"], timeout=30).content for j in jobs]
    decoded = decode(clips[0])
    assert (decoded["width"], decoded["height"], decoded["frames"]) == (720, 1280, 96)
    assert decoded["audio"] is None and jobs[0]["result"]["hasAudio"] is False
    assert np.array_equal(decode(clips[1])["first"], decoded["first"])
    rewrites = [j["result"]["enhancedPrompt"] for j in jobs]
    assert rewrites[0] and rewrites[0] != "waves" and rewrites[1] == rewrites[0]
    assert "gibberish" in jobs[0]["result"]["notice"]


@pytest.fixture
def image_host() -> Iterator[str]:
    """A loopback HTTP server with one PNG and one text file (the session server allows private URLs)."""
    png = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(png, format="PNG")
    files = {"/red.png": (png.getvalue(), "image/png"), "/note.txt": (b"hello, not an image", "image/png")}

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            if self.path not in files:
                self.send_error(404)
                return
            body, kind = files[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with loopback(Handler) as url:
        yield url


def test_image_to_video_from_upload_and_from_url(server: LiveServer, image_host: str) -> None:
    key = server.new_key(credits=50)
    png = io.BytesIO()
    Image.new("RGB", (300, 500), (20, 200, 40)).save(png, format="PNG")
    with server.client(key) as client:
        upload = client.post("/v2/uploads", files={"file": ("green.bin", png.getvalue(), "text/plain")})
        assert upload.status_code == 201, upload.text
        assert_contract(upload.json(), "Upload")
        assert upload.json()["contentType"] == "image/png" and upload.json()["kind"] == "image"
        both = client.post(
            "/v2/videos/generate",
            json={
                "prompt": "a green field",
                "model": "veo-3.1-fast",
                "veoParams": {
                    "duration": 4,
                    "image": upload.json()["url"],
                    "last_frame": image_host + "/red.png",
                    "generate_audio": False,
                },
            },
        )
        assert both.status_code == 202, both.text
        first_only = client.post(
            "/v2/videos/generate",
            json={
                "prompt": "a green field",
                "model": "veo-3.1-fast",
                "veoParams": {"duration": 4, "image": upload.json()["url"], "generate_audio": False},
            },
        )
        done = [wait_for(client, r.json()["jobId"]) for r in (both, first_only)]
    assert [j["status"] for j in done] == ["COMPLETED", "COMPLETED"], done
    for job in done:
        clip = decode(httpx.get(job["result"]["videoUrl"], timeout=30).content)
        assert (clip["width"], clip["height"], clip["frames"]) == (1280, 720, 96)


def test_non_image_and_unreachable_urls_are_refused_at_submit(server: LiveServer, image_host: str) -> None:
    """Remote images are fetched when the job is submitted: a bad one is a 400 naming its field."""
    key = server.new_key(credits=20)
    with server.client(key) as client:
        refusals = [
            client.post(
                "/v2/videos/generate",
                json={"prompt": "x", "model": "veo-3.1-fast", "veoParams": {"duration": 4, "image": url}},
            )
            for url in (image_host + "/note.txt", image_host + "/missing.png")
        ]
        balance = client.get("/v2/me").json()["team"]["credits"]
        listed = client.get("/v2/jobs").json()["jobs"]
    assert [r.status_code for r in refusals] == [400, 400]
    not_image = refusals[0].json()["details"]["veoParams.image"][0]
    assert "is a file of an unrecognised type, not an image (accepted: PNG, JPEG, WebP or GIF)" in not_image
    assert "404" in refusals[1].json()["details"]["veoParams.image"][0]
    assert balance == 20 and listed == []


@pytest.mark.parametrize(
    ("example", "runner"),
    [("veo-3.1-fast-curl.sh", ["bash", "-c"]), ("veo-3.1-fast-example.py", [sys.executable, "-c"])],
)
def test_apiframe_page_examples_work_with_only_base_url_and_key_changed(
    server: LiveServer, example: str, runner: list[str]
) -> None:
    """The curl and Python examples of Apiframe's Veo 3.1 Fast page, verbatim but for URL and key."""
    key = server.new_key(credits=10)
    code = (EXAMPLES / example).read_text()
    code = code.replace("https://api.apiframe.ai", server.url).replace("afk_your_api_key_here", key)
    out = subprocess.run([*runner, code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    printed = out.stdout.strip()
    accepted = json.loads(printed) if printed.startswith('{"') else ast.literal_eval(printed)
    assert_contract(accepted, "JobAccepted")
    with server.client(key) as client:
        job = wait_for(client, accepted["jobId"])
        assert client.get("/v2/me").json()["team"]["credits"] == 5
    assert job["status"] == "COMPLETED" and job["creditCost"] == 5
