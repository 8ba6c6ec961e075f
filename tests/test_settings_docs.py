"""docs/configuration.md's table is generated from the settings object: it cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from openreel.settings import Settings, configuration_table

DOC = Path(__file__).parents[1] / "docs" / "configuration.md"


def test_the_table_is_the_settings_own() -> None:
    block = re.search(r"<!-- generated: .*? -->\n(.*?)<!-- end generated -->", DOC.read_text(), re.S)
    assert block is not None, "docs/configuration.md lost its generated block"
    assert block[1] == configuration_table(), "regenerate it: .venv/bin/python -m openreel.settings"


def test_every_setting_has_a_row_with_its_default_and_meaning() -> None:
    table = configuration_table()
    for name, field in Settings.model_fields.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `OPENREEL_{name.upper()}` |"))
        assert field.description and row.endswith(f"| {field.description} |")
    assert "| `OPENREEL_PORT` | 8000 |" in table and "| `OPENREEL_METRICS_PUBLIC` | off |" in table
    assert "| `OPENREEL_MAX_UPLOAD_IMAGE_BYTES` | 25 MiB |" in table
