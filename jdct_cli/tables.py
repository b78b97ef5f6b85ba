"""Quantization tables as files, real JPEG sizes from any tables, and ``jdct learn-tables`` (J4D).

The tables file (format ``jdct-quant-tables``, :data:`FORMAT_VERSION` 1, schema
``schemas/quant-tables.v1.schema.json``) is what ``jdct train --jpeg-layer learned`` writes to its
run directory, what ``jdct learn-tables`` writes, and what ``jdct eval --requantize`` and
``jdct train --quality-augment`` read::

    {"format": "jdct-quant-tables", "format_version": 1, "order": "natural",
     "luma": [64 ints 1..255], "chroma": [64 ints 1..255],      # what libjpeg uses
     "luma_float": [64 numbers], "chroma_float": [64 numbers],  # optional: the learned steps
     "source": {...}}                                           # optional: how they were made

Real sizes: :func:`encode_with_tables` is the one place JPEG files are written from caller-given
tables (jdct's libjpeg-turbo encoder: 4:2:0, islow DCT, optimized Huffman tables, baseline), and
:func:`entropy_coded_bytes` counts a file's entropy-coded segments only (headers, tables and
markers excluded, byte stuffing included), so bits per pixel measure the coefficients' cost.

Importing this module does not import torch (:func:`learn_tables` does, when called).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import jpeg
from .errors import ConfigError, SourceNotFoundError
from .fileio import atomic_write_text
from .jpegmath.quant import estimate_quality, ijg_tables

FORMAT_NAME = "jdct-quant-tables"
FORMAT_VERSION = 1
LEARN_FORMAT = "jdct-learn-tables"

Progress = Optional[Callable[[dict], None]]


# ------------------------------------------------------------------------------------------------
# the tables file
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantTablesFile:
    """A parsed tables file: ``luma``/``chroma`` 64 ints 1..255 in natural order; the optional
    float steps they were rounded from; ``source`` a free-form dict (how they were made)."""

    luma: tuple
    chroma: tuple
    luma_float: Optional[tuple] = None
    chroma_float: Optional[tuple] = None
    source: dict = field(default_factory=dict)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(luma, chroma) uint16 ``(64,)``."""
        return np.array(self.luma, dtype=np.uint16), np.array(self.chroma, dtype=np.uint16)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "order": "natural",
                               "luma": list(self.luma), "chroma": list(self.chroma)}
        if self.luma_float is not None:
            doc["luma_float"] = [float(v) for v in self.luma_float]
            doc["chroma_float"] = [float(v) for v in self.chroma_float]
        doc["source"] = dict(self.source)
        return doc


def _int_table(value: Any, name: str, path) -> tuple:
    if not isinstance(value, list) or len(value) != 64:
        raise ConfigError(f"{name}: expected a list of 64 integers (natural order), got "
                          f"{type(value).__name__}{' of length %d' % len(value) if isinstance(value, list) else ''}",
                          path)
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 255:
            raise ConfigError(f"{name}[{i}]: expected an integer in 1..255 (a baseline JPEG step), got {v!r}", path)
    return tuple(value)


def _float_table(value: Any, name: str, path) -> tuple:
    if not isinstance(value, list) or len(value) != 64 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value):
        raise ConfigError(f"{name}: expected a list of 64 positive numbers", path)
    return tuple(float(v) for v in value)


def parse_tables(doc: Any, path=None) -> QuantTablesFile:
    """Check a tables document field by field; ConfigError naming the field (and ``path``)."""
    if not isinstance(doc, dict):
        raise ConfigError("a tables file holds a JSON object", path)
    if doc.get("format") != FORMAT_NAME:
        raise ConfigError(f"format: expected {FORMAT_NAME!r}, got {doc.get('format')!r} (not a jdct tables file)",
                          path)
    if doc.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"format_version: this jdct reads {FORMAT_VERSION}, got {doc.get('format_version')!r}", path)
    if doc.get("order", "natural") != "natural":
        raise ConfigError(f"order: only 'natural' (8*v + u) is defined, got {doc.get('order')!r}", path)
    known = {"format", "format_version", "order", "luma", "chroma", "luma_float", "chroma_float", "source"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)}", path)
    luma = _int_table(doc.get("luma"), "luma", path)
    chroma = _int_table(doc.get("chroma"), "chroma", path)
    lf = cf = None
    if ("luma_float" in doc) != ("chroma_float" in doc):
        raise ConfigError("luma_float and chroma_float come together", path)
    if "luma_float" in doc:
        lf = _float_table(doc["luma_float"], "luma_float", path)
        cf = _float_table(doc["chroma_float"], "chroma_float", path)
    source = doc.get("source", {})
    if not isinstance(source, dict):
        raise ConfigError("source: expected an object", path)
    return QuantTablesFile(luma=luma, chroma=chroma, luma_float=lf, chroma_float=cf, source=source)


def read_tables(path: os.PathLike | str) -> QuantTablesFile:
    """Read and check a tables file; SourceNotFoundError or ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError("no such tables file", path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not a readable JSON tables file ({exc})", path) from None
    return parse_tables(doc, path)


def write_tables(path: os.PathLike | str, luma, chroma, *, luma_float=None, chroma_float=None,
                 source: Optional[dict] = None) -> QuantTablesFile:
    """Write a tables file atomically. ``luma``/``chroma``: 64 numbers, rounded and clamped to
    1..255 (the values libjpeg would use); ``*_float``: the unrounded steps, kept alongside."""
    def ints(t):
        return tuple(int(v) for v in np.clip(np.rint(np.asarray(t, dtype=np.float64)).reshape(64), 1, 255))

    tables = QuantTablesFile(luma=ints(luma), chroma=ints(chroma),
                             luma_float=None if luma_float is None else tuple(float(v) for v in np.ravel(luma_float)),
                             chroma_float=None if chroma_float is None else tuple(float(v) for v in np.ravel(chroma_float)),
                             source=dict(source or {}))
    atomic_write_text(path, tables_json(tables.to_dict()))
    return tables


def tables_json(doc: dict) -> str:
    """A tables document as JSON text, each table on one line (64 numbers in natural order)."""
    text = json.dumps(doc, indent=1, allow_nan=False)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]",
                  text) + "\n"


@dataclass(frozen=True)
class TableSpec:
    """Tables named on a command line: an IJG quality (``quality`` set) or a tables file."""

    luma: np.ndarray
    chroma: np.ndarray
    quality: Optional[int] = None
    path: Optional[str] = None

    def describe(self) -> str:
        return f"IJG quality {self.quality}" if self.quality is not None else f"tables {self.path}"

    def to_dict(self) -> dict[str, Any]:
        return {"quality": self.quality, "tables_file": self.path,
                "luma": [int(v) for v in self.luma], "chroma": [int(v) for v in self.chroma]}


def table_spec(value: str | int) -> TableSpec:
    """``"QUALITY"`` (1..100: libjpeg's tables of that quality) or a tables file path."""
    text = str(value).strip()
    if text.isdigit():
        quality = int(text)
        if not 1 <= quality <= 100:
            raise ConfigError(f"quality must be in 1..100, not {quality}", "--requantize")
        luma, chroma = ijg_tables(quality)
        return TableSpec(luma=luma, chroma=chroma, quality=quality)
    tables = read_tables(text)
    luma, chroma = tables.arrays()
    return TableSpec(luma=luma, chroma=chroma, path=os.path.abspath(text))


@dataclass(frozen=True)
class QualityAugment:
    """``--quality-augment``: each training sample requantized to an IJG quality drawn uniformly
    from ``low..high`` (``tables`` None), or to the tables of a file (always those)."""

    low: int = 0
    high: int = 0
    tables: Optional[TableSpec] = None

    def describe(self) -> str:
        return self.tables.describe() if self.tables is not None else f"IJG qualities {self.low}..{self.high}"


def parse_quality_augment(value: str) -> QualityAugment:
    """``"LOW:HIGH"`` (IJG qualities, 1 <= LOW <= HIGH <= 100) or a tables file; ConfigError otherwise."""
    text = str(value).strip()
    if ":" in text and not Path(text).exists():
        low, _, high = text.partition(":")
        try:
            lo, hi = int(low), int(high)
        except ValueError:
            raise ConfigError(f"expected LOW:HIGH qualities (e.g. 30:100) or a tables file, not {text!r}",
                              "--quality-augment") from None
        if not 1 <= lo <= hi <= 100:
            raise ConfigError(f"qualities must satisfy 1 <= LOW <= HIGH <= 100, not {text!r}", "--quality-augment")
        return QualityAugment(low=lo, high=hi)
    if text.isdigit():
        q = int(text)
        return parse_quality_augment(f"{q}:{q}")
    return QualityAugment(tables=table_spec(text))


# ------------------------------------------------------------------------------------------------
# real JPEG files from given tables
# ------------------------------------------------------------------------------------------------


def _baseline_table(values, name: str) -> list[int]:
    """64 ints 1..255 from ``values`` (a baseline JPEG's 8-bit steps), or ValueError naming the table."""
    t = np.asarray(values).reshape(-1)
    if t.size != 64 or not np.array_equal(t, np.rint(t)) or t.min() < 1 or t.max() > 255:
        raise ValueError(f"the {name} table must be 64 integers in 1..255 (baseline JPEG), "
                         f"got {t.size} values in {t.min() if t.size else '-'}..{t.max() if t.size else '-'}")
    return [int(v) for v in t]


def encode_with_tables(rgb: np.ndarray, luma, chroma) -> bytes:
    """A baseline 4:2:0 JPEG of uint8 ``(H, W, 3)`` RGB quantized with the given tables (64 ints
    1..255 each, natural order), written by jdct's libjpeg-turbo encoder (:func:`jdct_cli.jpeg.encode`)
    with optimized Huffman tables, islow DCT, no restart markers. This is the one function jdct
    writes files from given tables with. Raises ValueError for a table that is not 64 integers in 1..255."""
    tables = (_baseline_table(luma, "luma"), _baseline_table(chroma, "chroma"))
    return jpeg.encode(np.ascontiguousarray(rgb, dtype=np.uint8), subsampling="4:2:0", tables=tables, optimize=True)


def entropy_coded_bytes(data: bytes) -> int:
    """Bytes of a JPEG's entropy-coded segments: after each SOS header up to the next marker
    segment (stuffed zero bytes and RST markers inside a scan count; headers, quantization and
    Huffman tables, APPn and EOI do not). Walks the markers with :func:`jdct_cli.jpeg.marker_segments`."""
    segments = jpeg.marker_segments(data, through_scans=True)
    total = 0
    for i, (marker, offset, length) in enumerate(segments):
        if marker != 0xDA:
            continue
        scan_start = offset + length
        if i + 1 < len(segments):
            nxt_marker, nxt_offset, nxt_length = segments[i + 1]
            # a segment with a length field starts 4 bytes before its payload, EOI 2 bytes before
            scan_end = nxt_offset - (2 if nxt_marker == 0xD9 else 4)
        else:
            scan_end = len(data)
        total += max(0, scan_end - scan_start)
    return total


def real_bits(rgb: np.ndarray, luma, chroma) -> int:
    """Entropy-coded bits of ``rgb`` (uint8 ``(H, W, 3)``) written as a JPEG with these tables."""
    return 8 * entropy_coded_bytes(encode_with_tables(rgb, luma, chroma))


# ------------------------------------------------------------------------------------------------
# jdct learn-tables (J4D)
# ------------------------------------------------------------------------------------------------


def _init_tables(init: str, learned_default) -> tuple[np.ndarray, np.ndarray, str]:
    """(luma, chroma) float64 starting tables from ``init``: ``qQUALITY`` / ``QUALITY`` (IJG),
    ``checkpoint`` (the network's own learned tables), or a tables file."""
    text = str(init).strip()
    q = text[1:] if text[:1].lower() == "q" and text[1:].isdigit() else text
    if q.isdigit():
        spec = table_spec(q)
        return spec.luma.astype(np.float64), spec.chroma.astype(np.float64), f"IJG quality {spec.quality}"
    if text == "checkpoint":
        if learned_default is None:
            raise ConfigError("the checkpoint has no learned tables (it was trained without --jpeg-layer learned)",
                              "--init")
        return np.asarray(learned_default[0], np.float64), np.asarray(learned_default[1], np.float64), "checkpoint"
    spec = table_spec(text)
    return spec.luma.astype(np.float64), spec.chroma.astype(np.float64), f"tables {spec.path}"


def learn_tables(checkpoint: os.PathLike | str, data: Optional[os.PathLike | str], out: os.PathLike | str, *,
                 rate_weight: float, epochs: float = 1.0, lr: float = 0.02, hardness: float = 8.0,
                 init: str = "q50", split: str = "train", val_split: Optional[str] = "val",
                 batch_size: Optional[int] = None, device: str = "auto", threads: Optional[int] = None,
                 seed: int = 0, real_size: bool = True, progress: Progress = None) -> dict[str, Any]:
    """J4D: learn the luma and chroma tables that minimize ``task loss + rate_weight x bpp`` for the
    frozen network of ``checkpoint``, write them to ``out`` (a tables file), and evaluate them.

    The network and its normalization stay fixed (eval mode: BatchNorm uses its running
    statistics). Each training sample's stored coefficients (dequantized, libjpeg's scale) go
    through the soft quantizer with the tables (``hardness``), the result becomes the network's
    input exactly as the loader would make it; bpp is the soft rate estimate (per frequency, the
    entropy of the batch's marginal index distribution; Cb and Cr pooled) over the batch's
    pixels. Adam (``lr``) steps the tables' logarithms (so ``lr`` is about the relative change of
    every step per optimizer step), the tables kept in [1, 255] (libjpeg's range) after every
    step, for ``epochs`` passes (fractions allowed) over ``split``, without flips.

    Afterwards, on ``val_split`` (None: skip) with the integer tables (rounded, 1..255): top-1 and
    loss of the network on hard-requantized inputs, the estimated bpp (hard indices, the split's
    marginal) and, with ``real_size``, the real bpp of JPEG files written with those tables.
    Returns the report (``format: "jdct-learn-tables"``). Raises CheckpointError, StoreError,
    ConfigError; Ctrl-C raises Interrupted (nothing written).
    """
    import torch
    import torch.nn.functional as F

    from .evaluate import load_for_inference, training_store
    from .errors import Interrupted, CheckpointError
    from .jpegmath import learned
    from .store import read_metadata
    from .train import make_loader, resolve_device
    from .train.quality import InputStage, requantized_eval

    if not rate_weight >= 0 or not math.isfinite(rate_weight):
        raise ConfigError(f"the rate weight must be a number >= 0, not {rate_weight}", "--rate-weight")
    if not epochs > 0:
        raise ConfigError(f"epochs must be > 0, not {epochs}", "--epochs")
    if not hardness > 0:
        raise ConfigError(f"hardness must be > 0, not {hardness}", "--hardness")
    if not lr > 0:
        raise ConfigError(f"the learning rate must be > 0, not {lr}", "--lr")
    out = Path(out)
    if out.is_dir():
        raise ConfigError("is a folder: give the tables file to write, e.g. tables.json", out)
    if not out.parent.is_dir():
        raise SourceNotFoundError("no such folder to write the tables into", out.parent)

    payload, model, kind = load_for_inference(checkpoint)
    if data is None:
        data = training_store(payload, checkpoint)
    info = read_metadata(data)
    info.split(split)
    if val_split is not None:
        info.split(val_split)
    if info.classes != list(payload["classes"]):
        raise CheckpointError(f"the store's {len(info.classes)} classes differ from the {payload['num_classes']} the "
                              "checkpoint was trained on", data)
    dev = resolve_device(device)
    model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    bs = int(batch_size or payload["config"].get("batch_size", 64))
    stats = (payload.get("store") or {}).get("stats")
    stage = InputStage(kind, stats, dev)
    learned_default = None
    if hasattr(model, "tables"):
        learned_default = (model.tables.luma.detach().cpu().numpy(), model.tables.chroma.detach().cpu().numpy())
    luma0, chroma0, init_name = _init_tables(init, learned_default)
    tables = learned.LogQuantTables(luma0, chroma0, q_min=1.0).to(dev)
    opt = torch.optim.Adam(tables.parameters(), lr=lr)

    loader = make_loader(data, split, batch_size=bs, train=False, seed=seed, device=dev, output="dct",
                         normalize=False, threads=threads)
    per_epoch = len(loader)
    total_steps = max(1, int(round(epochs * per_epoch)))
    if progress is not None:
        progress({"event": "start", "steps": total_steps, "split": split, "init": init_name,
                  "rate_weight": rate_weight})
    step, history = 0, []
    epoch = 0
    try:
        while step < total_steps:
            loader.set_epoch(epoch)
            for inputs, labels in loader:
                planes = [x.to(dev) for x in inputs]
                labels = labels.to(dev).long()
                soft = []
                for i, x in enumerate(planes):
                    q = (tables.luma if i == 0 else tables.chroma).view(1, 64, 1, 1)
                    soft.append(learned.soft_quantize_probs(x, q, hardness)[2])
                logits = model(*stage.to_inputs(soft)).float()
                task = F.cross_entropy(logits, labels.clamp_min(0), ignore_index=-1)
                pixels = planes[0].shape[0] * 64 * planes[0].shape[2] * planes[0].shape[3]
                bpp = learned.estimate_bits(planes, tables.luma, tables.chroma, hardness=hardness) / pixels
                loss = task + rate_weight * bpp
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tables.clamp_()
                step += 1
                item = {"step": step, "loss": float(loss.detach()), "task_loss": float(task.detach()),
                        "bpp": float(bpp.detach())}
                history.append(item)
                if progress is not None:
                    progress({"event": "step", "total": total_steps, **item})
                if step >= total_steps:
                    break
            epoch += 1
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {step} of {total_steps} steps; nothing written", out) from None

    luma_f = tables.luma.detach().cpu().numpy().astype(np.float64)
    chroma_f = tables.chroma.detach().cpu().numpy().astype(np.float64)
    luma_i, chroma_i = learned.libjpeg_tables(tables.luma), learned.libjpeg_tables(tables.chroma)
    report: dict[str, Any] = {
        "format": LEARN_FORMAT, "format_version": 1, "checkpoint": os.fspath(checkpoint), "arch": payload["arch"],
        "data": os.fspath(data), "split": split, "rate_weight": float(rate_weight), "epochs": float(epochs),
        "steps": step, "lr": float(lr), "hardness": float(hardness), "init": init_name,
        "train_last": history[-1] if history else None,
        "train_first": history[0] if history else None,
        "luma": luma_i.tolist(), "chroma": chroma_i.tolist(),
        "estimated_quality": {"luma": estimate_quality(luma_i), "chroma": estimate_quality(chroma_i, chroma=True)},
        "out": os.fspath(out),
    }
    if val_split is not None:
        report["val"] = requantized_eval(model, kind, stats, data, val_split, luma_i, chroma_i, batch_size=bs,
                                         device=dev, threads=threads, real_size=real_size, progress=progress)
    source = {"kind": "j4d", "checkpoint": os.path.abspath(os.fspath(checkpoint)), "arch": payload["arch"],
              "data": os.fspath(data), "split": split, "rate_weight": float(rate_weight), "epochs": float(epochs),
              "steps": step, "lr": float(lr), "hardness": float(hardness), "init": init_name}
    if "val" in report:
        source["val"] = {k: report["val"][k] for k in ("top1", "estimated_bpp", "real_bpp")}
    write_tables(out, luma_i, chroma_i, luma_float=luma_f, chroma_float=chroma_f, source=source)
    return report
