"""The committed JPEG fixtures of ``tests/data/jpegs/`` (made by its ``make_jpegs.py``, listed in
its ``INDEX.tsv``) and, when ``../shared/data`` exists, real files that add breadth on top.

Tests that read JPEGs take the committed files always and add the shared ones when present, so
that every behaviour is checked from a fresh clone and the large real-data sets only widen it.
"""
from __future__ import annotations

import csv
from pathlib import Path

from conftest import HAVE_SHARED, SHARED_DATA

JPEGS = Path(__file__).resolve().parent / "data" / "jpegs"


def _index() -> dict[str, dict[str, str]]:
    with open(JPEGS / "INDEX.tsv", newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


#: {file name: {"kind": "jpeg" | "broken" | "unsupported" | "not jpeg", "made by", "what"}}
INDEX = _index()
#: The committed files that are valid JPEGs jdct decodes (sorted names).
GOOD = sorted(name for name, row in INDEX.items() if row["kind"] == "jpeg")


def path(name: str) -> Path:
    """The committed fixture ``name`` (a KeyError for a name INDEX.tsv does not list)."""
    if name not in INDEX:
        raise KeyError(f"{name} is not in {JPEGS / 'INDEX.tsv'}")
    return JPEGS / name


def data(name: str) -> bytes:
    return path(name).read_bytes()


def shared_odd(*rels: str) -> list[Path]:
    """``../shared/data/odd-jpegs/<rel>`` for each rel, or [] without ../shared."""
    return [SHARED_DATA / "odd-jpegs" / rel for rel in rels] if HAVE_SHARED else []


def shared_files(subdir: str, pattern: str, step: int = 1) -> list[Path]:
    """Every ``step``-th file of ``../shared/data/<subdir>`` matching ``pattern`` (sorted), or []."""
    if not HAVE_SHARED:
        return []
    return sorted(p for p in (SHARED_DATA / subdir).glob(pattern) if p.is_file())[::step]


def photos(photo_tree: Path, step: int = 1) -> list[Path]:
    """Every ``step``-th JPEG of the ``photo_tree`` fixture (real photographs made at test time)."""
    return sorted(photo_tree.rglob("*.jpg"))[::step]


def load(name: str) -> bytes:
    """The bytes of a committed fixture (a bare name) or of ``../shared/data/odd-jpegs/<name>``
    (a name with a folder: only called when ../shared is present)."""
    if "/" in name:
        return (SHARED_DATA / "odd-jpegs" / name).read_bytes()
    return data(name)
