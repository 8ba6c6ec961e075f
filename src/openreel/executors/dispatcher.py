"""The dispatcher: a server thread that feeds the worker and is the only writer of job outcomes.

It claims the oldest queued job when the worker is idle, resolves its images, plans the render and
hands it over; then it turns the worker's events into ledger transitions. A worker that dies or
overruns ``job_timeout_s`` is killed and restarted, and its job is re-queued (or failed with a
refund after ``max_attempts``), so no job is stuck and the server never goes down with a render.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image
from sqlalchemy.orm import Session

from openreel.catalog import Catalog
from openreel.engine.plan import plan_render
from openreel.executors import messages as m
from openreel.executors.local import LocalWorker
from openreel.inputs import InputError, load_image
from openreel.ledger import jobs, uploads
from openreel.ledger.db import Database
from openreel.ledger.tables import utcnow
from openreel.settings import Settings
from openreel.storage.base import Storage
from openreel.storage.signing import Signer
from openreel.validation import VideoSpec

log = logging.getLogger("openreel.dispatcher")

MAX_FAILED_STARTS = 3
SWEEP_INTERVAL_S = 60.0

# Called inside the transaction that changed the job: (session, job id, event).
JobEventHook = Callable[[Session, str, str], None]


@dataclass
class Running:
    seq: int
    job_id: str
    attempt: int
    seed: int
    staged: str
    key: str
    deadline: float


@dataclass
class EngineState:
    name: str
    ready: bool = False
    random_weights: bool = False
    grid_scale: float = 1.0
    error: str | None = None
    # Reference images need the LTX-2.3 IC-LoRA adapter, which no engine loads yet.
    reference_images: bool = False


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        signer: Signer,
        catalog: Catalog,
        on_job_event: JobEventHook | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.storage = storage
        self.signer = signer
        self.catalog = catalog
        self.engine = EngineState(name=settings.engine, random_weights=settings.engine == "tiny")
        self._on_job_event = on_job_event or (lambda _session, _job, _event: None)
        self._worker = LocalWorker(settings)
        self._running: Running | None = None
        self._seq = 0
        self._failed_starts = 0
        self._next_sweep = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openreel-dispatcher", daemon=True)

    def start(self) -> None:
        with self.db.session() as session:
            recovered = jobs.recover_interrupted(session, self.settings.max_attempts)
        if recovered:
            log.warning("recovered %d job(s) interrupted by the last shutdown", len(recovered))
        removed = self.storage.remove_partials()
        if removed:
            log.warning("removed %d half-written file(s) left by the last shutdown", removed)
        self._worker.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        self._worker.stop()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Called after the ledger marked the job CANCELLED: stop the render at its next step."""
        with self._lock:
            if self._running is not None and self._running.job_id == job_id:
                self._worker.cancel(self._running.seq)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("dispatcher tick failed")
                time.sleep(1)

    def _tick(self) -> None:
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL_S
            with self.db.session() as session:
                uploads.sweep_expired(session, self.storage, utcnow())
        event = self._worker.poll(0.1)
        if event is not None:
            self._handle(event)
            return
        if not self._worker.alive and not self._stop.is_set() and not self.engine.error:
            self._worker_lost("the worker process exited unexpectedly")
            return
        running = self._running
        if running is not None and time.monotonic() > running.deadline:
            self._worker.kill()
            self._finish_failed(running, f"generation timed out after {self.settings.job_timeout_s} s")
            self._restart_worker()
            return
        if running is None and (self.engine.ready or self.engine.error) and not self._dispatch_next():
            self._wake.wait(0.5)
            self._wake.clear()

    def _handle(self, event: m.Event) -> None:
        if isinstance(event, m.EngineReady):
            self._failed_starts = 0
            self.engine = replace(
                self.engine, ready=True, random_weights=event.random_weights, grid_scale=event.grid_scale
            )
            log.info(
                "engine %s ready%s",
                event.name,
                " (random weights: output is noise)" if event.random_weights else "",
            )
            return
        if isinstance(event, m.EngineFailed):
            self.engine = replace(self.engine, ready=False, error=event.error)
            log.error("engine %s failed to load: %s", self.engine.name, event.error)
            return
        running = self._running
        if running is None or event.seq != running.seq:
            return
        if isinstance(event, m.Progress):
            with self.db.session() as session:
                if jobs.set_progress(session, running.job_id, running.attempt, event.percent):
                    self._on_job_event(session, running.job_id, "progress")
        elif isinstance(event, m.Done):
            self._finish_done(running, event.media)
        elif isinstance(event, m.Failed):
            self._finish_failed(running, event.error)
        elif isinstance(event, m.Cancelled):
            self._clear(running)

    def _dispatch_next(self) -> bool:
        with self.db.session() as session:
            job = jobs.claim_next(session)
            if job is None:
                return False
            job_id, attempt, spec = job.id, job.attempts, VideoSpec.from_json(job.spec)
            self._on_job_event(session, job_id, "progress")
        if self.engine.error:
            self._fail(job_id, attempt, f"the {self.engine.name} engine is unavailable: {self.engine.error}")
            return True
        model = self.catalog.get(spec.model)
        assert model is not None
        try:
            first = self._image(spec.image)
            last = self._image(spec.last_frame)
        except InputError as exc:
            self._fail(job_id, attempt, str(exc))
            return True
        plan = plan_render(
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            seed=spec.seed,
            duration_s=spec.duration,
            resolution=spec.resolution,
            aspect_ratio=spec.aspect_ratio,
            generate_audio=spec.generate_audio,
            steps=model.preset.steps,
            guidance_scale=model.preset.guidance_scale,
            negative_guidance_scale=model.preset.negative_guidance_scale,
            has_first_frame=first is not None,
            has_last_frame=last is not None,
            grid_scale=self.engine.grid_scale,
        )
        key = f"results/{job_id}/{attempt}.mp4"
        staged = self.storage.staging_path(key)
        with self._lock:
            self._seq += 1
            self._running = Running(
                seq=self._seq,
                job_id=job_id,
                attempt=attempt,
                seed=spec.seed,
                staged=str(staged),
                key=key,
                deadline=time.monotonic() + self.settings.job_timeout_s,
            )
            task = m.RenderTask(self._seq, job_id, plan, str(staged), first, last)
        self._worker.send(task)
        return True

    def _image(self, url: str | None) -> Image.Image | None:
        if url is None:
            return None
        return load_image(url, settings=self.settings, signer=self.signer, storage=self.storage)

    def _finish_done(self, running: Running, media: dict[str, object]) -> None:
        self.storage.commit(Path(running.staged), running.key)
        result = {
            "key": running.key,
            "seed": running.seed,
            "randomWeights": self.engine.random_weights,
            **media,
        }
        with self.db.session() as session:
            won = jobs.complete(session, running.job_id, running.attempt, result)
            if won:
                self._on_job_event(session, running.job_id, "completed")
        if not won:
            self.storage.delete(running.key)
        self._clear(running)

    def _fail(self, job_id: str, attempt: int, error: str) -> None:
        with self.db.session() as session:
            if jobs.end_with_refund(session, job_id, jobs.FAILED, error, attempt=attempt):
                self._on_job_event(session, job_id, "failed")

    def _finish_failed(self, running: Running, error: str) -> None:
        self._fail(running.job_id, running.attempt, error)
        self._clear(running)

    def _clear(self, running: Running) -> None:
        Path(running.staged).unlink(missing_ok=True)
        with self._lock:
            if self._running is running:
                self._running = None

    def _worker_lost(self, reason: str) -> None:
        running = self._running
        if running is not None:
            if running.attempt < self.settings.max_attempts:
                with self.db.session() as session:
                    jobs.requeue(session, running.job_id, running.attempt)
                log.warning("job %s re-queued: %s", running.job_id, reason)
                self._clear(running)
            else:
                self._finish_failed(running, f"{reason}; no attempts left")
        self._restart_worker()

    def _restart_worker(self) -> None:
        if not self.engine.ready:
            self._failed_starts += 1
        if self._failed_starts >= MAX_FAILED_STARTS:
            self.engine = replace(self.engine, ready=False, error="the worker keeps dying while loading")
            return
        self.engine = replace(self.engine, ready=False)
        self._worker.kill()
        self._worker = LocalWorker(self.settings)
        self._worker.start()
