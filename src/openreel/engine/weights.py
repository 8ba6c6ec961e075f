"""Where a checkpoint's weights are: a local diffusers directory, or a Hugging Face repo (optionally at
a revision) in the standard HF cache; likewise the one ``.safetensors`` file of an adapter (LoRA).
Serving never downloads; ``openreel models pull`` does, so a server with missing weights starts, says
it is not ready and names the command to run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PULL_COMMAND = "openreel models pull"
# Where Lightricks' repos keep the x2 spatial latent upsampler, beside the pipeline's components.
UPSAMPLER_DIR = "latent_upsampler"


class WeightsMissing(Exception):
    """The checkpoint's weights are not on this machine (or only partly: an interrupted pull)."""


@dataclass(frozen=True)
class Checkpoint:
    source: str
    revision: str | None = None

    @classmethod
    def parse(cls, value: str) -> Checkpoint:
        """``org/name``, ``org/name@revision``, or a local directory (absolute, ``./`` or ``~``)."""
        if value.startswith(("/", "./", "../", "~")) or Path(value).expanduser().is_dir():
            return cls(str(Path(value).expanduser()))
        repo, _, revision = value.partition("@")
        return cls(repo, revision or None)

    @property
    def is_local(self) -> bool:
        return self.source.startswith("/") or Path(self.source).is_dir()

    def __str__(self) -> str:
        return self.source + (f"@{self.revision}" if self.revision else "")


def complete(directory: Path) -> bool:
    """A diffusers pipeline directory with every component in ``model_index.json`` and every weight
    shard its index files name."""
    index = directory / "model_index.json"
    if not index.is_file():
        return False
    for component in _components(index):
        folder = directory / component
        if not folder.is_dir() or not any(folder.iterdir()):
            return False
        for shard_index in folder.glob("*.index.json"):
            shards = set(json.loads(shard_index.read_text()).get("weight_map", {}).values())
            if not all((folder / shard).is_file() for shard in shards):
                return False
    return True


def _components(index: Path) -> list[str]:
    """The component folders a diffusers ``model_index.json`` names (``[library, class]`` entries)."""
    return [k for k, v in json.loads(index.read_text()).items() if isinstance(v, list) and v[0]]


def locate(checkpoint: Checkpoint) -> Path | None:
    """The complete local copy of the checkpoint, or None. Looks, never downloads."""
    if checkpoint.is_local:
        directory = Path(checkpoint.source)
    else:
        from huggingface_hub import try_to_load_from_cache

        # The snapshot folder of that revision in the HF cache, found through its model_index.json.
        index = try_to_load_from_cache(checkpoint.source, "model_index.json", revision=checkpoint.revision)
        if not isinstance(index, str):
            return None
        directory = Path(index).parent
    return directory if complete(directory) else None


def require(checkpoint: Checkpoint) -> Path:
    directory = locate(checkpoint)
    if directory is None:
        raise WeightsMissing(
            f"the weights of {checkpoint} are not on this machine; run `{PULL_COMMAND}` to download them"
            if not checkpoint.is_local
            else f"{checkpoint.source} is not a complete diffusers checkpoint directory"
        )
    return directory


def pull(checkpoint: Checkpoint) -> Path:
    """Download into the Hugging Face cache, with progress bars; resumes an interrupted pull.

    Only what the pipeline loads: ``model_index.json``, its components' folders and the latent
    upsampler (a repo may also hold single-file checkpoints of hundreds of GB beside them)."""
    if checkpoint.is_local:
        return require(checkpoint)
    from huggingface_hub import hf_hub_download, snapshot_download

    index = Path(hf_hub_download(checkpoint.source, "model_index.json", revision=checkpoint.revision))
    patterns = ["model_index.json", f"{UPSAMPLER_DIR}/*", *(f"{c}/*" for c in _components(index))]
    snapshot_download(checkpoint.source, revision=checkpoint.revision, allow_patterns=patterns)
    return require(checkpoint)


def size_on_disk(directory: Path) -> int:
    """Bytes of the files (the HF cache links snapshot files to blobs; their sizes are counted)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


@dataclass(frozen=True)
class Adapter:
    """A LoRA file: a local ``.safetensors`` path, or ``org/name[@revision][:file.safetensors]`` on the
    hub, where the file may be left out when the repo holds exactly one ``.safetensors`` at its root."""

    source: str
    revision: str | None = None
    filename: str | None = None

    @classmethod
    def parse(cls, value: str) -> Adapter:
        if value.startswith(("/", "./", "../", "~")) or Path(value).expanduser().is_file():
            return cls(str(Path(value).expanduser()))
        repo, _, filename = value.partition(":")
        repo, _, revision = repo.partition("@")
        return cls(repo, revision or None, filename or None)

    @property
    def is_local(self) -> bool:
        return self.source.startswith("/") or Path(self.source).is_file()

    def __str__(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        return self.source + revision + (f":{self.filename}" if self.filename else "")


def locate_adapter(adapter: Adapter) -> Path | None:
    """The adapter's file on this machine, or None. Looks, never downloads."""
    if adapter.is_local:
        path = Path(adapter.source)
        return path if path.is_file() else None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(
            snapshot_download(
                adapter.source,
                revision=adapter.revision,
                allow_patterns=[adapter.filename or "*.safetensors"],
                local_files_only=True,
            )
        )
    except LocalEntryNotFoundError:
        return None
    return _adapter_file(snapshot, adapter)


def _adapter_file(snapshot: Path, adapter: Adapter) -> Path | None:
    if adapter.filename:
        path = snapshot / adapter.filename
        return path if path.is_file() else None
    files = sorted(snapshot.glob("*.safetensors"))
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise WeightsMissing(f"{adapter} holds several adapters ({names}); name one as {adapter}:FILE")
    return files[0] if files else None


def require_adapter(adapter: Adapter) -> Path:
    path = locate_adapter(adapter)
    if path is None:
        raise WeightsMissing(
            f"the adapter {adapter} is not on this machine; run `{PULL_COMMAND}` to download it"
            if not adapter.is_local
            else f"{adapter.source} is not a file"
        )
    return path


def pull_adapter(adapter: Adapter) -> Path:
    """Download the adapter's file into the Hugging Face cache, with a progress bar."""
    if adapter.is_local:
        return require_adapter(adapter)
    from huggingface_hub import snapshot_download

    snapshot_download(
        adapter.source, revision=adapter.revision, allow_patterns=[adapter.filename or "*.safetensors"]
    )
    return require_adapter(adapter)
