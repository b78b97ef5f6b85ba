#!/usr/bin/env python3
"""Writes the small JPEG fixtures of this folder (run once; the files are committed).

Every picture is a crop of scikit-image's ``chelsea`` photograph (Stefan van der Walt, CC0),
encoded by Pillow or, where Pillow cannot (4:4:0, 4:1:1, 4:1:0, mixed sampling, RGB colour
space, 16-bit tables, lossless transcodes to progressive / arithmetic / restart markers), by
libjpeg-turbo's own ``cjpeg`` and ``jpegtran`` (Debian: ``apt-get install libjpeg-turbo-progs``).
A few files are then edited byte-wise to be broken in one known way (truncated, corrupt, a
declared size, a 12-bit or lossless frame header, an Adobe transform). ``INDEX.tsv`` lists what
each file is; the tests read their facts from there.

    python3 tests/data/jpegs/make_jpegs.py        # rewrites the files next to this script
"""
from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

HERE = Path(__file__).resolve().parent

#: name -> (kind, made by, what it is); written to INDEX.tsv
INDEX: dict[str, tuple[str, str, str]] = {}


def _photo(w: int, h: int) -> Image.Image:
    """The cat's head from chelsea (451x300), resized to w x h."""
    return Image.fromarray(skimage.data.chelsea()[20:260, 80:440]).resize((w, h), Image.Resampling.LANCZOS)


def _pillow(name: str, im: Image.Image, note: str, kind: str = "jpeg", **opts) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **opts)
    return _write(name, buf.getvalue(), kind, "Pillow", note)


def _write(name: str, data: bytes, kind: str, maker: str, note: str) -> bytes:
    (HERE / name).write_bytes(data)
    INDEX[name] = (kind, maker, note)
    return data


def _tool(name: str, cmd: list[str], stdin: bytes, note: str, kind: str = "jpeg") -> bytes:
    """Run cjpeg/jpegtran on stdin; the command is recorded without paths (the input is stdin)."""
    out = subprocess.run(cmd, input=stdin, capture_output=True, check=True).stdout
    return _write(name, out, kind, " ".join([Path(cmd[0]).name] + [c for c in cmd[1:] if not c.startswith("/")]), note)


def _ppm(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PPM")
    return buf.getvalue()


def _segments(data: bytes):
    """(marker, offset of the 0xFF) of each segment up to the first SOS (fixtures are well formed)."""
    i = 2
    while i + 4 <= len(data):
        marker = data[i + 1]
        yield marker, i
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xDA:
            return


def _sof(data: bytes) -> int:
    return next(i for m, i in _segments(data) if m in (0xC0, 0xC1, 0xC2))


def _sos_end(data: bytes) -> int:
    i = next(i for m, i in _segments(data) if m == 0xDA)
    return i + 2 + struct.unpack(">H", data[i + 2:i + 4])[0]


def main() -> None:
    for old in HERE.glob("*.jpg"):
        old.unlink()
    cjpeg, jpegtran = shutil.which("cjpeg"), shutil.which("jpegtran")
    if not (cjpeg and jpegtran):
        raise SystemExit("cjpeg and jpegtran are needed: apt-get install libjpeg-turbo-progs")

    im = _photo(75, 50)  # not a multiple of any MCU size: every file has padding blocks
    ppm = _ppm(im)

    # ordinary photographs, each chroma sampling
    base = _pillow("420.jpg", im, "4:2:0, quality 90 (JFIF)", quality=90, subsampling=2)
    _pillow("422.jpg", im, "4:2:2, quality 90", quality=90, subsampling=1)
    _pillow("444.jpg", im, "4:4:4, quality 90", quality=90, subsampling=0)
    _tool("440.jpg", [cjpeg, "-quality", "90", "-sample", "1x2,1x1,1x1"], ppm, "4:4:0")
    _tool("411.jpg", [cjpeg, "-quality", "90", "-sample", "4x1,1x1,1x1"], ppm, "4:1:1")
    _tool("410.jpg", [cjpeg, "-quality", "90", "-sample", "4x2,1x1,1x1"], ppm, "4:1:0")
    _tool("mixed_sampling.jpg", [cjpeg, "-quality", "90", "-sample", "2x2,2x1,1x1"], ppm,
          "components 2x2, 2x1, 1x1")
    _pillow("gray.jpg", im.convert("L"), "grayscale, 1 component", quality=90)
    _tool("gray_2x2.jpg", [cjpeg, "-grayscale", "-sample", "2x2", "-quality", "90"], ppm,
          "grayscale whose one component declares 2x2 sampling")
    _tool("rgb_colorspace.jpg", [cjpeg, "-rgb", "-quality", "90"], ppm, "RGB colour space (Adobe transform 0)")
    cmyk = _pillow("cmyk.jpg", im.convert("CMYK"), "CMYK, Adobe transform 0 (inverted)", quality=90)
    # the same data declared YCCK (Adobe transform 2): a valid YCCK file
    app14 = next(i for m, i in _segments(cmyk) if m == 0xEE)
    assert cmyk[app14 + 4:app14 + 9] == b"Adobe" and cmyk[app14 + 15] == 0
    ycck = cmyk[:app14 + 15] + b"\x02" + cmyk[app14 + 16:]
    _tool("ycck.jpg", [jpegtran, "-restart", "2B"], ycck,
          "YCCK (Adobe transform 2; cmyk.jpg's data relabelled), restart interval 2")
    _tool("q5_16bit_qtables.jpg", [cjpeg, "-quality", "5"], ppm, "quality 5 without -baseline: 16-bit DQT, SOF1")

    # lossless transcodes of 420.jpg: the same quantized coefficients
    _tool("progressive.jpg", [jpegtran, "-progressive"], base, "420.jpg made progressive (jpegtran)")
    _tool("arithmetic.jpg", [jpegtran, "-arithmetic"], base, "420.jpg arithmetic-coded (SOF9)")
    _tool("arithmetic_progressive.jpg", [jpegtran, "-arithmetic", "-progressive"], base,
          "420.jpg arithmetic-coded progressive (SOF10)")
    _tool("restart_every_mcu.jpg", [jpegtran, "-restart", "1B"], base, "420.jpg with a restart marker every MCU")
    _tool("restart_2mcu.jpg", [jpegtran, "-restart", "2B"], base, "420.jpg with a restart marker every 2 MCUs")
    _tool("optimized.jpg", [jpegtran, "-optimize"], base, "420.jpg with optimized Huffman tables")

    # EXIF orientation 1..8 (pixels as stored; the tag says how to show them)
    small = _photo(48, 32)
    for k in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = k
        _pillow(f"exif_orientation_{k}.jpg", small, f"EXIF orientation {k}", quality=85, exif=exif.tobytes())

    # sizes that are not whole blocks, and strips
    for w, h in ((1, 1), (7, 13), (33, 31), (200, 1), (1, 120)):
        _pillow(f"size_{w}x{h}.jpg", _photo(w, h), f"{w}x{h} pixels", quality=90)

    # broken in one known way
    n = len(base)
    _write("truncated_50pct.jpg", base[: n // 2], "broken", "cut", "420.jpg cut in the middle of its scan")
    sof = _sof(base)
    _write("truncated_in_sof.jpg", base[: sof + 6], "broken", "cut", "420.jpg cut inside its SOF marker")
    sos = next(i for m, i in _segments(base) if m == 0xDA)
    _write("truncated_before_scan.jpg", base[:sos], "broken", "cut", "420.jpg cut before its SOS marker")
    _write("truncated_before_frame.jpg", base[:sof], "broken", "cut", "420.jpg cut before its SOF marker: no image")
    prog = (HERE / "progressive.jpg").read_bytes()
    _write("progressive_no_eoi.jpg", prog[:-2], "broken", "cut", "progressive.jpg without its EOI marker")
    start = _sos_end(base)
    corrupt = bytearray(base)
    rng = np.random.default_rng(0)
    for i in rng.choice(np.arange(start + 10, n - 10), 12, replace=False):
        corrupt[i] = (corrupt[i] + 1 + int(rng.integers(0, 254))) % 256
        if corrupt[i] == 0xFF:
            corrupt[i] = 0xFE
    _write("corrupt_entropy.jpg", bytes(corrupt), "broken", "byte edits", "12 bytes of 420.jpg's scan changed")
    dqt = next(i for m, i in _segments(base) if m == 0xDB)
    _write("junk_before_marker.jpg", base[:dqt] + b"junk" + base[dqt:], "broken", "byte edits",
           "4 stray bytes before a marker (libjpeg warns, the image is intact)")
    sof1 = bytearray(base)
    sof1[sof + 1], sof1[sof + 4] = 0xC1, 12
    _write("header_12bit.jpg", bytes(sof1), "unsupported", "byte edits", "420.jpg's frame header set to SOF1, 12-bit")
    sof3 = bytearray(base)
    sof3[sof + 1] = 0xC3
    _write("header_lossless.jpg", bytes(sof3), "unsupported", "byte edits", "420.jpg's frame header set to SOF3 (lossless)")
    big = bytearray(base[:start])  # header only: no scan data, no EOI
    big[sof + 5:sof + 9] = struct.pack(">HH", 65535, 65535)
    _write("declares_65535x65535.jpg", bytes(big), "broken", "byte edits",
           "420.jpg's markers declaring 65535x65535 pixels, no scan data (a decompression bomb)")

    # not JPEG at all, named .jpg
    tiny = _photo(6, 4)
    for fmt, name in (("PNG", "png_named.jpg"), ("GIF", "gif_named.jpg"), ("BMP", "bmp_named.jpg"),
                      ("WEBP", "webp_named.jpg")):
        buf = io.BytesIO()
        tiny.save(buf, fmt)
        _write(name, buf.getvalue(), "not jpeg", "Pillow", f"a {fmt} file named .jpg")
    _write("text_named.jpg", b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n", "not jpeg", "text",
           "an HTML error page named .jpg")
    _write("empty.jpg", b"", "not jpeg", "empty", "0 bytes")

    rows = ["file\tkind\tmade by\twhat"] + [f"{k}\t{a}\t{b}\t{c}" for k, (a, b, c) in sorted(INDEX.items())]
    (HERE / "INDEX.tsv").write_text("\n".join(rows) + "\n")
    total = sum((HERE / k).stat().st_size for k in INDEX)
    print(f"wrote {len(INDEX)} files, {total:,} bytes")


if __name__ == "__main__":
    main()
