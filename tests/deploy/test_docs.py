"""The docs tell the truth about the checkout: docs/development.md's layout names every module and
only paths that exist, and every relative link in README.md and docs/*.md reaches a file (and, with a
`#fragment`, a heading of it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sidecar.settings import Settings
from tests.deploy.support import ROOT

DEVELOPMENT = ROOT / "docs" / "development.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Every module of these packages must be in the layout; an `__init__.py` may be left out (most
# hold a docstring only).
NAMED_PACKAGES = ("sidecar", "bench")
ENTRY = re.compile(r"(?P<indent> *)(?P<path>[\w.-][\w./-]*)(?:\s|$)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def layout(text: str) -> list[str]:
    """The paths the first code block under `## Layout` names: an entry indented under a
    directory (a name ending in `/`) lives in it."""
    section = re.split(r"^## Layout$", text, maxsplit=1, flags=re.M)[1]
    block = section.split("```", 2)[1].split("\n", 1)[1]
    paths: list[str] = []
    parents: list[tuple[int, str]] = []  # (indent, directory path), innermost last
    for line in block.splitlines():
        if not line.strip():
            continue
        entry = ENTRY.match(line)
        assert entry, f"docs/development.md: a layout line that names no path: {line!r}"
        indent = len(entry["indent"])
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = (parents[-1][1] if parents else "") + entry["path"]
        paths.append(path)
        if path.endswith("/"):
            parents.append((indent, path))
    return paths


def modules() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for package in NAMED_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }


def anchor(heading: str) -> str:
    # GitHub's: lower case, punctuation but `-` and `_` dropped, each space a `-`.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {anchor(match[1]) for match in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_the_layout_names_only_paths_that_exist() -> None:
    named = layout(DEVELOPMENT.read_text(encoding="utf-8"))
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, "docs/development.md's layout names paths that don't exist:\n  " + "\n  ".join(missing)


def test_the_layout_names_every_module() -> None:
    named = set(layout(DEVELOPMENT.read_text(encoding="utf-8")))
    unnamed = sorted(modules() - named)
    assert not unnamed, "docs/development.md's layout doesn't name:\n  " + "\n  ".join(unnamed)


def test_the_layout_names_every_test_tier() -> None:
    named = set(layout(DEVELOPMENT.read_text(encoding="utf-8")))
    tiers = {
        f"tests/{path.name}/" for path in (ROOT / "tests").iterdir()
        if path.is_dir() and not path.name.startswith((".", "__"))
    }
    unnamed = sorted(tiers - named)
    assert not unnamed, "docs/development.md's layout doesn't name:\n  " + "\n  ".join(unnamed)


def test_the_layout_reader_follows_indentation() -> None:
    text = "## Layout\n\n```\na/\n  b.py    one\n  c/\n    d.py  two\n  e.py    three\nf.md      four\n```\n"
    assert layout(text) == ["a/", "a/b.py", "a/c/", "a/c/d.py", "a/e.py", "f.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_reach_a_file_and_heading(page: Path) -> None:
    broken = []
    for match in LINK.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        target = match["target"]
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no file {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked})")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target} (no heading #{fragment} in {linked.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)} links to what isn't there:\n  " + "\n  ".join(broken)


def test_the_readme_table_has_every_setting() -> None:
    # One table of every option with its default (STYLE.md); the settings live in the code.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(SIDECAR_[A-Z_]+)` \|", text, re.M))
    variables = {f"SIDECAR_{name.upper()}" for name in Settings.model_fields}
    assert variables - documented == set(), "README.md's settings table lacks these"
    assert documented - variables == set(), "README.md's settings table has settings the code doesn't"
