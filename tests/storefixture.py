"""Test helper: write a small, valid v1 jdct store without `jdct convert`.

The arrays are created and the metadata written through the store contract (``jdct_cli.store``:
layout, codecs, typed metadata), but the samples are made independently of jdct's pipeline: Pillow
decodes real JPEGs (``tests/photos.py`` trees made at test time, or ../shared/data), crops and
resizes them (bilinear), and ``jdct_cli._decoder.forward_dct`` computes the coefficients
libjpeg-turbo would store at ``quality`` / 4:2:0. Failed conversions are modelled as convert
writes them: zero coefficients and label -1.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from jdct_cli._decoder import forward_dct
from jdct_cli.jpegmath.quant import ijg_tables
from jdct_cli.store import (
    ChannelStats,
    Codec,
    CropsLayout,
    Failure,
    QuantTables,
    SplitCounts,
    SplitMeta,
    Stats,
    StoreMeta,
    Transform,
    create_split_arrays,
    create_store,
    write_metadata,
)


def list_images(root: Path, per_class: int, classes: Optional[int] = None):
    """``(paths, labels, class_names)`` of the first ``per_class`` JPEGs of the first ``classes`` folders."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir())[:classes]
    paths, labels = [], []
    for i, name in enumerate(names):
        files = sorted((root / name).iterdir())[:per_class]
        paths += files
        labels += [i] * len(files)
    return paths, labels, names


def val_box(w: int, h: int, size: int):
    """torchvision Resize(round(size/0.875)) + CenterCrop(size) as a source box (x, y, w, h)."""
    r = int(round(size / 0.875))
    rw, rh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
    left, top = int(round((rw - size) / 2)), int(round((rh - size) / 2))
    sx, sy = w / rw, h / rh
    return left * sx, top * sy, size * sx, size * sy


def train_box(rng: np.random.Generator, w: int, h: int):
    """A RandomResizedCrop-style box (scale 0.25-1, ratio 3/4-4/3), centre fallback."""
    for _ in range(10):
        area = w * h * rng.uniform(0.25, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        bw, bh = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 0 < bw <= w and 0 < bh <= h:
            return float(rng.integers(0, w - bw + 1)), float(rng.integers(0, h - bh + 1)), float(bw), float(bh)
    s = min(w, h)
    return (w - s) / 2, (h - s) / 2, float(s), float(s)


def crop_rgb(path: Path, box, size: int) -> np.ndarray:
    """uint8 (size, size, 3): Pillow's bilinear resize of ``box`` (x, y, w, h) of the image at ``path``."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        x, y, bw, bh = box
        out = im.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + bw, y + bh), reducing_gap=None)
    return np.asarray(out, dtype=np.uint8)


def write_store(out: Path, splits: dict, classes: Sequence[str], *, size: int = 32, views: int = 2,
                quality: int = 90, chunk_samples: int = 8, shard_samples: int = 32, seed: int = 0,
                failed: dict | None = None, format_version: int = 1, write_attrs: bool = True) -> Path:
    """Write a store at ``out``. ``splits``: {name: (paths, labels)}; "val" gets 1 view, others ``views``.

    ``failed``: {split: [sample indices]} stored as failed conversions (zero coefficients, label -1).
    Returns ``out``. ``write_attrs=False`` leaves the store incomplete (no attrs["jdct"]).
    """
    import zarr

    failed = failed or {}
    rng = np.random.default_rng(seed)
    layout = CropsLayout(size, chunk_samples, shard_samples, Codec())
    create_store(out)
    meta_splits, quant, data_of = {}, None, {}
    for split, (paths, labels) in splits.items():
        nv = 1 if split == "val" else views
        n = len(paths)
        data = {spec.name: np.full((nv, n) + spec.sample_shape, spec.fill_value, spec.dtype) for spec in layout.arrays}
        bad = set(failed.get(split, ()))
        for i, (path, label) in enumerate(zip(paths, labels)):
            with Image.open(path) as im:
                w, h = im.size
            for v in range(nv):
                data["image"][v, i] = i
                if i in bad:
                    continue
                box = val_box(w, h, size) if split == "val" else train_box(rng, w, h)
                y, cb, cr, q = forward_dct(crop_rgb(path, box, size), *ijg_tables(quality))
                quant = q
                data["y"][v, i] = np.moveaxis(y, -1, 0)
                data["cb"][v, i] = np.moveaxis(cb, -1, 0)
                data["cr"][v, i] = np.moveaxis(cr, -1, 0)
                data["label"][v, i] = label
                data["box"][v, i] = box
        create_split_arrays(out, split, nv, n, layout)
        group = zarr.open_group(str(out), mode="r+")
        for k, arr in data.items():
            group[f"{split}/{k}"][...] = arr
        meta_splits[split] = SplitMeta(
            views=nv, num_samples=n, files=tuple(f"{Path(p).parent.name}/{Path(p).name}" for p in paths),
            file_labels=tuple(int(x) for x in labels),
            failures=tuple(Failure(file=Path(paths[i]).name, reason="test failure") for i in sorted(bad)),
            counts=SplitCounts(files=n, converted=n - len(bad), failed=len(bad), failed_samples=nv * len(bad)))
        data_of[split] = data
    stats_split = "train" if "train" in data_of else next(iter(data_of))
    d = data_of[stats_split]
    ok = d["label"] >= 0
    planes = {}
    for k, table in (("y", quant[0]), ("cb", quant[1]), ("cr", quant[1])):
        deq = d[k][ok].astype(np.float64) * table.reshape(1, 64, 1, 1)
        planes[k] = ChannelStats(mean=tuple(deq.mean(axis=(0, 2, 3)).tolist()),
                                 std=tuple(deq.std(axis=(0, 2, 3)).tolist()))
    meta = StoreMeta(
        jdct_version="test", libjpeg_version="test", size=size, quality=quality,
        quant_tables=QuantTables(tuple(int(v) for v in quant[0]), tuple(int(v) for v in quant[1])),
        classes=tuple(classes), chunk_samples=chunk_samples, shard_samples=shard_samples, codec=layout.codec,
        seed=seed, transform=Transform(train={"scale": [0.25, 1.0], "ratio": [0.75, 4 / 3]},
                                       val={"crop_fraction": 0.875}, exif="ignore", exact_decode=True),
        splits=meta_splits, stats=Stats(split=stats_split, **planes), format_version=format_version,
    )
    if write_attrs:
        write_metadata(out, meta)
    return Path(out)
