"""Pure planning: from a validated request to the exact numbers the pipeline and muxer need.

LTX-2 wants frame counts of the form 8k+1, and its two-stage recipes sides divisible by 64 (stage 1 runs
at half the grid, on LTX-2's /32 grid), while the contract promises exactly 96/144/192 frames at
1280x720 or 1920x1080. So the pipeline is asked for one frame more than the output (every 24 fps
duration is a multiple of 8) on a grid rounded up to 64 (1280x768, 1920x1088), and the result is
centre-cropped. Engines that denoise on a reduced grid (the CPU ``tiny`` engine) pass a ``grid_scale``
below 1, and their frames are scaled to cover the output; the output size never changes.

An extension generates the last ``LEAD_FRAMES`` of the clip it continues again, pinned to the clip's own
frames, and then the frames it adds: 57 + 7 s of 24 fps = 225 frames, already of the form 8k+1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from openreel.engine.recipes import RecipeKind

FPS = 24
LATENT_SPATIAL = 32
# Two stages: the full grid is twice the stage-1 grid, which is on LTX-2's /32 latent grid.
GRID = 2 * LATENT_SPATIAL

TEMPORAL = 8  # LTX-2's VAE: one latent frame per 8 pixel frames, after a first one of its own
RESOLUTIONS: dict[str, tuple[int, int]] = {"720p": (1280, 720), "1080p": (1920, 1080)}
# Frames of a clip an extension is conditioned on: Lightricks' extension recipe conditions on 8 latent
# frames, (8 - 1) * 8 + 1 = 57 pixel frames (packages/ltx-trainer/configs/video_extend_lora.yaml,
# ``temporal_boundary: 8``).
LEAD_FRAMES = 57


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
    recipe: RecipeKind
    generate_audio: bool
    has_first_frame: bool
    has_last_frame: bool
    reference_count: int = 0
    # Rewrite the prompt with the resident Gemma before encoding it (engine/enhance.py).
    enhance_prompt: bool = False
    # Frames of an earlier clip the render starts with (an extension); its output follows them.
    lead_frames: int = 0
    fps: int = FPS

    def stage_size(self, half: bool) -> tuple[int, int]:
        """(width, height) a stage denoises at: the full grid, or half of it for stage 1."""
        return (self.gen_width // 2, self.gen_height // 2) if half else (self.gen_width, self.gen_height)

    def audio_samples(self, rate: int) -> int:
        """Samples of the render's sound: its output's, after the lead's (which a join cross-fades over)."""
        return round((self.lead_frames + self.num_frames) * rate / self.fps)

    @property
    def last_frame_index(self) -> int:
        """Where ``last_frame`` goes: the last frame of the output (the grid has one frame more)."""
        return self.num_frames - 1


def output_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """Exact pixel size promised to the user; portrait swaps the landscape sides."""
    long_side, short_side = RESOLUTIONS[resolution]
    w, h = (int(x) for x in aspect_ratio.split(":"))
    return (long_side, short_side) if w >= h else (short_side, long_side)


def grid_side(side: int, grid_scale: float) -> int:
    """Smallest multiple of the grid at or above the scaled side (cropping only ever removes pixels)."""
    return max(GRID, math.ceil(side * grid_scale / GRID) * GRID)


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
    recipe: RecipeKind,
    has_first_frame: bool,
    has_last_frame: bool,
    reference_count: int = 0,
    enhance_prompt: bool = False,
    lead_frames: int = 0,
    grid_scale: float = 1.0,
) -> RenderPlan:
    width, height = output_size(resolution, aspect_ratio)
    num_frames = duration_s * FPS
    # The smallest 8k+1 frames holding the lead and the output (one frame more than a plain clip's).
    gen_frames = lead_frames + num_frames
    gen_frames += -(gen_frames - 1) % TEMPORAL
    return RenderPlan(
        prompt=prompt,
        negative_prompt=negative_prompt or None,
        seed=seed,
        duration_s=duration_s,
        width=width,
        height=height,
        num_frames=num_frames,
        gen_width=grid_side(width, grid_scale),
        gen_height=grid_side(height, grid_scale),
        gen_frames=gen_frames,
        recipe=recipe,
        generate_audio=generate_audio,
        has_first_frame=has_first_frame,
        has_last_frame=has_last_frame,
        reference_count=reference_count,
        enhance_prompt=enhance_prompt,
        lead_frames=lead_frames,
    )
