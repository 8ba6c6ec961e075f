"""Seconds until a job's clip is ready, from how long this server's renders of the same shape took.

A queued job waits for a worker: each frees when its running job ends, and the jobs queued before it
take them in turn, a typical render each. A running job has its shape's time left; once its worker has
reported 10 % progress, the pace it has kept since its claim says the rest.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from openreel.domain.rules import VideoSpec
from openreel.engine.plan import FPS, LEAD_FRAMES

# Weight of the newest render in the moving average: recent enough to follow a warm-up or a slower
# card, smooth enough that one odd render does not swing every estimate.
SMOOTHING = 0.3
# From this progress on (the worker reports 0 to 90 over the denoising steps, 95 while encoding), a
# running job's own pace predicts its end better than the average.
OWN_PACE_FROM_PERCENT = 10
MICROSECONDS = 1_000_000
PIXELS = {"720p": 1280 * 720, "1080p": 1920 * 1080}


@dataclass(frozen=True)
class Shape:
    """What a render's time depends on."""

    model: str
    resolution: str
    duration: int
    generate_audio: bool
    conditioned: bool
    samples: int = 1
    # An extension also renders the clip's last frames again (and joins the two).
    extends: bool = False

    @classmethod
    def of(cls, spec: VideoSpec) -> Shape:
        conditioned = bool(spec.image or spec.last_frame or spec.reference_images)
        return cls(
            spec.model,
            spec.resolution,
            spec.duration,
            spec.generate_audio,
            conditioned,
            spec.sample_count,
            spec.extend is not None,
        )

    @property
    def work(self) -> float:
        seconds = self.duration + (LEAD_FRAMES / FPS if self.extends else 0)
        return PIXELS.get(self.resolution, PIXELS["720p"]) * seconds * self.samples


class RenderTimes:
    """Seconds from claim to finished clip, a moving average per shape, measured on this server."""

    def __init__(self) -> None:
        self._seconds: dict[Shape, float] = {}
        self._lock = threading.Lock()

    def observe(self, shape: Shape, seconds: float) -> None:
        with self._lock:
            before = self._seconds.get(shape)
            self._seconds[shape] = seconds if before is None else before + SMOOTHING * (seconds - before)

    def estimate(self, shape: Shape) -> float | None:
        """The shape's average; for a shape not rendered yet, the model's other shapes scaled by
        pixels times seconds of video; None before the model has rendered anything."""
        with self._lock:
            if shape in self._seconds:
                return self._seconds[shape]
            rates = [s / other.work for other, s in self._seconds.items() if other.model == shape.model]
        return sum(rates) / len(rates) * shape.work if rates else None

    def typical(self) -> float | None:
        """One render of whatever shape: the mean over the shapes seen."""
        with self._lock:
            values = list(self._seconds.values())
        return sum(values) / len(values) if values else None


def time_left(estimate: float | None, elapsed: float, progress: int) -> float | None:
    """Seconds a running job still needs, ``elapsed`` seconds after its claim at ``progress`` %."""
    if progress >= OWN_PACE_FROM_PERCENT:
        return elapsed * (100 - min(progress, 100)) / progress
    if estimate is None:
        return None
    return max(estimate - elapsed, 0.0)


def queued_eta(
    own: float | None, ahead: int, typical: float | None, running_left: list[float | None], slots: int
) -> float | None:
    """Seconds until a queued job is done. Each of ``slots`` workers frees when its running job ends
    (a typical render's time where that is unknown; at once if idle); the ``ahead`` jobs queued before
    this one take the workers as they free, a typical render each; then this one starts on the first."""
    if own is None or typical is None:
        return None
    free_at = [typical if left is None else left for left in running_left]
    free_at += [0.0] * max(slots - len(free_at), 1 - len(free_at), 0)  # idle workers (at least one)
    return _start(free_at, ahead, typical) + own


def _start(free_at: list[float], ahead: int, step: float) -> float:
    """When the job after ``ahead`` others starts. Worker i frees at ``free_at[i] + k * step`` for k = 0,
    1, ...; the queue takes those times in order, so this job starts at the (ahead + 1)th smallest of
    them. Found by bisection rather than by handing out the jobs ahead one by one (a poll 10,000 places
    back cost 10,000 heap moves); in whole microseconds, so that workers freeing together tie exactly."""
    if step <= 0:
        return min(free_at)
    frees = [round(free * MICROSECONDS) for free in free_at]
    every = max(round(step * MICROSECONDS), 1)
    first = min(frees)

    def came(time: int) -> int:  # how many of the times are no later than ``time``
        return sum((time - free) // every + 1 for free in frees if free <= time)

    # The fewest steps after the first time by which ahead + 1 times have come (ahead: the first worker
    # alone), then each worker's one time in the last step: the rest of the ahead + 1 are among them.
    low, high = 0, ahead
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if came(first + middle * every) > ahead else (middle + 1, high)
    end = first + low * every
    last_step = sorted(end - (end - free) % every for free in frees if free <= end)
    return last_step[ahead - came(end - every)] / MICROSECONDS
