"""``jdct convert --layout images`` on real JPEGs: the treatment of every kind of file, lossless
where it promises to be (checked with libjpeg's coefficients and the source bytes), the options
(max-side, restart segments, check, EXIF, statistics), the crops layout's guarantees (determinism,
kill and resume, refusals), and the CLI. Sources: the committed fixtures and photo trees made at
test time; ../shared adds ImageNet originals and the odd JPEGs.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import jpegfiles
from conftest import HAVE_SHARED, SHARED_DATA
from jdct_cli import _decoder, jpeg
from jdct_cli.cli import main
from jdct_cli.convert import ConvertOptions, convert
from jdct_cli.convert.images import restart_interval, store_image
from jdct_cli.errors import ConfigError, IncompleteStoreError, JpegError
from jdct_cli.store import SAMPLINGS, TREATMENTS, read_metadata
from jdct_cli.store.report import verify_store
from jdct_cli.transforms import SampleRecipe, convert_image, image_rng
from photos import make_photo_tree
from storetools import assert_no_orphans, descendants, store_hashes

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "schemas" / "store.v2.schema.json").read_text())
SMALL = dict(chunk_samples=4, shard_samples=8)


def _opts(**kw) -> ConvertOptions:
    return ConvertOptions(**{"layout": "images", "size": 32, **SMALL, **kw})


def _tree(tmp: Path, names_by_class: dict) -> Path:
    for cls, names in names_by_class.items():
        (tmp / "train" / cls).mkdir(parents=True)
        for name in names:
            (tmp / "train" / cls / Path(name).name).symlink_to(jpegfiles.path(name) if "/" not in name
                                                               else SHARED_DATA / "odd-jpegs" / name)
    return tmp


def _stored(out: Path, split: str = "train") -> dict:
    """{file name: (label, jpeg bytes, width, height, sampling, treatment)} of a store's split."""
    g = zarr.open_group(str(out), mode="r")
    sp = read_metadata(out).split(split)
    a = {n: g[f"{split}/{n}"][0, :] for n in ("jpeg", "label", "image", "width", "height", "sampling", "treatment")}
    return {sp.files[a["image"][i]].split("/")[-1]: (int(a["label"][i]), a["jpeg"][i], int(a["width"][i]),
                                                     int(a["height"][i]), SAMPLINGS[a["sampling"][i]],
                                                     TREATMENTS[a["treatment"][i]])
            for i in range(sp.num_samples)}


def _same_coefficients(a: bytes, b: bytes) -> None:
    ca, cb = jpeg.read_coefficients(a), jpeg.read_coefficients(b)
    np.testing.assert_array_equal(ca.quant, cb.quant)
    head = jpeg.read_header(a)
    hmax = max(c["h"] for c in head["components"])
    vmax = max(c["v"] for c in head["components"])
    for x, y, c in zip(ca.components, cb.components, head["components"]):
        bh, bw = -(-head["height"] * c["v"] // (8 * vmax)), -(-head["width"] * c["h"] // (8 * hmax))
        np.testing.assert_array_equal(x[:bh, :bw], y[:bh, :bw])


EXPECTED = {
    "420.jpg": "verbatim", "422.jpg": "verbatim", "444.jpg": "verbatim", "gray.jpg": "verbatim",
    "gray_2x2.jpg": "verbatim", "optimized.jpg": "verbatim", "restart_2mcu.jpg": "verbatim",
    "q5_16bit_qtables.jpg": "verbatim", "junk_before_marker.jpg": "verbatim", "size_7x13.jpg": "verbatim",
    "progressive.jpg": "transcoded: progressive", "arithmetic.jpg": "transcoded: arithmetic",
    "arithmetic_progressive.jpg": "transcoded: progressive",
    "cmyk.jpg": "reencoded: colour space", "ycck.jpg": "reencoded: colour space",
    "rgb_colorspace.jpg": "reencoded: colour space", "440.jpg": "reencoded: sampling",
    "411.jpg": "reencoded: sampling", "410.jpg": "reencoded: sampling", "mixed_sampling.jpg": "reencoded: sampling",
    "size_200x1.jpg": "reencoded: larger than max-side",
    "truncated_50pct.jpg": "failed", "png_named.jpg": "failed", "progressive_no_eoi.jpg": "failed",
    "header_12bit.jpg": "failed",
}
SHARED_EXPECTED = {
    "jpeg-decoder/reftest/images/mozilla/jpg-progressive.jpg": "transcoded: progressive",
    "jpeg-decoder/reftest/images/non-interleaved-mcu.jpg": "transcoded: progressive",
    "variants/ocelot_jt_arithmetic_progressive.jpg": "reencoded: larger than max-side",
    "variants/chelsea_crop_33x31.jpg": "verbatim",
    "cameratrap/african_elephants_cmyk.jpg": "reencoded: colour space",
    # damage found on the way: every re-encode and transcode decodes strictly
    "variants/ocelot_corrupt_entropy_bytes.jpg": "failed",
    "pillow/truncated_jpeg.jpg": "failed",
    "variants/ocelot_truncated_50pct.jpg": "failed",
}


@pytest.fixture(scope="module")
def fixtures_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fx")
    names = list(EXPECTED) + (list(SHARED_EXPECTED) if HAVE_SHARED else [])
    src = _tree(tmp / "src", {"a": names[::2], "b": names[1::2]})
    out = tmp / "fx.zarr"
    summary = convert(src, out, options=_opts(max_side=100), workers=1)
    return src, out, summary


def test_every_kind_of_file_gets_its_treatment(fixtures_store):
    src, out, summary = fixtures_store
    stored = _stored(out)
    meta = read_metadata(out).metadata
    jsonschema.validate(read_metadata(out).meta, SCHEMA)
    failed = {f.file.split("/")[-1]: f for f in meta.split("train").failures}
    expected = {**EXPECTED, **({Path(k).name: v for k, v in SHARED_EXPECTED.items()} if HAVE_SHARED else {})}
    for name, treatment in expected.items():
        if treatment == "failed":
            assert name in failed, name
            if name in stored:  # a convert-stage failure keeps its slot
                assert stored[name][0] == -1 and stored[name][1] == b"" and stored[name][5] == "failed"
            continue
        label, data, w, h, sampling, got = stored[name]
        assert got == treatment, (name, got)
        assert label >= 0 and max(w, h) <= 100
        head = jpeg.read_header(data)
        assert (head["width"], head["height"]) == (w, h)
        assert jpeg.sampling_name(head["components"], head["color_space"]) == sampling
        assert not head["progressive"] and not head["arithmetic"] and _decoder.scan_count(data) == 1
        source = next((src / "train").glob(f"*/{name}"))
        if treatment == "verbatim":
            assert data == source.read_bytes()
        elif treatment.startswith("transcoded"):
            _same_coefficients(source.read_bytes(), data)
        else:
            assert sampling == "4:2:0"
    assert summary["treatments"] == meta.split("train").treatments
    assert failed["png_named.jpg"].kind == "not-a-jpeg" and failed["header_12bit.jpg"].kind == "unsupported"
    assert "truncated" in failed["truncated_50pct.jpg"].reason
    assert verify_store(out)["ok"]


def test_reencoded_images_are_the_source_resized(tmp_path):
    """Over --max-side: the longest side is max-side, the picture is the source resized with the
    antialiased bilinear filter (PSNR against Pillow's own decode + resize of the source)."""
    from PIL import Image

    from jdct_cli.jpegmath.sample import psnr

    src = make_photo_tree(tmp_path / "src", classes=2, train_per_class=3, splits=("train",), min_side=150,
                          max_side=400, grayscale_every=0)
    out = tmp_path / "s.zarr"
    convert(src, out, options=_opts(max_side=96), workers=1)
    for name, (label, data, w, h, sampling, treatment) in _stored(out).items():
        source = next(src.rglob(name))
        with Image.open(source) as im:
            W, H = im.size
            ref = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None))
        assert treatment == "reencoded: larger than max-side" and max(w, h) == 96
        assert abs(w / h - W / H) < 0.02 and sampling == "4:2:0"
        assert psnr(jpeg.decode(data).rgb, ref) > 33, name


def test_restart_segments_keep_every_coefficient_and_decode_only_the_crop(tmp_path):
    names = ["420.jpg", "444.jpg", "gray.jpg", "progressive.jpg", "cmyk.jpg", "size_33x31.jpg"]
    src = _tree(tmp_path / "src", {"a": names})
    out = tmp_path / "r.zarr"
    convert(src, out, options=_opts(restart_segments=True, max_side=0), workers=1)
    for name, (label, data, w, h, sampling, treatment) in _stored(out).items():
        head = jpeg.read_header(data)
        assert head["restart_interval"] == restart_interval(w, head["components"]), name
        mcus = -(-w // (8 * (max(c["h"] for c in head["components"]) if len(head["components"]) > 1 else 1)))
        assert mcus % head["restart_interval"] == 0
        if treatment.startswith("transcoded"):
            assert treatment == ("transcoded: progressive" if name == "progressive.jpg" else
                                 "transcoded: restart segments")
            _same_coefficients(jpegfiles.data(name), data)
        # a rectangle of blocks is read from its restart segments only
        comps = jpeg.read_coefficients(data).components
        rect = [(1, 1, 3, 3)] + [None] * (len(comps) - 1)
        got = jpeg.read_coefficient_rects(data, rect)
        np.testing.assert_array_equal(got.components[0], comps[0][1:3, 1:3])
        # (a 33x31 image is 3 MCUs wide, a restart interval of 3: its segments are whole rows)
        assert got.info["mode"] == ("stopped" if name == "size_33x31.jpg" else "spliced"), name


def test_check_decode_finds_damage_that_markers_do_not(tmp_path):
    """A byte-damaged scan with its EOI in place passes the marker check (it is found by verify,
    which decodes every JPEG) and fails --check decode; corrupt data behind a transcode or a
    re-encode, or in an image the statistics crop, is always found."""
    names = ["corrupt_entropy.jpg", "420.jpg"]
    src = _tree(tmp_path / "src", {"a": names})
    with_stats = tmp_path / "stats.zarr"
    convert(src, with_stats, options=_opts(), workers=1)  # 2 images: both give a statistics crop
    assert _stored(with_stats)["corrupt_entropy.jpg"][5] == "failed"
    quick = tmp_path / "quick.zarr"
    convert(src, quick, options=_opts(stats_images=0), workers=1)
    assert _stored(quick)["corrupt_entropy.jpg"][5] == "verbatim"
    report = verify_store(quick)
    assert not report["ok"] and "extraneous bytes" in report["problems"][0]["problem"]
    full = tmp_path / "full.zarr"
    convert(src, full, options=_opts(check="decode", stats_images=0), workers=1)
    failed = read_metadata(full).split("train").failures
    assert [f.file.split("/")[-1] for f in failed] == ["corrupt_entropy.jpg"] and failed[0].kind == "corrupt"
    assert "extraneous bytes" in failed[0].reason and verify_store(full)["ok"]
    with pytest.raises(JpegError, match="extraneous"):
        store_image(jpegfiles.data("corrupt_entropy.jpg"), "c.jpg", _opts(max_side=16))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_apply_reencodes_rotated_images_upright(orientation, tmp_path):
    name = f"exif_orientation_{orientation}.jpg"
    data = jpegfiles.data(name)
    ignored = store_image(data, name, _opts())
    assert ignored.treatment_name == "verbatim" and ignored.data == data
    upright = store_image(data, name, _opts(exif="apply"))
    want = jpeg.apply_orientation(jpeg.decode(data).rgb, orientation)
    if orientation == 1:
        assert upright.treatment_name == "verbatim"
        return
    assert upright.treatment_name == "reencoded: exif orientation"
    got = jpeg.decode(upright.data).rgb
    assert got.shape == want.shape and np.abs(got.astype(int) - want).mean() < 3


def test_statistics_are_those_of_the_recipe_crops(tmp_path):
    """stats: mean and std per channel of the dequantized coefficients of one seeded crop
    (transforms.convert_image, train) of every stride-th train image, recomputed here."""
    src = make_photo_tree(tmp_path / "src", classes=2, train_per_class=7, val_per_class=2)
    out = tmp_path / "s.zarr"
    opts = _opts(stats_images=5, quality=90, seed=4)
    convert(src, out, options=opts, workers=2)
    meta = read_metadata(out).metadata
    sp = meta.split("train")
    stride = -(-sp.num_samples // 5)
    g = zarr.open_group(str(out), mode="r")
    jpegs, images = g["train/jpeg"][0, :], g["train/image"][0, :]
    by_image = {int(i): jpegs[k] for k, i in enumerate(images)}
    from jdct_cli.jpegmath.quant import ijg_tables

    luma, chroma = ijg_tables(90)
    planes = {"y": [], "cb": [], "cr": []}
    for i in range(0, sp.num_samples, stride):
        y, cb, cr, _ = convert_image(by_image[i], sp.files[i], train=True, rng=image_rng(4, 0, 0, i),
                                     opts=SampleRecipe(size=32, quality=90))
        planes["y"].append(y * luma.reshape(64, 1, 1))
        planes["cb"].append(cb * chroma.reshape(64, 1, 1))
        planes["cr"].append(cr * chroma.reshape(64, 1, 1))
    assert meta.stats.images == len(planes["y"]) and meta.stats.size == 32 and meta.stats.quality == 90
    for name, got in (("y", meta.stats.y), ("cb", meta.stats.cb), ("cr", meta.stats.cr)):
        x = np.stack(planes[name]).astype(np.float64).transpose(1, 0, 2, 3).reshape(64, -1)
        np.testing.assert_allclose(got.mean, x.mean(axis=1), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.std, x.std(axis=1), rtol=1e-7, atol=1e-7)
    # none asked: none computed (the loader then normalizes with its own, or not at all)
    out0 = tmp_path / "s0.zarr"
    convert(src, out0, options=_opts(stats_images=0, quality=90, seed=4), workers=1)
    assert read_metadata(out0).metadata.stats is None
    assert store_hashes(out0) == store_hashes(out)


def test_same_store_with_one_or_two_workers_and_options_are_checked(tmp_path):
    src = make_photo_tree(tmp_path / "src", classes=3, train_per_class=5, val_per_class=2)
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    convert(src, a, options=_opts(), workers=1)
    convert(src, b, options=_opts(), workers=2)
    assert store_hashes(a) == store_hashes(b)
    assert read_metadata(a).meta["splits"] == read_metadata(b).meta["splits"]
    # the sample order is a seeded permutation: chunks mix classes
    labels = zarr.open_group(str(a), mode="r")["train/label"][0, :]
    assert len(set(labels[:4].tolist())) > 1 or len(set(labels[4:8].tolist())) > 1
    with pytest.raises(ConfigError, match="--views is for the crops layout"):
        convert(src, tmp_path / "c.zarr", options=_opts(views=2))
    with pytest.raises(ConfigError, match="--max-side"):
        convert(src, tmp_path / "c.zarr", options=_opts(max_side=8))
    # a complete store: the same command does nothing, another layout is refused naming it
    assert convert(src, a, options=_opts(), workers=1)["already_complete"]
    with pytest.raises(ConfigError, match="--layout images there, crops now"):
        convert(src, a, options=ConvertOptions(size=32, **SMALL))


KILL_ARGS = ["--layout", "images", "--size", "32", "--chunk-samples", "2", "--shard-samples", "4", "--quiet",
             "--max-side", "128", "--restart-segments", "--stats-images", "20"]


def _jdct(src: Path, out: Path, workers: int):
    return [sys.executable, "-m", "jdct_cli", "convert", str(src), str(out), "--workers", str(workers)] + KILL_ARGS


def test_sigkill_or_ctrl_c_then_resume_equals_uninterrupted(tmp_path):
    src = make_photo_tree(tmp_path / "src", classes=3, train_per_class=30, splits=("train",), min_side=96,
                          max_side=400)
    ref = tmp_path / "ref.zarr"
    subprocess.run(_jdct(src, ref, 1), check=True)
    for sig, workers in ((signal.SIGKILL, 1), (signal.SIGINT, 2)):
        out = tmp_path / f"cut-{sig}.zarr"
        proc = subprocess.Popen(_jdct(src, out, workers), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        progress = out / ".jdct-progress"
        deadline = time.time() + 60
        children: set[int] = set()
        while time.time() < deadline and proc.poll() is None:
            children |= descendants(proc.pid)
            if progress.is_dir() and sum(p.name.startswith("train-v") for p in progress.iterdir()) >= 2:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "conversion finished before it could be interrupted"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert_no_orphans(children)
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and "to resume" in err and "Traceback" not in err, err
        with pytest.raises(IncompleteStoreError):
            read_metadata(out)
        assert verify_store(out)["complete"] is False
        done = subprocess.run(_jdct(src, out, 1), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert store_hashes(ref) == store_hashes(out)
        assert read_metadata(ref).meta["splits"] == read_metadata(out).meta["splits"]
        assert read_metadata(ref).meta["stats"] == read_metadata(out).meta["stats"]


def test_cli_summary_and_bytes(tmp_path):
    src = make_photo_tree(tmp_path / "src", classes=2, train_per_class=4, val_per_class=2)
    out = tmp_path / "s.zarr"
    res = CliRunner().invoke(main, ["convert", str(src), str(out), "--layout", "images", "--workers", "1",
                                    "--chunk-samples", "2", "--shard-samples", "4"])
    assert res.exit_code == 0, res.output
    assert "stored: verbatim" in res.output and "the source files'" in res.output
    meta = read_metadata(out).metadata
    assert meta.max_side == 2048 and meta.codec.name == "lz4" and not meta.restart_segments
    source = sum(p.stat().st_size for p in src.rglob("*.jpg"))
    assert sum(sp.source_bytes for sp in meta.splits.values()) == source
    assert sum(sp.stored_bytes for sp in meta.splits.values()) == source  # every photo is stored verbatim
    res = CliRunner().invoke(main, ["verify", str(out)])
    assert res.exit_code == 0 and "OK" in res.output


def test_crops_codec_option(tmp_path):
    """--codec lz4: the same values, Blosc lz4 in every chunk, recorded in the metadata."""
    src = make_photo_tree(tmp_path / "src", classes=2, train_per_class=4, val_per_class=2)
    z, l4 = tmp_path / "z.zarr", tmp_path / "l.zarr"
    convert(src, z, options=ConvertOptions(size=32, codec="zstd", **SMALL), workers=1)
    convert(src, l4, options=ConvertOptions(size=32, codec="lz4", **SMALL), workers=1)
    assert store_hashes(z) == store_hashes(l4)
    meta = read_metadata(l4)
    assert meta.metadata.codec.name == "lz4" and "cname=lz4, clevel=5, shuffle=bitshuffle" in json.dumps(meta.meta)
    blosc = json.loads((l4 / "train" / "y" / "zarr.json").read_text())["codecs"][0]["configuration"]["codecs"][1]
    assert blosc["configuration"]["cname"] == "lz4" and blosc["configuration"]["clevel"] == 5
    assert verify_store(l4)["ok"]
    # a store from before the option (no codec in its options) is the same as --codec zstd
    opts = dict(meta.metadata.convert_options)
    assert ConvertOptions.normalized({k: v for k, v in opts.items() if k not in ("codec", "layout")})["codec"] == "zstd"
