"""Test helpers shared by the conversion and fault tests: small symlinked source trees and a
fingerprint of every array of a store (what "byte-identical stores" is checked with)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from jdct_cli.store import ALL_ARRAYS, read_metadata


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


def store_hashes(store: Path) -> dict[str, str]:
    """{"<split>/<array>": sha256 of its values, shape and dtype} for every array of every split."""
    import zarr

    group = zarr.open_group(os.fspath(store), mode="r")
    out = {}
    for split in read_metadata(store).splits:
        for name in ALL_ARRAYS:
            arr = group[f"{split}/{name}"][...]
            out[f"{split}/{name}"] = hashlib.sha256(arr.tobytes() + repr((arr.shape, str(arr.dtype))).encode()).hexdigest()
    return out
