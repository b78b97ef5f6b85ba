"""Learned JPEG quantization in torch: the soft quantizer of JPEG-DL, its rate estimate (J4D), the
hard quantizer, requantization with per-sample tables, and the trainable JPEG layer.

Scale and layout conventions (those of the store and of libjpeg):

- Coefficients are dequantized values on libjpeg's scale: the orthonormal 8x8 DCT-II of
  level-shifted pixels (``pixel - 128``), so quantization step ``q = 1`` is the quality-100 table.
  A plane is ``[B, 64, H8, W8]``, channel ``k = 8*v + u`` (natural order).
- Tables are 64 steps in natural order, luma (Y) and chroma (shared by Cb and Cr); a table
  broadcasts against a plane as ``[1, 64, 1, 1]`` (or ``[B, 64, 1, 1]`` per sample).
- Quantization indices are ``j = round(x / q)``; libjpeg rounds half away from zero.

The soft quantizer (Salamah et al., "JPEG Inspired Deep Learning", ICLR 2025): with
``r = round(x/q)`` the candidates are ``j in {r-2 .. r+2}`` (the window is not differentiated; with
``bits`` its start is clamped so that every index stays in the b-bit range ``[-(2^(b-1)-1),
2^(b-1)-1]``), ``P(j|x) = softmax_j(-alpha (x - j q)^2)`` and ``x_hat = sum_j P(j|x) j q``.
``alpha = hardness / q^2`` makes the softness the same at every step size; it is recomputed from
``q`` without gradient, so ``x_hat`` reaches ``q`` only through ``j q`` and the distances.

The rate estimate (J4D, Zheng et al. 2026): per table group (luma: Y; chroma: Cb and Cr pooled,
since they share one table and one set of Huffman tables in a 4:2:0 file) and per frequency, the
marginal distribution of indices over a batch is the mean of ``P(j|x)``; the estimated bits are
that distribution's entropy times the number of coefficients, ``-sum_j c(j) log2(c(j)/N)`` with
``c(j) = sum_n P(j|x_n)``. With hard indices it is the empirical entropy of the indices.

torch is imported here: import this module only where torch is already needed.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from .blockdct import dct_blocks, idct_blocks
from .color import rgb_to_ycbcr, ycbcr_to_rgb
from .quant import dequantize, ijg_tables, quantize

__all__ = [
    "WINDOW",
    "DEFAULT_BITS",
    "Q_MIN",
    "Q_MAX",
    "soft_quantize",
    "soft_quantize_probs",
    "index_entropy_bits",
    "hard_index_entropy_bits",
    "estimate_bits",
    "libjpeg_tables",
    "init_tables_from_abs_mean",
    "ijg_table_bank",
    "sample_qualities",
    "requantize_planes",
    "QuantTables",
    "LogQuantTables",
    "CoefficientJpegLayer",
    "PixelJpegLayer",
    "JpegLayerModel",
    "IndexCounts",
]

#: Candidates per coefficient of the soft quantizer: round(x/q) - 2 .. round(x/q) + 2.
WINDOW = 5
#: Index range of the window clamp: 11 bits hold every index of an 8-bit baseline JPEG with q >= 1
#: (|x| <= 1024 for the orthonormal DCT of level-shifted 8-bit pixels).
DEFAULT_BITS = 11
#: Trainable steps are kept in [Q_MIN, Q_MAX] after every optimizer step (JPEG-DL's bounds).
Q_MIN = 1e-5
Q_MAX = 255.0


# ------------------------------------------------------------------------------------------------
# quantizers
# ------------------------------------------------------------------------------------------------


def _window_start(x: torch.Tensor, q: torch.Tensor, bits: Optional[int]) -> torch.Tensor:
    """First candidate index ``round(x/q) - 2`` (b-bit clamped), without gradient, float."""
    start = torch.round(x / q) - (WINDOW // 2)
    if bits is not None:
        half = 2 ** (int(bits) - 1)
        start = start.clamp(-(half - 1), half - WINDOW)
    return start


def soft_quantize_probs(x: torch.Tensor, q: torch.Tensor, hardness: float, *, bits: Optional[int] = DEFAULT_BITS,
                        alpha: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The soft quantizer's parts: ``(probs, start, x_hat)``.

    ``x``: coefficients (any shape); ``q``: steps broadcastable to ``x`` (> 0); ``hardness``: h > 0
    (``alpha = h / q^2``); ``bits``: b-bit clamp of the window (None: no clamp); ``alpha``: a
    given sharpness instead of ``h / q^2`` (broadcastable to ``x``; for gradient checks with the
    sharpness held fixed). ``probs``: ``[*x.shape, WINDOW]``, ``P(start + i | x)``; ``start``:
    float ``x.shape``, the first candidate index (no gradient); ``x_hat``: ``x.shape``,
    ``sum_i probs_i (start + i) q``.
    """
    if not hardness > 0:
        raise ValueError(f"hardness must be > 0, not {hardness!r}")
    q = torch.as_tensor(q, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        qd = q.detach()
        start = _window_start(x.detach(), qd, bits)
        alpha = (float(hardness) / qd.square() if alpha is None else torch.as_tensor(alpha).to(x)).unsqueeze(-1)
    offsets = torch.arange(WINDOW, dtype=x.dtype, device=x.device)
    levels = (start.unsqueeze(-1) + offsets) * q.unsqueeze(-1)  # j q, differentiable in q
    dist = (levels - x.unsqueeze(-1)).square()
    probs = torch.softmax(-alpha * dist, dim=-1)
    x_hat = (probs * levels).sum(dim=-1)
    return probs, start, x_hat


def soft_quantize(x: torch.Tensor, q: torch.Tensor, hardness: float, *, bits: Optional[int] = None) -> torch.Tensor:
    """JPEG-DL's soft quantizer: ``x_hat = sum_j P(j|x) j q`` over ``j in round(x/q) + {-2..2}``.

    ``x``, ``q``: broadcastable tensors (coefficients and their quantization steps, ``q > 0``);
    ``hardness``: ``h`` in ``alpha = h / q^2`` (h -> infinity: ``round(x/q) q``); ``bits``: optional
    b-bit clamp of the candidate indices. Returns ``x_hat`` (already dequantized), the broadcast
    shape of ``x`` and ``q``; differentiable in ``x`` and ``q``.
    """
    x, q = torch.broadcast_tensors(torch.as_tensor(x), torch.as_tensor(q, dtype=torch.as_tensor(x).dtype))
    return soft_quantize_probs(x, q, hardness, bits=bits)[2]


# ------------------------------------------------------------------------------------------------
# rate estimate
# ------------------------------------------------------------------------------------------------


def _entropy_bits(hist: torch.Tensor, count: float) -> torch.Tensor:
    """``-sum c log2(c / N)`` over the last axis and every row: bits of ``count`` symbols per row
    coded with their own empirical distribution (``0 log 0 = 0``)."""
    safe = hist.clamp_min(1e-30)
    return -(hist * torch.log2(safe / count)).sum()


def index_entropy_bits(probs: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Estimated bits of one table group: ``probs`` ``[B, 64, H, W, WINDOW]`` and ``start``
    ``[B, 64, H, W]`` from :func:`soft_quantize_probs` (several planes sharing a table concatenated
    along B). Per frequency, the index histogram ``c(j) = sum_n P(j|x_n)`` (a scatter-add of each
    coefficient's window), then ``-sum_j c(j) log2(c(j)/N)``; returns the sum over the 64
    frequencies, a scalar differentiable through ``probs``."""
    b, k = probs.shape[0], probs.shape[1]
    idx = (start.detach().unsqueeze(-1) + torch.arange(WINDOW, device=start.device, dtype=start.dtype)).long()
    idx = idx.transpose(0, 1).reshape(k, -1)
    p = probs.transpose(0, 1).reshape(k, -1)
    low = int(idx.min())
    idx = idx - low
    hist = torch.zeros(k, int(idx.max()) + 1, dtype=p.dtype, device=p.device).scatter_add_(1, idx, p)
    count = float(b * probs[0, 0].numel() // WINDOW)
    return _entropy_bits(hist, count)


def hard_index_entropy_bits(indices: torch.Tensor) -> torch.Tensor:
    """Empirical-entropy bits of integer-valued indices ``[B, 64, H, W]`` (one table group): per
    frequency ``-sum_j c(j) log2(c(j)/N)`` with ``c`` the counts, summed over frequencies (float64)."""
    k = indices.shape[1]
    flat = indices.detach().transpose(0, 1).reshape(k, -1).long()
    flat = flat - flat.min()
    hist = torch.zeros(k, int(flat.max()) + 1, dtype=torch.float64, device=flat.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    return _entropy_bits(hist, float(flat.shape[1]))


def estimate_bits(planes: Sequence[torch.Tensor], luma: torch.Tensor, chroma: torch.Tensor, *,
                  hardness: Optional[float] = None, bits: Optional[int] = DEFAULT_BITS) -> torch.Tensor:
    """Estimated entropy-coded bits of a batch quantized with ``luma``/``chroma`` (64 steps each).

    ``planes``: dequantized ``(y, cb, cr)``, ``[B, 64, H8, W8]`` and ``[B, 64, H8/2, W8/2]`` twice.
    ``hardness`` None: hard indices ``round(x/q)`` (a float64 scalar, no gradient); a number: the
    soft quantizer's probabilities (differentiable in the tables). Luma and chroma are separate
    groups; Cb and Cr are pooled. Divide by ``B * 64 * H8 * W8`` for bits per pixel.
    """
    y, cb, cr = planes
    chroma_planes = torch.cat([cb, cr], dim=0)
    if hardness is None:
        return (hard_index_entropy_bits(quantize(y, luma.detach().reshape(64))) +
                hard_index_entropy_bits(quantize(chroma_planes, chroma.detach().reshape(64))))
    lq = luma.reshape(1, 64, 1, 1).to(y)
    cq = chroma.reshape(1, 64, 1, 1).to(y)
    total = y.new_zeros(())
    for plane, q in ((y, lq), (chroma_planes, cq)):
        probs, start, _ = soft_quantize_probs(plane, q.expand(1, 64, 1, 1), hardness, bits=bits)
        total = total + index_entropy_bits(probs, start)
    return total


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------


def libjpeg_tables(q: torch.Tensor) -> np.ndarray:
    """The integer table libjpeg would use for float steps ``q`` (64 or ``[..., 64]``): rounded,
    clamped to 1..255 (baseline). int64 numpy, same shape."""
    return np.clip(np.rint(np.asarray(torch.as_tensor(q).detach().cpu().double())), 1, 255).astype(np.int64)


def init_tables_from_abs_mean(abs_mean: torch.Tensor, bits: int = DEFAULT_BITS) -> torch.Tensor:
    """JPEG-DL's data-driven start: ``q = 2 E|x| / sqrt(2^(b-1))`` per frequency, clamped to
    [Q_MIN, Q_MAX]. ``abs_mean``: ``[..., 64]`` mean absolute coefficients over training data."""
    return (2.0 * abs_mean / math.sqrt(2 ** (int(bits) - 1))).clamp(Q_MIN, Q_MAX)


def ijg_table_bank(device=None) -> torch.Tensor:
    """float32 ``[101, 2, 64]``: row Q (1..100) holds libjpeg's (luma, chroma) tables of quality Q
    (row 0 is unused and equals row 1), for per-sample lookups on the device."""
    bank = np.stack([np.stack(ijg_tables(max(1, qual))) for qual in range(101)]).astype(np.float32)
    return torch.as_tensor(bank, device=device)


_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 arrays (wrapping arithmetic): a fixed, platform-independent hash."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(_MASK64)
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(_MASK64)
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(_MASK64)
        return x ^ (x >> np.uint64(31))


def sample_qualities(seed: int, epoch: int, samples: np.ndarray, low: int, high: int) -> np.ndarray:
    """IJG qualities in ``low..high`` (inclusive), one per sample, a pure function of
    ``(seed, epoch, sample)``: the same for a sample whatever its batch, rank or a resume.
    ``samples``: int64 store indices. Returns int64, same shape."""
    if not 1 <= low <= high <= 100:
        raise ValueError(f"quality range must satisfy 1 <= low <= high <= 100, not {low}:{high}")
    key = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))
    key = _splitmix64(key ^ np.uint64(epoch & _MASK64))
    h = _splitmix64(key ^ np.asarray(samples, dtype=np.int64).astype(np.uint64))
    return low + (h % np.uint64(high - low + 1)).astype(np.int64)


def requantize_planes(planes: Sequence[torch.Tensor], luma: torch.Tensor, chroma: torch.Tensor) -> tuple:
    """Dequantized ``(y, cb, cr)`` requantized: ``round(x/q) q`` (libjpeg's rounding,
    :func:`jdct_cli.jpegmath.quant.quantize`) with ``luma`` for y and ``chroma`` for cb and cr.
    Tables ``[64]`` (every sample) or ``[B, 64]`` (one per sample)."""
    y, cb, cr = planes
    return tuple(dequantize(quantize(p, t), t) for p, t in ((y, luma), (cb, chroma), (cr, chroma)))


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------


class QuantTables(nn.Module):
    """Two trainable 64-entry tables (``luma``, ``chroma``; natural order, libjpeg's scale).

    ``clamp_()`` keeps them in ``[q_min, Q_MAX]``; call it after every optimizer step.
    ``as_libjpeg()`` gives the integer tables libjpeg would use (rounded, 1..255).
    """

    def __init__(self, luma=None, chroma=None, q_min: float = Q_MIN):
        super().__init__()
        self.q_min = float(q_min)
        luma = torch.ones(64) if luma is None else torch.as_tensor(luma, dtype=torch.float32).reshape(64)
        chroma = torch.ones(64) if chroma is None else torch.as_tensor(chroma, dtype=torch.float32).reshape(64)
        self.luma = nn.Parameter(luma.clone().float())
        self.chroma = nn.Parameter(chroma.clone().float())
        self.clamp_()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.luma.clamp_(self.q_min, Q_MAX)
        self.chroma.clamp_(self.q_min, Q_MAX)

    @torch.no_grad()
    def set_(self, luma, chroma) -> None:
        """Replace both tables (64 values each) and clamp them."""
        self.luma.copy_(torch.as_tensor(luma, dtype=self.luma.dtype).reshape(64))
        self.chroma.copy_(torch.as_tensor(chroma, dtype=self.chroma.dtype).reshape(64))
        self.clamp_()

    def as_libjpeg(self) -> tuple[list[int], list[int]]:
        """(luma, chroma): 64 ints each, natural order, rounded and clamped to 1..255."""
        return libjpeg_tables(self.luma).tolist(), libjpeg_tables(self.chroma).tolist()


class LogQuantTables(nn.Module):
    """Two 64-entry tables learned through their logarithms (``luma = exp(log_luma)``...): an
    optimizer step then changes every step by the same *relative* amount, whether it is 2 or 200,
    which suits tables that span 1..255. ``clamp_()`` keeps them in ``[q_min, Q_MAX]``."""

    def __init__(self, luma, chroma, q_min: float = 1.0):
        super().__init__()
        self.q_min = float(q_min)
        start = [torch.as_tensor(t, dtype=torch.float32).reshape(64).clamp(self.q_min, Q_MAX) for t in (luma, chroma)]
        self.log_luma = nn.Parameter(start[0].log())
        self.log_chroma = nn.Parameter(start[1].log())

    @property
    def luma(self) -> torch.Tensor:
        return self.log_luma.exp()

    @property
    def chroma(self) -> torch.Tensor:
        return self.log_chroma.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        for p in (self.log_luma, self.log_chroma):
            p.clamp_(math.log(self.q_min), math.log(Q_MAX))

    def as_libjpeg(self) -> tuple[list[int], list[int]]:
        return libjpeg_tables(self.luma).tolist(), libjpeg_tables(self.chroma).tolist()


class CoefficientJpegLayer(nn.Module):
    """The JPEG layer in front of a DCT network: standardized ``(y, cb, cr)`` in (what the loader
    gives), soft-quantized coefficients out, standardized the same way.

    The loader standardizes dequantized coefficients per channel, ``x_n = x * scale + shift``
    (:func:`jdct_cli.data.device_constants` with unit steps); the layer undoes that, soft-quantizes
    on libjpeg's scale with ``tables`` (luma for y, chroma for cb and cr) and standardizes again.
    ``scale``/``shift``: float ``[3, 64]`` (planes y, cb, cr), kept as buffers so a checkpoint
    holds the normalization the layer was trained with.
    """

    def __init__(self, scale=None, shift=None, *, hardness: float = 0.7, bits: Optional[int] = DEFAULT_BITS,
                 tables: Optional[QuantTables] = None):
        super().__init__()
        self.tables = tables if tables is not None else QuantTables()
        self.hardness = float(hardness)
        self.bits = bits
        self.register_buffer("scale", torch.ones(3, 64) if scale is None else torch.as_tensor(scale).float().reshape(3, 64))
        self.register_buffer("shift", torch.zeros(3, 64) if shift is None else torch.as_tensor(shift).float().reshape(3, 64))

    def dequantized(self, planes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Standardized planes -> dequantized coefficients (libjpeg's scale)."""
        return [(p - self.shift[i].view(1, 64, 1, 1).to(p)) / self.scale[i].view(1, 64, 1, 1).to(p)
                for i, p in enumerate(planes)]

    def forward(self, y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> tuple:
        out = []
        for i, x in enumerate(self.dequantized((y, cb, cr))):
            q = (self.tables.luma if i == 0 else self.tables.chroma).view(1, 64, 1, 1).to(x)
            x_hat = soft_quantize_probs(x, q, self.hardness, bits=self.bits)[2]
            out.append(x_hat * self.scale[i].view(1, 64, 1, 1).to(x) + self.shift[i].view(1, 64, 1, 1).to(x))
        return tuple(out)


class PixelJpegLayer(nn.Module):
    """The JPEG layer in front of a pixel network: normalized pixels in, normalized pixels out.

    Pixels are un-normalized (``x * std + mean``, [0, 1] units), taken to YCbCr 0..255 (``"rgb"``
    inputs; ``"ycbcr"`` inputs already are), level-shifted, block-DCT'd per channel at full
    resolution (4:4:4, as JPEG-DL's layer), soft-quantized (luma table for Y, chroma for Cb and Cr),
    inverse-DCT'd and converted back. Nothing is clamped, so gradients reach every pixel.
    ``mean``/``std``: float ``[3]``, the loader's pixel normalization (buffers).
    """

    def __init__(self, kind: str, mean=None, std=None, *, hardness: float = 0.7, bits: Optional[int] = DEFAULT_BITS,
                 tables: Optional[QuantTables] = None):
        super().__init__()
        if kind not in ("rgb", "ycbcr"):
            raise ValueError(f"pixel JPEG layer for 'rgb' or 'ycbcr' inputs, not {kind!r}")
        self.kind = kind
        self.tables = tables if tables is not None else QuantTables()
        self.hardness = float(hardness)
        self.bits = bits
        self.register_buffer("mean", torch.zeros(3) if mean is None else torch.as_tensor(mean).float().reshape(3))
        self.register_buffer("std", torch.ones(3) if std is None else torch.as_tensor(std).float().reshape(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.view(1, 3, 1, 1).to(x), self.std.view(1, 3, 1, 1).to(x)
        pix = (x * std + mean) * 255.0
        ycc = torch.stack(rgb_to_ycbcr(*pix.unbind(1)), 1) if self.kind == "rgb" else pix
        coefs = dct_blocks(ycc)  # [B, 3, 64, H/8, W/8]: the three channels in one batched DCT
        q = torch.stack([self.tables.luma, self.tables.chroma, self.tables.chroma]).view(1, 3, 64, 1, 1).to(x)
        coefs = soft_quantize_probs(coefs, q.expand_as(coefs[:1]), self.hardness, bits=self.bits)[2]
        ycc = idct_blocks(coefs)
        pix = torch.stack(ycbcr_to_rgb(*ycc.unbind(1)), 1) if self.kind == "rgb" else ycc
        return (pix / 255.0 - mean) / std


class JpegLayerModel(nn.Module):
    """A zoo network behind a trainable JPEG layer (JPEG-DL): ``net(*layer(*inputs))``.

    Same call contract as the network (``model(*inputs)`` or ``model(inputs)``), same
    ``input_kind``, ``arch``, ``classifier_parameters()`` and ``regularization_loss()``;
    ``jpeg_parameters()`` are the tables (the trainer gives them their own optimizer, without
    weight decay) and ``clamp_tables_()`` keeps them in range after each step.
    State-dict keys: ``net.*`` (the network's own) and ``jpeg.*`` (tables and normalization).
    """

    def __init__(self, net: nn.Module, layer: nn.Module):
        super().__init__()
        self.net = net
        self.jpeg = layer
        self.input_kind = getattr(net, "input_kind", "dct")
        self.arch = getattr(net, "arch", "")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)):
            inputs = tuple(inputs[0])
        out = self.jpeg(*inputs)
        return self.net(*(out if isinstance(out, tuple) else (out,)))

    def classifier_parameters(self) -> list[nn.Parameter]:
        return self.net.classifier_parameters()

    def regularization_loss(self):
        return self.net.regularization_loss()

    def jpeg_parameters(self) -> list[nn.Parameter]:
        return list(self.jpeg.tables.parameters())

    def clamp_tables_(self) -> None:
        self.jpeg.tables.clamp_()

    @property
    def tables(self) -> QuantTables:
        return self.jpeg.tables


class IndexCounts:
    """Histograms of hard quantization indices per table group and frequency, accumulated over
    batches, for the rate estimate of a whole split (its marginal index distribution).

    Indices are counted in ``[-LIMIT, LIMIT - 1]`` (:data:`IndexCounts.LIMIT` = 2048 covers every
    index of 8-bit JPEG data with steps >= 1; larger ones are clipped to the ends).
    """

    LIMIT = 2048

    def __init__(self, device=None):
        self.counts = torch.zeros(2, 64, 2 * self.LIMIT, dtype=torch.float64, device=device)

    def add(self, planes: Sequence[torch.Tensor], luma: torch.Tensor, chroma: torch.Tensor) -> None:
        """Count the indices ``round(x/q)`` of dequantized ``(y, cb, cr)`` (Cb and Cr pooled)."""
        y, cb, cr = planes
        groups = ((y, luma), (torch.cat([cb, cr], dim=0), chroma))
        for g, (plane, q) in enumerate(groups):
            idx = quantize(plane.detach().double(), q.detach().double().reshape(64))
            idx = (idx.clamp(-self.LIMIT, self.LIMIT - 1) + self.LIMIT).long().transpose(0, 1).reshape(64, -1)
            self.counts[g].scatter_add_(1, idx.to(self.counts.device),
                                        torch.ones_like(idx, dtype=torch.float64, device=self.counts.device))

    def bits(self) -> float:
        """Estimated bits of everything counted: per group and frequency ``N H(p)``."""
        total = 0.0
        for g in range(2):
            n = float(self.counts[g, 0].sum())
            if n:
                total += float(_entropy_bits(self.counts[g], n))
        return total
