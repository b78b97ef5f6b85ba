"""Conversion speed and size: jdct's train transform vs a naive Pillow pipeline and vs a full libjpeg decode.

All on one core, in one run, over the same files (read into memory first, so disk speed is out),
timed as CPU time of this process (the development machine is shared: wall time would mostly
measure the neighbours), the three per-image pipelines interleaved image by image:

- jdct: header, RandomResizedCrop box, ROI + DCT-scaled decode, bilinear resize (Pillow's arithmetic),
  forward_dct at q100 4:2:0 (``jdct_cli.transforms.convert_image``), and separately the whole
  ``jdct convert --workers 1`` run (with zarr compression and writes) on the same folder;
- (a) naive: Pillow decode, the same crop box resized with Pillow (crop+resize = RandomResizedCrop),
  Pillow encode at q100 4:2:0, ``read_coefficients``;
- (b) bare cost of fully decoding each file with libjpeg (``_decoder.decode``, scale 1, no ROI);
- the images layout end to end (``jdct convert --layout images --workers 1``: default options,
  (the end-to-end source is the files spread over ``--classes`` folders, as a real dataset has
  many files per class: listing costs per folder, and imagenet-originals has one file per class)
  without the statistics pass, with ``--check decode``, with ``--restart-segments``) against the
  crops layout's, per image, and its bytes on disk against the source files'.

Targets: jdct >= 3x (a) in images/s/core, and a per-image cost no higher than (b); the images
layout >= 5x faster per image than the crops layout.
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
    ap.add_argument("--classes", type=int, default=8,
                    help="class folders the end-to-end conversions' source is spread over (0: the data's own)")
    ap.add_argument("--images", action=argparse.BooleanOptionalAction, default=True,
                    help="also convert to the images layout (default, statistics off, --check decode, "
                         "--restart-segments) and compare with the crops layout")
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
        # --classes folders (imagenet-originals has one file per class; ImageNet itself ~1,300):
        # listing costs per folder, and with 333 folders of one file it would be a per-image cost
        for i, p in enumerate(files):
            folder = src / (f"c{i % args.classes:04d}" if args.classes else p.parent.name)
            folder.mkdir(exist_ok=True)
            (folder / p.name).symlink_to(p.resolve())
        import zarr  # noqa: F401 - imported before timing: a one-off cost, not a per-image one

        # the store layouts, end to end, interleaved round by round so that the machine's load
        # weighs on all alike; each keeps its fastest round
        variants = {"crops": opts}
        if args.images:
            variants.update({
                "images (default: --max-side 2048, statistics of 256 images)": ConvertOptions(layout="images", size=args.size),
                "images, --stats-images 0 (the per-image work only)": ConvertOptions(layout="images", size=args.size,
                                                                                    stats_images=0),
                "images, --check decode, --stats-images 0": ConvertOptions(layout="images", size=args.size,
                                                                          check="decode", stats_images=0),
                "images, --restart-segments, --stats-images 0": ConvertOptions(layout="images", size=args.size,
                                                                              restart_segments=True, stats_images=0),
            })
        times = dict.fromkeys(variants, float("inf"))
        summaries = {}
        for r in range(args.rounds):
            for k, (name, o) in enumerate(variants.items()):
                out = tmp / f"out{r}-{k}.zarr"
                t = clock()
                summaries[name] = convert(tmp / "src", out, options=o, workers=1)
                times[name] = min(times[name], clock() - t)
                shutil.rmtree(out, ignore_errors=True)
        t_e2e, summary = times["crops"], summaries["crops"]
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
    if len(times) > 1:
        source = sum(map(len, blobs))
        print(f"{'jdct convert --workers 1, end to end (CPU)':<62} {'ms/image':>9} {'vs crops':>9} {'bytes vs source':>16}")
        for name, t in times.items():
            s = summaries[name]
            print(f"{name:<62} {1000 * t / n:>9.3f} {t_e2e / t:>8.2f}x {s['bytes_on_disk'] / source:>16.3f}"
                  + (f"   {s['treatments']}" if name.startswith("images") and "default" in name else ""))


if __name__ == "__main__":
    main()
