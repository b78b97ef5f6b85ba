"""Chroma resampling as libjpeg does it: which IDCT size and upsampling each component gets when
decoding at M/8, the "fancy" (triangle) and box upsamplers, and the encoder's biased h2v2
downsampling.

Planes are ``(..., H, W)`` numpy arrays or torch tensors (see :mod:`jdct_cli.jpegmath._array`).
``exact=True`` reproduces libjpeg-turbo 2.1.5's integer arithmetic bit for bit (``jdsample.c``,
``jcsample.c``; measured against its decoder with ``out_color_space = JCS_YCbCr``): integer-valued
input, integer-valued output, edges replicated. ``exact=False`` is the same filter in float,
without the rounding biases (differentiable). Upsampling reads one neighbour on each side: a plane
cut out of a larger one is exact except for its outermost samples, unless its edges are the image's.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ._array import cached_constant, floor_divide, interleave, is_tensor, repeat, shifted, signed

__all__ = ["ComponentPlan", "component_plans", "upsample", "downsample_h2v2"]


@dataclass(frozen=True)
class ComponentPlan:
    """How libjpeg decodes one component at M/8: ``idct_size`` points per block side (its
    ``DCT_scaled_size``), then ``upsample`` ``(fy, fx)`` integer factors to the output grid, with
    the triangle filter when ``fancy`` else by replication."""

    idct_size: int
    upsample: tuple[int, int]
    fancy: bool


def component_plans(scale: int, factors, width: int) -> tuple[ComponentPlan, ...]:
    """libjpeg-turbo's choices for each component when decoding at ``scale``/8 (M = 1..16).

    ``factors``: ``(h, v)`` sampling factors per component (``h`` horizontal); ``width``: the image
    width in pixels. ``jdmaster.c`` ``jpeg_calc_output_dimensions`` doubles a component's IDCT size
    from M while it stays below 8 and the sampling ratios allow (4:2:0 chroma at M < 8: 2M points
    and no upsampling); ``jdsample.c`` ``jinit_upsampler`` then upsamples by the ratio left, with
    the fancy filter for 2x horizontal / 2x2 (when the component is wider than 2 samples) and 2x
    vertical ratios, only when M > 1, else by replication. ValueError for ratios libjpeg refuses
    (fractional).
    """
    scale = int(scale)
    max_h = max(h for h, _ in factors)
    max_v = max(v for _, v in factors)
    plans = []
    for h, v in factors:
        s = scale
        while s < 8 and (max_h * scale) % (h * s * 2) == 0 and (max_v * scale) % (v * s * 2) == 0:
            s *= 2
        h_in, v_in = h * s, v * s
        h_out, v_out = max_h * scale, max_v * scale
        if h_out % h_in or v_out % v_in:
            raise ValueError(f"sampling factors {tuple(factors)} need fractional upsampling at {scale}/8")
        fx, fy = h_out // h_in, v_out // v_in
        downsampled_width = -(-width * h * s // (max_h * 8))
        fancy = scale > 1 and (
            ((fy, fx) in ((1, 2), (2, 2)) and downsampled_width > 2) or (fy, fx) == (2, 1))
        plans.append(ComponentPlan(idct_size=s, upsample=(fy, fx), fancy=fancy))
    return tuple(plans)


def _h2v2(plane, exact: bool):
    # vertical: colsum = 3 * nearer row + farther row (rows 2i: i and i-1; 2i+1: i and i+1)
    up, down = shifted(plane, -1, -2), shifted(plane, 1, -2)
    col = interleave(3 * plane + up, 3 * plane + down, -2)
    left, right = shifted(col, -1, -1), shifted(col, 1, -1)
    even, odd = 3 * col + left, 3 * col + right
    if exact:
        return interleave(floor_divide(even + 8, 16), floor_divide(odd + 7, 16), -1)
    return interleave(even / 16, odd / 16, -1)


def _fancy_2x(plane, axis: int, exact: bool):
    """h2v1 (axis -1) or h1v2 (axis -2): outputs ``2i`` and ``2i+1`` are ``(3 p[i] + p[i-1] + 1) >> 2``
    and ``(3 p[i] + p[i+1] + 2) >> 2``."""
    plane = signed(plane)
    even = 3 * plane + shifted(plane, -1, axis)
    odd = 3 * plane + shifted(plane, 1, axis)
    if exact:
        return interleave(floor_divide(even + 1, 4), floor_divide(odd + 2, 4), axis)
    return interleave(even / 4, odd / 4, axis)


def upsample(plane, factors=(2, 2), *, fancy: bool = True, exact: bool = True):
    """``plane`` ``(..., H, W)`` upsampled by ``factors`` ``(fy, fx)``: ``(..., fy*H, fx*W)``.

    ``fancy`` with factors (2, 2), (1, 2) or (2, 1): libjpeg's triangle filters (h2v2: weights 9, 3,
    3, 1 over 16 with rounding biases 8 and 7 on even and odd columns; h2v1 and h1v2: 3 and 1 over 4,
    biases 1 and 2), edges replicated; other factors, or not ``fancy``: replication (libjpeg's box
    upsamplers). ``exact=False`` drops the biases; for torch and (2, 2) it is then
    ``F.interpolate(scale_factor=2, mode="bilinear", align_corners=False)``, the same filter (the
    half-pixel bilinear weights are 3/4 and 1/4 with edges clamped).
    """
    fy, fx = (int(f) for f in factors)
    if (fy, fx) == (1, 1):
        return plane
    if fancy and (fy, fx) == (2, 2):
        if not exact and is_tensor(plane):
            functional = sys.modules["torch"].nn.functional
            lead = plane.shape[:-2]
            x = plane.reshape(-1, 1, *plane.shape[-2:])
            return functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).reshape(
                *lead, 2 * plane.shape[-2], 2 * plane.shape[-1])
        return _h2v2(signed(plane), exact)
    if fancy and (fy, fx) == (1, 2):
        return _fancy_2x(plane, -1, exact)
    if fancy and (fy, fx) == (2, 1):
        return _fancy_2x(plane, -2, exact)
    return repeat(repeat(plane, fy, -2), fx, -1)


def downsample_h2v2(plane, *, exact: bool = True):
    """``plane`` ``(..., 2H, 2W)`` -> ``(..., H, W)``: the mean of each 2x2 cell.

    ``exact``: libjpeg's encoder (``jcsample.c`` ``h2v2_downsample``): ``(a + b + c + d + bias) >> 2``
    with bias 1 on even and 2 on odd output columns (integer-valued input). Odd sides are not
    padded here: libjpeg replicates the last column/row first (``expand_right_edge``).
    """
    h, w = plane.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"h2v2 downsampling needs even sides, not {h}x{w}")
    plane = signed(plane)
    total = plane[..., 0::2, 0::2] + plane[..., 0::2, 1::2] + plane[..., 1::2, 0::2] + plane[..., 1::2, 1::2]
    if not exact:
        return total / 4
    return floor_divide(total + cached_constant(("h2v2 bias", w), np.arange(w // 2) % 2 + 1, total), 4)
