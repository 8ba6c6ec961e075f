"""Loading: the tiny checkpoint goes through the same from_pretrained path as a real one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from openreel.engine import TINY_CHECKPOINT_DIR, EngineOptions, find_parts, load_engine
from openreel.engine.ltx2 import LTX2Engine
from openreel.engine.tiny import TINY_DISTILLED_LORA, save_tiny_checkpoint


def _noop(i: int, total: int) -> None:
    pass


def test_checkpoint_is_a_diffusers_directory_and_is_reused(tiny_engine, tiny_engine_cache: Path) -> None:
    directory = tiny_engine_cache / TINY_CHECKPOINT_DIR
    index = directory / "model_index.json"
    assert index.is_file()
    assert '"LTX2Pipeline"' in index.read_text()
    for part in ("transformer", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "tokenizer"):
        assert (directory / part).is_dir(), part
    # The real layout: the upsampler and the distilled LoRA beside the pipeline's folders.
    assert (directory / "latent_upsampler" / "config.json").is_file()
    assert (directory / TINY_DISTILLED_LORA).is_file()
    before = {p: p.stat().st_mtime_ns for p in directory.rglob("*")}
    assert save_tiny_checkpoint(directory) == directory
    assert {p: p.stat().st_mtime_ns for p in directory.rglob("*")} == before
    assert sorted(p.name for p in tiny_engine_cache.iterdir()) == [TINY_CHECKPOINT_DIR]  # no temp dirs left


def test_reload_gives_identical_output(tiny_engine, tiny_engine_cache: Path, tiny_plan) -> None:
    directory = tiny_engine_cache / TINY_CHECKPOINT_DIR
    again = LTX2Engine.from_pretrained(
        directory,
        name="tiny",
        grid_scale=0.25,
        random_weights=True,
        parts=find_parts(EngineOptions("tiny"), directory),
        device="cpu",
    )
    # Loaded on the distilled weights the fast ids render with: the first request does not fuse.
    assert again.lora is not None and again.lora.fused
    plan = tiny_plan(seed=11)
    a = tiny_engine.render(plan, None, None, _noop)
    b = again.render(plan, None, None, _noop)
    assert np.array_equal(a.frames, b.frames)
    assert a.audio is not None and b.audio is not None
    assert np.array_equal(a.audio, b.audio)


def test_fresh_checkpoints_are_identical(
    tmp_path: Path, tiny_engine: LTX2Engine, tiny_engine_cache: Path
) -> None:
    """The build is seeded: a second machine writes the same weights as the one the tiny engine loaded
    (``tiny_engine`` builds it into the cache, whichever test of this worker asked for it first)."""
    other = save_tiny_checkpoint(tmp_path / "nested" / "tiny")
    ours = tiny_engine_cache / TINY_CHECKPOINT_DIR
    files = sorted(p.relative_to(ours) for p in ours.rglob("*.safetensors"))
    assert files
    for rel in files:
        assert (other / rel).read_bytes() == (ours / rel).read_bytes(), rel


def test_load_engine_rejects_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny, ltx2"):
        load_engine(EngineOptions("veo"), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="checkpoint"):
        load_engine(EngineOptions("ltx2"), cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_plan_and_package_import_stay_light() -> None:
    code = (
        "import sys, openreel.engine, openreel.engine.plan, openreel.engine.base; "
        "heavy = {'torch', 'diffusers', 'transformers', 'av'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_failed_checkpoint_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import openreel.engine.tiny as tiny

    def broken(num_layers: int) -> None:
        raise RuntimeError("out of disk")

    monkeypatch.setattr(tiny, "build_tiny_pipeline", broken)
    with pytest.raises(RuntimeError, match="out of disk"):
        save_tiny_checkpoint(tmp_path / "tiny")
    assert list(tmp_path.iterdir()) == []
