"""Bodies are read only for an active key and only up to a cap; files are served only as what they are.

Against one live server (it need not wait for its engine: nothing here renders) whose peak memory and
writes are measured from /proc: the server must not hold, or spool to disk, a body it refuses.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import psutil
import pytest
from moto import mock_aws

from openreel.ledger import accounts
from openreel.ledger.db import Database
from openreel.protocols.files import stored_file
from openreel.protocols.guards import body_limit
from openreel.settings import Settings
from openreel.storage.s3 import S3Storage
from openreel.storage.signing import Signer

from support import SERVER_ENV, LiveServer, free_port, png, until

# One worker runs this module, so its module-scoped fixtures start once.
pytestmark = [pytest.mark.live, pytest.mark.xdist_group("body_limits")]

MB = 1024 * 1024
GOOGLE_PREDICT = "/v1beta/models/veo-3.1-fast-generate-preview:predictLongRunning"
# Where each protocol carries its key; what its 401 for a missing key looks like.
PROTOCOLS: dict[str, tuple[str, Callable[[str], dict[str, str]], dict[str, Any]]] = {
    "apiframe": (
        "/v2/videos/generate",
        lambda key: {"X-API-Key": key},
        {"error": "API key is required"},
    ),
    "google": (
        GOOGLE_PREDICT,
        lambda key: {"x-goog-api-key": key},
        {
            "error": {
                "code": 401,
                "message": "Missing API key: send an openreel key (afk_...) in the x-goog-api-key header.",
                "status": "UNAUTHENTICATED",
            }
        },
    ),
    "openai": (
        "/v1/videos",
        lambda key: {"Authorization": f"Bearer {key}"},
        {
            "error": {
                "message": "You didn't provide an API key. Send your openreel key in the Authorization "
                "header (Authorization: Bearer afk_...).",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    ),
}
JSON = {"content-type": "application/json"}
BOUNDARY = "guard-test"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def streamed(head: bytes, size: int, tail: bytes) -> Iterator[bytes]:
    """Exactly ``size`` bytes, ``head`` and ``tail`` around filler, made as sent: the client never
    holds the body either."""
    left = size - len(head) - len(tail)
    chunk = b"a" * MB
    yield head
    while left > 0:
        yield chunk[:left]
        left -= MB
    yield tail


def json_body(size: int) -> Iterator[bytes]:
    return streamed(b'{"prompt": "', size, b'"}')


def multipart_body(size: int) -> Iterator[bytes]:
    """A ``file`` part, a PNG by its first bytes."""
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file; filename=big.png\r\n"
        "Content-Type: image/png\r\n\r\n"
    ).encode() + b"\x89PNG\r\n\x1a\n"
    return streamed(head, size, f"\r\n--{BOUNDARY}--\r\n".encode())


@dataclass
class Guarded:
    live: LiveServer
    tmpdir: Path
    key: str

    @property
    def pid(self) -> int:
        assert self.live.process is not None
        return self.live.process.pid

    def post(self, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(self.live.url + path, content=body, headers=headers, timeout=60)


class Footprint:
    """How far the server's peak RSS rose above its RSS before the block, and what it wrote (files,
    logs, database: ``write()`` calls, which sockets do not use) meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_growth = 0
        self.written = 0

    def _vm(self, field: str) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        return int(next(s for s in status if s.startswith(field)).split()[1]) * 1024

    def __enter__(self) -> Footprint:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # peak RSS (VmHWM) := RSS now
        self._rss = self._vm("VmRSS:")
        self._written = psutil.Process(self.pid).io_counters().write_chars
        return self

    def __exit__(self, *_: object) -> None:
        self.rss_growth = self._vm("VmHWM:") - self._rss
        self.written = psutil.Process(self.pid).io_counters().write_chars - self._written


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    root = tmp_path_factory.mktemp("guards")
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    env = {**SERVER_ENV, "TMPDIR": str(tmpdir), "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor")}
    live = LiveServer(data_dir=root / "data", port=free_port(), env=env)
    live.log_path = root / "server.log"
    command = [sys.executable, "-m", "openreel", "serve", "--port", str(live.port), "--data-dir"]
    with live.log_path.open("ab") as log:
        process = subprocess.Popen(
            [*command, str(live.data_dir)], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    live.process = process
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"server exited:\n{live.log()}"
            assert time.monotonic() < deadline, f"server not answering:\n{live.log()}"
            try:
                httpx.get(live.url + "/healthz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield Guarded(live, tmpdir, live.new_key())
    finally:
        # Nothing here needs a clean shutdown, which would wait for the worker to load its engine.
        server = psutil.Process(process.pid)
        for each in [server, *server.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                each.kill()
        process.wait()


def test_without_a_key_a_big_body_is_never_read(guarded: Guarded) -> None:
    """Three unauthenticated 100 MB JSON bodies at once, one per protocol: each its own 401."""
    with Footprint(guarded.pid) as footprint, ThreadPoolExecutor(3) as pool:
        replies = {
            name: pool.submit(guarded.post, path, json_body(100 * MB), JSON)
            for name, (path, _, _) in PROTOCOLS.items()
        }
        answers = {name: (r.result().status_code, r.result().json()) for name, r in replies.items()}
    assert answers == {name: (401, missing) for name, (_, _, missing) in PROTOCOLS.items()}
    assert footprint.rss_growth < 50 * MB, footprint.rss_growth


@pytest.mark.parametrize("path", ["/v2/uploads", "/v1/videos"])
def test_without_a_key_a_big_upload_is_neither_held_nor_spooled(guarded: Guarded, path: str) -> None:
    before = sorted(guarded.tmpdir.rglob("*"))
    with Footprint(guarded.pid) as footprint:
        reply = guarded.post(path, multipart_body(100 * MB), MULTIPART)
    assert reply.status_code == 401
    assert footprint.rss_growth < 50 * MB, footprint.rss_growth
    assert footprint.written < MB, footprint.written
    assert sorted(guarded.tmpdir.rglob("*")) == before


def test_bad_and_inactive_keys_keep_each_protocols_answer(guarded: Guarded) -> None:
    inactive = guarded.live.new_key()
    database = Database(Settings(data_dir=guarded.live.data_dir).resolved_database_url())
    try:
        with database.session() as session:
            key = accounts.find_key(session, inactive)
            assert key is not None
            key.active = False
    finally:
        database.dispose()
    for name, (path, auth, missing) in PROTOCOLS.items():
        form = guarded.post(path, multipart_body(MB), MULTIPART)
        assert (form.status_code, form.json()) == (401, missing), name
        wrong = guarded.post(path, b'{"prompt": "x"}', {**JSON, **auth("afk_not-a-real-key")})
        assert wrong.status_code == 401, (name, wrong.text)
        assert wrong.json()["error"] != missing["error"], name
        off = guarded.post(path, b'{"prompt": "x"}', {**JSON, **auth(inactive)})
        assert off.status_code == 403 and "inactive" in str(off.json()["error"]), (name, off.text)
    query_key = guarded.post(f"{GOOGLE_PREDICT}?alt=json&key=afk_query-key", b"{}", JSON).json()
    assert query_key["error"]["message"].startswith("API key not valid")
    # The access log names that request, not the key in its query.
    log = guarded.live.log_path
    assert log is not None
    until(lambda: "predictLongRunning?alt=json&key=REDACTED" in log.read_text(), 10, "the request logged")
    assert "afk_query-key" not in log.read_text()


def test_with_a_key_a_body_over_the_cap_is_a_413_in_each_protocols_shape(guarded: Guarded) -> None:
    settings = Settings(max_upload_image_bytes=int(SERVER_ENV["OPENREEL_MAX_UPLOAD_IMAGE_BYTES"]))
    shapes = {
        "apiframe": lambda body: body["error"].startswith("Request body too large"),
        "google": lambda body: body["error"]["code"] == 413 and body["error"]["status"] == "INVALID_ARGUMENT",
        "openai": lambda body: body["error"]["code"] == "request_too_large",
    }
    for name, (path, auth, _) in PROTOCOLS.items():
        cap = body_limit(settings, path, "application/json")
        headers = {**JSON, **auth(guarded.key)}
        declared = {**headers, "Content-Length": str(cap + 1)}
        with Footprint(guarded.pid) as footprint:
            refused = guarded.post(path, json_body(cap + 1), declared)  # answered before it is read
        assert refused.status_code == 413 and shapes[name](refused.json()), (name, refused.text)
        assert footprint.rss_growth < 5 * MB, footprint.rss_growth
        chunked = guarded.post(path, json_body(cap + MB), headers)  # cut off once past the cap
        assert chunked.status_code == 413 and shapes[name](chunked.json()), (name, chunked.text)
        assert chunked.headers["x-content-type-options"] == "nosniff"
    bearer = PROTOCOLS["openai"][1](guarded.key)
    image = guarded.post("/v1/videos", multipart_body(8 * MB), {**MULTIPART, **bearer})
    assert image.status_code == 413 and shapes["openai"](image.json())
    size = 60 * MB
    declared = {**MULTIPART, "X-API-Key": guarded.key, "Content-Length": str(size)}
    with Footprint(guarded.pid) as footprint:
        upload = guarded.post("/v2/uploads", multipart_body(size), declared)
    assert upload.status_code == 413 and shapes["apiframe"](upload.json())
    assert footprint.written < MB, footprint.written


def test_the_largest_valid_google_request_fits_under_the_cap(guarded: Guarded) -> None:
    """Three reference images of the full image size, base64-encoded: the route reads and judges it."""
    head = png(64, 64)
    image = base64.b64encode(head + bytes(int(SERVER_ENV["OPENREEL_MAX_UPLOAD_IMAGE_BYTES"]) - len(head)))
    inline = {"bytesBase64Encoded": image.decode(), "mimeType": "image/png"}
    reference = {"image": inline, "referenceType": "asset"}
    body = {
        "instances": [{"prompt": "p" * 4000, "referenceImages": [reference] * 3}],
        "parameters": {"durationSeconds": 8, "negativePrompt": "n" * 2000},
    }
    reply = httpx.post(
        guarded.live.url + GOOGLE_PREDICT, json=body, headers={"x-goog-api-key": guarded.key}, timeout=60
    )
    assert reply.status_code != 413 and "referenceImages" in reply.json()["error"]["message"], reply.text


def test_files_are_served_as_what_they_are(guarded: Guarded) -> None:
    polyglot = png(8, 8) + b"<html><script>alert(document.domain)</script></html>"
    stored = httpx.post(
        guarded.live.url + "/v2/uploads",
        files={"file": ("page.html", polyglot, "text/html")},
        headers={"X-API-Key": guarded.key},
    )
    assert stored.status_code == 201 and stored.json()["contentType"] == "image/png"
    assert stored.headers["x-content-type-options"] == "nosniff"
    served = httpx.get(stored.json()["url"])
    assert served.content == polyglot
    assert served.headers["content-type"] == "image/png"
    assert served.headers["content-disposition"] == f'attachment; filename="{stored.json()["id"]}.png"'
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == "sandbox"

    job_id = str(uuid.uuid4())
    result = guarded.live.data_dir / "files" / "results" / job_id / "1.mp4"
    result.parent.mkdir(parents=True)
    result.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(100))
    signer = Signer(Settings(data_dir=guarded.live.data_dir).resolved_secret())
    video = httpx.get(signer.url(guarded.live.url, f"results/{job_id}/1.mp4", ttl_s=60))
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.headers["content-disposition"] == f'inline; filename="openreel-{job_id}.mp4"'
    assert video.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(signer.url(guarded.live.url, "uploads/gone.png", ttl_s=60)).status_code == 404

    models = httpx.get(guarded.live.url + "/v2/models")
    assert models.status_code == 200 and models.headers["x-content-type-options"] == "nosniff"
    studio = httpx.get(guarded.live.url + "/studio")
    assert studio.headers.get_list("x-content-type-options") == ["nosniff"]


def test_s3_links_carry_the_type_and_disposition(tmp_path: Path) -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="media")
        storage = S3Storage(bucket="media", spool_dir=tmp_path, region="us-east-1")
        staged = storage.staging_path("uploads/u.png")
        staged.write_bytes(png(4, 4))
        storage.commit(staged, "uploads/u.png")
        # The responses the protocols make of what the storage says (only its storage is read).
        svc = SimpleNamespace(storage=storage)
        redirect = stored_file(svc, "uploads/u.png", "image/png", redirect=True, disposition="attachment")
        streamed = stored_file(svc, "uploads/u.png", "image/png", redirect=False, disposition="attachment")
        gone = stored_file(svc, "uploads/none.png", "image/png", redirect=False, disposition=None)
    assert redirect is not None and streamed is not None and gone is None
    assert redirect.status_code == 307 and redirect.headers["content-security-policy"] == "sandbox"
    query = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert query["response-content-type"] == ["image/png"]
    assert query["response-content-disposition"] == ["attachment"]
    assert streamed.headers["content-disposition"] == "attachment"
    assert streamed.headers["content-length"] == str(len(png(4, 4)))
    assert streamed.headers["content-security-policy"] == "sandbox"
