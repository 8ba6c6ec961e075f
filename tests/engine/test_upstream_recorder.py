"""The upstream recorder: Lightricks' ltx-pipelines 1.0.0 run on tiny random ltx-core modules, one record
per transformer call. These pin down what the reference pipelines do, for the parity tests that compare
openreel's engine against them (256x128 final size, 25 frames at 24 fps: stage 1 on a 4x2x4 latent grid,
stage 2 on 4x4x8)."""

from __future__ import annotations

import sys

import PIL.Image
import pytest
import torch

from ltx_upstream import record_upstream, summarize

DISTILLED = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0]
REFINE = [0.909375, 0.725, 0.421875, 0.0]
JOB = {"width": 256, "height": 128, "num_frames": 25, "fps": 24.0}


def _image(color: tuple[int, int, int]) -> PIL.Image.Image:
    """A 96x64 image with a horizontal gradient (not a flat colour, so the crf-33 round trip has content)."""
    ramp = torch.linspace(0, 1, 96).view(1, 96, 1)
    pixels = (torch.tensor(color).view(1, 1, 3) * ramp).expand(64, 96, 3).to(torch.uint8)
    return PIL.Image.fromarray(pixels.numpy(), "RGB")


def _stage_shapes(summary: dict) -> list[tuple]:
    return [
        (s["width"], s["height"], s["frames"], s["video_grid"], s["base_tokens"]) for s in summary["stages"]
    ]


def test_distilled_text_only() -> None:
    record = record_upstream("distilled", images=[], **JOB)
    summary = summarize(record)

    assert summary["upsampled"] == 1
    assert _stage_shapes(summary) == [(128, 64, 25, [4, 2, 4], 32), (256, 128, 25, [4, 4, 8], 128)]
    first, second = summary["stages"]
    assert first["sigmas"] == DISTILLED and first["noise_scale"] == 1.0
    assert second["sigmas"] == REFINE and second["noise_scale"] == 0.909375
    assert first["passes_per_step"] == [1] * 8 and second["passes_per_step"] == [1] * 3
    for stage in summary["stages"]:
        assert stage["guidance"] == [] and stage["batch_rows"] == [1]
        assert stage["tokens"] == stage["base_tokens"]  # nothing appended
        assert stage["replaced_latent_frames"] == [] and stage["keyframes"] == []
        assert stage["audio_tokens"] == 26  # 25 / 24 s at 25 audio latents per second, both stages

    # every call: all tokens at the call's sigma; positions [3, T, 2] with time in seconds, causal first frame
    for stage in record["stages"]:
        for call, sigma in zip(stage["calls"], stage["sigmas"][:-1], strict=True):
            assert call["sigma"] == pytest.approx(sigma)
            assert torch.allclose(call["video_timesteps"], torch.full((call["tokens"],), sigma))
            assert call["video_positions"].shape == (3, call["tokens"], 2)
            assert not call["context_is_negative"] and call["perturbations"] == []
        positions = stage["calls"][0]["video_positions"]
        hw = stage["video_grid"][1] * stage["video_grid"][2]
        time = positions[0, ::hw]  # [F_lat, 2]: one token per latent frame
        # pixel frames [0, 1) for latent frame 0 and [8k - 7, 8k + 1) after it, in seconds, stored as bf16
        expected = torch.tensor([[0, 1], [1, 9], [9, 17], [17, 25]]) / 24.0
        assert torch.allclose(time, expected.to(torch.bfloat16).float())
        # spatial [start, end) in pixels of the stage's own size (32 px per latent cell)
        assert positions[2, :hw, 1].amax().item() == stage["width"]
        assert positions[1, :hw, 1].amax().item() == stage["height"]


def test_distilled_first_frame_replaces_latent_frame_zero() -> None:
    record = record_upstream("distilled", images=[(_image((255, 120, 0)), 0)], **JOB)
    summary = summarize(record)

    assert summary["upsampled"] == 1
    for stage, sigmas in zip(summary["stages"], (DISTILLED, REFINE), strict=True):
        assert stage["sigmas"] == sigmas
        assert stage["replaced_latent_frames"] == [0]  # re-encoded at each stage's size, clean in both
        assert stage["keyframes"] == [] and stage["tokens"] == stage["base_tokens"]
    for stage in record["stages"]:
        assert stage["conditionings"] == ["VideoConditionByLatentIndex"]
        hw = stage["video_grid"][1] * stage["video_grid"][2]
        for call in stage["calls"]:
            assert (call["video_timesteps"][:hw] == 0).all()
            assert torch.allclose(call["video_timesteps"][hw:], torch.tensor(call["sigma"]))


def test_distilled_first_and_last_frame_appends_keyframe_tokens() -> None:
    images = [(_image((255, 120, 0)), 0), (_image((0, 90, 255)), JOB["num_frames"] - 1)]
    record = record_upstream("distilled", images=images, **JOB)
    summary = summarize(record)

    first, second = summary["stages"]
    assert first["replaced_latent_frames"] == [0] and second["replaced_latent_frames"] == [0]
    # the last image is one latent frame of keyframe tokens appended after the grid, clean, placed at pixel
    # frames [24, 32) (frame_idx + [0, 8), no causal fix) / 24 fps: [1.0, 1.333] s
    keyframe = {"time_start_s": 1.0, "time_end_s": round(32 / 24, 6), "timesteps_zero": True}
    assert first["keyframes"] == [{"tokens": 8, **keyframe}]
    assert second["keyframes"] == [{"tokens": 32, **keyframe}]
    assert (first["tokens"], second["tokens"]) == (32 + 8, 128 + 32)
    assert first["sigmas"] == DISTILLED and second["sigmas"] == REFINE

    for stage in record["stages"]:
        assert stage["conditionings"] == ["VideoConditionByLatentIndex", "VideoConditionByKeyframeIndex"]
        base = stage["calls"][0]["base_tokens"]
        positions = stage["calls"][0]["video_positions"]
        # keyframe tokens cover the same spatial grid as one latent frame of the base grid
        assert torch.equal(positions[1:, base:], positions[1:, : positions.shape[1] - base])
        for call in stage["calls"]:
            assert call["tokens"] == positions.shape[1]
            assert (call["video_timesteps"][base:] == 0).all()
            assert not call["video_attention_mask"]  # plain keyframe conditioning: full attention


def test_two_stage_first_frame_guidance_passes() -> None:
    record = record_upstream("two_stage", images=[(_image((40, 200, 90)), 0)], num_inference_steps=3, **JOB)
    summary = summarize(record)

    first, second = summary["stages"]
    assert summary["upsampled"] == 1
    # stage 1: LTX2Scheduler(3 steps) with the default 4096-token shift, stretched to a 0.1 terminal
    assert first["sigmas"] == pytest.approx([1.0, 0.734179, 0.1, 0.0], abs=1e-6)
    assert first["noise_scale"] == 1.0
    assert first["guidance"] == ["cfg", "modality", "stg"]
    assert first["passes_per_step"] == [4, 4, 4]
    assert first["replaced_latent_frames"] == [0] and first["keyframes"] == []
    # stage 2: the distilled refine schedule, one unguided pass per step
    assert second["sigmas"] == REFINE and second["noise_scale"] == 0.909375
    assert second["passes_per_step"] == [1, 1, 1] and second["guidance"] == []
    assert second["replaced_latent_frames"] == [0]

    # pass order per step: conditional, negative prompt (CFG), STG on block 29, modality isolation
    calls = record["stages"][0]["calls"]
    for step in range(3):
        cond, neg, stg, mod = calls[4 * step : 4 * step + 4]
        assert len({c["sigma"] for c in (cond, neg, stg, mod)}) == 1
        assert (cond["context_is_negative"], cond["perturbations"]) == (False, [])
        assert (neg["context_is_negative"], neg["perturbations"]) == (True, [])
        assert neg["audio_context_is_negative"]
        assert not stg["context_is_negative"]
        assert stg["perturbation_blocks"] == {"SKIP_VIDEO_SELF_ATTN": [29], "SKIP_AUDIO_SELF_ATTN": [29]}
        assert not mod["context_is_negative"]
        assert mod["perturbation_blocks"] == {"SKIP_A2V_CROSS_ATTN": None, "SKIP_V2A_CROSS_ATTN": None}
        for call in (neg, stg, mod):
            assert torch.equal(call["video_timesteps"], cond["video_timesteps"])
            assert torch.equal(call["video_positions"], cond["video_positions"])


def test_recorder_leaves_the_process_as_it_found_it() -> None:
    synchronize, empty_cache = torch.cuda.synchronize, torch.cuda.empty_cache
    rng = torch.get_rng_state()
    record_upstream("distilled", images=[], **JOB)
    assert "torchaudio" not in sys.modules
    assert (torch.cuda.synchronize, torch.cuda.empty_cache) == (synchronize, empty_cache)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not torch.is_inference_mode_enabled()


def test_summarize_groups_appended_tokens_per_keyframe() -> None:
    """``summarize`` reads plain tensors only: a hand-made record with two keyframes of 2 tokens each."""
    base = [[0.0, 1.0], [1.0, 9.0]]
    appended = [[0.5, 0.8], [0.5, 0.8], [1.0, 1.3], [1.0, 1.3]]
    time = torch.tensor([t for t in base for _ in range(2)] + appended)  # grid 2 x 1 x 2 = 4 base tokens
    space = torch.tensor([[0.0, 32.0], [32.0, 64.0]] * 4)
    positions = torch.stack([time, torch.zeros_like(space), space])
    call = {
        "sigma": 0.5,
        "batch_rows": 2,
        "perturbations": [],
        "context_is_negative": False,
        "video_grid": [2, 1, 2],
        "base_tokens": 4,
        "tokens": 8,
        "video_timesteps": torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.5, 0.5]),
        "video_positions": positions,
        "audio_tokens": 3,
    }
    record = {"stages": [{"index": 0, "width": 64, "height": 32, "frames": 9, "noise_scale": 1.0,
                          "sigmas": [0.5, 0.0], "calls": [call]}], "upsampled": 0}  # fmt: skip
    stage = summarize(record)["stages"][0]
    assert stage["replaced_latent_frames"] == [0]
    assert stage["keyframes"] == [
        {"tokens": 2, "time_start_s": 0.5, "time_end_s": 0.8, "timesteps_zero": True},
        {"tokens": 2, "time_start_s": 1.0, "time_end_s": 1.3, "timesteps_zero": False},
    ]
    assert stage["passes_per_step"] == [1] and stage["batch_rows"] == [2]
