"""The paper's re-encode augmentation as batched torch ops: decoded block rectangles of JPEGs ->
fresh crops -> the quantized 4:2:0 coefficients a crops store would hold for them.

The CPU side of the images layout entropy-decodes, for every sample, the block rectangle that
:func:`jdct_cli.transforms.crop_geometry` names and packs it into a :class:`HostBatch`; everything
after that is arithmetic here, on any torch device (CUDA for training, the CPU for tests):

1. :func:`unpack` the coefficients of each group of samples sharing a decoding scale and sampling,
   and :func:`~jdct_cli.jpegmath.quant.dequantize` them with each file's own tables;
2. :func:`decode_rectangles`: libjpeg's scaled IDCT per component (``M/8``, chroma of 4:2:0 at
   ``2M`` points as libjpeg does), its chroma upsampling, its integer YCbCr -> RGB, each rounded to
   0..255 as a decode would: libjpeg's pixels except where its integer IDCTs round otherwise (a
   few % of values, by 1 to 3; upsampling and colour conversion are libjpeg's bit for bit);
3. :func:`resize_crops`: per-sample crop + antialiased bilinear resize to S x S (Pillow's filter as
   weight matrices, batched matmuls), the horizontal flip folded into the horizontal matrix;
4. :func:`to_ycbcr420`: libjpeg's encoder colour conversion and biased 2x2 chroma downsampling;
5. :func:`forward_dct` and :func:`~jdct_cli.jpegmath.quant.quantize` with the tables of a quality.

:func:`decode_crops` is 1-3 and :func:`reencode` all of it; their outputs feed
:func:`jdct_cli.data.coefficients_to_inputs` like a crops store's coefficients (DCT networks, or
pixels for the baselines from the same crops). With ``rounding=False`` every stage is the float
version of its formula and differentiable, for a learned quantizer between :func:`forward_dct` and
the network. Deterministic: no random draws here (the CPU side drew the boxes and flips), and no
atomics-based reductions. ``exact_resize=True`` reproduces Pillow's two rounded passes exactly
(in float32 with split weights), making the crops :func:`jdct_cli.transforms.crop_to_rgb`'s pixels
wherever the decoded pixels are libjpeg's.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ..transforms import CropGeometry
from . import resize as rs
from ._array import cached_constant
from .blockdct import coefficient_indices, dct_blocks, idct_blocks, islow_fdct
from .chroma import component_plans, downsample_h2v2, upsample
from .color import rgb_to_ycbcr, ycbcr_to_rgb
from .quant import dequantize, ijg_tables, quantize

__all__ = ["HostBatch", "pack_reference", "Group", "groups", "component_sets", "DeviceBatch", "to_device", "unpack",
           "decode_rectangles", "resize_crops", "decode_crops", "to_ycbcr420", "forward_dct", "reencode"]

MAX_COMPONENTS = 3


@functools.lru_cache(maxsize=4096)
def _plans(scale: int, factors: tuple, width: int):
    return component_plans(scale, factors, width)


def _plans_of(scale: int, factors, width: int):
    # The width matters only for tiny images (fancy upsampling needs more than 2 chroma samples):
    # keying the cache on min(width, 65) gives the same answers with far fewer entries.
    return _plans(int(scale), tuple(factors), min(int(width), 65))


@dataclass
class HostBatch:
    """What the CPU side hands to the device for one batch of ``n`` samples (numpy arrays).

    - ``size``: S, the crop side in pixels (a multiple of 16).
    - ``coefs``: int16 ``(total,)``: for each sample ``i`` and component ``c``, the quantized
      coefficients of its block rectangle (:meth:`CropGeometry.blocks`) as C-ordered
      ``(rows, cols, K)``, block by block in row-major order, each block's ``K`` coefficients being
      those :meth:`CropGeometry.coefficient_indices` ``(c)`` names, in that order (all 64 at M = 8,
      fewer when libjpeg's scaled IDCT reads fewer). Starts at ``offsets[i, c]``.
    - ``offsets``: int64 ``(n, 3)``, element offsets into ``coefs``, each a multiple of its ``K``
      (-1 for a component a grayscale image lacks).
    - ``blocks``: int32 ``(n, 3, 2)``: ``(rows, cols)`` of each rectangle, in its component's blocks.
    - ``factors``: uint8 ``(n, 3, 2)``: ``(h, v)`` sampling factors per component (0 if absent).
    - ``quant``: uint16 ``(n, 3, 64)``: each component's quantization table, natural order (the
      file's own; the coefficients are dequantized with it).
    - ``scale``: uint8 ``(n,)``: M, the decoding scale M/8.
    - ``image_size``: int32 ``(n, 2)``: the image's ``(width, height)``, source pixels.
    - ``mcu_origin``: int32 ``(n, 2)``: ``(row0, col0)``, the rectangle's first MCU row and column.
    - ``box``: float64 ``(n, 4)``: ``(x0, y0, x1, y1)``, the crop box in scaled pixels relative to the
      rectangle's top-left pixel; ``frame``: int32 ``(n, 4)``: the crops recipe's resize frame,
      likewise (:class:`CropGeometry`).
    - ``flip``: bool ``(n,)``: mirror the crop left-right.

    :meth:`allocate` lays a batch out for a list of geometries (the host's decoder then writes each
    rectangle into :meth:`component`); :func:`pack_reference` fills one from whole-file coefficients.
    """

    size: int
    coefs: np.ndarray
    offsets: np.ndarray
    blocks: np.ndarray
    factors: np.ndarray
    quant: np.ndarray
    scale: np.ndarray
    image_size: np.ndarray
    mcu_origin: np.ndarray
    box: np.ndarray
    frame: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return len(self.scale)

    @classmethod
    def allocate(cls, geometries: Sequence[CropGeometry], flips=None, *, pin: bool = False) -> "HostBatch":
        """An unfilled batch for ``geometries`` (one :class:`CropGeometry` per sample, one size S):
        every field but the coefficients (uninitialized) and the quant tables (zero) set.
        ``flips``: bool per sample (default none). ``pin``: ``coefs`` in page-locked memory (a
        torch allocation, for asynchronous copies to a GPU)."""
        n = len(geometries)
        if n == 0:
            raise ValueError("a batch needs at least one sample")
        sizes = {g.size for g in geometries}
        if len(sizes) != 1:
            raise ValueError(f"one crop size per batch, not {sorted(sizes)}")
        offsets = np.full((n, MAX_COMPONENTS), -1, dtype=np.int64)
        blocks = np.zeros((n, MAX_COMPONENTS, 2), dtype=np.int32)
        factors = np.zeros((n, MAX_COMPONENTS, 2), dtype=np.uint8)
        total = 0
        for i, g in enumerate(geometries):
            for c, (h, v) in enumerate(g.factors):
                r0, r1, c0, c1 = g.blocks(c)
                k = len(g.coefficient_indices(c))
                total = -(-total // k) * k
                offsets[i, c] = total
                blocks[i, c] = (r1 - r0, c1 - c0)
                factors[i, c] = (h, v)
                total += (r1 - r0) * (c1 - c0) * k
        if pin:
            coefs = torch.empty(total, dtype=torch.int16, pin_memory=torch.cuda.is_available()).numpy()
        else:
            coefs = np.empty(total, dtype=np.int16)
        return cls(size=sizes.pop(), coefs=coefs, offsets=offsets, blocks=blocks, factors=factors,
                   quant=np.zeros((n, MAX_COMPONENTS, 64), dtype=np.uint16),
                   scale=np.array([g.scale for g in geometries], dtype=np.uint8),
                   image_size=np.array([(g.width, g.height) for g in geometries], dtype=np.int32),
                   mcu_origin=np.array([(g.mcu_rows[0], g.mcu_cols[0]) for g in geometries], dtype=np.int32),
                   box=np.array([g.box for g in geometries], dtype=np.float64),
                   frame=np.array([g.frame for g in geometries], dtype=np.int32),
                   flip=np.zeros(n, dtype=bool) if flips is None else np.asarray(flips, dtype=bool).copy())

    def components(self, i: int) -> int:
        """Number of components (1 or 3) of sample ``i``."""
        return int((self.offsets[i] >= 0).sum())

    def component(self, i: int, c: int) -> np.ndarray:
        """The int16 ``(rows, cols, K)`` view of ``coefs`` that holds component ``c`` of sample ``i``."""
        rows, cols = (int(v) for v in self.blocks[i, c])
        k = len(coefficient_indices(self._plans(i)[c].idct_size))
        start = int(self.offsets[i, c])
        return self.coefs[start:start + rows * cols * k].reshape(rows, cols, k)

    def _plans(self, i: int):
        nc = self.components(i)
        return _plans_of(self.scale[i], [tuple(int(f) for f in self.factors[i, c]) for c in range(nc)],
                         self.image_size[i, 0])


def pack_reference(samples, size: int, *, pin: bool = False) -> HostBatch:
    """A :class:`HostBatch` from whole-file coefficients, in numpy: what the CPU side's partial
    decoder produces, by slicing a full ``jpeg.read_coefficients`` (the reference for tests and
    benchmarks). ``samples``: ``(geometry, coefficients, flip)`` per sample, ``coefficients`` a
    :class:`jdct_cli.jpeg.Coefficients` (components int16 ``(bh, bw, 64)`` padded to whole MCUs,
    quant uint16 ``(nc, 64)``) of the file ``geometry`` was made for."""
    samples = list(samples)
    batch = HostBatch.allocate([g for g, _, _ in samples], [f for _, _, f in samples], pin=pin)
    if batch.size != size:
        raise ValueError(f"the geometries are for crops of {batch.size}, not {size}")
    for i, (geom, coefficients, _) in enumerate(samples):
        comps, quant = coefficients.components, np.asarray(coefficients.quant)
        if len(comps) != len(geom.factors):
            raise ValueError(f"sample {i}: {len(comps)} components, the geometry has {len(geom.factors)}")
        for c, comp in enumerate(comps):
            r0, r1, c0, c1 = geom.blocks(c)
            if comp.shape[0] < r1 or comp.shape[1] < c1:
                raise ValueError(f"sample {i} component {c}: {comp.shape[:2]} blocks, the geometry needs {(r1, c1)}")
            batch.component(i, c)[...] = comp[r0:r1, c0:c1][..., geom.coefficient_indices(c)]
            batch.quant[i, c] = quant[c]
    return batch


@dataclass(frozen=True)
class Group:
    """Samples of a batch decoded alike: positions ``start:stop`` of :attr:`DeviceBatch.order` (and
    ``indices``, the same batch positions in numpy), the decoding ``scale``, sampling ``factors``
    and libjpeg's :class:`~jdct_cli.jpegmath.chroma.ComponentPlan` of each component."""

    indices: np.ndarray
    start: int
    stop: int
    scale: int
    factors: tuple
    plans: tuple


def groups(batch: HostBatch) -> list[Group]:
    """The samples of ``batch`` grouped by (scale, sampling, libjpeg's decoding plans), in order of
    first appearance."""
    keys: dict = {}
    for i in range(len(batch)):
        nc = batch.components(i)
        factors = tuple(tuple(int(f) for f in batch.factors[i, c]) for c in range(nc))
        keys.setdefault((int(batch.scale[i]), factors, batch._plans(i)), []).append(i)
    out, start = [], 0
    for (scale, factors, plans), idx in keys.items():
        out.append(Group(np.array(idx, dtype=np.int64), start, start + len(idx), scale, factors, plans))
        start += len(idx)
    return out


# Columns of DeviceBatch.meta: per component c, _COMP + 5*c + (block offset / K, rows, cols, valid
# rows, valid columns); then per axis a (0: x, 1: y), _AXIS + 4*a + (box start, box end, frame
# size, frame offset); then the flip.
_COMP, _AXIS, _FLIP, _META = 0, 15, 23, 24


def _sample_meta(batch: HostBatch, group: Group) -> np.ndarray:
    """float64 ``(g, 24)``: the per-sample numbers the device reads for ``group`` (all exact)."""
    idx = group.indices
    meta = np.zeros((len(idx), _META))
    mh = max(h for h, _ in group.factors)
    mv = max(v for _, v in group.factors)
    width, height = (batch.image_size[idx, a].astype(np.int64) for a in (0, 1))
    row0, col0 = (batch.mcu_origin[idx, a].astype(np.int64) for a in (0, 1))
    for c, (plan, (h, v)) in enumerate(zip(group.plans, group.factors)):
        s, k = plan.idct_size, len(coefficient_indices(plan.idct_size))
        # a component's last real sample: ceil(image side * factor * s / (max factor * 8)), counted
        # from the rectangle's first sample
        meta[:, _COMP + 5 * c:_COMP + 5 * c + 5] = np.stack([
            batch.offsets[idx, c] // k, batch.blocks[idx, c, 0], batch.blocks[idx, c, 1],
            -(-height * v * s // (mv * 8)) - row0 * v * s, -(-width * h * s // (mh * 8)) - col0 * h * s], axis=1)
    for a in (0, 1):
        lo, hi = batch.frame[idx, a].astype(np.int64), batch.frame[idx, a + 2].astype(np.int64)
        # Pillow receives the box in the frame's coordinates as float32
        in0 = (batch.box[idx, a] - lo).astype(np.float32)
        in1 = (batch.box[idx, a + 2] - lo).astype(np.float32)
        meta[:, _AXIS + 4 * a:_AXIS + 4 * a + 4] = np.stack([in0, in1, hi - lo, lo], axis=1)
    meta[:, _FLIP] = batch.flip[idx]
    return meta


@dataclass
class DeviceBatch:
    """A :class:`HostBatch` on the device, ready for the stages: ``coefs`` int16 ``(total,)``,
    ``quant`` float32 ``(n, 3, 64)``, the samples' :func:`groups` (``order``: int64 ``(n,)`` batch
    positions group after group) and ``meta``: float64 ``(n, 24)`` per-sample geometry in that
    order. ``host`` keeps the numpy batch (sizes, read without waiting for the device).
    ``copied``: on CUDA, an event recorded after the copies; the host batch's (pinned) memory may be
    written again once it has completed (``copied.synchronize()``), not before."""

    host: HostBatch
    groups: list
    coefs: torch.Tensor
    quant: torch.Tensor
    order: torch.Tensor
    meta: torch.Tensor
    copied: Optional[object] = None

    @property
    def device(self) -> torch.device:
        return self.coefs.device


def to_device(batch: HostBatch, device="cpu") -> DeviceBatch:
    """Group ``batch`` and move it to ``device``: four copies (asynchronous from pinned memory, on
    the current stream; see :attr:`DeviceBatch.copied` before reusing the host memory)."""
    device = torch.device(device)
    gs = groups(batch)
    order = np.concatenate([g.indices for g in gs])
    meta = np.concatenate([_sample_meta(batch, g) for g in gs])

    def move(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        return t if device.type == "cpu" else t.to(device, non_blocking=True)

    db = DeviceBatch(host=batch, groups=gs, coefs=move(batch.coefs), quant=move(batch.quant.astype(np.float32)),
                     order=move(order), meta=move(meta))
    if device.type == "cuda":
        db.copied = torch.cuda.Event()
        db.copied.record()
    return db


_INDICES: dict = {}


def _indices_on(s: int, device) -> torch.Tensor:
    key = (s, device)
    if key not in _INDICES:
        _INDICES[key] = torch.from_numpy(coefficient_indices(s).copy()).to(device)
    return _INDICES[key]


def component_sets(group: Group) -> list[tuple[int, ...]]:
    """The components of ``group`` decoded together: those with the same sampling factors and
    decoding plan (4:2:0: ``[(0,), (1, 2)]``), so that each stage runs once for Cb and Cr."""
    sets: dict = {}
    for c, key in enumerate(zip(group.factors, group.plans)):
        sets.setdefault(key, []).append(c)
    return [tuple(v) for v in sets.values()]


def unpack(db: DeviceBatch, group: Group, components: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """Dequantized coefficients of ``components`` (one of :func:`component_sets`) of ``group``:
    ``(len(components) * g, K, rows, cols)`` of ``dtype`` on the device, component after component,
    rectangles zero-padded to the largest; ``K`` as :class:`HostBatch` ships them."""
    host, dev = db.host, db.device
    plan = group.plans[components[0]]
    k = len(coefficient_indices(plan.idct_size))
    rmax = int(host.blocks[group.indices, components[0], 0].max())
    cmax = int(host.blocks[group.indices, components[0], 1].max())
    meta = db.meta[group.start:group.stop]
    base, rows, cols = (torch.cat([meta[:, _COMP + 5 * c + j] for c in components]).long().view(-1, 1, 1)
                        for j in range(3))
    r = torch.arange(rmax, device=dev).view(1, -1, 1)
    col = torch.arange(cmax, device=dev).view(1, 1, -1)
    inside = (r < rows) & (col < cols)
    block = torch.where(inside, base + r * cols + col, 0)
    table = db.coefs[: db.coefs.numel() // k * k].view(-1, k)
    levels = table.index_select(0, block.reshape(-1)).view(len(base), rmax, cmax, k)
    levels = levels.permute(0, 3, 1, 2).to(dtype) * inside.unsqueeze(1)
    q = db.quant[db.order[group.start:group.stop]][:, list(components)].transpose(0, 1).reshape(-1, 64)
    return dequantize(levels, q.index_select(1, _indices_on(plan.idct_size, dev)))


def _round(x: torch.Tensor) -> torch.Tensor:
    """To the nearest integer, halves up, clipped to 0..255 (libjpeg's descale and range limit, and
    Pillow's final rounding)."""
    return torch.floor(x + 0.5).clamp_(0.0, 255.0)


def _replicate_beyond(plane: torch.Tensor, valid_h: torch.Tensor, valid_w: torch.Tensor) -> torch.Tensor:
    """``plane`` ``(g, H, W)`` with every sample past row ``valid_h`` / column ``valid_w`` (per sample,
    int64 ``(g,)``) replaced by the last valid one: libjpeg's edge replication at the image border,
    which lies inside a padded rectangle."""
    g, h, w = plane.shape
    dev = plane.device
    cols = torch.minimum(torch.arange(w, device=dev).view(1, -1), valid_w.view(-1, 1) - 1).clamp_(min=0)
    plane = plane.gather(2, cols.view(g, 1, w).expand(g, h, w))
    rows = torch.minimum(torch.arange(h, device=dev).view(1, -1), valid_h.view(-1, 1) - 1).clamp_(min=0)
    return plane.gather(1, rows.view(g, h, 1).expand(g, h, w))


def decode_rectangles(db: DeviceBatch, group: Group, *, rounding: bool = True, dtype=torch.float32) -> torch.Tensor:
    """RGB of each sample's decoded rectangle, as libjpeg decodes at ``scale``/8: ``(g, 3, H, W)`` of
    ``dtype`` on the device, 0..255 (integer-valued with ``rounding``), rectangles padded.

    Per component: :func:`unpack`, libjpeg's scaled IDCT, rounded; chroma replicated past the
    image border and upsampled (fancy or box) as libjpeg's plans say; then YCbCr -> RGB (libjpeg's
    integer formula with ``rounding``, else the float one); a grayscale image's RGB is its Y.
    """
    meta = db.meta[group.start:group.stop]
    g = group.stop - group.start
    planes: list = [None] * len(group.plans)
    for components in component_sets(group):
        plan = group.plans[components[0]]
        x = idct_blocks(unpack(db, group, components, dtype), plan.idct_size)
        if rounding:
            x = _round(x)
        if plan.upsample != (1, 1):
            if plan.fancy:
                valid_h, valid_w = (torch.cat([meta[:, _COMP + 5 * c + j] for c in components]).long() for j in (3, 4))
                x = _replicate_beyond(x, valid_h, valid_w)
            x = upsample(x, plan.upsample, fancy=plan.fancy, exact=rounding)
        for j, c in enumerate(components):
            planes[c] = x[j * g:(j + 1) * g]
    if len(planes) == 1:
        return planes[0].unsqueeze(1).expand(-1, 3, -1, -1)
    return torch.stack(ycbcr_to_rgb(*planes, exact=rounding), dim=1)


def _taps(db: DeviceBatch, group: Group) -> int:
    """The most taps any output of ``group`` reads (Pillow's ``ksize``), from the host's copy."""
    host = db.host
    lo = host.frame[group.indices][:, :2].astype(np.int64)
    span = ((host.box[group.indices][:, 2:] - lo).astype(np.float32)
            - (host.box[group.indices][:, :2] - lo).astype(np.float32))
    return rs.max_taps(float(span.max()) / host.size)


def _weights(db: DeviceBatch, group: Group, height: int, width: int, *, exact: bool, dtype):
    """Per-sample resize matrices of ``group``: ``wy`` ``(g, S, height)`` and ``wx`` ``(g, S, width)``
    (mirrored where ``flip``), both axes computed as one batch of ``2g`` filters; ``exact``: Pillow's
    fixed-point integers."""
    g = group.stop - group.start
    m = db.meta[group.start:group.stop, _AXIS:_AXIS + 8].reshape(g, 2, 4).transpose(0, 1).reshape(2 * g, 4)
    first, w = rs.filter_taps(m[:, 0].float(), m[:, 1].float(), db.host.size, m[:, 2], taps=_taps(db, group))
    w = (rs.fixed_point(w) if exact else w).to(dtype)
    flip = torch.cat([db.meta[group.start:group.stop, _FLIP], torch.zeros(g, dtype=m.dtype, device=m.device)])
    mats = rs.weight_matrix(first, w, max(height, width), offset=m[:, 3].long(), flip=flip)
    return mats[g:, :, :height], mats[:g, :, :width]


def resize_crops(rgb: torch.Tensor, db: DeviceBatch, group: Group, *, exact: bool = True,
                 rounding: bool = True) -> torch.Tensor:
    """Crop each sample's box out of its rectangle ``rgb`` ``(g, 3, H, W)`` and resize it to S x S
    with Pillow's antialiased bilinear filter, mirrored where ``flip``: ``(g, 3, S, S)`` of ``rgb``'s dtype.

    ``exact`` (with ``rounding``): Pillow's fixed-point weights and two passes rounded to uint8, in
    its pass order: bit-identical to Pillow for the same input. Else one ``Wy @ rgb @ Wx^T``, rounded
    to 0..255 at the end with ``rounding``.
    """
    host = db.host
    _, _, h, w = rgb.shape
    exact = exact and rounding
    wy, wx = _weights(db, group, h, w, exact=exact, dtype=rgb.dtype)
    if not exact:
        out = rs.resize(rgb, wy, wx)
        return _round(out) if rounding else out
    frame = host.frame[group.indices].astype(np.int64)
    first = rs.vertical_first(frame[:, 2] - frame[:, 0], frame[:, 3] - frame[:, 1], host.size, host.size)
    dtype = rgb.dtype
    if _taps(db, group) > rs.MAX_FLOAT32_EXACT_TAPS:
        rgb, wy, wx = rgb.double(), wy.double(), wx.double()
    if first.all() or not first.any():
        return rs.resize(rgb, wy, wx, exact=True, vertical_first=bool(first[0])).to(dtype)
    out = torch.empty((len(first), 3, host.size, host.size), dtype=dtype, device=rgb.device)
    for value in (False, True):
        # the pass order is known here, on the host: split without asking the device
        idx = torch.from_numpy(np.flatnonzero(first == value)).to(rgb.device, non_blocking=True)
        out.index_copy_(0, idx, rs.resize(rgb.index_select(0, idx), wy.index_select(0, idx), wx.index_select(0, idx),
                                          exact=True, vertical_first=value).to(dtype))
    return out


@contextlib.contextmanager
def _full_precision(device: torch.device):
    """float32 matmuls in full precision on CUDA (no TF32) inside, whatever the caller set: the
    augmentation's pixels must not change with a training script's speed settings."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def decode_crops(db: DeviceBatch, *, exact_resize: bool = False, rounding: bool = True,
                 channels_last: Optional[bool] = None, dtype=torch.float32) -> torch.Tensor:
    """Steps 1-3 for a whole batch: the RGB crops, ``(n, 3, S, S)`` of ``dtype``, 0..255 on the device
    (integer-valued with ``rounding``), in batch order; ``channels_last`` memory format (default:
    on CUDA). ``rounding=False``: every stage in float, differentiable. ``exact_resize``: Pillow's
    two rounded passes (see :func:`resize_crops`), about a third more work."""
    host = db.host
    n, size = len(host), host.size
    channels_last = db.device.type == "cuda" if channels_last is None else channels_last
    out = torch.empty((n, 3, size, size), dtype=dtype, device=db.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with _full_precision(db.device):
        for group in db.groups:
            rgb = decode_rectangles(db, group, rounding=rounding, dtype=dtype)
            crops = resize_crops(rgb, db, group, exact=exact_resize, rounding=rounding)
            if len(db.groups) == 1 and not channels_last:
                return crops  # one group, in batch order: already the batch
            out.index_copy_(0, db.order[group.start:group.stop], crops)
    return out


def to_ycbcr420(rgb: torch.Tensor, *, rounding: bool = True):
    """RGB ``(n, 3, S, S)`` -> ``(y, cbcr)``: ``(n, S, S)`` and ``(2, n, S/2, S/2)`` (Cb, Cr), as libjpeg's
    encoder converts (integer formulas) and downsamples 4:2:0 (biased 2x2 means); ``rounding=False``:
    the float formulas and plain means."""
    y, cb, cr = rgb_to_ycbcr(rgb[:, 0], rgb[:, 1], rgb[:, 2], exact=rounding)
    return y, downsample_h2v2(torch.stack([cb, cr]), exact=rounding)


def forward_dct(plane: torch.Tensor, *, integer: bool = True) -> torch.Tensor:
    """Block DCT of a plane ``(n, 8*bh, 8*bw)``: ``(n, 64, bh, bw)``. ``integer``: libjpeg's islow
    FDCT divided by 8 (float64, exact: quantizing it reproduces libjpeg's coefficients for the same
    pixels); else the float orthonormal DCT (differentiable)."""
    if integer:
        return islow_fdct(plane) / 8.0
    return dct_blocks(plane)


def reencode(db: DeviceBatch, *, quality: int = 100, tables=None, exact_resize: bool = False,
             integer_dct: bool = True, dtype=torch.float32):
    """The whole augmentation: quantized 4:2:0 coefficients of each sample's fresh crop, float32
    ``(y, cb, cr)`` ``[n, 64, S/8, S/8]``, ``[n, 64, S/16, S/16]`` twice (integer values, natural
    order; what a crops store would hold for that box, flip and quality), on the device.

    ``quality``: the IJG tables the crops are quantized with (default 100), or ``tables``
    ``(luma, chroma)`` (64 steps each) given directly. ``integer_dct``: libjpeg's integer FDCT
    (see :func:`forward_dct`); ``exact_resize``: see :func:`resize_crops`; ``dtype``: of the
    arithmetic up to the DCT (float64 for a reference).
    """
    luma, chroma = ijg_tables(quality) if tables is None else tables
    rgb = decode_crops(db, exact_resize=exact_resize, channels_last=False, dtype=dtype)
    y, cbcr = to_ycbcr420(rgb)
    out = []
    for plane, table in ((y, luma), (cbcr, chroma)):
        coefs = forward_dct(plane, integer=integer_dct)
        table = np.asarray(table, dtype=np.float64)
        out.append(quantize(coefs, cached_constant(("quant", table.tobytes()), table, coefs)).float())
    out = [out[0], out[1][0], out[1][1]]
    return tuple(out)
