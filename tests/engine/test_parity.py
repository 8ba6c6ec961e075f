"""openreel's engine against Lightricks' own pipelines (ltx-pipelines 1.0.0 on ltx-core 1.0.0), job shape by
job shape: what each transformer call is given, stage by stage (size, sigmas, noise scale, passes and
guidance per step, which latent frame an image replaces, which keyframe tokens are appended and when).
Not the noise: the two implementations draw it from different generators.

Where diffusers 0.42.1 (and so openreel) follows Lightricks' newer code rather than 1.0.0, the test says
so: a single-image keyframe spans one pixel frame in time ([n, n+1) / fps, the repository's
``keyframe_cond.py`` since 1.0.0) where 1.0.0 gives it the 8 frames of a latent ([n, n+8) / fps).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch

from openreel.engine.trace import Trace

from ltx_upstream import record_upstream, summarize

STEP_KINDS = {"stg": ["SKIP_VIDEO_SELF_ATTN", "SKIP_AUDIO_SELF_ATTN"], "modality": ["SKIP_A2V_CROSS_ATTN"]}


def _image(seed: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (360, 640, 3), dtype=np.uint8))


def _as_record(trace: Trace) -> dict[str, Any]:
    """openreel's captured calls in the recorder's format. A CFG call is one batch of two rows (negative,
    positive) where ltx-core makes two calls; STG and modality are one call each in both."""
    stages = []
    for index, info in enumerate(trace.stages):
        calls: list[dict[str, Any]] = []
        for call in (c for c in trace.calls if c.stage == index):
            assert call.timesteps is not None and call.positions is not None
            frames, height, width = call.grid
            base = frames * height * width
            common = {
                "sigma": float(call.sigma),
                "batch_rows": 1,
                "video_grid": [frames, height, width],
                "base_tokens": base,
                "tokens": call.timesteps.shape[0],
                "video_timesteps": call.timesteps,
                "video_positions": call.positions,
                "audio_tokens": call.audio_tokens,
            }
            perturbations = STEP_KINDS["stg"] if call.stg else STEP_KINDS["modality"] if call.isolated else []
            calls.append({**common, "perturbations": perturbations, "context_is_negative": False})
            if call.rows == 2:
                calls.append({**common, "perturbations": [], "context_is_negative": True})
        frames, height, width = calls[0]["video_grid"]
        sigmas = list(dict.fromkeys(c["sigma"] for c in calls))
        stages.append(
            {
                "index": index,
                "width": width * trace.spatial,
                "height": height * trace.spatial,
                "frames": (frames - 1) * trace.temporal + 1,
                "noise_scale": info.noise_scale,
                "sigmas": [*sigmas, 0.0],
                "calls": calls,
            }
        )
    return {"stages": stages, "upsampled": len(stages) - 1}


def _ours(engine: Any, plan: Any, first: Any, last: Any) -> dict[str, Any]:
    with engine.recording() as traces:
        engine.render(plan, first, last, lambda *_: None)
    return _as_record(traces[0])


def _compare(ours: dict[str, Any], upstream: dict[str, Any]) -> None:
    a, b = summarize(ours), summarize(upstream)
    assert a["upsampled"] == b["upsampled"] == 1
    for mine, theirs in zip(a["stages"], b["stages"], strict=True):
        for key in ("width", "height", "frames", "video_grid", "base_tokens", "tokens", "audio_tokens"):
            assert mine[key] == theirs[key], key
        for key in ("passes_per_step", "guidance", "replaced_latent_frames", "noise_scale"):
            assert mine[key] == theirs[key], key
        assert mine["sigmas"] == pytest.approx(theirs["sigmas"], abs=2e-6)
        assert len(mine["keyframes"]) == len(theirs["keyframes"])
        for k_mine, k_theirs in zip(mine["keyframes"], theirs["keyframes"], strict=True):
            assert (
                k_mine["tokens"] == k_theirs["tokens"]
                and k_mine["timesteps_zero"] is k_theirs["timesteps_zero"]
            )
            assert k_mine["time_start_s"] == pytest.approx(k_theirs["time_start_s"], abs=1e-6)
            frame = 1 / 24
            assert k_theirs["time_end_s"] == pytest.approx(k_theirs["time_start_s"] + 8 * frame, abs=1e-5)
            assert k_mine["time_end_s"] == pytest.approx(k_mine["time_start_s"] + frame, abs=1e-5)
    # The base grid's positions (pixels in space, seconds in time, the first frame's causal fix): equal up
    # to ltx-core keeping them in bf16.
    for mine, theirs in zip(ours["stages"], upstream["stages"], strict=True):
        base = mine["calls"][0]["base_tokens"]
        ours_pos = mine["calls"][0]["video_positions"][:, :base]
        theirs_pos = theirs["calls"][0]["video_positions"][:, :base].float()
        torch.testing.assert_close(ours_pos, theirs_pos, atol=0.02, rtol=0.01)


@pytest.mark.parametrize(
    ("recipe", "pipeline", "images"),
    [
        ("fast", "distilled", ()),
        ("fast", "distilled", ("first",)),
        ("fast", "distilled", ("first", "last")),
        ("fast", "distilled", ("last",)),
        ("quality", "two_stage", ("first", "last")),
    ],
)
def test_the_engine_gives_the_transformer_what_lightricks_pipelines_give_it(
    request: pytest.FixtureRequest, tiny_plan, recipe: str, pipeline: str, images: tuple[str, ...]
) -> None:
    # Upstream's tiny transformer has LTX-2.0's STG block (29); the quality recipe's passes need ours to.
    engine = request.getfixturevalue("stg_engine" if recipe == "quality" else "tiny_engine")
    plan = tiny_plan(recipe=recipe, has_first_frame="first" in images, has_last_frame="last" in images)
    first = _image(1) if "first" in images else None
    last = _image(2) if "last" in images else None
    given = [
        (image, frame) for image, frame in ((first, 0), (last, plan.last_frame_index)) if image is not None
    ]
    upstream = record_upstream(
        pipeline,
        width=plan.gen_width,
        height=plan.gen_height,
        num_frames=plan.gen_frames,
        fps=float(plan.fps),
        images=given,
        num_inference_steps=40,  # LTX_2_PARAMS, the tiny engine being an LTX-2.0 architecture
    )
    _compare(_ours(engine, plan, first, last), upstream)
