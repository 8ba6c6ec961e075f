"""``Client`` and ``AsyncClient`` for the Apiframe v2 API of an openreel server (or Apiframe itself).

Each public method is described once as a ``Call`` (method, path, body, how to read the answer);
the two clients differ only in how they send it, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from openreel.protocols.apiframe.schemas import JobAccepted, JobList, JobOut, Me, ModelCatalog, UploadOut
from openreel.sdk.errors import (
    JobCancelled,
    JobFailed,
    UnexpectedResponseError,
    WaitTimeout,
    error_for,
    message_of,
    network_errors,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
KEY_HEADER = "X-API-Key"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")

T = TypeVar("T")
ProgressCallback = Callable[[JobOut], None]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _model(cls: type[BaseModel]) -> Callable[[Any], Any]:
    return cls.model_validate


def _veo_params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _Calls:
    """The API, described once."""

    @staticmethod
    def generate(
        prompt: str,
        *,
        model: str,
        duration: int | None,
        aspect_ratio: str | None,
        resolution: str | None,
        seed: int | None,
        image: str | None,
        last_frame: str | None,
        reference_images: list[str] | None,
        negative_prompt: str | None,
        generate_audio: bool | None,
        enhance_prompt: bool | None,
        sample_count: int | None,
        extend_job_id: str | None,
        extend_video: int | None,
        webhook_url: str | None,
        webhook_events: list[str] | None,
        idempotency_key: str | None,
    ) -> Call[JobAccepted]:
        body: dict[str, Any] = {"prompt": prompt, "model": model}
        params = _veo_params(
            duration=duration,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            seed=seed,
            image=image,
            last_frame=last_frame,
            reference_images=reference_images,
            negative_prompt=negative_prompt,
            generate_audio=generate_audio,
            enhance_prompt=enhance_prompt,
            sample_count=sample_count,
            extend_job_id=extend_job_id,
            extend_video=extend_video,
        )
        if params:
            body["veoParams"] = params
        if webhook_url is not None:
            body["webhookUrl"] = webhook_url
        if webhook_events is not None:
            body["webhookEvents"] = webhook_events
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Call("POST", "/v2/videos/generate", _model(JobAccepted), json=body, headers=headers)

    @staticmethod
    def get_job(job_id: str) -> Call[JobOut]:
        return Call("GET", f"/v2/jobs/{job_id}", _model(JobOut))

    @staticmethod
    def list_jobs(status: str | None, model: str | None, limit: int, cursor: str | None) -> Call[JobList]:
        params = {k: v for k, v in {"status": status, "model": model, "cursor": cursor}.items() if v}
        return Call("GET", "/v2/jobs", _model(JobList), params={**params, "limit": limit})

    @staticmethod
    def cancel(job_id: str) -> Call[JobOut]:
        return Call("POST", f"/v2/jobs/{job_id}/cancel", _model(JobOut))

    @staticmethod
    def delete(job_id: str) -> Call[None]:
        return Call("DELETE", f"/v2/jobs/{job_id}", lambda _: None)

    @staticmethod
    def me() -> Call[Me]:
        return Call("GET", "/v2/me", _model(Me))

    @staticmethod
    def models() -> Call[ModelCatalog]:
        return Call("GET", "/v2/models", _model(ModelCatalog))

    @staticmethod
    def upload(file: str | Path | bytes, filename: str | None) -> Call[UploadOut]:
        if isinstance(file, bytes):
            content, name = file, filename or "upload"
        else:
            path = Path(file)
            content, name = path.read_bytes(), filename or path.name
        return Call("POST", "/v2/uploads", _model(UploadOut), files={"file": (name, content)})


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """The server's JSON error, or its text: what the user reads in the exception."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"error": response.text or response.reason_phrase}


def _answer(call: Call[T], response: httpx.Response) -> T:
    if response.is_error:
        raise error_for(response.status_code, _error_body(response), response.headers.get("retry-after"))
    if response.is_redirect:  # not followed: a POST would arrive as a GET, or the key go to another host
        where = response.headers.get("location")
        says = (
            f"redirects to {where}: use its address as the base URL" if where else "redirects (no Location)"
        )
        raise UnexpectedResponseError(response.status_code, f"the server {says}")
    try:
        return call.parse(response.json() if response.content else None)
    except ValueError as exc:  # not JSON, or not the JSON of this call's answer
        kind = response.headers.get("content-type") or "no content type"
        got = repr(response.content[:200]) if response.content else "an empty body"
        raise UnexpectedResponseError(
            response.status_code, f"not an answer of the API ({kind}): {got}", {"error": str(exc)}
        ) from exc


def _settle(job: JobOut) -> JobOut:
    if job.status == "FAILED":
        raise JobFailed(job)
    if job.status == "CANCELLED":
        raise JobCancelled(job)
    return job


def _download_paths(job: JobOut, destination: str | Path, sample: int) -> tuple[str, Path, Path]:
    """(URL, target, temporary path) of the job's video ``sample`` (an index into ``result.videos``; a
    server from before samples lists none, and has the one video)."""
    if job.result is None:
        raise ValueError(f"job {job.id} has no video (status {job.status})")
    videos = job.result.videos
    url = videos[sample].videoUrl if 0 <= sample < len(videos) else None
    if not videos and sample == 0:
        url = job.result.videoUrl
    if url is None:
        raise ValueError(f"job {job.id} has no video {sample}: see its result.videos")
    target = Path(destination)
    return url, target, target.with_name(f".{target.name}.part")


def _link_request(http: httpx.Client | httpx.AsyncClient, url: str) -> httpx.Request:
    """A result's link carries its own signature: it goes without the API key, which an object store's
    presigned URL (or wherever a redirect leads, followed) would otherwise receive."""
    request = http.build_request("GET", url)
    del request.headers[KEY_HEADER]
    return request


def _download_error(response: httpx.Response) -> Exception:
    """From the read body of a refused download: an expired or altered link says which, and what to do."""
    body = _error_body(response)
    why = message_of(body) or response.reason_phrase
    return error_for(response.status_code, {**body, "error": f"download failed: {why}"})


@dataclass(frozen=True)
class Backoff:
    """Poll intervals: ``start``, growing by ``factor`` up to ``cap`` (as Apiframe's SDK does)."""

    start: float = 1.0
    factor: float = 1.5
    cap: float = 5.0

    def __post_init__(self) -> None:
        if not (self.start > 0 and self.factor >= 1 and self.cap >= self.start and math.isfinite(self.cap)):
            raise ValueError(f"a backoff starts above 0 s and grows (factor >= 1) to a finite cap: {self}")

    def __iter__(self) -> Iterator[float]:
        delay = self.start
        while True:
            yield delay
            delay = min(delay * self.factor, self.cap)


class _Waiting:
    """What ``wait_for`` decides after each poll, the same for both clients: the last pause is cut to
    end at the deadline, where one more poll is made before giving up (a job done just before it counts)."""

    def __init__(self, timeout: float, on_progress: ProgressCallback | None, backoff: Backoff | None) -> None:
        if not timeout >= 0:  # NaN too: no deadline would ever pass
            raise ValueError(
                f"timeout must be a number of seconds, 0 or more (math.inf: no limit), not {timeout}"
            )
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.on_progress = on_progress
        self.delays = iter(backoff or Backoff())

    def pause_after(self, job: JobOut) -> float | None:
        """Seconds to wait before the next poll; None once the job has ended."""
        if self.on_progress is not None:
            self.on_progress(job)
        if job.status in TERMINAL:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(job, self.timeout)
        return min(next(self.delays), left)


def _options(api_key: str | None, base_url: str | None) -> tuple[str, dict[str, str]]:
    key = api_key or os.environ.get("OPENREEL_API_KEY")
    if not key:
        raise ValueError("an API key is needed: pass api_key= or set OPENREEL_API_KEY")
    base = (base_url or os.environ.get("OPENREEL_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    try:
        httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise ValueError(f"the base URL {base!r} is not a URL: {exc}") from None
    return base, {KEY_HEADER: key, "User-Agent": "openreel-python"}


class Client:
    """Synchronous client. ``with Client(api_key=...) as c: c.wait_for(c.generate("...").jobId)``."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base, headers = _options(api_key, base_url)
        self._http = httpx.Client(base_url=base, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        with network_errors(str(self._http.base_url)):
            response = self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                files=call.files,
                headers=call.headers,
            )
        return _answer(call, response)

    def generate(
        self,
        prompt: str,
        *,
        model: str = "veo-3.1-fast",
        duration: int | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        seed: int | None = None,
        image: str | None = None,
        last_frame: str | None = None,
        reference_images: list[str] | None = None,
        negative_prompt: str | None = None,
        generate_audio: bool | None = None,
        enhance_prompt: bool | None = None,
        sample_count: int | None = None,
        extend_job_id: str | None = None,
        extend_video: int | None = None,
        webhook_url: str | None = None,
        webhook_events: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> JobAccepted:
        """Submit a job; image parameters take URLs (``upload()`` turns a local file into one).
        ``extend_job_id`` continues that finished job's video (``extend_video``: which one) by 7 s."""
        options = {k: v for k, v in locals().items() if k not in ("self", "prompt")}
        return self._run(_Calls.generate(prompt, **options))

    def get_job(self, job_id: str) -> JobOut:
        return self._run(_Calls.get_job(job_id))

    def list_jobs(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobList:
        return self._run(_Calls.list_jobs(status, model, limit, cursor))

    def iter_jobs(self, *, status: str | None = None, model: str | None = None) -> Iterator[JobOut]:
        """Every job of the account, newest first, following the cursor."""
        cursor = None
        while True:
            page = self.list_jobs(status=status, model=model, limit=100, cursor=cursor)
            yield from page.jobs
            if not page.hasMore:
                return
            cursor = page.nextCursor

    def cancel(self, job_id: str) -> JobOut:
        return self._run(_Calls.cancel(job_id))

    def delete(self, job_id: str) -> None:
        self._run(_Calls.delete(job_id))

    def me(self) -> Me:
        return self._run(_Calls.me())

    def models(self) -> ModelCatalog:
        return self._run(_Calls.models())

    def upload(self, file: str | Path | bytes, *, filename: str | None = None) -> UploadOut:
        return self._run(_Calls.upload(file, filename))

    def wait_for(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        on_progress: ProgressCallback | None = None,
        backoff: Backoff | None = None,
    ) -> JobOut:
        """Poll until the job ends; returns it COMPLETED or raises JobFailed, JobCancelled, WaitTimeout."""
        waiting = _Waiting(timeout, on_progress, backoff)
        job = self.get_job(job_id)
        while (pause := waiting.pause_after(job)) is not None:
            time.sleep(pause)
            job = self.get_job(job_id)
        return _settle(job)

    def download(self, job: JobOut | str, destination: str | Path, sample: int = 0) -> Path:
        """Stream a COMPLETED job's MP4 to ``destination`` (written under a temporary name first);
        ``sample``: which video of a request for several (``result.videos``)."""
        job = self.get_job(job) if isinstance(job, str) else job
        url, target, partial = _download_paths(job, destination, sample)
        try:
            request = _link_request(self._http, url)
            with (
                network_errors(url),
                closing(self._http.send(request, stream=True, follow_redirects=True)) as response,
            ):
                if not response.is_success:
                    response.read()
                    raise _download_error(response)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target


class AsyncClient:
    """The same API as ``Client``, for asyncio."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base, headers = _options(api_key, base_url)
        self._http = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        with network_errors(str(self._http.base_url)):
            response = await self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                files=call.files,
                headers=call.headers,
            )
        return _answer(call, response)

    async def generate(
        self,
        prompt: str,
        *,
        model: str = "veo-3.1-fast",
        duration: int | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        seed: int | None = None,
        image: str | None = None,
        last_frame: str | None = None,
        reference_images: list[str] | None = None,
        negative_prompt: str | None = None,
        generate_audio: bool | None = None,
        enhance_prompt: bool | None = None,
        sample_count: int | None = None,
        extend_job_id: str | None = None,
        extend_video: int | None = None,
        webhook_url: str | None = None,
        webhook_events: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> JobAccepted:
        options = {k: v for k, v in locals().items() if k not in ("self", "prompt")}
        return await self._run(_Calls.generate(prompt, **options))

    async def get_job(self, job_id: str) -> JobOut:
        return await self._run(_Calls.get_job(job_id))

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobList:
        return await self._run(_Calls.list_jobs(status, model, limit, cursor))

    async def iter_jobs(
        self, *, status: str | None = None, model: str | None = None
    ) -> AsyncIterator[JobOut]:
        cursor = None
        while True:
            page = await self.list_jobs(status=status, model=model, limit=100, cursor=cursor)
            for job in page.jobs:
                yield job
            if not page.hasMore:
                return
            cursor = page.nextCursor

    async def cancel(self, job_id: str) -> JobOut:
        return await self._run(_Calls.cancel(job_id))

    async def delete(self, job_id: str) -> None:
        await self._run(_Calls.delete(job_id))

    async def me(self) -> Me:
        return await self._run(_Calls.me())

    async def models(self) -> ModelCatalog:
        return await self._run(_Calls.models())

    async def upload(self, file: str | Path | bytes, *, filename: str | None = None) -> UploadOut:
        return await self._run(_Calls.upload(file, filename))

    async def download(self, job: JobOut | str, destination: str | Path, sample: int = 0) -> Path:
        job = await self.get_job(job) if isinstance(job, str) else job
        url, target, partial = _download_paths(job, destination, sample)
        try:
            request = _link_request(self._http, url)
            with network_errors(url):
                sent = await self._http.send(request, stream=True, follow_redirects=True)
                async with aclosing(sent) as response:
                    if not response.is_success:
                        await response.aread()
                        raise _download_error(response)
                    with partial.open("wb") as out:
                        async for chunk in response.aiter_bytes():
                            out.write(chunk)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    async def wait_for(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        on_progress: ProgressCallback | None = None,
        backoff: Backoff | None = None,
    ) -> JobOut:
        waiting = _Waiting(timeout, on_progress, backoff)
        job = await self.get_job(job_id)
        while (pause := waiting.pause_after(job)) is not None:
            await asyncio.sleep(pause)
            job = await self.get_job(job_id)
        return _settle(job)
