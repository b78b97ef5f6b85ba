"""Phase 1 of a conversion: list the source, check every header, and fix what will be written.

Files that are not JPEGs, unsupported or over the budgets are recorded as failures and left out,
so every split's sample count N is known before anything is written. The plan also fixes each
view's sample order (a seeded permutation) and the quantization tables; :func:`shard_tasks` then
cuts it into one task per (split, view, shard).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .. import __version__
from ..jpeg import libjpeg_version
from ..jpegmath.quant import ijg_tables
from ..sources import SPLIT_IDS, discover
from ..store import Failure, Plan, PlanSplit, QuantTables, Software, as_location
from .failures import error_of
from .options import ConvertOptions
from .runners import InProcess
from .worker import HeaderTask, ShardTask, read_headers

#: Last word of the seed of a view's sample permutation (image indices are int32, never this).
PERMUTATION_KEY = 0xFFFFFFFF
#: Files whose headers one plan-phase task reads.
HEADER_BATCH = 256

#: progress(stage, done, total): stage "plan" counts files whose header was read, "convert" samples;
#: "stopping" (done 0, total = running tasks: header batches or shards) after Ctrl-C, while they finish.
ProgressFn = Callable[[str, int, int], None]


def sample_order(seed: int, split_id: int, view: int, num_samples: int) -> np.ndarray:
    """int64 ``(N,)``: image index of each sample of the view (a seeded permutation)."""
    return np.random.default_rng([seed, split_id, view, PERMUTATION_KEY]).permutation(num_samples)


def split_id(name: str) -> int:
    """The number of a split in the random seeds: train 0, val 1, any other 2."""
    return SPLIT_IDS.get(name, len(SPLIT_IDS))


def quant_tables(quality: int) -> QuantTables:
    """The quantization tables of the stored coefficients at IJG ``quality`` (libjpeg's own)."""
    luma, chroma = ijg_tables(quality)
    return QuantTables(tuple(int(v) for v in luma), tuple(int(v) for v in chroma))


def software_versions() -> Software:
    """jdct's and libjpeg's versions: a resumed conversion must run the code that began it, or the
    shards written before and after the resume could hold differently computed samples."""
    return Software(jdct=__version__, libjpeg=libjpeg_version() or "unknown")


def plan_conversion(src, opts: ConvertOptions, *, labels=None, on_error: str = "record", runner=None,
                    progress: Optional[ProgressFn] = None) -> Plan:
    """Discover ``src``, read every header (on ``runner``: in-process when None), return the plan.

    ``on_error="fail"`` raises the first failure's error instead of recording it.
    """
    source = discover(src, labels)
    runner = runner or InProcess()
    all_files = [rel for sp in source.splits.values() for rel in sp.files]
    batches = [HeaderTask(root=os.fspath(source.root), files=tuple(all_files[i:i + HEADER_BATCH]), start=i,
                          max_pixels=opts.max_pixels, max_file_bytes=opts.max_file_bytes)
               for i in range(0, len(all_files), HEADER_BATCH)]
    verdicts: list[Optional[Failure]] = [None] * len(all_files)
    done = 0
    if progress:
        progress("plan", 0, len(all_files))
    for start, res in runner.map_unordered(read_headers, batches):
        verdicts[start:start + len(res)] = res
        if on_error == "fail":
            bad = next((r for r in res if r is not None), None)
            if bad is not None:
                raise error_of(bad, source.root)
        done += len(res)
        if progress:
            progress("plan", done, len(all_files))
    splits: dict[str, dict] = {}
    k = 0
    for name, sp in source.splits.items():
        rec = {"discovered": tuple(sp.files), "discovered_labels": tuple(sp.labels), "files": [], "labels": [],
               "views": opts.views if name == "train" else 1, "failures": [], "skipped": 0}
        for rel, lab in zip(sp.files, sp.labels):
            verdict = verdicts[k]
            k += 1
            if verdict is None:
                rec["files"].append(rel)
                rec["labels"].append(lab)
            else:
                rec["failures"].append(verdict)
        splits[name] = rec
    # Paths the listing left out (symlink loops, FIFOs named like images) are failures too.
    for rec in source.skipped:
        top = rec["file"].split("/")[0]
        name = top if top in splits else next(iter(splits))
        splits[name]["failures"].append(Failure(file=rec["file"], reason=rec["reason"], kind="unreadable",
                                                stage="plan"))
        splits[name]["skipped"] += 1
    return Plan(options=opts.to_dict(), software=software_versions(), root=os.fspath(Path(src).resolve()),
                classes=tuple(source.classes), quant=quant_tables(opts.quality),
                splits={name: PlanSplit(discovered=r["discovered"], discovered_labels=r["discovered_labels"],
                                        files=tuple(r["files"]), labels=tuple(r["labels"]), views=r["views"],
                                        failures=tuple(r["failures"]), skipped=r["skipped"])
                        for name, r in splits.items()})


def stats_stride(num_files: int, stats_images: int) -> int:
    """The images layout's statistics come from the images whose index is a multiple of this
    (about ``stats_images`` of ``num_files``; 0: none)."""
    if stats_images <= 0 or num_files <= 0:
        return 0
    return -(-num_files // stats_images)


def shard_tasks(out, plan: Plan, *, fail_fast: bool, run: str = "") -> list[ShardTask]:
    """One task per shard of every view of every split, in the plan's order (``out``: the store's
    path or :class:`~jdct_cli.store.StoreLocation`)."""
    out = as_location(out)
    opts = ConvertOptions.from_dict(plan.options)
    stats_split = plan.stats_split
    stride = stats_stride(len(plan.splits[stats_split].files), opts.stats_images) if opts.layout == "images" else 0
    tasks = []
    orders: dict[tuple[str, int], np.ndarray] = {}
    for name, view, shard, s0, s1 in plan.shards():
        sp = plan.splits[name]
        sid = split_id(name)
        if (name, view) not in orders:
            orders[name, view] = sample_order(opts.seed, sid, view, len(sp.files))
        items = tuple((int(i), sp.files[i], int(sp.labels[i])) for i in orders[name, view][s0:s1])
        tasks.append(ShardTask(out=out, root=plan.root, split=name, split_id=sid, view=view,
                               shard=shard, start=s0, stop=s1, options=opts, train=name == "train",
                               stats=name == stats_split, quant=plan.quant, items=items, fail_fast=fail_fast,
                               run=run, stats_stride=stride))
    return tasks
