"""The conversion transforms: which source rectangle becomes a sample, and how it is decoded.

Geometry is in *source pixels* (of the image as stored, or as displayed when EXIF orientation is
applied). A box is ``(x, y, width, height)``, floats allowed.

- train: :func:`random_resized_crop_box` follows torchvision's ``RandomResizedCrop.get_params``
  (scale 0.08-1, log-uniform aspect ratio 3/4-4/3, 10 attempts, then a centre crop clamped to the
  ratio bounds), with every draw from a numpy ``Generator`` seeded per image.
- val: :func:`center_crop_box` is torchvision's ``Resize(round(S/0.875))`` + ``CenterCrop(S)``
  expressed as the source rectangle those two steps keep.

:func:`crop_to_rgb` then decodes only what the box needs: libjpeg DCT scaling by the smallest
M/8 (M in 1-6, else 8/8, see :func:`dct_eighths_for`) that keeps the scaled box at least ``size``
pixels on both sides, and a region-of-interest decode of the box's rows and columns (plus the
resampling filter's support), followed by an antialiased **bilinear** resize (torchvision's
default filter for RandomResizedCrop and Resize; Pillow's arithmetic, see :func:`resize_box`) of
exactly the box to ``size x size``.

:func:`convert_image` is the one sample recipe: one JPEG + a :class:`SampleRecipe` + the image's
generator (:func:`image_rng`) -> the quantized 4:2:0 coefficients of its train or val crop. ``jdct
convert`` stores what it returns and ``jdct predict`` feeds it to a network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _decoder, jpeg
from .errors import JpegError
from .jpegmath.blockdct import coefficient_indices
from .jpegmath.chroma import component_plans
from .jpegmath.sample import crop_coefficients

SCALE_RANGE = (0.08, 1.0)
RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
VAL_CROP_FRACTION = 0.875
RESIZE_FILTER = "bilinear"
#: Half-width of the resize filter in output samples (bilinear: 1; Pillow's ``support``).
RESIZE_SUPPORT = 1.0


def random_resized_crop_box(rng: np.random.Generator, width: int, height: int,
                            scale=SCALE_RANGE, ratio=RATIO_RANGE) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: an integer box ``(x, y, w, h)`` of a ``width x height`` image.

    Draw order per attempt: area fraction (uniform), log aspect ratio (uniform), then the top and
    left offsets (integers) once a box fits. The RNG is consumed identically on every platform.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y = int(rng.integers(0, height - h + 1))
            x = int(rng.integers(0, width - w + 1))
            return x, y, w, h
    # Fallback: the whole image, clamped to the ratio bounds, centred (torchvision's behaviour).
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def val_resize_size(size: int) -> int:
    """Shorter side before the centre crop: round(size / 0.875) (256 for 224)."""
    return int(round(size / VAL_CROP_FRACTION))


def center_crop_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """The source box kept by torchvision's ``Resize(val_resize_size(size))`` then ``CenterCrop(size)``.

    Resize: shorter side -> r, longer side -> int(r * long / short) (torchvision truncates).
    CenterCrop: offsets int(round((resized - size) / 2)). Returned as floats in source pixels.
    """
    r = val_resize_size(size)
    if width <= height:
        rw, rh = r, int(r * height / width)
    else:
        rw, rh = int(r * width / height), r
    left = int(round((rw - size) / 2.0))
    top = int(round((rh - size) / 2.0))
    sx, sy = width / rw, height / rh
    return left * sx, top * sy, size * sx, size * sy


#: DCT scalings M/8 used when decoding a crop. 7/8 is left out on purpose: libjpeg-turbo has SIMD
#: inverse DCTs for 8x8, 4x4 and 2x2 only, and at 7/8 its plain-C 7x7 IDCT (14x14 for 4:2:0
#: chroma) costs more than the 1.3x fewer pixels save in the resize (measured on
#: imagenet-originals: +0.16 ms per such crop), while 5/8 and 6/8 save 0.16-0.4 ms.
DCT_EIGHTHS = (1, 2, 3, 4, 5, 6)
#: The val transform keeps to 1/8, 1/4, 1/2 (crops >= 2x the output), as before: its typical
#: 1.46x downscale would otherwise be DCT-scaled for most images (194 of the 333
#: imagenet-originals, 41 dB median / 30 dB worst vs the exact decode, the DCT-truncation filter
#: being sharper than the bilinear one) where it now matches torchvision's Resize+CenterCrop
#: reference exactly for all but the 22 crops >= 2x. Val is a small share of the work.
DCT_EIGHTHS_VAL = (1, 2, 4)


def dct_eighths_for(box_w: float, box_h: float, size: int, allowed=DCT_EIGHTHS) -> int:
    """libjpeg DCT scaling M/8 for a ``box_w x box_h`` crop resized to ``size``: the smallest M in
    ``allowed`` keeping the scaled box >= size on both sides, else 8 (no scaling)."""
    for m in allowed:
        if box_w * m / 8 >= size and box_h * m / 8 >= size:
            return m
    return 8


def _decode(data: bytes, **kwargs):
    return jpeg.decode(data, tolerate=jpeg.HARMLESS_WARNINGS, **kwargs)


def decode_window(width: int, height: int, box, size: int, scale: int,
                  support: float = RESIZE_SUPPORT) -> tuple[int, int, int, int]:
    """The pixels ``(x0, y0, x1, y1)`` (of the image decoded at ``scale``/8) that resizing ``box``
    (source pixels ``(x, y, w, h)``) to ``size`` reads: the box scaled, plus the resampling filter's
    support (``support`` output samples, i.e. ``support * max(box/size, 1)`` pixels) and one pixel on
    each side, clipped to the image. Pixels of a region-of-interest decode equal those of a full
    decode except at the region's edges, which this margin keeps away from the box."""
    bx, by, bw, bh = box
    f = scale / 8  # output pixels per source pixel (exact in binary)
    sw, sh = -(-width * scale // 8), -(-height * scale // 8)
    margin = int(math.ceil(support * max(bw * f / size, bh * f / size, 1.0))) + 1
    return (max(0, int(math.floor(bx * f)) - margin), max(0, int(math.floor(by * f)) - margin),
            min(sw, int(math.ceil((bx + bw) * f)) + margin), min(sh, int(math.ceil((by + bh) * f)) + margin))


def decode_region(data: bytes, width: int, height: int, box, size: int, *, exact: bool = False,
                  max_pixels: Optional[int] = None, path=None, scalings=DCT_EIGHTHS):
    """Decode the part of a JPEG that ``box`` (source pixels, stored orientation) needs.

    Returns ``(rgb, local_box)``: uint8 ``(h, w, 3)`` pixels and the box in those pixels' coordinates
    (floats), ready for :func:`resize_box`. ``exact`` decodes the full image at full scale;
    ``scalings``: the DCT scalings M/8 allowed (:data:`DCT_EIGHTHS`, or :data:`DCT_EIGHTHS_VAL`).
    Raises JpegError (libjpeg's message, naming ``path``) on corrupt or truncated data.
    """
    kwargs = {"strict": True, "path": path}
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    bx, by, bw, bh = box
    if exact:
        rgb, _ = _decode(data, **kwargs)
        return rgb, (bx, by, bx + bw, by + bh)
    m = dct_eighths_for(bw, bh, size, scalings)
    f = m / 8  # output pixels per source pixel (exact in binary)
    sw, sh = -(-width * m // 8), -(-height * m // 8)
    x0, y0, x1, y1 = decode_window(width, height, box, size, m)
    if (x0, y0, x1, y1) == (0, 0, sw, sh):
        rgb, _ = _decode(data, scale=8, scale_num=m, **kwargs)
    else:
        rgb, _ = _decode(data, scale=8, scale_num=m, roi=(x0, y0, x1 - x0, y1 - y0), **kwargs)
    local = (bx * f - x0, by * f - y0, (bx + bw) * f - x0, (by + bh) * f - y0)
    return rgb, local


def resize_box(rgb: np.ndarray, local_box, size: int) -> np.ndarray:
    """Antialiased bilinear resize of ``local_box`` (x0, y0, x1, y1) of ``rgb`` to uint8 ``(size, size, 3)``.

    ``_decoder.resize_bilinear``: bit-identical to Pillow 13's ``Image.resize(BILINEAR, box=...,
    reducing_gap=None)`` without the numpy<->PIL copies (RGB<->RGBX) and with a vectorized
    vertical pass.
    """
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = local_box
    box = (min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h))
    return _decoder.resize_bilinear(rgb, box, size, size)


def crop_to_rgb(data: bytes, width: int, height: int, box, size: int, *, exact: bool = False,
                orientation: int = 1, max_pixels: Optional[int] = None, path=None,
                scalings=DCT_EIGHTHS) -> np.ndarray:
    """The uint8 ``(size, size, 3)`` RGB crop of ``box`` from the JPEG ``data``.

    ``width``/``height`` are the stored (un-oriented) dimensions. With ``orientation`` != 1 the box
    is in displayed coordinates: the image is decoded whole (DCT scaling still applies), turned
    upright, then cropped. ``scalings``: the DCT scalings M/8 allowed (see :func:`decode_region`).
    """
    if orientation in (None, 0, 1):
        rgb, local = decode_region(data, width, height, box, size, exact=exact, max_pixels=max_pixels, path=path,
                                   scalings=scalings)
        return resize_box(rgb, local, size)
    bx, by, bw, bh = box
    m = 8 if exact else dct_eighths_for(bw, bh, size, scalings)
    f = m / 8
    kwargs = {"strict": True, "path": path}
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    rgb, _ = _decode(data, scale=8, scale_num=m, **kwargs)
    rgb = jpeg.apply_orientation(rgb, orientation)
    return resize_box(rgb, (bx * f, by * f, (bx + bw) * f, (by + bh) * f), size)


def oriented_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """Displayed ``(width, height)`` after EXIF ``orientation`` (5-8 swap the axes)."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)



# ------------------------------------------------------------------------------------------------
# Crop geometry for decoding on the device (the images layout)
# ------------------------------------------------------------------------------------------------

#: Pixels (at the decoding scale) kept beyond the resize window on each side for libjpeg's fancy
#: chroma upsampling, which reads one chroma sample (two pixels) past each output pixel.
UPSAMPLING_CONTEXT = 2


@dataclass(frozen=True)
class CropGeometry:
    """What of a JPEG one crop needs, and where the crop lies in it: the contract between the CPU
    side of the images layout (entropy decoding of a block rectangle) and the device side
    (:mod:`jdct_cli.jpegmath.augment`), computed by :func:`crop_geometry`.

    Units: *source* pixels are the stored image's (no EXIF orientation); *scaled* pixels are those of
    the image decoded at ``scale``/8 (libjpeg DCT scaling, ``ceil(width*scale/8)`` wide); an MCU is
    ``8*max_h x 8*max_v`` source pixels (``max_h x max_v`` blocks of the full-resolution components).

    - ``width``, ``height``: the image, source pixels; ``factors``: ``(h, v)`` sampling factors per
      component (1 or 3 components), as the header gives them; ``size``: the crop side S.
    - ``scale``: M, the decoding scale M/8 (the rule of :func:`crop_to_rgb`, :func:`dct_eighths_for`).
    - ``mcu_rows``, ``mcu_cols``: the MCU rectangle ``[row0, row1) x [col0, col1)`` whose blocks are
      decoded; component ``c`` contributes blocks :meth:`blocks` ``(c)``. Entropy decoding must run
      through MCU row ``row1 - 1`` and can stop there.
    - ``box``: ``(x0, y0, x1, y1)`` float, the crop box in scaled pixels relative to the rectangle's
      top-left pixel (``origin``).
    - ``frame``: ``(x0, y0, x1, y1)`` int, scaled pixels relative to the same origin: the array the
      crops layout's CPU recipe (:func:`crop_to_rgb`) hands to the resize. Pillow's filter is clipped
      to it, rounds the box as float32 in its coordinates and picks its pass order from its size,
      so reproducing the recipe bit for bit needs it. It may reach beyond the rectangle (an exact
      decode's frame is the whole image), but the box plus the filter's support never does.
    """

    width: int
    height: int
    factors: tuple[tuple[int, int], ...]
    size: int
    scale: int
    mcu_rows: tuple[int, int]
    mcu_cols: tuple[int, int]
    box: tuple[float, float, float, float]
    frame: tuple[int, int, int, int]

    @property
    def mcu_blocks(self) -> tuple[int, int]:
        """``(max_h, max_v)``: blocks of a full-resolution component per MCU, across and down."""
        return max(h for h, _ in self.factors), max(v for _, v in self.factors)

    @property
    def origin(self) -> tuple[int, int]:
        """The rectangle's top-left pixel ``(x, y)`` in scaled pixels of the whole image."""
        mh, mv = self.mcu_blocks
        return self.mcu_cols[0] * mh * self.scale, self.mcu_rows[0] * mv * self.scale

    @property
    def scaled_size(self) -> tuple[int, int]:
        """``(width, height)`` of the whole image decoded at ``scale``/8, scaled pixels."""
        return -(-self.width * self.scale // 8), -(-self.height * self.scale // 8)

    def plans(self):
        """libjpeg's IDCT size and upsampling of each component at this scale
        (:func:`jdct_cli.jpegmath.chroma.component_plans`)."""
        return component_plans(self.scale, self.factors, self.width)

    def blocks(self, component: int) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)``: the block rectangle of ``component`` (in its own blocks,
        ``[row0, row1) x [col0, col1)``) that the MCU rectangle covers."""
        h, v = self.factors[component]
        return self.mcu_rows[0] * v, self.mcu_rows[1] * v, self.mcu_cols[0] * h, self.mcu_cols[1] * h

    def coefficient_indices(self, component: int) -> np.ndarray:
        """int64 ``(K,)`` natural-order indices of the coefficients of ``component`` the device reads
        (libjpeg's scaled IDCT of this component's size reads no others,
        :func:`jdct_cli.jpegmath.blockdct.coefficient_indices`)."""
        return coefficient_indices(self.plans()[component].idct_size)


def crop_geometry(width: int, height: int, factors, box, size: int, *, scalings=DCT_EIGHTHS,
                  support: float = RESIZE_SUPPORT, exact: bool = False) -> CropGeometry:
    """The :class:`CropGeometry` of the crop ``box`` (source pixels ``(x, y, w, h)``, stored
    orientation) of a ``width x height`` JPEG with sampling ``factors`` (``(h, v)`` per component),
    resized to ``size``; the CPU side of the images layout calls this for every sample.

    The decoding scale is the crops layout's (:func:`dct_eighths_for` over ``scalings``, 8 with
    ``exact``), and so are the pixels the resize reads (:func:`decode_window`, with the filter's
    ``support``); the block rectangle is the MCUs covering them plus :data:`UPSAMPLING_CONTEXT`
    pixels, clipped to the image. EXIF orientation is not applied here: a layout that applies it
    stores its images upright. ValueError for sampling factors libjpeg cannot decode (or not 1 or
    3 components: CMYK and YCCK files are re-encoded at conversion).
    """
    bx, by, bw, bh = (float(v) for v in box)
    factors = tuple((int(h), int(v)) for h, v in factors)
    if len(factors) not in (1, 3) or any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in factors):
        raise ValueError(f"sampling factors {factors}: 1 or 3 components with factors 1..4 expected")
    m = 8 if exact else dct_eighths_for(bw, bh, size, scalings)
    component_plans(m, factors, width)  # ValueError for what libjpeg refuses
    window = decode_window(width, height, (bx, by, bw, bh), size, m, support)
    max_h, max_v = max(h for h, _ in factors), max(v for _, v in factors)
    mw, mh = max_h * m, max_v * m  # an MCU in scaled pixels
    mcus_x, mcus_y = -(-width // (8 * max_h)), -(-height // (8 * max_v))
    ctx = UPSAMPLING_CONTEXT
    col0, row0 = max(0, (window[0] - ctx) // mw), max(0, (window[1] - ctx) // mh)
    col1, row1 = min(mcus_x, -(-(window[2] + ctx) // mw)), min(mcus_y, -(-(window[3] + ctx) // mh))
    ox, oy = col0 * mw, row0 * mh
    f = m / 8
    local = (bx * f - ox, by * f - oy, (bx + bw) * f - ox, (by + bh) * f - oy)
    if exact:
        sw, sh = -(-width * m // 8), -(-height * m // 8)
        frame = (-ox, -oy, sw - ox, sh - oy)
    else:
        frame = (window[0] - ox, window[1] - oy, window[2] - ox, window[3] - oy)
    return CropGeometry(width=int(width), height=int(height), factors=factors, size=int(size), scale=m,
                        mcu_rows=(row0, row1), mcu_cols=(col0, col1), box=local, frame=frame)


# ------------------------------------------------------------------------------------------------
# The sample recipe
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleRecipe:
    """What makes a sample of an image: crop side ``size`` (pixels, a multiple of 16), JPEG
    ``quality`` of the coefficients (1-100), ``exif`` ("ignore" | "apply"), ``exact_decode`` (full
    decode at full scale: no ROI, no DCT scaling), the pixel budget ``max_pixels``, and ``fdct``
    (how the crop becomes coefficients, see :data:`jdct_cli.jpegmath.sample.FDCT_METHODS`)."""

    size: int = 224
    quality: int = 100
    exif: str = "ignore"
    exact_decode: bool = False
    max_pixels: int = jpeg.DEFAULT_MAX_PIXELS
    fdct: str = "fdct"


def image_rng(seed: int, split_id: int, view: int, image_index: int) -> np.random.Generator:
    """The generator of every random draw made for one image in one view of a split."""
    return np.random.default_rng([seed, split_id, view, image_index])


def sample_box(rng: np.random.Generator, train: bool, width: int, height: int, size: int):
    """Crop box ``(x, y, w, h)`` (source pixels) of a train (random) or val (centre) sample."""
    if train:
        return random_resized_crop_box(rng, width, height)
    return center_crop_box(width, height, size)


def convert_image(data: bytes, path, *, train: bool, rng: np.random.Generator, opts: SampleRecipe):
    """One JPEG to one sample: ``(y, cb, cr, box)``, int16 ``(64, S/8, S/8)``, ``(64, S/16, S/16)``
    twice (quantized 4:2:0 coefficients at ``opts.quality``, natural order) and the crop box
    ``(x, y, w, h)`` in source pixels (upright ones with ``exif="apply"``).

    ``train``: RandomResizedCrop drawn from ``rng`` (DCT scalings :data:`DCT_EIGHTHS`), else the
    val Resize+CenterCrop (:data:`DCT_EIGHTHS_VAL`). ``opts``: any object with the fields of
    :class:`SampleRecipe` (``jdct_cli.convert.ConvertOptions`` is one). Raises JpegError
    subclasses naming ``path`` for data it cannot use.
    """
    header = jpeg.read_header(data, path=path, max_pixels=opts.max_pixels)
    width, height = header["width"], header["height"]
    orientation = 1
    if opts.exif == "apply":
        orientation = jpeg.exif_orientation(header.get("exif")) or 1
    ow, oh = oriented_size(width, height, orientation)
    box = sample_box(rng, train, ow, oh, opts.size)
    rgb = crop_to_rgb(data, width, height, box, opts.size, exact=opts.exact_decode, orientation=orientation,
                      max_pixels=opts.max_pixels, path=path, scalings=DCT_EIGHTHS if train else DCT_EIGHTHS_VAL)
    y, cb, cr, _ = crop_coefficients(rgb, opts.quality, opts.fdct)
    return y, cb, cr, box
