# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""jdct_cli._decoder: the binding of jdct's C layer over libjpeg-turbo (csrc/, declared in
jdct_c.pxd); the contract is documented in jdct_cli/_decoder.pyi.

This layer only converts: Python buffers to C pointers, C results to numpy arrays and dicts, and
the C layer's failure codes to :mod:`jdct_cli.errors` exceptions, whose wording lives here (the
budget refusals) or is libjpeg's own (the Python JPEG layer, jdct_cli/jpeg.py, turns libjpeg's
words into sentences for users). Every C call that decodes or encodes releases the GIL; every
libjpeg object is released by jd_dec_close / jd_enc_close in a ``finally``.
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t

from jdct_c cimport *
from jpeglib cimport *

from jdct_cli.errors import ImageTooLargeError, JpegError

cnp.import_array()

#: Images whose header declares more pixels (width * height) are refused before any allocation.
DEFAULT_MAX_PIXELS = JD_DEFAULT_MAX_PIXELS
#: Coefficient guard: more than ``4 * max_pixels + COEF_SLACK`` coefficients is refused.
COEF_SLACK = JD_COEF_SLACK
#: Progressive scan budget: at most ``scan_limit(blocks)`` scans, i.e.
#: ``min(MAX_SCANS, max(MIN_SCAN_LIMIT, SCAN_BLOCK_BUDGET // blocks))``.
SCAN_BLOCK_BUDGET = JD_SCAN_BLOCK_BUDGET
MIN_SCAN_LIMIT = JD_MIN_SCAN_LIMIT
MAX_SCANS = JD_MAX_SCANS

_COLOR_SPACES = {JCS_UNKNOWN: "UNKNOWN", JCS_GRAYSCALE: "GRAYSCALE", JCS_RGB: "RGB",
                 JCS_YCbCr: "YCbCr", JCS_CMYK: "CMYK", JCS_YCCK: "YCCK"}

_SUBSAMPLING = {"4:2:0": (2, 2), "4:2:2": (2, 1), "4:4:4": (1, 1), "4:4:0": (1, 2)}


def libjpeg_version():
    """libjpeg-turbo's version as compiled against, e.g. "2.1.5 (libjpeg API 62)"."""
    return jd_version().decode("ascii")


def scan_limit(int64_t blocks):
    """The most scans a progressive image of ``blocks`` 8x8 blocks (all components) may carry."""
    return jd_scan_limit(blocks)


# ------------------------------------------------------------------------------------- errors


cdef str _libjpeg_message(jd_err *e):
    return (<bytes>e.msg).decode("latin-1") if e.msg[0] != 0 else "libjpeg failed without a message"


cdef object _libjpeg_error(jd_err *e):
    """JpegError whose reason is libjpeg's message (also kept in ``libjpeg_message``)."""
    err = JpegError(_libjpeg_message(e))
    err.libjpeg_message = err.reason
    return err


cdef object _too_many_pixels(jd_dec *c, int64_t pixels, int64_t max_pixels, str libjpeg):
    reason = (f"image declares {c.d.image_width}x{c.d.image_height} = {pixels} pixels, more than the "
              f"budget of {max_pixels}")
    if libjpeg is not None:
        reason += f" (libjpeg: {libjpeg})"
    return ImageTooLargeError(reason, pixels=pixels, max_pixels=max_pixels)


cdef object _failure(jd_dec *c, const jd_budget *b, int64_t max_pixels):
    """The exception for a failed jd_dec_* call (``c.e.code`` says which failure)."""
    cdef int code = c.e.code
    if code == JD_ERR_TOO_MANY_PIXELS:
        return _too_many_pixels(c, b.pixels, max_pixels, None)
    if code == JD_ERR_TOO_MANY_COEFS:
        return ImageTooLargeError(
            f"image would need {b.coefs} DCT coefficients ({c.d.num_components} components), more than "
            f"the budget allows for {max_pixels} pixels", pixels=b.pixels, max_pixels=max_pixels)
    if code == JD_ERR_TOO_MANY_SCANS:
        # counted from the markers before decoding, or met by the progress monitor while decoding
        scans = max(b.scans, c.d.input_scan_number)
        return JpegError(
            f"too many scans in a progressive JPEG for its size: {scans} scans over {b.blocks} blocks "
            f"(at most {c.scan_limit} allowed: decoding cost grows with scans x blocks)")
    if code == JD_ERR_NO_MEMORY:
        return JpegError("out of memory for a scanline buffer")
    if code == JD_ERR_NO_SCANLINES:
        return JpegError("libjpeg returned no scanlines")
    return _libjpeg_error(&c.e)


cdef object _header_failure(jd_dec *c, int64_t max_pixels):
    """The exception for a failed header read: the pixel budget wins when the SOF was parsed and
    declares too many pixels (libjpeg refuses > 65500 itself, but the budget is the real reason)."""
    cdef int64_t pixels = <int64_t>c.d.image_width * <int64_t>c.d.image_height
    if pixels > max_pixels:
        return _too_many_pixels(c, pixels, max_pixels, _libjpeg_message(&c.e))
    return _libjpeg_error(&c.e)


cdef int _open(jd_dec *c, const unsigned char *p, size_t n, bint strict, bint save_exif,
               int64_t max_pixels, bint count_scans, jd_budget *budget) except -1:
    """Open the decompressor and apply the budgets (the scan count only when ``count_scans``);
    raises on failure. The caller closes ``c`` in every case."""
    cdef int rc
    with nogil:
        rc = jd_dec_open(c, p, n, strict, save_exif)
    if rc != 0:
        raise _header_failure(c, max_pixels)
    with nogil:
        rc = jd_dec_check_budget(c, max_pixels, p if count_scans else NULL, n, budget)
    if rc != 0:
        raise _failure(c, budget, max_pixels)
    return 0


cdef const unsigned char *_ptr(const unsigned char[::1] buf) noexcept:
    return &buf[0] if buf.shape[0] > 0 else NULL


# ------------------------------------------------------------------------------------ markers


def marker_segments(data, *, bint through_scans=False):
    """The marker segments of a JPEG as jdct's one marker walker (csrc/jd_markers.c) finds them.

    Returns a list of ``(marker, offset, length)``: the byte after 0xFF (0xC0 SOF0, 0xDB DQT, 0xDA
    SOS, 0xD9 EOI...), the payload's offset (after the 2-byte length) and its length in bytes (cut
    at the end of ``data``), from SOI up to the first SOS, or with ``through_scans`` on through
    every scan to EOI. Stops where the structure is too broken to follow; never raises on bad data.
    """
    cdef const unsigned char[::1] buf = data
    cdef jd_walker w
    cdef jd_segment seg
    out = []
    jd_walker_init(&w, _ptr(buf), buf.shape[0], through_scans)
    while jd_walker_next(&w, &seg):
        out.append((seg.marker, seg.offset, seg.length))
    return out


def scan_count(data):
    """SOS segments (scans) from SOI to EOI, found by the marker walker: the most scans libjpeg
    can read from ``data``."""
    cdef const unsigned char[::1] buf = data
    cdef const unsigned char *p = _ptr(buf)
    cdef int64_t n
    with nogil:
        n = jd_count_scans(p, buf.shape[0])
    return n


# ------------------------------------------------------------------------------------ reading


def read_header(data, *, int64_t max_pixels=DEFAULT_MAX_PIXELS):
    """Parse the markers up to the first SOS (see the .pyi); allocates nothing proportional to the image.

    Returns a dict: width, height (pixels), precision (bits), num_components, color_space (str),
    adobe_transform (int or None), jfif, progressive, arithmetic (bool), restart_interval (MCUs),
    components (list of dicts id/h/v/quant_table/blocks_high/blocks_wide), exif (bytes or None).
    """
    cdef const unsigned char[::1] buf = data
    cdef jd_dec c
    cdef jd_budget budget
    cdef int ci
    cdef JDIMENSION rows, cols
    cdef jpeg_saved_marker_ptr m
    cdef jpeg_component_info *comp
    try:
        # facts only: the scan budget is a decoding matter
        _open(&c, _ptr(buf), buf.shape[0], False, True, max_pixels, False, &budget)
        components = []
        for ci in range(c.d.num_components):
            comp = &c.d.comp_info[ci]
            jd_dec_blocks(&c, ci, &rows, &cols)
            components.append({
                "id": comp.component_id, "h": comp.h_samp_factor, "v": comp.v_samp_factor,
                "quant_table": comp.quant_tbl_no, "blocks_high": rows, "blocks_wide": cols,
            })
        exif = None
        m = c.d.marker_list
        while m != NULL:
            if m.marker == JPEG_APP0 + 1 and m.data_length >= 6 and \
                    (<bytes>m.data[:6]) == b"Exif\x00\x00" and exif is None:
                exif = <bytes>m.data[6:m.data_length]
            m = m.next
        return {
            "width": c.d.image_width,
            "height": c.d.image_height,
            "precision": c.d.data_precision,
            "num_components": c.d.num_components,
            "color_space": _COLOR_SPACES.get(c.d.jpeg_color_space, "UNKNOWN"),
            "adobe_transform": int(c.d.Adobe_transform) if c.d.saw_Adobe_marker else None,
            "jfif": bool(c.d.saw_JFIF_marker),
            "progressive": bool(c.d.progressive_mode),
            "arithmetic": bool(c.d.arith_code),
            "restart_interval": c.d.restart_interval,
            "components": components,
            "exif": exif,
        }
    finally:
        jd_dec_close(&c)


def read_coefficients(data, *, int64_t max_pixels=DEFAULT_MAX_PIXELS, bint strict=False):
    """Quantized DCT coefficients of every component, without an inverse DCT.

    Returns ``(components, quant, warnings)``: ``components[i]`` int16 ``(bh, bw, 64)`` natural
    order (padded to whole MCUs); ``quant`` uint16 ``(n_components, 64)`` natural order (the table
    each component was quantized with); ``warnings`` the number of libjpeg warnings.
    """
    cdef const unsigned char[::1] buf = data
    cdef jd_dec c
    cdef jd_budget budget
    cdef int rc, ci, k, nc
    cdef JDIMENSION bh, bw
    cdef cnp.ndarray arr
    cdef uint16_t[:, ::1] qv
    cdef const JQUANT_TBL *tbl
    try:
        _open(&c, _ptr(buf), buf.shape[0], strict, False, max_pixels, True, &budget)
        with nogil:
            rc = jd_dec_read_coefficients(&c)
        if rc != 0:
            raise _failure(&c, &budget, max_pixels)
        nc = c.d.num_components
        components = []
        for ci in range(nc):
            jd_dec_blocks(&c, ci, &bh, &bw)
            arr = np.empty((bh, bw, 64), dtype=np.int16)
            with nogil:
                rc = jd_dec_copy_component(&c, ci, <JCOEF *>cnp.PyArray_DATA(arr), bh, bw)
            if rc != 0:
                raise _failure(&c, &budget, max_pixels)
            components.append(arr)
        quant = np.zeros((nc, 64), dtype=np.uint16)
        qv = quant
        for ci in range(nc):
            tbl = jd_dec_quant_table(&c, ci)
            if tbl != NULL:
                for k in range(64):
                    qv[ci, k] = tbl.quantval[k]
        return components, quant, c.e.warnings
    finally:
        jd_dec_close(&c)


def decode(data, *, int scale=1, roi=None, int64_t max_pixels=DEFAULT_MAX_PIXELS, bint strict=False,
           int scale_num=1):
    """Decode to RGB with libjpeg's islow IDCT and fancy upsampling (see the .pyi).

    Scaling ``scale_num/scale``: 1/1, 1/2, 1/4, 1/8, or M/8 for M in 1..16 (output
    ``ceil(W*M/8) x ceil(H*M/8)``); ``roi`` ``(x, y, w, h)`` in output pixels. Returns
    ``(rgb, warnings)``: ``rgb`` uint8 C-contiguous ``(H, W, 3)``.
    """
    cdef const unsigned char[::1] buf = data
    cdef jd_dec c
    cdef jd_budget budget
    cdef int rc, cmyk = 0
    cdef JDIMENSION rx, ry, rw, rh, xoff, cropw
    cdef cnp.ndarray out
    cdef int eighths  # the scaling as M/8, which is what libjpeg-turbo implements
    if scale_num == 1:
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"scale must be 1, 2, 4 or 8, not {scale}")
        eighths = 8 // scale
    else:
        if scale != 8 or not 1 <= scale_num <= 16:
            raise ValueError(f"scaling {scale_num}/{scale} is not M/8 with M in 1..16")
        eighths = scale_num
    try:
        _open(&c, _ptr(buf), buf.shape[0], strict, False, max_pixels, True, &budget)
        if c.d.jpeg_color_space == JCS_CMYK or c.d.jpeg_color_space == JCS_YCCK:
            c.d.out_color_space = JCS_CMYK
            cmyk = 1
        else:
            c.d.out_color_space = JCS_RGB
        c.d.dct_method = JDCT_ISLOW
        c.d.do_fancy_upsampling = 1
        c.d.scale_num = eighths
        c.d.scale_denom = 8
        with nogil:
            rc = jd_dec_start(&c)
        if rc != 0:
            raise _failure(&c, &budget, max_pixels)
        if roi is None:
            rx, ry, rw, rh = 0, 0, c.d.output_width, c.d.output_height
        else:
            x, y, w, h = (int(v) for v in roi)
            if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > c.d.output_width or y + h > c.d.output_height:
                raise ValueError(
                    f"roi {tuple(roi)} (x, y, width, height) is not inside the "
                    f"{c.d.output_width}x{c.d.output_height} output image")
            rx, ry, rw, rh = x, y, w, h
        out = np.empty((rh, rw, 3), dtype=np.uint8)
        xoff = 0
        # Sampling factors above 2 (4:1:1, 4:1:0) scale chroma by other IDCT sizes, where
        # libjpeg-turbo's cropped output differs from the full decode in a band of columns: those
        # rare files decode full width and we keep the region.
        if (rx != 0 or rw != c.d.output_width) and c.d.max_h_samp_factor <= 2 and c.d.max_v_samp_factor <= 2:
            # crop_scanline widens the span leftwards to an iMCU boundary, and fancy upsampling
            # replicates the edge chroma sample at both ends of the cropped span: ask for a margin
            # of one iMCU (at most 4*M output pixels at scaling M/8) each side so the region we keep
            # sees its real neighbours, then drop the extra columns.
            margin = 4 * eighths
            xoff = rx - min(<JDIMENSION>margin, rx)
            cropw = min(rx + rw + margin, c.d.output_width) - xoff
            with nogil:
                rc = jd_dec_crop(&c, &xoff, &cropw)
            if rc != 0:
                raise _failure(&c, &budget, max_pixels)
        with nogil:
            rc = 0
            if ry > 0:
                rc = jd_dec_skip(&c, ry)
            if rc == 0:
                rc = jd_dec_read_rgb(&c, <JSAMPLE *>cnp.PyArray_DATA(out), rw * 3, rh, rx - xoff, rw, cmyk)
        if rc != 0:
            raise _failure(&c, &budget, max_pixels)
        return out, c.e.warnings
    finally:
        jd_dec_close(&c)


# ------------------------------------------------------------------------------- pixel math


def encode(rgb, int quality=100, str subsampling="4:2:0"):
    """Baseline JPEG bytes of uint8 ``(H, W, 3)`` RGB with libjpeg-turbo (islow DCT,
    ``jpeg_set_quality(quality, TRUE)``, default Huffman tables). ``subsampling`` "4:2:0",
    "4:2:2", "4:4:4" or "4:4:0"."""
    if subsampling not in _SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {', '.join(_SUBSAMPLING)}, not {subsampling!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, not {quality}")
    arr = np.ascontiguousarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"encode needs a uint8 (H, W, 3) array, got {arr.dtype} {arr.shape}")
    cdef const uint8_t[:, :, ::1] px = arr
    cdef JDIMENSION h = px.shape[0], w = px.shape[1]
    cdef int h0 = _SUBSAMPLING[subsampling][0], v0 = _SUBSAMPLING[subsampling][1]
    cdef jd_enc s
    cdef int rc
    try:
        with nogil:
            rc = jd_encode(&s, &px[0, 0, 0], w, h, <size_t>w * 3, quality, h0, v0)
        if rc != 0:
            raise _libjpeg_error(&s.e)
        return (<char *>s.out)[:s.outsize]
    finally:
        jd_enc_close(&s)


cdef object _baseline_table(table, str name):
    """uint16 (64,) copy of ``table`` (64 ints in 1..255, natural order), else ValueError."""
    t = np.asarray(table)
    if t.shape != (64,) or t.dtype.kind not in "iu":
        raise ValueError(f"the {name} quantization table must be 64 integers (natural order), got "
                         f"{t.dtype} {t.shape}")
    if t.min() < 1 or t.max() > 255:
        raise ValueError(f"the {name} quantization table's entries must be in 1..255 (a baseline "
                         f"table), got {int(t.min())}..{int(t.max())}")
    return np.ascontiguousarray(t, dtype=np.uint16)


def forward_dct(rgb, luma, chroma):
    """The coefficients libjpeg-turbo's 4:2:0 encoder stores for ``rgb`` quantized with the
    tables ``luma`` and ``chroma``, without entropy coding.

    ``rgb`` uint8 ``(H, W, 3)``, H and W multiples of 16; ``luma``, ``chroma``: 64 ints in 1..255,
    natural order (``jdct_cli.jpegmath.quant.ijg_tables(quality)`` for libjpeg's tables at a
    quality). Returns ``(y, cb, cr, quant)``: int16 ``(H/8, W/8, 64)``, ``(H/16, W/16, 64)``,
    ``(H/16, W/16, 64)`` in natural order and uint16 ``(3, 64)`` (luma, chroma, chroma);
    bit-identical to ``read_coefficients(encode(rgb, quality, "4:2:0"))`` for IJG tables.
    """
    arr = np.ascontiguousarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] % 16 or arr.shape[1] % 16 \
            or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"forward_dct needs a uint8 (H, W, 3) array with H and W positive multiples of 16, "
                         f"got {arr.dtype} {arr.shape}")
    c = _baseline_table(chroma, "chroma")
    quant = np.stack([_baseline_table(luma, "luma"), c, c])
    cdef const uint8_t[:, :, ::1] px = arr
    cdef int H = px.shape[0], W = px.shape[1], rc
    cdef const uint16_t[:, ::1] q = quant
    y = np.empty((H // 8, W // 8, 64), dtype=np.int16)
    cb = np.empty((H // 16, W // 16, 64), dtype=np.int16)
    cr = np.empty((H // 16, W // 16, 64), dtype=np.int16)
    cdef int16_t[:, :, ::1] yv = y, cbv = cb, crv = cr
    with nogil:
        rc = jd_forward_dct(&px[0, 0, 0], H, W, &q[0, 0], &q[1, 0], &yv[0, 0, 0], &cbv[0, 0, 0], &crv[0, 0, 0])
    if rc != 0:
        raise MemoryError("forward_dct: no memory for a 16-row scratch strip")
    return y, cb, cr, quant


def resize_bilinear(rgb, box, int width, int height):
    """Antialiased bilinear resize of ``box`` ``(x0, y0, x1, y1)`` (float source pixels, within
    the image) of uint8 ``(H, W, 3)`` ``rgb`` to uint8 ``(height, width, 3)``, bit-identical to
    Pillow's ``Image.resize((width, height), BILINEAR, box=box, reducing_gap=None)`` (whose
    fixed-point arithmetic it follows). Releases the GIL.
    """
    arr = np.ascontiguousarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"resize_bilinear needs a uint8 (H, W, 3) array, got {arr.dtype} {arr.shape}")
    if width < 1 or height < 1 or width > 65535 or height > 65535:
        raise ValueError(f"output size {width}x{height} must be 1..65535 on each side")
    cdef float x0, y0, x1, y1
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= arr.shape[1] and 0 <= y0 < y1 <= arr.shape[0]):
        raise ValueError(f"box {tuple(box)} (x0, y0, x1, y1) is not a non-empty region of the "
                         f"{arr.shape[1]}x{arr.shape[0]} image")
    cdef const uint8_t[:, :, ::1] px = arr
    out = np.empty((height, width, 3), dtype=np.uint8)
    cdef uint8_t[:, :, ::1] o = out
    cdef int rc, sw = px.shape[1], sh = px.shape[0]
    with nogil:
        rc = jd_resize_bilinear(&px[0, 0, 0], sw, sh, x0, y0, x1, y1, &o[0, 0, 0], width, height)
    if rc != 0:
        raise MemoryError("resize_bilinear: no memory for the filter weights or a row buffer")
    return out
