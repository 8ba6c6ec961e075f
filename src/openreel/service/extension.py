"""The clip an extension continues: found among the account's finished jobs and checked against Google's
limits before anything is charged (docs/api.md, "Extending a clip")."""

from __future__ import annotations

from dataclasses import replace

from openreel.domain.limits import EXTEND_SECONDS, MAX_EXTEND_SOURCE_S
from openreel.domain.rules import EXTEND_RESOLUTION, VideoSpec
from openreel.engine.plan import FPS, LEAD_FRAMES, output_size
from openreel.ledger import jobs
from openreel.service.services import Services
from openreel.service.views import stored_samples


class SourceRejected(Exception):
    """The clip named for an extension cannot be continued; the message says why, for a 400."""


def take_source(svc: Services, account_id: str, spec: VideoSpec) -> VideoSpec:
    """``spec`` with its extension's video located (its storage key) and its aspect ratio the
    clip's own. Only a video this server made for the same account can be continued, as Google continues
    only Veo's own."""
    ext = spec.extend
    assert ext is not None
    with svc.db.read() as session:
        job = jobs.read_for_account(session, account_id, ext.job_id)
    if job is None:
        raise SourceRejected(f"job {ext.job_id} not found (only this account's own videos can be extended)")
    if job.status != jobs.COMPLETED or not job.result:
        raise SourceRejected(
            f"job {ext.job_id} is {job.status}; only a completed job's video can be extended"
        )
    samples = stored_samples(job.result)
    if ext.video >= len(samples):
        raise SourceRejected(
            f"job {ext.job_id} has {len(samples)} video(s); video {ext.video} does not exist"
        )
    video = samples[ext.video]
    if "key" not in video:
        raise SourceRejected(
            f"video {ext.video} of job {ext.job_id} failed to render, so it cannot be extended"
        )
    if not svc.storage.exists(video["key"]):
        raise SourceRejected(f"the video of job {ext.job_id} has expired from storage and cannot be extended")
    size = (video["width"], video["height"])
    ratio = {output_size(EXTEND_RESOLUTION, r): r for r in ("16:9", "9:16")}.get(size)
    if ratio is None or video["fps"] != FPS:
        raise SourceRejected(
            f"only 720p videos at {FPS} fps can be extended (Google's rule); this one is "
            f"{size[0]}x{size[1]} at {video['fps']} fps"
        )
    frames = int(video["frameCount"])
    if frames / FPS > MAX_EXTEND_SOURCE_S:
        raise SourceRejected(
            f"the video is {frames / FPS:g} s long; at most {MAX_EXTEND_SOURCE_S} s can be extended "
            f"(the result may not pass {MAX_EXTEND_SOURCE_S + EXTEND_SECONDS} s)"
        )
    if frames < LEAD_FRAMES:
        raise SourceRejected(f"the video has {frames} frames; an extension continues its last {LEAD_FRAMES}")
    if ext.asked_aspect_ratio not in (None, ratio):
        raise SourceRejected(
            f"the video is {ratio} and an extension keeps its aspect ratio; leave aspect_ratio out or "
            f"ask {ratio}"
        )
    return replace(spec, aspect_ratio=ratio, extend=replace(ext, key=video["key"], seconds=frames / FPS))
