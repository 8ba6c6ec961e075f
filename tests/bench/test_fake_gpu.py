"""bench/fake_gpu.py: GPU memory predicted with fake tensors.

Three kinds of check: the counting rules on synthetic tensors against hand arithmetic; small real
diffusers/transformers modules against the real (CPU) allocator, byte for byte; and attention and
the full-size build, which decide whether the full-size predictions can be trusted.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from fake_gpu import FakeGPU, build_component, component_bytes, no_weight_init
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.profiler import ProfilerActivity, profile

from openreel.engine.tiny import build_tiny_vae

F32 = 4


# --- counting rules -----------------------------------------------------------------------------


def test_an_allocation_counts_until_its_tensor_dies() -> None:
    with FakeGPU(block=1) as gpu:
        x = torch.empty(1000)
        assert gpu.live == 1000 * F32
        del x
        assert (gpu.live, gpu.peak) == (0, 1000 * F32)


def test_blocks_are_rounded_like_the_cuda_caching_allocator() -> None:
    with FakeGPU() as gpu:
        x = torch.empty(1000)  # 4000 bytes -> 4096
        empty = torch.empty(0)  # no block at all
        assert gpu.live == 4096
        del x, empty


def test_views_share_their_base_and_keep_it_alive() -> None:
    with FakeGPU(block=1) as gpu:
        x = torch.empty(256, 256)
        views = [
            x[1:],
            x[:, None],
            x[..., 3],
            x.t(),
            x.view(-1),
            x.unsqueeze(0),
            *x.chunk(4),
            x.narrow(0, 2, 3),
            x.detach(),
            x.expand(2, 256, 256),
            x.as_strided((10,), (1,)),
        ]
        assert gpu.live == 256 * 256 * F32
        del x
        assert gpu.live == 256 * 256 * F32
        views.clear()
        assert gpu.live == 0


def test_in_place_and_out_ops_allocate_nothing() -> None:
    with FakeGPU(block=1) as gpu:
        a, b, c = torch.empty(1024), torch.empty(1024), torch.empty(1024)
        before = gpu.live
        a.add_(1).mul_(b)
        a.copy_(b)
        torch.add(a, b, out=c)
        torch.mul(a[:512], 2, out=c[:512])
        a[:10] = b[:10]
        assert gpu.live == gpu.peak == before
        a[:10] = 3.0  # the Python number briefly becomes a 0-dim tensor (a CPU scalar on a real GPU)
        assert (gpu.live, gpu.peak) == (before, before + F32)


def test_an_out_tensor_that_must_grow_is_recounted() -> None:
    with FakeGPU(block=1) as gpu:
        a, out = torch.empty(1024), torch.empty(0)
        torch.add(a, 1, out=out)
        assert gpu.live == 2 * 1024 * F32
        out.resize_(2048)
        assert gpu.live == 3 * 1024 * F32
        del out
        assert gpu.live == 1024 * F32


def test_peak_follows_python_lifetimes() -> None:
    n = 1_000_000 * F32
    with FakeGPU(block=1) as gpu:
        x = torch.empty(1_000_000)
        y = x * 2
        del x
        z = (y + 1) * 3  # y, the temporary y + 1, and z while the temporary is alive
        assert (gpu.live, gpu.peak) == (2 * n, 3 * n)
        del y, z
        assert gpu.live == 0


def test_phases_record_their_own_peak_without_losing_the_overall_one() -> None:
    with FakeGPU(block=1) as gpu:
        big = torch.empty(1000)
        del big
        weights = torch.empty(100)
        with gpu.phase("step") as step:
            temporary = torch.empty(500)
            del temporary
            result = torch.empty(10)
        assert (step.start, step.peak, step.end, step.above_start) == (400, 2400, 440, 2000)
        assert step.largest == 500  # elements of the biggest tensor allocated inside
        assert gpu.phases["step"] is step
        assert gpu.peak == 4000
        gpu.reset_peak()
        assert gpu.peak == gpu.live == 440
        del weights, result


def test_composite_ops_show_the_copies_they_make() -> None:
    with FakeGPU(block=1) as gpu:
        x = torch.empty(64, 128)
        flat = x.t().reshape(-1)  # not viewable: reshape copies, as on a GPU
        assert gpu.live == 2 * 64 * 128 * F32
        del x, flat


def test_modules_built_inside_count_their_weights_until_freed() -> None:
    with FakeGPU(block=1) as gpu:
        layer = torch.nn.Linear(256, 512, dtype=torch.bfloat16)
        assert gpu.live == (256 * 512 + 512) * 2 == component_bytes(layer)
        with torch.inference_mode():
            out = layer(torch.empty(8, 256, dtype=torch.bfloat16))
        del out, layer
        gc.collect()
        assert gpu.live == 0


def test_tensors_from_outside_are_rejected_not_silently_free() -> None:
    real = torch.ones(3)
    with FakeGPU(), pytest.raises(Exception, match="FakeTensor"):
        real * 2


def test_data_dependent_ops_raise() -> None:
    with FakeGPU():
        x = torch.empty(3)
        with pytest.raises(DataDependentOutputException):
            x.sum().item()
        with pytest.raises(DataDependentOutputException):
            bool(x.sum() > 0)
        with pytest.raises(DynamicOutputShapeException):
            x.nonzero()


# --- the same numbers as the real allocator -----------------------------------------------------


def cpu_allocator_peak(run: Callable[[], Any]) -> int:
    """Peak bytes above the start that CPU PyTorch really allocates while ``run`` executes.

    A CPU convolution's column/workspace buffers belong to its CPU kernel (cuDNN's differ and are
    not modelled), so each convolution's allocations are applied as one net step at its end.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = run()
        del out
    events = list(prof.profiler.kineto_results.events())
    convs = [
        (e.start_ns(), e.start_ns() + e.duration_ns()) for e in events if e.name() == "aten::convolution"
    ]
    steps: dict[int, int] = {}
    order: list[int] = []
    for e in sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns()):
        key = next((hash(c) for c in convs if c[0] <= e.start_ns() <= c[1]), None)
        key = key if key is not None else -len(order) - 1
        if key not in steps:
            order.append(key)
            steps[key] = 0
        steps[key] += e.nbytes()
    live = peak = 0
    for key in order:
        live += steps[key]
        peak = max(peak, live)
    return peak


def fake_peak(make: Callable[[], Any], inputs: Callable[[], Any], run: Callable[[Any, Any], Any]) -> int:
    with FakeGPU(block=1) as gpu, torch.inference_mode():
        module, args = make(), inputs()
        with gpu.phase("run") as record:
            out = run(module, args)
            del out
    return record.above_start


def assert_matches_allocator(
    make: Callable[[], Any], inputs: Callable[[], Any], run: Callable[[Any, Any], Any]
) -> None:
    torch.manual_seed(0)
    with no_weight_init():
        module = make()
    with torch.inference_mode():
        args = inputs()
        real = cpu_allocator_peak(lambda: run(module, args))
    with no_weight_init():
        predicted = fake_peak(make, inputs, run)
    assert predicted == real


def tiny_transformer() -> torch.nn.Module:
    from diffusers import LTX2VideoTransformer3DModel

    return LTX2VideoTransformer3DModel(
        in_channels=16,
        out_channels=16,
        num_attention_heads=4,
        attention_head_dim=32,
        cross_attention_dim=128,
        audio_in_channels=16,
        audio_out_channels=16,
        audio_num_attention_heads=2,
        audio_attention_head_dim=32,
        audio_cross_attention_dim=64,
        num_layers=2,
        caption_channels=96,
        rope_type="split",
        rope_double_precision=False,
    ).eval()


def test_tiny_ltx2_transformer_step_matches_the_allocator() -> None:
    def inputs() -> dict[str, Any]:
        e = torch.empty
        return {
            "hidden_states": e(1, 3 * 8 * 10, 16).normal_(),
            "audio_hidden_states": e(1, 20, 16).normal_(),
            "encoder_hidden_states": e(1, 32, 96).normal_(),
            "audio_encoder_hidden_states": e(1, 32, 96).normal_(),
            "timestep": e(1).fill_(500.0),
            "sigma": e(1).fill_(0.5),
            "encoder_attention_mask": e(1, 32, dtype=torch.long).fill_(1),
        }

    def run(model: torch.nn.Module, kwargs: dict[str, Any]) -> Any:
        return model(**kwargs, num_frames=3, height=8, width=10, audio_num_frames=20, return_dict=False)

    assert_matches_allocator(tiny_transformer, inputs, run)


def tiny_vae() -> torch.nn.Module:
    return build_tiny_vae(decoder_spatial_padding_mode="reflect").eval()


@pytest.mark.parametrize("tiled", [False, True])
def test_tiny_vae_decode_matches_the_allocator(tiled: bool) -> None:
    def make() -> torch.nn.Module:
        vae = tiny_vae()
        if tiled:  # the tiling code path at a tiny scale: 2x2 spatial and 3 temporal tiles, blended
            vae.enable_tiling(96, 96, 16, 64, 64, 8)
            vae.use_framewise_decoding = True
        return vae

    assert_matches_allocator(
        make, lambda: torch.empty(1, 4, 3, 4, 4).normal_(), lambda vae, z: vae.decode(z, return_dict=False)[0]
    )


def test_tiny_vae_encode_and_upsampler_match_the_allocator() -> None:
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    assert_matches_allocator(
        tiny_vae,
        lambda: torch.empty(1, 3, 9, 64, 64).normal_(),
        lambda vae, x: vae.encode(x).latent_dist.mode(),
    )
    assert_matches_allocator(
        lambda: LTX2LatentUpsamplerModel(8, 32, num_blocks_per_stage=1, use_rational_resampler=True).eval(),
        lambda: torch.empty(1, 8, 3, 6, 8).normal_(),
        lambda upsampler, x: upsampler(x),
    )


def test_tiny_gemma3_prompt_encoding_matches_the_allocator() -> None:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    config = Gemma3Config(
        text_config={
            "vocab_size": 300,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "max_position_embeddings": 512,
            "sliding_window": 64,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        mm_tokens_per_image=4,
    )

    def run(model: torch.nn.Module, args: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        outputs = model(input_ids=args[0], attention_mask=args[1], output_hidden_states=True)
        return torch.stack(outputs.hidden_states, dim=-1).flatten(2, 3)

    assert_matches_allocator(
        lambda: Gemma3ForConditionalGeneration(config).eval(),
        lambda: (
            torch.empty(1, 128, dtype=torch.long).fill_(7),
            torch.empty(1, 128, dtype=torch.long).fill_(1),
        ),
        run,
    )


# --- attention ------------------------------------------------------------------------------------

T, H, D = 32_640, 32, 128  # 1080p x 5 s stage-2 video self-attention: a score matrix would be 68 GB


@pytest.mark.parametrize("route", ["functional", "aten op", "grad mode"])
def test_self_attention_costs_output_and_logsumexp_not_scores(route: str) -> None:
    with FakeGPU(block=1) as gpu:
        q, k, v = (torch.empty(1, H, T, D, dtype=torch.bfloat16) for _ in range(3))
        with torch.inference_mode() if route != "grad mode" else nullcontext(), gpu.phase("attn") as attn:
            if route == "aten op":
                out = torch.ops.aten.scaled_dot_product_attention(q, k, v)
            else:
                out = F.scaled_dot_product_attention(q, k, v)
        assert out.shape == q.shape
        # FlashAttention-2: output + float32 log-sum-exp per (head, query).
        assert attn.above_start == T * H * D * 2 + H * T * 4
        assert attn.above_start < H * T * T * 2 / 100  # the 68 GB score matrix never appears


def test_masked_cross_attention_uses_the_memory_efficient_profile() -> None:
    with FakeGPU(block=1) as gpu, torch.inference_mode():
        q = torch.empty(1, H, T, D, dtype=torch.bfloat16)
        k, v = (torch.empty(1, H, 1024, D, dtype=torch.bfloat16) for _ in range(2))
        additive = torch.empty(1, H, 1, 1024, dtype=torch.bfloat16)
        boolean = torch.empty(1, 1, T, 1024, dtype=torch.bool)
        with gpu.phase("additive") as with_additive:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
        del out
        with gpu.phase("boolean") as with_boolean:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=boolean)
        del out
    assert with_additive.above_start == T * H * D * 2
    # A boolean mask is first converted to an additive one of the query dtype.
    assert with_boolean.above_start == T * H * D * 2 + T * 1024 * 2


def test_the_sdpa_patch_is_removed_on_exit() -> None:
    original = F.scaled_dot_product_attention
    with FakeGPU():
        assert F.scaled_dot_product_attention is not original
    assert F.scaled_dot_product_attention is original


# --- full size ------------------------------------------------------------------------------------


def test_full_size_ltx2_19b_transformer_weights_in_seconds() -> None:
    start = time.perf_counter()
    with FakeGPU() as gpu:
        model = build_component("LTX-2-19B-dev", "transformer")
        assert sum(p.numel() for p in model.parameters()) == 18_876_174_592
        assert gpu.live == pytest.approx(37.75e9, rel=0.01)
        assert gpu.live - component_bytes(model, block=512) < 2**20
        del model
        gc.collect()
        assert gpu.live < 2**20  # a few tiny constants FakeTensorMode memoises may stay
    assert time.perf_counter() - start < 120  # ~6 s here; not a benchmark, just "no real allocation"


def test_full_width_transformer_activations_grow_linearly_with_tokens() -> None:
    """One full-width block at the 720p and 1080p stage-2 token counts: no T x T term anywhere."""
    peaks = {}
    with FakeGPU() as gpu, torch.inference_mode():
        model = build_component("LTX-2-19B-dev", "transformer", overrides={"num_layers": 1})
        for grid in [(24, 40), (34, 60)]:
            tokens = 25 * grid[0] * grid[1]
            e = torch.empty
            with gpu.phase(str(grid)) as step:
                model(
                    hidden_states=e(1, tokens, 128, dtype=torch.bfloat16),
                    audio_hidden_states=e(1, 201, 128, dtype=torch.bfloat16),
                    encoder_hidden_states=e(1, 1024, 3840, dtype=torch.bfloat16),
                    audio_encoder_hidden_states=e(1, 1024, 3840, dtype=torch.bfloat16),
                    timestep=e(1),
                    sigma=e(1),
                    encoder_attention_mask=e(1, 1024, dtype=torch.long),
                    num_frames=25,
                    height=grid[0],
                    width=grid[1],
                    audio_num_frames=201,
                    return_dict=False,
                )
            peaks[tokens] = step.above_start
    assert peaks[51_000] / peaks[24_000] == pytest.approx(51_000 / 24_000, rel=0.05)
    assert peaks[51_000] < 10 * 2**30
