"""What ``/metrics`` exports for Prometheus.

Job, credit, webhook and pending-deletion totals are read from the ledger at each scrape, so they survive
restarts and are the same on every server that shares the database (aggregate them with ``max``, not
``sum``); render timings, GPU memory and worker slots are this server's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from openreel.executors.base import EngineState
from openreel.ledger import jobs as job_states
from openreel.ledger import stats
from openreel.ledger.db import Database
from openreel.scheduler.dispatcher import PHASES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# From a 4 s tiny-engine clip on a CPU to an 8 s 1080p one on a slow card.
RENDER_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
# From a file rename to a queue wait.
PHASE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600)


# The ledger's totals are whole-table counts: scrapes closer together than this share one reading.
LEDGER_CACHE_S = 5.0


class _LedgerCollector(Collector):
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._read_at = -LEDGER_CACHE_S
        self._totals = stats.Totals({}, {}, {}, 0)

    def _current(self) -> stats.Totals:
        with self._lock:
            if time.monotonic() - self._read_at >= LEDGER_CACHE_S:
                with self._db.read() as session:
                    self._totals = stats.totals(session)
                self._read_at = time.monotonic()
            return self._totals

    def collect(self) -> Iterator[Metric]:
        totals = self._current()
        ended = CounterMetricFamily(
            "openreel_jobs", "Jobs that ended, by model and outcome.", labels=["model", "outcome"]
        )
        active = GaugeMetricFamily("openreel_jobs_active", "Jobs queued or rendering now.", labels=["state"])
        counts = {job_states.QUEUED: 0, job_states.PROCESSING: 0}
        for (model, status), n in sorted(totals.jobs.items()):
            if status in counts:
                counts[status] += n
            else:
                ended.add_metric([model, status.lower()], n)
        active.add_metric(["queued"], counts[job_states.QUEUED])
        active.add_metric(["running"], counts[job_states.PROCESSING])
        yield ended
        yield active
        credits = CounterMetricFamily(
            "openreel_credits", "Credits moved by the ledger, by kind.", labels=["kind"]
        )
        for kind in ("grant", "charge", "refund"):
            credits.add_metric([kind], totals.credits.get(kind, 0))
        yield credits
        webhooks = GaugeMetricFamily(
            "openreel_webhook_deliveries",
            "Webhook deliveries in the outbox by state (delivered and failed only grow).",
            labels=["state"],
        )
        for state in ("pending", "sending", "delivered", "failed"):
            webhooks.add_metric([state], totals.webhooks.get(state, 0))
        yield webhooks
        yield GaugeMetricFamily(
            "openreel_pending_deletions",
            "Stored objects no job names whose deletion the store refused, to be asked again.",
            value=totals.pending_deletions,
        )


class Metrics:
    """One registry per server (no process-wide state, so several apps can live in one process)."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_LedgerCollector(db))
        self._render = Histogram(
            "openreel_render_seconds",
            "Wall seconds of each part of a finished render on its worker, by model.",
            ["model", "stage"],
            buckets=RENDER_BUCKETS,
            registry=self.registry,
        )
        self._phases = Histogram(
            "openreel_job_phase_seconds",
            "Wall seconds of each step of a job's way around its render on this server: submit to claim, "
            "claim to hand-off, the worker's time beyond render and encode, file commit, status write.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=self.registry,
        )
        for phase in PHASES:
            self._phases.labels(phase)
        self._gpu = Gauge(
            "openreel_gpu_peak_memory_bytes",
            "Peak GPU memory of the last finished render of each model (CUDA workers only).",
            ["model"],
            registry=self.registry,
        )
        self._slots = Gauge(
            "openreel_worker_slots", "Worker slots by state.", ["state"], registry=self.registry
        )
        self._ready = Gauge(
            "openreel_engine_ready", "1 once a worker has loaded the engine.", registry=self.registry
        )

    def rendered(self, model: str, seconds: dict[str, float], trace: dict[str, Any]) -> None:
        for stage, value in seconds.items():
            self._render.labels(model, stage).observe(value)
        if trace.get("peakGpuBytes") is not None:
            self._gpu.labels(model).set(trace["peakGpuBytes"])

    def phase(self, phase: str, seconds: float) -> None:
        self._phases.labels(phase).observe(seconds)

    def exposition(self, engine: EngineState) -> bytes:
        self._slots.labels("busy").set(engine.busy)
        self._slots.labels("idle").set(engine.slots - engine.busy)
        self._ready.set(1 if engine.ready else 0)
        return generate_latest(self.registry)
