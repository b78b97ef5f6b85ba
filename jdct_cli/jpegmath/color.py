"""JFIF colour conversion (full-range YCbCr <-> RGB): libjpeg's integer formulas and the float ones.

Each function takes three planes of one shape (numpy arrays or torch tensors, see
:mod:`jdct_cli.jpegmath._array`) and returns three. ``exact=True`` follows libjpeg-turbo 2.1.5's
fixed-point arithmetic bit for bit (16 fractional bits; ``jdcolor.c`` for the decoder, ``jccolor.c``
for the encoder): inputs must be integer-valued (0..255), outputs are integer-valued and within
0..255, and every intermediate stays below 2^24, so float32 computes them exactly. ``exact=False``
is the plain float formula: not rounded, not clipped, differentiable.
"""
from __future__ import annotations

from ._array import floor_divide, namespace, signed

__all__ = ["ycbcr_to_rgb", "rgb_to_ycbcr"]

_SCALEBITS = 16
_ONE = 1 << _SCALEBITS
_ONE_HALF = 1 << (_SCALEBITS - 1)
_CBCR_OFFSET = 128 << _SCALEBITS


# The float JFIF matrices from their definition (Y = Kr R + Kg G + Kb B, Cb = (B - Y) / (2 - 2 Kb),
# Cr = (R - Y) / (2 - 2 Kr)) rather than rounded decimals, so that the forward and inverse
# conversions invert each other to float precision.
_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
_CB_B, _CR_R = 2.0 - 2.0 * _KB, 2.0 - 2.0 * _KR  # 1.772, 1.402


def _fix(x: float) -> int:
    """libjpeg's ``FIX(x)``: ``x`` in 16-bit fixed point, rounded."""
    return int(x * _ONE + 0.5)


def ycbcr_to_rgb(y, cb, cr, *, exact: bool = False):
    """``(r, g, b)`` of JFIF ``(y, cb, cr)`` planes (0..255 scale).

    ``exact``: the decoder's conversion (``jdcolor.c`` ``build_ycc_rgb_table`` + ``ycc_rgb_convert``):
    ``R = Y + ((FIX(1.402) (Cr-128) + 2^15) >> 16)``, ``B = Y + ((FIX(1.772) (Cb-128) + 2^15) >> 16)``,
    ``G = Y + ((-FIX(0.34414) (Cb-128) - FIX(0.71414) (Cr-128) + 2^15) >> 16)``, each clipped to 0..255.
    Otherwise ``R = Y + 1.402 (Cr-128)``, ``G = Y - 0.344136286 (Cb-128) - 0.714136286 (Cr-128)``,
    ``B = Y + 1.772 (Cb-128)`` (the exact inverse of the float :func:`rgb_to_ycbcr`).
    """
    xp = namespace(y)
    y, cb, cr = signed(y), signed(cb) - 128, signed(cr) - 128
    if not exact:
        return y + _CR_R * cr, y - (_KB * _CB_B / _KG) * cb - (_KR * _CR_R / _KG) * cr, y + _CB_B * cb
    r = y + floor_divide(_fix(1.40200) * cr + _ONE_HALF, _ONE)
    g = y + floor_divide(-_fix(0.34414) * cb - _fix(0.71414) * cr + _ONE_HALF, _ONE)
    b = y + floor_divide(_fix(1.77200) * cb + _ONE_HALF, _ONE)
    return xp.clip(r, 0, 255), xp.clip(g, 0, 255), xp.clip(b, 0, 255)


def rgb_to_ycbcr(r, g, b, *, exact: bool = False):
    """``(y, cb, cr)`` of ``(r, g, b)`` planes (0..255 scale).

    ``exact``: the encoder's conversion (``jccolor.c`` ``rgb_ycc_start`` + ``rgb_ycc_convert``):
    ``Y = (FIX(.299) R + FIX(.587) G + FIX(.114) B + 2^15) >> 16``,
    ``Cb = (-FIX(.16874) R - FIX(.33126) G + FIX(.5) B + (128 << 16) + 2^15 - 1) >> 16`` and ``Cr``
    likewise with ``FIX(.5) R - FIX(.41869) G - FIX(.08131) B``; the ``2^15 - 1`` keeps chroma
    below 256 without clipping. Otherwise the float JFIF matrix: ``Y = 0.299 R + 0.587 G + 0.114 B``,
    ``Cb = 128 + (B - Y) / 1.772``, ``Cr = 128 + (R - Y) / 1.402`` (-0.168735892 R - 0.331264108 G...).
    """
    r, g, b = signed(r), signed(g), signed(b)
    if not exact:
        return (_KR * r + _KG * g + _KB * b,
                128.0 - (_KR / _CB_B) * r - (_KG / _CB_B) * g + 0.5 * b,
                128.0 + 0.5 * r - (_KG / _CR_R) * g - (_KB / _CR_R) * b)
    y = floor_divide(_fix(0.29900) * r + _fix(0.58700) * g + _fix(0.11400) * b + _ONE_HALF, _ONE)
    cb = floor_divide(-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.50000) * b + _CBCR_OFFSET + _ONE_HALF - 1, _ONE)
    cr = floor_divide(_fix(0.50000) * r - _fix(0.41869) * g - _fix(0.08131) * b + _CBCR_OFFSET + _ONE_HALF - 1, _ONE)
    return y, cb, cr
