"""The store contract (jdct_cli.store.format): every field parsed once, every bad field named.

Real stores: the committed golden v1 store and stores converted here from photographs; their
metadata must read back and write out exactly as stored, hand edits must be refused naming the
field (by read_metadata, the loader's entry point, and as a `verify` problem), and the contract
must agree with the JSON Schema (schemas/store.v1.schema.json) on what is valid.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from PIL import Image

from jdct_cli.cli import main
from jdct_cli.convert import ConvertOptions, convert, plan_conversion
from jdct_cli.errors import Interrupted, StoreCorruptionError, StoreError, StoreMetadataError
from jdct_cli.store import (
    ALL_ARRAYS,
    Plan,
    ShardMarker,
    StoreMeta,
    parse_group_json,
    raw_sample_bytes,
    read_metadata,
    sample_shape,
    write_metadata,
)
from jdct_cli.store.report import verify_store
from photos import make_photo_tree, photo_jpeg
from storetools import store_hashes

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "store-v1.zarr"
SCHEMA = json.loads((REPO / "schemas" / "store.v1.schema.json").read_text())


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_photo_tree(tmp_path_factory.mktemp("src"), classes=2, train_per_class=5, val_per_class=3)


@pytest.fixture(scope="module")
def store(tree, tmp_path_factory) -> Path:
    """train (2 views) and val, one truncated file (a convert-stage failure), one PNG (a plan-stage one)."""
    whole = (tree / "train" / "cat" / "cat_000.jpg").read_bytes()
    (tree / "train" / "cat" / "zz_cut.jpg").write_bytes(whole[:len(whole) // 2])

    Image.new("RGB", (20, 20)).save(tree / "val" / "astronaut" / "zz_png.jpg", format="PNG")
    out = tmp_path_factory.mktemp("out") / "s.zarr"
    convert(tree, out, options=ConvertOptions(size=32, views=2, chunk_samples=2, shard_samples=4), workers=1)
    return out


def _doc(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]["jdct"]


def _set(doc, dotted: str, value):
    """Set (or, with value ``...``, delete) the field ``a.b[2].c`` of ``doc``."""
    keys = []
    for part in dotted.split("."):
        name, *idx = part.replace("]", "").split("[")
        keys.append(name)
        keys.extend(int(i) for i in idx)
    target = doc
    for k in keys[:-1]:
        target = target[k]
    if value is ...:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value


def _edited(src: Path, dst: Path, dotted: str, value) -> Path:
    shutil.copytree(src, dst)
    group = json.loads((dst / "zarr.json").read_text())
    _set(group["attributes"]["jdct"], dotted, value)
    (dst / "zarr.json").write_text(json.dumps(group))
    return dst


def test_metadata_reads_and_writes_back_exactly(store):
    for path in (GOLDEN, store):
        raw = (path / "zarr.json").read_bytes()
        meta, doc = parse_group_json(raw)
        assert meta.to_dict() == doc == _doc(path)
        # the same keys in the same order: equal metadata is equal bytes
        assert json.dumps(meta.to_dict()) == json.dumps(doc)
        jsonschema.validate(meta.to_dict(), SCHEMA)
    meta = read_metadata(store).metadata
    assert meta.split("train").views == 2 and meta.split("val").views == 1
    failures = {f.file.split("/")[-1]: f for sp in meta.splits.values() for f in sp.failures}
    assert failures["zz_cut.jpg"].stage == "convert" and failures["zz_cut.jpg"].kind == "corrupt"
    assert failures["zz_png.jpg"].stage == "plan" and failures["zz_png.jpg"].kind == "not-a-jpeg"
    assert meta.split("train").counts.failed_samples == 2  # the cut file in each of the 2 views


# (field, new value (... = deleted), words of the error, whether the JSON Schema can tell too)
EDITS = [
    ("splits.val.num_samples", "12", 'splits.val.num_samples: expected a non-negative integer, got "12"', True),
    ("splits.val.num_samples", 99, "splits.val.num_samples: 99, but splits.val.files lists", False),
    ("size", 30, "size: expected a multiple of 16, got 30", True),
    ("size", 8, "size: expected an integer >= 16, got 8", True),
    ("quality", 0, "quality: expected an integer from 1 to 100, got 0", True),
    ("seed", ..., "seed: missing", True),
    ("classes", "cat,coffee", 'classes: expected an array, got "cat,coffee"', True),
    ("classes", ["cat", "cat"], "classes: expected distinct class names", True),
    ("quant_tables.luma", [1] * 63, "quant_tables.luma: expected an array of 64 items", True),
    ("quant_tables.chroma[5]", 0, "quant_tables.chroma[5]: expected an integer from 1 to 65535, got 0", True),
    ("splits.train.files[1]", 5, "splits.train.files[1]: expected a string, got 5", True),
    ("splits.train.file_labels[0]", 7, "splits.train.file_labels[0]: expected an integer from 0 to 1, got 7", False),
    ("splits.train.views", 0, "splits.train.views: expected a positive integer, got 0", True),
    ("splits.train.failures[0].reason", ..., "splits.train.failures[0].reason: missing", True),
    ("splits.train.failures[0].kind", "bad", "splits.train.failures[0].kind: expected one of", True),
    ("splits.val.counts.converted", -1, "splits.val.counts.converted: expected a non-negative integer", True),
    ("stats.y.std[3]", -1.0, "stats.y.std[3]: expected a finite number >= 0, got -1.0", True),
    ("stats.cb.mean", [0.0] * 10, "stats.cb.mean: expected an array of 64 items", True),
    ("stats.split", "test", 'stats.split: expected one of the splits (train, val), got "test"', False),
    ("transform.exif", "rotate", 'transform.exif: expected one of "ignore", "apply", got "rotate"', True),
    ("transform.exact_decode", "no", "transform.exact_decode: expected true or false", True),
    ("codec.chunk_codecs[1]", "blosc(cname=zstd, clevel=1, shuffle=none)", "codec.chunk_codecs[1] shuffle", True),
    ("codec.index_codecs", ["crc32c"], "codec.index_codecs: expected", True),
    ("shard_samples", 5, "shard_samples: expected a multiple of chunk_samples (2), got 5", False),
    ("layout", "images", 'layout: expected one of "crops", got "images"', True),
    ("convert_options.size", [32], "convert_options.size: expected a string, number, boolean or null", True),
]


@pytest.mark.parametrize("field, value, words, schema_too", EDITS, ids=[f"{e[0]}={e[1]!r}"[:40] for e in EDITS])
def test_a_hand_edited_field_is_refused_naming_it(store, tmp_path, field, value, words, schema_too):
    bad = _edited(store, tmp_path / "s.zarr", field, value)
    with pytest.raises(StoreMetadataError) as err:
        read_metadata(bad)
    assert words in str(err.value), str(err.value)
    assert err.value.field.startswith(field.split("[")[0].split(".")[0]) and str(bad) in str(err.value)
    assert isinstance(err.value, StoreError)
    # the JSON Schema agrees where it can express the rule
    if schema_too:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(_doc(bad), SCHEMA)
    # `jdct verify` reports it as one problem naming the field (exit 1), no traceback
    report = verify_store(bad)
    assert not report["ok"] and len(report["problems"]) == 1 and words in report["problems"][0]["problem"]
    if field.startswith("splits."):
        assert report["problems"][0]["split"] == field.split(".")[1]
    res = CliRunner().invoke(main, ["verify", str(bad)])
    assert res.exit_code == 1 and words in res.output and "Traceback" not in res.output, res.output


def test_the_loader_refuses_hand_edited_metadata_naming_the_field(store, tmp_path):
    from jdct_cli.data import DCTLoader

    bad = _edited(store, tmp_path / "s.zarr", "splits.train.num_samples", "12")
    with pytest.raises(StoreMetadataError, match='splits.train.num_samples: expected a non-negative integer, got "12"'):
        DCTLoader(bad, "train", batch_size=2)


def test_a_store_with_arrays_unlike_its_metadata_is_refused_by_the_loader(store, tmp_path):
    """The loader checks every array it reads against the layout of the metadata (shape, dtype,
    chunking): a store whose crop size was edited names the array and both shapes."""
    from jdct_cli.data import DCTLoader

    bad = _edited(store, tmp_path / "s.zarr", "size", 64)
    with pytest.raises(StoreCorruptionError, match=r"train/y is int16 \(2, 11, 64, 4, 4\), the metadata says int16 "
                                                   r"\(2, 11, 64, 8, 8\)"):
        DCTLoader(bad, "train", batch_size=2)


def test_the_array_layout_is_what_is_on_disk(store):
    info = read_metadata(store)
    layout, group = info.layout, zarr.open_group(str(store), mode="r")
    assert raw_sample_bytes(32) == 2 * 64 * (4 * 4 + 2 * 2 * 2) == layout.raw_sample_bytes()
    for name, sp in info.metadata.splits.items():
        for a in ALL_ARRAYS:
            arr = group[f"{name}/{a}"]
            assert arr.shape == (sp.views, sp.num_samples) + sample_shape(a, 32) == layout.shape(a, sp.views,
                                                                                                   sp.num_samples)
            assert str(arr.dtype) == layout.spec(a).dtype and arr.chunks == layout.chunks(a)
            assert arr.shards == layout.shards(a)
            for view in range(sp.views):
                for k, _ in enumerate(layout.shard_ranges(sp.num_samples)):
                    assert (store / name / a / layout.shard_key(a, view, k)).is_file()
    assert sample_shape("y", 224) == (64, 28, 28) and sample_shape("cr", 224) == (64, 14, 14)
    with pytest.raises(KeyError):
        sample_shape("rgb", 224)


def test_plan_and_shard_markers_parse_and_round_trip(tree, tmp_path):
    plan = plan_conversion(tree, ConvertOptions(size=32, chunk_samples=2, shard_samples=4))
    doc = json.loads(json.dumps(plan.to_dict()))
    assert Plan.parse(doc) == plan and Plan.parse(doc).to_dict() == doc
    assert [s[:3] for s in plan.shards()][:2] == [("train", 0, 0), ("train", 0, 1)]
    for field, value, words in (("options.shard_samples", 0, "options.shard_samples: expected a positive integer"),
                                ("splits.train.labels", [0], "splits.train.labels: 1 labels for"),
                                ("quant", [[1] * 64], "quant: expected an array of 2 items"),
                                ("software.jdct", ..., "software.jdct: missing")):
        bad = copy.deepcopy(doc)
        _set(bad, field, value)
        with pytest.raises(StoreMetadataError, match=words.replace("(", r"\(")):
            Plan.parse(bad)
    marker = {"split": "train", "view": 1, "shard": 2, "start": 8, "stop": 12, "converted": 3,
              "failures": [{"file": "train/a/x.jpg", "reason": "corrupt", "kind": "corrupt", "stage": "convert",
                            "view": 1}],
              "sums": [[0.5] * 64] * 3, "sumsq": [[2.0] * 64] * 3, "blocks": [48, 12, 12]}
    assert ShardMarker.parse(marker).to_dict() == marker and ShardMarker.parse(marker).name == "train-v1-s2.json"
    with pytest.raises(StoreMetadataError, match="stop: expected at least start"):
        ShardMarker.parse({**marker, "stop": 4})
    with pytest.raises(StoreMetadataError, match=r"sums\[1\]: expected an array of 64 items"):
        ShardMarker.parse({**marker, "sums": [[0.0] * 64, [0.0], [0.0] * 64]})


def test_a_damaged_plan_or_marker_is_refused_or_redone(tree, tmp_path):
    """A plan that does not parse stops a resume with one line naming it (--overwrite starts again);
    a marker that does not parse means its shard is redone, and the result is still exact."""
    opts = ConvertOptions(size=16, chunk_samples=2, shard_samples=2)
    out = tmp_path / "o.zarr"

    def stop(stage, done, total):
        if stage == "convert" and done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        convert(tree, out, options=opts, workers=1, progress=stop)
    progress = out / ".jdct-progress"
    markers = sorted(p for p in progress.glob("train-v*.json"))
    assert len(markers) >= 2
    markers[0].write_text('{"split": "train"')  # torn
    plan_text = (progress / "plan.json").read_text()
    for field, value in (("splits.train.views", "1"), ("options.views", "1")):
        plan = json.loads(plan_text)
        _set(plan, field, value)
        (progress / "plan.json").write_text(json.dumps(plan))
        res = CliRunner().invoke(main, ["convert", str(tree), str(out), "--size", "16", "--chunk-samples", "2",
                                        "--shard-samples", "2", "--workers", "1"])
        assert res.exit_code == 1 and "unreadable conversion plan" in res.output and "views" in res.output
        assert "--overwrite" in res.output and "Traceback" not in res.output
    (progress / "plan.json").write_text(plan_text)
    summary = convert(tree, out, options=opts, workers=1)
    ref = tmp_path / "ref.zarr"
    convert(tree, ref, options=opts, workers=1)
    assert summary["resumed_shards"] >= 1 and store_hashes(out) == store_hashes(ref)
    assert read_metadata(out).metadata.splits == read_metadata(ref).metadata.splits


def test_a_jpeg_or_a_folder_of_jpegs_given_as_a_store_says_so(tree, tmp_path):
    """Issue 11, item 7: "no zarr.json" was all a user got for a JPEG or an image folder given
    where a store is expected (train/eval/verify/inspect all read it through read_metadata)."""
    jpg = photo_jpeg(tmp_path / "photo.jpg")
    png = tmp_path / "photo.png"

    Image.new("RGB", (8, 8)).save(png)
    cases = [(jpg, "this is a JPEG file, not a jdct store: run `jdct convert` first"),
             (tree, "this is a folder of JPEGs, not a jdct store: run `jdct convert"),
             (tree / "train", "this is a folder of JPEGs"),
             (png, "not a jdct store: this is a PNG file"),
             (GOLDEN / "zarr.json", f"give the store folder ({GOLDEN}), not its zarr.json")]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((empty, "not a Zarr v3 store (no zarr.json): not a jdct store"))
    for path, words in cases:
        with pytest.raises(StoreError) as err:
            read_metadata(path)
        assert words in str(err.value) and str(path) in str(err.value), (path, str(err.value))
    runner = CliRunner()
    for args in (["verify", str(jpg)], ["verify", str(tree)], ["inspect", str(tree)]):
        res = runner.invoke(main, args)
        assert res.exit_code == 1 and "not a jdct store" in res.output and "run `jdct convert" in res.output
        assert "Traceback" not in res.output and "zarr.json" not in res.output, res.output


def test_number_fields_accept_what_json_writes(store, tmp_path):
    """Statistics are floats or integers in JSON (0 may be written as 0); both read, NaN does not."""
    ok = _edited(store, tmp_path / "a.zarr", "stats.y.mean[0]", 0)
    assert read_metadata(ok).metadata.stats.y.mean[0] == 0
    group = json.loads((ok / "zarr.json").read_text())
    group["attributes"]["jdct"]["stats"]["y"]["mean"][1] = math.nan
    (ok / "zarr.json").write_text(json.dumps(group))
    with pytest.raises(StoreMetadataError, match=r"stats.y.mean\[1\]: expected a finite number, got NaN"):
        read_metadata(ok)


def test_typed_metadata_drives_the_writer(tmp_path):
    """StoreMeta.to_dict() of a parsed store, written by write_metadata, is the same zarr.json."""
    copy_ = tmp_path / "g.zarr"
    shutil.copytree(GOLDEN, copy_)
    before = (copy_ / "zarr.json").read_bytes()
    write_metadata(copy_, StoreMeta.parse(_doc(copy_)))
    assert json.loads((copy_ / "zarr.json").read_bytes()) == json.loads(before)
    assert np.array_equal(zarr.open_group(str(copy_), mode="r")["train/label"][...],
                          zarr.open_group(str(GOLDEN), mode="r")["train/label"][...])
