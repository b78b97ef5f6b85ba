"""numpy or torch: the one formula of each piece of jpegmath serves both.

The functions of jpegmath take numpy arrays or torch tensors and use only operations that both
spell alike (``@``, ``reshape``, ``floor``, ``clip``, ``moveaxis``, ``concatenate``, ``where``...);
:func:`namespace` picks the module. torch is never imported here: a tensor can only exist when its
caller imported torch, so ``convert`` and ``inspect`` (numpy only) stay free of it.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


def is_tensor(x) -> bool:
    """True for a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(x) -> Any:
    """The module whose functions fit ``x``: ``torch`` for a tensor, else ``numpy``."""
    return sys.modules["torch"] if is_tensor(x) else np


def is_floating(x) -> bool:
    """True for a float array or tensor."""
    return x.dtype.is_floating_point if is_tensor(x) else np.issubdtype(x.dtype, np.floating)


def constant(values, like):
    """``values`` (a scalar, a sequence, an array or a tensor) as an array of ``like``'s kind, dtype
    and device."""
    if is_tensor(like):
        if is_tensor(values):
            return values.to(device=like.device, dtype=like.dtype)
        return sys.modules["torch"].as_tensor(np.array(values), dtype=like.dtype, device=like.device)
    if is_tensor(values):
        values = values.cpu().numpy()
    return np.asarray(values, dtype=like.dtype)


def signed(x):
    """``x``, or for an unsigned numpy array (uint8 pixels) the same values as int32, so that
    arithmetic on it cannot wrap around."""
    if not is_tensor(x) and np.issubdtype(np.asarray(x).dtype, np.unsignedinteger):
        return np.asarray(x).astype(np.int32)
    return x


def floor_divide(x, d: int):
    """``floor(x / d)`` for a power of two ``d``: integer division for integer arrays, else a
    multiplication by ``1/d`` (exact in binary floating point) and a floor."""
    if not is_floating(x):
        return x // d
    return namespace(x).floor(x * (1.0 / d))


def repeat(x, factor: int, axis: int):
    """Each sample of ``x`` repeated ``factor`` times along ``axis`` (box upsampling)."""
    if factor == 1:
        return x
    if is_tensor(x):
        return x.repeat_interleave(factor, dim=axis)
    return np.repeat(x, factor, axis=axis)


_CACHE: dict = {}


def cached_constant(key, values, like):
    """:func:`constant` of a value that never changes (a module's table), kept per key, kind, dtype
    and device: a GPU step then never waits for a host-to-device copy of it."""
    if not is_tensor(like):
        return np.asarray(values, dtype=like.dtype)
    k = (key, like.dtype, like.device)
    t = _CACHE.get(k)
    if t is None:
        t = _CACHE[k] = constant(values, like)
    return t


def shifted(x, offset: int, axis: int):
    """``x`` moved by ``offset`` (+1 or -1) along ``axis`` with its edge sample repeated:
    ``out[i] = x[clip(i + offset, 0, n - 1)]``; the neighbours libjpeg reads, edges replicated."""
    xp = namespace(x)
    axis = axis % x.ndim
    n = x.shape[axis]
    cut = [slice(None)] * x.ndim

    def part(lo, hi):
        cut[axis] = slice(lo, hi)
        return x[tuple(cut)]

    if offset > 0:
        return xp.concatenate([part(1, n), part(n - 1, n)], axis=axis)
    return xp.concatenate([part(0, 1), part(0, n - 1)], axis=axis)


def take_along(x, indices, axis: int):
    """``numpy.take_along_axis`` / ``torch.take_along_dim``."""
    if is_tensor(x):
        return sys.modules["torch"].take_along_dim(x, indices, axis)
    return np.take_along_axis(x, indices, axis)


def arange(n: int, like):
    """``0 .. n-1`` as an array of ``like``'s kind and device (int64)."""
    if is_tensor(like):
        return sys.modules["torch"].arange(n, device=like.device)
    return np.arange(n)


def zeros(shape, like):
    """Zeros of ``shape`` with ``like``'s kind, dtype and device."""
    if is_tensor(like):
        return like.new_zeros(shape)
    return np.zeros(shape, dtype=like.dtype)


def interleave(even, odd, axis: int):
    """Arrays of one shape interleaved along ``axis``: ``out[2i] = even[i]``, ``out[2i+1] = odd[i]``."""
    xp = namespace(even)
    axis = axis % even.ndim
    both = xp.stack([even, odd], axis=axis + 1)
    shape = list(even.shape)
    shape[axis] *= 2
    return both.reshape(shape)
