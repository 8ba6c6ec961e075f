"""Hostile input, against a server with production settings (private URLs refused): every case is a
clear 4xx, or a job that fails with a clear error and a full refund. Never a 5xx, never a charge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openreel import netguard
from openreel.settings import Settings
from openreel.storage.images import InputError, fetch

from support import LiveServer, QuietHandler, loopback, png, quick_server

# One worker runs this module, so its module-scoped fixtures start once.
pytestmark = pytest.mark.xdist_group("hostile")

BASE = {"prompt": "p", "model": "veo-3.1-fast"}


@pytest.fixture(scope="module")
def local_host() -> Iterator[tuple[str, list[str]]]:
    """A loopback server with a real PNG (so a refusal is the guard's doing, not a 404)."""
    hits: list[str] = []
    picture = png(64, 64)

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            if self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(picture)))
            self.end_headers()
            self.wfile.write(picture)

        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

    with loopback(Handler) as url:
        yield url.rsplit(":", 1)[1], hits


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "OPENREEL_WEBHOOK_ATTEMPTS": "1",
        "OPENREEL_X264_PRESET": "ultrafast",
        "OPENREEL_RATE_LIMIT_PER_MINUTE": "0",
        "OPENREEL_MAX_CONCURRENT_JOBS": "100",
    }
    with quick_server(tmp_path_factory.mktemp("strict"), env) as live:
        yield live


BAD_BODIES: list[tuple[str, bytes]] = [
    ("deep array", b"[" * 100_000 + b"]" * 100_000),
    ("deep object", b'{"prompt":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b',"model":"veo-3.1-fast"}'),
    ("top-level array", b"[1, 2]"),
    ("top-level string", b'"generate"'),
    ("truncated", b'{"prompt": "a", "model": "veo-3.1-fast"'),
    ("invalid utf-8", b'{"prompt":"\xff\xfe","model":"veo-3.1-fast"}'),
    ("lone surrogate", b'{"prompt":"\\ud800","model":"veo-3.1-fast"}'),
    ("huge integer", b'{"prompt":"a","model":"veo-3.1-fast","veoParams":{"seed":' + b"9" * 5000 + b"}}"),
    ("NaN", b'{"prompt":"a","model":"veo-3.1-fast","veoParams":{"seed":NaN}}'),
    ("500 kB prompt", json.dumps({**BASE, "prompt": "a" * 500_000}).encode()),  # bigger: a 413 (body cap)
    ("NUL in prompt", json.dumps({**BASE, "prompt": "a\u0000b"}).encode()),
    ("NUL in webhook", json.dumps({**BASE, "webhookUrl": "http://example.com/\u0000"}).encode()),
    ("space in URL", json.dumps({**BASE, "veoParams": {"image": "http://exa mple.com/a.png"}}).encode()),
    ("file URL", json.dumps({**BASE, "veoParams": {"image": "file:///etc/passwd"}}).encode()),
    (
        "gopher URL",
        json.dumps({**BASE, "veoParams": {"last_frame": "gopher://127.0.0.1:6379/_INFO"}}).encode(),
    ),
    ("object as URL", json.dumps({**BASE, "veoParams": {"image": {"url": "http://a/b.png"}}}).encode()),
    ("numbers as references", json.dumps({**BASE, "veoParams": {"reference_images": [1, 2]}}).encode()),
    ("nested unknown key", json.dumps({**BASE, "veoParams": {"extra": {"deep": True}}}).encode()),
    ("boolean duration", json.dumps({**BASE, "veoParams": {"duration": True}}).encode()),
]


@pytest.mark.parametrize(("name", "body"), BAD_BODIES, ids=[name for name, _ in BAD_BODIES])
def test_malformed_and_oversized_bodies_are_a_clear_400(strict: LiveServer, name: str, body: bytes) -> None:
    key = strict.new_key(credits=10)
    with strict.client(key) as client:
        response = client.post(
            "/v2/videos/generate", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, f"{name}: {response.status_code} {response.text[:200]}"
        assert response.json()["error"]
        assert client.get("/v2/me").json()["team"]["credits"] == 10


def test_ssrf_targets_are_refused_at_submit_and_never_fetched(
    strict: LiveServer, local_host: tuple[str, list[str]]
) -> None:
    port, hits = local_host
    targets = [
        f"http://127.0.0.1:{port}/a.png",
        f"http://localhost:{port}/a.png",
        f"http://[::ffff:127.0.0.1]:{port}/a.png",
        f"http://0x7f000001:{port}/a.png",
        f"http://2130706433:{port}/a.png",
        f"http://127.1:{port}/a.png",
        "http://[::1]/a.png",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.1/a.png",
        f"http://127.0.0.1:{port}/redirect",
    ]
    key = strict.new_key(credits=100)
    hits.clear()
    with strict.client(key) as client:
        refusals = [
            client.post("/v2/videos/generate", json={**BASE, "veoParams": {"duration": 4, "image": url}})
            for url in targets
        ]
        assert client.get("/v2/me").json()["team"]["credits"] == 100
        assert client.get("/v2/jobs").json()["jobs"] == []
    for url, response in zip(targets, refusals, strict=True):
        assert response.status_code == 400, (url, response.text)
        message = response.json()["details"]["veoParams.image"][0]
        assert "non-public" in message or "cannot resolve" in message, (url, message)
    assert hits == [], "a refused URL was fetched anyway"


def test_redirect_chains_are_checked_at_every_hop(
    local_host: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first hop is let through as if public; its redirect to the metadata address is refused."""
    port, hits = local_host
    real_resolve = netguard.resolve

    def resolve(host: str, port_: int, allow_private: bool, timeout_s: float) -> str:
        return "127.0.0.1" if host == "cdn.test" else real_resolve(host, port_, allow_private, timeout_s)

    monkeypatch.setattr(netguard, "resolve", resolve)
    hits.clear()
    with pytest.raises(InputError, match=r"169\.254\.169\.254"):
        fetch(f"http://cdn.test:{port}/redirect", Settings(), max_bytes=10_000)
    assert hits == ["/redirect"]


def test_private_webhook_targets_are_refused_at_submit_and_never_called(
    strict: LiveServer, local_host: tuple[str, list[str]]
) -> None:
    port, hits = local_host
    key = strict.new_key(credits=10)
    hits.clear()
    with strict.client(key) as client:
        response = client.post(
            "/v2/videos/generate",
            json={
                **BASE,
                "veoParams": {"duration": 4, "generate_audio": False},
                "webhookUrl": f"http://127.0.0.1:{port}/hook",
            },
        )
        assert response.status_code == 400
        assert "OPENREEL_ALLOW_PRIVATE_URLS" in response.json()["details"]["webhookUrl"][0]
        assert client.get("/v2/me").json()["team"]["credits"] == 10
    assert hits == []


def test_decompression_bombs_are_refused_as_they_are_uploaded(strict: LiveServer) -> None:
    """Its header read at once: a 400 then, not a job charged that fails when its image is decoded (which
    still checks it, for files stored before: tests/test_inputs.py)."""
    bomb = png(12_000, 12_000)
    assert len(bomb) < 2 * 1024 * 1024
    key = strict.new_key(credits=10)
    with strict.client(key) as client:
        upload = client.post("/v2/uploads", files={"file": ("bomb.png", bomb, "image/png")})
        assert upload.status_code == 400
        assert upload.json()["details"]["file"] == ["the image is 12000x12000, over the 40000000-pixel limit"]
        inline = client.post(
            "/v1/videos",
            headers={"Authorization": f"Bearer {key}"},
            files={"input_reference": ("bomb.png", bomb, "image/png")},
            data={"prompt": "p", "seconds": "4"},
        )
        assert inline.status_code == 400 and "pixel limit" in inline.json()["error"]["message"], inline.text
        assert client.get("/v2/me").json()["team"]["credits"] == 10
        assert client.get("/v2/jobs").json()["jobs"] == []


def test_oversized_uploads_and_headers(strict: LiveServer, tmp_path: Path) -> None:
    key = strict.new_key()
    with strict.client(key) as client:
        big = b"\x89PNG\r\n\x1a\n" + bytes(26 * 1024 * 1024)
        assert client.post("/v2/uploads", files={"file": ("big.png", big)}).status_code == 400
        too_long = client.post("/v2/videos/generate", json=BASE, headers={"Idempotency-Key": "k" * 10_000})
        assert too_long.status_code == 400
    assert httpx.get(strict.url + "/v2/me", headers={"X-API-Key": "afk_" + "x" * 8_000}).status_code == 401
    try:
        giant = httpx.get(strict.url + "/v2/me", headers={"X-API-Key": "afk_" + "x" * 100_000}).status_code
    except httpx.TransportError:
        giant = None  # the server may close the connection before the client has finished sending
    assert giant in (None, 400, 401, 431)
    assert httpx.get(strict.url + "/v2/models").status_code == 200
    assert httpx.get(strict.url + "/v2/files/../../etc/passwd?exp=9999999999&sig=x").status_code in (403, 404)
