"""Test helpers shared by the conversion and fault tests: small symlinked source trees and a
fingerprint of every array of a store (what "byte-identical stores" is checked with)."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from conftest import HAVE_SHARED, SHARED_DATA
from jdct_cli.store import read_metadata
from photos import make_photo_tree


def link_tree(dst: Path, src_root: Path, split_classes: dict, per_class: dict | int) -> Path:
    """Symlink the first files of each class folder: dst/<split>/<class>/<file>.

    ``split_classes``: {split: [class names]}; ``per_class``: files per class, one int for every
    split or {split: int}.
    """
    for split, classes in split_classes.items():
        n = per_class[split] if isinstance(per_class, dict) else per_class
        for cls in classes:
            (dst / split / cls).mkdir(parents=True)
            for f in sorted((src_root / split / cls).iterdir())[:n]:
                (dst / split / cls / f.name).symlink_to(f)
    return dst


def array_digest(arr) -> str:
    """sha256 of a numpy array's values, shape and dtype; an object array of bytes (an images
    store's ``jpeg``) by each item's length and bytes."""
    h = hashlib.sha256(repr((arr.shape, str(arr.dtype))).encode())
    if arr.dtype == object:
        for item in arr.ravel():
            h.update(len(item).to_bytes(8, "little") + bytes(item))
    else:
        h.update(arr.tobytes())
    return h.hexdigest()


def store_hashes(store: Path) -> dict[str, str]:
    """{"<split>/<array>": :func:`array_digest` of its values} for every array of every split
    (either layout)."""
    import zarr

    info = read_metadata(store)
    group = zarr.open_group(os.fspath(store), mode="r")
    out = {}
    for split in info.splits:
        for spec in info.layout.arrays:
            out[f"{split}/{spec.name}"] = array_digest(group[f"{split}/{spec.name}"][...])
    return out


#: Where the tests that want real photographs take them: trees of scikit-image's photographs made
#: at test time always, and imagenette-5k as well when ../shared/data is there.
REAL_SOURCES = ["photos"] + (["imagenette"] if HAVE_SHARED else [])


def real_source(name: str, tmp_path_factory) -> Path:
    """An ImageFolder root (``train/<class>/``, ``val/<class>/``) for a name of REAL_SOURCES: photographs
    of 40-400 px at several qualities and samplings (4 classes x 12 train, 4 val), or imagenette-5k."""
    if name == "imagenette":
        return SHARED_DATA / "imagenette-5k"
    return make_photo_tree(tmp_path_factory.mktemp("real"), min_side=96, max_side=400)


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (children, grandchildren...), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may hold spaces: fields after its ')'
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found |= frontier
    return found


def alive(pids) -> set[int]:
    """The processes of ``pids`` that still exist (zombies count as gone)."""
    left = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(pid)
    return left


def assert_no_orphans(pids, within: float = 5.0) -> None:
    """Every process of ``pids`` is gone within ``within`` seconds."""
    deadline = time.monotonic() + within
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = alive(pids)
    names = {}
    for pid in left:
        try:
            names[pid] = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()[:200]
        except OSError:
            pass
    assert not left, f"processes left running {within} s after the conversion ended: {names}"
