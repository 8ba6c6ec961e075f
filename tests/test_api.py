"""The Apiframe v2 surface over real HTTP: auth, validation, credits, idempotency, jobs, uploads."""

from __future__ import annotations

import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from databases import DIALECTS, throwaway_database
from quick import FAIL, QuickEngine, fail_seed
from support import (
    LONG,
    SERVER_ENV,
    LiveServer,
    assert_contract,
    balance,
    cli,
    mid_render,
    mp4_summary,
    png,
    price,
    quick_server,
    running_server,
    wait_for,
    worker_processes,
)


@pytest.fixture(params=DIALECTS)
def server(request: pytest.FixtureRequest) -> LiveServer:
    """Every test of this module runs against the SQLite and the PostgreSQL server."""
    return request.getfixturevalue(f"{request.param}_server")


FAST_4S = {"prompt": "a lighthouse at dusk", "model": "veo-3.1-fast", "veoParams": {"duration": 4}}
# The slowest preset at the largest size: long enough on the tiny engine to be caught mid-run.
SLOW = {"prompt": "slow", "model": "veo-3.1", "veoParams": {"duration": 8, "resolution": "1080p"}}


def test_auth_errors(server: LiveServer) -> None:
    with server.client(None) as anonymous:
        missing = anonymous.get("/v2/me")
        invalid = anonymous.get("/v2/me", headers={"X-API-Key": "afk_not-a-real-key"})
    assert (missing.status_code, missing.json()) == (401, {"error": "API key is required"})
    assert (invalid.status_code, invalid.json()) == (401, {"error": "Invalid API key"})
    with server.client(None) as anonymous:
        bearer = anonymous.get("/v2/me", headers={"Authorization": "Bearer afk_x"})
    assert bearer.status_code == 401 and "send it in the X-API-Key header" in bearer.json()["error"]
    assert_contract(missing.json(), "ErrorResponse")


def test_me_and_models(server: LiveServer) -> None:
    key = server.new_key(credits=42)
    with server.client(key) as client:
        me = client.get("/v2/me").json()
        catalog = httpx.get(server.url + "/v2/models").json()
    assert_contract(me, "Me")
    assert me["team"]["credits"] == 42 and me["apiKey"]["prefix"] == key[:8]
    assert_contract(catalog, "ModelCatalog")
    ids = [m["id"] for m in catalog["models"]]
    assert ids == ["veo-3.1-fast", "veo-3.1", "veo-3.1-lite", "veo-3", "veo-3-fast", "veo-2"]
    fast = catalog["models"][0]
    assert fast["prices"] == {
        **{"4s": 3, "4s-audio": 5, "6s": 4, "6s-audio": 6, "8s": 5, "8s-audio": 8},
        **{"extend-1s": 1, "extend-1s-audio": 1},  # per second added to a clip
    }
    assert (fast["costMin"], fast["costMax"]) == (3, 8)  # a whole clip's
    assert fast["maxSampleCount"] == 4 and fast["promptEnhancementUnavailable"] is None
    lite = catalog["models"][2]
    extending = [m["id"] for m in catalog["models"] if m["extends"]]
    assert extending == ["veo-3.1-fast", "veo-3.1", "veo-3", "veo-3-fast"]
    assert (fast["extendSeconds"], fast["maxExtendSourceSeconds"]) == (7, 141)
    assert (fast["acceptsGenerateAudio"], lite["acceptsGenerateAudio"]) == (True, False)
    assert not any(m["acceptsReferenceImages"] for m in catalog["models"])
    assert fast["engine"]["randomWeights"] is True and fast["engine"]["ready"] is True
    assert "random weights" in fast["engine"]["notice"]
    assert httpx.get(server.url + "/v2/models?modality=image").json() == {"models": []}
    assert httpx.get(server.url + "/v2/models?modality=sound").status_code == 400
    front = httpx.get(server.url + "/")  # a browser opening the server lands on the Studio
    assert (front.status_code, front.headers["location"]) == (307, "/studio")
    page = httpx.get(server.url + "/studio").headers  # it holds a key: its own scripts only, never framed
    assert "script-src" not in page["content-security-policy"]  # default-src 'self' covers scripts
    assert "default-src 'self'" in page["content-security-policy"]
    assert "frame-ancestors 'none'" in page["content-security-policy"]
    assert (page["referrer-policy"], page["x-frame-options"]) == ("no-referrer", "DENY")


def test_an_enhanced_prompt_is_rendered_and_shown(server: LiveServer) -> None:
    key = server.new_key(credits=20)
    body = {**FAST_4S, "veoParams": {"duration": 4, "seed": 5, "enhance_prompt": True}}
    with server.client(key) as client:
        job = wait_for(client, client.post("/v2/videos/generate", json=body).json()["jobId"])
        plain = wait_for(client, client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"])
    assert_contract(job, "Job")
    # The quick engine's rewrite only marks the prompt: the real one is the engine tests'.
    assert job["result"]["enhancedPrompt"] == "a lighthouse at dusk [enhanced with seed 5]"
    assert job["input"]["veoParams"]["enhance_prompt"] is True
    assert "gibberish" in job["result"]["notice"]
    assert plain["result"]["enhancedPrompt"] is None and "gibberish" not in plain["result"]["notice"]


def test_samples_are_rendered_each_with_its_seed_and_a_failed_one_refunded(server: LiveServer) -> None:
    key = server.new_key(credits=50)
    unit = price(server, "veo-3.1-fast", "4s-audio")
    prompt = f"a lighthouse at dusk {fail_seed(6)}"
    body = {
        "prompt": prompt,
        "model": "veo-3.1-fast",
        "veoParams": {"duration": 4, "seed": 5, "sample_count": 3},
    }
    with server.client(key) as client:
        accepted = client.post("/v2/videos/generate", json=body).json()
        charged = balance(server, key)
        job = wait_for(client, accepted["jobId"])
    assert charged == 50 - 3 * unit  # each sample charged on acceptance
    assert_contract(job, "Job")
    assert job["status"] == "COMPLETED" and job["creditCost"] == 2 * unit
    assert balance(server, key) == 50 - 2 * unit  # the failed one refunded
    videos = job["result"]["videos"]
    assert [v["seed"] for v in videos] == [5, 6, 7]
    assert "failed on request" in videos[1]["error"] and videos[1]["videoUrl"] is None
    assert job["result"]["videoUrl"] == videos[0]["videoUrl"] and job["result"]["seed"] == 5
    clips = [httpx.get(videos[i]["videoUrl"], timeout=30).content for i in (0, 2)]
    assert clips[0] != clips[1]  # the quick engine's tone follows the seed
    assert all(mp4_summary(clip)["frames"] == 96 for clip in clips)
    with server.client(key) as client:
        assert client.delete(f"/v2/jobs/{job['id']}").status_code == 200
    assert all(httpx.get(videos[i]["videoUrl"], timeout=30).status_code == 404 for i in (0, 2))


def test_workers_that_cannot_enhance_refuse_it_and_google_defaults_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(QuickEngine, "enhance_error", "no instructions on this worker")
    vertex = "/v1beta1/publishers/google/models/veo-3.1-fast-generate-001:predictLongRunning"
    with quick_server(tmp_path, SERVER_ENV) as server:
        key = server.new_key(credits=20)
        with server.client(key) as client:
            body = {**FAST_4S, "veoParams": {"duration": 4, "enhance_prompt": True}}
            refused = client.post("/v2/videos/generate", json=body)
            fast = client.get("/v2/models").json()["models"][0]
            google = client.post(
                vertex,
                json={"instances": [{"prompt": "a red ball"}], "parameters": {"durationSeconds": 4}},
                headers={"x-goog-api-key": key},
            )
            job = wait_for(client, google.json()["name"].rsplit("/", 1)[1])
            asked = client.post(
                vertex,
                json={"instances": [{"prompt": "x"}], "parameters": {"enhancePrompt": True}},
                headers={"x-goog-api-key": key},
            )
        left = balance(server, key)
    assert refused.status_code == 503
    assert refused.json()["error"] == "prompt enhancement cannot be served: no instructions on this worker"
    assert fast["promptEnhancementUnavailable"] == (
        "Prompt enhancement is off on this server: no instructions on this worker"
    )
    assert job["status"] == "COMPLETED" and job["result"]["enhancedPrompt"] is None
    assert (asked.status_code, asked.json()["error"]["status"]) == (503, "UNAVAILABLE")
    assert left == 20 - job["creditCost"]


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        ({**FAST_4S, "colour": "red"}, "colour", "Unrecognized key"),
        ({**FAST_4S, "veoParams": {"duration": 5}}, "veoParams.duration", "4, 6, 8"),
        ({**FAST_4S, "veoParams": {"duration": "4"}}, "veoParams.duration", "integer"),
        ({**FAST_4S, "veoParams": {"duration": 4.5}}, "veoParams.duration", "integer"),
        ({**FAST_4S, "veoParams": {"seed": True}}, "veoParams.seed", "integer"),
        ({**FAST_4S, "veoParams": {"fps": 30}}, "veoParams.fps", "Unrecognized key"),
        (
            {**FAST_4S, "veoParams": {"aspectRatio": "9:16"}},
            "veoParams.aspectRatio",
            "did you mean 'aspect_ratio'?",
        ),
        ({**FAST_4S, "promt": "x"}, "promt", "did you mean 'prompt'?"),
        ({**FAST_4S, "duration": 4}, "duration", "did you mean 'veoParams.duration'?"),
        ({**FAST_4S, "veoParams": {"aspect_ratio": "1:1"}}, "veoParams.aspect_ratio", "16:9, 9:16"),
        ({**FAST_4S, "veoParams": {"aspect_ratio": "wide"}}, "veoParams.aspect_ratio", "pattern"),
        ({**FAST_4S, "veoParams": {"resolution": "4k"}}, "veoParams.resolution", "720p"),
        ({**FAST_4S, "veoParams": {"seed": -1}}, "veoParams.seed", "between 0"),
        ({**FAST_4S, "veoParams": {"negative_prompt": "x" * 2001}}, "veoParams.negative_prompt", "2000"),
        ({**FAST_4S, "veoParams": {"image": "ftp://example.com/a.png"}}, "veoParams.image", "http(s)"),
        (
            {**FAST_4S, "veoParams": {"reference_images": ["https://e.com/1.png"] * 4}},
            "veoParams.reference_images",
            "at most 3",
        ),
        (
            {**FAST_4S, "veoParams": {"reference_images": ["https://e.com/1.png"]}},
            "veoParams.reference_images",
            "IC-LoRA",
        ),
        (
            {**FAST_4S, "model": "veo-3.1-lite", "veoParams": {"generate_audio": False}},
            "veoParams.generate_audio",
            "not accepted",
        ),
        (
            {**FAST_4S, "model": "veo-2", "veoParams": {"generate_audio": True}},
            "veoParams.generate_audio",
            "silent",
        ),
        ({**FAST_4S, "model": "sora-2"}, "model", "Unknown model"),
        ({**FAST_4S, "prompt": ""}, "prompt", "at least 1"),
        ({**FAST_4S, "prompt": "   "}, "prompt", "blank"),
        ({**FAST_4S, "prompt": "p" * 4001}, "prompt", "at most 4000"),
        ({"model": "veo-3.1-fast"}, "prompt", "Required"),
        ({**FAST_4S, "webhookUrl": "not-a-url"}, "webhookUrl", "http(s)"),
        ({**FAST_4S, "webhookEvents": []}, "webhookEvents", "at least 1"),
        ({**FAST_4S, "webhookEvents": ["completed"] * 80_000}, "webhookEvents", "more than once"),
    ],
)
def test_validation_is_a_400_keyed_by_json_path_and_costs_nothing(
    server: LiveServer, body: dict[str, object], path: str, fragment: str
) -> None:
    key = server.new_key(credits=10)
    with server.client(key) as client:
        response = client.post("/v2/videos/generate", json=body)
        assert response.status_code == 400, response.text
        assert_contract(response.json(), "ValidationError")
        messages = response.json()["details"][path]
        assert any(fragment in m for m in messages), messages
        assert client.get("/v2/me").json()["team"]["credits"] == 10
        assert client.get("/v2/jobs").json()["jobs"] == []


def test_malformed_json_is_a_400(server: LiveServer) -> None:
    key = server.new_key(credits=10)
    with server.client(key) as client:
        response = client.post(
            "/v2/videos/generate", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["details"]["body"][0].startswith("Malformed JSON at character 1: ")


def test_insufficient_credits_is_a_402_with_amounts(server: LiveServer) -> None:
    key = server.new_key(credits=4)
    with server.client(key) as client:
        response = client.post("/v2/videos/generate", json=FAST_4S)
        assert response.status_code == 402
        assert_contract(response.json(), "InsufficientCredits")
        assert response.json() == {
            "error": "Insufficient credits",
            "creditsRequired": 5,
            "creditsAvailable": 4,
        }
        silent = {**FAST_4S, "veoParams": {"duration": 4, "generate_audio": False}}
        assert client.post("/v2/videos/generate", json=silent).status_code == 202
        assert client.get("/v2/me").json()["team"]["credits"] == 1


def test_idempotency_key_replays_and_conflicts(server: LiveServer) -> None:
    key = server.new_key(credits=20)
    with server.client(key) as client:
        headers = {"Idempotency-Key": "order-17"}
        first = client.post("/v2/videos/generate", json=FAST_4S, headers=headers)
        again = client.post("/v2/videos/generate", json=FAST_4S, headers=headers)
        other = client.post("/v2/videos/generate", json={**FAST_4S, "prompt": "another"}, headers=headers)
        too_long = client.post("/v2/videos/generate", json=FAST_4S, headers={"Idempotency-Key": "k" * 256})
        assert first.status_code == 202 and again.status_code == 202
        assert again.json()["jobId"] == first.json()["jobId"]
        assert again.headers["idempotent-replayed"] == "true"
        assert other.status_code == 409
        assert too_long.status_code == 400
        assert client.get("/v2/me").json()["team"]["credits"] == 15
        # Nothing here needs the clip: cancelled rather than rendered, the server is free for the next test.
        client.post(f"/v2/jobs/{first.json()['jobId']}/cancel")


def test_jobs_are_private_to_their_account(server: LiveServer) -> None:
    owner, stranger = server.new_key(credits=10), server.new_key(credits=10)
    with server.client(owner) as client:
        job_id = client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"]
    with server.client(stranger) as client:
        assert client.get(f"/v2/jobs/{job_id}").status_code == 404
        assert client.post(f"/v2/jobs/{job_id}/cancel").status_code == 404
        assert client.get("/v2/jobs").json()["jobs"] == []
        assert client.get(f"/v2/jobs?search={job_id}").json()["jobs"] == []
        bad = client.get("/v2/jobs/not-a-uuid")
        assert bad.status_code == 400 and "UUID" in bad.json()["error"]
        assert client.get(f"/v2/jobs/{uuid.uuid4()}").status_code == 404
    with server.client(owner) as client:
        client.post(f"/v2/jobs/{job_id}/cancel")


@pytest.mark.live  # runs the CLI
def test_a_second_key_on_the_same_account_shares_balance_and_jobs(server: LiveServer) -> None:
    first = server.new_key(credits=10)
    with server.client(first) as client:
        account = client.get("/v2/me").json()["team"]["id"]
        job_id = client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"]
    second = (
        cli(server.data_dir, "keys", "create", "--account", account, env=server.env).strip().splitlines()[-1]
    )
    with server.client(second) as client:
        assert client.get("/v2/me").json()["team"]["credits"] == 5
        assert client.get(f"/v2/jobs/{job_id}").status_code == 200
        client.post(f"/v2/jobs/{job_id}/cancel")


def test_listing_pages_filters_and_cursor(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    silent = {**FAST_4S, "veoParams": {"duration": 4, "generate_audio": False}}
    with server.client(key) as client:
        # Cancelled at once: listing needs jobs in a known state, not renders.
        ids = [client.post("/v2/videos/generate", json=silent).json()["jobId"] for _ in range(5)]
        for job_id in ids:
            assert client.post(f"/v2/jobs/{job_id}/cancel").json()["status"] == "CANCELLED"
        seen: list[str] = []
        cursor = None
        while True:
            page = client.get(
                "/v2/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
            ).json()
            assert_contract(page, "JobList")
            seen += [j["id"] for j in page["jobs"]]
            if not page["hasMore"]:
                assert page["nextCursor"] is None
                break
            cursor = page["nextCursor"]
        assert seen == list(reversed(ids))
        assert len(client.get("/v2/jobs", params={"status": "CANCELLED"}).json()["jobs"]) == 5
        assert client.get("/v2/jobs", params={"status": "COMPLETED"}).json()["jobs"] == []
        assert client.get("/v2/jobs", params={"model": "veo-3.1"}).json()["jobs"] == []
        assert [j["id"] for j in client.get("/v2/jobs", params={"search": ids[2]}).json()["jobs"]] == [ids[2]]
        assert client.get("/v2/jobs", params={"include_models": "true"}).json()["models"] == ["veo-3.1-fast"]
        assert client.get("/v2/jobs", params={"limit": 0}).status_code == 400
        assert client.get("/v2/jobs", params={"limit": 101}).status_code == 400
        assert client.get("/v2/jobs", params={"cursor": "garbage"}).status_code == 400
        assert client.get("/v2/jobs", params={"status": "DONE"}).status_code == 400


def test_cancel_queued_and_running_jobs_refunds_and_frees_the_worker(server: LiveServer) -> None:
    key = server.new_key(credits=100)
    with server.client(key) as client:
        running = client.post("/v2/videos/generate", json=SLOW).json()["jobId"]
        queued = client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"]
        assert client.get(f"/v2/jobs/{queued}").json()["queuePosition"] >= 1
        cancelled = client.post(f"/v2/jobs/{queued}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "CANCELLED" and cancelled.json()["creditCost"] == 0

        wait_for(client, running, until=("PROCESSING",))
        deadline = time.monotonic() + 60
        while client.get(f"/v2/jobs/{running}").json()["progress"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped = client.post(f"/v2/jobs/{running}/cancel").json()
        assert stopped["status"] == "CANCELLED"
        assert client.post(f"/v2/jobs/{running}/cancel").status_code == 409
        assert client.get("/v2/me").json()["team"]["credits"] == 100

        started = time.monotonic()
        follow_up = client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"]
        assert wait_for(client, follow_up)["status"] == "COMPLETED"
        assert time.monotonic() - started < 60
        assert client.get(f"/v2/jobs/{running}").json()["status"] == "CANCELLED"


@pytest.mark.live
@pytest.mark.xdist_group("live")
def test_killed_worker_is_replaced_and_the_job_retried(live_postgresql_server: LiveServer) -> None:
    """On PostgreSQL; on SQLite, test_workers.py kills workers (twice, on two slots)."""
    server = live_postgresql_server
    key = server.new_key(credits=100)
    with server.client(key) as client:
        job_id = client.post("/v2/videos/generate", json=LONG).json()["jobId"]
        wait_for(client, job_id, until=("PROCESSING",))
        workers = worker_processes(server)
        assert len(workers) == 1
        workers[0].kill()
        job = wait_for(client, job_id, timeout=300)
        assert job["status"] == "COMPLETED", job
        assert client.get("/v2/me").json()["team"]["credits"] == 100 - 8
        assert httpx.get(job["result"]["videoUrl"], timeout=30).status_code == 200


def test_uploads_sniff_type_and_enforce_limits(server: LiveServer) -> None:
    key = server.new_key()
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64)).save(jpeg, format="JPEG")
    with server.client(key) as client:
        ok = client.post("/v2/uploads", files={"file": ("x.png", jpeg.getvalue(), "image/png")})
        assert ok.status_code == 201 and ok.json()["contentType"] == "image/jpeg"
        fetched = httpx.get(ok.json()["url"])
        assert fetched.content == jpeg.getvalue() and fetched.headers["content-type"] == "image/jpeg"
        text = client.post("/v2/uploads", files={"file": ("a.png", b"just some text", "image/png")})
        assert text.status_code == 400 and "Unsupported" in text.json()["details"]["file"][0]
        big = b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024)
        assert client.post("/v2/uploads", files={"file": ("big.png", big, "image/png")}).status_code == 400
        assert client.post("/v2/uploads", data={"nothing": "here"}).status_code == 400
        png_bytes = png(8, 8)
        two = client.post(
            "/v2/uploads", files=[("file", ("a.png", png_bytes)), ("file", ("b.png", png_bytes))]
        )
        assert two.status_code == 400 and "one file per upload" in two.json()["details"]["file"][0]
        extra = client.post("/v2/uploads", files={"file": ("a.png", png_bytes)}, data={"purpose": "vision"})
        assert extra.status_code == 400 and "Unrecognized field" in extra.json()["details"]["purpose"][0]
        wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64)
        audio = client.post("/v2/uploads", files={"file": ("a.wav", wav, "audio/wav")})
        assert audio.json()["kind"] == "audio"
        as_image = client.post(
            "/v2/videos/generate",
            json={**FAST_4S, "veoParams": {"duration": 4, "image": audio.json()["url"]}},
        )
        assert as_image.status_code == 400
        assert "must be an image" in as_image.json()["details"]["veoParams.image"][0]
        forged = ok.json()["url"].replace("exp=", "exp=1")
        stale = client.post(
            "/v2/videos/generate", json={**FAST_4S, "veoParams": {"duration": 4, "image": forged}}
        )
        assert stale.status_code == 400  # not this server's link: fetched at submit, and refused
        assert "403" in stale.json()["details"]["veoParams.image"][0]


def _wav(size: int) -> bytes:
    """An audio upload of exactly ``size`` bytes (the type is sniffed from its first twelve)."""
    return (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(size))[:size]


def test_an_accounts_uploads_stop_at_its_quota_until_enough_expire(tmp_path: Path) -> None:
    env = {**SERVER_ENV, "OPENREEL_MAX_ACCOUNT_UPLOAD_BYTES": "10000", "OPENREEL_UPLOAD_TTL_S": "5"}
    with quick_server(tmp_path, env) as server:
        key, other = server.new_key(), server.new_key()
        with server.client(key) as client:
            for size in (4000, 6000):  # the quota exactly
                assert client.post("/v2/uploads", files={"file": ("a.wav", _wav(size))}).status_code == 201
            full = client.post("/v2/uploads", files={"file": ("a.wav", _wav(4000))})
            assert full.status_code == 429, full.text
            error = full.json()["error"]
            assert "hold 10000 of the 10000 bytes" in error and "this file of 4000" in error, error
            wait = int(full.headers["retry-after"])
            assert 1 <= wait <= 5
            # A file that the whole quota could not hold is refused for good, not for a while.
            too_big = client.post("/v2/uploads", files={"file": ("a.wav", _wav(10001))})
            assert too_big.status_code == 400 and "10000 bytes in all" in too_big.json()["details"]["file"][0]
            over_limit = client.post("/v2/uploads", files={"file": ("a.wav", _wav(2 * 1024 * 1024 + 1))})
            assert over_limit.status_code == 400 and "limited to" in over_limit.json()["details"]["file"][0]
            assert not list(server.data_dir.rglob("*.part")), "a refused upload left its staged file"
            with server.client(other) as theirs:  # the quota is each account's own
                assert theirs.post("/v2/uploads", files={"file": ("a.wav", _wav(4000))}).status_code == 201
            time.sleep(wait)
            assert client.post("/v2/uploads", files={"file": ("a.wav", _wav(4000))}).status_code == 201


@pytest.mark.parametrize("dialect", DIALECTS)
def test_uploads_sent_at_once_cannot_pass_the_quota_together(dialect: str, tmp_path: Path) -> None:
    env = {**SERVER_ENV, "OPENREEL_MAX_ACCOUNT_UPLOAD_BYTES": "10000"}
    with (
        throwaway_database(dialect, tmp_path) as url,
        quick_server(tmp_path, {**env, "OPENREEL_DATABASE_URL": url}) as server,
    ):
        key = server.new_key()

        def upload(_: int) -> tuple[int, str]:
            with server.client(key) as client:
                answer = client.post("/v2/uploads", files={"file": ("a.wav", _wav(4000))})
                return answer.status_code, answer.json().get("error", "")

        with ThreadPoolExecutor(8) as pool:
            answers = sorted(pool.map(upload, range(8)))
        assert [code for code, _ in answers] == [201, 201] + [429] * 6
        assert all("unexpired uploads hold" in error for _, error in answers[2:]), answers
        assert not list(server.data_dir.rglob("*.part")), "a refused upload left its staged file"


@pytest.mark.live
@pytest.mark.xdist_group("live")
def test_a_cancelled_render_stops_in_its_worker_process(live_sqlite_server: LiveServer) -> None:
    """Cancelling reaches the worker process between two steps; the worker lives on for the next job."""
    server = live_sqlite_server
    key = server.new_key(credits=100)
    with server.client(key) as client:
        job_id = client.post("/v2/videos/generate", json=LONG).json()["jobId"]
        mid_render(client, job_id)
        workers = worker_processes(server)
        assert client.post(f"/v2/jobs/{job_id}/cancel").status_code == 200
        assert wait_for(client, job_id)["status"] == "CANCELLED"
        follow_up = client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"]
        assert wait_for(client, follow_up)["status"] == "COMPLETED"
        assert client.get("/v2/me").json()["team"]["credits"] == 100 - 5
    assert worker_processes(server) == workers


def test_a_failed_render_is_refunded_says_why_and_leaves_no_file(server: LiveServer) -> None:
    key = server.new_key(credits=10)
    with server.client(key) as client:
        failing = client.post("/v2/videos/generate", json={**FAST_4S, "prompt": FAIL + " a lighthouse"})
        job = wait_for(client, failing.json()["jobId"])
        assert job["status"] == "FAILED", job
        assert job["error"] == "generation failed: RuntimeError: the render failed on request"
        assert client.get("/v2/me").json()["team"]["credits"] == 10
        after = wait_for(client, client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"])
        assert after["status"] == "COMPLETED"
    left = server.data_dir / "files" / "results" / job["id"]
    assert not [f for f in left.rglob("*") if f.is_file()]  # neither an MP4 nor a half-written part


def test_active_jobs_carry_the_time_left_once_the_server_has_rendered_their_shape(tmp_path: Path) -> None:
    with quick_server(tmp_path, SERVER_ENV, step_s=0.15) as server:
        key = server.new_key(credits=100)
        with server.client(key) as client:
            first = client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"]
            assert client.get(f"/v2/jobs/{first}").json()["etaSeconds"] is None  # nothing measured yet
            took = time.monotonic()
            assert wait_for(client, first)["status"] == "COMPLETED"
            took = time.monotonic() - took
            assert client.get(f"/v2/jobs/{first}").json()["etaSeconds"] is None
            running = client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"]
            queued = client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"]
            wait_for(client, running, until=("PROCESSING",))
            ahead = client.get(f"/v2/jobs/{running}").json()["etaSeconds"]
            behind = client.get(f"/v2/jobs/{queued}").json()
            assert behind["status"] == "QUEUED" and behind["queuePosition"] == 1
            # The running job has at most one render left; the queued one that, then a render of its own.
            assert 0 <= ahead <= took + 1
            assert ahead + 0.5 * took <= behind["etaSeconds"] <= ahead + took + 1
            listed = {j["id"]: j for j in client.get("/v2/jobs").json()["jobs"]}
            assert listed[queued]["queuePosition"] == 1 and listed[queued]["etaSeconds"] is not None
            operation = client.get(f"/v1beta/operations/{queued}", headers={"x-goog-api-key": key}).json()
            assert operation["metadata"]["etaSeconds"] is not None


def test_a_job_over_its_time_is_failed_refunded_and_its_render_dropped(tmp_path: Path) -> None:
    with quick_server(tmp_path, {**SERVER_ENV, "OPENREEL_JOB_TIMEOUT_S": "1"}) as server:
        key = server.new_key(credits=100)
        with server.client(key) as client:
            job_id = client.post("/v2/videos/generate", json={**FAST_4S, "model": "veo-3.1"}).json()["jobId"]
            job = wait_for(client, job_id)
            assert job["status"] == "FAILED" and "timed out after 1 s" in job["error"], job
            assert client.get("/v2/me").json()["team"]["credits"] == 100
        time.sleep(0.5)  # the render notices at its next step
        assert not list((server.data_dir / "files").rglob("*.mp4"))


@pytest.mark.live
def test_an_engine_that_cannot_load_refuses_jobs_without_charging(tmp_path: Path) -> None:
    with running_server(tmp_path, {}, engine="ltx2") as broken:
        key = broken.new_key(credits=10)
        with broken.client(key) as client:
            refused = client.post("/v2/videos/generate", json=FAST_4S)
            assert refused.status_code == 503
            assert "ltx2 engine is unavailable" in refused.json()["error"]
            assert "OPENREEL_CHECKPOINT" in refused.json()["error"]
            assert client.get("/v2/me").json()["team"]["credits"] == 10
            model = client.get("/v2/models").json()["models"][0]
        assert broken.process is not None
        # With its worker gone, the dispatcher must idle, not spin on the dead worker's pipe.
        server = psutil.Process(broken.process.pid)
        before = sum(server.cpu_times()[:2])
        time.sleep(3)
        assert sum(server.cpu_times()[:2]) - before < 1.0
    assert model["engine"]["ready"] is False and "OPENREEL_CHECKPOINT" in model["engine"]["notice"]


def test_delete_hides_a_finished_job_and_removes_its_video(server: LiveServer) -> None:
    key, stranger = server.new_key(credits=40), server.new_key()
    with server.client(key) as client:
        done = client.post("/v2/videos/generate", json=FAST_4S).json()["jobId"]
        job = wait_for(client, done)
        running = client.post("/v2/videos/generate", json=SLOW).json()["jobId"]
        assert client.delete(f"/v2/jobs/{running}").status_code == 409
        with server.client(stranger) as other:
            assert other.delete(f"/v2/jobs/{done}").status_code == 404
        assert client.delete(f"/v2/jobs/{done}").json() == {"id": done, "deleted": True}
        assert client.get(f"/v2/jobs/{done}").status_code == 404
        assert done not in [j["id"] for j in client.get("/v2/jobs").json()["jobs"]]
        assert httpx.get(job["result"]["videoUrl"]).status_code == 404
        assert client.get("/v2/me").json()["team"]["credits"] == 40 - 5 - 20
        client.post(f"/v2/jobs/{running}/cancel")
