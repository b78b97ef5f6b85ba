"""``jdct eval``, and what ``jdct predict`` (``jdct_cli/predict.py``) shares with it: use a trained checkpoint.

- :func:`evaluate` runs the exact validation pass of training (:func:`jdct_cli.train.run_validation`)
  on a split of a store: mean cross-entropy, top-1, top-5 over every sample once. Inputs are
  standardized with the statistics of the store the network was *trained* on (kept in the
  checkpoint), so a checkpoint evaluated on another store sees the normalization it learned with.
- :func:`load_for_inference` (a checkpoint's network in eval mode), :func:`model_inputs` (one
  sample's coefficients -> model inputs, exactly as the loader builds them) and
  :func:`read_class_names` serve :mod:`jdct_cli.predict`, which classifies JPEG files.

``evaluate`` returns a plain dict (schema ``schemas/eval.v1.schema.json``) and never prints.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from . import checkpoint as ckpt
from . import jpeg
from .transforms import SampleRecipe, convert_image
from .data import coefficients_to_inputs, device_constants
from .errors import CheckpointError, ConfigError, JdctError, SourceNotFoundError, StoreError
from .store import as_location, read_metadata
from .train import build_model, make_loader, resolve_device, run_validation

EVAL_FORMAT = "jdct-eval"
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
             real_size: bool = True, storage_options: Optional[dict] = None, cache_dir=None,
             cache_bytes: Optional[int] = None) -> dict[str, Any]:
    """Loss, top-1 and top-5 of ``checkpoint`` on ``split`` of the store ``data``.

    ``checkpoint``: a ``.pt`` file (training checkpoint or weights-only export) or a RUN_DIR (its
    ``last.pt``). ``data``: the store; default: the one the checkpoint was trained on.
    ``batch_size`` defaults to the training batch size. Returns {"format", "format_version",
    "checkpoint", "arch", "data", "split", "loss", "top1", "top5", "samples"} (top-k as
    fractions; ``top5`` null with fewer than 6 classes). Raises CheckpointError, StoreError
    (missing split, other classes), SourceNotFoundError, ConfigError, StorageError. A store on object
    storage: ``storage_options``, ``cache_dir``, ``cache_bytes`` as for :class:`jdct_cli.data.DCTLoader`.

    ``requantize``: an IJG quality (1..100) or a tables file (:mod:`jdct_cli.tables`): every
    sample's coefficients are requantized with those tables (``round(x/q) q``) before they become
    the network's inputs, and the result gains a ``requantize`` entry: the tables, the estimated
    bits per pixel (entropy of the indices) and, with ``real_size``, the mean real bits per pixel
    of the JPEG files those tables produce from each sample's image (entropy-coded bytes only).
    """
    payload, model, kind = load_for_inference(checkpoint)
    if data is None:
        data = training_store(payload, checkpoint)
    data = as_location(data, storage_options)
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
    # an images store is cropped at the size the run validated at (its checkpoint's store facts)
    size = (payload.get("store") or {}).get("size") if info.layout_name == "images" else None
    if requantize is not None:
        return _evaluate_requantized(checkpoint, payload, model, kind, data, split, requantize, stats,
                                     batch_size=bs, device=dev, threads=threads, amp=amp,
                                     channels_last=channels_last, real_size=real_size, progress=progress,
                                     size=size, cache_dir=cache_dir, cache_bytes=cache_bytes)
    loader = make_loader(data, split, batch_size=bs, train=False, seed=int(cfg.get("seed", 0)), device=dev,
                         output=kind, threads=threads, stats=stats, cache_dir=cache_dir, cache_bytes=cache_bytes,
                         size=size)
    if progress is not None:
        progress({"event": "val_start", "total": len(loader)})
    val = run_validation(model, loader, device=dev, amp=amp, channels_last=channels_last, progress=progress)
    return _eval_document(checkpoint, payload, data, split, val)


def _eval_document(checkpoint, payload, data, split: str, val: dict, **extra) -> dict[str, Any]:
    """The ``jdct-eval`` document (``schemas/eval.v1.schema.json``) of one validation pass."""
    return {
        "format": EVAL_FORMAT,
        "format_version": FORMAT_VERSION,
        "checkpoint": os.fspath(checkpoint),
        "arch": payload["arch"],
        "data": str(data),
        "split": split,
        "loss": val["loss"],
        "top1": val["top1"],
        "top5": val["top5"],
        "samples": val["samples"],
        **extra,
    }


def _evaluate_requantized(checkpoint, payload, model, kind, data, split, requantize, stats, *, batch_size, device,
                          threads, amp, channels_last, real_size, progress, size=None, cache_dir=None,
                          cache_bytes=None) -> dict[str, Any]:
    """:func:`evaluate` with ``requantize``: the same metrics on requantized inputs, plus their cost."""
    from .tables import table_spec
    from .train.quality import requantized_eval

    spec = table_spec(requantize)
    val = requantized_eval(model, kind, stats, data, split, spec.luma, spec.chroma, batch_size=batch_size,
                           device=device, threads=threads, real_size=real_size, amp=amp,
                           channels_last=channels_last, progress=progress, size=size, cache_dir=cache_dir,
                           cache_bytes=cache_bytes)
    cost = spec.to_dict()
    cost.update({"estimated_bpp": val["estimated_bpp"], "real_bpp": val.get("real_bpp"),
                 "real_bpp_min": val.get("real_bpp_min"), "real_bpp_max": val.get("real_bpp_max")})
    return _eval_document(checkpoint, payload, data, split, val, requantize=cost)


# ------------------------------------------------------------------------------------------------
# predict lives in jdct_cli/predict.py; its names stay importable from here
# ------------------------------------------------------------------------------------------------

_PREDICT_NAMES = {"predict": "predict", "direct_refusal": "direct_refusal", "_val_coefficients": "_val_coefficients",
                  "_direct_coefficients": "_direct_coefficients", "_class_names_for": "class_names_for"}


def __getattr__(name: str):
    # imported on first use: jdct_cli.predict itself imports this module
    if name in _PREDICT_NAMES:
        from . import predict as _predict

        return getattr(_predict, _PREDICT_NAMES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    """Model inputs for one sample from its quantized coefficients, by the loader's own conversion
    (:func:`jdct_cli.data.coefficients_to_inputs`).

    ``y``/``cb``/``cr``: int16 (64, h, w) store layout; ``quant``: uint16 (3, 64) tables of *these*
    coefficients (the store's for the val transform, the file's own for ``--direct``); ``store``:
    the checkpoint's store facts (quant tables, stats). Returns a tuple for ``model(*inputs)``:
    (y, cb, cr) float32 [1, 64, h, w] for "dct" (dequantized, standardized with the store's
    per-channel stats), (x,) float32 [1, 3, 8h, 8w] for "rgb"/"ycbcr" (reconstructed pixels,
    normalized like the loader).
    """
    try:
        consts = device_constants({"y": quant[0], "cb": quant[1], "cr": quant[2]}, store.get("stats"),
                                  output=kind, normalize=True, device=device)
    except StoreError as exc:
        raise CheckpointError(f"the training store's facts are incomplete: {exc.args[0]}") from None
    planes = [torch.as_tensor(np.asarray(p, np.int16), device=device)[None] for p in (y, cb, cr)]
    inputs = coefficients_to_inputs(planes, consts, kind)
    return inputs if kind == "dct" else (inputs,)
