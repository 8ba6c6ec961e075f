"""What a render actually did, recorded from the calls made (``result.recipe`` of every job).

The engine's hooks feed one ``Trace`` per render: every transformer call (its grid, sigma, batch and
perturbations), every condition the pipelines encoded, the weights each stage ran on. The summary is
derived from those records alone, so it cannot drift from what ran; ``calls`` keeps the raw per-call
tensors when ``capture`` is on (the parity tests compare them with Lightricks' own pipelines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Call:
    stage: int
    sigma: torch.Tensor
    rows: int
    grid: tuple[int, int, int]  # latent frames, height, width
    audio_tokens: int
    stg: bool
    isolated: bool
    nag: bool
    timesteps: torch.Tensor | None = None  # per video token, first batch row (capture only)
    positions: torch.Tensor | None = None  # (3, tokens, 2), first batch row (capture only)
    audio_timesteps: torch.Tensor | None = None  # per audio token, first batch row (capture only)


@dataclass
class StageInfo:
    weights: str
    lora: bool
    noise_scale: float


@dataclass
class Trace:
    version: str
    precision: str
    spatial: int  # VAE compression: latent to pixel
    temporal: int
    timestep_scale: float  # the pipelines pass sigma * num_train_timesteps
    capture: bool = False
    calls: list[Call] = field(default_factory=list)
    stages: list[StageInfo] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    peak_gpu_bytes: int | None = None

    def begin_stage(self, weights: str, lora: bool, noise_scale: float) -> None:
        self.stages.append(StageInfo(weights, lora, noise_scale))

    def transformer_call(self, kwargs: dict[str, Any], nag: bool, stg: bool) -> None:
        """``nag``: NAG steered this call; ``stg``: its STG perturbation reached a block that exists."""
        hidden = kwargs["hidden_states"]
        call = Call(
            stage=len(self.stages) - 1,
            sigma=kwargs["sigma"].reshape(-1)[0].detach() / self.timestep_scale,
            rows=hidden.shape[0],
            grid=(int(kwargs["num_frames"]), int(kwargs["height"]), int(kwargs["width"])),
            audio_tokens=int(kwargs["audio_hidden_states"].shape[1]),
            stg=stg,
            isolated=bool(kwargs.get("isolate_modalities")),
            nag=nag,
        )
        if self.capture:
            timestep = kwargs["timestep"]
            call.timesteps = timestep[0].detach().float().cpu() / self.timestep_scale
            call.positions = kwargs["video_coords"][0].detach().float().cpu()
            audio = kwargs["audio_timestep"].reshape(hidden.shape[0], -1)[0].detach().float().cpu()
            call.audio_timesteps = audio.expand(kwargs["audio_hidden_states"].shape[1]) / self.timestep_scale
        self.calls.append(call)

    def condition(self, kind: str, width: int, height: int, pixel_frame: int | None, frames: int) -> None:
        self.conditions.append(
            {
                "kind": kind,
                "stage": len(self.stages) - 1,
                "width": width,
                "height": height,
                "pixelFrame": pixel_frame,
                "frames": frames,
            }
        )

    def summary(self) -> dict[str, Any]:
        stages = []
        for index, info in enumerate(self.stages):
            calls = [c for c in self.calls if c.stage == index]
            sigmas = list(dict.fromkeys(round(float(c.sigma), 6) for c in calls))
            frames, height, width = calls[0].grid if calls else (0, 0, 0)
            guidance = [
                name
                for name, on in (
                    ("cfg", any(c.rows > 1 for c in calls)),
                    ("stg", any(c.stg for c in calls)),
                    ("modality", any(c.isolated for c in calls)),
                    ("nag", any(c.nag for c in calls)),
                )
                if on
            ]
            stages.append(
                {
                    "width": width * self.spatial,
                    "height": height * self.spatial,
                    "frames": (frames - 1) * self.temporal + 1 if frames else 0,
                    "sigmas": sigmas,
                    "noiseScale": info.noise_scale,
                    "guidance": guidance,
                    "passesPerStep": sum(c.rows for c in calls) // max(len(sigmas), 1),
                    "weights": info.weights,
                    "lora": info.lora,
                }
            )
        return {
            "version": self.version,
            "precision": self.precision,
            "stages": stages,
            "conditions": self.conditions,
            "peakGpuBytes": self.peak_gpu_bytes,
        }
