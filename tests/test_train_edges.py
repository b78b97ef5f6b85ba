"""The rough edges a new user hits in train / eval / predict / export (issue 11), each reproduced.

Runs on the tiny real store of tests/trainfixture.py (real JPEGs made at test time), on the CPU.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from jdct_cli import checkpoint as ckpt
from jdct_cli.cli import main
from jdct_cli.config import build_config
from jdct_cli.errors import CheckpointError, ConfigError, Interrupted, NoSpaceError
from jdct_cli.evaluate import evaluate, predict
from jdct_cli.train import train

from conftest import REPO, torch_threads
from trainfixture import CLASSES, make_tiny_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def train_only(tmp_path_factory):
    """A store of the documented SRC/<class>/* layout: one split, train."""
    return make_tiny_store(tmp_path_factory.mktemp("train-only"), splits=("train",))[0]


@pytest.fixture(scope="module")
def finished_run(tiny, tmp_path_factory):
    """A complete 1-epoch run of late_concat_rfa_thinner on the tiny store (RUN_DIR)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    with torch_threads(1):
        train(_cfg(tiny[0], run))
    return run


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(store, out, **kw):
    base = dict(arch="late_concat_rfa_thinner", data=os.fspath(store), out=os.fspath(out), epochs=1, batch_size=12,
                threads=1, device="cpu")
    base.update(kw)
    return build_config(**base)


def _invoke(*args):
    return CliRunner().invoke(main, [os.fspath(a) for a in args])


# ------------------------------------------------------------------ 1. a store with only a train split


def test_train_only_store_trains_without_validation_when_asked(train_only, tmp_path):
    res = _invoke("train", "--arch", "upsampling", "--data", train_only, "--out", tmp_path / "x", "--epochs", "1",
                  "--batch-size", "12", "--device", "cpu", "--threads", "1")
    assert res.exit_code == 1 and "no split 'val'" in res.output and "--val-split none" in res.output
    assert "Traceback" not in res.output
    run = tmp_path / "run"
    res = _invoke("train", "--arch", "upsampling", "--data", train_only, "--out", run, "--epochs", "2",
                  "--batch-size", "12", "--device", "cpu", "--threads", "1", "--val-split", "none")
    assert res.exit_code == 0, res.output
    assert "no validation" in res.output and "val loss" not in res.output
    assert "done: 2 epochs, 4 steps" in res.output
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        assert (m["val_loss"], m["val_top1"], m["val_top5"], m["val_samples"]) == (None, None, None, 0)
        assert math.isfinite(m["train_loss"])
    assert json.loads((run / "config.json").read_text())["val_split"] is None
    assert (run / "last.pt").is_file() and not (run / "best.pt").exists()  # no best without validation
    payload = ckpt.load_checkpoint(run / "last.pt")
    ckpt.validate_json_part(payload)
    assert payload["best_top1"] is None and payload["epoch"] == 2


# ------------------------------------------------------------------ 2. resume from another folder, moved store


def test_resume_works_from_another_folder_and_with_a_moved_store(tiny, tmp_path, monkeypatch):
    store, _ = tiny
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(store, work / "tiny.zarr")
    monkeypatch.chdir(work)

    def stop_after_first_step(ev):
        if ev["event"] == "step" and ev["step"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    # relative --data and --out, as a user types them
    first = train(_cfg("tiny.zarr", "runs/a", epochs=2), progress=stop_after_first_step)
    assert first.interrupted and first.steps == 1
    config = json.loads((work / "runs" / "a" / "config.json").read_text())
    assert config["data"] == os.fspath(work / "tiny.zarr") and config["out"] == os.fspath(work / "runs" / "a")

    # the store moves and the user works from another folder
    shutil.move(work / "tiny.zarr", tmp_path / "moved.zarr")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = _invoke("train", "--resume", "../work/runs/a", "--threads", "1", "-q")
    assert res.exit_code == 1 and "not there any more" in res.output and "--data" in res.output
    res = _invoke("train", "--resume", "../work/runs/a", "--data", "../moved.zarr", "--threads", "1", "-q")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (work / "runs" / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and lines[-1]["step"] == 4
    assert json.loads((work / "runs" / "a" / "config.json").read_text())["data"] == os.fspath(tmp_path / "moved.zarr")

    # eval finds the store the checkpoint now names, and says what to do when it has gone
    res = _invoke("eval", "--checkpoint", "../work/runs/a", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["samples"] == 11
    shutil.move(tmp_path / "moved.zarr", tmp_path / "again.zarr")
    res = _invoke("eval", "--checkpoint", "../work/runs/a")
    assert res.exit_code == 1 and "not there any more" in res.output and "--data" in res.output
    res = _invoke("eval", "--checkpoint", "../work/runs/a", "--data", "../again.zarr", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["samples"] == 11


# ------------------------------------------------------------------ 5. one interrupt policy for every command


@pytest.mark.parametrize("command, target", [
    (["inspect", "x.jpg"], "jdct_cli.inspect_jpeg.inspect_paths"),
    (["convert", "SRC", "OUT.zarr"], "jdct_cli.convert.convert"),
    (["verify", "OUT.zarr"], "jdct_cli.store.report.verify_store"),
    (["models"], "jdct_cli.models.cost.zoo_document"),
    (["train", "--arch", "upsampling", "--data", "d.zarr"], "jdct_cli.train.train"),
    (["eval", "--checkpoint", "c.pt"], "jdct_cli.evaluate.evaluate"),
    (["predict", "--checkpoint", "c.pt", "a.jpg"], "jdct_cli.predict.predict_records"),
    (["export", "c.pt", "out.pt"], "jdct_cli.checkpoint.export_weights"),
])
def test_ctrl_c_in_any_command_is_exit_130_and_one_line(command, target, tmp_path, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(__import__(module, fromlist=[name]), name, interrupted)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "SRC").mkdir()
    res = CliRunner().invoke(main, command)
    assert res.exit_code == 130, (res.output, res.exception)
    lines = res.output.strip().splitlines()
    assert lines == [f"interrupted: jdct {command[0]} stopped by Ctrl-C"], res.output
    assert "Aborted" not in res.output and "Traceback" not in res.output


def test_library_interrupted_error_is_exit_130_with_its_message(monkeypatch, tmp_path):
    """convert's library raises Interrupted (saying what it kept): the CLI shows it, exit 130."""
    def interrupted(*_args, **_kwargs):
        raise Interrupted("3 of 8 shards done; run the same command again to resume", "OUT.zarr")

    monkeypatch.setattr("jdct_cli.convert.convert", interrupted)
    (tmp_path / "SRC").mkdir()
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["convert", "SRC", "OUT.zarr"])
    assert res.exit_code == 130
    assert res.output.strip() == "interrupted: OUT.zarr: 3 of 8 shards done; run the same command again to resume"


def test_real_ctrl_c_in_a_command_without_its_own_handling(tmp_path):
    """A real SIGINT to `jdct models` (seconds of counting): exit 130, one line, no traceback."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys, time, jdct_cli.models; from jdct_cli.cli import main; "
                             "print('ready', flush=True); sys.exit(main(['models', '--size', '448']))"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # inside the command (counting the zoo takes seconds), past click's parsing
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: jdct models stopped by Ctrl-C", err
    assert "Traceback" not in err and "Aborted" not in err


# ------------------------------------------------------------------ 6. weights-only export, disk space


def test_weights_only_export_is_half_the_size_and_gives_the_same_results(tiny, finished_run, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    store, src = tiny
    out = tmp_path / "shared.pt"
    res = _invoke("export", finished_run / "last.pt", out)
    assert res.exit_code == 0, res.output
    assert "weights only" in res.output and "MB" in res.output
    full, light = (finished_run / "last.pt").stat().st_size, out.stat().st_size
    assert light < 0.55 * full, (light, full)  # no momentum buffers, loader or RNG state
    raw = torch.load(out, weights_only=True)
    assert raw["weights_only"] is True
    assert not {"optimizer", "scaler", "loader", "rng", "mid_epoch", "epoch_sums", "scheduler"} & set(raw)
    ckpt.validate_json_part(raw, out)
    payload = ckpt.load_checkpoint(finished_run / "last.pt")
    for name, value in payload["model"].items():
        assert torch.equal(raw["model"][name], value), name
    # the schema tells the two apart: a training checkpoint without its resume state is invalid
    with pytest.raises(CheckpointError, match="schema"):
        ckpt.validate_json_part({k: v for k, v in payload.items() if k != "scheduler"})
    assert jsonschema is not None

    a = evaluate(finished_run / "last.pt", store, device="cpu", threads=1)
    b = evaluate(out, device="cpu", threads=1)  # the store comes from the export's own facts
    assert (a["loss"], a["top1"], a["samples"]) == (b["loss"], b["top1"], b["samples"])
    image = sorted((src / "val" / CLASSES[0]).iterdir())[0]
    pa = predict(finished_run / "last.pt", [image], device="cpu")["predictions"]
    pb = predict(out, [image], device="cpu")["predictions"]
    assert pa == pb
    with pytest.raises(CheckpointError, match="weights-only export"):
        train(None, resume=_run_dir_with(out, tmp_path / "resumed"))
    res = _invoke("export", finished_run / "last.pt", finished_run / "last.pt")
    assert res.exit_code == 1 and "overwrite its source" in res.output


def _run_dir_with(checkpoint: Path, run: Path) -> Path:
    run.mkdir()
    shutil.copy(checkpoint, run / "last.pt")
    return run


def test_a_disk_without_room_for_a_checkpoint_stops_the_run_before_training(tiny, tmp_path, monkeypatch):
    store, _ = tiny
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=50_000_000))
    events = []
    with pytest.raises(NoSpaceError) as err:
        train(_cfg(store, tmp_path / "run"), progress=events.append)
    assert "needs about" in str(err.value) and "50 MB are free" in str(err.value)
    assert not [e for e in events if e["event"] == "step"]  # refused before any work is done
    res = _invoke("train", "--arch", "late_concat_rfa_thinner", "--data", store, "--out", tmp_path / "cli",
                  "--device", "cpu", "--threads", "1", "--epochs", "1", "--batch-size", "12")
    assert res.exit_code == 1 and "not enough free space" in res.output and "Traceback" not in res.output


def test_a_full_disk_while_saving_keeps_the_last_checkpoint(tiny, tmp_path, monkeypatch):
    """The disk fills up while epoch 2's checkpoint is written: a clear error, epoch 1's last.pt intact
    and resumable, no temporary file left."""
    import errno

    store, _ = tiny
    run = tmp_path / "run"
    saved = []
    real_save = torch.save

    def filling_save(obj, fh, *args, **kwargs):
        if saved:
            fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(1)
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", filling_save)
    with pytest.raises(NoSpaceError, match="previous one is intact"):
        train(_cfg(store, run, epochs=2))
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in run.iterdir() if p.name != "tb") == ["best.pt", "config.json", "last.pt",
                                                                       "metrics.jsonl"]
    assert ckpt.load_checkpoint(run / "last.pt")["epoch"] == 1
    result = train(None, resume=run)
    assert result.epochs_done == 2


def test_start_line_says_how_big_checkpoints_are(tiny, tmp_path):
    store, _ = tiny
    run = tmp_path / "run"
    res = _invoke("train", "--arch", "late_concat_rfa_thinner", "--data", store, "--out", run, "--device", "cpu",
                  "--threads", "1", "--epochs", "1", "--batch-size", "12")
    assert res.exit_code == 0, res.output
    start = res.output.splitlines()[0]
    size_mb = float(start.split("checkpoints ~")[1].split(" MB")[0])
    assert size_mb == pytest.approx((run / "last.pt").stat().st_size / 1e6, rel=0.02)


# ------------------------------------------------------------------ 7. eval, class names, messages


def test_eval_defaults_to_the_training_store(tiny, finished_run):
    store, _ = tiny
    res = _invoke("eval", "--checkpoint", finished_run / "best.pt", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["data"] == os.path.abspath(store) and doc["samples"] == 11 and doc["top5"] is None
    line = json.loads((finished_run / "metrics.jsonl").read_text())
    assert doc["top1"] == line["val_top1"]
    res = _invoke("eval", "--checkpoint", finished_run)
    assert res.exit_code == 0 and "top-1" in res.output and "top-5" not in res.output  # 2 classes


def test_a_finished_run_resumed_says_there_is_nothing_to_do(finished_run):
    before = (finished_run / "last.pt").stat().st_mtime_ns
    res = _invoke("train", "--resume", finished_run, "--threads", "1")
    assert res.exit_code == 0, res.output
    assert "epoch 2/1" not in res.output and "nothing to do: the run is already complete (1/1 epochs" in res.output
    assert (finished_run / "last.pt").stat().st_mtime_ns == before  # untouched


def test_messages_name_cli_flags_and_count_properly(tiny, tmp_path):
    store, _ = tiny
    res = _invoke("train", "--arch", "upsampling", "--data", store, "--batch-size", "30", "--out", tmp_path / "y",
                  "--device", "cpu")
    assert res.exit_code == 1 and "--batch-size" in res.output and "drop_last" not in res.output
    assert "24 usable samples" in res.output and "at most 24" in res.output
    res = _invoke("train", "--arch", "late_concat_rfa_thiner", "--data", store, "--out", tmp_path / "z")
    assert res.exit_code == 1 and "did you mean 'late_concat_rfa_thinner'" in res.output
    with pytest.raises(ConfigError, match="--val-split none"):
        train(_cfg(store, tmp_path / "w", val_split="validation"))


def test_classifier_learns_at_its_own_rate(tiny, tmp_path):
    """The classifier's parameters form their own optimizer group at min(1, classes/1000) of the LR
    (2 classes: 0.002), recorded in config.json; the schedule scales both groups alike."""
    store, _ = tiny
    events = []
    train(_cfg(store, tmp_path / "run", warmup_epochs=0.5), progress=events.append)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["head_lr_scale"] == pytest.approx(0.002)
    payload = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    body, head = payload["optimizer"]["param_groups"]
    assert (body["lr_scale"], head["lr_scale"]) == (1.0, pytest.approx(0.002))
    assert head["lr"] == pytest.approx(0.002 * body["lr"])
    from jdct_cli.models import create_model

    model = create_model("late_concat_rfa_thinner", 2)
    assert len(head["params"]) == len(model.classifier_parameters()) == 2  # fc weight and bias
    assert len(body["params"]) + 2 == len(list(model.parameters()))
