"""jdct_cli.jpegmath: each piece of JPEG math against libjpeg-turbo / Pillow themselves and against a
second implementation written here, numpy and torch against each other.

Every test runs from a fresh clone (scikit-image's photographs, the committed JPEG fixtures, JPEGs
encoded here by libjpeg); ../shared adds imagenette to the flip identity.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import jpegfiles
from jdct_cli import _decoder, jpeg
from jdct_cli.jpegmath import blockdct, chroma, color, resize
from jdct_cli.jpegmath.quant import dequantize, ijg_tables, quantize
from photos import photo
from storefixture import crop_rgb, list_images, val_box
from storetools import REAL_SOURCES, real_source


def _dct_reference(n: int = 8) -> np.ndarray:
    """The orthonormal n-point DCT-II, written from its definition: D[u, x] = sqrt(2/n) c(u) cos(...)."""
    return np.array([[math.sqrt(2.0 / n) * (math.sqrt(0.5) if u == 0 else 1.0) * math.cos((2 * x + 1) * u * math.pi / (2 * n))
                      for x in range(n)] for u in range(n)])


def _photo_crop(name: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 (h, w, 3): a seeded crop of a scikit-image photograph, resized by Pillow."""
    img = photo(name)
    rng = np.random.default_rng(seed)
    y, x = int(rng.integers(0, img.shape[0] // 3)), int(rng.integers(0, img.shape[1] // 3))
    crop = Image.fromarray(img[y:y + 2 * img.shape[0] // 3, x:x + 2 * img.shape[1] // 3])
    return np.array(crop.resize((w, h), Image.Resampling.BILINEAR))


# ------------------------------------------------------------------------------------------ blockdct


def test_dct_bases_are_jpegs_orthonormal_dct():
    d = _dct_reference()
    np.testing.assert_allclose(blockdct.dct_matrix(8), d, atol=1e-15)
    np.testing.assert_allclose(blockdct.dct_matrix(8) @ blockdct.dct_matrix(8).T, np.eye(8), atol=1e-14)
    for n in (3, 5, 6, 12):
        np.testing.assert_allclose(blockdct.dct_matrix(n), _dct_reference(n), atol=1e-14)
    basis = blockdct.dct_basis()
    assert basis.shape == (64, 1, 8, 8)
    for k in (0, 1, 8, 9, 27, 63):
        v, u = divmod(k, 8)
        np.testing.assert_allclose(basis[k, 0], np.outer(d[v], d[u]), atol=1e-15)
    m = blockdct.idct_matrix()
    for p, k in ((0, 0), (9, 17), (63, 5)):
        (y, x), (v, u) = divmod(p, 8), divmod(k, 8)
        assert m[p, k] == pytest.approx(d[v, y] * d[u, x], abs=1e-15)
    assert blockdct.FLIP_SIGN.tolist() == [(-1) ** (k % 8) for k in range(64)]


def test_block_dct_round_trip_numpy_and_torch():
    rng = np.random.default_rng(0)
    plane = rng.uniform(0, 255, (2, 24, 40))
    coefs = blockdct.dct_blocks(plane)
    assert coefs.shape == (2, 64, 3, 5)
    # the DCT of one block, by the definition
    block = plane[1, 8:16, 16:24] - 128
    np.testing.assert_allclose(coefs[1, :, 1, 2].reshape(8, 8), _dct_reference() @ block @ _dct_reference().T, atol=1e-10)
    np.testing.assert_allclose(blockdct.idct_blocks(coefs), plane, atol=1e-10)
    t = blockdct.dct_blocks(torch.from_numpy(plane))
    np.testing.assert_allclose(t.numpy(), coefs, atol=1e-10)
    t32 = blockdct.idct_blocks(blockdct.dct_blocks(torch.from_numpy(plane).float()))
    assert t32.dtype == torch.float32 and float((t32 - torch.from_numpy(plane)).abs().max()) < 1e-3
    with pytest.raises(TypeError):
        blockdct.idct_blocks(coefs.astype(np.int16))
    with pytest.raises(ValueError):
        blockdct.dct_blocks(plane[:, :20])


def test_scaled_idct_matrices_follow_libjpeg():
    """1, 2, 4 points: means of 8/s adjacent outputs of the 8-point IDCT (jidctred.c; 1x1 = DC/8);
    3, 5, 6, 7: the s-point IDCT of the top-left coefficients times sqrt(s/8); 9..16: the block
    zero-padded. The coefficients each reads are exactly the nonzero columns."""
    c8 = _dct_reference().T  # [x, u]
    for s in (1, 2, 4, 8):
        r = 8 // s
        ref = np.array([[c8[i * r:(i + 1) * r, u].mean() for u in range(8)] for i in range(s)])
        np.testing.assert_allclose(blockdct.scaled_idct_matrix(s), ref, atol=1e-15)
    one = blockdct.scaled_idct_matrix(1)  # 1x1: DC / 8, nothing else
    assert one[0, 0] ** 2 == pytest.approx(1 / 8) and np.abs(one[0, 1:]).max() < 1e-15
    for s in (3, 5, 6, 7, 10, 12, 14):
        k = min(s, 8)
        ref = np.zeros((s, 8))
        ref[:, :k] = math.sqrt(s / 8) * _dct_reference(s).T[:, :k]
        np.testing.assert_allclose(blockdct.scaled_idct_matrix(s), ref, atol=1e-14)
    expected = {1: [0], 2: [0, 1, 3, 5, 7], 3: [0, 1, 2], 4: [0, 1, 2, 3, 5, 6, 7], 6: list(range(6)),
                8: list(range(8)), 12: list(range(8))}
    for s, freqs in expected.items():
        assert blockdct.coefficient_indices(s).tolist() == [8 * v + u for v in freqs for u in freqs], s
    with pytest.raises(ValueError):
        blockdct.scaled_idct_matrix(17)
    # idct_blocks with the shipped subset equals the full 64-coefficient block
    rng = np.random.default_rng(1)
    coefs = rng.normal(0, 40, (1, 64, 2, 3))
    for s in (1, 2, 3, 4, 6):
        sub = coefs[:, blockdct.coefficient_indices(s)]
        np.testing.assert_allclose(blockdct.idct_blocks(sub, s), blockdct.idct_blocks(coefs, s), atol=1e-10)
        assert blockdct.idct_blocks(sub, s).shape == (1, 2 * s, 3 * s)


@pytest.mark.parametrize("quality", [100, 95, 75, 30])
def test_encoder_chain_equals_libjpeg_bit_for_bit(quality):
    """Integer colour + biased h2v2 downsampling + islow FDCT + quantization, in numpy and in torch
    (float32 pixels), equal libjpeg-turbo's encoder front end (jdct's C forward_dct, itself
    bit-identical to encode + read_coefficients) on photographs."""
    luma, chrom = ijg_tables(quality)
    for k, name in enumerate(("chelsea", "astronaut", "coffee")):
        rgb = _photo_crop(name, 64, 96, seed=k)
        ref = _decoder.forward_dct(rgb, luma, chrom)[:3]
        for planes in (rgb.astype(np.int64), torch.from_numpy(rgb).float()):
            r, g, b = (planes[..., i] for i in range(3))
            y, cb, cr = color.rgb_to_ycbcr(r, g, b, exact=True)
            outs = [y, chroma.downsample_h2v2(cb), chroma.downsample_h2v2(cr)]
            for out, table, want in zip(outs, (luma, chrom, chrom), ref):
                got = quantize(blockdct.islow_fdct(out), 8 * table.astype(np.float64))
                got = got.numpy() if isinstance(got, torch.Tensor) else got
                np.testing.assert_array_equal(got, np.moveaxis(want, -1, 0), err_msg=f"{name} q{quality}")


def test_float_dct_within_one_step_of_libjpeg():
    luma, chrom = ijg_tables(100)
    rgb = _photo_crop("rocket", 96, 96)
    ref = np.moveaxis(_decoder.forward_dct(rgb, luma, chrom)[0], -1, 0)
    y, _, _ = color.rgb_to_ycbcr(*(rgb[..., i].astype(np.float64) for i in range(3)), exact=True)
    got = quantize(blockdct.dct_blocks(y), luma.astype(np.float64))
    d = np.abs(got - ref)
    assert d.max() <= 1 and (d == 0).mean() > 0.9


# ------------------------------------------------------------------------------------- quantization


def test_quantize_rounds_half_away_from_zero():
    x = np.array([-2.5, -1.5, -0.5, -0.49, 0.0, 0.49, 0.5, 1.5, 2.5, 7.0])
    want = [-3, -2, -1, 0, 0, 0, 1, 2, 3, 7]
    plane = np.zeros((1, 64, 1, 10))
    plane[0, 0, 0] = x
    np.testing.assert_array_equal(quantize(plane, np.ones(64))[0, 0, 0], want)
    plane[0, 5, 0] = x * 4
    np.testing.assert_array_equal(quantize(plane, np.full(64, 4.0))[0, 5, 0], want)
    t = quantize(torch.from_numpy(plane).float(), torch.full((64,), 4.0))
    np.testing.assert_array_equal(t[0, 5, 0].numpy(), want)
    # per-sample tables (B, K)
    two = np.stack([plane[0], 2 * plane[0]])
    tables = np.stack([np.full(64, 4.0), np.full(64, 8.0)])
    np.testing.assert_array_equal(quantize(two, tables)[1, 5, 0], want)
    levels = np.arange(-3, 4, dtype=np.int16).reshape(1, 1, 7).repeat(64, 0)
    deq = dequantize(levels, np.arange(1, 65))
    assert deq.dtype == np.float32 and deq[10, 0, 0] == -33
    assert dequantize(torch.from_numpy(levels), np.arange(1, 65)).dtype == torch.float32


# ------------------------------------------------------------------------------------------- colour


def test_colour_formulas_numpy_torch_and_by_hand():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, 200_000))
    rgb[:, :8] = [[0, 255, 0, 0, 255, 255, 0, 255], [0, 0, 255, 0, 255, 0, 255, 255], [0, 0, 0, 255, 0, 255, 255, 255]]
    y, cb, cr = color.rgb_to_ycbcr(*rgb, exact=True)
    # by hand: libjpeg's FIX() constants and shifts
    r, g, b = rgb
    assert np.array_equal(y, (19595 * r + 38470 * g + 7471 * b + 32768) >> 16)
    assert np.array_equal(cb, (-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 32767) >> 16)
    assert np.array_equal(cr, (32768 * r - 27439 * g - 5329 * b + (128 << 16) + 32767) >> 16)
    assert max(cb.max(), cr.max()) <= 255 and min(cb.min(), cr.min()) >= 0
    t = color.rgb_to_ycbcr(*torch.from_numpy(rgb).float(), exact=True)
    for a, b_ in zip((y, cb, cr), t):
        np.testing.assert_array_equal(a, b_.numpy())
    back = color.ycbcr_to_rgb(y, cb, cr, exact=True)
    assert np.array_equal(back[0], np.clip(y + ((91881 * (cr - 128) + 32768) >> 16), 0, 255))
    assert np.array_equal(back[1], np.clip(y + ((-22554 * (cb - 128) - 46802 * (cr - 128) + 32768) >> 16), 0, 255))
    assert np.array_equal(back[2], np.clip(y + ((116130 * (cb - 128) + 32768) >> 16), 0, 255))
    tb = color.ycbcr_to_rgb(*(torch.from_numpy(p).float() for p in (y, cb, cr)), exact=True)
    for a, b_ in zip(back, tb):
        np.testing.assert_array_equal(a, b_.numpy())
    assert np.abs(np.stack(back) - rgb).max() <= 3  # round trip through 8-bit YCbCr
    f = color.ycbcr_to_rgb(*color.rgb_to_ycbcr(*rgb.astype(np.float64)))
    np.testing.assert_allclose(np.stack(f), rgb, atol=2e-3)  # the float JFIF matrices invert each other
    u8 = color.rgb_to_ycbcr(*rgb.astype(np.uint8), exact=True)  # uint8 input does not wrap around
    np.testing.assert_array_equal(u8[1], cb)


# ------------------------------------------------------------------------------------------- chroma


def _loop_upsample(p: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """libjpeg's fancy upsamplers written as loops from jdsample.c's description."""
    h, w = p.shape
    at = lambda i, j: int(p[min(max(i, 0), h - 1), min(max(j, 0), w - 1)])  # noqa: E731
    out = np.zeros((h * fy, w * fx), dtype=np.int64)
    for i in range(h * fy):
        for j in range(w * fx):
            si, sj = i // fy, j // fx
            if (fy, fx) == (2, 2):
                ni = si - 1 if i % 2 == 0 else si + 1
                col = lambda jj: 3 * at(si, jj) + at(ni, jj)  # noqa: E731
                nj = sj - 1 if j % 2 == 0 else sj + 1
                out[i, j] = (3 * col(sj) + col(nj) + (8 if j % 2 == 0 else 7)) >> 4
            elif (fy, fx) == (1, 2):
                nj = sj - 1 if j % 2 == 0 else sj + 1
                out[i, j] = (3 * at(si, sj) + at(si, nj) + (1 if j % 2 == 0 else 2)) >> 2
            else:
                ni = si - 1 if i % 2 == 0 else si + 1
                out[i, j] = (3 * at(si, sj) + at(ni, sj) + (1 if i % 2 == 0 else 2)) >> 2
    return out


def test_upsamplers_match_a_loop_reference():
    rng = np.random.default_rng(3)
    for shape in ((1, 1), (1, 5), (4, 1), (5, 7)):
        p = rng.integers(0, 256, shape)
        for factors in ((2, 2), (1, 2), (2, 1)):
            want = _loop_upsample(p, *factors)
            np.testing.assert_array_equal(chroma.upsample(p, factors), want)
            t = chroma.upsample(torch.from_numpy(p).float()[None, None], factors)
            np.testing.assert_array_equal(t[0, 0].numpy(), want)
            # float: the same filter without the biases; torch's bilinear for 2x2 equals it
            f = chroma.upsample(p.astype(np.float64), factors, exact=False)
            tf = chroma.upsample(torch.from_numpy(p).double()[None], factors, exact=False)[0]
            np.testing.assert_allclose(tf.numpy(), f, atol=1e-10)
            assert np.abs(f - want).max() <= 1
        np.testing.assert_array_equal(chroma.upsample(p, (2, 4), fancy=True), np.repeat(np.repeat(p, 2, 0), 4, 1))
        np.testing.assert_array_equal(chroma.upsample(p, (2, 2), fancy=False), np.repeat(np.repeat(p, 2, 0), 2, 1))
        assert chroma.upsample(p, (1, 1)) is p


def test_downsample_h2v2_matches_a_loop_reference():
    rng = np.random.default_rng(4)
    p = rng.integers(0, 256, (6, 10))
    want = np.array([[(p[2 * i, 2 * j] + p[2 * i, 2 * j + 1] + p[2 * i + 1, 2 * j] + p[2 * i + 1, 2 * j + 1]
                       + (1 if j % 2 == 0 else 2)) >> 2 for j in range(5)] for i in range(3)])
    np.testing.assert_array_equal(chroma.downsample_h2v2(p), want)
    np.testing.assert_array_equal(chroma.downsample_h2v2(torch.from_numpy(p).float()).numpy(), want)
    np.testing.assert_allclose(chroma.downsample_h2v2(p.astype(np.float64), exact=False),
                               p.reshape(3, 2, 5, 2).mean(axis=(1, 3)))
    with pytest.raises(ValueError):
        chroma.downsample_h2v2(p[:, :9])


def test_component_plans_follow_libjpeg():
    P = chroma.ComponentPlan
    s420 = ((2, 2), (1, 1), (1, 1))
    assert chroma.component_plans(8, s420, 500) == (P(8, (1, 1), False), P(8, (2, 2), True), P(8, (2, 2), True))
    for m in range(1, 8):  # 4:2:0 chroma at 2M points, no upsampling
        assert chroma.component_plans(m, s420, 500)[1] == P(2 * m, (1, 1), False)
    s422 = ((2, 1), (1, 1), (1, 1))
    assert chroma.component_plans(1, s422, 500)[1] == P(1, (1, 2), False)  # box at M = 1
    assert chroma.component_plans(4, s422, 500)[1] == P(4, (1, 2), True)
    assert chroma.component_plans(3, ((1, 2), (1, 1), (1, 1)), 500)[2] == P(3, (2, 1), True)
    assert chroma.component_plans(8, ((4, 1), (1, 1), (1, 1)), 500)[1] == P(8, (1, 4), False)
    assert chroma.component_plans(8, s420, 4)[1] == P(8, (2, 2), False)  # 2 chroma samples wide: box
    assert chroma.component_plans(5, ((1, 1),), 9) == (P(5, (1, 1), False),)
    with pytest.raises(ValueError):
        chroma.component_plans(8, ((3, 1), (2, 1), (1, 1)), 500)


def _tiles(rng, h: int, w: int, tile: int = 32) -> np.ndarray:
    """uint8 RGB of constant tile x tile squares: every 8x8 block of every component is flat, so
    libjpeg's IDCTs are exact and only upsampling and colour conversion shape the decode."""
    colours = rng.integers(0, 256, (h // tile, w // tile, 3), dtype=np.uint8)
    return np.repeat(np.repeat(colours, tile, 0), tile, 1)


def _decode_model(data: bytes, m: int) -> np.ndarray:
    """jpegmath's model of libjpeg's decode of a whole JPEG at m/8 (the device path's stages)."""
    from jdct_cli.jpegmath import augment
    from jdct_cli.transforms import CropGeometry

    header = jpeg.read_header(data)
    w, h = header["width"], header["height"]
    factors = tuple((c["h"], c["v"]) for c in header["components"])
    mh, mv = max(f[0] for f in factors), max(f[1] for f in factors)
    sw, sh = -(-w * m // 8), -(-h * m // 8)
    geometry = CropGeometry(width=w, height=h, factors=factors, size=1, scale=m, mcu_rows=(0, -(-h // (8 * mv))),
                            mcu_cols=(0, -(-w // (8 * mh))), box=(0.0, 0.0, float(sw), float(sh)), frame=(0, 0, sw, sh))
    db = augment.to_device(augment.pack_reference([(geometry, jpeg.read_coefficients(data), False)], 1))
    rgb = augment.decode_rectangles(db, db.groups[0])[0].permute(1, 2, 0).numpy()
    return rgb[:sh, :sw]


@pytest.mark.parametrize("sampling", ["4:2:0", "4:2:2", "4:4:0", "4:4:4", "gray"])
def test_decode_model_is_libjpeg_exactly_on_flat_blocks(sampling):
    """Images of flat 32x32 tiles (every block DC-only), encoded by libjpeg at q100 and decoded by
    it at every M/8: the model's chroma plans, fancy/box upsampling and integer colour conversion
    give libjpeg's pixels bit for bit."""
    rng = np.random.default_rng(5)
    rgb = _tiles(rng, 96, 160)
    if sampling == "gray":
        import io

        buf = io.BytesIO()
        Image.fromarray(rgb[..., 0]).save(buf, format="JPEG", quality=100)
        data = buf.getvalue()
    else:
        data = _decoder.encode(rgb, 100, sampling)
    for m in range(1, 9):
        ref, _ = jpeg.decode(data, scale=8, scale_num=m)
        np.testing.assert_array_equal(_decode_model(data, m), ref, err_msg=f"{sampling} M={m}")


@pytest.mark.parametrize("name", ["420.jpg", "422.jpg", "440.jpg", "444.jpg", "411.jpg", "410.jpg", "gray.jpg",
                                  "gray_2x2.jpg", "mixed_sampling.jpg", "size_33x31.jpg", "size_7x13.jpg"])
def test_decode_model_within_rounding_of_libjpeg(name):
    """Real photographs in every sampling, decoded at every M/8: libjpeg's integer IDCTs and the
    model's float ones differ by rounding only (measured: 96-100 % of values equal, at most 3 apart
    once colour conversion spreads a chroma step)."""
    data = jpegfiles.path(name).read_bytes()
    for m in range(1, 9):
        ref, _ = jpeg.decode(data, scale=8, scale_num=m)
        d = np.abs(_decode_model(data, m) - ref)
        assert d.max() <= 3 and (d == 0).mean() >= 0.95 and d.mean() < 0.06, (name, m, d.max(), (d == 0).mean())


# ------------------------------------------------------------------------------------------- resize


def _boxes(rng, w: int, h: int):
    """Integer and fractional boxes, shrinking and enlarging, full and partial."""
    yield (0.0, 0.0, float(w), float(h))
    for _ in range(3):
        bw, bh = int(rng.integers(4, w + 1)), int(rng.integers(4, h + 1))
        x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        yield (float(x), float(y), float(x + bw), float(y + bh))
        yield (x + 0.37, y + 0.61, max(x + bw - 0.2, x + 1.0), max(y + bh - 0.45, y + 1.0))


def _pillow_weights(img_w: int, img_h: int, box, size: int, *, exact: bool, like=None):
    b32 = np.asarray(box, np.float32)
    mats = []
    for a, n in ((1, img_h), (0, img_w)):
        lo, hi = b32[None, a], b32[None, a + 2]
        if like is not None:
            lo, hi = torch.from_numpy(lo), torch.from_numpy(hi)
        first, w = resize.filter_taps(lo, hi, size, np.array([n]) if like is None else torch.tensor([n]))
        m = resize.weight_matrix(first, w, n)
        mats.append(resize.fixed_point(m) if exact else m)
    return mats


@pytest.mark.parametrize("shape", [(75, 120), (160, 61), (33, 33)])
def test_exact_resize_is_pillow_bit_for_bit(shape):
    """Pillow's filter as matrices, fixed-point weights, two passes rounded in Pillow's order
    (vertical first for tall images): Pillow 13's resize exactly, in numpy and in torch."""
    rng = np.random.default_rng(6)
    h, w = shape
    img = _photo_crop("astronaut", h, w)
    pil = Image.fromarray(img)
    chw = img.transpose(2, 0, 1)[None].astype(np.float64)
    for size in (224, 48, 17):
        vf = resize.vertical_first(w, h, size, size)
        for box in _boxes(rng, w, h):
            ref = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None))
            np.testing.assert_array_equal(_decoder.resize_bilinear(img, box, size, size), ref)
            wy, wx = _pillow_weights(w, h, box, size, exact=True)
            got = resize.resize(chw, wy, wx, exact=True, vertical_first=np.array([vf]))[0].transpose(1, 2, 0)
            np.testing.assert_array_equal(got, ref, err_msg=f"{shape} {size} {box}")
            wy, wx = _pillow_weights(w, h, box, size, exact=True, like=torch)
            got = resize.resize(torch.from_numpy(chw).float(), wy, wx, exact=True, vertical_first=np.array([vf]))
            np.testing.assert_array_equal(got[0].permute(1, 2, 0).numpy(), ref)
            # one float product without the intermediate rounding: within 1
            wy, wx = _pillow_weights(w, h, box, size, exact=False)
            f = resize.resize(chw, wy, wx)[0].transpose(1, 2, 0)
            assert np.abs(np.clip(np.floor(f + 0.5), 0, 255) - ref).max() <= 1


def test_weight_matrix_places_and_mirrors():
    rng = np.random.default_rng(7)
    img = rng.uniform(0, 255, (1, 1, 20, 30))
    first, w = resize.filter_taps(np.array([3.5], np.float32), np.array([21.25], np.float32), 11, np.array([30]))
    plain = resize.weight_matrix(first, w, 30)
    np.testing.assert_allclose(plain.sum(axis=2), 1.0, atol=1e-12)
    mirrored = resize.weight_matrix(first, w, 30, flip=np.array([True]))
    np.testing.assert_array_equal(mirrored[0], plain[0, ::-1])
    # a frame starting at column 4 of a wider array: the same weights four columns on
    shifted = resize.weight_matrix(first, w, 40, offset=np.array([4]))
    np.testing.assert_array_equal(shifted[0, :, 4:34], plain[0])
    assert not shifted[0, :, :4].any() and not shifted[0, :, 34:].any()
    wy = np.eye(20)[None]
    out = resize.resize(img, wy, mirrored)
    np.testing.assert_allclose(out, resize.resize(img, wy, plain)[..., ::-1], atol=1e-12)


# ------------------------------------------------------------------------------------------- flips


@pytest.mark.parametrize("source", REAL_SOURCES)
def test_flip_identity_on_real_crops(source, tmp_path_factory):
    """Flip in the DCT domain (block columns reversed, odd horizontal frequencies negated by
    FLIP_SIGN) == DCT of the mirrored crop.

    Exact for the real-valued DCT (checked to 1e-9 with an independent float DCT). libjpeg's
    *integer* DCT rounds half-way cases up (DESCALE), which is not symmetric in sign, so its
    quantized coefficients of the mirrored crop may differ by one quantization step: at q100 that
    happens for well under 1% of the luma coefficients and never by more than 1 (chroma adds
    jcsample's alternating rounding bias, which also depends on the column parity).
    """
    paths, _, _ = list_images(real_source(source, tmp_path_factory) / "val", 1, 4)
    sign = blockdct.FLIP_SIGN.reshape(64, 1, 1)
    d = _dct_reference()

    def float_dct(plane):
        h, w = plane.shape
        blocks = plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3) - 128.0
        return np.einsum("vy,ijyx,ux->ijvu", d, blocks, d).reshape(h // 8, w // 8, 64).transpose(2, 0, 1)

    mism, total = 0, 0
    for p in paths:
        with Image.open(p) as im:
            w, h = im.size
        rgb = crop_rgb(p, val_box(w, h, 64), 64)
        mirrored = np.ascontiguousarray(rgb[:, ::-1])
        luma = lambda a: a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # noqa: E731
        flipped = float_dct(luma(rgb))[:, :, ::-1] * sign
        np.testing.assert_allclose(flipped, float_dct(luma(mirrored)), atol=1e-9)
        y0 = np.moveaxis(_decoder.forward_dct(rgb, *ijg_tables(100))[0], -1, 0)
        y1 = np.moveaxis(_decoder.forward_dct(mirrored, *ijg_tables(100))[0], -1, 0)
        diff = np.abs((y0[:, :, ::-1] * sign).astype(int) - y1)
        assert diff.max() <= 1
        mism += int((diff > 0).sum())
        total += diff.size
    assert mism / total < 0.01


def test_plane_stats_by_parseval():
    rng = np.random.default_rng(8)
    coefs = rng.normal(0, 30, (500, 64))
    pixels = coefs @ blockdct.idct_matrix().T + 128
    mean, std = blockdct.plane_stats_from_coefficients(coefs.mean(axis=0), coefs.std(axis=0))
    assert mean == pytest.approx(pixels.mean(), rel=1e-9) and std == pytest.approx(pixels.std(), rel=1e-9)
