"""Loader delivery: samples/s of ready batches on the device (section 3 of the GPU run).

    python3 benchmarks/gpu/bench_loader.py --mode dct --threads 4 --store STORE --results loader.jsonl
    python3 benchmarks/gpu/bench_loader.py --mode torchvision --threads 4 --source DATA/train --results ...
    python3 benchmarks/gpu/bench_loader.py --mode nvjpeg --threads 4 --source DATA/train --results ...

One pipeline, one thread count per process (so that zarr's decompression pool, DataLoader's
workers and torch's thread pools are sized exactly once). After two warm-up batches, batches are
pulled for ``--seconds`` and the device is synchronized before the clock stops: a batch counts
once it is really on the device, converted and ready for the network.

- ``dct``: :class:`jdct_cli.data.DCTLoader` over a store (train split: shuffle, flip, drop_last),
  ``threads`` chunk readers and as many zarr decompression workers; ``--output dct`` (the DCT
  networks' coefficients) or ``rgb`` (pixels rebuilt on the device, what the pixel baselines train on).
- ``torchvision``: the pytorch/examples ImageNet pipeline: ``ImageFolder`` + ``RandomResizedCrop`` +
  ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize`` (Pillow decode), ``DataLoader`` with
  ``threads`` workers and pinned memory, then ``.to(device, non_blocking=True)``.
- ``nvjpeg``: ``torchvision.io.decode_jpeg`` on the GPU: ``threads`` host threads read the files,
  one batched GPU decode, then RandomResizedCrop (antialiased) + flip per image on the GPU,
  stack, normalize, channels_last (the pixel path a user would pick on a GPU machine).

Appends one JSON line to ``--results``: samples, seconds, samples/s, and the CPU seconds of the
process and its children (DataLoader workers) when psutil is there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cpu_seconds() -> float | None:
    """CPU time of this process and all its descendants so far (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def dct_batches(args, device):
    import zarr

    zarr.config.set({"threading.max_workers": args.threads})
    from jdct_cli.data import DCTLoader

    loader = DCTLoader(args.store, "train", batch_size=args.batch, threads=args.threads, device=device,
                       output=args.output, seed=0)
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for inputs, labels in loader:
            yield (inputs if isinstance(inputs, tuple) else (inputs,)), labels
        epoch += 1


def torchvision_batches(args, device):
    import torch
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomResizedCrop(args.size), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(args.source, tf)
    cuda = device.type == "cuda"
    dl = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                     num_workers=args.threads, pin_memory=cuda, persistent_workers=True,
                                     prefetch_factor=4)
    while True:
        for x, labels in dl:
            x = x.to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            yield (x,), labels.to(device, non_blocking=True)


def nvjpeg_batches(args, device):
    import torch
    from torchvision import transforms
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms import functional as TF

    if device.type != "cuda":
        raise RuntimeError("torchvision.io.decode_jpeg on the GPU needs a CUDA device")
    classes = sorted(p.name for p in Path(args.source).iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((Path(args.source) / c).iterdir())]
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    pool = ThreadPoolExecutor(args.threads)
    gen = torch.Generator().manual_seed(0)
    while True:
        order = torch.randperm(len(files), generator=gen).tolist()
        for start in range(0, len(order) - args.batch + 1, args.batch):
            picked = [files[k] for k in order[start:start + args.batch]]
            datas = list(pool.map(lambda fl: read_file(str(fl[0])), picked))
            images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
            crops = []
            for img in images:
                i, j, h, w = transforms.RandomResizedCrop.get_params(img, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
                crop = TF.resized_crop(img, i, j, h, w, [args.size, args.size], antialias=True)
                if torch.rand(1, generator=gen).item() < 0.5:
                    crop = crop.flip(-1)
                crops.append(crop)
            x = torch.stack(crops).float().div_(255.0).sub_(mean).div_(std)
            labels = torch.tensor([lab for _, lab in picked]).to(device, non_blocking=True)
            yield (x.contiguous(memory_format=torch.channels_last),), labels


PIPELINES = {"dct": dct_batches, "torchvision": torchvision_batches, "nvjpeg": nvjpeg_batches}


def measure(batches, seconds: float, device) -> dict:
    import torch

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    for _ in range(2):  # warm-up: imports, pools and workers started, first reads
        next(batches)
    sync()
    first = time.perf_counter() - t
    n = nb = 0
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        inputs, labels = next(batches)
        n += int(labels.shape[0])
        nb += 1
    sync()
    wall = time.perf_counter() - t0
    c1 = cpu_seconds()
    cpu = None if c0 is None or c1 is None else c1 - c0
    return {"samples": n, "batches": nb, "seconds": wall, "per_s": n / wall, "warmup_s": first,
            "cpu_s": cpu, "per_cpu_s": n / cpu if cpu else None,
            "shapes": [list(x.shape) for x in inputs], "dtype": str(inputs[0].dtype),
            "on_device": str(inputs[0].device)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=sorted(PIPELINES), required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--store", help="the store (mode dct)")
    ap.add_argument("--source", help="an ImageFolder split of JPEGs (modes torchvision, nvjpeg)")
    ap.add_argument("--output", default="dct", choices=("dct", "rgb"), help="DCTLoader output (mode dct)")
    ap.add_argument("--layout", default="crops", help="the store's layout (reported only)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224, help="crop size of the JPEG pipelines")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # the pipelines' own threads/workers are what is compared
    device = torch.device(args.device)
    rec = {"mode": args.mode, "threads": args.threads, "batch": args.batch, "device": str(device),
           "output": args.output if args.mode == "dct" else "rgb", "layout": args.layout if args.mode == "dct" else None,
           "pid": os.getpid()}
    try:
        rec.update(measure(PIPELINES[args.mode](args, device), args.seconds, device))
    except ImportError as exc:
        rec["skipped"] = f"{exc.name or exc} is not installed"
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    with open(args.results, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)
    # DataLoader workers and reader threads end with the process; do not wait on their queues
    os._exit(0 if "error" not in rec else 1)


if __name__ == "__main__":
    main()
