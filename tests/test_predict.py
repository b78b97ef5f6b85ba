"""`jdct predict` at throughput: reader threads ahead of batched inference, --direct grouped by
block-grid size, records in input order as they come, bad files as records, Ctrl-C.

Everything runs on real JPEGs made at test time (tests/photos.py, tests/inferfixture.py) and a
tiny store converted by the real `jdct convert`, so it needs nothing outside the repository; the
last test adds ../shared's imagenette when it is there.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from jdct_cli.cli import main
from jdct_cli.errors import ConfigError, Interrupted
from jdct_cli.evaluate import model_inputs
from jdct_cli.predict import (InputError, Predictor, _direct_coefficients, _val_coefficients, expand_inputs,
                              iter_predictions, predict, predict_records)

from conftest import REPO
from inferfixture import direct_jpegs, make_checkpoint
from trainfixture import make_tiny_store

RECORD_SCHEMA = json.loads((REPO / "schemas" / "predict-record.v1.schema.json").read_text())
EVAL_SCHEMA = json.loads((REPO / "schemas" / "eval.v1.schema.json").read_text())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(store, source tree, checkpoint of late_concat_rfa_thinner, checkpoint of resnet50_rgb)."""
    root = tmp_path_factory.mktemp("predict")
    store, src = make_tiny_store(root)
    dct = make_checkpoint(root / "thinner.pt", store, "late_concat_rfa_thinner")
    rgb = make_checkpoint(root / "rgb.pt", store, "resnet50_rgb", seed=1)
    return store, src, dct, rgb


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return direct_jpegs(tmp_path_factory.mktemp("direct"))


def _reference(ckpt_path, files, direct: bool):
    """Each file on its own, the straightforward way: its coefficients (own for --direct when it is
    4:2:0 with sides multiple of 16, else the val transform), model_inputs, one forward pass."""
    pred = Predictor.from_checkpoint(ckpt_path, device="cpu", top_k=2)
    out = []
    for f in files:
        data = Path(f).read_bytes()
        from jdct_cli import jpeg

        h = jpeg.read_header(data)
        own = (direct and h["num_components"] == 3 and [(c["h"], c["v"]) for c in h["components"]] ==
               [(2, 2), (1, 1), (1, 1)] and h["width"] % 16 == 0 and h["height"] % 16 == 0)
        y, cb, cr, q = _direct_coefficients(data, f) if own else _val_coefficients(data, f, pred.store)
        with torch.no_grad():
            logits = pred.model(*model_inputs(y, cb, cr, q, pred.kind, pred.store, "cpu"))
        out.append(("direct" if own else "val-transform", torch.softmax(logits, 1)[0]))
    return out


# ------------------------------------------------------------------ batching changes nothing


def test_batched_records_equal_batch_one_and_the_one_by_one_reference(tiny, jpegs):
    """Whatever the batch size and thread count, every file gets the same record (same top-1 label,
    probabilities within float rounding), and each equals the network run on that file alone."""
    _, src, dct, _ = tiny
    files = sorted(map(str, (src / "val").rglob("*.jpg"))) + [str(p) for p in jpegs.values()]
    runs = {}
    for batch, threads in ((1, 1), (4, 3), (7, 2)):
        pred = Predictor.from_checkpoint(dct, device="cpu", direct=True, top_k=2)
        runs[batch] = list(iter_predictions(pred, files, batch_size=batch, threads=threads))
    ref = _reference(dct, files, direct=True)
    for b, records in runs.items():
        assert [r["file"] for r in records] == files, b  # input order
        for rec, (mode, probs) in zip(records, ref):
            assert rec["mode"] == mode, rec
            assert rec["top"][0]["index"] == runs[1][files.index(rec["file"])]["top"][0]["index"], (b, rec["file"])
            assert rec["top"][0]["index"] == int(probs.argmax())
            got = torch.tensor([t["probability"] for t in rec["top"]])
            want, _ = probs.sort(descending=True)
            assert torch.allclose(got, want[:2], atol=1e-5), (b, rec["file"], got, want)
    notes = {Path(r["file"]).name: r["note"] for r in runs[1]}
    assert "4:4:4" in notes["g_444.jpg"] and "not a multiple of 16" in notes["h_odd.jpg"]
    assert "GRAYSCALE" in notes["i_gray.jpg"] and notes["a_64x64.jpg"] is None
    # a sanity check on the fixture: the network does tell these images apart
    assert len({round(r["top"][0]["probability"], 4) for r in runs[1]}) > len(files) // 2


def test_direct_batches_hold_one_block_grid_size_each(tiny, jpegs):
    """--direct groups files by block-grid size: every forward pass sees one size, full batches
    where the sizes allow, and the 64x64 files (3 of them) share one pass at batch size 3."""
    _, _, dct, _ = tiny
    pred = Predictor.from_checkpoint(dct, device="cpu", direct=True)
    passes = []
    real_run = pred.run

    def spy(items):
        passes.append([(Path(it.file).name, it.key) for it in items])
        return real_run(items)

    pred.run = spy
    direct = [str(jpegs[k]) for k in ("a_64x64", "b_96x48", "c_64x64", "d_48x80", "e_64x64", "f_96x48")]
    records = list(iter_predictions(pred, direct, batch_size=3, threads=2))
    assert [r["mode"] for r in records] == ["direct"] * 6
    for batch in passes:
        assert len({key for _, key in batch}) == 1, batch
    sizes = {tuple(sorted(n for n, _ in batch)) for batch in passes}
    assert ("a_64x64.jpg", "c_64x64.jpg", "e_64x64.jpg") in sizes
    assert ("b_96x48.jpg", "f_96x48.jpg") in sizes and ("d_48x80.jpg",) in sizes
    assert len(passes) == 3
    # the block grid is the file's own: 64x64 pixels -> Y 8x8 blocks, chroma 4x4
    shapes = dict(batch[0] for batch in passes)
    assert shapes["a_64x64.jpg"] == ((64, 8, 8), (64, 4, 4), (64, 4, 4))
    assert shapes["b_96x48.jpg"] == ((64, 6, 12), (64, 3, 6), (64, 3, 6))


def test_records_stream_before_every_file_is_read(tiny):
    """The first records come out while most files are still unread: the readers run a bounded
    window ahead of the network (memory does not grow with the number of files)."""
    _, src, dct, _ = tiny
    files = sorted(map(str, (src / "train").rglob("*.jpg")))  # 24 files
    pred = Predictor.from_checkpoint(dct, device="cpu")
    prepared = []
    real_prepare = pred.prepare
    pred.prepare = lambda f: prepared.append(f) or real_prepare(f)
    it = iter_predictions(pred, files, batch_size=2, threads=1)
    first = next(it)
    assert first["file"] == files[0]
    assert len(prepared) <= 2 + 2 * 1 + 1 < len(files)
    rest = list(it)
    assert len(rest) == len(files) - 1 and len(prepared) == len(files)


def test_many_image_sizes_keep_the_waiting_samples_bounded(tiny, tmp_path):
    """With --direct and every file of a different size, no group ever fills: partial batches
    go (oldest first) once 2 x batch_size samples wait, so memory stays bounded and records flow."""
    from photos import photo_jpeg

    _, _, dct, _ = tiny
    files = [str(photo_jpeg(tmp_path / f"s{i}.jpg", "coffee", size=(32 + 16 * (i % 6), 32 + 16 * (i // 6))))
             for i in range(18)]
    pred = Predictor.from_checkpoint(dct, device="cpu", direct=True)
    live = {"prepared": 0, "run": 0, "max_waiting": 0}
    real_prepare, real_run = pred.prepare, pred.run

    def prepare(f):
        item = real_prepare(f)
        live["prepared"] += 1
        return item

    def run(items):
        live["max_waiting"] = max(live["max_waiting"], live["prepared"] - live["run"])
        live["run"] += len(items)
        return real_run(items)

    pred.prepare, pred.run = prepare, run
    records = list(iter_predictions(pred, files, batch_size=2, threads=1))
    assert [r["file"] for r in records] == files and all(r["mode"] == "direct" for r in records)
    # waiting in groups (2 x 2) + being read (batch 2 + 2 x 1 thread) + the one just taken
    assert live["max_waiting"] <= 4 + 4 + 1


# ------------------------------------------------------------------ inputs and bad files


def test_inputs_from_folders_globs_and_lists(tiny, tmp_path):
    _, src, _, _ = tiny
    val = src / "val"
    listed = expand_inputs([val])
    assert listed == sorted(map(str, val.rglob("*.jpg")), key=lambda p: Path(p).relative_to(val).as_posix())
    pattern = os.fspath(val / "*" / "*_00[01].jpg")
    assert expand_inputs([pattern]) == sorted(map(str, val.glob("*/*_00[01].jpg")))
    recursive = expand_inputs([os.fspath(src / "**" / "cat_000.jpg")])
    assert len(recursive) == 2 and all(p.endswith("cat_000.jpg") for p in recursive)
    empty = tmp_path / "empty"
    empty.mkdir()
    got = expand_inputs([tmp_path / "missing.jpg", empty, os.fspath(tmp_path / "*.png")], ["a.jpg", "", "b c.jpg"])
    assert got == [os.fspath(tmp_path / "missing.jpg"), InputError(os.fspath(empty), "no image files in this folder"),
                   InputError(os.fspath(tmp_path / "*.png"), "no file matches this pattern"), "a.jpg", "b c.jpg"]


def test_bad_files_are_records_in_their_place(tiny, tmp_path):
    """Not a JPEG, truncated, empty, missing, a folder without images: one error record each, in
    input order among the good ones, and never fatal."""
    from PIL import Image

    from photos import photo

    _, src, dct, _ = tiny
    good = sorted((src / "val").rglob("*.jpg"))[:3]
    png = tmp_path / "png.jpg"
    Image.fromarray(photo("coffee")).save(png, format="PNG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:200])
    empty_file = tmp_path / "empty.jpg"
    empty_file.write_bytes(b"")
    (tmp_path / "nothing").mkdir()
    entries = expand_inputs([good[0], png, truncated, good[1], empty_file, tmp_path / "missing.jpg",
                             tmp_path / "nothing", good[2]])
    _, records = predict_records(dct, entries, device="cpu", batch_size=2, threads=2)
    records = list(records)
    for rec in records:
        jsonschema.validate(rec, RECORD_SCHEMA)
    assert [Path(r["file"]).name for r in records] == [good[0].name, "png.jpg", "truncated.jpg", good[1].name,
                                                       "empty.jpg", "missing.jpg", "nothing", good[2].name]
    errors = {Path(r["file"]).name: r["error"] for r in records if "error" in r}
    assert "PNG" in errors["png.jpg"] and "empty" in errors["empty.jpg"]
    assert "truncated" in errors["truncated.jpg"] or "ends" in errors["truncated.jpg"]
    assert "no such file" in errors["missing.jpg"] and "no image files" in errors["nothing"]
    assert sum("top" in r for r in records) == 3


def test_direct_refuses_tiny_and_huge_images_with_reasons(tiny, tmp_path, monkeypatch):
    from jdct_cli import predict as predict_mod
    from photos import photo_jpeg

    _, _, dct, _ = tiny
    small = photo_jpeg(tmp_path / "small.jpg", size=(16, 48))
    big = photo_jpeg(tmp_path / "big.jpg", size=(128, 96))
    monkeypatch.setattr(predict_mod, "MAX_DIRECT_PIXELS", 100 * 100)
    doc = predict(dct, [small, big], direct=True, device="cpu")
    small_rec, big_rec = doc["predictions"]
    assert small_rec["mode"] == "val-transform" and "below 32 pixels" in small_rec["note"]
    assert big_rec["mode"] == "val-transform" and "128x96" in big_rec["note"] and "Mpixels" in big_rec["note"]


def test_bad_options_are_config_errors(tiny):
    _, src, dct, _ = tiny
    pred = Predictor.from_checkpoint(dct, device="cpu")
    with pytest.raises(ConfigError, match="batch size"):
        list(iter_predictions(pred, [], batch_size=0))
    with pytest.raises(ConfigError, match="threads"):
        list(iter_predictions(pred, [], threads=0))
    with pytest.raises(ConfigError, match="top-k"):
        Predictor.from_checkpoint(dct, device="cpu", top_k=0)


def test_should_stop_ends_with_interrupted_after_complete_records(tiny):
    _, src, dct, _ = tiny
    files = sorted(map(str, (src / "train").rglob("*.jpg")))
    pred = Predictor.from_checkpoint(dct, device="cpu")
    seen = []
    with pytest.raises(Interrupted, match=r"stopped after 3 of 24 images"):
        for rec in iter_predictions(pred, files, batch_size=1, threads=2, should_stop=lambda: len(seen) >= 3):
            seen.append(rec)
    assert [r["file"] for r in seen] == files[:3]


# ------------------------------------------------------------------ the command line


def test_cli_jsonl_json_and_text_agree(tiny, jpegs):
    _, src, dct, rgb = tiny
    files = [str(p) for p in sorted((src / "val").rglob("*.jpg"))[:4]] + [str(jpegs["a_64x64"]), str(jpegs["g_444"])]
    runner = CliRunner()
    res = runner.invoke(main, ["predict", "--checkpoint", str(dct), "--direct", "--jsonl", "--batch-size", "3",
                               "--threads", "2", "--device", "cpu", *files])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    for rec in lines:
        jsonschema.validate(rec, RECORD_SCHEMA)
    assert [r["file"] for r in lines] == files
    doc = json.loads(runner.invoke(main, ["predict", "--checkpoint", str(dct), "--direct", "--json", "--device",
                                          "cpu", *files]).stdout)
    jsonschema.validate(doc, EVAL_SCHEMA)
    assert doc["predictions"] == lines
    text = runner.invoke(main, ["predict", "--checkpoint", str(dct), "--direct", "--device", "cpu", *files]).stdout
    blocks = text.strip().split("\n\n")
    assert len(blocks) == len(files)
    for block, rec in zip(blocks, lines):
        head, *rest = block.splitlines()
        assert head == f"{rec['file']}  ({rec['mode']})"
        assert rest[:-len(rec["top"])] == ([] if rec["note"] is None else [f"  note: {rec['note']}"])
        assert rest[-len(rec["top"]):] == [f"  {r}. {100 * t['probability']:6.2f}%  {t['class']}"
                                           for r, t in enumerate(rec["top"], 1)]
    # --files-from - (standard input) and a folder give the same records for the same files
    listed = runner.invoke(main, ["predict", "--checkpoint", str(dct), "--direct", "--jsonl", "--device", "cpu",
                                  "--files-from", "-"], input="\n".join(files) + "\n")
    assert [json.loads(x) for x in listed.stdout.splitlines()] == lines
    res = runner.invoke(main, ["predict", "--checkpoint", str(dct), "--json", "--jsonl", files[0]])
    assert res.exit_code == 2 and "exclude each other" in res.output
    res = runner.invoke(main, ["predict", "--checkpoint", str(dct)])
    assert res.exit_code == 2 and "no images" in res.output
    # a pixel network takes the same files (its inputs rebuilt from the coefficients)
    res = runner.invoke(main, ["predict", "--checkpoint", str(rgb), "--direct", "--jsonl", "--device", "cpu", *files])
    assert res.exit_code == 0 and [json.loads(x)["mode"] for x in res.stdout.splitlines()] == [r["mode"] for r in lines]


def test_cli_errors_are_lines_and_exit_1(tiny, tmp_path):
    _, src, dct, _ = tiny
    good = str(sorted((src / "val").rglob("*.jpg"))[0])
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(dct), "--jsonl", "--device", "cpu", good,
                                    str(tmp_path / "gone.jpg"), os.fspath(tmp_path / "*.jpeg")])
    assert res.exit_code == 1
    records = [json.loads(x) for x in res.stdout.splitlines()]
    assert [("error" in r) for r in records] == [False, True, True]
    assert f"Error: {tmp_path / 'gone.jpg'}: " in res.stderr and "no file matches this pattern" in res.stderr


def test_ctrl_c_stops_with_exit_130_and_complete_json_lines(tiny, tmp_path):
    """SIGINT while predicting: exit code 130, one 'interrupted:' line on stderr, and stdout holds
    only complete JSON lines, in input order (a real process, a real signal)."""
    _, src, dct, _ = tiny
    one = sorted((src / "val").rglob("*.jpg"))[0].read_bytes()
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3000):
        (folder / f"{i:05d}.jpg").write_bytes(one)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "jdct_cli", "predict", "--checkpoint", str(dct), "--jsonl",
                             "--device", "cpu", "--batch-size", "2", "--threads", "1", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        first = proc.stdout.readline()  # the first record: predicting has started
        assert first, proc.stderr.read().decode()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    lines = (first + out).decode().splitlines()
    assert 1 <= len(lines) < 3000
    for i, line in enumerate(lines):
        rec = json.loads(line)  # every line complete
        assert Path(rec["file"]).name == f"{i:05d}.jpg"
    assert [x for x in err.decode().splitlines() if x.strip()][-1].startswith("interrupted: stopped after")
    assert "Traceback" not in err.decode()


def test_golden_records_validate_and_schema_is_versioned():
    from jdct_cli.predict import RECORD_FORMAT_VERSION

    jsonschema.Draft202012Validator.check_schema(RECORD_SCHEMA)
    assert RECORD_FORMAT_VERSION == 1 and RECORD_SCHEMA["$id"].endswith("predict-record.v1.schema.json")
    golden = (REPO / "tests" / "golden" / "predict-record.v1.jsonl").read_text().splitlines()
    kinds = set()
    for line in golden:
        rec = json.loads(line)
        jsonschema.validate(rec, RECORD_SCHEMA)
        kinds.add("error" if "error" in rec else rec["mode"])
    assert kinds == {"direct", "val-transform", "error"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"file": "x.jpg", "mode": "direct", "note": None, "top": []}, RECORD_SCHEMA)


# ------------------------------------------------------------------ real data


@pytest.mark.slow
def test_224_direct_labels_identical_batched_and_one_by_one(tmp_path):
    """224x224 4:2:0 JPEGs through the UpSampling network at batch 1 and batch 16: the same top-1
    label for every file. With ../shared: 40 imagenette val files (q75; the grayscale ones fall
    back); without it: 24 crops of scikit-image's photographs encoded the same way."""
    from conftest import HAVE_SHARED, SHARED_DATA
    from photos import PHOTOS

    store, _ = make_tiny_store(tmp_path)
    ck = make_checkpoint(tmp_path / "ups.pt", store, "upsampling", classes=[f"c{i}" for i in range(10)])
    if HAVE_SHARED and (SHARED_DATA / "imagenette-5k").is_dir():
        files = sorted(map(str, (SHARED_DATA / "imagenette-5k" / "val").rglob("*.JPEG")))[::25][:40]
    else:
        from PIL import Image

        from photos import photo

        files = []
        for i in range(24):
            img = photo(PHOTOS[i % len(PHOTOS)][1])
            h, w = img.shape[:2]
            side = min(h, w) * (4 + i % 3) // 6
            y0, x0 = (h - side) * (i % 5) // 4, (w - side) * (i % 3) // 2
            path = tmp_path / f"crop_{i:02d}.jpg"
            Image.fromarray(img[y0:y0 + side, x0:x0 + side]).resize((224, 224)).save(path, quality=75, subsampling=2)
            files.append(str(path))
    labels = {}
    for batch in (1, 16):
        pred = Predictor.from_checkpoint(ck, device="cpu", direct=True, top_k=1)
        recs = list(iter_predictions(pred, files, batch_size=batch, threads=2))
        labels[batch] = [r["top"][0]["index"] for r in recs]
        probs = [r["top"][0]["probability"] for r in recs]
        modes = [r["mode"] for r in recs]
    assert labels[1] == labels[16]
    assert modes.count("direct") >= 0.75 * len(files)
    assert len({round(p, 5) for p in probs}) > len(files) // 2  # the network's outputs depend on the image
