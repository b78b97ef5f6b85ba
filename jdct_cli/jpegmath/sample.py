"""A stored sample and its pixels (numpy only): the 4:2:0 coefficients of an RGB crop, and back.

Layouts: a stored *plane* is int16 ``(64, bh, bw)`` (coefficient index ``8*v + u`` first, natural
order, see :mod:`jdct_cli.jpegmath.blockdct`); quantization tables are 64 ints in natural order;
pixels are uint8 ``(H, W, 3)`` RGB.
"""
from __future__ import annotations

import numpy as np

from .blockdct import idct_blocks
from .chroma import upsample
from .color import ycbcr_to_rgb
from .quant import dequantize, ijg_tables

__all__ = ["FDCT_METHODS", "crop_coefficients", "reconstruct", "psnr"]

#: How crops become coefficients: "fdct" = the extension's forward_dct (libjpeg-turbo's encoder
#: front end, no entropy coding); "encode" = the reference path, libjpeg encode then
#: read_coefficients (bit-identical, slower).
FDCT_METHODS = ("fdct", "encode")


def crop_coefficients(rgb: np.ndarray, quality: int, method: str = "fdct"):
    """Quantized 4:2:0 coefficients of uint8 ``(S, S, 3)`` RGB (S a multiple of 16) at ``quality``.

    Returns ``(y, cb, cr, quant)``: int16 ``(64, S/8, S/8)``, ``(64, S/16, S/16)`` twice (store
    layout), and uint16 ``(3, 64)`` natural-order tables (luma, chroma, chroma).
    """
    from .. import _decoder

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if method == "fdct":
        y, cb, cr, quant = _decoder.forward_dct(rgb, *ijg_tables(quality))
    elif method == "encode":
        comps, quant, _ = _decoder.read_coefficients(_decoder.encode(rgb, quality, "4:2:0"))
        y, cb, cr = comps
    else:
        raise ValueError(f"unknown DCT method {method!r} (expected one of {FDCT_METHODS})")
    return (np.moveaxis(y, -1, 0), np.moveaxis(cb, -1, 0), np.moveaxis(cr, -1, 0), np.asarray(quant))


def reconstruct(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, quant_luma, quant_chroma) -> np.ndarray:
    """uint8 RGB ``(S, S, 3)`` of one stored sample: float block IDCT, chroma upsampled 2x by
    replication, float JFIF YCbCr -> RGB, rounded and clipped. Inputs in store layout
    ``(64, S/8, S/8)`` and ``(64, S/16, S/16)``; ``quant_*``: 64 natural-order steps each."""
    yp = idct_blocks(dequantize(np.asarray(y), quant_luma).astype(np.float64))
    cbp, crp = (upsample(idct_blocks(dequantize(np.asarray(c), quant_chroma).astype(np.float64)), (2, 2), fancy=False)
                for c in (cb, cr))
    rgb = np.stack(ycbcr_to_rgb(yp, cbp, crp), axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images of one shape (inf when equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
