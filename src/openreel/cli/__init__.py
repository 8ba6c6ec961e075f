"""The ``openreel`` command: run the server, manage keys and credits, make and follow videos."""

from __future__ import annotations

import typer

from openreel.cli import client, operator, server, weights
from openreel.cli.terminal import Typer, console

app = Typer(help="openreel: self-hosted video generation with the Apiframe v2 (Veo) API.")
app.command()(server.serve)
app.command()(server.worker)
app.command()(client.generate)
app.add_typer(client.jobs_app, name="jobs")
app.add_typer(operator.keys_app, name="keys")
app.add_typer(operator.accounts_app, name="accounts")
app.add_typer(operator.credits_app, name="credits")
app.add_typer(weights.app, name="models")


def _print_version(value: bool) -> None:
    if value:
        from openreel import __version__

        console.print(f"openreel {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


# What each optional part of the package needs, by the top-level module that is missing without it.
_EXTRAS = {
    "fastapi": "server",
    "uvicorn": "server",
    "sqlalchemy": "server",
    "alembic": "server",
    "PIL": "server",
    "numpy": "server",
    "huggingface_hub": "server",
    "prometheus_client": "server",
    "torch": "engine",
    "diffusers": "engine",
    "transformers": "engine",
    "av": "engine",
    "ray": "ray",
    "boto3": "s3",
}


def main() -> None:
    """The console entry point: a command that needs a module this install lacks says which, in one line
    (and which extra brings it, for the package's own)."""
    try:
        app()
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:  # not one the extras bring: a database driver named by the URL, say
            message = f"this command needs the Python module {exc.name}, which is not installed"
        else:
            message = (
                f"this command needs openreel[{extra}] ({exc.name} is not installed): "
                f"pip install 'openreel[{'server,engine' if extra in ('server', 'engine') else extra}]'"
            )
        console.print(message, style="red", markup=False, soft_wrap=True)
        raise SystemExit(1) from None
