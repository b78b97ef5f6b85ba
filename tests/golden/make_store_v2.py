"""Regenerate tests/golden/store-v2.zarr and store-v2.expected.json (run from the repository root).

Only when the images store format changes on purpose (then bump the version and add a new
golden): the committed store is what `tests/test_store_images.py` reads on every run, to prove
that images stores written by earlier versions stay readable with plain zarr and with jdct. Its
source is committed too (tests/data/jpegs/, see SOURCE), so converting it again is tested from a
fresh clone.

    python3 tests/golden/make_store_v2.py
"""
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from jdct_cli.convert import ConvertOptions, convert  # noqa: E402
from jdct_cli.store import read_metadata, write_metadata  # noqa: E402
from storetools import store_hashes  # noqa: E402

JPEGS = HERE.parent / "data" / "jpegs"
#: split -> class -> committed fixtures: every treatment (verbatim colour and grayscale,
#: progressive and arithmetic transcodes, CMYK / 4:4:0 / over --max-side re-encodes) and a failure.
SOURCE = {
    "train": {"a": ["420.jpg", "progressive.jpg", "arithmetic.jpg", "cmyk.jpg"],
              "b": ["gray.jpg", "440.jpg", "size_200x1.jpg", "truncated_50pct.jpg"]},
    "val": {"a": ["444.jpg"], "b": ["422.jpg"]},
}
#: The options of the golden conversion.
OPTIONS = ConvertOptions(layout="images", size=16, seed=3, chunk_samples=2, shard_samples=4, max_side=100,
                         stats_images=3)


def make_source(root: Path) -> Path:
    for split, classes in SOURCE.items():
        for cls, names in classes.items():
            (root / split / cls).mkdir(parents=True)
            for name in names:
                shutil.copy(JPEGS / name, root / split / cls / name)
    return root


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = make_source(Path(tmp) / "src")
        out = HERE / "store-v2.zarr"
        shutil.rmtree(out, ignore_errors=True)
        convert(src, out, options=OPTIONS, workers=1)
    meta = read_metadata(out).metadata
    write_metadata(out, dataclasses.replace(meta, source="tests/data/jpegs (make_store_v2.py SOURCE)"))
    (HERE / "store-v2.expected.json").write_text(json.dumps({"arrays": store_hashes(out)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
