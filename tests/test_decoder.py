"""The C boundary ``jdct_cli._decoder`` against independent references on real data.

References: Pillow's own libjpeg decode (pixels, header facts, quant tables), libjpeg-turbo's encoder
(``encode`` + ``read_coefficients`` for ``forward_dct``), and a float block IDCT / upsampling /
colour conversion written here in numpy (for ``read_coefficients``).

Data: the committed fixtures of tests/data/jpegs/ (every sampling, colour space and coding) and the
``photo_tree`` photographs always; ../shared/data adds its real ImageNet files and odd JPEGs.
"""
from __future__ import annotations

import io
import random

import numpy as np
import PIL
import pytest
from PIL import Image, ImageFile

import jpegfiles
from conftest import HAVE_SHARED
from photos import photo_jpeg
from jdct_cli import _decoder as dec
from jdct_cli.errors import ImageTooLargeError, JpegError
from jdct_cli.jpegmath.quant import ijg_tables

# Pillow refuses arithmetic files above one 64 KB block unless MAXBLOCK is raised (known fact).
ImageFile.MAXBLOCK = 1 << 26


def _pillow_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _committed(*names):
    return [jpegfiles.path(n) for n in names]


# ----------------------------------------------------------------------------------- decode


def test_decode_equals_pillow_on_baseline_files(photo_tree):
    """Pixel-for-pixel equality with Pillow (libjpeg islow + fancy upsampling) on real photos:
    the photo_tree (4:2:0/4:2:2/4:4:4 and grayscale at many qualities and odd sizes), with
    ../shared: imagenette (4:2:0 q75 and grayscale), imagenet-originals (4:4:4/4:2:0/4:2:2/4:4:0/gray)."""
    files = jpegfiles.photos(photo_tree)
    files += jpegfiles.shared_files("imagenette-5k", "train/*/*.JPEG", step=40)
    files += jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=4)
    assert len(files) > (150 if HAVE_SHARED else 60)
    for path in files:
        data = path.read_bytes()
        rgb, warnings = dec.decode(data)
        assert warnings == 0, path
        assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
        np.testing.assert_array_equal(rgb, _pillow_rgb(data), err_msg=str(path))


#: Committed files Pillow decodes exactly as libjpeg does (every colour space, sampling and coding).
LOCAL_EXACT = [
    "gray.jpg", "gray_2x2.jpg", "cmyk.jpg", "ycck.jpg", "rgb_colorspace.jpg", "progressive.jpg", "411.jpg",
    "410.jpg", "mixed_sampling.jpg", "440.jpg", "422.jpg", "444.jpg", "restart_every_mcu.jpg", "arithmetic.jpg",
    "arithmetic_progressive.jpg", "q5_16bit_qtables.jpg", "size_33x31.jpg", "size_7x13.jpg", "size_200x1.jpg",
    "size_1x120.jpg", "size_1x1.jpg",
]
ODD_EXACT = [
    "pillow/hopper_gray.jpg",                                  # grayscale
    "jpeg-decoder/reftest/images/grayscale_16x24_sampling2x2.jpg",
    "cameratrap/african_elephants_cmyk.jpg",                   # Adobe CMYK, transform 0
    "jpeg-decoder/reftest/images/ycck.jpg",                    # YCCK, restart interval
    "pillow/pil_sample_cmyk.jpg",
    "jpeg-decoder/reftest/images/mozilla/jpg-cmyk-2.jpg",
    "jpeg-decoder/reftest/images/rgb.jpg",                     # RGB colour space
    "variants/chelsea_cjpeg_rgb_colorspace.jpg",
    "jpeg-decoder/reftest/images/progressive3.jpg",
    "variants/ocelot_jt_progressive.jpg",
    "variants/chelsea_cjpeg_411.jpg",
    "variants/chelsea_cjpeg_410.jpg",
    "variants/chelsea_cjpeg_mixed_chroma.jpg",
    "variants/chelsea_cjpeg_440.jpg",
    "variants/chelsea_q90_422.jpg",
    "variants/chelsea_cjpeg_restart_every_mcu.jpg",
    "variants/ocelot_jt_arithmetic.jpg",
    "variants/ocelot_jt_arithmetic_progressive.jpg",
    "libjpeg-turbo/testimgari.jpg",
    "pillow/hopper_16bit_qtables.jpg",
    "jpeg-decoder/reftest/images/mozilla/jpg-size-33x33.jpg",
    "variants/chelsea_crop_7x13.jpg",
    "variants/chelsea_strip_451x1.jpg",
    "jpeg-decoder/reftest/images/grayscale_long.jpg",
]


EXACT = _committed(*LOCAL_EXACT) + jpegfiles.shared_odd(*ODD_EXACT)


@pytest.mark.parametrize("path", EXACT, ids=[p.name for p in EXACT])
def test_decode_equals_pillow_on_odd_files(path):
    """Colour spaces (gray, CMYK with Adobe inversion, YCCK, RGB), odd samplings, progressive,
    arithmetic, restart markers and tiny sizes all come out as Pillow's ``convert("RGB")``."""
    data = path.read_bytes()
    rgb, warnings = dec.decode(data)
    assert warnings == 0
    np.testing.assert_array_equal(rgb, _pillow_rgb(data))


def test_scaled_decode_equals_pillow_draft(photo_tree):
    """``scale`` uses libjpeg's DCT scaling: Pillow's ``draft()`` asks libjpeg for the same
    scale_denom, so both outputs must agree exactly (and have libjpeg's ceil(W/s) size)."""
    files = jpegfiles.photos(photo_tree, step=4) + _committed("420.jpg", "gray.jpg", "cmyk.jpg", "422.jpg", "444.jpg")
    files += jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=16)
    files += jpegfiles.shared_odd("variants/chelsea_q90_420.jpg", "pillow/hopper_gray.jpg",
                                  "cameratrap/african_elephants_cmyk.jpg")
    compared = 0
    for path in files:
        data = path.read_bytes()
        head = dec.read_header(data)
        for s in (2, 4, 8):
            rgb, _ = dec.decode(data, scale=s)
            assert rgb.shape == (-(-head["height"] // s), -(-head["width"] // s), 3)
            im = Image.open(io.BytesIO(data))
            im.draft("RGB", (head["width"] // s, head["height"] // s))
            if im.size != (rgb.shape[1], rgb.shape[0]):
                continue  # Pillow picked another scale for this size request
            np.testing.assert_array_equal(rgb, np.asarray(im.convert("RGB")), err_msg=f"{path} 1/{s}")
            compared += 1
    assert compared >= 30


def test_roi_decode_is_exactly_the_region_of_the_full_decode(photo_tree):
    """``roi`` (jpeg_crop_scanline + jpeg_skip_scanlines) returns exactly the same pixels as the
    full decode at the same scale, for random regions, all scales and the usual samplings."""
    rng = random.Random(7)
    files = jpegfiles.photos(photo_tree, step=8) + _committed(
        "420.jpg", "422.jpg", "440.jpg", "411.jpg", "410.jpg", "mixed_sampling.jpg", "progressive.jpg", "gray.jpg",
        "ycck.jpg", "restart_every_mcu.jpg", "arithmetic.jpg", "cmyk.jpg", "size_33x31.jpg")
    files += jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=12)
    files += jpegfiles.shared_odd(*(
        "variants/chelsea_q90_420.jpg", "variants/chelsea_q90_422.jpg", "variants/chelsea_cjpeg_440.jpg",
        "variants/chelsea_cjpeg_411.jpg", "variants/chelsea_cjpeg_410.jpg", "variants/chelsea_cjpeg_mixed_chroma.jpg",
        "variants/ocelot_jt_progressive.jpg", "pillow/hopper_gray.jpg", "jpeg-decoder/reftest/images/ycck.jpg",
        "variants/chelsea_cjpeg_restart_every_mcu.jpg", "variants/ocelot_jt_arithmetic.jpg",
        "cameratrap/african_elephants_cmyk.jpg", "jpeg-decoder/reftest/images/mozilla/jpg-size-33x33.jpg"))
    for path in files:
        data = path.read_bytes()
        for s in (1, 2, 4, 8):
            full, _ = dec.decode(data, scale=s)
            H, W = full.shape[:2]
            for _ in range(3):
                w, h = rng.randint(1, W), rng.randint(1, H)
                x, y = rng.randint(0, W - w), rng.randint(0, H - h)
                part, warnings = dec.decode(data, scale=s, roi=(x, y, w, h))
                assert warnings == 0
                assert part.shape == (h, w, 3) and part.flags.c_contiguous
                np.testing.assert_array_equal(part, full[y:y + h, x:x + w], err_msg=f"{path} 1/{s} {(x, y, w, h)}")


def test_roi_outside_the_image_and_bad_scale_are_refused():
    data = jpegfiles.data("420.jpg")  # 75x50
    with pytest.raises(ValueError, match="not inside"):
        dec.decode(data, roi=(64, 0, 20, 10))
    with pytest.raises(ValueError, match="not inside"):
        dec.decode(data, roi=(0, 0, 0, 10))
    with pytest.raises(ValueError, match="scale"):
        dec.decode(data, scale=3)


def _psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def full_size_photos(tmp_path_factory):
    """scikit-image's CC0 photographs at full size (300..600 px a side), one per chroma sampling."""
    d = tmp_path_factory.mktemp("full")
    return [photo_jpeg(d / "chelsea_420.jpg", "chelsea", subsampling=2),
            photo_jpeg(d / "coffee_422.jpg", "coffee", subsampling=1, quality=85),
            photo_jpeg(d / "rocket_444.jpg", "rocket", subsampling=0, quality=95)]


def test_m_eighths_scaled_decode_size_roi_and_quality(full_size_photos):
    """``scale=8, scale_num=M`` (libjpeg-turbo's M/8 DCT scaling, no Pillow equivalent): output
    ``ceil(W*M/8)``; every ROI is exactly the region of the full decode at that scale; and the
    pixels are the full-resolution decode resampled to that size (vs Pillow's Lanczos resize of
    it: 25 dB worst, ~33 dB typical on these files; a wrong scale or crop scores far lower)."""
    rng = random.Random(11)
    files = list(full_size_photos) + jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=24)
    files += jpegfiles.shared_odd(
        "variants/chelsea_q90_420.jpg", "variants/chelsea_q90_422.jpg", "variants/chelsea_cjpeg_440.jpg",
        "variants/ocelot_jt_progressive.jpg", "pillow/hopper_gray.jpg", "cameratrap/african_elephants_cmyk.jpg")
    scores = []
    for path in files:
        data = path.read_bytes()
        ref_full, _ = dec.decode(data)
        H0, W0 = ref_full.shape[:2]
        for m in (3, 5, 6, 7, 12):
            full, warnings = dec.decode(data, scale=8, scale_num=m)
            assert warnings == 0
            H, W = full.shape[:2]
            assert (H, W) == (-(-H0 * m // 8), -(-W0 * m // 8)), (path, m)
            ref = np.asarray(Image.fromarray(ref_full).resize((W, H), Image.Resampling.LANCZOS))
            score = _psnr(full, ref)
            assert score > 24, (path, m, score)
            scores.append(score)
            for _ in range(2):
                w, h = rng.randint(1, W), rng.randint(1, H)
                x, y = rng.randint(0, W - w), rng.randint(0, H - h)
                part, _ = dec.decode(data, scale=8, scale_num=m, roi=(x, y, w, h))
                np.testing.assert_array_equal(part, full[y:y + h, x:x + w], err_msg=f"{path} {m}/8 {(x, y, w, h)}")
    assert np.median(scores) > 30
    # scale_num=M/8 with M a power of two is the same decode as scale=8/M
    data = files[0].read_bytes()
    np.testing.assert_array_equal(dec.decode(data, scale=8, scale_num=2)[0], dec.decode(data, scale=4)[0])
    with pytest.raises(ValueError, match="M/8"):
        dec.decode(data, scale=8, scale_num=17)
    with pytest.raises(ValueError, match="M/8"):
        dec.decode(data, scale=4, scale_num=3)


def _pillow_two_passes(a, box, out):
    """Pillow's bilinear resize as two explicit one-axis resizes, in the order Pillow 13 picks
    (vertical first when the height shrinks by more than twice as many pixels as the width):
    each one-axis pass is the same arithmetic in every Pillow version, unlike the order."""
    H, W = a.shape[:2]
    x0, y0, x1, y1 = box
    B = Image.Resampling.BILINEAR
    im = Image.fromarray(a)
    if (H - out[1]) > 0 and (H - out[1]) > (W - out[0]) * 2:
        im = im.resize((W, out[1]), B, box=(0, y0, W, y1), reducing_gap=None)
        return np.asarray(im.resize(out, B, box=(x0, 0, x1, out[1]), reducing_gap=None))
    im = im.resize((out[0], H), B, box=(x0, 0, x1, H), reducing_gap=None)
    return np.asarray(im.resize(out, B, box=(0, y0, out[0], y1), reducing_gap=None))


def test_resize_bilinear_equals_pillow(photo_tree):
    """``resize_bilinear`` against Pillow's bilinear resize (``reducing_gap=None``): bit-identical
    to its two one-axis passes in Pillow 13's order, and (with Pillow >= 13) to the one-call
    ``Image.resize(BILINEAR, box)``, on decoded photos (train-like crops down- and upscaled) and on
    random arrays covering both pass orders, identity axes, integer boxes and 1-pixel images."""
    one_call = int(PIL.__version__.split(".")[0]) >= 13
    rng = np.random.default_rng(5)
    cases = []
    for path in jpegfiles.photos(photo_tree, step=8) + jpegfiles.shared_files("imagenet-originals", "*/*.JPEG",
                                                                               step=40):
        rgb, _ = dec.decode(path.read_bytes())
        H, W = rgb.shape[:2]
        for out in ((224, 224), (64, 64), (300, 200)):
            x0, y0 = rng.uniform(0, W / 2), rng.uniform(0, H / 2)
            cases.append((rgb, (x0, y0, rng.uniform(x0 + 1, W), rng.uniform(y0 + 1, H)), out))
    for i in range(300):
        H, W = (int(v) for v in rng.integers(1, 120, 2))
        a = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        x0, y0 = rng.uniform(0, W * 0.9), rng.uniform(0, H * 0.9)
        box = (x0, y0, rng.uniform(x0 + 0.05, W), rng.uniform(y0 + 0.05, H))
        if i % 4 == 0:
            box = (0.0, 0.0, float(W), float(H))
        elif i % 4 == 1:
            box = tuple(float(int(v)) for v in box[:2]) + (float(W), float(H))
        out = tuple(int(v) for v in rng.integers(1, 160, 2))
        if i % 5 == 0:
            out = (W, out[1])
        elif i % 5 == 1:
            out = (out[0], H)
        cases.append((a, box, out))
    for a, box, out in cases:
        got = dec.resize_bilinear(a, box, *out)
        assert got.shape == (out[1], out[0], 3) and got.flags.c_contiguous
        np.testing.assert_array_equal(got, _pillow_two_passes(a, box, out), err_msg=f"{a.shape} {box} {out}")
        if one_call:
            ref = np.asarray(Image.fromarray(a).resize(out, Image.Resampling.BILINEAR, box=box, reducing_gap=None))
            np.testing.assert_array_equal(got, ref, err_msg=f"{a.shape} {box} {out}")
    a = cases[0][0]
    with pytest.raises(ValueError, match="box"):
        dec.resize_bilinear(a, (10, 10, 10, 20), 8, 8)
    with pytest.raises(ValueError, match="box"):
        dec.resize_bilinear(a, (0, 0, a.shape[1] + 1, 5), 8, 8)
    with pytest.raises(ValueError, match="uint8"):
        dec.resize_bilinear(a.astype(np.float32), (0, 0, 4, 4), 8, 8)


# ------------------------------------------------------------------------------ read_header


def test_read_header_agrees_with_pillow(photo_tree):
    """Dimensions, per-component id/sampling/quant slot (Pillow's ``im.layer``), progressive,
    Adobe transform and the EXIF payload agree with Pillow's own marker parser."""
    paths = _committed(*jpegfiles.GOOD) + jpegfiles.photos(photo_tree, step=4)
    paths += jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=10)
    paths += jpegfiles.shared_odd(*ODD_EXACT, "exif-orientation/Landscape_6.jpg")
    for path in paths:
        data = path.read_bytes()
        head = dec.read_header(data)
        im = Image.open(io.BytesIO(data))
        assert (head["width"], head["height"]) == im.size, path
        assert head["precision"] == 8
        assert head["num_components"] == len(im.layer) == len(head["components"])
        for comp, (cid, h, v, tq) in zip(head["components"], im.layer):
            assert (comp["id"], comp["h"], comp["v"], comp["quant_table"]) == (
                cid if isinstance(cid, int) else ord(cid), h, v, tq), path
        assert head["progressive"] == bool(im.info.get("progressive") or im.info.get("progression")), path
        assert head["adobe_transform"] == im.info.get("adobe_transform"), path
        assert head["jfif"] == ("jfif" in im.info), path
        exif = im.info.get("exif")
        assert head["exif"] == (exif[6:] if exif else None), path


def test_read_header_facts_on_known_files():
    """Facts stated by the fixtures' INDEX.tsv (how each was made; checked independently where
    Pillow can), and by ../shared's odd-jpegs INDEX.tsv when present."""
    h = dec.read_header(jpegfiles.data("ycck.jpg"))
    assert (h["color_space"], h["adobe_transform"], h["restart_interval"]) == ("YCCK", 2, 2)
    h = dec.read_header(jpegfiles.data("cmyk.jpg"))
    assert (h["color_space"], h["adobe_transform"], h["num_components"]) == ("CMYK", 0, 4)
    assert dec.read_header(jpegfiles.data("rgb_colorspace.jpg"))["color_space"] == "RGB"
    assert dec.read_header(jpegfiles.data("restart_every_mcu.jpg"))["restart_interval"] == 1
    for name, progressive in (("arithmetic.jpg", False), ("arithmetic_progressive.jpg", True)):
        h = dec.read_header(jpegfiles.data(name))
        assert h["arithmetic"] and h["progressive"] == progressive
    h = dec.read_header(jpegfiles.data("gray.jpg"))  # 75x50: ceil(50 / 8) block rows
    assert h["color_space"] == "GRAYSCALE" and h["components"][0]["blocks_high"] == 7
    h = dec.read_header(jpegfiles.data("gray_2x2.jpg"))  # one component declaring 2x2: whole 2x2 MCUs
    assert (h["components"][0]["h"], h["components"][0]["blocks_high"]) == (2, 8)
    # padded block counts: 4:2:0 luma rounds up to whole 16x16 MCUs, chroma covers ceil(W/16)
    h = dec.read_header(jpegfiles.data("size_33x31.jpg"))
    luma, chroma = h["components"][0], h["components"][1]
    mcus = -(-33 // (8 * luma["h"]))
    assert (luma["blocks_wide"], chroma["blocks_wide"]) == (mcus * luma["h"], mcus * chroma["h"])
    if not HAVE_SHARED:
        return
    _odd = jpegfiles.load
    h = dec.read_header(_odd("jpeg-decoder/reftest/images/ycck.jpg"))
    assert (h["color_space"], h["adobe_transform"], h["restart_interval"]) == ("YCCK", 2, 63)
    h = dec.read_header(_odd("cameratrap/african_elephants_cmyk.jpg"))
    assert (h["color_space"], h["adobe_transform"], h["num_components"]) == ("CMYK", 0, 4)
    h = dec.read_header(_odd("jpeg-decoder/reftest/images/rgb.jpg"))
    assert h["color_space"] == "RGB"
    h = dec.read_header(_odd("variants/chelsea_cjpeg_restart_every_mcu.jpg"))
    assert h["restart_interval"] == 1
    for rel, progressive in (("libjpeg-turbo/testimgari.jpg", False), ("variants/ocelot_jt_arithmetic_progressive.jpg", True)):
        h = dec.read_header(_odd(rel))
        assert h["arithmetic"] and h["progressive"] == progressive
    h = dec.read_header(_odd("pillow/hopper_gray.jpg"))
    assert h["color_space"] == "GRAYSCALE" and h["components"][0]["blocks_high"] == 16
    # padded block counts: 4:2:0 luma rounds up to whole 16x16 MCUs, chroma covers ceil(W/16)
    h = dec.read_header(_odd("jpeg-decoder/reftest/images/mozilla/jpg-size-33x33.jpg"))
    luma, chroma = h["components"][0], h["components"][1]
    mcus = -(-33 // (8 * luma["h"]))
    assert (luma["blocks_wide"], chroma["blocks_wide"]) == (mcus * luma["h"], mcus * chroma["h"])


# ------------------------------------------------------------------------ read_coefficients


def _idct_matrix():
    # orthonormal 8-point DCT-II basis: C[u, x] = a(u) cos((2x+1) u pi / 16)
    u = np.arange(8)[:, None]
    x = np.arange(8)[None, :]
    c = np.sqrt(2 / 8) * np.cos((2 * x + 1) * u * np.pi / 16)
    c[0] /= np.sqrt(2)
    return c


def _planes(components, quant):
    """Float pixel planes (level shift undone, not clamped) of every component, padded size."""
    c = _idct_matrix()
    planes = []
    for coef, q in zip(components, quant):
        blocks = coef.astype(np.float64).reshape(*coef.shape[:2], 8, 8) * q.reshape(8, 8)
        pix = np.einsum("vy,abvu,ux->abyx", c, blocks, c) + 128.0
        planes.append(pix.transpose(0, 2, 1, 3).reshape(coef.shape[0] * 8, coef.shape[1] * 8))
    return planes


def _fancy_up2(plane, axis):
    """libjpeg's 'fancy' (triangle) 2x upsampling along ``axis``: each output sample is 3/4 of its
    own input sample plus 1/4 of the nearer neighbour, edges replicated (in float)."""
    p = np.moveaxis(plane, axis, 0)
    prev = np.concatenate([p[:1], p[:-1]])
    nxt = np.concatenate([p[1:], p[-1:]])
    out = np.empty((2 * p.shape[0],) + p.shape[1:])
    out[0::2] = 0.75 * p + 0.25 * prev
    out[1::2] = 0.75 * p + 0.25 * nxt
    return np.moveaxis(out, 0, axis)


def _reconstruct(data):
    """RGB from read_coefficients x quant with a float IDCT, float triangle upsampling of 2x
    subsampled chroma (cropped to its real size first, as libjpeg does) and JFIF YCbCr->RGB."""
    head = dec.read_header(data)
    comps, quant, _ = dec.read_coefficients(data)
    W, H = head["width"], head["height"]
    hmax = max(c["h"] for c in head["components"])
    vmax = max(c["v"] for c in head["components"])
    planes = []
    for info, plane in zip(head["components"], _planes(comps, quant)):
        plane = np.clip(plane, 0, 255)  # libjpeg range-limits each IDCT output sample
        fh, fv = hmax // info["h"], vmax // info["v"]
        plane = plane[: -(-H // fv), : -(-W // fh)]
        for axis, f in ((0, fv), (1, fh)):
            if f == 2:
                plane = _fancy_up2(plane, axis)
        planes.append(plane[:H, :W])
    if len(planes) == 1:
        return np.repeat(np.clip(np.rint(planes[0]), 0, 255)[..., None], 3, axis=2)
    y, cb, cr = planes[0], planes[1] - 128, planes[2] - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(np.rint(rgb), 0, 255)


@pytest.mark.parametrize("sampling", ["4:4:4", "4:2:0"])
def test_block_idct_of_coefficients_reconstructs_pillow_decode(photo_tree, sampling):
    """read_coefficients x quant tables through an independent float pipeline reconstructs
    Pillow's decode with PSNR > 45 dB. For 4:2:0 the chroma is upsampled with the same triangle
    filter libjpeg's fancy upsampling uses (in float), so the remaining error is only libjpeg's
    integer IDCT/upsampling/colour-conversion rounding, not a different filter."""
    candidates = _committed("444.jpg", "420.jpg") + jpegfiles.photos(photo_tree)
    if sampling == "4:4:4":
        candidates += jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=3)
    else:
        candidates += jpegfiles.shared_files("imagenette-5k", "val/*/*.JPEG", step=25)
        candidates += jpegfiles.shared_odd("variants/chelsea_q90_420.jpg")
    want = (1, 1) if sampling == "4:4:4" else (2, 2)
    checked = 0
    for path in candidates:
        data = path.read_bytes()
        head = dec.read_header(data)
        comps = head["components"]
        if len(comps) != 3 or (comps[0]["h"], comps[0]["v"]) != want or any(
                (c["h"], c["v"]) != (1, 1) for c in comps[1:]):
            continue
        psnr = _psnr(_reconstruct(data), _pillow_rgb(data))
        assert psnr > 45, f"{path}: PSNR {psnr:.1f} dB"
        checked += 1
        if checked == (20 if HAVE_SHARED else 12):
            break
    assert checked >= 8


def test_quant_tables_agree_with_pillow(photo_tree):
    """``quant[i]`` is the natural-order table of component i, as Pillow parses it from DQT."""
    paths = _committed(*jpegfiles.GOOD) + jpegfiles.photos(photo_tree, step=4)
    paths += jpegfiles.shared_files("imagenet-originals", "*/*.JPEG", step=20)
    paths += jpegfiles.shared_odd("pillow/hopper_16bit_qtables.jpg")
    for path in paths:
        data = path.read_bytes()
        comps, quant, _ = dec.read_coefficients(data)
        im = Image.open(io.BytesIO(data))
        assert quant.dtype == np.uint16 and quant.shape == (len(comps), 64)
        for i, layer in enumerate(im.layer):
            np.testing.assert_array_equal(quant[i], np.asarray(im.quantization[layer[3]]), err_msg=str(path))


TRANSCODES = {  # jpegtran's lossless transcodes of one source: the committed ones, ../shared's
    "420.jpg": ["progressive.jpg", "arithmetic.jpg", "arithmetic_progressive.jpg", "restart_2mcu.jpg",
                "restart_every_mcu.jpg", "optimized.jpg"],
    "variants/src_ocelot_cdla.jpg": ["variants/ocelot_jt_progressive.jpg", "variants/ocelot_jt_arithmetic.jpg",
                                     "variants/ocelot_jt_arithmetic_progressive.jpg",
                                     "variants/ocelot_jt_restart_2mcu.jpg", "variants/ocelot_jt_optimized.jpg"],
}


@pytest.mark.parametrize("source", [s for s in TRANSCODES if HAVE_SHARED or "/" not in s])
def test_coefficients_survive_lossless_transcodes(source):
    """jpegtran's lossless transcodes (progressive, arithmetic, restart markers, optimized Huffman)
    of the same photo carry the same quantized coefficients: read_coefficients must return the
    same arrays through every entropy-decoding path."""
    src = jpegfiles.load(source)
    ref, ref_q, _ = dec.read_coefficients(src)
    head = dec.read_header(src)
    hmax = max(c["h"] for c in head["components"])
    vmax = max(c["v"] for c in head["components"])
    # Only the blocks covering the image are data: MCU padding blocks are coded in interleaved
    # scans but left zero by non-interleaved (progressive) ones.
    real = [(-(-head["height"] * c["v"] // (8 * vmax)), -(-head["width"] * c["h"] // (8 * hmax)))
            for c in head["components"]]
    for rel in TRANSCODES[source]:
        comps, quant, warnings = dec.read_coefficients(jpegfiles.load(rel))
        assert warnings == 0
        np.testing.assert_array_equal(quant, ref_q)
        assert len(comps) == len(ref)
        for a, b, (bh, bw) in zip(comps, ref, real):
            assert a.dtype == np.int16
            np.testing.assert_array_equal(a[:bh, :bw], b[:bh, :bw], err_msg=rel)


# ------------------------------------------------------------------------------ forward_dct


def _crops(files, n, rng):
    """n random crops (sides multiples of 16, 16..224) of real photos decoded by Pillow (the files
    are visited again, with other crops, until there are n)."""
    files = list(files)
    rng.shuffle(files)
    crops = []
    for path in files * (1 + n // len(files)):
        img = np.asarray(Image.open(path).convert("RGB"))
        H, W = img.shape[0] // 16 * 16, img.shape[1] // 16 * 16
        if H < 16 or W < 16:
            continue
        h = 16 * rng.randint(1, min(H, 224) // 16)
        w = 16 * rng.randint(1, min(W, 224) // 16)
        y, x = rng.randint(0, img.shape[0] - h), rng.randint(0, img.shape[1] - w)
        crops.append(np.ascontiguousarray(img[y:y + h, x:x + w]))
        if len(crops) == n:
            break
    return crops


def _assert_same_as_encoder(rgb, quality, label):
    y, cb, cr, quant = dec.forward_dct(rgb, *ijg_tables(quality))
    comps, ref_quant, _ = dec.read_coefficients(dec.encode(rgb, quality, "4:2:0"))
    H, W = rgb.shape[:2]
    assert y.shape == (H // 8, W // 8, 64) and cb.shape == cr.shape == (H // 16, W // 16, 64)
    assert y.dtype == cb.dtype == np.int16 and quant.dtype == np.uint16
    np.testing.assert_array_equal(quant, ref_quant, err_msg=label)
    for name, a, b in zip("y cb cr".split(), (y, cb, cr), comps):
        np.testing.assert_array_equal(a, b, err_msg=f"{label} {name}")


def test_forward_dct_bit_identical_on_real_crops(photo_tree):
    """>= 300 real crops, each at quality 100 and 75: forward_dct == encode + read_coefficients."""
    rng = random.Random(2018)
    files = jpegfiles.photos(photo_tree) + jpegfiles.shared_files("imagenet-originals", "*/*.JPEG")
    files += jpegfiles.shared_files("imagenette-5k", "train/*/*.JPEG", step=50)
    crops = _crops(files, 320, rng)
    assert len(crops) >= 300
    for i, crop in enumerate(crops):
        for quality in (100, 75):
            _assert_same_as_encoder(crop, quality, f"crop {i} {crop.shape} q{quality}")


@pytest.mark.parametrize("quality", [100, 95, 75, 50, 10, 1])
def test_forward_dct_bit_identical_on_noise_and_extremes(quality):
    """Uniform noise (worst case for rounding), flat extremes and gradients, several shapes."""
    rng = np.random.default_rng(quality)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((16, 16), (48, 160), (224, 224))]
    images.append(np.zeros((32, 32, 3), np.uint8))
    images.append(np.full((32, 32, 3), 255, np.uint8))
    ramp = np.add.outer(np.arange(64), np.arange(96)).astype(np.uint8)
    images.append(np.ascontiguousarray(np.stack([ramp, ramp[::-1], 255 - ramp], axis=-1)))
    chess = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    images.append(np.stack([chess, 255 - chess, chess], axis=-1))
    for img in images:
        _assert_same_as_encoder(img, quality, f"{img.shape} q{quality}")


def test_ijg_tables_are_libjpegs_at_every_quality():
    """jpegmath.quant.ijg_tables (the one Python definition, which forward_dct and the store use)
    equals the tables libjpeg's own jpeg_set_quality(q, TRUE) writes, for every quality 1..100,
    read back both by read_coefficients and by Pillow's DQT parser."""
    rgb = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for q in range(1, 101):
        data = dec.encode(rgb, q, "4:2:0")
        _, quant, _ = dec.read_coefficients(data)
        luma, chroma = ijg_tables(q)
        assert luma.dtype == chroma.dtype == np.uint16 and luma.shape == chroma.shape == (64,)
        np.testing.assert_array_equal(quant, np.stack([luma, chroma, chroma]), err_msg=f"quality {q}")
        with Image.open(io.BytesIO(data)) as im:
            assert list(im.quantization[0]) == luma.tolist() and list(im.quantization[1]) == chroma.tolist()
        np.testing.assert_array_equal(dec.forward_dct(rgb, luma, chroma)[3], quant)


def test_forward_dct_rejects_bad_input():
    luma, chroma = ijg_tables(90)
    with pytest.raises(ValueError, match="multiples of 16"):
        dec.forward_dct(np.zeros((24, 32, 3), np.uint8), luma, chroma)
    with pytest.raises(ValueError, match="multiples of 16"):
        dec.forward_dct(np.zeros((32, 32, 3), np.float32), luma, chroma)
    with pytest.raises(ValueError, match="quality"):
        ijg_tables(0)
    zero = np.zeros(64, np.uint16)
    with pytest.raises(ValueError, match="1..255"):
        dec.forward_dct(np.zeros((32, 32, 3), np.uint8), zero, chroma)
    with pytest.raises(ValueError, match="1..255"):
        dec.forward_dct(np.zeros((32, 32, 3), np.uint8), luma, np.full(64, 256))
    with pytest.raises(ValueError, match="64 integers"):
        dec.forward_dct(np.zeros((32, 32, 3), np.uint8), luma[:63], chroma)
    with pytest.raises(ValueError, match="64 integers"):
        dec.forward_dct(np.zeros((32, 32, 3), np.uint8), luma.astype(np.float32), chroma)


def test_encode_round_trips_through_pillow():
    """encode() writes a standard JPEG: Pillow reads it with the asked sampling, near the input."""
    rng = np.random.default_rng(0)
    img = np.clip(np.add.outer(np.arange(40), np.arange(56))[..., None] * 2 + rng.integers(0, 8, (40, 56, 3)), 0, 255)
    img = img.astype(np.uint8)
    for sub, layer_hv in (("4:2:0", (2, 2)), ("4:2:2", (2, 1)), ("4:4:4", (1, 1)), ("4:4:0", (1, 2))):
        data = dec.encode(img, 95, sub)
        im = Image.open(io.BytesIO(data))
        assert im.size == (56, 40) and tuple(im.layer[0][1:3]) == layer_hv
        assert _psnr(np.asarray(im.convert("RGB")), img) > 30
    with pytest.raises(ValueError, match="subsampling"):
        dec.encode(img, 90, "4:1:1")


# ----------------------------------------------------------------------------- errors etc.


def test_pixel_budget_refuses_before_allocation():
    bombs = [jpegfiles.data("declares_65535x65535.jpg")]
    bombs += [p.read_bytes() for p in jpegfiles.shared_odd("jpeg-decoder/crashtest/images/max_size.jpg")]
    for bomb in bombs:
        for fn in (dec.read_header, dec.read_coefficients, dec.decode):
            with pytest.raises(ImageTooLargeError) as info:
                fn(bomb)
            assert info.value.pixels == 65535 * 65535 and info.value.max_pixels == dec.DEFAULT_MAX_PIXELS
    cases = [(jpegfiles.data("420.jpg"), 75, 50)]
    cases += [(p.read_bytes(), 451, 300) for p in jpegfiles.shared_odd("variants/chelsea_q90_420.jpg")]
    for data, w, h in cases:
        for fn in (dec.read_header, dec.read_coefficients, dec.decode):
            with pytest.raises(ImageTooLargeError, match=f"{w}x{h}"):
                fn(data, max_pixels=w * h - 1)
            fn(data, max_pixels=w * h)


def test_limits_are_the_c_layers():
    """One definition of each limit (csrc/jdct.h), as the binding exposes it, and the scan budget
    formula the documentation gives."""
    assert dec.DEFAULT_MAX_PIXELS == 100_000_000 and dec.MAX_SCANS == 500 and dec.MIN_SCAN_LIMIT == 64
    assert dec.SCAN_BLOCK_BUDGET == 100_000_000 and dec.COEF_SLACK == 1 << 22
    for blocks in (0, 1, 1000, 200_000, 1_000_000, 1_562_500, 10**9):
        expected = min(dec.MAX_SCANS, max(dec.MIN_SCAN_LIMIT, dec.SCAN_BLOCK_BUDGET // max(blocks, 1)))
        assert dec.scan_limit(blocks) == expected


@pytest.mark.parametrize("truncated, clean", [("truncated_50pct.jpg", "420.jpg")] + (
    [("variants/ocelot_truncated_50pct.jpg", "variants/src_ocelot_cdla.jpg")] if HAVE_SHARED else []))
def test_truncated_data_warns_or_fails_in_strict_mode(truncated, clean):
    data = jpegfiles.load(truncated)
    comps, _, warnings = dec.read_coefficients(data)
    assert warnings >= 1
    _, warnings = dec.decode(data)
    assert warnings >= 1
    with pytest.raises(JpegError, match="Premature end of JPEG file") as info:
        dec.read_coefficients(data, strict=True)
    assert info.value.libjpeg_message == info.value.reason  # the boundary gives libjpeg's own words
    with pytest.raises(JpegError, match="Premature end of JPEG file"):
        dec.decode(data, strict=True)
    assert dec.read_coefficients(jpegfiles.load(clean), strict=True)[2] == 0


BAD = [
    ("empty.jpg", "Empty input"),
    ("png_named.jpg", "Not a JPEG file"),
    ("truncated_before_frame.jpg", "no image"),
    ("truncated_before_scan.jpg", "missing SOS"),
    ("header_12bit.jpg", "Unsupported JPEG data precision 12"),
]
if HAVE_SHARED:
    BAD += [
        ("variants/empty.JPEG", "Empty input"),
        ("variants/png_disguised.JPEG", "Not a JPEG file"),
        ("variants/ocelot_truncated_in_header.jpg", "no image"),
        ("libjpeg-turbo/monkey12.jpg", "Unsupported JPEG data precision 12"),
    ]


@pytest.mark.parametrize("rel, message", BAD)
def test_bad_files_raise_jpeg_error_with_libjpeg_message(rel, message):
    data = jpegfiles.load(rel)
    for fn in (dec.read_header, dec.read_coefficients, dec.decode):
        with pytest.raises(JpegError, match=message):
            fn(data)


def test_accepts_any_buffer_and_reports_version():
    data = jpegfiles.data("gray.jpg")
    a, _ = dec.decode(data)
    b, _ = dec.decode(bytearray(data))
    c, _ = dec.decode(memoryview(data))
    d, _ = dec.decode(np.frombuffer(data, np.uint8))
    assert np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, d)
    assert dec.libjpeg_version().split()[0].count(".") == 2


def test_progressive_scan_bomb_is_refused():
    """A progressive file whose last scan is repeated 600 times (each repeat re-walks the whole
    coefficient buffer: a denial of service) is refused; the original file decodes."""
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    last_sos, eoi = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    bomb = data[:eoi] + data[last_sos:eoi] * 600 + data[eoi:]
    assert dec.read_coefficients(data)[2] == 0
    for fn in (dec.read_coefficients, dec.decode):
        with pytest.raises(JpegError, match="too many scans"):
            fn(bomb)
