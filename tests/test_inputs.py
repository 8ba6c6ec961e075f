"""Fetching and decoding request images: private hosts, redirects, sizes, non-images, pixel bombs."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from openreel import netguard
from openreel.netguard import BlockedURL, pin_url
from openreel.settings import Settings
from openreel.storage.images import InputError, decode_image, fetch

from support import QuietHandler, loopback, png

HOSTS: list[str] = []


@pytest.fixture
def host() -> Iterator[str]:
    routes = {
        "/ok.png": png(8, 8),
        "/big.bin": b"\x89PNG\r\n\x1a\n" + bytes(4096),
        "/clip.mp4": b"\x00\x00\x00\x18ftypisom" + bytes(4096),
        "/page.html": b"<!doctype html><title>a page around an image</title>",
    }

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            HOSTS.append(self.headers["Host"])
            if self.path.startswith("/drip-"):
                self.drip()
                return
            if self.path.startswith("/loop"):
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
                return
            if self.path == "/hop":
                self.send_response(301)
                self.send_header("Location", "/ok.png")
                self.end_headers()
                return
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def drip(self) -> None:
            """An image answered a few bytes at a time, each well within a read timeout: the headers
            (/drip-head) or the body (/drip-body; /drip-unsized: without a length, ending where the
            connection does), over about 4 s in all."""
            body = png(8, 8)
            length = "" if self.path == "/drip-unsized" else f"Content-Length: {len(body)}\r\n"
            head = f"HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n".encode()
            slow = head if self.path == "/drip-head" else body
            pause = 4 / len(slow)
            try:
                if slow is body:
                    self.wfile.write(head)
                for i in range(0, len(slow), 1):
                    self.wfile.write(slow[i : i + 1])
                    time.sleep(pause)
                if slow is head:
                    self.wfile.write(body)
            except OSError:  # the client hung up, as it should
                pass

    with loopback(Handler) as url:
        yield url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x.png",
        "http://localhost:9/x.png",
        "http://[::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://[::ffff:10.0.0.1]/x.png",
        "http://[fe80::1]/x.png",
        "http://[fd00::1]/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x",
        "http://192.168.1.1/x",
        "http://172.16.0.1/x",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://2130706433/x",
    ],
)
def test_non_public_addresses_are_refused_by_default(url: str) -> None:
    with pytest.raises(InputError, match="non-public"):
        fetch(url, Settings(), max_bytes=1000)


def test_redirects_to_private_hosts_are_refused(host: str) -> None:
    with pytest.raises(InputError, match="non-public"):
        fetch(host + "/hop", Settings(), max_bytes=1000)


def test_connections_go_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name is resolved once and the request pinned to that address (no second DNS answer)."""
    calls: list[str] = []

    def fake_getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if kwargs.get("flags") == socket.AI_NUMERICHOST:
            raise socket.gaierror("not an address")
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    url, headers, extensions = pin_url("https://images.example.com/a.png?x=1", False, timeout_s=5)
    assert url == "https://93.184.216.34:443/a.png?x=1"
    assert headers == {"Host": "images.example.com"} and extensions == {"sni_hostname": "images.example.com"}
    assert calls == ["images.example.com"]
    with pytest.raises(BlockedURL, match="credentials"):
        pin_url("http://user:pw@images.example.com/a.png", False, timeout_s=5)


def test_a_name_that_does_not_resolve_reads_as_one_that_resolves_to_a_refused_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Else a caller could ask which names this server's DNS knows (an intranet's, a cluster's)."""
    answers = {"wiki.corp.example": "10.0.0.5", "images.example.com": "93.184.216.34"}

    def fake_getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if kwargs.get("flags") == socket.AI_NUMERICHOST or host not in answers:
            raise socket.gaierror("no such name")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    said = []
    for host in ("wiki.corp.example", "no.corp.example"):
        with pytest.raises(InputError, match="non-public") as raised:
            fetch(f"http://{host}/a.png", Settings(), max_bytes=1000)
        said.append(str(raised.value).replace(host, "HOST"))
    assert said[0] == said[1] and "10.0.0.5" not in said[0]
    # Where private addresses are allowed (development), a name that does not resolve says so.
    with pytest.raises(netguard.NoSuchHost, match=r"cannot resolve host 'no\.corp\.example'"):
        pin_url("http://no.corp.example/a.png", True, timeout_s=5)


def test_a_resolver_that_does_not_answer_is_given_the_fetch_s_time_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """getaddrinfo has no timeout: a name server that never answers must not hold a fetch (or a
    submission, or a delivery) past its own time, nor its lookups pile up threads."""
    released = threading.Event()
    monkeypatch.setattr(netguard, "_LOOKUPS", threading.BoundedSemaphore(1))

    real = socket.getaddrinfo

    def silent(host: str, *args: Any, **kwargs: Any) -> list[tuple[object, ...]]:
        if kwargs.get("flags") == socket.AI_NUMERICHOST:
            return real(host, *args, **kwargs)  # no name server asked
        released.wait(30)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(socket, "getaddrinfo", silent)
    started = time.monotonic()
    try:
        with pytest.raises(InputError, match=r"resolving host 'images\.example\.com' took longer than 1 s"):
            fetch("https://images.example.com/a.png", Settings(fetch_timeout_s=1.0), max_bytes=1000)
        # The first lookup still waits on the name server, holding the one slot here: the server's load,
        # not the URL's fault (the submit's answer is a 429 to retry).
        with pytest.raises(netguard.LookupsBusy, match="too many name lookups are under way"):
            fetch("https://images.example.com/b.png", Settings(fetch_timeout_s=0.5), max_bytes=1000)
        with pytest.raises(InputError, match="non-public"):  # an address needs no lookup, nor a slot
            fetch("https://10.1.2.3/a.png", Settings(fetch_timeout_s=0.5), max_bytes=1000)
    finally:
        released.set()
    assert time.monotonic() - started < 5


def test_the_host_header_survives_pinning(host: str) -> None:
    port = host.rsplit(":", 1)[1]
    HOSTS.clear()
    assert fetch(f"http://localhost:{port}/ok.png", Settings(allow_private_urls=True), max_bytes=10_000)
    assert [f"localhost:{port}"] == HOSTS


def test_schemes_redirects_and_size_limits(host: str) -> None:
    dev = Settings(allow_private_urls=True)
    assert fetch(host + "/hop", dev, max_bytes=10_000) == png(8, 8)
    with pytest.raises(InputError, match="redirected more than"):
        fetch(host + "/loop", dev, max_bytes=1000)
    with pytest.raises(InputError, match="larger than 1000 bytes"):
        fetch(host + "/big.bin", dev, max_bytes=1000)
    with pytest.raises(InputError, match="HTTP 404"):
        fetch(host + "/none", dev, max_bytes=1000)
    with pytest.raises(InputError, match="only http"):
        fetch("file:///etc/passwd", dev, max_bytes=1000)


@pytest.mark.parametrize("part", ["head", "body", "unsized"])
def test_a_host_that_answers_a_byte_at_a_time_is_cut_off_at_the_deadline(host: str, part: str) -> None:
    """The fetch's time bounds the whole exchange, not each read: a trickle cannot hold a fetch slot."""
    quick = Settings(allow_private_urls=True, fetch_timeout_s=1.0)
    with pytest.raises(InputError, match=r"/drip-\w+ took longer than 1 s"):
        fetch(f"{host}/drip-{part}", quick, max_bytes=10_000)
    assert fetch(f"{host}/drip-{part}", Settings(allow_private_urls=True), max_bytes=10_000) == png(8, 8)


def test_a_url_that_is_not_an_image_says_what_it_is_and_which_types_are_taken(host: str) -> None:
    """Refused by its first bytes, whatever its size: a video is not called too large for an image."""
    dev = Settings(allow_private_urls=True)
    for path, found in (("/clip.mp4", "is a video file (video/mp4)"), ("/page.html", "is an HTML or XML")):
        with pytest.raises(InputError) as refused:
            fetch(host + path, dev, max_bytes=1000)
        message = str(refused.value)
        assert found in message and "not an image (accepted: PNG, JPEG, WebP or GIF)" in message, message
        assert "MP4," not in message and "MP3" not in message, message
    mp4 = b"\x00\x00\x00\x18ftypisom" + bytes(64)
    with pytest.raises(InputError) as refused:
        decode_image(mp4, source="u", max_pixels=100)
    assert (
        str(refused.value) == "u is a video file (video/mp4), not an image (accepted: PNG, JPEG, WebP or GIF)"
    )


def test_decoding_refuses_non_images_and_pixel_bombs() -> None:
    assert decode_image(png(4, 3), source="u", max_pixels=100).size == (4, 3)
    with pytest.raises(InputError, match="not an image"):
        decode_image(b"<svg></svg>", source="u", max_pixels=100)
    with pytest.raises(InputError, match="over the 100-pixel limit"):
        decode_image(png(20, 20), source="u", max_pixels=100)
    with pytest.raises(InputError, match="could not be decoded"):
        decode_image(png(4, 3)[:40], source="u", max_pixels=100)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_areas_decode_as_white(mode: str) -> None:
    """A cut-out (a product shot, a character) keeps a white background, not what lay under alpha 0."""
    image = Image.new("RGBA", (4, 2), (10, 200, 30, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    if mode == "P":
        image = image.convert("RGB").convert("P")
        image.info["transparency"] = image.getpixel((0, 0))
    elif mode == "LA":
        image = image.convert("LA")
    out = io.BytesIO()
    image.save(out, format="PNG")
    decoded = decode_image(out.getvalue(), source="u", max_pixels=100)
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (255, 255, 255)
    if mode != "P":
        assert 120 <= decoded.getpixel((1, 0))[0] <= 135  # blended half-way to white
