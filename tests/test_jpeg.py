"""The Python JPEG layer (jdct_cli.jpeg) and the IJG tables (jdct_cli.jpegmath.quant) against
independent references: Pillow's parser, Pillow's encoder, hand-built TIFF/EXIF structures, a marker
walk written here, the committed fixtures of tests/data/jpegs/, the photo_tree photographs and,
when present, the real files of ../shared/data."""
from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, JpegImagePlugin, features

import jpegfiles
from conftest import HAVE_SHARED
from jdct_cli import _decoder, jpeg
from jdct_cli.errors import (
    ImageTooLargeError,
    JdctError,
    JpegError,
    NotAJpegError,
    SourceError,
    SourceNotFoundError,
    UnsupportedJpegError,
)
from jdct_cli.jpegmath import quant
from jdct_cli.jpegmath.quant import estimate_quality, quality_fit


def _pillow_bytes(fmt: str, **kwargs) -> bytes:
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _originals(n):
    """About n of ../shared's imagenet-originals, evenly spread ([] without ../shared)."""
    files = jpegfiles.shared_files("imagenet-originals", "*/*.JPEG")
    return files[:: max(1, len(files) // n)][:n]


def _good(photo_tree, n=40):
    """Committed JPEG fixtures, every 4th photo_tree photograph and about n real originals."""
    return [jpegfiles.path(name) for name in jpegfiles.GOOD] + jpegfiles.photos(photo_tree, step=4) + _originals(n)


# ---------------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    "fmt, expected",
    [("PNG", "PNG"), ("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("WEBP", "WebP"), ("JPEG", "JPEG")],
)
def test_sniff_format_on_pillow_written_files(fmt, expected):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow was built without WebP")
    assert jpeg.sniff_format(_pillow_bytes(fmt)) == expected


def test_sniff_format_text_empty_and_unknown():
    assert jpeg.sniff_format(b"") == "empty"
    assert jpeg.sniff_format(b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>") == "text"
    assert jpeg.sniff_format("caf\u00e9 au lait, d\u00e9j\u00e0 vu\n".encode()) == "text"
    assert jpeg.sniff_format(bytes(range(256))) is None
    assert jpeg.sniff_format(b"BM, a text that starts like a bitmap") == "text"


DISGUISED = [
    ("png_named.jpg", "PNG"),
    ("gif_named.jpg", "GIF"),
    ("webp_named.jpg", "WebP"),
    ("bmp_named.jpg", "BMP"),
    ("text_named.jpg", "text"),
] + ([
    ("variants/png_disguised.JPEG", "PNG"),
    ("variants/gif_disguised.JPEG", "GIF"),
    ("variants/webp_disguised.JPEG", "WebP"),
    ("variants/bmp_disguised.JPEG", "BMP"),
    ("variants/text_file.JPEG", "text"),
    ("jpeg-decoder/reftest/images/mozilla/jpg-size-6x6.jpg", "PNG"),
] if HAVE_SHARED else [])


def _fixture(name):
    """Path of a committed fixture (bare name) or of ../shared's odd-jpegs/<name>."""
    return jpegfiles.shared_odd(name)[0] if "/" in name else jpegfiles.path(name)


@pytest.mark.parametrize("name, fmt", DISGUISED)
def test_disguised_files_raise_not_a_jpeg_naming_format_and_path(name, fmt):
    path = _fixture(name)
    data = path.read_bytes()
    # Pillow, an independent parser, agrees on what the file really is (text: it refuses it)
    if fmt != "text":
        with Image.open(path) as im:
            assert im.format.upper() == fmt.upper()
    for call in (jpeg.read_header, jpeg.read_coefficients, jpeg.decode):
        with pytest.raises(NotAJpegError) as info:
            call(data, path=path)
        assert info.value.detected_format == fmt
        assert info.value.path == str(path)
        assert str(path) in str(info.value) and fmt in str(info.value)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["empty.jpg"] + (["variants/empty.JPEG"] if HAVE_SHARED else []))
def test_empty_file_says_empty(name):
    path = _fixture(name)
    with pytest.raises(NotAJpegError, match="empty file") as info:
        jpeg.read_coefficients(jpeg.read_bytes(path), path=path)
    assert info.value.detected_format == "empty" and info.value.path == str(path)


# ------------------------------------------------------------------ unsupported / error paths


@pytest.mark.parametrize("name", ["header_12bit.jpg"] + (["libjpeg-turbo/monkey12.jpg"] if HAVE_SHARED else []))
def test_12bit_jpeg_is_unsupported(name):
    path = _fixture(name)
    data = path.read_bytes()
    # independent check of the fact: the first SOF segment says precision 12
    sof = data.index(b"\xff\xc1")
    assert data[sof + 4] == 12
    with pytest.raises(UnsupportedJpegError, match="12-bit") as info:
        jpeg.read_header(data, path=path)
    assert info.value.path == str(path)


def test_every_lossless_file_is_unsupported():
    files = [jpegfiles.path("header_lossless.jpg")]
    files += jpegfiles.shared_files("odd-jpegs/jpeg-decoder/reftest/images/lossless", "**/*.jpg")
    assert len(files) >= (6 if HAVE_SHARED else 1)
    for path in files:
        data = path.read_bytes()
        assert b"\xff\xc3" in data  # SOF3 marker present: these really are lossless files
        for call in (jpeg.read_header, jpeg.read_coefficients, jpeg.decode):
            with pytest.raises(UnsupportedJpegError, match="lossless"):
                call(data, path=path)


def _libjpeg_error(message):
    """A JpegError as the C boundary raises it for one of libjpeg's messages."""
    err = JpegError(message)
    err.libjpeg_message = message
    return err


def test_unsupported_detected_from_libjpeg_message_too():
    # A hand-made SOF header libjpeg refuses is still recognised when our own walk cannot see the
    # SOF (junk makes the segment walk stop): the libjpeg message decides.
    err = _libjpeg_error("Unsupported JPEG data precision 12")
    mapped = jpeg._rethrow(err, "x.jpg")
    assert type(mapped) is UnsupportedJpegError and mapped.path == "x.jpg"
    assert mapped.libjpeg_message == "Unsupported JPEG data precision 12"
    mapped = jpeg._rethrow(_libjpeg_error("Not a JPEG file: starts with 0x00 0x00"), "y.jpg")
    assert type(mapped) is NotAJpegError and mapped.path == "y.jpg"
    # the boundary's own refusals (budgets) are sentences already: left as they are
    own = JpegError("too many scans in a progressive JPEG for its size: 600 scans over 10 blocks")
    assert jpeg._rethrow(own, "z.jpg").reason == own.reason


def test_libjpeg_messages_become_sentences_keeping_libjpegs_words():
    """Every libjpeg message a user can meet reads as a sentence naming the problem, then
    libjpeg's own words in parentheses; an unknown one still keeps them."""
    cases = {
        "Premature end of JPEG file":
            "truncated: the JPEG data ends before the image is complete (libjpeg: Premature end of JPEG file)",
        "Corrupt JPEG data: bad Huffman code":
            "corrupt: the compressed image data holds an invalid Huffman code "
            "(libjpeg: Corrupt JPEG data: bad Huffman code)",
        "Corrupt JPEG data: 4 extraneous bytes before marker 0xdb":
            "damaged: stray bytes before a marker were skipped; the image may be intact or partly wrong "
            "(libjpeg: Corrupt JPEG data: 4 extraneous bytes before marker 0xdb)",
        "Quantization table 0x01 was not defined":
            "corrupt: the image uses a quantization table the file does not define "
            "(libjpeg: Quantization table 0x01 was not defined)",
        "Something new in libjpeg 9": "cannot be decoded (libjpeg: Something new in libjpeg 9)",
    }
    for message, reason in cases.items():
        assert jpeg.describe_libjpeg_message(message)[0] == reason
    assert jpeg.describe_libjpeg_message("Unsupported JPEG process: SOF type 0xcb")[1] is UnsupportedJpegError
    for start, sentence, cls in jpeg.LIBJPEG_MESSAGES:
        assert sentence and sentence[0].islower() and not sentence.endswith("."), start
        assert issubclass(cls, JpegError)
        reason, got = jpeg.describe_libjpeg_message(start)
        assert reason.endswith(f"(libjpeg: {start})")
    # on real files, through the JPEG layer: sentence first, libjpeg's message kept
    for name, strict, words in (
            ("truncated_50pct.jpg", True, "truncated: "), ("truncated_before_frame.jpg", False, "no image: "),
            ("truncated_before_scan.jpg", False, "no image data: "), ("truncated_in_sof.jpg", False, "corrupt: "),
            ("corrupt_entropy.jpg", True, "damaged: "), ("junk_before_marker.jpg", True, "damaged: ")):
        path = jpegfiles.path(name)
        with pytest.raises(JpegError) as info:
            jpeg.read_coefficients(path.read_bytes(), path=path, strict=strict)
        err = info.value
        assert err.reason.startswith(words), err.reason
        assert err.libjpeg_message and err.reason.endswith(f" (libjpeg: {err.libjpeg_message})")
        assert str(err) == f"{path}: {err.reason}"


def test_first_warning_names_the_problem():
    assert jpeg.first_warning(jpegfiles.data("420.jpg")) is None
    assert jpeg.first_warning(jpegfiles.data("truncated_50pct.jpg")) == (
        "truncated: the JPEG data ends before the image is complete (libjpeg: Premature end of JPEG file)")
    assert jpeg.first_warning(jpegfiles.data("junk_before_marker.jpg")).startswith("damaged: stray bytes")


@pytest.mark.parametrize("bomb, cut", [("declares_65535x65535.jpg", "truncated_before_frame.jpg")] + (
    [("jpeg-decoder/crashtest/images/max_size.jpg", "variants/ocelot_truncated_in_header.jpg")] if HAVE_SHARED else []))
def test_bomb_and_corrupt_errors_carry_the_path(bomb, cut):
    bomb, cut = _fixture(bomb), _fixture(cut)
    with pytest.raises(ImageTooLargeError) as info:
        jpeg.read_coefficients(bomb.read_bytes(), path=bomb)
    assert info.value.path == str(bomb)
    with pytest.raises(JpegError) as info:
        jpeg.read_coefficients(cut.read_bytes(), path=cut)
    assert info.value.path == str(cut) and str(cut) in str(info.value)


@pytest.mark.parametrize("name", ["truncated_50pct.jpg", "progressive_no_eoi.jpg"] + (
    ["variants/ocelot_truncated_50pct.jpg"] if HAVE_SHARED else []))
def test_truncated_file_warns_or_raises_in_strict_mode(name):
    path = _fixture(name)
    data = path.read_bytes()
    coefs, quant, nwarn = jpeg.read_coefficients(data, path=path)
    assert nwarn >= 1
    with pytest.raises(JpegError) as info:
        jpeg.read_coefficients(data, path=path, strict=True)
    assert info.value.path == str(path)
    assert info.value.reason.startswith("truncated") and "(libjpeg: " in info.value.reason


def test_sof_walk_never_raises_on_garbage():
    rng = np.random.default_rng(7)
    base = _pillow_bytes("JPEG")
    for i in range(400):
        data = bytearray(base[: rng.integers(0, len(base))])
        for _ in range(rng.integers(0, 8)):
            if data:
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        data = bytes(data) if i % 2 else b"\xff\xd8" + bytes(rng.integers(0, 256, 300, dtype=np.uint8))
        found = jpeg._find_sof(data)
        assert found is None or (found[0] in jpeg._SOF_MARKERS and 0 <= found[1] <= 255)
        jpeg.read_quant_tables(data)
        for marker, off, length in jpeg.marker_segments(data, through_scans=True):
            assert 0 < marker < 256 and 0 <= off <= len(data) and 0 <= length <= len(data) - off


def _walk(data: bytes, through_scans: bool):
    """The marker segments, found here independently of the C walker: segment lengths, fill
    bytes, junk skipped to the next 0xFF, and (through_scans) the entropy-coded data after each
    SOS skipped with a regular expression (FF followed by anything but 00, D0-D7 or FF)."""
    out, n = [], len(data)
    if n < 4 or data[:2] != b"\xff\xd8":
        return out
    pos = 2
    while pos < n:
        if data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        if marker == 0xD9:
            out.append((marker, pos, 0))
            break
        if pos + 2 > n:
            break
        length = data[pos] << 8 | data[pos + 1]
        if length < 2:
            break
        out.append((marker, pos + 2, min(length - 2, n - pos - 2)))
        pos += length
        if marker == 0xDA:
            if not through_scans:
                break
            hit = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]").search(data, min(pos, n))
            pos = hit.start() if hit else n
    return out


def test_marker_walker_agrees_with_an_independent_walk(photo_tree):
    """The one marker walker (C) finds the segments a walk written here finds, up to the first
    SOS and through every scan, on every committed fixture, the regression files, photographs,
    and cut or byte-flipped copies of them."""
    files = sorted(jpegfiles.JPEGS.glob("*.jpg")) + jpegfiles.photos(photo_tree, step=4)
    files += sorted((Path(__file__).parent / "regressions").glob("*.jpg"))
    rng = np.random.default_rng(9)
    cases = []
    for path in files:
        data = path.read_bytes()
        cases.append(data)
        if len(data) > 4:
            cut = bytearray(data[: rng.integers(2, len(data))])
            for _ in range(3):
                cut[rng.integers(0, len(cut))] = rng.integers(0, 256)
            cases.append(bytes(cut))
    for data in cases:
        for through in (False, True):
            assert jpeg.marker_segments(data, through_scans=through) == _walk(data, through)
    # the scan count is the SOS segments of the whole-file walk
    prog = jpegfiles.data("progressive.jpg")
    sos = [s for s in _walk(prog, True) if s[0] == 0xDA]
    assert _decoder.scan_count(prog) == len(sos) == prog.count(b"\xff\xda") >= 6
    assert _decoder.scan_count(jpegfiles.data("420.jpg")) == 1


def test_scan_count_ignores_marker_bytes_inside_segments():
    """Bytes FF DA inside a comment are not scans (a byte search would count them): a progressive
    file carrying 600 of them in a COM segment still decodes, with its real scan count."""
    prog = jpegfiles.data("progressive.jpg")
    payload = b"\xff\xda" * 600
    commented = prog[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + prog[2:]
    assert _decoder.scan_count(commented) == _decoder.scan_count(prog)
    a, b = jpeg.read_coefficients(commented), jpeg.read_coefficients(prog)
    for x, y in zip(a.components, b.components):
        np.testing.assert_array_equal(x, y)


def test_read_bytes_errors(tmp_path):
    with pytest.raises(SourceNotFoundError) as info:
        jpeg.read_bytes(tmp_path / "missing.jpg")
    assert info.value.path == str(tmp_path / "missing.jpg") and isinstance(info.value, FileNotFoundError)
    with pytest.raises(SourceError, match="directory"):
        jpeg.read_bytes(tmp_path)
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")
    assert jpeg.read_bytes(tmp_path / "a.jpg") == b"\xff\xd8"
    # the file-size cap: refused unread, naming the file, its size and the limit
    assert jpeg.read_bytes(tmp_path / "a.jpg", max_bytes=2) == b"\xff\xd8"
    with pytest.raises(ImageTooLargeError, match="file of 2 bytes is over the 1-byte limit") as info:
        jpeg.read_bytes(tmp_path / "a.jpg", max_bytes=1)
    assert info.value.path == str(tmp_path / "a.jpg")
    assert jpeg.DEFAULT_MAX_FILE_BYTES == 1 << 30
    jpeg.check_file_size(jpeg.DEFAULT_MAX_FILE_BYTES)
    with pytest.raises(ImageTooLargeError, match="over the 1073741824-byte limit"):
        jpeg.check_file_size(jpeg.DEFAULT_MAX_FILE_BYTES + 1, "big.jpg")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.jpg"
        locked.write_bytes(b"x")
        locked.chmod(0)
        with pytest.raises(SourceError, match="permission"):
            jpeg.read_bytes(locked)


# ------------------------------------------------------------------------ header facts / DQT


def test_header_matches_pillow_on_imagenet_originals(photo_tree):
    for path in _good(photo_tree):
        data = path.read_bytes()
        h = jpeg.read_header(data, path=path)
        with Image.open(path) as im:
            assert (h["width"], h["height"]) == im.size
            assert [(c["id"], c["h"], c["v"], c["quant_table"]) for c in h["components"]] == [
                tuple(layer) for layer in im.layer
            ]
            assert h["progressive"] == bool(im.info.get("progressive", 0))


def test_read_quant_tables_matches_pillow(photo_tree):
    files = _good(photo_tree) + jpegfiles.shared_odd(
        "pillow/hopper_16bit_qtables.jpg",
        "variants/chelsea_cjpeg_mixed_chroma.jpg",
        "jpeg-decoder/reftest/images/ycck.jpg",
        "libjpeg-turbo/testimgari.jpg",
        "jpeg-decoder/reftest/images/progressive3.jpg",
    )
    assert jpegfiles.path("q5_16bit_qtables.jpg") in files  # 16-bit DQT entries
    for path in files:
        with Image.open(path) as im:
            expected = {k: list(v) for k, v in im.quantization.items()}
        got = jpeg.read_quant_tables(path.read_bytes())
        assert {k: [int(x) for x in v] for k, v in got.items()} == expected, path


def test_read_quant_tables_agree_with_libjpeg(photo_tree):
    for path in _good(photo_tree, 10):
        data = path.read_bytes()
        header = jpeg.read_header(data)
        _, quant, _ = jpeg.read_coefficients(data)
        tables = jpeg.read_quant_tables(data)
        for i, comp in enumerate(header["components"]):
            np.testing.assert_array_equal(quant[i], tables[comp["quant_table"]])


def test_zigzag_is_a_permutation_walking_antidiagonals():
    zz = jpeg.ZIGZAG
    assert sorted(zz.tolist()) == list(range(64))
    rows, cols = zz // 8, zz % 8
    diag = rows + cols
    assert (np.diff(diag) >= 0).all()  # anti-diagonals in order
    # neighbours in zigzag order are adjacent cells (king moves) in the 8x8 grid
    assert (np.maximum(np.abs(np.diff(rows)), np.abs(np.diff(cols))) == 1).all()


# ------------------------------------------------------------------------- IJG quality


def test_estimate_quality_round_trips_pillow_and_libjpeg_encoders():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for q in range(1, 101):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=q)
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            tables = im.quantization  # Pillow's parser, natural order
        ours = jpeg.read_quant_tables(_decoder.encode(rgb, q, "4:2:0"))
        for luma, chroma in ((tables[0], tables[1]), (ours[0], ours[1])):
            assert estimate_quality(luma) == q
            assert abs(estimate_quality(chroma, chroma=True) - q) <= 1
            assert quality_fit(luma)[1] == 0.0


def test_estimate_quality_of_foreign_tables_is_approximate():
    assert estimate_quality([0] * 64) is None
    assert estimate_quality([1, 2, 3]) is None
    q, err = quality_fit(np.full(64, 12))
    assert 1 <= q <= 100 and err > 0


def test_ijg_tables_follow_libjpegs_formula():
    """jpeg_quality_scaling and jpeg_add_quant_table, restated here from libjpeg's jcparam.c:
    scale = 5000/q below 50, else 200 - 2q; entry = (base * scale + 50) // 100 clamped to
    1..255 (force_baseline) or 1..32767."""
    assert [quant.quality_scaling(q) for q in (1, 25, 49, 50, 75, 100, 0, 101)] == [5000, 200, 102, 100, 50, 0,
                                                                                    5000, 0]
    assert quant.STD_LUMA_QTABLE[0] == 16 and quant.STD_CHROMA_QTABLE[63] == 99
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        luma, chroma = quant.ijg_tables(q)
        wide = quant.ijg_tables(q, force_baseline=False)
        for base, got, got_wide in ((quant.STD_LUMA_QTABLE, luma, wide[0]), (quant.STD_CHROMA_QTABLE, chroma, wide[1])):
            raw = [(int(b) * scale + 50) // 100 for b in base]
            assert got.tolist() == [min(max(v, 1), 255) for v in raw]
            assert got_wide.tolist() == [min(max(v, 1), 32767) for v in raw]
    assert quant.ijg_tables(50)[0].tolist() == quant.STD_LUMA_QTABLE.tolist()  # scale 100 %
    assert set(quant.ijg_tables(100)[0].tolist()) == {1}
    assert quant.ijg_tables(1)[0].max() == 255 and quant.ijg_tables(1, force_baseline=False)[0].max() == 6050
    for bad in (0, 101, 2.5, True, -3):
        with pytest.raises(ValueError, match="quality"):
            quant.ijg_tables(bad)


# ---------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("subsampling, name", [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_sampling_name_of_pillow_encodes(subsampling, name):
    data = _pillow_bytes("JPEG", subsampling=subsampling)
    assert jpeg.sampling_name(jpeg.read_header(data)["components"], "YCbCr") == name


@pytest.mark.parametrize(
    "name, expected",
    [
        ("411.jpg", "4:1:1"),
        ("410.jpg", "4:1:0"),
        ("mixed_sampling.jpg", "other (2x2,2x1,1x1)"),
        ("gray.jpg", "grayscale"),
        ("gray_2x2.jpg", "grayscale"),
        ("cmyk.jpg", "CMYK"),
        ("ycck.jpg", "YCCK"),
        ("progressive.jpg", "4:2:0"),
        ("440.jpg", "4:4:0"),
        ("444.jpg", "4:4:4"),
        ("422.jpg", "4:2:2"),
        ("rgb_colorspace.jpg", "4:4:4"),
    ] + ([
        ("variants/chelsea_cjpeg_411.jpg", "4:1:1"),
        ("variants/chelsea_cjpeg_410.jpg", "4:1:0"),
        ("variants/chelsea_cjpeg_mixed_chroma.jpg", "other (2x2,2x1,1x1)"),
        ("pillow/hopper_gray.jpg", "grayscale"),
        ("jpeg-decoder/reftest/images/grayscale_16x24_sampling2x2.jpg", "grayscale"),
        ("cameratrap/african_elephants_cmyk.jpg", "CMYK"),
        ("jpeg-decoder/reftest/images/ycck.jpg", "YCCK"),
        ("jpeg-decoder/reftest/images/progressive3.jpg", "4:4:4"),
    ] if HAVE_SHARED else []),
)
def test_sampling_name_on_real_files(name, expected):
    path = _fixture(name)
    h = jpeg.read_header(path.read_bytes(), path=path)
    assert jpeg.sampling_name(h["components"], h["color_space"]) == expected
    with Image.open(path) as im:  # the factors come from Pillow's parser too
        assert [(c["h"], c["v"]) for c in h["components"]] == [(l[1], l[2]) for l in im.layer]


def test_sampling_name_agrees_with_pillow_get_sampling(photo_tree):
    names = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
    compared = 0
    for path in _good(photo_tree, 60):
        h = jpeg.read_header(path.read_bytes())
        with Image.open(path) as im:
            pil = JpegImagePlugin.get_sampling(im)
        if pil in names:
            assert jpeg.sampling_name(h["components"], h["color_space"]) == names[pil], path
            compared += 1
    assert compared >= 20


def test_sampling_name_pairs_and_440():
    assert jpeg.sampling_name([(1, 2), (1, 1), (1, 1)]) == "4:4:0"
    assert jpeg.sampling_name([(2, 2), (2, 2), (2, 2)]) == "4:4:4"
    assert jpeg.sampling_name([(3, 1), (2, 1), (2, 1)]) == "other (3x1,2x1,2x1)"


# ------------------------------------------------------------------------- EXIF orientation


def _tiff(order: str, entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A TIFF structure built by hand: header + IFD0 with ``entries`` (tag, type, count, value4)."""
    e = "<" if order == "II" else ">"
    out = order.encode() + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", len(entries))
    for tag, kind, count, value in entries:
        out += struct.pack(e + "HHI", tag, kind, count) + value
    return out + struct.pack(e + "I", 0)


@pytest.mark.parametrize("order", ["II", "MM"])
def test_exif_orientation_hand_built_both_byte_orders(order):
    e = "<" if order == "II" else ">"
    for value in range(1, 9):
        entries = [
            (0x010F, 2, 4, b"Cam\x00"),
            (0x0112, 3, 1, struct.pack(e + "HH", value, 0)),
            (0x0100, 4, 1, struct.pack(e + "I", 200)),
        ]
        payload = _tiff(order, entries)
        assert jpeg.exif_orientation(payload) == value
        assert jpeg.exif_orientation(b"Exif\x00\x00" + payload) == value
        # Pillow's own TIFF parser reads the same value from the same bytes
        exif = Image.Exif()
        exif.load(b"Exif\x00\x00" + payload)
        assert exif.get(0x0112) == value
    assert jpeg.exif_orientation(_tiff(order, [(0x0112, 3, 1, struct.pack(e + "HH", 0, 0))])) is None
    assert jpeg.exif_orientation(_tiff(order, [(0x0110, 2, 4, b"abc\x00")])) is None


def test_exif_orientation_never_raises_on_garbage():
    good = _tiff("MM", [(0x0112, 3, 1, struct.pack(">HH", 6, 0))])
    assert jpeg.exif_orientation(good) == 6
    rng = np.random.default_rng(11)
    for i in range(2000):
        data = bytearray(good[: rng.integers(0, len(good) + 1)])
        for _ in range(rng.integers(0, 4)):
            if data:
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        if i % 3 == 0:
            data = bytearray(rng.integers(0, 256, rng.integers(0, 64), dtype=np.uint8))
        value = jpeg.exif_orientation(bytes(data))
        assert value is None or 1 <= value <= 8
    # an IFD count far beyond the data, an offset pointing outside
    assert jpeg.exif_orientation(b"II*\x00\x08\x00\x00\x00\xff\xff") is None
    assert jpeg.exif_orientation(b"MM\x00*\xff\xff\xff\xff") is None
    assert jpeg.exif_orientation(None) is None and jpeg.exif_orientation(b"") is None


def test_exif_orientation_matches_pillow_on_real_files(photo_tree):
    files = sorted(jpegfiles.JPEGS.glob("*.jpg")) + jpegfiles.photos(photo_tree, step=4)
    files += jpegfiles.shared_files("odd-jpegs", "**/*")
    files = [p for p in files if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file()]
    seen = 0
    for path in files:
        try:
            h = jpeg.read_header(path.read_bytes(), path=path)
        except JdctError:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as im:
                    expected = im.getexif().get(0x0112)
        except Exception:  # Pillow refuses some fuzz files: no reference there
            continue
        if expected is not None and not 1 <= expected <= 8:
            expected = None
        assert jpeg.exif_orientation(h["exif"]) == expected, path
        seen += expected is not None
    # exif_orientation_1..8; with ../shared: Landscape_1..8, Portrait_*, hopper_orientation_*, cameratrap...
    assert seen >= (28 if HAVE_SHARED else 8)


@pytest.mark.parametrize("pattern", ["exif_orientation_{k}.jpg"] + (
    ["pillow/hopper_orientation_{k}.jpg"] if HAVE_SHARED else []))
def test_apply_orientation_matches_pillow_exif_transpose(pattern):
    for k in range(2, 9):
        path = _fixture(pattern.format(k=k))
        with Image.open(path) as im:
            assert im.getexif().get(0x0112) == k
            raw = np.asarray(im.convert("RGB"))
            upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        orientation = jpeg.exif_orientation(jpeg.read_header(path.read_bytes())["exif"])
        out = jpeg.apply_orientation(raw, orientation)
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, upright)


def test_apply_orientation_all_cases_on_non_square_array():
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (5, 9, 3), dtype=np.uint8)
    for k in range(1, 9):
        im = Image.fromarray(arr)
        im.getexif()[0x0112] = k
        expected = np.asarray(ImageOps.exif_transpose(im))
        np.testing.assert_array_equal(jpeg.apply_orientation(arr, k), expected)
    assert jpeg.apply_orientation(arr, None) is arr
    with pytest.raises(ValueError):
        jpeg.apply_orientation(arr, 9)


# ----------------------------------------------------------------------- wrappers return types


@pytest.mark.parametrize("name", ["420.jpg", "cmyk.jpg", "truncated_50pct.jpg"])
def test_wrappers_return_named_tuples_equal_to_extension(name):
    path = _originals(1)[0] if HAVE_SHARED and name == "420.jpg" else jpegfiles.path(name)
    data = path.read_bytes()
    res = jpeg.read_coefficients(data, path=path)
    comps, quant, nwarn = _decoder.read_coefficients(data)
    assert len(res.components) == len(comps) and nwarn == res.warnings
    for a, b in zip(res.components, comps):
        assert a.dtype == np.int16 and a.shape[2] == 64
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res.quant, quant)
    dec = jpeg.decode(data, path=path)
    with Image.open(path) as im:
        assert dec.rgb.shape == (im.size[1], im.size[0], 3) and dec.rgb.dtype == np.uint8
    assert jpeg.libjpeg_version() == _decoder.libjpeg_version()
