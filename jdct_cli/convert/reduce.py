"""The end of a conversion: the shard markers reduced into the store's metadata, and the summary.

Markers are reduced in shard order, so counts, failures and statistics do not depend on which
worker finished first.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

import numpy as np

from ..store import (
    COEFFICIENT_ARRAYS,
    SAMPLINGS,
    TREATMENTS,
    ChannelStats,
    ImagesMeta,
    ImagesSplitMeta,
    ImagesStats,
    Plan,
    ShardMarker,
    SplitCounts,
    SplitMeta,
    Stats,
    StoreMeta,
    Transform,
    as_location,
    dir_bytes,
    raw_sample_bytes,
)
from ..transforms import DCT_EIGHTHS, DCT_EIGHTHS_VAL, RATIO_RANGE, RESIZE_FILTER, SCALE_RANGE, val_resize_size
from .images import REENCODE
from .options import ConvertOptions


def _split_counts(plan: Plan, name: str, markers: Sequence[ShardMarker]) -> tuple[list, SplitCounts]:
    """The failures (plan stage, then convert stage in shard order) and counts of split ``name``."""
    sp = plan.splits[name]
    failures = list(sp.failures)
    sample_failures = 0
    for m in markers:
        if m.split == name:
            failures.extend(m.failures)
            sample_failures += len(m.failures)
    files = len(sp.discovered) + sp.skipped
    failed = len({f.file for f in failures})
    return failures, SplitCounts(files=files, converted=files - failed, failed=failed, failed_samples=sample_failures)


def store_metadata(plan: Plan, markers: Sequence[ShardMarker]) -> "StoreMeta | ImagesMeta":
    """attrs["jdct"] of the store a finished conversion of ``plan`` wrote (one marker per shard)."""
    opts = ConvertOptions.from_dict(plan.options)
    markers = sorted(markers, key=lambda m: (m.split, m.view, m.shard))
    if opts.layout == "images":
        return _images_metadata(plan, opts, markers)
    splits = {}
    for name, sp in plan.splits.items():
        failures, counts = _split_counts(plan, name, markers)
        splits[name] = SplitMeta(views=sp.views, num_samples=len(sp.files), files=sp.files,
                                 file_labels=sp.labels, failures=tuple(failures), counts=counts)
    return StoreMeta(
        jdct_version=plan.software.jdct, libjpeg_version=plan.software.libjpeg,
        size=opts.size, quality=opts.quality, quant_tables=plan.quant, classes=plan.classes,
        chunk_samples=opts.chunk_samples, shard_samples=opts.shard_samples, codec=opts.array_layout().codec, seed=opts.seed,
        transform=_transform(opts), source=plan.root, convert_options=opts.to_dict(), splits=splits,
        stats=_stats(plan.stats_split, [m for m in markers if m.split == plan.stats_split]),
    )


def _images_metadata(plan: Plan, opts: ConvertOptions, markers: Sequence[ShardMarker]) -> ImagesMeta:
    splits = {}
    for name, sp in plan.splits.items():
        failures, counts = _split_counts(plan, name, markers)
        mine = [m for m in markers if m.split == name]
        per_code = np.zeros(len(TREATMENTS), np.int64)
        for m in mine:
            per_code[:len(m.treatments)] += m.treatments
        splits[name] = ImagesSplitMeta(
            num_samples=len(sp.files), files=sp.files, file_labels=sp.labels, failures=tuple(failures),
            counts=counts, treatments={t: int(c) for t, c in zip(TREATMENTS[1:], per_code[1:]) if c},
            stored_bytes=sum(m.stored_bytes for m in mine), source_bytes=sum(m.source_bytes for m in mine))
    stat_markers = [m for m in markers if m.split == plan.stats_split]
    images = sum(m.stats_images for m in stat_markers)
    stats = None
    if images:
        planes = _stats(plan.stats_split, stat_markers)
        stats = ImagesStats(split=plan.stats_split, size=opts.size, quality=opts.quality, images=images,
                            y=planes.y, cb=planes.cb, cr=planes.cr)
    return ImagesMeta(
        jdct_version=plan.software.jdct, libjpeg_version=plan.software.libjpeg, classes=plan.classes,
        chunk_samples=opts.chunk_samples, shard_samples=opts.shard_samples, codec=opts.array_layout().codec,
        seed=opts.seed, max_side=opts.max_side, restart_segments=opts.restart_segments, reencode=dict(REENCODE),
        exif=opts.exif, check=opts.check, samplings=SAMPLINGS, treatments=TREATMENTS, splits=splits, stats=stats,
        source=plan.root, convert_options=opts.to_dict())


def _stats(split: str, markers: Sequence[ShardMarker]) -> Stats:
    sums = np.zeros((3, 64))
    sumsq = np.zeros((3, 64))
    blocks = np.zeros(3)
    for m in markers:
        sums += np.asarray(m.sums)
        sumsq += np.asarray(m.sumsq)
        blocks += np.asarray(m.blocks, np.float64)
    planes = {}
    for c, name in enumerate(COEFFICIENT_ARRAYS):
        count = max(blocks[c], 1.0)
        mean = sums[c] / count
        var = np.maximum(sumsq[c] / count - mean ** 2, 0.0)
        planes[name] = ChannelStats(mean=tuple(mean.tolist()), std=tuple(np.sqrt(var).tolist()))
    return Stats(split=split, **planes)


def _transform(opts: ConvertOptions) -> Transform:
    return Transform(
        train={"name": "RandomResizedCrop", "scale": list(SCALE_RANGE), "ratio": list(RATIO_RANGE),
               "attempts": 10, "fallback": "centre crop clamped to the ratio bounds", "views": opts.views},
        val={"name": "Resize+CenterCrop", "resize_shorter_side": val_resize_size(opts.size),
             "center_crop": opts.size},
        resize_filter=f"Pillow {RESIZE_FILTER} (antialiased)",
        exif=opts.exif, exact_decode=opts.exact_decode,
        dct_scaling=not opts.exact_decode, roi_decode=not opts.exact_decode,
        dct_scaling_eighths={} if opts.exact_decode else {"train": list(DCT_EIGHTHS), "val": list(DCT_EIGHTHS_VAL)},
        max_pixels=opts.max_pixels,
    )


def summarize(out, meta: "StoreMeta | ImagesMeta", *, seconds: float, convert_seconds: float,
              new_samples: int, resumed_shards: int, already_complete: bool = False) -> dict[str, Any]:
    """The end-of-run summary (see :func:`jdct_cli.convert.convert`); ``out``: the store's path or
    :class:`~jdct_cli.store.StoreLocation`."""
    out = as_location(out)
    samples = sum(sp.views * sp.num_samples for sp in meta.splits.values())
    total_bytes = dir_bytes(out)
    if isinstance(meta, ImagesMeta):
        coef_bytes = 0
        stored = sum(sp.stored_bytes for sp in meta.splits.values())
        source = sum(sp.source_bytes for sp in meta.splits.values())
        treatments: Counter = Counter()
        for sp in meta.splits.values():
            treatments.update(sp.treatments)
        extra = {"layout": "images", "treatments": dict(treatments), "stored_bytes": stored, "source_bytes": source,
                 "bytes_vs_source": total_bytes / source if source else math.nan}
    else:
        coef_bytes = sum(dir_bytes(out, f"{split}/{a}") for split in meta.splits for a in COEFFICIENT_ARRAYS)
        extra = {"layout": "crops"}
    kinds: Counter = Counter()
    for sp in meta.splits.values():
        seen = set()
        for f in sp.failures:
            if f.file not in seen:
                seen.add(f.file)
                kinds[f.kind or "other"] += 1
    return {
        "out": str(out),
        "images": sum(sp.counts.files for sp in meta.splits.values()),
        "converted": sum(sp.counts.converted for sp in meta.splits.values()),
        "failed": sum(sp.counts.failed for sp in meta.splits.values()),
        "failures_by_kind": dict(sorted(kinds.items())),
        "splits": {n: {"views": sp.views, "num_samples": sp.num_samples, **sp.counts.to_dict()}
                   for n, sp in meta.splits.items()},
        "samples": samples, "bytes_on_disk": total_bytes,
        "bytes_per_sample": total_bytes / samples if samples else math.nan,
        "compression_ratio": (raw_sample_bytes(meta.size) * samples / coef_bytes) if coef_bytes else math.nan,
        **extra,
        "seconds": seconds, "images_per_second": new_samples / convert_seconds if convert_seconds > 0 else math.nan,
        "resumed_shards": resumed_shards, "already_complete": already_complete,
    }
