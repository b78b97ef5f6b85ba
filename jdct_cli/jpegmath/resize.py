"""Pillow's antialiased bilinear resize as per-sample weight matrices.

Pillow 13's ``Image.resize(size, BILINEAR, box=(x0, y0, x1, y1), reducing_gap=None)`` is separable:
output sample ``o`` of an axis is a triangle filter of half-width ``max(scale, 1)`` source samples
(``scale = (x1 - x0) / S``) centred at ``x0 + (o + 0.5) scale - 0.5``, clipped to the image and
renormalized (``Resample.c`` ``precompute_coeffs``); so a resize is ``Wy @ image @ Wx^T`` with one
``(S, H)`` and one ``(S, W)`` matrix per sample. Pillow itself rounds the weights to 22 fractional
bits and the result to uint8 after each pass, in an order that depends on the image: with
``exact=True`` :func:`resize` does the same and matches Pillow bit for bit (and jdct's C resize,
:func:`jdct_cli._decoder.resize_bilinear`).

Everything is batched (a leading sample axis ``B``) and takes numpy arrays or torch tensors (see
:mod:`jdct_cli.jpegmath._array`). Coordinates are in source pixels of the *frame* the resize sees
(the array Pillow would be given); :func:`weight_matrix` places a frame inside a larger array.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from ._array import arange, constant, is_tensor, namespace, take_along, zeros

__all__ = ["FILTER_SUPPORT", "PRECISION_BITS", "vertical_first", "filter_taps", "weight_matrix", "fixed_point",
           "resize"]

#: Half-width of Pillow's bilinear (triangle) filter, in output-sample units.
FILTER_SUPPORT = 1.0
#: Fractional bits of Pillow's 8-bit resampling weights.
PRECISION_BITS = 22


def vertical_first(frame_w, frame_h, out_w: int, out_h: int):
    """Pillow 13's pass order: True where the vertical pass runs first, i.e. when the height
    shrinks by more than twice as many pixels as the width: ``(H - S_h) > 0 and (H - S_h) > 2 (W - S_w)``
    with ``H x W`` the frame (the whole array handed to Pillow, not the box). Works elementwise."""
    dh = frame_h - out_h
    return (dh > 0) & (dh > 2 * (frame_w - out_w))


def max_taps(scale: float, support: float = FILTER_SUPPORT) -> int:
    """Pillow's ``ksize``: the most taps one output sample of a ``scale``-fold reduction reads."""
    return int(math.ceil(support * max(scale, 1.0))) * 2 + 1


def filter_taps(in0, in1, out_size: int, in_size, *, taps=None, support: float = FILTER_SUPPORT):
    """Pillow's filter of one axis for a batch of boxes: ``(first, weights)``.

    ``in0``/``in1``: float32 ``(B,)`` box edges in frame samples (Pillow receives floats);
    ``in_size``: ``(B,)`` frame sizes (the filter is clipped to ``[0, in_size)``); ``out_size``:
    ``S``. Returns int64 ``(B, S)`` first source sample of each output and float64 ``(B, S, taps)``
    normalized weights of samples ``first .. first + taps - 1`` (zero past the clipped end), computed in
    Pillow's order of operations (weights summed tap by tap) so that :func:`fixed_point` rounds them
    as Pillow does. ``taps`` defaults to :func:`max_taps` of the largest box.
    """
    xp = namespace(in0)
    like = in0.double() if is_tensor(in0) else np.asarray(in0, dtype=np.float64)
    scale = ((in1 - in0).double() if is_tensor(in0) else (in1 - in0).astype(np.float64)) / out_size
    fscale = xp.clip(scale, 1.0, None)
    sup = support * fscale
    if taps is None:
        taps = max_taps(float(scale.max()), support)
    center = like[:, None] + (arange(out_size, like)[None, :] + 0.5) * scale[:, None]      # (B, S)
    lo = xp.clip(xp.trunc(center - sup[:, None] + 0.5), 0.0, None)
    hi = xp.minimum(xp.trunc(center + sup[:, None] + 0.5), constant(in_size, center)[:, None])
    x = lo[..., None] + arange(taps, center).to(center.dtype) if is_tensor(center) else \
        lo[..., None] + np.arange(taps, dtype=np.float64)                                      # (B, S, taps)
    w = xp.clip(1.0 - xp.abs((x - center[..., None] + 0.5) * (1.0 / fscale)[:, None, None]), 0.0, None)
    w = xp.where(x < hi[..., None], w, 0.0)
    # Pillow sums the weights tap by tap; the same order of additions rounds the same way
    total = w[..., 0]
    for t in range(1, taps):
        total = total + w[..., t]
    total = xp.where(total == 0, 1.0, total)
    first = lo.long() if is_tensor(lo) else lo.astype(np.int64)
    return first, w / total[..., None]


def weight_matrix(first, weights, columns: int, *, offset=0, flip=None):
    """Dense ``(B, S, columns)`` matrices of :func:`filter_taps` output: row ``o`` holds ``weights[o]``
    at columns ``first[o] + offset .. + taps - 1`` (``offset`` ``(B,)`` or scalar: where the frame
    starts inside the array the matrix multiplies, whose other columns get 0). ``flip`` (``(B,)``,
    nonzero = flip): those samples' rows in reverse order, i.e. the output mirrored left-right."""
    xp = namespace(weights)
    b, s, taps = weights.shape
    if flip is not None:
        mirrored = constant(flip, first).reshape(-1, 1) != 0
        first = xp.where(mirrored, xp.flip(first, (1,)), first)
        weights = xp.where(mirrored[..., None], xp.flip(weights, (1,)), weights)
    off = constant(offset, first).reshape(-1, 1, 1) if not isinstance(offset, int) else offset
    t = arange(columns, first)[None, None, :] - (first[..., None] + off)                     # (B, S, columns)
    inside = (t >= 0) & (t < taps)
    t = xp.clip(t, 0, taps - 1)
    return xp.where(inside, take_along(weights, t, 2), 0.0)


def fixed_point(weights):
    """Pillow's 8-bit weights: ``weights * 2**22`` rounded half away from zero, as float64 integers."""
    xp = namespace(weights)
    k = weights * float(1 << PRECISION_BITS)
    return xp.where(k < 0, xp.trunc(k - 0.5), xp.trunc(k + 0.5))


#: The most taps an exact pass computes in float32: each half-weight product sum stays below 2^24.
MAX_FLOAT32_EXACT_TAPS = 32
_HALF = 1 << (PRECISION_BITS // 2)  # 2^11: fixed-point weights split as hi * 2^11 + lo


def _apply(x, w, axis: int):
    """``w`` ``(B, S, N)`` applied to axis -1 or -2 of ``x`` ``(B, C, H, W)``."""
    w = w[:, None]
    return x @ namespace(x).swapaxes(w, -1, -2) if axis == -1 else w @ x


def _exact_pass(x, w, axis: int):
    """One of Pillow's passes: ``(sum of pixel * weight + 2^21) >> 22`` clipped to 0..255, for integer
    pixels and :func:`fixed_point` weights. In float64 the sums are exact as they stand; in float32
    the weights are split into 11-bit halves, ``w = hi * 2^11 + lo``, so that both matmuls sum
    integers below 2^24 (exact in any order, with at most :data:`MAX_FLOAT32_EXACT_TAPS` taps), and
    ``floor((hi_sum * 2^11 + lo_sum + 2^21) / 2^22) = floor((hi_sum + floor((lo_sum + 2^21) / 2^11)) / 2^11)``."""
    xp = namespace(x)
    w = constant(w, x)
    if x.dtype == np.float64 or (is_tensor(x) and x.dtype == sys.modules["torch"].float64):
        out = xp.floor((_apply(x, w, axis) + float(1 << (PRECISION_BITS - 1))) * (1.0 / (1 << PRECISION_BITS)))
    else:
        hi = xp.floor(w * (1.0 / _HALF))
        lo = w - hi * _HALF
        carry = xp.floor((_apply(x, lo, axis) + float(1 << (PRECISION_BITS - 1))) * (1.0 / _HALF))
        out = xp.floor((_apply(x, hi, axis) + carry) * (1.0 / _HALF))
    return xp.clip(out, 0, 255)


def resize(img, wy, wx, *, exact: bool = False, vertical_first=False):
    """``img`` ``(B, C, H, W)`` resized by per-sample matrices ``wy`` ``(B, Sy, H)`` and ``wx``
    ``(B, Sx, W)`` (:func:`weight_matrix`): ``(B, C, Sy, Sx)`` of ``img``'s float dtype.

    ``exact=False``: ``Wy @ img @ Wx^T`` (the cheaper association), not rounded; differentiable.
    ``exact=True``: Pillow's arithmetic, with ``wy``/``wx`` from :func:`fixed_point` and integer-valued
    ``img``: one pass, ``(acc + 2^21) >> 22`` clipped to 0..255, then the other, exactly (float32
    for filters of at most :data:`MAX_FLOAT32_EXACT_TAPS` taps, float64 for any); ``vertical_first``
    (a bool, or bool ``(B,)`` per sample, see :func:`vertical_first`) says which pass first.
    """
    if not exact:
        _, _, h, w = img.shape
        sy, sx = wy.shape[1], wx.shape[1]
        if h * w * sx + sy * h * sx <= sy * h * w + sy * w * sx:
            return _apply(_apply(img, wx, -1), wy, -2)
        return _apply(_apply(img, wy, -2), wx, -1)
    if isinstance(vertical_first, (bool, np.bool_)):
        if vertical_first:
            return _exact_pass(_exact_pass(img, wy, -2), wx, -1)
        return _exact_pass(_exact_pass(img, wx, -1), wy, -2)
    vf = constant(vertical_first, img) != 0
    out = zeros((img.shape[0], img.shape[1], wy.shape[1], wx.shape[1]), img)
    for first in (False, True):
        sel = vf == first
        if bool(sel.any()):
            out[sel] = resize(img[sel], wy[sel], wx[sel], exact=True, vertical_first=first)
    return out
