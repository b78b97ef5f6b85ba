"""What is inside a jdct store, and whether it is intact: ``jdct inspect OUT.zarr`` and ``jdct verify``.

- :func:`inspect_store` -> a JSON-able document (schema ``schemas/store-inspect.v1.schema.json``):
  splits, counts, array shapes/chunking/codecs, bytes on disk, bytes per sample, compression
  ratio, classes, failures and coefficient statistics; optionally reconstructs samples to pixels
  (numpy block IDCT) and compares them with their source crop re-made with Pillow.
- :func:`render_store_text` -> the same as text.
- :func:`verify_store` -> reads every chunk (zarr checks each chunk's CRC32C and raises on a
  mismatch), checks shard files, shapes, dtypes, label and image ranges against attrs["jdct"];
  an incomplete store lists the shards its conversion has not finished and checks the finished ones.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import store as st
from .errors import ConfigError, IncompleteStoreError, StoreCorruptionError, StoreError

INSPECT_FORMAT = "jdct-store-inspect"
INSPECT_VERSION = 1


def source_crop(source_file: Path, box, size: int, exif: str = "ignore") -> np.ndarray:
    """The crop a sample was made from, re-made independently with Pillow: decode the source,
    (turn it upright when ``exif`` is "apply"), resize ``box`` (x, y, w, h, source pixels) to
    uint8 ``(size, size, 3)`` with Pillow's bilinear filter."""
    from PIL import Image, ImageOps

    with Image.open(source_file) as im:
        im.draft(None, None)
        if exif == "apply":
            im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        x, y, w, h = (float(v) for v in box)
        out = im.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + w, y + h), reducing_gap=None)
        return np.asarray(out, dtype=np.uint8)


def inspect_store(path: os.PathLike | str, *, sample: Optional[int] = None, plot: Optional[str] = None,
                  split: Optional[str] = None) -> dict:
    """The inspection document of the store at ``path`` (see the module docstring).

    ``sample``: reconstruct sample number ``sample`` (0-based) of view 0 of ``split`` (default:
    the store's first split) to pixels (block IDCT) and report its file, class, box and the PSNR
    (dB) of the reconstruction against the source crop re-made with Pillow (None when the source
    file is gone). ``plot``: write a PNG with the reconstruction next to its source crop; without
    ``sample``, the first 4 converted samples of the split are drawn. A sample index out of range
    is a ConfigError; a failed sample (label -1) a StoreError naming its file and reason.
    Raises SourceNotFoundError / StoreError / IncompleteStoreError from :func:`store.read_metadata`.
    """
    import zarr

    info = st.read_metadata(path)
    meta = info.meta
    root = Path(path)
    size = int(meta["size"])
    group = zarr.open_group(os.fspath(root), mode="r")
    splits = {}
    total_bytes = 0
    for name, sp in meta["splits"].items():
        arrays = {}
        coef_bytes = split_bytes = 0
        for a in st.ALL_ARRAYS:
            arr = group[f"{name}/{a}"]
            nbytes = st.dir_bytes(root / name / a)
            split_bytes += nbytes
            if a in st.COEFFICIENT_ARRAYS:
                coef_bytes += nbytes
            arrays[a] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "chunks": list(arr.chunks),
                         "shards": list(arr.shards) if arr.shards else None, "bytes_on_disk": nbytes}
        samples = sp["views"] * sp["num_samples"]
        total_bytes += split_bytes
        splits[name] = {
            "views": sp["views"], "num_samples": sp["num_samples"], "counts": sp["counts"],
            "failures": sp["failures"], "arrays": arrays, "bytes_on_disk": split_bytes,
            "bytes_per_sample": split_bytes / samples if samples else None,
            "compression_ratio": st.raw_sample_bytes(size) * samples / coef_bytes if coef_bytes else None,
        }
    stats = meta.get("stats", {})
    doc: dict[str, Any] = {
        "kind": "store", "format": INSPECT_FORMAT, "format_version": INSPECT_VERSION,
        "path": os.fspath(root), "store_format": meta["format"], "store_format_version": meta["format_version"],
        "jdct_version": meta["jdct_version"], "libjpeg_version": meta["libjpeg_version"],
        "size": size, "quality": meta["quality"], "subsampling": meta["subsampling"],
        "coefficient_order": meta["coefficient_order"], "seed": meta["seed"],
        "chunk_samples": meta["chunk_samples"], "shard_samples": meta["shard_samples"], "codec": meta["codec"],
        "transform": meta["transform"], "classes": meta["classes"], "num_classes": len(meta["classes"]),
        "quant_tables": meta["quant_tables"], "splits": splits, "bytes_on_disk": total_bytes,
        "stats": {"split": stats.get("split"),
                  **{c: {"mean": stats[c]["mean"], "std": stats[c]["std"]} for c in st.COEFFICIENT_ARRAYS if c in stats}},
        "samples": [],
    }
    if sample is not None or plot:
        doc["samples"], pictures = _reconstruct_samples(group, meta, root, split, sample)
        if plot:
            _plot_samples(doc["samples"], pictures, plot)
            doc["plot"] = os.fspath(plot)
    return doc


def _reconstruct_samples(group, meta, root: Path, split: Optional[str], sample: Optional[int]):
    """Reconstruct sample ``sample`` of view 0 of ``split`` (or, when None, its first 4 converted
    samples): ([per-sample report], [(reconstruction, source crop or None)])."""
    from .dct import psnr, reconstruct

    split = split or next(iter(meta["splits"]))
    if split not in meta["splits"]:
        raise ConfigError(f"no split {split!r} in this store (it has: {', '.join(meta['splits'])})", root)
    sp = meta["splits"][split]
    q_luma, q_chroma = meta["quant_tables"]["luma"], meta["quant_tables"]["chroma"]
    labels = _read(group, root, split, "label", 0)
    if sample is None:
        indices = np.flatnonzero(labels >= 0)[:4]
    else:
        if not 0 <= sample < len(labels):
            raise ConfigError(f"--sample {sample} is out of range: {split} has samples 0 to {len(labels) - 1}",
                              root)
        if labels[sample] < 0:
            image = int(_read(group, root, split, "image", (0, sample)))
            failure = next((f for f in sp["failures"] if f["file"] == sp["files"][image]), {})
            raise StoreError(f"sample {sample} of {split} is a failed conversion of {sp['files'][image]} "
                             f"({failure.get('reason', 'no reason recorded')}): it holds no image", root)
        indices = [sample]
    out, pictures = [], []
    source_root = Path(meta.get("source", ""))
    for idx in indices:
        idx = int(idx)
        y, cb, cr, image, box = (_read(group, root, split, a, (0, idx)) for a in ("y", "cb", "cr", "image", "box"))
        image = int(image)
        box = [float(v) for v in box]
        rec = reconstruct(y, cb, cr, q_luma, q_chroma)
        rel = sp["files"][image]
        src = source_root / rel
        ref = None
        if src.is_file():
            try:
                ref = source_crop(src, box, int(meta["size"]), meta["transform"].get("exif", "ignore"))
            except (OSError, ValueError):
                ref = None
        label = int(labels[idx])
        out.append({"split": split, "view": 0, "index": idx, "image": image, "file": rel, "label": label,
                    "class": meta["classes"][label], "box": box,
                    "psnr_db": None if ref is None else round(min(psnr(rec, ref), 99.0), 2)})
        pictures.append((rec, ref))
    return out, pictures


def _read(group, root: Path, split: str, array: str, index):
    """``group[split/array][index]``; a damaged chunk (checksum, decompression) is a StoreCorruptionError."""
    try:
        return group[f"{split}/{array}"][index]
    except Exception as exc:  # noqa: BLE001 - zarr raises ValueError, RuntimeError... for damage
        raise StoreCorruptionError(f"{split}/{array} is unreadable ({exc}); `jdct verify` lists the damage",
                                   root) from None


def _plot_samples(samples, pictures, plot) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(pictures), 1)
    fig, axes = plt.subplots(n, 2, figsize=(5, 2.6 * n), squeeze=False)
    for row, (s, (rec, ref)) in enumerate(zip(samples, pictures)):
        axes[row][0].imshow(rec)
        axes[row][0].set_title(f"#{s['index']} {s['class']} (IDCT)", fontsize=8)
        if ref is not None:
            axes[row][1].imshow(ref)
            axes[row][1].set_title(f"source crop, PSNR {s['psnr_db']} dB", fontsize=8)
        else:
            axes[row][1].text(0.5, 0.5, "source file not found", ha="center", va="center")
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    from .inspect_jpeg import write_output

    try:
        write_output(plot, lambda fh: fig.savefig(fh, format="png", dpi=100))
    finally:
        plt.close(fig)


def render_store_text(doc: dict) -> str:
    """Human-readable text of an :func:`inspect_store` document."""
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
    for c in st.COEFFICIENT_ARRAYS:
        if c in stats:
            lines.append(f"  stats {c} ({stats['split']}): DC mean {stats[c]['mean'][0]:.2f} std {stats[c]['std'][0]:.2f};"
                         f" AC(0,1) mean {stats[c]['mean'][1]:.2f} std {stats[c]['std'][1]:.2f}")
    for s in doc.get("samples", []):
        p = "source missing" if s["psnr_db"] is None else f"PSNR {s['psnr_db']:.2f} dB vs source crop"
        lines.append(f"  sample {s['split']}[{s['index']}]: {s['file']} ({s['class']}), box "
                     + ",".join(f"{v:.1f}" for v in s["box"]) + f": {p}")
    if doc.get("plot"):
        lines.append(f"  wrote {doc['plot']}")
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


def _read_shard(root: Path, arr, name: str, array: str, view: int, shard: int, s0: int, s1: int, chunk: int,
                problems: list) -> tuple[Optional[np.ndarray], int]:
    """Read one shard chunk by chunk (zarr checks each chunk's CRC32C). Returns (values or None
    when anything failed, chunks read); appends problems."""
    if not (root / name / array / st.shard_key(array, view, shard)).is_file():
        problems.append(_problem(name, array, view, s0, s1, "shard file missing"))
        return None, 0
    parts, ok, checked = [], True, 0
    for c0 in range(s0, s1, chunk):
        c1 = min(c0 + chunk, s1)
        checked += 1
        try:
            parts.append(arr[view, c0:c1])
        except Exception as exc:  # noqa: BLE001 - checksum ValueError, decompression errors...
            problems.append(_problem(name, array, view, c0, c1, f"unreadable chunk: {exc}"))
            ok = False
    return (np.concatenate(parts) if ok and parts else None), checked


def _incomplete_report(root: Path, progress=None) -> dict:
    """Verify an interrupted conversion: every chunk of its finished shards, and list the others."""
    import zarr

    plan_path = root / st.PROGRESS_DIR / "plan.json"
    if (root / st.PROGRESS_DIR).is_dir():
        why = "the conversion did not finish; rerun the same `jdct convert` to resume"
    else:
        why = (f"no interrupted conversion to resume ({st.PROGRESS_DIR} absent): not a jdct store, or convert "
               "it again with --overwrite")
    problems = [_problem(None, None, None, 0, 0, f"metadata attrs['jdct'] missing: {why}")]
    checked = 0
    if plan_path.is_file():
        try:
            plan = json.loads(plan_path.read_text())
            opts = plan["options"]
            shard, chunk = int(opts["shard_samples"]), int(opts["chunk_samples"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"unreadable conversion plan ({exc!r})", plan_path) from None
        group = zarr.open_group(os.fspath(root), mode="r")
        todo = []
        for name, sp in plan["splits"].items():
            n = len(sp["files"])
            for view in range(sp["views"]):
                for k, (s0, s1) in enumerate(st.shard_ranges(n, shard)):
                    if (root / st.PROGRESS_DIR / f"{name}-v{view}-s{k}.json").is_file():
                        todo.append((name, view, k, s0, s1))
                    else:
                        problems.append(_problem(name, "*", view, s0, s1, "shard not converted yet"))
        total = sum(s1 - s0 for *_, s0, s1 in todo) * len(st.ALL_ARRAYS)
        done = 0
        for name, view, k, s0, s1 in todo:
            for a in st.ALL_ARRAYS:
                _, c = _read_shard(root, group[f"{name}/{a}"], name, a, view, k, s0, s1, chunk, problems)
                checked += c
                done += s1 - s0
                if progress:
                    progress("verify", done, total)
    return {"store": os.fspath(root), "ok": False, "complete": False, "checked_chunks": checked,
            "problems": _merge(problems)}


def verify_store(path: os.PathLike | str, progress: Optional[Callable[[str, int, int], None]] = None) -> dict:
    """Check the store at ``path`` chunk by chunk; never raises for damage, reports it.

    Returns {"store", "ok" (bool), "complete" (bool), "checked_chunks" (int), "problems": [{"split",
    "array", "view", "samples": [start, stop), "problem"}]}. Raises SourceNotFoundError when
    ``path`` does not exist and StoreError when it is not a jdct store at all.
    """
    import zarr

    root = Path(path)
    try:
        info = st.read_metadata(root)
    except IncompleteStoreError:
        return _incomplete_report(root, progress)
    meta = info.meta
    size, chunk, shard = int(meta["size"]), int(meta["chunk_samples"]), int(meta["shard_samples"])
    num_classes = len(meta["classes"])
    try:
        group = zarr.open_group(os.fspath(root), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for a broken hierarchy
        raise StoreError(f"cannot open as a Zarr group ({exc})", root) from None
    problems: list[dict] = []
    total = sum(sp["views"] * sp["num_samples"] for sp in meta["splits"].values()) * len(st.ALL_ARRAYS)
    done = checked = 0
    for name, sp in meta["splits"].items():
        views, n = int(sp["views"]), int(sp["num_samples"])
        file_labels = np.asarray(sp["file_labels"], np.int64)
        if len(sp["files"]) != n or len(file_labels) != n:
            problems.append(_problem(name, None, None, 0, n, "metadata file list length differs from num_samples"))
        arrays = {}
        for a in st.ALL_ARRAYS:
            try:
                arr = group[f"{name}/{a}"]
            except Exception as exc:  # noqa: BLE001
                problems.append(_problem(name, a, None, 0, n, f"array missing or unreadable ({exc})"))
                continue
            want = (views, n) + st.sample_shape(a, size)
            if tuple(arr.shape) != want or str(arr.dtype) != st.ARRAY_DTYPES[a]:
                problems.append(_problem(name, a, None, 0, n, f"shape {tuple(arr.shape)} {arr.dtype}, metadata "
                                         f"says {want} {st.ARRAY_DTYPES[a]}"))
                continue
            arrays[a] = arr
        for view in range(views):
            values: dict[str, np.ndarray] = {}
            for a, arr in arrays.items():
                parts = []
                for k, (s0, s1) in enumerate(st.shard_ranges(n, shard)):
                    block, c = _read_shard(root, arr, name, a, view, k, s0, s1, chunk, problems)
                    checked += c
                    parts.append(block)
                    done += s1 - s0
                    if progress:
                        progress("verify", done, total)
                if a in ("label", "image") and parts and all(p is not None for p in parts):
                    values[a] = np.concatenate(parts)
            lab, img = values.get("label"), values.get("image")
            if img is not None:
                if img.min(initial=0) < 0 or img.max(initial=0) >= max(n, 1) or len(np.unique(img)) != n:
                    problems.append(_problem(name, "image", view, 0, n,
                                             "image indices are not a permutation of the split's files"))
            if lab is not None:
                bad = (lab < -1) | (lab >= num_classes)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    problems.append(_problem(name, "label", view, i, i + 1, f"label {int(lab[i])} out of range"))
                elif img is not None and len(np.unique(img)) == n and n:
                    ok = lab >= 0
                    wrong = ok & (lab != file_labels[np.clip(img, 0, n - 1)])
                    if wrong.any():
                        i = int(np.flatnonzero(wrong)[0])
                        problems.append(_problem(name, "label", view, i, i + 1,
                                                 "label differs from the metadata's label of its file"))
        c = sp["counts"]
        if c["converted"] + c["failed"] != c["files"]:
            problems.append(_problem(name, None, None, 0, n, "counts do not add up (converted + failed != files)"))
    return {"store": os.fspath(root), "ok": not problems, "complete": True, "checked_chunks": checked,
            "problems": _merge(problems)}


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
