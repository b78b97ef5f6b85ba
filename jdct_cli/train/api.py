""":func:`train`: set a run up (config, device, network, loaders, optimizer, resume state) and fit it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import checkpoint as ckpt
from ..config import (RESUME_OVERRIDABLE, TrainConfig, absolute_location, build_config, default_head_lr_scale,
                      from_dict, parse_jpeg_init, resolve)
from ..errors import CheckpointError, ConfigError
from ..models import get_model_info
from ..store import StoreLocation, as_location, read_metadata
from ..tables import parse_quality_augment
from .distributed import Dist, close_dist, init_dist, resumed_partial_sums
from .loop import Position, Progress, Session, TrainResult, fit
from .rundir import RunDir
from .quality import InputStage, QualityAugmenter
from .runtime import build_model, eval_size, make_loader, resolve_device, usable_samples
from .signals import StopFlag

#: Store metadata a checkpoint keeps so that ``predict`` can rebuild the val inputs without the store.
STORE_KEYS_FOR_PREDICT = ("size", "quality", "subsampling", "quant_tables", "stats", "transform", "coefficient_order")


def store_facts(info, loader=None, size: Optional[int] = None) -> dict[str, Any]:
    """The training store's facts a checkpoint keeps (STORE_KEYS_FOR_PREDICT and its absolute path).

    An images store has no fixed crops: its facts are those of the crops the run validated on
    (``loader``, the val loader, else the train loader: its size and quality, the IJG tables of that
    quality, the store's statistics and EXIF handling), so that ``jdct predict`` makes the same
    val crop (:func:`jdct_cli.transforms.convert_image`) the run was measured on; ``size``: that
    crop side when the loader's own is not it (a run without validation: the schedule's end)."""
    meta = info.metadata.to_dict()
    if info.layout_name == "images":
        from ..jpegmath.quant import ijg_tables

        luma, chroma = ijg_tables(loader.quality)
        facts = {"size": int(size or loader.size), "quality": int(loader.quality), "subsampling": "4:2:0",
                 "quant_tables": {"luma": [int(v) for v in luma], "chroma": [int(v) for v in chroma]},
                 "transform": {"exif": meta.get("exif", "ignore"), "exact_decode": False}, "layout": "images"}
        if meta.get("stats") is not None:
            facts["stats"] = {k: meta["stats"][k] for k in ("y", "cb", "cr")}
    else:
        facts = {k: meta[k] for k in STORE_KEYS_FOR_PREDICT if k in meta}
    facts["path"] = absolute_location(os.fspath(info.path))
    return facts


def prepare_config(config, resume) -> tuple[TrainConfig, Optional[dict]]:
    """The (unresolved or, when resuming, saved) config for this run and the resume payload.

    Without ``resume``, ``config`` is a TrainConfig or a dict for :func:`build_config`. With it,
    ``config`` (optional) holds only the options the user gave again: those in
    ``RESUME_OVERRIDABLE`` replace the saved values, any other that differs is a ConfigError.
    """
    if resume is None:
        if isinstance(config, dict):
            config = build_config(**config)
        return config, None
    run_dir = Path(resume)
    last = run_dir / "last.pt"
    if not last.is_file():
        raise CheckpointError("nothing to resume: no last.pt in this run directory", run_dir)
    payload = ckpt.load_checkpoint(last)
    ckpt.check_resumable(payload, last)
    saved = from_dict(payload["config"], os.fspath(last))
    if isinstance(config, TrainConfig):
        defaults = TrainConfig()
        given = {k: v for k, v in config.to_dict().items() if v != getattr(defaults, k)}
    else:
        given = {k.replace("-", "_"): v for k, v in (config or {}).items() if v is not None}
    for name, value in given.items():
        if name not in TrainConfig.__dataclass_fields__:
            raise ConfigError(f"unknown option {name!r}", run_dir)
        if value == getattr(saved, name) or name == "out":
            continue
        if name in RESUME_OVERRIDABLE:
            setattr(saved, name, absolute_location(value) if name == "data" else value)
        else:
            raise ConfigError(
                f"--resume continues the saved run exactly, so {name} cannot change "
                f"(saved {getattr(saved, name)!r}, given {value!r})",
                run_dir,
            )
    saved.out = os.path.abspath(run_dir)
    if "://" not in saved.data and not Path(saved.data).exists():
        raise ConfigError(f"the run's store {saved.data} is not there any more: give its new location with "
                          f"--data (jdct train --resume {run_dir} --data STORE)", run_dir)
    return saved, payload


def train(config: TrainConfig | dict | None = None, *, resume: Optional[os.PathLike | str] = None,
          progress: Progress = None, storage_options: Optional[Mapping[str, Any]] = None, cache_dir=None,
          cache_bytes: Optional[int] = None) -> TrainResult:
    """Train ``config.arch`` on ``config.data``; write RUN_DIR; return a :class:`TrainResult`.

    ``config``: a :class:`TrainConfig` (see :func:`jdct_cli.config.build_config`) or a dict of its
    fields; may be None with ``resume``. ``resume``: a RUN_DIR holding ``last.pt`` — training
    continues with the saved config, step count, LR position, optimizer and loader state (the
    same data order); a run that has done all its epochs is reported ``already_complete``.
    ``progress``: called (rank 0 only) with event dicts: ``{"event": "start", ...}``,
    ``"epoch_start"``, ``"step"`` (loss, lr, images_per_s), ``"val_start"``, ``"val_step"``,
    ``"epoch_end"`` (the metrics line), ``"interrupted"``, ``"done"``.

    A store on object storage (``config.data`` an ``s3://...`` URL): ``storage_options`` (not
    recorded in the run: give them again to resume, or use the environment), ``cache_dir`` and
    ``cache_bytes`` (each process keeps the byte ranges it read on local disk, see
    :class:`jdct_cli.data.DCTLoader`).

    On SIGINT/SIGTERM the current step finishes, a resumable ``last.pt`` is written (mid-epoch,
    with the loader position) and the result has ``interrupted=True``. Raises ConfigError,
    StoreError, UnknownModelError, CheckpointError, NoSpaceError.
    """
    if config is None and resume is None:
        raise ConfigError("no config and nothing to resume")
    cfg, payload = prepare_config(config, resume)
    stop = StopFlag()
    # Ctrl-C from here on is a request: the loop stops after the current step and saves (installed
    # before the process group forms, so no rank can miss a Ctrl-C that the others see).
    with stop.installed():
        dctx = init_dist(cfg.device)
        try:
            store = StoreAccess(as_location(cfg.data, storage_options), cache_dir, cache_bytes)
            session, pos = _set_up(cfg, payload, dctx, progress if dctx.is_main else None, stop, store)
            try:
                return fit(session, pos)
            finally:
                session.run.close()
        finally:
            close_dist(dctx)


@dataclass(frozen=True)
class StoreAccess:
    """How this process reads the training store: its location (with storage options) and the
    loaders' local cache."""

    location: StoreLocation
    cache_dir: Any = None
    cache_bytes: Optional[int] = None


def _set_up(cfg: TrainConfig, payload: Optional[dict], dctx: Dist, progress: Progress,
            stop: StopFlag, store: StoreAccess) -> tuple[Session, Position]:
    get_model_info(cfg.arch)  # an unknown name fails first, with its suggestion
    if payload is None:
        cfg = resolve(cfg, dctx.world_size)
    elif cfg.world_size != dctx.world_size:
        raise ConfigError(
            f"the run was trained with {cfg.world_size} process(es) and is resumed with {dctx.world_size}: "
            "the data order and LR would not continue exactly; resume with the same process count",
            cfg.out,
        )
    device = resolve_device(cfg.device, dctx.local_rank)
    on_cuda = device.type == "cuda"
    if payload is None:
        # config.json records what the run does: bf16 autocast and channels_last exist on CUDA only
        cfg.amp, cfg.channels_last = bool(cfg.amp and on_cuda), bool(cfg.channels_last and on_cuda)
    if on_cuda:
        # fixed input shapes: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True
    run = RunDir(cfg.out, active=dctx.is_main)

    info = read_metadata(store.location)
    classes = info.classes
    if payload is not None and list(payload["classes"]) != classes:
        raise CheckpointError("the store's classes differ from the checkpoint's", cfg.data)
    if payload is None and run.last.exists():
        raise ConfigError(
            f"already holds a training run; continue it with --resume {cfg.out} or pick another --out", cfg.out)
    splits = info.splits
    for option, split in (("--train-split", cfg.train_split), ("--val-split", cfg.val_split)):
        if split is not None and split not in splits:
            hint = (" (train without validation: --val-split none)" if option == "--val-split" else "")
            raise ConfigError(f"the store has no split {split!r} (it has: {', '.join(splits)}); choose another "
                              f"with {option}{hint}", cfg.data)
    usable = usable_samples(store.location, cfg.train_split)
    if usable < cfg.batch_size * dctx.world_size:
        raise ConfigError(
            f"the {cfg.train_split!r} split has {usable} usable samples, fewer than one batch of {cfg.batch_size} "
            f"per process x {dctx.world_size} process(es): lower --batch-size (at most "
            f"{max(1, usable // dctx.world_size)})", cfg.data)

    torch.manual_seed(cfg.seed)
    model, input_kind = build_model(cfg.arch, len(classes), cfg.to_dict())
    if cfg.jpeg_layer and payload is None:
        set_up_jpeg_layer(model, cfg, info, input_kind, store)
    model.to(device)
    channels_last = bool(cfg.channels_last and on_cuda)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    augmenter = input_stage = None
    if cfg.quality_augment is not None:
        # requantization needs coefficients: the loader gives them dequantized, the stage then makes
        # the network's inputs from the requantized ones
        augmenter = QualityAugmenter(parse_quality_augment(cfg.quality_augment), cfg.seed, device)
        input_stage = InputStage(input_kind, info.metadata.stats.by_plane(), device)
    cache = {"cache_dir": store.cache_dir, "cache_bytes": store.cache_bytes}
    train_loader = make_loader(store.location, cfg.train_split, batch_size=cfg.batch_size, train=True,
                               seed=cfg.seed, device=device, output="dct" if augmenter else input_kind, dctx=dctx,
                               threads=cfg.threads, normalize=augmenter is None, size=cfg.size,
                               size_schedule=cfg.size_schedule, epochs=cfg.epochs, **cache)
    val_loader = None
    if cfg.val_split is not None:
        val_loader = make_loader(store.location, cfg.val_split, batch_size=cfg.batch_size, train=False,
                                 seed=cfg.seed, device=device, output=input_kind, dctx=dctx, threads=cfg.threads,
                                 size=eval_size(cfg.size, cfg.size_schedule), **cache)
    steps_per_epoch = len(train_loader)
    if payload is None and cfg.head_lr_scale is None:
        cfg.head_lr_scale = default_head_lr_scale(len(classes))
    optimizer = make_optimizer(model, cfg)
    jpeg_optimizer = make_jpeg_optimizer(model, cfg)
    # bf16 autocast needs no loss scaling; the scaler is kept (disabled) so that checkpoints have
    # one layout whatever the precision.
    scaler = torch.amp.GradScaler(device.type, enabled=False)

    pos = Position()
    if payload is not None:
        ckpt.load_model_state(model, payload, run.last)
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"the optimizer state does not fit this run ({exc})", run.last) from None
        scaler.load_state_dict(payload.get("scaler") or {})
        if jpeg_optimizer is not None:
            try:
                jpeg_optimizer.load_state_dict(payload["jpeg_optimizer"])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"the JPEG tables' optimizer state does not fit this run ({exc})",
                                      run.last) from None
        pos = Position(step=int(payload["step"]), epochs_done=int(payload["epoch"]),
                       best_top1=payload.get("best_top1"), last_metrics=payload.get("metrics"),
                       mid_epoch=bool(payload.get("mid_epoch")))
        if pos.mid_epoch:
            pos.epoch_sums = resumed_partial_sums(payload["epoch_sums"], dctx)
            pos.loader_state = payload["loader"]
        if "torch" in (payload.get("rng") or {}):
            torch.set_rng_state(payload["rng"]["torch"])
        saved_spe = (payload.get("scheduler") or {}).get("steps_per_epoch")
        if saved_spe not in (None, steps_per_epoch):
            raise CheckpointError(
                f"the store now gives {steps_per_epoch} steps per epoch, the run had {saved_spe}", run.path)

    checkpoint_bytes = estimate_checkpoint_bytes(model, cfg.momentum)
    run.start(cfg.to_dict(), None if payload is None else pos.epochs_done, checkpoint_bytes)
    train_model = model
    if dctx.enabled:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if on_cuda else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    session = Session(cfg=cfg, dctx=dctx, device=device, amp=bool(cfg.amp and on_cuda), channels_last=channels_last,
                      model=model, train_model=train_model, input_kind=input_kind, classes=list(classes),
                      optimizer=optimizer, scaler=scaler, train_loader=train_loader, val_loader=val_loader,
                      steps_per_epoch=steps_per_epoch, store_facts=store_facts(
                          info, val_loader if val_loader is not None else train_loader,
                          eval_size(cfg.size, cfg.size_schedule)),
                      run=run, stop=stop,
                      progress=progress, jpeg_optimizer=jpeg_optimizer, augmenter=augmenter,
                      input_stage=input_stage)
    session.emit({"event": "start", "arch": cfg.arch, "input_kind": input_kind, "device": str(device),
                  "world_size": dctx.world_size, "epochs": cfg.epochs, "start_epoch": pos.epochs_done,
                  "step": pos.step, "steps_per_epoch": steps_per_epoch, "lr": cfg.lr,
                  "head_lr_scale": cfg.head_lr_scale,
                  "warmup_epochs": cfg.warmup_epochs, "milestones": list(cfg.milestones),
                  "global_batch_size": cfg.global_batch_size, "run_dir": os.fspath(run.path),
                  "resumed": payload is not None, "complete": pos.epochs_done >= cfg.epochs and not pos.mid_epoch,
                  "validation": cfg.val_split, "checkpoint_bytes": checkpoint_bytes,
                  "jpeg_layer": cfg.jpeg_layer, "quality_augment": augmenter.spec.describe() if augmenter else None})
    return session, pos


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD over ``model``'s trainable parameters in two groups: the body at the LR and the classifier
    at ``cfg.head_lr_scale`` x the LR (each group's ``lr_scale``, applied by the schedule).

    A config without ``head_lr_scale`` (a run begun before it existed, being resumed) gets the single
    group those runs had, so that its optimizer state loads and it continues exactly.
    """
    jpeg = {id(p) for p in getattr(model, "jpeg_parameters", list)()}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in jpeg]
    if cfg.head_lr_scale is None:
        groups = [{"params": params, "lr_scale": 1.0}]
    else:
        head = {id(p) for p in model.classifier_parameters()}
        groups = [{"params": [p for p in params if id(p) not in head], "lr_scale": 1.0},
                  {"params": [p for p in params if id(p) in head], "lr_scale": float(cfg.head_lr_scale)}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_jpeg_optimizer(model, cfg: TrainConfig) -> Optional[torch.optim.Optimizer]:
    """The JPEG layer's tables' own optimizer (None without the layer): Adam at ``cfg.jpeg_lr``, or
    SGD with the network's momentum; never weight decay (it would pull every step towards 0, i.e.
    towards quality 100). The schedule scales its LR like the network's (``lr_scale`` 1)."""
    params = list(getattr(model, "jpeg_parameters", list)())
    if not params:
        return None
    groups = [{"params": params, "lr_scale": 1.0}]
    if cfg.jpeg_optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.jpeg_lr, momentum=cfg.momentum, weight_decay=0.0)
    return torch.optim.Adam(groups, lr=cfg.jpeg_lr, weight_decay=0.0)


#: Training samples (the first ones of the train split, store order) the data-driven table
#: initialization averages |coefficient| over.
JPEG_INIT_SAMPLES = 2048


def set_up_jpeg_layer(model, cfg: TrainConfig, info, kind: str, store: Optional["StoreAccess"] = None) -> None:
    """Give a new run's JPEG layer its normalization (the training store's) and starting tables.

    ``jpeg_init``: ``data`` = JPEG-DL's ``2 E|x| / sqrt(2^(b-1))`` per frequency, over the first
    :data:`JPEG_INIT_SAMPLES` training samples in the layer's own domain (the stored 4:2:0
    coefficients for DCT networks, the 4:4:4 block DCT of the pixels otherwise); a constant step;
    or ``qQUALITY``, libjpeg's tables of that quality.
    """
    import numpy as np

    from ..data import device_constants
    from ..jpegmath import learned
    from ..jpegmath.quant import ijg_tables
    from ..store import COEFFICIENT_ARRAYS

    layer = model.jpeg
    stats = info.metadata.stats.by_plane()
    if kind == "dct":
        consts = device_constants({n: np.ones(64) for n in COEFFICIENT_ARRAYS}, stats, output="dct", normalize=True,
                                  device="cpu")
        layer.scale.copy_(torch.cat([consts[n][0].reshape(1, 64) for n in COEFFICIENT_ARRAYS]))
        layer.shift.copy_(torch.cat([consts[n][1].reshape(1, 64) for n in COEFFICIENT_ARRAYS]))
    else:
        consts = device_constants({n: np.ones(64) for n in COEFFICIENT_ARRAYS}, stats, output=kind, normalize=True,
                                  device="cpu")
        layer.mean.copy_(consts["pix_mean"].reshape(3))
        layer.std.copy_(consts["pix_std"].reshape(3))
    how, value = parse_jpeg_init(cfg.jpeg_init)
    if how == "constant":
        layer.tables.set_(torch.full((64,), value), torch.full((64,), value))
    elif how == "quality":
        luma, chroma = ijg_tables(int(value))
        layer.tables.set_(torch.as_tensor(luma.astype("float32")), torch.as_tensor(chroma.astype("float32")))
    else:
        luma_abs, chroma_abs = training_abs_mean(cfg, kind, store)
        layer.tables.set_(learned.init_tables_from_abs_mean(luma_abs, cfg.jpeg_bits),
                          learned.init_tables_from_abs_mean(chroma_abs, cfg.jpeg_bits))


def training_abs_mean(cfg: TrainConfig, kind: str, store: Optional["StoreAccess"] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) float64 ``[64]``: mean |coefficient| per frequency over the first
    :data:`JPEG_INIT_SAMPLES` samples of the train split (view 0, store order, no flips), in the
    JPEG layer's domain for a network of ``kind``. The same on every process."""
    from ..jpegmath.blockdct import dct_blocks
    from ..jpegmath.color import rgb_to_ycbcr

    where = {"store": cfg.data} if store is None else {"store": store.location, "cache_dir": store.cache_dir,
                                                        "cache_bytes": store.cache_bytes}
    loader = make_loader(split=cfg.train_split, batch_size=min(cfg.batch_size, JPEG_INIT_SAMPLES), train=False,
                         seed=cfg.seed, device="cpu", output="dct" if kind == "dct" else kind, threads=cfg.threads,
                         normalize=False, **where)
    sums = torch.zeros(2, 64, dtype=torch.float64)
    counts = torch.zeros(2, dtype=torch.float64)
    seen = 0
    with torch.no_grad():
        for inputs, labels in loader:
            keep = labels >= 0
            if kind == "dct":
                groups = (inputs[0][keep], torch.cat([inputs[1][keep], inputs[2][keep]]))
            else:
                pix = inputs[keep] * 255.0
                ycc = torch.stack(rgb_to_ycbcr(*pix.unbind(1)), 1) if kind == "rgb" else pix
                coefs = dct_blocks(ycc)  # [B, 3, 64, H/8, W/8]
                groups = (coefs[:, 0], coefs[:, 1:].reshape(-1, 64, *coefs.shape[-2:]))
            for g, x in enumerate(groups):
                sums[g] += x.double().abs().sum(dim=(0, 2, 3))
                counts[g] += x.shape[0] * x.shape[2] * x.shape[3]
            seen += int(keep.sum())
            if seen >= JPEG_INIT_SAMPLES:
                break
    return sums[0] / counts[0].clamp_min(1), sums[1] / counts[1].clamp_min(1)


def estimate_checkpoint_bytes(model, momentum: float) -> int:
    """About the size of a training checkpoint of ``model`` (bytes): its state, plus SGD's momentum
    buffer for every trainable parameter when ``momentum`` > 0, plus 1 MB for the rest."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moment = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) if momentum else 0
    return state + moment + (1 << 20)
