#!/usr/bin/env python3
"""Convert ../shared/data/imagenette-5k (5,000 images, 10 classes) into a jdct store, with the library API.

    python3 examples/convert_imagenette.py [SRC] [OUT.zarr] [--size 224] [--views 2] [--workers N]

The same as `jdct convert SRC OUT.zarr --size 224 --views 2`, shown from Python: options, a tqdm
progress callback, the summary dict, then the metadata the loader reads. Interrupt it (Ctrl-C)
and run it again: finished shards are kept and the conversion resumes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from jdct_cli.convert import ConvertOptions, convert
from jdct_cli.errors import JdctError
from jdct_cli.store import read_metadata

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default=str(REPO.parent / "shared" / "data" / "imagenette-5k"))
    ap.add_argument("out", nargs="?", default=str(REPO / "demo-out" / "imagenette-5k.zarr"))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, initial=done, desc=stage, unit="img"))
        bar.update(done - bar.n)

    try:
        summary = convert(args.src, args.out, options=ConvertOptions(size=args.size, views=args.views),
                          workers=args.workers, progress=progress)
    except JdctError as exc:  # bad source, interrupted (resume hint), other options...
        print(f"Error: {exc}")
        return 1
    finally:
        for bar in bars.values():
            bar.close()
    print(f"{summary['converted']} images, {summary['failed']} failed, {summary['samples']} samples, "
          f"{summary['bytes_per_sample']:.0f} bytes/sample, {summary['images_per_second']:.0f} images/s")
    info = read_metadata(args.out)
    for split in info.splits:
        sp = info.split(split)
        print(f"{split}: {sp.num_samples} samples x {sp.views} view(s), {sp.counts.failed} failed, "
              f"classes {len(info.classes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
