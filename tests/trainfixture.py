"""Test helper: the tiny real store the training tests run on, made from real JPEGs at test time."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from photos import PHOTOS, make_photo_tree

#: The tiny store's classes: crops of two scikit-image photographs.
CLASSES = tuple(name for name, _ in PHOTOS[:2])  # ("astronaut", "cat")


def make_tiny_store(root: Path, splits: Sequence[str] = ("train", "val")) -> tuple[Path, Path]:
    """(store, source tree) under ``root``: 12 train images per class, 6 + 5 val images (11: an odd
    count, so that two processes validate with one padding sample), 32 px, quality 100, converted
    by the real `jdct convert` library. ``splits=("train",)`` makes a train-only store."""
    from jdct_cli.convert import ConvertOptions, convert

    src = make_photo_tree(root / "src", classes=2, train_per_class=12, val_per_class=6, splits=splits)
    if "val" in splits:
        sorted((src / "val" / CLASSES[1]).iterdir())[-1].unlink()
    store = root / "tiny.zarr"
    convert(src, store, options=ConvertOptions(size=32, quality=100, chunk_samples=8, shard_samples=16), workers=1)
    return store, src
