"""DCTLoader on images-layout stores (issue 12): whole JPEGs in the store, a fresh crop of every
image in every epoch, entropy decoding of the crop's block rectangle on the host and the re-encode
augmentation on the device.

Stores are made by ``jdct convert --layout images`` at test time from the photo_tree fixture,
larger photographs (so that crops are decoded at 1/8..6/8 scale, whose IDCTs read other
coefficient subsets) and the committed JPEGs of tests/data/jpegs (progressive, arithmetic,
restart markers, grayscale, 4:1:1, CMYK...: transcoded or re-encoded by conversion). The loader's
behaviour tests shared with the crops layout live in tests/test_data.py (``tiny_any``).
"""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
import zarr

import jpegfiles
from conftest import HAVE_SHARED, SHARED_DATA
from codedimages import convert_coded, write_coded_tree
from photos import make_photo_tree
from jdct_cli import jpeg, transforms
from jdct_cli.config import scheduled_size
from jdct_cli.data import LAYOUTS, DCTLoader
from jdct_cli.errors import ConfigError, StoreCorruptionError, StoreError
from jdct_cli.jpegmath import augment
from jdct_cli.jpegmath.blockdct import FLIP_SIGN
from jdct_cli.jpegmath.quant import ijg_tables
from jdct_cli.jpegmath.sample import crop_coefficients, psnr, reconstruct

SIZE = 64


def _convert(src, out, **kw):
    from jdct_cli.convert import ConvertOptions, convert

    convert(src, out, options=ConvertOptions(layout="images", size=SIZE, chunk_samples=8, shard_samples=16, **kw),
            workers=1)
    return out


@pytest.fixture(scope="module")
def mixed(photo_tree, tmp_path_factory):
    """An images store of: the photo tree, 12 + 4 larger photographs (300-512 px) and every
    committed JPEG fixture jdct decodes (train and val)."""
    root = tmp_path_factory.mktemp("mixed")
    src = root / "src"
    shutil.copytree(photo_tree, src)
    make_photo_tree(root / "large", classes=2, train_per_class=6, val_per_class=2, min_side=300, max_side=512,
                    seed=7)
    for split in ("train", "val"):
        for folder in (root / "large" / split).iterdir():
            shutil.copytree(folder, src / split / f"large_{folder.name}")
        odd = src / split / "odd"
        odd.mkdir()
        for name in jpegfiles.GOOD:
            shutil.copy(jpegfiles.path(name), odd / name)
    return _convert(src, root / "s.zarr")


#: Where the equivalence test draws its stores from: the fixtures always; with ../shared, 96 train
#: and 32 val files of each real data set too, at the paper's 224 px (slow).
SOURCES = ["fixtures"] + ([pytest.param(name, marks=pytest.mark.slow) for name in ("imagenet-originals", "imagenette-5k")]
                          if HAVE_SHARED else [])


@pytest.fixture(scope="module", params=SOURCES)
def equivalence_store(request, tmp_path_factory):
    """``(store, size)``: the ``mixed`` store at 64 px, or a real data set's files at 224 px."""
    if request.param == "fixtures":
        return request.getfixturevalue("mixed"), SIZE
    root = SHARED_DATA / request.param
    src = tmp_path_factory.mktemp("real") / "src"
    for split, count in (("train", 96), ("val", 32)):
        top = root / split if (root / split).is_dir() else root
        files = sorted(p for p in top.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
        for f in [files[int(i)] for i in np.linspace(0, len(files) - 1, count)]:
            dest = src / split / f.parent.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(f.resolve())
    from jdct_cli.convert import ConvertOptions, convert

    out = src.parent / "s.zarr"
    convert(src, out, options=ConvertOptions(layout="images", size=224, chunk_samples=16, shard_samples=32),
            workers=1)
    return out, 224


def _stored(store, split):
    g = zarr.open_group(str(store), mode="r")
    return g[f"{split}/jpeg"][0], g[f"{split}/label"][0]


def _dct_flip(c: np.ndarray) -> np.ndarray:
    return c[:, :, ::-1] * FLIP_SIGN.reshape(64, 1, 1)


def _reference(data: bytes, box, size: int, train: bool, flip: bool):
    """The crops layout's recipe for this box (libjpeg decode at the same M/8, Pillow-exact resize,
    libjpeg's forward DCT at quality 100), flipped in the DCT domain when ``flip``."""
    header = jpeg.read_header(data)
    scalings = transforms.DCT_EIGHTHS if train else transforms.DCT_EIGHTHS_VAL
    rgb = transforms.crop_to_rgb(data, header["width"], header["height"], box, size, scalings=scalings)
    y, cb, cr, _ = crop_coefficients(rgb, 100)
    planes = tuple(_dct_flip(c) if flip else c for c in (y, cb, cr))
    return planes, (rgb[:, ::-1] if flip else rgb)


# --------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("train", [True, False], ids=["train", "val"])
def test_loader_crops_equal_the_crops_recipe(equivalence_store, train):
    """For every sample (two epochs of train, with flips), the loader's coefficients (``dct``,
    quality 100) vs ``convert_image``'s recipe for the same box, flip and size: reconstructed RGB
    PSNR >= 40 dB for >= 99 % of samples; its ``rgb`` output of the same crops vs the recipe's
    pixels. Val boxes are ``convert_image``'s own (centre crop)."""
    mixed, size = equivalence_store
    split = "train" if train else "val"
    datas, labels = _stored(mixed, split)
    luma, chroma = ijg_tables(100)
    kw = dict(batch_size=16, shuffle=False, drop_last=False, normalize=False, seed=4, threads=2)
    dct = DCTLoader(mixed, split, size=size, **kw)
    rgb = DCTLoader(mixed, split, output="rgb", size=size, **kw)
    assert dct.random_crop is train and dct.flip is train and dct.size == size and dct.quality == 100
    psnrs, pix_psnrs, equal, within, total = [], [], 0, 0, 0
    for epoch in ((0, 1) if train else (0,)):
        dct.set_epoch(epoch)
        rgb.set_epoch(epoch)
        plan = dct.plan()
        boxes = dct.crop_boxes(plan.indices)
        order = iter(zip(plan.indices.tolist(), boxes))
        for ((y, cb, cr), lab), (pixels, lab2) in zip(dct, rgb):
            assert torch.equal(lab, lab2)
            for i in range(len(y)):
                n, box = next(order)
                data = bytes(datas[n])
                if not train:
                    recipe = transforms.SampleRecipe(size=size, quality=100)
                    _, _, _, ref_box = transforms.convert_image(data, None, train=False, rng=np.random.default_rng(0),
                                                                opts=recipe)
                    assert np.allclose(ref_box, box)
                ref, ref_rgb = _reference(data, box, size, train, bool(plan.flips[n]))
                mine = tuple(np.rint(t[i].numpy()).astype(np.int64) for t in (y, cb, cr))
                psnrs.append(min(psnr(reconstruct(*mine, luma, chroma), reconstruct(*ref, luma, chroma)), 99.0))
                for a, b in zip(mine, ref):
                    d = np.abs(a - b)
                    equal += int((d == 0).sum())
                    within += int((d <= 1).sum())
                    total += d.size
                assert lab[i] == labels[n]
                got = np.rint(pixels[i].numpy().transpose(1, 2, 0) * 255.0)
                pix_psnrs.append(min(psnr(got, ref_rgb), 99.0))
    psnrs = np.array(psnrs)
    print(f"\n{split}: {len(psnrs)} samples, PSNR min {psnrs.min():.1f} dB, median {np.median(psnrs):.1f} dB, "
          f">= 40 dB {100 * (psnrs >= 40).mean():.2f} %; coefficients equal {100 * equal / total:.2f} %, "
          f"within one step {100 * within / total:.3f} %; rgb output vs recipe pixels min "
          f"{min(pix_psnrs):.1f} dB")
    assert len(psnrs) == (2 if train else 1) * int((labels >= 0).sum())
    assert (psnrs >= 40).mean() >= 0.99
    assert within / total > 0.99
    # the pixel output is reconstructed from 4:2:0 coefficients (chroma halved): a weaker bound
    assert np.median(pix_psnrs) > 35 and min(pix_psnrs) > 25


def test_host_batches_hold_the_crop_rectangles(mixed):
    """``host_batches()`` yields what the device needs and no more: each sample's block rectangle
    (of :func:`transforms.crop_geometry` for the epoch's box) with the coefficients the scaled IDCT
    reads, equal to a whole-file decode's (``augment.pack_reference``), with the file's tables,
    for every decoding scale (1/8..8/8) and sampling in the store."""
    datas, labels = _stored(mixed, "train")
    ld = DCTLoader(mixed, "train", batch_size=16, shuffle=True, drop_last=False, seed=9, threads=2)
    scales = set()
    for epoch in (0, 3):
        ld.set_epoch(epoch)
        plan = ld.plan()
        j = 0
        for hb, lab in ld.host_batches():
            idx = plan.batch(j)
            j += 1
            assert isinstance(hb, augment.HostBatch) and hb.size == SIZE and len(hb) == len(idx)
            np.testing.assert_array_equal(lab.numpy() if torch.is_tensor(lab) else lab, labels[idx])
            np.testing.assert_array_equal(hb.flip, plan.flips[idx])
            samples = []
            for n, box in zip(idx.tolist(), ld.crop_boxes(idx)):
                data = bytes(datas[n])
                header = jpeg.read_header(data)
                geom = transforms.crop_geometry(header["width"], header["height"],
                                                [(c["h"], c["v"]) for c in header["components"]], box, SIZE)
                samples.append((geom, jpeg.read_coefficients(data), bool(plan.flips[n])))
                scales.add(geom.scale)
            ref = augment.pack_reference(samples, SIZE)
            for field in ("offsets", "blocks", "factors", "quant", "scale", "image_size", "mcu_origin", "box",
                          "frame", "flip"):
                np.testing.assert_array_equal(getattr(hb, field), getattr(ref, field), err_msg=field)
            for i in range(len(hb)):  # (the layout's alignment gaps between rectangles hold nothing)
                for c in range(hb.components(i)):
                    np.testing.assert_array_equal(hb.component(i, c), ref.component(i, c), err_msg=f"{i}, {c}")
        assert j == len(ld)
    assert {8} < scales and scales & {2, 4}, f"decoding scales seen: {sorted(scales)}"


def test_golden_images_store(tmp_path):
    """The committed v2 golden store (tests/golden/store-v2.zarr) reads: every valid sample once per
    epoch with its label, at the size of its statistics (16) and at another, its val crops equal to
    the crops recipe of its stored JPEGs (>= 40 dB)."""
    from conftest import REPO

    golden = REPO / "tests" / "golden" / "store-v2.zarr"
    luma, chroma = ijg_tables(100)
    for split in ("train", "val"):
        datas, labels = _stored(golden, split)
        for size in (None, 32):
            ld = DCTLoader(golden, split, batch_size=3, shuffle=False, drop_last=False, normalize=False, size=size,
                           threads=1)
            assert ld.size == (size or 16)
            plan = ld.plan()
            got = []
            for (y, cb, cr), lab in ld:
                assert y.shape[1:] == (64, ld.size // 8, ld.size // 8)
                got += list(zip(lab.tolist(), [tuple(np.rint(t[i].numpy()).astype(np.int64) for t in (y, cb, cr))
                                               for i in range(len(y))]))
            valid = plan.indices[plan.indices >= 0]
            assert sorted(valid.tolist()) == np.flatnonzero(labels >= 0).tolist()
            assert [g[0] for g in got] == labels[valid].tolist()
            if split == "val":
                for n, box, (_, mine) in zip(valid.tolist(), ld.crop_boxes(valid), got):
                    ref, _ = _reference(bytes(datas[n]), box, ld.size, False, False)
                    assert psnr(reconstruct(*mine, luma, chroma), reconstruct(*ref, luma, chroma)) >= 40


# --------------------------------------------------------------------------------- fresh crops


def _tv_get_params(gen: torch.Generator, width: int, height: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's ``RandomResizedCrop.get_params`` written again from its documentation and
    code, on torch's generator: (top, left, h, w)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
        aspect = math.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=gen).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,), generator=gen).item())
            j = int(torch.randint(0, width - w + 1, size=(1,), generator=gen).item())
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _ks_2samp(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (scipy's when installed, else the asymptotic formula)."""
    try:
        from scipy.stats import ks_2samp
    except ImportError:
        a, b = np.sort(a), np.sort(b)
        grid = np.concatenate([a, b])
        d = np.abs(np.searchsorted(a, grid, side="right") / len(a)
                   - np.searchsorted(b, grid, side="right") / len(b)).max()
        en = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
        lam = (en + 0.12 + 0.11 / en) * d
        return float(min(1.0, max(0.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam)
                                               for k in range(1, 101)))))
    return float(ks_2samp(a, b).pvalue)


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """An images store of coded images (tests/codedimages.py) of 300-500 px, 4 classes x 4."""
    root = tmp_path_factory.mktemp("coded")
    src = write_coded_tree(root / "src", {"train": (4, 4), "val": (2, 2)}, sides=(300, 500), seed=2)
    return convert_coded(src, root / "s.zarr", size=32, chunk_samples=4, shard_samples=8)


def test_fresh_crops_every_epoch_follow_torchvision(coded):
    """One image over 50 epochs gets 50 different boxes, and the boxes the host batches are cut
    for are those; over 600 epochs the scale and log-ratio distributions match torchvision's
    RandomResizedCrop (two-sample KS test against a second implementation on torch's generator,
    p > 0.01); flips are Bernoulli(0.5) and independent of the box."""
    ld = DCTLoader(coded, "train", batch_size=4, seed=21, threads=1)
    n = 5
    width, height = int(ld._facts["width"][n]), int(ld._facts["height"][n])
    boxes = np.array([ld.crop_boxes([n], epoch)[0] for epoch in range(600)])
    assert len({tuple(b) for b in boxes[:50]}) == 50
    assert np.array_equal(boxes[7], ld.crop_boxes([n], 7)[0]), "a box is a function of (seed, epoch, sample)"
    assert not np.array_equal(boxes[7], DCTLoader(coded, "train", batch_size=4, seed=22).crop_boxes([n], 7)[0])
    # the host batches are cut for these boxes
    datas, _ = _stored(coded, "train")
    header = jpeg.read_header(bytes(datas[n]))
    factors = [(c["h"], c["v"]) for c in header["components"]]
    for epoch in (0, 1, 2):
        ld.set_epoch(epoch)
        plan = ld.plan()
        pos = int(np.flatnonzero(plan.indices == n)[0])
        hb = list(ld.host_batches())[pos // 4][0]
        geom = transforms.crop_geometry(width, height, factors, boxes[epoch], ld.size)
        assert tuple(hb.box[pos % 4]) == geom.box and tuple(hb.mcu_origin[pos % 4]) == (geom.mcu_rows[0],
                                                                                       geom.mcu_cols[0])
    gen = torch.Generator().manual_seed(1234)
    ref = np.array([_tv_get_params(gen, width, height) for _ in range(4000)], dtype=np.float64)
    scale_mine = boxes[:, 2] * boxes[:, 3] / (width * height)
    scale_ref = ref[:, 2] * ref[:, 3] / (width * height)
    ratio_mine = np.log(boxes[:, 2] / boxes[:, 3])
    ratio_ref = np.log(ref[:, 3] / ref[:, 2])
    p_scale, p_ratio = _ks_2samp(scale_mine, scale_ref), _ks_2samp(ratio_mine, ratio_ref)
    print(f"\nKS p-values vs torchvision's sampler: scale {p_scale:.3f}, log-ratio {p_ratio:.3f}")
    assert p_scale > 0.01 and p_ratio > 0.01
    # a wrong sampler fails the same test (scale drawn from 0.25..1, as some recipes do)
    assert _ks_2samp(0.25 + 0.75 * np.random.default_rng(0).random(600), scale_ref) < 0.01
    # offsets cover the image: the box stays inside it, and its position varies
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= width).all()
    assert (boxes[:, 1] + boxes[:, 3] <= height).all() and len(set(boxes[:, 0])) > 100
    flips = np.array([ld.plan(e).flips for e in range(200)])  # (epochs, samples)
    k, total = int(flips.sum()), flips.size
    assert abs(k - total / 2) < 4 * math.sqrt(total / 4), f"{k} flips of {total}"
    small = scale_mine[:200] < np.median(scale_mine[:200])
    assert abs(flips[:, n][small].mean() - flips[:, n][~small].mean()) < 0.3


def test_size_is_chosen_at_load_time(coded, tiny_crops_store):
    """One images store gives crops of any size (set_size between epochs); a crops store only its
    own size, and a clear error otherwise."""
    ld = DCTLoader(coded, "val", batch_size=4, normalize=False)
    assert ld.size == 32  # the size of the store's statistics
    for size in (32, 48, 80):
        ld.set_size(size)
        (y, cb, cr), labels = next(iter(ld))
        assert y.shape == (4, 64, size // 8, size // 8) and cb.shape == cr.shape == (4, 64, size // 16, size // 16)
    assert DCTLoader(coded, "val", batch_size=4, size=96).size == 96
    with pytest.raises(ConfigError, match="multiple of 16"):
        DCTLoader(coded, "val", batch_size=4, size=40)
    with pytest.raises(ConfigError, match="quality"):
        DCTLoader(coded, "val", batch_size=4, quality=0)
    with pytest.raises(ConfigError, match="images-layout"):
        DCTLoader(tiny_crops_store, "val", batch_size=4, size=48)
    with pytest.raises(ConfigError, match="images-layout"):
        DCTLoader(tiny_crops_store, "val", batch_size=4, quality=50)
    crops = DCTLoader(tiny_crops_store, "val", batch_size=4, size=32)
    with pytest.raises(ConfigError, match="32 px"):
        crops.set_size(64)
    assert LAYOUTS == ("crops", "images")


def test_quality_changes_the_quantization(coded):
    """``quality`` quantizes the fresh crops with the IJG tables of that quality: every delivered
    dequantized coefficient is a multiple of its step, and the crops differ from quality 100's."""
    q100 = DCTLoader(coded, "val", batch_size=4, normalize=False)
    q50 = DCTLoader(coded, "val", batch_size=4, normalize=False, quality=50)
    (a, _, _), _ = next(iter(q100))
    (b, cb, _), _ = next(iter(q50))
    luma, chroma = (torch.tensor(t, dtype=torch.float32).view(1, 64, 1, 1) for t in ijg_tables(50))
    assert torch.equal(torch.remainder(b, luma), torch.zeros_like(b))
    assert torch.equal(torch.remainder(cb, chroma), torch.zeros_like(cb))
    assert not torch.equal(a, b) and (a - b).abs().max() <= luma.max() / 2 + 2


def test_scheduled_size():
    assert [scheduled_size("160:192", e, 5) for e in range(5)] == [160, 160, 176, 192, 192]
    assert scheduled_size("160:192", 0, 1) == 192
    assert [scheduled_size("32:64", e, 3) for e in range(3)] == [32, 48, 64]
    with pytest.raises(ConfigError, match="multiples of 16"):
        scheduled_size("160:200", 0, 3)
    with pytest.raises(ConfigError, match="LOW:HIGH"):
        scheduled_size("160", 0, 3)


def test_scheduled_loader_sets_the_size_per_epoch(coded):
    from jdct_cli.train.runtime import make_loader

    ld = make_loader(coded, "train", batch_size=4, train=True, seed=0, device=torch.device("cpu"), output="dct",
                     size_schedule="32:64", epochs=3, normalize=False)
    sizes = []
    for epoch in range(3):
        ld.set_epoch(epoch)
        (y, _, _), _ = next(iter(ld))
        sizes.append(y.shape[-1] * 8)
    assert sizes == [32, 48, 64]


# --------------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def tiny_crops_store(tmp_path_factory, photo_tree):
    from jdct_cli.convert import ConvertOptions, convert

    out = tmp_path_factory.mktemp("crops") / "c.zarr"
    convert(photo_tree, out, options=ConvertOptions(size=32, chunk_samples=8, shard_samples=16), workers=1)
    return out


def test_damaged_jpeg_names_store_split_and_sample(coded, tmp_path):
    """A stored JPEG damaged behind a valid chunk checksum (written through zarr): the consumer gets
    a StoreCorruptionError naming the store, the split, the sample and its source file; a chunk
    whose bytes fail their checksum names the samples of the chunk. Never a hang or a traceback
    from the reading thread."""
    copy = tmp_path / "damaged.zarr"
    shutil.copytree(coded, copy)
    g = zarr.open_group(str(copy), mode="r+")
    arr = g["train/jpeg"]
    data = bytearray(arr[0, 2:3][0])
    sos = data.find(b"\xff\xda")
    data[sos + 20:sos + 400] = b"\xff\xd0\x00\x17" * 95  # entropy data replaced by junk and a stray marker
    arr[0:1, 2:3] = np.array([[bytes(data)]], dtype=object)
    files = g.attrs["jdct"]["splits"]["train"]["files"]
    name = files[int(g["train/image"][0, 2])]
    ld = DCTLoader(copy, "train", batch_size=4, shuffle=False, drop_last=False)
    with pytest.raises(StoreCorruptionError) as info:
        for _ in ld:
            pass
    msg = str(info.value)
    assert str(copy) in msg and "sample 2 of split 'train'" in msg and name in msg
    # damage the chunk's bytes: the CRC32C fails
    copy2 = tmp_path / "crc.zarr"
    shutil.copytree(coded, copy2)
    shard = next(p for p in sorted((copy2 / "train" / "jpeg" / "c").rglob("*")) if p.is_file())
    raw = bytearray(shard.read_bytes())
    raw[200] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreCorruptionError, match=r"samples 0\.\.3 of train") as info:
        for _ in DCTLoader(copy2, "train", batch_size=4, shuffle=False, drop_last=False):
            pass
    assert str(copy2) in str(info.value)


def test_normalize_without_statistics_is_a_clear_error(tmp_path):
    src = write_coded_tree(tmp_path / "src", {"train": (2, 2)}, sides=(64, 80))
    from jdct_cli.convert import ConvertOptions, convert

    out = tmp_path / "nostats.zarr"
    convert(src, out, options=ConvertOptions(layout="images", stats_images=0, chunk_samples=4, shard_samples=4),
            workers=1)
    ld = DCTLoader(out, "train", batch_size=2)
    assert ld.size == 224  # no statistics: the default size
    with pytest.raises(StoreError, match="normalize=False"):
        next(iter(ld))
    (y, _, _), _ = next(iter(DCTLoader(out, "train", batch_size=2, normalize=False, size=32)))
    assert y.shape == (2, 64, 4, 4)


# --------------------------------------------------------------------------------- the CLI


def test_train_eval_predict_on_an_images_store(coded, tiny_crops_store, tmp_path):
    """`jdct train --size` one epoch on an images store, then `jdct eval` (reproduces the run's
    validation) and `jdct predict` (the same val crop, from the checkpoint's facts); `--size` on a
    crops store of another size is a clear error."""
    from click.testing import CliRunner

    from jdct_cli import checkpoint as ckpt
    from jdct_cli.cli import main
    from jdct_cli.predict import _val_coefficients

    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(main, ["train", "--arch", "late_concat_rfa_thinner", "--data", os.fspath(coded), "--out",
                               os.fspath(run), "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--threads",
                               "1", "--size", "48", "-q"])
    assert res.exit_code == 0, res.output
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    payload = ckpt.load_checkpoint(run / "last.pt")
    assert payload["config"]["size"] == 48 and payload["store"]["size"] == 48
    assert payload["store"]["quality"] == 100 and payload["store"]["quant_tables"]["luma"] == [1] * 64
    jsonschema = pytest.importorskip("jsonschema")
    from conftest import REPO

    schema = json.loads((REPO / "schemas" / "checkpoint.v1.schema.json").read_text())
    jsonschema.validate(payload["config"], {**schema["$defs"]["config"], "$defs": schema["$defs"]})
    jsonschema.validate(payload["store"], {**schema["$defs"]["store"], "$defs": schema["$defs"]})
    res = runner.invoke(main, ["eval", "--checkpoint", os.fspath(run / "last.pt"), "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["samples"] == metrics[-1]["val_samples"] == 4
    assert doc["top1"] == pytest.approx(metrics[-1]["val_top1"]) and doc["loss"] == pytest.approx(
        metrics[-1]["val_loss"], rel=1e-5)
    # requantizing the quality-100 crops with quality 100's tables changes nothing: the same crops,
    # at the run's size (48, not the loader's default), give the same validation
    res = runner.invoke(main, ["eval", "--checkpoint", os.fspath(run / "last.pt"), "--device", "cpu", "--json",
                               "--requantize", "100", "--no-real-size"])
    assert res.exit_code == 0, res.output
    req = json.loads(res.output)
    assert req["samples"] == 4 and req["top1"] == pytest.approx(doc["top1"])
    assert req["loss"] == pytest.approx(doc["loss"], rel=1e-4)
    # predict's val transform of a stored file is the loader's val crop (coefficients to 40 dB)
    datas, _ = _stored(coded, "val")
    y, cb, cr, quant = _val_coefficients(bytes(datas[0]), "x.jpg", payload["store"])
    assert y.shape == (64, 6, 6)
    (ly, lcb, lcr), _ = next(iter(DCTLoader(coded, "val", batch_size=1, size=48, normalize=False)))
    luma, chroma = ijg_tables(100)
    mine = tuple(np.rint(t[0].numpy()).astype(np.int64) for t in (ly, lcb, lcr))
    assert psnr(reconstruct(*mine, luma, chroma), reconstruct(y, cb, cr, luma, chroma)) >= 40
    files = sorted((coded.parent / "src" / "val").rglob("*.jpg"))[:2]
    res = runner.invoke(main, ["predict", "--checkpoint", os.fspath(run / "last.pt"), "--device", "cpu",
                               *map(os.fspath, files)])
    assert res.exit_code == 0 and res.output.count("(val-transform)") == 2, res.output
    # a size the crops store does not hold
    res = runner.invoke(main, ["train", "--arch", "late_concat_rfa_thinner", "--data", os.fspath(tiny_crops_store),
                               "--out", os.fspath(tmp_path / "bad"), "--epochs", "1", "--batch-size", "4",
                               "--device", "cpu", "--size", "64", "-q"])
    assert res.exit_code == 1 and "images-layout" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["train", "--arch", "late_concat_rfa_thinner", "--data", os.fspath(coded),
                               "--out", os.fspath(tmp_path / "bad2"), "--size-schedule", "32:50", "-q"])
    assert res.exit_code != 0 and "multiples of 16" in res.output


# --------------------------------------------------------------------------------- object storage


@pytest.fixture(scope="module")
def own_s3(tmp_path_factory):
    """A local S3 server of this module's own, addressed by explicit storage options: the
    session's ``s3_server`` puts its credentials in the environment, which would change what
    every later test (and process pool) sees."""
    pytest.importorskip("moto")
    pytest.importorskip("obstore")
    from s3server import REGION, MotoServer

    server = MotoServer(log=tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server, {"endpoint": server.endpoint, "access_key_id": server.admin[0],
                       "secret_access_key": server.admin[1], "region": REGION, "allow_http": "true"}
    finally:
        server.stop()


def test_images_store_on_object_storage(coded, own_s3, tmp_path):
    """An images store converted into a bucket (local S3 server) gives the batches of the same
    conversion on local disk, with and without the loader's disk cache."""
    import uuid

    from jdct_cli.convert import ConvertOptions, convert
    from jdct_cli.store import as_location

    server, options = own_s3
    name = server.create_bucket(f"jdct-{uuid.uuid4().hex[:12]}")
    url = f"s3://{name}/coded.zarr"
    # the same conversion as the local store's (conversion is deterministic)
    convert(coded.parent / "src", as_location(url, options),
            options=ConvertOptions(layout="images", size=32, chunk_samples=4, shard_samples=8), workers=1)
    kw = dict(batch_size=4, seed=3, threads=2, normalize=False)
    want = [(tuple(t.clone() for t in x), lab.clone()) for x, lab in DCTLoader(coded, "train", **kw)]
    for cache in (None, tmp_path / "cache"):
        got = [(tuple(t.clone() for t in x), lab.clone())
               for x, lab in DCTLoader(url, "train", storage_options=options, cache_dir=cache, **kw)]
        assert len(got) == len(want)
        for (a, la), (b, lb) in zip(got, want):
            assert torch.equal(la, lb) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_set_size_during_an_iteration_acts_on_the_next_one(coded):
    """An iteration keeps the size it started with, for its boxes as for its crops (the val centre
    box is cut for that size), even when set_size is called while it prefetches."""
    ref = [b[0][0].clone() for b in DCTLoader(coded, "val", batch_size=1, size=48, threads=1, normalize=False)]
    ld = DCTLoader(coded, "val", batch_size=1, size=48, threads=1, normalize=False)
    it = iter(ld)
    got = [next(it)[0][0].clone()]
    ld.set_size(64)
    got += [b[0][0].clone() for b in it]
    assert len(got) == len(ref) == 4
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert next(iter(ld))[0][0].shape[-1] == 64 // 8  # the next iteration takes the new size
