"""The work done in worker processes (or Dask workers): reading headers, converting one shard.

Tasks and results are frozen dataclasses of plain data (picklable for process pools and Dask);
a worker never raises for bad source data or a write failure, it returns them.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from numcodecs import blosc

from .. import jpeg
from ..errors import ImageTooLargeError, JdctError, NotAJpegError, SourceError, UnsupportedJpegError
from ..store import TREATMENTS, Failure, ProgressFolder, QuantTables, ShardMarker, StoreLocation, write_shard
from ..transforms import convert_image, image_rng
from .failures import failure
from .images import store_image
from .lifeline import still_owner, watch_lifeline
from .options import ConvertOptions

#: Bytes read to parse a header in the plan phase (the whole file when the header is longer): on
#: ImageNet's originals 16 KiB holds 97% of the headers (the rest carry big EXIF/ICC blocks), so
#: planning reads ~1/5 of the data instead of all of it twice.
HEADER_PREFIX_BYTES = 1 << 14

# Descriptors a pool worker keeps open for its whole life (OUT's lock: see lifeline.OutLock).
_kept_fds: list[int] = []


def worker_init(lifeline=None, lock=None, environ: Optional[dict] = None) -> None:
    """Initializer of a pool worker process: die with the conversion (``lifeline``, an fd from
    :meth:`Lifeline.token`), share OUT's lock (``lock``), take the parent's environment as it is
    now (``environ``), leave Ctrl-C to the parent, and keep Blosc to one thread."""
    if environ is not None:
        # A forkserver's children inherit the environment the server started with, which may be
        # older than the parent's (credentials or an endpoint set since, by a program or a test).
        os.environ.clear()
        os.environ.update(environ)
    if lifeline is not None:
        watch_lifeline(lifeline)
    if lock is not None:
        _kept_fds.append(lock)
    # Workers leave Ctrl-C to the parent, which stops them; a worker dying mid-task would only
    # make the pool report a confusing BrokenProcessPool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One process per core already: Blosc's own threads would only oversubscribe the cores
    # (its output does not depend on the thread count).
    blosc.set_nthreads(1)


@dataclass(frozen=True)
class HeaderTask:
    """Plan phase: check the headers of ``files`` (relative to ``root``), the ``start``-th file on."""

    root: str
    files: tuple[str, ...]
    start: int
    max_pixels: int
    max_file_bytes: int


def read_headers(task: HeaderTask) -> tuple[int, list[Optional[Failure]]]:
    """``(task.start, [None when the file's header is usable, else its failure record])``."""
    root = Path(task.root)
    out: list[Optional[Failure]] = []
    for rel in task.files:
        try:
            _check_header(root / rel, task.max_pixels, task.max_file_bytes)
            out.append(None)
        except JdctError as exc:
            out.append(failure(rel, exc, "plan"))
    return task.start, out


def _check_header(path: Path, max_pixels: int, max_file_bytes: int) -> None:
    try:
        with open(path, "rb") as f:
            jpeg.check_file_size(os.fstat(f.fileno()).st_size, path, max_bytes=max_file_bytes)
            data = f.read(HEADER_PREFIX_BYTES)
            rest = f.read(1)
    except FileNotFoundError:
        raise SourceError("no such file", path) from None
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or exc}", path) from None
    try:
        jpeg.read_header(data, path=path, max_pixels=max_pixels)
    except (NotAJpegError, UnsupportedJpegError, ImageTooLargeError):
        raise
    except JdctError:
        if not rest:
            raise
        # the header did not fit in the prefix (large EXIF/ICC): parse the whole file
        jpeg.read_header(jpeg.read_bytes(path, max_bytes=max_file_bytes), path=path, max_pixels=max_pixels)


@dataclass(frozen=True)
class ShardTask:
    """Convert phase: samples ``start``..``stop`` of ``view`` of ``split`` (one shard of every
    array) of the store ``out`` (a local folder or an object store). ``items``: ``(image index,
    file relative to root, label)`` per sample, in sample order;
    ``train``: the train transform (else val); ``stats``: accumulate statistics; ``quant``: the
    tables of the coefficients; ``fail_fast``: stop at the first failure and write nothing; ``run``:
    the conversion that owns OUT (a worker of another one writes nothing); ``stats_stride`` (images
    layout): the images whose index is a multiple of it give the statistics (0: none)."""

    out: StoreLocation
    root: str
    split: str
    split_id: int
    view: int
    shard: int
    start: int
    stop: int
    options: ConvertOptions
    train: bool
    stats: bool
    quant: QuantTables
    items: tuple[tuple[int, str, int], ...]
    fail_fast: bool = False
    run: str = ""
    stats_stride: int = 0


@dataclass(frozen=True)
class ShardResult:
    """What a shard task returns: its marker (written unless ``write_error`` or ``not_written``),
    ``write_error`` ``(reason, path)`` when the store could not be written, ``not_written`` when
    nothing was written on purpose (``fail_fast`` with a failure, or OUT owned by another run)."""

    marker: ShardMarker
    write_error: Optional[tuple[str, Optional[str]]] = None
    not_written: Optional[str] = None


def convert_shard(task: ShardTask) -> ShardResult:
    """Build one whole shard of every array of one split/view in memory, write it (one write per
    array), then its completion marker. A file that fails keeps its sample: label -1, zeros (crops)
    or empty bytes (images)."""
    if task.options.layout == "images":
        return _images_shard(task)
    opts = task.options
    recipe = opts.recipe()
    layout = opts.array_layout()
    root, view = Path(task.root), task.view
    n = task.stop - task.start
    arrays = {spec.name: np.full((n,) + spec.sample_shape, spec.fill_value, spec.dtype) for spec in layout.arrays}
    failures: list[Failure] = []
    converted = 0
    for k, (image_index, rel, lab) in enumerate(task.items):
        arrays["image"][k] = image_index
        path = root / rel
        rng = image_rng(opts.seed, task.split_id, view, image_index)
        try:
            data = jpeg.read_bytes(path, max_bytes=opts.max_file_bytes)
            y, cb, cr, box = convert_image(data, path, train=task.train, rng=rng, opts=recipe)
        except (JdctError, ValueError, OSError) as exc:  # bad data must never stop the other images
            failures.append(failure(rel, exc, "convert", view))
            if task.fail_fast:
                break
            continue
        arrays["y"][k], arrays["cb"][k], arrays["cr"][k] = y, cb, cr
        arrays["box"][k] = box
        arrays["label"][k] = lab
        converted += 1
    marker = ShardMarker(split=task.split, view=view, shard=task.shard, start=task.start, stop=task.stop,
                         converted=converted, failures=tuple(failures),
                         **_statistics(arrays, task.quant, converted, opts.size, task.stats))
    return _finish(task, marker, arrays)


def _images_shard(task: ShardTask) -> ShardResult:
    """The images layout's shard: each file's stored JPEG (:func:`.images.store_image`) and its
    facts; the statistics from the recipe crops of the images ``task.stats_stride`` picks."""
    opts = task.options
    recipe = opts.recipe()
    layout = opts.array_layout()
    root, view = Path(task.root), task.view
    n = task.stop - task.start
    arrays = {spec.name: np.full((n,), spec.fill_value, object if spec.name == "jpeg" else spec.dtype)
              for spec in layout.arrays}
    failures: list[Failure] = []
    treatments = [0] * len(TREATMENTS)
    stored_bytes = source_bytes = converted = 0
    crops: dict[str, list] = {"y": [], "cb": [], "cr": []}
    for k, (image_index, rel, lab) in enumerate(task.items):
        arrays["image"][k] = image_index
        path = root / rel
        try:
            data = jpeg.read_bytes(path, max_bytes=opts.max_file_bytes)
            stored = store_image(data, path, opts)
            if task.stats and task.stats_stride and image_index % task.stats_stride == 0:
                # the crop a crops store of this source and seed holds for the image, made from
                # what the loader will read
                rng = image_rng(opts.seed, task.split_id, 0, image_index)
                y, cb, cr, _ = convert_image(stored.data, path, train=True, rng=rng, opts=recipe)
                for name, c in (("y", y), ("cb", cb), ("cr", cr)):
                    crops[name].append(c)
        except (JdctError, ValueError, OSError) as exc:  # bad data must never stop the other images
            failures.append(failure(rel, exc, "convert", view))
            if task.fail_fast:
                break
            continue
        arrays["jpeg"][k] = stored.data
        arrays["width"][k], arrays["height"][k] = stored.width, stored.height
        arrays["sampling"][k], arrays["treatment"][k] = stored.sampling, stored.treatment
        arrays["label"][k] = lab
        treatments[stored.treatment] += 1
        stored_bytes += len(stored.data)
        source_bytes += len(data)
        converted += 1
    stats_images = len(crops["y"])
    stacked = {name: (np.stack(c) if c else np.zeros((0, 64, 1, 1), np.int16)) for name, c in crops.items()}
    marker = ShardMarker(split=task.split, view=view, shard=task.shard, start=task.start, stop=task.stop,
                         converted=converted, failures=tuple(failures),
                         **_statistics(stacked, task.quant, stats_images, opts.size, stats_images > 0),
                         treatments=tuple(treatments), stored_bytes=stored_bytes, source_bytes=source_bytes,
                         stats_images=stats_images)
    return _finish(task, marker, arrays)


def _finish(task: ShardTask, marker: ShardMarker, arrays: dict[str, np.ndarray]) -> ShardResult:
    """Write the shard's arrays then its marker, unless told not to (see :class:`ShardResult`)."""
    failures = marker.failures
    if task.fail_fast and failures:
        return ShardResult(marker, not_written="stopped at the first failure")
    try:
        progress = ProgressFolder(task.out)
        if task.run and not still_owner(progress, task.run):
            return ShardResult(marker, not_written="another conversion owns OUT now")
        write_shard(task.out, task.split, task.view, task.start, task.stop, arrays)
        progress.write_marker(marker)
    except OSError as exc:
        # returned, not raised: the error crosses process (and Dask) boundaries as plain data. An
        # object store's failure (StorageError, after its retries) is already one line.
        if isinstance(exc, JdctError):
            return ShardResult(marker, write_error=(exc.reason, exc.path))
        return ShardResult(marker, write_error=(exc.strerror or str(exc), exc.filename))
    return ShardResult(marker)


def _statistics(arrays: dict[str, np.ndarray], quant: QuantTables, converted: int, size: int,
                enabled: bool) -> dict:
    """The marker's statistics fields: sums and sums of squares of the dequantized coefficients
    per plane and channel, and the 8x8 blocks they cover (zeros when not ``enabled``)."""
    sums = np.zeros((3, 64), np.float64)
    sumsq = np.zeros((3, 64), np.float64)
    if enabled:
        # Integer sums over the whole shard are exact and cheap (failed samples, all zero, add
        # nothing); for 1,024-sample shards at S=224 they stay below 2**53, so float64 holds them
        # exactly until the dequantization scale is applied.
        tables = quant.by_plane()
        for c, name in enumerate(("y", "cb", "cr")):
            flat = arrays[name].reshape(len(arrays[name]), 64, -1)
            q = np.asarray(tables[name], np.float64)
            sums[c] = flat.sum(axis=(0, 2), dtype=np.int64).astype(np.float64) * q
            sumsq[c] = np.einsum("ncp,ncp->c", flat, flat, dtype=np.int64).astype(np.float64) * q * q
    s8, s16 = size // 8, size // 16
    return {"sums": tuple(map(tuple, sums.tolist())), "sumsq": tuple(map(tuple, sumsq.tolist())),
            "blocks": (converted * s8 * s8, converted * s16 * s16, converted * s16 * s16)}
