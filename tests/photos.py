"""Small real-photograph fixtures built at test time, so that every behaviour is tested from a fresh
clone without ``../shared``.

The photographs are the public-domain / CC0 colour pictures that ship inside the scikit-image
wheel (a dev dependency): nothing is downloaded and nothing large is committed. From them
:func:`make_photo_tree` writes an ImageFolder tree of real JPEGs: one class per photograph, each
image a different seeded crop of it, resized to its own (non-square) size and encoded by Pillow
with libjpeg at a mix of qualities and chroma samplings, plus a few grayscale files, as in
ImageNet. The class is learnable (which photograph a crop comes from), so short training runs on
such a tree must beat chance.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

#: (class name, scikit-image loader name): photographs whose licence allows any use.
PHOTOS = (
    ("astronaut", "astronaut"),          # NASA, public domain
    ("cat", "chelsea"),                   # Stefan van der Walt, CC0
    ("coffee", "coffee"),                 # Rachel Michetti, CC0
    ("rocket", "rocket"),                 # SpaceX, CC0
    ("hubble", "hubble_deep_field"),      # NASA, public domain
    ("ihc", "immunohistochemistry"),      # Jeroen van der Laak, CC0 / public domain
)

#: Pillow ``subsampling`` codes: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0.
_SAMPLINGS = (2, 2, 2, 0, 1)


def photo(name: str) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB of scikit-image's photograph ``name`` (a loader name of PHOTOS)."""
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


def _random_crop(rng: np.random.Generator, img: np.ndarray, min_side: int, max_side: int) -> Image.Image:
    h, w = img.shape[:2]
    area = h * w * rng.uniform(0.25, 1.0)
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = int(min(w, round(math.sqrt(area * ratio))))
    ch = int(min(h, round(math.sqrt(area / ratio))))
    x = int(rng.integers(0, w - cw + 1))
    y = int(rng.integers(0, h - ch + 1))
    side = int(rng.integers(min_side, max_side + 1))
    # the output keeps the crop's aspect ratio, its longer side `side` pixels
    scale = side / max(cw, ch)
    size = (max(8, round(cw * scale)), max(8, round(ch * scale)))
    crop = Image.fromarray(img[y:y + ch, x:x + cw])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.resize(size, Image.Resampling.BILINEAR)


def make_photo_tree(root: Path, *, classes: int = 4, train_per_class: int = 12, val_per_class: int = 4,
                    min_side: int = 40, max_side: int = 160, seed: int = 0, grayscale_every: int = 11,
                    splits: Sequence[str] = ("train", "val")) -> Path:
    """Write ``root/<split>/<class>/<class>_<i>.jpg`` and return ``root``.

    ``classes`` (at most ``len(PHOTOS)``) photographs, ``train_per_class`` / ``val_per_class`` JPEGs
    each; sides ``min_side..max_side`` pixels (the longer side), quality 70..95, mostly 4:2:0 with
    some 4:4:4 and 4:2:2; every ``grayscale_every``-th file is grayscale (0 = none). Deterministic
    in ``seed``: the same arguments write the same bytes.
    """
    if not 1 <= classes <= len(PHOTOS):
        raise ValueError(f"classes must be 1..{len(PHOTOS)}, got {classes}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    per_split = {"train": train_per_class, "val": val_per_class}
    k = 0
    for split in splits:
        for cls, loader_name in PHOTOS[:classes]:
            img = photo(loader_name)
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_split[split]):
                im = _random_crop(rng, img, min_side, max_side)
                k += 1
                quality = int(rng.integers(70, 96))
                if grayscale_every and k % grayscale_every == 0:
                    im.convert("L").save(folder / f"{cls}_{i:03d}.jpg", quality=quality)
                else:
                    sub = _SAMPLINGS[int(rng.integers(len(_SAMPLINGS)))]
                    im.save(folder / f"{cls}_{i:03d}.jpg", quality=quality, subsampling=sub)
    return root


def photo_jpeg(path: Path, name: str = "astronaut", *, size: tuple[int, int] | None = None, quality: int = 90,
               subsampling: int = 2, **save_options) -> Path:
    """One JPEG of scikit-image's photograph ``name`` (optionally resized to ``size`` = (w, h)) at ``path``."""
    im = Image.fromarray(photo(name))
    if size is not None:
        im = im.resize(size, Image.Resampling.BILINEAR)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=quality, subsampling=subsampling, **save_options)
    return path
