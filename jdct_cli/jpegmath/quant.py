"""Quantization: ITU-T T.81 Annex K tables, libjpeg's (IJG's) quality scaling, hard quantization.

jdct's one source of quantization tables: the conversion stores crops quantized with
:func:`ijg_tables`, the C forward DCT takes them as arguments, and :func:`quality_fit` compares a
file's tables with them. They are exactly libjpeg's ``jpeg_set_quality(quality, force_baseline)``
tables (tests compare with libjpeg-turbo's encoder for every quality 1..100).

Tables are 64 entries in natural (row-major) order: index ``8*v + u``, ``v`` the vertical and
``u`` the horizontal frequency, as everywhere in jdct. :func:`quantize` and :func:`dequantize` take
numpy arrays or torch tensors (see :mod:`jdct_cli.jpegmath._array`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ._array import constant, is_floating, is_tensor, namespace

__all__ = [
    "STD_LUMA_QTABLE",
    "STD_CHROMA_QTABLE",
    "quality_scaling",
    "ijg_tables",
    "quality_fit",
    "estimate_quality",
    "quantize",
    "dequantize",
]

# ITU-T T.81 Annex K tables K.1 (luminance) and K.2 (chrominance), natural order.
STD_LUMA_QTABLE = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61,
     12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77,
     24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101,
     72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.int64,
)  # fmt: skip
STD_CHROMA_QTABLE = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99,
     18, 21, 26, 66, 99, 99, 99, 99,
     24, 26, 56, 99, 99, 99, 99, 99,
     47, 66, 99, 99, 99, 99, 99, 99,
     99, 99, 99, 99, 99, 99, 99, 99,
     99, 99, 99, 99, 99, 99, 99, 99,
     99, 99, 99, 99, 99, 99, 99, 99,
     99, 99, 99, 99, 99, 99, 99, 99],
    dtype=np.int64,
)  # fmt: skip
STD_LUMA_QTABLE.flags.writeable = False
STD_CHROMA_QTABLE.flags.writeable = False


def quality_scaling(quality):
    """libjpeg's ``jpeg_quality_scaling``: the percentage (int, or int64 array for an array of
    qualities) the Annex K tables are scaled by. Qualities outside 1..100 are clamped to it, as
    libjpeg does: 1..49 give ``5000 // quality``, 50..100 give ``200 - 2 * quality``."""
    q = np.clip(np.asarray(quality, dtype=np.int64), 1, 100)
    scale = np.where(q < 50, 5000 // q, 200 - 2 * q)
    return int(scale) if scale.ndim == 0 else scale


def _scaled(base: np.ndarray, scale: np.ndarray, force_baseline: bool) -> np.ndarray:
    """``jpeg_add_quant_table``: each Annex K entry times ``scale`` percent, rounded, then clamped
    to 1..255 (``force_baseline``) or 1..32767. ``scale``: int64 ``(...)``; returns int64 ``(..., 64)``."""
    t = (base * np.asarray(scale)[..., None] + 50) // 100
    return np.clip(t, 1, 255 if force_baseline else 32767)


def ijg_tables(quality: int, *, force_baseline: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(luma, chroma)``: libjpeg's quantization tables at ``quality`` 1..100, uint16 ``(64,)``
    each, natural order; exactly what ``jpeg_set_quality(quality, force_baseline)`` installs
    (entries clamped to 1..255 with ``force_baseline``, else to 1..32767).

    Raises ValueError for a quality outside 1..100 (libjpeg would silently clamp it).
    """
    if isinstance(quality, bool) or int(quality) != quality or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1..100, not {quality!r}")
    scale = quality_scaling(int(quality))
    return (_scaled(STD_LUMA_QTABLE, scale, force_baseline).astype(np.uint16),
            _scaled(STD_CHROMA_QTABLE, scale, force_baseline).astype(np.uint16))


def _all_qualities(base: np.ndarray) -> np.ndarray:
    """int64 ``(100, 2, 64)``: the IJG tables of ``base`` for quality 1..100, [:, 0] baseline
    (clamped to 255) and [:, 1] clamped to 32767."""
    scale = quality_scaling(np.arange(1, 101))
    return np.stack([_scaled(base, scale, True), _scaled(base, scale, False)], axis=1)


_IJG = {False: _all_qualities(STD_LUMA_QTABLE), True: _all_qualities(STD_CHROMA_QTABLE)}


def quality_fit(quant_table_64_natural: Sequence[int], *, chroma: bool = False) -> Optional[tuple[int, float]]:
    """``(quality, mean_abs_error)``: the IJG quality 1..100 whose scaled Annex K table is closest
    (least total absolute difference) to the given table, and the mean absolute difference per
    entry (0.0 = the table is exactly IJG's for that quality). None for an invalid table.
    """
    try:
        table = np.asarray(quant_table_64_natural, dtype=np.int64).reshape(64)
    except (ValueError, TypeError):
        return None
    if (table < 1).any():
        return None
    err = np.abs(_IJG[bool(chroma)] - table[None, None, :]).sum(axis=2).min(axis=1)  # (100,)
    best = err.min()
    # Several qualities can give the same table (chroma at q 1..3 is all 255 once clamped to
    # baseline): take the middle one so that the answer is within 1 of any of them.
    ties = np.flatnonzero(err == best)
    q = int(ties[len(ties) // 2]) + 1
    return q, float(best) / 64.0


def estimate_quality(quant_table_64_natural: Sequence[int], *, chroma: bool = False) -> Optional[int]:
    """Estimated IJG (libjpeg ``-quality``) setting 1..100 that produced this table.

    ``quant_table_64_natural``: 64 ints in natural order; ``chroma`` compares with Annex K.2
    instead of K.1. Exact for tables written by libjpeg/Pillow/cjpeg; for other encoders
    (Photoshop, cameras) the nearest IJG quality (see :func:`quality_fit` for the distance).
    None when the table is invalid (wrong size, zero entries).
    """
    fit = quality_fit(quant_table_64_natural, chroma=chroma)
    return None if fit is None else fit[0]


def _per_channel(table, like, channel_axis: int):
    """``table`` (64 entries, or ``(B, 64)`` per sample) shaped to broadcast over ``like``'s channel
    axis ``channel_axis`` of a ``(..., 64, bh, bw)`` plane, as ``like``'s kind, dtype and device."""
    t = constant(table, like)
    shape = [1] * like.ndim
    shape[channel_axis] = t.shape[-1]
    if t.ndim == 2:
        shape[0] = t.shape[0]
    return t.reshape(shape)


def quantize(coefs, table, *, channel_axis: int = -3):
    """libjpeg's hard quantization: ``coefs / table`` rounded half away from zero (``jcdctmgr.c``:
    add half the divisor to the magnitude, divide, floor), as integer-valued floats of ``coefs``'s dtype.

    ``coefs``: float ``(..., K, bh, bw)`` (channels on ``channel_axis``); ``table``: the divisors, K
    entries (natural order, matching the channels) or ``(B, K)`` per sample of a batch (axis 0).
    libjpeg's integer FDCT output (:func:`jdct_cli.jpegmath.blockdct.islow_fdct`, 8 times the DCT)
    quantizes exactly with ``8 * table`` in float64. Not differentiable (a step function); a
    learned quantizer replaces this stage.
    """
    xp = namespace(coefs)
    t = _per_channel(table, coefs, channel_axis)
    return xp.sign(coefs) * xp.floor((xp.abs(coefs) + t / 2) / t)


def dequantize(levels, table, *, channel_axis: int = -3):
    """Quantized coefficients ``levels`` (``(..., K, bh, bw)``) times their ``table`` (K entries, or
    ``(B, K)`` per sample): float32 for integer ``levels``, else ``levels``'s dtype."""
    if not is_floating(levels):
        levels = levels.float() if is_tensor(levels) else levels.astype(np.float32)
    return levels * _per_channel(table, levels, channel_axis)
