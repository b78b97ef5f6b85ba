#!/usr/bin/env python3
"""The jdct demo that `make demo` runs: the real `jdct` command on real JPEGs, step by step.

Data: `../shared/data` next to the repository (or $JDCT_SHARED_DATA) when it exists: the training
step then learns imagenette-5k (10 ImageNet classes) at 32 px on the CPU for a few minutes and must
end well above chance. Otherwise the CC0 sample photographs bundled with scikit-image, written to
JPEG: one class per photograph, so that run shows the pipeline training, not a network
generalising to new pictures (the demo says so). Everything produced goes to `demo-out/`
(override with $JDCT_DEMO_OUT).

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

    @property
    def imagenette(self) -> Path | None:
        """../shared/data/imagenette-5k when it is there."""
        path = None if self.shared is None else self.shared / "imagenette-5k"
        return path if path is not None and path.is_dir() else None

    def jdct_command(self) -> list[str]:
        """The installed `jdct` next to this Python (the venv's), else `python -m jdct_cli`."""
        exe = Path(sys.executable).parent / "jdct"
        return [str(exe)] if exe.exists() else [sys.executable, "-m", "jdct_cli"]

    def run_jdct(self, *args, expect: int = 0, show: bool = True, max_lines: int = 60,
                 interleave: bool = False) -> subprocess.CompletedProcess:
        """Run `jdct ARGS`, print the command and (up to max_lines of) its output; check its exit code.

        ``interleave``: stderr into stdout as it comes, so lines show in the order they were written
        (progress lines on stderr before a final summary on stdout); ``proc.stdout`` then holds both.
        """
        cmd = self.jdct_command() + [str(a) for a in args]
        shown = ["jdct"] + [_short(a) for a in args]
        print(f"  $ {shlex.join(shown)}", flush=True)
        if interleave:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
            proc.stderr = ""
        else:
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


@step("convert example JPEGs into a Zarr store, inspect and verify it")
def convert_store(demo: Demo) -> None:
    src = demo.out / "convert-src"
    store = demo.out / "example.zarr"
    if not src.exists():
        if demo.imagenette is not None:
            for split, per_class in (("train", 30), ("val", 10)):
                for cls in sorted(p.name for p in (demo.imagenette / split).iterdir()):
                    (src / split / cls).mkdir(parents=True)
                    for f in sorted((demo.imagenette / split / cls).iterdir())[:per_class]:
                        (src / split / cls / f.name).symlink_to(f)
    if demo.imagenette is not None:
        print(f"  {_short(src)}: 30 train + 10 val images per class of imagenette-5k (symlinks)")
    else:
        src = _photo_folder(demo)
    # --overwrite: a rerun of the demo converts again instead of refusing the existing store
    demo.run_jdct("convert", src, store, "--size", "224", "--shard-samples", "128", "--chunk-samples", "32",
                  "--overwrite")
    demo.run_jdct("inspect", store, "--plot", demo.out / "store-samples.png", max_lines=30)
    demo.run_jdct("inspect", store, "--split", "val", "--sample", "3", "--plot", demo.out / "store-sample-3.png",
                  max_lines=4)
    demo.run_jdct("verify", store)
    demo.state["store"] = store


#: The fallback's classes: one scikit-image photograph each (public domain / CC0), named for what it shows.
PHOTO_CLASSES = (("astronaut", "astronaut"), ("cat", "chelsea"), ("coffee", "coffee"), ("rocket", "rocket"))


def _photo_folder(demo: Demo) -> Path:
    """A train/val ImageFolder tree of seeded random crops (40-100 % of each side, random mirror) of
    the photographs of PHOTO_CLASSES: 16 train + 4 val crops per class, written once."""
    src = demo.out / "photo-src"
    if not src.exists():
        import numpy as np
        import skimage.data
        from PIL import Image

        rng = np.random.default_rng(0)
        for cls, name in PHOTO_CLASSES:
            photo = Image.fromarray(np.asarray(getattr(skimage.data, name)())[..., :3]).convert("RGB")
            for index in range(20):
                split = "train" if index < 16 else "val"
                w, h = photo.size
                cw, ch = (int(side * rng.uniform(0.4, 1.0)) for side in (w, h))
                x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                crop = photo.crop((x, y, x + cw, y + ch))
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                folder = src / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                crop.save(folder / f"{name}_{index}.jpg", quality=int(rng.integers(75, 96)))
    print(f"  {_short(src)}: no imagenette here, so crops of {len(PHOTO_CLASSES)} scikit-image photographs, "
          "one class per photograph (" + ", ".join(c for c, _ in PHOTO_CLASSES) + "): 16 train + 4 val crops each")
    return src


@step("the model zoo: input of each network, parameters, GMACs at 224, the paper's results")
def model_zoo(demo: Demo) -> None:
    demo.run_jdct("models", max_lines=30)


#: The learning run on imagenette-5k: size, epochs and batch chosen so that this step takes about
#: 2-3 minutes on a 2-core CPU (about 35 s per epoch of 4,000 images at 32 px, one torch thread).
IMAGENETTE_RUN = {"size": 32, "epochs": 4, "batch": 64}
#: Readable names of imagenette's 10 WordNet classes (for --class-names).
IMAGENETTE_NAMES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
                    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
                    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
                    "n03888257": "parachute"}
#: The fallback's run: 64 train crops of 4 photographs, 60 steps (about 15 s).
PHOTO_RUN = {"size": 32, "epochs": 15, "batch": 16}


@step("train on the CPU, evaluate the checkpoint, predict two images, export the weights")
def train_and_eval(demo: Demo) -> None:
    import shutil

    if demo.imagenette is not None:
        src, recipe = demo.imagenette, IMAGENETTE_RUN
        what = (f"imagenette-5k: 10 ImageNet classes, 4,000 train / 1,000 val images; chance is 10 % top-1. "
                f"{recipe['epochs']} epochs at {recipe['size']} px (a 7x smaller side than the paper's 224) "
                "cannot reach the paper's accuracy, but must end well above chance.")
    else:
        src, recipe = _photo_folder(demo), PHOTO_RUN
        what = ("no ../shared/data: the classes are 4 photographs and the val crops come from the same 4 "
                "pictures as the train crops. A high val top-1 here shows that the pipeline (coefficients, "
                "loader, network, SGD) learns; it does NOT show that a network recognises new pictures. "
                "Run the demo next to ../shared/data (imagenette-5k) for that.")
    print("  " + what)
    store = demo.out / f"train-{recipe['size']}.zarr"
    demo.run_jdct("convert", src, store, "--size", recipe["size"], "--shard-samples", "512", "--chunk-samples", "64",
                  "--overwrite", "--quiet")
    run = demo.out / "run"
    shutil.rmtree(run, ignore_errors=True)  # a rerun of the demo starts a fresh run
    # One intra-op thread: on a small shared machine two contending torch threads run these small
    # convolutions several times slower than one (measured 1.0 s vs 2.5-11 s per step).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    demo.run_jdct("train", "--arch", "late_concat_rfa_thinner", "--data", store, "--out", run,
                  "--epochs", recipe["epochs"], "--batch-size", recipe["batch"], "--device", "cpu", interleave=True)
    seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    chance = 1 / len(json.loads((store / "zarr.json").read_text())["attributes"]["jdct"]["classes"])
    best = max(m["val_top1"] for m in lines)
    print(f"  learned: train loss {lines[0]['train_loss']:.2f} -> {lines[-1]['train_loss']:.2f}, val top-1 "
          f"{100 * lines[-1]['val_top1']:.1f}% after {len(lines)} epochs (best {100 * best:.1f}%, chance "
          f"{100 * chance:.0f}%), {seconds:.0f} s of training")
    if demo.imagenette is not None and lines[-1]["val_top1"] < 2 * chance:
        raise DemoFailed(f"the imagenette run ended at {100 * lines[-1]['val_top1']:.1f}% val top-1, not clearly "
                         f"above chance ({100 * chance:.0f}%)")
    proc = demo.run_jdct("eval", "--checkpoint", run / "best.pt", "--json")
    if json.loads(proc.stdout)["top1"] != best:
        raise DemoFailed("eval did not reproduce the best val top-1 logged during training")
    print(f"  eval of best.pt on its training store reproduces the best logged val top-1 ({100 * best:.1f}%)")
    # two val images of different classes, through the val transform the network was trained with
    classes = sorted(p.name for p in (src / "val").iterdir())
    images = [sorted((src / "val" / cls).iterdir())[0] for cls in (classes[0], classes[len(classes) // 2])]
    names = demo.out / "class-names.txt"
    readable = IMAGENETTE_NAMES if demo.imagenette is not None else {c: c for c in classes}
    names.write_text("".join(f"{c}\t{readable.get(c, c)}\n" for c in classes))
    print("  true classes: " + ", ".join(f"{p.name}: {readable.get(p.parent.name, p.parent.name)}" for p in images)
          + f" (a network at {100 * best:.0f}% top-1 gets many of them wrong)")
    demo.run_jdct("predict", "--checkpoint", run / "best.pt", "--class-names", names, *images)
    export = demo.out / "model.pt"
    demo.run_jdct("export", run / "best.pt", export)


def main() -> int:
    out = Path(os.environ.get("JDCT_DEMO_OUT", REPO / "demo-out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shared = Path(os.environ.get("JDCT_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    demo = Demo(out=out, shared=shared if shared.is_dir() else None)
    begun = time.perf_counter()
    print(f"jdct demo: {len(STEPS)} steps, outputs in {_short(out)}", flush=True)
    for number, (title, func) in enumerate(STEPS, 1):
        print(f"\n[{number}/{len(STEPS)}] {title}", flush=True)
        started = time.perf_counter()
        try:
            func(demo)
        except DemoFailed as exc:
            print(f"\ndemo step {number} ({title}) failed: {exc}", file=sys.stderr)
            return 1
        print(f"  ({time.perf_counter() - started:.1f} s)")
    print(f"\ndone in {time.perf_counter() - begun:.0f} s: see {_short(out)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
