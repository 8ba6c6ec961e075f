"""The operator's commands, run as a user would run them."""

from __future__ import annotations

from pathlib import Path

from support import cli


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
