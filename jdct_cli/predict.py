"""``jdct predict``: classify JPEG files with a trained checkpoint, thousands at a time.

Pipeline (:func:`iter_predictions`):

- a pool of ``threads`` reader threads takes the files in order, a bounded window ahead of the
  network: each reads its file and decodes it only as far as the network needs (``direct``: the
  file's own quantized coefficients, Huffman decoding only; otherwise the store's *val transform*:
  resize the shorter side to round(S/0.875), centre crop S, 4:2:0 coefficients at the store's
  quality, exactly what ``jdct convert`` stores for a val image). libjpeg runs with the GIL
  released, so the threads decode in parallel. Each then builds the model's input tensors on the
  CPU with :func:`jdct_cli.evaluate.model_inputs` (the loader's normalization);
- the calling thread groups ready samples by input shape (with ``direct`` every block-grid size
  is its own group: a network takes one size per batch), runs a group through the network when it
  holds ``batch_size`` samples (or when too many samples wait: then the group holding the oldest
  file goes, full or not), and yields one record per file **in input order**, each as soon as it
  and every file before it are done.

``direct`` is the paper's inference path: no IDCT, no resize, no re-encode; the network is fully
convolutional, so each image's own size is used. A file that cannot go direct (not YCbCr 4:2:0,
sides not multiples of 16, smaller than 32 pixels, larger than :data:`MAX_DIRECT_PIXELS`) takes the
val transform, and its record says why (``note``).

Records (``schemas/predict-record.v1.schema.json``, one JSON Lines line each with ``jdct predict
--jsonl``)::

    {"file": str, "mode": "direct"|"val-transform", "note": str|null,
     "top": [{"index": int, "class": str, "probability": float}, ...]}
    {"file": str, "error": str}                    a file that could not be used

A bad file (not a JPEG, corrupt, missing, unreadable...) is an error record, never fatal.
"""
from __future__ import annotations

import glob
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from . import jpeg
from .errors import CheckpointError, ConfigError, Interrupted, JdctError
from .evaluate import load_for_inference, model_inputs, read_class_names
from .transforms import SampleRecipe, convert_image

PREDICT_FORMAT = "jdct-predict"
FORMAT_VERSION = 1
#: Version of one predict record (a JSON Lines line of ``--jsonl``; schemas/predict-record.v1.schema.json).
RECORD_FORMAT_VERSION = 1
#: Largest image (pixels) fed to the network at its own size by ``direct``; larger files take the
#: val transform. The network's memory and time grow with the pixel count (16.8 Mpixels is ~330
#: times a 224x224 crop).
MAX_DIRECT_PIXELS = 4096 * 4096
#: Smallest side (pixels) fed direct: the pixel networks' stem needs 32.
MIN_DIRECT_SIDE = 32
#: Default samples per batch: on a CPU, larger batches gain little and delay the first results.
DEFAULT_BATCH_SIZE = 16

Progress = Optional[Callable[[dict], None]]


def default_threads() -> int:
    """Reader threads by default: the cores this process may use, at most 8 (decoding a file takes a
    small fraction of the network's time per image, so more rarely help)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


# ------------------------------------------------------------------------------------------------
# inputs: files, folders, globs, lists
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputError:
    """An input argument that names no file to classify (an empty folder, a pattern matching nothing):
    it becomes an error record in its place."""

    file: str
    reason: str


_GLOB_CHARS = set("*?[")


def expand_inputs(args: Sequence[os.PathLike | str] = (), files_from: Optional[Iterable[str]] = None
                  ) -> list[str | InputError]:
    """The files to classify, in order, from command-line arguments and a list of files.

    Each of ``args`` is a file (kept as given, even when missing: its record will say so), a folder
    (every image file under it, recursively, sorted by relative path, as ``jdct convert`` lists
    them) or a glob pattern (``photos/**/*.jpg``; sorted matches). ``files_from``: lines, one path
    each (blank lines skipped), taken literally. A folder without images or a pattern matching
    nothing becomes an :class:`InputError` in its place.
    """
    from .sources import _walk_images

    out: list[str | InputError] = []
    for arg in args:
        text = os.fspath(arg)
        path = Path(text)
        if path.is_dir():
            found = _walk_images(path)
            if not found:
                out.append(InputError(text, "no image files in this folder"))
            out.extend(os.fspath(p) for p in found)
        elif not path.exists() and _GLOB_CHARS & set(text):
            matches = sorted(m for m in glob.glob(text, recursive=True) if not os.path.isdir(m))
            if not matches:
                out.append(InputError(text, "no file matches this pattern"))
            out.extend(matches)
        else:
            out.append(text)
    for line in files_from or ():
        line = line.rstrip("\r\n")
        if line.strip():
            out.append(line)
    return out


def read_file_list(path: os.PathLike | str) -> list[str]:
    """The lines of a ``--files-from`` file ('-': standard input). ConfigError when unreadable."""
    if os.fspath(path) == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError("no such file list", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"unreadable file list ({exc})", path) from None


# ------------------------------------------------------------------------------------------------
# one file -> model inputs
# ------------------------------------------------------------------------------------------------


def direct_refusal(header: dict) -> Optional[str]:
    """Why a JPEG's own coefficients cannot be fed to the network as they are (None when they can).

    They can when the file is 3-component YCbCr 4:2:0 (Y 2x2, Cb and Cr 1x1), both sides are
    multiples of 16 (the block grids are then exactly (H/8, W/8) and (H/16, W/16), no padding
    blocks), at least :data:`MIN_DIRECT_SIDE` and at most :data:`MAX_DIRECT_PIXELS` pixels.
    """
    comps = header["components"]
    if header.get("num_components") != 3 or header.get("color_space") != "YCbCr":
        return f"it is {header.get('color_space')} with {header.get('num_components')} component(s), not YCbCr"
    factors = [(c["h"], c["v"]) for c in comps]
    if factors != [(2, 2), (1, 1), (1, 1)]:
        return f"its chroma subsampling is {jpeg.sampling_name(comps, header.get('color_space'))}, not 4:2:0"
    w, h = header["width"], header["height"]
    if w % 16 or h % 16:
        return f"its size {w}x{h} is not a multiple of 16 on both sides"
    if min(w, h) < MIN_DIRECT_SIDE:
        return f"its size {w}x{h} is below {MIN_DIRECT_SIDE} pixels on a side"
    if w * h > MAX_DIRECT_PIXELS:
        return (f"its size {w}x{h} ({w * h / 1e6:.1f} Mpixels) is more than the {MAX_DIRECT_PIXELS / 1e6:.1f} "
                "Mpixels fed to the network at their own size")
    return None


def _val_coefficients(data: bytes, path, store: dict):
    """The store's val transform of one JPEG: int16 (64, S/8, S/8), (64, S/16, S/16) x2 and
    the quantization tables used (uint16 (3, 64): luma, chroma, chroma)."""
    transform = store.get("transform") or {}
    opts = SampleRecipe(size=int(store["size"]), quality=int(store.get("quality", 100)),
                        exif=transform.get("exif", "ignore"), exact_decode=bool(transform.get("exact_decode", False)))
    y, cb, cr, _box = convert_image(data, path, train=False, rng=np.random.default_rng(0), opts=opts)
    tables = store.get("quant_tables") or {}
    quant = np.array([tables["luma"], tables["chroma"], tables["chroma"]], dtype=np.uint16)
    return y, cb, cr, quant


def _direct_coefficients(data: bytes, path):
    """The file's own quantized coefficients in store layout and its quant tables (uint16 (3, 64))."""
    comps, quant, _warnings = jpeg.read_coefficients(data, path=path)
    tables = np.stack([quant[0], quant[1], quant[2]]).astype(np.uint16)
    y, cb, cr = (np.moveaxis(np.asarray(c), -1, 0) for c in comps[:3])
    return y, cb, cr, tables


@dataclass
class Prepared:
    """One file ready for the network: ``inputs`` float32 CPU tensors with batch dimension 1
    (``(y, cb, cr)`` or ``(x,)``), ``mode`` and ``note`` as in its record."""

    file: str
    mode: str
    note: Optional[str]
    inputs: tuple

    @property
    def key(self) -> tuple:
        """Samples with the same key can share a batch (same shape of every input)."""
        return tuple(tuple(t.shape[1:]) for t in self.inputs)


class Predictor:
    """A network ready to classify files: the model in eval mode on ``device``, what it takes
    (``kind``), the training store's facts (``store``: size, quality, quant tables, stats,
    transform) and the class names.

    Build it with :meth:`from_checkpoint`, or directly from a model (benchmarks). Thread-safe:
    :meth:`prepare` runs in reader threads; :meth:`run` in one thread.
    """

    def __init__(self, model, kind: str, store: dict, classes: Sequence[str], *, arch: str = "",
                 checkpoint: str = "", device: str | torch.device = "cpu", direct: bool = False, top_k: int = 5,
                 names: Optional[dict[str, str]] = None):
        if top_k < 1:
            raise ConfigError(f"top-k must be >= 1, not {top_k}", "--top-k")
        if "size" not in store or "quant_tables" not in store:
            raise CheckpointError("the checkpoint lacks the store facts (size, quant tables) predict needs",
                                  checkpoint or None)
        from .train import resolve_device

        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.eval().to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.kind = kind
        self.store = store
        self.classes = list(classes)
        self.names = dict(names or {})
        self.arch = arch
        self.checkpoint = checkpoint
        self.direct = bool(direct)
        self.top_k = int(top_k)

    @classmethod
    def from_checkpoint(cls, checkpoint: os.PathLike | str, *, device: str = "auto", direct: bool = False,
                        top_k: int = 5, class_names: Optional[os.PathLike | str | dict[str, str]] = None
                        ) -> "Predictor":
        """From a checkpoint file, a weights-only export or a RUN_DIR (its last.pt). Raises
        CheckpointError, SourceNotFoundError, ConfigError (top_k, class names)."""
        if top_k < 1:
            raise ConfigError(f"top-k must be >= 1, not {top_k}", "--top-k")
        payload, model, kind = load_for_inference(checkpoint)
        classes = list(payload["classes"])
        names = class_names_for(class_names, classes)
        return cls(model, kind, payload.get("store") or {}, classes, arch=payload["arch"],
                   checkpoint=os.fspath(checkpoint), device=device, direct=direct, top_k=top_k, names=names)

    def prepare(self, file: str) -> Prepared:
        """Read and decode ``file`` into model inputs (see the module docstring); JdctError naming it."""
        data = jpeg.read_bytes(file)
        mode, note = "val-transform", None
        if self.direct:
            header = jpeg.read_header(data, path=file)
            why = direct_refusal(header)
            if why is None:
                mode = "direct"
                y, cb, cr, quant = _direct_coefficients(data, file)
            else:
                note = f"--direct not possible: {why}; used the val transform"
        if mode == "val-transform":
            y, cb, cr, quant = _val_coefficients(data, file, self.store)
        with torch.inference_mode():
            inputs = model_inputs(y, cb, cr, quant, self.kind, self.store, "cpu")
        return Prepared(os.fspath(file), mode, note, tuple(inputs))

    def run(self, items: Sequence[Prepared]) -> list[dict[str, Any]]:
        """Records of ``items`` (same :attr:`Prepared.key`) after one batched forward pass."""
        count = len(items[0].inputs)
        batch = [torch.cat([it.inputs[j] for it in items]) for j in range(count)]
        with torch.inference_mode():
            if self.device.type == "cuda":
                batch = [t.pin_memory().to(self.device, non_blocking=True)
                         .contiguous(memory_format=torch.channels_last) for t in batch]
            elif self.device.type != "cpu":
                batch = [t.to(self.device) for t in batch]
            probs = torch.softmax(self.model(*batch).float(), dim=1)
            k = min(self.top_k, probs.shape[1])
            p, idx = probs.topk(k, dim=1)
        p, idx = p.cpu().tolist(), idx.cpu().tolist()
        records = []
        for it, ps, js in zip(items, p, idx):
            top = [{"index": int(j), "class": self.names.get(self.classes[j], self.classes[j]), "probability": float(q)}
                   for q, j in zip(ps, js)]
            records.append({"file": it.file, "mode": it.mode, "note": it.note, "top": top})
        return records


def class_names_for(class_names, classes: list) -> dict[str, str]:
    """The readable-name mapping for ``classes``; ConfigError when it names none of them."""
    if class_names is None:
        return {}
    source = None
    if not isinstance(class_names, dict):
        source = class_names
        class_names = read_class_names(class_names)
    names = dict(class_names)
    if names and not set(names) & set(classes):
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise ConfigError(f"none of its {len(names)} names is for a class of this checkpoint (its classes: {shown}): "
                          "is it the names file of another data set?", source or "--class-names")
    return names


# ------------------------------------------------------------------------------------------------
# the pipeline
# ------------------------------------------------------------------------------------------------


def _error(file: str, exc: BaseException) -> dict[str, str]:
    if isinstance(exc, JdctError):
        return {"file": file, "error": exc.reason}
    # a decoder or network failure nobody foresaw still names the file and stays one record
    return {"file": file, "error": f"unexpected error ({type(exc).__name__}: {exc})".splitlines()[0]}


def iter_predictions(predictor: Predictor, files: Sequence[str | InputError], *, batch_size: int = DEFAULT_BATCH_SIZE,
                     threads: Optional[int] = None, progress: Progress = None,
                     should_stop: Optional[Callable[[], bool]] = None) -> Iterator[dict[str, Any]]:
    """One record per entry of ``files``, in order, as soon as it and every earlier one are done.

    ``batch_size``: samples per forward pass; ``threads``: reader threads (default
    :func:`default_threads`). ``progress(event)``: {"event": "predict_start", "total"} once, then
    {"event": "predict_step", "step", "total"} per record. ``should_stop()`` is polled between
    files; when it turns true, reading stops and :class:`jdct_cli.errors.Interrupted` is raised
    (every record yielded before is complete). Memory: at most about ``2 * batch_size + 3 *
    threads`` decoded samples wait at any time.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, not {batch_size!r}", "--batch-size")
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, not {threads}", "--threads")
    files = list(files)
    total = len(files)
    window = batch_size + 2 * threads  # files being read ahead of the network
    max_waiting = 2 * batch_size  # decoded samples waiting in shape groups
    if progress is not None:
        progress({"event": "predict_start", "total": total})

    ready: dict[int, dict] = {}
    groups: dict[tuple, list[tuple[int, Prepared]]] = {}
    waiting = 0
    emitted = 0
    inflight: deque = deque()
    pending = iter(enumerate(files))
    exhausted = False

    def run_group(key) -> None:
        nonlocal waiting
        members = groups.pop(key)
        waiting -= len(members)
        items = [p for _, p in members]
        try:
            records = predictor.run(items)
        except (JdctError, RuntimeError, ValueError) as exc:  # e.g. out of memory on a huge direct image
            records = [_error(p.file, exc) for p in items]
        for (i, _), rec in zip(members, records):
            ready[i] = rec

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="jdct-predict")
    try:
        while True:
            if should_stop is not None and should_stop():
                raise Interrupted(f"stopped after {emitted} of {total} images; every record written is complete")
            while not exhausted and len(inflight) < window:
                try:
                    i, entry = next(pending)
                except StopIteration:
                    exhausted = True
                    break
                if isinstance(entry, InputError):
                    ready[i] = {"file": entry.file, "error": entry.reason}
                    continue
                inflight.append((i, entry, pool.submit(predictor.prepare, entry)))
            if inflight:
                i, entry, future = inflight.popleft()
                try:
                    item = future.result()
                except Exception as exc:  # noqa: BLE001  (one bad file is one error record)
                    ready[i] = _error(os.fspath(entry), exc)
                else:
                    groups.setdefault(item.key, []).append((i, item))
                    waiting += 1
                    if len(groups[item.key]) >= batch_size:
                        run_group(item.key)
            everything_read = exhausted and not inflight
            if groups and (everything_read or waiting >= max_waiting):
                # too many samples wait in partial groups (many image sizes), or nothing more comes:
                # run the group holding the oldest file, so that records keep flowing in order
                run_group(min(groups, key=lambda k: groups[k][0][0]))
            while emitted in ready:
                record = ready.pop(emitted)
                emitted += 1
                if progress is not None:
                    progress({"event": "predict_step", "step": emitted, "total": total})
                yield record
            if everything_read and not groups and not ready:
                break
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def predict_records(checkpoint: os.PathLike | str, images: Sequence[os.PathLike | str | InputError], *,
                    direct: bool = False, top_k: int = 5, device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
                    threads: Optional[int] = None, class_names=None, progress: Progress = None,
                    should_stop: Optional[Callable[[], bool]] = None) -> tuple[Predictor, Iterator[dict]]:
    """Load ``checkpoint`` (errors raise here, before any file is read) and return the predictor and
    the iterator of :func:`iter_predictions` over ``images`` (paths or :func:`expand_inputs` entries)."""
    predictor = Predictor.from_checkpoint(checkpoint, device=device, direct=direct, top_k=top_k,
                                          class_names=class_names)
    files = [e if isinstance(e, InputError) else os.fspath(e) for e in images]
    return predictor, iter_predictions(predictor, files, batch_size=batch_size, threads=threads, progress=progress,
                                       should_stop=should_stop)


def predict(checkpoint: os.PathLike | str, images: Sequence[os.PathLike | str], *, direct: bool = False,
            top_k: int = 5, device: str = "auto", class_names: Optional[os.PathLike | str | dict[str, str]] = None,
            batch_size: int = DEFAULT_BATCH_SIZE, threads: Optional[int] = None,
            progress: Progress = None) -> dict[str, Any]:
    """Top-``top_k`` classes with softmax probabilities for each JPEG in ``images``, as one document.

    Returns {"format": "jdct-predict", "format_version": 1, "checkpoint", "arch", "predictions":
    [{"file", "mode": "val-transform"|"direct", "note": str|None, "top": [{"index", "class",
    "probability"}]}]} (``schemas/eval.v1.schema.json``). ``note`` says why ``direct`` fell back
    to the val transform. ``class_names`` (a file for :func:`jdct_cli.evaluate.read_class_names`,
    or its dict) maps the store's class folder names (e.g. WordNet ids) to readable names; classes
    it lacks keep their folder name, and a mapping that names none of the checkpoint's classes is a
    ConfigError (the wrong file). A bad image (not a JPEG, corrupt, missing...) does not stop the
    others: it is listed under "errors" as {"file", "reason"} (the key is present only when some
    image failed). A bad checkpoint raises. For thousands of files, :func:`predict_records`
    streams the same records instead of holding them all.
    """
    predictor, records = predict_records(checkpoint, images, direct=direct, top_k=top_k, device=device,
                                         batch_size=batch_size, threads=threads, class_names=class_names,
                                         progress=progress)
    results, errors = [], []
    for rec in records:
        if "error" in rec:
            errors.append({"file": rec["file"], "reason": rec["error"]})
        else:
            results.append(rec)
    doc = {"format": PREDICT_FORMAT, "format_version": FORMAT_VERSION, "checkpoint": os.fspath(checkpoint),
           "arch": predictor.arch, "predictions": results}
    if errors:
        doc["errors"] = errors
    return doc
