"""What is inside a jdct store, and whether it is intact: ``jdct inspect OUT.zarr`` and ``jdct verify``.

- :func:`inspect_store` -> a JSON-able document (schema ``schemas/store-inspect.v1.schema.json``):
  splits, counts, array shapes/chunking/codecs, bytes on disk, bytes per sample, compression
  ratio, classes, failures and coefficient statistics; optionally reconstructs samples to pixels
  (numpy block IDCT) and compares them with their source crop re-made with Pillow.
- :func:`render_store_text` -> the same as text.
- :func:`verify_store` -> checks the metadata field by field (:mod:`.format`), reads every chunk
  (zarr checks each chunk's CRC32C and raises on a mismatch), checks shard files, shapes, dtypes,
  chunking, label and image ranges and counts against attrs["jdct"]; an incomplete store lists the
  shards its conversion has not finished and checks the finished ones.
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image, ImageOps
from zarr.core import sync as zarr_sync

from .. import jpeg
from ..jpegmath.sample import psnr, reconstruct
from ..errors import ConfigError, IncompleteStoreError, Interrupted, JdctError, StoreCorruptionError, StoreError, \
    StoreMetadataError
from ..inspect_jpeg import write_output
from .format import ALL_ARRAYS, COEFFICIENT_ARRAYS, IMAGES_ARRAYS, PROGRESS_DIR, CropsLayout, ImagesLayout, \
    ImagesMeta, ImagesSplitMeta, SplitMeta, StoreMeta
from .progress import ProgressFolder
from .location import StoreLocation, as_location, storage_error
from .read import array_problem, dir_bytes, open_group, read_metadata

INSPECT_FORMAT = "jdct-store-inspect"
INSPECT_VERSION = 1

#: progress(stage, done, total): stage "verify" counts sample-arrays read.
ProgressFn = Callable[[str, int, int], None]


def source_crop(source_file: Path, box, size: int, exif: str = "ignore") -> np.ndarray:
    """The crop a sample was made from, re-made independently with Pillow: decode the source,
    (turn it upright when ``exif`` is "apply"), resize ``box`` (x, y, w, h, source pixels) to
    uint8 ``(size, size, 3)`` with Pillow's bilinear filter."""
    with Image.open(source_file) as im:
        im.draft(None, None)
        if exif == "apply":
            im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        x, y, w, h = (float(v) for v in box)
        out = im.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + w, y + h), reducing_gap=None)
        return np.asarray(out, dtype=np.uint8)


def inspect_store(path: os.PathLike | str, *, sample: Optional[int] = None, plot: Optional[str] = None,
                  split: Optional[str] = None, save_jpeg: Optional[str] = None) -> dict:
    """The inspection document of the store at ``path`` (see the module docstring).

    ``sample``: reconstruct sample number ``sample`` (0-based) of view 0 of ``split`` (default:
    the store's first split) to pixels (block IDCT) and report its file, class, box and the PSNR
    (dB) of the reconstruction against the source crop re-made with Pillow (None when the source
    file is gone). ``plot``: write a PNG with the reconstruction next to its source crop; without
    ``sample``, the first 4 converted samples of the split are drawn. ``save_jpeg`` (with
    ``sample``): write the sample as a JPEG file, its coefficients written back losslessly
    (``jpeg.write_coefficients``: crops) or the stored JPEG's bytes (images). A sample index out of
    range is a ConfigError; a failed sample (label -1) a StoreError naming its file and reason.
    An images store gets :func:`inspect_images_store`'s document.
    Raises SourceNotFoundError / StoreError / IncompleteStoreError from :func:`.read.read_metadata`.
    """
    if save_jpeg is not None and sample is None:
        raise ConfigError("--save-jpeg needs --sample I (the sample to write)")
    info = read_metadata(path)
    if isinstance(info.metadata, ImagesMeta):
        return inspect_images_store(info, sample=sample, plot=plot, split=split, save_jpeg=save_jpeg)
    meta = info.metadata
    root = info.location
    group = open_group(root)
    splits = {}
    total_bytes = 0
    for name, sp in meta.splits.items():
        arrays = {}
        coef_bytes = split_bytes = 0
        for a in ALL_ARRAYS:
            arr = group[f"{name}/{a}"]
            nbytes = dir_bytes(root, f"{name}/{a}")
            split_bytes += nbytes
            if a in COEFFICIENT_ARRAYS:
                coef_bytes += nbytes
            arrays[a] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "chunks": list(arr.chunks),
                         "shards": list(arr.shards) if arr.shards else None, "bytes_on_disk": nbytes}
        samples = sp.views * sp.num_samples
        total_bytes += split_bytes
        splits[name] = {
            "views": sp.views, "num_samples": sp.num_samples, "counts": sp.counts.to_dict(),
            "failures": [f.to_dict() for f in sp.failures], "arrays": arrays, "bytes_on_disk": split_bytes,
            "bytes_per_sample": split_bytes / samples if samples else None,
            "compression_ratio": info.layout.raw_sample_bytes() * samples / coef_bytes if coef_bytes else None,
        }
    doc: dict[str, Any] = {
        "kind": "store", "format": INSPECT_FORMAT, "format_version": INSPECT_VERSION,
        "path": str(root), "store_format": info.meta["format"], "store_format_version": meta.format_version,
        "jdct_version": meta.jdct_version, "libjpeg_version": meta.libjpeg_version,
        "size": meta.size, "quality": meta.quality, "subsampling": meta.subsampling,
        "coefficient_order": meta.coefficient_order, "seed": meta.seed,
        "chunk_samples": meta.chunk_samples, "shard_samples": meta.shard_samples, "codec": meta.codec.to_dict(),
        "transform": meta.transform.to_dict(), "classes": list(meta.classes), "num_classes": len(meta.classes),
        "quant_tables": meta.quant_tables.to_dict(), "splits": splits, "bytes_on_disk": total_bytes,
        "stats": meta.stats.to_dict(),
        "samples": [],
    }
    if sample is not None or plot:
        doc["samples"], pictures = _reconstruct_samples(group, meta, root, split, sample)
        if plot:
            _plot_samples(doc["samples"], pictures, plot)
            doc["plot"] = os.fspath(plot)
    if save_jpeg is not None:
        s0 = doc["samples"][0]
        y, cb, cr = (_read(group, root, s0["split"], a, (0, s0["index"])) for a in COEFFICIENT_ARRAYS)
        q = meta.quant_tables
        data = jpeg.write_coefficients([np.ascontiguousarray(np.moveaxis(c, 0, -1)) for c in (y, cb, cr)],
                                       np.array([q.luma, q.chroma, q.chroma], np.uint16), meta.size, meta.size,
                                       [(2, 2), (1, 1), (1, 1)])
        write_output(save_jpeg, lambda fh: fh.write(data))
        doc["saved_jpeg"] = os.fspath(save_jpeg)
    return doc


# ------------------------------------------------------------------------------------------------
# images stores
# ------------------------------------------------------------------------------------------------

def inspect_images_store(info, *, sample: Optional[int] = None, plot: Optional[str] = None,
                         split: Optional[str] = None, save_jpeg: Optional[str] = None) -> dict:
    """The inspection document of an images store (``format_version`` 2 of
    ``schemas/store-inspect.v2.schema.json``): splits with counts, failures, treatments, the
    samplings and stored sizes found in the arrays, bytes on disk and against the source files;
    options; statistics. ``sample`` / ``plot``: the stored JPEG of sample I (or of the first 4) is
    decoded and shown beside its source file (re-made at the stored size with Pillow when it was
    re-encoded), with the PSNR between them (99 for identical pixels) and whether the bytes are
    the source's; ``save_jpeg``: write the stored JPEG as it is."""
    meta: ImagesMeta = info.metadata
    root = info.location
    group = open_group(root)
    splits = {}
    total_bytes = 0
    for name, sp in meta.splits.items():
        arrays = {}
        split_bytes = 0
        for a in IMAGES_ARRAYS:
            arr = group[f"{name}/{a}"]
            nbytes = dir_bytes(root, f"{name}/{a}")
            split_bytes += nbytes
            arrays[a] = {"shape": list(arr.shape), "dtype": "bytes" if a == "jpeg" else str(arr.dtype),
                         "chunks": list(arr.chunks), "shards": list(arr.shards) if arr.shards else None,
                         "bytes_on_disk": nbytes}
        total_bytes += split_bytes
        codes = _read(group, root, name, "sampling", 0)
        label = _read(group, root, name, "label", 0)
        sides = np.maximum(_read(group, root, name, "width", 0), _read(group, root, name, "height", 0))[label >= 0]
        ok = int((label >= 0).sum())
        splits[name] = {
            "views": 1, "num_samples": sp.num_samples, "counts": sp.counts.to_dict(),
            "failures": [f.to_dict() for f in sp.failures], "treatments": dict(sp.treatments),
            "samplings": {meta.samplings[c]: int(n) for c, n in enumerate(np.bincount(codes[label >= 0],
                                                                                      minlength=len(meta.samplings)))
                          if n and c < len(meta.samplings)},
            "longest_side": ({"min": int(sides.min()), "median": float(np.median(sides)), "max": int(sides.max())}
                             if ok else None),
            "arrays": arrays, "bytes_on_disk": split_bytes, "stored_bytes": sp.stored_bytes,
            "source_bytes": sp.source_bytes, "bytes_per_image": split_bytes / ok if ok else None,
            "bytes_vs_source": split_bytes / sp.source_bytes if sp.source_bytes else None,
        }
    doc: dict[str, Any] = {
        "kind": "store", "format": INSPECT_FORMAT, "format_version": 2, "path": str(root),
        "store_format": info.meta["format"], "store_format_version": meta.format_version, "layout": "images",
        "jdct_version": meta.jdct_version, "libjpeg_version": meta.libjpeg_version, "seed": meta.seed,
        "chunk_samples": meta.chunk_samples, "shard_samples": meta.shard_samples, "codec": meta.codec.to_dict(),
        "max_side": meta.max_side, "restart_segments": meta.restart_segments, "reencode": dict(meta.reencode),
        "exif": meta.exif, "check": meta.check, "classes": list(meta.classes), "num_classes": len(meta.classes),
        "splits": splits, "bytes_on_disk": total_bytes,
        "stats": None if meta.stats is None else meta.stats.to_dict(), "samples": [],
    }
    if sample is not None or plot:
        doc["samples"], pictures = _images_samples(group, meta, root, split, sample)
        if plot:
            _plot_samples(doc["samples"], pictures, plot, stored=True)
            doc["plot"] = os.fspath(plot)
    if save_jpeg is not None:
        s0 = doc["samples"][0]
        data = _jpeg_at(group, root, s0["split"], s0["index"])
        write_output(save_jpeg, lambda fh: fh.write(data))
        doc["saved_jpeg"] = os.fspath(save_jpeg)
    return doc


def _pick_samples(group, meta, root: StoreLocation, split: Optional[str], sample: Optional[int]):
    """``(split, [sample indices])``: ``sample`` of view 0 of ``split`` (checked), or the first 4
    converted samples; the errors of :func:`inspect_store`."""
    split = split or next(iter(meta.splits))
    if split not in meta.splits:
        raise ConfigError(f"no split {split!r} in this store (it has: {', '.join(meta.splits)})", root)
    sp = meta.splits[split]
    labels = _read(group, root, split, "label", 0)
    if sample is None:
        return split, [int(i) for i in np.flatnonzero(labels >= 0)[:4]], labels
    if not 0 <= sample < len(labels):
        raise ConfigError(f"--sample {sample} is out of range: {split} has samples 0 to {len(labels) - 1}", root)
    if labels[sample] < 0:
        image = int(_read(group, root, split, "image", (0, sample)))
        failure = sp.failure_of(sp.files[image])
        raise StoreError(f"sample {sample} of {split} is a failed conversion of {sp.files[image]} "
                         f"({failure.reason if failure else 'no reason recorded'}): it holds no image", root)
    return split, [sample], labels


def _images_samples(group, meta: ImagesMeta, root: StoreLocation, split: Optional[str], sample: Optional[int]):
    """Samples of an images store decoded to RGB, beside their source files re-made at the stored
    size: ([per-sample report], [(decoded, source or None)])."""
    split, indices, labels = _pick_samples(group, meta, root, split, sample)
    sp = meta.splits[split]
    out, pictures = [], []
    for idx in indices:
        data = _jpeg_at(group, root, split, idx)
        image = int(_read(group, root, split, "image", (0, idx)))
        treatment = meta.treatments[int(_read(group, root, split, "treatment", (0, idx)))]
        try:
            rgb = jpeg.decode(data).rgb
        except JdctError as exc:
            raise StoreCorruptionError(f"{split}/jpeg sample {idx} does not decode ({exc.reason}); `jdct verify` "
                                       "lists the damage", root) from None
        rel = sp.files[image]
        src = Path(meta.source or "") / rel
        ref, same_bytes = None, None
        if meta.source and src.is_file():
            try:
                ref = _source_image(src, rgb.shape[1], rgb.shape[0], meta.exif)
                same_bytes = src.read_bytes() == data
            except (OSError, ValueError):
                ref = None
        label = int(labels[idx])
        out.append({"split": split, "view": 0, "index": idx, "image": image, "file": rel, "label": label,
                    "class": meta.classes[label], "treatment": treatment, "width": int(rgb.shape[1]),
                    "height": int(rgb.shape[0]), "bytes": len(data), "same_bytes_as_source": same_bytes,
                    "psnr_db": None if ref is None else round(min(psnr(rgb, ref), 99.0), 2)})
        pictures.append((rgb, ref))
    return out, pictures


def _jpeg_at(group, root: StoreLocation, split: str, index: int) -> bytes:
    """The JPEG bytes of sample ``index`` (a one-item slice: zarr wraps a scalar read of a
    variable-length array in nested 0-d arrays)."""
    return bytes(_read(group, root, split, "jpeg", (0, slice(index, index + 1)))[0])


def _source_image(source_file: Path, width: int, height: int, exif: str) -> np.ndarray:
    """The source file decoded with Pillow (upright when ``exif`` is "apply"), resized to
    ``width`` x ``height`` with Pillow's bilinear filter when its size differs."""
    with Image.open(source_file) as im:
        if exif == "apply":
            im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
        return np.asarray(im, dtype=np.uint8)


def _reconstruct_samples(group, meta: StoreMeta, root: StoreLocation, split: Optional[str], sample: Optional[int]):
    """Reconstruct sample ``sample`` of view 0 of ``split`` (or, when None, its first 4 converted
    samples): ([per-sample report], [(reconstruction, source crop or None)])."""
    split = split or next(iter(meta.splits))
    if split not in meta.splits:
        raise ConfigError(f"no split {split!r} in this store (it has: {', '.join(meta.splits)})", root)
    sp = meta.splits[split]
    tables = meta.quant_tables
    labels = _read(group, root, split, "label", 0)
    if sample is None:
        indices = np.flatnonzero(labels >= 0)[:4]
    else:
        if not 0 <= sample < len(labels):
            raise ConfigError(f"--sample {sample} is out of range: {split} has samples 0 to {len(labels) - 1}",
                              root)
        if labels[sample] < 0:
            image = int(_read(group, root, split, "image", (0, sample)))
            failure = sp.failure_of(sp.files[image])
            raise StoreError(f"sample {sample} of {split} is a failed conversion of {sp.files[image]} "
                             f"({failure.reason if failure else 'no reason recorded'}): it holds no image", root)
        indices = [sample]
    out, pictures = [], []
    source_root = Path(meta.source or "")
    for idx in indices:
        idx = int(idx)
        y, cb, cr, image, box = (_read(group, root, split, a, (0, idx)) for a in ("y", "cb", "cr", "image", "box"))
        image = int(image)
        box = [float(v) for v in box]
        rec = reconstruct(y, cb, cr, tables.luma, tables.chroma)
        rel = sp.files[image]
        src = source_root / rel
        ref = None
        if meta.source and src.is_file():
            try:
                ref = source_crop(src, box, meta.size, meta.transform.exif)
            except (OSError, ValueError):
                ref = None
        label = int(labels[idx])
        out.append({"split": split, "view": 0, "index": idx, "image": image, "file": rel, "label": label,
                    "class": meta.classes[label], "box": box,
                    "psnr_db": None if ref is None else round(min(psnr(rec, ref), 99.0), 2)})
        pictures.append((rec, ref))
    return out, pictures


def _read(group, root: StoreLocation, split: str, array: str, index):
    """``group[split/array][index]``; a damaged chunk (checksum, decompression) is a StoreCorruptionError,
    an object store's failure a StorageError."""
    try:
        return group[f"{split}/{array}"][index]
    except Exception as exc:  # noqa: BLE001 - zarr raises ValueError, RuntimeError... for damage
        mapped = storage_error(exc, root, key=f"{split}/{array}", op="read")
        if mapped is not None:
            raise mapped from None
        raise StoreCorruptionError(f"{split}/{array} is unreadable ({exc}); `jdct verify` lists the damage",
                                   root) from None


def _plot_samples(samples, pictures, plot, stored: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(pictures), 1)
    fig, axes = plt.subplots(n, 2, figsize=(5, 2.6 * n), squeeze=False)
    for row, (s, (rec, ref)) in enumerate(zip(samples, pictures)):
        axes[row][0].imshow(rec)
        axes[row][0].set_title(f"#{s['index']} {s['class']} ({s['treatment'] if stored else 'IDCT'})", fontsize=8)
        if ref is not None:
            axes[row][1].imshow(ref)
            axes[row][1].set_title(f"source {'file' if stored else 'crop'}, PSNR {s['psnr_db']} dB", fontsize=8)
        else:
            axes[row][1].text(0.5, 0.5, "source file not found", ha="center", va="center")
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    try:
        write_output(plot, lambda fh: fig.savefig(fh, format="png", dpi=100))
    finally:
        plt.close(fig)


def render_store_text(doc: dict) -> str:
    """Human-readable text of an :func:`inspect_store` document."""
    if doc.get("layout") == "images":
        return _render_images_text(doc)
    lines = [
        f"{doc['path']}: jdct store v{doc['store_format_version']} (jdct {doc['jdct_version']}, "
        f"libjpeg-turbo {doc['libjpeg_version']})",
        f"  crops {doc['size']}x{doc['size']}, quality {doc['quality']}, {doc['subsampling']}, "
        f"{doc['coefficient_order']} order, seed {doc['seed']}",
        f"  chunks of {doc['chunk_samples']} samples in shards of {doc['shard_samples']}; codecs: "
        + ", ".join(doc["codec"]["chunk_codecs"]),
        f"  {doc['num_classes']} classes: " + ", ".join(doc["classes"][:8]) + (" ..." if doc["num_classes"] > 8 else ""),
        f"  {doc['bytes_on_disk'] / 1e6:.2f} MB on disk",
    ]
    t = doc["transform"]
    lines.append(f"  transform: exif {t.get('exif')}, exact decode {t.get('exact_decode')}, {t.get('resize_filter')}")
    for name, sp in doc["splits"].items():
        c = sp["counts"]
        bps = sp["bytes_per_sample"]
        ratio = sp["compression_ratio"]
        lines.append(f"  {name}: {sp['num_samples']} samples x {sp['views']} view(s); files {c['files']}, "
                     f"converted {c['converted']}, failed {c['failed']}"
                     + (f"; {bps:.0f} bytes/sample, {ratio:.2f}x vs raw int16" if bps else ""))
        for a, info in sp["arrays"].items():
            lines.append(f"    {a:<5} {info['dtype']:<7} {tuple(info['shape'])} chunks {tuple(info['chunks'])}"
                         f" shards {tuple(info['shards']) if info['shards'] else '-'}")
        for f in sp["failures"][:10]:
            lines.append(f"    failed: {f['file']}: {f['reason']}")
        if len(sp["failures"]) > 10:
            lines.append(f"    ... and {len(sp['failures']) - 10} more failures (--json lists them all)")
    stats = doc.get("stats") or {}
    for c in COEFFICIENT_ARRAYS:
        if c in stats:
            lines.append(f"  stats {c} ({stats['split']}): DC mean {stats[c]['mean'][0]:.2f} std {stats[c]['std'][0]:.2f};"
                         f" AC(0,1) mean {stats[c]['mean'][1]:.2f} std {stats[c]['std'][1]:.2f}")
    for s in doc.get("samples", []):
        p = "source missing" if s["psnr_db"] is None else f"PSNR {s['psnr_db']:.2f} dB vs source crop"
        lines.append(f"  sample {s['split']}[{s['index']}]: {s['file']} ({s['class']}), box "
                     + ",".join(f"{v:.1f}" for v in s["box"]) + f": {p}")
    if doc.get("plot"):
        lines.append(f"  wrote {doc['plot']}")
    if doc.get("saved_jpeg"):
        lines.append(f"  wrote {doc['saved_jpeg']}")
    return "\n".join(lines)


def _render_images_text(doc: dict) -> str:
    lines = [
        f"{doc['path']}: jdct images store v{doc['store_format_version']} (jdct {doc['jdct_version']}, "
        f"libjpeg-turbo {doc['libjpeg_version']})",
        f"  each image once as a JPEG; max side {doc['max_side'] or 'unlimited'}"
        + (", restart segments" if doc["restart_segments"] else "")
        + f"; re-encoded at quality {doc['reencode'].get('quality')} {doc['reencode'].get('subsampling')}; "
        f"exif {doc['exif']}; check {doc['check']}; seed {doc['seed']}",
        f"  chunks of {doc['chunk_samples']} images in shards of {doc['shard_samples']}",
        f"  {doc['num_classes']} classes: " + ", ".join(doc["classes"][:8]) + (" ..." if doc["num_classes"] > 8 else ""),
        f"  {doc['bytes_on_disk'] / 1e6:.2f} MB on disk",
    ]
    for name, sp in doc["splits"].items():
        c = sp["counts"]
        lines.append(f"  {name}: {sp['num_samples']} images; files {c['files']}, converted {c['converted']}, "
                     f"failed {c['failed']}"
                     + (f"; {sp['bytes_per_image']:.0f} bytes/image, {sp['bytes_vs_source']:.3f}x the source files"
                        if sp["bytes_per_image"] and sp["bytes_vs_source"] else ""))
        lines.append("    stored: " + (", ".join(f"{k} {v}" for k, v in sp["treatments"].items()) or "nothing"))
        lines.append("    samplings: " + ", ".join(f"{k} {v}" for k, v in sp["samplings"].items())
                     + (f"; longest side {sp['longest_side']['min']}..{sp['longest_side']['max']} px (median "
                        f"{sp['longest_side']['median']:.0f})" if sp["longest_side"] else ""))
        for f in sp["failures"][:10]:
            lines.append(f"    failed: {f['file']}: {f['reason']}")
        if len(sp["failures"]) > 10:
            lines.append(f"    ... and {len(sp['failures']) - 10} more failures (--json lists them all)")
    stats = doc.get("stats")
    if stats:
        lines.append(f"  stats of {stats['images']} {stats['split']} crops ({stats['size']} px, quality "
                     f"{stats['quality']}): y DC mean {stats['y']['mean'][0]:.2f} std {stats['y']['std'][0]:.2f}")
    else:
        lines.append("  no statistics (--stats-images 0)")
    for s in doc.get("samples", []):
        p = "source missing" if s["psnr_db"] is None else (
            "the source's bytes" if s["same_bytes_as_source"] else f"PSNR {s['psnr_db']:.2f} dB vs the source")
        lines.append(f"  sample {s['split']}[{s['index']}]: {s['file']} ({s['class']}), {s['width']}x{s['height']}, "
                     f"{s['bytes']} bytes, {s['treatment']}: {p}")
    if doc.get("plot"):
        lines.append(f"  wrote {doc['plot']}")
    if doc.get("saved_jpeg"):
        lines.append(f"  wrote {doc['saved_jpeg']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# verify
# ------------------------------------------------------------------------------------------------

def _problem(split, array, view, s0, s1, what) -> dict:
    return {"split": split, "array": array, "view": view, "samples": [int(s0), int(s1)], "problem": what}


def _merge(problems: list[dict]) -> list[dict]:
    """Join adjacent sample ranges reporting the same problem on the same array/view."""
    merged: list[dict] = []
    for p in problems:
        last = merged[-1] if merged else None
        if (last and last["split"] == p["split"] and last["array"] == p["array"] and last["view"] == p["view"]
                and last["problem"] == p["problem"] and last["samples"][1] == p["samples"][0]):
            last["samples"][1] = p["samples"][1]
        else:
            merged.append(p)
    return merged


def _report(root: StoreLocation, complete: bool, checked: int, problems: list[dict]) -> dict:
    return {"store": str(root), "ok": not problems, "complete": complete, "checked_chunks": checked,
            "problems": _merge(problems)}


class _Reader:
    """Reads shards chunk by chunk (zarr checks each chunk's CRC32C), counting chunks and progress."""

    def __init__(self, root: StoreLocation, layout: "CropsLayout | ImagesLayout", total: int,
                 progress: Optional[ProgressFn]):
        self.root, self.layout, self.total, self.progress = root, layout, total, progress
        self.objects = root.objects()
        self.checked = self.done = 0
        self.problems: list[dict] = []

    def shard(self, arr, split: str, array: str, view: int, shard: int, s0: int, s1: int) -> Optional[np.ndarray]:
        """The shard's values (None when anything failed: the problem is recorded)."""
        self.done += s1 - s0
        if self.progress:
            self.progress("verify", self.done, self.total)
        if not self.objects.exists(f"{split}/{array}/{self.layout.shard_key(array, view, shard)}"):
            self.problems.append(_problem(split, array, view, s0, s1, "shard file missing"))
            return None
        parts, ok = [], True
        for c0 in range(s0, s1, self.layout.chunk_samples):
            c1 = min(c0 + self.layout.chunk_samples, s1)
            self.checked += 1
            try:
                parts.append(arr[view, c0:c1])
            except Exception as exc:  # noqa: BLE001 - checksum ValueError, decompression errors...
                mapped = storage_error(exc, self.root, key=f"{split}/{array}", op="read")
                if mapped is not None:
                    raise mapped from None  # the store, not the data, failed: stop with one line
                self.problems.append(_problem(split, array, view, c0, c1, f"unreadable chunk: {exc}"))
                ok = False
        return np.concatenate(parts) if ok and parts else None


def verify_store(path: os.PathLike | str, progress: Optional[ProgressFn] = None) -> dict:
    """Check the store at ``path`` chunk by chunk; never raises for damage, reports it.

    Returns {"store", "ok" (bool), "complete" (bool), "checked_chunks" (int), "problems": [{"split",
    "array", "view", "samples": [start, stop), "problem"}]}. A metadata field that is missing or
    invalid (a hand edit, damage) is one problem naming the field. Raises SourceNotFoundError when
    ``path`` does not exist, StoreError when it is not a jdct store at all, and
    :class:`~jdct_cli.errors.Interrupted` on Ctrl-C (zarr's pending reads are cancelled first).
    """
    root = as_location(path)
    try:
        return _verify(root, progress)
    except KeyboardInterrupt:
        _cancel_zarr_io()
        raise Interrupted("verify interrupted before it had read every chunk (nothing was changed); run it again "
                          "to check the whole store", root) from None


def _verify(root: StoreLocation, progress: Optional[ProgressFn]) -> dict:
    try:
        info = read_metadata(root)
    except IncompleteStoreError:
        return _verify_incomplete(root, progress)
    except StoreMetadataError as exc:
        field = exc.field or ""
        split = field.split(".")[1] if field.startswith("splits.") and field.count(".") >= 2 else None
        return _report(root, True, 0, [_problem(split, None, None, 0, 0, f"metadata attrs['jdct'] {exc.reason}")])
    meta, layout = info.metadata, info.layout
    group = open_group(root)
    names = [spec.name for spec in layout.arrays]
    total = sum(sp.views * sp.num_samples for sp in meta.splits.values()) * len(names)
    reader = _Reader(root, layout, total, progress)
    for name, sp in meta.splits.items():
        arrays = {}
        for a in names:
            try:
                arr = group[f"{name}/{a}"]
            except Exception as exc:  # noqa: BLE001
                mapped = storage_error(exc, root, key=f"{name}/{a}/zarr.json", op="read")
                if mapped is not None:
                    raise mapped from None
                reader.problems.append(_problem(name, a, None, 0, sp.num_samples,
                                                f"array missing or unreadable ({exc})"))
                continue
            what = array_problem(layout, sp, a, arr)
            if what is not None:
                reader.problems.append(_problem(name, a, None, 0, sp.num_samples, what))
                continue
            arrays[a] = arr
        if isinstance(meta, ImagesMeta):
            failed = _verify_images_split(reader, name, sp, meta, arrays)
            _check_counts(reader.problems, name, sp, failed)
            continue
        failed_samples: Optional[int] = 0
        for view in range(sp.views):
            values: dict[str, np.ndarray] = {}
            for a, arr in arrays.items():
                parts = [reader.shard(arr, name, a, view, k, s0, s1)
                         for k, (s0, s1) in enumerate(layout.shard_ranges(sp.num_samples))]
                if a in ("label", "image") and parts and all(p is not None for p in parts):
                    values[a] = np.concatenate(parts)
            failed = _check_view(reader.problems, name, sp, view, values, len(meta.classes))
            failed_samples = None if failed is None or failed_samples is None else failed_samples + failed
        _check_counts(reader.problems, name, sp, failed_samples)
    return _report(root, True, reader.checked, reader.problems)


def _verify_images_split(reader: "_Reader", name: str, sp: ImagesSplitMeta, meta: ImagesMeta,
                         arrays: dict) -> Optional[int]:
    """Read an images split shard by shard: every chunk (CRC32C), then every JPEG of the shard
    decoded strictly (all its coefficients, libjpeg's harmless warnings let pass) on a thread
    pool, its header against the width/height/sampling arrays, its label against its bytes
    (empty = failed). Returns the failed samples (None when the labels could not be read)."""
    labels, images = [], []
    ok = "label" in arrays and "image" in arrays
    for k, (s0, s1) in enumerate(reader.layout.shard_ranges(sp.num_samples)):
        got = {a: reader.shard(arr, name, a, 0, k, s0, s1) for a, arr in arrays.items()}
        if got.get("label") is None or got.get("image") is None:
            ok = False
        else:
            labels.append(got["label"])
            images.append(got["image"])
        if all(got.get(a) is not None for a in IMAGES_ARRAYS):
            reader.problems.extend(_check_jpegs(name, s0, got, meta))
    values = {"label": np.concatenate(labels), "image": np.concatenate(images)} if ok and labels else {}
    if ok and not labels:
        values = {"label": np.zeros(0, np.int32), "image": np.zeros(0, np.int32)}
    return _check_view(reader.problems, name, sp, 0, values, len(meta.classes))


def _check_jpegs(name: str, start: int, got: dict, meta: ImagesMeta) -> list[dict]:
    """The problems of one shard's JPEGs (see :func:`_verify_images_split`)."""
    samplings = {code: n for code, n in enumerate(meta.samplings)}

    def check(i: int) -> Optional[str]:
        data, label = got["jpeg"][i], int(got["label"][i])
        if label < 0:
            return None if not data else "a failed sample (label -1) holds JPEG bytes"
        if not data:
            return "no JPEG bytes for a converted sample"
        try:
            head = jpeg.read_header(data)
            jpeg.read_coefficients(data, strict=True, tolerate=jpeg.HARMLESS_WARNINGS)
        except JdctError as exc:
            return f"the JPEG does not decode: {exc.reason}"
        facts = (head["width"], head["height"], jpeg.sampling_name(head["components"], head["color_space"]))
        want = (int(got["width"][i]), int(got["height"][i]), samplings.get(int(got["sampling"][i]), "?"))
        if facts != want:
            return f"the JPEG is {facts[0]}x{facts[1]} {facts[2]}, the arrays say {want[0]}x{want[1]} {want[2]}"
        if not 0 < int(got["treatment"][i]) < len(meta.treatments):
            return f"treatment code {int(got['treatment'][i])} is not one of the store's"
        return None

    # read_coefficients releases the GIL: the shard's JPEGs decode in parallel
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(check, range(len(got["jpeg"]))))
    return [_problem(name, "jpeg", 0, start + i, start + i + 1, what) for i, what in enumerate(found) if what]


def _check_view(problems: list, name: str, sp: SplitMeta, view: int, values: dict,
                num_classes: int) -> Optional[int]:
    """Image indices and labels of one view against the metadata; returns its failed samples
    (None when its labels could not be read)."""
    n = sp.num_samples
    lab, img = values.get("label"), values.get("image")
    permutation = img is not None and img.min(initial=0) >= 0 and img.max(initial=0) < max(n, 1) \
        and len(np.unique(img)) == n
    if img is not None and not permutation:
        problems.append(_problem(name, "image", view, 0, n, "image indices are not a permutation of the split's files"))
    if lab is None:
        return None
    bad = (lab < -1) | (lab >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        problems.append(_problem(name, "label", view, i, i + 1, f"label {int(lab[i])} out of range"))
    elif permutation and n:
        file_labels = np.asarray(sp.file_labels, np.int64)
        wrong = (lab >= 0) & (lab != file_labels[img])
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            problems.append(_problem(name, "label", view, i, i + 1,
                                     "label differs from the metadata's label of its file"))
    return int((lab == -1).sum())


def _check_counts(problems: list, name: str, sp: SplitMeta, failed_samples: Optional[int]) -> None:
    c = sp.counts
    if c.converted + c.failed != c.files:
        problems.append(_problem(name, None, None, 0, sp.num_samples,
                                 "counts do not add up (converted + failed != files)"))
    if c.failed_samples is not None and failed_samples is not None and c.failed_samples != failed_samples:
        problems.append(_problem(name, "label", None, 0, sp.num_samples,
                                 f"counts.failed_samples is {c.failed_samples}, the label arrays hold "
                                 f"{failed_samples} failed samples (label -1)"))


def _verify_incomplete(root: StoreLocation, progress: Optional[ProgressFn]) -> dict:
    """Verify an interrupted conversion: every chunk of its finished shards, and list the others."""
    folder = ProgressFolder(root)
    if folder.exists():
        why = "the conversion did not finish; rerun the same `jdct convert` to resume"
    else:
        why = (f"no interrupted conversion to resume ({PROGRESS_DIR} absent): not a jdct store, or convert "
               "it again with --overwrite")
    problems = [_problem(None, None, None, 0, 0, f"metadata attrs['jdct'] missing: {why}")]
    if not folder.has_plan():
        return _report(root, False, 0, problems)
    plan = folder.read_plan()
    layout = plan.layout
    group = open_group(root)
    finished = []
    for name, view, k, s0, s1 in plan.shards():
        if folder.read_marker(name, view, k) is not None:
            finished.append((name, view, k, s0, s1))
        else:
            problems.append(_problem(name, "*", view, s0, s1, "shard not converted yet"))
    names = [spec.name for spec in layout.arrays]
    reader = _Reader(root, layout, sum(s1 - s0 for *_, s0, s1 in finished) * len(names), progress)
    for name, view, k, s0, s1 in finished:
        for a in names:
            reader.shard(group[f"{name}/{a}"], name, a, view, k, s0, s1)
    return _report(root, False, reader.checked, problems + reader.problems)


def _cancel_zarr_io() -> None:
    """Cancel what zarr's I/O event loop still runs for us and wait for it, so that an interrupted
    read leaves no pending task behind (asyncio would print "Task was destroyed but it is
    pending!" at exit). zarr keeps its loop in ``zarr.core.sync.loop``; no public API exposes it."""
    loop = (getattr(zarr_sync, "loop", None) or [None])[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def cancel_all():
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout=10)
    except Exception:  # noqa: BLE001 - best effort: the interrupt is reported either way
        pass


def render_verify_text(report: dict) -> str:
    """Text of a :func:`verify_store` report."""
    if report["ok"]:
        return f"{report['store']}: OK ({report['checked_chunks']} chunks read, every checksum matches)"
    lines = [f"{report['store']}: DAMAGED or INCOMPLETE ({len(report['problems'])} problem(s))"]
    for p in report["problems"]:
        where = "" if p["split"] is None else f"{p['split']}/{p['array'] or '-'}"
        if p["view"] is not None:
            where += f" view {p['view']}"
        if p["samples"] != [0, 0]:
            where += f" samples {p['samples'][0]}-{p['samples'][1] - 1}"
        lines.append(f"  {where.strip() or 'store'}: {p['problem']}")
    return "\n".join(lines)


__all__ = ["inspect_store", "render_store_text", "verify_store", "render_verify_text", "source_crop"]
