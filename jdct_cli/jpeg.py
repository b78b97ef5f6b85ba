"""The Python JPEG layer: policy and facts around the C boundary ``jdct_cli._decoder``.

Everything that reads a JPEG in jdct goes through here, so that every caller gets the same
behaviour:

- the bytes are *sniffed* first: a PNG/GIF/WebP/BMP/TIFF/text file named ``.jpg`` raises
  :class:`~jdct_cli.errors.NotAJpegError` naming the real format, an empty file says "empty file";
- 12-bit and lossless (SOF3/7/11/15) JPEGs raise :class:`~jdct_cli.errors.UnsupportedJpegError`,
  detected from the SOF marker before libjpeg sees the data (and from libjpeg's message as a
  fallback);
- libjpeg's terse messages become sentences saying what is wrong, with libjpeg's own words kept
  in parentheses (``truncated: the JPEG data ends before the image is complete (libjpeg:
  Premature end of JPEG file)``): :data:`LIBJPEG_MESSAGES` is the one table of them;
- every :class:`~jdct_cli.errors.JpegError` leaves with ``path`` set when the caller gave one;
- which libjpeg warnings lose nothing is decided here (:data:`HARMLESS_WARNINGS`, what strict
  readers pass as ``tolerate``), not in the C layer.

Beyond whole files: :func:`read_coefficient_rects` / :func:`read_coefficient_rects_batch` (the
coefficients of block rectangles, decoding only what the file's structure requires),
:func:`transcode` (lossless, to baseline Huffman), :func:`write_coefficients` and
:func:`encode` (JPEG files from coefficients or pixels, with any tables).

The limits (:data:`DEFAULT_MAX_PIXELS`, :data:`DEFAULT_MAX_FILE_BYTES`) are defined once: the
pixel budget in the C layer (``csrc/jdct.h``, with the scan budget), the file-size cap here.
Marker segments are found by the C layer's one marker walker (:func:`marker_segments`).

Array conventions (same as the extension): coefficients are int16 ``(blocks_high, blocks_wide, 64)``
in natural order (index ``8*v + u``, ``v`` vertical frequency); quantization tables are uint16
``(n_components, 64)`` natural order; RGB is uint8 ``(H, W, 3)``. The IJG quantization tables and
the quality estimate live in :mod:`jdct_cli.jpegmath.quant`.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from . import _decoder
from .errors import (
    ImageTooLargeError,
    JpegError,
    NotAJpegError,
    SourceError,
    SourceNotFoundError,
    UnsupportedJpegError,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_FILE_BYTES",
    "LIBJPEG_MESSAGES",
    "Coefficients",
    "Decoded",
    "sniff_format",
    "check_file_size",
    "read_bytes",
    "read_header",
    "read_coefficients",
    "read_coefficient_rects",
    "read_coefficient_rects_batch",
    "RectBatch",
    "decode",
    "transcode",
    "write_coefficients",
    "encode",
    "HARMLESS_WARNINGS",
    "MAX_STRAY_BYTES",
    "Tolerated",
    "first_warning",
    "describe_libjpeg_message",
    "exif_orientation",
    "apply_orientation",
    "marker_segments",
    "read_quant_tables",
    "ZIGZAG",
    "sampling_name",
    "libjpeg_version",
]

#: Images whose header declares more pixels (width * height) are refused before any allocation
#: (the C layer's limit, ``csrc/jdct.h``).
DEFAULT_MAX_PIXELS: int = _decoder.DEFAULT_MAX_PIXELS

#: Files larger than this many bytes are refused unread (:func:`read_bytes`, :func:`check_file_size`).
DEFAULT_MAX_FILE_BYTES: int = 1 << 30


class Coefficients(NamedTuple):
    """What :func:`read_coefficients` returns (unpacks like the extension's 3-tuple).

    ``components[i]``: int16 ``(blocks_high, blocks_wide, 64)`` natural order;
    ``quant``: uint16 ``(n_components, 64)`` natural order, row i = component i's table;
    ``warnings``: number of libjpeg warnings (e.g. 1 for "Premature end of JPEG file").
    """

    components: list
    quant: np.ndarray
    warnings: int


class Rects(NamedTuple):
    """What :func:`read_coefficient_rects` returns: ``components[i]`` int16 ``(rows, cols, k*k)``
    (None where no rectangle was asked), ``quant`` uint16 ``(n_components, 64)``, ``warnings`` an
    int, ``info`` a dict (``mode``: "stopped" | "spliced" | "whole" | "none", ``num_components``,
    ``imcu_rows``, ``imcu_rows_read``, ``mcus_read``)."""

    components: list
    quant: np.ndarray
    warnings: int
    info: dict


class RectBatch(NamedTuple):
    """What :func:`read_coefficient_rects_batch` returns, per item: ``errors[i]`` None or the
    :class:`~jdct_cli.errors.JpegError` (a sentence, like every error of this layer) or
    ``ValueError`` (a rectangle that does not fit the image); ``warnings`` int32 ``(n,)``;
    ``quant`` uint16 ``(n, C, 64)``; ``num_components`` int32 ``(n,)`` (0 for a failed item)."""

    errors: list
    warnings: np.ndarray
    quant: np.ndarray
    num_components: np.ndarray


class Decoded(NamedTuple):
    """What :func:`decode` returns: ``rgb`` uint8 C-contiguous ``(H, W, 3)``, ``warnings`` an int."""

    rgb: np.ndarray
    warnings: int


# --------------------------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------------------------

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
)


def _looks_like_text(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) is plausibly UTF-8/ASCII text."""
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the sample window is still text
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    if not text:
        return False
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return printable >= 0.95 * len(text)


def sniff_format(data: bytes) -> Optional[str]:
    """Name the format of ``data`` from its first bytes.

    Returns "JPEG" (starts with the SOI marker ``FF D8``), the real format of a disguised file
    ("PNG", "GIF", "WebP", "BMP", "TIFF", "JPEG 2000", "JPEG XL", "HEIF", "AVIF", "PDF", "PSD",
    "ICO", "ZIP", "gzip"), "text" (UTF-8/ASCII text such as an HTML error page), "empty" for zero
    bytes, or None when it cannot tell (libjpeg then gets the data and says what it thinks).
    """
    data = bytes(data[:1024]) if not isinstance(data, bytes) else data
    if len(data) == 0:
        return "empty"
    if data[:2] == b"\xff\xd8":
        return "JPEG"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"BM" and len(data) >= 14:
        # BITMAPFILEHEADER: the declared file size is little-endian at offset 2; a BMP's pixel
        # offset (offset 10) lies after the 14-byte header. Both checks keep "BM..." text out.
        pixel_offset = int.from_bytes(data[10:14], "little")
        if 14 <= pixel_offset < (1 << 26):
            return "BMP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF"
    if _looks_like_text(data[:1024]):
        return "text"
    return None


def _refuse_non_jpeg(data: bytes, path) -> None:
    """Raise NotAJpegError when the sniffed format is known and not JPEG."""
    fmt = sniff_format(data)
    if fmt is None or fmt == "JPEG":
        return
    if fmt == "empty":
        raise NotAJpegError("empty file (0 bytes)", path, detected_format="empty")
    if fmt == "text":
        raise NotAJpegError("not a JPEG: this is a text file", path, detected_format="text")
    raise NotAJpegError(f"not a JPEG: this is a {fmt} file", path, detected_format=fmt)


# --------------------------------------------------------------------------------------------
# SOF check (12-bit / lossless) done on the raw markers, before libjpeg
# --------------------------------------------------------------------------------------------

# SOF markers that carry a frame header: C0-C3, C5-C7, C9-CB, CD-CF (C4 = DHT, C8 = JPG, CC = DAC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_LOSSLESS_SOF = {0xC3, 0xC7, 0xCB, 0xCF}
_HIERARCHICAL_SOF = {0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF}


def marker_segments(data: bytes, *, through_scans: bool = False) -> list[tuple[int, int, int]]:
    """``[(marker, payload_offset, payload_length), ...]`` of the marker segments from SOI up to
    and including the first SOS (or EOI), or with ``through_scans`` through every scan up to EOI.

    jdct's one marker walker (C, ``csrc/jd_markers.c``; the decoder's scan budget counts scans
    with it too). Bytes between segments that are not a marker are skipped the way libjpeg does
    (it warns "extraneous bytes"), so files with junk between markers still walk; anything
    inconsistent just ends the walk (libjpeg, which sees the data next, decides what is wrong).
    Never raises on bad data.
    """
    return _decoder.marker_segments(data, through_scans=through_scans)


def _find_sof(data: bytes) -> Optional[tuple[int, int]]:
    """``(sof_marker, precision)`` of the first frame header, or None if there is none before SOS."""
    for marker, off, length in marker_segments(data):
        if marker in _SOF_MARKERS:
            return (marker, data[off]) if length >= 1 else None
        if marker in (0xD9, 0xDA):
            return None
    return None


def _zigzag_to_natural() -> np.ndarray:
    """int64 (64,): ``natural[k]`` is the natural (8*row+col) index of zigzag position k."""
    order = []
    for s in range(15):  # anti-diagonals row+col = s, alternating direction
        rows = range(min(s, 7), max(0, s - 7) - 1, -1) if s % 2 == 0 else range(max(0, s - 7), min(s, 7) + 1)
        order.extend(8 * r + (s - r) for r in rows)
    return np.array(order, dtype=np.int64)


#: ``ZIGZAG[k]`` = natural index of the k-th coefficient in zigzag (file) order.
ZIGZAG = _zigzag_to_natural()


def read_quant_tables(data: bytes) -> dict[int, np.ndarray]:
    """The quantization tables defined before the first scan, parsed from the DQT markers.

    Returns ``{slot: uint16 (64,) natural order}`` (slot 0..3; 8- and 16-bit precision tables),
    later definitions of a slot replacing earlier ones. No libjpeg: cheap, and an independent path
    to what ``read_coefficients`` returns. Malformed DQT segments are skipped.
    """
    data = bytes(data)
    tables: dict[int, np.ndarray] = {}
    for marker, off, length in marker_segments(data):
        if marker != 0xDB:
            continue
        pos, end = off, off + length
        while pos < end:
            pq, tq = data[pos] >> 4, data[pos] & 15
            size = 128 if pq else 64
            if pq > 1 or tq > 3 or pos + 1 + size > end:
                break
            raw = np.frombuffer(data, dtype=">u2" if pq else "u1", count=64, offset=pos + 1)
            table = np.zeros(64, dtype=np.uint16)
            table[ZIGZAG] = raw
            tables[tq] = table
            pos += 1 + size
    return tables


def _check_supported(data: bytes, path) -> None:
    """Raise UnsupportedJpegError for lossless, hierarchical and non-8-bit frames."""
    found = _find_sof(data)
    if found is None:
        return
    marker, precision = found
    if marker in _LOSSLESS_SOF:
        raise UnsupportedJpegError(
            f"lossless JPEG (SOF{marker - 0xC0}, {precision}-bit) is not supported: jdct needs DCT-based JPEG",
            path,
        )
    if marker in _HIERARCHICAL_SOF:
        raise UnsupportedJpegError(f"hierarchical JPEG (SOF{marker - 0xC0}) is not supported", path)
    if precision != 8:
        raise UnsupportedJpegError(
            f"{precision}-bit JPEG is not supported: jdct reads 8-bit samples only", path
        )


# --------------------------------------------------------------------------------------------
# libjpeg's messages, as sentences
# --------------------------------------------------------------------------------------------

#: ``(start of libjpeg's message, what it means for a user, error class)``, first match wins: the
#: one table of libjpeg's messages (jerror.h) that reach users. Any other message reads
#: "cannot be decoded (libjpeg: ...)". The sentences are what :class:`JpegError` reasons say,
#: followed by libjpeg's own words in parentheses.
LIBJPEG_MESSAGES: tuple[tuple[str, str, type], ...] = (
    ("Premature end of JPEG file", "truncated: the JPEG data ends before the image is complete", JpegError),
    ("Corrupt JPEG data: premature end of data segment",
     "truncated or corrupt: a scan's data ends before its last block", JpegError),
    ("Corrupt JPEG data: bad Huffman code", "corrupt: the compressed image data holds an invalid Huffman "
     "code", JpegError),
    ("Corrupt JPEG data: bad arithmetic code", "corrupt: the compressed image data holds an invalid "
     "arithmetic code", JpegError),
    ("Corrupt JPEG data: found marker", "corrupt: a restart marker is missing or out of place, so part "
     "of the image is lost", JpegError),
    ("Corrupt JPEG data:", "damaged: stray bytes before a marker were skipped; the image may be intact "
     "or partly wrong", JpegError),
    ("JPEG datastream contains no image", "no image: the file ends before its frame header (SOF); "
     "truncated?", JpegError),
    ("Invalid JPEG file structure: missing SOS", "no image data: the file ends before its first scan "
     "(SOS); truncated?", JpegError),
    ("Empty input file", "empty file (0 bytes)", NotAJpegError),
    ("Not a JPEG file", "not a JPEG: the file does not start with a JPEG marker", NotAJpegError),
    ("Invalid JPEG file structure", "corrupt: the JPEG markers are not in a valid order", JpegError),
    ("Quantization table 0x", "corrupt: the image uses a quantization table the file does not define",
     JpegError),
    ("Huffman table 0x", "corrupt: the image uses a Huffman table the file does not define", JpegError),
    ("Bogus marker length", "corrupt: a marker segment has an impossible length", JpegError),
    ("Bogus", "corrupt: a marker segment holds invalid values", JpegError),
    ("Invalid component ID", "corrupt: a scan names a component the image does not have", JpegError),
    ("Invalid progressive parameters", "corrupt: a progressive scan has invalid parameters", JpegError),
    ("Invalid SOS parameters", "corrupt: a scan has invalid parameters", JpegError),
    ("Inconsistent progression sequence", "corrupt: the progressive scans do not fit together", JpegError),
    ("Didn't expect more than one scan", "corrupt: a second scan where the image has only one", JpegError),
    ("Unsupported marker type", "corrupt: an unknown marker where a segment should start", JpegError),
    ("Maximum supported image dimension", "too large: a side over libjpeg's 65500-pixel limit", JpegError),
    ("Empty JPEG image", "unsupported: the image height is given by a DNL marker, which libjpeg "
     "does not read", UnsupportedJpegError),
    ("Unsupported JPEG data precision", "unsupported: jdct reads 8-bit JPEG only", UnsupportedJpegError),
    ("Unsupported JPEG process", "unsupported: a JPEG coding process libjpeg does not decode",
     UnsupportedJpegError),
    ("Requested features are incompatible", "unsupported: a combination of JPEG features libjpeg does "
     "not decode", UnsupportedJpegError),
    ("Warning: unknown JFIF revision number", "unusual: an unknown JFIF version number (harmless)",
     JpegError),
    ("Unknown Adobe color transform code", "corrupt: an Adobe marker names a colour transform that does "
     "not exist, so the colours cannot be known", JpegError),
    ("DCT coefficient out of range", "corrupt: a coefficient is out of the range of 8-bit JPEG data, so "
     "baseline coding cannot hold it", JpegError),
    ("Insufficient memory", "out of memory while decoding", JpegError),
)


class Tolerated(NamedTuple):
    """A libjpeg warning that strict reading lets pass: its message contains ``substring``; it came
    before the first scan, or ``anywhere``; its first number (the byte count of "N extraneous
    bytes...") is at most ``at_most`` (None: any)."""

    substring: str
    anywhere: bool = False
    at_most: Optional[int] = None


#: The libjpeg warnings that lose nothing (``tolerate=`` of the reading functions; what ``jdct
#: convert`` reads with). libjpeg says "N extraneous bytes before marker 0xXX" whenever it skips
#: bytes to find a marker, and what that means depends on where:
#:
#: - before the first scan, it skipped junk between two header segments: harmless, whatever N
#:   (so is an unknown JFIF version number);
#: - inside or after the image data, the entropy-coded data ended before the marker: N bytes were
#:   left over. A few are padding some encoders put before a restart marker or EOI (motion-JPEG
#:   frames: 1-17 bytes), or a stretch of damaged data after which the Huffman decoder fell back
#:   into step (a damaged byte mostly does that silently: a few blocks are wrong and libjpeg
#:   cannot tell); hundreds mean the decoder lost step for good and decoded the rest of the image
#:   from the wrong bits (byte-flipped scans: 185, 625 bytes before EOI; a wrong restart interval:
#:   800-1200 before every restart marker). Up to :data:`MAX_STRAY_BYTES` pass; more is damage.
MAX_STRAY_BYTES = 32
HARMLESS_WARNINGS: tuple[Tolerated, ...] = (
    Tolerated("extraneous bytes before marker"),
    Tolerated("unknown JFIF revision number"),
    Tolerated("extraneous bytes before marker", anywhere=True, at_most=MAX_STRAY_BYTES),
)


def describe_libjpeg_message(message: str) -> tuple[str, type]:
    """``(reason, error class)`` for one of libjpeg's messages: the sentence of
    :data:`LIBJPEG_MESSAGES` followed by ``(libjpeg: <message>)``."""
    for start, sentence, cls in LIBJPEG_MESSAGES:
        if message.startswith(start):
            return f"{sentence} (libjpeg: {message})", cls
    return f"cannot be decoded (libjpeg: {message})", JpegError


def _rethrow(exc: JpegError, path) -> JpegError:
    """The error to raise for ``exc``: libjpeg's words made a sentence (and the class it implies),
    ``path`` set."""
    message = getattr(exc, "libjpeg_message", None)
    if type(exc) is JpegError and message is not None:
        reason, cls = describe_libjpeg_message(message)
        exc = cls(reason)
        exc.libjpeg_message = message
    return exc.with_path(path) if path is not None else exc


def _prepare(data, path) -> bytes:
    """Common prologue: bytes-like in, refuse non-JPEGs and unsupported frames."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    _refuse_non_jpeg(data, path)
    _check_supported(data, path)
    return data


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def check_file_size(size: int, path=None, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
    """Raise ImageTooLargeError when a file of ``size`` bytes is over ``max_bytes``."""
    if size > max_bytes:
        raise ImageTooLargeError(f"file of {size} bytes is over the {max_bytes}-byte limit", path)


def read_bytes(path: os.PathLike | str, *, max_bytes: Optional[int] = None) -> bytes:
    """The whole content of the file at ``path``.

    ``max_bytes``: refuse a larger file unread (ImageTooLargeError, :func:`check_file_size`).
    Raises SourceNotFoundError (no such file) or SourceError (a directory, permission denied,
    any other OS error), each naming the path and the reason.
    """
    try:
        with open(path, "rb") as f:
            if max_bytes is not None:
                check_file_size(os.fstat(f.fileno()).st_size, path, max_bytes=max_bytes)
            return f.read()
    except FileNotFoundError:
        raise SourceNotFoundError("no such file", path) from None
    except IsADirectoryError:
        raise SourceError("is a directory, not a file", path) from None
    except PermissionError:
        raise SourceError("permission denied", path) from None
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or exc}", path) from None


def read_header(data: bytes, *, path=None, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Header facts of a JPEG (see ``jdct_cli._decoder.HeaderInfo``): width, height, precision,
    num_components, color_space, adobe_transform, jfif, progressive, arithmetic, restart_interval,
    components [{id, h, v, quant_table, blocks_high, blocks_wide}], exif (raw TIFF bytes or None).

    ``path`` only names the file in errors. Raises NotAJpegError, UnsupportedJpegError,
    ImageTooLargeError (more than ``max_pixels`` declared) or JpegError.
    """
    data = _prepare(data, path)
    try:
        return _decoder.read_header(data, max_pixels=max_pixels)
    except JpegError as exc:
        raise _rethrow(exc, path) from None


def read_coefficients(
    data: bytes, *, path=None, max_pixels: int = DEFAULT_MAX_PIXELS, strict: bool = False,
    tolerate: Sequence[Tolerated] = (),
) -> Coefficients:
    """Quantized DCT coefficients of every component, without inverse DCT.

    Returns :class:`Coefficients` ``(components, quant, warnings)``: ``components[i]`` int16
    ``(blocks_high, blocks_wide, 64)`` natural order (padded to whole MCUs), ``quant`` uint16
    ``(n_components, 64)`` natural order. Dequantized coefficient = ``components[i] * quant[i]``.
    ``strict=True`` turns libjpeg warnings (truncated data...) into JpegError, except those met
    the ``tolerate`` list lets pass (:class:`Tolerated`, e.g. :data:`HARMLESS_WARNINGS`).
    """
    data = _prepare(data, path)
    try:
        comps, quant, warnings = _decoder.read_coefficients(data, max_pixels=max_pixels, strict=strict,
                                                            tolerate=tolerate)
    except JpegError as exc:
        raise _rethrow(exc, path) from None
    return Coefficients(list(comps), quant, int(warnings))


def decode(
    data: bytes,
    *,
    path=None,
    scale: int = 1,
    roi: Optional[tuple[int, int, int, int]] = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    strict: bool = False,
    scale_num: int = 1,
    tolerate: Sequence[Tolerated] = (),
) -> Decoded:
    """Decode to RGB with libjpeg (islow IDCT, fancy upsampling); EXIF orientation NOT applied.

    ``scale`` 1, 2, 4 or 8 (libjpeg DCT scaling, output ``ceil(W/scale) x ceil(H/scale)``), or
    ``scale=8, scale_num=M`` for M/8 scaling, M in 1..16 (output ``ceil(W*M/8) x ceil(H*M/8)``);
    ``roi`` ``(x, y, width, height)`` in output pixels decodes only that region.
    ``strict=True``: any libjpeg warning but those ``tolerate`` lets pass (:class:`Tolerated`, e.g.
    :data:`HARMLESS_WARNINGS`) is a JpegError, including the ones only the rest of the file shows:
    the data below the region is entropy-decoded (no IDCT) up to EOI, since damaged entropy-coded
    data often shows only at its end (bytes left over before EOI, or none left for the last
    blocks).
    Returns :class:`Decoded` ``(rgb, warnings)``, ``rgb`` uint8 C-contiguous ``(H, W, 3)``.
    """
    data = _prepare(data, path)
    try:
        rgb, warnings = _decoder.decode(data, scale=scale, roi=roi, max_pixels=max_pixels, strict=strict,
                                          scale_num=scale_num, tolerate=tolerate, to_end=strict)
    except JpegError as exc:
        raise _rethrow(exc, path) from None
    return Decoded(rgb, int(warnings))


def read_coefficient_rects(
    data: bytes, rects: Sequence[Optional[tuple[int, int, int, int]]], *, ks: Optional[Sequence[int]] = None,
    path=None, max_pixels: int = DEFAULT_MAX_PIXELS, strict: bool = False, tolerate: Sequence[Tolerated] = (),
) -> Rects:
    """The quantized coefficients of a block rectangle of each component, decoding as little of
    the file as its structure allows (see ``jdct_cli._decoder.read_coefficient_rects``).

    ``rects[i]``: None or ``(row0, col0, row1, col1)`` in 8x8 blocks of component i (its padded
    grid, as :func:`read_coefficients` returns it); ``ks[i]``: keep the top-left k x k
    coefficients of each block (1..8, default 8). The values equal ``read_coefficients(data)``'s
    at the same places. A single-scan file is entropy-decoded down to the last MCU row needed only
    (or, when its restart interval divides its MCU rows, only the restart segments covering the
    rectangles); multi-scan files (progressive) are decoded whole. Damage below the rows decoded
    is not seen. Returns :class:`Rects`; a rectangle outside its component is a ValueError.
    """
    data = _prepare(data, path)
    try:
        comps, quant, warnings, info = _decoder.read_coefficient_rects(
            data, rects, ks=ks, max_pixels=max_pixels, strict=strict, tolerate=tolerate)
    except JpegError as exc:
        raise _rethrow(exc, path) from None
    return Rects(list(comps), quant, int(warnings), info)


def read_coefficient_rects_batch(
    datas: Sequence[bytes], rects: np.ndarray, out: np.ndarray, offsets: np.ndarray, *,
    strides: Optional[np.ndarray] = None, ks: Optional[np.ndarray] = None, threads: int = 1,
    paths: Optional[Sequence[Any]] = None, max_pixels: int = DEFAULT_MAX_PIXELS, strict: bool = False,
    tolerate: Sequence[Tolerated] = (),
) -> RectBatch:
    """:func:`read_coefficient_rects` of many JPEGs at once into one int16 buffer, on ``threads``
    C threads, the GIL released throughout (the loader's hot path: no sniffing, the bytes are
    trusted to be JPEGs a conversion checked; each item still fails alone, with a clear error).

    ``rects`` int ``(n, C, 4)`` ``(row0, col0, row1, col1)`` per item and component (row1 ==
    row0: none), ``out`` a writable C-contiguous int16 array used as a flat buffer, ``offsets``
    ``(n, C)`` where each rectangle's first block goes, ``strides`` ``(n, C)`` elements from one
    block row to the next (default: packed, ``(col1 - col0) * k * k``), ``ks`` ``(n, C)``
    (default 8). Block ``(r, c)`` of item i, component j lands at ``out.flat[offsets[i, j] +
    (r - row0) * strides[i, j] + (c - col0) * k * k :][:k * k]`` (natural order within the k x k
    square). ``paths[i]`` names item i in its error. Returns :class:`RectBatch`.
    """
    errors, warnings, quant, ncomp = _decoder.read_coefficient_rects_batch(
        datas, rects, out, offsets, strides=strides, ks=ks, threads=threads, max_pixels=max_pixels,
        strict=strict, tolerate=tolerate)
    for i, exc in enumerate(errors):
        if isinstance(exc, JpegError):
            errors[i] = _rethrow(exc, None if paths is None else paths[i])
    return RectBatch(errors, warnings, quant, ncomp)


def transcode(data: bytes, *, path=None, optimize: bool = True, restart_interval: int = 0,
              keep_markers: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, strict: bool = False,
              tolerate: Sequence[Tolerated] = ()) -> tuple[bytes, int]:
    """Lossless transcoding to a baseline sequential Huffman JPEG: ``(jpeg_bytes, warnings)``.

    The result holds the same quantized coefficients (in every block of the image), quantization
    tables, sampling factors, dimensions and colour space as ``data``, whatever its coding
    (progressive, arithmetic, non-interleaved scans); SOF1 instead of SOF0 when a table has
    16-bit entries. ``optimize``: optimal Huffman tables (smaller, a second pass);
    ``restart_interval``: MCUs between restart markers (0: none); ``keep_markers``: copy the APPn
    and COM markers (EXIF, ICC...). libjpeg refuses some files it decodes (coefficients out of
    the range baseline coding can hold, sampling too large for one interleaved scan, a table
    redefined between scans): JpegError.
    """
    data = _prepare(data, path)
    try:
        out, warnings = _decoder.transcode(data, optimize=optimize, restart_interval=restart_interval,
                                           keep_markers=keep_markers, max_pixels=max_pixels, strict=strict,
                                           tolerate=tolerate)
    except JpegError as exc:
        raise _rethrow(exc, path) from None
    return out, int(warnings)


def write_coefficients(components: Sequence[np.ndarray], quant: np.ndarray, width: int, height: int,
                       sampling: Sequence[tuple[int, int]], *, color_space: str = "YCbCr", optimize: bool = False,
                       restart_interval: int = 0) -> bytes:
    """A JPEG file of ``width x height`` pixels holding quantized coefficients we hold.

    ``components[i]``: int16 ``(blocks_high, blocks_wide, 64)`` natural order, at least the
    component's blocks and at most its blocks padded to whole MCUs (what :func:`read_coefficients`
    returns, or a store's ``y``/``cb``/``cr`` moved to ``(rows, cols, 64)``); ``quant`` uint16
    ``(n_components, 64)`` (entries 1..65535, natural order); ``sampling[i]`` ``(h, v)``;
    ``color_space`` "YCbCr", "GRAYSCALE", "RGB", "CMYK" or "YCCK". Blocks beyond the image in the
    last MCU column/row are written as libjpeg writes them (DC of the block to the left, AC 0).
    ``read_coefficients`` of the result gives the coefficients back. Bad shapes: ValueError.
    """
    return _decoder.write_coefficients(components, quant, width, height, sampling, color_space=color_space,
                                       optimize=optimize, restart_interval=restart_interval)


def encode(rgb: np.ndarray, quality: int = 100, subsampling: str = "4:2:0", *,
           tables: Optional[tuple[Sequence[int], Sequence[int]]] = None, optimize: bool = False) -> bytes:
    """JPEG bytes of uint8 ``(H, W, 3)`` RGB with libjpeg-turbo (islow DCT): libjpeg's tables at
    ``quality``, or ``tables`` ``(luma, chroma)`` (64 integers 1..65535 each, natural order, e.g.
    learned ones; over 255 makes an extended SOF1 file); ``subsampling`` "4:2:0", "4:2:2",
    "4:4:4" or "4:4:0"; ``optimize``: optimal Huffman tables."""
    return _decoder.encode(rgb, quality, subsampling, tables=tables, optimize=optimize)


def libjpeg_version() -> str:
    """libjpeg-turbo's version as compiled against, e.g. "2.1.5 (libjpeg API 62)"."""
    return _decoder.libjpeg_version()


def first_warning(data: bytes, *, path=None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Optional[str]:
    """The first libjpeg warning reading ``data``'s coefficients, as a sentence (the reason
    :func:`read_coefficients` with ``strict=True`` raises), or None when there is none. For
    reports: it reads the coefficients again."""
    try:
        read_coefficients(data, path=path, max_pixels=max_pixels, strict=True)
    except JpegError as exc:
        return exc.reason
    return None


# --------------------------------------------------------------------------------------------
# EXIF orientation
# --------------------------------------------------------------------------------------------


def exif_orientation(exif_payload: Optional[bytes]) -> Optional[int]:
    """The EXIF Orientation (tag 0x0112 of IFD0) as an int 1..8, or None.

    ``exif_payload``: the APP1 payload from the TIFF header on (a leading ``b"Exif\\0\\0"`` is
    tolerated). Both byte orders ("II" little-endian, "MM" big-endian) are handled. Never raises
    on malformed data: absent, truncated, garbage or out-of-range (0, 9...) values give None.
    """
    if not exif_payload:
        return None
    try:
        buf = bytes(exif_payload)
        if buf.startswith(b"Exif\x00\x00"):
            buf = buf[6:]
        if len(buf) < 8:
            return None
        if buf[:2] == b"II":
            order = "little"
        elif buf[:2] == b"MM":
            order = "big"
        else:
            return None

        def u16(off: int) -> int:
            return int.from_bytes(buf[off : off + 2], order)

        def u32(off: int) -> int:
            return int.from_bytes(buf[off : off + 4], order)

        if u16(2) != 42:
            return None
        ifd = u32(4)
        if ifd < 8 or ifd + 2 > len(buf):
            return None
        count = u16(ifd)
        for i in range(count):
            entry = ifd + 2 + 12 * i
            if entry + 12 > len(buf):
                return None
            if u16(entry) != 0x0112:
                continue
            kind, n = u16(entry + 2), u32(entry + 4)
            if n < 1:
                return None
            if kind in (3, 8):  # (S)SHORT: stored left-justified in the 4-byte value field
                value = u16(entry + 8)
            elif kind in (4, 9):  # (S)LONG: not standard, seen in the wild (Pillow accepts it)
                value = u32(entry + 8)
            elif kind in (1, 7):  # BYTE / UNDEFINED
                value = buf[entry + 8]
            else:
                return None
            return value if 1 <= value <= 8 else None
        return None
    except Exception:  # noqa: BLE001 - EXIF is untrusted; garbage must never break reading pixels
        return None


def apply_orientation(rgb: np.ndarray, orientation: Optional[int]) -> np.ndarray:
    """``rgb`` (``(H, W)`` or ``(H, W, C)``, any dtype) turned upright for EXIF ``orientation``.

    1/None: unchanged; 2: mirror left-right; 3: rotate 180; 4: mirror top-bottom; 5: transpose;
    6: rotate 90 clockwise; 7: transverse; 8: rotate 90 counter-clockwise (the same result as
    Pillow's ``ImageOps.exif_transpose``). Orientations 5-8 swap height and width.
    Returns a new C-contiguous array (``rgb`` itself when nothing is to be done).
    """
    if orientation in (None, 1):
        return rgb
    if orientation == 2:
        out = rgb[:, ::-1]
    elif orientation == 3:
        out = rgb[::-1, ::-1]
    elif orientation == 4:
        out = rgb[::-1]
    elif orientation == 5:
        out = np.swapaxes(rgb, 0, 1)
    elif orientation == 6:
        out = np.rot90(rgb, k=-1)
    elif orientation == 7:
        out = np.swapaxes(rgb, 0, 1)[::-1, ::-1]
    elif orientation == 8:
        out = np.rot90(rgb, k=1)
    else:
        raise ValueError(f"EXIF orientation must be 1..8 or None, got {orientation!r}")
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------
# Sampling names
# --------------------------------------------------------------------------------------------

_RATIO_NAMES = {
    (1, 1): "4:4:4",
    (2, 1): "4:2:2",
    (2, 2): "4:2:0",
    (1, 2): "4:4:0",
    (4, 1): "4:1:1",
    (4, 2): "4:1:0",
}


def sampling_name(components: Sequence[Any], color_space: Optional[str] = None) -> str:
    """The chroma subsampling as users name it.

    ``components``: per-component dicts with ``h`` and ``v`` (as in ``read_header()``), or
    ``(h, v)`` pairs. Returns "grayscale" (one component), "CMYK", "YCCK", "4:4:4", "4:2:2",
    "4:2:0", "4:4:0", "4:1:1", "4:1:0" for three components whose two chroma components share
    factors dividing the first one's, else e.g. "other (2x2,1x1,1x2)".
    """
    factors = []
    for comp in components:
        if isinstance(comp, dict):
            factors.append((int(comp["h"]), int(comp["v"])))
        else:
            h, v = comp
            factors.append((int(h), int(v)))
    space = (color_space or "").upper()
    if len(factors) == 1 or space == "GRAYSCALE":
        return "grayscale"
    if space in ("CMYK", "YCCK"):
        return space
    if len(factors) == 3 and factors[1] == factors[2]:
        (yh, yv), (ch, cv) = factors[0], factors[1]
        if yh % ch == 0 and yv % cv == 0:
            name = _RATIO_NAMES.get((yh // ch, yv // cv))
            if name is not None:
                return name
    return "other (" + ",".join(f"{h}x{v}" for h, v in factors) + ")"
