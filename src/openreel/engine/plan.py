"""Pure planning: from a validated request to the exact numbers the pipeline and muxer need.

LTX-2 wants frame counts of the form 8k+1 and sides divisible by 32, while the contract promises
exactly 96/144/192 frames at 1280x720 or 1920x1080. So the pipeline is asked for one frame more
than the output (every 24 fps duration is a multiple of 8) on a grid rounded up to 32, and the
result is scaled to cover the output and centre-cropped. Engines that denoise on a reduced grid
(the CPU ``tiny`` engine) pass a ``grid_scale`` below 1; the output size never changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

FPS = 24
LATENT_SPATIAL = 32

RESOLUTIONS: dict[str, tuple[int, int]] = {"720p": (1280, 720), "1080p": (1920, 1080)}


@dataclass(frozen=True)
class RenderPlan:
    prompt: str
    negative_prompt: str | None
    seed: int
    duration_s: int
    width: int
    height: int
    num_frames: int
    gen_width: int
    gen_height: int
    gen_frames: int
    steps: int
    guidance_scale: float
    generate_audio: bool
    has_first_frame: bool
    has_last_frame: bool
    reference_count: int = 0
    fps: int = FPS
    # An explicit stage-1 noise schedule (the distilled checkpoints' 8 sigmas); None: the scheduler's.
    sigmas: tuple[float, ...] | None = None
    # Two stages: stage 1 at half the grid, x2 latent upsample, then these refine steps at full grid.
    refine_sigmas: tuple[float, ...] | None = None

    @property
    def stage1_size(self) -> tuple[int, int]:
        """(width, height) of stage 1 in a two-stage render: half the grid, still sides of /32."""
        return self.gen_width // 2, self.gen_height // 2


def output_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """Exact pixel size promised to the user; portrait swaps the landscape sides."""
    long_side, short_side = RESOLUTIONS[resolution]
    w, h = (int(x) for x in aspect_ratio.split(":"))
    return (long_side, short_side) if w >= h else (short_side, long_side)


def grid_side(side: int, grid_scale: float, multiple: int = LATENT_SPATIAL) -> int:
    """Smallest multiple of ``multiple`` at or above the scaled side (cropping only ever removes pixels)."""
    return max(multiple, math.ceil(side * grid_scale / multiple) * multiple)


def cover_size(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int]:
    """Size to scale ``src`` (w, h) to so it covers ``dst`` with the aspect kept; crop the rest."""
    scale = max(dst[0] / src[0], dst[1] / src[1])
    return max(dst[0], round(src[0] * scale)), max(dst[1], round(src[1] * scale))


def center_crop_box(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred ``dst`` window inside ``src``."""
    left = (src[0] - dst[0]) // 2
    top = (src[1] - dst[1]) // 2
    return left, top, left + dst[0], top + dst[1]


def sheet_layout(sizes: Sequence[tuple[int, int]], sheet: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Where each reference image goes on a reference sheet: ``(left, top, width, height)`` per image.

    The sheet is cut into equal cells, ``rows x ceil(n / rows)``, a short last row centred; each image
    is scaled to fit inside its cell with its aspect kept (letterboxed, never cropped or stretched) and
    centred there. Of the row counts, the one that shows the most image area wins; ties keep fewer rows.
    """
    n = len(sizes)
    if n == 0:
        return []
    width, height = sheet
    best: tuple[int, list[tuple[int, int, int, int]]] | None = None
    for rows in range(1, n + 1):
        cols = math.ceil(n / rows)
        if (rows - 1) * cols >= n:
            continue  # this many rows would leave one empty
        cell_w, cell_h = width // cols, height // rows
        boxes = []
        for i, (w, h) in enumerate(sizes):
            row, col = divmod(i, cols)
            in_row = min(cols, n - row * cols)
            scale = min(cell_w / w, cell_h / h)
            fit_w, fit_h = max(1, round(w * scale)), max(1, round(h * scale))
            left = (width - in_row * cell_w) // 2 + col * cell_w + (cell_w - fit_w) // 2
            top = row * cell_h + (cell_h - fit_h) // 2
            boxes.append((left, top, fit_w, fit_h))
        area = sum(w * h for _, _, w, h in boxes)
        if best is None or area > best[0]:
            best = (area, boxes)
    assert best is not None
    return best[1]


def plan_render(
    *,
    prompt: str,
    negative_prompt: str | None,
    seed: int,
    duration_s: int,
    resolution: str,
    aspect_ratio: str,
    generate_audio: bool,
    steps: int,
    guidance_scale: float,
    negative_guidance_scale: float,
    has_first_frame: bool,
    has_last_frame: bool,
    reference_count: int = 0,
    grid_scale: float = 1.0,
    sigmas: tuple[float, ...] | None = None,
    refine_sigmas: tuple[float, ...] | None = None,
) -> RenderPlan:
    """``sigmas`` replaces ``steps`` by an explicit schedule; ``refine_sigmas`` asks for two stages,
    whose grid sides are multiples of 64 so that stage 1 (half the grid) is still on LTX-2's /32 grid
    (1080p: 1920x1088, stage 1 at 960x544)."""
    width, height = output_size(resolution, aspect_ratio)
    num_frames = duration_s * FPS
    guidance = max(guidance_scale, negative_guidance_scale) if negative_prompt else guidance_scale
    multiple = 2 * LATENT_SPATIAL if refine_sigmas else LATENT_SPATIAL
    return RenderPlan(
        prompt=prompt,
        negative_prompt=negative_prompt or None,
        seed=seed,
        duration_s=duration_s,
        width=width,
        height=height,
        num_frames=num_frames,
        gen_width=grid_side(width, grid_scale, multiple),
        gen_height=grid_side(height, grid_scale, multiple),
        gen_frames=num_frames + 1,
        steps=len(sigmas) if sigmas else steps,
        guidance_scale=guidance,
        generate_audio=generate_audio,
        has_first_frame=has_first_frame,
        has_last_frame=has_last_frame,
        reference_count=reference_count,
        sigmas=sigmas,
        refine_sigmas=refine_sigmas,
    )
