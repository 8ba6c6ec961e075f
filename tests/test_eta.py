"""The estimate of the time a job has left: measured render times per shape, a running job's own pace,
and the work queued ahead of a waiting one."""

from __future__ import annotations

import heapq
import random

import pytest

from openreel.domain.rules import Extension, VideoSpec
from openreel.scheduler.eta import RenderTimes, Shape, queued_eta, time_left


def shape(resolution: str = "720p", duration: int = 8, model: str = "veo-3.1-fast") -> Shape:
    return Shape(model, resolution, duration, generate_audio=True, conditioned=False)


def test_a_shape_is_what_the_render_time_depends_on() -> None:
    spec = VideoSpec("veo-3.1-fast", "p", 4, "9:16", "720p", False, 7, None, "http://x/a.png", None, [])
    assert Shape.of(spec) == Shape("veo-3.1-fast", "720p", 4, generate_audio=False, conditioned=True)
    assert Shape.of(spec) == Shape.of(VideoSpec(**{**spec.to_json(), "seed": 8, "aspect_ratio": "16:9"}))
    extension = VideoSpec(
        "veo-3.1-fast", "p", 7, "16:9", "720p", True, 7, None, None, None, [], extend=Extension("j")
    )
    assert Shape.of(extension).extends and not Shape.of(spec).extends


def test_render_times_follow_the_newest_renders_of_each_shape() -> None:
    times = RenderTimes()
    assert times.estimate(shape()) is None and times.typical() is None
    times.observe(shape(), 20.0)
    assert times.estimate(shape()) == 20.0
    times.observe(shape(), 10.0)
    assert times.estimate(shape()) == pytest.approx(17.0)  # 20 + 0.3 * (10 - 20)
    times.observe(shape(duration=4), 9.0)
    assert times.typical() == pytest.approx(13.0)


def test_an_unrendered_shape_is_scaled_from_the_models_others_by_pixels_and_seconds() -> None:
    times = RenderTimes()
    times.observe(shape("720p", 4), 10.0)
    assert times.estimate(shape("720p", 8)) == pytest.approx(20.0)
    assert times.estimate(shape("1080p", 4)) == pytest.approx(22.5)
    assert times.estimate(shape(model="veo-3.1")) is None
    # An extension of 7 s renders the clip's last 57 frames (2.375 s) again as well.
    longer = Shape("veo-3.1-fast", "720p", 7, generate_audio=True, conditioned=False, extends=True)
    assert times.estimate(longer) == pytest.approx(10.0 * (7 + 57 / 24) / 4)


def test_a_running_job_uses_the_estimate_until_its_own_pace_is_known() -> None:
    assert time_left(None, 3.0, 0) is None
    assert time_left(20.0, 5.0, 5) == 15.0
    assert time_left(20.0, 25.0, 5) == 0.0
    assert time_left(None, 6.0, 25) == pytest.approx(18.0)  # a quarter in 6 s: 18 s more
    assert time_left(20.0, 6.0, 100) == 0.0


def test_a_queued_job_waits_for_the_work_ahead_over_the_slots_then_renders() -> None:
    assert queued_eta(None, 0, 10.0, [], 1) is None
    assert queued_eta(12.0, 0, 10.0, [], 1) == 12.0
    assert queued_eta(12.0, 2, 10.0, [4.0], 1) == pytest.approx(4.0 + 20.0 + 12.0)
    # Two workers free at 4 and 10 s: the jobs ahead take them (to 14 and 20 s); this one starts at 14.
    assert queued_eta(12.0, 2, 10.0, [4.0, None], 2) == pytest.approx(14.0 + 12.0)
    assert queued_eta(12.0, 0, 10.0, [1.0, 100.0], 2) == pytest.approx(1.0 + 12.0)
    assert queued_eta(12.0, 1, 10.0, [], 2) == 12.0  # an idle worker for each
    # More jobs running than this server has slots: other servers' workers share the queue.
    assert queued_eta(12.0, 0, 10.0, [6.0, 6.0], 1) == pytest.approx(6.0 + 12.0)


def test_a_deep_queue_is_worked_out_as_the_jobs_ahead_handed_out_one_by_one() -> None:
    # Workers free at 4 and 10 s take the jobs in turn: the 10,001st start is the first worker's 5,001st.
    assert queued_eta(12.0, 10_000, 10.0, [4.0, None], 2) == pytest.approx(4.0 + 5_000 * 10.0 + 12.0)
    # One worker busy for 100 s: the other takes the ten jobs before it frees, then they alternate.
    assert queued_eta(12.0, 12, 10.0, [0.0, 100.0], 2) == pytest.approx(110.0 + 12.0)
    assert queued_eta(12.0, 5, 0.0, [3.0, 1.0], 2) == pytest.approx(1.0 + 12.0)  # renders take no time
    # Three workers free at 6.3 s, the places 7 to 9: (6.3 - 2.1) / 0.7 is 5.999... in floating point.
    assert queued_eta(0.0, 8, 0.7, [2.1, 6.3, 11.2, 6.3, 9.8], 1) == pytest.approx(6.3)
    rng = random.Random(0)
    for _ in range(2_000):
        free = [rng.choice([float(rng.randint(0, 60)), 6.3, 2.1]) for _ in range(rng.choice([1, 3, 6, 40]))]
        ahead, step = rng.randint(0, 200), rng.choice([0.5, 0.7, 3.0, 10.0, 25.0])
        handed_out = list(free)
        heapq.heapify(handed_out)
        for _ in range(ahead):
            heapq.heappush(handed_out, heapq.heappop(handed_out) + step)
        assert queued_eta(0.0, ahead, step, list(free), 1) == pytest.approx(handed_out[0])
