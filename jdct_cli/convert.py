"""``jdct convert``: ImageNet-style JPEG folders into a sharded Zarr v3 store of DCT coefficients.

Two phases:

1. *plan* (parallel, cheap): list the source (:mod:`jdct_cli.sources`), sniff and read the header
   of every file; files that are not JPEGs, unsupported or over the pixel budget are recorded as
   failures and left out, so every split's sample count N is known before anything is written.
   The arrays are then created and the plan (options + file lists) saved in
   ``OUT/.jdct-progress/plan.json``.
2. *convert* (parallel): one task per (split, view, shard). A task decodes its images (ROI + DCT
   scaling), crops, resizes, takes the coefficients, writes the whole shard of each of the six
   arrays in one write, then atomically writes its completion marker
   ``OUT/.jdct-progress/<split>-v<view>-s<shard>.json`` holding its statistics partial sums and
   failures. A file that fails here keeps its sample slot: label -1, box and coefficients zero.

When every shard is done the per-split counts, failures and statistics are reduced in shard order
(so they do not depend on scheduling) and attrs["jdct"] is written last; the progress folder is
then removed. Re-running the same command on a partial OUT resumes (finished shards are skipped);
any random draw comes from ``numpy.random.default_rng([seed, split_id, view, image_index])`` and
the sample order of a view from ``default_rng([seed, split_id, view, PERMUTATION_KEY])``, so the
arrays are byte-identical whatever the worker count, scheduler or interruptions.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from . import store as st
from .fileio import atomic_write_json
from .jpegmath.quant import ijg_tables
from .errors import (
    ConfigError,
    IncompleteStoreError,
    ImageTooLargeError,
    JdctError,
    NotAJpegError,
    SourceError,
    StoreError,
    UnsupportedJpegError,
)
from .sources import SPLIT_IDS, discover

#: Last word of the seed of a view's sample permutation (image indices are int32, never this).
PERMUTATION_KEY = 0xFFFFFFFF
#: Bytes read to parse a header in the plan phase (the whole file when the header is longer): on
#: ImageNet's originals 16 KiB holds 97% of the headers (the rest carry big EXIF/ICC blocks), so
#: planning reads ~1/5 of the data instead of all of it twice.
HEADER_PREFIX_BYTES = 1 << 14
HEADER_BATCH = 256
#: Default largest source file (bytes) converted; bigger files are recorded as "too-large" in the
#: plan phase without being read (no JPEG of a real photo comes near it).
DEFAULT_MAX_FILE_BYTES = 1 << 30
max_file_bytes = DEFAULT_MAX_FILE_BYTES  # the name tests/test_faults.py looks for

#: Largest --size: 16x a 224 crop, far beyond what a DCT network takes.
MAX_SIZE = 4096
#: Largest shard a worker builds in memory (bytes of its coefficient arrays): 154 MB by default.
MAX_SHARD_BYTES = 4 << 30

#: progress(stage, done, total): stage "plan" counts files whose header was read, "convert" samples;
#: "stopping" (done 0, total = running tasks: header batches or shards) after Ctrl-C, while they finish.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that determines a store's content (compared on resume). Sizes in pixels/samples."""

    size: int = 224
    quality: int = 100
    views: int = 1
    seed: int = 0
    exif: str = "ignore"
    exact_decode: bool = False
    chunk_samples: int = st.DEFAULT_CHUNK_SAMPLES
    shard_samples: int = st.DEFAULT_SHARD_SAMPLES
    max_pixels: int = 100_000_000
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    fdct: str = "fdct"

    def validate(self) -> None:
        if self.size < 16 or self.size % 16:
            raise ConfigError(f"--size must be a positive multiple of 16 (4:2:0 blocks), got {self.size}")
        if self.size > MAX_SIZE:
            raise ConfigError(f"--size must be at most {MAX_SIZE}, got {self.size}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1..100, got {self.quality}")
        if self.views < 1:
            raise ConfigError(f"--views must be >= 1, got {self.views}")
        if self.exif not in ("ignore", "apply"):
            raise ConfigError(f"--exif must be 'ignore' or 'apply', got {self.exif!r}")
        if self.chunk_samples < 1 or self.shard_samples < 1 or self.shard_samples % self.chunk_samples:
            raise ConfigError(
                f"--shard-samples ({self.shard_samples}) must be a positive multiple of --chunk-samples "
                f"({self.chunk_samples})"
            )
        # A task holds its whole shard in memory (coefficients: 3 bytes per pixel of int16).
        shard_bytes = self.shard_samples * 3 * self.size * self.size
        if shard_bytes > MAX_SHARD_BYTES:
            raise ConfigError(
                f"one shard of {self.shard_samples} samples at --size {self.size} needs "
                f"{shard_bytes / 2**30:.1f} GiB of memory per worker (at most {MAX_SHARD_BYTES >> 30} GiB): "
                "lower --shard-samples")
        from .dct import FDCT_METHODS

        if self.fdct not in FDCT_METHODS:
            raise ConfigError(f"unknown DCT method {self.fdct!r} (one of {', '.join(FDCT_METHODS)})")
        if self.max_file_bytes < 1 or self.max_pixels < 1:
            raise ConfigError("max_file_bytes and max_pixels must be positive")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be 0..2**63-1, got {self.seed}")


# ------------------------------------------------------------------------------------------------
# Failures
# ------------------------------------------------------------------------------------------------

def failure_kind(exc: BaseException) -> str:
    """A short category for summaries: not-a-jpeg, too-large, unsupported, unreadable, corrupt."""
    if isinstance(exc, NotAJpegError):
        return "not-a-jpeg"
    if isinstance(exc, ImageTooLargeError):
        return "too-large"
    if isinstance(exc, UnsupportedJpegError):
        return "unsupported"
    if isinstance(exc, SourceError) or isinstance(exc, OSError):
        return "unreadable"
    return "corrupt"


def _failure(rel: str, exc: BaseException, stage: str, view: Optional[int] = None) -> dict[str, Any]:
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    rec = {"file": rel, "reason": reason, "kind": failure_kind(exc), "stage": stage}
    if view is not None:
        rec["view"] = view
    return rec


# ------------------------------------------------------------------------------------------------
# Worker functions (module level: picklable for process pools and Dask)
# ------------------------------------------------------------------------------------------------

def _worker_init() -> None:
    # Workers leave Ctrl-C to the parent, which stops them; a worker dying mid-task would only
    # make the pool report a confusing BrokenProcessPool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One process per core already: Blosc's own threads would only oversubscribe the cores
    # (its output does not depend on the thread count).
    try:
        from numcodecs import blosc

        blosc.set_nthreads(1)
    except ImportError:
        pass


def read_source(path: Path, limit: int) -> bytes:
    """The bytes of a source file, refusing (ImageTooLargeError) files over ``limit`` bytes unread."""
    from . import jpeg

    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0  # let read_bytes name the problem
    if size > limit:
        raise ImageTooLargeError(f"file of {size} bytes is over the {limit}-byte limit", path)
    return jpeg.read_bytes(path)


def read_headers_task(task: dict[str, Any]) -> list[Optional[dict[str, Any]]]:
    """Plan-phase task: for each relative path, None when its header is usable, else a failure record."""
    from . import jpeg

    root = Path(task["root"])
    out: list[Optional[dict[str, Any]]] = []
    for rel in task["files"]:
        path = root / rel
        try:
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size > task["max_file_bytes"]:
                        raise ImageTooLargeError(
                            f"file of {size} bytes is over the {task['max_file_bytes']}-byte limit", path)
                    data = f.read(HEADER_PREFIX_BYTES)
                    rest = f.read(1)
            except FileNotFoundError:
                raise SourceError("no such file", path) from None
            except OSError as exc:
                raise SourceError(f"cannot read: {exc.strerror or exc}", path) from None
            try:
                jpeg.read_header(data, path=path, max_pixels=task["max_pixels"])
            except (NotAJpegError, UnsupportedJpegError, ImageTooLargeError):
                raise
            except JdctError:
                if not rest:
                    raise
                # the header did not fit in the prefix (large EXIF/ICC): parse the whole file
                jpeg.read_header(read_source(path, task["max_file_bytes"]), path=path,
                                 max_pixels=task["max_pixels"])
            out.append(None)
        except JdctError as exc:
            out.append(_failure(rel, exc, "plan"))
    return out


def image_rng(seed: int, split_id: int, view: int, image_index: int) -> np.random.Generator:
    """The generator of every random draw made for one image in one view."""
    return np.random.default_rng([seed, split_id, view, image_index])


def sample_order(seed: int, split_id: int, view: int, num_samples: int) -> np.ndarray:
    """int64 ``(N,)``: image index of each sample of the view (a seeded permutation)."""
    return np.random.default_rng([seed, split_id, view, PERMUTATION_KEY]).permutation(num_samples)


def sample_box(rng: np.random.Generator, train: bool, width: int, height: int, size: int):
    """Crop box ``(x, y, w, h)`` (source pixels) of a train (random) or val (centre) sample."""
    from .transforms import center_crop_box, random_resized_crop_box

    if train:
        return random_resized_crop_box(rng, width, height)
    return center_crop_box(width, height, size)


def convert_image(data: bytes, path, *, train: bool, rng: np.random.Generator, opts: ConvertOptions):
    """One image to one sample: ``(y, cb, cr, box)`` in store layout (int16 planes, box float tuple)."""
    from . import jpeg
    from .dct import crop_coefficients
    from .transforms import DCT_EIGHTHS, DCT_EIGHTHS_VAL, crop_to_rgb, oriented_size

    header = jpeg.read_header(data, path=path, max_pixels=opts.max_pixels)
    width, height = header["width"], header["height"]
    orientation = 1
    if opts.exif == "apply":
        orientation = jpeg.exif_orientation(header.get("exif")) or 1
    ow, oh = oriented_size(width, height, orientation)
    box = sample_box(rng, train, ow, oh, opts.size)
    rgb = crop_to_rgb(data, width, height, box, opts.size, exact=opts.exact_decode, orientation=orientation,
                      max_pixels=opts.max_pixels, path=path, scalings=DCT_EIGHTHS if train else DCT_EIGHTHS_VAL)
    y, cb, cr, _ = crop_coefficients(rgb, opts.quality, opts.fdct)
    return y, cb, cr, box


def convert_shard_task(task: dict[str, Any]) -> dict[str, Any]:
    """Convert-phase task: build and write one whole shard of every array of one split/view.

    ``task``: out, root, split, split_id, view, shard, start, stop, options (dict), train (bool),
    stats (bool), quant (luma, chroma lists), items [(image_index, relpath, label)] in sample order.
    Returns the completion marker: sums / sums of squares (float64 lists, (3, 64)), block counts,
    converted count and failures. Writes the marker file last.
    """
    import zarr

    opts = ConvertOptions(**task["options"])
    out, root, view = Path(task["out"]), Path(task["root"]), task["view"]
    n = task["stop"] - task["start"]
    s8, s16 = opts.size // 8, opts.size // 16
    y = np.zeros((n, 64, s8, s8), np.int16)
    cb = np.zeros((n, 64, s16, s16), np.int16)
    cr = np.zeros((n, 64, s16, s16), np.int16)
    label = np.full(n, -1, np.int32)
    image = np.zeros(n, np.int32)
    box = np.zeros((n, 4), np.float32)
    q_luma = np.asarray(task["quant"][0], np.float64)
    q_chroma = np.asarray(task["quant"][1], np.float64)
    sums = np.zeros((3, 64), np.float64)
    sumsq = np.zeros((3, 64), np.float64)
    failures = []
    converted = 0
    for k, (image_index, rel, lab) in enumerate(task["items"]):
        image[k] = image_index
        path = root / rel
        rng = image_rng(opts.seed, task["split_id"], view, image_index)
        try:
            data = read_source(path, opts.max_file_bytes)
            yk, cbk, crk, bk = convert_image(data, path, train=task["train"], rng=rng, opts=opts)
        except (JdctError, ValueError, OSError) as exc:  # bad data must never stop the other images
            failures.append(_failure(rel, exc, "convert", view))
            if task.get("fail_fast"):
                break
            continue
        y[k], cb[k], cr[k] = yk, cbk, crk
        box[k] = bk
        label[k] = lab
        converted += 1
    if task["stats"]:
        # Integer sums over the whole shard are exact and cheap (failed samples, all zero, add
        # nothing); for 1,024-sample shards at S=224 they stay below 2**53, so float64 holds them
        # exactly until the dequantization scale is applied.
        for c, (plane, q) in enumerate(((y, q_luma), (cb, q_chroma), (cr, q_chroma))):
            flat = plane.reshape(n, 64, -1)
            sums[c] = flat.sum(axis=(0, 2), dtype=np.int64).astype(np.float64) * q
            sumsq[c] = np.einsum("ncp,ncp->c", flat, flat, dtype=np.int64).astype(np.float64) * q * q
    result = {
        "split": task["split"], "view": view, "shard": task["shard"], "start": task["start"],
        "stop": task["stop"], "converted": converted, "failures": failures,
        "sums": sums.tolist(), "sumsq": sumsq.tolist(),
        "blocks": [converted * s8 * s8, converted * s16 * s16, converted * s16 * s16],
    }
    if task.get("fail_fast") and failures:
        return result  # nothing written: the conversion stops
    sl = (view, slice(task["start"], task["stop"]))
    try:
        for name, block in (("y", y), ("cb", cb), ("cr", cr), ("label", label), ("image", image), ("box", box)):
            arr = zarr.open_array(os.fspath(out / task["split"] / name), mode="r+")
            arr[sl] = block
        atomic_write_json(_marker_path(out, task["split"], view, task["shard"]), result)
    except OSError as exc:
        # returned, not raised: the error crosses process (and Dask) boundaries as plain data
        err = _write_error(exc, out)
        return {**result, "write_error": {"reason": err.reason, "path": err.path}}
    return result


def _marker_path(out: Path, split: str, view: int, shard: int) -> Path:
    return out / st.PROGRESS_DIR / f"{split}-v{view}-s{shard}.json"


# ------------------------------------------------------------------------------------------------
# Runners: in-process, process pool, Dask
# ------------------------------------------------------------------------------------------------

class _InProcess:
    def map_unordered(self, fn, tasks: Iterable) -> Iterator:
        for t in tasks:
            yield fn(t)

    def stop(self, kill: bool = False, progress: Optional[ProgressFn] = None) -> None:
        pass


class _Pool:
    def __init__(self, workers: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # forkserver/spawn, never fork: zarr runs an asyncio loop in a thread that fork would copy
        # in an unusable state.
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method),
                                            initializer=_worker_init)

    def map_unordered(self, fn, tasks: Iterable) -> Iterator:
        from concurrent.futures import as_completed

        self.futures = [self.executor.submit(fn, t) for t in tasks]
        for fut in as_completed(self.futures):
            yield fut.result()

    def stop(self, kill: bool = False, progress: Optional[ProgressFn] = None) -> None:
        """Shut the pool down. ``kill`` (Ctrl-C, errors): drop queued tasks and let the running
        ones finish their shard (their markers keep them); a second Ctrl-C terminates them (their
        shards have no marker and will be redone)."""
        from concurrent.futures import wait

        if kill:
            # Cancel here, not through shutdown(cancel_futures=True): the executor's thread cancels
            # asynchronously and wait() would never see those futures finish.
            running = [f for f in getattr(self, "futures", []) if not f.cancel() and not f.done()]
            if running and progress:
                progress("stopping", 0, len(running))
            try:
                wait(running)
            except KeyboardInterrupt:
                for proc in list((getattr(self.executor, "_processes", None) or {}).values()):
                    proc.terminate()
        self.executor.shutdown(wait=True, cancel_futures=True)
        # Drop the executor now: an error's traceback keeps this object alive until exit.
        self.executor = None
        self.futures = []


class _Dask:
    def __init__(self, address: str):
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("--dask-scheduler needs dask[distributed] (pip install 'jdct[dask]')") from None
        try:
            self.client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot connect to the Dask scheduler at {address}: {exc}") from None
        self.futures = []

    def map_unordered(self, fn, tasks: Iterable) -> Iterator:
        from distributed import as_completed

        self.futures = [self.client.submit(fn, t, pure=False) for t in tasks]
        for fut in as_completed(self.futures):
            yield fut.result()

    def stop(self, kill: bool = False, progress: Optional[ProgressFn] = None) -> None:
        if self.futures:
            self.client.cancel(self.futures)
        self.client.close()


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------------
# Planning and resuming
# ------------------------------------------------------------------------------------------------

def _prepare_out(out: Path, overwrite: bool) -> tuple[str, Optional[dict[str, Any]]]:
    """Inspect OUT: ("fresh", None), ("resume", saved plan) or ("complete", attrs["jdct"]).

    A conversion creates ``OUT/.jdct-progress/`` before anything else and removes it last, so a
    folder holding it is ours to resume or restart. Anything else that is not empty is refused
    (ConfigError) unless it is a jdct store (complete: "complete"); ``overwrite`` deletes OUT only
    when it is a Zarr store or one of ours.
    """
    if not out.exists():
        return "fresh", None
    if not out.is_dir():
        raise ConfigError("exists and is not a folder; choose another OUT", out)
    if not any(out.iterdir()):
        return "fresh", None
    ours = (out / st.PROGRESS_DIR).is_dir()
    is_store = (out / "zarr.json").is_file()
    if overwrite:
        if not (is_store or ours):
            raise ConfigError("refusing to --overwrite a folder that is not a Zarr store", out)
        return "fresh", None  # deleted by _start_fresh
    if is_store:
        try:
            return "complete", st.read_metadata(out).meta
        except IncompleteStoreError:
            pass
        except StoreError:
            if not ours:
                raise ConfigError("exists and is not a jdct store; choose another OUT or pass --overwrite", out) \
                    from None
    if ours:
        plan_path = out / st.PROGRESS_DIR / "plan.json"
        if plan_path.is_file():
            import json

            try:
                return "resume", json.loads(plan_path.read_text())
            except (OSError, ValueError) as exc:
                raise StoreError(f"unreadable conversion plan ({exc}); pass --overwrite to start again",
                                 plan_path) from None
        return "fresh", None  # interrupted before its plan was saved: nothing finished, start over
    raise ConfigError("exists and is not a jdct store (or its .jdct-progress folder was deleted); choose another "
                      "OUT or pass --overwrite", out)


def _start_fresh(out: Path) -> None:
    """Empty OUT (already checked to be ours, a store under --overwrite, or empty) and mark it ours."""
    if out.exists():
        shutil.rmtree(out)
    (out / st.PROGRESS_DIR).mkdir(parents=True)


class _WriteGuard:
    """Turn OS errors while writing the store (disk full, read-only...) into StoreError naming the file."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, OSError) and not isinstance(exc, JdctError):
            raise _write_error(exc, self.out) from None
        return False


def _write_error(exc: OSError, out: Path) -> StoreError:
    where = exc.filename or out
    return StoreError(f"cannot write the store: {exc.strerror or exc}; free the problem and run the same "
                      "`jdct convert` again to resume", where)


def plan_conversion(src, out, opts: ConvertOptions, *, labels=None, on_error: str = "record",
                    runner=None, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Phase 1: discover the source, read every header (via ``runner``), return the plan dict.

    Plan: {"options", "root", "classes", "quant": [luma, chroma], "splits": {name: {"discovered":
    [files], "discovered_labels": [ints], "files": [planned files], "labels": [ints], "views": V,
    "failures": [records]}}}.
    """
    source = discover(src, labels)
    runner = runner or _InProcess()
    all_files = [(name, rel) for name, sp in source.splits.items() for rel in sp.files]
    batches = [
        {"root": os.fspath(source.root), "files": [rel for _, rel in all_files[i:i + HEADER_BATCH]],
         "max_pixels": opts.max_pixels, "max_file_bytes": opts.max_file_bytes, "start": i}
        for i in range(0, len(all_files), HEADER_BATCH)
    ]
    verdicts: list[Optional[dict]] = [None] * len(all_files)
    done = 0
    if progress:
        progress("plan", 0, len(all_files))
    for start, res in runner.map_unordered(_header_batch_with_start, batches):
        verdicts[start:start + len(res)] = res
        if on_error == "fail":
            bad = next((r for r in res if r is not None), None)
            if bad is not None:
                raise _error_from_record(bad, source.root)
        done += len(res)
        if progress:
            progress("plan", done, len(all_files))
    splits: dict[str, Any] = {}
    k = 0
    for name, sp in source.splits.items():
        rec = {"discovered": list(sp.files), "discovered_labels": list(sp.labels), "files": [], "labels": [],
               "views": opts.views if name == "train" else 1, "failures": []}
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
        splits[name]["failures"].append({"file": rec["file"], "reason": rec["reason"], "kind": "unreadable",
                                         "stage": "plan"})
        splits[name]["skipped"] = splits[name].get("skipped", 0) + 1
    luma, chroma = (table.tolist() for table in ijg_tables(opts.quality))
    return {"options": asdict(opts), "software": _software_versions(), "root": os.fspath(Path(src).resolve()),
            "classes": source.classes, "quant": [luma, chroma], "splits": splits}


def _software_versions() -> dict[str, str]:
    """jdct's and libjpeg's versions: a resumed conversion must run the code that began it, or the
    shards written before and after the resume could hold differently computed samples."""
    from . import __version__
    from .jpeg import libjpeg_version

    return {"jdct": __version__, "libjpeg": libjpeg_version() or "unknown"}


def _header_batch_with_start(batch: dict[str, Any]):
    """Plan-phase task for runners: ``(batch start, read_headers_task(batch))``."""
    return batch["start"], read_headers_task(batch)


def _error_from_record(rec: dict[str, Any], root: Path) -> JdctError:
    kinds = {"not-a-jpeg": NotAJpegError, "too-large": ImageTooLargeError, "unsupported": UnsupportedJpegError,
             "unreadable": SourceError}
    cls = kinds.get(rec["kind"])
    from .errors import JpegError

    cls = cls or JpegError
    return cls(rec["reason"], root / rec["file"])


def _shard_tasks(out: Path, plan: dict[str, Any], fail_fast: bool) -> list[dict[str, Any]]:
    opts = ConvertOptions(**plan["options"])
    stats_split = "train" if "train" in plan["splits"] else next(iter(plan["splits"]))
    tasks = []
    for name, sp in plan["splits"].items():
        n = len(sp["files"])
        split_id = SPLIT_IDS.get(name, len(SPLIT_IDS))
        for view in range(sp["views"]):
            order = sample_order(opts.seed, split_id, view, n)
            for shard, (s0, s1) in enumerate(st.shard_ranges(n, opts.shard_samples)):
                items = [(int(i), sp["files"][i], int(sp["labels"][i])) for i in order[s0:s1]]
                tasks.append({
                    "out": os.fspath(out), "root": plan["root"], "split": name, "split_id": split_id,
                    "view": view, "shard": shard, "start": s0, "stop": s1, "options": plan["options"],
                    "train": name == "train", "stats": name == stats_split, "quant": plan["quant"],
                    "items": items, "fail_fast": fail_fast,
                })
    return tasks


def _load_marker(out: Path, task: dict[str, Any]) -> Optional[dict[str, Any]]:
    import json

    path = _marker_path(out, task["split"], task["view"], task["shard"])
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable marker: redo the shard


def _metadata(plan: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
    from . import __version__
    from .jpeg import libjpeg_version
    from .transforms import DCT_EIGHTHS, DCT_EIGHTHS_VAL, RATIO_RANGE, RESIZE_FILTER, SCALE_RANGE, val_resize_size

    opts = ConvertOptions(**plan["options"])
    markers = sorted(markers, key=lambda m: (m["split"], m["view"], m["shard"]))
    stats_split = "train" if "train" in plan["splits"] else next(iter(plan["splits"]))
    splits = {}
    for name, sp in plan["splits"].items():
        failures = list(sp["failures"])
        sample_failures = 0
        for m in markers:
            if m["split"] == name:
                failures.extend(m["failures"])
                sample_failures += len(m["failures"])
        failed_files = {f["file"] for f in failures}
        splits[name] = {
            "views": sp["views"], "num_samples": len(sp["files"]), "files": sp["files"],
            "file_labels": sp["labels"], "failures": failures,
            "counts": {"files": len(sp["discovered"]) + sp.get("skipped", 0),
                       "converted": len(sp["discovered"]) + sp.get("skipped", 0) - len(failed_files),
                       "failed": len(failed_files), "failed_samples": sample_failures},
        }
    sums = np.zeros((3, 64))
    sumsq = np.zeros((3, 64))
    blocks = np.zeros(3)
    for m in markers:
        if m["split"] == stats_split:
            sums += np.asarray(m["sums"])
            sumsq += np.asarray(m["sumsq"])
            blocks += np.asarray(m["blocks"], np.float64)
    stats: dict[str, Any] = {"split": stats_split}
    for c, name in enumerate(st.COEFFICIENT_ARRAYS):
        count = max(blocks[c], 1.0)
        mean = sums[c] / count
        var = np.maximum(sumsq[c] / count - mean ** 2, 0.0)
        stats[name] = {"mean": mean.tolist(), "std": np.sqrt(var).tolist()}
    return {
        "format": st.FORMAT_NAME, "format_version": st.FORMAT_VERSION,
        "jdct_version": __version__, "libjpeg_version": libjpeg_version() or "unknown",
        "size": opts.size, "quality": opts.quality, "subsampling": "4:2:0", "coefficient_order": "natural",
        "quant_tables": {"luma": plan["quant"][0], "chroma": plan["quant"][1]},
        "classes": plan["classes"], "chunk_samples": opts.chunk_samples, "shard_samples": opts.shard_samples,
        "codec": st.codec_description(), "seed": opts.seed,
        "transform": {
            "train": {"name": "RandomResizedCrop", "scale": list(SCALE_RANGE), "ratio": list(RATIO_RANGE),
                      "attempts": 10, "fallback": "centre crop clamped to the ratio bounds",
                      "views": opts.views},
            "val": {"name": "Resize+CenterCrop", "resize_shorter_side": val_resize_size(opts.size),
                    "center_crop": opts.size},
            "resize_filter": f"Pillow {RESIZE_FILTER} (antialiased)",
            "exif": opts.exif, "exact_decode": opts.exact_decode,
            "dct_scaling": not opts.exact_decode, "roi_decode": not opts.exact_decode,
            "dct_scaling_eighths": {} if opts.exact_decode else {"train": list(DCT_EIGHTHS),
                                                                   "val": list(DCT_EIGHTHS_VAL)},
            "max_pixels": opts.max_pixels,
        },
        "source": plan["root"],
        "convert_options": plan["options"],
        "splits": splits,
        "stats": stats,
    }


# ------------------------------------------------------------------------------------------------
# The entry point
# ------------------------------------------------------------------------------------------------

def convert(src, out, *, options: Optional[ConvertOptions] = None, labels=None, workers: Optional[int] = None,
            on_error: str = "record", overwrite: bool = False, dask_scheduler: Optional[str] = None,
            progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Convert the JPEG tree ``src`` into the store ``out`` (resuming a partial one); see the module doc.

    ``workers``: processes (default: all cores; 1 runs in this process). ``on_error``: "record"
    (default) or "fail" (raise at the first failing file). Returns the summary dict: images,
    converted, failed, failures_by_kind, samples, bytes_on_disk, bytes_per_sample,
    compression_ratio (raw int16 coefficient bytes / their bytes on disk), seconds,
    images_per_second, resumed_shards, already_complete (OUT was finished before: nothing done), out. Ctrl-C stops the workers, keeps finished shards and
    raises IncompleteStoreError saying how to resume.
    """
    opts = options or ConvertOptions()
    opts.validate()
    if on_error not in ("record", "fail"):
        raise ConfigError(f"--on-error must be 'record' or 'fail', got {on_error!r}")
    out = Path(out)
    src = Path(src)
    if not src.exists():
        from .errors import SourceNotFoundError

        raise SourceNotFoundError("no such source folder", src)
    state, saved = _prepare_out(out, overwrite)
    if state == "complete":
        # A finished store: nothing to do when it was made with these options (e.g. a rerun after
        # a kill that came between the metadata write and the clean-up), else refuse.
        if saved.get("convert_options") != asdict(opts):
            raise ConfigError("a complete store made with other options is here; pass --overwrite to convert "
                              "again", out)
        if saved.get("source") != os.fspath(src.resolve()):
            raise ConfigError(f"a complete store converted from another source ({saved.get('source')}) is here; "
                              "pass --overwrite to convert again", out)
        shutil.rmtree(out / st.PROGRESS_DIR, ignore_errors=True)
        return summarize(out, saved, seconds=0.0, convert_seconds=0.0, new_samples=0, already_complete=True,
                         resumed_shards=sum(sp["views"] * len(st.shard_ranges(sp["num_samples"], opts.shard_samples))
                                            for sp in saved["splits"].values()))
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")

    if dask_scheduler:
        runner = _Dask(dask_scheduler)
    elif workers == 1:
        runner = _InProcess()
    else:
        runner = _Pool(workers)
    t_start = time.perf_counter()
    done_shards = total_shards = 0
    tasks: list[dict[str, Any]] = []
    try:
        if state == "resume":
            plan = saved
            if plan["options"] != asdict(opts):
                raise ConfigError(
                    "an interrupted conversion with different options is here: rerun it with the same "
                    "options to resume, or pass --overwrite to start again", out)
            began_with = plan.get("software", {})
            if began_with != _software_versions():
                raise ConfigError(
                    f"this interrupted conversion was begun by jdct {began_with.get('jdct', '(unknown)')} with "
                    f"libjpeg-turbo {began_with.get('libjpeg', '(unknown)')}; resuming it with other versions "
                    "could mix differently computed samples: pass --overwrite to start again", out)
            fresh = discover(src, labels)
            same = set(fresh.splits) == set(plan["splits"]) and all(
                fresh.splits[n].files == plan["splits"][n]["discovered"]
                and fresh.splits[n].labels == plan["splits"][n]["discovered_labels"] for n in fresh.splits)
            if not same:
                raise ConfigError(
                    "the source files changed since this conversion started; pass --overwrite to start again", out)
            # the same files, maybe at a new place (SRC moved or given another way): read them there
            plan = {**plan, "root": os.fspath(src.resolve())}
        else:
            plan = plan_conversion(src, out, opts, labels=labels, on_error=on_error, runner=runner,
                                   progress=progress)
            with _WriteGuard(out):
                _start_fresh(out)
                st.create_store(out)
                for name, sp in plan["splits"].items():
                    st.create_split_arrays(out, name, sp["views"], len(sp["files"]), opts.size,
                                           opts.chunk_samples, opts.shard_samples)
                atomic_write_json(out / st.PROGRESS_DIR / "plan.json", plan)

        tasks = _shard_tasks(out, plan, on_error == "fail")
        total_shards = len(tasks)
        total_samples = sum(t["stop"] - t["start"] for t in tasks)
        markers, todo = [], []
        for t in tasks:
            m = _load_marker(out, t)
            (markers.append(m) if m is not None else todo.append(t))
        resumed = len(markers)
        done_shards = resumed
        done_samples = sum(m["stop"] - m["start"] for m in markers)
        if progress:
            progress("convert", done_samples, total_samples)
        t_convert = time.perf_counter()
        new_samples = 0
        for res in runner.map_unordered(convert_shard_task, todo):
            if "write_error" in res:
                err = res["write_error"]
                raise StoreError(err["reason"], err["path"])
            if on_error == "fail" and res["failures"]:
                rec = res["failures"][0]
                raise _error_from_record(rec, Path(plan["root"]))
            markers.append(res)
            done_shards += 1
            n = res["stop"] - res["start"]
            done_samples += n
            new_samples += n
            if progress:
                progress("convert", done_samples, total_samples)
        convert_seconds = time.perf_counter() - t_convert
    except KeyboardInterrupt:
        runner.stop(kill=True, progress=progress)
        if not (out / st.PROGRESS_DIR).is_dir():
            # stopped while reading headers: OUT was not touched, so there is nothing to resume
            raise IncompleteStoreError(
                "interrupted while reading the image headers, before anything was written; run the same "
                "`jdct convert` command to start again", out) from None
        done_shards = sum(1 for t in tasks if _load_marker(out, t) is not None)
        raise IncompleteStoreError(
            f"interrupted: {done_shards} of {total_shards or '?'} shards are finished and kept; run the same "
            "`jdct convert` command again to resume", out) from None
    except BaseException:
        if not isinstance(runner, _InProcess):
            runner.stop(kill=True)
        raise
    if not isinstance(runner, _InProcess):
        runner.stop()

    meta = _metadata(plan, markers)
    with _WriteGuard(out):
        st.write_metadata(out, meta)
    shutil.rmtree(out / st.PROGRESS_DIR, ignore_errors=True)
    return summarize(out, meta, seconds=time.perf_counter() - t_start, convert_seconds=convert_seconds,
                     new_samples=new_samples, resumed_shards=resumed)


def summarize(out: Path, meta: dict[str, Any], *, seconds: float, convert_seconds: float, new_samples: int,
              resumed_shards: int, already_complete: bool = False) -> dict[str, Any]:
    """The end-of-run summary (see :func:`convert`)."""
    size = meta["size"]
    per_sample_raw = st.raw_sample_bytes(size)
    samples = sum(sp["views"] * sp["num_samples"] for sp in meta["splits"].values())
    coef_bytes = sum(st.dir_bytes(out / split / a) for split in meta["splits"] for a in st.COEFFICIENT_ARRAYS)
    total_bytes = st.dir_bytes(out)
    kinds: Counter = Counter()
    images = converted = failed = 0
    for sp in meta["splits"].values():
        images += sp["counts"]["files"]
        converted += sp["counts"]["converted"]
        failed += sp["counts"]["failed"]
        seen = set()
        for f in sp["failures"]:
            if f["file"] not in seen:
                seen.add(f["file"])
                kinds[f.get("kind", "other")] += 1
    return {
        "out": os.fspath(out), "images": images, "converted": converted, "failed": failed,
        "failures_by_kind": dict(sorted(kinds.items())),
        "splits": {n: {"views": sp["views"], "num_samples": sp["num_samples"], **sp["counts"]}
                   for n, sp in meta["splits"].items()},
        "samples": samples, "bytes_on_disk": total_bytes,
        "bytes_per_sample": total_bytes / samples if samples else math.nan,
        "compression_ratio": (per_sample_raw * samples / coef_bytes) if coef_bytes else math.nan,
        "seconds": seconds, "images_per_second": new_samples / convert_seconds if convert_seconds > 0 else math.nan,
        "resumed_shards": resumed_shards, "already_complete": already_complete,
    }
