"""`jdct export`: ONNX and torch.export models that give the checkpoint's logits, fed what a JPEG
decoder gives (dequantized coefficients, or pixels in [0, 1]), at any batch and image size.

Checkpoints come from tests/inferfixture.py (the real format, a tiny store converted from real
JPEGs), so these tests need nothing outside the repository.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from jdct_cli import export as export_mod
from jdct_cli.cli import main
from jdct_cli.errors import ConfigError, ExportError
from jdct_cli.export import export
from jdct_cli.predict import _direct_coefficients, predict

from conftest import torch_threads
from inferfixture import make_checkpoint
from photos import photo_jpeg
from trainfixture import make_tiny_store


@pytest.fixture(autouse=True)
def two_torch_threads():
    with torch_threads(2):
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    store, _ = make_tiny_store(root)
    return {"dct": make_checkpoint(root / "thinner.pt", store, "late_concat_rfa_thinner"),
            "rgb": make_checkpoint(root / "rgb.pt", store, "resnet50_rgb", seed=1), "root": root}


def _real_direct_inputs(folder: Path):
    """Dequantized coefficients of real 4:2:0 JPEGs (a 96x64 and a 64x128 photograph): what a
    deployment feeds the exported DCT model, made with jdct's decoder."""
    files = [photo_jpeg(folder / "a.jpg", "astronaut", size=(96, 64), quality=80),
             photo_jpeg(folder / "b.jpg", "chelsea", size=(64, 128), quality=90)]
    out = []
    for f in files:
        y, cb, cr, q = _direct_coefficients(f.read_bytes(), f)
        out.append((f, [(p.astype(np.float32) * t.astype(np.float32)[:, None, None])[None]
                        for p, t in zip((y, cb, cr), q)]))
    return out


def test_onnx_and_pt2_match_the_checkpoint_and_predict(tiny, tmp_path):
    """Both exports pass their own check (max |logit difference| < 1e-4 at two shapes), and fed a
    real JPEG's dequantized coefficients they give the probabilities `jdct predict --direct` gives."""
    ort = pytest.importorskip("onnxruntime")
    onnx_res = export(tiny["dct"], tmp_path / "m.onnx")
    pt2_res = export(tiny["dct"], tmp_path / "m.pt2")
    for res, runtime in ((onnx_res, "ONNX Runtime"), (pt2_res, "PyTorch")):
        assert res["check"]["runtime"].startswith(runtime)
        assert res["check"]["max_abs_diff"] < 1e-4
        assert [s[0] for s in res["check"]["shapes"]] == [2, 3]  # batch is dynamic
        assert res["check"]["shapes"][1][1] != res["check"]["shapes"][1][2]  # so is each side
        assert res["inputs"]["y"] == ["B", 64, "H/8", "W/8"] and res["outputs"]["logits"] == ["B", 2]
        assert Path(res["out"]).stat().st_size == res["bytes"] > 1_000_000
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind
    session = ort.InferenceSession(os.fspath(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["y", "cb", "cr"]
    program = torch.export.load(os.fspath(tmp_path / "m.pt2")).module()
    for f, (y, cb, cr) in _real_direct_inputs(tmp_path):
        want = predict(tiny["dct"], [f], direct=True, device="cpu", top_k=2)["predictions"][0]
        assert want["mode"] == "direct"
        for logits in (session.run(["logits"], {"y": y, "cb": cb, "cr": cr})[0],
                       program(*map(torch.from_numpy, (y, cb, cr))).detach().numpy()):
            probs = torch.softmax(torch.from_numpy(logits), 1)[0]
            assert [t["index"] for t in want["top"]] == probs.argsort(descending=True).tolist()
            assert np.allclose([t["probability"] for t in want["top"]], probs.sort(descending=True).values.numpy(),
                               atol=1e-5)


def test_pixel_network_takes_pixels_in_0_1(tiny, tmp_path):
    """A pixel network's export takes [B, 3, H, W] in [0, 1] and normalizes inside: fed Pillow's
    decode of a real JPEG it agrees with the checkpoint on jdct's reconstruction of the same pixels."""
    from PIL import Image

    res = export(tiny["rgb"], tmp_path / "rgb.pt2")
    assert res["input_kind"] == "rgb" and res["inputs"] == {"x": ["B", 3, "H", "W"]}
    assert res["check"]["max_abs_diff"] < 1e-4
    program = torch.export.load(res["out"]).module()
    f = photo_jpeg(tmp_path / "c.jpg", "coffee", size=(80, 64), quality=95)
    x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]
    want = predict(tiny["rgb"], [f], direct=True, device="cpu", top_k=2)["predictions"][0]
    probs = torch.softmax(program(x.contiguous()), 1)[0].detach()
    # Pillow's decode and jdct's rebuild from the same coefficients differ by rounding only
    assert want["top"][0]["index"] == int(probs.argmax())
    assert abs(want["top"][0]["probability"] - float(probs.max())) < 0.02


def test_a_failed_check_writes_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "CHECK_ATOL", 0.0)
    with pytest.raises(ExportError, match=r"differ from the checkpoint's by up to .* nothing was written"):
        export(tiny["dct"], tmp_path / "bad.pt2")
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_onnxruntime_says_it_was_not_checked(tiny, tmp_path, monkeypatch):
    pytest.importorskip("onnxscript")
    monkeypatch.setattr(export_mod, "_onnx_runner", lambda path, names: None)
    res = export(tiny["dct"], tmp_path / "m.onnx")
    assert res["check"]["runtime"] is None and "onnxruntime is not installed" in res["check"]["note"]
    assert (tmp_path / "m.onnx").is_file()


def test_cli_one_command_for_every_kind(tiny, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["export", "--checkpoint", os.fspath(tiny["dct"]), os.fspath(tmp_path / "w.pt")])
    assert res.exit_code == 0 and "weights only" in res.output, res.output
    assert torch.load(tmp_path / "w.pt", weights_only=True)["weights_only"] is True
    res = runner.invoke(main, ["export", os.fspath(tiny["dct"]), os.fspath(tmp_path / "m.pt2"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    res = runner.invoke(main, ["export", os.fspath(tiny["dct"]), os.fspath(tmp_path / "m2.pt2")])
    assert "checked: max |logit difference|" in res.output and "torch.export" in res.output
    assert doc["kind"] == "pt2" and doc["check"]["max_abs_diff"] < 1e-4 and doc["classes"] == ["astronaut", "cat"]
    res = runner.invoke(main, ["export", os.fspath(tiny["dct"]), os.fspath(tmp_path / "model.bin"),
                               "--format", "weights"])
    assert res.exit_code == 0 and "weights only" in res.output
    assert torch.load(tmp_path / "model.bin", weights_only=True)["arch"] == "late_concat_rfa_thinner"
    res = runner.invoke(main, ["export", os.fspath(tiny["dct"]), os.fspath(tmp_path / "model.bin")])
    assert res.exit_code == 1 and "cannot tell the export format" in res.output and ".onnx" in res.output
    res = runner.invoke(main, ["export", os.fspath(tiny["dct"])])
    assert res.exit_code == 2 and "give CKPT and OUT" in res.output
    res = runner.invoke(main, ["export", os.fspath(tmp_path / "nope.pt"), os.fspath(tmp_path / "m.onnx")])
    assert res.exit_code == 1 and "no such checkpoint" in res.output and "Traceback" not in res.output
    with pytest.raises(ConfigError):
        export(tiny["dct"], tmp_path / "m.onnx", kind="tflite")
