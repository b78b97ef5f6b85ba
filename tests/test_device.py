"""The images layout's device side (jdct_cli.jpegmath.augment) and its crop geometry
(jdct_cli.transforms.crop_geometry): fresh crops made by torch ops from block rectangles of
coefficients, against the crops layout's CPU recipe (transforms.convert_image: libjpeg decode at
the same M/8, Pillow-exact resize, libjpeg's forward DCT) for the same box, flip, size and quality.

From a fresh clone: the photo_tree fixture and the committed JPEGs of tests/data/jpegs; with
../shared, every file of imagenette-5k and imagenet-originals too (marked slow). ``pytest -m cuda``
adds the CUDA checks (``JDCT_CUDA_TESTS_DEVICE=cpu`` runs them with the CPU standing in).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

import jpegfiles
from conftest import HAVE_SHARED, SHARED_DATA
from jdct_cli import jpeg, transforms
from jdct_cli.data import coefficients_to_inputs, device_constants
from jdct_cli.errors import JdctError
from jdct_cli.jpegmath import augment
from jdct_cli.jpegmath.blockdct import FLIP_SIGN, coefficient_indices
from jdct_cli.jpegmath.quant import ijg_tables
from jdct_cli.jpegmath.sample import psnr, reconstruct

SIZE = 64
DEVICE = os.environ.get("JDCT_CUDA_TESTS_DEVICE", "cuda")


# --------------------------------------------------------------------------------- samples


def _usable(paths):
    """(path, data, header, coefficients) of the files the device path takes (YCbCr or grayscale,
    decodable without warnings)."""
    out = []
    for p in paths:
        data = Path(p).read_bytes()
        try:
            header = jpeg.read_header(data, path=p)
            if header["color_space"] not in ("YCbCr", "GRAYSCALE"):
                continue
            coefs = jpeg.read_coefficients(data, path=p, strict=True)
            jpeg.decode(data, path=p, strict=True, scale=8)
        except JdctError:
            continue
        out.append((Path(p), data, header, coefs))
    return out


def _jpegs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


def _draw(files, size: int, train: bool, seed: int, flips: bool = True):
    """One sample per file: ``(file, box, geometry, flip, reference coefficients (y, cb, cr))``; the
    reference is ``transforms.convert_image`` with a generator in the same state."""
    out = []
    recipe = transforms.SampleRecipe(size=size, quality=100)
    for k, f in enumerate(files):
        path, data, header, _ = f
        w, h = header["width"], header["height"]
        box = transforms.sample_box(np.random.default_rng([seed, k]), train, w, h, size)
        y, cb, cr, ref_box = transforms.convert_image(data, path, train=train, rng=np.random.default_rng([seed, k]),
                                                      opts=recipe)
        assert tuple(ref_box) == tuple(box)
        factors = [(c["h"], c["v"]) for c in header["components"]]
        scalings = transforms.DCT_EIGHTHS if train else transforms.DCT_EIGHTHS_VAL
        geometry = transforms.crop_geometry(w, h, factors, box, size, scalings=scalings)
        flip = flips and bool(np.random.default_rng([seed, k, 1]).random() < 0.5)
        out.append((f, box, geometry, flip, (y, cb, cr)))
    return out


def _device(samples, size: int, batch: int = 32, device="cpu", **kw):
    """The device path's quantized coefficients of each sample (numpy int64, store layout)."""
    out = []
    for i in range(0, len(samples), batch):
        part = samples[i:i + batch]
        hb = augment.pack_reference([(g, f[3], flip) for f, _, g, flip, _ in part], size)
        planes = augment.reencode(augment.to_device(hb, device), **kw)
        for j in range(len(part)):
            out.append(tuple(p[j].cpu().numpy().astype(np.int64) for p in planes))
    return out


def _dct_flip(c: np.ndarray) -> np.ndarray:
    return c[:, :, ::-1] * FLIP_SIGN.reshape(64, 1, 1)


def _compare(samples, size: int, stats: Optional[dict] = None, **kw) -> dict:
    """PSNR of each sample's reconstructed RGB (device vs reference coefficients, the reference
    flipped in the DCT domain as the crops loader flips), and the shares of coefficients equal and
    within one step; accumulated into ``stats`` when given (to stream over many files)."""
    luma, chroma = ijg_tables(100)
    st = stats if stats is not None else {"psnr": [], "equal": 0, "within": 0, "total": 0}
    for (f, box, g, flip, ref), mine in zip(samples, _device(samples, size, **kw)):
        ref = tuple(_dct_flip(c) if flip else c for c in ref)
        st["psnr"].append(min(psnr(reconstruct(*mine, luma, chroma), reconstruct(*ref, luma, chroma)), 99.0))
        for a, b in zip(mine, ref):
            d = np.abs(a - b)
            st["equal"] += int((d == 0).sum())
            st["within"] += int((d <= 1).sum())
            st["total"] += d.size
    psnrs = np.array(st["psnr"])
    return {"samples": len(psnrs), "psnr_min": float(psnrs.min()), "psnr_median": float(np.median(psnrs)),
            "share_40db": float((psnrs >= 40).mean()), "coef_equal": st["equal"] / st["total"],
            "coef_within_one": st["within"] / st["total"]}


def _report(name: str, r: dict) -> None:
    print(f"\n{name}: {r['samples']} samples, PSNR min {r['psnr_min']:.1f} dB, median {r['psnr_median']:.1f} dB, "
          f">= 40 dB {100 * r['share_40db']:.2f} %; coefficients equal {100 * r['coef_equal']:.2f} %, "
          f"within one step {100 * r['coef_within_one']:.3f} %")


@pytest.fixture(scope="module")
def fresh_files(photo_tree):
    """Every usable JPEG of the photo tree and of tests/data/jpegs (all samplings, grayscale, tiny
    images, restart markers, progressive and arithmetic files, EXIF-rotated ones as stored)."""
    return _usable(_jpegs(photo_tree) + _jpegs(jpegfiles.JPEGS))


# --------------------------------------------------------------------------------- acceptance


#: Where the acceptance test draws its samples: the fresh-clone fixtures always, and with ../shared
#: the two real data sets too (at the paper's 224 px): every file of imagenet-originals, every
#: STRIDE-th of imagenette-5k in the suite (1,250 files, to keep it short); JDCT_DEVICE_CHECK_ALL=1
#: takes every file, as for the figures of benchmarks/RESULTS.md ("Device augmentation").
STRIDE = {"imagenet-originals": 1, "imagenette-5k": 1 if os.environ.get("JDCT_DEVICE_CHECK_ALL") else 4}
SOURCES = ["fixtures"] + ([pytest.param(name, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])
                           for name in ("imagenet-originals", "imagenette-5k")]
                          if HAVE_SHARED else [])


@pytest.mark.parametrize("train", [True, False], ids=["train", "val"])
@pytest.mark.parametrize("source", SOURCES)
def test_device_crops_match_the_crops_recipe(source, train, request):
    """Issue 12's acceptance: for the same box, flip, size and quality 100, the device's coefficients
    against convert_image's: reconstructed RGB within 40 dB for >= 99 % of the samples (measured:
    all, and >= 46 dB), coefficients within one quantization step almost everywhere; the shares are
    printed (benchmarks/RESULTS.md records them). The shared data sets are streamed, 64 files at once."""
    stats = {"psnr": [], "equal": 0, "within": 0, "total": 0}
    if source == "fixtures":
        files = request.getfixturevalue("fresh_files")
        assert len(files) >= 80
        r = _compare(_draw(files, SIZE, train, seed=1), SIZE, stats)
        expected = len(files)
    else:
        paths = _jpegs(SHARED_DATA / source)[::STRIDE[source]]
        for i in range(0, len(paths), 64):
            r = _compare(_draw(_usable(paths[i:i + 64]), 224, train, seed=2 + i), 224, stats)
        expected = int(0.99 * len(paths))
    _report(f"{source}, {'train' if train else 'val'}", r)
    assert r["samples"] >= expected
    assert r["share_40db"] >= 0.99 and r["psnr_median"] >= 45
    assert r["coef_within_one"] >= 0.99 and r["coef_equal"] >= 0.6


def test_exact_resize_reproduces_the_recipe_crops(fresh_files):
    """With Pillow's two rounded passes the device's crops are the recipe's pixels except where the
    decode itself rounds differently (libjpeg's integer IDCT vs the float one: a few %, by 1-3)."""
    samples = _draw(fresh_files[::3], SIZE, True, seed=3, flips=False)
    hb = augment.pack_reference([(g, f[3], False) for f, _, g, _, _ in samples], SIZE)
    rgb = augment.decode_crops(augment.to_device(hb), exact_resize=True).permute(0, 2, 3, 1).numpy()
    equal = []
    for (f, box, g, _, _), mine in zip(samples, rgb):
        path, data, header, _ = f
        ref = transforms.crop_to_rgb(data, header["width"], header["height"], box, SIZE)
        d = np.abs(mine - ref)
        assert d.max() <= 4
        equal.append((d == 0).mean())
    assert np.mean(equal) >= 0.95


# --------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("factors", [((2, 2), (1, 1), (1, 1)), ((1, 1), (1, 1), (1, 1)), ((2, 1), (1, 1), (1, 1)),
                                     ((1, 2), (1, 1), (1, 1)), ((4, 1), (1, 1), (1, 1)), ((1, 1),), ((2, 2),)])
def test_crop_geometry_covers_what_the_resize_reads(factors):
    rng = np.random.default_rng(4)
    mh, mv = max(h for h, _ in factors), max(v for _, v in factors)
    for _ in range(300):
        w, h = int(rng.integers(1, 900)), int(rng.integers(1, 900))
        size = int(rng.choice([16, 64, 224]))
        train = bool(rng.random() < 0.7)
        box = transforms.sample_box(rng, train, w, h, size)
        scalings = transforms.DCT_EIGHTHS if train else transforms.DCT_EIGHTHS_VAL
        g = transforms.crop_geometry(w, h, factors, box, size, scalings=scalings)
        m = transforms.dct_eighths_for(box[2], box[3], size, scalings)
        assert g.scale == m and g.size == size and g.factors == tuple(factors)
        ox, oy = g.origin
        assert (ox, oy) == (g.mcu_cols[0] * mh * m, g.mcu_rows[0] * mv * m)
        # the MCU rectangle lies in the image and holds the recipe's window plus the upsampling context
        mcus = (-(-w // (8 * mh)), -(-h // (8 * mv)))
        assert 0 <= g.mcu_cols[0] < g.mcu_cols[1] <= mcus[0] and 0 <= g.mcu_rows[0] < g.mcu_rows[1] <= mcus[1]
        window = transforms.decode_window(w, h, box, size, m)
        sw, sh = g.scaled_size
        assert (sw, sh) == (-(-w * m // 8), -(-h * m // 8))
        x1, y1 = g.mcu_cols[1] * mh * m, g.mcu_rows[1] * mv * m
        ctx = transforms.UPSAMPLING_CONTEXT
        assert ox <= max(0, window[0] - ctx) and oy <= max(0, window[1] - ctx)
        assert x1 >= min(sw, window[2] + ctx) and y1 >= min(sh, window[3] + ctx)
        assert g.frame == (window[0] - ox, window[1] - oy, window[2] - ox, window[3] - oy)
        f = m / 8
        assert g.box == (box[0] * f - ox, box[1] * f - oy, (box[0] + box[2]) * f - ox, (box[1] + box[3]) * f - oy)
        for c, (hc, vc) in enumerate(factors):
            r0, r1, c0, c1 = g.blocks(c)
            assert (r0, r1, c0, c1) == (g.mcu_rows[0] * vc, g.mcu_rows[1] * vc, g.mcu_cols[0] * hc, g.mcu_cols[1] * hc)
            assert g.coefficient_indices(c).tolist() == coefficient_indices(g.plans()[c].idct_size).tolist()
    exact = transforms.crop_geometry(500, 375, factors, (100, 50, 300, 200), 224, exact=True)
    assert exact.scale == 8 and exact.frame == (-exact.origin[0], -exact.origin[1], 500 - exact.origin[0],
                                                375 - exact.origin[1])


def test_crop_geometry_refuses_what_libjpeg_cannot_decode():
    with pytest.raises(ValueError, match="1 or 3 components"):
        transforms.crop_geometry(64, 64, [(1, 1)] * 4, (0, 0, 64, 64), 32)
    with pytest.raises(ValueError, match="fractional"):
        transforms.crop_geometry(64, 64, [(3, 1), (2, 1), (1, 1)], (0, 0, 64, 64), 32)


def test_decode_region_uses_the_shared_window():
    """crop_to_rgb's region of interest is decode_window's: the same rule serves both layouts."""
    data = jpegfiles.path("420.jpg").read_bytes()
    header = jpeg.read_header(data)
    w, h = header["width"], header["height"]
    box = (20.0, 10.0, 60.0, 45.0)
    for m, size in ((8, 32), (4, 16), (2, 8)):
        rgb, local = transforms.decode_region(data, w, h, box, size, scalings=(m,))
        x0, y0, x1, y1 = transforms.decode_window(w, h, box, size, m)
        assert rgb.shape[:2] == (y1 - y0, x1 - x0)
        f = m / 8
        assert local == (box[0] * f - x0, box[1] * f - y0, (box[0] + box[2]) * f - x0, (box[1] + box[3]) * f - y0)


# --------------------------------------------------------------------------------- host batch


def test_host_batch_layout_and_reference_packer(fresh_files):
    samples = _draw(fresh_files[:12], SIZE, True, seed=5)
    geometries = [g for _, _, g, _, _ in samples]
    hb = augment.pack_reference([(g, f[3], flip) for f, _, g, flip, _ in samples], SIZE)
    assert len(hb) == 12 and hb.coefs.dtype == np.int16 and hb.size == SIZE
    spans = []
    for i, g in enumerate(geometries):
        assert hb.components(i) == len(g.factors)
        for c in range(3):
            if c >= len(g.factors):
                assert hb.offsets[i, c] == -1 and not hb.blocks[i, c].any()
                continue
            k = len(g.coefficient_indices(c))
            r0, r1, c0, c1 = g.blocks(c)
            view = hb.component(i, c)
            assert view.shape == (r1 - r0, c1 - c0, k) and hb.offsets[i, c] % k == 0
            spans.append((int(hb.offsets[i, c]), int(hb.offsets[i, c]) + view.size))
            full = samples[i][0][3].components[c]
            np.testing.assert_array_equal(view, full[r0:r1, c0:c1][..., g.coefficient_indices(c)])
            np.testing.assert_array_equal(hb.quant[i, c], samples[i][0][3].quant[c])
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] <= hb.coefs.size
    np.testing.assert_array_equal(hb.flip, [flip for _, _, _, flip, _ in samples])
    np.testing.assert_array_equal(hb.scale, [g.scale for g in geometries])
    with pytest.raises(ValueError, match="at least one"):
        augment.HostBatch.allocate([])
    other = transforms.crop_geometry(64, 64, [(1, 1)], (0, 0, 64, 64), 32)
    with pytest.raises(ValueError, match="one crop size"):
        augment.HostBatch.allocate([geometries[0], other])
    colour = next(i for i, g in enumerate(geometries) if len(g.factors) == 3)
    coefs = samples[colour][0][3]
    luma_only = jpeg.Coefficients(coefs.components[:1], coefs.quant[:1], 0)
    with pytest.raises(ValueError, match="components"):
        augment.pack_reference([(geometries[colour], luma_only, False)], SIZE)


# --------------------------------------------------------------------------------- properties


@pytest.fixture(scope="module")
def mixed(fresh_files):
    """A batch of every decoding scale and sampling the fixtures give (train boxes at 64 px)."""
    return _draw(fresh_files, SIZE, True, seed=6)


def test_a_sample_does_not_depend_on_its_batch(mixed):
    """Grouping, padding to the group's largest rectangle and batch order change nothing: the
    mixed batch equals every sample decoded alone (exactly with exact_resize, and in float)."""
    assert len({(g.scale, g.factors) for _, _, g, _, _ in mixed}) >= 5
    for exact in (True, False):
        together = _device(mixed, SIZE, batch=len(mixed), exact_resize=exact)
        alone = _device(mixed[:40], SIZE, batch=1, exact_resize=exact)
        for a, b in zip(together, alone):
            for x, y in zip(a, b):
                if exact:
                    np.testing.assert_array_equal(x, y)
                else:
                    assert np.abs(x - y).max() <= 1 and (x == y).mean() > 0.999


def test_deterministic(mixed):
    hb = augment.pack_reference([(g, f[3], flip) for f, _, g, flip, _ in mixed], SIZE)
    a = augment.reencode(augment.to_device(hb))
    b = augment.reencode(augment.to_device(hb))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_flip_mirrors_the_crop(mixed):
    pairs = [(g, f[3], flip) for f, _, g, flip, _ in mixed[:24]]
    plain = augment.decode_crops(augment.to_device(augment.pack_reference([(g, c, False) for g, c, _ in pairs], SIZE)))
    flipped = augment.decode_crops(augment.to_device(augment.pack_reference([(g, c, True) for g, c, _ in pairs], SIZE)))
    assert torch.equal(flipped, plain.flip(-1))


def test_float32_within_rounding_of_float64(mixed):
    hb = augment.pack_reference([(g, f[3], flip) for f, _, g, flip, _ in mixed], SIZE)
    db = augment.to_device(hb)
    soft32 = augment.decode_crops(db, rounding=False)
    soft64 = augment.decode_crops(db, rounding=False, dtype=torch.float64)
    assert soft32.dtype == torch.float32 and soft64.dtype == torch.float64
    assert float((soft32.double() - soft64).abs().max()) < 0.01
    # with rounding, float32 flips a value that float64 puts a hair across a .5 now and then: the
    # crops differ by 1 in about 1e-4 of their values, and a flipped pixel can move a coefficient
    crops32 = augment.decode_crops(db)
    crops64 = augment.decode_crops(db, dtype=torch.float64)
    d = (crops32.double() - crops64).abs()
    assert float(d.max()) <= 3 and float((d == 0).double().mean()) > 0.999, (float(d.max()), float((d == 0).double().mean()))
    for a, b in zip(augment.reencode(db), augment.reencode(db, dtype=torch.float64)):
        d = (a - b).abs()
        assert float(d.max()) <= 2 and float((d == 0).double().mean()) > 0.995


def test_stages_are_differentiable():
    """Without rounding every stage is a smooth function of its input: the gradient of the
    coefficients with respect to the decoded coefficients and to the crop pixels (gradcheck)."""
    from jdct_cli.jpegmath import blockdct, chroma, color, resize

    gen = torch.Generator().manual_seed(0)
    y = torch.randn(1, 64, 2, 2, dtype=torch.float64, generator=gen) * 20
    cb = torch.randn(1, 64, 1, 1, dtype=torch.float64, generator=gen) * 20
    cr = torch.randn(1, 64, 1, 1, dtype=torch.float64, generator=gen) * 20
    first, w = resize.filter_taps(torch.tensor([1.5], dtype=torch.float32), torch.tensor([14.0], dtype=torch.float32),
                                  16, torch.tensor([16]))
    wm = resize.weight_matrix(first, w, 16)

    def pipeline(y, cb, cr):
        planes = [blockdct.idct_blocks(y)] + [chroma.upsample(blockdct.idct_blocks(c), (2, 2), exact=False) for c in (cb, cr)]
        rgb = torch.stack(color.ycbcr_to_rgb(*planes), dim=1)
        crop = resize.resize(rgb, wm, wm)
        yy, cbcr = augment.to_ycbcr420(crop, rounding=False)
        return augment.forward_dct(yy, integer=False), augment.forward_dct(cbcr[0], integer=False)

    assert torch.autograd.gradcheck(pipeline, (y.requires_grad_(), cb.requires_grad_(), cr.requires_grad_()))


def test_pixel_inputs_come_from_the_same_crops(mixed):
    """The baselines' RGB inputs, made by the loader's one conversion from the device's
    coefficients, are the device's crops (within the q100 re-encode's loss)."""
    hb = augment.pack_reference([(g, f[3], flip) for f, _, g, flip, _ in mixed[:16]], SIZE)
    db = augment.to_device(hb)
    crops = augment.decode_crops(db)
    luma, chroma = ijg_tables(100)
    consts = device_constants({"y": luma, "cb": chroma, "cr": chroma}, None, output="rgb", normalize=False,
                              device="cpu")
    rgb = coefficients_to_inputs(augment.reencode(db), consts, "rgb")
    assert rgb.shape == crops.shape
    for a, b in zip(rgb, crops):
        assert psnr(np.clip(np.rint(a.numpy() * 255), 0, 255).astype(np.uint8), b.numpy().astype(np.uint8)) > 38


# --------------------------------------------------------------------------------- CUDA


needs_cuda = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (JDCT_CUDA_TESTS_DEVICE=cpu: the CPU stands in)")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("exact", [False, True])
def test_cuda_matches_the_cpu(mixed, exact):
    """The same batch on the device and on the CPU: the same coefficients but for float rounding
    (cuBLAS and the CPU sum in other orders), channels_last model inputs on CUDA, TF32 left as the
    caller set it."""
    hb = augment.pack_reference([(g, f[3], flip) for f, _, g, flip, _ in mixed], SIZE, pin=DEVICE == "cuda")
    on_cpu = augment.reencode(augment.to_device(hb, "cpu"), exact_resize=exact)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        db = augment.to_device(hb, DEVICE)
        assert (db.copied is not None) == (torch.device(DEVICE).type == "cuda")
        on_dev = augment.reencode(db, exact_resize=exact)
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    for a, b in zip(on_cpu, on_dev):
        d = (a - b.cpu()).abs()
        assert float(d.max()) <= 1 and float((d == 0).float().mean()) > 0.995
    again = augment.reencode(augment.to_device(hb, DEVICE), exact_resize=exact)
    assert all(torch.equal(a, b) for a, b in zip(on_dev, again))  # deterministic on the device too
    luma, chroma = ijg_tables(100)
    consts = device_constants({"y": luma, "cb": chroma, "cr": chroma}, None, output="dct", normalize=False,
                              device=DEVICE)
    inputs = coefficients_to_inputs(on_dev, consts, "dct", channels_last=True)
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in inputs)
    crops = augment.decode_crops(db)
    if torch.device(DEVICE).type == "cuda":
        assert crops.is_contiguous(memory_format=torch.channels_last)
    assert math.isfinite(float(crops.sum()))
