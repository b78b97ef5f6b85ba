"""``convert()``: the whole conversion, from a source tree to a complete store, resumable."""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..errors import (
    ConfigError,
    IncompleteStoreError,
    Interrupted,
    JdctError,
    SourceNotFoundError,
    StorageError,
    StoreError,
)
from ..sources import discover
from ..store import LOCK_OBJECT, PROGRESS_DIR, Plan, ProgressFolder, StoreInfo, StoreLocation, as_location, \
    create_split_arrays, create_store, read_metadata, shard_ranges, write_metadata
from ..store.location import abort_multipart_uploads
from .failures import error_of
from .lifeline import out_lock
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
            progress: Optional[ProgressFn] = None,
            storage_options: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Convert the JPEG tree ``src`` into the store ``out`` (resuming a partial one).

    ``out``: a local folder, or an object-store URL (``s3://bucket/imagenet.zarr``, with
    ``storage_options`` or the environment's credentials and endpoint; see
    :mod:`jdct_cli.store.location`), or a :class:`~jdct_cli.store.StoreLocation`. Every worker
    (pool or Dask) writes its shards straight there, one PUT per shard; markers, plan and lock are
    objects beside them; the metadata is written last.

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
    few seconds for it, then raises StoreError). An object store's failure (missing bucket,
    credentials, access denied, unreachable, errors that outlast the retries) raises a
    :class:`~jdct_cli.errors.StorageError`; once anything was written it says how to resume.

    Returns the summary dict: out, layout, images, converted, failed, failures_by_kind, splits,
    samples, bytes_on_disk, bytes_per_sample, compression_ratio (crops: raw int16 coefficient
    bytes / their bytes on disk), seconds, images_per_second, resumed_shards, already_complete
    (OUT was finished before: nothing done), aborted_uploads (object stores on S3: incomplete
    multipart uploads left under OUT by a killed writer and aborted, None when unknown); images layout: treatments ({name: files}),
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
    loc = as_location(out, storage_options)
    src = Path(src)
    if not src.exists():
        raise SourceNotFoundError("no such source folder", src)
    if loc.is_local and loc.path.exists() and not loc.path.is_dir():
        raise ConfigError("exists and is not a folder; choose another OUT", loc.path)
    lock = out_lock(loc)
    try:
        lock.acquire()
        return _convert(src, loc, opts, lock, labels=labels, workers=workers, on_error=on_error,
                        overwrite=overwrite, dask_scheduler=dask_scheduler, progress=progress)
    except KeyboardInterrupt:
        # outside the conversion proper (waiting for OUT's lock, checking OUT, writing the metadata)
        raise Interrupted("interrupted; run the same `jdct convert` command again to go on", str(loc)) from None
    finally:
        lock.release(remove_if_empty=True)


def _convert(src: Path, out: StoreLocation, opts: ConvertOptions, lock, *, labels, workers: int, on_error: str,
             overwrite: bool, dask_scheduler: Optional[str], progress: Optional[ProgressFn]) -> dict[str, Any]:
    t_start = time.perf_counter()
    state = _inspect_out(out, overwrite)
    folder = ProgressFolder(out)
    if isinstance(state, StoreInfo):
        return _already_complete(out, state, opts, src, folder)
    # a killed writer's incomplete multipart uploads (only objects over SINGLE_PUT_MAX use them)
    aborted = None if out.is_local else abort_multipart_uploads(out)
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
            with _WriteGuard(out):
                lock.write_owner(folder)
            written = True
        else:
            plan = plan_conversion(src, opts, labels=labels, on_error=on_error, runner=runner, progress=progress)
            with _WriteGuard(out):
                _start_fresh(out, folder)
                written = True
                lock.write_owner(folder)
                create_store(out)
                layout = opts.array_layout()
                for name, sp in plan.splits.items():
                    create_split_arrays(out, name, sp.views, len(sp.files), layout)
                folder.write_plan(plan)

        tasks = shard_tasks(out, plan, fail_fast=on_error == "fail", run=lock.run)
        total_samples = sum(t.stop - t.start for t in tasks)
        markers, todo = [], []
        for t, m in zip(tasks, _read_markers(folder, tasks)):
            (markers.append(m) if m is not None else todo.append(t))
        resumed = len(markers)
        done_samples = sum(m.stop - m.start for m in markers)
        if progress:
            progress("convert", done_samples, total_samples)
        t_convert = time.perf_counter()
        new_samples = 0
        for res in runner.map_unordered(convert_shard, todo):
            if res.write_error is not None:
                raise _write_error_of(res.write_error[0], res.write_error[1] or str(out))
            if lock.lost:
                raise StoreError("another `jdct convert` took this store over (this one had stopped renewing its "
                                 "lock); the shards finished so far are kept", str(out))
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
                              "same `jdct convert` command to start again", str(out)) from None
        try:
            done = sum(1 for m in _read_markers(folder, tasks) if m is not None)
        except (OSError, KeyboardInterrupt):
            done = "?"
        raise Interrupted(f"interrupted: {done} of {len(tasks) or '?'} shards are finished and kept; run the same "
                          "`jdct convert` command again to resume", str(out)) from None
    except BaseException:
        runner.stop(kill=True)
        raise
    runner.stop()

    meta = store_metadata(plan, markers)
    with _WriteGuard(out):
        write_metadata(out, meta)
        folder.remove()
    summary = summarize(out, meta, seconds=time.perf_counter() - t_start, convert_seconds=convert_seconds,
                        new_samples=new_samples, resumed_shards=resumed)
    summary["aborted_uploads"] = aborted
    return summary


#: Threads reading shard markers from an object store at once (each read is one small GET).
_MARKER_THREADS = 16


def _read_markers(folder: ProgressFolder, tasks) -> list:
    """The marker of each task's shard (None: not finished), read concurrently on an object store."""
    def read(t):
        return folder.read_marker(t.split, t.view, t.shard)

    if folder.location.is_local or len(tasks) < 2:
        return [read(t) for t in tasks]
    with ThreadPoolExecutor(max_workers=_MARKER_THREADS) as pool:
        return list(pool.map(read, tasks))


def _inspect_out(out: StoreLocation, overwrite: bool) -> Union[None, Plan, StoreInfo]:
    """What OUT holds: None (nothing to keep: start afresh), the Plan of an interrupted conversion
    to resume, or the StoreInfo of a complete store. ConfigError for anything else.

    A conversion creates ``OUT/.jdct-progress/`` before anything else and removes it last, so a
    folder holding it is ours to resume or restart; ``overwrite`` replaces OUT only when it is a
    Zarr store or one of ours. (On an object store, OUT is a key prefix; the lock object at its
    root does not count.)
    """
    if out.is_local:
        if not any(out.path.iterdir()):
            return None
    elif not [k for k in out.objects().first_keys("", 2) if k != LOCK_OBJECT]:
        return None
    folder = ProgressFolder(out)
    ours = folder.exists()
    is_store = out.objects().exists("zarr.json")
    if not (is_store or ours):
        raise ConfigError(_NOT_A_STORE, str(out))
    if overwrite:
        return None  # emptied by _start_fresh
    if is_store:
        try:
            return read_metadata(out)
        except IncompleteStoreError:
            pass
        except StorageError:
            raise
        except StoreError as exc:
            if not ours:
                raise ConfigError(f"is a Zarr store but not a usable jdct store ({exc.reason}); choose another OUT "
                                  "or pass --overwrite to replace it", str(out)) from None
    if not ours:
        raise ConfigError("is a Zarr group without jdct metadata and without an interrupted conversion to resume "
                          f"({PROGRESS_DIR} absent); choose another OUT or pass --overwrite to replace it", str(out))
    if folder.has_plan():
        return folder.read_plan()
    return None  # interrupted before its plan was saved: nothing finished, start over


def _already_complete(out: StoreLocation, info: StoreInfo, opts: ConvertOptions, src: Path,
                      folder: ProgressFolder) -> dict[str, Any]:
    """A finished store at OUT: nothing to do when it was made with these options from this source
    (e.g. a rerun after a kill that came between the metadata write and the clean-up), else refuse."""
    meta = info.metadata
    saved = None if meta.convert_options is None else ConvertOptions.normalized(meta.convert_options)
    if saved != opts.to_dict():
        what = (option_differences(saved, opts.to_dict()) if saved is not None else "its options are not recorded")
        raise ConfigError(f"a complete store made with other options is here ({what}); pass --overwrite to "
                          "convert again", str(out))
    if meta.source != os.fspath(src.resolve()):
        raise ConfigError(f"a complete store converted from another source ({meta.source}) is here; pass "
                          "--overwrite to convert again", str(out))
    folder.remove()
    resumed = sum(sp.views * len(shard_ranges(sp.num_samples, opts.shard_samples)) for sp in meta.splits.values())
    summary = summarize(out, meta, seconds=0.0, convert_seconds=0.0, new_samples=0, already_complete=True,
                        resumed_shards=resumed)
    summary["aborted_uploads"] = None
    return summary


def _resumable(plan: Plan, src: Path, labels, opts: ConvertOptions, out: StoreLocation) -> Plan:
    """The saved ``plan``, checked to be resumable by this command (same options, software and
    source files), reading the source at ``src`` (it may have moved)."""
    try:
        ConvertOptions.from_dict(plan.options)
    except ConfigError as exc:
        raise StoreError(f"unreadable conversion plan ({exc.reason}); pass --overwrite to start again",
                         ProgressFolder(out).where("plan.json")) from None
    saved = ConvertOptions.normalized(plan.options)
    if saved != opts.to_dict():
        raise ConfigError(
            f"an interrupted conversion with different options is here ({option_differences(saved, opts.to_dict())}): "
            "rerun it with the same options to resume, or pass --overwrite to start again", str(out))
    began_with = plan.software
    if began_with != software_versions():
        raise ConfigError(
            f"this interrupted conversion was begun by jdct {began_with.jdct} with libjpeg-turbo {began_with.libjpeg}; "
            "resuming it with other versions could mix differently computed samples: pass --overwrite to start "
            "again", str(out))
    fresh = discover(src, labels)
    same = set(fresh.splits) == set(plan.splits) and all(
        tuple(fresh.splits[n].files) == plan.splits[n].discovered
        and tuple(fresh.splits[n].labels) == plan.splits[n].discovered_labels for n in fresh.splits)
    if not same:
        raise ConfigError("the source files changed since this conversion started; pass --overwrite to start again",
                          str(out))
    # the same files, maybe at a new place (SRC moved or given another way): read them there
    return dataclasses.replace(plan, root=os.fspath(src.resolve()))


def _start_fresh(out: StoreLocation, folder: ProgressFolder) -> None:
    """Empty OUT (already checked to be ours, a store under --overwrite, or empty) and mark it ours.
    OUT itself stays: the conversion's lock is on it (on an object store: the lock object stays)."""
    if out.is_local:
        for entry in out.path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    else:
        objects = out.objects()
        objects.delete([key for key, _ in objects.list("") if key != LOCK_OBJECT])
    folder.create()


class _WriteGuard:
    """Turn OS errors while writing the store (disk full, read-only...) into StoreError naming the
    file, and an object store's failure into the same error saying how to resume."""

    def __init__(self, out: StoreLocation):
        self.out = out

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, StorageError):
            raise _resumable_storage_error(exc) from None
        if exc is not None and isinstance(exc, OSError) and not isinstance(exc, JdctError):
            raise _write_error_of(exc.strerror or str(exc), exc.filename or str(self.out)) from None
        return False


def _resumable_storage_error(exc: StorageError) -> StorageError:
    """``exc`` (same class and data) with the way to resume added to its reason."""
    err = exc.with_path(exc.path)
    JdctError.__init__(err, f"{exc.reason}; fix it and run the same `jdct convert` again to resume", exc.path)
    return err


def _write_error_of(reason: str, where) -> StoreError:
    return StoreError(f"cannot write the store: {reason}; free the problem and run the same `jdct convert` again "
                      "to resume", where)
