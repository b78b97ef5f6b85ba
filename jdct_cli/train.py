"""``jdct train``: the paper's ResNet-50 recipe on a jdct store, from one CPU to many GPUs.

:func:`train` is the library entry point (the CLI only parses flags into a config and renders the
progress events). One process trains alone; under ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment) every process runs :func:`train` and they form a DistributedDataParallel group
(NCCL on CUDA, gloo on CPU). Only rank 0 writes files and reports progress.

Run directory (RUN_DIR, ``--out``)::

    config.json     the resolved config (TrainConfig fields; loadable again with --config)
    metrics.jsonl   one JSON line per epoch (schema: checkpoint.v1.schema.json, $defs/metrics)
    last.pt         written atomically after every epoch and on Ctrl-C (mid-epoch: loader state)
    best.pt         the epoch with the best val top-1 so far
    tb/             TensorBoard scalars, only when tensorboard is installed

Recipe: SGD (momentum 0.9, weight decay 1e-4 on every parameter), LR 0.1 x global batch / 256,
x0.1 at 1/3, 2/3 and 8/9 of the epochs, linear warm-up (see :mod:`jdct_cli.config`), cross-entropy
with optional label smoothing plus the model's own ``regularization_loss()`` (dct_ortho's
orthonormality penalty). On CUDA: bf16 autocast (``amp``) and channels_last.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import __version__
from . import checkpoint as ckpt
from .config import RESUME_OVERRIDABLE, TrainConfig, build_config, from_dict, lr_at, resolve
from .errors import CheckpointError, ConfigError, JdctError
from .fileio import atomic_write_text

Progress = Optional[Callable[[dict], None]]
#: On CUDA the training loss is read back (and checked for NaN/inf) every this many steps.
SYNC_EVERY = 10

#: Store metadata a checkpoint keeps so that ``predict`` can rebuild the val inputs without the store.
STORE_KEYS_FOR_PREDICT = ("size", "quality", "subsampling", "quant_tables", "stats", "transform", "coefficient_order")


@dataclass
class TrainResult:
    """What :func:`train` returns. ``interrupted``: stopped by SIGINT/SIGTERM after saving last.pt."""

    run_dir: Path
    epochs_done: int
    steps: int
    interrupted: bool = False
    best_top1: Optional[float] = None
    last_metrics: Optional[dict] = None
    world_size: int = 1
    rank: int = 0
    history: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# Distributed plumbing
# ------------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r} (use cpu, cuda, cuda:N or auto)", "--device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("CUDA was asked for but torch sees no GPU (use --device cpu)", "--device")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _init_dist(device_name: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def _all_reduce_sum(values: list[float], device: torch.device, dctx: _Dist) -> list[float]:
    """Sum a few scalars over the ranks (float64 so that counts stay exact)."""
    if not dctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def sync_buffers(model, dctx: _Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each *training* forward, so after the last step every
    rank holds the statistics of its own last batch; validating with those would make each rank
    use a different model from the one rank 0 saves. Called before validation and saving.
    """
    if not dctx.enabled:
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def poll_stop(step: int, steps_per_epoch: int, distributed_cuda: bool) -> bool:
    """Whether the ranks agree on a Ctrl-C after optimizer step ``step`` (1-based count so far).

    Agreeing is an all-reduce whose result the host reads, which on CUDA waits for the whole
    step to finish and so stops the host from queueing the next one ahead: DDP on CUDA asks every
    SYNC_EVERY steps and at the end of each epoch (a Ctrl-C then stops within SYNC_EVERY steps).
    Alone or on CPU (gloo) it costs nothing and is asked after every step. The same on every
    rank, since every rank has the same ``step``.
    """
    return not distributed_cuda or step % SYNC_EVERY == 0 or step % steps_per_epoch == 0


def global_partial_sums(sums: dict, device: torch.device, dctx: _Dist) -> dict:
    """A mid-epoch checkpoint's train sums ({"loss", "correct", "count"}) over all ranks.

    Rank 0 alone writes the checkpoint, so it must hold every rank's part of the interrupted epoch
    (collective: every rank calls it). :func:`resumed_partial_sums` then hands them back to one rank.
    """
    loss, correct, count = _all_reduce_sum([sums["loss"], sums["correct"], sums["count"]], device, dctx)
    return {"loss": loss, "correct": int(round(correct)), "count": int(round(count))}


def resumed_partial_sums(saved: dict, dctx: _Dist) -> dict:
    """Each rank's starting sums when a mid-epoch checkpoint resumes: rank 0 takes the saved global
    sums, the other ranks start from zero, so the end-of-epoch all-reduce counts them once."""
    if dctx.rank == 0:
        return {"loss": float(saved["loss"]), "correct": int(saved["correct"]), "count": int(saved["count"])}
    return {"loss": 0.0, "correct": 0, "count": 0}


def _any_rank(flag: bool, device: torch.device, dctx: _Dist) -> bool:
    """True on every rank when ``flag`` is true on any: ranks must stop at the same step."""
    if not dctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# ------------------------------------------------------------------------------------------------
# Model and loader construction
# ------------------------------------------------------------------------------------------------


def _build_model(arch: str, num_classes: int):
    """(model, input_kind). UnknownModelError (listing the names) for unknown architectures."""
    from .models import create_model, get_model_info

    info = get_model_info(arch)
    model = create_model(arch, num_classes)
    return model, info.input_kind


def _loader(store, split, *, batch_size, shuffle, seed, dctx, threads, device, drop_last, flip, output,
            stats=None):
    from .data import DCTLoader

    kwargs = dict(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        device=device,
        drop_last=drop_last,
        flip=flip,
        output=output,
        stats=stats,
    )
    if dctx.enabled:
        kwargs.update(rank=dctx.rank, world_size=dctx.world_size)
    if threads is not None:
        kwargs["threads"] = threads
    return DCTLoader(store, split, **kwargs)


def _unpack(batch, device: torch.device, channels_last: bool):
    """(inputs tuple, labels, valid mask or None) from a loader batch, moved to ``device``.

    The loader yields ``(inputs, labels)`` or ``(inputs, labels, valid)``; labels < 0 also mark
    padding samples (added so that every rank gets the same number of batches).
    """
    if len(batch) == 3:
        inputs, labels, valid = batch
    else:
        inputs, labels = batch
        valid = None
    if not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    moved = []
    for x in inputs:
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        moved.append(x)
    labels = labels.to(device, non_blocking=True).long()
    if valid is not None:
        valid = valid.to(device).bool()
    elif bool((labels < 0).any()):
        valid = labels >= 0
    return tuple(moved), labels, valid


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


# ------------------------------------------------------------------------------------------------
# Evaluation (shared with `jdct eval`, so that eval reproduces the logged val metrics)
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def run_validation(model, loader, *, device: torch.device, amp: bool, channels_last: bool, dctx=None,
                   progress: Progress = None) -> dict[str, float]:
    """Loss (mean cross-entropy, no label smoothing), top-1 and top-5 over every sample once.

    Sums of loss, top-1 hits, top-5 hits and sample counts are all-reduced over the ranks, and
    padding samples (mask from the loader) are excluded, so a DDP run counts each val sample
    exactly once. Returns {"loss", "top1", "top5", "samples"} (top-k as fractions in [0, 1]).
    """
    dctx = dctx or _Dist()
    was_training = model.training
    model.eval()
    # loss, top-1 hits, top-5 hits, samples: float64 on the device (no per-batch GPU sync)
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    total = len(loader)
    for i, batch in enumerate(loader):
        inputs, labels, valid = _unpack(batch, device, channels_last)
        with _autocast(device, amp):
            logits = model(*inputs)
        logits = logits.float()
        loss = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hit = topk == labels[:, None]
        top1 = hit[:, 0].double()
        top5 = hit.any(dim=1).double()
        w = torch.ones_like(top1) if valid is None else valid.double()
        sums += torch.stack([(loss.double() * w).sum(), (top1 * w).sum(), (top5 * w).sum(), w.sum()])
        if progress is not None:
            progress({"event": "val_step", "step": i + 1, "total": total})
    loss_sum, c1, c5, n = _all_reduce_sum(sums.tolist(), device, dctx)
    model.train(was_training)
    n_int = int(round(n))
    if n_int == 0:
        return {"loss": float("nan"), "top1": 0.0, "top5": 0.0, "samples": 0}
    return {"loss": loss_sum / n, "top1": c1 / n, "top5": c5 / n, "samples": n_int}


# ------------------------------------------------------------------------------------------------
# Ctrl-C handling
# ------------------------------------------------------------------------------------------------


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (main thread only)."""

    #: Signals within this many seconds of the first are the same request: a terminal's Ctrl-C
    #: reaches torchrun's workers directly *and* torchrun forwards SIGINT then SIGTERM at once.
    GRACE_S = 2.0

    def __init__(self):
        self.requested = False
        self.signum = None
        self.first = 0.0

    def _handler(self, signum, _frame):
        if self.requested:
            # a second Ctrl-C, later: the user really wants out, now (checkpoints are atomic)
            if signum == signal.SIGINT and time.monotonic() - self.first > self.GRACE_S:
                raise KeyboardInterrupt
            return
        self.requested = True
        self.signum = signum
        self.first = time.monotonic()

    @contextmanager
    def installed(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self._handler)
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def _store_facts(info) -> dict[str, Any]:
    meta = info.meta
    facts = {k: meta[k] for k in STORE_KEYS_FOR_PREDICT if k in meta}
    facts["path"] = os.fspath(info.path)
    return facts


def _prepare_config(config, resume) -> tuple[TrainConfig, Optional[dict]]:
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
            setattr(saved, name, value)
        else:
            raise ConfigError(
                f"--resume continues the saved run exactly, so {name} cannot change "
                f"(saved {getattr(saved, name)!r}, given {value!r})",
                run_dir,
            )
    saved.out = os.fspath(run_dir)
    return saved, payload


def train(config: TrainConfig | dict | None = None, *, resume: Optional[os.PathLike | str] = None,
          progress: Progress = None) -> TrainResult:
    """Train ``config.arch`` on ``config.data``; write RUN_DIR; return a :class:`TrainResult`.

    ``config``: a :class:`TrainConfig` (see :func:`jdct_cli.config.build_config`) or a dict of its
    fields; may be None with ``resume``. ``resume``: a RUN_DIR holding ``last.pt`` — training
    continues with the saved config, step count, LR position, optimizer and loader state (the
    same data order). ``progress``: called (rank 0 only) with event dicts: ``{"event": "start",
    ...}``, ``"epoch_start"``, ``"step"`` (loss, lr, images_per_s), ``"val_step"``, ``"epoch_end"``
    (the metrics line), ``"interrupted"``, ``"done"``.

    On SIGINT/SIGTERM the current step finishes, a resumable ``last.pt`` is written (mid-epoch,
    with the loader position) and the result has ``interrupted=True``. Raises ConfigError,
    StoreError, UnknownModelError, CheckpointError.
    """
    if config is None and resume is None:
        raise ConfigError("no config and nothing to resume")
    cfg, payload = _prepare_config(config, resume)
    stop = _StopFlag()
    # Ctrl-C from here on is a request: the loop stops after the current step and saves (installed
    # before the process group forms, so no rank can miss a Ctrl-C that the others see).
    with stop.installed():
        dctx = _init_dist(cfg.device)
        try:
            return _train(cfg, payload, dctx, progress if dctx.is_main else None, stop)
        finally:
            if dctx.owns_group and dist.is_initialized():
                dist.destroy_process_group()


def _train(cfg: TrainConfig, payload: Optional[dict], dctx: _Dist, progress: Progress,
           stop: "_StopFlag") -> TrainResult:
    from .store import read_metadata

    if payload is None:
        cfg = resolve(cfg, dctx.world_size)
    elif cfg.world_size != dctx.world_size:
        raise ConfigError(
            f"the run was trained with {cfg.world_size} process(es) and is resumed with {dctx.world_size}: "
            "the data order and LR would not continue exactly; resume with the same process count",
            cfg.out,
        )
    device = _resolve_device(cfg.device, dctx.local_rank)
    on_cuda = device.type == "cuda"
    amp = bool(cfg.amp and on_cuda)
    channels_last = bool(cfg.channels_last and on_cuda)
    if on_cuda:
        # fixed input shapes: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True
    run_dir = Path(cfg.out)

    info = read_metadata(cfg.data)
    classes = info.classes
    if payload is not None and list(payload["classes"]) != classes:
        raise CheckpointError("the store's classes differ from the checkpoint's", cfg.data)
    if payload is None and (run_dir / "last.pt").exists():
        raise ConfigError(
            f"already holds a training run; continue it with --resume {run_dir} or pick another --out", run_dir
        )

    torch.manual_seed(cfg.seed)
    model, input_kind = _build_model(cfg.arch, len(classes))
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    train_loader = _loader(cfg.data, cfg.train_split, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                           dctx=dctx, threads=cfg.threads, device=device, drop_last=True, flip=True,
                           output=input_kind)
    val_loader = _loader(cfg.data, cfg.val_split, batch_size=cfg.batch_size, shuffle=False, seed=cfg.seed,
                         dctx=dctx, threads=cfg.threads, device=device, drop_last=False, flip=False,
                         output=input_kind)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"the {cfg.train_split!r} split has fewer samples per process than one batch of {cfg.batch_size}",
            cfg.data,
        )

    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    # bf16 autocast needs no loss scaling; the scaler is kept (disabled) so that checkpoints have
    # one layout whatever the precision.
    scaler = torch.amp.GradScaler(device.type, enabled=False)

    step = 0
    start_epoch = 0
    best_top1 = None
    epoch_sums = {"loss": 0.0, "correct": 0, "count": 0}
    mid_epoch = False
    history: list[dict] = []
    if payload is not None:
        ckpt.load_model_state(model, payload, run_dir / "last.pt")
        optimizer.load_state_dict(payload["optimizer"])
        scaler.load_state_dict(payload.get("scaler") or {})
        step = int(payload["step"])
        start_epoch = int(payload["epoch"])
        best_top1 = payload.get("best_top1")
        mid_epoch = bool(payload.get("mid_epoch"))
        if mid_epoch:
            epoch_sums = resumed_partial_sums(payload["epoch_sums"], dctx)
        if "rng" in payload and "torch" in payload["rng"]:
            torch.set_rng_state(payload["rng"]["torch"])
        sched = payload.get("scheduler") or {}
        if sched.get("steps_per_epoch") not in (None, steps_per_epoch):
            raise CheckpointError(
                f"the store now gives {steps_per_epoch} steps per epoch, the run had {sched['steps_per_epoch']}",
                run_dir,
            )

    if dctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        if payload is not None:
            _trim_metrics(run_dir / "metrics.jsonl", start_epoch)

    train_model = model
    if dctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if on_cuda else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    tb = _tensorboard(run_dir) if dctx.is_main else None
    store_facts = _store_facts(info)

    def make_payload(epoch_done: int, in_epoch: bool, metrics: Optional[dict]) -> dict:
        return {
            "format": ckpt.FORMAT_NAME,
            "format_version": ckpt.FORMAT_VERSION,
            "jdct_version": __version__,
            "arch": cfg.arch,
            "num_classes": len(classes),
            "classes": list(classes),
            "input_kind": input_kind,
            "config": cfg.to_dict(),
            "store": store_facts,
            "epoch": epoch_done,
            "step": step,
            "mid_epoch": in_epoch,
            "epoch_sums": dict(epoch_sums),
            "best_top1": best_top1,
            "metrics": metrics,
            "scheduler": {"step": step, "base_lr": cfg.lr, "steps_per_epoch": steps_per_epoch},
            "model": {k: v.detach().to("cpu") for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "loader": train_loader.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
        }

    def emit(event: dict) -> None:
        if progress is not None:
            progress(event)

    emit({"event": "start", "arch": cfg.arch, "input_kind": input_kind, "device": str(device),
          "world_size": dctx.world_size, "epochs": cfg.epochs, "start_epoch": start_epoch, "step": step,
          "steps_per_epoch": steps_per_epoch, "lr": cfg.lr, "global_batch_size": cfg.global_batch_size,
          "run_dir": os.fspath(run_dir), "resumed": payload is not None})

    last_metrics = payload.get("metrics") if payload is not None else None
    interrupted = False
    epochs_done = start_epoch
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        train_loader.set_epoch(epoch)
        if mid_epoch:
            train_loader.load_state_dict(payload["loader"])
        else:
            epoch_sums = {"loss": 0.0, "correct": 0, "count": 0}
        mid_epoch = False
        first_step_in_epoch = step - epoch * steps_per_epoch
        epoch_lr = lr_at(epoch * steps_per_epoch, base_lr=cfg.lr, steps_per_epoch=steps_per_epoch,
                         warmup_epochs=cfg.warmup_epochs, milestones=cfg.milestones)
        emit({"event": "epoch_start", "epoch": epoch + 1, "epochs": cfg.epochs, "total": steps_per_epoch,
              "done": first_step_in_epoch})
        t0 = time.perf_counter()
        seen = 0
        # Running sums (loss x samples, correct, samples) stay on the device: reading a CUDA value
        # every step would stall the GPU queue, so on CUDA the loss is read every SYNC_EVERY steps.
        sums = torch.tensor([epoch_sums["loss"], epoch_sums["correct"], epoch_sums["count"]],
                            dtype=torch.float64, device=device)
        shown_loss = float("nan")
        for batch in train_loader:
            lr = lr_at(step, base_lr=cfg.lr, steps_per_epoch=steps_per_epoch,
                       warmup_epochs=cfg.warmup_epochs, milestones=cfg.milestones)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, labels, valid = _unpack(batch, device, channels_last)
            with _autocast(device, amp):
                logits = train_model(*inputs)
            logits = logits.float()
            # label -1 marks padding/failed samples (never in drop_last training batches, but be safe)
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing, ignore_index=-1)
            reg = model.regularization_loss() if hasattr(model, "regularization_loss") else None
            total_loss = loss if reg is None else loss + reg
            optimizer.zero_grad(set_to_none=True)
            total_loss.backward()
            optimizer.step()
            step += 1
            seen += labels.shape[0]
            with torch.no_grad():
                n_valid = (labels >= 0).sum().double()
                sums += torch.stack([loss.detach().double() * n_valid,
                                     (logits.argmax(1) == labels).sum().double(), n_valid])
            if device.type != "cuda" or step % SYNC_EVERY == 0 or step % steps_per_epoch == 0:
                shown_loss = float(total_loss.detach())
                if not math.isfinite(shown_loss):
                    raise JdctError(f"the training loss became {shown_loss} by step {step} (lr {lr:g}); "
                                    "lower --lr (last.pt holds the last good epoch)", run_dir)
            elapsed = time.perf_counter() - t0
            emit({"event": "step", "epoch": epoch + 1, "step": step, "loss": shown_loss, "lr": lr,
                  "images_per_s": seen * dctx.world_size / elapsed if elapsed > 0 else 0.0})
            if poll_stop(step, steps_per_epoch, dctx.enabled and on_cuda) and _any_rank(stop.requested, device, dctx):
                interrupted = True
                break
        loss_sum, correct, count = sums.tolist()
        epoch_sums = {"loss": loss_sum, "correct": int(round(correct)), "count": int(round(count))}
        if interrupted:
            sync_buffers(model, dctx)  # collective: every rank, before rank 0 saves
            epoch_sums = global_partial_sums(epoch_sums, device, dctx)  # collective too
            if dctx.is_main:
                ckpt.save_checkpoint(run_dir / "last.pt", make_payload(epoch, True, last_metrics))
            emit({"event": "interrupted", "epoch": epoch + 1, "step": step,
                  "checkpoint": os.fspath(run_dir / "last.pt")})
            break
        train_time = time.perf_counter() - t0
        loss_sum, correct, count, seen_all = _all_reduce_sum(
            [epoch_sums["loss"], epoch_sums["correct"], epoch_sums["count"], seen], device, dctx)
        sync_buffers(model, dctx)
        emit({"event": "val_start", "epoch": epoch + 1, "total": len(val_loader)})
        val = run_validation(model, val_loader, device=device, amp=amp, channels_last=channels_last,
                             dctx=dctx, progress=progress)
        epoch_time = time.perf_counter() - t0
        metrics = {
            "epoch": epoch + 1,
            "step": step,
            "lr": epoch_lr,
            "train_loss": loss_sum / count if count else float("nan"),
            "train_top1": correct / count if count else 0.0,
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "val_samples": val["samples"],
            "images_per_s": seen_all / train_time if train_time > 0 else 0.0,
            "epoch_time_s": epoch_time,
        }
        last_metrics = metrics
        epochs_done = epoch + 1
        history.append(metrics)
        improved = best_top1 is None or val["top1"] > best_top1
        if improved:
            best_top1 = val["top1"]
        if dctx.is_main:
            with open(run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(metrics) + "\n")
            if tb is not None:
                for key, value in metrics.items():
                    if key not in ("epoch", "step"):
                        tb.add_scalar(key, value, epoch + 1)
                tb.flush()
            last_payload = make_payload(epoch + 1, False, metrics)
            ckpt.save_checkpoint(run_dir / "last.pt", last_payload)
            if improved:
                ckpt.atomic_link(run_dir / "last.pt", run_dir / "best.pt")
        emit({"event": "epoch_end", **metrics, "best": improved})
        # Ctrl-C during validation: the epoch is complete and saved; stop here.
        if _any_rank(stop.requested, device, dctx):
            interrupted = True
            emit({"event": "interrupted", "epoch": epoch + 1, "step": step,
                  "checkpoint": os.fspath(run_dir / "last.pt")})
            break
    if tb is not None:
        tb.close()
    result = TrainResult(run_dir=run_dir, epochs_done=epochs_done, steps=step, interrupted=interrupted, best_top1=best_top1, last_metrics=last_metrics,
                         world_size=dctx.world_size, rank=dctx.rank, history=history)
    emit({"event": "done", "interrupted": interrupted, "steps": step, "best_top1": best_top1,
          "metrics": last_metrics, "run_dir": os.fspath(run_dir)})
    return result


def _trim_metrics(path: Path, epochs_done: int) -> None:
    """Keep only the metrics lines of the epochs the resumed checkpoint has completed.

    The line of an epoch is appended just before its ``last.pt`` is written; a run killed between
    the two redoes that epoch when resumed, which must not leave two lines for it.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["epoch"]) <= epochs_done:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # a torn last line from a hard kill
            continue
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def _tensorboard(run_dir: Path):
    """A SummaryWriter under RUN_DIR/tb when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=os.fspath(run_dir / "tb"))
