"""Loader throughput: DCTLoader batches vs a torchvision-style JPEG pipeline, same source images, same run.

    python3 benchmarks/loader.py [--source ../shared/data/imagenet-originals] [--threads 1 2]
                                 [--size 224] [--batch-size 64] [--seconds 6] [--store STORE.zarr]

Both sides deliver ready float32 batches on the CPU:

- ``dct``: ``DCTLoader(output="dct")`` over a store converted from ``--source`` (``jdct convert``
  defaults: size 224, quality 100, 1 view; converted once into a temporary folder unless
  ``--store`` is given): chunk reads + decompression, shuffling, flip, dequantize + normalize.
- ``reference``: what ``torchvision.datasets.ImageFolder`` + ``RandomResizedCrop(224)`` +
  ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize`` + default collate do, written with
  Pillow/numpy/torch (torchvision is not installed): full Pillow decode to RGB, the same
  RandomResizedCrop box draw as the converter, Pillow's bilinear resize of the box, flip with
  probability 0.5, HWC uint8 -> CHW float in [0, 1] -> ImageNet normalization, ``torch.stack``.
  ``T`` threads decode in parallel (Pillow releases the GIL while decoding and resizing).

Each (pipeline, threads) runs in its own fresh process (so zarr's decompression pool and torch's
intra-op pool get exactly ``T`` threads) for about ``--seconds`` after one warm-up batch. A third
line, ``dct host side``, runs only the CPU half of the loader (``DCTLoader.host_batches``: chunk
reads, shuffling, int16 batch assembly with the flip's column reversal), i.e. the CPU work per batch
of a CUDA run, where the float conversion happens on the GPU. A fourth, ``images host side``, is
the CPU half of a GPU run over an images store (``jdct convert --layout images``, converted once
like the crops store): ``DCTLoader.host_batches()`` of that store, i.e. per batch the chunks of
JPEG bytes read, a fresh RandomResizedCrop box per sample and epoch, each sample's header and
crop geometry (``transforms.crop_geometry``), the batch laid out (``augment.HostBatch``) and ONE
``read_coefficient_rects_batch`` call on ``T`` C threads decoding every rectangle into it; the
device would then re-encode. ``images raw`` (``--rows ...,images-raw``) is the same decoding
without the loader (one inner chunk of 64 read at a time, rectangles computed here with
``partial_decode.crop_rects``): the loader's own overhead is the difference. ``--limit N`` takes
N files of ``--source`` (spread over its class folders) for a quick run. Reported:
samples/s of wall time and samples per CPU-second of the process (all its threads): on a shared
machine the latter is the honest "per core" figure. Ratios are dct / reference. ``--device cuda``
delivers both pipelines' batches to the GPU (the reference through pinned memory, as
``DataLoader(pin_memory=True)``), timing until the copies have finished.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from jdct_cli.convert import ConvertOptions, convert
from jdct_cli.convert.lifeline import die_with_parent
from jdct_cli.transforms import random_resized_crop_box
from partial_decode import crop_rects

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = (HERE.parent.parent / "shared" / "data" / "imagenet-originals").resolve()


def _images(source: Path) -> list[Path]:
    return sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


def run_reference(source: Path, threads: int, size: int, batch: int, seconds: float, device: str = "cpu") -> dict:
    import torch

    torch.set_num_threads(1)  # the T threads are the decoding threads (no OpenMP spinning in the figures)
    paths = _images(source)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def sample(i: int):
        rng = np.random.default_rng(i)
        with Image.open(paths[i % len(paths)]) as im:
            im = im.convert("RGB")
            x, y, w, h = random_resized_crop_box(rng, *im.size)
            im = im.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + w, y + h))
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            t = torch.from_numpy(np.asarray(im)).permute(2, 0, 1).float().div_(255.0)
        return t.sub_(mean).div_(std), i % 1000

    pool = ThreadPoolExecutor(threads)

    def batches():
        i = 0
        while True:
            items = list(pool.map(sample, range(i, i + batch)))
            i += batch
            x, labels = torch.stack([t for t, _ in items]), torch.tensor([lab for _, lab in items])
            if device != "cpu":  # what DataLoader(pin_memory=True) + .to(device) does
                x, labels = x.pin_memory().to(device, non_blocking=True), labels.to(device)
            yield x, labels

    return _measure(batches(), seconds, device)


def run_dct(store: Path, threads: int, batch: int, seconds: float, host_only: bool = False,
            device: str = "cpu") -> dict:
    import torch
    import zarr

    # zarr decompresses in its own thread pool: give it exactly `threads` workers, like the loader.
    zarr.config.set({"threading.max_workers": threads})
    torch.set_num_threads(1)
    from jdct_cli.data import DCTLoader

    loader = DCTLoader(store, "train", batch_size=batch, threads=threads, shuffle=True, flip=True, drop_last=True,
                       device=device)

    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            if host_only:  # what a CUDA run does on the CPU: int16 batches ready to copy
                for y, cb, cr, labels, flips in loader.host_batches():
                    yield y, labels
            else:
                for (y, cb, cr), labels in loader:
                    yield y, labels
            epoch += 1

    return _measure(batches(), seconds, device)


_FACTORS = {"grayscale": [(1, 1)], "4:2:0": [(2, 2), (1, 1), (1, 1)], "4:2:2": [(2, 1), (1, 1), (1, 1)],
            "4:4:4": [(1, 1), (1, 1), (1, 1)]}


def _components(width: int, height: int, sampling: str) -> list[dict]:
    """The component grids of a stored image from its facts (no header to parse: the store has them)."""
    factors = _FACTORS[sampling]
    hmax, vmax = max(f[0] for f in factors), max(f[1] for f in factors)
    out = []
    for h, v in factors:
        bw, bh = -(-width * h // (8 * hmax)), -(-height * v // (8 * vmax))
        out.append({"h": h, "v": v, "blocks_wide": -(-bw // h) * h, "blocks_high": -(-bh // v) * v})
    return out


def run_images_loader(store: Path, threads: int, size: int, batch: int, seconds: float) -> dict:
    """``DCTLoader.host_batches()`` of an images store: the CPU work of a GPU run (module docstring)."""
    import torch
    import zarr

    zarr.config.set({"threading.max_workers": threads})
    torch.set_num_threads(1)
    from jdct_cli.data import DCTLoader

    loader = DCTLoader(store, "train", batch_size=batch, threads=threads, shuffle=True, flip=True, drop_last=True,
                       size=size)

    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)  # a fresh box for every sample in every epoch
            for host_batch, labels in loader.host_batches():
                yield host_batch, labels
            epoch += 1

    return _measure(batches(), seconds)


def run_images_host(store: Path, threads: int, size: int, batch: int, seconds: float) -> dict:
    """The images layout's decoding without the loader (``images raw``; module docstring)."""
    import torch
    import warnings
    import zarr

    from jdct_cli import jpeg

    warnings.simplefilter("ignore")  # zarr's note on variable_length_bytes (jdct's readers silence it too)
    zarr.config.set({"threading.max_workers": threads})
    torch.set_num_threads(1)
    group = zarr.open_group(str(store), mode="r")
    arr = group["train/jpeg"]
    n = arr.shape[1]
    chunk = arr.chunks[1]
    labels, widths, heights, samplings = (group[f"train/{a}"][0, :] for a in ("label", "width", "height", "sampling"))
    names = group.attrs["jdct"]["samplings"]
    nchunks = -(-n // chunk)
    out = np.empty(batch * 3 * 64 * 64 * 64, np.int16)  # grows when a batch needs more

    def batches():
        nonlocal out
        epoch = 0
        while True:
            rng = np.random.default_rng([epoch])
            for c in rng.permutation(nchunks):  # shuffled chunk order; a batch = one chunk (64)
                s0, s1 = int(c) * chunk, min(n, int(c) * chunk + chunk)
                datas = arr[0, s0:s1]
                keep = [i for i in range(s1 - s0) if labels[s0 + i] >= 0]
                rects = np.zeros((len(keep), 3, 4), np.int64)
                for j, i in enumerate(keep):
                    k = s0 + i
                    w, h = int(widths[k]), int(heights[k])
                    head = {"width": w, "height": h, "components": _components(w, h, names[samplings[k]])}
                    box = random_resized_crop_box(np.random.default_rng([epoch, k]), w, h)
                    r = crop_rects(head, box, size)
                    rects[j, :len(r)] = r
                sizes = (rects[:, :, 2] - rects[:, :, 0]) * (rects[:, :, 3] - rects[:, :, 1]) * 64
                offsets = np.concatenate([[0], np.cumsum(sizes.ravel())[:-1]]).reshape(sizes.shape)
                if sizes.sum() > out.size:
                    out = np.empty(int(sizes.sum() * 1.25), np.int16)
                res = jpeg.read_coefficient_rects_batch([datas[i] for i in keep], rects, out, offsets,
                                                        threads=threads)
                flips = rng.random(len(keep)) < 0.5
                yield out, torch.from_numpy(labels[s0:s1][keep].astype(np.int64)), flips, res
            epoch += 1

    return _measure(((o, lab) for o, lab, *_ in batches()), seconds)


def _subset(source: Path, limit: int, out: Path) -> Path:
    """A tree of symbolic links to ``limit`` JPEGs of ``source`` (ImageFolder layout, train/ when
    there is one), taken evenly over its sorted list so that every class folder contributes."""
    root = source / "train" if (source / "train").is_dir() else source
    files = _images(root)
    picked = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(limit, len(files)))]
    for f in picked:
        rel = f.relative_to(root)
        dest = out / "train" / (rel if len(rel.parts) > 1 else Path("all") / rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(f.resolve())
    return out


def _measure(it, seconds: float, device: str = "cpu") -> dict:
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    next(it)  # warm-up: imports, first reads, pools started
    sync()
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        x, labels = next(it)
        n += len(labels)
    sync()  # batches count once they are really on the device
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"samples": n, "wall_s": wall, "cpu_s": cpu, "per_s": n / wall, "per_cpu_s": n / cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--store", type=Path, help="an existing store converted from --source (default: convert one)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--device", default="cpu", help="where batches are delivered (cuda: samples/s to the GPU)")
    ap.add_argument("--codec", choices=["zstd", "lz4"], default=None,
                    help="chunk codec of the crops store converted here (default: jdct convert's)")
    ap.add_argument("--images-store", type=Path, help="an existing images store of --source (default: convert one)")
    ap.add_argument("--restart-segments", action="store_true",
                    help="convert the images store with --restart-segments (the loader then decodes a crop's "
                         "restart segments only)")
    ap.add_argument("--rows", default="reference,dct,dct-host,images-host",
                    help="which pipelines to run (comma-separated; also images-raw)")
    ap.add_argument("--limit", type=int, help="use only this many files of --source (spread over its classes)")
    ap.add_argument("--worker", choices=["dct", "dct-host", "reference", "images-host", "images-raw"],
                    help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker == "reference":
        print(json.dumps(run_reference(args.source, args.threads[0], args.size, args.batch_size, args.seconds,
                                       args.device)))
        return
    if args.worker in ("dct", "dct-host"):
        print(json.dumps(run_dct(args.store, args.threads[0], args.batch_size, args.seconds,
                                 host_only=args.worker == "dct-host", device=args.device)))
        return
    if args.worker in ("images-host", "images-raw"):
        run = run_images_loader if args.worker == "images-host" else run_images_host
        print(json.dumps(run(args.images_store, args.threads[0], args.size, args.batch_size, args.seconds)))
        return

    if not args.source.is_dir():
        sys.exit(f"source not found: {args.source} (pass --source)")
    rows_wanted = args.rows.split(",")
    tmp = tempfile.TemporaryDirectory(prefix="jdct-bench-")
    if args.limit:
        args.source = _subset(args.source, args.limit, Path(tmp.name) / "source")
        print(f"{args.limit} files of the source, linked into {args.source}", flush=True)
    store, images = args.store, args.images_store
    codec = {} if args.codec is None else {"codec": args.codec}
    if store is None and any(r.startswith("dct") for r in rows_wanted):
        store = Path(tmp.name) / "bench.zarr"
        t = time.perf_counter()
        convert(args.source, store, options=ConvertOptions(size=args.size, views=1, **codec), workers=1)
        print(f"converted {args.source} -> {store} in {time.perf_counter() - t:.1f} s "
              f"({args.codec or 'default'} codec)", flush=True)
    if images is None and ("images-host" in rows_wanted or "images-raw" in rows_wanted):
        images = Path(tmp.name) / "images.zarr"
        t = time.perf_counter()
        convert(args.source, images, options=ConvertOptions(layout="images", size=args.size,
                                                            restart_segments=args.restart_segments), workers=1)
        print(f"converted {args.source} -> {images} (images layout{', restart segments' if args.restart_segments else ''}"
              f") in {time.perf_counter() - t:.1f} s", flush=True)

    def child(kind: str, threads: int) -> dict:
        cmd = [sys.executable, __file__, "--worker", kind, "--threads", str(threads), "--source", str(args.source),
               "--size", str(args.size), "--batch-size", str(args.batch_size), "--seconds", str(args.seconds),
               "--device", args.device]
        if kind.startswith("dct"):
            cmd += ["--store", str(store)]
        if kind.startswith("images"):
            cmd += ["--images-store", str(images)]
        # die_with_parent: a benchmark that is killed takes its measuring child with it
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             preexec_fn=die_with_parent)
        return json.loads(out.stdout.strip().splitlines()[-1])

    rows = []
    names = {"dct": f"dct (float batches on {args.device})", "dct-host": "dct host side (int16, as for a GPU)",
             "images-host": "images host side (DCTLoader, fresh crops)",
             "images-raw": "images raw decoding (no loader)"}
    for threads in args.threads:
        ref = child("reference", threads)
        row = {"threads": threads, "reference": ref}
        print(f"threads={threads}  reference {ref['per_s']:7.1f}/s {ref['per_cpu_s']:7.1f}/cpu-s", flush=True)
        for kind in ("dct", "dct-host", "images-host", "images-raw"):
            if kind not in rows_wanted:
                continue
            r = row[kind.replace("-", "_")] = child(kind, threads)
            print(f"  {names[kind]:38s} {r['per_s']:7.1f}/s {r['per_cpu_s']:7.1f}/cpu-s   ratio wall "
                  f"{r['per_s'] / ref['per_s']:5.1f}x  per core {r['per_cpu_s'] / ref['per_cpu_s']:5.1f}x", flush=True)
        rows.append(row)
    print(json.dumps({"source": str(args.source), "size": args.size, "batch_size": args.batch_size, "device": args.device,
                      "codec": args.codec, "restart_segments": args.restart_segments, "results": rows}))
    tmp.cleanup()


if __name__ == "__main__":
    main()
