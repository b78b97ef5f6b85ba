"""Type stub and documentation of the C boundary ``jdct_cli._decoder``: the C layer ``csrc/*.c``
(declared in ``csrc/jdct.h``) bound to Python by ``_decoder.pyx``.

Bytes in, arrays and facts out; no policy. Every function releases the GIL around libjpeg work,
frees its libjpeg objects on every path, and raises :class:`jdct_cli.errors.JpegError` (a
``ValueError``) carrying libjpeg's own message as ``reason`` and ``libjpeg_message`` (the JPEG layer,
``jdct_cli.jpeg``, turns it into a sentence). libjpeg never prints and never calls ``exit()``.

Conventions:
- Coefficient arrays are int16 ``(blocks_high, blocks_wide, 64)``, the 64 coefficients of a block
  in natural (row-major) order: index ``8*v + u``, ``v`` the vertical and ``u`` the horizontal
  frequency. ``blocks_high``/``blocks_wide`` are the component's padded block counts
  (``height_in_blocks`` rounded up to whole MCUs, as libjpeg stores them).
- Quantization tables are uint16 ``(n_components, 64)`` in natural order, row ``i`` being the table
  used by component ``i``.
- ``warnings`` counts libjpeg warnings (for example "Premature end of JPEG file" on truncated data);
  with ``strict=True`` the first warning raises ``JpegError`` instead, except those ``tolerate``
  lets pass: ``(substring, anywhere, at_most)`` triples (at most 8), a warning passing when its
  message contains ``substring``, it came before the first scan (or ``anywhere``) and its first
  number (libjpeg's ``msg_parm.i[0]``, e.g. the N of "N extraneous bytes before marker") is at
  most ``at_most`` (None: any). Which warnings are harmless is the caller's decision
  (``jdct_cli.jpeg.HARMLESS_WARNINGS``).
- Limits (each defined once, in ``csrc/jdct.h``, and exported here): ``max_pixels`` (default
  ``DEFAULT_MAX_PIXELS``): images whose header declares more than this many pixels (width*height)
  raise ``ImageTooLargeError`` right after the header is read, before any coefficient/pixel
  allocation (also when libjpeg itself refuses the dimensions, e.g. 65535x65535). The coefficient
  buffers are guarded too: more than ``4*max_pixels + COEF_SLACK`` coefficients (all components,
  MCU-padded) is refused the same way.
- Progressive files: ``read_coefficients`` and ``decode`` count the scans first (SOS segments found
  by the marker walker, :func:`scan_count`) and refuse (``JpegError``, "too many scans ...") more
  than ``scan_limit(blocks)`` = ``min(MAX_SCANS, max(MIN_SCAN_LIMIT, SCAN_BLOCK_BUDGET // blocks))``
  scans (64..500; also enforced by libjpeg's progress monitor while decoding), since each scan walks
  every block; ``read_header`` does not.
- Threads: ``read_coefficient_rects_batch`` decodes on POSIX threads of its own (created and
  joined within the call: nothing outlives it, so the module stays fork-safe).
- Argument errors (``scale`` not 1/2/4/8 nor ``scale_num``/8 with ``scale_num`` 1..16, ``roi``
  outside the output, wrong array dtype/shape, ``quality`` outside 1..100, a quantization table
  that is not 64 integers in 1..255, an empty or outside resize box) raise plain ``ValueError``.
"""
from typing import Optional, Sequence, TypedDict

import numpy as np

DEFAULT_MAX_PIXELS: int  # 100_000_000: the default pixel budget
COEF_SLACK: int  # 2**22: coefficients allowed above 4 * max_pixels (MCU padding of tiny images)
SCAN_BLOCK_BUDGET: int  # 100_000_000: scans x blocks a progressive file may cost
MIN_SCAN_LIMIT: int  # 64: scans always allowed
MAX_SCANS: int  # 500: scans never allowed beyond

class ComponentInfo(TypedDict):
    id: int            # component identifier from the SOF marker (1, 2, 3 for typical YCbCr)
    h: int             # horizontal sampling factor (1..4)
    v: int             # vertical sampling factor (1..4)
    quant_table: int   # quantization table slot (0..3)
    blocks_high: int   # rows of 8x8 blocks stored for this component (padded to whole MCUs)
    blocks_wide: int   # columns of 8x8 blocks stored for this component

class HeaderInfo(TypedDict):
    width: int
    height: int
    precision: int            # bits per sample: always 8 here (libjpeg-turbo built for 8-bit raises
                              # JpegError "Unsupported JPEG data precision 12" for 12-bit files)
    num_components: int
    color_space: str          # "GRAYSCALE", "YCbCr", "RGB", "CMYK", "YCCK" or "UNKNOWN" (libjpeg's guess)
    adobe_transform: Optional[int]  # Adobe APP14 transform flag, None without an Adobe marker
    jfif: bool                # a JFIF APP0 marker was seen
    progressive: bool
    arithmetic: bool
    restart_interval: int     # in MCUs, 0 when none
    components: list[ComponentInfo]
    exif: Optional[bytes]     # the raw APP1 "Exif\0\0" payload (TIFF header onwards), None when absent

def libjpeg_version() -> str:
    """libjpeg-turbo's version as compiled against, e.g. "2.1.5 (libjpeg API 62)"."""

def scan_limit(blocks: int) -> int:
    """The most scans a progressive image of ``blocks`` 8x8 blocks (all components) may carry."""

def marker_segments(data: bytes, *, through_scans: bool = False) -> list[tuple[int, int, int]]:
    """The marker segments, as jdct's one marker walker (``csrc/jd_markers.c``) finds them:
    ``(marker, payload_offset, payload_length)`` from SOI up to the first SOS (or EOI), or with
    ``through_scans`` through every scan (entropy-coded data skipped) up to EOI. Junk between
    segments is skipped as libjpeg does; the walk ends where the structure breaks. Never raises
    on bad data."""

def scan_count(data: bytes) -> int:
    """SOS segments from SOI to EOI (the most scans libjpeg can read from ``data``)."""

def read_header(data: bytes, *, max_pixels: int = ...) -> HeaderInfo:
    """Parse the markers up to the first SOS; allocates nothing proportional to the image."""

Tolerance = tuple[str, bool, Optional[int]]

class RectInfo(TypedDict):
    mode: str             # "stopped": one interleaved scan, decoded down to the last iMCU row needed;
                          # "spliced": restart segments covering the rectangles cut into a small JPEG;
                          # "whole": several scans (progressive...), decoded to the end;
                          # "none": no rectangle asked, nothing decoded
    num_components: int
    imcu_rows: int        # iMCU rows (MCU rows of the first scan) of the image
    imcu_rows_read: int   # of which entropy-decoded ("stopped", "whole"; 0 for "spliced")
    mcus_read: int        # MCUs entropy-decoded ("stopped", "spliced")

def read_coefficients(
    data: bytes, *, max_pixels: int = ..., strict: bool = False, tolerate: Sequence[Tolerance] = ()
) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Quantized DCT coefficients of every component without an inverse DCT.

    Returns ``(components, quant, warnings)``: ``components[i]`` int16 ``(bh, bw, 64)`` natural
    order; ``quant`` uint16 ``(n_components, 64)`` natural order; ``warnings`` an int.
    Works for baseline, progressive, arithmetic-coded and restart-marker files.
    """

def read_coefficient_rects(
    data: bytes,
    rects: Sequence[Optional[tuple[int, int, int, int]]],
    *,
    ks: Optional[Sequence[int]] = None,
    max_pixels: int = ...,
    strict: bool = False,
    tolerate: Sequence[Tolerance] = (),
) -> tuple[list[Optional[np.ndarray]], np.ndarray, int, RectInfo]:
    """The quantized coefficients of one block rectangle per component, entropy-decoding as little
    as the file's structure allows; the values are ``read_coefficients``'s at the same places.

    ``rects[i]`` (at most 4): None, or ``(row0, col0, row1, col1)``: block rows ``row0:row1`` and
    columns ``col0:col1`` of component i's padded grid (``blocks_high`` x ``blocks_wide``), non-empty;
    ``ks[i]`` (1..8, default 8): keep the top-left k x k coefficients of each block (a DCT-scaled
    crop at M/8 needs k = M). A single interleaved scan (baseline and extended sequential, the
    usual case) is decoded in libjpeg's buffered-image mode one iMCU row at a time and stops after
    the last row needed (rows below are never read: damage there is not seen, no warning is made
    up); if its restart interval divides the MCU rows and Huffman coding is used, only the
    restart segments covering the rectangles (columns widened to whole segments) are decoded,
    spliced behind the file's own headers into a small JPEG; several scans (progressive,
    non-interleaved) are decoded whole. Returns ``(components, quant, warnings, info)``:
    ``components[i]`` int16 C-contiguous ``(row1-row0, col1-col0, k*k)`` (natural order within the
    k x k square: ``v*k + u``), None where ``rects[i]`` is None; ``quant`` uint16
    ``(n_components, 64)``; ``warnings`` over what was decoded; ``info``: :class:`RectInfo`.
    A rectangle outside its component, for a component the image lacks, or k outside 1..8:
    ``ValueError`` (not a JpegError). The GIL is released while decoding.
    """

def read_coefficient_rects_batch(
    datas: Sequence[bytes],
    rects: np.ndarray,
    out: np.ndarray,
    offsets: np.ndarray,
    *,
    strides: Optional[np.ndarray] = None,
    ks: Optional[np.ndarray] = None,
    threads: int = 1,
    max_pixels: int = ...,
    strict: bool = False,
    tolerate: Sequence[Tolerance] = (),
) -> tuple[list[Optional[Exception]], np.ndarray, np.ndarray, np.ndarray]:
    """``read_coefficient_rects`` of n files into one caller-provided buffer, on ``threads``
    threads of the C layer (the calling one included), the GIL released for the whole batch.

    ``rects``: integers ``(n, C, 4)``, C in 1..4, ``(row0, col0, row1, col1)`` per item and
    component (``row1 == row0``: nothing from that component); ``out``: a writable C-contiguous
    int16 numpy array, used as a flat buffer; ``offsets`` ``(n, C)``: index in ``out`` of each
    rectangle's first block; ``strides`` ``(n, C)``: elements from one block row's start to the
    next's (default: packed, ``(col1 - col0) * k * k``; more leaves room, e.g. for a padded batch
    tensor); ``ks`` ``(n, C)`` (default 8). Block ``(r, c)`` goes to ``out.flat[offsets[i, j] + (r -
    row0) * strides[i, j] + (c - col0) * k * k:][:k * k]``; nothing else of ``out`` is written.
    Destinations are checked against ``out`` before anything runs (``ValueError``). Returns
    ``(errors, warnings, quant, num_components)``: n entries of None or the item's exception
    (``JpegError`` with libjpeg's message, ``ImageTooLargeError``, or ``ValueError`` for a
    rectangle outside that image), int32 ``(n,)``, uint16 ``(n, C, 64)`` (zero for failed items),
    int32 ``(n,)`` (0 for failed items). Items never sniff their format: bytes that are not a JPEG
    are libjpeg's "Not a JPEG file".
    """

def transcode(
    data: bytes,
    *,
    optimize: bool = True,
    restart_interval: int = 0,
    keep_markers: bool = False,
    max_pixels: int = ...,
    strict: bool = False,
    tolerate: Sequence[Tolerance] = (),
) -> tuple[bytes, int]:
    """Lossless transcoding (``jpeg_read_coefficients`` -> ``jpeg_copy_critical_parameters`` ->
    ``jpeg_write_coefficients``) to one interleaved scan of sequential Huffman coding: SOF0, or
    SOF1 when a quantization table has entries over 255. The quantized coefficients of every block
    of the image, the tables, sampling factors, dimensions and colour space are the source's
    (padding blocks of the last MCU column/row are written as libjpeg writes them).
    ``optimize``: optimal Huffman tables (a second pass, a few % smaller); ``restart_interval``:
    MCUs between restart markers (0..65535); ``keep_markers``: copy APPn and COM markers (not the
    JFIF APP0 and Adobe APP14 libjpeg writes itself). Returns ``(jpeg_bytes, warnings)``.
    libjpeg refuses what baseline coding cannot hold (``JpegError``: "DCT coefficient out of
    range" for a coefficient outside AC -1023..1023 / DC -1024..1023, which only damaged or
    arithmetic-coded garbage decodes to; "Sampling factors too large for interleaved scan"; a
    table redefined between scans).
    """

def write_coefficients(
    components: Sequence[np.ndarray],
    quant: np.ndarray,
    width: int,
    height: int,
    sampling: Sequence[tuple[int, int]],
    *,
    color_space: str = "YCbCr",
    optimize: bool = False,
    restart_interval: int = 0,
) -> bytes:
    """A JPEG file of ``width x height`` pixels holding the quantized coefficients
    ``components[i]`` (int16 ``(blocks_high, blocks_wide, 64)``, natural order), quantized with
    ``quant[i]`` (uint16-compatible ``(n, 64)``, entries 1..65535, natural order; identical tables
    share a slot, at most 4 distinct), sampled ``sampling[i]`` = ``(h, v)`` (1..4), in
    ``color_space`` ("YCbCr", "GRAYSCALE", "RGB", "CMYK", "YCCK", with 3, 1, 3, 4, 4 components).
    A component needs at least ``ceil(height * v / (8 * vmax))`` x ``ceil(width * h / (8 * hmax))``
    blocks and at most that padded to whole MCUs (what ``read_coefficients`` returns); blocks
    beyond the image in the last MCU are written as libjpeg writes them (DC of the block to the
    left, AC zero), whatever the array holds there. ``read_coefficients`` of the result gives the
    coefficients back. Anything that does not fit, and a coefficient of the image outside what
    8-bit sequential Huffman coding holds (AC -1023..1023, DC -1024..1023: the range of any 8-bit
    image's DCT), is a ``ValueError``.
    """

def decode(
    data: bytes,
    *,
    scale: int = 1,
    roi: Optional[tuple[int, int, int, int]] = None,
    max_pixels: int = ...,
    strict: bool = False,
    scale_num: int = 1,
    tolerate: Sequence[Tolerance] = (),
    to_end: bool = False,
) -> tuple[np.ndarray, int]:
    """Decode to RGB pixels with libjpeg's islow IDCT and fancy upsampling.

    ``scale``: 1, 2, 4 or 8, the output is ``ceil(W/scale) x ceil(H/scale)`` (libjpeg's DCT scaling).
    ``scale_num`` M (1..16, with ``scale=8``): scaling M/8, output ``ceil(W*M/8) x ceil(H*M/8)``,
    libjpeg-turbo's M-point scaled IDCTs (SIMD for M = 1, 2, 4, 8 only; plain C otherwise).
    ``roi``: ``(x, y, width, height)`` in *output* (scaled) pixels; only the needed rows/columns are
    decoded (jpeg_crop_scanline / jpeg_skip_scanlines) and exactly that region is returned.
    The region is exactly ``full[y:y+h, x:x+w]`` of the full decode at that scale for valid files
    (the crop is widened by one iMCU each side so fancy upsampling sees real neighbours; files with
    sampling factors above 2 decode full width and are cut).
    Grayscale, CMYK and YCCK come out as RGB. CMYK/YCCK: libjpeg's CMYK output is Adobe-inverted
    (255 = no ink), so ``R = C*K/255`` (likewise G with M, B with Y), rounded as Pillow's
    ``convert("RGB")`` does, which it matches exactly.
    ``to_end``: after the rows returned, entropy-decode the rest (no IDCT) and read the data to
    EOI, so that damage that shows only there (entropy-coded data that ends early, or leaves
    bytes over before EOI) is warned about too.
    Returns ``(rgb, warnings)``, ``rgb`` uint8 C-contiguous ``(H, W, 3)``.
    """

def resize_bilinear(rgb: np.ndarray, box: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """Antialiased bilinear resize of ``box`` ``(x0, y0, x1, y1)`` (float source pixels,
    ``0 <= x0 < x1 <= W``, ``0 <= y0 < y1 <= H``) of uint8 ``(H, W, 3)`` ``rgb`` to uint8
    C-contiguous ``(height, width, 3)``: bit-identical to Pillow 13's
    ``Image.resize((width, height), BILINEAR, box=box, reducing_gap=None)`` (same fixed-point
    weights, same pass order), without the RGB<->RGBX copies. Releases the GIL. Being jdct's own
    code, its results do not depend on the installed Pillow (whose pass order, and so the last
    bit of some pixels, has changed across versions)."""

def encode(rgb: np.ndarray, quality: int = 100, subsampling: str = "4:2:0", *,
           tables: Optional[tuple[Sequence[int], Sequence[int]]] = None, optimize: bool = False) -> bytes:
    """JPEG bytes of uint8 ``(H, W, 3)`` RGB with libjpeg-turbo (islow DCT): baseline with
    ``jpeg_set_quality(quality, force_baseline=TRUE)``'s tables, or with ``tables``
    ``(luma, chroma)``: 64 integers each in 1..65535, natural order (an entry over 255 makes an
    extended-sequential SOF1 file; ``tables=ijg_tables(q)`` gives exactly ``encode(rgb, q)``).
    ``subsampling``: "4:2:0", "4:2:2", "4:4:4" or "4:4:0"; ``optimize``: optimal Huffman tables."""

def forward_dct(rgb: np.ndarray, luma: np.ndarray, chroma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The coefficients libjpeg-turbo's encoder would store for ``rgb`` at 4:2:0 quantized with the
    tables ``luma`` and ``chroma``, computed without entropy coding: RGB->YCbCr (jccolor), h2v2
    downsampling (jcsample, alternating bias), islow integer DCT (jfdctint) and quantization
    (jcdctmgr). With ``jdct_cli.jpegmath.quant.ijg_tables(quality)`` it is bit-identical to
    ``read_coefficients(encode(rgb, quality, "4:2:0"))``.

    ``rgb``: uint8 ``(H, W, 3)`` with H and W multiples of 16; ``luma``, ``chroma``: 64 integers
    in 1..255 (baseline tables), natural order; anything else raises ``ValueError``.
    Returns ``(y, cb, cr, quant)``: int16 ``(H/8, W/8, 64)``, ``(H/16, W/16, 64)`` twice, natural
    order, and uint16 ``(3, 64)`` (luma table, chroma table, chroma table). Releases the GIL.
    """
