"""What a claimed job needs before a worker can take it: its images read, the clip it extends fetched, its
render planned for the engine's grid, and where each of its videos will be written."""

from __future__ import annotations

from dataclasses import replace
from typing import overload

from PIL import Image

from openreel.domain.catalog import Catalog
from openreel.domain.rules import VideoSpec
from openreel.engine.plan import LEAD_FRAMES, plan_render
from openreel.executors import messages as m
from openreel.settings import Settings
from openreel.storage.base import Storage
from openreel.storage.images import InputError, load_image
from openreel.storage.signing import Signer


def attempt_keys(job_id: str, attempt: int, samples: int) -> tuple[str, ...]:
    """Where an attempt stores its videos: each attempt its own names, so a late write of an attempt
    that lost its lease cannot replace the videos of the one that took over."""
    return tuple(
        f"results/{job_id}/{attempt}.mp4" if i == 0 else f"results/{job_id}/{attempt}.{i}.mp4"
        for i in range(samples)
    )


class Preparer:
    def __init__(self, settings: Settings, storage: Storage, signer: Signer, catalog: Catalog) -> None:
        self.settings = settings
        self.storage = storage
        self.signer = signer
        self.catalog = catalog

    def prepare(
        self, seq: int, job_id: str, attempt: int, spec: VideoSpec, grid_scale: float
    ) -> tuple[m.RenderTask, tuple[str, ...]]:
        """The task, with one plan per sample (its own seed), and each sample's key in storage.
        ``InputError``: the job cannot run as asked (an image gone or unreadable, its model withdrawn)."""
        model = self.catalog.get(spec.model)
        if model is None:
            raise InputError(f"model {spec.model} is no longer in the catalog")
        first = self._image(spec.image)
        last = self._image(spec.last_frame)
        references = tuple(self._image(url) for url in spec.reference_images)
        extends = self._continued(spec)
        plan = plan_render(
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            seed=spec.seed,
            duration_s=spec.duration,
            resolution=spec.resolution,
            aspect_ratio=spec.aspect_ratio,
            generate_audio=spec.generate_audio,
            recipe=model.recipe,
            has_first_frame=first is not None,
            has_last_frame=last is not None,
            reference_count=len(references),
            enhance_prompt=spec.enhance_prompt,
            lead_frames=LEAD_FRAMES if extends else 0,
            grid_scale=grid_scale,
        )
        keys = attempt_keys(job_id, attempt, spec.sample_count)
        staged = tuple(str(self.storage.staging_path(key)) for key in keys)
        plans = tuple(replace(plan, seed=seed) for seed in spec.seeds)
        return m.RenderTask(seq, job_id, plans, staged, first, last, references, extends), keys

    def _continued(self, spec: VideoSpec) -> m.Continued | None:
        """The clip an extension continues, read from storage (the service found it at submit)."""
        ext = spec.extend
        if ext is None:
            return None
        assert ext.key is not None
        try:
            mp4 = self.storage.read_bytes(ext.key)
        except FileNotFoundError:
            raise InputError(
                f"the video to extend (job {ext.job_id}) was deleted or expired before the job started"
            ) from None
        return m.Continued(ext.job_id, ext.video, mp4)

    @overload
    def _image(self, url: str) -> Image.Image: ...
    @overload
    def _image(self, url: None) -> None: ...
    def _image(self, url: str | None) -> Image.Image | None:
        if url is None:
            return None
        return load_image(url, settings=self.settings, signer=self.signer, storage=self.storage)
