"""The Studio (``/studio``) driven in Debian's Chromium through Playwright, against the live server.

Everything is checked the way a user sees it (labels, messages, the player), and the server's
side of each step (balance, jobs) is checked again over the API with httpx.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright import sync_api

from support import SERVER_ENV, LiveServer, quick_server, until, wait_for

# One worker runs this module, so its module-scoped fixtures start once.
pytestmark = [pytest.mark.live, pytest.mark.xdist_group("studio")]

expect = sync_api.expect

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SLOW = {"model": "veo-3.1", "veoParams": {"duration": 8, "resolution": "1080p"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Steps slow enough (a fast job takes seconds) for the page's polls to see a job move."""
    with quick_server(tmp_path_factory.mktemp("studio"), SERVER_ENV, step_s=0.25) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.exists(), f"no Chromium at {CHROMIUM}: make test installs Debian's chromium"
    expect.set_options(timeout=15_000)  # the machine may be busy rendering other tests' jobs
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@dataclass
class Studio:
    page: Any
    server: LiveServer
    errors: list[str] = field(default_factory=list)

    def open(self) -> None:
        self.page.goto(self.server.url + "/studio")
        expect(self.page.get_by_label("API key")).to_be_visible()

    def sign_in(self, key: str) -> None:
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()

    def signed_in(self, key: str) -> None:
        self.open()
        self.sign_in(key)
        expect(self.page.get_by_role("heading", name="New video")).to_be_visible()
        # the model list is in once a price shows
        expect(self.page.locator("#price-value")).to_have_text(re.compile(r"\d+ credits?"))

    @property
    def balance(self) -> Any:
        return self.page.locator("#balance-value")

    def fill(self, prompt: str, model: str, duration: int, resolution: str = "720p") -> None:
        page = self.page
        page.get_by_label("Model").select_option(model)
        page.get_by_label("Prompt", exact=True).fill(prompt)
        page.get_by_label("Duration").select_option(str(duration))
        page.get_by_label("Aspect ratio").select_option("16:9")
        page.get_by_label("Resolution").select_option(resolution)

    def history_entry(self, text: str) -> Any:
        return self.page.locator("#history-list > li").filter(has_text=text)

    def screenshot(self, tmp_path: Path, name: str) -> None:
        path = tmp_path / name
        self.page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, Path("/tmp") / name)


@pytest.fixture
def studio(browser: Any, server: LiveServer) -> Iterator[Studio]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    studio = Studio(page, server)
    page.on("console", lambda msg: msg.type == "error" and studio.errors.append(msg.text))
    page.on("pageerror", lambda exc: studio.errors.append(f"uncaught: {exc}"))
    yield studio
    context.close()
    # Whatever else a test provokes, the page never does what its own policy forbids.
    assert [e for e in studio.errors if "Content Security Policy" in e] == []


def ready_state(page: Any) -> int:
    """The player's readyState, read over the DevTools protocol: ``wait_for_function`` polls with an
    eval, which the Studio's Content-Security-Policy refuses."""
    return int(page.evaluate("document.getElementById('job-video').readyState"))


def me(server: LiveServer, key: str) -> dict[str, Any]:
    with server.client(key) as client:
        return client.get("/v2/me").json()  # type: ignore[no-any-return]


def png(path: Path, colour: tuple[int, int, int] = (200, 90, 40)) -> Path:
    Image.new("RGB", (320, 180), colour).save(path)
    return path


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def test_generate_with_first_frame_plays_the_video(
    studio: Studio, server: LiveServer, tmp_path: Path
) -> None:
    key = server.new_key(credits=40)
    catalog = {m["id"]: m for m in httpx.get(server.url + "/v2/models").json()["models"]}
    page = studio.page
    studio.signed_in(key)
    expect(studio.balance).to_have_text("40")
    expect(page.locator("#engine-notice")).to_contain_text("random weights")

    # the form follows the catalog: defaults, durations, and the audio switch only where it applies
    expect(page.get_by_label("Duration")).to_have_value(str(catalog["veo-3.1-fast"]["defaultDuration"]))
    expect(page.locator("#price-value")).to_have_text("8 credits")
    page.get_by_label("Model").select_option("veo-3.1-lite")
    expect(page.get_by_label("Generate audio")).to_be_hidden()
    expect(page.locator("#audio-help")).to_contain_text("always generates")
    lite = catalog["veo-3.1-lite"]["prices"]["8s-audio"]
    expect(page.locator("#price-value")).to_have_text(f"{lite} credits")
    page.get_by_label("Model").select_option("veo-2")
    expect(page.get_by_label("Generate audio")).to_be_hidden()
    expect(page.locator("#audio-help")).to_contain_text("silent")
    options = page.get_by_label("Duration").locator("option")
    expect(options).to_have_text(["5 s", "6 s", "7 s", "8 s"])
    expect(page.get_by_label("Duration")).to_have_value("8")  # kept across the model change
    expect(page.locator("#price-value")).to_have_text(f"{catalog['veo-2']['prices']['8s']} credits")
    page.get_by_label("Duration").select_option("5")
    expect(page.locator("#price-value")).to_have_text(f"{catalog['veo-2']['prices']['5s']} credits")

    prompt = unique("a red kite over the dunes")
    studio.fill(prompt, "veo-3.1-fast", 4)
    audio = page.get_by_label("Generate audio")
    expect(audio).to_be_checked()
    price = page.locator("#price-value")
    expected = catalog["veo-3.1-fast"]["prices"]["4s-audio"]
    assert expected == 5
    expect(price).to_have_text(f"{expected} credits")
    audio.uncheck()  # the price follows the form
    expect(price).to_have_text(f"{catalog['veo-3.1-fast']['prices']['4s']} credits")
    audio.check()
    expect(price).to_have_text("5 credits")

    page.get_by_label("First frame").set_input_files(str(png(tmp_path / "first.png")))
    expect(page.locator("#thumbs-image")).to_contain_text("uploaded")

    page.get_by_role("button", name="Generate").click()
    seen: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value, done = page.evaluate(
            "() => [document.getElementById('job-progress')?.value ?? null,"
            " !!document.getElementById('job-video')]"
        )
        if value is not None:
            seen.append(value)
        if done:
            break
        time.sleep(0.05)
    assert seen and len(set(seen)) >= 2 and max(seen) > 0, f"progress bar did not move: {seen}"

    video = page.locator("#job-video")
    expect(video).to_be_visible()
    src = video.get_attribute("src")
    assert src and "/v2/files/results/" in src
    until(lambda: ready_state(page) >= 1, 20, "the video's metadata")
    assert page.evaluate("document.getElementById('job-video').duration") == pytest.approx(4.0, abs=0.2)
    expect(page.locator("#job-download")).to_have_attribute("href", src)
    expect(page.locator("#job-notice")).to_contain_text("random weights")
    meta = page.locator("#job-meta")
    expect(meta).to_contain_text("1280 \u00d7 720")  # width x height
    expect(meta).to_contain_text("4.0 s")
    expect(page.locator("#job-status")).to_have_text("COMPLETED")

    expect(studio.balance).to_have_text("35")
    assert me(server, key)["team"]["credits"] == 35
    entry = studio.history_entry(prompt)
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("COMPLETED")
    expect(entry).to_contain_text("5 credits")
    expect(entry).to_contain_text("first frame")

    with server.client(key) as client:
        [job] = client.get("/v2/jobs").json()["jobs"]
    params = job["input"]["veoParams"]
    assert job["input"]["prompt"] == prompt and job["model"] == "veo-3.1-fast"
    assert params["duration"] == 4 and params["aspect_ratio"] == "16:9" and params["resolution"] == "720p"
    assert params["generate_audio"] is True and "/v2/files/uploads/" in params["image"]

    with contextlib.suppress(AssertionError):  # for the screenshot only: let the first frame paint
        until(lambda: ready_state(page) >= 4, 5, "the video's first frame")
        page.wait_for_timeout(800)  # the player's loading spinner fades out
    studio.screenshot(tmp_path, "studio-happy.png")
    assert studio.errors == []


def test_several_videos_an_enhanced_prompt_and_extending_one(
    studio: Studio, server: LiveServer, tmp_path: Path
) -> None:
    key = server.new_key(credits=40)
    page = studio.page
    studio.signed_in(key)
    prompt = unique("a paper boat on a pond")
    studio.fill(prompt, "veo-3.1-fast", 4)
    page.get_by_label("Seed").fill("21")
    expect(page.locator("#price-value")).to_have_text("5 credits")
    page.get_by_label("Videos").select_option("2")
    expect(page.locator("#price-value")).to_have_text("10 credits")  # each video is charged
    page.get_by_label("Enhance prompt").check()
    page.get_by_role("button", name="Generate").click()

    samples = page.locator("#job-samples")
    expect(samples).to_contain_text("Play video 1 (seed 21)", timeout=60_000)
    expect(samples).to_contain_text("Play video 2 (seed 22)")
    first = page.locator("#job-video").get_attribute("src")
    page.get_by_role("button", name="Play video 2 (seed 22)").click()
    expect(page.locator("#job-video")).not_to_have_attribute("src", first or "")
    expect(page.locator("#job-enhanced-prompt")).to_have_text(f"{prompt} [enhanced with seed 21]")
    expect(studio.balance).to_have_text("30")
    with server.client(key) as client:
        [job] = client.get("/v2/jobs").json()["jobs"]
    assert job["input"]["veoParams"]["sample_count"] == 2 and job["input"]["veoParams"]["enhance_prompt"]
    studio.screenshot(tmp_path, "studio-samples.png")

    # Extend the video playing (the second): the form locks what the clip sets and prices 7 s added.
    page.get_by_role("button", name="Extend").click()
    banner = page.locator("#extend-banner")
    expect(banner).to_contain_text(f"Extending job {job['id'][:8]} (video 2): 4.0 s → 11.0 s")
    expect(page.get_by_label("Duration")).to_be_disabled()
    expect(page.get_by_label("First frame")).to_be_disabled()
    page.get_by_label("Videos", exact=True).select_option("1")
    expect(page.locator("#price-value")).to_have_text("7 credits")
    page.get_by_label("Prompt", exact=True).fill(unique("the boat drifts under a bridge"))
    studio.screenshot(tmp_path, "studio-extending.png")
    page.get_by_role("button", name="Generate").click()
    expect(banner).to_be_hidden()
    expect(page.locator("#job-meta")).to_contain_text("11.0 s at 24 fps", timeout=60_000)
    expect(page.locator("#job-extends")).to_have_text(f"job {job['id'][:8]} (video 2), 7 s added")
    expect(studio.history_entry("the boat drifts")).to_contain_text(f"+7 s to job {job['id'][:8]} (video 2)")
    expect(studio.balance).to_have_text("23")
    with server.client(key) as client:
        extended = client.get("/v2/jobs").json()["jobs"][0]
    assert extended["input"]["veoParams"] == {
        "extend_job_id": job["id"],
        "extend_video": 1,
        "seed": 21,
        "generate_audio": True,
        "enhance_prompt": True,
    }
    assert extended["result"]["extendedFrom"]["video"] == 1
    studio.screenshot(tmp_path, "studio-extended.png")
    assert studio.errors == []


def test_errors_are_shown_where_the_user_looks(studio: Studio, server: LiveServer, tmp_path: Path) -> None:
    page = studio.page
    studio.open()
    studio.sign_in("afk_not-a-real-key")
    expect(page.locator("#signin-error")).to_contain_text("Invalid API key")
    expect(page.get_by_role("heading", name="New video")).to_be_hidden()
    studio.screenshot(tmp_path, "studio-badkey.png")

    key = server.new_key(credits=3)
    studio.sign_in(key)
    expect(studio.balance).to_have_text("3")
    studio.fill(unique("a lighthouse"), "veo-3.1-fast", 8)
    expect(page.locator("#price-value")).to_have_text("8 credits")
    expect(page.locator("#price-note")).to_contain_text("more than your balance")

    page.get_by_role("button", name="Generate").click()
    message = page.locator("#form-error")
    expect(message).to_contain_text("needs 8 credits")
    expect(message).to_contain_text("you have 3")
    expect(studio.balance).to_have_text("3")
    assert me(server, key)["team"]["credits"] == 3
    with server.client(key) as client:
        assert client.get("/v2/jobs").json()["jobs"] == []
    studio.screenshot(tmp_path, "studio-errors.png")
    # the 401/402 responses are logged by Chromium as failed loads; nothing else may be
    assert [e for e in studio.errors if not e.startswith("Failed to load resource")] == []


def test_reference_images_follow_the_catalog(studio: Studio, server: LiveServer, tmp_path: Path) -> None:
    """The shared server has no reference adapter: the picker is off, with the catalog's reason."""
    catalog = httpx.get(server.url + "/v2/models").json()
    models = {m["id"]: m for m in catalog["models"]}
    fast, lite = models["veo-3.1-fast"], models["veo-3.1-lite"]
    assert not fast["acceptsReferenceImages"]
    assert "OPENREEL_REFERENCE_ADAPTER" in fast["referenceImagesUnavailable"]
    page = studio.page
    key = server.new_key(credits=3)
    studio.signed_in(key)
    references, reason = page.get_by_label("Reference images"), page.locator("#reference-help")
    studio.fill(unique("a lighthouse"), "veo-3.1-fast", 4)
    expect(references).to_be_disabled()
    expect(reason).to_have_text(fast["referenceImagesUnavailable"])
    studio.screenshot(tmp_path, "studio-no-references.png")
    page.get_by_label("Model").select_option("veo-3.1-lite")
    expect(references).to_be_disabled()
    expect(reason).to_have_text(lite["referenceImagesUnavailable"])

    # A catalog that says yes opens the picker; should the server still say no, its 400 lands on the field.
    fast.update(acceptsReferenceImages=True, referenceImagesUnavailable=None)
    page.route(server.url + "/v2/models", lambda route: route.fulfill(json=catalog))
    page.reload()
    studio.fill(unique("a lighthouse"), "veo-3.1-fast", 4)
    expect(references).to_be_enabled()
    expect(reason).to_be_hidden()
    references.set_input_files(str(png(tmp_path / "ref.png", (20, 90, 200))))
    expect(page.locator("#thumbs-reference_images")).to_contain_text("uploaded")
    # Picked for one model, the images are not sent with another that cannot take them: it says so at once.
    page.get_by_label("Model").select_option("veo-3.1-lite")
    conflict = page.locator("#err-reference_images")
    expect(conflict).to_contain_text(lite["referenceImagesUnavailable"])
    expect(conflict).to_contain_text("Remove the reference images")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#form-error")).to_have_text("Please fix the marked fields.")
    assert httpx.get(server.url + "/v2/jobs", headers={"X-API-Key": key}).json()["jobs"] == []
    page.get_by_label("Model").select_option("veo-3.1-fast")
    expect(conflict).to_be_hidden()
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#err-reference_images")).to_contain_text("IC-LoRA")
    expect(page.locator("#form-error")).to_contain_text("refused")
    page.get_by_role("button", name=re.compile("^Remove reference image")).click()
    expect(page.locator("#err-reference_images")).to_be_hidden()
    assert [e for e in studio.errors if not e.startswith("Failed to load resource")] == []


def test_cancel_from_the_page_refunds(studio: Studio, server: LiveServer) -> None:
    key = server.new_key(credits=100)
    page = studio.page
    studio.signed_in(key)
    # a slow job submitted elsewhere keeps the worker busy, so the page's job waits in the queue
    with server.client(key) as client:
        blocker = client.post("/v2/videos/generate", json={"prompt": "blocker", **SLOW}).json()["jobId"]
        wait_for(client, blocker, until=("PROCESSING",))

    prompt = unique("a slow pan over a harbour")
    studio.fill(prompt, "veo-3.1", 8, "1080p")
    expect(page.locator("#price-value")).to_have_text("20 credits")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_have_text("QUEUED")
    expect(page.locator("#job-queue")).to_contain_text("position 1 in line")
    expect(studio.balance).to_have_text("60")
    page.locator("#job-panel").get_by_role("button", name="Cancel").click()
    expect(page.locator("#job-status")).to_have_text("CANCELLED")
    expect(page.locator("#job-error")).to_contain_text("Cancelled by the user")
    expect(studio.balance).to_have_text("80")

    # the running one, opened from the history and cancelled mid-render
    entry = studio.history_entry("blocker")
    expect(entry).to_contain_text("PROCESSING")
    entry.get_by_role("button", name="Open").click()
    expect(page.locator("#job-status")).to_have_text("PROCESSING")
    page.locator("#job-panel").get_by_role("button", name="Cancel").click()
    expect(page.locator("#job-status")).to_have_text("CANCELLED")
    expect(studio.balance).to_have_text("100")
    expect(studio.history_entry(prompt)).to_contain_text("CANCELLED")

    assert me(server, key)["team"]["credits"] == 100
    with server.client(key) as client:
        jobs = client.get("/v2/jobs").json()["jobs"]
    assert [(j["status"], j["creditCost"]) for j in jobs] == [("CANCELLED", 0), ("CANCELLED", 0)]
    assert studio.errors == []


def test_history_pages_reruns_and_deletes(studio: Studio, server: LiveServer) -> None:
    key = server.new_key(credits=100)
    page = studio.page
    first = unique("waves on a pebble beach")
    with server.client(key) as client:
        body = {
            "prompt": first,
            "model": "veo-3.1-fast",
            "veoParams": {"duration": 4, "generate_audio": False},
        }
        old = client.post("/v2/videos/generate", json=body).json()["jobId"]
        assert wait_for(client, old)["status"] == "COMPLETED"
        for i in range(10):  # a full page of newer jobs pushes the first one to page two
            job = client.post("/v2/videos/generate", json={**body, "prompt": f"filler {i}"}).json()
            client.post(f"/v2/jobs/{job['jobId']}/cancel")

    studio.signed_in(key)
    expect(studio.balance).to_have_text("97")
    expect(page.locator("#history-list > li")).to_have_count(10)
    expect(studio.history_entry(first)).to_have_count(0)
    page.get_by_role("button", name="Load more").click()
    entry = studio.history_entry(first)
    expect(entry).to_have_count(1)
    expect(page.locator("#history-list > li")).to_have_count(11)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    expect(entry).to_contain_text("4 s · 16:9 · 720p · silent")

    entry.get_by_role("button", name="Play").click()
    expect(page.locator("#job-video")).to_have_attribute("src", re.compile("/v2/files/results/"))

    entry.get_by_role("button", name="Re-run").click()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value(first)
    expect(page.get_by_label("Model")).to_have_value("veo-3.1-fast")
    expect(page.get_by_label("Duration")).to_have_value("4")
    expect(page.get_by_label("Generate audio")).not_to_be_checked()
    expect(page.locator("#price-value")).to_have_text("3 credits")
    page.get_by_role("button", name="Generate").click()
    expect(studio.history_entry(first)).to_have_count(2)
    rerun = studio.history_entry(first).first  # newest first
    expect(rerun).not_to_have_attribute("data-job-id", old)
    expect(rerun).to_have_attribute("data-status", "COMPLETED", timeout=60_000)
    expect(page.locator("#job-video")).to_be_visible()
    expect(studio.balance).to_have_text("94")
    # The re-run's end read the list again (its request sent with the balance's): a local answer
    # within the second, which must not bring "Load more" back with every page already in.
    page.wait_for_timeout(1000)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    old_entry = page.locator(f"#history-list > li[data-job-id='{old}']")
    old_entry.get_by_role("button", name="Delete").click()
    old_entry.get_by_role("button", name="Confirm delete").click()
    expect(old_entry).to_have_count(0)
    expect(studio.history_entry(first)).to_have_count(1)
    with server.client(key) as client:
        assert client.get(f"/v2/jobs/{old}").status_code == 404
        jobs = client.get("/v2/jobs", params={"limit": 100}).json()["jobs"]
    assert [j["input"]["prompt"] for j in jobs].count(first) == 1
    assert jobs[0]["input"] == {
        **body,
        "veoParams": {**body["veoParams"], "aspect_ratio": "16:9", "resolution": "720p"},
    }

    # The re-run's video swept from the server: the list and the panel say it expired, with no player.
    with server.client(key) as client:
        link = client.get(f"/v2/jobs/{rerun.get_attribute('data-job-id')}").json()["result"]["videoUrl"]
    stored = server.data_dir / "files" / httpx.URL(link).path.removeprefix("/v2/files/")
    stored.unlink()

    page.reload()  # the key survives a reload of the tab (sessionStorage), and the list is right
    expect(studio.balance).to_have_text("94")
    expect(studio.history_entry(first)).to_have_count(1)
    studio.history_entry(first).get_by_role("button", name="Open").click()
    expect(page.locator("#job-expired")).to_have_text(
        "The video has expired and was removed from the server."
    )
    expect(page.locator("#job-video")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert studio.errors == []


def test_api_docs_render_with_the_network_cut(browser: Any, server: LiveServer) -> None:
    """/docs and /redoc load their scripts from the server itself, not a CDN."""
    context = browser.new_context()
    outside: list[str] = []

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(f"{route.request.resource_type} {route.request.url}")
            route.abort()

    context.route("**/*", only_the_server)
    page = context.new_page()
    try:
        page.goto(server.url + "/docs")
        expect(page.locator(".opblock").first).to_be_visible()
        assert page.locator(".opblock-summary-path", has_text="/v2/videos/generate").count() >= 1
        page.goto(server.url + "/redoc")
        expect(page.get_by_text("/v2/videos/generate").first).to_be_attached()
        browser_home = page.goto(server.url + "/")
        assert browser_home is not None and browser_home.url == server.url + "/studio"
    finally:
        context.close()
    # ReDoc's "powered by" logo is the one thing it still asks a CDN for; the page needs none of it.
    assert all(request.startswith("image ") for request in outside), outside
