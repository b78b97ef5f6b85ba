"""What training and ``jdct eval`` share: the device, the network, the loaders, the validation pass.

``jdct eval`` runs exactly :func:`run_validation` on loaders made by :func:`make_loader`, so it
reproduces the validation metrics logged during training bit for bit (top-k are counts).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..data import DCTLoader
from ..config import parse_size_schedule, scheduled_size
from ..errors import ConfigError
from ..jpegmath import learned
from ..models import create_model, get_model_info
from .distributed import Dist, all_reduce_sum

Progress = Optional[Callable[[dict], None]]

#: top-5 accuracy is reported only for more classes than this (with 5 or fewer it is always 100 %).
TOP5_MIN_CLASSES = 6


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA when torch sees a GPU, else CPU), ``"cpu"``, ``"cuda"`` (GPU ``local_rank``)
    or ``"cuda:N"``; selects the GPU. ConfigError naming ``--device`` for anything else."""
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
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r} is not supported (use cpu, cuda, cuda:N or auto)", "--device")
    return device


def build_model(arch: str, num_classes: int, config: Optional[dict] = None):
    """(model, input_kind) of zoo network ``arch``; UnknownModelError (with a suggestion) otherwise.

    ``config``: a run's config (dict); when its ``jpeg_layer`` is ``"learned"`` the network comes
    behind a trainable JPEG layer (:class:`jdct_cli.jpegmath.learned.JpegLayerModel`, tables and
    normalization at their neutral values until set up for training or loaded from a checkpoint).
    """
    info = get_model_info(arch)
    model = create_model(arch, num_classes)
    if config and config.get("jpeg_layer"):
        model = wrap_jpeg_layer(model, info.input_kind, hardness=float(config.get("jpeg_hardness", 0.7)),
                                bits=int(config.get("jpeg_bits", learned.DEFAULT_BITS)))
    return model, info.input_kind


def wrap_jpeg_layer(net, kind: str, *, hardness: float, bits: Optional[int]):
    """``net`` behind a JPEG layer for its input kind: in the coefficient domain for DCT networks,
    DCT -> soft quantization -> IDCT on pixels for the others."""
    if kind == "dct":
        layer = learned.CoefficientJpegLayer(hardness=hardness, bits=bits)
    else:
        layer = learned.PixelJpegLayer(kind, hardness=hardness, bits=bits)
    return learned.JpegLayerModel(net, layer)


class ScheduledSizeLoader(DCTLoader):
    """A :class:`DCTLoader` of an images store whose crop side follows a progressive-resizing
    schedule: :meth:`set_epoch` also sets the size of that epoch
    (:func:`jdct_cli.config.scheduled_size`), so resuming mid-epoch gets the same size."""

    def __init__(self, *args, size_schedule: str, epochs: int, **kwargs):
        self.size_schedule = size_schedule
        self.epochs = int(epochs)
        super().__init__(*args, size=scheduled_size(size_schedule, 0, self.epochs), **kwargs)
        if self.layout != "images":
            raise ConfigError("--size-schedule needs an images-layout store (jdct convert --layout images): this "
                              f"crops-layout store holds crops of one size ({self.size} px)", self.path)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.set_size(scheduled_size(self.size_schedule, self.epoch, self.epochs))


def make_loader(store, split: str, *, batch_size: int, train: bool, seed: int, device: torch.device,
                output: str, dctx: Optional[Dist] = None, threads: Optional[int] = None,
                stats: Optional[dict] = None, normalize: bool = True, cache_dir=None,
                cache_bytes: Optional[int] = None, size: Optional[int] = None,
                size_schedule: Optional[str] = None, epochs: int = 1) -> DCTLoader:
    """The loader of one split: ``train=True`` shuffles, flips and drops the last partial batch
    (every rank the same number of full batches); ``train=False`` reads every sample once in store
    order. ``stats``: normalization statistics other than the store's (a checkpoint's);
    ``normalize=False``: dequantized coefficients (or [0, 1] pixels), not standardized. ``store``:
    a path, a URL or a :class:`~jdct_cli.store.StoreLocation` (with its storage options);
    ``cache_dir``/``cache_bytes``: the loader's local disk cache (object stores). Images-layout
    stores: ``size`` the crop side (None: the store's default; a crops store accepts only its own),
    ``size_schedule`` "LOW:HIGH" over ``epochs`` epochs (:class:`ScheduledSizeLoader`); ``train``
    also means fresh RandomResizedCrops, else the val Resize + CenterCrop."""
    dctx = dctx or Dist()
    kwargs = dict(batch_size=batch_size, shuffle=train, seed=seed, device=device, drop_last=train, flip=train,
                  random_crop=train, output=output, stats=stats, rank=dctx.rank, world_size=dctx.world_size,
                  threads=threads, normalize=normalize, cache_dir=cache_dir, cache_bytes=cache_bytes)
    if size_schedule is not None:
        return ScheduledSizeLoader(store, split, size_schedule=size_schedule, epochs=epochs, **kwargs)
    return DCTLoader(store, split, size=size, **kwargs)


def eval_size(size: Optional[int], size_schedule: Optional[str]) -> Optional[int]:
    """The crop side a run validates (and predicts) at: ``size``, else the schedule's last size,
    else None (the store's default)."""
    if size is not None:
        return int(size)
    if size_schedule is not None:
        return parse_size_schedule(size_schedule)[1]
    return None


def usable_samples(store, split: str) -> int:
    """Samples of ``split`` a training epoch can draw from (failed conversions left out; the
    smallest count over the split's views)."""
    probe = DCTLoader(store, split, batch_size=1, shuffle=False, drop_last=False, flip=False, rank=0,
                      world_size=1, threads=1)
    counts = []
    for view in range(probe.views):
        probe.set_epoch(view)
        counts.append(probe.total_samples)
    return min(counts)


def batch_to_device(batch, device: torch.device, channels_last: bool):
    """(inputs tuple, labels int64) of a loader batch ``(inputs, labels)`` on ``device``.

    ``inputs`` is the loader's tuple (y, cb, cr) or a single pixel tensor; labels -1 mark padding
    samples (see :class:`jdct_cli.data.DCTLoader`).
    """
    inputs, labels = batch
    if not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    moved = []
    for x in inputs:
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        moved.append(x)
    return tuple(moved), labels.to(device, non_blocking=True).long()


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; a no-op context otherwise."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def run_validation(model, loader, *, device: torch.device, amp: bool, channels_last: bool,
                   dctx: Optional[Dist] = None, progress: Progress = None) -> dict:
    """Loss (mean cross-entropy, no label smoothing), top-1 and top-5 over every sample once.

    Sums of loss, top-1 hits, top-5 hits and sample counts are all-reduced over the ranks, and
    padding samples (label -1) are excluded, so a DDP run counts each val sample exactly once.
    Returns {"loss", "top1", "top5", "samples"}: top-k as fractions in [0, 1], ``top5`` None when
    the store has fewer than :data:`TOP5_MIN_CLASSES` classes (it would always be 1).
    """
    dctx = dctx or Dist()
    was_training = model.training
    model.eval()
    # loss, top-1 hits, top-5 hits, samples: float64 on the device (no per-batch GPU sync)
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    top5_shown = len(loader.classes) >= TOP5_MIN_CLASSES
    total = len(loader)
    for i, batch in enumerate(loader):
        inputs, labels = batch_to_device(batch, device, channels_last)
        with autocast(device, amp):
            logits = model(*inputs)
        logits = logits.float()
        valid = (labels >= 0).double()
        loss = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
        hit = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        sums += torch.stack([(loss.double() * valid).sum(), (hit[:, 0].double() * valid).sum(),
                             (hit.any(dim=1).double() * valid).sum(), valid.sum()])
        if progress is not None:
            progress({"event": "val_step", "step": i + 1, "total": total})
    loss_sum, c1, c5, n = all_reduce_sum(sums.tolist(), device, dctx)
    model.train(was_training)
    n_int = int(round(n))
    if n_int == 0:
        return {"loss": float("nan"), "top1": 0.0, "top5": 0.0 if top5_shown else None, "samples": 0}
    return {"loss": loss_sum / n, "top1": c1 / n, "top5": c5 / n if top5_shown else None, "samples": n_int}
