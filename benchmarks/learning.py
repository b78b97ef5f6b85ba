"""Learning check: does a short run at the recipe's defaults start near chance and learn at once?

    python3 benchmarks/learning.py [--size 32] [--epochs 4] [--batch-size 64]
                                   [--arch late_concat_rfa_thinner resnet50_rgb]
                                   [--work bench-learning] [--torch-threads 1] [--label after]

The store is imagenette-5k (``../shared/data/imagenette-5k``, or ``$JDCT_SHARED_DATA``; 10 classes,
4,000 train / 1,000 val images) converted by ``jdct convert``'s library at ``--size`` pixels into
``--work/imagenette-<size>.zarr`` (reused when it is already there). Every architecture trains
with :func:`jdct_cli.train.train` (what ``jdct train`` runs) on the CPU with the same recipe: the
defaults of ``jdct train`` (SGD 0.9, wd 1e-4, LR 0.1 x batch / 256, the default schedule) for
``--epochs`` epochs, seed 0, one process.

Reported per architecture, against chance (10 classes: loss ln 10 = 2.303, top-1 10 %):

- the loss of the very first step (the network at initialization), the mean loss of the first
  and of the last tenth of the first epoch's steps (does it fall from the start?);
- the first epoch's train loss (mean over its steps), every epoch's train loss and val top-1;
- the final val top-1 and the wall time.

Markdown table on stdout, everything (step losses included) in ``--work/results-<label>.json``.
Only public surfaces are used (``build_config``, ``train``, its progress events and result), so
the same script measures any version of jdct: check out another commit and run it there.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

CHANCE_LOSS = math.log(10)


def shared_data() -> Path:
    return Path(os.environ.get("JDCT_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


def make_store(work: Path, size: int) -> Path:
    """imagenette-5k at ``size`` px (train: one RandomResizedCrop view, val: resize + centre crop)."""
    from jdct_cli.convert import ConvertOptions, convert

    src = shared_data() / "imagenette-5k"
    if not src.is_dir():
        raise SystemExit(f"imagenette-5k not found under {src.parent} (set JDCT_SHARED_DATA)")
    store = work / f"imagenette-{size}.zarr"
    convert(src, store, options=ConvertOptions(size=size, shard_samples=512, chunk_samples=64))
    return store


def run_one(arch: str, store: Path, args) -> dict:
    from jdct_cli.config import build_config
    from jdct_cli.train import train

    out = Path(args.work) / f"run-{args.label}-{arch}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = build_config(arch=arch, data=os.fspath(store), out=os.fspath(out), epochs=args.epochs,
                       batch_size=args.batch_size, device="cpu", threads=args.loader_threads, seed=0)
    steps: list[float] = []
    spe = [0]

    def progress(ev):
        if ev["event"] == "start":
            spe[0] = ev["steps_per_epoch"]
        elif ev["event"] == "step":
            steps.append(ev["loss"])
        elif ev["event"] == "epoch_end":
            print(f"  {arch} epoch {ev['epoch']}: train loss {ev['train_loss']:.3f}, val top-1 "
                  f"{100 * ev['val_top1']:.1f}%, {ev['epoch_time_s']:.0f} s", file=sys.stderr, flush=True)

    started = time.perf_counter()
    result = train(cfg, progress=progress)
    wall = time.perf_counter() - started
    hist = result.history
    first = steps[:spe[0]]
    tenth = max(1, len(first) // 10)
    return {
        "arch": arch,
        "steps_per_epoch": spe[0],
        "first_step_loss": first[0],
        "first_tenth_loss": sum(first[:tenth]) / tenth,
        "last_tenth_of_epoch1_loss": sum(first[-tenth:]) / tenth,
        "epoch_train_loss": [m["train_loss"] for m in hist],
        "epoch_val_loss": [m["val_loss"] for m in hist],
        "epoch_val_top1": [m["val_top1"] for m in hist],
        "final_val_top1": hist[-1]["val_top1"],
        "best_val_top1": result.best_top1,
        "wall_s": wall,
        "step_losses": steps,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32, help="crop side in pixels")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--arch", nargs="+", default=["late_concat_rfa_thinner", "resnet50_rgb"])
    ap.add_argument("--work", default="bench-learning", help="store and run directories")
    ap.add_argument("--label", default="run", help="names the run folders and the results file")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads (1: fastest on a small shared machine)")
    ap.add_argument("--loader-threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.torch_threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store = make_store(work, args.size)
    rows = []
    for arch in args.arch:
        print(f"training {arch} ...", file=sys.stderr, flush=True)
        rows.append(run_one(arch, store, args))
    print(f"\nimagenette-5k at {args.size} px, {args.epochs} epochs, batch {args.batch_size}, CPU "
          f"({args.torch_threads} torch thread(s)), torch {torch.__version__}; chance: loss {CHANCE_LOSS:.3f}, "
          "top-1 10%\n")
    print("| architecture | step-1 loss | first / last tenth of epoch 1 | epoch-1 train loss | train loss by epoch "
          "| val top-1 by epoch | final val top-1 | wall |")
    print("|---|---:|---:|---:|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['arch']} | {r['first_step_loss']:.2f} | {r['first_tenth_loss']:.2f} / "
              f"{r['last_tenth_of_epoch1_loss']:.2f} | {r['epoch_train_loss'][0]:.2f} | "
              + ", ".join(f"{v:.2f}" for v in r["epoch_train_loss"]) + " | "
              + ", ".join(f"{100 * v:.1f}%" for v in r["epoch_val_top1"])
              + f" | {100 * r['final_val_top1']:.1f}% | {r['wall_s'] / 60:.1f} min |")
    doc = {"size": args.size, "epochs": args.epochs, "batch_size": args.batch_size, "torch": torch.__version__,
           "torch_threads": args.torch_threads, "label": args.label, "rows": rows}
    (work / f"results-{args.label}.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
