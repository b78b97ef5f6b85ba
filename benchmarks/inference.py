"""Inference throughput of every network of the zoo next to ResNet-50 RGB, in the same run.

For each network: images/s of ``model(*inputs)`` in eval mode at a fixed batch, inputs already on
the device (so this measures the network's compute only, not JPEG decoding nor the host->device
copy the paper partly credits for its DCT speed-ups), in two modes:

- ``eager``: float32, NCHW;
- ``cl_bf16``: ``channels_last`` memory format under ``torch.autocast(dtype=torch.bfloat16)``.

Ratios are against ``resnet50_rgb`` in the same mode and run, printed beside the paper's FPS
ratios (Table 1: FPS / 208, batch 1024 on one Pascal GPU). Each timed pass is clocked on its own,
the networks take turns (pass 1 of every network, then pass 2...), and the *best* pass gives the
figure (the median is printed too): on a CPU shared with other jobs interference only ever slows
a pass down, so the best pass is the steadiest estimate. On CPU,
torch runs single-threaded by default for the same reason (``--threads`` to change it).

    python3 benchmarks/inference.py                       # CPU: batch 8, every network
    python3 benchmarks/inference.py --device cuda         # GPU: batch 256
    python3 benchmarks/inference.py --models upsampling_rfa late_concat --iters 5 --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jdct_cli.models import create_model, get_model_info, list_models  # noqa: E402
from jdct_cli.models.cost import example_inputs, model_cost  # noqa: E402

REFERENCE = "resnet50_rgb"
MODES = ("eager", "cl_bf16")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare(name: str, mode: str, batch: int, size: int, device: torch.device):
    """(model in eval mode, its random inputs, a fresh autocast context factory) for ``mode``."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000).eval().to(device)
    inputs = example_inputs(model.input_kind, size, batch, device=device)
    if mode == "cl_bf16":
        model = model.to(memory_format=torch.channels_last)
        inputs = tuple(x.contiguous(memory_format=torch.channels_last) for x in inputs)
        return model, inputs, lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return model, inputs, contextlib.nullcontext


def timed_pass(model, inputs, autocast, device: torch.device) -> float:
    """Seconds of one forward pass (synchronised on GPU)."""
    with torch.inference_mode(), autocast():
        _sync(device)
        start = time.perf_counter()
        model(*inputs)
        _sync(device)
        return time.perf_counter() - start


def measure_round_robin(names, mode, batch, size, iters, warmup, device) -> dict[str, list[float]]:
    """Pass times per network, the networks taking turns: pass 1 of every network, then pass 2...

    Taking turns spreads each network's passes over the whole run, so a burst of load from other
    jobs slows every network alike instead of the few that happened to run during it.
    """
    prepared = {}
    for name in names:
        prepared[name] = prepare(name, mode, batch, size, device)
        for _ in range(warmup):
            timed_pass(*prepared[name], device)
    times = {name: [] for name in names}
    for _ in range(iters):
        for name in names:
            times[name].append(timed_pass(*prepared[name], device))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 256 on cuda, 8 on cpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=None, help="timed passes (default: 20 cuda, 3 cpu)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed passes (default: 5 cuda, 1 cpu)")
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered network")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on cpu)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (256 if gpu else 8)
    iters = args.iters or (20 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    if args.threads or not gpu:
        torch.set_num_threads(args.threads or 1)
    names = args.models or list_models()
    if REFERENCE in names:
        names.remove(REFERENCE)
    names = [REFERENCE] + names
    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} torch threads"
    print(f"# {where}; torch {torch.__version__}; batch {batch}, {size_str(args.size)}, "
          f"{warmup} warm-up + {iters} timed passes", flush=True)

    results = []
    for mode in args.modes:
        ref = None
        print(f"\n## mode {mode}  (ratios vs {REFERENCE} in this mode; paper ratio = paper FPS / 208)")
        print(f"{'network':26s} {'GMACs':>6s} {'img/s':>8s} {'median':>8s} {'ratio':>6s} {'paper':>6s}")
        times = measure_round_robin(names, mode, batch, args.size, iters, warmup, device)
        for name in names:
            r = {"name": name, "mode": mode, "images_per_s": batch / min(times[name]),
                 "median_images_per_s": batch / statistics.median(times[name]), "pass_s": times[name]}
            if ref is None:
                ref = r
            info = get_model_info(name)
            r["gmacs"] = model_cost(name, args.size).gmacs
            r["ratio"] = r["images_per_s"] / ref["images_per_s"]
            r["paper_fps"] = info.paper_fps
            r["paper_ratio"] = None if info.paper_fps is None else info.paper_fps / 208
            results.append(r)
            paper = "-" if r["paper_ratio"] is None else f"{r['paper_ratio']:.2f}"
            print(f"{name:26s} {r['gmacs']:6.2f} {r['images_per_s']:8.2f} {r['median_images_per_s']:8.2f} "
                  f"{r['ratio']:6.2f} {paper:>6s}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": where, "batch": batch, "size": args.size, "iters": iters,
                                         "warmup": warmup, "results": results}, indent=2))
    return 0


def size_str(size: int) -> str:
    return f"{size}x{size} pixels"


if __name__ == "__main__":
    raise SystemExit(main())
