"""Builders of hostile JPEG files for the hardening tests (tests/test_hostile.py, tests/regressions/).

Every file is made here from scratch (markers written by hand) or from libjpeg's own encoder, so
the tests need no stored blobs: a progressive file with an arbitrary scan script, a header that
declares a huge image, a strip one pixel wide.
"""
from __future__ import annotations

import struct

import numpy as np


def segment(marker: int, payload: bytes) -> bytes:
    """One marker segment: FF, marker byte, big-endian length (payload + 2), payload."""
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


class BitWriter:
    """JPEG entropy-coded bit stream: MSB first, 0xFF bytes followed by a stuffed 0x00."""

    def __init__(self):
        self.acc = 0
        self.n = 0
        self.out = bytearray()

    def put(self, value: int, nbits: int) -> None:
        for i in range(nbits - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc = 0
                self.n = 0

    def flush(self) -> bytes:
        if self.n:  # pad the last byte with 1 bits, as encoders do
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def _eob_runs(nblocks: int) -> bytes:
    """An AC scan (first or refinement) whose every block is empty: EOBRUN codes covering ``nblocks``.

    The AC table used has the 15 symbols EOBr (``r << 4``, r = 0..14) with 4-bit codes ``r``; EOBr
    is followed by r extra bits, the run being ``2**r + extra`` (at most 32767 blocks per code).
    """
    bits = BitWriter()
    while nblocks:
        run = min(nblocks, 32767)
        r = run.bit_length() - 1
        bits.put(r, 4)
        if r:
            bits.put(run - (1 << r), r)
        nblocks -= run
    return bits.flush()


def progressive_gray(width: int, height: int, *, extra_scans: int = 0, refinements: int = 13) -> bytes:
    """A valid progressive (SOF2) grayscale JPEG of a flat mid-grey image with a maximal scan script.

    Scans: DC first (Al=13) and its 13 refinements, then for each AC coefficient k = 1..63 its
    first scan (Al=13) and 13 refinements: 14 * 64 = 896 scans, every one conforming (libjpeg
    reports no warning). ``refinements`` < 13 keeps that many refinement scans per coefficient:
    (1 + refinements) * 64 scans, starting at Al = refinements. ``extra_scans`` appends that many more AC refinement scans of band 1..63,
    which repeat an already finished progression (libjpeg only warns about those).
    Every coefficient is zero, so all data is: DC category 0 (1-bit code '0') and EOB runs.
    """
    nb = ((width + 7) // 8) * ((height + 7) // 8)
    out = bytearray(b"\xff\xd8")
    out += segment(0xDB, b"\x00" + bytes([1] * 64))
    out += segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0]))
    out += segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC: one symbol, code '0'
    out += segment(0xC4, b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15)))

    def sos(ss: int, se: int, ah: int, al: int) -> bytes:
        return segment(0xDA, bytes([1, 1, 0x00, ss, se, (ah << 4) | al]))

    zero_bits = bytes((nb + 7) // 8)  # DC first: nb codes '0'; DC refinement: nb raw 0 bits
    out += sos(0, 0, 0, refinements) + zero_bits
    for al in range(refinements - 1, -1, -1):
        out += sos(0, 0, al + 1, al) + zero_bits
    ac = _eob_runs(nb)
    for k in range(1, 64):
        out += sos(k, k, 0, refinements) + ac
        for al in range(refinements - 1, -1, -1):
            out += sos(k, k, al + 1, al) + ac
    for _ in range(extra_scans):
        out += sos(1, 63, 1, 0) + ac
    out += b"\xff\xd9"
    return bytes(out)


def with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with the width/height of its SOFn marker replaced (the data no longer matches)."""
    i = 2
    while i + 4 <= len(jpeg):
        if jpeg[i] != 0xFF:
            raise ValueError("marker expected")
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]
        i += 2 + length
    raise ValueError("no SOF marker")


def header_only(jpeg: bytes) -> bytes:
    """The markers of ``jpeg`` up to and including its first SOS segment, no entropy data, no EOI."""
    i = 2
    while i + 4 <= len(jpeg):
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        i += 2 + length
        if marker == 0xDA:
            return jpeg[:i]
    raise ValueError("no SOS marker")


def gradient(height: int, width: int) -> np.ndarray:
    """uint8 ``(height, width, 3)`` smooth colour ramp (real content for the encoder)."""
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :]
    return np.stack([np.broadcast_to(y, (height, width)), np.broadcast_to(x, (height, width)),
                     (y + x) / 2 * np.ones((height, width))], axis=-1).astype(np.uint8)
