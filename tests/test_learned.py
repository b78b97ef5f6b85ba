"""The math of learned JPEG quantization (jdct_cli.jpegmath.learned) and of real JPEG sizes
(jdct_cli.tables), against independent references: a second soft quantizer written here in numpy,
scipy's DCT, numpy entropies, libjpeg's own quantization (the extension's forward_dct) and files
libjpeg writes, read back with the decoder.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.fft import dctn
from scipy.stats import spearmanr

from jdct_cli import _decoder, jpeg
from jdct_cli.errors import ConfigError, SourceNotFoundError
from jdct_cli.jpegmath import blockdct, color, learned
from jdct_cli.jpegmath.quant import dequantize, estimate_quality, ijg_tables, quantize
from jdct_cli.tables import (encode_with_tables, entropy_coded_bytes, parse_quality_augment, parse_tables,
                             read_tables, table_spec, write_tables)

from conftest import REPO

GOLDEN_TABLES = Path(__file__).parent / "golden" / "quant-tables.v1.json"
#: Tables learned by the experiment (benchmarks/learned_quant.py), used beside IJG's when present.
EXPERIMENT_TABLES = REPO / "benchmarks" / "learned_quant"


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """The reference rounding: nearest integer, halves away from zero (libjpeg's; torch.round goes to even)."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def _x(seed=0, shape=(3, 64, 4, 5), scale=60.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def _q(seed=1, low=0.3, high=40.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((1, 64, 1, 1), generator=g, dtype=torch.float64) * (high - low) + low)


def _reference_soft(x: np.ndarray, q: np.ndarray, h: float, bits=None) -> np.ndarray:
    """A second soft quantizer, element by element, from the paper's formula."""
    x, q = np.broadcast_arrays(x, q)
    out = np.empty(x.shape)
    for i in np.ndindex(x.shape):
        xi, qi = float(x[i]), float(q[i])
        start = np.round(xi / qi) - 2
        if bits is not None:
            half = 2 ** (bits - 1)
            start = min(max(start, -(half - 1)), half - 5)
        js = start + np.arange(5)
        logits = -(h / qi ** 2) * (xi - js * qi) ** 2
        p = np.exp(logits - logits.max())
        p /= p.sum()
        out[i] = float((p * js * qi).sum())
    return out


# ------------------------------------------------------------------ the soft quantizer


def test_infinite_hardness_is_rounding():
    x, q = _x(), _q()
    # keep away from the x/q = k + 1/2 ties, where rounding itself is ambiguous
    frac = (x / q) - torch.floor(x / q)
    x = torch.where((frac - 0.5).abs() < 1e-3, x + 0.01 * q, x)
    out = learned.soft_quantize(x, q, 1e9)
    assert torch.equal(out, _round_half_away(x / q) * q)
    assert torch.equal(dequantize(quantize(x, q.reshape(64)), q.reshape(64)), out)


def test_unit_step_and_large_hardness_is_the_identity_within_half():
    x = _x(scale=200.0)
    out = learned.soft_quantize(x, torch.ones(()), 50.0)
    err = (out - x).abs()
    assert float(err.max()) <= 0.5 and float(err.max()) > 0.1  # a quantizer, not a copy


def test_soft_quantizer_matches_an_independent_implementation():
    x, q = _x(shape=(2, 64, 2, 2)), _q()
    for h, bits in ((0.7, None), (3.0, None), (0.7, 4)):
        ours = learned.soft_quantize(x, q, h, bits=bits).numpy()
        ref = _reference_soft(x.numpy(), q.numpy(), h, bits)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-9)


def test_bit_clamp_keeps_candidates_in_range():
    x = torch.tensor([1e6, -1e6, 3.0], dtype=torch.float64)
    probs, start, _ = learned.soft_quantize_probs(x, torch.ones(()), 0.7, bits=8)
    assert start.tolist() == [127 - 4, -127, 1.0]


def test_gradient_to_q_is_nonzero_and_matches_finite_differences():
    x, q = _x(shape=(2, 64, 3, 3)), _q(low=2.0, high=30.0)
    h = 0.7
    qq = q.clone().requires_grad_(True)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (learned.soft_quantize(x, qq, h) * weights).sum().backward()
    grad = qq.grad.reshape(64)
    assert (grad.abs() > 1e-6).all()
    # alpha = h / q^2 is a constant of each forward (not differentiated): hold it at q's value
    alpha = h / q.square()
    eps = 1e-6
    fd = torch.empty(64, dtype=torch.float64)
    for k in range(64):
        dq = torch.zeros_like(q)
        dq[0, k] = eps
        up = (learned.soft_quantize_probs(x, q + dq, h, bits=None, alpha=alpha)[2] * weights).sum()
        down = (learned.soft_quantize_probs(x, q - dq, h, bits=None, alpha=alpha)[2] * weights).sum()
        fd[k] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grad.numpy(), fd.numpy(), rtol=1e-5, atol=1e-6)


def test_gradient_reaches_x_too():
    x = _x(shape=(1, 64, 2, 2)).requires_grad_(True)
    learned.soft_quantize(x, _q(), 0.7).sum().backward()
    assert (x.grad.abs() > 0).float().mean() > 0.9


def test_soft_quantizer_refuses_a_bad_hardness():
    with pytest.raises(ValueError, match="hardness"):
        learned.soft_quantize(_x(), _q(), 0.0)


# ------------------------------------------------------------------ block DCT


def test_block_dct_then_idct_is_the_identity_and_matches_scipy():
    """The JPEG layer's block DCT (jpegmath.blockdct, level shift included) against scipy."""
    g = torch.Generator().manual_seed(3)
    pix = torch.rand((2, 1, 16, 24), generator=g, dtype=torch.float64) * 255 - 128
    coefs = blockdct.dct_blocks(pix[:, 0] + 128.0)
    assert coefs.shape == (2, 64, 2, 3)
    assert torch.allclose(blockdct.idct_blocks(coefs) - 128.0, pix[:, 0], atol=1e-9)
    block = pix[1, 0, 8:16, 16:24].numpy()
    ref = dctn(block, type=2, norm="ortho")  # ref[v, u]: v vertical, u horizontal frequency
    np.testing.assert_allclose(coefs[1, :, 1, 2].numpy(), ref.reshape(64), atol=1e-9)


def test_block_idct_equals_the_pixel_layers_idct():
    """With tables of ones and a very hard quantizer the pixel JPEG layer is the identity on
    integer-valued DCT coefficients: its IDCT is the loader's (blockdct.idct_blocks) and its DCT inverts it."""
    coefs = torch.round(_x(shape=(2, 3, 64, 3, 2), scale=20.0)).float()
    pix = blockdct.idct_blocks(coefs)  # YCbCr 0..255 scale, [2, 3, 24, 16]
    layer = learned.PixelJpegLayer("ycbcr", hardness=1e6)
    out = layer(pix / 255.0) * 255.0
    assert torch.allclose(out, pix, atol=1e-3)
    kernel = torch.as_tensor(blockdct.idct_matrix(), dtype=torch.float32)  # second form: one matmul per block
    ref = (kernel @ coefs[0, 0].reshape(64, -1)).reshape(8, 8, 3, 2).permute(2, 0, 3, 1).reshape(24, 16) + 128.0
    assert torch.allclose(pix[0, 0], ref, atol=1e-3)


def test_colour_conversions_invert_each_other_and_match_pillow():
    rgb = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    t = torch.as_tensor(rgb).permute(0, 3, 1, 2).double()
    ycc = torch.stack(color.rgb_to_ycbcr(*t.unbind(1)), 1)
    assert torch.allclose(torch.stack(color.ycbcr_to_rgb(*ycc.unbind(1)), 1), t, atol=1e-6)
    pil = np.asarray(Image.fromarray(rgb[0]).convert("YCbCr")).astype(np.float64)
    assert np.abs(ycc[0].permute(1, 2, 0).numpy() - pil).max() <= 1.0  # Pillow rounds to integers


# ------------------------------------------------------------------ the rate estimate


def _empirical_entropy_bits(indices: np.ndarray) -> float:
    """sum over frequencies of N H(counts), numpy: indices [B, 64, ...] (one table group)."""
    total = 0.0
    for k in range(indices.shape[1]):
        _, counts = np.unique(indices[:, k].ravel(), return_counts=True)
        p = counts / counts.sum()
        total += -counts.sum() * float((p * np.log2(p)).sum())
    return total


def test_rate_estimate_of_hard_indices_is_their_empirical_entropy():
    y, cb, cr = _x(1, (4, 64, 4, 4), 80), _x(2, (4, 64, 2, 2), 30), _x(3, (4, 64, 2, 2), 30)
    luma, chroma = (torch.as_tensor(t.astype(np.float64)) for t in ijg_tables(60))
    iy = _round_half_away(y / luma.view(1, 64, 1, 1)).numpy()
    ic = _round_half_away(torch.cat([cb, cr]) / chroma.view(1, 64, 1, 1)).numpy()
    expected = _empirical_entropy_bits(iy) + _empirical_entropy_bits(ic)
    assert expected > 100
    hard = float(learned.estimate_bits((y, cb, cr), luma, chroma))
    assert hard == pytest.approx(expected, rel=1e-12)
    # the soft estimate with one-hot probabilities (h -> infinity) is the same number
    soft = float(learned.estimate_bits((y, cb, cr), luma, chroma, hardness=1e9))
    assert soft == pytest.approx(expected, rel=1e-9)
    counts = learned.IndexCounts()
    counts.add((y[:2], cb[:2], cr[:2]), luma, chroma)
    counts.add((y[2:], cb[2:], cr[2:]), luma, chroma)  # accumulated over batches: the same marginal
    assert counts.bits() == pytest.approx(expected, rel=1e-12)


def test_rate_estimate_pools_cb_with_cr():
    """Cb and Cr share one table and one marginal: two planes with disjoint values cost more
    pooled than each alone, and swapping them changes nothing."""
    y = torch.zeros(2, 64, 2, 2, dtype=torch.float64)
    cb = torch.full((2, 64, 1, 1), 5.0, dtype=torch.float64)
    cr = torch.full((2, 64, 1, 1), -5.0, dtype=torch.float64)
    one = torch.ones(64, dtype=torch.float64)
    bits = float(learned.estimate_bits((y, cb, cr), one, one))
    assert bits == pytest.approx(64 * 4 * 1.0)  # 4 chroma values per frequency, half 5 and half -5: 1 bit each
    assert float(learned.estimate_bits((y, cr, cb), one, one)) == bits


def test_soft_rate_is_differentiable_and_falls_with_coarser_tables():
    y, cb, cr = _x(4, (4, 64, 4, 4), 80), _x(5, (4, 64, 2, 2), 30), _x(6, (4, 64, 2, 2), 30)
    luma = torch.full((64,), 4.0, dtype=torch.float64, requires_grad=True)
    chroma = torch.full((64,), 4.0, dtype=torch.float64, requires_grad=True)
    bits = learned.estimate_bits((y, cb, cr), luma, chroma, hardness=2.0)
    bits.backward()
    assert (luma.grad < 0).float().mean() > 0.9 and (chroma.grad < 0).float().mean() > 0.9
    coarse = learned.estimate_bits((y, cb, cr), luma.detach() * 4, chroma.detach() * 4, hardness=2.0)
    assert float(coarse) < float(bits.detach())


# ------------------------------------------------------------------ tables and augmentation draws


def test_libjpeg_tables_round_and_clamp():
    q = torch.tensor([0.2, 1.49, 1.5, 254.6, 300.0] + [10.0] * 59)
    assert learned.libjpeg_tables(q)[:5].tolist() == [1, 1, 2, 255, 255]
    t = learned.QuantTables(torch.full((64,), -3.0), torch.full((64,), 999.0))
    assert float(t.luma.detach().min()) == pytest.approx(learned.Q_MIN) and float(t.chroma.detach().max()) == learned.Q_MAX
    assert t.as_libjpeg() == ([1] * 64, [255] * 64)


def test_data_init_is_jpeg_dls_formula():
    abs_mean = torch.linspace(1, 400, 64)
    assert torch.allclose(learned.init_tables_from_abs_mean(abs_mean, 11), 2 * abs_mean / 32)


def test_ijg_table_bank_rows_are_libjpegs_tables():
    bank = learned.ijg_table_bank()
    for quality in (1, 10, 50, 75, 100):
        luma, chroma = ijg_tables(quality)
        assert bank[quality, 0].tolist() == luma.tolist() and bank[quality, 1].tolist() == chroma.tolist()


def test_sample_qualities_depend_only_on_seed_epoch_and_sample():
    samples = np.arange(20000)
    a = learned.sample_qualities(0, 3, samples, 30, 100)
    assert a.min() == 30 and a.max() == 100
    counts = np.bincount(a - 30, minlength=71)
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()
    perm = np.random.default_rng(1).permutation(samples)
    assert np.array_equal(learned.sample_qualities(0, 3, perm, 30, 100), a[perm])  # order/batching free
    assert not np.array_equal(learned.sample_qualities(0, 4, samples, 30, 100), a)
    assert not np.array_equal(learned.sample_qualities(1, 3, samples, 30, 100), a)
    assert (learned.sample_qualities(5, 0, samples[:10], 70, 70) == 70).all()
    with pytest.raises(ValueError):
        learned.sample_qualities(0, 0, samples, 50, 20)


def test_requantize_per_sample_tables():
    y, cb, cr = _x(1, (2, 64, 2, 2), 80), _x(2, (2, 64, 1, 1), 30), _x(3, (2, 64, 1, 1), 30)
    bank = learned.ijg_table_bank().double()
    tables = bank[torch.tensor([20, 90])]
    ry, rcb, _ = learned.requantize_planes((y, cb, cr), tables[:, 0], tables[:, 1])
    for i, quality in enumerate((20, 90)):
        luma, chroma = (torch.as_tensor(t.astype(np.float64)) for t in ijg_tables(quality))
        assert torch.equal(ry[i], _round_half_away(y[i] / luma.view(64, 1, 1)) * luma.view(64, 1, 1))
        assert torch.equal(rcb[i], _round_half_away(cb[i] / chroma.view(64, 1, 1)) * chroma.view(64, 1, 1))
    assert quantize(torch.tensor([2.5, -2.5, 0.49]).view(3, 1, 1), [1.0, 1.0, 1.0]).flatten().tolist() == [3.0, -3.0, 0.0]


def test_requantizing_q100_coefficients_is_close_to_libjpegs_own_quantization():
    """Stored q100 coefficients requantized with quality-Q tables vs libjpeg quantizing the same
    crop at Q directly: they differ only where the q100 rounding moved a value across a step."""
    from photos import photo

    rgb = np.ascontiguousarray(photo("chelsea")[:96, :128])
    y100, _, _, _ = _decoder.forward_dct(rgb, np.ones(64, np.uint16), np.ones(64, np.uint16))
    for quality in (30, 75):
        luma, chroma = ijg_tables(quality)
        yq, _, _, _ = _decoder.forward_dct(rgb, luma, chroma)
        req = quantize(torch.as_tensor(np.moveaxis(y100, -1, 0), dtype=torch.float64),
                       torch.as_tensor(luma.astype(np.float64)))
        req = req.permute(1, 2, 0)
        same = (req.numpy() == yq).mean()
        assert same > 0.98 and np.abs(req.numpy() - yq).max() <= 1


# ------------------------------------------------------------------ tables files and specs


def test_golden_tables_file_reads_and_matches_its_schema():
    jsonschema = pytest.importorskip("jsonschema")
    doc = json.loads(GOLDEN_TABLES.read_text())
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "quant-tables.v1.schema.json").read_text()))
    tables = read_tables(GOLDEN_TABLES)
    assert len(tables.luma) == 64 and tables.source["kind"] == "j4d"
    assert tables.luma == tuple(int(np.clip(np.rint(v), 1, 255)) for v in tables.luma_float)
    assert estimate_quality(tables.luma) in range(30, 40)  # the fixture is quality 40 scaled coarser
    assert tables.to_dict() == doc


def test_written_tables_round_trip_and_round_like_libjpeg(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    lf = np.linspace(0.2, 300.0, 64)
    out = write_tables(tmp_path / "t.json", lf, lf[::-1], luma_float=lf, chroma_float=lf[::-1],
                       source={"kind": "test"})
    doc = json.loads((tmp_path / "t.json").read_text())
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "quant-tables.v1.schema.json").read_text()))
    assert doc["luma"][0] == 1 and doc["luma"][-1] == 255 and doc["luma"][10] == round(lf[10])
    assert read_tables(tmp_path / "t.json") == out


@pytest.mark.parametrize("doc, needle", [
    ({"format": "other"}, "format: expected"),
    ({"format": "jdct-quant-tables", "format_version": 2}, "format_version"),
    ({"format": "jdct-quant-tables", "format_version": 1, "luma": [1] * 63, "chroma": [1] * 64}, "luma: expected"),
    ({"format": "jdct-quant-tables", "format_version": 1, "luma": [1] * 64, "chroma": [0] + [1] * 63},
     r"chroma\[0\]"),
    ({"format": "jdct-quant-tables", "format_version": 1, "luma": [1] * 64, "chroma": [1] * 64, "order": "zigzag"},
     "order"),
    ({"format": "jdct-quant-tables", "format_version": 1, "luma": [1] * 64, "chroma": [1] * 64, "extra": 1},
     "unknown field"),
])
def test_bad_tables_documents_name_the_field(doc, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_tables(doc, "t.json")


def test_table_specs_and_quality_augment_specs(tmp_path):
    spec = table_spec("75")
    assert spec.quality == 75 and spec.luma.tolist() == ijg_tables(75)[0].tolist()
    assert table_spec(GOLDEN_TABLES).path == str(GOLDEN_TABLES)
    with pytest.raises(ConfigError, match="1..100"):
        table_spec("0")
    with pytest.raises(SourceNotFoundError):
        table_spec(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        table_spec(tmp_path / "bad.json")
    aug = parse_quality_augment("30:100")
    assert (aug.low, aug.high, aug.tables) == (30, 100, None)
    assert parse_quality_augment("50").low == 50
    assert parse_quality_augment(str(GOLDEN_TABLES)).tables.path == str(GOLDEN_TABLES)
    for bad in ("50:20", "0:10", "a:b"):
        with pytest.raises(ConfigError):
            parse_quality_augment(bad)


# ------------------------------------------------------------------ real JPEGs from given tables


def _ecs_bytes_by_hand(data: bytes) -> int:
    """Entropy-coded bytes of a baseline single-scan file, found by reading the SOS length field."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    assert data.endswith(b"\xff\xd9")
    return len(data) - 2 - start


def test_encode_with_tables_writes_exactly_libjpegs_quantization_of_those_tables():
    from photos import photo

    rgb = np.ascontiguousarray(photo("astronaut")[100:196, 150:278])
    tables = read_tables(GOLDEN_TABLES)
    luma, chroma = tables.arrays()
    data = encode_with_tables(rgb, luma, chroma)
    header = jpeg.read_header(data)
    assert [(c["h"], c["v"]) for c in header["components"]] == [(2, 2), (1, 1), (1, 1)]
    qt = jpeg.read_quant_tables(data)
    assert qt[0].tolist() == list(tables.luma) and qt[1].tolist() == list(tables.chroma)  # natural order kept
    comps, _, _ = _decoder.read_coefficients(data)
    y, cb, cr, _ = _decoder.forward_dct(rgb, luma, chroma)
    assert np.array_equal(comps[0], y) and np.array_equal(comps[1], cb) and np.array_equal(comps[2], cr)
    # optimized Huffman tables: smaller than libjpeg's standard tables for the same coefficients
    plain = io.BytesIO()
    Image.fromarray(rgb).save(plain, "JPEG", qtables=[list(tables.luma), list(tables.chroma)], subsampling=2)
    assert entropy_coded_bytes(data) < entropy_coded_bytes(plain.getvalue())


def test_encode_with_tables_writes_exactly_the_given_tables_with_jdcts_encoder():
    """Arbitrary (non-IJG) tables with both ends of the baseline range: the file carries exactly
    them (its DQT segments and jdct's decoder's quant), its coefficients are libjpeg's forward DCT
    quantized with them, and its scan is byte for byte what Pillow's libjpeg writes for them."""
    from photos import photo

    rgb = np.ascontiguousarray(photo("coffee")[40:136, 60:188])
    rng = np.random.default_rng(7)
    luma, chroma = rng.integers(1, 256, 64), rng.integers(1, 256, 64)
    luma[[0, 63]], chroma[[0, 63]] = (1, 255), (255, 1)
    data = encode_with_tables(rgb, luma, chroma)
    assert data[:2] == b"\xff\xd8" and b"\xff\xc0" in data  # baseline SOF0
    qt = jpeg.read_quant_tables(data)
    assert qt[0].tolist() == luma.tolist() and qt[1].tolist() == chroma.tolist()
    coefs = jpeg.read_coefficients(data)
    assert coefs.quant[0].tolist() == luma.tolist()
    assert coefs.quant[1].tolist() == coefs.quant[2].tolist() == chroma.tolist()
    y, cb, cr, _ = _decoder.forward_dct(rgb, luma.astype(np.uint16), chroma.astype(np.uint16))
    for ours, ref in zip(coefs.components, (y, cb, cr)):
        assert np.array_equal(ours, ref)
    pil = io.BytesIO()
    Image.fromarray(rgb).save(pil, "JPEG", qtables=[luma.tolist(), chroma.tolist()], subsampling=2, optimize=True)
    scan = data[data.index(b"\xff\xda"):]
    assert scan == pil.getvalue()[pil.getvalue().index(b"\xff\xda"):]
    for bad in (luma * 2, luma[:63], luma - 1, luma + 0.5):
        with pytest.raises(ValueError, match="luma table must be 64 integers in 1..255"):
            encode_with_tables(rgb, bad, chroma)


def test_entropy_coded_bytes_exclude_headers_and_handle_progressive_files():
    from photos import photo

    rgb = np.ascontiguousarray(photo("coffee")[:160, :160])
    data = encode_with_tables(rgb, *ijg_tables(50))
    assert entropy_coded_bytes(data) == _ecs_bytes_by_hand(data)
    assert entropy_coded_bytes(data) < len(data) - 300  # DQT + DHT + SOF + SOS are headers
    # the same coefficients in progressive scans (Pillow) are counted scan by scan
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=50, subsampling=2, progressive=True, optimize=True)
    prog = buf.getvalue()
    scans = [s for s in jpeg.marker_segments(prog, through_scans=True) if s[0] == 0xDA]
    assert len(scans) > 3
    assert 0.8 < entropy_coded_bytes(prog) / entropy_coded_bytes(data) < 1.2
    assert entropy_coded_bytes(b"not a jpeg") == 0


# ------------------------------------------------------------------ the estimate tracks real sizes


def _rate_vs_real(images: list[np.ndarray], table_sets: list[tuple[str, np.ndarray, np.ndarray]]):
    """Per table set: estimated bits (the whole batch's marginal, as J4D) and real entropy-coded
    bits of libjpeg's files; per (image, table set): the one-image estimate and the file's bits."""
    ones = np.ones(64, np.uint16)
    planes = []
    for rgb in images:
        y, cb, cr, _ = _decoder.forward_dct(rgb, ones, ones)  # q100 coefficients, as a store holds them
        planes.append([torch.as_tensor(np.moveaxis(p, -1, 0)[None].astype(np.float64)) for p in (y, cb, cr)])
    totals, pairs = [], []
    for name, luma, chroma in table_sets:
        lq, cq = torch.as_tensor(luma.astype(np.float64)), torch.as_tensor(chroma.astype(np.float64))
        pooled = learned.IndexCounts()  # images of several sizes: the marginal over all of them
        for p in planes:
            pooled.add(p, lq, cq)
        est = pooled.bits()
        real = 0
        for rgb, p in zip(images, planes):
            bits = 8 * entropy_coded_bytes(encode_with_tables(rgb, luma, chroma))
            real += bits
            pairs.append((float(learned.estimate_bits(p, lq, cq)), bits))
        totals.append((name, est, real))
    return totals, pairs


def _table_sets(extra_files=()) -> list[tuple[str, np.ndarray, np.ndarray]]:
    sets = [(f"q{q}", *ijg_tables(q)) for q in range(10, 100, 5)]
    # non-IJG shapes: the golden (scaled) tables, flat tables, JPEG-DL's data-style tables
    golden = read_tables(GOLDEN_TABLES)
    sets.append(("golden", *golden.arrays()))
    for step in (4, 12):
        sets.append((f"flat{step}", np.full(64, step, np.uint16), np.full(64, step, np.uint16)))
    freq = np.add.outer(np.arange(8), np.arange(8)).reshape(64)
    sets.append(("ramp", (3 + 6 * freq).astype(np.uint16), (6 + 12 * freq).clip(1, 255).astype(np.uint16)))
    for path in extra_files:
        sets.append((Path(path).stem, *read_tables(path).arrays()))
    return sets


def _check_tracking(totals, pairs, min_rho=0.95):
    est = [e for _, e, _ in totals]
    real = [r for _, _, r in totals]
    rho_tables = spearmanr(est, real).statistic
    rho_pairs = spearmanr([e for e, _ in pairs], [r for _, r in pairs]).statistic
    rel = np.array([(e - r) / r for e, r in zip(est, real)])
    assert rho_tables >= min_rho, (rho_tables, totals)
    assert rho_pairs >= min_rho, rho_pairs
    assert np.abs(rel).mean() < 0.3, rel  # the estimate is about the size, not only its order
    return rho_tables, rho_pairs, rel


def test_rate_estimate_tracks_real_jpeg_sizes_on_photographs(photo_tree):
    """Fresh-clone version: the val images of the photograph tree (crops of CC0 photographs)."""
    files = sorted((photo_tree / "val").rglob("*.jpg"))
    images = []
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = (rgb.shape[0] // 16) * 16, (rgb.shape[1] // 16) * 16
        if h >= 32 and w >= 32:
            images.append(np.ascontiguousarray(rgb[:h, :w]))
    assert len(images) >= 10
    totals, pairs = _rate_vs_real(images, _table_sets())
    _check_tracking(totals, pairs)


@pytest.mark.shared
def test_rate_estimate_tracks_real_jpeg_sizes_on_imagenette_val(shared_data):
    """imagenette-5k val (the first 5 images of each class, 224x224), IJG qualities 10..95 and
    non-IJG tables, including the experiment's learned tables when committed."""
    val = shared_data / "imagenette-5k" / "val"
    images = []
    for cls in sorted(p for p in val.iterdir() if p.is_dir()):
        for path in sorted(cls.iterdir())[:5]:
            images.append(np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))))
    learned_files = sorted(EXPERIMENT_TABLES.glob("j4d-*.json"))
    totals, pairs = _rate_vs_real(images, _table_sets(learned_files))
    _check_tracking(totals, pairs)
