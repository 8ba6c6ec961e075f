"""Extending a clip over real HTTP (quick engine): the joined MP4, its price, and every refusal."""

from __future__ import annotations

import io
from typing import Any

import av
import httpx
import numpy as np
import pytest

from quick import FAIL, fail_seed
from support import LiveServer, assert_contract, balance, mp4_summary, price, wait_for

FIRST = {"prompt": "a lighthouse at dusk", "model": "veo-3.1-fast", "veoParams": {"duration": 4, "seed": 5}}


def _decoded(data: bytes) -> tuple[np.ndarray, np.ndarray, int]:
    """Each frame's mean grey level, and the first channel of the sound with its rate."""
    with av.open(io.BytesIO(data)) as container:
        levels = np.array([f.to_ndarray(format="gray").mean() for f in container.decode(video=0)])
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].codec_context.sample_rate
        sound = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    return levels, sound, rate


def _extend(client: httpx.Client, job_id: str, **params: Any) -> httpx.Response:
    body = {
        "prompt": "the light turns",
        "model": "veo-3.1-fast",
        "veoParams": {"extend_job_id": job_id, **params},
    }
    return client.post("/v2/videos/generate", json=body)


@pytest.fixture(scope="module")
def first(server: LiveServer) -> tuple[str, dict[str, Any]]:
    """A key and its finished 4 s clip."""
    key = server.new_key(credits=100)
    with server.client(key) as client:
        job = wait_for(client, client.post("/v2/videos/generate", json=FIRST).json()["jobId"])
    assert job["status"] == "COMPLETED"
    return key, job


def test_an_extension_is_the_clip_and_seven_seconds_more_joined_and_priced_per_second(
    server: LiveServer, first: tuple[str, dict[str, Any]]
) -> None:
    key, source = first
    before = balance(server, key)
    with server.client(key) as client:
        accepted = _extend(client, source["id"], seed=9)
        assert accepted.status_code == 202, accepted.text
        charged = balance(server, key)
        job = wait_for(client, accepted.json()["jobId"])
    assert_contract(job, "Job")
    per_second = price(server, "veo-3.1-fast", "extend-1s-audio")
    assert before - charged == 7 * per_second == job["creditCost"]
    result = job["result"]
    assert result["extendedFrom"] == {"jobId": source["id"], "video": 0, "secondsAdded": 7, "leadFrames": 57}
    assert (result["width"], result["height"], result["fps"]) == (1280, 720, 24)
    assert result["durationSeconds"] == 11 and result["hasAudio"]
    assert job["input"]["veoParams"] == {"extend_job_id": source["id"], "seed": 9}
    with server.client(key) as client:  # OpenAI's view of it: the whole clip's length
        sora = client.get(
            f"/v1/videos/video_{job['id'].replace('-', '')}", headers={"Authorization": f"Bearer {key}"}
        )
    assert sora.json()["seconds"] == "11"

    old = httpx.get(source["result"]["videoUrl"], timeout=30).content
    new = httpx.get(result["videoUrl"], timeout=30).content
    assert mp4_summary(new) == {"size": (1280, 720), "frames": 264, "fps": 24.0, "audio": True}
    old_levels, old_sound, rate = _decoded(old)
    new_levels, new_sound, new_rate = _decoded(new)
    assert new_rate == rate and len(new_sound) >= 11 * rate
    # The clip comes first, frame for frame (encoded once more); the quick engine's new frames are its own.
    assert np.abs(new_levels[:96] - old_levels).max() <= 3
    # The quick engine paints each clip dark to light: the extension's own first frame follows at 96.
    assert abs(new_levels[96] - old_levels[0]) <= 3 and new_levels[95] - new_levels[96] > 200
    # Its sound too, up to the half second over which the extension's is faded in.
    keep = int(3.4 * rate)
    assert np.corrcoef(new_sound[:keep], old_sound[:keep])[0, 1] > 0.99


def test_refused_extensions_say_why_and_cost_nothing(
    server: LiveServer, first: tuple[str, dict[str, Any]]
) -> None:
    key, source = first
    before = balance(server, key)
    stranger = server.new_key(credits=100)
    job_id = source["id"]
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        (key, {"duration": 8}, "veoParams.duration", "adds 7 s"),
        (key, {"resolution": "1080p"}, "veoParams.resolution", "720p"),
        (key, {"image": "https://example.com/a.png"}, "veoParams.image", "cannot be combined"),
        (key, {"aspect_ratio": "9:16"}, "veoParams.extend_job_id", "16:9"),
        (key, {"extend_video": 1}, "veoParams.extend_job_id", "has 1 video(s)"),
        (stranger, {}, "veoParams.extend_job_id", "not found"),
    ]
    for who, params, path, words in cases:
        with server.client(who) as client:
            response = _extend(client, job_id, **params)
        assert response.status_code == 400, (params, response.text)
        assert any(words in m for m in response.json()["details"][path]), response.json()
    with server.client(key) as client:
        lite = client.post(
            "/v2/videos/generate",
            json={"prompt": "p", "model": "veo-3.1-lite", "veoParams": {"extend_job_id": job_id}},
        )
        alone = client.post("/v2/videos/generate", json={**FIRST, "veoParams": {"extend_video": 0}})
    assert "does not extend" in lite.json()["details"]["veoParams.extend_job_id"][0]
    assert "needs veoParams.extend_job_id" in alone.json()["details"]["veoParams.extend_video"][0]
    assert balance(server, key) == before


def test_only_a_720p_clip_can_be_extended(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    body = {**FIRST, "veoParams": {"duration": 4, "resolution": "1080p"}}
    with server.client(key) as client:
        big = wait_for(client, client.post("/v2/videos/generate", json=body).json()["jobId"])
        refused = _extend(client, big["id"])
    assert refused.status_code == 400
    assert "only 720p videos" in refused.json()["details"]["veoParams.extend_job_id"][0]


def test_only_a_video_that_was_made_can_be_extended(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    failed = {**FIRST, "prompt": f"{FAIL} a storm"}
    halves = {
        **FIRST,
        "prompt": f"a storm {fail_seed(6)}",
        "veoParams": {"duration": 4, "seed": 5, "sample_count": 2},
    }
    with server.client(key) as client:
        broken = wait_for(client, client.post("/v2/videos/generate", json=failed).json()["jobId"])
        half = wait_for(client, client.post("/v2/videos/generate", json=halves).json()["jobId"])
        refused = {
            "failed job": _extend(client, broken["id"]),
            "failed sample": _extend(client, half["id"], extend_video=1),
        }
        made = _extend(client, half["id"], extend_video=0)
    assert broken["status"] == "FAILED" and half["status"] == "COMPLETED"
    messages = {what: r.json()["details"]["veoParams.extend_job_id"][0] for what, r in refused.items()}
    assert "is FAILED; only a completed job's video can be extended" in messages["failed job"]
    assert "video 1 of job" in messages["failed sample"] and "failed to render" in messages["failed sample"]
    assert made.status_code == 202
