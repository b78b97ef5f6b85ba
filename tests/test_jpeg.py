"""The Python JPEG layer (jdct_cli.jpeg) against independent references: Pillow's parser,
Pillow's encoder, hand-built TIFF/EXIF structures, and the real files of ../shared/data."""
from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from jdct_cli import jpeg
from jdct_cli.errors import (
    ImageTooLargeError,
    JdctError,
    JpegError,
    NotAJpegError,
    SourceError,
    SourceNotFoundError,
    UnsupportedJpegError,
)

ODD = "odd-jpegs"


def _pillow_bytes(fmt: str, **kwargs) -> bytes:
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _originals(shared_data, n=None):
    files = sorted((shared_data / "imagenet-originals").glob("*/*.JPEG"))
    return files if n is None else files[:: max(1, len(files) // n)][:n]


# ---------------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    "fmt, expected",
    [("PNG", "PNG"), ("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("WEBP", "WebP"), ("JPEG", "JPEG")],
)
def test_sniff_format_on_pillow_written_files(fmt, expected):
    from PIL import features

    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow was built without WebP")
    assert jpeg.sniff_format(_pillow_bytes(fmt)) == expected


def test_sniff_format_text_empty_and_unknown():
    assert jpeg.sniff_format(b"") == "empty"
    assert jpeg.sniff_format(b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>") == "text"
    assert jpeg.sniff_format("caf\u00e9 au lait, d\u00e9j\u00e0 vu\n".encode()) == "text"
    assert jpeg.sniff_format(bytes(range(256))) is None
    assert jpeg.sniff_format(b"BM, a text that starts like a bitmap") == "text"


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("variants/png_disguised.JPEG", "PNG"),
        ("variants/gif_disguised.JPEG", "GIF"),
        ("variants/webp_disguised.JPEG", "WebP"),
        ("variants/bmp_disguised.JPEG", "BMP"),
        ("variants/text_file.JPEG", "text"),
        ("jpeg-decoder/reftest/images/mozilla/jpg-size-6x6.jpg", "PNG"),
    ],
)
def test_disguised_files_raise_not_a_jpeg_naming_format_and_path(shared_data, name, fmt):
    path = shared_data / ODD / name
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


def test_empty_file_says_empty(shared_data):
    path = shared_data / ODD / "variants/empty.JPEG"
    with pytest.raises(NotAJpegError, match="empty file") as info:
        jpeg.read_coefficients(jpeg.read_bytes(path), path=path)
    assert info.value.detected_format == "empty" and info.value.path == str(path)


# ------------------------------------------------------------------ unsupported / error paths


def test_12bit_jpeg_is_unsupported(shared_data):
    path = shared_data / ODD / "libjpeg-turbo/monkey12.jpg"
    data = path.read_bytes()
    # independent check of the fact: the first SOF segment says precision 12
    sof = data.index(b"\xff\xc1")
    assert data[sof + 4] == 12
    with pytest.raises(UnsupportedJpegError, match="12-bit") as info:
        jpeg.read_header(data, path=path)
    assert info.value.path == str(path)


def test_every_lossless_file_is_unsupported(shared_data):
    files = sorted((shared_data / ODD / "jpeg-decoder/reftest/images/lossless").rglob("*.jpg"))
    assert len(files) >= 5
    for path in files:
        data = path.read_bytes()
        assert b"\xff\xc3" in data  # SOF3 marker present: these really are lossless files
        for call in (jpeg.read_header, jpeg.read_coefficients, jpeg.decode):
            with pytest.raises(UnsupportedJpegError, match="lossless"):
                call(data, path=path)


def test_unsupported_detected_from_libjpeg_message_too():
    # A hand-made SOF header libjpeg refuses is still recognised when our own walk cannot see the
    # SOF (junk makes the segment walk stop): the libjpeg message decides.
    err = JpegError("Unsupported JPEG data precision 12")
    mapped = jpeg._rethrow(err, "x.jpg")
    assert type(mapped) is UnsupportedJpegError and mapped.path == "x.jpg"
    mapped = jpeg._rethrow(JpegError("Not a JPEG file: starts with 0x00 0x00"), "y.jpg")
    assert type(mapped) is NotAJpegError and mapped.path == "y.jpg"


def test_bomb_and_corrupt_errors_carry_the_path(shared_data):
    bomb = shared_data / ODD / "jpeg-decoder/crashtest/images/max_size.jpg"
    with pytest.raises(ImageTooLargeError) as info:
        jpeg.read_coefficients(bomb.read_bytes(), path=bomb)
    assert info.value.path == str(bomb)
    cut = shared_data / ODD / "variants/ocelot_truncated_in_header.jpg"
    with pytest.raises(JpegError) as info:
        jpeg.read_coefficients(cut.read_bytes(), path=cut)
    assert info.value.path == str(cut) and str(cut) in str(info.value)


def test_truncated_file_warns_or_raises_in_strict_mode(shared_data):
    path = shared_data / ODD / "variants/ocelot_truncated_50pct.jpg"
    data = path.read_bytes()
    coefs, quant, nwarn = jpeg.read_coefficients(data, path=path)
    assert nwarn >= 1
    with pytest.raises(JpegError) as info:
        jpeg.read_coefficients(data, path=path, strict=True)
    assert info.value.path == str(path)


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


def test_read_bytes_errors(tmp_path):
    with pytest.raises(SourceNotFoundError) as info:
        jpeg.read_bytes(tmp_path / "missing.jpg")
    assert info.value.path == str(tmp_path / "missing.jpg") and isinstance(info.value, FileNotFoundError)
    with pytest.raises(SourceError, match="directory"):
        jpeg.read_bytes(tmp_path)
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")
    assert jpeg.read_bytes(tmp_path / "a.jpg") == b"\xff\xd8"
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.jpg"
        locked.write_bytes(b"x")
        locked.chmod(0)
        with pytest.raises(SourceError, match="permission"):
            jpeg.read_bytes(locked)


# ------------------------------------------------------------------------ header facts / DQT


def test_header_matches_pillow_on_imagenet_originals(shared_data):
    for path in _originals(shared_data, 40):
        data = path.read_bytes()
        h = jpeg.read_header(data, path=path)
        with Image.open(path) as im:
            assert (h["width"], h["height"]) == im.size
            assert [(c["id"], c["h"], c["v"], c["quant_table"]) for c in h["components"]] == [
                tuple(layer) for layer in im.layer
            ]
            assert h["progressive"] == bool(im.info.get("progressive", 0))


def test_read_quant_tables_matches_pillow(shared_data):
    files = _originals(shared_data, 40) + [
        shared_data / ODD / p
        for p in (
            "pillow/hopper_16bit_qtables.jpg",
            "variants/chelsea_cjpeg_mixed_chroma.jpg",
            "jpeg-decoder/reftest/images/ycck.jpg",
            "libjpeg-turbo/testimgari.jpg",
            "jpeg-decoder/reftest/images/progressive3.jpg",
        )
    ]
    for path in files:
        with Image.open(path) as im:
            expected = {k: list(v) for k, v in im.quantization.items()}
        got = jpeg.read_quant_tables(path.read_bytes())
        assert {k: [int(x) for x in v] for k, v in got.items()} == expected, path


def test_read_quant_tables_agree_with_libjpeg(shared_data):
    for path in _originals(shared_data, 10):
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
    from jdct_cli import _decoder

    for q in range(1, 101):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=q)
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            tables = im.quantization  # Pillow's parser, natural order
        ours = jpeg.read_quant_tables(_decoder.encode(rgb, q, "4:2:0"))
        for luma, chroma in ((tables[0], tables[1]), (ours[0], ours[1])):
            assert jpeg.estimate_quality(luma) == q
            assert abs(jpeg.estimate_quality(chroma, chroma=True) - q) <= 1
            assert jpeg.quality_fit(luma)[1] == 0.0


def test_estimate_quality_of_foreign_tables_is_approximate():
    assert jpeg.estimate_quality([0] * 64) is None
    assert jpeg.estimate_quality([1, 2, 3]) is None
    q, err = jpeg.quality_fit(np.full(64, 12))
    assert 1 <= q <= 100 and err > 0


# ---------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("subsampling, name", [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_sampling_name_of_pillow_encodes(subsampling, name):
    data = _pillow_bytes("JPEG", subsampling=subsampling)
    assert jpeg.sampling_name(jpeg.read_header(data)["components"], "YCbCr") == name


@pytest.mark.parametrize(
    "name, expected",
    [
        ("variants/chelsea_cjpeg_411.jpg", "4:1:1"),
        ("variants/chelsea_cjpeg_410.jpg", "4:1:0"),
        ("variants/chelsea_cjpeg_mixed_chroma.jpg", "other (2x2,2x1,1x1)"),
        ("pillow/hopper_gray.jpg", "grayscale"),
        ("jpeg-decoder/reftest/images/grayscale_16x24_sampling2x2.jpg", "grayscale"),
        ("cameratrap/african_elephants_cmyk.jpg", "CMYK"),
        ("jpeg-decoder/reftest/images/ycck.jpg", "YCCK"),
        ("jpeg-decoder/reftest/images/progressive3.jpg", "4:4:4"),
    ],
)
def test_sampling_name_on_real_files(shared_data, name, expected):
    path = shared_data / ODD / name
    h = jpeg.read_header(path.read_bytes(), path=path)
    assert jpeg.sampling_name(h["components"], h["color_space"]) == expected
    with Image.open(path) as im:  # the factors come from Pillow's parser too
        assert [(c["h"], c["v"]) for c in h["components"]] == [(l[1], l[2]) for l in im.layer]


def test_sampling_name_agrees_with_pillow_get_sampling(shared_data):
    from PIL import JpegImagePlugin

    names = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
    for path in _originals(shared_data, 60):
        h = jpeg.read_header(path.read_bytes())
        with Image.open(path) as im:
            pil = JpegImagePlugin.get_sampling(im)
        if pil in names:
            assert jpeg.sampling_name(h["components"], h["color_space"]) == names[pil], path


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


def test_exif_orientation_matches_pillow_on_real_files(shared_data):
    files = sorted((shared_data / ODD).rglob("*"))
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
    assert seen >= 20  # Landscape_1..8, Portrait_*, hopper_orientation_*, cameratrap...


def test_apply_orientation_matches_pillow_exif_transpose(shared_data):
    for k in range(2, 9):
        path = shared_data / ODD / f"pillow/hopper_orientation_{k}.jpg"
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


def test_wrappers_return_named_tuples_equal_to_extension(shared_data):
    from jdct_cli import _decoder

    path = _originals(shared_data, 1)[0]
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
