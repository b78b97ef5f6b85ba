"""The prepared GPU run: set-up, CUDA tests, inference speed, loader delivery, device augmentation,
training comparison.

Started by ``benchmarks/gpu/run.sh`` (see there for the two ways to run it). Every section runs
in child processes under a time box; a section that fails or runs out of time is reported and
the next one starts. The boxes share one budget: each section may use what the sections before
it left unused, never the time reserved for the sections after it. After every section the
report is written again (``report.json``, ``report.md``; ``report.png`` and ``log.txt`` beside
them), so whatever stops the run, what was measured until then is in ``--out``.

Only the standard library is imported here: torch, jdct and the benchmarks run in the children,
with the carried wheels and libjpeg-turbo on their paths.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import report as report_mod  # noqa: E402

SECTIONS = ("setup", "cuda_tests", "inference", "predict", "loader", "device_augment", "training")
#: Issue 12's target for the images layout's device step on one H200: 224 crops per second.
AUGMENT_TARGET_PER_S = 20_000
#: The four networks of the issue's training comparison; the first is the reference.
TRAIN_ARCHS = ("resnet50_rgb", "upsampling_rfa", "late_concat_rfa_thinner", "downsampling")
#: One network of each builder class: what the dry run times (all of them on the GPU).
DRY_INFERENCE_MODELS = ("resnet50_rgb", "upsampling_rfa", "downsampling", "late_concat_rfa_thinner", "dct_frozen")
SITE = Path(tempfile.gettempdir()) / "jdct-gpu-site"          # carried wheels installed here
PREFIX = Path(tempfile.gettempdir()) / "jdct-gpu-libjpeg"     # include/ + lib/libjpeg.so for setup.py


@dataclass(frozen=True)
class Plan:
    """Sizes of one run. ``shares``: seconds planned per section (their sum is the budget)."""

    dry: bool
    device: str
    shares: dict
    size: int
    views: int
    convert_workers: int
    convert_chunking: tuple = ()          # extra `jdct convert` flags
    infer_batch: int = 256
    infer_warmup: int = 3
    infer_iters: int = 10
    infer_models: Optional[tuple] = None  # None: the whole zoo
    predict_threads: tuple = (8,)         # reader threads of benchmarks/predict.py
    predict_batch: int = 256
    predict_limit: int = 1000
    predict_check: int = 64
    loader_threads: tuple = (1, 4, 8)
    loader_batch: int = 256
    loader_seconds: float = 2.0
    augment_batches: tuple = (64, 256)    # batch sizes of the device augmentation benchmark
    augment_seconds: float = 4.0
    augment_files: int = 512
    train_archs: tuple = TRAIN_ARCHS
    train_batch: int = 128
    train_threads: int = 8
    max_epochs: int = 16

    @property
    def budget(self) -> float:
        return float(sum(self.shares.values()))


REAL = Plan(dry=False, device="cuda",
            shares={"setup": 60, "cuda_tests": 120, "inference": 60, "predict": 30, "loader": 45, "device_augment": 30,
                    "training": 150},
            size=224, views=4, convert_workers=min(16, os.cpu_count() or 1))
DRY = Plan(dry=True, device="cpu",
           shares={"setup": 18, "cuda_tests": 14, "inference": 14, "predict": 12, "loader": 18, "device_augment": 10,
                   "training": 34},
           size=32, views=2, convert_workers=1, convert_chunking=("--chunk-samples", "16", "--shard-samples", "32"),
           infer_batch=2, infer_warmup=1, infer_iters=2, infer_models=DRY_INFERENCE_MODELS,
           predict_threads=(1,), predict_batch=4, predict_limit=6, predict_check=3,
           loader_threads=(1, 2), loader_batch=16, loader_seconds=0.5,
           augment_batches=(8,), augment_seconds=0.5, augment_files=24,
           train_archs=(TRAIN_ARCHS[0], TRAIN_ARCHS[2]), train_batch=8, train_threads=1, max_epochs=1)


# ------------------------------------------------------------------------------------------------
# Running children under a time box
# ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    rc: Optional[int]
    seconds: float
    timed_out: bool
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out


class Runner:
    """Runs commands with a time limit, each in its own process group (so that DataLoader workers
    and compile workers go with it), output appended to the run's log."""

    def __init__(self, log: Path, env: dict):
        self.log = log
        self.env = env

    def note(self, text: str) -> None:
        with open(self.log, "a") as fh:
            fh.write(text.rstrip("\n") + "\n")

    def __call__(self, cmd: list, timeout: float, *, env: Optional[dict] = None, capture: bool = False,
                 cwd: Path = REPO) -> Result:
        timeout = max(1.0, float(timeout))
        self.note(f"\n$ {' '.join(map(str, cmd))}    [time box {timeout:.0f} s]")
        out_path = None
        with open(self.log, "ab") as log:
            if capture:
                fd, out_path = tempfile.mkstemp(prefix="jdct-gpu-out-")
                os.close(fd)
                stdout = open(out_path, "wb")
            else:
                stdout = log
            t0 = time.monotonic()
            proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env or self.env, stdout=stdout, stderr=log,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            timed_out = False
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid, signal.SIGTERM)
                try:
                    rc = proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    _kill_group(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
            _kill_group(proc.pid, signal.SIGKILL)  # leftovers of a finished command (orphaned workers)
            seconds = time.monotonic() - t0
            if capture:
                stdout.close()
        output = ""
        if out_path:
            output = Path(out_path).read_text(errors="replace")
            os.unlink(out_path)
            self.note(output)
        self.note(f"[exit {rc}{', stopped at its time box' if timed_out else ''}, {seconds:.1f} s]")
        return Result(rc=rc, seconds=seconds, timed_out=timed_out, output=output)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Clock:
    """The shared budget: section ``s`` may run until the deadline less the shares of the sections after it."""

    def __init__(self, plan: Plan, budget: Optional[float]):
        self.plan = plan
        self.start = time.monotonic()
        scale = 1.0 if budget is None else budget / plan.budget
        self.shares = {k: v * scale for k, v in plan.shares.items()}
        self.deadline = self.start + sum(self.shares.values())

    def box(self, section: str) -> float:
        later = sum(self.shares[s] for s in SECTIONS[SECTIONS.index(section) + 1:])
        return max(0.25 * self.shares[section], self.deadline - time.monotonic() - later)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


class Suite:
    def __init__(self, args, plan: Plan):
        self.args = args
        self.plan = plan
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="jdct-gpu-work-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.carry = Path(args.carry).resolve()
        self.py = sys.executable
        self.log = self.out / "log.txt"
        self.log.write_text("")
        self.env = self._child_env()
        self.run = Runner(self.log, self.env)
        self.clock = Clock(plan, args.budget)
        self.stores: dict[str, Path] = {}
        self.data: Optional[Path] = None
        self.models: dict[str, dict] = {}
        self.report: dict = {
            "format": "jdct-gpu-report", "format_version": 1,
            "dry_run": plan.dry,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "bash benchmarks/gpu/run.sh" + (" --dry-run" if plan.dry else ""),
            "commit": _git(["rev-parse", "HEAD"]),
            "dirty": bool(_git(["status", "--porcelain", "--untracked-files=no"])),
            "plan": {k: v for k, v in asdict(plan).items()},
            "budget_s": round(sum(self.clock.shares.values()), 1),
            "sections": {s: {"status": "not run"} for s in SECTIONS},
        }

    # ---------------------------------------------------------------- environment
    def _child_env(self) -> dict:
        env = dict(os.environ)
        paths = ([str(SITE)] if not self.plan.dry else []) + [str(REPO)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if not self.plan.dry:
            lib = str(self.carry / "libjpeg" / "lib")
            env["LD_LIBRARY_PATH"] = lib + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["JDCT_CACHE_DIR"] = str(self.work / "cache")
        env["MPLCONFIGDIR"] = str(self.work / "mpl")
        env["TQDM_DISABLE"] = "1"
        if self.plan.dry:
            # tiny tensors on a shared CPU: one thread is several times faster than contending ones
            env["OMP_NUM_THREADS"] = "1"
        return env

    # ---------------------------------------------------------------- report
    def save(self) -> None:
        self.report["elapsed_s"] = round(self.clock.elapsed(), 1)
        self.report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        report_mod.write_json(self.out / "report.json", self.report)
        (self.out / "report.md").write_text(report_mod.render_markdown(self.report))

    def section(self, name: str, fn) -> None:
        box = self.clock.box(name)
        self.run.note(f"\n==================== {name} (time box {box:.0f} s) ====================")
        t0 = time.monotonic()
        rec: dict = {"status": "running", "box_s": round(box, 1)}
        self.report["sections"][name] = rec
        try:
            rec.update(fn(box) or {})
            if rec["status"] == "running":
                rec["status"] = "ok"
        except Exception as exc:  # a failing section is reported, never fatal
            rec["status"] = "failed"
            rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["traceback"] = traceback.format_exc()[-4000:]
            self.run.note(rec["traceback"])
        rec["seconds"] = round(time.monotonic() - t0, 1)
        self.save()

    def main(self) -> int:
        wanted = self.args.sections or SECTIONS
        for name in SECTIONS:
            if name in wanted:
                self.section(name, getattr(self, f"do_{name}"))
        try:
            self.report["plot"] = report_mod.plot(self.report, self.out / "report.png")
        except Exception as exc:  # matplotlib missing or a figure failing: the report stands without it
            self.report["plot"] = f"not drawn: {type(exc).__name__}: {exc}"
        self.save()
        _trim_log(self.log)
        if not self.args.keep_work and not self.args.work:
            shutil.rmtree(self.work, ignore_errors=True)
        failed = [s for s in wanted if self.report["sections"][s]["status"] not in ("ok", "skipped")]
        print(report_mod.summary_lines(self.report), flush=True)
        return 1 if failed else 0

    # ---------------------------------------------------------------- 0. set-up
    def do_setup(self, box: float) -> dict:
        deadline = time.monotonic() + box
        left = lambda: max(5.0, deadline - time.monotonic())  # noqa: E731
        rec: dict = {"steps": {}}
        steps = rec["steps"]
        if not self.plan.dry:
            manifest = self.carry / "MANIFEST.json"
            if not manifest.is_file():
                raise RuntimeError(f"{self.carry} holds no MANIFEST.json: run benchmarks/gpu/prepare.sh first "
                                   "and carry its folder")
            rec["carry"] = json.loads(manifest.read_text())
            wheels = sorted((self.carry / "wheels").glob("*.whl"))
            r = self.run([self.py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                          "--no-cache-dir", "--upgrade", "--target", SITE, *wheels], min(60, left()))
            steps["install_wheels"] = _step(r)
            _libjpeg_prefix(self.carry / "libjpeg")
        r = self.run([self.py, "-c", "import jdct_cli._decoder"], min(30, left()))
        if self.plan.dry and r.ok:
            steps["build"] = {"ok": True, "note": "extension already built (dry run: the current environment)"}
        else:
            steps["build"] = self._build(left)
        self.data = self._data(steps, left)
        rec["data"] = str(self.data)
        layouts = self._layouts()
        rec["layouts"] = layouts
        for layout in layouts:
            store = self.work / f"imagenette-{layout}.zarr"
            cmd = [self.py, "-m", "jdct_cli", "convert", self.data, store, "--size", str(self.plan.size),
                   "--workers", str(self.plan.convert_workers), "--seed", "0", *self.plan.convert_chunking]
            # views are fixed crops: an images store keeps each image once (fresh crops every epoch)
            cmd += ["--views", str(self.plan.views)] if layout == "crops" else ["--layout", layout]
            r = self.run(cmd, left())
            steps[f"convert_{layout}"] = _step(r)
            if r.ok:
                self.stores[layout] = store
                facts = self.run([self.py, "-m", "jdct_cli", "inspect", store, "--json"], min(60, left()), capture=True)
                info = {"seconds": round(r.seconds, 1)}
                if facts.ok:
                    info["store"] = _store_facts(json.loads(facts.output))
                steps[f"convert_{layout}"].update(info)
        # facts for the report, after the data (which every later section needs)
        r = self.run([self.py, HERE / "probe.py"], min(60, left()), capture=True)
        steps["probe"] = _step(r)
        if r.ok:
            rec["machine"] = json.loads(r.output.strip().splitlines()[-1])
            self.report["machine"] = rec["machine"]
        names = sorted(set(self.plan.infer_models or ()) | set(self.plan.train_archs)) if self.plan.dry else []
        r = self.run([self.py, "-m", "jdct_cli", "models", "--json", "--size", str(self.plan.size), *names],
                     min(60, left()), capture=True)
        steps["models"] = _step(r)
        if r.ok:
            self.models = {m["name"]: m for m in json.loads(r.output)["models"]}
            self.report["models"] = self.models
        bad = [k for k, v in steps.items() if not v.get("ok")]
        if bad:
            rec["status"] = "failed"
            rec["error"] = "failed steps: " + ", ".join(bad)
        return rec

    def _build(self, left) -> dict:
        env = dict(self.env)
        if not self.plan.dry:
            env["JDCT_LIBJPEG_PREFIX"] = str(PREFIX)
        r = self.run([self.py, "setup.py", "-q", "build_ext", "--inplace"], min(240, left()), env=env)
        step = _step(r)
        if not r.ok and not r.timed_out:
            # The same Extension list, built without setuptools reading pyproject.toml (an older
            # setuptools than the project's build requirement refuses its PEP 639 licence field).
            r = self.run([self.py, HERE / "build_ext.py"], min(240, left()), env=env)
            step = _step(r)
            step["route"] = "benchmarks/gpu/build_ext.py (setup.py's own route failed: see log)"
        check = self.run([self.py, "-c", "import jdct_cli._decoder"], min(30, left()), env=env)
        step["ok"] = check.ok
        return step

    def _data(self, steps: dict, left) -> Path:
        if self.args.data:
            return Path(self.args.data).resolve()
        if not self.plan.dry:
            return self.carry / "data" / "imagenette-5k"
        tree = self.work / "photos"
        code = ("import sys; sys.path.insert(0, 'tests'); from photos import make_photo_tree; "
                f"make_photo_tree(__import__('pathlib').Path({str(tree)!r}))")
        r = self.run([self.py, "-c", code], min(60, left()))
        steps["photo_tree"] = _step(r)
        return tree

    def _layouts(self) -> list[str]:
        """Store layouts `jdct convert` writes and the loader reads: crops, and images once both do (issue 12);
        every later section then covers each layout converted here."""
        r = self.run([self.py, "-m", "jdct_cli", "convert", "--help"], 60, capture=True)
        loads = self.run([self.py, "-c", "from jdct_cli import data; print(*getattr(data, 'LAYOUTS', ('crops',)))"],
                         60, capture=True)
        both = r.ok and "--layout" in r.output and loads.ok and "images" in loads.output.split()
        return ["crops", "images"] if both else ["crops"]

    # ---------------------------------------------------------------- 1. pytest -m cuda
    def do_cuda_tests(self, box: float) -> dict:
        junit = self.work / "junit.xml"
        # -v prints each outcome as it comes: if the box stops pytest before it writes its JUnit
        # file, the outcomes so far are read from there. A hung test fails after 90 s (the
        # compile test, slow by nature, has its own limit and runs last).
        r = self.run([self.py, "-m", "pytest", "-m", "cuda", "tests", "-v", "-rA", "-p", "no:cacheprovider",
                      f"--junitxml={junit}", "-o", "junit_family=xunit2", "-o", f"timeout={int(min(90, box / 2))}"],
                     box, capture=True)
        rec = {"command": "python -m pytest -m cuda tests", "rc": r.rc, "timed_out": r.timed_out}
        if junit.is_file():
            rec.update(_junit(junit))
        else:
            rec.update(_verbose_outcomes(r.output))
        counts = rec.get("counts", {})
        if r.timed_out:
            rec["status"] = "timeout"
        elif r.rc not in (0, 5) or counts.get("failed") or counts.get("error"):
            rec["status"] = "failed"
        elif counts and counts.get("passed", 0) == 0:
            rec["status"] = "skipped"
            rec["note"] = f"{counts.get('skipped', 0)} CUDA tests collected, all skipped: no CUDA device here"
        return rec

    # ---------------------------------------------------------------- 2. inference
    def do_inference(self, box: float) -> dict:
        results = self.work / "inference.jsonl"
        results.unlink(missing_ok=True)
        p = self.plan
        cmd = [self.py, HERE / "bench_inference.py", "--results", results, "--device", p.device,
               "--batch", str(p.infer_batch), "--size", str(p.size), "--warmup", str(p.infer_warmup),
               "--iters", str(p.infer_iters)]
        if p.infer_models:
            cmd += ["--models", *p.infer_models]
        r = self.run(cmd, box)
        records = _jsonl(results)
        rec = report_mod.summarize_inference(records, self.models)
        rec.update({"rc": r.rc, "timed_out": r.timed_out})
        if r.timed_out:
            rec["status"] = "timeout"
            rec["note"] = "stopped at its time box: the networks measured until then are reported"
        elif not r.ok or any("error" in n for n in rec.get("networks", [])):
            rec["status"] = "failed"
        if p.dry:
            rec["note"] = ("dry run: CPU, host clock instead of CUDA events, no host-to-device copy (the CPU is "
                           "the device), a subset of the zoo")
        return rec

    # ---------------------------------------------------------------- 2b. predict from JPEG files
    def do_predict(self, box: float) -> dict:
        """Images/s from JPEG files on disk to top-5 labels (benchmarks/predict.py): jdct predict
        --direct with late_concat_rfa_thinner and upsampling against resnet50_rgb on Pillow's decode +
        resize + centre crop, on the val images of the data; batch-1 labels must agree."""
        p = self.plan
        if self.data is None or not (self.data / "val").is_dir():
            raise RuntimeError("no val images: set-up found no data")
        results = self.work / "predict.json"
        results.unlink(missing_ok=True)
        r = self.run([self.py, REPO / "benchmarks" / "predict.py", "--device", p.device, "--source",
                      self.data / "val", "--limit", str(p.predict_limit), "--threads", *map(str, p.predict_threads),
                      "--batch", str(p.predict_batch), "--check", str(p.predict_check), "--json", results], box)
        rows = json.loads(results.read_text())["rows"] if results.is_file() else []
        rec: dict = {"rows": rows, "batch": p.predict_batch, "rc": r.rc, "timed_out": r.timed_out}
        if r.timed_out:
            rec["status"] = "timeout"
            rec["note"] = "stopped at its time box"
        elif not r.ok or not rows:
            rec["status"] = "failed"
            rec["error"] = "benchmarks/predict.py failed (batch-1 labels differ, or an error: see log.txt)"
        if p.dry:
            rec["note"] = "dry run: CPU, 6 photographs of mixed sizes (most fall back from --direct)"
        return rec

    # ---------------------------------------------------------------- 3. loader delivery
    def do_loader(self, box: float) -> dict:
        deadline = time.monotonic() + box
        results = self.work / "loader.jsonl"
        results.unlink(missing_ok=True)
        p = self.plan
        source = self.data / "train" if self.data else None
        configs = []
        for layout, store in self.stores.items():
            configs += [("dct", t, ["--store", store, "--layout", layout]) for t in p.loader_threads]
        configs += [("torchvision", t, ["--source", source]) for t in p.loader_threads]
        configs += [("nvjpeg", max(p.loader_threads), ["--source", source])]
        if "crops" in self.stores:
            configs += [("dct", max(p.loader_threads), ["--store", self.stores["crops"], "--output", "rgb"])]
        skipped_configs = []
        for mode, threads, extra in configs:
            left = deadline - time.monotonic()
            if left < p.loader_seconds + 3:
                skipped_configs.append(f"{mode} x{threads}")
                continue
            if (mode == "nvjpeg" and p.device != "cuda") or (mode != "dct" and source is None):
                why = "needs a CUDA device" if mode == "nvjpeg" else "no JPEG source"
                _append(results, {"mode": mode, "threads": threads, "skipped": why})
                continue
            r = self.run([self.py, HERE / "bench_loader.py", "--mode", mode, "--threads", str(threads),
                          "--results", results, "--batch", str(p.loader_batch), "--size", str(p.size),
                          "--seconds", str(p.loader_seconds), "--device", p.device, *extra],
                         min(left, p.loader_seconds + 60))
            if r.timed_out:
                _append(results, {"mode": mode, "threads": threads, "error": "stopped at its time box"})
        rec = report_mod.summarize_loader(_jsonl(results))
        if skipped_configs:
            rec["status"] = "timeout"
            rec["note"] = "time box spent before: " + ", ".join(skipped_configs)
        elif not self.stores:
            rec["status"] = "failed"
            rec["error"] = "no store was converted in set-up"
        elif any("error" in row for row in rec["rows"]):
            rec["status"] = "failed"
        return rec

    # ---------------------------------------------------------------- 4. device augmentation
    def do_device_augment(self, box: float) -> dict:
        """Issue 12's device step (benchmarks/device_augment.py): block rectangles of the carried JPEGs
        -> re-encoded fresh crops -> model inputs, samples/s on the device, beside the crops layout's
        CPU recipe for the same boxes (one thread)."""
        deadline = time.monotonic() + box
        results = self.work / "device_augment.jsonl"
        results.unlink(missing_ok=True)
        p = self.plan
        if self.data is None:
            raise RuntimeError("no JPEG source (set-up found none)")
        source = self.data / "train" if (self.data / "train").is_dir() else self.data
        stopped = []
        for k, batch in enumerate(p.augment_batches):
            left = deadline - time.monotonic()
            if left < p.augment_seconds + 5:
                stopped.append(f"batch {batch}")
                continue
            cmd = [self.py, REPO / "benchmarks" / "device_augment.py", "--source", source, "--device", p.device,
                   "--threads", "1", "--batch", str(batch), "--size", str(p.size), "--seconds", str(p.augment_seconds),
                   "--files", str(p.augment_files), "--batches", "4", "--results", results]
            if k:
                cmd.append("--no-reference")  # the CPU recipe's figure does not depend on the batch size
            r = self.run(cmd, left)
            if not r.ok:
                _append(results, {"pipeline": "device", "batch": batch,
                                  "error": "stopped at its time box" if r.timed_out else f"exit status {r.rc}: see log"})
        rec = report_mod.summarize_augment(_jsonl(results), AUGMENT_TARGET_PER_S if not p.dry else None)
        if stopped:
            rec["status"] = "timeout"
            rec["note"] = "time box spent before: " + ", ".join(stopped)
        elif not rec["rows"] or any("error" in row for row in rec["rows"]):
            rec["status"] = "failed"
        if p.dry:
            rec["note"] = "dry run: the CPU at tiny sizes; the 20,000 samples/s target is for one H200 at 224 px"
        return rec

    # ---------------------------------------------------------------- 5. training comparison
    def do_training(self, box: float) -> dict:
        deadline = time.monotonic() + box
        p = self.plan
        if "crops" not in self.stores:
            raise RuntimeError("no crops store was converted in set-up")
        runs = [(arch, "crops") for arch in p.train_archs]
        if "images" in self.stores:
            runs.append((p.train_archs[1], "images"))
        n_train, n_val = _split_counts(self.data)
        rec: dict = {"data": self.data.name, "batch_size": p.train_batch, "threads": p.train_threads, "views": p.views,
                     "train_images": n_train, "val_images": n_val, "size": p.size}
        ips = self.report["sections"].get("inference", {}).get("images_per_s", {})
        archs = [a for a, _ in runs]
        if self.args.epochs:
            epochs, how = self.args.epochs, "given with --epochs"
        elif p.dry:
            epochs, how = p.max_epochs, "dry run"
        else:
            epochs, how = choose_epochs(box, archs, n_train, n_val, ips, p.max_epochs)
        rec["epochs"], rec["epochs_chosen_by"] = epochs, how
        expected = [estimate_run_seconds(a, epochs, n_train, n_val, ips) for a in archs]
        rows = []
        rec["runs"] = rows
        for i, (arch, layout) in enumerate(runs):
            left = deadline - time.monotonic()
            out = self.work / "runs" / f"{arch}-{layout}"
            shutil.rmtree(out, ignore_errors=True)
            row = {"arch": arch, "layout": layout, "expected_s": round(expected[i], 1)}
            rows.append(row)
            if left < 10:
                row["status"] = "not run: time box spent"
                continue
            cmd = [self.py, "-m", "jdct_cli", "train", "--arch", arch, "--data", self.stores[layout], "--out", out,
                   "--epochs", str(epochs), "--batch-size", str(p.train_batch), "--device", p.device,
                   "--threads", str(p.train_threads), "--seed", "0"]
            # This run may use the slack earlier runs left, and half again its own estimate, but
            # never the estimated time of the runs after it unless its estimate alone needs it.
            timeout = min(left, max(1.5 * expected[i], left - sum(expected[i + 1:])))
            r = self.run(cmd, timeout)
            row.update(report_mod.training_row(out, r.seconds, epochs))
            row["status"] = "ok" if r.ok else ("timeout" if r.timed_out else f"failed (exit {r.rc})")
            self.save()
        rec.update(report_mod.summarize_training(rows, self.models, n_val))
        if any(r["status"] != "ok" for r in rows):
            rec["status"] = "timeout" if all(r["status"] in ("ok", "timeout") or r["status"].startswith("not run")
                                             for r in rows) else "failed"
        if p.dry:
            rec["note"] = "dry run: CPU, a tiny store, one epoch: accuracies mean nothing here"
        return rec


#: Images/s assumed for a network whose inference speed was not measured (a cautious H200 figure).
DEFAULT_IMAGES_PER_S = 2000.0


def estimate_run_seconds(arch: str, epochs: int, n_train: int, n_val: int, infer_ips: dict, *,
                         train_factor: float = 3.5, startup_s: float = 15.0, epoch_overhead_s: float = 1.5) -> float:
    """Seconds `jdct train` should take, from the inference speed (images/s at batch 256) just
    measured: a training step costs about ``train_factor`` forward passes, a run pays ``startup_s``
    (imports, CUDA context, cuDNN autotuning) and every epoch ``epoch_overhead_s`` (checkpoint,
    validation start)."""
    ips = infer_ips.get(arch) or infer_ips.get("resnet50_rgb") or DEFAULT_IMAGES_PER_S
    return startup_s + epochs * (n_train / (ips / train_factor) + n_val / ips + epoch_overhead_s)


def choose_epochs(box: float, archs: list[str], n_train: int, n_val: int, infer_ips: dict, max_epochs: int,
                  fill: float = 0.85) -> tuple[int, str]:
    """The most epochs (1..``max_epochs``) whose estimated runs of every arch in turn fill at most
    ``fill`` of ``box`` seconds, and how they were chosen."""
    epochs = 1
    for e in range(1, max_epochs + 1):
        if sum(estimate_run_seconds(a, e, n_train, n_val, infer_ips) for a in archs) <= fill * box:
            epochs = e
    total = sum(estimate_run_seconds(a, epochs, n_train, n_val, infer_ips) for a in archs)
    measured = sum(1 for a in archs if infer_ips.get(a))
    return epochs, (f"as many as fit the {box:.0f} s time box (at most {max_epochs}): estimated {total:.0f} s from "
                    f"the inference speeds of {measured} of the {len(archs)} networks")


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _step(r: Result) -> dict:
    return {"ok": r.ok, "seconds": round(r.seconds, 1), "rc": r.rc, "timed_out": r.timed_out}


def _git(args: list[str]) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _libjpeg_prefix(carried: Path) -> None:
    """PREFIX/include and PREFIX/lib/libjpeg.so (what setup.py's JDCT_LIBJPEG_PREFIX expects) as links
    into the carried, link-free folder."""
    shutil.rmtree(PREFIX, ignore_errors=True)
    (PREFIX / "lib").mkdir(parents=True)
    (PREFIX / "include").symlink_to(carried / "include")
    for name in ("libjpeg.so", "libjpeg.so.62"):
        (PREFIX / "lib" / name).symlink_to(carried / "lib" / "libjpeg.so.62")


def _store_facts(doc: dict) -> dict:
    """The few facts of `jdct inspect STORE --json` the report shows (whatever else it holds)."""
    facts = {k: doc[k] for k in ("bytes_on_disk", "size", "quality", "subsampling") if k in doc}
    facts["splits"] = {name: {k: sp.get(k) for k in ("views", "num_samples", "bytes_per_sample", "compression_ratio")}
                       for name, sp in (doc.get("splits") or {}).items() if isinstance(sp, dict)}
    return facts


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return out


def _append(path: Path, rec: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def _split_counts(data: Optional[Path]) -> tuple[int, int]:
    if data is None:
        return 0, 0

    def count(split):
        folder = data / split
        return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0

    return count("train"), count("val")


def _junit(path: Path) -> dict:
    """Counts and per-test outcomes from pytest's JUnit XML."""
    tests, counts = [], {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".replace("tests.", "", 1)
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or "") + ("\n" + child.text if child.text and outcome != "skipped"
                                                          else "")
                break
        counts[outcome] += 1
        entry = {"test": name, "outcome": outcome, "seconds": round(float(case.get("time", 0) or 0), 2)}
        if message:
            entry["message"] = message.strip()[-1500:]
        tests.append(entry)
    return {"counts": counts, "tests": tests}


def _verbose_outcomes(output: str) -> dict:
    """Counts and outcomes from ``pytest -v`` lines (``path::test[id] PASSED [ 10%]``), for a run
    stopped before it wrote its JUnit file."""
    tests, counts = [], {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    words = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped", "XFAIL": "skipped",
             "XPASS": "passed"}
    for line in output.splitlines():
        m = re.match(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", line.strip())
        if m:
            outcome = words[m.group(2)]
            counts[outcome] += 1
            tests.append({"test": m.group(1).replace("tests/", "", 1).replace(".py::", "::"), "outcome": outcome})
    return {"counts": counts, "tests": tests, "note": "pytest stopped at its time box: outcomes from its -v lines"}


def _trim_log(log: Path, limit: int = 12 << 20) -> None:
    """Keep the log under the device tool's per-file limit: its head and its tail."""
    size = log.stat().st_size
    if size <= limit:
        return
    data = log.read_bytes()
    keep = limit // 2
    log.write_bytes(data[:keep] + f"\n\n[... {size - 2 * keep} bytes left out ...]\n\n".encode() + data[-keep:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU at tiny sizes")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "gpu-out"),
                    help="where the report goes [default: $OUT, else ./gpu-out]")
    ap.add_argument("--work", default=None, help="scratch folder (stores, runs) [default: a temporary one, removed]")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary scratch folder")
    ap.add_argument("--carry", default=str(REPO / "carry" / "gpu"), help="the folder prepare.sh filled")
    ap.add_argument("--data", default=None, help="ImageFolder source [default: the carried imagenette-5k; dry run: "
                                                  "a small tree of scikit-image photographs made here]")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run [default: 465, dry run 105]")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs [default: as many as fit, at most 16]")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=None, help="run only these sections")
    args = ap.parse_args(argv)
    plan = DRY if args.dry_run else REAL
    suite = Suite(args, plan)
    print(f"jdct GPU run{' (dry run)' if plan.dry else ''}: report in {suite.out}, budget "
          f"{suite.report['budget_s']:.0f} s", flush=True)
    return suite.main()


if __name__ == "__main__":
    raise SystemExit(main())
