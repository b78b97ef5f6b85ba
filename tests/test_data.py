"""DCTLoader on small real stores written by tests/storefixture.py from real JPEGs: trees of
scikit-image's photographs made at test time (tests/photos.py), and imagenette-5k too when
../shared/data is there.

Samples that come out of the loader are identified by their *content*: the delivered coefficients
(divided back by the quant table) are looked up among the store's int16 arrays read directly with
zarr, plain and flipped; so every test also checks that the data delivered is the stored data.

The loader's behaviour tests (exactly once across ranks, padding, order, resuming, forks, threads,
reused memory, pickling) run on both store layouts (``tiny_any``): the images layout's fresh crops
are identified by the colour code of their image (tests/codedimages.py).
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import pickle
import shutil
import threading

import jsonschema
import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from conftest import REPO
from jdct_cli.jpegmath.blockdct import plane_stats_from_coefficients
from jdct_cli._decoder import decode, encode
from jdct_cli.data import DCTLoader, rank_share
from jdct_cli.errors import (CheckpointError, ConfigError, IncompleteStoreError, SourceNotFoundError, StoreCorruptionError,
                             StoreError, StoreVersionError)
from photos import make_photo_tree
from storefixture import crop_rgb, list_images, val_box, write_store
from storetools import REAL_SOURCES, real_source
from codedimages import ImagesIdentifier, convert_coded, write_coded_tree

FAILED = [3, 20]


@pytest.fixture(scope="module")
def tiny_photos(tmp_path_factory):
    """5 classes of photographs: 9 train and 4 val JPEGs each, 40-160 px."""
    return make_photo_tree(tmp_path_factory.mktemp("photos"), classes=5, train_per_class=9, val_per_class=4)


@pytest.fixture(scope="module")
def tiny(tiny_photos, tmp_path_factory):
    """45 train samples (5 classes x 9, 2 views, two failed) and 20 val, 32 px, chunks of 8."""
    tp, tl, names = list_images(tiny_photos / "train", 9, 5)
    vp, vl, _ = list_images(tiny_photos / "val", 4, 5)
    out = tmp_path_factory.mktemp("tiny") / "s.zarr"
    return write_store(out, {"train": (tp, tl), "val": (vp, vl)}, names, size=32, views=2, quality=90,
                       chunk_samples=8, shard_samples=16, failed={"train": FAILED})


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """The images-layout twin of ``tiny``: 45 train samples (5 classes x 9, two failed) and 20 val,
    coded images 40-160 px, crops of 32 px by default, chunks of 8."""
    root = tmp_path_factory.mktemp("tiny-images")
    src = write_coded_tree(root / "src", {"train": (5, 9), "val": (5, 4)}, failed={"train": [3, 20]})
    return convert_coded(src, root / "s.zarr", size=32, chunk_samples=8, shard_samples=16)


@pytest.fixture(scope="module", params=["crops", "images"])
def tiny_any(request):
    """``tiny`` and ``tiny_images``: the store of each layout the behaviour tests run on."""
    return request.getfixturevalue("tiny" if request.param == "crops" else "tiny_images")


def identifier(store, split):
    """The content identifier of a store of either layout: :class:`Identifier` (crops) or
    :class:`codedimages.ImagesIdentifier` (images)."""
    layout = json.loads((store / "zarr.json").read_text())["attributes"]["jdct"].get("layout", "crops")
    return ImagesIdentifier(store, split) if layout == "images" else Identifier(store, split)


def failed_of(ident) -> list:
    """Store indices of the failed samples (FAILED for ``tiny``)."""
    return getattr(ident, "failed", FAILED)


def read_split(store, split):
    g = zarr.open_group(str(store), mode="r")
    return {k: g[f"{split}/{k}"][:] for k in ("y", "cb", "cr", "label", "box", "image")}


def flip_np(x):
    """Reference DCT-domain flip of int16 [64, h, w] written independently of jdct_cli."""
    sign = np.array([1 if (k % 8) % 2 == 0 else -1 for k in range(64)], dtype=np.int16).reshape(64, 1, 1)
    return x[:, :, ::-1] * sign


class Identifier:
    """Maps delivered coefficient content back to (view, store index, flipped)."""

    def __init__(self, store, split):
        self.data = read_split(store, split)
        meta = json.loads((store / "zarr.json").read_text())["attributes"]["jdct"]
        self.luma = np.array(meta["quant_tables"]["luma"], dtype=np.float64).reshape(64, 1, 1)
        self.table = {}
        self.views = self.data["label"].shape[0]
        v_n = self.data["label"].shape
        for v in range(v_n[0]):
            for n in range(v_n[1]):
                if self.data["label"][v, n] < 0:
                    continue
                y = self.data["y"][v, n]
                self.table.setdefault(y.tobytes(), (v, n, False))
                self.table.setdefault(np.ascontiguousarray(flip_np(y)).tobytes(), (v, n, True))

    def __call__(self, y_deq: torch.Tensor, cb=None, cr=None):
        q = np.rint(y_deq.cpu().double().numpy() / self.luma).astype(np.int16)
        if not q.any():
            return None  # padding sample
        return self.table[np.ascontiguousarray(q).tobytes()]


def run(loader, ident):
    """[(batch list of (v, n, flipped) or None for padding, labels list)] for one pass."""
    out = []
    for (y, cb, cr), labels in loader:
        assert y.dtype == torch.float32 and labels.dtype == torch.int64
        out.append(([ident(y[i], cb[i], cr[i]) for i in range(len(y))], labels.tolist()))
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_exactly_once_across_ranks(tiny_any, world, drop_last):
    tiny = tiny_any
    ident = identifier(tiny, "train")
    labels_store = ident.data["label"]
    view = 1 % ident.views  # epoch 1 reads view 1 (of 2) of a crops store, the one view of an images store
    valid = set(np.flatnonzero(labels_store[view] >= 0).tolist())
    assert len(valid) == 45 - len(FAILED)
    b = 4
    seen, lens, per_rank = [], set(), []
    for rank in range(world):
        ld = DCTLoader(tiny, "train", batch_size=b, rank=rank, world_size=world, drop_last=drop_last,
                       flip=False, normalize=False, seed=7, threads=2)
        ld.set_epoch(1)  # view 1
        batches = run(ld, ident)
        lens.add(len(batches))
        assert len(batches) == len(ld)
        real = 0
        for ids, labs in batches:
            if drop_last:
                assert len(ids) == b
            for sid, lab in zip(ids, labs):
                if sid is None:
                    assert lab == -1
                    continue
                v, n, flipped = sid
                assert v == view and not flipped and lab == labels_store[view, n]
                seen.append(n)
                real += 1
        assert real == ld.num_samples
        per_rank.append(real)
    assert len(lens) == 1, "every rank must yield the same number of batches"
    assert len(seen) == len(set(seen)), "a sample was yielded twice"
    assert set(seen) <= valid
    if drop_last:
        nb = len(valid) // (world * b)
        assert len(seen) == nb * world * b
    else:
        assert set(seen) == valid
        assert max(per_rank) - min(per_rank) <= b


def test_padding_when_last_round_is_short(tiny_any):
    """43 samples, 3 ranks, batch 14: last round has 1 sample, so ranks 1 and 2 end on one padding sample."""
    tiny = tiny_any
    ident = identifier(tiny, "train")
    seen, pads = [], 0
    for rank in range(3):
        ld = DCTLoader(tiny, "train", batch_size=14, rank=rank, world_size=3, drop_last=False, flip=False,
                       normalize=False)
        batches = run(ld, ident)
        assert len(batches) == 2
        for ids, labs in batches:
            for sid, lab in zip(ids, labs):
                if sid is None:
                    assert lab == -1
                    pads += 1
                else:
                    seen.append(sid[1])
    assert pads == 2 and sorted(seen) == sorted(set(seen)) and len(seen) == 43


def test_order_is_a_function_of_seed_and_epoch(tiny_any):
    tiny = tiny_any
    ident = identifier(tiny, "train")
    views = ident.views

    def order(seed, epoch, shuffle=True):
        ld = DCTLoader(tiny, "train", batch_size=5, seed=seed, shuffle=shuffle, drop_last=False, flip=True,
                       normalize=False)
        ld.set_epoch(epoch)
        return [sid for ids, _ in run(ld, ident) for sid in ids]

    a = order(3, 2)
    assert a == order(3, 2)
    assert {s[0] for s in a} == {2 % views}  # epoch 2 reads view 0
    b = order(3, 3)
    assert {s[0] for s in b} == {3 % views}
    assert [s[1] for s in a] != [s[1] for s in b], "different epochs must give different orders"
    assert [s[1] for s in a] != [s[1] for s in order(4, 2)]
    flips = [s[2] for s in a]
    assert 0 < sum(flips) < len(flips)
    plain = order(3, 2, shuffle=False)
    assert [s[1] for s in plain] == [n for n in range(45) if n not in failed_of(ident)]


def test_resume_mid_epoch(tiny_any):
    tiny = tiny_any
    ident = identifier(tiny, "train")
    kw = dict(batch_size=4, seed=11, rank=1, world_size=2, drop_last=False, flip=True, normalize=False)
    full = DCTLoader(tiny, "train", **kw)
    full.set_epoch(5)
    reference = run(full, ident)
    first = DCTLoader(tiny, "train", **kw)
    first.set_epoch(5)
    it = iter(first)
    head = []
    for _ in range(2):
        (y, cb, cr), labels = next(it)
        head.append(([ident(y[i], cb[i], cr[i]) for i in range(len(y))], labels.tolist()))
    state = json.loads(json.dumps(first.state_dict()))
    del it
    assert state["epoch"] == 5 and state["batches_done"] == 2
    resumed = DCTLoader(tiny, "train", **kw)
    resumed.set_epoch(5)
    resumed.load_state_dict(state)
    tail = run(resumed, ident)
    assert head + tail == reference
    assert resumed.state_dict()["batches_done"] == len(reference)
    other = DCTLoader(tiny, "train", **{**kw, "world_size": 3, "rank": 0})
    with pytest.raises(CheckpointError, match="world_size"):
        other.load_state_dict(state)


def test_flip_in_loader_equals_reference_flip_of_stored_coefficients(tiny):
    data = read_split(tiny, "train")
    ld = DCTLoader(tiny, "train", batch_size=8, shuffle=False, flip=True, normalize=False, drop_last=False)
    ld.set_epoch(4)
    plan = ld.plan()
    meta = ld.info.meta["quant_tables"]
    lq = np.array(meta["luma"]).reshape(64, 1, 1)
    cq = np.array(meta["chroma"]).reshape(64, 1, 1)
    j = 0
    for (y, cb, cr), _ in ld:
        for i in range(len(y)):
            n = int(plan.indices[j])
            j += 1
            f = flip_np if plan.flips[n] else (lambda a: a)
            np.testing.assert_array_equal(y[i].numpy(), f(data["y"][0, n]) * lq)
            np.testing.assert_array_equal(cr[i].numpy(), f(data["cr"][0, n]) * cq)
    assert plan.flips[plan.indices].any()


def _dct_matrix():
    """Orthonormal 8-point DCT-II written independently: D[u, x] = c(u)/2 cos((2x+1) u pi/16)."""
    d = np.array([[(math.sqrt(0.5) if u == 0 else 1.0) / 2 * math.cos((2 * x + 1) * u * math.pi / 16)
                   for x in range(8)] for u in range(8)])
    return d


def _float_blocks_dct(plane):
    """float64 [64, h/8, w/8] natural-order DCT of a level-shifted plane [h, w]."""
    d = _dct_matrix()
    h, w = plane.shape
    blocks = plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3) - 128.0
    coef = np.einsum("vy,ijyx,ux->ijvu", d, blocks, d)
    return coef.reshape(h // 8, w // 8, 64).transpose(2, 0, 1)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module", params=REAL_SOURCES)
def val64(request, tmp_path_factory):
    root = real_source(request.param, tmp_path_factory)
    vp, vl, names = list_images(root / "val", 2, 4)
    out = tmp_path_factory.mktemp("val64") / "s.zarr"
    return write_store(out, {"val": (vp, vl)}, names, size=64, quality=90, chunk_samples=4, shard_samples=8), vp


def test_rgb_reconstruction_matches_pillow(val64):
    """Loader RGB of val samples vs Pillow's resize(round(S/0.875)) + centre crop of the source."""
    store, paths = val64
    ld = DCTLoader(store, "val", batch_size=3, output="rgb", normalize=False)
    images = torch.cat([x for x, _ in ld]).numpy()
    assert images.shape == (len(paths), 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    for got, p in zip(images, paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            w, h = im.size
            r = round(64 / 0.875)
            rw, rh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
            im = im.resize((rw, rh), Image.Resampling.BILINEAR)
            left, top = int(round((rw - 64) / 2)), int(round((rh - 64) / 2))
            ref = np.asarray(im.crop((left, top, left + 64, top + 64)))
        assert psnr(got.transpose(1, 2, 0) * 255.0, ref) > 30


def test_pixel_reconstruction_matches_libjpeg_decode(val64):
    """Loader RGB/YCbCr vs libjpeg's own decode of the same coefficients (islow IDCT, fancy upsampling)."""
    store, paths = val64
    data = read_split(store, "val")
    rgb = torch.cat([x for x, _ in DCTLoader(store, "val", batch_size=8, output="rgb", normalize=False)]).numpy()
    for i, p in enumerate(paths):
        crop = crop_rgb(p, tuple(data["box"][0, i]), 64)
        ref, _ = decode(encode(crop, 90, "4:2:0"))
        assert psnr(rgb[i].transpose(1, 2, 0) * 255.0, ref) > 40
    # YCbCr planes: Y exactly the IDCT of the luma coefficients (no upsampling involved).
    ycc = torch.cat([x for x, _ in DCTLoader(store, "val", batch_size=8, output="ycbcr", normalize=False)]).numpy()
    d = _dct_matrix()
    q = np.array(json.loads((store / "zarr.json").read_text())["attributes"]["jdct"]["quant_tables"]["luma"])
    coef = data["y"][0, 0].astype(np.float64) * q.reshape(64, 1, 1)
    blocks = coef.transpose(1, 2, 0).reshape(8, 8, 8, 8)
    pix = np.einsum("vy,ijvu,ux->ijyx", d, blocks, d).transpose(0, 2, 1, 3).reshape(64, 64) + 128
    np.testing.assert_allclose(ycc[0, 0] * 255.0, np.clip(pix, 0, 255), atol=1e-3)


def test_dequantize_and_normalize_statistics(tiny):
    data = read_split(tiny, "train")
    meta = json.loads((tiny / "zarr.json").read_text())["attributes"]["jdct"]
    lq = np.array(meta["quant_tables"]["luma"], dtype=np.float64).reshape(64, 1, 1)
    raw = DCTLoader(tiny, "train", batch_size=16, shuffle=False, flip=False, normalize=False, drop_last=False)
    (y, _, _), _ = next(iter(raw))
    np.testing.assert_array_equal(y[0].numpy(), data["y"][0, 0] * lq)
    # The store's stats cover every valid sample of both views: a pass over both epochs standardizes exactly.
    ld = DCTLoader(tiny, "train", batch_size=16, shuffle=False, flip=False, normalize=True, drop_last=False)
    sums = {k: [] for k in ("y", "cb", "cr")}
    for epoch in (0, 1):
        ld.set_epoch(epoch)
        for (y, cb, cr), labels in ld:
            for k, t in zip(("y", "cb", "cr"), (y, cb, cr)):
                sums[k].append(t.double())
    for k in sums:
        x = torch.cat(sums[k])
        assert x.shape[0] == 2 * (45 - len(FAILED))
        mean = x.mean(dim=(0, 2, 3)).numpy()
        std = x.std(dim=(0, 2, 3), unbiased=False).numpy()
        varying = np.array(meta["stats"][k]["std"]) > 1e-6
        np.testing.assert_allclose(mean, 0, atol=1e-4)
        np.testing.assert_allclose(std[varying], 1, atol=1e-4)


def test_pixel_stats_from_coefficients_by_parseval(tiny):
    """The YCbCr normalization constants equal the pixel statistics of the IDCT'd planes."""
    data = read_split(tiny, "train")
    meta = json.loads((tiny / "zarr.json").read_text())["attributes"]["jdct"]
    ok = data["label"] >= 0
    coef = data["y"][ok].astype(np.float64) * np.array(meta["quant_tables"]["luma"]).reshape(1, 64, 1, 1)
    d = _dct_matrix()
    n, _, h, w = coef.shape
    blocks = coef.transpose(0, 2, 3, 1).reshape(n, h, w, 8, 8)
    pix = np.einsum("vy,nijvu,ux->nijyx", d, blocks, d) + 128
    mean, std = plane_stats_from_coefficients(meta["stats"]["y"]["mean"], meta["stats"]["y"]["std"])
    assert mean == pytest.approx(pix.mean(), rel=1e-9)
    assert std == pytest.approx(pix.std(), rel=1e-9)


def test_clear_errors(tiny, tmp_path, tiny_photos):
    with pytest.raises(StoreError, match="no split 'test'"):
        DCTLoader(tiny, "test", batch_size=4)
    with pytest.raises(SourceNotFoundError):
        DCTLoader(tmp_path / "nothing.zarr", batch_size=4)
    paths, labels, names = list_images(tiny_photos / "val", 2, 2)
    inc = write_store(tmp_path / "inc.zarr", {"val": (paths, labels)}, names, size=16, write_attrs=False)
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        DCTLoader(inc, "val", batch_size=2)
    v2 = write_store(tmp_path / "v2.zarr", {"val": (paths, labels)}, names, size=16, format_version=2)
    with pytest.raises(StoreVersionError, match="version 2"):
        DCTLoader(v2, "val", batch_size=2)
    with pytest.raises(ConfigError, match="output"):
        DCTLoader(tiny, "train", batch_size=4, output="bgr")
    with pytest.raises(ConfigError, match="rank"):
        DCTLoader(tiny, "train", batch_size=4, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="drop_last"):
        DCTLoader(tiny, "val", batch_size=64, drop_last=True)


def _child_iterate(store, q, inherited=None):
    torch.set_num_threads(1)  # what DataLoader workers do: OpenMP pools do not survive fork
    ld = DCTLoader(store, "train", batch_size=8, flip=True, seed=2, threads=2, normalize=False)
    q.put([labels.tolist() for _, labels in ld])
    if inherited is not None:  # a loader the parent created (and iterated) before forking
        q.put([labels.tolist() for _, labels in inherited])


def test_fork_and_concurrent_loaders(tiny_any):
    tiny = tiny_any
    ld = DCTLoader(tiny, "train", batch_size=8, flip=True, seed=2, threads=2, normalize=False)
    expected = [labels.tolist() for _, labels in ld]  # the parent has used zarr before forking
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_child_iterate, args=(tiny, q, ld))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "loader deadlocked in a forked child"
    assert child.exitcode == 0 and q.get(timeout=5) == expected and q.get(timeout=5) == expected
    # Two loaders iterating at once in one process (and a third on another thread) give the same batches.
    a = DCTLoader(tiny, "train", batch_size=8, flip=True, seed=2, threads=2, normalize=False)
    b = DCTLoader(tiny, "train", batch_size=8, flip=True, seed=2, threads=2, normalize=False)
    other = []
    t = threading.Thread(target=lambda: other.extend(lab.tolist() for _, lab in
                                                     DCTLoader(tiny, "val", batch_size=8)))
    t.start()
    pairs = [(la.tolist(), lb.tolist()) for (_, la), (_, lb) in zip(a, b)]
    t.join(timeout=60)
    assert [p[0] for p in pairs] == expected and [p[1] for p in pairs] == expected
    assert sum(len(x) for x in other) == 20


def test_early_break_stops_reader_threads(tiny_any):
    tiny = tiny_any
    before = {t.name for t in threading.enumerate()}
    ld = DCTLoader(tiny, "train", batch_size=4, threads=2)
    for _ in ld:
        break
    leftover = [t for t in threading.enumerate() if t.name.startswith("jdct-") and t.name not in before]
    for t in leftover:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in leftover)


def test_flipped_pixels_are_the_mirror_image(val64):
    """Pixel outputs of a flipped sample == the unflipped reconstruction mirrored (the DCT-domain flip
    is exact for the real-valued IDCT, and bilinear chroma upsampling is mirror-symmetric)."""
    store, paths = val64
    plain = DCTLoader(store, "val", batch_size=8, output="rgb", normalize=False, flip=False, shuffle=False)
    flipped = DCTLoader(store, "val", batch_size=8, output="rgb", normalize=False, flip=True, shuffle=False, seed=3)
    flips = flipped.plan().flips
    assert flips.any() and not flips.all()
    a = torch.cat([x for x, _ in plain])
    b = torch.cat([x for x, _ in flipped])
    for i in range(len(a)):
        expect = a[i].flip(-1) if flips[i] else a[i]
        torch.testing.assert_close(b[i], expect, atol=1e-4, rtol=0)


def test_damaged_chunk_raises_store_corruption_error(tiny, tmp_path):
    """A chunk whose bytes were altered fails its CRC32C in the reading thread; the consumer gets a
    StoreCorruptionError naming the store and the samples, never a hang."""
    copy = tmp_path / "damaged.zarr"
    shutil.copytree(tiny, copy)
    shard = copy / "train" / "y" / "c" / "0" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 0xFF  # inside the first chunk's compressed bytes
    shard.write_bytes(bytes(raw))
    ld = DCTLoader(copy, "train", batch_size=4, shuffle=False, drop_last=False)
    with pytest.raises(StoreCorruptionError, match=r"samples 0\.\.7 of train view 0") as info:
        for _ in ld:
            pass
    assert str(copy) in str(info.value)


def test_fixture_store_metadata_matches_the_store_schema(tiny):
    """tests/storefixture.py must keep writing what schemas/store.v1.schema.json (and convert) define."""
    schema = json.loads((REPO / "schemas" / "store.v1.schema.json").read_text())
    jsonschema.validate(json.loads((tiny / "zarr.json").read_text())["attributes"]["jdct"], schema)


def test_reused_output_memory_never_overwrites_a_batch_still_held(tiny_any):
    """The CPU loader reuses the memory of batches the consumer has dropped: a batch still held
    (whole, through a view, or as a numpy array) must keep its values over two more epochs, and the
    values must be the stored samples (identified by content)."""
    tiny = tiny_any
    ident = identifier(tiny, "train")
    ld = DCTLoader(tiny, "train", batch_size=4, seed=5, threads=2, normalize=False)
    held, views, arrays, copies = [], [], [], []
    for epoch in range(2):
        ld.set_epoch(epoch)
        for j, ((y, cb, cr), labels) in enumerate(ld):
            copies.append([t.clone() for t in (y, cb, cr)])
            kind = j % 4  # keep every fourth batch whole, one as a view, one as numpy; drop the rest
            if kind == 0:
                held.append((len(copies) - 1, (y, cb, cr)))
            elif kind == 1:
                views.append((len(copies) - 1, y[1:]))
            elif kind == 2:
                arrays.append((len(copies) - 1, cr.numpy()))
    ld.set_epoch(2)
    for _ in ld:  # more batches through the reused memory
        pass
    assert held and views and arrays
    for k, planes in held:
        assert all(torch.equal(a, b) for a, b in zip(planes, copies[k]))
        assert all(ident(planes[0][i], planes[1][i], planes[2][i]) is not None for i in range(len(planes[0])))
    for k, v in views:
        assert torch.equal(v, copies[k][0][1:])
    for k, a in arrays:
        assert np.array_equal(a, copies[k][2].numpy())


def test_loader_pickles_and_the_copy_yields_the_same_batches(tiny_any):
    tiny = tiny_any
    """A loader survives pickling (spawned workers) with its position; its reused memory does not travel."""
    ld = DCTLoader(tiny, "train", batch_size=4, seed=3, threads=2)
    ld.set_epoch(1)
    it = iter(ld)
    next(it)
    it.close()
    copy = pickle.loads(pickle.dumps(ld))
    assert copy.state_dict() == ld.state_dict()
    ld.load_state_dict(ld.state_dict())
    copy.load_state_dict(copy.state_dict())
    pairs = list(zip(ld, copy))
    assert len(pairs) == len(ld) - 1 > 0
    for ((ya, cba, cra), la), ((yb, cbb, crb), lb) in pairs:
        assert torch.equal(la, lb) and torch.equal(ya, yb) and torch.equal(cba, cbb) and torch.equal(cra, crb)


def test_rank_share_splits_every_stream_exactly():
    """The one rank/batch split arithmetic (plan, len, num_samples and total_samples all use it):
    for every stream length, world size and batch size, the ranks' pieces are contiguous, in rank
    order, disjoint, the same number of batches each, and cover the stream (drop_last=False) or its
    first whole rounds (drop_last=True)."""
    for t in range(0, 70):
        for w in range(1, 5):
            for b in range(1, 6):
                for drop_last in (False, True):
                    shares = [rank_share(t, w, b, r, drop_last) for r in range(w)]
                    nb = t // (w * b) if drop_last else -(-t // (w * b))
                    assert {s.num_batches for s in shares} == {nb}
                    covered = t if not drop_last else nb * w * b
                    assert all(s.total_samples == covered for s in shares)
                    assert sum(s.num_samples for s in shares) == covered
                    pos = 0
                    for s in shares:
                        assert s.start == pos  # contiguous, in rank order, no gap, no overlap
                        pos += s.num_samples
                        sizes = s.sizes()
                        assert len(sizes) == nb and all(0 < x <= b for x in sizes)
                        padding = 1 if nb and s.last_batch == 0 else 0
                        assert sum(sizes) == s.num_samples + padding
                        if drop_last:
                            assert sizes == [b] * nb
                    if not drop_last and nb:
                        lasts = [s.last_batch for s in shares]
                        assert max(lasts) - min(lasts) <= 1  # the last round spread evenly
