"""Typed errors of the SDK: one class per way a call can go wrong, carrying the server's words."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class OpenreelError(Exception):
    """Any error answered by the server (``status`` is its HTTP status, ``body`` its JSON)."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body or {}

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait before trying again (a 429's or a 503's Retry-After)."""
        return _retry_seconds(self.body.get("retryAfter"))


class UnexpectedResponseError(OpenreelError):
    """A success status with a body that is not the API's answer (a proxy's HTML page, an empty body), or
    a redirect, which the client does not follow."""


class AuthenticationError(OpenreelError):
    """401 or 403: the key is missing, unknown or inactive."""


class ValidationError(OpenreelError):
    """400: ``details`` maps JSON paths of the request to what is wrong there."""

    @property
    def details(self) -> dict[str, list[str]]:
        return details_of(self.body)


class InsufficientCreditsError(OpenreelError):
    """402: ``required`` and ``available`` are openreel's counts; None from a proxy, which says neither."""

    @property
    def required(self) -> int | None:
        return _count(self.body.get("creditsRequired"))

    @property
    def available(self) -> int | None:
        return _count(self.body.get("creditsAvailable"))


def _count(value: object) -> int | None:
    """A whole number of credits, sent as a number or a string (Google's form); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # however large: float() would overflow
    if not isinstance(value, (float, str)):
        return None
    if isinstance(value, str) and value.strip().isdecimal():
        try:
            return int(value)  # exact where float() would round
        except ValueError:  # past Python's 4,300 digits: no count anyone means
            return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


class NotFoundError(OpenreelError):
    pass


class ConflictError(OpenreelError):
    """409: an Idempotency-Key reused with another body, or a job in the wrong state."""


class RateLimitError(OpenreelError):
    """429: too many requests or jobs at once; ``retry_after`` says when to try again."""


class ServerError(OpenreelError):
    """5xx: the server or its engine is unavailable."""


class NetworkError(Exception):
    """No answer at all: the server could not be reached, or did not answer in time."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(f"{url}: {self.what} ({type(cause).__name__}: {cause or 'no details'})")
        self.url = url
        self.cause = cause

    what = "no answer"


class ServerUnreachable(NetworkError):
    """Nothing listens there, the name does not resolve, or the connection broke."""

    what = "server unreachable"


class RequestTimedOut(NetworkError):
    """The server took longer than the client's timeout."""

    what = "request timed out"


@contextmanager
def network_errors(url: str) -> Iterator[None]:
    """httpx's transport failures as the SDK's own errors, so callers need not import httpx."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RequestTimedOut(url, exc) from exc
    except httpx.TransportError as exc:
        raise ServerUnreachable(url, exc) from exc
    except (httpx.RequestError, httpx.InvalidURL) as exc:  # a body that cannot be decoded, a bad URL
        raise NetworkError(url, exc) from exc


class JobError(Exception):
    """A job that ended without a video; ``job`` is its last state."""

    def __init__(self, job: Any) -> None:
        super().__init__(f"job {job.id} ended {job.status}: {job.error}")
        self.job = job


class JobFailed(JobError):
    pass


class JobCancelled(JobError):
    pass


class WaitTimeout(TimeoutError):
    def __init__(self, job: Any, seconds: float) -> None:
        super().__init__(f"job {job.id} still {job.status} after {seconds:.0f} s")
        self.job = job


_BY_STATUS: dict[int, type[OpenreelError]] = {
    400: ValidationError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
}


def _retry_seconds(value: object) -> float | None:
    """Retry-After as seconds from now: RFC 9110 allows a number of seconds or an HTTP-date; anything
    else a server or proxy sends is None rather than an exception in the caller's error handling."""
    if isinstance(value, str):
        try:
            return _retry_seconds(float(value))
        except ValueError:
            pass
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if moment.tzinfo is None:  # "-0000": UTC, said without a zone
            moment = moment.replace(tzinfo=UTC)
        return max((moment - datetime.now(UTC)).total_seconds(), 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(float(value), 0.0)


def error_for(status: int, body: dict[str, Any], retry_after: str | None = None) -> OpenreelError:
    seconds = _retry_seconds(retry_after)
    if seconds is not None:  # counted from now, when the answer came, not when the property is read
        body = {**body, "retryAfter": seconds}
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else OpenreelError)
    return cls(status, message_of(body) or f"HTTP {status}", body)


def details_of(body: dict[str, Any]) -> dict[str, list[str]]:
    """openreel's ``details`` (JSON path to messages); empty for what another server calls that."""
    details = body.get("details")
    if not isinstance(details, dict):
        return {}
    return {str(path): [str(m) for m in (v if isinstance(v, list) else [v])] for path, v in details.items()}


def message_of(body: dict[str, Any]) -> str | None:
    """The words of an error body: openreel's ``error``, Google's ``error.message`` or a bare ``message``."""
    error = body.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return str(error or body.get("message") or "") or None
