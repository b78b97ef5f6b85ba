"""Images/s from JPEG files on disk to top-5 labels on the CPU, jdct's DCT path against ResNet-50
on Pillow's pixels, in the same run.

Pipelines (each a pool of ``T`` reader threads ahead of batched inference, torch on ``T`` threads,
float32, batch ``--batch``):

- ``late_concat_rfa_thinner --direct`` and ``upsampling --direct``: ``jdct_cli.predict``
  (each file's own coefficients when it is 4:2:0 with sides multiple of 16, else the val
  transform; files grouped by block-grid size);
- ``resnet50_rgb`` + Pillow: decode, resize the shorter side to 256 (bilinear), centre crop 224,
  ImageNet normalization, what a torchvision-style pipeline does.

Networks are freshly initialised (seeded; speed does not depend on the weights); the timed span is
the whole path from the file list to the top-5 indices, with the files already in the page cache
(read once before). Each file's top-1 label must be identical between that batched run and a
batch-1 run over the first ``--check`` files (the script exits 1 otherwise).

Data: ../shared/data (or $JDCT_SHARED_DATA): imagenette-5k val (224x224 4:2:0 q75: direct except
the grayscale ones) and imagenet-originals (the real ImageNet mix: most files are 4:4:4 or of
sizes that are not multiples of 16, so --direct falls back to the val transform for them; the few
direct ones run at their own size, ~15x the pixels of a 224 crop).

    python3 benchmarks/predict.py                         # both data sets, 1 and 2 threads
    python3 benchmarks/predict.py --limit 400 --threads 1 --json out.json
    python3 benchmarks/predict.py --device cuda --threads 8 --batch 256 --source imagenette/val   # GPU run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jdct_cli.jpegmath.quant import ijg_tables  # noqa: E402
from jdct_cli.models import create_model  # noqa: E402
from jdct_cli.predict import Predictor, iter_predictions  # noqa: E402

SHARED = Path(os.environ.get("JDCT_SHARED_DATA", REPO.parent / "shared" / "data"))
DATASETS = {"imagenette-val": ("imagenette-5k/val", "*.JPEG"), "imagenet-originals": ("imagenet-originals", "*.JPEG")}
DCT_NETS = ("late_concat_rfa_thinner", "upsampling")
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def store_facts(size: int = 224) -> dict:
    """Training-store facts for an untrained network: val transform at ``size``, quality 100,
    identity statistics (the input BatchNorm normalizes anyway)."""
    luma, chroma = (np.asarray(t, dtype=np.int64).tolist() for t in ijg_tables(100)[:2])
    stats = {n: {"mean": [0.0] * 64, "std": [1.0] * 64} for n in ("y", "cb", "cr")}
    return {"size": size, "quality": 100, "quant_tables": {"luma": luma, "chroma": chroma}, "stats": stats,
            "transform": {"exif": "ignore", "exact_decode": False}}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def jdct_run(name: str, files: list[str], batch: int, threads: int, device: str = "cpu"
             ) -> tuple[float, list[int], Counter]:
    """(seconds, top-1 per file, modes) of jdct predict --direct with network ``name``."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000)
    pred = Predictor(model, "dct", store_facts(), [str(i) for i in range(1000)], arch=name, device=device,
                     direct=True, top_k=5)
    _sync(device)
    t0 = time.perf_counter()
    records = list(iter_predictions(pred, files, batch_size=batch, threads=threads))
    _sync(device)
    seconds = time.perf_counter() - t0
    bad = [r for r in records if "error" in r]
    if bad:
        raise SystemExit(f"{name}: {len(bad)} files failed, e.g. {bad[0]}")
    return seconds, [r["top"][0]["index"] for r in records], Counter(r["mode"] for r in records)


def _pillow_pixels(path: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = 256 / min(w, h)
        im = im.resize((max(256, round(w * scale)), max(256, round(h * scale))), Image.Resampling.BILINEAR)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        im = im.crop((left, top, left + 224, top + 224))
        return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)


def pillow_run(files: list[str], batch: int, threads: int, device: str = "cpu") -> tuple[float, list[int], Counter]:
    """(seconds, top-1 per file, modes) of resnet50_rgb on Pillow's decode + resize + centre crop."""
    torch.manual_seed(0)
    model = create_model("resnet50_rgb", num_classes=1000).eval().to(device)
    mean, std = IMAGENET_MEAN.to(device), IMAGENET_STD.to(device)
    cuda = device.startswith("cuda")
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    labels: list[int] = []
    _sync(device)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool, torch.inference_mode():
        window: deque = deque()
        pending = iter(files)
        done = False
        while True:
            while not done and len(window) < batch + 2 * threads:
                f = next(pending, None)
                if f is None:
                    done = True
                else:
                    window.append(pool.submit(_pillow_pixels, f))
            if not window:
                break
            take = torch.stack([window.popleft().result() for _ in range(min(batch, len(window)))])
            if cuda:
                take = take.pin_memory().to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            x = (take.float().div_(255) - mean) / std
            top = torch.softmax(model(x), 1).topk(5, dim=1).indices
            labels.extend(top[:, 0].tolist())
    _sync(device)
    return time.perf_counter() - t0, labels, Counter({"pillow-224": len(files)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--limit", type=int, default=96, help="files per data set (evenly spaced over the sorted list)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--check", type=int, default=24, help="files whose batch-1 labels are compared")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (then --threads are reader threads only)")
    ap.add_argument("--source", metavar="FOLDER", help="classify the JPEGs under FOLDER instead of --datasets")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    sources = {"source": Path(args.source)} if args.source else {ds: SHARED / DATASETS[ds][0] for ds in args.datasets}
    if not all(p.is_dir() for p in sources.values()):
        print(f"no JPEG folder at {', '.join(map(str, sources.values()))} (set JDCT_SHARED_DATA or --source)",
              file=sys.stderr)
        return 2
    device = args.device
    rows, mismatches = [], 0
    for ds, folder in sources.items():
        every = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
        files = every[:: max(1, len(every) // args.limit)][: args.limit]
        for f in files:  # into the page cache: the benchmark times decoding and inference, not the disk
            Path(f).read_bytes()
        for threads in args.threads:
            if device == "cpu":
                torch.set_num_threads(threads)
            runs = [(name, lambda f, b, n=name: jdct_run(n, f, b, threads, device)) for name in DCT_NETS]
            runs.append(("resnet50_rgb", lambda f, b: pillow_run(f, b, threads, device)))
            base = None
            for name, run in runs:
                seconds, labels, modes = run(files, args.batch)
                _, one, _ = run(files[: args.check], 1)
                same = sum(a == b for a, b in zip(one, labels))
                mismatches += len(one) - same
                ips = len(files) / seconds
                if name == "resnet50_rgb":
                    base = ips
                rows.append({"dataset": ds, "device": device, "threads": threads, "network": name, "images": len(files),
                             "seconds": round(seconds, 3), "images_per_s": round(ips, 2), "modes": dict(modes),
                             "batch1_labels_identical": f"{same}/{len(one)}"})
                print(f"{ds:19s} T={threads} {name:24s} {ips:7.2f} img/s  {dict(modes)}  batch-1 labels {same}/{len(one)}",
                      flush=True)
            for r in rows:
                if r["dataset"] == ds and r["threads"] == threads:
                    r["vs_resnet50_rgb_pillow"] = round(r["images_per_s"] / base, 3)
    print("\n| data | threads | network | images/s | vs resnet50_rgb + Pillow | modes | batch-1 labels |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        modes = ", ".join(f"{k} {v}" for k, v in r["modes"].items())
        print(f"| {r['dataset']} | {r['threads']} | {r['network']} | {r['images_per_s']:.2f} | "
              f"{r['vs_resnet50_rgb_pillow']:.2f}x | {modes} | {r['batch1_labels_identical']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"batch": args.batch, "device": device, "rows": rows}, indent=2))
    if mismatches:
        print(f"FAIL: {mismatches} files got another top-1 label at batch 1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
