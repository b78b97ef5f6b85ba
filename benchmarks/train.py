"""Training benchmark: the same recipe for ResNet-50 on RGB and two DCT networks, on one store.

    python3 benchmarks/train.py --data imagenette-224.zarr [--epochs 16] [--batch-size 128]
                                [--arch resnet50_rgb upsampling_rfa late_concat_rfa_thinner]
                                [--device cuda] [--out bench-runs] [--threads 8]

The store comes from ``jdct convert`` (for the issue's comparison: ``jdct convert
../shared/data/imagenette-5k imagenette-224.zarr --size 224``). Every architecture trains with
:func:`jdct_cli.train.train` (the code ``jdct train`` runs) for the same epochs, batch size, LR and
seed, each in its own run directory under ``--out``. Reported per architecture: final and best val
top-1, training images/s (mean over epochs after the first, which includes warm-up/compilation)
and wall time per epoch (training + validation), plus images/s as a ratio to the first
architecture (the reference, ``resnet50_rgb`` by default). Figures go to stdout as a Markdown
table and to ``--out/results.json``.

What "images/s" measures: the whole training step as ``jdct train`` runs it (loader delivery,
forward, backward, SGD step), not inference; the DCT networks also read fewer input bytes.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEFAULT_ARCHS = ("resnet50_rgb", "upsampling_rfa", "late_concat_rfa_thinner")


def run_one(arch: str, args) -> dict:
    from jdct_cli.config import build_config
    from jdct_cli.train import train

    out = Path(args.out) / arch
    shutil.rmtree(out, ignore_errors=True)
    cfg = build_config(arch=arch, data=args.data, out=str(out), epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, device=args.device, threads=args.threads, seed=0)
    started = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - started
    hist = result.history
    steady = hist[1:] or hist
    return {
        "arch": arch,
        "epochs": len(hist),
        "final_val_top1": hist[-1]["val_top1"],
        "best_val_top1": result.best_top1,
        "images_per_s": sum(m["images_per_s"] for m in steady) / len(steady),
        "epoch_time_s": sum(m["epoch_time_s"] for m in steady) / len(steady),
        "wall_s": wall,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="jdct store (jdct convert)")
    ap.add_argument("--arch", nargs="+", default=list(DEFAULT_ARCHS), help="first = reference")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None, help="default: 0.1 x batch / 256")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="loader threads")
    ap.add_argument("--out", default="bench-runs")
    args = ap.parse_args(argv)

    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    rows = []
    for arch in args.arch:
        print(f"training {arch} ...", file=sys.stderr, flush=True)
        rows.append(run_one(arch, args))
    ref = rows[0]["images_per_s"]
    print(f"\nDevice: {name}; store {args.data}; {args.epochs} epochs, batch {args.batch_size}, torch {torch.__version__}\n")
    print("| architecture | final val top-1 | best val top-1 | train images/s | ratio to reference | s/epoch |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arch']} | {100 * r['final_val_top1']:.2f}% | {100 * r['best_val_top1']:.2f}% | "
              f"{r['images_per_s']:.1f} | {r['images_per_s'] / ref:.2f}x | {r['epoch_time_s']:.1f} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps({"device": name, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
