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
    fscale = xp.maximum(scale, constant(1.0, scale))
    sup = support * fscale
    if taps is None:
        taps = max_taps(float(scale.max()), support)
    center = like[:, None] + (arange(out_size, like)[None, :] + 0.5) * scale[:, None]      # (B, S)
    lo = xp.maximum(xp.trunc(center - sup[:, None] + 0.5), constant(0.0, center))
    hi = xp.minimum(xp.trunc(center + sup[:, None] + 0.5), constant(in_size, center)[:, None])
    inv = 1.0 / fscale
    total = xp.zeros_like(center)
    weights = []
    for t in range(taps):
        w = xp.clip(1.0 - xp.abs((lo + t - center + 0.5) * inv[:, None]), 0.0, None)
        w = xp.where(lo + t < hi, w, constant(0.0, w))
        total = total + w
        weights.append(w)
    w = xp.stack(weights, axis=-1)
    total = xp.where(total == 0, constant(1.0, total), total)
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
    return xp.where(inside, take_along(weights, t, 2), constant(0.0, weights))


def fixed_point(weights):
    """Pillow's 8-bit weights: ``weights * 2**22`` rounded half away from zero, as float64 integers."""
    xp = namespace(weights)
    k = weights * float(1 << PRECISION_BITS)
    return xp.where(k < 0, xp.trunc(k - 0.5), xp.trunc(k + 0.5))


def _pass(x, w, axis: int, exact: bool):
    """One separable pass: ``w`` ``(B, S, N)`` applied to axis -1 or -2 of ``x`` ``(B, C, H, W)``."""
    xp = namespace(x)
    w = w[:, None]
    out = x @ xp.swapaxes(w, -1, -2) if axis == -1 else w @ x
    if not exact:
        return out
    return xp.clip(xp.floor((out + float(1 << (PRECISION_BITS - 1))) / float(1 << PRECISION_BITS)), 0, 255)


def resize(img, wy, wx, *, exact: bool = False, vertical_first=None):
    """``img`` ``(B, C, H, W)`` resized by per-sample matrices ``wy`` ``(B, Sy, H)`` and ``wx``
    ``(B, Sx, W)`` (:func:`weight_matrix`): ``(B, C, Sy, Sx)``.

    ``exact=False``: ``Wy @ img @ Wx^T`` in ``img``'s float dtype (the cheaper association), not
    rounded; differentiable. ``exact=True``: Pillow's arithmetic, with ``wy``/``wx`` from
    :func:`fixed_point` and integer-valued ``img``, in float64 (which holds it exactly): one pass,
    ``(acc + 2^21) >> 22`` clipped to 0..255, then the other; ``vertical_first`` (bool ``(B,)``,
    :func:`vertical_first`) says which first per sample.
    """
    if not exact:
        _, _, h, w = img.shape
        sy, sx = wy.shape[1], wx.shape[1]
        if h * w * sx + sy * h * sx <= sy * h * w + sy * w * sx:
            return _pass(_pass(img, wx, -1, False), wy, -2, False)
        return _pass(_pass(img, wy, -2, False), wx, -1, False)
    xp = namespace(img)
    img = img.double() if is_tensor(img) else img.astype(np.float64)
    wy = wy.double() if is_tensor(wy) else wy.astype(np.float64)
    wx = wx.double() if is_tensor(wx) else wx.astype(np.float64)
    vf = np.zeros(img.shape[0], dtype=bool) if vertical_first is None else vertical_first
    vf = constant(vf, img) != 0
    out = zeros((img.shape[0], img.shape[1], wy.shape[1], wx.shape[1]), img)
    for first_vertical in (False, True):
        sel = vf == first_vertical
        if not bool(sel.any()):
            continue
        x, a, b = img[sel], wy[sel], wx[sel]
        if first_vertical:
            out[sel] = _pass(_pass(x, a, -2, True), b, -1, True)
        else:
            out[sel] = _pass(_pass(x, b, -1, True), a, -2, True)
    return out
