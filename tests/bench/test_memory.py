"""bench/memory.py: a whole job at full size under fake tensors, with the engine's residency."""

from __future__ import annotations

import pytest
from fake_gpu import GiB
from memory import Job, predict


@pytest.mark.slow
def test_the_fast_1080p_8s_job_with_a_first_frame_fits_an_80_gb_card_in_bf16() -> None:
    """LTX-2.3 22B, the larger generation: every component but Gemma resident, Gemma visiting whole to
    encode the prompt. The peak leaves room on an H100 (about 79 GiB usable) for the CUDA context,
    library workspaces and fragmentation."""
    p = predict(Job("LTX-2.3-22B-dev", "fast", "1080p", 8, "image"))
    assert p.text_placement == "visit"
    assert 40 * GiB < p.weights < 46 * GiB
    assert p.phases["stage 2"] > p.phases["stage 1"]
    assert p.peak < 75 * GiB, p.phases
