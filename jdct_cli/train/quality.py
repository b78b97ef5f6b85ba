"""Inputs requantized with other tables: quality augmentation in training, ``eval --requantize``, and
the evaluation of learned tables.

All three start from dequantized coefficients (a loader with ``output="dct"``,
``normalize=False``), requantize them on the device (:func:`jdct_cli.jpegmath.learned.requantize_planes`:
dequantize, requantize, dequantize) and only then make the network's inputs
(:class:`InputStage`), so pixel networks see the requantized image as a JPEG decoder would
(block IDCT of the 4:2:0 planes, chroma upsampling, colour conversion) exactly as the loader
rebuilds pixels.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..data import device_constants, dequantized_to_pixels
from ..jpegmath import learned
from ..store import COEFFICIENT_ARRAYS
from ..tables import QualityAugment, entropy_coded_bytes, encode_with_tables

Progress = Optional[Callable[[dict], None]]


class InputStage:
    """Dequantized ``(y, cb, cr)`` (libjpeg's scale) -> the inputs a network of ``kind`` takes, the
    way :class:`jdct_cli.data.DCTLoader` makes them: standardized with ``stats`` (the training
    store's, ``{plane: {"mean", "std"}}``) for ``"dct"``, rebuilt and normalized pixels otherwise.
    Differentiable (learn-tables back-propagates through it)."""

    def __init__(self, kind: str, stats: Optional[dict], device):
        ones = np.ones(64)
        unit = {name: ones for name in COEFFICIENT_ARRAYS}
        self.kind = kind
        self.consts = device_constants(unit, stats, output=kind, normalize=True, device=device)
        self._raw = None
        self._unit = unit
        self._device = device

    def to_inputs(self, planes: Sequence[torch.Tensor]) -> tuple:
        """A tuple for ``model(*inputs)``."""
        if self.kind == "dct":
            return tuple(p * self.consts[n][0] + self.consts[n][1] for n, p in zip(COEFFICIENT_ARRAYS, planes))
        return (dequantized_to_pixels(list(planes), self.consts, self.kind),)

    def source_rgb(self, planes: Sequence[torch.Tensor]) -> np.ndarray:
        """uint8 ``[B, S, S, 3]`` RGB of dequantized planes (rounded, clipped): the images the real
        JPEG files are written from."""
        if self._raw is None:
            self._raw = device_constants(self._unit, None, output="rgb", normalize=False, device=self._device)
        with torch.no_grad():
            x = dequantized_to_pixels([p.float() for p in planes], self._raw, "rgb")
            x = torch.round(x * 255.0).clamp_(0, 255).to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class QualityAugmenter:
    """``--quality-augment``: requantize each training sample with the tables of an IJG quality
    drawn from ``spec``'s range, or with ``spec``'s fixed tables.

    The quality of a sample is a pure function of ``(seed, epoch, store index)``
    (:func:`jdct_cli.jpegmath.learned.sample_qualities`), so it does not depend on the batch, the
    number of processes or a resume.
    """

    def __init__(self, spec: QualityAugment, seed: int, device):
        self.spec = spec
        self.seed = int(seed)
        self.device = device
        self.bank = learned.ijg_table_bank(device) if spec.tables is None else None
        if spec.tables is not None:
            self.fixed = (torch.as_tensor(spec.tables.luma.astype(np.float32), device=device),
                          torch.as_tensor(spec.tables.chroma.astype(np.float32), device=device))

    def qualities(self, epoch: int, samples: np.ndarray) -> Optional[np.ndarray]:
        """int64 IJG qualities of ``samples`` in ``epoch`` (None with fixed tables)."""
        if self.spec.tables is not None:
            return None
        return learned.sample_qualities(self.seed, epoch, samples, self.spec.low, self.spec.high)

    def __call__(self, planes: Sequence[torch.Tensor], epoch: int, samples: np.ndarray) -> tuple:
        if self.spec.tables is not None:
            return learned.requantize_planes(planes, *self.fixed)
        q = torch.as_tensor(self.qualities(epoch, samples), device=self.device)
        tables = self.bank[q]  # [B, 2, 64]
        return learned.requantize_planes(planes, tables[:, 0], tables[:, 1])


class _MappedLoader:
    """A loader whose batches go through ``fn(inputs, labels) -> inputs`` (len and classes kept)."""

    def __init__(self, loader, fn):
        self.loader = loader
        self.fn = fn
        self.classes = loader.classes

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for inputs, labels in self.loader:
            yield self.fn(inputs, labels), labels


def requantized_eval(model, kind: str, stats: Optional[dict], data, split: str, luma, chroma, *,
                     batch_size: int, device, threads: Optional[int] = None, real_size: bool = True,
                     amp: bool = False, channels_last: bool = False, progress: Progress = None,
                     size: Optional[int] = None, cache_dir=None, cache_bytes: Optional[int] = None) -> dict[str, Any]:
    """Validation of ``model`` on ``split`` of ``data`` requantized with ``luma``/``chroma`` (64 ints).
    ``size``: the crop size on an images store (None: the loader's default); ``cache_dir``,
    ``cache_bytes``: the loader's disk cache for a store on object storage.

    Returns {"loss", "top1", "top5", "samples"} (as :func:`~jdct_cli.train.runtime.run_validation`)
    plus ``estimated_bpp`` (entropy of the hard indices: per frequency, the split's marginal
    distribution; luma, and Cb with Cr pooled) and, with ``real_size``, ``real_bpp``: the mean
    entropy-coded bits per pixel of the JPEG files :func:`jdct_cli.tables.encode_with_tables`
    writes with these tables from each sample's stored image, with ``real_bpp_min``/``_max``.
    """
    from .runtime import make_loader, run_validation

    stage = InputStage(kind, stats, device)
    lq = torch.as_tensor(np.asarray(luma, np.float32), device=device)
    cq = torch.as_tensor(np.asarray(chroma, np.float32), device=device)
    counts = learned.IndexCounts(device=device)
    real: list[float] = []
    pixels = [0]
    loader = make_loader(data, split, batch_size=batch_size, train=False, seed=0, device=device, output="dct",
                         normalize=False, threads=threads, size=size, cache_dir=cache_dir, cache_bytes=cache_bytes)

    def fn(inputs, labels):
        planes = [x.to(device) for x in inputs]
        req = learned.requantize_planes(planes, lq, cq)
        keep = (labels >= 0).nonzero().flatten().to(planes[0].device)  # padding samples are not images
        counts.add([p[keep] for p in req], lq, cq)
        pixels[0] += int(keep.numel()) * 64 * planes[0].shape[2] * planes[0].shape[3]
        if real_size and keep.numel():
            rgb = stage.source_rgb([p[keep] for p in planes])
            s = rgb.shape[1] * rgb.shape[2]
            for image in rgb:
                real.append(8.0 * entropy_coded_bytes(encode_with_tables(image, luma, chroma)) / s)
        return stage.to_inputs(req)

    if progress is not None:
        progress({"event": "val_start", "total": len(loader)})
    val = run_validation(model, _MappedLoader(loader, fn), device=device, amp=amp, channels_last=channels_last,
                         progress=progress)
    val["estimated_bpp"] = counts.bits() / pixels[0] if pixels[0] else None
    if real_size:
        val["real_bpp"] = float(np.mean(real)) if real else None
        val["real_bpp_min"] = float(np.min(real)) if real else None
        val["real_bpp_max"] = float(np.max(real)) if real else None
    return val
