"""The prepared GPU run (benchmarks/gpu/) keeps working where no GPU is, so that it runs at once,
unattended, whenever one is lent.

- ``run.sh --dry-run`` runs every section's code on the CPU at tiny sizes: its report must have
  every section, with numbers that are numbers (and that agree with their own definitions);
- the CUDA tests run with the CPU standing in for the GPU (``JDCT_CUDA_TESTS_DEVICE=cpu``), so
  that an API they use cannot change under them unnoticed;
- the report's arithmetic (rank correlations, ordering verdicts, epoch fitting, JUnit parsing) is
  checked against independent references (scipy, hand-made cases).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from jdct_cli.data import LAYOUTS

GPU = REPO / "benchmarks" / "gpu"
SECTIONS = ["setup", "cuda_tests", "inference", "predict", "loader", "device_augment", "training"]


def _load(name: str):
    """benchmarks/gpu/<name>.py as a module (they are scripts, not a package)."""
    path = list(sys.path)
    spec = importlib.util.spec_from_file_location(f"gpu_run_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path  # suite.py puts its folder first on the path when imported
    return module


report = _load("report")
suite = _load("suite")


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# ------------------------------------------------------------------ the dry run, end to end


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-dry-run")
    out = root / "out"
    env = dict(os.environ, JDCT_PYTHON=sys.executable)
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(GPU / "run.sh"), "--dry-run", "--out", str(out), "--work", str(root / "work")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return proc, out


@pytest.mark.slow
def test_dry_run_reports_every_section_with_valid_numbers(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    # what the device tool brings back: at most 8 plain files, plainly named, none over 16 MiB
    files = sorted(p.name for p in out.iterdir())
    assert {"report.json", "report.md", "log.txt"} <= set(files) <= {"report.json", "report.md", "report.png", "log.txt"}
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) and (out / f).stat().st_size < 16 << 20 for f in files)
    if "report.png" in files:
        assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rep = json.loads((out / "report.json").read_text())
    assert rep["format"] == "jdct-gpu-report" and rep["dry_run"] is True
    assert rep["budget_s"] <= 120  # the dry run is planned to fit two minutes
    assert list(rep["sections"]) == SECTIONS
    sec = rep["sections"]
    assert {s: sec[s]["status"] for s in SECTIONS} == {"setup": "ok", "cuda_tests": "skipped", "inference": "ok",
                                                       "predict": "ok", "loader": "ok", "device_augment": "ok", "training": "ok"}
    for s in SECTIONS:
        assert 0 <= sec[s]["seconds"] <= sec[s]["box_s"] + 30

    # 1. every test of tests/test_cuda.py collected and skipped (no GPU here), none failed
    counts = sec["cuda_tests"]["counts"]
    assert counts["skipped"] >= 7 and counts["passed"] == counts["failed"] == counts["error"] == 0
    assert any("test_bf16_channels_last_training_step_of_every_network" in t["test"] for t in sec["cuda_tests"]["tests"])

    # 2. the networks timed, ratios that are their own definition, the paper's ratios from the zoo
    inf = sec["inference"]
    models = rep["models"]
    names = [n["name"] for n in inf["networks"]]
    assert names == list(suite.DRY_INFERENCE_MODELS)
    ref = inf["networks"][0]
    assert ref["name"] == "resnet50_rgb" and ref["ratio"] == 1.0 and ref["with_copy_ratio"] == 1.0
    for n in inf["networks"]:
        assert _finite_positive(n["images_per_s"]) and _finite_positive(n["with_copy_images_per_s"])
        assert math.isclose(n["ratio"], n["images_per_s"] / ref["images_per_s"])
        assert _finite_positive(n["gmacs"]) and n["gmacs"] == models[n["name"]]["gmacs"]
        paper = models[n["name"]]["paper_fps"]
        assert n["paper_ratio"] == (None if paper is None else pytest.approx(paper / 208))
    batch, size = inf["batch"], inf["size"]
    copies = {c["what"]: c for c in inf["copies"]}
    # in 4:2:0 the int16 coefficients of a crop are exactly as many bytes as its uint8 pixels
    assert copies["uint8_pixels"]["bytes"] == copies["int16_coefficients"]["bytes"] == batch * size * size * 3
    assert copies["float32_pixels"]["bytes"] == 4 * batch * size * size * 3

    # 2b. predict from files: the three pipelines, ratios that are their own definition, labels kept
    rows = {r["network"]: r for r in sec["predict"]["rows"]}
    assert list(rows) == ["late_concat_rfa_thinner", "upsampling", "resnet50_rgb"]
    for r in rows.values():
        assert _finite_positive(r["images_per_s"]) and r["images"] == 6 and r["device"] == "cpu"
        assert math.isclose(r["vs_resnet50_rgb_pillow"], r["images_per_s"] / rows["resnet50_rgb"]["images_per_s"],
                            rel_tol=0.01)
        assert r["batch1_labels_identical"] == "3/3" and sum(r["modes"].values()) == 6

    # 3. the loader at every thread count; what cannot run here says why
    rows = sec["loader"]["rows"]
    dct = [r for r in rows if r["mode"] == "dct" and r["output"] == "dct"]
    layouts = ["crops", "images"] if "images" in LAYOUTS else ["crops"]
    for layout in layouts:  # every layout the loader reads, at every thread count
        assert sorted(r["threads"] for r in dct if r["layout"] == layout) == [1, 2], layout
    assert sorted({r["layout"] for r in dct}) == layouts
    assert all(_finite_positive(r["per_s"]) and r["samples"] > 0 and r["device"] == "cpu" for r in dct)
    assert any(r["mode"] == "dct" and r["output"] == "rgb" and _finite_positive(r["per_s"]) for r in rows)
    nvjpeg = [r for r in rows if r["mode"] == "nvjpeg"]
    assert nvjpeg and all("CUDA" in r["skipped"] for r in nvjpeg)
    for r in (r for r in rows if r["mode"] == "torchvision"):
        assert _finite_positive(r.get("per_s")) or "torchvision" in r.get("skipped", ""), r

    # 4. the device augmentation timed beside the CPU recipe (benchmarks/device_augment.py)
    aug = sec["device_augment"]
    device_rows = [r for r in aug["rows"] if r["pipeline"] == "device"]
    assert [r["batch"] for r in device_rows] == list(suite.DRY.augment_batches)
    for r in device_rows:
        assert _finite_positive(r["per_s"]) and r["samples"] >= r["batch"] and r["size"] == suite.DRY.size
        assert math.isclose(r["ratio"], r["per_s"] / next(x for x in aug["rows"] if x["pipeline"] == "reference")["per_s"])
    assert aug["best_per_s"] == max(r["per_s"] for r in device_rows) and aug["target_per_s"] is None

    # 5. each network trained its epoch through `jdct train`; the orderings judged
    tr = sec["training"]
    crops_runs = [(a, "crops") for a in suite.DRY.train_archs]
    images_runs = [(suite.DRY.train_archs[1], "images")] if "images" in LAYOUTS else []
    assert [(r["arch"], r["layout"]) for r in tr["runs"]] == crops_runs + images_runs
    for r in tr["runs"]:
        assert r["status"] == "ok" and r["epochs_done"] == r["epochs_planned"] == 1
        assert 0.0 <= r["final_val_top1"] <= 1.0 and r["val_samples"] == tr["val_images"] == 16
        assert _finite_positive(r["train_images_per_s"]) and math.isfinite(r["history"][0]["train_loss"])
    assert tr["runs"][0]["speed_ratio"] == 1.0
    verdicts = {(v["better"], v["worse"]): v["verdict"] for v in tr["issue_order"]}
    assert verdicts[("late_concat_rfa_thinner", "resnet50_rgb")].split(" (")[0] in ("holds", "reversed")
    assert verdicts[("upsampling_rfa", "resnet50_rgb")] == "not measured"

    md = (out / "report.md").read_text()
    for heading in ("## Set-up", "## 1. `pytest -m cuda`", "## 2. Inference", "## 3. Loader", "## 4. Device augmentation",
                    "## 5. Training"):
        assert heading in md
    assert f"| resnet50_rgb | rgb | {ref['gmacs']:.2f} | {ref['images_per_s']:.0f} | 1.00 |" in md
    assert "== jdct GPU run summary ==" in proc.stdout


@pytest.mark.slow
def test_cuda_tests_pass_with_the_cpu_standing_in(tmp_path):
    env = dict(os.environ, JDCT_CUDA_TESTS_DEVICE="cpu", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-q", "-p",
                           "no:cacheprovider", f"--basetemp={tmp_path / 'pytest'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:]
    summary = proc.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 4 and "failed" not in summary and "error" not in summary, summary


# ------------------------------------------------------------------ the report's arithmetic


def test_rank_correlations_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (3, 5, 12):
        x = rng.normal(size=n)
        y = x + rng.normal(scale=0.7, size=n)
        y[0] = y[1]  # a tie: average ranks
        pairs = list(zip(x.tolist(), y.tolist()))
        assert report.spearman(pairs) == pytest.approx(stats.spearmanr(x, y).statistic)
        x2 = rng.permutation(n).astype(float)
        y2 = rng.permutation(n).astype(float)
        assert report.kendall(list(zip(x2, y2))) == pytest.approx(stats.kendalltau(x2, y2).statistic)


def test_ordering_verdicts_weigh_the_sampling_noise():
    n = 1000
    top1 = {"a": 0.80, "b": 0.70, "c": 0.79}
    clear = report._relation("a", ">=", "b", top1, n)
    assert clear["verdict"] == "holds"
    assert clear["two_se"] == pytest.approx(2 * math.sqrt(0.8 * 0.2 / n + 0.7 * 0.3 / n))
    assert report._relation("b", ">=", "a", top1, n)["verdict"] == "reversed"
    assert report._relation("c", ">=", "a", top1, n)["verdict"] == "reversed (within noise)"
    assert report._relation("a", ">", "a", top1, n)["verdict"] == "reversed (within noise)"  # strict: equal fails
    assert report._relation("a", ">=", "z", top1, n)["verdict"] == "not measured"

    rows = [{"arch": a, "layout": "crops", "epochs_done": 3, "epochs_planned": 3, "final_val_top1": t,
             "val_samples": n, "train_images_per_s": s}
            for a, t, s in (("resnet50_rgb", 0.70, 100.0), ("upsampling_rfa", 0.75, 80.0),
                            ("late_concat_rfa_thinner", 0.69, 150.0), ("downsampling", 0.60, 170.0))]
    models = {"resnet50_rgb": {"paper_top1_error": 24.22}, "upsampling_rfa": {"paper_top1_error": 24.06},
              "late_concat_rfa_thinner": {"paper_top1_error": 24.61}, "downsampling": {"paper_top1_error": 27.0}}
    out = report.summarize_training(rows, models, n)
    assert [r["speed_ratio"] for r in rows] == [1.0, 0.8, 1.5, 1.7]
    assert [v["verdict"] for v in out["issue_order"]] == ["holds", "reversed (within noise)", "holds"]
    assert out["measured_order"] == ["upsampling_rfa", "resnet50_rgb", "late_concat_rfa_thinner", "downsampling"]
    assert out["kendall_tau_vs_paper"] == 1.0  # the paper's order exactly
    assert len(out["paper_order"]) == 6 and all(v["verdict"].startswith("holds") for v in out["paper_order"])
    # a run cut short is not compared
    rows[1]["epochs_done"] = 2
    out = report.summarize_training(rows, models, n)
    assert out["issue_order"][0]["verdict"] == "not measured"


def test_inference_summary_ratios_and_paper_ratios():
    records = [{"kind": "start", "device_name": "X", "batch": 4, "size": 32},
               {"kind": "copy", "what": "uint8_pixels", "bytes": 12, "median_s": 0.5, "gb_per_s": 1e-9},
               {"kind": "network", "name": "resnet50_rgb", "input_kind": "rgb", "gpu_inputs_images_per_s": 100.0,
                "with_copy_images_per_s": 50.0, "paper_fps": 208},
               {"kind": "network", "name": "upsampling", "input_kind": "dct", "gpu_inputs_images_per_s": 300.0,
                "with_copy_images_per_s": 200.0, "paper_fps": 396},
               {"kind": "network", "name": "late_concat", "error": "RuntimeError: boom"},
               {"kind": "network", "name": "resnet50_rgb", "repeat": True, "gpu_inputs_images_per_s": 90.0,
                "with_copy_images_per_s": 45.0}]
    out = report.summarize_inference(records, {"upsampling": {"gmacs": 3.04}})
    rows = {r["name"]: r for r in out["networks"]}
    assert list(rows) == ["resnet50_rgb", "upsampling", "late_concat"]
    assert rows["upsampling"]["ratio"] == 3.0 and rows["upsampling"]["with_copy_ratio"] == 4.0
    assert rows["upsampling"]["paper_ratio"] == pytest.approx(396 / 208) and rows["upsampling"]["gmacs"] == 3.04
    assert rows["late_concat"]["error"] == "RuntimeError: boom"
    assert out["reference_spread"] == pytest.approx(0.1)
    assert out["images_per_s"] == {"resnet50_rgb": 100.0, "upsampling": 300.0}


def test_epochs_fitted_to_the_time_box():
    ips = {"resnet50_rgb": 9000.0, "upsampling_rfa": 6000.0, "late_concat_rfa_thinner": 12000.0,
           "downsampling": 11000.0}
    archs = list(ips)
    total = lambda e: sum(suite.estimate_run_seconds(a, e, 4000, 1000, ips) for a in archs)  # noqa: E731
    for box in (40, 90, 150, 200, 400, 10_000):
        epochs, how = suite.choose_epochs(box, archs, 4000, 1000, ips, 16)
        assert 1 <= epochs <= 16 and "4 of the 4" in how
        if 1 < epochs < 16:
            assert total(epochs) <= 0.85 * box < total(epochs + 1)
    assert suite.choose_epochs(10_000, archs, 4000, 1000, ips, 16)[0] == 16
    assert suite.choose_epochs(1, archs, 4000, 1000, ips, 16)[0] == 1
    # unmeasured networks are estimated from the reference, else from a cautious default
    assert suite.estimate_run_seconds("x", 2, 4000, 1000, {"resnet50_rgb": 9000.0}) == \
        suite.estimate_run_seconds("resnet50_rgb", 2, 4000, 1000, ips)
    assert suite.estimate_run_seconds("x", 2, 4000, 1000, {}) > suite.estimate_run_seconds("x", 2, 4000, 1000, ips | {"x": 9000.0})


def test_junit_outcomes(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_cuda" name="test_a" time="1.5"/>
<testcase classname="tests.test_cuda" name="test_b[x]" time="0.2"><failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="tests.test_cuda" name="test_c" time="0"><skipped message="needs a CUDA GPU"/></testcase>
<testcase classname="tests.test_cuda" name="test_d" time="0"><error message="fixture broke"/></testcase>
</testsuite></testsuites>""")
    out = suite._junit(xml)
    assert out["counts"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    by = {t["test"]: t for t in out["tests"]}
    assert by["test_cuda::test_b[x]"]["message"] == "assert 1 == 2\ntrace"
    assert by["test_cuda::test_c"]["message"] == "needs a CUDA GPU" and by["test_cuda::test_a"]["seconds"] == 1.5


def test_outcomes_of_a_pytest_run_stopped_before_its_junit_file():
    out = suite._verbose_outcomes(
        "============ test session starts ============\n"
        "tests/test_cuda.py::test_loader_device_batches_equal_its_cpu_batches[dct-False-train-crops] PASSED [  2%]\n"
        "tests/test_cuda.py::test_loader_device_batches_equal_its_cpu_batches[dct-False-train-images] SKIPPED (no) [  4%]\n"
        "tests/test_cuda.py::test_checkpoint_written_on_the_device_loads_where_there_is_no_gpu FAILED [ 90%]\n"
        "tests/test_cuda.py::test_compile_trains_a_dct_network_like_eager \n")
    assert out["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    assert [t["test"] for t in out["tests"]][0] == \
        "test_cuda::test_loader_device_batches_equal_its_cpu_batches[dct-False-train-crops]"


def test_the_clock_lends_unused_time_forward_and_never_the_time_of_later_sections():
    clock = suite.Clock(suite.REAL, None)
    shares = suite.REAL.shares
    assert clock.box("setup") == pytest.approx(shares["setup"], abs=1)
    assert clock.box("training") == pytest.approx(sum(shares.values()), abs=1)  # everything earlier unused
    half = suite.Clock(suite.REAL, suite.REAL.budget / 2)
    assert half.box("setup") == pytest.approx(shares["setup"] / 2, abs=1)
