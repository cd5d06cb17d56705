"""The docs hold together: every relative link in README.md, docs/*.md and bench/README.md leads
to a file that exists and, with a #fragment, to a heading of that file (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than '-' and '_' dropped,
    spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated one gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    for line in prose(text):
        match = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if match:
            base = anchor(match.group(1))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links in ``page`` whose file or heading does not exist."""
    broken = []
    for line in prose(page.read_text("utf-8")):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if EXTERNAL.match(target):
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{target}: no file {path}")
            elif fragment and fragment not in anchors(linked.read_text("utf-8")):
                broken.append(f"{target}: no heading #{fragment} in {path or page.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.exists()
    assert broken_links(page) == []


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Guarantees", "guarantees"),
        ("Procfile (honcho, foreman)", "procfile-honcho-foreman"),
        ("Ozeki API (`/api`)", "ozeki-api-api"),
        ("Each guarantee has a test_x that-fails", "each-guarantee-has-a-test_x-that-fails"),
        ("Against the goals, honestly", "against-the-goals-honestly"),
    ],
    ids=["word", "parentheses", "code", "dash-underscore", "comma"],
)
def test_anchor_follows_githubs_rule(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Real part\n", "utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\nSee [real](other.md#real-part), [here](#page), [web](https://x.example/#n),\n"
        "[missing file](nowhere.md), [missing heading](other.md#fake) and [self](#nope).\n"
        "```\n[in code](ignored.md)\n```\n`[inline](ignored.md)`\n",
        "utf-8",
    )
    assert broken_links(page) == [
        "nowhere.md: no file nowhere.md",
        "other.md#fake: no heading #fake in other.md",
        "#nope: no heading #nope in page.md",
    ]


def test_repeated_headings_get_numbered_anchors() -> None:
    assert anchors("# A\n## Notes\n## Notes\n```\n# not a heading\n```\n") == {
        "a", "notes", "notes-1",
    }  # fmt: skip
