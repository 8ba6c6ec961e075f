"""docs/configuration.md lists every setting, and only settings: the table cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from openreel.settings import Settings

DOC = Path(__file__).parents[1] / "docs" / "configuration.md"
PREFIX = "OPENREEL_"


def documented(text: str, names: set[str]) -> tuple[set[str], list[str]]:
    """The settings each table row names (``OPENREEL_A_B``, then ``_C`` for ``OPENREEL_A_C``), and the
    names that match no setting."""
    found: set[str] = set()
    unknown: list[str] = []
    for row in re.findall(r"^\| (.*?) \|", text, flags=re.MULTILINE):
        cells = re.findall(r"`([A-Z0-9_]+)`", row)
        full = next((c for c in cells if c.startswith(PREFIX)), None)
        for cell in cells:
            if cell.startswith(PREFIX):
                matches = {cell} & names
            else:
                matches = {n for n in names if n.endswith(cell) and full and full.startswith(n[: -len(cell)])}
            found |= matches
            if not matches:
                unknown.append(cell)
    return found, unknown


def test_every_setting_is_documented_and_nothing_else() -> None:
    names = {PREFIX + name.upper() for name in Settings.model_fields}
    found, unknown = documented(DOC.read_text(), names)
    assert sorted(names - found) == [], "settings missing from docs/configuration.md"
    assert unknown == [], "docs/configuration.md names settings that do not exist"


def test_the_check_notices_a_missing_and_a_made_up_setting() -> None:
    names = {"OPENREEL_PORT", "OPENREEL_HOST", "OPENREEL_S3_BUCKET", "OPENREEL_S3_PREFIX"}
    table = "| `OPENREEL_HOST` | x | y |\n| `OPENREEL_S3_BUCKET`, `_PREFIX`, `_COLOUR` | — | z |\n"
    found, unknown = documented(table, names)
    assert found == {"OPENREEL_HOST", "OPENREEL_S3_BUCKET", "OPENREEL_S3_PREFIX"}
    assert unknown == ["_COLOUR"]
