"""What the operator's commands share: the settings and the database of this machine's data directory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from openreel.cli.terminal import fail, sentence
from openreel.settings import Settings

if TYPE_CHECKING:
    from openreel.domain.catalog import Catalog
    from openreel.ledger.db import Database


def default(field: str) -> str:
    """A setting's default as ``--help`` shows it. The option itself defaults to None, so that a value
    from the environment still wins over it."""
    return str(Settings.model_fields[field].default)


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        show_default=default("data_dir"),
        help="Data directory (OPENREEL_DATA_DIR).",
    ),
]


def settings_of(data_dir: Path | None, **overrides: object) -> Settings:
    """The settings from the environment and these options; a wrong value is one line, not a traceback."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        where = ".".join(map(str, error["loc"]))  # empty for a rule across settings
        raise typer.BadParameter(f"{where}: {message}" if where else message) from None


@contextmanager
def opening_database(settings: Settings) -> Iterator[str]:
    """Yields the database URL to open. A database that cannot be opened (unreachable, refusing the
    login, a URL that does not parse) or a data directory that cannot be written ends the command in one
    line that says which and why: an operator reads the cause, not a page of frames."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    url = settings.resolved_database_url()
    try:
        settings.made_data_dir()
        yield url
    except DBAPIError as exc:
        # The driver's own words; psycopg adds a hint on a second line.
        fail(f"Cannot open the database {_shown(url)}: {str(exc.orig).strip().splitlines()[0]}.")
    except ArgumentError as exc:
        fail(f"Cannot open the database {_shown(url)}: {exc}.")
    except OSError as exc:
        fail(f"Cannot use the data directory {settings.data_dir}: {exc.strerror or exc}.")


def catalog_of(settings: Settings) -> Catalog:
    """The price table, with ``prices_file`` applied; a file that cannot be read or is not a table of
    prices ends the command in one line."""
    from openreel.domain.catalog import load_catalog

    try:
        return load_catalog(settings.prices_file)
    except (OSError, ValueError) as exc:  # unreadable, not JSON, not a table of prices
        fail(f"Cannot use the prices file {settings.prices_file}: {exc}.")


def _shown(url: str) -> str:
    """The URL without its password; one that does not parse is named by its setting instead."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "OPENREEL_DATABASE_URL"


def database(settings: Settings) -> Database:
    from openreel.ledger.db import Database, migrate

    with opening_database(settings) as url:
        migrate(url)
        return Database(url)


def account_of(db: Database, reference: str) -> str:
    from openreel.ledger import accounts

    with db.session() as session:
        try:
            return accounts.account_of(session, reference)
        except LookupError as exc:
            fail(sentence(exc))
