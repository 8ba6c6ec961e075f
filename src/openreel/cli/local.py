"""What the operator's commands share: the settings and the database of this machine's data directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from openreel.cli.terminal import fail, sentence
from openreel.settings import Settings

if TYPE_CHECKING:
    from openreel.ledger.db import Database

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (OPENREEL_DATA_DIR).")]


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


def database(settings: Settings) -> Database:
    from openreel.ledger.db import Database, migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    migrate(url)
    return Database(url)


def account_of(db: Database, reference: str) -> str:
    from openreel.ledger import accounts

    with db.session() as session:
        try:
            return accounts.account_of(session, reference)
        except LookupError as exc:
            fail(sentence(exc))
