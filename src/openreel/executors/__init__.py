"""Executors run render tasks on workers; the dispatcher feeds them and keeps the books."""

from __future__ import annotations

from openreel.executors.base import Executor
from openreel.settings import Settings


def make_executor(settings: Settings) -> Executor:
    if settings.executor == "ray":
        try:
            from openreel.executors.ray_cluster import RayExecutor
        except ImportError as exc:
            raise RuntimeError("the ray executor needs Ray: pip install 'openreel[ray]'") from exc
        return RayExecutor(settings)
    from openreel.executors.local import LocalExecutor

    return LocalExecutor(settings)
