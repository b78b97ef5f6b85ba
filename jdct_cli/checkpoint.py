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

Files are written atomically: a temporary file in the same folder, fsync, then ``os.replace``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from .errors import CheckpointError, SourceNotFoundError
from .fileio import atomic_write

FORMAT_NAME = "jdct-checkpoint"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
#: Keys holding tensors or torch state; everything else is JSON-like and schema-checked.
TENSOR_KEYS = ("model", "optimizer", "scaler", "rng", "loader")
REQUIRED_KEYS = ("format", "format_version", "arch", "num_classes", "classes", "input_kind", "config", "model")
SCHEMA_NAME = "checkpoint.v1.schema.json"


def schema_path() -> Path:
    """Where the checkpoint JSON Schema lives (repository ``schemas/`` or the installed package)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "schemas" / SCHEMA_NAME, here / "schemas" / SCHEMA_NAME):
        if candidate.is_file():
            return candidate
    try:
        from importlib import resources

        return Path(str(resources.files("jdct_cli.schemas") / SCHEMA_NAME))
    except Exception:  # no installed schemas package either
        return here.parent / "schemas" / SCHEMA_NAME


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
            import shutil

            with open(src, "rb") as source:
                atomic_write(tmp, lambda fh: shutil.copyfileobj(source, fh))
        os.replace(tmp, dst)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def save_checkpoint(path: os.PathLike | str, payload: dict[str, Any]) -> None:
    """Write ``payload`` (must already carry format/format_version) atomically with torch.save."""
    import torch

    if payload.get("format") != FORMAT_NAME or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError("refusing to write a payload without this jdct's format/version", path)
    atomic_write(path, lambda fh: torch.save(payload, fh))


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
    import pickle
    import zipfile

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
