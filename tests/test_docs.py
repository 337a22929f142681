"""The documentation, checked: the README stays a landing page, links lead somewhere, architecture.md is complete.

docs/architecture.md names every module of the package by its path; when a module is added, renamed or removed, the
failure here names the lines to write or fix. Every relative link in the README and the pages under docs/ must reach
a file that exists and, for a link into a Markdown page, a heading that page has (as GitHub makes heading anchors).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "comfy_memhooks"
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "workflows" / "README.md")
README_MAX_LINES = 250

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
MODULE_PATH = re.compile(r"comfy_memhooks/[\w/]+\.py\b")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks: a ``#`` comment in a code block is no heading, ``[x](y)`` there no link."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, punctuation dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match is None:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def links_of(page: Path) -> list[str]:
    targets = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        targets.extend(LINK.findall(INLINE_CODE.sub("", line)))
    return targets


def package_modules() -> set[str]:
    return {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}


def test_the_readme_is_a_landing_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_ci_runs_the_readmes_test_command() -> None:
    readme = README.read_text(encoding="utf-8")
    commands = dict(re.findall(r"^\| (the main job, outside ComfyUI|the tests) \| `([^`]+)` \|$", readme, re.M))
    assert set(commands) == {"the main job, outside ComfyUI", "the tests"}, "the README's table of the two commands"
    assert commands["the main job, outside ComfyUI"].endswith("python -m comfy_memhooks status")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands["the tests"] in ci, ".ci/run must run the README's test command as it is written there"


def test_architecture_names_every_module_and_no_other() -> None:
    named = set(MODULE_PATH.findall(ARCHITECTURE.read_text(encoding="utf-8")))
    modules = package_modules()
    assert modules, "the package's modules were not found"
    missing = sorted(modules - named)
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"
    gone = sorted(named - modules)
    assert not gone, f"docs/architecture.md names modules that do not exist: {', '.join(gone)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_a_page_names_only_modules_that_exist(page: Path) -> None:
    named = set(MODULE_PATH.findall(page.read_text(encoding="utf-8")))
    gone = sorted(named - package_modules())
    assert not gone, f"{page.relative_to(ROOT)} names modules that do not exist: {', '.join(gone)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_reaches_a_file_and_its_heading(page: Path) -> None:
    broken = []
    for target in links_of(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: and the like: not checked here
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors_of(destination):
            broken.append(f"{target}: {destination.relative_to(ROOT)} has no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_checks_see_links_and_headings_as_github_does() -> None:
    assert github_anchor("ComfyUI's own release after every node (0.33 and later)") == (
        "comfyuis-own-release-after-every-node-033-and-later"
    )
    assert github_anchor("After 0.33: 12 parameters and `comfy.system_memory`") == (
        "after-033-12-parameters-and-comfysystem_memory"
    )
    assert github_anchor("The node: Unified Memory Manager") == "the-node-unified-memory-manager"
    assert links_of(README), "the README's links were not found"
    assert "docs/architecture.md" in links_of(README)
