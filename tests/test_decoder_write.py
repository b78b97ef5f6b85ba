"""Writing JPEGs from coefficients (``transcode``, ``write_coefficients``) and ``encode`` with
given tables, checked against libjpeg's own reading (``read_coefficients``), the source files'
markers and Pillow.

Lossless means: the quantized coefficients of every block of the image, the quantization tables,
the sampling factors, the dimensions and the colour space read back identical. Blocks that only
pad the last MCU column or row are compared too when the source was written by libjpeg (which
codes them the way libjpeg writes them again); non-interleaved scans leave them zero.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

import jpegfiles
from conftest import HAVE_SHARED, SHARED_DATA
from jdct_cli import _decoder as dec
from jdct_cli import jpeg
from jdct_cli.errors import JpegError
from jdct_cli.jpegmath.quant import ijg_tables

ImageFile.MAXBLOCK = 1 << 26


def _real_blocks(head) -> list[tuple[int, int]]:
    """(rows, cols) of the blocks covering the image, per component (without MCU padding)."""
    hmax = max(c["h"] for c in head["components"])
    vmax = max(c["v"] for c in head["components"])
    return [(-(-head["height"] * c["v"] // (8 * vmax)), -(-head["width"] * c["h"] // (8 * hmax)))
            for c in head["components"]]


def _assert_same_image(a: bytes, b: bytes, label: str, *, padding: bool = False) -> None:
    ha, hb = dec.read_header(a), dec.read_header(b)
    for key in ("width", "height", "num_components", "color_space", "precision"):
        assert ha[key] == hb[key], (label, key)
    assert [(c["h"], c["v"]) for c in ha["components"]] == [(c["h"], c["v"]) for c in hb["components"]], label
    ca, qa, _ = dec.read_coefficients(a)
    cb, qb, _ = dec.read_coefficients(b)
    np.testing.assert_array_equal(qa, qb, err_msg=label)
    for x, y, (bh, bw) in zip(ca, cb, _real_blocks(ha)):
        assert x.shape == y.shape, label
        np.testing.assert_array_equal(x[:bh, :bw], y[:bh, :bw], err_msg=label)
        if padding:
            np.testing.assert_array_equal(x, y, err_msg=label)


def _multi_scan_files() -> list:
    """Every progressive or arithmetic-coded file: the committed ones, and with ../shared every
    such file of odd-jpegs that libjpeg decodes without a warning."""
    out = [jpegfiles.path(n) for n in jpegfiles.GOOD]
    if HAVE_SHARED:
        out += sorted(p for p in (SHARED_DATA / "odd-jpegs").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    files = []
    for p in out:
        data = p.read_bytes()
        try:
            head = dec.read_header(data)
            if not (head["progressive"] or head["arithmetic"]) or dec.read_coefficients(data)[2]:
                continue
        except (JpegError, ValueError):
            continue
        files.append(p)
    return files


MULTI_SCAN = _multi_scan_files()


def test_there_are_multi_scan_files_to_transcode():
    names = {p.name for p in MULTI_SCAN}
    assert {"progressive.jpg", "arithmetic.jpg", "arithmetic_progressive.jpg"} <= names
    if HAVE_SHARED:
        assert len(MULTI_SCAN) >= 10, names


@pytest.mark.parametrize("path", MULTI_SCAN, ids=[p.name for p in MULTI_SCAN])
def test_transcode_to_baseline_keeps_every_coefficient(path):
    src = path.read_bytes()
    for optimize in (True, False):
        out, warnings = jpeg.transcode(src, optimize=optimize)
        assert warnings == 0
        head = dec.read_header(out)
        assert not head["progressive"] and not head["arithmetic"] and head["restart_interval"] == 0
        assert dec.scan_count(out) == 1
        _assert_same_image(src, out, f"{path.name} optimize={optimize}")
        # and every decoder sees the same picture: Pillow's libjpeg decode of both files
        with Image.open(io.BytesIO(src)) as a, Image.open(io.BytesIO(out)) as b:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path.name)


def test_transcode_keeps_16_bit_tables_as_sof1():
    src = jpegfiles.data("q5_16bit_qtables.jpg")
    out, _ = jpeg.transcode(src)
    assert [m for m, _, _ in jpeg.marker_segments(out) if m in (0xC0, 0xC1)] == [0xC1]
    assert max(int(t.max()) for t in jpeg.read_quant_tables(out).values()) > 255
    _assert_same_image(src, out, "16-bit tables", padding=True)


def test_transcode_restart_interval_and_markers():
    src = jpegfiles.data("exif_orientation_6.jpg")
    plain, _ = jpeg.transcode(src)
    assert dec.read_header(plain)["exif"] is None
    kept, _ = jpeg.transcode(src, keep_markers=True, restart_interval=2)
    head = dec.read_header(kept)
    assert head["exif"] == dec.read_header(src)["exif"] and head["restart_interval"] == 2
    # one JFIF APP0 only (libjpeg writes its own; the source's is not copied a second time)
    assert sum(1 for m, off, n in jpeg.marker_segments(kept) if m == 0xE0 and kept[off:off + 5] == b"JFIF\0") <= 1
    _assert_same_image(src, kept, "restart + markers", padding=True)
    assert jpeg.read_coefficients(kept).warnings == 0


def test_transcode_refusals_are_jpeg_errors():
    for name in ("truncated_before_scan.jpg", "declares_65535x65535.jpg", "header_12bit.jpg", "png_named.jpg"):
        with pytest.raises(JpegError):
            jpeg.transcode(jpegfiles.data(name))
    with pytest.raises(JpegError, match="truncated"):
        jpeg.transcode(jpegfiles.data("truncated_50pct.jpg"), strict=True)
    # not strict: the zero-filled remainder is what libjpeg decodes, and is kept
    out, warnings = jpeg.transcode(jpegfiles.data("truncated_50pct.jpg"))
    assert warnings >= 1
    _assert_same_image(jpegfiles.data("truncated_50pct.jpg"), out, "truncated")


# --------------------------------------------------------------------------- write_coefficients

ROUND_TRIP = ["420.jpg", "422.jpg", "444.jpg", "440.jpg", "411.jpg", "gray.jpg", "gray_2x2.jpg", "cmyk.jpg",
              "ycck.jpg", "rgb_colorspace.jpg", "restart_2mcu.jpg", "restart_every_mcu.jpg", "mixed_sampling.jpg",
              "size_1x1.jpg", "size_7x13.jpg", "size_33x31.jpg", "size_200x1.jpg", "q5_16bit_qtables.jpg"]


def _rewrite(data: bytes, **kwargs) -> bytes:
    head = dec.read_header(data)
    comps, quant, _ = dec.read_coefficients(data)
    space = head["color_space"] if head["color_space"] != "UNKNOWN" else "YCbCr"
    return jpeg.write_coefficients(comps, quant, head["width"], head["height"],
                                   [(c["h"], c["v"]) for c in head["components"]], color_space=space, **kwargs)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_write_coefficients_round_trips(name):
    src = jpegfiles.data(name)
    for kwargs in ({}, {"restart_interval": 3}, {"optimize": True}):
        out = _rewrite(src, **kwargs)
        _assert_same_image(src, out, f"{name} {kwargs}", padding=True)
        assert dec.read_header(out)["restart_interval"] == kwargs.get("restart_interval", 0)
        assert jpeg.read_coefficients(out).warnings == 0


def test_write_coefficients_round_trips_real_photos(photo_tree):
    files = jpegfiles.photos(photo_tree, step=2) + jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=17)
    for path in files:
        src = path.read_bytes()
        _assert_same_image(src, _rewrite(src), path.name, padding=True)
        # the padded arrays as jdct stores them (what read_coefficients gives) or just the image's blocks
        head = dec.read_header(src)
        comps, quant, _ = dec.read_coefficients(src)
        trimmed = [c[:bh, :bw] for c, (bh, bw) in zip(comps, _real_blocks(head))]
        out = jpeg.write_coefficients(trimmed, quant, head["width"], head["height"],
                                      [(c["h"], c["v"]) for c in head["components"]],
                                      color_space=head["color_space"])
        _assert_same_image(src, out, f"{path.name} trimmed")


def test_write_coefficients_of_arbitrary_values():
    """Coefficients no encoder made (random, every frequency, large magnitudes): written and read
    back identical, including in a 4:2:0 store-shaped sample."""
    rng = np.random.default_rng(5)
    y = rng.integers(-300, 301, (14, 14, 64)).astype(np.int16)
    y[:, :, 0] = rng.integers(-1000, 1001, (14, 14))
    cb = rng.integers(-60, 61, (7, 7, 64)).astype(np.int16)
    cr = rng.integers(-60, 61, (7, 7, 64)).astype(np.int16)
    luma, chroma = ijg_tables(100)
    quant = np.stack([luma, chroma, chroma]).astype(np.uint16)
    for restart in (0, 1, 5):
        out = jpeg.write_coefficients([y, cb, cr], quant, 112, 112, [(2, 2), (1, 1), (1, 1)],
                                      restart_interval=restart)
        comps, q, warnings = dec.read_coefficients(out)
        assert warnings == 0
        np.testing.assert_array_equal(q, quant)
        for a, b in zip((y, cb, cr), comps):
            np.testing.assert_array_equal(a, b)
    gray = rng.integers(-200, 201, (3, 5, 64)).astype(np.int16)
    out = jpeg.write_coefficients([gray], np.full((1, 64), 7, np.uint16), 37, 20, [(1, 1)], color_space="GRAYSCALE")
    np.testing.assert_array_equal(dec.read_coefficients(out)[0][0], gray)


def test_write_coefficients_refuses_what_does_not_fit():
    q = np.ones((3, 64), np.uint16)
    y, c = np.zeros((2, 2, 64), np.int16), np.zeros((1, 1, 64), np.int16)
    sampling = [(2, 2), (1, 1), (1, 1)]
    jpeg.write_coefficients([y, c, c], q, 16, 16, sampling)
    bad = [
        ([y, c, c], q, 17, 16, sampling, {}),              # a third luma block column is needed
        ([y, c, c], q, 16, 16, sampling, {"color_space": "GRAYSCALE"}),
        ([y, c, c], q[:2], 16, 16, sampling, {}),
        ([y, c, c], np.zeros((3, 64), np.uint16), 16, 16, sampling, {}),
        ([y, c, c], q, 16, 16, [(2, 2), (1, 1)], {}),
        ([y, c, c], q, 16, 16, [(5, 1), (1, 1), (1, 1)], {}),
        ([y.astype(np.int32), c, c], q, 16, 16, sampling, {}),
        ([np.zeros((4, 4, 64), np.int16), c, c], q, 16, 16, sampling, {}),  # more than padded
        ([y, c, c], q, 0, 16, sampling, {}),
    ]
    for comps, quant, w, h, samp, kw in bad:
        with pytest.raises(ValueError) as info:
            jpeg.write_coefficients(comps, quant, w, h, samp, **kw)
        assert not isinstance(info.value, JpegError)


# ------------------------------------------------------------------------------------- encode


def test_encode_with_ijg_tables_is_encode_at_that_quality(photo_tree):
    rgb = dec.decode(jpegfiles.photos(photo_tree)[1].read_bytes())[0]
    for quality in (10, 50, 75, 95, 100):
        for sub in ("4:2:0", "4:4:4"):
            assert jpeg.encode(rgb, subsampling=sub, tables=ijg_tables(quality)) == jpeg.encode(rgb, quality, sub)


def test_encode_with_learned_tables(photo_tree):
    rgb = dec.decode(jpegfiles.photos(photo_tree)[2].read_bytes())[0]
    rng = np.random.default_rng(1)
    luma, chroma = rng.integers(1, 256, 64), rng.integers(1, 256, 64)
    out = jpeg.encode(rgb, tables=(luma, chroma))
    tables = jpeg.read_quant_tables(out)
    np.testing.assert_array_equal(tables[0], luma)
    np.testing.assert_array_equal(tables[1], chroma)
    assert [m for m, _, _ in jpeg.marker_segments(out) if m in (0xC0, 0xC1)] == [0xC0]
    # Pillow decodes it, within the distortion the tables allow
    with Image.open(io.BytesIO(out)) as im:
        assert np.abs(np.asarray(im.convert("RGB")).astype(int) - rgb).mean() < 40
    # optimal Huffman tables: the same coefficients, fewer bytes
    small = jpeg.encode(rgb, tables=(luma, chroma), optimize=True)
    assert len(small) < len(out)
    for a, b in zip(dec.read_coefficients(out)[0], dec.read_coefficients(small)[0]):
        np.testing.assert_array_equal(a, b)
    # 16-bit entries: an extended-sequential (SOF1) file
    wide = jpeg.encode(rgb, tables=(np.full(64, 300), chroma))
    assert [m for m, _, _ in jpeg.marker_segments(wide) if m in (0xC0, 0xC1)] == [0xC1]
    assert int(jpeg.read_quant_tables(wide)[0][0]) == 300
    for bad in ((np.zeros(64, int), chroma), (np.full(64, 70000), chroma), (luma[:10], chroma)):
        with pytest.raises(ValueError):
            jpeg.encode(rgb, tables=bad)
