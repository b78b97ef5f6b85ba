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
from cpython.mem cimport PyMem_Free, PyMem_Malloc
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


cdef object _libjpeg_error(jd_err *e):
    """JpegError whose reason is libjpeg's message (also kept in ``libjpeg_message``); ValueError
    for a request the C layer refused (JD_ERR_BAD_REQUEST)."""
    if e.code == JD_ERR_BAD_REQUEST:
        return ValueError(_message(e.msg))
    err = JpegError(_message(e.msg))
    err.libjpeg_message = err.reason
    return err


cdef object _failure_of(const jd_failure *f, int64_t max_pixels):
    """The exception for a failed C call, from its failure record (``f.code`` says which)."""
    cdef int code = f.code
    cdef int64_t pixels = <int64_t>f.width * <int64_t>f.height
    cdef const jd_budget *b = &f.budget
    size = f"{f.width}x{f.height}"
    if code == JD_ERR_TOO_MANY_PIXELS or (code == JD_ERR_LIBJPEG and pixels > max_pixels):
        # the pixel budget wins when libjpeg refused a header that declares too many pixels
        # (it refuses sides over 65500 itself, but the budget is the real reason)
        reason = f"image declares {size} = {pixels} pixels, more than the budget of {max_pixels}"
        if code == JD_ERR_LIBJPEG:
            reason += f" (libjpeg: {_message(f.msg)})"
        return ImageTooLargeError(reason, pixels=pixels, max_pixels=max_pixels)
    if code == JD_ERR_TOO_MANY_COEFS:
        return ImageTooLargeError(
            f"image would need {b.coefs} DCT coefficients ({f.num_components} components), more than "
            f"the budget allows for {max_pixels} pixels", pixels=b.pixels, max_pixels=max_pixels)
    if code == JD_ERR_TOO_MANY_SCANS:
        # counted from the markers before decoding, or met by the progress monitor while decoding
        scans = max(b.scans, f.scans_seen)
        return JpegError(
            f"too many scans in a progressive JPEG for its size: {scans} scans over {b.blocks} blocks "
            f"(at most {f.scan_limit} allowed: decoding cost grows with scans x blocks)")
    if code == JD_ERR_NO_MEMORY:
        return JpegError("out of memory for a buffer")
    if code == JD_ERR_NO_SCANLINES:
        return JpegError("libjpeg returned no scanlines")
    if code == JD_ERR_BAD_REQUEST:
        return ValueError(_message(f.msg))
    err = JpegError(_message(f.msg))
    err.libjpeg_message = err.reason
    return err


cdef str _message(const char *msg):
    return (<bytes>msg).decode("latin-1") if msg[0] != 0 else "libjpeg failed without a message"


cdef object _failure(jd_dec *c, const jd_budget *b, int64_t max_pixels):
    """The exception for a failed jd_dec_* call on ``c`` (``b``: its budget, or NULL)."""
    cdef jd_failure f
    jd_dec_failure(c, b, &f)
    return _failure_of(&f, max_pixels)


cdef int _set_strict(jd_strict *s, bint strict, object tolerate, list keep) except -1:
    """Fill ``s``: strict or not, and the warnings let pass (``tolerate``: ``(substring, anywhere,
    at_most)`` triples, see the .pyi); the substrings' bytes are appended to ``keep``, which the
    caller keeps alive while ``s`` is in use."""
    tol = tuple(tolerate or ())
    if len(tol) > JD_MAX_TOLERATED:
        raise ValueError(f"at most {JD_MAX_TOLERATED} tolerated warnings, got {len(tol)}")
    s.on = strict
    s.ntolerate = len(tol)
    for i in range(JD_MAX_TOLERATED):
        s.tolerate[i].substring = NULL
        s.tolerate[i].anywhere = 0
        s.tolerate[i].at_most = -1
    for i, entry in enumerate(tol):
        try:
            text, anywhere, at_most = entry
        except (TypeError, ValueError):
            raise ValueError(f"a tolerated warning is (substring, anywhere, at_most), got {entry!r}") from None
        b = str(text).encode("latin-1")
        if not b or b"\0" in b:
            raise ValueError(f"a tolerated warning's substring must be a non-empty string, got {text!r}")
        keep.append(b)
        s.tolerate[i].substring = <const char *>b
        s.tolerate[i].anywhere = bool(anywhere)
        s.tolerate[i].at_most = -1 if at_most is None else max(int(at_most), 0)
    return 0


cdef int _open(jd_dec *c, const unsigned char *p, size_t n, const jd_strict *strict, bint save_exif,
               int64_t max_pixels, bint count_scans, jd_budget *budget) except -1:
    """Open the decompressor and apply the budgets (the scan count only when ``count_scans``);
    raises on failure. The caller closes ``c`` in every case."""
    cdef int rc
    with nogil:
        rc = jd_dec_open(c, p, n, strict, JD_SAVE_EXIF if save_exif else 0)
    if rc != 0:
        raise _failure(c, NULL, max_pixels)
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
        _open(&c, _ptr(buf), buf.shape[0], NULL, True, max_pixels, False, &budget)
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


def read_coefficients(data, *, int64_t max_pixels=DEFAULT_MAX_PIXELS, bint strict=False, tolerate=()):
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
    cdef jd_strict st
    keep = []
    _set_strict(&st, strict, tolerate, keep)
    try:
        _open(&c, _ptr(buf), buf.shape[0], &st, False, max_pixels, True, &budget)
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
           int scale_num=1, tolerate=(), bint to_end=False):
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
    cdef jd_strict st
    keep = []
    _set_strict(&st, strict, tolerate, keep)
    try:
        _open(&c, _ptr(buf), buf.shape[0], &st, False, max_pixels, True, &budget)
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
            if rc == 0 and to_end:
                rc = jd_dec_finish(&c)
        if rc != 0:
            raise _failure(&c, &budget, max_pixels)
        return out, c.e.warnings
    finally:
        jd_dec_close(&c)


# ------------------------------------------------------------------------ partial decoding

_RECT_MODES = {JD_RECT_NONE: "none", JD_RECT_STOPPED: "stopped", JD_RECT_WHOLE: "whole",
               JD_RECT_SPLICED: "spliced"}


cdef int _set_rect(jd_rect *r, object rect, int k) except -1:
    """Fill ``r`` from ``rect`` (None, or (row0, col0, row1, col1) in blocks) and ``k``."""
    r.r0 = r.c0 = r.r1 = r.c1 = 0
    r.k = 8
    r.dst = NULL
    r.dst_stride = 0
    if rect is None:
        return 0
    r0, c0, r1, c1 = (int(v) for v in rect)
    if not (0 <= r0 < r1 and 0 <= c0 < c1) or max(r1, c1) >= 1 << 31:
        raise ValueError(f"rectangle {tuple(rect)} (row0, col0, row1, col1 in blocks) is empty or negative")
    if not 1 <= k <= 8:
        raise ValueError(f"k must be 1..8 (the top-left k x k coefficients of each block), got {k}")
    r.r0, r.c0, r.r1, r.c1, r.k = r0, c0, r1, c1, k
    return 0


cdef dict _rect_info(const jd_rect_info *info):
    return {"mode": _RECT_MODES.get(info.mode, "none"), "num_components": info.num_components,
            "imcu_rows": info.imcu_rows, "imcu_rows_read": info.imcu_rows_read, "mcus_read": info.mcus_read}


def read_coefficient_rects(data, rects, *, ks=None, int64_t max_pixels=DEFAULT_MAX_PIXELS, bint strict=False,
                           tolerate=()):
    """Quantized coefficients of a block rectangle of each component, entropy-decoding as little
    as the file allows (see the .pyi).

    ``rects[i]``: None or ``(row0, col0, row1, col1)`` in blocks of component i's padded grid;
    ``ks[i]``: keep the top-left k x k coefficients of each block (default 8: all). Returns
    ``(components, quant, warnings, info)``: ``components[i]`` int16 ``(row1-row0, col1-col0, k*k)``
    (None where ``rects[i]`` is None), ``quant`` uint16 ``(n_components, 64)``, an int, a dict.
    """
    cdef const unsigned char[::1] buf = data
    cdef const unsigned char *p = _ptr(buf)
    cdef size_t n = buf.shape[0]
    cdef jd_dec c
    cdef jd_budget budget
    cdef jd_rect_info info
    cdef jd_rect r[4]
    cdef int rc, ci, k, nrects = len(rects)
    cdef cnp.ndarray arr
    cdef jd_strict st
    keep = []
    _set_strict(&st, strict, tolerate, keep)
    if nrects > 4:
        raise ValueError(f"at most 4 rectangles (one per component), got {nrects}")
    ks = [8] * nrects if ks is None else list(ks)
    if len(ks) != nrects:
        raise ValueError(f"{len(ks)} values of k for {nrects} rectangles")
    out = [None] * nrects
    for ci in range(nrects):
        _set_rect(&r[ci], rects[ci], ks[ci])
        if rects[ci] is not None:
            k = r[ci].k
            arr = np.empty((r[ci].r1 - r[ci].r0, r[ci].c1 - r[ci].c0, k * k), dtype=np.int16)
            r[ci].dst = <JCOEF *>cnp.PyArray_DATA(arr)
            r[ci].dst_stride = <size_t>(r[ci].c1 - r[ci].c0) * k * k
            out[ci] = arr
    try:
        with nogil:
            rc = jd_read_rects(&c, p, n, &st, max_pixels, r, nrects, &budget, &info)
        if rc != 0:
            raise _failure(&c, &budget, max_pixels)
        quant = np.zeros((info.num_components, 64), dtype=np.uint16)
        for ci in range(min(info.num_components, 4)):
            quant[ci] = <uint16_t[:64]>info.quant[ci]
        return out, quant, c.e.warnings, _rect_info(&info)
    finally:
        jd_dec_close(&c)


def read_coefficient_rects_batch(datas, rects, out, offsets, *, strides=None, ks=None, int threads=1,
                                 int64_t max_pixels=DEFAULT_MAX_PIXELS, bint strict=False, tolerate=()):
    """:func:`read_coefficient_rects` over many files at once, on ``threads`` C threads, into one
    caller-provided int16 buffer (see the .pyi).

    ``datas``: n bytes-like; ``rects`` int ``(n, C, 4)`` (row0, col0, row1, col1; row1 == row0:
    nothing from that component), C <= 4; ``out``: C-contiguous int16 array, written as a flat
    buffer; ``offsets`` int ``(n, C)``: element offset of each rectangle's first block in ``out``;
    ``strides`` int ``(n, C)``: elements from one block row to the next (default: packed,
    ``(col1-col0)*k*k``); ``ks`` int ``(n, C)`` (default 8). Returns ``(errors, warnings, quant,
    num_components)``: a list of n exceptions or None, int32 ``(n,)``, uint16 ``(n, C, 64)``, int32
    ``(n,)``. Nothing outside the rectangles' destinations is written.
    """
    cdef Py_ssize_t nitems = len(datas), i
    cdef int ci, C, k, nthreads = max(1, threads)
    cdef jd_strict st
    keep = []
    _set_strict(&st, strict, tolerate, keep)
    R = np.ascontiguousarray(rects, dtype=np.int64)
    if R.ndim != 3 or R.shape[0] != nitems or R.shape[2] != 4 or not 1 <= R.shape[1] <= 4:
        raise ValueError(f"rects must be an (n, C, 4) integer array with n = {nitems} items and C = 1..4, got "
                         f"shape {R.shape}")
    C = R.shape[1]
    K = np.full((nitems, C), 8, np.int64) if ks is None else np.ascontiguousarray(ks, dtype=np.int64)
    O = np.ascontiguousarray(offsets, dtype=np.int64)
    for name, a in (("ks", K), ("offsets", O)):
        if a.shape != (nitems, C):
            raise ValueError(f"{name} must have shape {(nitems, C)}, got {a.shape}")
    if not isinstance(out, np.ndarray) or out.dtype != np.int16 or not out.flags.c_contiguous or \
            not out.flags.writeable:
        raise ValueError("out must be a writable C-contiguous int16 numpy array")
    rows, cols = R[:, :, 2] - R[:, :, 0], R[:, :, 3] - R[:, :, 1]
    used = rows != 0
    if (rows < 0).any() or (used & ((cols <= 0) | (R[:, :, 0] < 0) | (R[:, :, 1] < 0))).any():
        raise ValueError("every rectangle must be (row0, col0, row1, col1) with 0 <= row0 <= row1 and 0 <= col0 < "
                         "col1 (row1 == row0: none)")
    if (used & ((K < 1) | (K > 8))).any():
        raise ValueError("k must be 1..8")
    packed = cols * K * K
    S = packed if strides is None else np.ascontiguousarray(strides, dtype=np.int64)
    if S.shape != (nitems, C):
        raise ValueError(f"strides must have shape {(nitems, C)}, got {S.shape}")
    ends = O + np.maximum(rows - 1, 0) * S + packed
    if (used & ((O < 0) | (S < packed) | (ends > out.size))).any():
        bad = np.argwhere(used & ((O < 0) | (S < packed) | (ends > out.size)))[0]
        raise ValueError(f"item {bad[0]} component {bad[1]}: its rectangle does not fit in out "
                         f"({out.size} elements) at offset {O[bad[0], bad[1]]}, stride {S[bad[0], bad[1]]}")
    cdef jd_rect_job *jobs = <jd_rect_job *>PyMem_Malloc(max(nitems, 1) * sizeof(jd_rect_job))
    if jobs == NULL:
        raise MemoryError()
    cdef JCOEF *base = <JCOEF *>cnp.PyArray_DATA(out)
    cdef const unsigned char[::1] buf
    cdef const int64_t[:, :, ::1] Rv = R
    cdef const int64_t[:, ::1] Kv = K, Ov = O, Sv = S
    try:
        for i in range(nitems):
            buf = datas[i]
            keep.append(buf)
            jobs[i].data = _ptr(buf)
            jobs[i].size = buf.shape[0]
            jobs[i].nrects = C
            for ci in range(C):
                jobs[i].rects[ci].r0 = Rv[i, ci, 0]
                jobs[i].rects[ci].c0 = Rv[i, ci, 1]
                jobs[i].rects[ci].r1 = Rv[i, ci, 2]
                jobs[i].rects[ci].c1 = Rv[i, ci, 3]
                jobs[i].rects[ci].k = Kv[i, ci]
                jobs[i].rects[ci].dst = base + Ov[i, ci] if Rv[i, ci, 2] > Rv[i, ci, 0] else NULL
                jobs[i].rects[ci].dst_stride = Sv[i, ci]
        with nogil:
            jd_read_rects_batch(jobs, nitems, &st, max_pixels, nthreads)
        errors = [None] * nitems
        warnings = np.zeros(nitems, np.int32)
        ncomp = np.zeros(nitems, np.int32)
        quant = np.zeros((nitems, C, 64), np.uint16)
        for i in range(nitems):
            warnings[i] = jobs[i].warnings
            if jobs[i].rc != 0:
                errors[i] = _failure_of(&jobs[i].failure, max_pixels)
                continue
            ncomp[i] = jobs[i].info.num_components
            for ci in range(min(C, jobs[i].info.num_components)):
                quant[i, ci] = <uint16_t[:64]>jobs[i].info.quant[ci]
        return errors, warnings, quant, ncomp
    finally:
        PyMem_Free(jobs)


# ------------------------------------------------------------------------------------ writing

_COLOR_SPACE_CODES = {name: code for code, name in _COLOR_SPACES.items() if name != "UNKNOWN"}


def transcode(data, *, bint optimize=True, unsigned int restart_interval=0, bint keep_markers=False,
              int64_t max_pixels=DEFAULT_MAX_PIXELS, bint strict=False, tolerate=()):
    """Lossless transcoding to baseline sequential Huffman (see the .pyi): ``(jpeg_bytes, warnings)``,
    the same quantized coefficients, tables, sampling and colour space as ``data``."""
    cdef const unsigned char[::1] buf = data
    cdef const unsigned char *p = _ptr(buf)
    cdef size_t n = buf.shape[0]
    cdef jd_xcode t
    cdef jd_budget budget
    cdef int rc
    cdef jd_strict st
    keep = []
    _set_strict(&st, strict, tolerate, keep)
    if restart_interval > 65535:
        raise ValueError(f"restart_interval must be 0..65535 MCUs, got {restart_interval}")
    try:
        with nogil:
            rc = jd_transcode(&t, p, n, &st, max_pixels, optimize, restart_interval, keep_markers, &budget)
        if rc != 0:
            raise _failure(&t.src, &budget, max_pixels)
        return (<char *>t.dst.out)[:t.dst.outsize], t.src.e.warnings
    finally:
        jd_xcode_close(&t)


def write_coefficients(components, quant, int width, int height, sampling, *, str color_space="YCbCr",
                       bint optimize=False, unsigned int restart_interval=0):
    """A JPEG file holding the quantized coefficients ``components`` (see the .pyi)."""
    cdef int nc = len(components), ci
    if not 1 <= nc <= 4:
        raise ValueError(f"a JPEG has 1 to 4 components, got {nc}")
    if color_space not in _COLOR_SPACE_CODES:
        raise ValueError(f"color_space must be one of {', '.join(_COLOR_SPACE_CODES)}, not {color_space!r}")
    if restart_interval > 65535:
        raise ValueError(f"restart_interval must be 0..65535 MCUs, got {restart_interval}")
    sampling = [tuple(int(v) for v in hv) for hv in sampling]
    if len(sampling) != nc:
        raise ValueError(f"{len(sampling)} sampling factor pairs for {nc} components")
    Q = np.asarray(quant)
    if Q.shape != (nc, 64):
        raise ValueError(f"quant must be ({nc}, 64) (one table per component, natural order), got {Q.shape}")
    tables = [_quant_table(Q[ci], f"component {ci}", 65535) for ci in range(nc)]
    arrays = []
    for ci in range(nc):
        a = np.ascontiguousarray(components[ci])
        if a.dtype != np.int16 or a.ndim != 3 or a.shape[2] != 64:
            raise ValueError(f"component {ci} must be int16 (blocks_high, blocks_wide, 64), got {a.dtype} {a.shape}")
        arrays.append(a)
    cdef jd_coef_plane planes[4]
    cdef const uint16_t[::1] qv
    for ci in range(nc):
        qv = tables[ci]
        planes[ci].coefs = <const JCOEF *>cnp.PyArray_DATA(arrays[ci])
        planes[ci].bh = arrays[ci].shape[0]
        planes[ci].bw = arrays[ci].shape[1]
        planes[ci].h = sampling[ci][0]
        planes[ci].v = sampling[ci][1]
        planes[ci].quant = &qv[0]
    cdef jd_xcode t
    cdef int rc
    cdef J_COLOR_SPACE cs = _COLOR_SPACE_CODES[color_space]
    if width < 1 or height < 1:
        raise ValueError(f"image dimensions must be positive, got {width}x{height}")
    try:
        with nogil:
            rc = jd_write_coefficients(&t, width, height, cs, planes, nc, optimize, restart_interval)
        if rc != 0:
            raise _libjpeg_error(&t.dst.e)
        return (<char *>t.dst.out)[:t.dst.outsize]
    finally:
        jd_xcode_close(&t)


# ------------------------------------------------------------------------------- pixel math


def encode(rgb, int quality=100, str subsampling="4:2:0", *, tables=None, bint optimize=False):
    """JPEG bytes of uint8 ``(H, W, 3)`` RGB with libjpeg-turbo (islow DCT): baseline with
    ``jpeg_set_quality(quality, TRUE)``'s tables, or with ``tables`` ``(luma, chroma)`` (64 ints
    each in 1..65535, natural order; SOF1 when an entry exceeds 255). ``subsampling`` "4:2:0",
    "4:2:2", "4:4:4" or "4:4:0"; ``optimize``: optimal Huffman tables."""
    if subsampling not in _SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {', '.join(_SUBSAMPLING)}, not {subsampling!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, not {quality}")
    arr = np.ascontiguousarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"encode needs a uint8 (H, W, 3) array, got {arr.dtype} {arr.shape}")
    if arr.shape[0] > 65500 or arr.shape[1] > 65500:
        raise ValueError(f"encode: {arr.shape[1]}x{arr.shape[0]} is over libjpeg's 65500-pixel side")
    cdef const uint16_t[::1] ql, qc
    cdef const uint16_t *pl = NULL
    cdef const uint16_t *pc = NULL
    if tables is not None:
        luma, chroma = tables
        ql = _quant_table(luma, "luma", 65535)
        qc = _quant_table(chroma, "chroma", 65535)
        pl, pc = &ql[0], &qc[0]
    cdef const uint8_t[:, :, ::1] px = arr
    cdef JDIMENSION h = px.shape[0], w = px.shape[1]
    cdef int h0 = _SUBSAMPLING[subsampling][0], v0 = _SUBSAMPLING[subsampling][1]
    cdef jd_enc s
    cdef int rc
    try:
        with nogil:
            rc = jd_encode(&s, &px[0, 0, 0], w, h, <size_t>w * 3, quality, h0, v0, pl, pc, optimize)
        if rc != 0:
            raise _libjpeg_error(&s.e)
        return (<char *>s.out)[:s.outsize]
    finally:
        jd_enc_close(&s)


cdef object _quant_table(table, str name, int top):
    """uint16 (64,) copy of ``table`` (64 ints in 1..top, natural order), else ValueError."""
    t = np.asarray(table)
    if t.shape != (64,) or t.dtype.kind not in "iu":
        raise ValueError(f"the {name} quantization table must be 64 integers (natural order), got "
                         f"{t.dtype} {t.shape}")
    if t.min() < 1 or t.max() > top:
        raise ValueError(f"the {name} quantization table's entries must be in 1..{top}"
                         f"{' (a baseline table)' if top == 255 else ''}, got {int(t.min())}..{int(t.max())}")
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
    c = _quant_table(chroma, "chroma", 255)
    quant = np.stack([_quant_table(luma, "luma", 255), c, c])
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
