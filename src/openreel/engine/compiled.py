"""Regional compilation of the transformer: its repeated blocks through ``torch.compile``, one graph
serving all of them (diffusers' ``compile_repeated_blocks``), cached on disk across restarts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

# dynamo's default (8) was reached by one bench process on an H200 (stage sizes, fp8, the quality
# recipe's batch of two; BENCHMARKS.md), after which the blocks ran uncompiled. Each variant of a block (its
# batch, perturbed attention, an adapter switched on) costs one compilation, once per process.
RECOMPILE_LIMIT = 64


def compile_blocks(transformer: Any, cache_dir: Path | None) -> None:
    """Compile at the blocks' first call, with symbolic sizes: every clip shape shares one graph
    (compiled for sizes as first seen, dynamo would compile three as the shapes vary: the first shape's,
    then one per dimension found to change). Inductor keeps its kernels and graphs in ``cache_dir`` unless
    the operator set ``TORCHINDUCTOR_CACHE_DIR``: a restarted worker compiles again from there. (Importing
    diffusers already writes inductor's default, a per-user folder in /tmp, into that variable.)"""
    if cache_dir is not None and os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    # The blocks' float attributes (norm epsilons, dropout rates, NAG's scale, alpha and tau) are constants:
    # traced as symbols (dynamo's default under ``dynamic=True``), they fail to become tensors and dynamo
    # traces each graph twice, the second time with them specialized (the tiny engine's compilation took
    # 71 s instead of 53 s on 2 CPU cores; BENCHMARKS.md). Process-wide, and a float that varied from call
    # to call would now cost a compilation per value: none reaches the blocks (timesteps come as tensors).
    torch._dynamo.config.specialize_float = True
    transformer.compile_repeated_blocks(dynamic=True)
