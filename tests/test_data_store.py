"""DCTLoader on a real store written by `jdct convert` (jdct_cli.convert) from a few real JPEGs
(photographs made at test time; imagenette-5k too when ../shared/data is there) plus a truncated
JPEG (a failed conversion: label -1, zero coefficients)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from jdct_cli.data import DCTLoader
from jdct_cli.convert import ConvertOptions, convert
from photos import photo_jpeg
from storetools import REAL_SOURCES, real_source
from test_data import Identifier, psnr, run

SIZE = 64


@pytest.fixture(scope="module", params=REAL_SOURCES)
def converted(request, tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    root = real_source(request.param, tmp_path_factory)
    classes = sorted(p.name for p in (root / "train").iterdir())[:3]
    for split, per in (("train", 7), ("val", 3)):
        for wnid in classes:
            (src / split / wnid).mkdir(parents=True)
            for f in sorted((root / split / wnid).iterdir())[:per]:
                shutil.copy(f, src / split / wnid / f.name)
    # Header fine, entropy data cut in half: fails during conversion and keeps its slot with label -1.
    whole = photo_jpeg(tmp_path_factory.mktemp("cut") / "whole.jpg", "coffee").read_bytes()
    (src / "train" / classes[1] / "zz_truncated.JPEG").write_bytes(whole[:len(whole) // 2])
    out = tmp_path_factory.mktemp("conv") / "s.zarr"
    convert(src, out, options=ConvertOptions(size=SIZE, quality=95, views=2, chunk_samples=4, shard_samples=8),
            workers=1)
    return out, src


@pytest.fixture(scope="module", params=["crops", "images"])
def converted_any(request, converted, tmp_path_factory):
    """``converted`` and the same source converted to the images layout (crops made by the loader)."""
    if request.param == "crops":
        return converted
    _, src = converted
    out = tmp_path_factory.mktemp("conv-images") / "s.zarr"
    convert(src, out, options=ConvertOptions(layout="images", size=SIZE, chunk_samples=4, shard_samples=8),
            workers=1)
    return out, src


def test_converted_store_exactly_once_skipping_failures(converted):
    store, _ = converted
    ident = Identifier(store, "train")
    labels = ident.data["label"]
    assert (labels[0] == -1).sum() == 1, "the truncated JPEG should be a failed sample"
    for epoch in (0, 1):
        valid = set(np.flatnonzero(labels[epoch % 2] >= 0).tolist())
        seen, lens = [], set()
        for rank in range(2):
            ld = DCTLoader(store, "train", batch_size=3, rank=rank, world_size=2, drop_last=False, normalize=False,
                           flip=True, seed=5)
            ld.set_epoch(epoch)
            batches = run(ld, ident)
            lens.add(len(batches))
            for ids, labs in batches:
                for sid, lab in zip(ids, labs):
                    if sid is None:
                        assert lab == -1
                        continue
                    assert sid[0] == epoch % 2 and lab == labels[sid[0], sid[1]]
                    seen.append(sid[1])
        assert len(lens) == 1
        assert sorted(seen) == sorted(valid)


def test_converted_store_val_rgb_matches_pillow(converted_any):
    store, src = converted_any
    ld = DCTLoader(store, "val", batch_size=4, output="rgb", normalize=False)
    images = torch.cat([x for x, _ in ld]).numpy()
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["jdct"]
    import zarr

    order = zarr.open_group(str(store), mode="r")["val/image"][0]
    files = meta["splits"]["val"]["files"]
    assert len(images) == len(files) == 9
    r = int(round(SIZE / 0.875))
    for got, image in zip(images, order):
        with Image.open(src / files[image]) as im:
            im = im.convert("RGB")
            w, h = im.size
            rw, rh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
            im = im.resize((rw, rh), Image.Resampling.BILINEAR)
            left, top = int(round((rw - SIZE) / 2)), int(round((rh - SIZE) / 2))
            ref = np.asarray(im.crop((left, top, left + SIZE, top + SIZE)))
        assert psnr(got.transpose(1, 2, 0) * 255.0, ref) > 30


def test_converted_store_statistics_standardize(converted):
    """A pass over both views with normalize=True gives mean 0 / std 1 per coefficient channel,
    the store's stats being those of every valid sample of every train view."""
    store, _ = converted
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["jdct"]
    ld = DCTLoader(store, "train", batch_size=8, shuffle=False, flip=False, drop_last=False)
    acc = {k: [] for k in ("y", "cb", "cr")}
    for epoch in (0, 1):
        ld.set_epoch(epoch)
        for (y, cb, cr), _ in ld:
            for k, t in zip(acc, (y, cb, cr)):
                acc[k].append(t.double())
    for k, parts in acc.items():
        x = torch.cat(parts)
        varying = np.array(meta["stats"][k]["std"]) > 1e-6
        np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-3)
        np.testing.assert_allclose(x.std(dim=(0, 2, 3), unbiased=False).numpy()[varying], 1, atol=1e-3)
    assert not math.isnan(float(x.sum()))
