"""Test helper: images-layout stores whose samples can be recognised in any fresh crop.

Every image of a split carries its own code in its colour: constant chroma ``(Cb, Cr) = 128 +
(-32 + 8*(k % 9), -32 + 8*(k // 9))`` for code ``k``, so any crop of it has the same chroma DC
whatever its box, scale or flip; and a horizontal luma ramp (80 at the left edge to 176 at the
right), so that the sign of a crop's first horizontal AC coefficient tells whether it was
mirrored. :class:`ImagesIdentifier` maps what a loader delivers back to ``(view, sample, flipped)``
like ``test_data.Identifier`` does for crops stores by content. The images are written with
Pillow (quality 95, 4:2:0) and converted by ``jdct convert --layout images``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import zarr
from PIL import Image

#: Chroma offsets are multiples of this (identification rounds to it).
STEP = 8
MAX_CODES = 81


def chroma_of(code: int) -> tuple[int, int]:
    """(Cb - 128, Cr - 128) of image ``code``."""
    if not 0 <= code < MAX_CODES:
        raise ValueError(f"code {code} is not in 0..{MAX_CODES - 1}")
    return -32 + STEP * (code % 9), -32 + STEP * (code // 9)


def coded_rgb(code: int, width: int, height: int) -> np.ndarray:
    """uint8 (height, width, 3): the image of ``code`` (JFIF YCbCr -> RGB; no value clips)."""
    dcb, dcr = chroma_of(code)
    y = 80.0 + 96.0 * np.arange(width) / max(width - 1, 1)
    y = np.broadcast_to(y, (height, width))
    r = y + 1.402 * dcr
    g = y - 0.344136 * dcb - 0.714136 * dcr
    b = y + 1.772 * dcb
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def write_coded_tree(root: Path, splits: dict, *, seed: int = 0, failed: Optional[dict] = None,
                     sides=(40, 160)) -> Path:
    """``root/<split>/c<i>/k<code>.jpg``: ``splits`` {split: (classes, per_class)}; codes count up
    in file order (class folders, then file names).
    ``failed`` {split: [codes]} become JPEGs cut short before their EOI (a failed conversion: the
    sample keeps its slot, label -1). A store permutes its samples: see :class:`ImagesIdentifier`."""
    rng = np.random.default_rng(seed)
    for split, (classes, per_class) in splits.items():
        bad = set((failed or {}).get(split, ()))
        n = 0
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(per_class):
                w, h = (int(v) for v in rng.integers(sides[0], sides[1] + 1, size=2))
                path = folder / f"k{n:03d}.jpg"
                Image.fromarray(coded_rgb(n, w, h)).save(path, quality=95, subsampling="4:2:0")
                if n in bad:
                    data = path.read_bytes()
                    path.write_bytes(data[:-16])  # entropy data cut short: fails in conversion
                n += 1
    return root


def convert_coded(src: Path, out: Path, *, size: int = 32, chunk_samples: int = 8, shard_samples: int = 16) -> Path:
    from jdct_cli.convert import ConvertOptions, convert

    convert(src, out, options=ConvertOptions(layout="images", size=size, chunk_samples=chunk_samples,
                                             shard_samples=shard_samples), workers=1)
    return out


class ImagesIdentifier:
    """Maps a delivered sample (dequantized ``y``, ``cb``, ``cr``, quality 100) of an images store
    of coded images back to ``(0, store index, flipped)``; None for a padding sample (all zero).
    ``data["label"]``: the split's label array ``(1, N)``; ``views``: 1; ``failed``: the store indices
    of failed samples (label -1)."""

    views = 1

    def __init__(self, store: Path, split: str):
        g = zarr.open_group(str(store), mode="r")
        self.data = {"label": g[f"{split}/label"][:]}
        files = g.attrs["jdct"]["splits"][split]["files"]
        image = g[f"{split}/image"][0]
        # sample n holds file files[image[n]], named k<code>.jpg
        self.failed = [int(n) for n in np.flatnonzero(self.data["label"][0] < 0)]
        self.sample_of = {}
        for n, i in enumerate(image.tolist()):
            if self.data["label"][0, n] >= 0:
                self.sample_of[int(Path(files[i]).stem[1:])] = n

    def __call__(self, y, cb=None, cr=None):
        if cb is None or cr is None:
            raise TypeError("an images-store sample is identified by all three planes")
        y, cb, cr = (np.asarray(t.cpu().double().numpy()) for t in (y, cb, cr))
        if not (y.any() or cb.any() or cr.any()):
            return None  # padding sample
        code_cb = int(np.rint(cb[0].mean() / 8.0 / STEP))
        code_cr = int(np.rint(cr[0].mean() / 8.0 / STEP))
        code = (code_cr + 4) * 9 + (code_cb + 4)
        assert 0 <= code_cb + 4 < 9 and 0 <= code_cr + 4 < 9, (cb[0].mean(), cr[0].mean())
        slope = y[1].mean()  # u = 1, v = 0: negative for a luma ramp rising to the right
        assert abs(slope) > 0.5, f"no luma ramp in the crop ({slope})"
        return 0, self.sample_of[code], bool(slope > 0)


def identify_all(ident, planes: Sequence) -> list:
    """``ident`` of every sample of a batch of ``(y, cb, cr)``."""
    y, cb, cr = planes
    return [ident(y[i], cb[i], cr[i]) for i in range(len(y))]
