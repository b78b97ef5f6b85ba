"""Repeated calls through the C boundary do not grow memory.

A child process makes 5,000 calls (successful decodes of several kinds, coefficient reads, the
forward DCT and encoder, partial rectangle reads one by one and batched on C threads, lossless
transcodes, written coefficients, encodes with given tables, and error paths on corrupt,
truncated, disguised and oversized files, where libjpeg longjmps out mid-decode or mid-encode) and reports its resident set size (/proc/self/statm) after
500 and after 5,000 calls: a leak of even ~1 KB per call would show as several MB. The files are
the committed fixtures (tests/data/jpegs/), with ../shared's real ones in their place when present.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jpegfiles
from conftest import HAVE_SHARED, SHARED_DATA

CHILD = textwrap.dedent(r"""
    import json, os, sys
    from pathlib import Path
    import numpy as np
    from jdct_cli import _decoder as dec
    from jdct_cli.errors import JpegError
    from jdct_cli.jpegmath.quant import ijg_tables

    files = json.loads(sys.argv[1])
    good = [Path(p).read_bytes() for p in files["good"]]
    exif = Path(files["exif"]).read_bytes()
    bad = [Path(p).read_bytes() for p in files["bad"]]
    bad += [g[: len(g) // 3] for g in good[:3]]
    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    tables75 = ijg_tables(75)

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    rects = [(1, 1, 3, 4), (0, 0, 1, 2), None]
    R = np.array([[(1, 1, 3, 4), (0, 0, 1, 2), (0, 0, 0, 0)]] * 4, np.int64)
    offsets = np.array([[0, 6 * 64, 0]] * 4, np.int64) + np.arange(4)[:, None] * 8 * 64
    out = np.zeros(4 * 8 * 64, np.int16)

    def call(i):
        kind = i % 16
        data = good[i % len(good)]
        try:
            if kind == 0:
                dec.read_coefficients(data)
            elif kind == 1:
                dec.decode(data)
            elif kind == 2:
                dec.decode(data, scale=2, roi=tuple(files["roi"]))
            elif kind == 3:
                dec.read_header(exif)
            elif kind == 4:
                dec.forward_dct(rgb, *tables75)
            elif kind == 5:
                dec.encode(rgb, 90, "4:2:2")
            elif kind == 6:
                dec.read_coefficients(bad[i % len(bad)], strict=True)
            elif kind == 7:
                dec.decode(bad[i % len(bad)], strict=True)
            elif kind == 8:
                dec.decode(bad[(i // 10) % len(bad)])
            elif kind == 9:
                dec.read_coefficients(data, max_pixels=100)   # budget error path
            elif kind == 10:
                dec.read_coefficient_rects(data, rects, ks=[8, 3, 8])
            elif kind == 11:
                dec.read_coefficient_rects_batch([data, bad[i % len(bad)], data, good[0]], R, out, offsets,
                                                 threads=2)
            elif kind == 12:
                dec.transcode(data if i % 32 < 16 else bad[i % len(bad)], restart_interval=i % 3)
            elif kind == 13:
                comps, quant, _ = dec.read_coefficients(good[0])
                h = dec.read_header(good[0])
                dec.write_coefficients(comps, quant, h["width"], h["height"], [(c["h"], c["v"]) for c in h["components"]],
                                       color_space=h["color_space"], optimize=i % 2 == 0)
            elif kind == 14:
                dec.encode(rgb, tables=tables75, optimize=True)
            else:
                dec.read_coefficient_rects(bad[i % len(bad)], [(0, 0, 1, 1)], strict=True)
        except JpegError:
            pass

    for i in range(500):
        call(i)
    after_500 = rss()
    for i in range(500, 5000):
        call(i)
    print(after_500, rss())
""")


def _files() -> dict:
    if HAVE_SHARED:
        odd = SHARED_DATA / "odd-jpegs"
        good = sorted((SHARED_DATA / "imagenette-5k" / "val").glob("*/*.JPEG"))[:6]
        good += [odd / "variants/ocelot_jt_progressive.jpg", odd / "jpeg-decoder/reftest/images/ycck.jpg"]
        exif = odd / "exif-orientation/Landscape_6.jpg"
        bad = [odd / r for r in (
            "variants/ocelot_truncated_50pct.jpg", "variants/ocelot_corrupt_entropy_bytes.jpg",
            "variants/png_disguised.JPEG", "variants/empty.JPEG", "jpeg-decoder/crashtest/images/max_size.jpg",
            "libjpeg-turbo/monkey12.jpg", "variants/ocelot_truncated_in_header.jpg")]
    else:
        good = [jpegfiles.path(n) for n in ("420.jpg", "422.jpg", "444.jpg", "gray.jpg", "cmyk.jpg",
                                            "arithmetic.jpg", "progressive.jpg", "ycck.jpg")]
        exif = jpegfiles.path("exif_orientation_6.jpg")
        bad = [jpegfiles.path(n) for n in (
            "truncated_50pct.jpg", "corrupt_entropy.jpg", "png_named.jpg", "empty.jpg",
            "declares_65535x65535.jpg", "header_12bit.jpg", "truncated_before_frame.jpg")]
    # the region of the scale-1/2 decode: inside the smallest good image (75x50 -> 38x25 committed)
    roi = (3, 5, 40, 30) if HAVE_SHARED else (3, 5, 30, 18)
    return {"good": [str(p) for p in good], "exif": str(exif), "bad": [str(p) for p in bad], "roi": roi}


def test_rss_stays_flat_over_5000_calls():
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(_files())], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after_500, after_5000 = map(int, proc.stdout.split())
    growth_mb = (after_5000 - after_500) / 2**20
    assert growth_mb < 3.0, f"RSS grew by {growth_mb:.1f} MB between call 500 and call 5000"
