#!/usr/bin/env python3
"""The jdct demo that `make demo` runs: the real `jdct` command on real JPEGs, step by step.

Data: `../shared/data` next to the repository (or $JDCT_SHARED_DATA) when it exists, otherwise the
CC0 sample photographs bundled with scikit-image (astronaut, coffee, chelsea), written to JPEG.
Everything produced goes to `demo-out/` (override with $JDCT_DEMO_OUT).

The demo is a list of named steps (STEPS, in order). To add one, write a function taking the
`Demo` object and register it with the `@step("what it shows")` decorator below the others; use
`demo.run_jdct(...)` to show a command, `demo.out` for outputs and `demo.state` to hand results to
later steps.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent


class DemoFailed(Exception):
    """A step saw something other than what it demonstrates."""


@dataclass
class Demo:
    out: Path                                   # demo-out/
    shared: Path | None                         # ../shared/data, None when absent
    samples: list[Path] = field(default_factory=list)   # JPEGs found/made by the first step
    disguised: Path | None = None               # a non-JPEG named .jpg, for the error demo
    state: dict = field(default_factory=dict)   # anything a step wants to pass on

    def jdct_command(self) -> list[str]:
        """The installed `jdct` next to this Python (the venv's), else `python -m jdct_cli`."""
        exe = Path(sys.executable).parent / "jdct"
        return [str(exe)] if exe.exists() else [sys.executable, "-m", "jdct_cli"]

    def run_jdct(self, *args, expect: int = 0, show: bool = True, max_lines: int = 60) -> subprocess.CompletedProcess:
        """Run `jdct ARGS`, print the command and (up to max_lines of) its output; check its exit code."""
        cmd = self.jdct_command() + [str(a) for a in args]
        shown = ["jdct"] + [_short(a) for a in args]
        print(f"  $ {shlex.join(shown)}")
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if show:
            lines = (proc.stdout + proc.stderr).rstrip().splitlines()
            for line in lines[:max_lines]:
                print("    " + line)
            if len(lines) > max_lines:
                print(f"    ... ({len(lines) - max_lines} more lines)")
        if proc.returncode != expect:
            raise DemoFailed(f"`{shlex.join(shown)}` exited with {proc.returncode}, expected {expect}:\n{proc.stderr}")
        return proc


def _short(arg) -> str:
    """Paths shown relative to the repository when possible (readable output)."""
    text = str(arg)
    if not os.path.isabs(text):
        return text
    rel = os.path.relpath(text, REPO)
    return text if rel.startswith(os.path.join("..", "..")) else rel


STEPS: list[tuple[str, Callable[[Demo], None]]] = []


def step(title: str):
    """Register a demo step (run in registration order)."""

    def register(func):
        STEPS.append((title, func))
        return func

    return register


# ---------------------------------------------------------------------------------------------
# Steps: JPEG layer / jdct inspect
# ---------------------------------------------------------------------------------------------


@step("find sample JPEGs")
def find_samples(demo: Demo) -> None:
    if demo.shared is not None:
        originals = sorted((demo.shared / "imagenet-originals").glob("*/*.JPEG"))
        odd = demo.shared / "odd-jpegs"
        picks = originals[:2] + [
            odd / "jpeg-decoder/reftest/images/progressive3.jpg",      # progressive, 4:4:4
            odd / "libjpeg-turbo/testimgari.jpg",                      # arithmetic coding
            odd / "exif-orientation/Landscape_6.jpg",                  # EXIF orientation 6
        ]
        demo.samples = [p for p in picks if p.is_file()]
        disguised = odd / "variants/png_disguised.JPEG"
        demo.disguised = disguised if disguised.is_file() else None
        print(f"  using real data from {demo.shared}")
    if not demo.samples:
        import numpy as np
        import skimage.data
        from PIL import Image

        folder = demo.out / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        for name, quality, subsampling in (("astronaut", 90, 2), ("coffee", 75, 0), ("chelsea", 95, 1)):
            path = folder / f"{name}.jpg"
            if not path.exists():
                Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(path, quality=quality, subsampling=subsampling)
            demo.samples.append(path)
        print(f"  ../shared/data not found: wrote scikit-image's CC0 samples to {_short(folder)}")
    if demo.disguised is None:
        fake = demo.out / "samples" / "not_really.jpg"
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_text("<html><body>404 Not Found</body></html>\n")
        demo.disguised = fake
    for path in demo.samples:
        print(f"  - {_short(path)}")


@step("inspect one JPEG (text report)")
def inspect_text(demo: Demo) -> None:
    demo.run_jdct("inspect", demo.samples[0])


@step("inspect several JPEGs as JSON (schemas/inspect.v1.schema.json)")
def inspect_json(demo: Demo) -> None:
    proc = demo.run_jdct("inspect", "--json", *demo.samples, show=False)
    docs = json.loads(proc.stdout)
    target = demo.out / "inspect.json"
    target.write_text(proc.stdout)
    print(f"  wrote {_short(target)}: {len(docs)} documents")
    print(f"    {'file':<42} {'size':>11}  {'sampling':<9} {'coding':<14} {'quality':>7}  EXIF")
    for d in docs:
        coding = ("progressive" if d["progressive"] else "baseline") + ("+arith" if d["arithmetic"] else "")
        size = f"{d['width']}x{d['height']}"
        print(f"    {Path(d['file']).name[:42]:<42} {size:>11}  {d['sampling']:<9} {coding:<14} "
              f"{d['estimated_quality']!s:>7}  {d['exif_orientation'] or '-'}")
    demo.state["inspect_docs"] = docs


@step("plot and dump the coefficients of one JPEG")
def inspect_plot(demo: Demo) -> None:
    png, npz = demo.out / "inspect.png", demo.out / "coefficients.npz"
    sample = demo.samples[2] if len(demo.samples) > 2 else demo.samples[0]
    demo.run_jdct("inspect", sample, "--plot", png, "--dump-coefficients", npz, show=False)
    import numpy as np

    with np.load(npz) as arrays:
        shapes = ", ".join(f"{k} {arrays[k].dtype}{arrays[k].shape}" for k in arrays.files)
    print(f"  wrote {_short(png)} (decoded image, DC maps, mean |coefficient| per frequency)")
    print(f"  wrote {_short(npz)}: {shapes}")


@step("bad input: a clear error, exit code 1, no traceback")
def inspect_bad(demo: Demo) -> None:
    proc = demo.run_jdct("inspect", demo.disguised, demo.samples[0], expect=1, show=False)
    for line in proc.stderr.splitlines():
        print("    " + line)
    print(f"  (the good file was still reported: {len(proc.stdout.splitlines())} lines; exit code {proc.returncode})")


# ---- later steps (convert, train, evaluate) are registered below this line ----


@step("convert example JPEGs (a slice of imagenette-5k) into a Zarr store, inspect and verify it")
def convert_store(demo: Demo) -> None:
    src = demo.out / "convert-src"
    store = demo.out / "imagenette-slice.zarr"
    if not src.exists():
        if demo.shared is not None and (demo.shared / "imagenette-5k").is_dir():
            root = demo.shared / "imagenette-5k"
            for split, per_class in (("train", 30), ("val", 10)):
                for cls in sorted(p.name for p in (root / split).iterdir()):
                    (src / split / cls).mkdir(parents=True)
                    for f in sorted((root / split / cls).iterdir())[:per_class]:
                        (src / split / cls / f.name).symlink_to(f)
            print(f"  {_short(src)}: 30 train + 10 val images per class of imagenette-5k (symlinks)")
        else:
            _write_skimage_folder(src)
            print(f"  {_short(src)}: crops of scikit-image's CC0 samples as a 2-class train/val folder")
    # --overwrite: a rerun of the demo converts again instead of refusing the existing store
    demo.run_jdct("convert", src, store, "--size", "224", "--shard-samples", "128", "--chunk-samples", "32",
                  "--overwrite")
    demo.run_jdct("inspect", store, "--plot", demo.out / "store-samples.png", max_lines=30)
    demo.run_jdct("inspect", store, "--split", "val" if (src / "val").is_dir() else "train", "--sample", "3",
                  "--plot", demo.out / "store-sample-3.png", max_lines=4)
    demo.run_jdct("verify", store)
    demo.state["store"] = store


def _write_skimage_folder(src: Path) -> None:
    """A small ImageFolder tree (train/val x 2 classes) from scikit-image's CC0 photographs.

    Each photograph gives several seeded random crops (60-100% of each side), so that the demo has
    enough samples for a few batches: 3 photographs x (6 train + 2 val) crops per class.
    """
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    classes = {"cats": ("chelsea", "cat", "astronaut"), "things": ("coffee", "rocket", "camera")}
    for cls, names in classes.items():
        for name in names:
            photo = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
            for index in range(8):
                split = "train" if index < 6 else "val"
                w, h = photo.size
                cw, ch = (int(side * rng.uniform(0.6, 1.0)) for side in (w, h))
                x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                folder = src / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                photo.crop((x, y, x + cw, y + ch)).save(folder / f"{name}_{index}.jpg", quality=90)


@step("the model zoo: input of each network, parameters, GMACs at 224, the paper's results")
def model_zoo(demo: Demo) -> None:
    demo.run_jdct("models", max_lines=30)


@step("train briefly on the CPU, evaluate the checkpoint, predict two images")
def train_and_eval(demo: Demo) -> None:
    import shutil

    src = demo.out / "convert-src"
    # The same source images at 32 px, so that two epochs of a ResNet-50-sized network take
    # well under a minute on a CPU (the recipe and the code are the ones of a 224 px run).
    store = demo.out / "imagenette-slice-32.zarr"
    demo.run_jdct("convert", src, store, "--size", "32", "--shard-samples", "128", "--chunk-samples", "32",
                  "--overwrite", "--quiet")
    splits = json.loads((store / "zarr.json").read_text())["attributes"]["jdct"]["splits"]
    val = "val" if "val" in splits else "train"
    run = demo.out / "run"
    shutil.rmtree(run, ignore_errors=True)  # a rerun of the demo starts a fresh run
    # One intra-op thread: on a small shared machine two contending torch threads run these tiny
    # convolutions several times slower than one (measured 1.0 s vs 2.5-11 s per step).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    batch = "32" if demo.shared is not None else "8"  # the scikit-image fallback has 36 train images
    demo.run_jdct("train", "--arch", "late_concat_rfa_thinner", "--data", store, "--out", run, "--epochs", "2",
                  "--batch-size", batch, "--lr", "0.005", "--device", "cpu", "--val-split", val)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        print(f"    metrics.jsonl: epoch {m['epoch']}: train loss {m['train_loss']:.3f}, val top-1 "
              f"{100 * m['val_top1']:.1f}%, {m['images_per_s']:.1f} img/s")
    proc = demo.run_jdct("eval", "--checkpoint", run / "best.pt", "--data", store, "--split", val, "--json")
    logged = max(json.loads(line)["val_top1"] for line in (run / "metrics.jsonl").read_text().splitlines())
    if json.loads(proc.stdout)["top1"] != logged:
        raise DemoFailed("eval did not reproduce the best val top-1 logged during training")
    print(f"  eval reproduces the best logged val top-1 ({100 * logged:.1f}%)")
    images = sorted(p for p in (src / val).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:1]
    demo.run_jdct("predict", "--checkpoint", run / "best.pt", "--direct", *images, *demo.samples[:1])


def main() -> int:
    out = Path(os.environ.get("JDCT_DEMO_OUT", REPO / "demo-out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shared = Path(os.environ.get("JDCT_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    demo = Demo(out=out, shared=shared if shared.is_dir() else None)
    print(f"jdct demo: {len(STEPS)} steps, outputs in {_short(out)}")
    for number, (title, func) in enumerate(STEPS, 1):
        print(f"\n[{number}/{len(STEPS)}] {title}")
        started = time.perf_counter()
        try:
            func(demo)
        except DemoFailed as exc:
            print(f"\ndemo step {number} ({title}) failed: {exc}", file=sys.stderr)
            return 1
        print(f"  ({time.perf_counter() - started:.1f} s)")
    print(f"\ndone: see {_short(out)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
