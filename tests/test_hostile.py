"""Inputs crafted to be slow or huge: every entry point ends with a result or a clean JdctError,
within a bounded CPU time, under a memory limit.

Each crafted file is fed, in a child process limited by ``resource.setrlimit`` (RLIMIT_AS: address
space, RLIMIT_CPU: a hard backstop), to ``read_header``, ``read_coefficients``, ``decode`` (whole
and ROI) and the conversion path (``transforms.convert_image``). The child reports each call's outcome
and CPU seconds as JSON; the parent asserts: no crash (exit status 0), only JdctError subclasses,
results shaped as the header says, and a CPU time per call far below what an unbounded decoder
spends on the same file.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hostile import gradient, header_only, progressive_gray, with_declared_size
from jdct_cli import _decoder as dec

REPO = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 1 << 30  # 1 GiB of address space for the child (Python + numpy + Pillow ~ 120 MB)
CPU_LIMIT_S = 60
#: CPU seconds one call may take on a crafted input (generous for a loaded CI machine; a decoder
#: without a scan limit spends 8 CPU-seconds per read_coefficients call on the many-scans file).
CALL_CPU_BUDGET_S = 5.0

CHILD = textwrap.dedent(r"""
    import json, sys, time
    import numpy as np
    from jdct_cli import _decoder as dec
    from jdct_cli.transforms import SampleRecipe, convert_image
    from jdct_cli.errors import JdctError

    def run(name, fn):
        t0 = time.process_time()
        try:
            res = fn()
            rec = {"outcome": "ok", "shape": res}
        except JdctError as exc:
            rec = {"outcome": "error", "cls": type(exc).__name__, "reason": exc.reason}
        rec.update(call=name, cpu=time.process_time() - t0)
        print(json.dumps(rec), flush=True)

    for path in sys.argv[1:]:
        data = open(path, "rb").read()
        print(json.dumps({"file": path}), flush=True)
        run("read_header", lambda: [dec.read_header(data)[k] for k in ("width", "height")])
        run("read_coefficients", lambda: [list(c.shape) for c in dec.read_coefficients(data)[0]])
        run("decode", lambda: list(dec.decode(data)[0].shape))
        run("decode_scaled_roi", lambda: list(dec.decode(data, scale=2, roi=(0, 0, 1, 1))[0].shape))
        for train in (False, True):
            opts = SampleRecipe(size=32)
            run("convert_train" if train else "convert_val",
                lambda: [list(a.shape) for a in convert_image(data, path, train=train,
                                                              rng=np.random.default_rng(0), opts=opts)[:3]])
""")


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))


def run_limited(paths: list[Path]) -> dict[str, dict[str, dict]]:
    """Run CHILD over ``paths`` under the limits; {file name: {call: record}}."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=os.fspath(REPO))
    proc = subprocess.run([sys.executable, "-c", CHILD] + [os.fspath(p) for p in paths], capture_output=True,
                          text=True, preexec_fn=_limits, env=env, timeout=4 * CPU_LIMIT_S)
    assert proc.returncode == 0, f"child died (status {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    out: dict[str, dict[str, dict]] = {}
    current = None
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if "file" in rec:
            current = out.setdefault(Path(rec["file"]).name, {})
        else:
            current[rec["call"]] = rec
    return out


def _check_bounded(calls: dict[str, dict]) -> None:
    assert len(calls) == 6, calls
    for name, rec in calls.items():
        assert rec["cpu"] < CALL_CPU_BUDGET_S, f"{name} took {rec['cpu']:.1f} s of CPU"
        if rec["outcome"] == "error":
            assert rec["reason"], rec


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> dict[str, dict[str, dict]]:
    d = tmp_path_factory.mktemp("hostile")
    small = dec.encode(gradient(16, 16), 90, "4:2:0")
    files = {
        # 896 conforming scans plus 3000 repeated ones over 2048x2048: 8 CPU-s per call without a scan limit
        "many_scans.jpg": progressive_gray(2048, 2048, extra_scans=3000),
        # only conforming scans, small image: cheap however many scans libjpeg accepts
        "many_scans_small.jpg": progressive_gray(64, 48),
        # 128 conforming scans: fine on a small image, a decoding-time bomb over 8192x8192
        # (128 x 1M block visits); refused from the scan count before any decoding
        "scans_128_over_8192.jpg": progressive_gray(8192, 8192, refinements=1),
        "scans_128_over_256.jpg": progressive_gray(256, 256, refinements=1),
        "declared_65535x65535.jpg": with_declared_size(small, 65535, 65535),
        "strip_1x65000.jpg": dec.encode(gradient(65000, 1), 90, "4:2:0"),
        "strip_65000x1.jpg": dec.encode(gradient(1, 65000), 90, "4:2:0"),
        # 186 bytes declaring 9000x9000 (81 Mpixel, inside the default budget) with no entropy data
        "bomb_9000x9000_no_data.jpg": header_only(with_declared_size(small, 9000, 9000)),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return run_limited([d / n for n in files])


def test_progressive_with_thousands_of_scans_is_bounded(crafted):
    calls = crafted["many_scans.jpg"]
    _check_bounded(calls)
    assert calls["read_header"]["outcome"] == "ok" and calls["read_header"]["shape"] == [2048, 2048]
    for name in ("read_coefficients", "decode", "convert_val", "convert_train"):
        assert calls[name]["outcome"] == "error" and "scans" in calls[name]["reason"], calls[name]


def test_scan_limit_scales_with_the_image_size(crafted):
    big, small = crafted["scans_128_over_8192.jpg"], crafted["scans_128_over_256.jpg"]
    _check_bounded(big)
    _check_bounded(small)
    assert big["read_header"]["outcome"] == "ok" and big["read_header"]["shape"] == [8192, 8192]
    for name in ("read_coefficients", "decode", "convert_val", "convert_train"):
        assert big[name]["outcome"] == "error" and "scans" in big[name]["reason"], big[name]
        assert big[name]["cpu"] < 1.0, big[name]  # refused from the marker count, not after decoding
    assert small["read_coefficients"]["outcome"] == "ok" and small["read_coefficients"]["shape"] == [[32, 32, 64]]
    assert small["decode"]["outcome"] == "ok"


def test_progressive_with_a_full_conforming_scan_script_decodes(crafted):
    # 896 scans on a 64x48 image: cheap, so refused by count (> the scan limit) or decoded grey
    calls = crafted["many_scans_small.jpg"]
    _check_bounded(calls)
    coef = calls["read_coefficients"]
    assert coef["outcome"] == "error" and "scans" in coef["reason"] or coef["shape"] == [[6, 8, 64]]


def test_header_declaring_65535x65535_is_refused_before_allocation(crafted):
    calls = crafted["declared_65535x65535.jpg"]
    _check_bounded(calls)
    for name, rec in calls.items():
        assert rec["outcome"] == "error" and rec["cls"] == "ImageTooLargeError", (name, rec)
        assert "65535" in rec["reason"] or name.startswith("convert"), rec


@pytest.mark.parametrize("name, w, h", [("strip_1x65000.jpg", 1, 65000), ("strip_65000x1.jpg", 65000, 1)])
def test_one_pixel_strips_convert(crafted, name, w, h):
    calls = crafted[name]
    _check_bounded(calls)
    assert calls["read_header"]["shape"] == [w, h]
    assert calls["decode"]["shape"] == [h, w, 3]
    assert calls["decode_scaled_roi"]["shape"] == [1, 1, 3]
    # 4:2:0 pads to whole 16x16 MCUs: luma blocks = 2 * ceil(n / 16)
    assert calls["read_coefficients"]["shape"][0] == [2 * -(-h // 16), 2 * -(-w // 16), 64]
    for conv in ("convert_val", "convert_train"):
        assert calls[conv]["outcome"] == "ok" and calls[conv]["shape"] == [[64, 4, 4], [64, 2, 2], [64, 2, 2]]


def test_tiny_file_declaring_81_megapixels(crafted):
    calls = crafted["bomb_9000x9000_no_data.jpg"]
    _check_bounded(calls)
    assert calls["read_header"]["shape"] == [9000, 9000]
    # the conversion decodes strictly: the missing data is an error, found at once
    for conv in ("convert_val", "convert_train"):
        assert calls[conv]["outcome"] == "error" and calls[conv]["cls"] == "JpegError", calls[conv]
