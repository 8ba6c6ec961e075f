"""``openreel models``: the weights behind the catalog, whether they are here, and pulling them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from openreel.cli.local import DataDir, settings_of
from openreel.cli.terminal import Typer, columns, fail, say
from openreel.settings import Settings

app = Typer(help="Model weights: the checkpoint behind the catalog, here or not.")


def _checkpoint(settings: Settings, option: str | None = None) -> str:
    """The configured checkpoint, which serves every model id; ``option``: the command's own option that
    names one instead, if it has one."""
    found = settings.configured_checkpoint()
    if found is None:
        fail(
            "No checkpoint configured: set OPENREEL_CHECKPOINT (a hub repo id[@revision] or a local "
            f"directory){f', or pass {option}' if option else ''}."
        )
    return str(found)


def _pieces(settings: Settings) -> list[tuple[str, str, str]]:
    """(setting value, what it is, what it serves) of each piece configured apart from the checkpoint."""
    pieces = []
    if settings.distilled_lora:
        pieces.append((settings.distilled_lora, "distilled LoRA", "distilled stages on dev weights"))
    if settings.upsampler:
        pieces.append((settings.upsampler, "upsampler", "the x2 step of every recipe"))
    if settings.reference_adapter:
        pieces.append((settings.reference_adapter, "adapter", "reference_images"))
    return pieces


def _locate_piece(kind: str, value: str) -> Path | None:
    from openreel.engine.weights import Adapter, Folder, WeightsMissing, require_adapter, require_folder

    try:
        return (
            require_folder(Folder.parse(value))
            if kind == "upsampler"
            else require_adapter(Adapter.parse(value))
        )
    except WeightsMissing:
        return None


@app.command("list")
def models_list(data_dir: DataDir = None) -> None:
    """List the weights behind the model ids: here or not, and their size.

    That is the open checkpoint behind the model ids and the pieces configured beside it (distilled LoRA,
    latent upsampler, reference adapter)."""
    from openreel.engine.weights import Checkpoint, locate, size_on_disk

    settings = settings_of(data_dir)
    checkpoint = _checkpoint(settings)
    directory = locate(Checkpoint.parse(checkpoint))
    missing = directory is None
    size = _size(size_on_disk(directory)) if directory else "-"
    rows: list[tuple[str, ...]] = [
        (checkpoint, settings.engine, "every model id", "yes" if directory else "no", size)
    ]
    for value, kind, serves in _pieces(settings):
        path = _locate_piece(kind, value)
        missing = missing or path is None
        size = "-" if path is None else _size(size_on_disk(path) if path.is_dir() else path.stat().st_size)
        rows.append((value, kind, serves, "yes" if path else "no", size))
    columns(("weights", "kind", "serves", "present", "size"), rows)
    if missing:
        say("Weights missing: run `openreel models pull`.")


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


@app.command("pull")
def models_pull(
    checkpoint: Annotated[
        str | None, typer.Option(help="Pull this hub repo id[@revision] instead of the configured weights.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Download the weights into the Hugging Face cache.

    The cache is HF_HOME / HF_HUB_CACHE. It fetches the checkpoint's pipeline folders, latent upsampler
    and distilled LoRA, and the pieces configured apart from it (OPENREEL_DISTILLED_LORA,
    OPENREEL_UPSAMPLER, OPENREEL_REFERENCE_ADAPTER) unless --checkpoint is given.

    An interrupted pull resumes. A server started before the pull loads the weights at its next try
    (30 s after the failure, the wait doubling up to 15 minutes) or at once when restarted."""
    from openreel.engine.weights import (
        Adapter,
        Checkpoint,
        Folder,
        pull,
        pull_adapter,
        pull_folder,
        size_on_disk,
    )

    settings = settings_of(data_dir)
    if settings.engine == "tiny" and checkpoint is None:
        from openreel.engine import TINY_CHECKPOINT_DIR
        from openreel.engine.tiny import save_tiny_checkpoint

        directory = save_tiny_checkpoint(settings.data_dir / "models" / TINY_CHECKPOINT_DIR)
        say(f"ready: {directory} ({_size(size_on_disk(directory))})")
    else:
        target = checkpoint or _checkpoint(settings, "--checkpoint")
        directory = _pulling(target, lambda t: pull(Checkpoint.parse(t)))
        say(f"ready: {target} in {directory} ({_size(size_on_disk(directory))})")
        if checkpoint is not None:
            return
    for value, kind, _ in _pieces(settings):
        if kind == "upsampler":
            path = _pulling(value, lambda v: pull_folder(Folder.parse(v)))
        else:
            path = _pulling(value, lambda v: pull_adapter(Adapter.parse(v)))
        size = size_on_disk(path) if path.is_dir() else path.stat().st_size
        say(f"ready: {value} in {path} ({_size(size)})")


def _pulling(target: str, fetch: Callable[[str], Path]) -> Path:
    try:
        return fetch(target)
    except Exception as exc:
        fail(f"Pulling {target} failed: {type(exc).__name__}: {exc}")
