"""The operator's commands, run as a user would run them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openreel.cli import app

from support import cli

pytestmark = pytest.mark.live


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
