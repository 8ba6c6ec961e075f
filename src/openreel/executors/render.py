"""One render task on a loaded engine: the part every kind of worker shares.

Progress runs 0 to 90 over the denoising steps of every sample, 95 while the last one encodes;
cancellation is checked after every step and before encoding. No half-written MP4 survives a failure or
a cancel.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openreel.executors import messages as m

if TYPE_CHECKING:
    from openreel.engine.base import Lead, VideoEngine
    from openreel.engine.join import Source
    from openreel.engine.plan import RenderPlan

STEPS_SHARE = 90
ENCODING = 95


@dataclass(frozen=True)
class Steps:
    """How a sample reports: each denoising step, the start of its encoding, and whether to stop."""

    on_step: Callable[[int, int], None]
    encoding: Callable[[], None]
    cancelled: Callable[[], bool]


def render_task(
    engine: VideoEngine,
    task: m.RenderTask,
    outputs: Sequence[Path],
    *,
    x264_preset: str,
    report: Callable[[int], None],
    cancelled: Callable[[], bool],
) -> m.Outcome:
    """Each sample of the task in turn, into ``outputs``. A sample that fails leaves no file and is
    reported in ``media["samples"]`` with its error; the task fails only when every sample did. A prompt
    to enhance is rewritten once, for the first sample, and every later one renders that rewrite. An
    extension's samples all continue the same lead, read once."""
    from openreel.engine.base import Cancelled
    from openreel.engine.join import lead_of, read_source

    last = -1
    count = len(task.plans)

    def progress(percent: int) -> None:
        nonlocal last
        if percent > last:
            last = percent
            report(percent)

    samples: list[dict[str, Any]] = []
    seconds = {"render": 0.0, "encode": 0.0}
    rewritten: str | None = None
    first_made: dict[str, Any] | None = None
    try:
        first = task.plans[0]
        source = read_source(task.extends.mp4) if task.extends else None
        lead = lead_of(source, first.lead_frames, first.fps) if source else None
    except Exception as exc:
        traceback.print_exc()
        return m.Failed(task.seq, f"the clip to extend could not be read: {type(exc).__name__}: {exc}")
    try:
        for index, (plan, output) in enumerate(zip(task.plans, outputs, strict=True)):
            if rewritten is not None:
                plan = replace(plan, prompt=rewritten, enhance_prompt=False)

            def on_step(step: int, total: int, index: int = index) -> None:
                if cancelled():
                    raise Cancelled()
                progress((index * total + step) * STEPS_SHARE // max(total * count, 1))

            def encoding(index: int = index) -> None:
                if index == count - 1:  # an earlier sample's steps already said how far the task is
                    progress(ENCODING)

            sample, spent = _sample(
                engine, task, plan, (source, lead), output, Steps(on_step, encoding, cancelled), x264_preset
            )
            rewritten = sample.get("enhancedPrompt", rewritten)
            if first_made is None and "error" not in sample:
                first_made = sample
            samples.append(
                {k: v for k, v in sample.items() if k not in ("recipe", "enhancedPrompt", "extendedFrom")}
            )
            for part, took in spent.items():
                seconds[part] += took
    except Cancelled:
        for output in outputs:
            output.unlink(missing_ok=True)
        return m.Cancelled(task.seq)
    if first_made is None:
        return m.Failed(task.seq, samples[0]["error"])
    return m.Done(task.seq, {**first_made, "samples": samples}, seconds)


def _sample(
    engine: VideoEngine,
    task: m.RenderTask,
    plan: RenderPlan,
    extends: tuple[Source | None, Lead | None],
    output: Path,
    steps: Steps,
    x264_preset: str,
) -> tuple[dict[str, Any], dict[str, float]]:
    """One sample rendered and encoded (an extension joined to its clip): what it is, or why it failed,
    and the seconds each part took. ``extends``: the clip continued and its lead, read once per task.
    ``Cancelled`` propagates."""
    from openreel.engine.base import Cancelled
    from openreel.engine.join import write_joined_mp4
    from openreel.engine.mux import probe_mp4, write_mp4

    source, lead = extends
    try:
        started = time.perf_counter()
        clip = engine.render(
            plan, task.first_frame, task.last_frame, steps.on_step, references=task.references, lead=lead
        )
        if steps.cancelled():
            raise Cancelled()
        steps.encoding()
        rendered = time.perf_counter()
        if source is None:
            write_mp4(clip, plan.fps, output, preset=x264_preset)
        else:
            write_joined_mp4(
                source,
                clip,
                lead_frames=plan.lead_frames,
                fps=plan.fps,
                path=output,
                preset=x264_preset,
            )
        seconds = {"render": rendered - started, "encode": time.perf_counter() - rendered}
        info = probe_mp4(output)
    except Cancelled:
        raise
    except Exception as exc:
        output.unlink(missing_ok=True)
        traceback.print_exc()
        return {"seed": plan.seed, "error": f"generation failed: {type(exc).__name__}: {exc}"}, {}
    enhanced = {"enhancedPrompt": clip.prompt} if clip.prompt is not None else {}
    extended = {}
    if task.extends is not None:
        extended["extendedFrom"] = {
            "jobId": task.extends.job_id,
            "video": task.extends.video,
            "secondsAdded": plan.duration_s,
            "leadFrames": plan.lead_frames,
        }
    return {
        **enhanced,
        **extended,
        "seed": plan.seed,
        "width": info.width,
        "height": info.height,
        "fps": plan.fps,
        "frameCount": info.frame_count,
        "durationSeconds": round(info.duration_s, 3),
        "hasAudio": info.has_audio,
        "recipe": clip.recipe,
    }, seconds
