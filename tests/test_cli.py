"""The operator's commands, run as a user would run them, and the help every command prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from openreel.cli import app
from openreel.engine import TINY_CHECKPOINT_DIR
from openreel.ledger.db import Database, migrate
from openreel.settings import Settings

from support import SPEC, cli, queued


@pytest.mark.live
def test_keys_and_credits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = cli(data, "keys", "create", "--name", "alice", "--credits", "7")
    key = out.strip().splitlines()[-1]
    assert key.startswith("afk_") and len(key) > 40
    assert key not in (data / "openreel.db").read_bytes().decode(errors="ignore")
    assert "balance 12" in cli(data, "credits", "grant", key, "5")
    shown = cli(data, "credits", "show", key)
    assert "initial grant" in shown and "granted with the CLI" in shown and "balance: 12" in shown
    other = cli(data, "keys", "create").strip().splitlines()[-1]
    assert "balance: 0" in cli(data, "credits", "show", other)


@pytest.mark.live
def test_an_operator_manages_keys_and_credits_by_account_id(tmp_path: Path) -> None:
    runner, data = CliRunner(), ["--data-dir", str(tmp_path / "data")]

    def run(*args: str, code: int = 0) -> str:
        out = runner.invoke(app, [*args, *data])
        assert out.exit_code == code, out.output
        return out.output

    created = run("keys", "create", "--name", "bob", "--credits", "4")
    raw = created.strip().splitlines()[-1]
    account, key_id = re.search(r"account (\S+), key id (\S+),", created).groups()  # type: ignore[union-attr]
    listed = run("keys", "list")
    assert re.search(rf"^{key_id}  {account}  bob\s+{raw[:8]}\s+active ", listed, re.M), listed
    assert "balance 7" in run("credits", "grant", account, "3")  # by account id
    assert "balance 9" in run("credits", "grant", key_id, "2")  # by key id
    assert re.search(rf"^{account}  bob\s+9\s+1 ", run("accounts", "list"), re.M)
    assert f"revoked key {key_id}" in run("keys", "revoke", key_id)
    assert re.search(rf"^{key_id} .* revoked ", run("keys", "list", "--account", account), re.M)
    assert re.search(rf"^{account}  bob\s+9\s+0 ", run("accounts", "list"), re.M)
    shown = run("accounts", "show", key_id)
    assert f"account {account} (bob)" in shown and "balance: 9" in shown and "jobs: none" in shown
    assert re.search(rf"^{key_id}  bob\s+{raw[:8]}\s+revoked ", shown, re.M), shown
    missing = run("credits", "grant", "no-such-account", "1", code=1)
    assert missing.strip() == "No account or key with id no-such-account."
    assert run("keys", "revoke", "nope", code=1).strip() == "No key with id nope."


@pytest.mark.live
def test_ids_are_whole_on_one_line_on_a_narrow_terminal(tmp_path: Path) -> None:
    data, narrow = tmp_path / "data", {"COLUMNS": "40"}
    url = f"sqlite:///{data / 'openreel.db'}"
    data.mkdir()
    migrate(url)
    database = Database(url)
    try:
        job_id, account_id = queued(database, SPEC)
    finally:
        database.dispose()
    ledger = cli(data, "credits", "show", account_id, env=narrow).splitlines()
    assert ledger[0] == f"account {account_id}" and ledger[-1] == "balance: 5", ledger
    assert any(job_id in line.split() for line in ledger), ledger
    weights = cli(data, "models", "list", env=narrow).splitlines()
    checkpoint = str((data / "models" / TINY_CHECKPOINT_DIR).resolve())
    assert weights[1].split() == [checkpoint, "tiny", "every", "model", "id", "no", "-"], weights


def test_a_missing_checkpoint_names_an_option_only_where_the_command_has_it(tmp_path: Path) -> None:
    env = {"OPENREEL_ENGINE": "ltx2", "OPENREEL_CHECKPOINT": None}
    for command, option in (("list", ""), ("pull", ", or pass --checkpoint")):
        out = CliRunner().invoke(app, ["models", command, "--data-dir", str(tmp_path)], env=env)
        assert out.exit_code == 1 and out.output == (
            "No checkpoint configured: set OPENREEL_CHECKPOINT (a hub repo id[@revision] or a local "
            f"directory){option}.\n"
        ), out.output


@pytest.mark.live
@pytest.mark.parametrize(
    "command",
    [
        ("accounts", "list"),
        ("credits", "grant", "some-account", "5"),
        ("generate", "x", "-o", "x.mp4"),
        ("serve",),
    ],
)
def test_a_database_out_of_reach_is_one_line_not_a_traceback(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    url = "postgresql+psycopg://openreel:secret@127.0.0.1:1/openreel"  # nothing listens on port 1
    out = subprocess.run(
        [sys.executable, "-m", "openreel", *command, "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENREEL_DATABASE_URL": url},
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr and not out.stderr, out.stderr
    [line] = out.stdout.splitlines()
    # Which database (its password hidden) and the driver's reason.
    assert line.startswith(
        "Cannot open the database postgresql+psycopg://openreel:***@127.0.0.1:1/openreel: "
    )
    assert "port 1 failed" in line and "secret" not in line


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's words under the ``openreel`` group, sub-commands of sub-groups included."""
    if not isinstance(command, TyperGroup):
        return [path]
    return [found for name, sub in command.commands.items() for found in _commands(sub, (*path, name))]


def _help(*command: str) -> str:
    out = CliRunner().invoke(app, [*command, "--help"], prog_name="openreel")
    assert out.exit_code == 0, out.output
    return " ".join(out.output.split())  # unwrapped: a default may fall across two lines


def test_serve_shows_the_defaults_of_the_settings() -> None:
    shown = _help("serve")
    for option, field in [
        ("--host HOST", "host"),
        ("--port PORT", "port"),
        ("--data-dir DIR", "data_dir"),
        ("--engine ENGINE", "engine"),
        ("--executor EXECUTOR", "executor"),
        ("--workers WORKERS", "workers"),
    ]:
        described = shown.split(option + " ", 1)[1].split(" --", 1)[0]
        assert f"[default: ({Settings.model_fields[field].default})]" in described, (option, described)


@pytest.mark.parametrize("command", _commands(typer.main.get_command(app)), ids=" ".join)
def test_help_names_values_in_words_not_python_types(command: tuple[str, ...]) -> None:
    shown = _help(*command)
    assert not re.search(r"<[a-z][a-z ,|\[\]]*>", shown), shown  # Typer's <str>, <list[str]>, <int range>
    assert "{" not in shown.split(" Options: ")[0], shown  # Typer's {prompt} in the usage line


def test_generate_names_its_values() -> None:
    shown = _help("generate")
    assert (
        "Usage: openreel generate [OPTIONS] PROMPT" in shown
        and "Arguments: PROMPT What the video shows." in shown
    )
    for option in ("--reference FILE|URL", "--server URL", "--aspect-ratio RATIO", "--no-audio Generate"):
        assert option in shown, option
