"""Google's Veo surfaces through the real SDKs, against the live server.

google-genai 3.x reaches Veo only in its Vertex API-key form (run in process); 2.x speaks the Gemini
form and is installed beside the venv (``.venv/genai2``, by the Makefile), so it runs in a
subprocess that writes what it downloaded for this process to decode.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types

from openreel.engine.mux import probe_mp4

from support import LiveServer, balance, mp4_summary, png, price

pytestmark = pytest.mark.live

GENAI2 = Path(__file__).resolve().parents[1] / ".venv" / "genai2"
VERTEX_MODEL = "veo-3.1-fast-generate-001"
VERTEX_PREDICT = f"/v1beta1/publishers/google/models/{VERTEX_MODEL}:predictLongRunning"


def vertex(server: LiveServer, key: str) -> genai.Client:
    return genai.Client(enterprise=True, api_key=key, http_options=types.HttpOptions(base_url=server.url))


def job_input(server: LiveServer, key: str, hex_id: str) -> dict[str, Any]:
    job = httpx.get(f"{server.url}/v2/jobs/{hex_id}", headers={"X-API-Key": key}).json()
    return dict(job["input"])


def wait_done(client: genai.Client, op: Any, timeout: float = 150) -> Any:
    deadline = time.monotonic() + timeout
    while not op.done:
        assert time.monotonic() < deadline, f"operation {op.name} not done"
        time.sleep(0.3)
        op = client.operations.get(op)
    return op


def test_vertex_form_text_and_image_to_video(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    client = vertex(server, key)
    frame = png(300, 500, (20, 200, 40))
    text_op = client.models.generate_videos(
        model=VERTEX_MODEL,
        source=types.GenerateVideosSource(prompt="a lighthouse at dusk, waves crashing"),
        config=types.GenerateVideosConfig(
            duration_seconds=4, aspect_ratio="16:9", seed=11, enhance_prompt=False
        ),
    )
    image_op = client.models.generate_videos(
        model="veo-3.1-fast-generate-preview",
        source=types.GenerateVideosSource(
            prompt="the field sways in the wind", image=types.Image(image_bytes=frame, mime_type="image/png")
        ),
        config=types.GenerateVideosConfig(
            duration_seconds=4, aspect_ratio="9:16", generate_audio=False, person_generation="allow_all"
        ),
    )
    assert text_op.name.startswith(f"publishers/google/models/{VERTEX_MODEL}/operations/")
    assert text_op.done is False and image_op.done is False
    # Charged on acceptance, exactly the Apiframe price of the same variant.
    charged = price(server, "veo-3.1-fast", "4s-audio") + price(server, "veo-3.1-fast", "4s")
    assert balance(server, key) == 100 - charged

    clips, rewrites = {}, {}
    for name, op in (("text", text_op), ("image", image_op)):
        op = wait_done(client, op)
        rewrites[name] = op.metadata.get("enhancedPrompt")
        assert op.error is None, op.error
        assert op.metadata["state"] == "COMPLETED" and op.metadata["progressPercent"] == 100
        video = op.response.generated_videos[0].video
        assert video.mime_type == "video/mp4"
        assert video.uri.startswith(server.url + "/v2/files/")  # a signed link, fetched without a key
        download = httpx.get(video.uri, timeout=60)
        assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
        clips[name] = mp4_summary(download.content)
    assert clips["text"] == {"size": (1280, 720), "frames": 96, "fps": 24.0, "audio": True}
    assert clips["image"] == {"size": (720, 1280), "frames": 96, "fps": 24.0, "audio": False}
    # Google enhances prompts unless told not to (the quick engine's rewrite only marks the prompt).
    assert rewrites["text"] is None
    assert rewrites["image"].startswith("the field sways in the wind [enhanced with seed ")
    # The inline image reached the job (stored as an upload, fetched by the renderer).
    image_input = job_input(server, key, image_op.name.rsplit("/", 1)[1])
    assert image_input["inlineImagesSha256"]["image"] == hashlib.sha256(frame).hexdigest()
    assert image_input["via"] == "google-vertex" and image_input["model"] == "veo-3.1-fast"
    assert balance(server, key) == 100 - charged


def test_sample_count_gives_that_many_videos_each_seeded_and_charged(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    client = vertex(server, key)
    op = client.models.generate_videos(
        model=VERTEX_MODEL,
        source=types.GenerateVideosSource(prompt="a kite over the dunes"),
        config=types.GenerateVideosConfig(
            duration_seconds=4, number_of_videos=3, seed=11, enhance_prompt=False
        ),
    )
    unit = price(server, "veo-3.1-fast", "4s-audio")
    assert balance(server, key) == 100 - 3 * unit
    op = wait_done(client, op)
    assert [s["seed"] for s in op.metadata["samples"]] == [11, 12, 13]
    clips = [httpx.get(v.video.uri, timeout=60).content for v in op.response.generated_videos]
    assert len(clips) == 3 and len(set(clips)) == 3
    assert op.metadata["creditCost"] == 3 * unit

    # The Gemini form lists each as a file of the operation.
    headers = {"x-goog-api-key": key}
    gemini = httpx.post(
        f"{server.url}/v1beta/models/veo-3.1-fast-generate-preview:predictLongRunning",
        json={"instances": [{"prompt": "a kite"}], "parameters": {"durationSeconds": 4, "sampleCount": 2}},
        headers=headers,
    ).json()
    deadline = time.monotonic() + 60
    while not gemini.get("done"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
        gemini = httpx.get(f"{server.url}/v1beta/{gemini['name']}", headers=headers).json()
    files = [s["video"]["uri"] for s in gemini["response"]["generateVideoResponse"]["generatedSamples"]]
    op_id = gemini["name"].rsplit("/", 1)[1]
    assert [uri.split("/files/")[1] for uri in files] == [
        f"{op_id}:download?alt=media",
        f"{op_id}s1:download?alt=media",
    ]
    # Through the client, which keeps only the leading letters and digits of a file id.
    gemini_client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=server.url))
    videos = [gemini_client.files.download(file=types.Video(uri=uri)) for uri in files]
    assert videos == [httpx.get(s["videoUrl"]).content for s in gemini["metadata"]["samples"]]
    assert videos[0] != videos[1]
    earlier = httpx.get(f"{server.url}/v1beta/files/{op_id}-1:download?alt=media", headers=headers)
    assert earlier.status_code == 200 and earlier.content == videos[1]  # as links once read
    missing = httpx.get(f"{server.url}/v1beta/files/{op_id}s2:download?alt=media", headers=headers)
    assert missing.status_code == 404 and "no such sample" in missing.json()["error"]["message"]
    absurd = httpx.get(f"{server.url}/v1beta/files/{op_id}s{'9' * 5000}:download?alt=media", headers=headers)
    assert absurd.status_code == 404, absurd.text  # no int() past Python's digit limit: a 500
    stranger = {"x-goog-api-key": server.new_key(credits=1)}
    theirs = httpx.get(f"{server.url}/v1beta/files/{op_id}s1:download?alt=media", headers=stranger)
    assert theirs.status_code == 404 and "not found" in theirs.json()["error"]["message"].lower()


def test_google_rules_are_client_errors_and_cost_nothing(server: LiveServer) -> None:
    key = server.new_key(credits=50)
    client = vertex(server, key)
    frame = types.Image(image_bytes=png(64, 64, (200, 0, 0)), mime_type="image/png")
    with pytest.raises(errors.ClientError) as last_only:
        client.models.generate_videos(
            model=VERTEX_MODEL,
            prompt="a red ball",
            config=types.GenerateVideosConfig(duration_seconds=4, last_frame=frame),
        )
    assert last_only.value.code == 400 and last_only.value.status == "INVALID_ARGUMENT"
    assert "instances[0].lastFrame: requires instances[0].image" in last_only.value.message
    with pytest.raises(errors.ClientError) as short_1080p:
        client.models.generate_videos(
            model=VERTEX_MODEL,
            prompt="a red ball",
            config=types.GenerateVideosConfig(duration_seconds=4, resolution="1080p"),
        )
    assert short_1080p.value.code == 400
    assert "1080p requires durationSeconds 8" in short_1080p.value.message

    b64 = base64.b64encode(png(32, 32, (1, 2, 3))).decode()
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({}, {"sampleCount": 5}, "parameters.sampleCount: must be between 1 and 4"),
        ({}, {"personGeneration": "allow_adult"}, "parameters.personGeneration"),
        ({}, {"storageUri": "gs://bucket/out/"}, "parameters.storageUri"),
        ({}, {"fps": 30}, "parameters.fps: only 24 fps"),
        ({}, {"resolution": "4k", "durationSeconds": 8}, "4k is not available"),
        ({}, {"durationSeconds": 5}, "parameters.durationSeconds: must be one of 4, 6, 8"),
        ({}, {"aspectRatio": "1:1"}, "parameters.aspectRatio"),
        ({}, {"aspectRatio": ""}, "parameters.aspectRatio"),
        ({}, {"fooBar": 1}, 'Unknown name "fooBar"'),
        ({"image": {"gcsUri": "gs://bucket/a.png"}}, {}, "instances[0].image.gcsUri"),
        ({"image": {"bytesBase64Encoded": "not base64!"}}, {}, "is not valid base64"),
        (
            {"image": {"bytesBase64Encoded": base64.b64encode(b"plain text").decode()}},
            {},
            "is a file of an unrecognised type, not an image (accepted: PNG",
        ),
        ({"video": {"uri": "gs://x.mp4"}}, {}, "instances[0].video"),
        ({"video": {"gcsUri": "https://[x/v.mp4"}}, {}, "is not a video of this server"),
        (
            {"referenceImages": [{"image": {"bytesBase64Encoded": b64}, "referenceType": "asset"}]},
            {"durationSeconds": 8},
            "IC-LoRA",
        ),
        ({"prompt": " "}, {}, "instances[0].prompt: must not be blank"),
        # The limits every protocol shares are the domain's, said on Google's paths.
        ({"prompt": "p" * 4001}, {}, "instances[0].prompt: must be at most 4000 characters"),
        ({}, {"negativePrompt": "n" * 2001}, "parameters.negativePrompt: must be at most 2000 characters"),
        (
            {"referenceImages": [{"image": {"bytesBase64Encoded": b64}, "referenceType": "asset"}] * 4},
            {"durationSeconds": 8},
            "instances[0].referenceImages: at most 3 reference images",
        ),
    ]
    with httpx.Client(base_url=server.url, headers={"x-goog-api-key": key}, timeout=30) as http:
        for instance, parameters, fragment in cases:
            body = {"instances": [{"prompt": "a red ball", **instance}], "parameters": {"durationSeconds": 4}}
            body["parameters"].update(parameters)
            reply = http.post(VERTEX_PREDICT, json=body)
            assert reply.status_code == 400, (instance, parameters, reply.text)
            error = reply.json()["error"]
            assert error["status"] == "INVALID_ARGUMENT" and fragment in error["message"], (fragment, error)
            assert error["details"][0]["fieldViolations"], error
        webhook = http.post(
            VERTEX_PREDICT, json={"instances": [{"prompt": "x"}], "webhookConfig": {"uris": []}}
        )
        assert "webhookConfig" in webhook.json()["error"]["message"]
        unknown = http.post(
            "/v1beta1/publishers/google/models/veo-9-generate-001:predictLongRunning",
            json={"instances": [{"prompt": "x"}]},
        )
        assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"
        poor = server.new_key(credits=2)
        short = http.post(
            VERTEX_PREDICT,
            headers={"x-goog-api-key": poor},
            json={"instances": [{"prompt": "x"}], "parameters": {"durationSeconds": 4}},
        )
        assert short.status_code == 429 and short.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert "Insufficient credits: this video costs 5 credits" in short.json()["error"]["message"]
    assert balance(server, key) == 50 and balance(server, poor) == 2


def test_auth_isolation_and_cancel(server: LiveServer) -> None:
    key, other = server.new_key(credits=30), server.new_key(credits=30)
    impostor, stranger = vertex(server, "afk_not-a-real-key"), vertex(server, other)
    with pytest.raises(errors.ClientError) as bad_key:
        impostor.models.generate_videos(model=VERTEX_MODEL, prompt="x")
    assert bad_key.value.code == 401 and bad_key.value.status == "UNAUTHENTICATED"
    missing = httpx.post(server.url + VERTEX_PREDICT, json={"instances": [{"prompt": "x"}]})
    assert missing.status_code == 401 and missing.json()["error"]["status"] == "UNAUTHENTICATED"

    client = vertex(server, key)
    op = client.models.generate_videos(
        model=VERTEX_MODEL, prompt="a slow sunrise", config=types.GenerateVideosConfig(duration_seconds=8)
    )
    assert balance(server, key) == 30 - price(server, "veo-3.1-fast", "8s-audio")
    # Another account cannot see it, through either form, nor cancel it.
    with pytest.raises(errors.ClientError) as foreign:
        stranger.operations.get(types.GenerateVideosOperation(name=op.name))
    assert foreign.value.code == 404 and foreign.value.status == "NOT_FOUND"
    op_id = op.name.rsplit("/", 1)[1]
    gemini_path = f"/v1beta/models/{VERTEX_MODEL}/operations/{op_id}"
    assert httpx.get(server.url + gemini_path, params={"key": other}).status_code == 404
    assert httpx.post(server.url + gemini_path + ":cancel", params={"key": other}).status_code == 404
    # The owner cancels it (Google's LRO cancel): refunded, and the operation ends with an error.
    cancelled = httpx.post(server.url + gemini_path + ":cancel", headers={"x-goog-api-key": key})
    assert (cancelled.status_code, cancelled.json()) == (200, {})
    op = client.operations.get(op)
    assert op.done is True and op.error["code"] == 1 and op.response is None
    assert balance(server, key) == 30
    again = httpx.post(server.url + gemini_path + ":cancel", params={"key": key})
    assert again.status_code == 400 and again.json()["error"]["status"] == "FAILED_PRECONDITION"
    # ?key= works like the header; a file of a cancelled operation does not exist.
    assert httpx.get(server.url + gemini_path, params={"key": key}).json()["done"] is True
    short_v1 = httpx.get(f"{server.url}/v1/operations/{op_id}", headers={"x-goog-api-key": key}).json()
    assert short_v1["name"] == f"operations/{op_id}" and short_v1["error"]["code"] == 1
    download = httpx.get(f"{server.url}/v1beta/files/{op_id}:download", params={"alt": "media", "key": key})
    assert download.status_code == 404 and download.json()["error"]["status"] == "NOT_FOUND"


GEMINI_SCRIPT = r"""
import json, sys, time
from google import genai
from google.genai import errors, types

url, key, out = sys.argv[1:4]
client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=url))
op = client.models.generate_videos(
    model="veo-3.1-fast-generate-preview",
    prompt="waves on a beach at night",
    config=types.GenerateVideosConfig(duration_seconds=4, aspect_ratio="16:9", number_of_videos=1),
)
name = op.name
deadline = time.monotonic() + 150
while not op.done:
    assert time.monotonic() < deadline, "not done"
    time.sleep(0.3)
    op = client.operations.get(op)
video = op.response.generated_videos[0].video
data = client.files.download(file=video)
with open(out, "wb") as f:
    f.write(data)
op = client.models.generate_videos(
    model="veo-3.1-fast-generate-preview", prompt="the tide comes in", video=video
)
while not op.done:
    assert time.monotonic() < deadline + 150, "extension not done"
    time.sleep(0.3)
    op = client.operations.get(op)
with open(out + ".extended.mp4", "wb") as f:
    f.write(client.files.download(file=op.response.generated_videos[0].video))
try:
    client.models.generate_videos(
        model="veo-3.1-fast-generate-preview",
        prompt="x",
        config=types.GenerateVideosConfig(duration_seconds=6, resolution="1080p"),
    )
    error = None
except errors.ClientError as exc:
    error = {"code": exc.code, "status": exc.status, "message": exc.message}
print(json.dumps({"version": genai.__version__, "name": name, "uri": video.uri, "error": error}))
"""


def test_gemini_form_with_genai_2(server: LiveServer, tmp_path: Path) -> None:
    assert (GENAI2 / "google" / "genai").is_dir(), f"google-genai 2.x is missing at {GENAI2}: run make test"
    key = server.new_key(credits=20)
    out = tmp_path / "clip.mp4"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GENAI2), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", GEMINI_SCRIPT, server.url, key, str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["version"].startswith("2."), report
    assert report["name"].startswith("models/veo-3.1-fast-generate-preview/operations/")
    op_id = report["name"].rsplit("/", 1)[1]
    assert report["uri"] == f"https://127.0.0.1:{server.port}/v1beta/files/{op_id}:download?alt=media"
    assert report["error"]["code"] == 400 and "1080p requires durationSeconds 8" in report["error"]["message"]
    # The Gemini API always makes audio: the default here too, charged as such.
    assert mp4_summary(out.read_bytes()) == {"size": (1280, 720), "frames": 96, "fps": 24.0, "audio": True}
    # Extended with the video object the first operation gave: 7 s more, the same size, sound throughout.
    extended = probe_mp4(Path(f"{out}.extended.mp4"))
    assert (extended.width, extended.height, extended.fps, extended.frame_count) == (1280, 720, 24, 264)
    assert extended.audio_duration_s == pytest.approx(11, abs=0.01)
    charged = price(server, "veo-3.1-fast", "4s-audio") + 7 * price(server, "veo-3.1-fast", "extend-1s-audio")
    assert balance(server, key) == 20 - charged
    assert job_input(server, key, op_id)["via"] == "google-gemini"


def test_vertex_extends_an_earlier_video_of_the_account_only(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    client = vertex(server, key)
    first = wait_done(
        client,
        client.models.generate_videos(
            model=VERTEX_MODEL,
            source=types.GenerateVideosSource(prompt="a kite over the dunes"),
            config=types.GenerateVideosConfig(duration_seconds=4, aspect_ratio="9:16", enhance_prompt=False),
        ),
    )
    video = first.response.generated_videos[0].video
    extended = wait_done(
        client,
        client.models.generate_videos(
            model=VERTEX_MODEL,
            source=types.GenerateVideosSource(prompt="the kite climbs", video=video),
            config=types.GenerateVideosConfig(enhance_prompt=False),
        ),
    )
    assert extended.error is None, extended.error
    clip = httpx.get(extended.response.generated_videos[0].video.uri, timeout=60).content
    assert mp4_summary(clip) == {"size": (720, 1280), "frames": 264, "fps": 24.0, "audio": True}
    op_id = first.name.rsplit("/", 1)[1]
    assert extended.metadata["extendedFrom"]["jobId"].replace("-", "") == op_id
    # The job's input says what it extends (and so does the hash an Idempotency-Key replay is checked by).
    echoed = job_input(server, key, extended.name.rsplit("/", 1)[1])["veoParams"]
    assert (echoed["extend_job_id"].replace("-", ""), echoed["extend_video"]) == (op_id, 0)

    refusals = [
        (vertex(server, server.new_key(credits=100)), types.GenerateVideosConfig(), "not found"),
        (client, types.GenerateVideosConfig(duration_seconds=6), "must be 8 (or absent) with video"),
        (client, types.GenerateVideosConfig(resolution="1080p"), "720p"),
    ]
    for who, config, words in refusals:
        with pytest.raises(errors.ClientError) as caught:
            who.models.generate_videos(
                model=VERTEX_MODEL,
                source=types.GenerateVideosSource(prompt="more", video=video),
                config=config,
            )
        assert caught.value.code == 400 and words in caught.value.message, caught.value.message
    inline = types.Video(video_bytes=clip, mime_type="video/mp4")
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_videos(
            model=VERTEX_MODEL, source=types.GenerateVideosSource(prompt="more", video=inline)
        )
    assert "only videos this server generated can be extended" in caught.value.message
