"""Training configuration: defaults, ``--config`` files (YAML or JSON), flag overrides, resolution.

A :class:`TrainConfig` is built in three layers, later layers winning:

1. the defaults below (the paper's ResNet-50 recipe);
2. a config file (``--config FILE``, YAML or JSON, a mapping of the field names below; dashes and
   underscores are interchangeable, so ``batch-size`` and ``batch_size`` mean the same);
3. the command-line flags the user actually gave (``None`` means "not given").

:func:`resolve` then fills the fields that depend on the run (the world size): the learning rate
(0.1 x global batch / 256 unless given), the warm-up length and the LR decay milestones. The
resolved dict is what ``RUN_DIR/config.json`` and every checkpoint hold
(schema ``schemas/checkpoint.v1.schema.json``, ``$defs/config``).

This module does not import torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import ConfigError, SourceNotFoundError

#: Fractions of the run at which the LR is multiplied by 0.1 (epochs 30/60/80 of 90).
DECAY_FRACTIONS = ((1, 3), (2, 3), (8, 9))
DECAY_FACTOR = 0.1
#: Linear warm-up length for a 90-epoch run whose global batch exceeds 256 (Goyal et al.).
WARMUP_EPOCHS_AT_90 = 5.0
REFERENCE_EPOCHS = 90
LR_PER_256 = 0.1
#: Classes of the recipe's data set (ImageNet): the classifier's LR is scaled by classes / this.
REFERENCE_CLASSES = 1000

#: Values of ``val_split`` (case-insensitive) meaning "no validation".
NO_SPLIT = ("", "none", "null")
#: Values of ``jpeg_layer`` (None: no layer).
JPEG_LAYERS = (None, "learned")
#: Optimizers of the JPEG layer's tables.
JPEG_OPTIMIZERS = ("adam", "sgd")
#: Fields that may differ when a run is resumed (they change where/how it runs, not what it learns).
RESUME_OVERRIDABLE = ("device", "threads", "compile", "out", "data")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Units: epochs, images per process, learning rate."""

    arch: Optional[str] = None
    data: Optional[str] = None
    out: Optional[str] = None  # RUN_DIR; default runs/<arch>
    epochs: int = 90
    batch_size: int = 64  # per process; global batch = batch_size * world_size
    lr: Optional[float] = None  # None: 0.1 * global batch / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    warmup_epochs: Optional[float] = None  # None: automatic (see resolve)
    head_lr_scale: Optional[float] = None  # LR multiplier of the classifier; None: default_head_lr_scale(classes)
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    threads: Optional[int] = None  # loader threads per process; None: the loader's default
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False
    train_split: str = "train"
    val_split: Optional[str] = "val"  # None (--val-split none): no validation
    # JPEG-DL: a trainable JPEG layer (soft quantizer) in front of the network (None: no layer)
    jpeg_layer: Optional[str] = None  # "learned" or None
    jpeg_hardness: float = 0.7  # h in alpha = h / q^2
    jpeg_lr: float = 0.01  # the tables' own learning rate (their optimizer has no weight decay)
    jpeg_optimizer: str = "adam"  # "adam", or "sgd" (with --momentum)
    jpeg_init: str = "data"  # "data" (2 E|x| / sqrt(2^(b-1))), a constant step, or "qQUALITY" (IJG tables)
    jpeg_bits: int = 11  # b: the soft quantizer's candidate indices stay within b bits
    # Requantize each training sample: "LOW:HIGH" IJG qualities, or a tables file (None: off)
    quality_augment: Optional[str] = None
    # Images-layout stores: crop side (pixels, a multiple of 16; None: the store's default) and an
    # optional progressive-resizing schedule "LOW:HIGH" (linear over the epochs, FFCV-style)
    size: Optional[int] = None
    size_schedule: Optional[str] = None
    # Filled by resolve() (milestones too, when not given):
    world_size: Optional[int] = None
    global_batch_size: Optional[int] = None
    milestones: Optional[list] = field(default=None)  # epochs (may be fractional) of the x0.1 decays; None: 1/3, 2/3, 8/9

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_RESOLVED_ONLY = ("world_size", "global_batch_size")


def _check_type(name: str, value: Any, source: str) -> Any:
    """Coerce/validate one field value; ConfigError naming ``source`` when it does not fit."""
    if value is None:
        return None
    default = _FIELDS[name].default
    kind = type(default) if default is not None else None
    if name in ("lr", "warmup_epochs", "head_lr_scale"):
        kind = float
    elif name in ("arch", "data", "out", "quality_augment", "size_schedule"):
        kind = str
    elif name in ("val_split", "jpeg_layer"):
        if isinstance(value, str) and value.strip().lower() in NO_SPLIT:
            return None
        kind = str
    elif name == "jpeg_init":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        kind = str
    elif name in ("threads", "size"):
        kind = int
    elif name == "milestones":
        kind = list
    elif name in ("world_size", "global_batch_size"):
        kind = int
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name!r} must be true or false, not {value!r}", source)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name!r} must be an integer, not {value!r}", source)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name!r} must be a number, not {value!r}", source)
        return float(value)
    if kind is str:
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{name!r} must be a string, not {value!r}", source)
        return os.fspath(value)
    if kind is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name!r} must be a list, not {value!r}", source)
        return value
    return value


def load_config_file(path: os.PathLike | str) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON config file into a dict of known fields.

    Raises SourceNotFoundError (missing file) or ConfigError (unparsable, not a mapping, unknown
    keys, wrong types) naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError("no such config file", path)
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError("reading YAML needs PyYAML (pip install pyyaml); or use JSON", path) from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError: report, never a traceback
        raise ConfigError(f"cannot parse config: {exc}", path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a config file must hold a mapping of option names to values", path)
    # A RUN_DIR/config.json is a valid config file: world_size and global_batch_size are resolved
    # again, but lr, warmup_epochs and milestones keep the values resolved for that run (they are
    # indistinguishable from given ones), so on another process count the LR is *not* rescaled.
    return _validated(data, os.fspath(path), drop_resolved=True)


def _validated(values: Mapping[str, Any], source: str, drop_resolved: bool = False) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if drop_resolved and name in _RESOLVED_ONLY:
            continue
        if name not in _FIELDS or name in _RESOLVED_ONLY:
            known = ", ".join(n for n in _FIELDS if n not in _RESOLVED_ONLY)
            raise ConfigError(f"unknown option {key!r} (known: {known})", source)
        out[name] = _check_type(name, value, source)
    return out


def build_config(config_file: Optional[os.PathLike | str] = None, **overrides: Any) -> TrainConfig:
    """Defaults < config file < ``overrides`` (keyword arguments whose value is not None).

    Returns an unresolved :class:`TrainConfig` (validated; call :func:`resolve` before training).
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(load_config_file(config_file))
    values.update(_validated({k: v for k, v in overrides.items() if v is not None}, "command line"))
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Range checks of a (resolved or not) config; ConfigError on the first problem."""
    src = "config"
    if not cfg.arch:
        raise ConfigError("no architecture given (--arch NAME; `jdct models` lists them)", src)
    if not cfg.data:
        raise ConfigError("no store given (--data STORE.zarr)", src)
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, not {cfg.epochs}", src)
    if cfg.batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, not {cfg.batch_size}", src)
    if cfg.lr is not None and cfg.lr < 0:
        raise ConfigError(f"learning rate must be >= 0, not {cfg.lr}", src)
    if not 0 <= cfg.momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), not {cfg.momentum}", src)
    if cfg.weight_decay < 0:
        raise ConfigError(f"weight decay must be >= 0, not {cfg.weight_decay}", src)
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"label smoothing must be in [0, 1), not {cfg.label_smoothing}", src)
    if cfg.head_lr_scale is not None and cfg.head_lr_scale < 0:
        raise ConfigError(f"the classifier's LR scale must be >= 0, not {cfg.head_lr_scale}", src)
    if cfg.warmup_epochs is not None and not 0 <= cfg.warmup_epochs <= cfg.epochs:
        raise ConfigError(f"warm-up epochs must be in [0, epochs], not {cfg.warmup_epochs}", src)
    if cfg.milestones is not None and not all(
            isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) and m > 0
            for m in cfg.milestones):
        raise ConfigError(f"milestones must be epochs > 0 (fractions allowed), not {cfg.milestones!r}", src)
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads must be >= 1, not {cfg.threads}", src)
    if cfg.jpeg_layer not in JPEG_LAYERS:
        raise ConfigError(f"jpeg layer must be one of {', '.join(str(k) for k in JPEG_LAYERS if k)} or none, "
                          f"not {cfg.jpeg_layer!r}", src)
    if not cfg.jpeg_hardness > 0:
        raise ConfigError(f"jpeg hardness must be > 0, not {cfg.jpeg_hardness}", src)
    if cfg.jpeg_lr < 0:
        raise ConfigError(f"jpeg learning rate must be >= 0, not {cfg.jpeg_lr}", src)
    if cfg.jpeg_optimizer not in JPEG_OPTIMIZERS:
        raise ConfigError(f"jpeg optimizer must be one of {', '.join(JPEG_OPTIMIZERS)}, not {cfg.jpeg_optimizer!r}",
                          src)
    if not 3 <= cfg.jpeg_bits <= 16:
        raise ConfigError(f"jpeg bits must be in 3..16, not {cfg.jpeg_bits}", src)
    parse_jpeg_init(cfg.jpeg_init)
    if cfg.quality_augment is not None:
        from .tables import parse_quality_augment

        parse_quality_augment(cfg.quality_augment)
    if cfg.size is not None and (cfg.size < 16 or cfg.size % 16):
        raise ConfigError(f"--size must be a positive multiple of 16 (4:2:0 blocks), not {cfg.size}", src)
    if cfg.size_schedule is not None:
        parse_size_schedule(cfg.size_schedule)


#: Sizes of a progressive-resizing schedule are rounded to multiples of this (4:2:0 MCUs).
SIZE_STEP = 16


def parse_size_schedule(value: str) -> tuple[int, int]:
    """``--size-schedule LOW:HIGH`` -> (low, high) pixels, both positive multiples of 16;
    ConfigError otherwise."""
    parts = str(value).split(":")
    try:
        low, high = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--size-schedule must be LOW:HIGH in pixels (e.g. 160:192), not {value!r}",
                          "config") from None
    for v in (low, high):
        if v < SIZE_STEP or v % SIZE_STEP:
            raise ConfigError(f"--size-schedule sizes must be positive multiples of {SIZE_STEP}, not {v}", "config")
    return low, high


def scheduled_size(schedule: str, epoch: int, epochs: int) -> int:
    """The crop side of epoch ``epoch`` (0-based) of ``epochs`` under ``schedule`` "LOW:HIGH": linear
    from LOW at the first epoch to HIGH at the last, rounded to the nearest multiple of 16 (FFCV's
    progressive resizing; a one-epoch run trains at HIGH)."""
    low, high = parse_size_schedule(schedule)
    t = 1.0 if epochs <= 1 else min(max(epoch, 0), epochs - 1) / (epochs - 1)
    return int(round((low + (high - low) * t) / SIZE_STEP)) * SIZE_STEP


def parse_jpeg_init(value: str) -> tuple[str, Optional[float]]:
    """``--jpeg-init``: ("data", None), ("constant", step) or ("quality", Q); ConfigError otherwise."""
    text = str(value).strip().lower()
    if text == "data":
        return "data", None
    if text.startswith("q") and text[1:].isdigit():
        quality = int(text[1:])
        if not 1 <= quality <= 100:
            raise ConfigError(f"jpeg init quality must be in 1..100, not {quality}", "--jpeg-init")
        return "quality", float(quality)
    try:
        step = float(text)
    except ValueError:
        raise ConfigError(f"jpeg init must be 'data', a step (e.g. 1.0) or qQUALITY (e.g. q50), not {value!r}",
                          "--jpeg-init") from None
    if not (math.isfinite(step) and 0 < step <= 255):
        raise ConfigError(f"a constant jpeg init step must be in (0, 255], not {value!r}", "--jpeg-init")
    return "constant", step


def default_milestones(epochs: int) -> list[float]:
    """Epochs at which the LR is multiplied by 0.1: ``epochs`` x 1/3, 2/3 and 8/9.

    [30, 60, 80] for 90 epochs. Fractional for other lengths (a decay then happens inside an
    epoch, at the step nearest that point), so that every run, however short, has three distinct
    decays at the same fractions of its training as the 90-epoch recipe and spends the same share of
    its steps at each LR. Whole numbers are stored as ints, others rounded to 4 decimals.
    """
    return [_tidy(epochs * num / den) for num, den in DECAY_FRACTIONS]


def _tidy(value: float) -> float | int:
    rounded = round(value, 4)
    return int(rounded) if rounded == int(rounded) else rounded


def default_head_lr_scale(num_classes: int) -> float:
    """The classifier's LR as a fraction of the body's: ``min(1, num_classes / 1000)``.

    The recipe's LR was set for ImageNet's 1,000 classes. The final layer's loss curvature is about
    |f|^2 / K (f: the pooled features it reads, K classes, uniform predictions), so with K classes
    the same LR is 1000/K times hotter there: at 10 classes, batch 64 and lr 0.025 its logits jump
    by several units per step (batch-to-batch class-frequency noise times |f|^2) and the loss sits
    at chance or above for the first epochs. Scaling the classifier's LR by K/1000 gives it the step
    size, relative to its curvature, it has in the 1,000-class recipe; the body keeps the recipe's
    LR. Exactly 1 (the paper's recipe unchanged) from 1,000 classes on.
    """
    return min(1.0, num_classes / REFERENCE_CLASSES)


def default_warmup_epochs(epochs: int, global_batch: int) -> float:
    """Linear warm-up length in epochs (may be fractional).

    Large-batch SGD (Goyal et al. 2017) needs a warm-up when the global batch exceeds 256: 5 epochs
    of a 90-epoch run. Shorter runs keep the same *fraction* of training (5/90 of the epochs), so
    that the warm-up always ends well before the first decay at 1/3. No warm-up at batch <= 256.
    """
    if global_batch <= 256:
        return 0.0
    return WARMUP_EPOCHS_AT_90 * min(1.0, epochs / REFERENCE_EPOCHS)


def resolve(cfg: TrainConfig, world_size: int) -> TrainConfig:
    """A copy of ``cfg`` with the run-dependent fields filled in (idempotent for the same world size
    and working folder): LR, warm-up, milestones, ``out`` and absolute ``data``/``out`` paths."""
    validate(cfg)
    out = dataclasses.replace(cfg)
    out.world_size = int(world_size)
    out.global_batch_size = cfg.batch_size * out.world_size
    if out.lr is None:
        out.lr = LR_PER_256 * out.global_batch_size / 256
    if out.warmup_epochs is None:
        out.warmup_epochs = default_warmup_epochs(cfg.epochs, out.global_batch_size)
    if out.milestones is None:
        out.milestones = default_milestones(cfg.epochs)
    if out.out is None:
        out.out = os.path.join("runs", str(cfg.arch))
    # absolute, so that `jdct train --resume RUN_DIR` and `jdct eval` work from any folder
    out.out = absolute_location(out.out)
    out.data = absolute_location(out.data)
    return out


def absolute_location(path: str) -> str:
    """``path`` made absolute when it is a local path (a URL such as ``s3://...`` is left as it is)."""
    return path if "://" in path else os.path.abspath(path)


def from_dict(values: Mapping[str, Any], source: str = "checkpoint") -> TrainConfig:
    """A TrainConfig from a resolved dict (``config.json`` or a checkpoint); ConfigError if malformed."""
    unknown = [k for k in values if k not in _FIELDS]
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}", source)
    cfg = TrainConfig(**{k: _check_type(k, v, source) for k, v in values.items()})
    return cfg


def decay_step(milestone: float, steps_per_epoch: int) -> int:
    """The first optimizer step (0-based) run at the LR after ``milestone`` (epochs, may be fractional)."""
    return int(round(milestone * steps_per_epoch))


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    """Steps of the linear warm-up: ``warmup_epochs`` x ``steps_per_epoch``, rounded."""
    return int(round(warmup_epochs * steps_per_epoch))


def lr_at(step: int, *, base_lr: float, steps_per_epoch: int, warmup_epochs: float, milestones: list) -> float:
    """The learning rate of optimizer step ``step`` (0-based, counted over the whole run).

    Step decay: x0.1 for every milestone whose :func:`decay_step` is <= ``step`` (for whole-epoch
    milestones: every milestone epoch <= the current epoch). Linear warm-up over the first
    W = :func:`warmup_steps` steps, from base/W to base. A pure function of the step count, so a
    resumed run lands on exactly the same LR.
    """
    spe = max(1, steps_per_epoch)
    factor = DECAY_FACTOR ** sum(1 for m in milestones if step >= decay_step(m, spe))
    warm = warmup_steps(warmup_epochs, spe)
    if step < warm:
        factor *= (step + 1) / warm
    return base_lr * factor
