"""Replays every file of ``tests/regressions/`` through the fuzz harness and checks its outcome.

``tests/regressions/INDEX.tsv`` lists, for each file: what the fuzzer found with it (``crash``,
``hang``, ``leak``, ``invariant``) or ``coverage`` (a small input that reached a distinct libjpeg
outcome during fuzzing, kept so that behaviour stays pinned), the expected outcome of
``read_header`` and of the conversion path (``ok`` or the error class and the start of its
message), and a note. ``fuzz_decoder.one_input`` raises on anything but a clean JdctError or a
result of the declared shape, so a reappearing crash fails here (as a dead child process).
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jdct_cli import _decoder as dec
from jdct_cli.transforms import SampleRecipe, convert_image
from jdct_cli.errors import JdctError

HERE = Path(__file__).resolve().parent
REG = HERE / "regressions"
sys.path.insert(0, os.fspath(HERE / "fuzz"))


def _index() -> list[dict]:
    with open(REG / "INDEX.tsv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = _index()


def _outcome(fn) -> str:
    try:
        fn()
    except JdctError as exc:
        return f"{type(exc).__name__}: {exc.reason}"
    return "ok"


def test_index_lists_every_file():
    on_disk = sorted(p.name for p in REG.iterdir() if p.name not in ("INDEX.tsv", "README.md"))
    assert on_disk == sorted(r["file"] for r in ROWS)


def test_no_regression_file_crashes_the_harness():
    # one child replays them all: a crash (SIGSEGV, abort) must fail this test, not kill the test run
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from fuzz_decoder import one_input\n"
            "for p in sys.argv[2:]:\n    print(p, flush=True); one_input(open(p, 'rb').read())\n")
    files = [os.fspath(REG / r["file"]) for r in ROWS]
    child = subprocess.run([sys.executable, "-c", code, os.fspath(HERE / "fuzz"), *files],
                           capture_output=True, text=True, timeout=300)
    last = child.stdout.strip().splitlines()[-1:] or ["(before the first file)"]
    assert child.returncode == 0, f"status {child.returncode} on {last[0]}: {child.stderr[-2000:]}"


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_regression_file_outcome(row):
    data = (REG / row["file"]).read_bytes()
    header = _outcome(lambda: dec.read_header(data))
    conv = _outcome(lambda: convert_image(data, row["file"], train=False, rng=np.random.default_rng(0),
                                          opts=SampleRecipe(size=32)))
    assert header.startswith(row["read_header"]), (header, row)
    assert conv.startswith(row["convert"]), (conv, row)
