#!/usr/bin/env python3
"""Pick small fuzz-corpus inputs with distinct libjpeg outcomes into tests/regressions/.

For every corpus file of at most MAX_BYTES, the outcome of read_header, read_coefficients, decode
and the conversion path (error class + message with numbers masked, or "ok") forms a key; the
smallest file of each key not yet represented is copied to ``tests/regressions/cov-<sha1>.jpg``
and appended to INDEX.tsv as ``coverage``. Findings (crash-/timeout-/oom- artifacts) are added
by hand with their own note.

    python3 tests/fuzz/pick_regressions.py fuzz-out/corpus [LIMIT]
"""
from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import numpy as np

from jdct_cli import _decoder as dec
from jdct_cli.transforms import SampleRecipe, convert_image
from jdct_cli.errors import JdctError

MAX_BYTES = 4096
HERE = Path(__file__).resolve().parent
REG = HERE.parent / "regressions"


def outcome(fn) -> str:
    try:
        fn()
    except JdctError as exc:
        return f"{type(exc).__name__}: {exc.reason}"
    return "ok"


def main(corpus: str, limit: int = 30) -> None:
    index = REG / "INDEX.tsv"
    if not index.exists():
        index.write_text("file\tfound\tread_header\tconvert\tnote\n", encoding="utf-8")
    have = {line.split("\t")[0] for line in index.read_text(encoding="utf-8").splitlines()[1:]}
    seen: set = set()
    picked = []
    files = sorted((p for p in Path(corpus).iterdir() if p.stat().st_size <= MAX_BYTES), key=lambda p: p.stat().st_size)
    for p in files:
        data = p.read_bytes()
        opts = SampleRecipe(size=32)
        outs = [outcome(lambda: dec.read_header(data)), outcome(lambda: dec.read_coefficients(data)),
                outcome(lambda: dec.decode(data, scale=2)),
                outcome(lambda: convert_image(data, p.name, train=False, rng=np.random.default_rng(0), opts=opts))]
        key = tuple(re.sub(r"\d+", "#", o) for o in outs)
        if key in seen:
            continue
        seen.add(key)
        picked.append((key[0] != "NotAJpegError" and outs[0] == "ok", len(data), p, outs))
    # prefer inputs whose header parses (they reach deeper into libjpeg), then the smallest
    picked.sort(key=lambda t: (not t[0], t[1]))
    rows = []
    for _, _, p, outs in picked[:limit]:
        name = f"cov-{hashlib.sha1(p.read_bytes()).hexdigest()[:12]}.jpg"
        if name in have:
            continue
        (REG / name).write_bytes(p.read_bytes())
        trim = lambda o: o[:60].replace("\t", " ")  # noqa: E731 - expected outcome: a message prefix
        rows.append(f"{name}\tcoverage\t{trim(outs[0])}\t{trim(outs[3])}\tcoef: {trim(outs[1])}; decode/2: {trim(outs[2])}\n")
    with open(index, "a", encoding="utf-8") as f:
        f.writelines(rows)
    print(f"{len(seen)} distinct outcomes among {len(files)} small inputs; added {len(rows)}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
