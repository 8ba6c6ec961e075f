"""``openreel serve`` and ``openreel worker``: this machine as an API server or as a Ray render node."""

from __future__ import annotations

import gc
import logging
from typing import Annotated, get_args

import typer

from openreel.cli.local import DataDir, catalog_of, default, opening_database, settings_of
from openreel.cli.terminal import say
from openreel.engine import ENGINES
from openreel.settings import ExecutorName


def serve(
    host: Annotated[
        str | None, typer.Option(show_default=default("host"), help="Bind address (OPENREEL_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(show_default=default("port"), help="Port (OPENREEL_PORT).")
    ] = None,
    data_dir: DataDir = None,
    engine: Annotated[
        str | None,
        typer.Option(show_default=default("engine"), help=f"Engine: {', '.join(ENGINES)} (OPENREEL_ENGINE)."),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            show_default=default("executor"),
            help=f"Executor: {', '.join(get_args(ExecutorName))} (OPENREEL_EXECUTOR).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            show_default=default("workers"), help="Worker slots here, one per GPU (OPENREEL_WORKERS)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            show_default="a private cluster",
            help="Ray cluster to drive (OPENREEL_RAY_ADDRESS).",
        ),
    ] = None,
) -> None:
    """Run the API server and its workers."""
    import uvicorn

    from openreel.app import create_app
    from openreel.ledger.db import migrate
    from openreel.protocols.access_log import redact_access_log

    settings = settings_of(
        data_dir,
        host=host,
        port=port,
        engine=engine,
        executor=executor,
        workers=workers,
        ray_address=ray_address,
    )
    # Here rather than only at the app's start-up, where a database out of reach is a page of log.
    with opening_database(settings) as url:
        migrate(url)
    catalog_of(settings)  # a prices file it cannot use: one line here, not a page at start-up
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_access_log()
    app = create_app(settings)
    # What the imports built (130,000 objects) lives as long as the server: out of the collector's sight,
    # a full collection no longer walks it, which took 55 ms a time on a 2-core machine with every
    # request waiting (BENCHMARKS.md). Only here: the CLI's embedded server shares its process.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


def worker(
    address: Annotated[str, typer.Option(metavar="HOST:PORT", help="The Ray head to join.")],
    slots: Annotated[
        int | None,
        typer.Option(min=1, show_default="one per GPU, else 1", help="Jobs this node renders at once."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Join a Ray cluster as a render node.

    A server with OPENREEL_EXECUTOR=ray puts one actor per slot here, each keeping the engine's weights
    loaded. Stays in the foreground; Ctrl-C leaves the cluster."""
    import os

    from openreel.executors.ray_cluster import node_command

    settings = settings_of(data_dir)
    if slots is None:
        import torch

        slots = max(torch.cuda.device_count(), 1)
    command = node_command(address, slots)
    say(f"joining {address} with {slots} slot(s): {' '.join(command)}")
    # Actors on this node read its settings: weights are cached under this node's data dir.
    env = {**os.environ, "OPENREEL_DATA_DIR": str(settings.data_dir.resolve())}
    os.execvpe(command[0], command, env)
