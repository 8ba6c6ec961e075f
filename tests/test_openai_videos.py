"""The OpenAI-style videos API through the real ``openai`` SDK, against the live server."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from support import LiveServer, balance, mp4_summary, png, price


def client_for(server: LiveServer, key: str) -> OpenAI:
    # max_retries=0: a refused request must surface at once (the server also says x-should-retry).
    return OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0)


def wait_done(client: OpenAI, video_id: str, timeout: float = 150) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        video = client.videos.retrieve(video_id)
        if video.status not in ("queued", "in_progress"):
            return video
        assert time.monotonic() < deadline, f"{video_id} still {video.status}"
        time.sleep(0.3)


def test_create_retrieve_download_list_delete(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    client = client_for(server, key)
    frame = png(500, 300, (30, 60, 200))
    text = client.videos.create(
        prompt="a paper boat drifting down a rainy street", model="veo-3.1-fast", seconds="4", size="1280x720"
    )
    image = client.videos.create(
        prompt="the sky darkens",
        input_reference=("frame.png", frame, "image/png"),
        seconds="4",
        size="720x1280",
        extra_body={"generate_audio": "false", "seed": "5"},
    )
    assert text.object == "video" and text.status == "queued" and text.progress == 0
    assert (text.model, text.seconds, text.size, text.prompt) == (
        "veo-3.1-fast",
        "4",
        "1280x720",
        "a paper boat drifting down a rainy street",
    )
    assert text.id.startswith("video_") and len(text.id) == len("video_") + 32
    assert image.model == "veo-3.1-fast"  # the default model
    charged = price(server, "veo-3.1-fast", "4s-audio") + price(server, "veo-3.1-fast", "4s")
    assert balance(server, key) == 100 - charged

    done = {name: wait_done(client, v.id) for name, v in (("text", text), ("image", image))}
    for video in done.values():
        assert video.status == "completed" and video.progress == 100 and video.error is None
        assert video.completed_at >= video.created_at
    clip = mp4_summary(client.videos.download_content(text.id, variant="video").read())
    assert clip == {"size": (1280, 720), "frames": 96, "fps": 24.0, "audio": True}
    clip = mp4_summary(client.videos.download_content(image.id).read())
    assert clip == {"size": (720, 1280), "frames": 96, "fps": 24.0, "audio": False}
    # The multipart file reached the job as its first frame.
    job = httpx.get(
        f"{server.url}/v2/jobs/{image.id.removeprefix('video_')}", headers={"X-API-Key": key}
    ).json()
    assert job["input"]["inputReference"] == {"sha256": hashlib.sha256(frame).hexdigest()}
    assert job["input"]["veoParams"] == {"duration": 4, "generate_audio": False, "seed": 5}

    # Lists page with after/limit (the SDK's auto-pagination) in both orders.
    newest_first = [v.id for v in client.videos.list(limit=1)]
    assert newest_first == [image.id, text.id]
    page = client.videos.list(limit=1, order="asc")
    assert [v.id for v in page.data] == [text.id] and page.has_more is True
    assert [v.id for v in client.videos.list(after=text.id, order="asc")] == [image.id]

    deleted = client.videos.delete(text.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (text.id, "video.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(text.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(text.id)
    assert [v.id for v in client.videos.list()] == [image.id]
    assert balance(server, key) == 100 - charged  # deleting a finished video refunds nothing


def test_refusals_are_bad_requests_and_cost_nothing(server: LiveServer) -> None:
    key = server.new_key(credits=30)
    client = client_for(server, key)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"size": "1024x1792"}, "size", "not supported"),
        ({"seconds": "12"}, "seconds", "must be one of 4, 6, 8"),
        ({"model": "sora-2"}, "model", "Sora models are not served here"),
        ({"model": "veo-2", "seconds": "4"}, "seconds", "5, 6, 7, 8"),
        ({"input_reference": ("notes.txt", b"just some text", "text/plain")}, "input_reference", "PNG"),
        ({"extra_body": {"style": "anime"}}, "style", "Unknown parameter"),
        ({"extra_body": {"negative_prompt": "n" * 2001}}, "negative_prompt", "at most 2000 characters"),
    ]
    for args, param, fragment in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.videos.create(prompt="a red kite", **args)
        assert refused.value.param == param, (args, refused.value.body)
        assert fragment in refused.value.message, (args, refused.value.message)
        assert refused.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError) as long_prompt:
        client.videos.create(prompt="p" * 4001)
    assert long_prompt.value.param == "prompt" and "at most 4000 characters" in long_prompt.value.message
    with pytest.raises(openai.BadRequestError) as variant:
        client.videos.download_content("video_" + "0" * 32, variant="thumbnail")
    assert variant.value.param == "variant"
    # JSON bodies work too, and are held to the same rules.
    bad_json = httpx.post(
        server.url + "/v1/videos",
        headers={"Authorization": f"Bearer {key}"},
        json={"prompt": "x", "input_reference": {"image_url": "ftp://example.com/a.png"}},
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"]["param"] == "input_reference"
    poor = server.new_key(credits=2)
    with pytest.raises(openai.RateLimitError) as short:
        client_for(server, poor).videos.create(prompt="x", seconds="4")
    assert short.value.code == "insufficient_quota"
    assert balance(server, key) == 30 and balance(server, poor) == 2


def test_auth_isolation_and_delete_cancels_with_refund(server: LiveServer) -> None:
    key, other = server.new_key(credits=30), server.new_key(credits=30)
    with pytest.raises(openai.AuthenticationError) as bad_key:
        client_for(server, "afk_not-a-real-key").videos.list()
    assert bad_key.value.code == "invalid_api_key"
    missing = httpx.get(server.url + "/v1/videos")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "invalid_request_error"

    client, stranger = client_for(server, key), client_for(server, other)
    video = client.videos.create(prompt="a long slow pan", seconds="8", size="1280x720")
    assert balance(server, key) == 30 - price(server, "veo-3.1-fast", "8s-audio")
    for call in (stranger.videos.retrieve, stranger.videos.delete, stranger.videos.download_content):
        with pytest.raises(openai.NotFoundError):
            call(video.id)
    assert [v.id for v in stranger.videos.list()] == []
    # OpenAI has no cancel: deleting a video that is still queued or rendering cancels it, refunded.
    if client.videos.retrieve(video.id).status in ("queued", "in_progress"):
        with pytest.raises(openai.BadRequestError, match="not ready"):
            client.videos.download_content(video.id)
    assert client.videos.delete(video.id).deleted is True
    assert balance(server, key) == 30
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    job = httpx.get(f"{server.url}/v2/jobs/{video.id.removeprefix('video_')}", headers={"X-API-Key": key})
    assert job.status_code == 404
