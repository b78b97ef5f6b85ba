"""Device augmentation throughput (issue 12): the decode-free part of the images layout's device
step, from the CPU side's block rectangles to model inputs, against the crops layout's CPU recipe
for the same boxes, same run.

    python3 benchmarks/device_augment.py [--source DIR ...] [--device cpu|cuda] [--threads 1 2]
                                         [--batch 64] [--size 224] [--seconds 8] [--files 256]
                                         [--exact-resize] [--results FILE.jsonl]

- ``device``: :class:`jdct_cli.jpegmath.augment.HostBatch` (made beforehand from whole-file
  coefficients by ``pack_reference``, RandomResizedCrop boxes and flips drawn per sample, pinned
  memory on CUDA) -> ``to_device`` -> ``reencode`` (scaled IDCT, chroma upsampling, colour,
  per-sample crop + resize + flip, 4:2:0 re-encode at quality 100) -> ``coefficients_to_inputs``
  (dequantized ``"dct"`` inputs, channels_last on CUDA). ``--batches`` different host batches are
  cycled for about ``--seconds`` after one warm-up batch; on CUDA the clock stops once the device
  has finished. torch gets ``T`` intra-op threads (``--threads``).
- ``reference``: what the crops layout does per sample on the CPU, one thread:
  ``transforms.crop_to_rgb`` (libjpeg decode of the box's window at the same M/8, Pillow-exact
  resize) + ``forward_dct`` (C), for the same boxes. Not a pipeline of the images layout: a yardstick
  that runs everywhere, so that the device figure comes with a ratio measured in the same run.

Reported per source: samples/s of wall time (and per CPU-second of the process on the CPU), and
device / reference. Each row is also appended to ``--results`` as a JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from jdct_cli import jpeg, transforms  # noqa: E402
from jdct_cli.errors import JdctError  # noqa: E402
from jdct_cli.jpegmath.quant import ijg_tables  # noqa: E402
from jdct_cli.jpegmath.sample import crop_coefficients  # noqa: E402

SHARED = (HERE.parent.parent / "shared" / "data").resolve()
DEFAULT_SOURCES = [SHARED / "imagenet-originals", SHARED / "imagenette-5k" / "train"]


def load_files(source: Path, count: int) -> list[tuple[Path, bytes, dict, object]]:
    """Up to ``count`` JPEGs of ``source`` (evenly spaced in sorted order) that the device path takes:
    ``(path, bytes, header, coefficients)``."""
    paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    step = max(1, len(paths) // count)
    out = []
    for p in paths[::step][:count]:
        data = p.read_bytes()
        try:
            header = jpeg.read_header(data, path=p)
            if header["color_space"] not in ("YCbCr", "GRAYSCALE"):
                continue
            out.append((p, data, header, jpeg.read_coefficients(data, path=p)))
        except JdctError:
            continue
    return out


def draw(files, n: int, size: int, seed: int):
    """``n`` samples: ``(file, geometry, box, flip)`` with torchvision's RandomResizedCrop boxes."""
    rng = np.random.default_rng(seed)
    samples = []
    for k in range(n):
        f = files[int(rng.integers(len(files)))]
        header = f[2]
        w, h = header["width"], header["height"]
        box = transforms.random_resized_crop_box(rng, w, h)
        factors = [(c["h"], c["v"]) for c in header["components"]]
        geometry = transforms.crop_geometry(w, h, factors, box, size)
        samples.append((f, geometry, box, bool(rng.random() < 0.5)))
    return samples


def run_device(batches, device: str, threads: int, seconds: float, exact_resize: bool) -> dict:
    import torch

    from jdct_cli.data import coefficients_to_inputs, device_constants
    from jdct_cli.jpegmath import augment

    torch.set_num_threads(threads)
    luma, chroma = ijg_tables(100)
    consts = device_constants({"y": luma, "cb": chroma, "cr": chroma}, None, output="dct", normalize=False,
                              device=device)
    cuda = device.startswith("cuda")

    def step(hb):
        db = augment.to_device(hb, device)
        planes = augment.reencode(db, exact_resize=exact_resize)
        return coefficients_to_inputs(planes, consts, "dct", channels_last=cuda)

    step(batches[0])  # warm-up: kernels, caches, allocator
    if cuda:
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    n = k = 0
    while time.perf_counter() - t0 < seconds or k < 2:
        hb = batches[k % len(batches)]
        step(hb)
        n += len(hb)
        k += 1
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    row = {"pipeline": "device", "device": device, "threads": threads, "samples": n, "batches": k,
           "seconds": round(wall, 3), "per_s": n / wall, "exact_resize": exact_resize}
    if not cuda:
        row["per_cpu_s"] = n / cpu
    if cuda:
        row["gpu"] = torch.cuda.get_device_name(device)
    return row


def run_reference(samples, size: int, seconds: float) -> dict:
    t0 = time.perf_counter()
    n = 0
    for (path, data, header, _), _, box, _ in samples:
        rgb = transforms.crop_to_rgb(data, header["width"], header["height"], box, size, path=path)
        crop_coefficients(rgb, 100)
        n += 1
        if time.perf_counter() - t0 > seconds:
            break
    wall = time.perf_counter() - t0
    return {"pipeline": "reference", "device": "cpu", "threads": 1, "samples": n, "seconds": round(wall, 3),
            "per_s": n / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", nargs="+", type=Path, default=None, help="JPEG folders (default: imagenet-originals "
                    "and imagenette-5k/train of ../shared/data)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8, help="different host batches cycled through")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--files", type=int, default=256, help="JPEGs read per source")
    ap.add_argument("--exact-resize", action="store_true", help="Pillow's two rounded passes (float64)")
    ap.add_argument("--no-reference", action="store_true", help="skip the CPU recipe's figure")
    ap.add_argument("--results", type=Path, default=None, help="append one JSON line per row")
    args = ap.parse_args(argv)

    from jdct_cli.jpegmath import augment

    cuda = args.device.startswith("cuda")
    rows = []
    for source in args.source or DEFAULT_SOURCES:
        if not source.is_dir():
            print(f"{source}: not found, skipped", file=sys.stderr)
            continue
        files = load_files(source, args.files)
        if not files:
            print(f"{source}: no usable JPEG, skipped", file=sys.stderr)
            continue
        samples = draw(files, args.batch * args.batches, args.size, seed=0)
        batches = [augment.pack_reference([(g, f[3], flip) for f, g, _, flip in samples[i:i + args.batch]],
                                          args.size, pin=cuda)
                   for i in range(0, len(samples), args.batch)]
        found = []
        if not args.no_reference:
            ref = run_reference(samples, args.size, min(args.seconds, 10.0))
            found.append(ref)
        for t in args.threads:
            found.append(run_device(batches, args.device, t, args.seconds, args.exact_resize))
        for row in found:
            row.update({"source": source.name, "batch": args.batch, "size": args.size, "files": len(files)})
            if not args.no_reference and row["pipeline"] == "device":
                row["ratio"] = row["per_s"] / found[0]["per_s"]
            rows.append(row)
            if args.results:
                with open(args.results, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(f"{'source':<20} {'pipeline':<10} {'device':<8} {'threads':>7} {'samples/s':>10} {'per CPU-s':>10} "
          f"{'x reference':>11}")
    for r in rows:
        print(f"{r['source']:<20} {r['pipeline']:<10} {r['device']:<8} {r['threads']:>7} {r['per_s']:>10.1f} "
              f"{r.get('per_cpu_s', float('nan')):>10.1f} {r.get('ratio', float('nan')):>11.2f}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
