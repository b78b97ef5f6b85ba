"""The 8x8 block DCT of JPEG: bases, block (I)DCT of planes, libjpeg's scaled IDCTs, its integer FDCT.

Conventions (those of the store, of ``jdct_cli._decoder`` and of every module of jdct):

- A coefficient *plane* is ``(..., K, bh, bw)``: channel ``k`` of block ``(i, j)`` of a ``bh x bw``
  grid; with all 64 coefficients ``K = 64`` and channel ``k = 8*v + u`` holds frequency ``(v, u)``
  (``v`` vertical, ``u`` horizontal: natural order). The decoder's layout ``(bh, bw, 64)`` is the same
  data with the channel last.
- A pixel plane is ``(..., H, W)``: JPEG sample values 0..255 (float unless said otherwise), the
  level shift of 128 undone.
- The DCT is JPEG's orthonormal one, ``F = C f C^T`` with :func:`dct_matrix`; libjpeg's integer
  FDCT (:func:`islow_fdct`) returns 8 times it, as the encoder's quantizer expects.

Every function takes numpy arrays or torch tensors (the same formula for both, see
:mod:`jdct_cli.jpegmath._array`) and keeps their kind, dtype and device; the torch versions are
differentiable where the arithmetic is (everything but :func:`islow_fdct`).

libjpeg's DCT scaling (decoding at M/8) gives each component an IDCT of ``s`` points per block side
(``s`` = its "DCT scaled size", see :func:`jdct_cli.jpegmath.chroma.component_plans`):
:func:`scaled_idct_matrix` models each ``s`` (measured against libjpeg-turbo 2.1.5: within 1 of
its output before rounding) and :func:`coefficient_indices` names the coefficients it reads, the
only ones a decoder needs to ship for that ``s``.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ._array import cached_constant, is_floating, is_tensor, namespace

__all__ = [
    "FLIP_SIGN",
    "dct_matrix",
    "dct_basis",
    "idct_matrix",
    "scaled_idct_matrix",
    "coefficient_indices",
    "idct_kernel",
    "idct_blocks",
    "dct_blocks",
    "islow_fdct",
    "plane_stats_from_coefficients",
]

#: +1 for even horizontal frequency u, -1 for odd u (natural order index k = 8*v + u). Mirroring a
#: block's 8 columns maps ``cos((2x+1) u pi/16)`` to ``(-1)^u`` times itself, so the DCT of a
#: horizontally mirrored image is its blocks in reverse column order times this sign, exactly.
FLIP_SIGN = np.array([(-1) ** (k % 8) for k in range(64)], dtype=np.int16)
FLIP_SIGN.flags.writeable = False


@functools.lru_cache(maxsize=None)
def _dct_matrix(n: int) -> np.ndarray:
    c = [1.0 / math.sqrt(2.0)] + [1.0] * (n - 1)
    scale = math.sqrt(2.0 / n)
    m = np.array([[scale * c[u] * math.cos((2 * x + 1) * u * math.pi / (2.0 * n)) for x in range(n)]
                  for u in range(n)], dtype=np.float64)
    m.flags.writeable = False
    return m


def dct_matrix(n: int = 8) -> np.ndarray:
    """float64 ``(n, n)`` orthonormal DCT-II: ``C[u, x] = sqrt(2/n) c(u) cos((2x+1) u pi / 2n)``,
    ``c(0) = 1/sqrt(2)``, else 1. Rows are frequencies: ``F = C f`` and ``f = C^T F`` (read-only)."""
    return _dct_matrix(int(n))


def dct_basis() -> np.ndarray:
    """The 64 JPEG DCT basis functions as conv filters: float64 ``(64, 1, 8, 8)``; filter
    ``8*v + u`` at row y, column x is ``C[v, y] C[u, x]``, so a stride-8 convolution of a level-shifted
    plane with them is the block DCT (the DCT-Frozen networks' first layer)."""
    c = dct_matrix(8)
    return np.einsum("vy,ux->vuyx", c, c).reshape(64, 1, 8, 8)


@functools.lru_cache(maxsize=None)
def idct_matrix() -> np.ndarray:
    """float64 ``(64, 64)`` ``M`` with ``pixels = M @ coefficients`` for one 8x8 block: rows are pixel
    positions ``8*y + x``, columns frequencies ``8*v + u``, ``M[8y+x, 8v+u] = C[v, y] C[u, x]``."""
    c = dct_matrix(8)
    m = np.kron(c.T, c.T)
    m.flags.writeable = False
    return m


@functools.lru_cache(maxsize=None)
def scaled_idct_matrix(s: int) -> np.ndarray:
    """float64 ``(s, 8)`` ``L``: libjpeg's ``s``-point output of one block side, ``f = L F L^T``
    (plus 128) for dequantized coefficients ``F`` (8x8).

    - s = 8: the orthonormal IDCT, ``C^T`` (libjpeg's islow within 1).
    - s in {1, 2, 4} (``jidctred.c``, and 1x1 = DC/8): the mean of ``8/s`` adjacent outputs of the
      8-point IDCT; frequencies that cancel in those means are never read (u = 4 at s = 4...).
    - s in {3, 5, 6, 7}: the s-point orthonormal IDCT of the top-left s x s coefficients, times
      ``sqrt(s/8)`` (``jidctint.c`` reads rows/columns 0..s-1 only).
    - s in 9..16: the same with the 8x8 block zero-padded to s x s.
    """
    s = int(s)
    if not 1 <= s <= 16:
        raise ValueError(f"a libjpeg IDCT has 1..16 points, not {s}")
    if 8 % s == 0:
        return dct_matrix(8).T.reshape(s, 8 // s, 8).mean(axis=1)
    k = min(s, 8)
    m = np.zeros((s, 8))
    m[:, :k] = math.sqrt(s / 8.0) * dct_matrix(s).T[:, :k]
    return m


@functools.lru_cache(maxsize=None)
def _indices(s: int) -> np.ndarray:
    used = np.flatnonzero(np.abs(scaled_idct_matrix(s)).max(axis=0) > 1e-12)
    idx = (used[:, None] * 8 + used[None, :]).reshape(-1).astype(np.int64)
    idx.flags.writeable = False
    return idx


def coefficient_indices(s: int) -> np.ndarray:
    """int64 ``(K,)`` natural-order indices ``8*v + u`` of the coefficients libjpeg's ``s``-point IDCT
    reads, ascending: 1 at s = 1 (DC), 25 at s = 2, 9 at s = 3, 49 at s = 4, ``s*s`` for s in 5..7,
    64 from s = 8 (read-only)."""
    return _indices(int(s))


@functools.lru_cache(maxsize=None)
def idct_kernel(s: int = 8, full: bool = False) -> np.ndarray:
    """float64 ``(s*s, K)``: pixels ``y*s + x`` of one block from its coefficients
    :func:`coefficient_indices` ``(s)`` (``full``: all 64, natural order), for :func:`idct_blocks`."""
    lm = scaled_idct_matrix(s)
    k = np.kron(lm, lm)
    k = k if full else k[:, coefficient_indices(s)]
    k.flags.writeable = False
    return k


def _kernel_like(s: int, full: bool, like):
    """:func:`idct_kernel` as an array of ``like``'s kind, dtype and device."""
    if not is_floating(like):
        raise TypeError(f"the block (I)DCT takes float coefficients or pixels, not {like.dtype}")
    return cached_constant(("idct", s, full), idct_kernel(s, full), like)


def idct_blocks(coefs, s: int = 8):
    """Pixels ``(..., s*bh, s*bw)`` (0..255 scale, not rounded nor clipped) of dequantized coefficients
    ``(..., K, bh, bw)``: each block through libjpeg's ``s``-point IDCT (:func:`scaled_idct_matrix`),
    plus the level shift 128. ``K`` is 64 (natural order) or ``len(coefficient_indices(s))`` (those
    coefficients, in that order). One matmul per block: a ``(s*s, K)`` kernel."""
    xp = namespace(coefs)
    *lead, k, bh, bw = coefs.shape
    if k not in (64, len(coefficient_indices(s))):
        raise ValueError(f"a {s}-point IDCT takes 64 or {len(coefficient_indices(s))} coefficients per block, not {k}")
    kernel = _kernel_like(s, k != len(coefficient_indices(s)), coefs)
    pix = kernel @ coefs.reshape(*lead, k, bh * bw)
    pix = xp.moveaxis(pix.reshape(*lead, s, s, bh, bw), (-4, -3), (-3, -1))
    return pix.reshape(*lead, bh * s, bw * s) + 128.0


def _level_shifted_blocks(plane):
    """``(xp, lead, bh, bw, blocks)``: ``plane - 128`` ``(..., 8*bh, 8*bw)`` as ``(..., y, x, bh, bw)``."""
    xp = namespace(plane)
    *lead, h, w = plane.shape
    if h % 8 or w % 8:
        raise ValueError(f"a block DCT needs sides that are multiples of 8, not {h}x{w}")
    bh, bw = h // 8, w // 8
    return xp, lead, bh, bw, xp.moveaxis((plane - 128.0).reshape(*lead, bh, 8, bw, 8), (-3, -1), (-4, -3))


def dct_blocks(plane):
    """Orthonormal block DCT of a pixel plane ``(..., 8*bh, 8*bw)`` (0..255, level shift of 128 done
    here): coefficients ``(..., 64, bh, bw)`` in natural order, of ``plane``'s float dtype. The inverse
    of :func:`idct_blocks` (s = 8); differentiable."""
    xp, lead, bh, bw, blocks = _level_shifted_blocks(plane)
    matrix = _kernel_like(8, False, plane)
    return (matrix.T @ blocks.reshape(*lead, 64, bh * bw)).reshape(*lead, 64, bh, bw)


def _islow_pass_matrix() -> np.ndarray:
    """int64 ``(8, 8)``: the linear part of one 1-D pass of libjpeg's islow FDCT (``jfdctint.c``,
    CONST_BITS 13), output frequency by input sample, before its per-output rounding. Built by running
    the butterfly (integer products, no rounding inside) on the unit vectors."""
    e = np.eye(8, dtype=np.int64)
    t0, t7 = e[0] + e[7], e[0] - e[7]
    t1, t6 = e[1] + e[6], e[1] - e[6]
    t2, t5 = e[2] + e[5], e[2] - e[5]
    t3, t4 = e[3] + e[4], e[3] - e[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    out = np.zeros((8, 8), dtype=np.int64)
    out[0], out[4] = t10 + t11, t10 - t11
    z1 = (t12 + t13) * 4433                          # FIX(0.541196100)
    out[2], out[6] = z1 + t13 * 6270, z1 - t12 * 15137  # FIX(0.765366865), FIX(1.847759065)
    z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
    z5 = (z3 + z4) * 9633                             # FIX(1.175875602)
    t4, t5, t6, t7 = t4 * 2446, t5 * 16819, t6 * 25172, t7 * 12299
    z1, z2, z3, z4 = z1 * -7373, z2 * -20995, z3 * -16069 + z5, z4 * -3196 + z5
    out[7], out[5], out[3], out[1] = t4 + z1 + z3, t5 + z2 + z4, t6 + z2 + z3, t7 + z1 + z4
    return out


_ISLOW = _islow_pass_matrix().astype(np.float64)
_EVEN = np.isin(np.arange(8), (0, 4))
# Per output frequency: multiply, add, divide, floor. Pass 1 (rows) keeps PASS1_BITS = 2 extra bits
# (DC and frequency 4 exactly, times 4); pass 2 (columns) removes them: DESCALE(x, 2) and
# DESCALE(x, CONST_BITS + PASS1_BITS) = DESCALE(x, 15); DESCALE rounds half up (add, then shift).
_PASS1 = (np.where(_EVEN, 4.0, 1.0), np.where(_EVEN, 0.0, 2.0 ** 10), np.where(_EVEN, 1.0, 2.0 ** 11))
_PASS2 = (np.ones(8), np.where(_EVEN, 2.0, 2.0 ** 14), np.where(_EVEN, 4.0, 2.0 ** 15))


def islow_fdct(plane):
    """libjpeg-turbo's integer forward DCT (``JDCT_ISLOW``, ``jfdctint.c``) of each 8x8 block, exactly:
    integer-valued float64 coefficients ``(..., 64, bh, bw)``, natural order, 8 times the orthonormal
    DCT, as libjpeg's quantizer receives them (see :func:`jdct_cli.jpegmath.quant.quantize`).

    ``plane``: integer pixel values 0..255 ``(..., 8*bh, 8*bw)``, level shift done here. Rows are
    transformed first, then columns, each pass rounding as libjpeg does; float64 holds every
    intermediate exactly. Not differentiable (see :func:`dct_blocks`).
    """
    xp, lead, bh, bw, x = _level_shifted_blocks(plane.double() if is_tensor(plane) else np.asarray(plane, np.float64))
    a = cached_constant("islow", _ISLOW, x)

    def rounded(z, name, rule):
        mul, add, div = (cached_constant((name, i), r.reshape(8, 1, 1, 1), z) for i, r in enumerate(rule))
        return xp.floor((z * mul + add) / div)

    # pass 1 along x: (u, y); pass 2 along y: (v, u). Contractions as matmuls over the block grid.
    t = a @ xp.moveaxis(x, -3, -4).reshape(*lead, 8, 8 * bh * bw)            # x -> u, rows (y, blocks)
    t = rounded(t.reshape(*lead, 8, 8, bh, bw), "pass1", _PASS1)                          # (u, y, bh, bw)
    t = a @ xp.moveaxis(t, -3, -4).reshape(*lead, 8, 8 * bh * bw)            # y -> v: (v, u, ...)
    t = rounded(t.reshape(*lead, 8, 8, bh, bw), "pass2", _PASS2)
    return t.reshape(*lead, 64, bh, bw)


def plane_stats_from_coefficients(mean, std) -> tuple[float, float]:
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
