"""`jdct train --jpeg-layer learned`, `--quality-augment`, `jdct eval --requantize` and
`jdct learn-tables` end to end on the real tiny store (tests/trainfixture.py: crops of two CC0
photographs, 32 px, quality 100), on the CPU, from a fresh clone.
"""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jdct_cli import checkpoint as ckpt
from jdct_cli.config import build_config
from jdct_cli.data import DCTLoader
from jdct_cli.errors import ConfigError
from jdct_cli.evaluate import evaluate, load_for_inference
from jdct_cli.jpegmath import learned
from jdct_cli.jpegmath.sample import reconstruct
from jdct_cli.jpegmath.quant import ijg_tables
from jdct_cli.store import read_metadata
from jdct_cli.tables import encode_with_tables, entropy_coded_bytes, learn_tables, read_tables
from jdct_cli.train import train
from jdct_cli.train.api import set_up_jpeg_layer
from jdct_cli.train.quality import InputStage
from jdct_cli.train.runtime import wrap_jpeg_layer

from conftest import REPO
from trainfixture import make_tiny_store

GOLDEN = Path(__file__).parent / "golden" / "checkpoint_v1.pt"
GOLDEN_TABLES = Path(__file__).parent / "golden" / "quant-tables.v1.json"


def _schema(name):
    return json.loads((REPO / "schemas" / name).read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("tinyq"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(store, out, **kw):
    base = dict(arch="late_concat_rfa_thinner", data=os.fspath(store), out=os.fspath(out), epochs=1, batch_size=12,
                threads=1, device="cpu")
    base.update(kw)
    return build_config(**base)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _val_planes(store):
    """Every val sample's q100 coefficients (int64 numpy, store layout) and labels, read with zarr."""
    import zarr

    group = zarr.open_group(os.fspath(store), mode="r")
    return [np.asarray(group[f"val/{n}"][0]).astype(np.int64) for n in ("y", "cb", "cr")], \
        np.asarray(group["val/label"][0])


@pytest.fixture(scope="module")
def plain_run(tiny, tmp_path_factory):
    """A network trained without the layer (2 steps): what eval --requantize and learn-tables use."""
    store, _ = tiny
    run = tmp_path_factory.mktemp("plain") / "run"
    train(_cfg(store, run, epochs=2, batch_size=8))
    return run


# ------------------------------------------------------------------ JPEG-DL: the layer in training


def test_jpeg_layer_run_writes_its_tables_and_eval_reproduces_validation(tiny, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    store, _ = tiny
    run = tmp_path / "run"
    events = []
    train(_cfg(store, run, jpeg_layer="learned", jpeg_lr=0.01), progress=events.append)
    assert events[0]["jpeg_layer"] == "learned"
    payload = torch.load(run / "last.pt", weights_only=True)
    ckpt.validate_json_part(payload, run / "last.pt")
    golden_keys = set(torch.load(GOLDEN, weights_only=True))
    assert set(payload) == golden_keys | {"jpeg_tables", "jpeg_optimizer"}
    tables = payload["jpeg_tables"]
    assert torch.equal(payload["model"]["jpeg.tables.luma"], torch.tensor(tables["luma_float"]))
    for name in ("luma", "chroma"):
        assert tables[name] == [int(min(255, max(1, round(v)))) for v in tables[f"{name}_float"]]

    # the data-driven start, recomputed here with numpy from the store: 2 E|x| / sqrt(2^10) over
    # the first train samples (all 24 here), then two Adam steps of at most lr each
    import zarr

    group = zarr.open_group(os.fspath(store), mode="r")
    y = np.asarray(group["train/y"][0]).astype(np.float64)
    chroma = np.concatenate([np.asarray(group["train/cb"][0]), np.asarray(group["train/cr"][0])]).astype(np.float64)
    init_luma = 2 * np.abs(y).mean(axis=(0, 2, 3)) / 32
    init_chroma = 2 * np.abs(chroma).mean(axis=(0, 2, 3)) / 32
    moved_l = np.abs(np.array(tables["luma_float"]) - np.clip(init_luma, 1e-5, 255))
    moved_c = np.abs(np.array(tables["chroma_float"]) - np.clip(init_chroma, 1e-5, 255))
    assert moved_l.max() <= 2 * 0.01 * 1.001 and moved_c.max() <= 2 * 0.01 * 1.001
    assert (moved_l > 1e-4).mean() > 0.8  # the tables did learn

    # the network's SGD (with weight decay) holds no table; the tables' Adam holds both
    n_net = sum(len(g["params"]) for g in payload["optimizer"]["param_groups"])
    assert n_net == len([k for k in payload["model"] if not k.startswith("jpeg.")]) - \
        sum(1 for k in payload["model"] if "running_" in k or "num_batches" in k)
    assert sum(len(g["params"]) for g in payload["jpeg_optimizer"]["param_groups"]) == 2
    assert payload["jpeg_optimizer"]["param_groups"][0]["weight_decay"] == 0

    for name in ("tables.json", "best_tables.json"):
        doc = json.loads((run / name).read_text())
        jsonschema.validate(doc, _schema("quant-tables.v1.schema.json"))
        assert doc["luma"] == tables["luma"] and doc["source"]["kind"] == "jpeg-dl"

    (line,) = _metrics(run)
    res = evaluate(run / "last.pt", store, batch_size=5, device="cpu", threads=1)
    assert res["top1"] == line["val_top1"] and math.isclose(res["loss"], line["val_loss"], rel_tol=1e-4)
    export = tmp_path / "w.pt"
    ckpt.export_weights(run / "last.pt", export)
    exported = torch.load(export, weights_only=True)
    assert exported["jpeg_tables"] == tables and "jpeg_optimizer" not in exported
    assert evaluate(export, store, device="cpu", threads=1)["top1"] == line["val_top1"]


@pytest.mark.parametrize("arch", ["late_concat_rfa_thinner", "resnet50_rgb", "dct_frozen"])
def test_a_fine_layer_passes_the_inputs_through(tiny, arch):
    """Steps far finer than the data and a hard quantizer: the layer must give the network the
    loader's inputs back (its un-normalization, colour conversion and DCT are exact inverses)."""
    store, _ = tiny
    info = read_metadata(store)
    from jdct_cli.models import create_model, get_model_info

    kind = get_model_info(arch).input_kind
    torch.manual_seed(0)
    net = create_model(arch, 2).eval()
    model = wrap_jpeg_layer(net, kind, hardness=1e6, bits=None).eval()
    cfg = _cfg(store, "unused", arch=arch, jpeg_layer="learned", jpeg_init="0.001")
    set_up_jpeg_layer(model, cfg, info, kind)
    loader = DCTLoader(store, "val", batch_size=6, shuffle=False, flip=False, output=kind, threads=1)
    inputs, _ = next(iter(loader))
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.no_grad():
        through = model.jpeg(*inputs)
        through = through if isinstance(through, tuple) else (through,)
        for a, b in zip(through, inputs):
            assert torch.allclose(a, b, atol=2e-3), float((a - b).abs().max())
        assert torch.allclose(model(*inputs), net(*inputs), atol=1e-3)


def test_jpeg_layer_resume_after_ctrl_c_continues_exactly(tiny, tmp_path):
    store, _ = tiny
    kw = dict(epochs=2, batch_size=8, jpeg_layer="learned", jpeg_lr=0.05, milestones=[1])
    ref = train(_cfg(store, tmp_path / "ref", **kw))
    assert ref.steps == 6

    def interrupt_at_4(ev):
        if ev["event"] == "step" and ev["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "run"
    assert train(_cfg(store, run, **kw), progress=interrupt_at_4).interrupted
    assert not train(None, resume=run).interrupted
    a, b = ckpt.load_checkpoint(run / "last.pt"), ckpt.load_checkpoint(tmp_path / "ref" / "last.pt")
    for name, value in b["model"].items():
        assert torch.equal(a["model"][name], value), name
    assert a["jpeg_tables"] == b["jpeg_tables"]
    mine, theirs = read_tables(run / "tables.json"), read_tables(tmp_path / "ref" / "tables.json")
    assert (mine.luma, mine.chroma, mine.luma_float, mine.chroma_float) == \
        (theirs.luma, theirs.chroma, theirs.luma_float, theirs.chroma_float)


def test_pixel_network_trains_behind_the_layer(tiny, tmp_path):
    store, _ = tiny
    run = tmp_path / "rgb"
    train(_cfg(store, run, arch="resnet50_rgb", jpeg_layer="learned", jpeg_init="q90", jpeg_optimizer="sgd",
               jpeg_lr=0.5, jpeg_hardness=2.0))
    payload = ckpt.load_checkpoint(run / "last.pt")
    start = ijg_tables(90)[0].astype(np.float64)
    assert np.abs(np.array(payload["jpeg_tables"]["luma_float"]) - start).max() > 0  # SGD moved them
    assert payload["config"]["jpeg_optimizer"] == "sgd"
    model = load_for_inference(run / "last.pt")[1]
    assert isinstance(model.jpeg, learned.PixelJpegLayer) and model.jpeg.kind == "rgb"
    assert torch.equal(model.jpeg.mean, torch.tensor([0.485, 0.456, 0.406]))
    (line,) = _metrics(run)
    assert evaluate(run / "last.pt", store, device="cpu", threads=1)["top1"] == line["val_top1"]


# ------------------------------------------------------------------ quality augmentation


def test_quality_augment_requantizes_each_sample_to_its_drawn_quality(tiny, tmp_path):
    """With lr 0 the first step's loss must be the network's cross-entropy on the first batch,
    each sample requantized here with the IJG tables of the quality drawn for (seed, epoch, sample)."""
    store, _ = tiny
    events, plain = [], []
    train(_cfg(store, tmp_path / "aug", lr=0.0, quality_augment="5:40", seed=3), progress=events.append)
    train(_cfg(store, tmp_path / "plain", lr=0.0, seed=3), progress=plain.append)
    first = next(e for e in events if e["event"] == "step")["loss"]
    first_plain = next(e for e in plain if e["event"] == "step")["loss"]

    from jdct_cli.models import create_model

    torch.manual_seed(3)
    model = create_model("late_concat_rfa_thinner", 2).train()
    loader = DCTLoader(store, "train", batch_size=12, shuffle=True, seed=3, flip=True, drop_last=True, output="dct",
                       normalize=False, threads=1)
    samples = loader.plan(0).batch(0)
    planes, labels = next(iter(loader))
    qualities = learned.sample_qualities(3, 0, samples, 5, 40)
    assert len(set(qualities.tolist())) > 3
    req = []
    for plane, which in zip(planes, (0, 1, 1)):
        steps = torch.tensor(np.stack([ijg_tables(int(q))[which] for q in qualities]).astype(np.float32))
        s = steps.view(-1, 64, 1, 1)
        req.append(torch.sign(plane) * torch.floor(plane.abs() / s + 0.5) * s)  # libjpeg's rounding, by hand
    stats = read_metadata(store).metadata.stats.by_plane()
    inputs = []
    for name, x in zip(("y", "cb", "cr"), req):
        mean = torch.tensor(stats[name]["mean"], dtype=torch.float32).view(1, 64, 1, 1)
        std = torch.tensor(stats[name]["std"], dtype=torch.float32).view(1, 64, 1, 1)
        inputs.append((x - mean) / std)
    with torch.no_grad():
        expected = float(F.cross_entropy(model(*inputs), labels))
    assert first == pytest.approx(expected, rel=1e-4)
    assert abs(first - first_plain) > 1e-4  # the augmentation changed what the network saw


def test_input_stage_rebuilds_the_loaders_pixels(tiny):
    """Dequantized coefficients -> pixel inputs through the stage equal the loader's own pixels,
    so a requantized sample reaches a pixel network exactly as a decoder would show it."""
    store, _ = tiny
    stats = read_metadata(store).metadata.stats.by_plane()
    for kind in ("rgb", "ycbcr", "dct"):
        ref = DCTLoader(store, "val", batch_size=11, shuffle=False, flip=False, output=kind, threads=1)
        raw = DCTLoader(store, "val", batch_size=11, shuffle=False, flip=False, output="dct", normalize=False,
                        threads=1)
        (expected, _), (planes, _) = next(iter(ref)), next(iter(raw))
        got = InputStage(kind, stats, "cpu").to_inputs(planes)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for a, b in zip(got, expected):
            assert torch.allclose(a, b, atol=1e-4)


def test_quality_augment_with_a_tables_file_trains(tiny, tmp_path):
    store, _ = tiny
    result = train(_cfg(store, tmp_path / "t", arch="resnet50_ycbcr", quality_augment=os.fspath(GOLDEN_TABLES)))
    assert result.steps == 2
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["quality_augment"] == os.fspath(GOLDEN_TABLES)


# ------------------------------------------------------------------ eval --requantize


def _entropy_bits(indices: np.ndarray) -> float:
    total = 0.0
    for k in range(64):
        _, counts = np.unique(indices[:, k], return_counts=True)
        p = counts / counts.sum()
        total -= counts.sum() * float((p * np.log2(p)).sum())
    return total


def test_eval_requantize_reports_accuracy_and_real_bits(tiny, plain_run):
    jsonschema = pytest.importorskip("jsonschema")
    store, _ = tiny
    ckpt_path = plain_run / "last.pt"
    plain = evaluate(ckpt_path, store, device="cpu", threads=1)
    same = evaluate(ckpt_path, store, device="cpu", threads=1, requantize=100, batch_size=4)
    # q100 tables are all ones and stored coefficients integers: requantizing changes nothing
    assert same["top1"] == plain["top1"] and math.isclose(same["loss"], plain["loss"], rel_tol=1e-5)
    (y, cb, cr), labels = _val_planes(store)
    keep = labels >= 0
    pixels = int(keep.sum()) * 32 * 32
    results = {}
    for quality in (20, 50, 90):
        res = evaluate(ckpt_path, store, device="cpu", threads=1, requantize=str(quality))
        jsonschema.validate(res, _schema("eval.v1.schema.json"))
        r = res["requantize"]
        luma, chroma = (t.astype(np.float64) for t in ijg_tables(quality))
        # independent estimate: numpy entropies of the requantized indices of every val sample
        iy = np.sign(y) * np.floor(np.abs(y) / luma.reshape(1, 64, 1, 1) + 0.5)
        ic = np.sign(np.concatenate([cb, cr])) * np.floor(
            np.abs(np.concatenate([cb, cr])) / chroma.reshape(1, 64, 1, 1) + 0.5)
        bits = _entropy_bits(iy[keep].transpose(1, 0, 2, 3).reshape(64, -1).T) + \
            _entropy_bits(ic[np.concatenate([keep, keep])].transpose(1, 0, 2, 3).reshape(64, -1).T)
        assert r["estimated_bpp"] == pytest.approx(bits / pixels, rel=1e-9)
        # independent real size: each sample rebuilt with numpy (jpegmath.sample.reconstruct) and written by
        # Pillow at that quality (the same tables): within a few per cent of eval's files
        meta = read_metadata(store).metadata
        real = []
        for i in np.flatnonzero(keep):
            rgb = reconstruct(y[i], cb[i], cr[i], meta.quant_tables.luma, meta.quant_tables.chroma)
            import io

            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=2, optimize=True)
            real.append(8 * entropy_coded_bytes(buf.getvalue()) / (32 * 32))
        assert r["real_bpp"] == pytest.approx(np.mean(real), rel=0.06)
        assert r["real_bpp_min"] <= r["real_bpp"] <= r["real_bpp_max"]
        assert r["quality"] == quality and r["luma"] == ijg_tables(quality)[0].tolist()
        results[quality] = r
    assert results[20]["real_bpp"] < results[50]["real_bpp"] < results[90]["real_bpp"]
    assert results[20]["estimated_bpp"] < results[50]["estimated_bpp"] < results[90]["estimated_bpp"]

    from_file = evaluate(ckpt_path, store, device="cpu", threads=1, requantize=os.fspath(GOLDEN_TABLES),
                         real_size=False)
    r = from_file["requantize"]
    assert r["tables_file"] == os.path.abspath(GOLDEN_TABLES) and r["quality"] is None and r["real_bpp"] is None
    assert r["luma"] == list(read_tables(GOLDEN_TABLES).luma)


def test_eval_requantize_cli(tiny, plain_run):
    from click.testing import CliRunner

    from jdct_cli.cli import main

    store, _ = tiny
    runner = CliRunner()
    res = runner.invoke(main, ["eval", "--checkpoint", os.fspath(plain_run), "--data", os.fspath(store),
                               "--requantize", "50", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "requantized with IJG quality 50: estimated" in res.output and "real JPEGs" in res.output
    res = runner.invoke(main, ["eval", "--checkpoint", os.fspath(plain_run), "--requantize", "0", "--device", "cpu"])
    assert res.exit_code == 1 and "quality must be in 1..100" in res.output
    res = runner.invoke(main, ["eval", "--checkpoint", os.fspath(plain_run), "--no-real-size"])
    assert res.exit_code == 2 and "--no-real-size goes with --requantize" in res.output


# ------------------------------------------------------------------ learn-tables (J4D)


def test_learn_tables_trades_accuracy_for_bits_with_its_weight(tiny, plain_run, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    store, _ = tiny
    reports = {}
    for weight in (0.0, 20.0):
        out = tmp_path / f"t{weight:g}.json"
        reports[weight] = learn_tables(plain_run / "last.pt", store, out, rate_weight=weight, epochs=4, lr=0.1,
                                       hardness=2.0, init="q50", batch_size=8, device="cpu", threads=1)
        doc = json.loads(out.read_text())
        jsonschema.validate(doc, _schema("quant-tables.v1.schema.json"))
        assert doc["source"]["kind"] == "j4d" and doc["source"]["rate_weight"] == weight
        assert doc["luma"] == reports[weight]["luma"]
        # the reported validation is eval --requantize with the written file
        again = evaluate(plain_run / "last.pt", store, device="cpu", threads=1, requantize=os.fspath(out),
                         batch_size=8)
        assert again["top1"] == reports[weight]["val"]["top1"]
        assert again["requantize"]["estimated_bpp"] == pytest.approx(reports[weight]["val"]["estimated_bpp"])
    q50 = evaluate(plain_run / "last.pt", store, device="cpu", threads=1, requantize=50, real_size=False)
    heavy, free = reports[20.0], reports[0.0]
    assert heavy["steps"] == 4 * 3
    assert heavy["val"]["estimated_bpp"] < 0.8 * q50["requantize"]["estimated_bpp"]
    assert heavy["val"]["estimated_bpp"] < free["val"]["estimated_bpp"]
    assert heavy["val"]["real_bpp"] < free["val"]["real_bpp"]
    assert heavy["train_last"]["bpp"] < heavy["train_first"]["bpp"]
    assert sum(heavy["luma"]) > sum(ijg_tables(50)[0])  # coarser steps are how the bits fall


def test_learn_tables_cli_and_its_refusals(tiny, plain_run, tmp_path):
    from click.testing import CliRunner

    from jdct_cli.cli import main

    store, _ = tiny
    runner = CliRunner()
    out = tmp_path / "j.json"
    res = runner.invoke(main, ["learn-tables", "--checkpoint", os.fspath(plain_run / "last.pt"), "--rate-weight", "1",
                               "--out", os.fspath(out), "--epochs", "0.5", "--val-split", "none", "--device", "cpu",
                               "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["steps"] == 2 and "val" not in report and read_tables(out).source["init"] == "IJG quality 50"

    def fails(args, *needles):
        r = runner.invoke(main, ["learn-tables", "--checkpoint", os.fspath(plain_run / "last.pt"), *args])
        assert r.exit_code != 0 and isinstance(r.exception, SystemExit), r.output
        for needle in needles:
            assert needle in r.output, r.output

    fails(["--rate-weight", "1", "--out", os.fspath(tmp_path / "x.json"), "--init", "checkpoint"],
          "no learned tables")
    fails(["--rate-weight", "1", "--out", os.fspath(tmp_path)], "is a directory")
    fails(["--rate-weight", "1", "--out", os.fspath(tmp_path / "no" / "x.json")], "no such folder")
    fails(["--rate-weight", "1", "--out", os.fspath(tmp_path / "x.json"), "--init", os.fspath(tmp_path / "n.json")],
          "no such tables file")
    assert not (tmp_path / "x.json").exists()


def test_train_refuses_bad_jpeg_options(tiny, tmp_path):
    store, _ = tiny
    for kw, needle in ((dict(quality_augment="50:20"), "LOW <= HIGH"), (dict(jpeg_init="foo"), "jpeg init"),
                       (dict(jpeg_layer="soft"), "jpeg layer"), (dict(jpeg_hardness=0.0), "hardness"),
                       (dict(quality_augment=os.fspath(tmp_path / "none.json")), "no such tables file")):
        with pytest.raises((ConfigError, FileNotFoundError), match=needle):
            train(_cfg(store, tmp_path / "bad", **kw))
    assert not (tmp_path / "bad").exists()


def test_checkpoints_without_a_layer_still_load_and_evaluate(plain_run, tiny):
    """A run's config without the jpeg_* keys (as every checkpoint before them) builds the bare network."""
    store, _ = tiny
    payload = ckpt.load_checkpoint(plain_run / "last.pt")
    old = {k: v for k, v in payload.items()}
    old["config"] = {k: v for k, v in payload["config"].items() if not k.startswith(("jpeg_", "quality_"))}
    path = plain_run.parent / "old.pt"
    ckpt.save_checkpoint(path, old)
    model = load_for_inference(path)[1]
    assert not hasattr(model, "jpeg")
    assert evaluate(path, store, device="cpu", threads=1)["top1"] == evaluate(plain_run / "last.pt", store,
                                                                             device="cpu", threads=1)["top1"]
