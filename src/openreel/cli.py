"""The ``openreel`` command: run the server, manage keys and credits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from openreel.engine import ENGINES
from openreel.settings import ExecutorName, Settings

if TYPE_CHECKING:
    from openreel.ledger.db import Database
    from openreel.protocols.apiframe.schemas import JobOut
    from openreel.sdk import Client

app = typer.Typer(
    help="openreel: self-hosted video generation with the Apiframe v2 (Veo) API.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
credits_app = typer.Typer(help="Credit balances and the ledger.", no_args_is_help=True)
models_app = typer.Typer(
    help="Model weights: the checkpoint behind the catalog, here or not.", no_args_is_help=True
)
accounts_app = typer.Typer(help="Accounts: balances and keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(accounts_app, name="accounts")
app.add_typer(credits_app, name="credits")
app.add_typer(models_app, name="models")
console = Console()


def _print_version(value: bool) -> None:
    if value:
        from openreel import __version__

        console.print(f"openreel {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    pass


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (OPENREEL_DATA_DIR).")]


def _settings(data_dir: Path | None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        raise typer.BadParameter(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None


def _database(settings: Settings) -> Database:
    from openreel.ledger.db import Database, migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    migrate(url)
    return Database(url)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (OPENREEL_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (OPENREEL_PORT).")] = None,
    data_dir: DataDir = None,
    engine: Annotated[
        str | None, typer.Option(help=f"Engine: {', '.join(ENGINES)} (OPENREEL_ENGINE).")
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help=f"Executor: {', '.join(get_args(ExecutorName))} (OPENREEL_EXECUTOR).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker slots here, one per GPU (OPENREEL_WORKERS).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to drive, host:port (OPENREEL_RAY_ADDRESS).")
    ] = None,
) -> None:
    """Run the API server and its workers."""
    import uvicorn

    from openreel.app import create_app

    settings = _settings(
        data_dir,
        host=host,
        port=port,
        engine=engine,
        executor=executor,
        workers=workers,
        ray_address=ray_address,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


@app.command()
def worker(
    address: Annotated[str, typer.Option(help="The Ray head to join, host:port.")],
    slots: Annotated[
        int | None, typer.Option(min=1, help="Jobs this node renders at once (default: one per GPU, else 1).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Join a Ray cluster as a render node: a server with OPENREEL_EXECUTOR=ray puts one actor per slot
    here, each keeping the engine's weights loaded. Stays in the foreground; Ctrl-C leaves the cluster."""
    import os

    from openreel.executors.ray_cluster import node_command

    settings = _settings(data_dir)
    if slots is None:
        import torch

        slots = max(torch.cuda.device_count(), 1)
    command = node_command(address, slots)
    console.print(f"joining {address} with {slots} slot(s): {' '.join(command)}")
    # Actors on this node read its settings: weights are cached under this node's data dir.
    env = {**os.environ, "OPENREEL_DATA_DIR": str(settings.data_dir.resolve())}
    os.execvpe(command[0], command, env)


def _checkpoint(settings: Settings) -> str:
    """The configured checkpoint, which serves every model id."""
    found = settings.configured_checkpoint()
    if found is None:
        console.print(
            "[red]No checkpoint configured: set OPENREEL_CHECKPOINT (a hub repo id[@revision] or a local "
            "directory), or pass --checkpoint.[/red]"
        )
        raise typer.Exit(1)
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


@models_app.command("list")
def models_list(data_dir: DataDir = None) -> None:
    """The open checkpoint behind the model ids, the pieces configured beside it (distilled LoRA, latent
    upsampler, reference adapter), whether their weights are here, and their size."""
    from openreel.engine.weights import Checkpoint, locate, size_on_disk

    settings = _settings(data_dir)
    table = Table("weights", "kind", "serves", "present", "size")
    checkpoint = _checkpoint(settings)
    directory = locate(Checkpoint.parse(checkpoint))
    missing = directory is None
    size = _size(size_on_disk(directory)) if directory else "-"
    table.add_row(checkpoint, settings.engine, "every model id", "yes" if directory else "no", size)
    for value, kind, serves in _pieces(settings):
        path = _locate_piece(kind, value)
        missing = missing or path is None
        size = "-" if path is None else _size(size_on_disk(path) if path.is_dir() else path.stat().st_size)
        table.add_row(value, kind, serves, "yes" if path else "no", size)
    console.print(table)
    if missing:
        console.print("Weights missing: run `openreel models pull`.")


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


@models_app.command("pull")
def models_pull(
    checkpoint: Annotated[
        str | None, typer.Option(help="Pull this hub repo id[@revision] instead of the configured weights.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Download the checkpoint into the Hugging Face cache (HF_HOME / HF_HUB_CACHE), with progress bars:
    its pipeline folders, latent upsampler and distilled LoRA, and the pieces configured apart from it
    (OPENREEL_DISTILLED_LORA, OPENREEL_UPSAMPLER, OPENREEL_REFERENCE_ADAPTER) unless --checkpoint is given.

    An interrupted pull resumes; a server started before the pull needs a restart to load the weights."""
    from openreel.engine.weights import (
        Adapter,
        Checkpoint,
        Folder,
        pull,
        pull_adapter,
        pull_folder,
        size_on_disk,
    )

    settings = _settings(data_dir)
    if settings.engine == "tiny" and checkpoint is None:
        from openreel.engine import TINY_CHECKPOINT_DIR
        from openreel.engine.tiny import save_tiny_checkpoint

        directory = save_tiny_checkpoint(settings.data_dir / "models" / TINY_CHECKPOINT_DIR)
        console.print(f"ready: {directory} ({_size(size_on_disk(directory))})")
    else:
        target = checkpoint or _checkpoint(settings)
        directory = _pulling(target, lambda t: pull(Checkpoint.parse(t)))
        console.print(f"ready: {target} in {directory} ({_size(size_on_disk(directory))})")
        if checkpoint is not None:
            return
    for value, kind, _ in _pieces(settings):
        if kind == "upsampler":
            path = _pulling(value, lambda v: pull_folder(Folder.parse(v)))
        else:
            path = _pulling(value, lambda v: pull_adapter(Adapter.parse(v)))
        size = size_on_disk(path) if path.is_dir() else path.stat().st_size
        console.print(f"ready: {value} in {path} ({_size(size)})")


def _pulling(target: str, fetch: Callable[[str], Path]) -> Path:
    try:
        return fetch(target)
    except Exception as exc:
        console.print(f"[red]Pulling {target} failed: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from exc


def _account_of(db: Database, reference: str) -> str:
    from openreel.ledger import accounts

    with db.session() as session:
        try:
            return accounts.account_of(session, reference)
        except LookupError as exc:
            console.print(_sentence(exc), style="red", markup=False, soft_wrap=True)
            raise typer.Exit(1) from exc


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + "."


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def _columns(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Aligned columns that are never cut or wrapped, whatever the terminal's width: ids get copied."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in (headers, *rows):
        text = "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        console.print(text.rstrip(), soft_wrap=True, markup=False, highlight=False)


Account = Annotated[str, typer.Argument(help="The account: its id, the id of one of its keys, or a key.")]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
    credits: Annotated[int, typer.Option(min=0, help="Credits granted to the account now.")] = 0,
    account: Annotated[
        str | None, typer.Option(help="Add the key to this account instead of a new one.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key; the key is printed alone on the last line."""
    from openreel.ledger import accounts

    db = _database(_settings(data_dir))
    try:
        with db.session() as session:
            new = accounts.create_key(session, name=name, account_id=account, initial_credits=credits)
    except LookupError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"account {new.account_id}, key id {new.key_id}, {credits} credits granted", soft_wrap=True)
    console.print("Store this key now; only its hash is kept:", style="yellow")
    print(new.raw)


@keys_app.command("list")
def keys_list(
    account: Annotated[str | None, typer.Option(help="Only this account's keys (id, key id or key).")] = None,
    data_dir: DataDir = None,
) -> None:
    """List API keys: id, account, name, first characters, and whether they are active."""
    from openreel.ledger import accounts

    db = _database(_settings(data_dir))
    account_id = _account_of(db, account) if account else None
    with db.session() as session:
        rows = [
            (k.id, k.account_id, k.name, k.prefix, "active" if k.active else "revoked", _when(k.created_at))
            for k in accounts.keys(session, account_id)
        ]
    _columns(("key id", "account", "name", "starts with", "status", "created"), rows)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see keys list).")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key for good: it gets 403 from now on; its account, credits and jobs stay."""
    from openreel.ledger import accounts

    db = _database(_settings(data_dir))
    try:
        with db.session() as session:
            key = accounts.revoke(session, key_id)
            account_id = key.account_id
    except LookupError as exc:
        console.print(_sentence(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print(f"revoked key {key_id} of account {account_id}", soft_wrap=True)


@accounts_app.command("list")
def accounts_list(data_dir: DataDir = None) -> None:
    """List accounts with their balance and number of active keys."""
    from openreel.ledger import accounts

    db = _database(_settings(data_dir))
    with db.session() as session:
        rows = [
            (account.id, account.name, str(balance), str(active), _when(account.created_at))
            for account, balance, active in accounts.listing(session)
        ]
    _columns(("account", "name", "balance", "active keys", "created"), rows)


@credits_app.command("grant")
def credits_grant(
    account: Account,
    amount: Annotated[int, typer.Argument(min=1, help="Credits to add.")],
    data_dir: DataDir = None,
) -> None:
    """Add credits to an account."""
    from openreel.ledger import credits

    db = _database(_settings(data_dir))
    account_id = _account_of(db, account)
    with db.session() as session:
        credits.grant(session, account_id, amount, note="granted with the CLI")
        total = credits.balance(session, account_id)
    console.print(f"granted {amount}; balance {total}")


@credits_app.command("show")
def credits_show(account: Account, data_dir: DataDir = None) -> None:
    """List the ledger of an account, and its balance."""
    from openreel.ledger import credits

    db = _database(_settings(data_dir))
    account_id = _account_of(db, account)
    with db.session() as session:
        rows = credits.entries(session, account_id)
        total = credits.balance(session, account_id)
    table = Table(title=f"account {account_id}")
    for column in ("when", "kind", "amount", "job", "note"):
        table.add_column(column)
    for e in rows:
        table.add_row(
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"), e.kind, f"{e.amount:+d}", e.job_id or "", e.note or ""
        )
    console.print(table)
    console.print(f"balance: {total}")


def _as_url(client: Client, value: str | None) -> str | None:
    """URLs pass through; a local file is uploaded first and its upload URL used."""
    if value is None or value.startswith(("http://", "https://")):
        return value
    path = Path(value)
    if not path.is_file():
        raise typer.BadParameter(f"{value} is neither an http(s) URL nor a file")
    return str(client.upload(path).url)


def _run_generate(
    base_url: str, api_key: str, request: dict[str, Any], files: dict[str, Any], out: Path
) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from openreel.sdk import Backoff, Client, JobError, NetworkError, OpenreelError

    with Client(api_key=api_key, base_url=base_url) as client:
        try:
            request["image"] = _as_url(client, files["image"])
            request["last_frame"] = _as_url(client, files["last_frame"])
            refs = [_as_url(client, r) for r in files["reference_images"]]
            request["reference_images"] = [r for r in refs if r] or None
            accepted = client.generate(request.pop("prompt"), **request)
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task("queued", total=100)

                def show(job: JobOut) -> None:
                    if job.status == "QUEUED":
                        label = f"queued (position {job.queuePosition})" if job.queuePosition else "queued"
                    else:
                        label = job.status.lower()
                    bar.update(task, completed=job.progress or 0, description=label)

                job = client.wait_for(
                    accepted.jobId, timeout=24 * 3600, on_progress=show, backoff=Backoff(0.25, 1.5, 1.0)
                )
            client.download(job, out)
        except OpenreelError as exc:
            console.print(f"[red]{exc.message}[/red]")
            for path, messages in (exc.body.get("details") or {}).items():
                console.print(f"  {path}: {'; '.join(messages)}")
            raise typer.Exit(1) from exc
        except JobError as exc:
            console.print(f"[red]job {exc.job.id} {exc.job.status.lower()}: {exc.job.error}[/red]")
            raise typer.Exit(1) from exc
        except NetworkError as exc:
            console.print(str(exc), style="red", markup=False, soft_wrap=True)
            raise typer.Exit(1) from exc
    result = job.result
    assert result is not None
    console.print(
        f"wrote {out} ({out.stat().st_size} bytes): {result.width}x{result.height}, "
        f"{result.durationSeconds} s, {'with' if result.hasAudio else 'no'} audio, seed {result.seed}, "
        f"{job.creditCost} credits"
    )
    if result.notice:
        console.print(result.notice, style="yellow")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What the video shows.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the MP4.")],
    model: Annotated[str, typer.Option(help="Model id, e.g. veo-3.1-fast.")] = "veo-3.1-fast",
    duration: Annotated[int | None, typer.Option(help="Seconds: 4, 6 or 8 (veo-2: 5-8).")] = None,
    aspect_ratio: Annotated[str | None, typer.Option(help="16:9 or 9:16.")] = None,
    resolution: Annotated[str | None, typer.Option(help="720p or 1080p.")] = None,
    image: Annotated[str | None, typer.Option(help="First frame: a file or an http(s) URL.")] = None,
    last_frame: Annotated[str | None, typer.Option(help="Last frame: a file or an http(s) URL.")] = None,
    reference: Annotated[
        list[str] | None, typer.Option(help="Reference image (repeatable, up to 3).")
    ] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="What to avoid.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for a repeatable result.")] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Generate a silent video.")] = False,
    server: Annotated[
        str | None, typer.Option(help="Base URL of a running server (key from OPENREEL_API_KEY).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Generate one video and write it to --out, showing queue position and progress.

    With --server it uses that server; without, it runs the service in this process on the local
    data directory and its engine (a local run pays itself the job's credits).
    """
    import os

    request: dict[str, Any] = {
        "prompt": prompt,
        "model": model,
        "duration": duration,
        "aspect_ratio": aspect_ratio,
        "resolution": resolution,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "generate_audio": False if no_audio else None,
    }
    files = {"image": image, "last_frame": last_frame, "reference_images": reference or []}
    if server is not None:
        key = os.environ.get("OPENREEL_API_KEY")
        if not key:
            raise typer.BadParameter(
                "set OPENREEL_API_KEY to an API key of that server", param_hint="--server"
            )
        _run_generate(server, key, request, files, out)
        return

    from openreel.domain.catalog import load_catalog
    from openreel.embedded import embedded_server, local_key

    settings = _settings(data_dir)
    spec = load_catalog(settings.prices_file).get(model)
    price = 0
    if spec is not None:
        variant = spec.variant(duration or spec.default_duration, spec.audio and not no_audio)
        price = spec.prices.get(variant, max(spec.prices.values()))
    key = local_key(settings, price)
    logging.basicConfig(level=logging.WARNING)
    console.print(
        f"starting openreel in this process (engine {settings.engine}, data in {settings.data_dir})"
    )
    with embedded_server(settings) as url:
        _run_generate(url, key, request, files, out)


# What each optional part of the package needs, by the top-level module that is missing without it.
_EXTRAS = {
    "fastapi": "server",
    "uvicorn": "server",
    "sqlalchemy": "server",
    "alembic": "server",
    "PIL": "server",
    "numpy": "server",
    "huggingface_hub": "server",
    "torch": "engine",
    "diffusers": "engine",
    "transformers": "engine",
    "av": "engine",
    "ray": "ray",
    "boto3": "s3",
}


def main() -> None:
    """The console entry point: a command that needs an extra this install lacks says which, in one line."""
    try:
        app()
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        console.print(
            f"this command needs openreel[{extra}] ({exc.name} is not installed): "
            f"pip install 'openreel[{'server,engine' if extra in ('server', 'engine') else extra}]'",
            style="red",
            markup=False,
            soft_wrap=True,
        )
        raise SystemExit(1) from None
