"""Torch-side JPEG arithmetic: DCT-domain flip, block IDCT, chroma upsampling, JFIF colour conversion.

All functions work on any device and batch; they are what :class:`jdct_cli.data.DCTLoader` runs on
the GPU (or CPU) after the int16 coefficients arrive.

Conventions (those of the store and of ``jdct_cli._decoder``):

- A coefficient plane is ``[B, 64, H8, W8]``: channel ``k = 8*v + u`` holds frequency ``(v, u)``
  (``v`` vertical, ``u`` horizontal) of every 8x8 block, blocks laid out on an ``H8 x W8`` grid.
- Pixels are JPEG sample values: 0..255 floats (not clamped unless said so), level shift of 128
  undone, Y/Cb/Cr per JFIF (full range).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: +1 for even horizontal frequency u, -1 for odd u (natural order index k = 8*v + u).
FLIP_SIGN = np.array([(-1) ** (k % 8) for k in range(64)], dtype=np.int16)


def flip_blocks_(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Horizontally flip, in place, the samples ``index`` of a coefficient plane ``x`` ``[B, 64, H8, W8]``.

    Exact in the DCT domain: mirroring a block's 8 columns maps the basis function
    ``cos((2x+1)u pi/16)`` to ``(-1)^u`` times itself, so the block's coefficients with odd ``u`` change
    sign; mirroring the image also reverses the order of the block columns. Works for any dtype
    (int16 included: quantized coefficients never reach -32768). Returns ``x``.
    """
    if index.numel() == 0:
        return x
    sign = torch.as_tensor(FLIP_SIGN, device=x.device).to(x.dtype).view(1, 64, 1, 1)
    x[index] = x[index].flip(-1) * sign
    return x


def idct_matrix(dtype=torch.float32, device=None) -> torch.Tensor:
    """``[64, 64]`` matrix ``M`` with ``pixels = M @ coefficients`` for one 8x8 block.

    Rows are pixel positions ``8*y + x``, columns frequencies ``8*v + u``;
    ``M[8y+x, 8v+u] = A[y, v] * A[x, u]`` with the orthonormal 1-D basis
    ``A[x, u] = c(u)/2 * cos((2x+1) u pi / 16)``, ``c(0) = 1/sqrt(2)``, else 1 (JPEG's IDCT).
    """
    a = np.zeros((8, 8), dtype=np.float64)
    for x in range(8):
        for u in range(8):
            c = 1.0 / math.sqrt(2.0) if u == 0 else 1.0
            a[x, u] = c / 2.0 * math.cos((2 * x + 1) * u * math.pi / 16.0)
    return torch.as_tensor(np.kron(a, a), dtype=dtype, device=device)


def blocks_to_plane(coefs: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Inverse DCT of dequantized coefficients ``[B, 64, H8, W8]`` -> pixels ``[B, 1, 8*H8, 8*W8]`` (0..255 scale).

    One matmul with :func:`idct_matrix` per block, then ``pixel_shuffle`` puts pixel ``8*y + x`` of
    block ``(i, j)`` at ``(8i + y, 8j + x)``; adds JPEG's level shift of 128.
    """
    b, _, h, w = coefs.shape
    pix = torch.matmul(matrix, coefs.reshape(b, 64, h * w)).reshape(b, 64, h, w)
    return F.pixel_shuffle(pix, 8).add_(128.0)


def upsample_chroma(plane: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``[B, C, H, W]`` chroma -> ``[B, C, 2H, 2W]``.

    ``"bilinear"`` (half-pixel centres, edge replication) is the triangle filter of libjpeg's
    "fancy" h2v2 upsampling (weights 3/4 and 1/4 per axis); ``"nearest"`` replicates each sample.
    """
    if mode == "nearest":
        return F.interpolate(plane, scale_factor=2, mode="nearest")
    return F.interpolate(plane, scale_factor=2, mode="bilinear", align_corners=False)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """JFIF full-range YCbCr ``[B, 3, H, W]`` (0..255) -> RGB ``[B, 3, H, W]`` (0..255, not clamped)."""
    y, cb, cr = ycbcr[:, 0:1], ycbcr[:, 1:2] - 128.0, ycbcr[:, 2:3] - 128.0
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    return torch.cat([r, g, b], dim=1)


def coefficients_to_ycbcr(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor, matrix: torch.Tensor,
                          upsample: str = "bilinear") -> torch.Tensor:
    """Dequantized coefficient planes (``[B,64,S/8,S/8]``, ``[B,64,S/16,S/16]`` twice) -> YCbCr ``[B,3,S,S]`` 0..255."""
    yp = blocks_to_plane(y, matrix)
    chroma = blocks_to_plane(torch.cat([cb, cr], dim=0), matrix)
    chroma = upsample_chroma(chroma, upsample)
    n = y.shape[0]
    return torch.cat([yp, chroma[:n], chroma[n:]], dim=1)


def plane_stats_from_coefficients(mean: np.ndarray, std: np.ndarray) -> tuple[float, float]:
    """Mean and std (0..255 pixel units) of a plane's pixels from its per-frequency coefficient stats.

    The JPEG DCT is orthonormal, so over a block ``sum (p-128)^2 = sum_k c_k^2`` (Parseval): the mean
    squared level-shifted pixel is ``sum_k E[c_k^2] / 64`` with ``E[c_k^2] = std_k^2 + mean_k^2``; the
    mean pixel is ``128 + mean_DC / 8``. ``mean``/``std``: 64 floats each (dequantized coefficients).
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    m = mean[0] / 8.0
    second = float(np.sum(std ** 2 + mean ** 2)) / 64.0
    return 128.0 + m, math.sqrt(max(second - m * m, 1e-6))
