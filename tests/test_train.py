"""`jdct train` / `eval` / `predict` / `export` end to end on a real tiny store.

The store (2 classes, 24 train + 11 val images, 32 px crops) is converted once per module with the
real `jdct convert` library from real JPEGs written at test time (tests/photos.py: crops of two
scikit-image photographs), so these tests need nothing outside the repository; every run uses the
real loader and the real model zoo on CPU.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jdct_cli import checkpoint as ckpt
from jdct_cli.config import build_config
from jdct_cli.errors import CheckpointError, ConfigError
from jdct_cli.evaluate import _direct_coefficients, _val_coefficients, evaluate, model_inputs, predict
from jdct_cli.train import store_facts, train

from conftest import REPO
from photos import make_photo_tree, photo_jpeg
from trainfixture import CLASSES, make_tiny_store

GOLDEN = Path(__file__).parent / "golden" / "checkpoint_v1.pt"


def _schema():
    return json.loads(ckpt.schema_path().read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(store path, source folder): 12 train images per class, 6 + 5 val images, size 32, quality 100."""
    return make_tiny_store(tmp_path_factory.mktemp("tiny"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _cfg(store, out, **kw):
    base = dict(arch="late_concat_rfa_thinner", data=os.fspath(store), out=os.fspath(out), epochs=1, batch_size=12,
                threads=1, device="cpu")
    base.update(kw)
    return build_config(**base)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ 2 steps of three networks


@pytest.mark.parametrize("arch, kind", [("upsampling_rfa", "dct"), ("late_concat_rfa_thinner", "dct"),
                                        ("resnet50_rgb", "rgb")])
def test_two_steps_checkpoint_and_eval_reproduces_val_top1(tiny, tmp_path, arch, kind):
    jsonschema = pytest.importorskip("jsonschema")
    store, _ = tiny
    run = tmp_path / "run"
    events = []
    result = train(_cfg(store, run, arch=arch), progress=events.append)
    assert result.steps == 2 and result.epochs_done == 1 and not result.interrupted
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    assert events[0]["input_kind"] == kind

    schema = _schema()
    (line,) = _metrics(run)
    jsonschema.validate(line, ckpt.sub_schema("metrics"))
    assert line["val_samples"] == 11 and line["step"] == 2
    assert math.isclose(line["lr"], 0.1 * 12 / 256)  # default LR, no warm-up at batch 12
    config = json.loads((run / "config.json").read_text())
    jsonschema.validate(config, ckpt.sub_schema("config"))
    assert config["arch"] == arch and config["global_batch_size"] == 12
    assert config["milestones"] == [0.3333, 0.6667, 0.8889]  # 1/3, 2/3, 8/9 of the one epoch
    # a CPU run records what it did: no bf16 autocast, no channels_last; absolute paths
    assert config["amp"] is False and config["channels_last"] is False
    assert config["data"] == os.path.abspath(store) and config["out"] == os.path.abspath(run)

    payload = torch.load(run / "last.pt", weights_only=True)  # the safety contract
    ckpt.validate_json_part(payload, run / "last.pt")
    assert set(payload) == set(torch.load(GOLDEN, weights_only=True))  # same layout as the golden v1 file
    assert payload["epoch"] == 1 and payload["step"] == 2 and not payload["mid_epoch"]
    assert payload["input_kind"] == kind and payload["classes"] == list(CLASSES)
    assert payload["loader"]["batches_done"] == 2
    assert (run / "best.pt").stat().st_size == (run / "last.pt").stat().st_size
    assert payload["best_top1"] == line["val_top1"]
    assert line["val_top5"] is None  # 2 classes: top-5 would always be 1
    # eval reproduces the logged validation exactly (top-k are counts), whatever its batch size.
    for bs in (None, 4):
        res = evaluate(run / "last.pt", store, batch_size=bs, device="cpu", threads=1)
        jsonschema.validate(res, json.loads((REPO / "schemas" / "eval.v1.schema.json").read_text()))
        assert res["samples"] == 11
        assert res["top1"] == line["val_top1"] and res["top5"] == line["val_top5"]
        assert math.isclose(res["loss"], line["val_loss"], rel_tol=1e-4)


# ------------------------------------------------------------------ exact resume after Ctrl-C


def test_sigint_mid_epoch_then_resume_continues_exactly(tiny, tmp_path):
    """An uninterrupted reference run vs the same run stopped by SIGINT at step 4 and resumed.

    Step numbers, the LR of every step (warm-up, then a decay at epoch 2), the loss of every step
    (so the same samples, flips and weights) and the final weights must be identical.
    """
    store, _ = tiny
    kw = dict(arch="upsampling", epochs=2, batch_size=8, warmup_epochs=1.0, milestones=[1], lr=0.02)

    def steps_of(events):
        return [(e["step"], e["lr"], e["loss"]) for e in events if e["event"] == "step"]

    ref_events = []
    ref = train(_cfg(store, tmp_path / "ref", **kw), progress=ref_events.append)
    assert ref.steps == 6

    events = []

    def interrupt_at_4(ev):
        events.append(ev)
        if ev["event"] == "step" and ev["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does; handled after this step

    run = tmp_path / "run"
    first = train(_cfg(store, run, **kw), progress=interrupt_at_4)
    assert first.interrupted and first.steps == 4 and first.epochs_done == 1
    saved = ckpt.load_checkpoint(run / "last.pt")
    assert saved["mid_epoch"] and saved["step"] == 4 and saved["epoch"] == 1
    assert saved["loader"]["epoch"] == 1 and saved["loader"]["batches_done"] == 1
    assert len(_metrics(run)) == 1

    with pytest.raises(ConfigError, match="epochs cannot change"):
        train({"epochs": 3}, resume=run)
    # A kill between the metrics line of epoch 2 and its checkpoint: resuming must not duplicate it.
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(dict(_metrics(run)[0], epoch=2)) + "\n" + '{"epoch": 3, "torn')
    more = []
    second = train(None, resume=run, progress=more.append)
    assert not second.interrupted and second.steps == 6 and second.epochs_done == 2

    ref_steps = steps_of(ref_events)
    assert [s for s, _, _ in ref_steps] == [1, 2, 3, 4, 5, 6]
    lrs = [lr for _, lr, _ in ref_steps]
    assert lrs[:3] == pytest.approx([0.02 / 3, 0.04 / 3, 0.02]) and lrs[3:] == pytest.approx([0.002] * 3)
    assert steps_of(events) + steps_of(more) == ref_steps
    final, ref_final = ckpt.load_checkpoint(run / "last.pt"), ckpt.load_checkpoint(tmp_path / "ref" / "last.pt")
    for name, value in ref_final["model"].items():
        assert torch.equal(final["model"][name], value), name
    a, b = _metrics(run), _metrics(tmp_path / "ref")
    assert len(a) == 2
    for key in ("epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5"):
        assert [m[key] for m in a] == [m[key] for m in b], key


def test_cli_sigint_exits_cleanly_and_the_run_resumes(tiny, tmp_path):
    store, _ = tiny
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "jdct_cli", "train", "--arch", "late_concat_rfa_thinner", "--data", os.fspath(store),
           "--out", os.fspath(run), "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The "training ..." line is printed once the run is set up: interrupt the first epoch.
        first_line = proc.stderr.readline()
        assert first_line.startswith("training late_concat_rfa_thinner"), first_line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"jdct train --resume {run}" in err
    saved = ckpt.load_checkpoint(run / "last.pt")
    assert saved["mid_epoch"] and saved["epoch"] == 0 and 1 <= saved["step"] < 3

    from click.testing import CliRunner

    from jdct_cli.cli import main

    res = CliRunner().invoke(main, ["train", "--resume", os.fspath(run), "--threads", "1", "-q"])
    assert res.exit_code == 0, res.output
    lines = _metrics(run)
    assert [m["epoch"] for m in lines] == [1] and lines[-1]["step"] == 3  # 24 samples / 8


# ------------------------------------------------------------------ DDP with gloo


def test_two_process_gloo_run_survives_ctrl_c_and_gives_one_process_val_metrics(tiny, tmp_path):
    """torchrun, 2 CPU processes (gloo).

    Ctrl-C in a terminal reaches torchrun and its workers, and torchrun also forwards SIGINT and
    SIGTERM at once: the workers must agree on a step, rank 0 saves, and the run resumes. The
    validation after the epoch (11 samples, batch 5 per rank: one padding sample on rank 1) is
    all-reduced; it must equal a 1-process eval of the saved weights, and only rank 0 writes.
    """
    store, _ = tiny
    run = tmp_path / "ddp"
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "jdct_cli",
            "train"]
    args = ["--arch", "late_concat_rfa_thinner", "--data", os.fspath(store), "--out", os.fspath(run), "--epochs",
            "1", "--batch-size", "5", "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen(base + args, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stderr.readline()
        while line and not line.startswith("training "):
            line = proc.stderr.readline()
        assert line.startswith("training late_concat_rfa_thinner"), line
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole process group
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "interrupted after step 1" in err and "Aborted" not in err, err[-2000:]
    saved = ckpt.load_checkpoint(run / "last.pt")
    assert saved["mid_epoch"] and saved["step"] == 1 and saved["loader"]["world_size"] == 2
    assert not (run / "metrics.jsonl").exists()

    res = subprocess.run(base + ["--resume", os.fspath(run), "-q"], cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch_size"] == 10
    assert math.isclose(config["lr"], 0.1 * 10 / 256)
    (line,) = _metrics(run)  # one line: rank 1 wrote nothing
    assert line["step"] == 2 and line["val_samples"] == 11  # 24 // 10 steps; every val sample once
    for bs in (5, 11):
        res = evaluate(run / "last.pt", store, batch_size=bs, device="cpu", threads=1)
        assert res["samples"] == 11
        assert res["top1"] == line["val_top1"] and res["top5"] == line["val_top5"]
        assert math.isclose(res["loss"], line["val_loss"], rel_tol=1e-4)
    # only rank 0 writes: its files, and (when tensorboard is installed) at most one events file
    # per run segment (the interrupted one, if it got that far, and the resumed one)
    expected = ["best.pt", "config.json", "last.pt", "metrics.jsonl"]
    if importlib.util.find_spec("tensorboard") is not None:
        expected.append("tb")
        assert 1 <= len(list((run / "tb").glob("events.out.tfevents.*"))) <= 2
    assert sorted(p.name for p in run.iterdir()) == expected


# ------------------------------------------------------------------ a real learning check


def test_two_class_run_lowers_the_training_loss_clearly(tiny, tmp_path):
    """Full-batch SGD (24 images, 2 classes) at a small constant LR: the training loss must fall
    well below half its initial value (chance level is ln 2 = 0.69)."""
    store, _ = tiny
    events = []
    result = train(_cfg(store, tmp_path / "learn", arch="upsampling", epochs=14, batch_size=24, lr=0.002,
                        milestones=[]), progress=events.append)
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 14
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
    assert result.history[-1]["train_top1"] >= 0.9, result.history[-1]


# ------------------------------------------------------------------ predict


@pytest.mark.parametrize("kind", ["dct", "rgb", "ycbcr"])
def test_predict_inputs_equal_the_loader_inputs(tiny, kind):
    """The val transform of predict, applied to a store's source file, gives the loader's tensor."""
    from jdct_cli.data import DCTLoader
    from jdct_cli.store import read_metadata

    store, src = tiny
    info = read_metadata(store)
    facts = store_facts(info)
    import zarr

    image = np.asarray(zarr.open_group(os.fspath(store), mode="r")["val/image"][0])
    loader = DCTLoader(store, "val", batch_size=11, shuffle=False, flip=False, drop_last=False, output=kind,
                       threads=1)
    inputs, labels = next(iter(loader))
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    for n in (0, 5, 10):
        f = src / info.split("val").files[image[n]]
        y, cb, cr, quant = _val_coefficients(f.read_bytes(), f, facts)
        mine = model_inputs(y, cb, cr, quant, kind, facts, "cpu")
        for a, b in zip(mine, inputs):
            assert a.shape[1:] == b.shape[1:]
            assert torch.allclose(a[0], b[n], atol=1e-5), (kind, n)
            # one shared definition of the normalization (data.device_constants): the same bits
            assert torch.equal(a[0], b[n]), (kind, n, (a[0] - b[n]).abs().max())


def test_predict_inputs_name_missing_store_statistics(tiny):
    """A checkpoint whose store facts lack the statistics: a CheckpointError, not a KeyError."""
    store, src = tiny
    from jdct_cli.store import read_metadata

    facts = store_facts(read_metadata(store))
    facts.pop("stats")
    f = sorted((src / "val" / CLASSES[0]).iterdir())[0]
    y, cb, cr, quant = _val_coefficients(f.read_bytes(), f, facts)
    for kind in ("dct", "ycbcr"):
        with pytest.raises(CheckpointError, match="statistics"):
            model_inputs(y, cb, cr, quant, kind, facts, "cpu")
    (x,) = model_inputs(y, cb, cr, quant, "rgb", facts, "cpu")  # ImageNet constants: needs none
    assert x.shape == (1, 3, 32, 32)


def _odd_images(folder: Path) -> dict[str, Path]:
    """Real JPEGs for predict's edge cases, made here: a 64x64 4:2:0 photograph (--direct works), the
    same photograph at 4:4:4 and at 4:2:0 but 451x300 (--direct refused), a PNG named .JPEG."""
    from PIL import Image

    from photos import photo

    png = folder / "png_disguised.JPEG"
    Image.fromarray(photo("chelsea")).save(png, format="PNG")
    return {"direct": photo_jpeg(folder / "astronaut_64.jpg", "astronaut", size=(64, 64), subsampling=2),
            "444": photo_jpeg(folder / "chelsea_q90_444.jpg", "chelsea", quality=90, subsampling=0),
            "420_odd_size": photo_jpeg(folder / "chelsea_q90_420.jpg", "chelsea", quality=90, subsampling=2),
            "png": png}


def test_predict_val_transform_and_direct(tiny, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from jdct_cli.cli import main

    store, src = tiny
    odd = _odd_images(tmp_path)
    run = tmp_path / "run"
    # Trained through the CLI with a YAML config whose epochs the flag overrides.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"arch: late_concat_rfa_thinner\ndata: {store}\nepochs: 5\nbatch-size: 12\n"
                      "label_smoothing: 0.1\nthreads: 1\n")
    res = CliRunner().invoke(main, ["train", "--config", os.fspath(recipe), "--epochs", "1", "--out", os.fspath(run),
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "epoch 1: lr 0.00469" in res.output and "done: 1 epoch, 2 steps" in res.output
    config = json.loads((run / "config.json").read_text())
    assert (config["epochs"], config["batch_size"], config["label_smoothing"]) == (1, 12, 0.1)
    files = sorted((src / "val" / CLASSES[0]).iterdir())[:2]
    res = predict(run / "last.pt", files, device="cpu")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(res, json.loads((REPO / "schemas" / "eval.v1.schema.json").read_text()))
    # Same probabilities as the model on the loader's batch (eval path) for those files.
    payload = ckpt.load_checkpoint(run / "last.pt")
    for item in res["predictions"]:
        assert item["mode"] == "val-transform" and item["note"] is None
        probs = [t["probability"] for t in item["top"]]
        assert len(probs) == 2 and probs == sorted(probs, reverse=True)  # top-5 capped at the 2 classes
        assert math.isclose(sum(probs), 1.0, rel_tol=1e-5)
        assert {t["class"] for t in item["top"]} == set(CLASSES)

    # --direct on a 64x64 4:2:0 file: the file's own coefficients. Check they are that file's
    # image by rebuilding pixels from them and comparing with Pillow's decode.
    direct = predict(run / "last.pt", [odd["direct"]], direct=True, device="cpu")["predictions"][0]
    assert direct["mode"] == "direct" and direct["note"] is None
    y, cb, cr, quant = _direct_coefficients(odd["direct"].read_bytes(), odd["direct"])
    assert y.shape == (64, 8, 8) and cb.shape == (64, 4, 4)
    (x,) = model_inputs(y, cb, cr, quant, "rgb", payload["store"], "cpu")
    from jdct_cli.data import IMAGENET_MEAN, IMAGENET_STD

    rgb = (x[0] * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) * 255
    ref = np.asarray(Image.open(odd["direct"]).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    assert float(np.abs(rgb.numpy() - ref).mean()) < 2.0

    # --direct refused, with the reason: 4:4:4, and a size that is not a multiple of 16.
    out = predict(run / "last.pt", [odd["444"], odd["420_odd_size"]], direct=True, device="cpu")["predictions"]
    assert out[0]["mode"] == "val-transform" and "4:4:4" in out[0]["note"]
    assert out[1]["mode"] == "val-transform" and "not a multiple of 16" in out[1]["note"]

    runner = CliRunner()
    names = tmp_path / "classes.txt"
    names.write_text("astronaut\tEileen Collins, astronaut\ncat\tChelsea, a tabby cat\nrocket\tFalcon 9\n")
    res = runner.invoke(main, ["predict", "--checkpoint", os.fspath(run), "--direct", os.fspath(odd["direct"]),
                               "--class-names", os.fspath(names)])
    assert res.exit_code == 0 and "(direct)" in res.output and "%" in res.output
    assert "Eileen Collins, astronaut" in res.output and "Chelsea, a tabby cat" in res.output
    bad_names = tmp_path / "names.txt"
    bad_names.write_text("astronaut\n")
    res = runner.invoke(main, ["predict", "--checkpoint", os.fspath(run), os.fspath(files[0]),
                               "--class-names", os.fspath(bad_names)])
    assert res.exit_code == 1 and "names.txt" in res.output and "line 1" in res.output
    # a names file of another data set (no line names a class of the checkpoint): an error, not ignored
    other_names = tmp_path / "imagenet_names.txt"
    other_names.write_text("n01443537 goldfish, Carassius auratus\nn01629819 European fire salamander\n")
    res = runner.invoke(main, ["predict", "--checkpoint", os.fspath(run), os.fspath(files[0]),
                               "--class-names", os.fspath(other_names)])
    assert res.exit_code == 1 and "imagenet_names.txt" in res.output and "none of its 2 names" in res.output
    assert "astronaut" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["predict", "--checkpoint", os.fspath(run), os.fspath(odd["png"])])
    assert res.exit_code == 1 and "png_disguised.JPEG" in res.output and "PNG" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    # a bad image among good ones: the good ones are still predicted, the bad one is an Error line
    mixed = [files[0], odd["png"], tmp_path / "missing.jpg", files[1]]
    doc = predict(run / "last.pt", mixed, device="cpu")
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "eval.v1.schema.json").read_text()))
    assert [p["file"] for p in doc["predictions"]] == [os.fspath(files[0]), os.fspath(files[1])]
    assert [e["file"] for e in doc["errors"]] == [os.fspath(mixed[1]), os.fspath(mixed[2])]
    assert "PNG" in doc["errors"][0]["reason"]
    res = runner.invoke(main, ["predict", "--checkpoint", os.fspath(run), *map(os.fspath, mixed)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.count("(val-transform)") == 2 and f"Error: {mixed[2]}:" in res.output


# ------------------------------------------------------------------ refusals, without tracebacks


def test_cli_refuses_bad_runs_with_clear_errors(tiny, tmp_path):
    from click.testing import CliRunner

    from jdct_cli.cli import main

    store, _ = tiny
    runner = CliRunner()

    def fails(args, *needles):
        res = runner.invoke(main, args)
        assert res.exit_code != 0 and isinstance(res.exception, SystemExit), res.output
        for needle in needles:
            assert needle in res.output, res.output

    fails(["train", "--data", os.fspath(store)], "--arch")
    fails(["train", "--arch", "no_such_net", "--data", os.fspath(store), "--out", os.fspath(tmp_path / "x")],
          "unknown model 'no_such_net'", "upsampling_rfa")
    fails(["train", "--arch", "upsampling", "--data", os.fspath(tmp_path / "missing.zarr"),
           "--out", os.fspath(tmp_path / "x")], "missing.zarr", "no such store")
    fails(["train", "--resume", os.fspath(tmp_path)], "nothing to resume")
    bad = tmp_path / "bad.yaml"
    bad.write_text("arch: upsampling\nlearning_rate: 0.1\n")
    fails(["train", "--config", os.fspath(bad)], "bad.yaml", "unknown option 'learning_rate'")
    fails(["train", "--arch", "upsampling", "--data", os.fspath(store), "--batch-size", "100",
           "--out", os.fspath(tmp_path / "y"), "--device", "cpu"], "fewer than one batch", "--batch-size")
    fails(["eval", "--checkpoint", os.fspath(GOLDEN), "--data", os.fspath(store)], "golden_linear")
    fails(["eval", "--checkpoint", os.fspath(tmp_path / "none.pt"), "--data", os.fspath(store)], "no such checkpoint")


def test_dct_ortho_penalty_is_added_to_the_training_loss(tiny, tmp_path):
    """With lr 0 the first step's reported loss must be cross-entropy + the model's penalty on the
    very batch the loader gives, recomputed here from a freshly seeded model."""
    from jdct_cli.data import DCTLoader
    from jdct_cli.models import create_model

    store, _ = tiny
    events = []
    train(_cfg(store, tmp_path / "ortho", arch="dct_ortho", lr=0.0, batch_size=12), progress=events.append)
    first = next(e for e in events if e["event"] == "step")
    torch.manual_seed(0)
    model = create_model("dct_ortho", 2)
    model.train()
    loader = DCTLoader(store, "train", batch_size=12, shuffle=True, seed=0, flip=True, drop_last=True,
                       output="ycbcr", threads=1)
    x, labels = next(iter(loader))
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(model(x), labels)
        penalty = model.regularization_loss()
    assert penalty is not None and float(penalty) > 0
    assert first["loss"] == pytest.approx(float(ce + penalty), rel=1e-5)
    assert first["loss"] > float(ce) + 0.5 * float(penalty)


def test_tensorboard_scalars_when_tensorboard_is_installed(tiny, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is optional and not installed here")
    store, _ = tiny
    run = tmp_path / "tb"
    train(_cfg(store, run))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.fspath(run / "tb"))
    acc.Reload()
    (line,) = _metrics(run)
    assert acc.Scalars("val_top1")[0].value == pytest.approx(line["val_top1"])


def test_eval_on_another_store_normalizes_with_the_training_store_stats(tiny, tmp_path):
    """A checkpoint evaluated on a store converted from other images (other statistics): its inputs
    are standardized with the *training* store's statistics, as predict does. Reference: the model
    applied here, sample by sample, to model_inputs of the other store's coefficients."""
    import zarr

    from jdct_cli.convert import ConvertOptions, convert
    from jdct_cli.store import read_metadata

    store, _ = tiny
    # other crops of the same photographs (another seed), as a val split only
    src = make_photo_tree(tmp_path / "other", classes=2, val_per_class=4, seed=7, splits=("val",))
    other = tmp_path / "other.zarr"
    convert(src, other, options=ConvertOptions(size=32, quality=90, chunk_samples=8, shard_samples=16), workers=1)
    other_meta = read_metadata(other).meta
    assert other_meta["stats"]["y"]["std"] != read_metadata(store).meta["stats"]["y"]["std"]

    train(_cfg(store, tmp_path / "run", batch_size=12))
    res = evaluate(tmp_path / "run" / "last.pt", other, batch_size=3, device="cpu", threads=1)

    payload = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    from jdct_cli.models import create_model

    model = create_model(payload["arch"], payload["num_classes"])
    model.load_state_dict(payload["model"])
    model.eval()
    group = zarr.open_group(os.fspath(other), mode="r")
    qt = other_meta["quant_tables"]
    quant = np.array([qt["luma"], qt["chroma"], qt["chroma"]], dtype=np.uint16)
    labels = np.asarray(group["val/label"][0])
    losses, hits = [], []
    with torch.no_grad():
        for n in range(len(labels)):
            planes = [np.asarray(group[f"val/{p}"][0, n]) for p in ("y", "cb", "cr")]
            logits = model(*model_inputs(*planes, quant, "dct", payload["store"], "cpu"))
            target = torch.tensor([int(labels[n])])
            losses.append(float(torch.nn.functional.cross_entropy(logits, target)))
            hits.append(int(logits.argmax(1)) == int(labels[n]))
    assert res["samples"] == len(labels) == 8
    assert math.isclose(res["loss"], float(np.mean(losses)), rel_tol=1e-4), (res["loss"], np.mean(losses))
    assert res["top1"] == float(np.mean(hits))
