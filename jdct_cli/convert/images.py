"""The images layout's treatment of one source file: what JPEG is stored for it, and why.

Decisions, in order (the first that applies):

1. ``--exif apply`` and an EXIF orientation other than 1: **re-encoded** upright;
2. a colour space other than YCbCr or grayscale (CMYK, YCCK, RGB...): **re-encoded**;
3. a sampling the device path does not decode (4:4:0, 4:1:1, 4:1:0, mixed factors): **re-encoded**;
4. a longest side over ``--max-side``: **re-encoded** at that size;
5. progressive, arithmetic-coded or one scan per component: **transcoded** losslessly to one
   baseline Huffman scan (the same quantized coefficients: no pixel changes);
6. ``--restart-segments``: **transcoded** losslessly with a restart marker every K MCUs (K the
   largest divisor of the MCUs per row up to 4), so that the loader decodes only the restart
   segments a crop covers;
7. otherwise **verbatim**: the source file's bytes.

Re-encoding decodes with libjpeg's DCT scaling by 1/2, 1/4 or 1/8 when the image is at least
twice the target size (the scalings the val transform uses: on the 43 imagenet-originals over
512 px, 41-99 dB from the full decode's resize for 90 % of them, where also allowing 3/8..6/8 fell
to 33 dB, its sharper cut-off aliasing fine detail, for the same time), turns the image upright
when asked, resizes it with the antialiased bilinear
filter of the crops layout (Pillow's arithmetic) so that its longest side is ``--max-side`` (when
larger), and encodes it at quality 100, 4:2:0, with optimal Huffman tables. A file libjpeg cannot
transcode as one baseline scan (sampling factors too large for an interleaved scan, a table
redefined between scans) is re-encoded too.

Every decode is strict (damage is a failure, see :data:`jdct_cli.jpeg.HARMLESS_WARNINGS`): re-encoded
and transcoded files are checked to their last coefficient on the way. A verbatim file is checked
as ``--check`` says: ``markers`` (its marker structure, from SOI through its one scan to EOI: a
truncated file fails) or ``decode`` (every coefficient decoded, strictly).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _decoder, jpeg
from ..errors import JpegError
from ..store import SAMPLINGS, TREATMENTS
from ..transforms import DCT_EIGHTHS_VAL, oriented_size

#: Quality, chroma subsampling and Huffman tables of re-encoded images.
REENCODE_QUALITY = 100
REENCODE_SUBSAMPLING = "4:2:0"
#: What ``attrs["jdct"]["reencode"]`` records.
REENCODE = {"quality": REENCODE_QUALITY, "subsampling": REENCODE_SUBSAMPLING, "optimize_coding": True,
            "resize_filter": "Pillow bilinear (antialiased)",
            "dct_scaling": "1/2, 1/4 or 1/8 when the image is at least twice the target"}
#: libjpeg's words when it cannot write a file's coefficients as one baseline scan (the file is
#: fine: it is re-encoded instead).
TRANSCODE_REFUSALS = ("Sampling factors too large for interleaved scan",
                      "Cannot transcode due to multiple use of quantization table")
#: Largest restart interval (MCUs) of ``--restart-segments``: smaller segments let a crop's
#: columns be cut closer, larger ones cost fewer bytes (benchmarks/RESULTS.md).
MAX_RESTART_MCUS = 4

_TREATMENT = {name: code for code, name in enumerate(TREATMENTS)}
_SAMPLING = {name: code for code, name in enumerate(SAMPLINGS) if code}
_SOS, _EOI = 0xDA, 0xD9


@dataclass(frozen=True)
class StoredImage:
    """What is stored for one file: the JPEG ``data``, its ``width`` x ``height`` (pixels), its
    ``sampling`` and ``treatment`` codes (:data:`~jdct_cli.store.SAMPLINGS`,
    :data:`~jdct_cli.store.TREATMENTS`)."""

    data: bytes
    width: int
    height: int
    sampling: int
    treatment: int

    @property
    def treatment_name(self) -> str:
        return TREATMENTS[self.treatment]


def restart_interval(width: int, components: list[dict[str, Any]]) -> int:
    """The restart interval of ``--restart-segments`` for an image ``width`` pixels wide with
    these components: the largest divisor of its MCUs per row up to :data:`MAX_RESTART_MCUS`
    (a divisor, so that every restart segment lies within one MCU row)."""
    hmax = max(c["h"] for c in components) if len(components) > 1 else 1
    mcus = -(-width // (8 * hmax))
    return max(k for k in range(1, MAX_RESTART_MCUS + 1) if mcus % k == 0)


def store_image(data: bytes, path, opts) -> StoredImage:
    """The JPEG the images layout stores for the file ``data`` (named ``path`` in errors), under
    ``opts`` (:class:`~jdct_cli.convert.ConvertOptions`: ``exif``, ``max_side``,
    ``restart_segments``, ``check``, ``max_pixels``). Raises JpegError subclasses for files that
    cannot be stored (not a JPEG, damaged, unsupported, over the pixel budget)."""
    header = jpeg.read_header(data, path=path, max_pixels=opts.max_pixels)
    width, height = header["width"], header["height"]
    orientation = jpeg.exif_orientation(header.get("exif")) if opts.exif == "apply" else None
    name = jpeg.sampling_name(header["components"], header["color_space"])
    if orientation not in (None, 1):
        reason = "reencoded: exif orientation"
    elif header["color_space"] not in ("YCbCr", "GRAYSCALE"):
        reason = "reencoded: colour space"
    elif name not in _SAMPLING:
        reason = "reencoded: sampling"
    elif opts.max_side and max(width, height) > opts.max_side:
        reason = "reencoded: larger than max-side"
    else:
        reason = None
    if reason is not None:
        return _reencode(data, path, header, orientation or 1, opts, reason)
    segments = jpeg.marker_segments(data, through_scans=True)
    if header["progressive"]:
        treatment = "transcoded: progressive"
    elif header["arithmetic"]:
        treatment = "transcoded: arithmetic"
    elif sum(1 for marker, _, _ in segments if marker == _SOS) > 1:
        treatment = "transcoded: multi-scan"
    elif opts.restart_segments:
        treatment = "transcoded: restart segments"
    else:
        _check(data, path, opts, segments)
        return StoredImage(data, width, height, _SAMPLING[name], _TREATMENT["verbatim"])
    interval = restart_interval(width, header["components"]) if opts.restart_segments else 0
    try:
        out, _ = jpeg.transcode(data, path=path, optimize=True, restart_interval=interval, strict=True,
                                tolerate=jpeg.HARMLESS_WARNINGS, max_pixels=opts.max_pixels)
    except JpegError as exc:
        if (exc.libjpeg_message or "").startswith(TRANSCODE_REFUSALS):
            return _reencode(data, path, header, 1, opts, "reencoded: not transcodable")
        raise
    return StoredImage(out, width, height, _SAMPLING[name], _TREATMENT[treatment])


def _check(data: bytes, path, opts, segments: list) -> None:
    """``--check``: the marker structure to EOI (``markers``; ``segments``: the file's, through
    its scans), or a strict decode (``decode``)."""
    if opts.check == "decode":
        jpeg.read_coefficients(data, path=path, strict=True, tolerate=jpeg.HARMLESS_WARNINGS,
                               max_pixels=opts.max_pixels)
        return
    sos = [(off, n) for marker, off, n in segments if marker == _SOS]
    if not segments or segments[-1][0] != _EOI:
        raise JpegError("truncated: the JPEG data ends before its EOI marker", path)
    scan_start = sos[0][0] + sos[0][1] if sos else None
    if scan_start is None or segments[-1][1] - 2 <= scan_start:
        raise JpegError("no image data: the scan holds no entropy-coded data", path)


def _reencode(data: bytes, path, header: dict, orientation: int, opts, reason: str) -> StoredImage:
    """Decode (DCT-scaled), turn upright, resize to fit ``opts.max_side``, encode at q100 4:2:0."""
    width, height = header["width"], header["height"]
    ow, oh = oriented_size(width, height, orientation)
    longest = max(ow, oh)
    limit = opts.max_side if opts.max_side and longest > opts.max_side else longest
    tw, th = max(1, round(ow * limit / longest)), max(1, round(oh * limit / longest))
    sw, sh = (th, tw) if orientation in (5, 6, 7, 8) else (tw, th)  # the target in stored orientation
    m = next((m for m in DCT_EIGHTHS_VAL if width * m / 8 >= sw and height * m / 8 >= sh), 8)
    rgb, _ = jpeg.decode(data, path=path, scale=8, scale_num=m, strict=True, tolerate=jpeg.HARMLESS_WARNINGS,
                         max_pixels=opts.max_pixels)
    rgb = jpeg.apply_orientation(rgb, orientation)
    if rgb.shape[:2] != (th, tw):
        rgb = _decoder.resize_bilinear(rgb, (0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0])), tw, th)
    out = jpeg.encode(rgb, REENCODE_QUALITY, REENCODE_SUBSAMPLING, optimize=True)
    if opts.restart_segments:
        head = jpeg.read_header(out)
        out, _ = jpeg.transcode(out, optimize=True, restart_interval=restart_interval(tw, head["components"]))
    return StoredImage(out, tw, th, _SAMPLING[REENCODE_SUBSAMPLING], _TREATMENT[reason])
