"""Regenerate tests/golden/store-v1.zarr and store-v1.expected.json (run from the repository root).

Only when the store format changes on purpose (then bump FORMAT_VERSION and add a new golden):
the committed store is what `tests/test_store_golden.py` reads on every run, to prove that stores
written by earlier versions stay readable with plain zarr and with jdct.

    python3 tests/golden/make_store_v1.py ../shared/data/tiny-imagenet-20
"""
import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import zarr

from jdct_cli.convert import ConvertOptions, convert
from jdct_cli.store import ALL_ARRAYS, write_metadata, read_metadata

HERE = Path(__file__).resolve().parent


def array_hashes(store: Path) -> dict:
    g = zarr.open_group(str(store), mode="r")
    out = {}
    for split in read_metadata(store).splits:
        for a in ALL_ARRAYS:
            arr = g[f"{split}/{a}"][...]
            out[f"{split}/{a}"] = {"shape": list(arr.shape), "dtype": str(arr.dtype),
                                   "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
    return out


def main(tiny: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for cls in sorted(p.name for p in (tiny / "train").iterdir())[:2]:
            (src / "train" / cls).mkdir(parents=True)
            for f in sorted((tiny / "train" / cls).iterdir())[:2]:
                shutil.copy(f, src / "train" / cls / f.name)
        out = HERE / "store-v1.zarr"
        shutil.rmtree(out, ignore_errors=True)
        convert(src, out, options=ConvertOptions(size=32, seed=1, chunk_samples=2, shard_samples=4), workers=1)
    meta = read_metadata(out).metadata
    write_metadata(out, dataclasses.replace(meta, source="tiny-imagenet-20 (2 classes x 2 train images)"))
    (HERE / "store-v1.expected.json").write_text(json.dumps(
        {"num_samples": 4, "size": 32, "arrays": array_hashes(out)}, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
