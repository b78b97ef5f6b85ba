"""``jdct eval`` and ``jdct predict``: use a trained checkpoint.

- :func:`evaluate` runs the exact validation pass of training (:func:`jdct_cli.train.run_validation`)
  on a split of a store: mean cross-entropy, top-1, top-5 over every sample once. Inputs are
  standardized with the statistics of the store the network was *trained* on (kept in the
  checkpoint), so a checkpoint evaluated on another store sees the normalization it learned with.
- :func:`predict` classifies JPEG files. By default each file goes through the store's *val
  transform* (resize the shorter side to round(S/0.875), centre crop S, 4:2:0 coefficients at the
  store's quality: exactly what ``jdct convert`` stores for a val image, via
  :func:`jdct_cli.transforms.convert_image`). ``direct=True`` instead feeds the coefficients read
  straight from the file (no decode, no re-encode: the paper's inference path) when the file is
  4:2:0 YCbCr with sides that are multiples of 16, and otherwise falls back to the val transform,
  saying why, in the result's ``note``.

Both return plain dicts (schema ``schemas/eval.v1.schema.json``) and never print.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from . import jpeg
from .transforms import SampleRecipe, convert_image
from .data import device_constants, dequantized_to_pixels
from .errors import CheckpointError, ConfigError, JdctError, SourceNotFoundError, StoreError
from .store import read_metadata
from .train import build_model, make_loader, resolve_device, run_validation

EVAL_FORMAT = "jdct-eval"
PREDICT_FORMAT = "jdct-predict"
FORMAT_VERSION = 1

Progress = Optional[Callable[[dict], None]]


def load_for_inference(checkpoint) -> tuple[dict, Any, str]:
    """(payload, model in eval mode on the CPU, input_kind) from a checkpoint file, a weights-only
    export or a RUN_DIR (its last.pt). CheckpointError when the weights do not fit the network."""
    payload = ckpt.load_checkpoint(checkpoint)
    model, kind = build_model(payload["arch"], int(payload["num_classes"]), payload.get("config"))
    if kind != payload["input_kind"]:
        raise CheckpointError(
            f"architecture {payload['arch']!r} now takes {kind!r} inputs, the checkpoint was trained on "
            f"{payload['input_kind']!r}", checkpoint)
    ckpt.load_model_state(model, payload, checkpoint)
    model.eval()
    return payload, model, kind


def training_store(payload: dict, checkpoint) -> str:
    """The store a checkpoint was trained on (its absolute path, as recorded); StoreError when it is
    not there any more, saying to give ``--data``."""
    recorded = (payload.get("store") or {}).get("path") or (payload.get("config") or {}).get("data")
    if not recorded:
        raise CheckpointError("the checkpoint does not say which store it was trained on: give --data", checkpoint)
    if "://" not in recorded and not Path(recorded).exists():
        raise StoreError(f"the checkpoint's training store is not there any more (moved or deleted?): give the "
                         f"store to evaluate with --data", recorded)
    return recorded


def evaluate(checkpoint: os.PathLike | str, data: Optional[os.PathLike | str] = None, *, split: str = "val",
             batch_size: Optional[int] = None, device: str = "auto", threads: Optional[int] = None,
             progress: Progress = None, requantize: Optional[str | int] = None,
             real_size: bool = True) -> dict[str, Any]:
    """Loss, top-1 and top-5 of ``checkpoint`` on ``split`` of the store ``data``.

    ``checkpoint``: a ``.pt`` file (training checkpoint or weights-only export) or a RUN_DIR (its
    ``last.pt``). ``data``: the store; default: the one the checkpoint was trained on.
    ``batch_size`` defaults to the training batch size. Returns {"format", "format_version",
    "checkpoint", "arch", "data", "split", "loss", "top1", "top5", "samples"} (top-k as
    fractions; ``top5`` null with fewer than 6 classes). Raises CheckpointError, StoreError
    (missing split, other classes), SourceNotFoundError, ConfigError.

    ``requantize``: an IJG quality (1..100) or a tables file (:mod:`jdct_cli.tables`): every
    sample's coefficients are requantized with those tables (``round(x/q) q``) before they become
    the network's inputs, and the result gains a ``requantize`` entry: the tables, the estimated
    bits per pixel (entropy of the indices) and, with ``real_size``, the mean real bits per pixel
    of the JPEG files those tables produce from each sample's image (entropy-coded bytes only).
    """
    payload, model, kind = load_for_inference(checkpoint)
    if data is None:
        data = training_store(payload, checkpoint)
    info = read_metadata(data)
    info.split(split)  # StoreError naming the store when the split is absent
    if info.classes != list(payload["classes"]):
        raise CheckpointError(
            f"the store's {len(info.classes)} classes differ from the {payload['num_classes']} the checkpoint "
            "was trained on", data)
    cfg = payload["config"]
    dev = resolve_device(device)
    model.to(dev)
    on_cuda = dev.type == "cuda"
    channels_last = bool(cfg.get("channels_last", True) and on_cuda)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    bs = int(batch_size or cfg["batch_size"])
    if bs < 1:
        raise ConfigError(f"batch size must be >= 1, not {bs}", "--batch-size")
    stats = (payload.get("store") or {}).get("stats")
    amp = bool(cfg.get("amp", True) and on_cuda)
    if requantize is not None:
        return _evaluate_requantized(checkpoint, payload, model, kind, data, split, requantize, stats,
                                     batch_size=bs, device=dev, threads=threads, amp=amp,
                                     channels_last=channels_last, real_size=real_size, progress=progress)
    loader = make_loader(data, split, batch_size=bs, train=False, seed=int(cfg.get("seed", 0)), device=dev,
                         output=kind, threads=threads, stats=stats)
    if progress is not None:
        progress({"event": "val_start", "total": len(loader)})
    val = run_validation(model, loader, device=dev, amp=amp, channels_last=channels_last, progress=progress)
    return {
        "format": EVAL_FORMAT,
        "format_version": FORMAT_VERSION,
        "checkpoint": os.fspath(checkpoint),
        "arch": payload["arch"],
        "data": os.fspath(data),
        "split": split,
        "loss": val["loss"],
        "top1": val["top1"],
        "top5": val["top5"],
        "samples": val["samples"],
    }


def _evaluate_requantized(checkpoint, payload, model, kind, data, split, requantize, stats, *, batch_size, device,
                          threads, amp, channels_last, real_size, progress) -> dict[str, Any]:
    """:func:`evaluate` with ``requantize``: the same metrics on requantized inputs, plus their cost."""
    from .tables import table_spec
    from .train.quality import requantized_eval

    spec = table_spec(requantize)
    val = requantized_eval(model, kind, stats, data, split, spec.luma, spec.chroma, batch_size=batch_size,
                           device=device, threads=threads, real_size=real_size, amp=amp,
                           channels_last=channels_last, progress=progress)
    cost = spec.to_dict()
    cost.update({"estimated_bpp": val["estimated_bpp"], "real_bpp": val.get("real_bpp"),
                 "real_bpp_min": val.get("real_bpp_min"), "real_bpp_max": val.get("real_bpp_max")})
    return {
        "format": EVAL_FORMAT,
        "format_version": FORMAT_VERSION,
        "checkpoint": os.fspath(checkpoint),
        "arch": payload["arch"],
        "data": os.fspath(data),
        "split": split,
        "loss": val["loss"],
        "top1": val["top1"],
        "top5": val["top5"],
        "samples": val["samples"],
        "requantize": cost,
    }


# ------------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------------


def direct_refusal(header: dict) -> Optional[str]:
    """Why a JPEG's own coefficients cannot be fed to the network as they are (None when they can).

    They can when the file is 3-component YCbCr 4:2:0 (Y 2x2, Cb and Cr 1x1) and both sides are
    multiples of 16, so that the block grids are exactly (H/8, W/8) and (H/16, W/16) with no
    padding blocks.
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


def predict(checkpoint: os.PathLike | str, images: Sequence[os.PathLike | str], *, direct: bool = False,
            top_k: int = 5, device: str = "auto", class_names: Optional[os.PathLike | str | dict[str, str]] = None,
            progress: Progress = None) -> dict[str, Any]:
    """Top-``top_k`` classes with softmax probabilities for each JPEG in ``images``.

    Returns {"format": "jdct-predict", "format_version": 1, "checkpoint", "arch", "predictions":
    [{"file", "mode": "val-transform"|"direct", "note": str|None, "top": [{"index", "class",
    "probability"}]}]}. ``note`` says why ``direct`` fell back to the val transform. ``class_names``
    (a file for :func:`read_class_names`, or its dict) maps the store's class folder names (e.g.
    WordNet ids) to readable names; classes it lacks keep their folder name, and a mapping that
    names none of the checkpoint's classes is a ConfigError (the wrong file). A bad image (not a
    JPEG, corrupt, missing...) does not stop the others: it is listed under "errors" as {"file",
    "reason"} (the key is present only when some image failed). A bad checkpoint raises.
    """
    if top_k < 1:
        raise ConfigError(f"top-k must be >= 1, not {top_k}", "--top-k")
    payload, model, kind = load_for_inference(checkpoint)
    store = payload.get("store") or {}
    if "size" not in store or "quant_tables" not in store:
        raise CheckpointError("the checkpoint lacks the store facts (size, quant tables) predict needs", checkpoint)
    classes = list(payload["classes"])
    names = _class_names_for(class_names, classes)
    dev = resolve_device(device)
    model.to(dev)
    results, errors = [], []
    for i, image in enumerate(images):
        path = Path(image)
        try:
            results.append(_predict_one(path, model, kind, store, classes, names, dev, direct, top_k))
        except JdctError as exc:
            errors.append({"file": os.fspath(path), "reason": exc.reason})
        if progress is not None:
            progress({"event": "predict_step", "step": i + 1, "total": len(images)})
    doc = {"format": PREDICT_FORMAT, "format_version": FORMAT_VERSION, "checkpoint": os.fspath(checkpoint),
           "arch": payload["arch"], "predictions": results}
    if errors:
        doc["errors"] = errors
    return doc


def _class_names_for(class_names, classes: list) -> dict[str, str]:
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


def _predict_one(path: Path, model, kind: str, store: dict, classes: list, names: dict, dev, direct: bool,
                 top_k: int) -> dict[str, Any]:
    """One image's prediction entry (see :func:`predict`); JdctError (naming ``path``) when unusable."""
    data = jpeg.read_bytes(path)
    mode, note = "val-transform", None
    if direct:
        header = jpeg.read_header(data, path=path)
        note = direct_refusal(header)
        if note is None:
            mode = "direct"
            y, cb, cr, quant = _direct_coefficients(data, path)
        else:
            note = f"--direct not possible: {note}; used the val transform"
    if mode == "val-transform":
        y, cb, cr, quant = _val_coefficients(data, path, store)
    inputs = model_inputs(y, cb, cr, quant, kind, store, dev)
    with torch.no_grad():
        probs = torch.softmax(model(*inputs).float(), dim=1)[0]
    k = min(top_k, probs.numel())
    p, idx = probs.topk(k)
    top = [{"index": int(j), "class": names.get(classes[int(j)], classes[int(j)]), "probability": float(q)}
           for q, j in zip(p.tolist(), idx.tolist())]
    return {"file": os.fspath(path), "mode": mode, "note": note, "top": top}


def read_class_names(path: os.PathLike | str) -> dict[str, str]:
    """Folder name -> readable name from a text file of ``<folder name><TAB or spaces><name>`` lines
    (Tiny-ImageNet's ``classes.txt``, ImageNet's ``LOC_synset_mapping.txt``). Blank lines are skipped.

    Raises SourceNotFoundError (no such file) or ConfigError naming the file and the bad line.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError("no such class-names file", path)
    names = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"unreadable class-names file ({exc})", path) from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            raise ConfigError(f"line {number} is not '<class folder> <name>': {line.strip()[:60]!r}", path)
        names[parts[0]] = parts[1].strip()
    if not names:
        raise ConfigError("the class-names file holds no '<class folder> <name>' line", path)
    return names


def model_inputs(y, cb, cr, quant, kind: str, store: dict, device):
    """Model inputs for one sample from its quantized coefficients, built as :class:`DCTLoader` does.

    ``y``/``cb``/``cr``: int16 (64, h, w) store layout; ``quant``: uint16 (3, 64) tables of *these*
    coefficients (the store's for the val transform, the file's own for ``--direct``); ``store``:
    the checkpoint's store facts (quant tables, stats). Returns a tuple for ``model(*inputs)``:
    (y, cb, cr) float32 [1, 64, h, w] for "dct" (dequantized, standardized with the store's
    per-channel stats), (x,) float32 [1, 3, 8h, 8w] for "rgb"/"ycbcr" (reconstructed pixels,
    normalized like the loader). Tests check this equals the loader's output for the same sample.
    """
    try:
        consts = device_constants({"y": quant[0], "cb": quant[1], "cr": quant[2]}, store.get("stats"),
                                  output=kind, normalize=True, device=device)
    except StoreError as exc:
        raise CheckpointError(f"the training store's facts are incomplete: {exc.args[0]}") from None
    planes = [torch.as_tensor(np.asarray(p, np.int16), device=device)[None].to(torch.float32) for p in (y, cb, cr)]
    if kind == "dct":
        # the loader's two passes (multiply, then add), in its order, so the roundings are the same
        return tuple(p.mul_(consts[n][0]).add_(consts[n][1]) for n, p in zip(("y", "cb", "cr"), planes))
    deq = [p.mul_(consts[n][0]) for n, p in zip(("y", "cb", "cr"), planes)]
    return (dequantized_to_pixels(deq, consts, kind),)
