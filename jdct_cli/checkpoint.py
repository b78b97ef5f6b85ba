"""The on-disk format of a jdct training checkpoint (``last.pt``, ``best.pt``).

Format ``jdct-checkpoint``, ``FORMAT_VERSION`` 1. A checkpoint is a ``torch.save`` of one plain
dict that ``torch.load(weights_only=True)`` accepts (dicts, lists, tensors, ints, floats, strings,
bools, None — no pickled classes). The JSON-like part (every key except the tensor-holding
``model``, ``optimizer``, ``scaler``, ``rng`` and ``loader``) is validated against
``schemas/checkpoint.v1.schema.json``::

    format: "jdct-checkpoint"      format_version: 1      jdct_version: str
    arch: str                      num_classes: int        classes: [str]
    input_kind: "dct"|"rgb"|"ycbcr"
    config: {...}                  the resolved TrainConfig (config.py)
    store: {...}                   attrs["jdct"] facts of the training store predict needs:
                                   size, quality, subsampling, quant_tables, stats, transform.val
    epoch: int                     epochs completed
    step: int                      optimizer steps taken (over the whole run)
    mid_epoch: bool                true when saved inside an epoch (Ctrl-C): resume re-enters it
    epoch_sums: {"loss": float, "correct": int, "count": int}  partial train sums of that epoch
    best_top1: float | None        best val top-1 so far (fraction in [0, 1])
    metrics: {...} | None          the last epoch's metrics line (as in metrics.jsonl)
    scheduler: {"step": int, "base_lr": float, "steps_per_epoch": int}
    model: {name: tensor}          state_dict of the bare model (no DDP/compile prefixes)
    optimizer: {...}               torch.optim.SGD state_dict
    scaler: {...}                  torch.amp.GradScaler state_dict ({} when disabled, as with bf16)
    loader: {...}                  the training DCTLoader's state_dict (position in the epoch)
    rng: {"torch": uint8 tensor}   the CPU generator state

Runs with a trainable JPEG layer (``jdct train --jpeg-layer learned``) add two keys (absent
otherwise, so older checkpoints read as before): ``jpeg_tables`` {"luma", "chroma": 64 ints
1..255 (what libjpeg would use), "luma_float", "chroma_float": the learned steps} and
``jpeg_optimizer``, the tables' own optimizer state (resume only). The tables themselves are
also in ``model`` (``jpeg.tables.luma``...), next to the layer's normalization buffers.

A *weights-only export* (``jdct export``, :func:`export_weights`) is the same format without the
resume state: ``weights_only: true``, no ``mid_epoch``/``epoch_sums``/``scheduler`` and none of
``optimizer``, ``scaler``, ``loader``, ``rng`` (half the size: SGD's momentum buffers are as large
as the weights). ``jdct eval`` and ``predict`` read it; ``jdct train --resume`` refuses it.

Files are written atomically: a temporary file in the same folder, fsync, then ``os.replace``,
after checking that the filesystem has room for it (:func:`check_free_space`). torch is imported
only by the functions that read or write a file, so the format's constants and checks import
without it.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from . import __version__
from .errors import CheckpointError, NoSpaceError, SourceNotFoundError
from .fileio import atomic_write

FORMAT_NAME = "jdct-checkpoint"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
#: Keys holding tensors or torch state; everything else is JSON-like and schema-checked.
TENSOR_KEYS = ("model", "optimizer", "scaler", "rng", "loader", "jpeg_optimizer")
REQUIRED_KEYS = ("format", "format_version", "arch", "num_classes", "classes", "input_kind", "config", "model")
#: What a resumable checkpoint has beyond REQUIRED_KEYS, and a weights-only export leaves out.
RESUME_KEYS = ("mid_epoch", "epoch_sums", "scheduler", "optimizer", "scaler", "loader", "rng")
#: Keys a weights-only export keeps (those present in the source checkpoint).
EXPORT_KEYS = ("format", "format_version", "jdct_version", "arch", "num_classes", "classes", "input_kind",
               "config", "store", "epoch", "step", "best_top1", "metrics", "model")
#: Keys of some checkpoints only (a JPEG layer's tables) that an export keeps too.
OPTIONAL_EXPORT_KEYS = ("jpeg_tables",)
SCHEMA_NAME = "checkpoint.v1.schema.json"
#: Room kept free beyond a checkpoint's own size: filesystem metadata and whatever else writes there.
FREE_SPACE_MARGIN = 64 << 20


def schema_path() -> Path:
    """Where the checkpoint JSON Schema lives (repository ``schemas/`` or the installed package)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "schemas" / SCHEMA_NAME, here / "schemas" / SCHEMA_NAME):
        if candidate.is_file():
            return candidate
    try:
        return Path(str(resources.files("jdct_cli.schemas") / SCHEMA_NAME))
    except Exception:  # no installed schemas package either
        return here.parent / "schemas" / SCHEMA_NAME


def sub_schema(name: str) -> dict[str, Any]:
    """The schema of one of the checkpoint schema's ``$defs`` on its own: ``"config"`` (also
    RUN_DIR/config.json), ``"metrics"`` (a line of metrics.jsonl) or ``"store"``."""
    schema = json.loads(schema_path().read_text())
    return {"$schema": schema["$schema"], "$ref": f"#/$defs/{name}", "$defs": schema["$defs"]}


def json_part(payload: dict[str, Any]) -> dict[str, Any]:
    """The schema-checked part of a checkpoint dict (everything but the tensor-holding keys)."""
    return {k: v for k, v in payload.items() if k not in TENSOR_KEYS}


def atomic_link(src: os.PathLike | str, dst: os.PathLike | str) -> None:
    """Make ``dst`` an atomic copy of the finished file ``src`` (a hard link when the filesystem
    allows, else a copy), replacing ``dst`` in one rename.

    ``best.pt`` is the same bytes as the ``last.pt`` just written; a hard link avoids writing a
    ~200 MB file twice, and since ``last.pt`` is later *replaced* (new inode), ``best.pt`` keeps its
    content.
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here (some network filesystems): copy
            with open(src, "rb") as source:
                atomic_write(tmp, lambda fh: shutil.copyfileobj(source, fh))
        os.replace(tmp, dst)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def payload_bytes(payload: Any) -> int:
    """Bytes of the tensors in ``payload`` (nested dicts/lists): about the size ``torch.save`` writes."""
    if hasattr(payload, "untyped_storage"):
        return payload.numel() * payload.element_size()
    if isinstance(payload, dict):
        return sum(payload_bytes(v) for v in payload.values())
    if isinstance(payload, (list, tuple)):
        return sum(payload_bytes(v) for v in payload)
    return 0


def check_free_space(path: os.PathLike | str, needed: int) -> None:
    """NoSpaceError unless the filesystem of ``path``'s folder has ``needed`` bytes free plus
    :data:`FREE_SPACE_MARGIN` (the folder must exist)."""
    path = Path(path)
    free = shutil.disk_usage(path.parent).free
    if free < needed + FREE_SPACE_MARGIN:
        raise NoSpaceError(
            f"not enough free space to write this checkpoint: it needs about {needed / 1e6:.0f} MB and "
            f"{free / 1e6:.0f} MB are free; free some space (or resume with another --out) and run again",
            path, needed=needed, free=free)


def save_checkpoint(path: os.PathLike | str, payload: dict[str, Any]) -> int:
    """Write ``payload`` (must already carry format/format_version) atomically with torch.save.

    Checks the free space first (NoSpaceError, the old file left intact) and turns a full disk
    met while writing into the same error. Returns the size written in bytes.
    """
    import torch

    if payload.get("format") != FORMAT_NAME or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError("refusing to write a payload without this jdct's format/version", path)
    needed = payload_bytes(payload) + (1 << 20)
    check_free_space(path, needed)
    try:
        atomic_write(path, lambda fh: torch.save(payload, fh))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceError(f"the disk filled up while writing this checkpoint ({exc.strerror}); the previous "
                               "one is intact: free some space and run again", path, needed=needed) from None
        raise
    return Path(path).stat().st_size


def build_payload(*, config: dict, arch: str, classes: list, input_kind: str, store: dict, epoch: int, step: int,
                  mid_epoch: bool, epoch_sums: dict, best_top1: Optional[float], metrics: Optional[dict],
                  steps_per_epoch: int, model, optimizer, scaler, loader_state: dict, rng_state) -> dict[str, Any]:
    """A training checkpoint (the layout in this module's docstring) of the state given.

    ``model``: the bare module (no DDP/compile wrapper); its state is copied to the CPU.
    ``epoch``: epochs completed; ``step``: optimizer steps over the whole run; ``mid_epoch``: saved
    inside epoch ``epoch + 1`` with ``epoch_sums`` its partial train sums (all ranks' together).
    """
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "jdct_version": __version__,
        "arch": arch,
        "num_classes": len(classes),
        "classes": list(classes),
        "input_kind": input_kind,
        "config": dict(config),
        "store": dict(store),
        "epoch": int(epoch),
        "step": int(step),
        "mid_epoch": bool(mid_epoch),
        "epoch_sums": dict(epoch_sums),
        "best_top1": best_top1,
        "metrics": metrics,
        "scheduler": {"step": int(step), "base_lr": config["lr"], "steps_per_epoch": int(steps_per_epoch)},
        "model": {k: v.detach().to("cpu") for k, v in model.state_dict().items()},
        "optimizer": _to_cpu(optimizer.state_dict()),
        "scaler": scaler.state_dict(),
        "loader": loader_state,
        "rng": {"torch": rng_state},
    }


def jpeg_layer_entries(tables, optimizer) -> dict[str, Any]:
    """The checkpoint keys of a JPEG layer: ``jpeg_tables`` (JSON-like: libjpeg's integer tables
    and the float steps) and ``jpeg_optimizer`` (the tables' optimizer state, on the CPU).
    ``tables``: a :class:`jdct_cli.jpegmath.learned.QuantTables`."""
    luma, chroma = tables.as_libjpeg()
    return {
        "jpeg_tables": {"luma": luma, "chroma": chroma,
                        "luma_float": [float(v) for v in tables.luma.detach().cpu().tolist()],
                        "chroma_float": [float(v) for v in tables.chroma.detach().cpu().tolist()]},
        "jpeg_optimizer": _to_cpu(optimizer.state_dict()),
    }


def _to_cpu(state: Any) -> Any:
    """``state`` (nested dicts/lists/tuples of tensors, e.g. an optimizer's state_dict) with every
    tensor on the CPU: a checkpoint written on a GPU must load where there is none (the optimizer
    moves its state back to its parameters' device when it loads it)."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu")
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(v) for v in state)
    return state


def is_weights_only(payload: dict[str, Any]) -> bool:
    """True for a weights-only export (no optimizer or loader state: cannot be resumed)."""
    return bool(payload.get("weights_only"))


def check_resumable(payload: dict[str, Any], path: os.PathLike | str) -> None:
    """CheckpointError unless ``payload`` holds everything a resume needs."""
    if is_weights_only(payload):
        raise CheckpointError("this is a weights-only export (jdct export): it holds no optimizer or loader state "
                              "and cannot be resumed; resume from the run's own last.pt", path)
    missing = [k for k in RESUME_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"cannot resume from this checkpoint: it lacks {', '.join(missing)}", path)


def export_weights(src: os.PathLike | str, dst: os.PathLike | str) -> dict[str, Any]:
    """Write a weights-only copy of checkpoint ``src`` (a .pt file or a RUN_DIR's last.pt) to ``dst``.

    Keeps what ``eval``/``predict`` need (architecture, classes, weights, the training store's
    facts, config and last metrics) and drops the resume state. Refuses to overwrite ``src``.
    Returns {"source", "out", "source_bytes", "bytes", "epoch", "arch"}.
    """
    src_path = Path(src) / "last.pt" if Path(src).is_dir() else Path(src)
    payload = load_checkpoint(src_path)
    dst = Path(dst)
    if dst.is_dir():
        raise CheckpointError("is a folder: give the file to write, e.g. model.pt", dst)
    if dst.exists() and dst.resolve() == src_path.resolve():
        raise CheckpointError("the export would overwrite its source checkpoint: give another file name", dst)
    if not dst.parent.is_dir():
        raise SourceNotFoundError("no such folder to write the export into", dst.parent)
    out = {k: payload[k] for k in EXPORT_KEYS + OPTIONAL_EXPORT_KEYS if k in payload}
    out["weights_only"] = True
    size = save_checkpoint(dst, out)
    return {"source": os.fspath(src_path), "out": os.fspath(dst), "source_bytes": src_path.stat().st_size,
            "bytes": size, "epoch": payload.get("epoch"), "arch": payload["arch"]}


def load_checkpoint(
    path: os.PathLike | str, *, arch: Optional[str] = None, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load and check a checkpoint with ``torch.load(weights_only=True)``.

    Raises SourceNotFoundError (no such file), CheckpointError (not a torch file, not a jdct
    checkpoint, another format version, missing keys, or ``arch`` given and different).
    """
    import torch

    path = Path(path)
    if path.is_dir():
        # A RUN_DIR: its last checkpoint.
        path = path / "last.pt"
    if not path.is_file():
        raise SourceNotFoundError("no such checkpoint", path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError... for bad files
        raise CheckpointError(_unreadable_reason(path, exc), path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError("not a jdct checkpoint (no 'format': 'jdct-checkpoint')", path)
    version = payload.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"checkpoint format version {version!r} is not supported by this jdct (reads {list(SUPPORTED_VERSIONS)})",
            path,
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"incomplete checkpoint: missing {', '.join(missing)}", path)
    if arch is not None and payload["arch"] != arch:
        raise CheckpointError(f"checkpoint is for architecture {payload['arch']!r}, not {arch!r}", path)
    return payload


def _unreadable_reason(path: Path, exc: Exception) -> str:
    """Why torch.load refused ``path``, in the user's terms. torch's own weights_only message
    advises loading with ``weights_only=False``, which a user must not do with an untrusted file."""
    if not zipfile.is_zipfile(path):
        return "not a readable checkpoint: not a file written by torch.save (truncated, or another kind of file)"
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return ("not a readable checkpoint: it holds pickled objects other than tensors and plain containers, "
                "which jdct never unpickles (weights_only loading)")
    return f"not a readable checkpoint ({type(exc).__name__}: {exc})".splitlines()[0]


def validate_json_part(payload: dict[str, Any], path: os.PathLike | str | None = None) -> None:
    """Check the JSON-like part against the schema (needs jsonschema); CheckpointError if invalid."""
    import jsonschema

    schema = json.loads(schema_path().read_text())
    try:
        jsonschema.validate(json.loads(json.dumps(json_part(payload))), schema)
    except jsonschema.ValidationError as exc:
        raise CheckpointError(f"checkpoint metadata does not match its schema: {exc.message}", path) from None


def load_model_state(model, payload: dict[str, Any], path: os.PathLike | str | None = None) -> None:
    """Load ``payload['model']`` into ``model`` strictly; CheckpointError on any mismatch."""
    try:
        model.load_state_dict(payload["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"weights do not fit architecture {payload.get('arch')!r}: {' '.join(first[:3])[:400]}", path
        ) from None
