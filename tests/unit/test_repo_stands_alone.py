"""The repository stands alone: a clone holds everything its files refer to.

No tracked text file cites the internal working papers (the protocol, design and style
notes that lived beside the repository, outside it), nor a path into their directory:
the protocol reference is docs/protocol.md, the design docs/architecture.md. And every
relative link of README.md and docs/*.md names a file of the repository, and every
``#anchor`` of such a link a heading of its page (as GitHub makes a heading's anchor).

The papers' names are assembled below rather than written out, so this file does not
cite them itself.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The papers a clone does not have.
PAPERS = tuple(f"{name}.md" for name in ("PROTOCOL", "DESIGN", "STYLE"))
_CITATION = re.compile(
    "|".join(re.escape(p) for p in PAPERS)
    # One or more `..` steps up, then the papers' directory beside the repository.
    + r"|(?:\.\./)+"
    + "shared"
    + r"(?![\w.-])"
)
#: Directories that are never part of the repository, for the walk without git.
_NOT_OURS = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
#: ``[text](target)`` or ``[text](<target> "title")``; images (``![..](..)``) too.
_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_WEB = ("http://", "https://", "mailto:")
_EXTERNAL = (*_WEB, "#")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HEADING_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_HTML_ANCHOR = re.compile(r'<a\s+(?:id|name)="([^"]+)"')


def tracked_files(root: Path) -> list[Path]:
    """The files git tracks under ``root`` (or, outside a checkout, every file there)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return [
            p
            for p in root.rglob("*")
            if p.is_file() and not _NOT_OURS.intersection(p.relative_to(root).parts)
        ]
    return [root / name for name in out.decode().split("\0") if name]


def read_text(path: Path) -> str | None:
    """The file as text, or None for a binary file (or one that is gone)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def citations(text: str) -> list[tuple[int, str]]:
    """(line number, what) for each citation of the papers or their directory."""
    return [
        (number, match.group(0))
        for number, line in enumerate(text.splitlines(), 1)
        for match in _CITATION.finditer(line)
    ]


def _prose(markdown: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside fenced code."""
    fenced = False
    for number, line in enumerate(markdown.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def _links(markdown: str) -> list[tuple[int, str]]:
    """(line number, target) of every link outside code."""
    return [
        (number, match.group(1))
        for number, line in _prose(markdown)
        for match in _LINK.finditer(_INLINE_CODE.sub("", line))
    ]


def link_targets(markdown: str) -> list[tuple[int, str]]:
    """(line number, target) of every relative link outside code: not http(s), mailto or
    a ``#anchor`` of the same page."""
    return [(n, t) for n, t in _links(markdown) if not t.startswith(_EXTERNAL)]


def broken_links(page: Path, root: Path, known: set[Path]) -> list[tuple[int, str]]:
    """The relative links of ``page`` that name no file or directory of the repository
    (``known``: its files; a link may also name a directory holding some of them)."""
    broken: list[tuple[int, str]] = []
    for number, target in link_targets(page.read_text(encoding="utf-8")):
        path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
        resolved = (page.parent / path).resolve()
        inside = resolved == root or root in resolved.parents
        if not inside or not (resolved in known or any(resolved in f.parents for f in known)):
            broken.append((number, target))
    return broken


def anchors(markdown: str) -> set[str]:
    """The anchors of a page, as GitHub makes them: each heading's text (a link in it
    reduced to its text), lower case, without punctuation but ``-`` and ``_``, spaces as
    ``-``, and ``-1``, ``-2``… after a repeated one; and ``<a id=…>`` / ``<a name=…>``."""
    found: set[str] = set()
    repeats: dict[str, int] = {}
    for _, line in _prose(markdown):
        found.update(_HTML_ANCHOR.findall(line))
        heading = _HEADING.match(line)
        if heading is None:
            continue
        text = _HEADING_LINK.sub(r"\1", heading.group(2)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = repeats.get(slug, 0)
        repeats[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def broken_anchors(page: Path, pages: dict[Path, set[str]]) -> list[tuple[int, str]]:
    """The links of ``page`` whose ``#anchor`` names no heading of the page it points to
    (``pages``: each markdown page's anchors; links to other files are not checked)."""
    links = [
        (n, t)
        for n, t in _links(page.read_text(encoding="utf-8"))
        if "#" in t and not t.startswith(_WEB)
    ]
    broken: list[tuple[int, str]] = []
    for number, target in links:
        path, anchor = target.split("#", 1)
        resolved = (page.parent / unquote(path)).resolve() if path else page.resolve()
        if resolved in pages and anchor not in pages[resolved]:
            broken.append((number, target))
    return broken


def markdown_pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# --------------------------------------------------------------------------- the repository


def test_no_tracked_file_cites_the_internal_papers() -> None:
    offenders = []
    for path in tracked_files(ROOT):
        text = read_text(path)
        if text is None:
            continue
        for number, what in citations(text):
            offenders.append(f"{path.relative_to(ROOT)}:{number}: {what}")
    assert not offenders, (
        "cite docs/protocol.md (its section) or docs/architecture.md instead:\n"
        + "\n".join(offenders)
    )


#: "<paper> section N" without the file name. Applied SQL migrations keep theirs (their
#: checksums are recorded), and the two pages that explain that mapping name it.
_BARE = re.compile(r"\b(?:PROTOCOL sections? \d|DESIGN (?:invariants?|steps?) \d)")
_MAY_NAME_BARE = ("eventstore/sql/", "docs/protocol.md", "docs/architecture.md")


def test_no_tracked_file_cites_the_papers_by_bare_section() -> None:
    offenders = []
    for path in tracked_files(ROOT):
        name = path.relative_to(ROOT).as_posix()
        text = read_text(path)
        if text is None or name.startswith(_MAY_NAME_BARE):
            continue
        offenders += [
            f"{name}:{number}: {line.strip()[:80]}"
            for number, line in enumerate(text.splitlines(), 1)
            if _BARE.search(line)
        ]
    assert not offenders, "cite docs/protocol.md section N instead:\n" + "\n".join(offenders)


def test_every_relative_markdown_link_names_a_file_of_the_repository() -> None:
    known = {p.resolve() for p in tracked_files(ROOT)}
    checked, broken = 0, []
    for page in markdown_pages(ROOT):
        checked += len(link_targets(page.read_text(encoding="utf-8")))
        broken += [
            f"{page.relative_to(ROOT)}:{number}: ({target})"
            for number, target in broken_links(page, ROOT, known)
        ]
    assert not broken, "links to nothing in the repository:\n" + "\n".join(broken)
    assert checked > 50  # the pages link to each other a lot: a scan that finds none is broken


def test_every_anchor_of_a_markdown_link_names_a_heading_of_its_page() -> None:
    pages = {p.resolve(): anchors(p.read_text(encoding="utf-8")) for p in markdown_pages(ROOT)}
    broken = [
        f"{page.relative_to(ROOT)}:{number}: ({target})"
        for page in markdown_pages(ROOT)
        for number, target in broken_anchors(page, pages)
    ]
    assert not broken, "anchors no heading has:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("page", "target"), [("README.md", "docs/protocol.md"), ("docs/architecture.md", "protocol.md")]
)
def test_the_protocol_reference_is_linked(page: str, target: str) -> None:
    targets = {t for _, t in link_targets((ROOT / page).read_text(encoding="utf-8"))}
    assert any(t.split("#")[0] == target for t in targets)


# --------------------------------------------------------------------------- the checks themselves


def test_citations_are_found_wherever_they_stand() -> None:
    text = "\n".join(
        [
            "ok: docs/protocol.md section 5",
            f"see {PAPERS[0]} section 2",
            f"# {PAPERS[1]}: invariant 4",
            f"[contract](../../{'shared'}/{PAPERS[2]})",
            f"../{'shared'}/notes",
            f"a {'shared'}/ folder of our own, and ../sharedness, are not the papers",
        ]
    )
    assert [number for number, _ in citations(text)] == [2, 3, 4, 4, 5]


def test_broken_and_escaping_links_are_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("x")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "b.js").write_text("x")
    (tmp_path / "outside.md").write_text("x")  # exists, but not tracked
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "\n".join(
            [
                '[a](a.md) [a, anchored](a.md#x) [titled](<a.md> "t") [dir](../js)',
                "[web](https://example.com/x.md) [mail](mailto:a@b.c) [here](#top)",
                "[gone](missing.md#x)",
                "[escapes](../../elsewhere/PROTO.md)",
                "[untracked](../outside.md)",
                "```",
                "[in code](nowhere.md)",
                "```",
                "`[inline](nowhere.md)` and ![image](img/missing.png)",
            ]
        )
    )
    known = {(tmp_path / "docs" / "a.md").resolve(), (tmp_path / "js" / "b.js").resolve()}
    assert broken_links(page, tmp_path.resolve(), known) == [
        (3, "missing.md#x"),
        (4, "../../elsewhere/PROTO.md"),
        (5, "../outside.md"),
        (9, "img/missing.png"),
    ]


def test_anchors_are_made_as_github_makes_them_and_broken_ones_are_found(tmp_path: Path) -> None:
    other = tmp_path / "other.md"
    other.write_text(
        "\n".join(
            [
                "# The store's targets (2026-12-05 17:33\u201318:28 UTC)",
                "## Using `concord dev`, [see](x.md)",
                "## Notes",
                "## Notes",
                "```",
                "# not a heading",
                "```",
                '<a id="kept"></a>',
            ]
        )
    )
    assert anchors(other.read_text()) == {
        "the-stores-targets-2026-12-05-17331828-utc",
        "using-concord-dev-see",
        "notes",
        "notes-1",
        "kept",
    }
    page = tmp_path / "page.md"
    page.write_text(
        "\n".join(
            [
                "# Top",
                "[ok](#top) [ok](other.md#notes-1) [ok](other.md#kept) [file](other.md)",
                "[bad](#bottom) [bad](other.md#notes-2) `[code](#nowhere)`",
                "[not markdown](a.py#x)",
                "```",
                "[in code](#nowhere)",
                "```",
            ]
        )
    )
    pages = {p.resolve(): anchors(p.read_text()) for p in (other, page)}
    assert broken_anchors(page, pages) == [(3, "#bottom"), (3, "other.md#notes-2")]
