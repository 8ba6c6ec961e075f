"""Engine fixtures. Names are engine-specific so they cannot clash with the service's tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openreel.engine.plan import RenderPlan, plan_render


@pytest.fixture(scope="session")
def tiny_engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="session")
def tiny_engine(tiny_engine_cache: Path) -> Any:
    """The tiny engine loaded the way the service loads it; built once per test session (~2 s)."""
    from openreel.engine import EngineOptions, load_engine

    return load_engine(EngineOptions("tiny"), cache_dir=tiny_engine_cache)


@pytest.fixture(scope="session")
def stg_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny engine with blocks up to LTX-2.0's STG block (29), loaded as a checkpoint on disk is.
    Thirty blocks cost fifteen times the two-block engine's denoising."""
    from openreel.engine import EngineOptions, load_engine
    from openreel.engine.recipes import STG_BLOCKS
    from openreel.engine.tiny import save_tiny_checkpoint

    cache = tmp_path_factory.mktemp("stg-engine")
    directory = save_tiny_checkpoint(cache / "tiny", num_layers=max(STG_BLOCKS["2.0"]) + 1)
    return load_engine(EngineOptions("ltx2", checkpoint=str(directory)), cache_dir=cache)


@pytest.fixture(scope="session")
def tiny_plan() -> Callable[..., RenderPlan]:
    """Plan factory: 1 s of 720p 16:9 on the tiny engine's quarter grid, on the fast recipe."""

    def make(**overrides: Any) -> RenderPlan:
        args: dict[str, Any] = {
            "prompt": "a red fox running through fresh snow",
            "negative_prompt": None,
            "seed": 7,
            "duration_s": 1,
            "resolution": "720p",
            "aspect_ratio": "16:9",
            "generate_audio": True,
            "recipe": "fast",
            "has_first_frame": False,
            "has_last_frame": False,
            "grid_scale": 0.25,
        }
        args.update(overrides)
        return plan_render(**args)

    return make
