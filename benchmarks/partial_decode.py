"""The CPU side of the images layout: entropy decoding of a crop's blocks, and what the store keeps.

    python3 benchmarks/partial_decode.py [--data ../shared/data/imagenet-originals] [--limit 0]
                                         [--sections decode,threads,maxside,storage] [--rounds 3]

Sections (CPU time of this process, per file or sample; each file keeps its fastest of --rounds):

- ``decode``: ``read_coefficients`` of the whole file vs ``read_coefficient_rects`` of the blocks a
  torchvision RandomResizedCrop box needs (its rows and columns plus the resize filter's support,
  per component), on the files as they are (stop after the last MCU row) and on the same files
  transcoded losslessly with restart markers (``--restart-segments``: the crop's restart
  segments spliced), with the bytes of those transcodes.
- ``threads``: the batch entry point (``read_coefficient_rects_batch``, C threads, one call per
  64 images) vs one call per image from a Python ThreadPoolExecutor, at 1 and 2 threads: CPU per
  sample and wall time.
- ``maxside``: for each ``--max-side`` candidate, the images layout's treatment of every file
  (``store_image``): share re-encoded, bytes per image, conversion CPU per image, and the entropy
  decoding of a RandomResizedCrop rectangle per sample (what the loader pays every epoch).
- ``storage``: reading 64 JPEGs from zarr: one inner chunk of a ``variable_length_bytes`` array
  (what the images layout stores) vs one byte range of a flat ``uint8`` array plus offsets (the
  spec-only alternative), per sample.

The rectangle of a box is computed here (a box in stored pixels -> block rows/columns per
component); the loader's own geometry lives in ``jdct_cli.transforms``.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jdct_cli import jpeg  # noqa: E402
from jdct_cli.convert import ConvertOptions  # noqa: E402
from jdct_cli.convert.images import restart_interval, store_image  # noqa: E402
from jdct_cli.errors import JdctError  # noqa: E402
from jdct_cli.transforms import random_resized_crop_box  # noqa: E402

clock = time.process_time


def crop_rects(header: dict, box, size: int = 224) -> list[tuple[int, int, int, int]]:
    """(row0, col0, row1, col1) in blocks of each component covering ``box`` (x, y, w, h, stored
    pixels) plus the bilinear filter's support (max(scale, 1) + 1 pixels) and one block of chroma
    for the upsampling filter, clipped to the padded grid."""
    x, y, w, h = box
    scale = max(w, h) / size
    pad = math.ceil(max(scale, 1.0)) + 1
    W, H = header["width"], header["height"]
    x0, y0 = max(0, math.floor(x) - pad), max(0, math.floor(y) - pad)
    x1, y1 = min(W, math.ceil(x + w) + pad), min(H, math.ceil(y + h) + pad)
    comps = header["components"]
    hmax, vmax = max(c["h"] for c in comps), max(c["v"] for c in comps)
    rects = []
    for c in comps[:3]:
        extra = 1 if (c["h"], c["v"]) != (hmax, vmax) else 0
        c0 = max(0, x0 * c["h"] // (8 * hmax) - extra)
        r0 = max(0, y0 * c["v"] // (8 * vmax) - extra)
        c1 = min(c["blocks_wide"], -(-x1 * c["h"] // (8 * hmax)) + extra)
        r1 = min(c["blocks_high"], -(-y1 * c["v"] // (8 * vmax)) + extra)
        rects.append((r0, c0, r1, c1))
    return rects


def _files(root: Path, limit: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    return files[:limit] if limit else files


def _best(fn, rounds: int) -> float:
    best = math.inf
    for _ in range(rounds):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def section_decode(blobs, rounds: int) -> None:
    rng = np.random.default_rng(0)
    full = rect = spliced = whole_t = 0.0
    src_bytes = rs_bytes = 0
    rows = []
    for data in blobs:
        head = jpeg.read_header(data)
        rects = crop_rects(head, random_resized_crop_box(rng, head["width"], head["height"]))
        rs, _ = jpeg.transcode(data, restart_interval=restart_interval(head["width"], head["components"]))
        t_full = _best(lambda: jpeg.read_coefficients(data), rounds)
        t_rect = _best(lambda: jpeg.read_coefficient_rects(data, rects), rounds)
        t_rs_whole = _best(lambda: jpeg.read_coefficients(rs), rounds)
        t_rs = _best(lambda: jpeg.read_coefficient_rects(rs, rects), rounds)
        full, rect, whole_t, spliced = full + t_full, rect + t_rect, whole_t + t_rs_whole, spliced + t_rs
        src_bytes += len(data)
        rs_bytes += len(rs)
        info = jpeg.read_coefficient_rects(rs, rects).info
        rows.append(info["mode"])
    n = len(blobs)
    print(f"decode ({n} files, one RandomResizedCrop rectangle each, CPU ms per file, best of {rounds}):")
    print(f"  read_coefficients, whole file                 {1e3 * full / n:7.3f}")
    print(f"  rectangle, file as it is (stop after its rows) {1e3 * rect / n:7.3f}  ({full / rect:.2f}x less)")
    print(f"  read_coefficients of the restart transcode     {1e3 * whole_t / n:7.3f}")
    print(f"  rectangle of the restart transcode (spliced)   {1e3 * spliced / n:7.3f}  ({full / spliced:.2f}x less; "
          f"{rows.count('spliced')} spliced, {rows.count('stopped')} stopped)")
    print(f"  bytes: restart transcode / source {rs_bytes / src_bytes:.4f} ({src_bytes / n / 1e3:.1f} KB/file)")


def section_threads(blobs, rounds: int) -> None:
    rng = np.random.default_rng(1)
    rects = []
    for data in blobs:
        head = jpeg.read_header(data)
        r = crop_rects(head, random_resized_crop_box(rng, head["width"], head["height"]))
        rects.append(r + [(0, 0, 0, 0)] * (3 - len(r)))
    R = np.array(rects, np.int64)
    sizes = (R[:, :, 2] - R[:, :, 0]) * (R[:, :, 3] - R[:, :, 1]) * 64
    offsets = np.concatenate([[0], np.cumsum(sizes.ravel())[:-1]]).reshape(sizes.shape)
    out = np.empty(int(sizes.sum()), np.int16)
    one = [[tuple(r) if r[2] > r[0] else None for r in row] for row in rects]
    n = len(blobs)
    print(f"threads ({n} files, one rectangle each; CPU ms per sample / wall ms per sample):")
    for threads in (1, 2):
        def python_pool():
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda i: jpeg.read_coefficient_rects(blobs[i], one[i]), range(n)))

        def c_batches():
            for s in range(0, n, 64):
                jpeg.read_coefficient_rects_batch(blobs[s:s + 64], R[s:s + 64], out, offsets[s:s + 64] - offsets[s, 0],
                                                  threads=threads)
        for name, fn in (("Python ThreadPoolExecutor, one call per image", python_pool),
                         ("read_coefficient_rects_batch, C threads, 64 a call", c_batches)):
            cpu = wall = math.inf
            for _ in range(rounds):
                t, w = clock(), time.perf_counter()
                fn()
                cpu, wall = min(cpu, clock() - t), min(wall, time.perf_counter() - w)
            print(f"  {threads} thread(s)  {name:52s} cpu {1e3 * cpu / n:6.3f}  wall {1e3 * wall / n:6.3f}")


def section_maxside(files, blobs, rounds: int, sides) -> None:
    print(f"maxside ({len(blobs)} files; per image: conversion CPU, bytes; per sample: RandomResizedCrop "
          f"rectangle decode CPU, best of {rounds}):")
    print(f"  {'max-side':>8} {'re-encoded':>10} {'KB/image':>9} {'convert ms':>10} {'rect decode ms':>14} "
          f"{'whole decode ms':>15}")
    for side in sides:
        opts = ConvertOptions(layout="images", max_side=side)
        stored, t_conv = [], 0.0
        for path, data in zip(files, blobs):
            t = clock()
            try:
                s = store_image(data, path, opts)
            except JdctError:
                continue
            t_conv += clock() - t
            stored.append(s)
        t_rect = t_whole = 0.0
        for i, s in enumerate(stored):
            head = jpeg.read_header(s.data)
            # the same draws for every candidate: the boxes scale with the stored image
            box = random_resized_crop_box(np.random.default_rng([7, i]), s.width, s.height)
            rects = crop_rects(head, box)
            t_rect += _best(lambda: jpeg.read_coefficient_rects(s.data, rects), rounds)
            t_whole += _best(lambda: jpeg.read_coefficients(s.data), rounds)
        n = len(stored)
        share = sum(1 for s in stored if s.treatment_name.startswith("reencoded")) / n
        print(f"  {side or 'none':>8} {100 * share:9.1f}% {sum(len(s.data) for s in stored) / n / 1e3:9.1f} "
              f"{1e3 * t_conv / n:10.3f} {1e3 * t_rect / n:14.3f} {1e3 * t_whole / n:15.3f}")


def section_storage(blobs, rounds: int) -> None:
    import zarr
    from zarr.codecs import Crc32cCodec, VLenBytesCodec
    from zarr.core.dtype import VariableLengthBytes

    warnings.simplefilter("ignore")
    n = len(blobs) // 64 * 64
    blobs = blobs[:n]
    tmp = Path(tempfile.mkdtemp(prefix="jdct-storage-"))
    try:
        a = zarr.create_array(str(tmp / "vlen.zarr"), shape=(n,), chunks=(64,), shards=(1024,),
                              dtype=VariableLengthBytes(), serializer=VLenBytesCodec(), compressors=[Crc32cCodec()])
        obj = np.empty(n, dtype=object)
        obj[:] = blobs
        a[:] = obj
        sizes = np.array([len(b) for b in blobs])
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        flat = np.frombuffer(b"".join(blobs), np.uint8)
        b = zarr.create_array(str(tmp / "flat.zarr"), shape=(flat.size,), chunks=(1 << 18,), shards=(1 << 26,),
                              dtype="uint8", compressors=[Crc32cCodec()])
        b[:] = flat
        chunks = range(0, n, 64)
        t_a = _best(lambda: [a[s:s + 64] for s in chunks], rounds)
        t_b = _best(lambda: [[bytes(v) for v in np.split(b[offsets[s]:offsets[s + 64]],
                                                         offsets[s + 1:s + 64] - offsets[s])] for s in chunks], rounds)
        du = {k: sum(f.stat().st_size for f in (tmp / k).rglob("*") if f.is_file()) for k in ("vlen.zarr", "flat.zarr")}
        print(f"storage ({n} JPEGs, {flat.size / n / 1e3:.1f} KB each; CPU us per sample reading 64 at a time):")
        print(f"  variable_length_bytes, one inner chunk of 64      {1e6 * t_a / n:8.1f}   bytes {du['vlen.zarr'] / flat.size:.4f}x")
        print(f"  flat uint8 + offsets, one byte range of 64 images {1e6 * t_b / n:8.1f}   bytes {du['flat.zarr'] / flat.size:.4f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "imagenet-originals")
    ap.add_argument("--limit", type=int, default=0, help="the first N files only (0: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sections", default="decode,threads,maxside,storage")
    ap.add_argument("--sides", default="256,384,448,512,640,800,0", help="--max-side candidates (0: no limit)")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"benchmark data not found: {args.data}")
    files = _files(args.data, args.limit)
    blobs = [p.read_bytes() for p in files]
    print(f"{len(files)} files from {args.data}, {sum(map(len, blobs)) / 1e6:.1f} MB, libjpeg-turbo "
          f"{jpeg.libjpeg_version()}")
    sections = args.sections.split(",")
    if "decode" in sections:
        section_decode(blobs, args.rounds)
    if "threads" in sections:
        section_threads(blobs, args.rounds)
    if "maxside" in sections:
        section_maxside(files, blobs, args.rounds, [int(v) for v in args.sides.split(",")])
    if "storage" in sections:
        section_storage(blobs, args.rounds)


if __name__ == "__main__":
    main()
