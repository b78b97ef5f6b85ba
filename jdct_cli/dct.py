"""DCT-domain helpers: the coefficients of a pixel crop, and the way back to pixels (numpy only).

Layouts: a *plane* of coefficients is int16 ``(64, bh, bw)`` (store layout: coefficient index
``8*v + u`` first, natural order) or ``(bh, bw, 64)`` (decoder layout); quantization tables are
64 ints in natural order. Pixels are uint8 ``(H, W, 3)`` RGB.
"""
from __future__ import annotations

import numpy as np

from .jpegmath.quant import ijg_tables

#: How crops become coefficients: "fdct" = the extension's forward_dct (no entropy coding);
#: "encode" = the reference path, libjpeg encode then read_coefficients (bit-identical, slower).
FDCT_METHODS = ("fdct", "encode")


def crop_coefficients(rgb: np.ndarray, quality: int, method: str = "fdct"):
    """Quantized 4:2:0 coefficients of uint8 ``(S, S, 3)`` RGB (S a multiple of 16) at ``quality``.

    Returns ``(y, cb, cr, quant)``: int16 ``(64, S/8, S/8)``, ``(64, S/16, S/16)`` twice (store
    layout), and uint16 ``(3, 64)`` natural-order tables (luma, chroma, chroma).
    """
    from . import _decoder

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if method == "fdct":
        y, cb, cr, quant = _decoder.forward_dct(rgb, *ijg_tables(quality))
    elif method == "encode":
        comps, quant, _ = _decoder.read_coefficients(_decoder.encode(rgb, quality, "4:2:0"))
        y, cb, cr = comps
    else:
        raise ValueError(f"unknown DCT method {method!r} (expected one of {FDCT_METHODS})")
    return (np.moveaxis(y, -1, 0), np.moveaxis(cb, -1, 0), np.moveaxis(cr, -1, 0), np.asarray(quant))


def _idct_matrix() -> np.ndarray:
    """float64 (8, 8) orthonormal DCT-II basis ``C[u, x] = c(u)/2 cos((2x+1) u pi / 16)``."""
    x = np.arange(8)
    u = x[:, None]
    c = np.where(u == 0, 1 / np.sqrt(2), 1.0)
    return c / 2 * np.cos((2 * x[None, :] + 1) * u * np.pi / 16)


_C = _idct_matrix()


def idct_plane(coefs: np.ndarray, quant) -> np.ndarray:
    """Pixels (float64 ``(8*bh, 8*bw)``, level-shifted back to 0..255) of a ``(64, bh, bw)`` plane.

    ``coefs`` are quantized; ``quant`` (64 natural-order ints) dequantizes them first.
    """
    coefs = np.asarray(coefs)
    _, bh, bw = coefs.shape
    deq = coefs.astype(np.float64) * np.asarray(quant, dtype=np.float64).reshape(64, 1, 1)
    blocks = deq.reshape(8, 8, bh, bw)  # (v, u, by, bx)
    # pixel[y, x] = sum_{v,u} C[v, y] C[u, x] F[v, u]
    pix = np.einsum("vy,ux,vuij->iyjx", _C, _C, blocks)
    return pix.reshape(bh * 8, bw * 8) + 128.0


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """JFIF YCbCr (float arrays of one shape) to uint8 RGB ``(H, W, 3)``, rounded and clipped."""
    cb = cb - 128.0
    cr = cr - 128.0
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def reconstruct(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, quant_luma, quant_chroma) -> np.ndarray:
    """uint8 RGB ``(S, S, 3)`` of one stored sample: block IDCT, chroma upsampled 2x (pixel
    replication), YCbCr -> RGB. Inputs in store layout ``(64, S/8, S/8)`` and ``(64, S/16, S/16)``."""
    yp = idct_plane(y, quant_luma)
    cbp = np.repeat(np.repeat(idct_plane(cb, quant_chroma), 2, axis=0), 2, axis=1)
    crp = np.repeat(np.repeat(idct_plane(cr, quant_chroma), 2, axis=0), 2, axis=1)
    return ycbcr_to_rgb(yp, cbp, crp)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images of one shape (inf when equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
