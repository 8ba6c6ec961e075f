"""Where a checkpoint's weights are: a local diffusers directory, or a Hugging Face repo (optionally at
a revision) in the standard HF cache; likewise the one ``.safetensors`` file of an adapter (LoRA) and
the folder of the latent upsampler, when they are published apart from the checkpoint.
Serving never downloads; ``openreel models pull`` does, so a server with missing weights starts, says
it is not ready and names the command to run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PULL_COMMAND = "openreel models pull"
# Where Lightricks' repos keep the x2 spatial latent upsampler, beside the pipeline's components, and
# the distilled LoRA (Lightricks/LTX-2: ltx-2-19b-distilled-lora-384.safetensors at its root).
UPSAMPLER_DIR = "latent_upsampler"
DISTILLED_LORA_GLOB = "*distilled-lora*.safetensors"
# Optional settings a checkpoint carries for openreel itself (the tiny build declares its grid scale).
OPENREEL_CONFIG = "openreel.json"


class WeightsMissing(Exception):
    """The checkpoint's weights are not on this machine (or only partly: an interrupted pull)."""


def _local_path(value: str, exists: Callable[[Path], bool]) -> str | None:
    """A path (``/``, ``./``, ``../``, ``~``, or one that ``exists`` here) made absolute, so it names the
    same place whatever a worker's directory; None: the value is not a path."""
    path = Path(value).expanduser()
    if value.startswith(("/", "./", "../", "~")) or exists(path):
        return str(path.resolve())
    return None


def _hub_id(value: str, form: str) -> tuple[str, str | None]:
    """``org/name[@revision]`` split, the repo id checked: a typo is an error at start-up, not a 500."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo, _, revision = value.partition("@")
    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise ValueError(f"{value!r} is neither a path nor a hub id ({form})") from None
    return repo, revision or None


def _in_repo(value: str, exists: Callable[[Path], bool], form: str) -> tuple[str, str | None, str | None]:
    """A local path (``exists`` says which kind), or ``org/name[@revision][:path inside the repo]``, as
    (source, revision, path inside the repo)."""
    local = _local_path(value, exists)
    if local:
        return local, None, None
    repo, _, inside = value.partition(":")
    return *_hub_id(repo, form), inside.strip("/") or None


@dataclass(frozen=True)
class Checkpoint:
    """A diffusers directory (an absolute path) or a hub repo at a revision."""

    source: str
    revision: str | None = None

    @classmethod
    def parse(cls, value: str) -> Checkpoint:
        """``org/name``, ``org/name@revision``, or a local directory."""
        local = _local_path(value, Path.is_dir)
        return cls(local) if local else cls(*_hub_id(value, "org/name[@revision]"))

    @property
    def is_local(self) -> bool:
        return self.source.startswith("/")

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

    Only what the pipeline loads: ``model_index.json``, its components' folders, the latent upsampler and
    the distilled LoRA (a repo may also hold single-file checkpoints of hundreds of GB beside them)."""
    if checkpoint.is_local:
        return require(checkpoint)
    from huggingface_hub import hf_hub_download, snapshot_download

    index = Path(hf_hub_download(checkpoint.source, "model_index.json", revision=checkpoint.revision))
    patterns = [
        "model_index.json",
        OPENREEL_CONFIG,
        f"{UPSAMPLER_DIR}/*",
        DISTILLED_LORA_GLOB,
        *(f"{c}/*" for c in _components(index)),
    ]
    snapshot_download(checkpoint.source, revision=checkpoint.revision, allow_patterns=patterns)
    return require(checkpoint)


def declared_grid_scale(directory: Path) -> float:
    """The grid a checkpoint asks to be denoised on, relative to the output: 1 unless its
    ``openreel.json`` says otherwise (the tiny random-weight build says 0.25, so CPUs can run it)."""
    declared = directory / OPENREEL_CONFIG
    if not declared.is_file():
        return 1.0
    return float(json.loads(declared.read_text()).get("grid_scale", 1.0))


def distilled_lora_in(directory: Path) -> Path:
    """The distilled LoRA at the root of a checkpoint directory, or ``WeightsMissing`` saying why not."""
    found = sorted(directory.glob(DISTILLED_LORA_GLOB))
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(f.name for f in found)
        raise WeightsMissing(
            f"{directory} holds several distilled LoRAs ({names}); name one in OPENREEL_DISTILLED_LORA"
        )
    raise WeightsMissing(
        f"no {DISTILLED_LORA_GLOB} beside the checkpoint; set OPENREEL_DISTILLED_LORA (a file, or "
        f"org/name[@revision]:file.safetensors) and run `{PULL_COMMAND}`"
    )


def upsampler_in(directory: Path) -> Path:
    """The checkpoint's own latent upsampler folder, or ``WeightsMissing`` saying what to set."""
    folder = directory / UPSAMPLER_DIR
    if (folder / "config.json").is_file():
        return folder
    raise WeightsMissing(
        f"no {UPSAMPLER_DIR}/ beside the checkpoint; set OPENREEL_UPSAMPLER (a folder, or "
        f"org/name[@revision][:subfolder]) and run `{PULL_COMMAND}`"
    )


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
        return cls(*_in_repo(value, Path.is_file, "org/name[@revision][:file.safetensors]"))

    @property
    def is_local(self) -> bool:
        return self.source.startswith("/")

    @property
    def pattern(self) -> str:
        return self.filename or "*.safetensors"

    def __str__(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        return self.source + revision + (f":{self.filename}" if self.filename else "")


def _adapter_candidates(adapter: Adapter) -> list[Path]:
    """The files on this machine that could be the adapter; more than one means the id is ambiguous.
    Looks, never downloads: the HF cache's snapshot of that revision, read offline."""
    if adapter.is_local:
        path = Path(adapter.source)
        return [path] if path.is_file() else []
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(
            snapshot_download(
                adapter.source,
                revision=adapter.revision,
                allow_patterns=[adapter.pattern],
                # Without a file named, only the root's files count (a nested one need not be here).
                ignore_patterns=None if adapter.filename else ["*/*"],
                local_files_only=True,
            )
        )
    except LocalEntryNotFoundError:  # no such repo, revision or file in the cache (or only part of it)
        return []
    if adapter.filename:
        path = snapshot / adapter.filename
        return [path] if path.is_file() else []
    return sorted(snapshot.glob("*.safetensors"))


def locate_adapter(adapter: Adapter) -> Path | None:
    """The adapter's file on this machine, or None (absent, or ambiguous: ``require_adapter`` says)."""
    found = _adapter_candidates(adapter)
    return found[0] if len(found) == 1 else None


def require_adapter(adapter: Adapter) -> Path:
    """The adapter's file, or ``WeightsMissing`` saying what to do about it."""
    found = _adapter_candidates(adapter)
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(f.name for f in found)
        raise WeightsMissing(f"{adapter} holds several adapters ({names}); name one as {adapter}:FILE")
    raise WeightsMissing(
        f"{adapter.source} is not a file"
        if adapter.is_local
        else f"the adapter {adapter} is not on this machine; run `{PULL_COMMAND}` to download it"
    )


def pull_adapter(adapter: Adapter) -> Path:
    """Download the adapter's one file into the Hugging Face cache, with a progress bar; a repo with
    several ``.safetensors`` at its root and no file named is refused before anything downloads."""
    if adapter.is_local:
        return require_adapter(adapter)
    from huggingface_hub import list_repo_files, snapshot_download

    if adapter.filename is None:
        roots = [f for f in list_repo_files(adapter.source, revision=adapter.revision) if "/" not in f]
        found = [f for f in roots if f.endswith(".safetensors")]
        if len(found) != 1:
            raise WeightsMissing(
                f"{adapter} holds {len(found) or 'no'} .safetensors files at its root"
                + (f" ({', '.join(found)}); name one as {adapter}:FILE" if found else "")
            )
        adapter = Adapter(adapter.source, adapter.revision, found[0])
    snapshot_download(adapter.source, revision=adapter.revision, allow_patterns=[adapter.pattern])
    return require_adapter(adapter)


@dataclass(frozen=True)
class Folder:
    """A diffusers model folder (``config.json`` and weights): a local directory, or
    ``org/name[@revision][:subfolder]`` on the hub."""

    source: str
    revision: str | None = None
    subfolder: str | None = None

    @classmethod
    def parse(cls, value: str) -> Folder:
        return cls(*_in_repo(value, Path.is_dir, "org/name[@revision][:subfolder]"))

    @property
    def is_local(self) -> bool:
        return self.source.startswith("/")

    @property
    def pattern(self) -> str:
        return f"{self.subfolder}/*" if self.subfolder else "*"

    def __str__(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        return self.source + revision + (f":{self.subfolder}" if self.subfolder else "")


def require_folder(folder: Folder) -> Path:
    """The folder on this machine (looks, never downloads), or ``WeightsMissing`` saying what to do."""
    if folder.is_local:
        path = Path(folder.source)
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            snapshot = snapshot_download(
                folder.source,
                revision=folder.revision,
                allow_patterns=[folder.pattern],
                local_files_only=True,
            )
        except LocalEntryNotFoundError:
            snapshot = None
        path = Path(snapshot) / (folder.subfolder or "") if snapshot else Path("/nonexistent")
    if (path / "config.json").is_file():
        return path
    raise WeightsMissing(
        f"{folder.source} is not a model folder (no config.json)"
        if folder.is_local
        else f"{folder} is not on this machine; run `{PULL_COMMAND}` to download it"
    )


def pull_folder(folder: Folder) -> Path:
    if not folder.is_local:
        from huggingface_hub import snapshot_download

        snapshot_download(folder.source, revision=folder.revision, allow_patterns=[folder.pattern])
    return require_folder(folder)
