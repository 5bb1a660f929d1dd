"""Every figure shipped under docs/ is shown (a Markdown image link) in a doc, and every image link
in the docs and the README points at a file that exists (relative paths, as GitHub renders them)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _shown() -> dict[Path, list[Path]]:
    """Each image file linked from a doc -> the docs that show it."""
    out: dict[Path, list[Path]] = {}
    for doc in _docs():
        for target in IMAGE.findall(doc.read_text(encoding="utf-8")):
            assert not target.startswith(("/", "http")), f"{doc.name}: image link {target} is not a relative path"
            out.setdefault((doc.parent / target).resolve(), []).append(doc)
    return out


def test_every_image_link_resolves():
    missing = [f"{docs[0].relative_to(ROOT)} -> {p}" for p, docs in _shown().items() if not p.is_file()]
    assert missing == []


def test_every_docs_figure_is_shown():
    shown = _shown()
    figures = sorted((ROOT / "docs").rglob("*.png"))
    assert len(figures) >= 5  # the testbed's three, the lab sweep's and the adaptive-stopping one
    assert [str(f.relative_to(ROOT)) for f in figures if f.resolve() not in shown] == []
