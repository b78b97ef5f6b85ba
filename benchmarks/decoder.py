"""Benchmark of the C boundary jdct_cli._decoder on real ImageNet originals.

Prints ms/image for: Pillow decode (reference), jdct decode, ROI decode of a centred 224x224 region,
read_coefficients, and forward_dct of a 224x224 crop against the reference path encode +
read_coefficients on the same crop (same result, bit for bit). Each figure is the best of
``--repeat`` passes over the same files (in-memory bytes, so disk is not measured); ratios compare
runs made by this script in the same process.

    python3 benchmarks/decoder.py [--data ../shared/data/imagenet-originals] [--limit N] [--repeat 3]
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from jdct_cli import _decoder as dec
from jdct_cli.jpegmath.quant import ijg_tables

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "imagenet-originals"


def best_ms(fn, items, repeat):
    """Best total over ``repeat`` passes of fn(item) for every item, as ms per item."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / len(items)


def centre_roi(size, side=224):
    w, h = size
    rw, rh = min(side, w), min(side, h)
    return ((w - rw) // 2, (h - rh) // 2, rw, rh)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of JPEGs (searched recursively)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N files (0: all)")
    ap.add_argument("--repeat", type=int, default=3, help="passes per measurement; the best is kept")
    ap.add_argument("--quality", type=int, default=100, help="quality for forward_dct / encode")
    args = ap.parse_args(argv)

    paths = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    if args.limit:
        paths = paths[: args.limit]
    blobs = [p.read_bytes() for p in paths]
    heads = [dec.read_header(b) for b in blobs]
    rois = [centre_roi((h["width"], h["height"])) for h in heads]
    crops = []
    for b, h in zip(blobs, heads):
        rgb, _ = dec.decode(b)
        if h["width"] >= 224 and h["height"] >= 224:
            y, x = (h["height"] - 224) // 2, (h["width"] - 224) // 2
            crops.append(np.ascontiguousarray(rgb[y:y + 224, x:x + 224]))
    megapixels = sum(h["width"] * h["height"] for h in heads) / len(heads) / 1e6
    print(f"{len(blobs)} files from {args.data} (mean {megapixels:.2f} MP), libjpeg-turbo {dec.libjpeg_version()}, "
          f"best of {args.repeat}")

    pil = best_ms(lambda b: Image.open(io.BytesIO(b)).convert("RGB").load(), blobs, args.repeat)
    full = best_ms(lambda b: dec.decode(b), blobs, args.repeat)
    roi = best_ms(lambda i: dec.decode(blobs[i], roi=rois[i]), range(len(blobs)), args.repeat)
    coefs = best_ms(lambda b: dec.read_coefficients(b), blobs, args.repeat)
    q = args.quality
    tables = ijg_tables(q)
    fdct = best_ms(lambda c: dec.forward_dct(c, *tables), crops, args.repeat)
    ref = best_ms(lambda c: dec.read_coefficients(dec.encode(c, q, "4:2:0")), crops, args.repeat)

    print(f"{'Pillow decode (reference)':40s} {pil:8.2f} ms/image")
    print(f"{'jdct decode':40s} {full:8.2f} ms/image   {pil / full:5.2f}x Pillow")
    print(f"{'jdct decode, 224x224 roi':40s} {roi:8.2f} ms/image   {full / roi:5.2f}x full decode")
    print(f"{'read_coefficients':40s} {coefs:8.2f} ms/image   {full / coefs:5.2f}x full decode")
    print(f"{f'encode+read_coefficients 224x224 q{q}':40s} {ref:8.3f} ms/crop ({len(crops)} crops)")
    print(f"{f'forward_dct 224x224 q{q}':40s} {fdct:8.3f} ms/crop    {ref / fdct:5.2f}x encode+read_coefficients")


if __name__ == "__main__":
    main()
