"""Engine options on the tiny engine: the text-encoder cache and its placement, fp8 weights as upstream
quantizes them, compiled blocks, offload refusal."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch._dynamo.utils import compilation_time_metrics, counters
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from openreel.engine import COMPILE_CACHE_DIR, EngineOptions, load_engine
from openreel.engine.compiled import RECOMPILE_LIMIT, compile_blocks
from openreel.engine.fp8 import Fp8Linear
from openreel.engine.text import ENCODING_MARGIN, placement, streaming, visiting
from openreel.settings import Settings


def _noop(step: int, total: int) -> None:
    pass


def _encoder_calls(engine) -> list[int]:
    calls: list[int] = []
    engine.pipe.text_encoder.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_prompts_are_encoded_once_and_give_the_same_clip(tiny_engine_cache: Path, tiny_plan) -> None:
    cached = load_engine(EngineOptions("tiny", prompt_cache_size=2), cache_dir=tiny_engine_cache)
    uncached = load_engine(EngineOptions("tiny", prompt_cache_size=0), cache_dir=tiny_engine_cache)
    calls, plain_calls = _encoder_calls(cached), _encoder_calls(uncached)
    plan = tiny_plan()
    first = cached.render(plan, None, None, _noop)
    assert len(calls) == 1  # once for both stages
    again = cached.render(plan, None, None, _noop)
    assert len(calls) == 1 and cached.prompts.misses == 1
    reference = uncached.render(plan, None, None, _noop)
    assert len(plain_calls) == 1
    assert np.array_equal(first.frames, again.frames) and np.array_equal(first.frames, reference.frames)
    assert first.audio is not None and again.audio is not None and np.array_equal(first.audio, again.audio)

    cached.render(tiny_plan(prompt="a white owl"), None, None, _noop)
    cached.render(tiny_plan(negative_prompt="blurry"), None, None, _noop)  # "blurry" evicts the owl
    assert cached.prompts.misses == 3
    cached.render(plan, None, None, _noop)  # still there: the cache holds the two newest
    assert cached.prompts.misses == 3
    cached.render(tiny_plan(prompt="a white owl"), None, None, _noop)
    assert cached.prompts.misses == 4


def test_the_text_encoder_goes_back_to_its_host_tensors_after_a_visit() -> None:
    """No copy back after encoding: the host tensors are put back as they were, even after an error."""
    module = torch.nn.Linear(4, 4)
    host = [module.weight.data_ptr(), module.bias.data_ptr()]
    with visiting(module, torch.device("cpu")):
        assert module(torch.ones(1, 4)).shape == (1, 4)
    with pytest.raises(RuntimeError), visiting(module, torch.device("cpu")):
        raise RuntimeError("encoding failed")
    assert [module.weight.data_ptr(), module.bias.data_ptr()] == host


def test_a_text_encoder_without_room_streams_through_layer_by_layer(tiny_engine) -> None:
    """Each layer holds its own weights only while it runs; the encoding is the same, and afterwards
    every weight is back on its host tensor."""
    pipe = tiny_engine.pipe
    encoder = pipe.text_encoder
    host = {name: t.data_ptr() for name, t in encoder.state_dict(keep_vars=True).items()}
    visits: list[str] = []
    names = {id(m): n for n, m in encoder.named_modules()}
    hooks = [
        m.register_forward_pre_hook(lambda m, _a: visits.append(names[id(m)])) for m in encoder.modules()
    ]
    try:
        with streaming(encoder, torch.device("cpu")):
            streamed = pipe._get_gemma_prompt_embeds("a red fox", device=torch.device("cpu"))
    finally:
        for hook in hooks:
            hook.remove()
    plain = pipe._get_gemma_prompt_embeds("a red fox", device=torch.device("cpu"))
    assert torch.equal(streamed[0], plain[0]) and torch.equal(streamed[1], plain[1])
    assert {n: t.data_ptr() for n, t in encoder.state_dict(keep_vars=True).items()} == host
    assert any("layers.1." in v for v in visits) and "lm_head" in visits
    gib = 2**30
    assert placement(40 * gib, 24 * gib) == "visit"
    assert placement(24 * gib + ENCODING_MARGIN - 1, 24 * gib) == "stream"


def test_fp8_quantizes_only_the_blocks_attention_and_feed_forward(
    tiny_engine_cache: Path, tiny_plan, tiny_engine
) -> None:
    fp8 = load_engine(EngineOptions("tiny", precision="fp8"), cache_dir=tiny_engine_cache)
    transformer = fp8.pipe.transformer
    quantized = {name for name, m in transformer.named_modules() if isinstance(m, Fp8Linear)}
    block = "transformer_blocks.0."
    for name in ("attn1.to_q", "attn1.to_out.0", "attn2.to_k", "audio_attn1.to_v", "ff.net.0.proj"):
        assert block + name in quantized, name
    assert block + "audio_ff.net.2" in quantized
    # Embedders, projections and the text encoder keep their precision (ltx-core's fp8_cast policy).
    assert {"proj_in", "proj_out", "audio_proj_in"}.isdisjoint(quantized)
    assert not any("time_embed" in name or "caption" in name for name in quantized)
    assert torch.float8_e4m3fn not in {p.dtype for p in fp8.pipe.text_encoder.parameters()}
    assert all(transformer.get_submodule(n).weight_fp8.dtype == torch.float8_e4m3fn for n in quantized)
    plan = tiny_plan()
    clip = fp8.render(plan, None, None, _noop)
    full = tiny_engine.render(plan, None, None, _noop)
    assert clip.recipe is not None and clip.recipe["precision"] == "fp8"
    assert clip.frames.shape == full.frames.shape and not np.array_equal(clip.frames, full.frames)
    # The distilled LoRA fuses into the upcast float8 weights (as ltx-core's fuse_loras does) and the
    # float8 dev weights come back bit for bit.
    fp8.lora.restore()
    layer = transformer.get_submodule(block + "attn1.to_q")
    dev = layer.weight_fp8.clone()
    fp8.lora.fuse()
    fp8.lora.restore()
    assert torch.equal(layer.weight_fp8, dev)


def test_fp8_matmul_agrees_with_the_upcast_path() -> None:
    """``torch._scaled_mm`` (float8 inputs, per-token and per-channel scales) against the same float8
    weight upcast: the difference is the input's float8 rounding, small against the output."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 16, 64)
    upcast, native = Fp8Linear(linear, "upcast"), Fp8Linear(linear, "scaled_mm")
    exact = linear(x)
    a, b = upcast(x), native(x)
    assert a.shape == b.shape == exact.shape
    scale = exact.abs().max()
    assert (a - exact).abs().max() < 0.05 * scale
    assert (b - exact).abs().max() < 0.08 * scale


def test_offload_needs_a_gpu_and_bad_modes_are_refused(tiny_engine_cache: Path) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        load_engine(EngineOptions("tiny", offload="model"), cache_dir=tiny_engine_cache)
    with pytest.raises(ValidationError):
        Settings(precision="fp4")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(offload="disk")  # type: ignore[arg-type]


@pytest.mark.slow
def test_compiled_blocks_are_warmed_at_load_and_render_the_eager_clip_at_any_shape(
    tiny_engine, tiny_engine_cache: Path, tiny_plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPENREEL_COMPILE on the tiny engine: inductor's kernels, compiled on this CPU while the engine
    loads, land beside the weights cache where a restarted worker finds them; jobs of other shapes and
    prompts, with a negative prompt or without, compile nothing more and give the eager clip."""
    # What importing diffusers leaves there: inductor's own default, which the worker replaces.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.recompile_limit)
    monkeypatch.setattr(torch._dynamo.config, "specialize_float", False)
    compilation_time_metrics.clear()  # kept by the process: what an earlier compilation recorded
    compiled = load_engine(
        Settings(engine="tiny", compile=True).engine_options(), cache_dir=tiny_engine_cache
    )
    assert compiled.compiled and not tiny_engine.compiled
    assert torch._dynamo.config.recompile_limit >= RECOMPILE_LIMIT and torch._dynamo.config.specialize_float
    assert "compile_attempt_1" not in compilation_time_metrics, "dynamo traced a graph twice"
    assert compiled.pipe.transformer.transformer_blocks[0]._compiled_call_impl is not None
    cache = tiny_engine_cache / COMPILE_CACHE_DIR
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache) and any(cache.rglob("*.py"))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    plans = (
        tiny_plan(),
        tiny_plan(resolution="1080p", aspect_ratio="9:16", duration_s=2, negative_prompt="blurry"),
        tiny_plan(prompt="an owl in the snow at night", negative_prompt="grain, noise and a washed-out sky"),
    )
    for plan in plans:
        expected, got = tiny_engine.render(plan, None, None, _noop), compiled.render(plan, None, None, _noop)
        assert got.recipe == expected.recipe
        assert got.frames.shape == expected.frames.shape
        # Frame by frame: a 1080p clip widened at once to int64 is gigabytes, and most of this test's time.
        pairs = zip(got.frames, expected.frames, strict=True)
        assert max(int(np.abs(g.astype(np.int16) - e).max()) for g, e in pairs) <= 2
        assert got.audio is not None and expected.audio is not None
        assert np.allclose(got.audio, expected.audio, atol=1e-3)
    assert counters["stats"]["unique_graphs"] == graphs


def test_an_operators_compile_cache_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Blocks:
        compiled: dict[str, object] = {}

        def compile_repeated_blocks(self, **options: object) -> None:
            self.compiled = options

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "operator"))
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    monkeypatch.setattr(torch._dynamo.config, "specialize_float", False)
    blocks = Blocks()
    compile_blocks(blocks, tmp_path / "worker")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "operator")
    assert blocks.compiled == {"dynamic": True} and torch._dynamo.config.recompile_limit == RECOMPILE_LIMIT
    assert torch._dynamo.config.specialize_float


def test_compiled_blocks_are_not_offloaded_layer_by_layer() -> None:
    with pytest.raises(ValidationError, match="OPENREEL_COMPILE"):
        Settings(compile=True, offload="sequential")
