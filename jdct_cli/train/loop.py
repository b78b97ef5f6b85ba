"""The epoch loop of ``jdct train``: steps, validation, metrics, checkpoints, Ctrl-C.

:class:`Session` holds what a run is made of (set up once by :mod:`jdct_cli.train.api`), and
:class:`Position` where it stands (what a checkpoint saves). :func:`fit` runs the remaining epochs.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .. import checkpoint as ckpt
from ..config import TrainConfig, lr_at
from ..errors import JdctError
from .distributed import (SYNC_EVERY, Dist, all_reduce_sum, any_rank, global_partial_sums, poll_stop,
                          sync_buffers)
from .rundir import RunDir
from .runtime import autocast, batch_to_device, run_validation
from .signals import StopFlag

Progress = Optional[Callable[[dict], None]]


def _zero_sums() -> dict:
    return {"loss": 0.0, "correct": 0, "count": 0}


@dataclass
class TrainResult:
    """What :func:`jdct_cli.train.train` returns.

    ``interrupted``: stopped by SIGINT/SIGTERM after saving last.pt; ``already_complete``: a
    resumed run that had done all its epochs (nothing was trained); ``best_top1`` None without
    validation; ``history``: the metrics lines of the epochs trained by this call.
    """

    run_dir: Path
    epochs_done: int
    steps: int
    epochs: int = 0
    interrupted: bool = False
    already_complete: bool = False
    best_top1: Optional[float] = None
    last_metrics: Optional[dict] = None
    world_size: int = 1
    rank: int = 0
    history: list = field(default_factory=list)


@dataclass
class Session:
    """Everything a run is made of. ``model`` is the bare network (what checkpoints hold);
    ``train_model`` the same wrapped by DDP and/or torch.compile for the training forward.
    ``val_loader`` is None for a run without validation."""

    cfg: TrainConfig
    dctx: Dist
    device: torch.device
    amp: bool
    channels_last: bool
    model: torch.nn.Module
    train_model: torch.nn.Module
    input_kind: str
    classes: list
    optimizer: torch.optim.Optimizer
    scaler: Any
    train_loader: Any
    val_loader: Any
    steps_per_epoch: int
    store_facts: dict
    run: RunDir
    stop: StopFlag
    progress: Progress = None
    jpeg_optimizer: Optional[torch.optim.Optimizer] = None  # the JPEG layer's tables (None: no layer)
    augmenter: Any = None  # a QualityAugmenter (the train loader then gives dequantized coefficients)
    input_stage: Any = None  # an InputStage: requantized coefficients -> the network's inputs

    def emit(self, event: dict) -> None:
        if self.progress is not None:
            self.progress(event)

    def lr(self, step: int) -> float:
        cfg = self.cfg
        return lr_at(step, base_lr=cfg.lr, steps_per_epoch=self.steps_per_epoch, warmup_epochs=cfg.warmup_epochs,
                     milestones=cfg.milestones)


@dataclass
class Position:
    """Where a run stands. ``epoch_sums``: the train sums (loss x samples, correct, samples) of the
    epoch in progress; ``loader_state``: the train loader's position inside it when resuming a
    mid-epoch checkpoint (``mid_epoch``)."""

    step: int = 0
    epochs_done: int = 0
    best_top1: Optional[float] = None
    last_metrics: Optional[dict] = None
    epoch_sums: dict = field(default_factory=_zero_sums)
    mid_epoch: bool = False
    loader_state: Optional[dict] = None


def checkpoint_payload(s: Session, pos: Position, *, mid_epoch: bool) -> dict:
    """The checkpoint of ``pos`` (``mid_epoch``: saved inside epoch ``pos.epochs_done + 1``)."""
    payload = ckpt.build_payload(
        config=s.cfg.to_dict(), arch=s.cfg.arch, classes=s.classes, input_kind=s.input_kind, store=s.store_facts,
        epoch=pos.epochs_done, step=pos.step, mid_epoch=mid_epoch, epoch_sums=pos.epoch_sums,
        best_top1=pos.best_top1, metrics=pos.last_metrics, steps_per_epoch=s.steps_per_epoch, model=s.model,
        optimizer=s.optimizer, scaler=s.scaler, loader_state=s.train_loader.state_dict(),
        rng_state=torch.get_rng_state())
    if s.jpeg_optimizer is not None:
        payload.update(ckpt.jpeg_layer_entries(s.model.tables, s.jpeg_optimizer))
    return payload


def _step_jpeg_tables(s: Session, step: int) -> None:
    """Step the JPEG layer's tables at their own LR (on the network's schedule), then clamp them."""
    cfg = s.cfg
    factor = lr_at(step, base_lr=1.0, steps_per_epoch=s.steps_per_epoch, warmup_epochs=cfg.warmup_epochs,
                   milestones=cfg.milestones)
    for group in s.jpeg_optimizer.param_groups:
        group["lr"] = cfg.jpeg_lr * factor
    s.jpeg_optimizer.step()
    s.model.clamp_tables_()


def train_epoch(s: Session, pos: Position, epoch: int) -> tuple[bool, int, float]:
    """Run the steps of epoch ``epoch`` (0-based) that remain; update ``pos.step`` and
    ``pos.epoch_sums`` (this rank's). Returns (interrupted, samples seen, seconds)."""
    cfg, device = s.cfg, s.device
    s.train_loader.set_epoch(epoch)
    if pos.mid_epoch:
        s.train_loader.load_state_dict(pos.loader_state)
    else:
        pos.epoch_sums = _zero_sums()
    pos.mid_epoch, pos.loader_state = False, None
    s.emit({"event": "epoch_start", "epoch": epoch + 1, "epochs": cfg.epochs, "total": s.steps_per_epoch,
            "done": pos.step - epoch * s.steps_per_epoch})
    t0 = time.perf_counter()
    seen = 0
    interrupted = False
    # Running sums stay on the device: reading a CUDA value every step would stall the GPU queue,
    # so on CUDA the loss is read every SYNC_EVERY steps.
    sums = torch.tensor([pos.epoch_sums["loss"], pos.epoch_sums["correct"], pos.epoch_sums["count"]],
                        dtype=torch.float64, device=device)
    shown_loss = float("nan")
    plan = s.train_loader.plan(epoch) if s.augmenter is not None else None
    for batch in s.train_loader:
        lr = s.lr(pos.step)
        for group in s.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        inputs, labels = batch_to_device(batch, device, s.channels_last)
        if plan is not None:
            # the batch's store samples: it is batch (step - epoch * steps_per_epoch) of this epoch
            samples = plan.batch(pos.step - epoch * s.steps_per_epoch)
            inputs = s.input_stage.to_inputs(s.augmenter(inputs, epoch, samples))
            if s.channels_last:
                inputs = tuple(x.contiguous(memory_format=torch.channels_last) for x in inputs)
        with autocast(device, s.amp):
            logits = s.train_model(*inputs)
        logits = logits.float()
        # label -1 marks padding/failed samples (never in drop_last training batches, but be safe)
        loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing, ignore_index=-1)
        reg = s.model.regularization_loss()
        total_loss = loss if reg is None else loss + reg
        s.optimizer.zero_grad(set_to_none=True)
        if s.jpeg_optimizer is not None:
            s.jpeg_optimizer.zero_grad(set_to_none=True)
        total_loss.backward()
        s.optimizer.step()
        if s.jpeg_optimizer is not None:
            _step_jpeg_tables(s, pos.step)
        pos.step += 1
        seen += labels.shape[0]
        with torch.no_grad():
            n_valid = (labels >= 0).sum().double()
            sums += torch.stack([loss.detach().double() * n_valid, (logits.argmax(1) == labels).sum().double(),
                                 n_valid])
        if device.type != "cuda" or pos.step % SYNC_EVERY == 0 or pos.step % s.steps_per_epoch == 0:
            shown_loss = float(total_loss.detach())
            if not math.isfinite(shown_loss):
                raise JdctError(f"the training loss became {shown_loss} by step {pos.step} (lr {lr:g}); "
                                "lower --lr (last.pt holds the last good epoch)", s.run.path)
        elapsed = time.perf_counter() - t0
        s.emit({"event": "step", "epoch": epoch + 1, "step": pos.step, "loss": shown_loss, "lr": lr,
                "images_per_s": seen * s.dctx.world_size / elapsed if elapsed > 0 else 0.0})
        if (poll_stop(pos.step, s.steps_per_epoch, s.dctx.enabled and device.type == "cuda")
                and any_rank(s.stop.requested, device, s.dctx)):
            interrupted = True
            break
    loss_sum, correct, count = sums.tolist()
    pos.epoch_sums = {"loss": loss_sum, "correct": int(round(correct)), "count": int(round(count))}
    return interrupted, seen, time.perf_counter() - t0


def save_interrupted(s: Session, pos: Position, epoch: int) -> None:
    """Ctrl-C inside epoch ``epoch``: every rank's partial sums and buffers to rank 0, which saves a
    mid-epoch ``last.pt`` (collective: every rank calls it)."""
    sync_buffers(s.model, s.dctx)
    pos.epoch_sums = global_partial_sums(pos.epoch_sums, s.device, s.dctx)
    s.run.save(checkpoint_payload(s, pos, mid_epoch=True))
    s.emit({"event": "interrupted", "epoch": epoch + 1, "step": pos.step, "checkpoint": os.fspath(s.run.last)})


def end_epoch(s: Session, pos: Position, epoch: int, seen: int, train_time: float, t0: float) -> dict:
    """Validation, the metrics line, last.pt (and best.pt) after epoch ``epoch``; returns the line."""
    loss_sum, correct, count, seen_all = all_reduce_sum(
        [pos.epoch_sums["loss"], pos.epoch_sums["correct"], pos.epoch_sums["count"], seen], s.device, s.dctx)
    sync_buffers(s.model, s.dctx)
    if s.val_loader is not None:
        s.emit({"event": "val_start", "epoch": epoch + 1, "total": len(s.val_loader)})
        val = run_validation(s.model, s.val_loader, device=s.device, amp=s.amp, channels_last=s.channels_last,
                             dctx=s.dctx, progress=s.progress)
    else:
        val = {"loss": None, "top1": None, "top5": None, "samples": 0}
    metrics = {
        "epoch": epoch + 1,
        "step": pos.step,
        "lr": s.lr(epoch * s.steps_per_epoch),
        "train_loss": loss_sum / count if count else float("nan"),
        "train_top1": correct / count if count else 0.0,
        "val_loss": val["loss"],
        "val_top1": val["top1"],
        "val_top5": val["top5"],
        "val_samples": val["samples"],
        "images_per_s": seen_all / train_time if train_time > 0 else 0.0,
        "epoch_time_s": time.perf_counter() - t0,
    }
    pos.last_metrics = metrics
    pos.epochs_done = epoch + 1
    improved = val["top1"] is not None and (pos.best_top1 is None or val["top1"] > pos.best_top1)
    if improved:
        pos.best_top1 = val["top1"]
    s.run.log_epoch(metrics)
    payload = checkpoint_payload(s, pos, mid_epoch=False)
    s.run.save(payload, best=improved)
    if s.jpeg_optimizer is not None:
        s.run.save_tables(payload["jpeg_tables"], epoch=epoch + 1, best=improved)
    s.emit({"event": "epoch_end", **metrics, "best": improved, "checkpoint_bytes": s.run.last_checkpoint_bytes})
    return metrics


def fit(s: Session, pos: Position) -> TrainResult:
    """Train from ``pos`` to ``s.cfg.epochs`` epochs, or until Ctrl-C (then ``interrupted``)."""
    result = TrainResult(run_dir=s.run.path, epochs_done=pos.epochs_done, steps=pos.step, epochs=s.cfg.epochs,
                         best_top1=pos.best_top1, last_metrics=pos.last_metrics, world_size=s.dctx.world_size,
                         rank=s.dctx.rank)
    if pos.epochs_done >= s.cfg.epochs and not pos.mid_epoch:
        result.already_complete = True
        s.emit({"event": "done", "interrupted": False, "already_complete": True, "steps": pos.step,
                "best_top1": pos.best_top1, "metrics": pos.last_metrics, "run_dir": os.fspath(s.run.path)})
        return result
    s.model.train()
    for epoch in range(pos.epochs_done, s.cfg.epochs):
        t0 = time.perf_counter()
        interrupted, seen, train_time = train_epoch(s, pos, epoch)
        if interrupted:
            save_interrupted(s, pos, epoch)
            result.interrupted = True
            break
        result.history.append(end_epoch(s, pos, epoch, seen, train_time, t0))
        # Ctrl-C during validation: the epoch is complete and saved; stop here.
        if epoch + 1 < s.cfg.epochs and any_rank(s.stop.requested, s.device, s.dctx):
            result.interrupted = True
            s.emit({"event": "interrupted", "epoch": epoch + 1, "step": pos.step,
                    "checkpoint": os.fspath(s.run.last)})
            break
    result.epochs_done, result.steps = pos.epochs_done, pos.step
    result.best_top1, result.last_metrics = pos.best_top1, pos.last_metrics
    s.emit({"event": "done", "interrupted": result.interrupted, "already_complete": False, "steps": pos.step,
            "best_top1": pos.best_top1, "metrics": pos.last_metrics, "run_dir": os.fspath(s.run.path)})
    return result
