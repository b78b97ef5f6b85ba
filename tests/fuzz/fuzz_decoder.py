#!/usr/bin/env python3
"""atheris (libFuzzer) harness over every entry point of the C decoder and the conversion path.

One input = the bytes of one would-be JPEG file. Each input goes through, in order:

1. ``_decoder.read_header``
2. ``_decoder.read_coefficients`` (strict or not)
3. ``_decoder.decode`` at a DCT scale of 1, 2, 4 or 8 or M/8 (``scale_num``), whole image
4. ``_decoder.decode`` of a region of interest inside that scaled image, compared with the same
   region of the whole decode when neither decode saw a libjpeg warning
5. ``_decoder.resize_bilinear`` of a box of that image, compared with Pillow's resize
6. ``transforms.convert_image``: one file's bytes to one crop's coefficients (what ``jdct convert``
   does per image: header, crop box, ROI + DCT-scaled decode, resize, forward DCT), train or val,
   EXIF orientation ignored or applied.
7. ``_decoder.read_coefficient_rects`` of a block rectangle per component (some left out) at a
   k of 1..8, compared with the same places of ``read_coefficients`` when neither warned, and the
   same rectangles through ``read_coefficient_rects_batch`` on 2 threads (identical values)
8. ``_decoder.transcode`` to baseline (with a restart interval for half the inputs): the result
   reads back with the source's coefficients and tables when the source read cleanly
9. ``_decoder.write_coefficients`` of the coefficients read: they read back identical

The choices (scale, strictness, ROI, train/val...) come from a CRC of the input, so an input
always replays the same way (regression files under ``tests/regressions/`` rely on it) and the
seed corpus needs no extra framing bytes.

A *finding* is anything other than a clean :class:`jdct_cli.errors.JdctError`: a crash (SIGSEGV,
abort; libFuzzer catches deadly signals), another Python exception, a result whose shape or dtype
disagrees with the header, a slow input (``-timeout``) or memory growth (``-rss_limit_mb``).
The decoder is compiled without coverage instrumentation (no clang here), so the coverage that
guides the mutations is the Python layer's; libjpeg is exercised by the mutations of real files.

Usage (``make fuzz`` runs it):
    python3 tests/fuzz/fuzz_decoder.py fuzz-out/corpus /work/shared/data/odd-jpegs \
        -max_total_time=600 -timeout=10 -rss_limit_mb=2048 -max_len=1048576 -artifact_prefix=fuzz-out/
    python3 tests/fuzz/fuzz_decoder.py CRASH_FILE        # replay one input
"""
from __future__ import annotations

import re
import sys
import zlib

import numpy as np

# jdct_cli is imported inside the functions, not here: atheris instruments a module only when it
# is first imported under atheris.instrument_imports() (main), so it must not be imported before.

#: Pixel budget while fuzzing: small enough that one input decodes in well under a second, large
#: enough for every seed file (the biggest odd JPEGs are 2048x1536).
FUZZ_MAX_PIXELS = 1 << 23


class FuzzFinding(Exception):
    """An invariant of the decoder's contract was broken by an input."""


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise FuzzFinding(what)


#: Distinct branches of :func:`_feature`. The decoder's C code carries no coverage instrumentation,
#: so what libjpeg did with an input (its message, warning count, the frame's properties) is fed
#: back to libFuzzer as Python coverage: each outcome lands on its own branch of a generated chain.
FEATURE_SLOTS = 1024
_NUMBERS = re.compile(rb"\d+")
_chain = "\n".join(f"    {'el' if i else ''}if i == {i}:\n        return {i}" for i in range(FEATURE_SLOTS))
exec(compile(f"def _feature_chain(i):\n{_chain}\n    return -1\n", __file__, "exec"))


def _feature(*parts) -> None:
    """Mark the outcome ``parts`` (strings/ints; numbers in messages ignored) as a coverage feature."""
    key = _NUMBERS.sub(b"#", repr(parts).encode())
    _feature_chain(zlib.crc32(key) % FEATURE_SLOTS)  # noqa: F821 (defined by exec above)


def _choices(data: bytes) -> dict:
    k = zlib.crc32(data)
    k2 = zlib.crc32(data, 0x9E3779B9)
    return {
        "scale": (1, 2, 4, 8)[k & 3],
        "strict": bool(k & 4),
        "train": bool(k & 8),
        "exif": "apply" if k & 16 else "ignore",
        "roi_bits": k >> 5,
        # a second, independent draw: libjpeg's M/8 scaling (scale=8, scale_num=M) for half the
        # inputs, and the box/size of the resize_bilinear call
        "scale_num": 1 + (k2 & 15) if k2 & 16 else None,
        "resize_bits": k2 >> 5,
    }


def _check_resize(rgb: np.ndarray, bits: int) -> None:
    """``resize_bilinear`` of a box of ``rgb`` drawn from ``bits`` equals Pillow's resize (its contract)."""
    from PIL import Image

    from jdct_cli import _decoder as dec

    h0, w0 = rgb.shape[:2]
    x0 = w0 * (bits & 255) / 256
    y0 = h0 * ((bits >> 8) & 255) / 256
    x1 = x0 + (w0 - x0) * (((bits >> 16) & 15) + 1) / 16
    y1 = y0 + (h0 - y0) * (((bits >> 20) & 15) + 1) / 16
    ow, oh = 1 + ((bits >> 8) & 63), 1 + ((bits >> 14) & 63)
    got = dec.resize_bilinear(rgb, (x0, y0, x1, y1), ow, oh)
    want = np.asarray(Image.fromarray(rgb, "RGB").resize((ow, oh), Image.Resampling.BILINEAR,
                                                         box=(x0, y0, x1, y1), reducing_gap=None))
    _check(got.dtype == np.uint8 and got.shape == (oh, ow, 3), f"resize shape {got.shape}")
    _check(np.array_equal(got, want), f"resize_bilinear of {(x0, y0, x1, y1)} of {w0}x{h0} to {ow}x{oh} "
                                      "differs from Pillow")


def _check_rects(data: bytes, header: dict, comps, quant, bits: int) -> None:
    """Step 7: rectangles (single and batched) against the whole read (``comps`` None: it failed)."""
    from jdct_cli import _decoder as dec
    from jdct_cli.errors import JdctError

    rects, ks = [], []
    for ci, info in enumerate(header["components"][:4]):
        H, W = info["blocks_high"], info["blocks_wide"]
        b = (bits >> (6 * ci)) & 63
        if b & 1 and ci:
            rects.append(None)
        else:
            r0, c0 = (b >> 1) % H, (b >> 3) % W
            rects.append((r0, c0, r0 + 1 + (bits >> 24) % (H - r0), c0 + 1 + (bits >> 28) % (W - c0)))
        ks.append(1 + (b >> 2) % 8)
    try:
        out, q, warnings, info = dec.read_coefficient_rects(data, rects, ks=ks, max_pixels=FUZZ_MAX_PIXELS)
    except JdctError as exc:
        _feature("rects", type(exc).__name__, exc.reason)
        return
    _feature("rects-ok", info["mode"], min(warnings, 9))
    for got, rect, k in zip(out, rects, ks):
        if rect is None:
            _check(got is None, "a rectangle where none was asked")
            continue
        r0, c0, r1, c1 = rect
        _check(got.dtype == np.int16 and got.shape == (r1 - r0, c1 - c0, k * k), f"rect shape {got.shape}")
    if comps is not None and warnings == 0:
        _check(np.array_equal(q, quant), "rect quant differs from the whole read")
        for comp, got, rect, k in zip(comps, out, rects, ks):
            if rect is not None:
                r0, c0, r1, c1 = rect
                want = comp[r0:r1, c0:c1].reshape(r1 - r0, c1 - c0, 8, 8)[:, :, :k, :k].reshape(r1 - r0, c1 - c0, -1)
                _check(np.array_equal(got, want), f"rect {rect} k {k} ({info['mode']}) differs from the whole read")
    # the same through the batch entry point, twice in one batch on 2 threads
    C = len(rects)
    R = np.array([[r or (0, 0, 0, 0) for r in rects]] * 2, np.int64)
    K = np.array([ks] * 2, np.int64)
    sizes = (R[:, :, 2] - R[:, :, 0]) * (R[:, :, 3] - R[:, :, 1]) * K * K
    offsets = np.concatenate([[0], np.cumsum(sizes.ravel())[:-1]]).reshape(2, C)
    buf = np.zeros(int(sizes.sum()) + 1, np.int16)
    errors, bw, bq, _ = dec.read_coefficient_rects_batch([data, data], R, buf, offsets, ks=K, threads=2,
                                                         max_pixels=FUZZ_MAX_PIXELS)
    for i in range(2):
        _check(errors[i] is None, f"batch item failed where the single read did not: {errors[i]!r}")
        for ci, got in enumerate(out):
            if got is not None:
                part = buf[offsets[i, ci]:offsets[i, ci] + got.size]
                _check(np.array_equal(part, got.ravel()), "batch differs from the single read")


def _check_writing(data: bytes, header: dict, comps, quant, bits: int) -> None:
    """Steps 8 and 9: lossless transcoding and writing the coefficients back."""
    from jdct_cli import _decoder as dec
    from jdct_cli.errors import JdctError

    hmax = max(c["h"] for c in header["components"])
    vmax = max(c["v"] for c in header["components"])
    real = [(-(-header["height"] * c["v"] // (8 * vmax)), -(-header["width"] * c["h"] // (8 * hmax)))
            for c in header["components"]]
    try:
        out, _ = dec.transcode(data, restart_interval=(bits & 7) if bits & 8 else 0, max_pixels=FUZZ_MAX_PIXELS)
    except JdctError as exc:
        _feature("transcode", type(exc).__name__, exc.reason)
    else:
        _feature("transcode-ok")
        back, bq, warnings = dec.read_coefficients(out, max_pixels=FUZZ_MAX_PIXELS)
        _check(warnings == 0 and not dec.read_header(out)["progressive"], "transcoded file reads with warnings")
        if comps is not None:
            _check(np.array_equal(bq, quant), "transcode changed the tables")
            for a, b, (bh, bw) in zip(comps, back, real):
                _check(np.array_equal(a[:bh, :bw], b[:bh, :bw]), "transcode changed coefficients")
    spaces = {"GRAYSCALE": 1, "YCbCr": 3, "RGB": 3, "CMYK": 4, "YCCK": 4}
    if comps is None or spaces.get(header["color_space"]) != len(comps) or quant.min() < 1:
        return
    # what baseline Huffman coding of 8-bit data holds (write_coefficients refuses the rest)
    for c, (bh, bw) in zip(comps, real):
        if not (-1024 <= c[:bh, :bw, 0].min() and c[:bh, :bw, 0].max() <= 1023
                and np.abs(c[:bh, :bw, 1:].astype(np.int32)).max(initial=0) <= 1023):
            _feature("write-out-of-range")
            return
    try:
        out = dec.write_coefficients(comps, quant, header["width"], header["height"],
                                     [(c["h"], c["v"]) for c in header["components"]],
                                     color_space=header["color_space"], restart_interval=bits & 3)
    except JdctError as exc:
        _feature("write", type(exc).__name__, exc.reason)
        return
    back, bq, warnings = dec.read_coefficients(out, max_pixels=FUZZ_MAX_PIXELS)
    _check(warnings == 0 and np.array_equal(bq, quant), "written file reads differently")
    for a, b, (bh, bw) in zip(comps, back, real):
        _check(np.array_equal(a[:bh, :bw], b[:bh, :bw]), "write_coefficients changed coefficients")


def one_input(data: bytes) -> None:
    """Run one input through every entry point; raise on anything but a clean JdctError."""
    from jdct_cli import _decoder as dec
    from jdct_cli.transforms import SampleRecipe, convert_image
    from jdct_cli.errors import JdctError

    ch = _choices(data)
    try:
        header = dec.read_header(data, max_pixels=FUZZ_MAX_PIXELS)
    except JdctError as exc:
        header = None
        _feature("header", type(exc).__name__, exc.reason)
    if header is not None:
        _feature("frame", header["progressive"], header["arithmetic"], header["color_space"],
                 header["restart_interval"] > 0, [(c["h"], c["v"]) for c in header["components"]])
        W, H, nc = header["width"], header["height"], header["num_components"]
        _check(W > 0 and H > 0 and W * H <= FUZZ_MAX_PIXELS, f"header size {W}x{H}")
        _check(len(header["components"]) == nc, "component count")
        comps = quant = None
        try:
            comps, quant, nwarn = dec.read_coefficients(data, max_pixels=FUZZ_MAX_PIXELS, strict=ch["strict"])
        except JdctError as exc:
            _feature("coef", type(exc).__name__, exc.reason)
        else:
            _feature("coef-ok", min(nwarn, 9))
            _check(len(comps) == nc and quant.shape == (nc, 64) and quant.dtype == np.uint16, "quant shape")
            for c, info in zip(comps, header["components"]):
                _check(c.dtype == np.int16 and c.shape == (info["blocks_high"], info["blocks_wide"], 64),
                       f"coefficient shape {c.shape} vs header {info}")
            if nwarn:
                comps = None  # damaged: other paths may see the damage differently
        _check_rects(data, header, comps, quant, ch["roi_bits"])
        _check_writing(data, header, comps, quant, ch["resize_bits"])
        s, m = ch["scale"], ch["scale_num"]
        if m is not None and W * H * m * m <= 64 * FUZZ_MAX_PIXELS:
            s, scaling = f"{m}/8", {"scale": 8, "scale_num": m}
            sw, sh = -(-W * m // 8), -(-H * m // 8)
        else:
            scaling = {"scale": s}
            sw, sh = -(-W // s), -(-H // s)
        full = None
        try:
            full, wfull = dec.decode(data, **scaling, max_pixels=FUZZ_MAX_PIXELS, strict=ch["strict"])
        except JdctError as exc:
            _feature("decode", s, type(exc).__name__, exc.reason)
        else:
            _feature("decode-ok", s, min(wfull, 9))
            _check(full.dtype == np.uint8 and full.shape == (sh, sw, 3), f"decode shape {full.shape} for {W}x{H}/{s}")
        b = ch["roi_bits"]
        x = b % sw
        y = (b >> 7) % sh
        w = 1 + (b >> 14) % (sw - x)
        h = 1 + (b >> 20) % (sh - y)
        try:
            part, wpart = dec.decode(data, **scaling, roi=(x, y, w, h), max_pixels=FUZZ_MAX_PIXELS,
                                     strict=ch["strict"])
        except JdctError as exc:
            _feature("roi", s, type(exc).__name__, exc.reason)
        else:
            _check(part.dtype == np.uint8 and part.shape == (h, w, 3), f"roi shape {part.shape} for {(x, y, w, h)}")
            if full is not None and wfull == 0 and wpart == 0:
                _check(np.array_equal(part, full[y:y + h, x:x + w]), f"roi {(x, y, w, h)} at 1/{s} differs from the full decode")
    if header is not None and full is not None:
        _check_resize(full, ch["resize_bits"])
    opts = SampleRecipe(size=32, max_pixels=FUZZ_MAX_PIXELS, exif=ch["exif"])
    try:
        yk, cbk, crk, box = convert_image(data, "fuzz-input.jpg", train=ch["train"],
                                          rng=np.random.default_rng(ch["roi_bits"]), opts=opts)
    except JdctError as exc:
        _feature("convert", type(exc).__name__, exc.reason)
        return
    _check(yk.shape == (64, 4, 4) and cbk.shape == (64, 2, 2) and crk.shape == (64, 2, 2), "sample shapes")
    _check(yk.dtype == np.int16 and cbk.dtype == np.int16 and crk.dtype == np.int16, "sample dtypes")
    _check(len(box) == 4 and all(np.isfinite(v) for v in box), f"box {box}")


def main(argv: list[str]) -> None:
    import atheris

    atheris.instrument_func(_feature_chain)  # noqa: F821
    with atheris.instrument_imports():
        import jdct_cli.convert  # noqa: F401
        import jdct_cli.jpegmath.sample  # noqa: F401
        import jdct_cli.jpeg  # noqa: F401
        import jdct_cli.transforms  # noqa: F401
    # Setup(argv, ...) hands the remaining flags (-max_total_time, corpus folders...) to libFuzzer.
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
