"""The README stays a front door (under 8 KB) and no link in it or in docs/ points at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(document: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation but - and _ dropped, spaces to -."""
    headings = re.findall(
        r"^#+ (.+)$", re.sub(r"^```.*?^```", "", document.read_text(), flags=re.S | re.M), re.M
    )
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_is_a_front_door() -> None:
    assert (ROOT / "README.md").stat().st_size < 8 * 1024


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.name)
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not this repository's
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor}")
    assert broken == []


def test_the_check_notices_a_missing_file_and_heading(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n## Extending a clip\n\n[a](page.md#extending-a-clip) [b](#top)\n")
    assert anchors(page) == {"top", "extending-a-clip"}
    bad = tmp_path / "bad.md"
    bad.write_text("[x](gone.md) [y](page.md#nowhere)\n")
    with pytest.raises(AssertionError, match="no such file"):
        test_every_relative_link_resolves(bad)
    bad.write_text("[y](page.md#nowhere)\n")
    with pytest.raises(AssertionError, match="no heading"):
        test_every_relative_link_resolves(bad)
