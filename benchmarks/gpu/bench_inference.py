"""Inference speed of every zoo network, beside the paper's Table 1 (section 2 of the GPU run).

    python3 benchmarks/gpu/bench_inference.py --results inference.jsonl [--device cuda] [--batch 256]
        [--size 224] [--warmup 5] [--iters 15] [--models NAME ...]

For each network (``jdct_cli.models.list_models()``, ``resnet50_rgb`` first and once more at the
end, so the spread of two measurements of one network is in the figures): eval mode, bf16
autocast, channels_last, ``cudnn.benchmark``, ``torch.inference_mode``; after ``--warmup``
untimed passes, ``--iters`` passes are each timed with CUDA events (on the CPU: the host clock)
and the median gives images/s, in two ways:

- ``gpu_inputs``: random inputs already on the device: the network alone;
- ``with_copy``: every pass first copies one batch from pinned host memory the way a loader
  delivers it, then converts it on the device and runs the network: uint8 pixels ``[B,3,S,S]``
  (/255, ImageNet mean/std) for pixel networks, int16 coefficients ``[B,64,S/8,S/8]`` +
  ``2 x [B,64,S/16,S/16]`` (per-channel scale and shift, as the loader's dequantize + standardize)
  for DCT networks. In 4:2:0 both batches are exactly ``B*S*S*3`` bytes.

The copies alone are timed too (uint8 pixels, int16 coefficients, and float32 pixels: what a
torchvision ``ToTensor + Normalize`` pipeline ships). Inputs are random (never zeros). Every
measurement is appended to ``--results`` as one JSON line as soon as it is made, so a run stopped
by its time box keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from jdct_cli.models import create_model, get_model_info, list_models  # noqa: E402

REFERENCE = "resnet50_rgb"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Timer:
    """Seconds of ``fn()`` on ``device``: CUDA events around it on a GPU, the host clock on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t


def shapes(kind: str, batch: int, size: int) -> list[tuple[int, ...]]:
    if kind == "dct":
        return [(batch, 64, size // 8, size // 8)] + [(batch, 64, size // 16, size // 16)] * 2
    return [(batch, 3, size, size)]


def host_batch(kind: str, batch: int, size: int, pin: bool, gen: torch.Generator) -> list[torch.Tensor]:
    """What a loader hands to the copy: uint8 pixels or int16 coefficients (random, pinned on CUDA)."""
    if kind == "dct":
        out = [torch.randint(-64, 65, s, dtype=torch.int16, generator=gen) for s in shapes(kind, batch, size)]
    else:
        out = [torch.randint(0, 256, s, dtype=torch.uint8, generator=gen) for s in shapes(kind, batch, size)]
    return [t.pin_memory() for t in out] if pin else out


def to_inputs(host: list[torch.Tensor], kind: str, device: torch.device, consts) -> tuple[torch.Tensor, ...]:
    """Copy a host batch to ``device`` and turn it into float32 channels_last network inputs."""
    out = []
    for t, (scale, shift) in zip(host, consts):
        x = t.to(device, non_blocking=True).float()
        if kind != "dct":
            x = x.div_(255.0)
        x = x.mul_(scale).add_(shift)
        out.append(x.contiguous(memory_format=torch.channels_last))
    return tuple(out)


def conversion_constants(kind: str, device: torch.device, gen: torch.Generator):
    """Per-channel (scale, shift) on ``device``: ImageNet normalization for pixels, a dequantize +
    standardize stand-in (positive steps over stds, minus means) for coefficients."""
    if kind == "dct":
        return [((torch.rand(1, 64, 1, 1, generator=gen) * 2 + 0.1).to(device),
                 torch.randn(1, 64, 1, 1, generator=gen).to(device)) for _ in range(3)]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return [((1.0 / std).to(device), (-mean / std).to(device))]


def measure_network(name: str, args, device: torch.device, timer: Timer) -> dict:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    with torch.device(device):  # parameters made on the device: no host init + copy
        model = create_model(name, num_classes=1000)
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    kind = model.input_kind
    inputs = tuple(torch.randn(s, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
                   for s in shapes(kind, args.batch, args.size))
    host = host_batch(kind, args.batch, args.size, device.type == "cuda", gen)
    consts = conversion_constants(kind, device, gen)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), autocast:
        for _ in range(args.warmup):
            model(*inputs)
            model(*to_inputs(host, kind, device, consts))
        plain = [timer(lambda: model(*inputs)) for _ in range(args.iters)]
        copied = [timer(lambda: model(*to_inputs(host, kind, device, consts))) for _ in range(args.iters)]
    info = get_model_info(name)
    rec = {
        "kind": "network", "name": name, "input_kind": kind, "batch": args.batch, "size": args.size,
        "gpu_inputs_pass_s": plain, "with_copy_pass_s": copied,
        "gpu_inputs_images_per_s": args.batch / statistics.median(plain),
        "with_copy_images_per_s": args.batch / statistics.median(copied),
        "paper_fps": info.paper_fps,
        "params": sum(p.numel() for p in model.parameters()),
    }
    if device.type == "cuda":
        rec["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    del model, inputs, host
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rec


def measure_copies(args, device: torch.device, timer: Timer) -> list[dict]:
    """Host-to-device copy of one batch alone, per input representation."""
    gen = torch.Generator().manual_seed(1)
    pin = device.type == "cuda"
    batches = {
        "uint8_pixels": host_batch("rgb", args.batch, args.size, pin, gen),
        "int16_coefficients": host_batch("dct", args.batch, args.size, pin, gen),
        "float32_pixels": [torch.rand(s, generator=gen) for s in shapes("rgb", args.batch, args.size)],
    }
    out = []
    for what, host in batches.items():
        if pin and not host[0].is_pinned():
            host = [t.pin_memory() for t in host]
        for _ in range(max(1, args.warmup)):
            [t.to(device, non_blocking=True) for t in host]
        times = [timer(lambda: [t.to(device, non_blocking=True) for t in host]) for _ in range(args.iters)]
        nbytes = sum(t.numel() * t.element_size() for t in host)
        med = statistics.median(times)
        out.append({"kind": "copy", "what": what, "batch": args.batch, "size": args.size, "bytes": nbytes,
                     "pass_s": times, "median_s": med, "gb_per_s": nbytes / med / 1e9 if med > 0 else None})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True, help="JSON lines are appended here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--models", nargs="+", default=None, help="default: every registered network")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    timer = Timer(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest algorithms, as training uses
    names = args.models or list_models()
    order = [REFERENCE] + [n for n in names if n != REFERENCE] + [REFERENCE]

    def emit(rec: dict) -> None:
        with open(args.results, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    emit({"kind": "start", "device": str(device), "torch": torch.__version__, "batch": args.batch, "size": args.size,
          "warmup": args.warmup, "iters": args.iters,
          "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"})
    for rec in measure_copies(args, device, timer):
        emit(rec)
    for i, name in enumerate(order):
        try:
            rec = measure_network(name, args, device, timer)
            rec["repeat"] = i == len(order) - 1
        except Exception as exc:  # one network failing must not hide the others
            rec = {"kind": "network", "name": name, "error": f"{type(exc).__name__}: {exc}"[:2000],
                   "repeat": i == len(order) - 1}
        emit(rec)
        print(f"{name:26s} " + (f"{rec['gpu_inputs_images_per_s']:10.1f} img/s  with copy "
                                f"{rec['with_copy_images_per_s']:10.1f}" if "error" not in rec else rec["error"]),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
