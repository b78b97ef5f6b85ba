"""The images layout's contract (format 2): the committed golden store (tests/golden/store-v2.zarr,
made by make_store_v2.py from committed fixtures) is read on every run, without ../shared.

It proves that an images store stays readable by plain zarr-python and by jdct (metadata contract,
schema, verify, inspect), that its bytes decode to the values recorded when it was written, and
that each stored JPEG is what its treatment promises, checked against its source file (committed
too) with libjpeg's own reading.
"""
from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import jpegfiles
from jdct_cli import jpeg
from jdct_cli.cli import main
from jdct_cli.convert import convert
from jdct_cli.errors import StoreError, StoreMetadataError, StoreVersionError
from jdct_cli.store import (
    IMAGES_ARRAYS,
    IMAGES_FORMAT_VERSION,
    SAMPLINGS,
    TREATMENTS,
    ImagesMeta,
    parse_group_json,
    parse_metadata,
    read_metadata,
)
from jdct_cli.store.report import inspect_store, verify_store
from storetools import store_hashes

GOLDEN = Path(__file__).resolve().parent / "golden"
STORE = GOLDEN / "store-v2.zarr"
REPO = GOLDEN.parent.parent
SCHEMA = json.loads((REPO / "schemas" / "store.v2.schema.json").read_text())
sys.path.insert(0, str(GOLDEN))
from make_store_v2 import OPTIONS, SOURCE, make_source  # noqa: E402


def _doc(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]["jdct"]


def _samples(split: str):
    """[(file name, label, jpeg bytes, width, height, sampling name, treatment name)] of a golden split."""
    g = zarr.open_group(str(STORE), mode="r")
    sp = read_metadata(STORE).split(split)
    a = {name: g[f"{split}/{name}"][0, :] for name in IMAGES_ARRAYS}
    return [(sp.files[a["image"][i]].split("/")[-1], int(a["label"][i]), a["jpeg"][i], int(a["width"][i]),
             int(a["height"][i]), SAMPLINGS[a["sampling"][i]], TREATMENTS[a["treatment"][i]])
            for i in range(sp.num_samples)]


def test_golden_reads_with_plain_zarr_and_matches_hashes():
    expected = json.loads((GOLDEN / "store-v2.expected.json").read_text())["arrays"]
    assert store_hashes(STORE) == expected
    # the representation the format pins: zarr's variable_length_bytes, vlen-bytes + crc32c in shards
    meta = json.loads((STORE / "train" / "jpeg" / "zarr.json").read_text())
    assert meta["data_type"] == "variable_length_bytes" and meta["fill_value"] == ""
    sharding = meta["codecs"][0]
    assert sharding["name"] == "sharding_indexed"
    assert [c["name"] for c in sharding["configuration"]["codecs"]] == ["vlen-bytes", "crc32c"]
    assert [c["name"] for c in sharding["configuration"]["index_codecs"]][-1] == "crc32c"
    for name in IMAGES_ARRAYS[1:]:
        codecs = json.loads((STORE / "train" / name / "zarr.json").read_text())["codecs"][0]["configuration"]["codecs"]
        assert [c["name"] for c in codecs] == ["bytes", "blosc", "crc32c"], name


def test_golden_metadata_contract_and_schema():
    info = read_metadata(STORE)
    meta = info.metadata
    assert isinstance(meta, ImagesMeta) and info.layout_name == "images"
    assert info.format_version == IMAGES_FORMAT_VERSION == 2
    jsonschema.validate(info.meta, SCHEMA)
    assert meta.to_dict() == info.meta and json.dumps(meta.to_dict()) == json.dumps(info.meta)
    assert parse_group_json((STORE / "zarr.json").read_bytes())[0] == meta
    assert meta.samplings == SAMPLINGS and meta.treatments == TREATMENTS
    # the treatments per split are those the per-sample arrays hold
    for split in ("train", "val"):
        counted: dict = {}
        for *_, treatment in _samples(split):
            counted[treatment] = counted.get(treatment, 0) + 1
        failed = counted.pop("failed", 0)
        assert counted == meta.split(split).treatments
        assert failed == meta.split(split).counts.failed_samples
    # a crop size is the loader's to choose: asking an images store for one is a clear error
    with pytest.raises(StoreError, match="images-layout store"):
        info.size


def test_every_stored_jpeg_is_what_its_treatment_promises():
    """verbatim: the source's bytes; transcoded: baseline, one scan, the source's coefficients;
    re-encoded: within max-side, 4:2:0, close to the source; failed: empty bytes, label -1."""
    seen = set()
    for split in ("train", "val"):
        for name, label, data, w, h, sampling, treatment in _samples(split):
            seen.add(treatment)
            src = jpegfiles.data(name)
            if treatment == "failed":
                assert label == -1 and data == b""
                continue
            head = jpeg.read_header(data)
            assert (head["width"], head["height"], jpeg.sampling_name(head["components"], head["color_space"])) \
                == (w, h, sampling)
            assert not head["progressive"] and not head["arithmetic"] and max(w, h) <= OPTIONS.max_side
            assert jpeg.read_coefficients(data, strict=True).warnings == 0
            if treatment == "verbatim":
                assert data == src
            elif treatment.startswith("transcoded"):
                a, b = jpeg.read_coefficients(src), jpeg.read_coefficients(data)
                np.testing.assert_array_equal(a.quant, b.quant)
                for x, y in zip(a.components, b.components):
                    np.testing.assert_array_equal(x, y)
            else:
                assert sampling == "4:2:0" and data != src
                rgb = jpeg.decode(data).rgb
                ref = jpeg.decode(src).rgb
                if rgb.shape == ref.shape:  # re-encoded at the same size (colour space, sampling)
                    assert np.abs(rgb.astype(int) - ref).mean() < 3
    assert seen == {"failed", "verbatim", "transcoded: progressive", "transcoded: arithmetic",
                    "reencoded: colour space", "reencoded: sampling", "reencoded: larger than max-side"}


def test_golden_verify_and_inspect(tmp_path):
    assert verify_store(STORE)["ok"]
    doc = inspect_store(STORE, sample=0, split="val")
    jsonschema.validate(doc, json.loads((REPO / "schemas/store-inspect.v2.schema.json").read_text()))
    assert doc["splits"]["train"]["treatments"] == read_metadata(STORE).split("train").treatments
    assert doc["samples"][0]["psnr_db"] is None  # the source path recorded is not a folder here
    # damage a copy's JPEG bytes: the chunk checksum catches it, verify names the array and samples
    copy_ = tmp_path / "s.zarr"
    shutil.copytree(STORE, copy_)
    shard = copy_ / "train" / "jpeg" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[200] ^= 0x55
    shard.write_bytes(bytes(data))
    report = verify_store(copy_)
    assert not report["ok"]
    assert {(p["array"], tuple(p["samples"])) for p in report["problems"]} == {("jpeg", (0, 2))}


def test_verify_decodes_every_jpeg_and_checks_the_facts(tmp_path):
    """A JPEG whose bytes pass their checksum but do not decode, or disagree with the arrays, is
    found by verify (rewritten through zarr, so the CRC32C is valid)."""
    copy_ = tmp_path / "s.zarr"
    shutil.copytree(STORE, copy_)
    g = zarr.open_group(str(copy_), mode="r+")
    jpegs = g["train/jpeg"][0, :]
    labels = g["train/label"][0, :]
    good = [i for i in range(len(labels)) if labels[i] >= 0]
    cut = jpegs.copy()
    cut[good[0]] = jpegs[good[0]][: len(jpegs[good[0]]) // 2]
    g["train/jpeg"][0, :] = cut
    width = g["train/width"][0, :]
    width[good[1]] += 1
    g["train/width"][0, :] = width
    report = verify_store(copy_)
    problems = {p["samples"][0]: p["problem"] for p in report["problems"]}
    assert not report["ok"] and set(problems) == {good[0], good[1]}, report["problems"]
    assert "does not decode" in problems[good[0]] and "truncated" in problems[good[0]]
    assert "the arrays say" in problems[good[1]]


def test_cli_inspect_sample_and_save_jpeg(tmp_path):
    out = tmp_path / "one.jpg"
    res = CliRunner().invoke(main, ["inspect", str(STORE), "--split", "val", "--sample", "1", "--save-jpeg", str(out)])
    assert res.exit_code == 0, res.output
    assert "jdct images store v2" in res.output and "verbatim" in res.output and f"wrote {out}" in res.output
    stored = zarr.open_group(str(STORE), mode="r")["val/jpeg"][0, 1:2][0]
    assert out.read_bytes() == stored
    res = CliRunner().invoke(main, ["inspect", str(STORE), "--save-jpeg", str(out)])
    assert res.exit_code == 1 and "--save-jpeg needs --sample" in res.output


def test_converting_the_golden_source_again_gives_the_golden_arrays(tmp_path):
    src = make_source(tmp_path / "src")
    out = tmp_path / "again.zarr"
    convert(src, out, options=OPTIONS, workers=1)
    assert store_hashes(out) == json.loads((GOLDEN / "store-v2.expected.json").read_text())["arrays"]
    again, golden = read_metadata(out).metadata, read_metadata(STORE).metadata
    assert again.stats == golden.stats and again.splits.keys() == golden.splits.keys()
    for name in golden.splits:
        a, b = again.split(name), golden.split(name)
        assert (a.files, a.treatments, a.stored_bytes, a.counts) == (b.files, b.treatments, b.stored_bytes, b.counts)
    assert sorted(f for classes in SOURCE.values() for names in classes.values() for f in names) == sorted(
        f.split("/")[-1] for sp in golden.splits.values() for f in list(sp.files) + [x.file for x in sp.failures
                                                                                       if x.stage == "plan"])


# (field, new value (... = deleted), words of the error, whether the JSON Schema can tell too)
EDITS = [
    ("layout", "pixels", 'layout: expected one of "images", got "pixels"', True),
    ("max_side", -1, "max_side: expected a non-negative integer, got -1", True),
    ("check", "all", 'check: expected one of "markers", "decode", got "all"', True),
    ("restart_segments", "yes", 'restart_segments: expected true or false, got "yes"', True),
    ("treatments", ["failed", "kept"], "treatments: expected the names of this format's codes", True),
    ("samplings", ["none", "4:2:0"], "samplings: expected the names of this format's codes", True),
    ("splits.train.treatments.verbatim", -2, "splits.train.treatments.verbatim: expected a non-negative integer",
     True),
    ("splits.train.stored_bytes", ..., "splits.train.stored_bytes: missing", True),
    ("stats.size", 8, "stats.size: expected an integer >= 16, got 8", True),
    ("stats.y.std[3]", -1.0, "stats.y.std[3]: expected a finite number >= 0", True),
    ("chunk_samples", 3, "shard_samples: expected a multiple of chunk_samples (3), got 4", False),
]


def _set(doc, dotted: str, value):
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


@pytest.mark.parametrize("field, value, words, schema_tells", EDITS, ids=[e[0] for e in EDITS])
def test_hand_edits_are_refused_naming_the_field(field, value, words, schema_tells, tmp_path):
    doc = copy.deepcopy(_doc(STORE))
    _set(doc, field, value)
    with pytest.raises(StoreMetadataError) as info:
        parse_metadata(doc)
    assert words in str(info.value), str(info.value)
    if schema_tells:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, SCHEMA)
    # through a store on disk: read_metadata refuses, verify reports it as one problem
    copy_ = tmp_path / "s.zarr"
    shutil.copytree(STORE, copy_)
    group = json.loads((copy_ / "zarr.json").read_text())
    group["attributes"]["jdct"] = doc
    (copy_ / "zarr.json").write_text(json.dumps(group))
    with pytest.raises(StoreMetadataError):
        read_metadata(copy_)
    report = verify_store(copy_)
    assert not report["ok"] and words in report["problems"][0]["problem"]


def test_versions_and_layouts_do_not_mix():
    doc = _doc(STORE)
    with pytest.raises(StoreMetadataError, match='layout: expected one of "crops", got "images"'):
        parse_metadata({**doc, "format_version": 1})
    with pytest.raises(StoreVersionError, match="an images store has format version 2"):
        ImagesMeta.parse({**doc, "format_version": 1})
    with pytest.raises(StoreVersionError, match="version 2 is the images layout's"):
        parse_metadata({**doc, "layout": "crops"})
    with pytest.raises(StoreVersionError, match="not supported"):
        parse_metadata({**doc, "format_version": 3})
    v1 = _doc(GOLDEN / "store-v1.zarr")
    with pytest.raises(StoreMetadataError, match='layout: expected one of "crops"'):
        parse_metadata({**v1, "layout": "images"})
