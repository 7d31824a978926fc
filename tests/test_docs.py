"""The documentation stays a map that leads somewhere.

- README.md is a map: at most 300 lines; the rest lives in docs/ by topic.
- Every relative Markdown link in README.md, CHANGELOG.md and docs/**/*.md resolves to a file or folder of the
  tree, and a link's #anchor into a Markdown file names one of that file's headings (GitHub's heading ids).
- Every docs/... path named in the code (.py files outside tests/, and rigs/*.toml) exists.

docs/rig-file.md is generated (`cortexloop rig-reference` writes it), so a tree where it has not been generated
yet counts it as present.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300
GENERATED = {"docs/rig-file.md"}  # written by a command, not by hand: present once generated

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
DOCS_PATH = re.compile(r"docs/[A-Za-z0-9_./-]+")
SKIP_DIRS = {"tests", "node_modules", "build", "dist", "sessions", "__pycache__"}


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def links(text: str) -> list[str]:
    """Every link target of a Markdown text (inline, image and reference links), code left out."""
    found = []
    for line in prose_lines(text):
        ref = REFERENCE_LINK.match(line)
        if ref:
            found.append(ref.group(1))
            continue
        found += INLINE_LINK.findall(INLINE_CODE.sub("", line))
    return found


def heading_ids(text: str) -> set[str]:
    """The ids GitHub gives a Markdown text's headings: the rendered text lowercased, punctuation dropped,
    spaces made hyphens, a repeated id suffixed -1, -2, ..."""
    ids: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(text):
        m = HEADING.match(line)
        if not m:
            continue
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m.group(2))  # a link's text only
        title = re.sub(r"<[^>]+>", "", title).replace("`", "")
        title = re.sub(r"\*\*|__|\*|_(?=\W|$)|(?:^|(?<=\W))_", "", title)
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def exists(path: Path) -> bool:
    return path.exists() or (path.is_relative_to(ROOT) and rel(path) in GENERATED)


def test_readme_is_a_map():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; a map has at most {README_MAX_LINES} (move text to docs/)"


@pytest.mark.parametrize("doc", markdown_files(), ids=rel)
def test_relative_links_resolve(doc: Path):
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in links(text):
        if SCHEME.match(target):  # http(s), mailto: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        dest = doc if not path_part else (doc.parent / path_part).resolve()
        if not path_part.startswith("/") and not exists(dest):
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and dest.is_file():
            if unquote(anchor).lower() not in heading_ids(dest.read_text(encoding="utf-8")):
                broken.append(f"{target}: no heading #{anchor} in {rel(dest)}")
        elif path_part.startswith("/"):
            broken.append(f"{target}: absolute path (links are relative, so they work in any checkout)")
    assert not broken, f"{rel(doc)}: " + "; ".join(broken)


def code_files() -> list[Path]:
    """The project's .py files outside tests/ and hidden or build folders, and the rig files."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(found) + sorted((ROOT / "rigs").glob("*.toml"))


def test_docs_paths_named_in_code_exist():
    missing = []
    for f in code_files():
        for lineno, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            for name in DOCS_PATH.findall(line):
                name = name.rstrip(".")
                if not exists(ROOT / name):
                    missing.append(f"{rel(f)}:{lineno}: {name}")
    assert not missing, "docs paths named in the code that do not exist:\n" + "\n".join(missing)
