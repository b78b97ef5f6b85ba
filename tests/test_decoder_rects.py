"""Partial entropy decoding (``read_coefficient_rects`` and its batch form) against libjpeg itself.

The reference is ``read_coefficients`` (libjpeg's ``jpeg_read_coefficients`` of the whole file):
every rectangle, at every k, must hold exactly the values of the same place of the full read,
whichever way the C layer got them (stopped after the last MCU row, restart segments spliced into
a small JPEG, or a whole multi-scan decode). Data: the committed fixtures (every sampling, colour
space, coding, restart markers, odd sizes) and the ``photo_tree`` photographs; ../shared adds
ImageNet originals, imagenette and the odd JPEGs.
"""
from __future__ import annotations

import numpy as np
import pytest

import jpegfiles
from conftest import HAVE_SHARED
from jdct_cli import _decoder as dec
from jdct_cli import jpeg
from jdct_cli.errors import ImageTooLargeError, JpegError, NotAJpegError


def _random_rects(rng: np.random.Generator, comps, *, skip_some: bool = True):
    """A random block rectangle (row0, col0, row1, col1) per component, or None for some."""
    rects = []
    for c in comps:
        H, W = c.shape[:2]
        if skip_some and len(comps) > 1 and rng.random() < 0.15:
            rects.append(None)
            continue
        r0 = int(rng.integers(0, H))
        c0 = int(rng.integers(0, W))
        rects.append((r0, c0, int(rng.integers(r0 + 1, H + 1)), int(rng.integers(c0 + 1, W + 1))))
    return rects


def _expected(comp: np.ndarray, rect, k: int) -> np.ndarray:
    r0, c0, r1, c1 = rect
    return comp[r0:r1, c0:c1].reshape(r1 - r0, c1 - c0, 8, 8)[:, :, :k, :k].reshape(r1 - r0, c1 - c0, k * k)


def _files(photo_tree):
    files = [jpegfiles.path(n) for n in jpegfiles.GOOD] + jpegfiles.photos(photo_tree, step=3)
    files += jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=11)
    files += jpegfiles.shared_files("imagenette-5k", "val/*/*.JPEG", step=50)
    files += jpegfiles.shared_odd("variants/ocelot_jt_restart_2mcu.jpg", "variants/chelsea_cjpeg_restart_every_row.jpg",
                                  "variants/chelsea_cjpeg_restart_every_mcu.jpg", "variants/ocelot_jt_progressive.jpg",
                                  "jpeg-decoder/reftest/images/non-interleaved-mcu.jpg",
                                  "jpeg-decoder/reftest/images/mjpeg.jpg")
    return files


def test_rectangles_equal_the_same_places_of_a_full_read(photo_tree):
    rng = np.random.default_rng(12)
    modes = {}
    files = _files(photo_tree)
    assert len(files) > (80 if HAVE_SHARED else 40)
    for path in files:
        data = path.read_bytes()
        comps, quant, warnings = dec.read_coefficients(data)
        for _ in range(6):
            rects = _random_rects(rng, comps)
            ks = [int(rng.integers(1, 9)) for _ in comps]
            out, q, w, info = dec.read_coefficient_rects(data, rects, ks=ks)
            modes[info["mode"]] = modes.get(info["mode"], 0) + 1
            np.testing.assert_array_equal(q, quant, err_msg=str(path))
            assert info["num_components"] == len(comps)
            assert w <= warnings
            for ci, (comp, rect, k) in enumerate(zip(comps, rects, ks)):
                if rect is None:
                    assert out[ci] is None
                    continue
                assert out[ci].dtype == np.int16 and out[ci].flags.c_contiguous
                np.testing.assert_array_equal(out[ci], _expected(comp, rect, k), err_msg=f"{path} {ci} {rect} {k}")
    # every way of decoding was exercised: baseline, restart-marker and progressive files
    assert modes.get("stopped", 0) > 50 and modes.get("spliced", 0) > 0 and modes.get("whole", 0) > 0, modes


def test_single_scan_files_stop_after_the_last_row_needed():
    """A rectangle near the top of a baseline file decodes only the rows down to it: fewer iMCU
    rows than the image has, and the damage of a file truncated below the rectangle is not met
    (a full read of the same file warns)."""
    data = jpegfiles.data("420.jpg")
    head = dec.read_header(data)
    _, _, _, info = dec.read_coefficient_rects(data, [(0, 0, 2, 4), None, None])
    assert info["mode"] == "stopped"
    assert info["imcu_rows_read"] == 1 < info["imcu_rows"] == -(-head["height"] // 16)
    cut = jpegfiles.data("truncated_50pct.jpg")
    assert dec.read_coefficients(cut)[2] >= 1
    out, _, warnings, info = dec.read_coefficient_rects(cut, [(0, 0, 2, 4)], strict=True)
    assert warnings == 0 and info["imcu_rows_read"] == 1
    np.testing.assert_array_equal(out[0], dec.read_coefficients(data)[0][0][0:2, 0:4])
    # below the cut, the truncation is met: a warning, or an error in strict mode
    rows = dec.read_coefficients(data)[0][0].shape[0]
    with pytest.raises(JpegError, match="Premature end"):
        dec.read_coefficient_rects(cut, [(rows - 2, 0, rows, 2)], strict=True)
    assert dec.read_coefficient_rects(cut, [(rows - 2, 0, rows, 2)])[2] >= 1


@pytest.mark.parametrize("sampling", ["4:2:0", "4:4:4", "4:2:2"])
def test_restart_segments_are_spliced_losslessly(photo_tree, sampling):
    """A file transcoded with a restart interval that divides its MCU rows is cut to the restart
    segments covering the rectangles: the values are the source's, and far fewer MCUs are decoded."""
    rgb = dec.decode(jpegfiles.photos(photo_tree)[0].read_bytes())[0]
    rgb = np.ascontiguousarray(np.tile(rgb, (3, 3, 1))[:300, :400])
    src = dec.encode(rgb, 92, sampling)
    head = dec.read_header(src)
    mcu_w = 8 * max(c["h"] for c in head["components"])
    mcus_per_row = -(-head["width"] // mcu_w)
    interval = max(k for k in (1, 2, 3, 4) if mcus_per_row % k == 0)
    cut, _ = dec.transcode(src, restart_interval=interval)
    assert dec.read_header(cut)["restart_interval"] == interval
    ref, ref_q, _ = dec.read_coefficients(src)
    rng = np.random.default_rng(3)
    for _ in range(20):
        rects = _random_rects(rng, ref, skip_some=False)
        out, q, warnings, info = dec.read_coefficient_rects(cut, rects)
        assert warnings == 0
        np.testing.assert_array_equal(q, ref_q)
        for comp, rect, got in zip(ref, rects, out):
            np.testing.assert_array_equal(got, _expected(comp, rect, 8))
    # a small rectangle in the middle: spliced, a small share of the MCUs decoded
    rows = ref[0].shape[0]
    _, _, _, info = dec.read_coefficient_rects(cut, [(rows // 2, 4, rows // 2 + 2, 8)])
    total = mcus_per_row * info["imcu_rows"]
    assert info["mode"] == "spliced" and info["mcus_read"] < total / 10


def test_rectangles_that_do_not_fit_are_value_errors():
    data = jpegfiles.data("420.jpg")
    rows, cols = dec.read_coefficients(data)[0][0].shape[:2]
    for rects, ks in (([(0, 0, rows + 1, 1)], None), ([(0, cols, 1, cols + 1)], None),
                      ([None, None, None, (0, 0, 1, 1)], None), ([(0, 0, 1, 1)], [9]), ([(2, 0, 1, 1)], None),
                      ([(0, 0, 1, 1)] * 5, None)):
        with pytest.raises(ValueError) as info:
            dec.read_coefficient_rects(data, rects, ks=ks)
        assert not isinstance(info.value, JpegError), rects
    gray = jpegfiles.data("gray.jpg")
    with pytest.raises(ValueError, match="component the image does not have"):
        dec.read_coefficient_rects(gray, [(0, 0, 1, 1), (0, 0, 1, 1)])
    # nothing wanted: no decoding at all, the header's tables
    out, q, w, info = dec.read_coefficient_rects(data, [None, None, None])
    assert info["mode"] == "none" and out == [None] * 3
    np.testing.assert_array_equal(q, dec.read_coefficients(data)[1])


def test_budgets_and_bad_files_are_jpeg_errors():
    with pytest.raises(ImageTooLargeError):
        dec.read_coefficient_rects(jpegfiles.data("declares_65535x65535.jpg"), [(0, 0, 1, 1)])
    with pytest.raises(ImageTooLargeError):
        dec.read_coefficient_rects(jpegfiles.data("420.jpg"), [(0, 0, 1, 1)], max_pixels=100)
    with pytest.raises(JpegError):
        dec.read_coefficient_rects(jpegfiles.data("truncated_before_scan.jpg"), [(0, 0, 1, 1)])
    with pytest.raises(NotAJpegError, match="PNG"):
        jpeg.read_coefficient_rects(jpegfiles.data("png_named.jpg"), [(0, 0, 1, 1)])
    # the JPEG layer words libjpeg's message and names the file
    cut = jpegfiles.data("truncated_50pct.jpg")
    rows = dec.read_header(cut)["components"][0]["blocks_high"]
    with pytest.raises(JpegError) as info:
        jpeg.read_coefficient_rects(cut, [(0, 0, rows, 1)], strict=True, path="c.jpg")
    assert info.value.path == "c.jpg" and info.value.reason.startswith("truncated: ")
    # bytes left over before EOI are past the last block: a rectangle read, even of every row,
    # stops before them (a whole read sees them)
    damaged = jpegfiles.data("corrupt_entropy.jpg")
    rows = dec.read_header(damaged)["components"][0]["blocks_high"]
    assert jpeg.read_coefficient_rects(damaged, [(0, 0, rows, 1)], strict=True).warnings == 0
    with pytest.raises(JpegError, match="extraneous bytes"):
        jpeg.read_coefficients(damaged, strict=True)


# ------------------------------------------------------------------------------------ batches


def _batch_inputs(files, rng, *, padded: bool):
    """Inputs of a batch over ``files``: data, rects (n, 3, 4), ks, offsets, strides, out, and the
    expected array of every rectangle (None when empty)."""
    datas, R, K, expected = [], [], [], []
    for path in files:
        data = path.read_bytes()
        comps = dec.read_coefficients(data)[0]
        rects = _random_rects(rng, comps)[:3]
        ks = [int(rng.integers(1, 9)) for _ in range(3)]
        row, exp = [], []
        for ci in range(3):
            rect = rects[ci] if ci < len(rects) else None
            row.append(rect or (0, 0, 0, 0))
            exp.append(None if rect is None else _expected(comps[ci], rect, ks[ci]))
        datas.append(data)
        R.append(row)
        K.append(ks)
        expected.append(exp)
    R, K = np.array(R, np.int64), np.array(K, np.int64)
    rows, cols = R[:, :, 2] - R[:, :, 0], R[:, :, 3] - R[:, :, 1]
    strides = cols * K * K + (7 * K if padded else 0)  # padded: room left after every block row
    sizes = np.where(rows > 0, rows * strides, 0)
    offsets = np.concatenate([[0], np.cumsum(sizes.ravel())[:-1]]).reshape(sizes.shape) + 5
    out = np.full(int(sizes.sum()) + 10, 12345, np.int16)
    return datas, R, K, offsets, strides, out, expected


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("padded", [False, True])
def test_batch_equals_one_by_one_and_writes_nothing_else(photo_tree, threads, padded):
    rng = np.random.default_rng(threads * 2 + padded)
    files = [jpegfiles.path(n) for n in ("420.jpg", "422.jpg", "444.jpg", "gray.jpg", "progressive.jpg",
                                         "restart_2mcu.jpg", "arithmetic.jpg", "size_7x13.jpg")]
    files += jpegfiles.photos(photo_tree, step=4)
    datas, R, K, offsets, strides, out, expected = _batch_inputs(files, rng, padded=padded)
    touched = np.zeros(out.shape, bool)
    res = jpeg.read_coefficient_rects_batch(datas, R, out, offsets, strides=strides if padded else None, ks=K,
                                            threads=threads)
    assert res.errors == [None] * len(files)
    assert (res.warnings == 0).all()
    for i, data in enumerate(datas):
        ref_q = dec.read_coefficients(data)[1]
        nc = len(ref_q)
        assert res.num_components[i] == nc
        np.testing.assert_array_equal(res.quant[i, :min(nc, 3)], ref_q[:3])
        for ci in range(3):
            exp = expected[i][ci]
            if exp is None:
                continue
            rows, cols, kk = exp.shape
            for r in range(rows):
                start = offsets[i, ci] + r * strides[i, ci]
                got = out[start:start + cols * kk].reshape(cols, kk)
                np.testing.assert_array_equal(got, exp[r], err_msg=f"{files[i]} {ci} row {r}")
                touched[start:start + cols * kk] = True
    assert (out[~touched] == 12345).all(), "the batch wrote outside the rectangles' destinations"


def test_batch_items_fail_alone(photo_tree):
    good = jpegfiles.photos(photo_tree)[:3]
    bad = {"truncated_before_scan.jpg": "no image data", "png_named.jpg": "not a JPEG",
           "declares_65535x65535.jpg": "more than the budget"}
    datas = [p.read_bytes() for p in good] + [jpegfiles.data(n) for n in bad] + [b""]
    n = len(datas)
    R = np.zeros((n, 1, 4), np.int64)
    R[:, 0] = (0, 0, 1, 1)
    offsets = np.arange(n, dtype=np.int64)[:, None] * 64
    out = np.zeros(n * 64, np.int16)
    paths = [f"f{i}.jpg" for i in range(n)]
    res = jpeg.read_coefficient_rects_batch(datas, R, out, offsets, threads=2, paths=paths)
    for i in range(3):
        assert res.errors[i] is None
        np.testing.assert_array_equal(out[i * 64:(i + 1) * 64], dec.read_coefficients(datas[i])[0][0][0, 0])
    for i, words in enumerate(bad.values(), start=3):
        assert isinstance(res.errors[i], JpegError) and words in res.errors[i].reason, res.errors[i]
        assert res.errors[i].path == paths[i] and res.num_components[i] == 0
    assert isinstance(res.errors[-1], JpegError)
    # a rectangle outside one image is that item's ValueError
    R[0, 0] = (10_000, 0, 10_001, 1)
    res = jpeg.read_coefficient_rects_batch(datas[:2], R[:2], out, offsets[:2])
    assert isinstance(res.errors[0], ValueError) and not isinstance(res.errors[0], JpegError)
    assert res.errors[1] is None


def test_batch_refuses_destinations_outside_out():
    data = jpegfiles.data("420.jpg")
    R = np.array([[(0, 0, 2, 2)]], np.int64)
    out = np.zeros(4 * 64, np.int16)
    jpeg.read_coefficient_rects_batch([data], R, out, np.zeros((1, 1), np.int64))
    for offsets, strides, o in ((np.ones((1, 1), np.int64), None, out),
                                (np.zeros((1, 1), np.int64), np.full((1, 1), 64), out),
                                (np.full((1, 1), -1, np.int64), None, out),
                                (np.zeros((1, 1), np.int64), None, out.astype(np.int32)),
                                (np.zeros((1, 1), np.int64), None, out[::2])):
        with pytest.raises(ValueError):
            jpeg.read_coefficient_rects_batch([data], R, o, offsets, strides=strides)
    with pytest.raises(ValueError, match="rects must be"):
        jpeg.read_coefficient_rects_batch([data, data], R, out, np.zeros((1, 1), np.int64))
