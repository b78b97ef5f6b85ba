"""Conversion speed and size: jdct's train transform vs a naive Pillow pipeline and vs a full libjpeg decode.

All on one core, in one run, over the same files (read into memory first, so disk speed is out),
timed as CPU time of this process (the development machine is shared: wall time would mostly
measure the neighbours), the three per-image pipelines interleaved image by image:

- jdct: header, RandomResizedCrop box, ROI + DCT-scaled decode, bilinear resize (Pillow's arithmetic),
  forward_dct at q100 4:2:0 (``jdct_cli.transforms.convert_image``), and separately the whole
  ``jdct convert --workers 1`` run (with zarr compression and writes) on the same folder;
- (a) naive: Pillow decode, the same crop box resized with Pillow (crop+resize = RandomResizedCrop),
  Pillow encode at q100 4:2:0, ``read_coefficients``;
- (b) bare cost of fully decoding each file with libjpeg (``_decoder.decode``, scale 1, no ROI).

Targets: jdct >= 3x (a) in images/s/core, and a per-image cost no higher than (b).
Size: store bytes per sample vs the q100 JPEG bytes of the same crops (from (a)).

    python3 benchmarks/convert.py [--data ../shared/data/imagenet-originals] [--size 224] [--rounds 2]
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from jdct_cli import _decoder, jpeg  # noqa: E402
from jdct_cli.convert import ConvertOptions, convert  # noqa: E402
from jdct_cli.errors import JdctError  # noqa: E402
from jdct_cli.jpegmath.sample import crop_coefficients  # noqa: E402
from jdct_cli.transforms import convert_image, decode_region, image_rng, random_resized_crop_box, resize_box  # noqa: E402


def naive(data: bytes, rng: np.random.Generator, size: int) -> tuple[int, int]:
    """Pillow decode -> RandomResizedCrop with Pillow -> Pillow q100 4:2:0 -> read_coefficients.
    Returns (JPEG bytes of the crop, number of coefficient blocks read)."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        x, y, w, h = random_resized_crop_box(rng, im.width, im.height)
        crop = im.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + w, y + h))
    buf = io.BytesIO()
    crop.save(buf, "JPEG", quality=100, subsampling=2)
    jpg = buf.getvalue()
    comps, _, _ = _decoder.read_coefficients(jpg)
    return len(jpg), sum(c.shape[0] * c.shape[1] for c in comps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "imagenet-originals"))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=2, help="repeat each measurement, keep the fastest")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N files (0 = all)")
    args = ap.parse_args()
    root = Path(args.data)
    if not root.is_dir():
        sys.exit(f"benchmark data not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
    if args.limit:
        files = files[: args.limit]
    blobs = [p.read_bytes() for p in files]
    opts = ConvertOptions(size=args.size)
    recipe = opts.recipe()
    print(f"{len(files)} files from {root}, {sum(map(len, blobs)) / 1e6:.1f} MB, size {args.size}, 1 core")

    # Per image, the three pipelines run back to back, and CPU time (process_time: all threads of
    # this process) is summed: the machine's load then weighs on all three alike. Each image keeps
    # its fastest of --rounds.
    clock = time.process_time
    best = {k: np.full(len(blobs), np.inf) for k in ("jdct", "naive", "decode")}
    jpeg_bytes = np.zeros(len(blobs))
    for _ in range(args.rounds):
        for i, (p, d) in enumerate(zip(files, blobs)):
            t0 = clock()
            try:
                convert_image(d, p, train=True, rng=image_rng(0, 0, 0, i), opts=recipe)
            except JdctError:
                pass
            t1 = clock()
            jpeg_bytes[i], _ = naive(d, image_rng(0, 0, 0, i), args.size)
            t2 = clock()
            _decoder.decode(d)
            t3 = clock()
            for k, dt in (("jdct", t1 - t0), ("naive", t2 - t1), ("decode", t3 - t2)):
                best[k][i] = min(best[k][i], dt)
    t_jdct, t_naive, t_decode = (float(best[k].sum()) for k in ("jdct", "naive", "decode"))

    # Where jdct's per-image time goes (one pass, same clock).
    stages = dict.fromkeys(("header + box", "ROI/scaled decode", "resize", "forward_dct"), 0.0)
    # The floor of any libjpeg-based crop of a baseline JPEG: Huffman decoding cannot start
    # mid-stream, so every row down to the crop's last one is entropy-decoded at full width
    # (jpeg_skip_scanlines discards the coefficients without IDCT). Measured as a 1x1 ROI at the
    # crop's last row.
    t_entropy = 0.0
    for i, d in enumerate(blobs):
        t0 = clock()
        try:
            h = jpeg.read_header(d)
            box = random_resized_crop_box(image_rng(0, 0, 0, i), h["width"], h["height"])
            t1 = clock()
            rgb, local = decode_region(d, h["width"], h["height"], box, args.size)
        except JdctError:
            continue
        t2 = clock()
        crop = resize_box(rgb, local, args.size)
        t3 = clock()
        crop_coefficients(crop, 100)
        t4 = clock()
        for k, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[k] += dt
        last_row = min(h["height"] - 1, int(box[1] + box[3]))
        t5 = clock()
        _decoder.decode(d, roi=(0, last_row, 1, 1))
        t_entropy += clock() - t5

    tmp = Path(tempfile.mkdtemp(prefix="jdct-bench-"))
    try:
        src = tmp / "src" / "train"
        src.mkdir(parents=True)
        for p in files:
            (src / p.parent.name).mkdir(exist_ok=True)
            (src / p.parent.name / p.name).symlink_to(p.resolve())
        import zarr  # noqa: F401 - imported before timing: a one-off cost, not a per-image one

        t_e2e = float("inf")
        for r in range(args.rounds):
            t = clock()
            summary = convert(tmp / "src", tmp / f"out{r}.zarr", options=opts, workers=1)
            t_e2e = min(t_e2e, clock() - t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = len(files)
    rows = [
        ("jdct transform (convert_image)", t_jdct),
        ("jdct convert --workers 1 (end to end, zarr writes)", t_e2e),
        ("(a) naive Pillow pipeline", t_naive),
        ("(b) full libjpeg decode only", t_decode),
    ]
    print(f"{'pipeline (CPU time)':<52} {'images/s/core':>14} {'ms/image':>9}")
    for name, t in rows:
        print(f"{name:<52} {n / t:>14.1f} {1000 * t / n:>9.2f}")
    print("jdct transform breakdown: " + ", ".join(f"{k} {1000 * v / n:.2f} ms" for k, v in stages.items()))
    print(f"floor: entropy decoding down to the crop's last row {1000 * t_entropy / n:.2f} ms "
          f"(+ forward_dct {1000 * stages['forward_dct'] / n:.2f} ms = "
          f"{1000 * (t_entropy + stages['forward_dct']) / n:.2f} ms; target 3x (a) = {1000 * t_naive / n / 3:.2f} ms)")
    print(f"speed-up vs (a): transform {t_naive / t_jdct:.2f}x, end to end {t_naive / t_e2e:.2f}x (target >= 3x)")
    print(f"cost vs (b): transform {t_jdct / t_decode:.2f}x, end to end {t_e2e / t_decode:.2f}x of a full decode "
          "(target <= 1x)")
    print(f"bytes/sample: store {summary['bytes_per_sample']:.0f} (compression {summary['compression_ratio']:.2f}x vs "
          f"raw int16) vs q100 4:2:0 JPEG of the same crops {np.mean(jpeg_bytes):.0f} "
          f"(ratio {summary['bytes_per_sample'] / np.mean(jpeg_bytes):.2f})")


if __name__ == "__main__":
    main()
