"""``convert()``: the whole conversion, from a source tree to a complete store, resumable."""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import (
    ConfigError,
    IncompleteStoreError,
    Interrupted,
    JdctError,
    SourceNotFoundError,
    StoreError,
)
from ..sources import discover
from ..store import PROGRESS_DIR, Plan, ProgressFolder, StoreInfo, create_split_arrays, create_store, \
    read_metadata, shard_ranges, write_metadata
from .failures import error_of
from .lifeline import OutLock
from .options import ConvertOptions, option_differences
from .plan import ProgressFn, plan_conversion, shard_tasks, software_versions
from .reduce import store_metadata, summarize
from .runners import Dask, InProcess, Pool, default_workers
from .worker import convert_shard

#: The one answer to an OUT that holds other files: neither a store nor an interrupted conversion.
_NOT_A_STORE = ("holds files and is not a jdct store (nor an interrupted conversion: no .jdct-progress folder); "
                "choose another OUT (--overwrite only replaces a jdct or Zarr store, never other files)")


def convert(src, out, *, options: Optional[ConvertOptions] = None, labels=None, workers: Optional[int] = None,
            on_error: str = "record", overwrite: bool = False, dask_scheduler: Optional[str] = None,
            progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Convert the JPEG tree ``src`` into the store ``out`` (resuming a partial one).

    Phase 1 (:func:`.plan.plan_conversion`) lists the source and reads every header; the arrays
    and the plan are then created. Phase 2 runs one task per (split, view, shard)
    (:func:`.worker.convert_shard`), each writing its whole shard then its completion marker. The
    markers are reduced into attrs["jdct"] (:func:`.reduce.store_metadata`), written last; the
    progress folder is then removed. Re-running the same command on a partial OUT resumes
    (finished shards are skipped); every draw is seeded per image, so the arrays are
    byte-identical whatever the worker count, scheduler or interruptions.

    ``workers``: processes (default: all cores; 1 runs in this process). ``on_error``: "record"
    (default) or "fail" (raise at the first failing file). ``overwrite``: replace a store at
    ``out``. ``dask_scheduler``: run the tasks on that Dask scheduler. ``progress``: see
    :data:`.plan.ProgressFn`. One conversion at a time writes into ``out`` (a second one waits a
    few seconds for it, then raises StoreError).

    Returns the summary dict: out, layout, images, converted, failed, failures_by_kind, splits,
    samples, bytes_on_disk, bytes_per_sample, compression_ratio (crops: raw int16 coefficient
    bytes / their bytes on disk), seconds, images_per_second, resumed_shards, already_complete
    (OUT was finished before: nothing done); images layout: treatments ({name: files}),
    stored_bytes (the JPEGs), source_bytes (their source files), bytes_vs_source (the store's
    bytes on disk / source_bytes). Ctrl-C stops the workers, keeps finished shards and raises
    :class:`~jdct_cli.errors.Interrupted` saying how to resume.
    """
    opts = options or ConvertOptions()
    opts.validate()
    if on_error not in ("record", "fail"):
        raise ConfigError(f"--on-error must be 'record' or 'fail', got {on_error!r}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    out, src = Path(out), Path(src)
    if not src.exists():
        raise SourceNotFoundError("no such source folder", src)
    if out.exists() and not out.is_dir():
        raise ConfigError("exists and is not a folder; choose another OUT", out)
    lock = OutLock(out)
    try:
        lock.acquire()
        return _convert(src, out, opts, lock, labels=labels, workers=workers, on_error=on_error,
                        overwrite=overwrite, dask_scheduler=dask_scheduler, progress=progress)
    except KeyboardInterrupt:
        # outside the conversion proper (waiting for OUT's lock, checking OUT, writing the metadata)
        raise Interrupted("interrupted; run the same `jdct convert` command again to go on", out) from None
    finally:
        lock.release(remove_if_empty=True)


def _convert(src: Path, out: Path, opts: ConvertOptions, lock: OutLock, *, labels, workers: int, on_error: str,
             overwrite: bool, dask_scheduler: Optional[str], progress: Optional[ProgressFn]) -> dict[str, Any]:
    t_start = time.perf_counter()
    state = _inspect_out(out, overwrite)
    folder = ProgressFolder(out)
    if isinstance(state, StoreInfo):
        return _already_complete(out, state, opts, src, folder)
    if dask_scheduler:
        runner: Union[InProcess, Pool, Dask] = Dask(dask_scheduler)
    elif workers == 1:
        runner = InProcess()
    else:
        runner = Pool(workers, lock.token())
    tasks = []
    written = False  # whether OUT holds anything of this conversion
    try:
        if isinstance(state, Plan):
            plan = _resumable(state, src, labels, opts, out)
            lock.write_owner(folder.path)
            written = True
        else:
            plan = plan_conversion(src, opts, labels=labels, on_error=on_error, runner=runner, progress=progress)
            with _WriteGuard(out):
                _start_fresh(out, folder)
                written = True
                lock.write_owner(folder.path)
                create_store(out)
                layout = opts.array_layout()
                for name, sp in plan.splits.items():
                    create_split_arrays(out, name, sp.views, len(sp.files), layout)
                folder.write_plan(plan)

        tasks = shard_tasks(out, plan, fail_fast=on_error == "fail", run=lock.run)
        total_samples = sum(t.stop - t.start for t in tasks)
        markers, todo = [], []
        for t in tasks:
            m = folder.read_marker(t.split, t.view, t.shard)
            (markers.append(m) if m is not None else todo.append(t))
        resumed = len(markers)
        done_samples = sum(m.stop - m.start for m in markers)
        if progress:
            progress("convert", done_samples, total_samples)
        t_convert = time.perf_counter()
        new_samples = 0
        for res in runner.map_unordered(convert_shard, todo):
            if res.write_error is not None:
                raise _write_error_of(res.write_error[0], res.write_error[1] or out)
            if on_error == "fail" and res.marker.failures:
                raise error_of(res.marker.failures[0], Path(plan.root))
            if res.not_written is not None:
                raise StoreError(f"stopped: {res.not_written}", out)
            markers.append(res.marker)
            n = res.marker.stop - res.marker.start
            done_samples += n
            new_samples += n
            if progress:
                progress("convert", done_samples, total_samples)
        convert_seconds = time.perf_counter() - t_convert
    except KeyboardInterrupt:
        runner.stop(kill=True, progress=progress)
        if not written:
            raise Interrupted("interrupted while reading the image headers, before anything was written; run the "
                              "same `jdct convert` command to start again", out) from None
        done = sum(1 for t in tasks if folder.read_marker(t.split, t.view, t.shard) is not None)
        raise Interrupted(f"interrupted: {done} of {len(tasks) or '?'} shards are finished and kept; run the same "
                          "`jdct convert` command again to resume", out) from None
    except BaseException:
        runner.stop(kill=True)
        raise
    runner.stop()

    meta = store_metadata(plan, markers)
    with _WriteGuard(out):
        write_metadata(out, meta)
    folder.remove()
    return summarize(out, meta, seconds=time.perf_counter() - t_start, convert_seconds=convert_seconds,
                     new_samples=new_samples, resumed_shards=resumed)


def _inspect_out(out: Path, overwrite: bool) -> Union[None, Plan, StoreInfo]:
    """What OUT holds: None (nothing to keep: start afresh), the Plan of an interrupted conversion
    to resume, or the StoreInfo of a complete store. ConfigError for anything else.

    A conversion creates ``OUT/.jdct-progress/`` before anything else and removes it last, so a
    folder holding it is ours to resume or restart; ``overwrite`` replaces OUT only when it is a
    Zarr store or one of ours.
    """
    if not any(out.iterdir()):
        return None
    folder = ProgressFolder(out)
    ours = folder.exists()
    is_store = (out / "zarr.json").is_file()
    if not (is_store or ours):
        raise ConfigError(_NOT_A_STORE, out)
    if overwrite:
        return None  # emptied by _start_fresh
    if is_store:
        try:
            return read_metadata(out)
        except IncompleteStoreError:
            pass
        except StoreError as exc:
            if not ours:
                raise ConfigError(f"is a Zarr store but not a usable jdct store ({exc.reason}); choose another OUT "
                                  "or pass --overwrite to replace it", out) from None
    if not ours:
        raise ConfigError("is a Zarr group without jdct metadata and without an interrupted conversion to resume "
                          f"({PROGRESS_DIR} absent); choose another OUT or pass --overwrite to replace it", out)
    if folder.has_plan():
        return folder.read_plan()
    return None  # interrupted before its plan was saved: nothing finished, start over


def _already_complete(out: Path, info: StoreInfo, opts: ConvertOptions, src: Path,
                      folder: ProgressFolder) -> dict[str, Any]:
    """A finished store at OUT: nothing to do when it was made with these options from this source
    (e.g. a rerun after a kill that came between the metadata write and the clean-up), else refuse."""
    meta = info.metadata
    saved = None if meta.convert_options is None else ConvertOptions.normalized(meta.convert_options)
    if saved != opts.to_dict():
        what = (option_differences(saved, opts.to_dict()) if saved is not None else "its options are not recorded")
        raise ConfigError(f"a complete store made with other options is here ({what}); pass --overwrite to "
                          "convert again", out)
    if meta.source != os.fspath(src.resolve()):
        raise ConfigError(f"a complete store converted from another source ({meta.source}) is here; pass "
                          "--overwrite to convert again", out)
    folder.remove()
    resumed = sum(sp.views * len(shard_ranges(sp.num_samples, opts.shard_samples)) for sp in meta.splits.values())
    return summarize(out, meta, seconds=0.0, convert_seconds=0.0, new_samples=0, already_complete=True,
                     resumed_shards=resumed)


def _resumable(plan: Plan, src: Path, labels, opts: ConvertOptions, out: Path) -> Plan:
    """The saved ``plan``, checked to be resumable by this command (same options, software and
    source files), reading the source at ``src`` (it may have moved)."""
    try:
        ConvertOptions.from_dict(plan.options)
    except ConfigError as exc:
        raise StoreError(f"unreadable conversion plan ({exc.reason}); pass --overwrite to start again",
                         ProgressFolder(out).plan_path) from None
    saved = ConvertOptions.normalized(plan.options)
    if saved != opts.to_dict():
        raise ConfigError(
            f"an interrupted conversion with different options is here ({option_differences(saved, opts.to_dict())}): "
            "rerun it with the same options to resume, or pass --overwrite to start again", out)
    began_with = plan.software
    if began_with != software_versions():
        raise ConfigError(
            f"this interrupted conversion was begun by jdct {began_with.jdct} with libjpeg-turbo {began_with.libjpeg}; "
            "resuming it with other versions could mix differently computed samples: pass --overwrite to start "
            "again", out)
    fresh = discover(src, labels)
    same = set(fresh.splits) == set(plan.splits) and all(
        tuple(fresh.splits[n].files) == plan.splits[n].discovered
        and tuple(fresh.splits[n].labels) == plan.splits[n].discovered_labels for n in fresh.splits)
    if not same:
        raise ConfigError("the source files changed since this conversion started; pass --overwrite to start again",
                          out)
    # the same files, maybe at a new place (SRC moved or given another way): read them there
    return dataclasses.replace(plan, root=os.fspath(src.resolve()))


def _start_fresh(out: Path, folder: ProgressFolder) -> None:
    """Empty OUT (already checked to be ours, a store under --overwrite, or empty) and mark it ours.
    OUT itself stays: the conversion's lock is on it."""
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    folder.create()


class _WriteGuard:
    """Turn OS errors while writing the store (disk full, read-only...) into StoreError naming the file."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, OSError) and not isinstance(exc, JdctError):
            raise _write_error_of(exc.strerror or str(exc), exc.filename or self.out) from None
        return False


def _write_error_of(reason: str, where) -> StoreError:
    return StoreError(f"cannot write the store: {reason}; free the problem and run the same `jdct convert` again "
                      "to resume", where)
