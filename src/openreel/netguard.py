"""Outbound HTTP to user-supplied URLs (request images, webhooks) without server-side request forgery.

A host name is resolved once, every address it resolves to must be public (unless private
addresses are allowed for development), and the connection then goes to the checked address with
the original Host header and TLS server name. A second DNS answer therefore cannot steer the
request to an internal address (DNS rebinding), and each redirect hop is checked the same way.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx


class BlockedURL(Exception):
    """The URL may not be requested; the message says why."""


class Unresolved(BlockedURL):
    """The host does not resolve (now): unlike a refused address, this may change."""


class NoSuchHost(Unresolved):
    """The name servers know no such host."""


class LookupsBusy(Unresolved):
    """This process has as many name lookups under way as it allows: the host was not asked about, and
    a moment later it may be."""


class DeadlinePassed(httpx.TimeoutException):
    """The exchange took longer than its time in all: a timeout like httpx's own, worth another try."""


# Python's own classification (``is_global``) is the base; these are the IPv6 ranges it lets through
# on the Python versions we support although they can reach IPv4 hosts behind them, or private
# networks: the deprecated IPv4-compatible form ``::a.b.c.d`` (RFC 4291 2.5.5.1), the local-use NAT64
# prefix (RFC 8215, in Python's list only from 3.12.4) and the deprecated site-local prefix (RFC 3879,
# still routed inside some networks). The well-known NAT64 prefix, SIIT's IPv4-translated form
# (``::ffff:0:a.b.c.d``, RFC 2765), 6to4 and IPv4-mapped addresses are judged by the IPv4 address they
# carry.
_REFUSED_V6 = (
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("fec0::/10"),
)
_CARRY_V4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::ffff:0:0:0/96"))


def public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return public(embedded)
        if any(address in network for network in _CARRY_V4):
            return public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(address in network for network in _REFUSED_V6):
            return False
    return address.is_global and not address.is_multicast


# Name lookups under way at once in this process. One that outlives its caller's time runs on until the
# system's resolver gives up (half a minute with glibc's defaults): a host whose name servers never answer
# must not pile up threads, one per request naming it.
_LOOKUPS = threading.BoundedSemaphore(32)


def _lookup(host: str, port: int, timeout_s: float) -> list[Any]:
    """``getaddrinfo`` within ``timeout_s``: it has no timeout of its own, and a resolver that does not
    answer would hold the request or delivery waiting on it for as long as the system's resolver tries.
    A name is looked up on a thread of its own, left to end alone; an address needs no lookup."""
    timeout_s = max(timeout_s, 0.0)
    with suppress(socket.gaierror):
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    lookups = _LOOKUPS  # the one released, whatever the module holds by then
    if not lookups.acquire(timeout=timeout_s):
        raise LookupsBusy(f"cannot resolve host {host!r} now: too many name lookups are under way")
    answer: Future[list[Any]] = Future()

    def look_up() -> None:
        try:
            answer.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:
            answer.set_exception(exc)
        finally:
            lookups.release()

    threading.Thread(target=look_up, name="openreel-resolve", daemon=True).start()
    try:
        return answer.result(timeout_s)
    except FutureTimeout as exc:
        raise Unresolved(f"resolving host {host!r} took longer than {round(timeout_s, 1):g} s") from exc
    except socket.gaierror as exc:
        raise NoSuchHost(f"cannot resolve host {host!r}") from exc


def resolve(host: str, port: int, allow_private: bool, timeout_s: float) -> str:
    """One address of ``host`` to connect to, after checking all of them."""
    # One answer, without the address, for a name that does not resolve and one that resolves to a
    # refused address: a caller must not learn what this server's DNS says of names it cannot otherwise
    # see (an intranet's, a cluster's), nor which of them exist.
    refused = (
        f"host {host!r} does not resolve, or only to non-public addresses; refused "
        "(a server for development may allow those with OPENREEL_ALLOW_PRIVATE_URLS=1)"
    )
    try:
        infos = _lookup(host, port, timeout_s)
    except NoSuchHost as exc:
        if allow_private:
            raise
        raise NoSuchHost(refused) from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not allow_private and not all(map(public, addresses)):
        raise BlockedURL(refused)
    return str(addresses[0])


def pin_url(url: str, allow_private: bool, timeout_s: float) -> tuple[str, dict[str, str], dict[str, str]]:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BlockedURL(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlockedURL(f"only http(s) URLs are accepted, got {url!r}")
    if parts.username or parts.password:
        raise BlockedURL("URLs with credentials are not accepted")
    ip = resolve(parts.hostname, port, allow_private, timeout_s)
    literal = f"[{ip}]" if ":" in ip else ip
    pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return pinned, {"Host": host_header}, extensions


@functools.cache
def _verifying() -> ssl.SSLContext:
    """httpx's own verification (its CA bundle, ``SSL_CERT_FILE``), built once per process: building
    it takes about 17 ms of CPU, more than a whole webhook delivery to a nearby host."""
    return httpx.create_ssl_context()


class _Deadline:
    """Ends an exchange when its time is up by shutting its sockets down: httpx's timeout bounds each
    read, so a peer sending its headers or body a byte at a time could otherwise hold the thread (a
    webhook sender's, an image fetch slot) for as long as it liked."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.passed = False
        self._done = False  # the exchange is over: its sockets may be closed, their numbers reused
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._end)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True

    def left(self, late: str) -> float:
        """The seconds left, else ``DeadlinePassed(late)``."""
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise DeadlinePassed(late)
        return remaining

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's ``trace`` hook: each connection's socket, and the TLS socket that replaces it. The
        handshake runs on a socket not yet known here, so its own timeout is cut to what is left (httpcore
        passes ``info`` on to ``start_tls`` as its arguments)."""
        if event == "connection.start_tls.started":
            info["timeout"] = max(self.at - time.monotonic(), 0.001)
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            sock = info["return_value"].get_extra_info("socket")
            with self._lock:
                self._sockets.append(sock)
                if self.passed:
                    _shut(sock)

    def close(self, response: httpx.Response) -> None:
        """``response.close()`` under the lock: a socket it closes could otherwise have its number taken
        by another thread's new connection before the timer shuts it down (httpcore's close of a socket
        does no I/O, so the timer never waits long)."""
        with self._lock:
            response.close()

    def _end(self) -> None:
        with self._lock:
            if self._done:
                return
            self.passed = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    """The plain socket's shutdown, also for a TLS one: ``SSLSocket.shutdown`` first drops its TLS state,
    and a send under way on the request's thread would then go out unencrypted."""
    with suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@contextmanager
def guarded_stream(
    method: str,
    url: str,
    *,
    allow_private: bool,
    timeout_s: float,
    max_redirects: int,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[httpx.Response]:
    """Send a request (following redirects for GET only) with every hop checked and pinned.

    ``timeout_s`` bounds the whole exchange, redirects and the caller's reading of the body included:
    past it, ``DeadlinePassed``.
    """
    late = f"{url} took longer than {timeout_s:g} s"
    with (
        httpx.Client(follow_redirects=False, verify=_verifying()) as client,
        _Deadline(timeout_s) as deadline,
    ):
        current = url
        try:
            for _ in range(max_redirects + 1):
                pinned, host, extensions = pin_url(current, allow_private, deadline.left(late))
                request = client.build_request(
                    method,
                    pinned,
                    content=content,
                    headers={**(headers or {}), **host},
                    timeout=deadline.left(late),
                    extensions={**extensions, "trace": deadline.trace},
                )
                response = client.send(request, stream=True)
                try:
                    if method == "GET" and response.is_redirect:
                        current = urljoin(current, response.headers.get("location", ""))
                        continue
                    yield response
                    # A body read to where the connection ended reads as whole when the deadline cut it.
                    if deadline.passed and response.is_stream_consumed and _ends_with_connection(response):
                        raise DeadlinePassed(late)
                    return
                finally:
                    deadline.close(response)
        except httpx.TransportError as exc:
            if deadline.passed or time.monotonic() >= deadline.at:
                raise DeadlinePassed(late) from exc
            raise
    raise BlockedURL(f"{url} redirected more than {max_redirects} times")


def _ends_with_connection(response: httpx.Response) -> bool:
    """A body neither sized nor chunked: a cut one ends the same way (a sized or chunked body cut short
    is an error of httpx's)."""
    chunked = "chunked" in response.headers.get("transfer-encoding", "").lower()
    return "content-length" not in response.headers and not chunked


def read_limited(
    response: httpx.Response,
    max_bytes: int,
    source: str,
    *,
    head: tuple[int, Callable[[bytes], None]] | None = None,
) -> bytes:
    """The body, refused once it passes ``max_bytes``. ``head``, if given, is ``(n, check)``: ``check``
    sees the first ``n`` bytes (or all of a shorter body) before any size is refused, so that a body of
    the wrong type is refused as such, after one chunk, whatever its size."""
    head_bytes, check = head if head is not None else (0, None)
    declared = response.headers.get("content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > max_bytes
    if too_large and check is None:
        raise BlockedURL(f"{source} is larger than {max_bytes} bytes")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if check is not None and len(body) >= head_bytes:
            check(bytes(body[:head_bytes]))
            check = None
        if check is None and (too_large or len(body) > max_bytes):
            raise BlockedURL(f"{source} is larger than {max_bytes} bytes")
    if check is not None:
        check(bytes(body))
    return bytes(body)
