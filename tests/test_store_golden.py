"""The committed golden v1 store (tests/golden/store-v1.zarr) is read on every run, without ../shared.

It proves that a v1 store stays readable by plain zarr-python and by jdct (metadata contract,
schema, verify, inspect), and that the bytes decode to the values recorded when it was written.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from jdct_cli.cli import main
from jdct_cli.convert import ConvertOptions, convert
from jdct_cli.errors import IncompleteStoreError, StoreError, StoreVersionError
from jdct_cli.store import FORMAT_VERSION, PROGRESS_DIR, read_metadata
from jdct_cli.store.report import inspect_store, verify_store

GOLDEN = Path(__file__).resolve().parent / "golden"
STORE = GOLDEN / "store-v1.zarr"
REPO = GOLDEN.parent.parent


def test_golden_store_reads_with_plain_zarr_and_matches_hashes():
    expected = json.loads((GOLDEN / "store-v1.expected.json").read_text())
    g = zarr.open_group(str(STORE), mode="r")
    for key, want in expected["arrays"].items():
        arr = g[key][...]
        assert list(arr.shape) == want["shape"] and str(arr.dtype) == want["dtype"]
        assert hashlib.sha256(arr.tobytes()).hexdigest() == want["sha256"], key
    # every chunk carries a CRC32C codec
    codecs = json.loads((STORE / "train" / "y" / "zarr.json").read_text())["codecs"][0]["configuration"]
    assert [c["name"] for c in codecs["codecs"]][-1] == "crc32c"
    assert [c["name"] for c in codecs["index_codecs"]][-1] == "crc32c"


def test_golden_metadata_contract_and_schema():
    info = read_metadata(STORE)
    assert info.format_version == FORMAT_VERSION == 1
    jsonschema.validate(info.meta, json.loads((REPO / "schemas/store.v1.schema.json").read_text()))
    sp = info.split("train")
    g = zarr.open_group(str(STORE), mode="r")
    labels, images = g["train/label"][0], g["train/image"][0]
    assert sorted(images) == list(range(sp.num_samples))
    assert [sp.file_labels[i] for i in images] == list(labels)
    # at quality 100 every quantization step is 1
    assert info.metadata.quant_tables.luma == (1,) * 64 and info.meta["quant_tables"]["luma"] == [1] * 64
    # the stored statistics are those of the stored coefficients (independent numpy computation)
    y = g["train/y"][...].astype(np.float64)
    np.testing.assert_allclose(info.metadata.stats.y.std, y.transpose(2, 0, 1, 3, 4).reshape(64, -1).std(axis=1),
                               rtol=1e-9, atol=1e-9)
    # the typed contract writes back exactly what it read
    assert info.metadata.to_dict() == info.meta


def test_golden_verify_and_inspect(tmp_path):
    assert verify_store(STORE)["ok"]
    doc = inspect_store(STORE, sample=1)
    jsonschema.validate(doc, json.loads((REPO / "schemas/store-inspect.v1.schema.json").read_text()))
    assert doc["splits"]["train"]["num_samples"] == 4 and doc["samples"][0]["psnr_db"] is None  # no source here
    # damage a copy: verify names the array and the sample range, checksums catch it
    copy = tmp_path / "s.zarr"
    shutil.copytree(STORE, copy)
    shard = copy / "train" / "cb" / "c" / "0" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x55
    shard.write_bytes(bytes(data))
    report = verify_store(copy)
    assert not report["ok"]
    assert {(p["array"], tuple(p["samples"])) for p in report["problems"]} == {("cb", (0, 2))}


def test_zarr_group_that_no_conversion_made_is_not_called_resumable(tmp_path):
    """A plain Zarr group (no attrs["jdct"], no .jdct-progress) was reported as an interrupted
    conversion to resume, which `jdct convert` then refused; a tampered plan was a KeyError."""
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").create_array("a", shape=(4,), dtype="int32")
    with pytest.raises(IncompleteStoreError, match="not a jdct store") as err:
        read_metadata(plain)
    assert "resume it" not in str(err.value)
    report = verify_store(plain)
    assert not report["ok"] and "not a jdct store" in report["problems"][0]["problem"]
    (plain / PROGRESS_DIR).mkdir()  # an interrupted conversion: resumable
    with pytest.raises(IncompleteStoreError, match="resume it"):
        read_metadata(plain)
    (plain / PROGRESS_DIR / "plan.json").write_text("{}")
    with pytest.raises(StoreError, match="unreadable conversion plan"):
        verify_store(plain)


def test_inspect_samples_of_a_damaged_store_or_plot_into_a_missing_folder_is_one_line(tmp_path):
    """`jdct inspect STORE --sample N` over a damaged chunk, and `--plot` into a missing folder,
    ended in zarr's checksum ValueError / a FileNotFoundError traceback."""
    copy = tmp_path / "s.zarr"
    shutil.copytree(STORE, copy)
    res = CliRunner().invoke(main, ["inspect", str(copy), "--plot", str(tmp_path / "no" / "p.png")])
    assert res.exit_code == 1 and "output folder does not exist" in res.output and "Traceback" not in res.output
    shard = copy / "train" / "y" / "c" / "0" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    for k in range(16, len(data) - 64, 97):  # damage every chunk, not the shard index at the end
        data[k] ^= 0xFF
    shard.write_bytes(bytes(data))
    res = CliRunner().invoke(main, ["inspect", str(copy), "--sample", "3"])
    assert res.exit_code == 1 and "train/y is unreadable" in res.output and "Traceback" not in res.output, res.output


def test_metadata_missing_or_from_the_future(tmp_path):
    copy = tmp_path / "s.zarr"
    shutil.copytree(STORE, copy)
    group = json.loads((copy / "zarr.json").read_text())
    group["attributes"]["jdct"]["format_version"] = 99
    (copy / "zarr.json").write_text(json.dumps(group))
    with pytest.raises(StoreVersionError):
        read_metadata(copy)
    group = json.loads((copy / "zarr.json").read_text())
    del group["attributes"]["jdct"]
    (copy / "zarr.json").write_text(json.dumps(group))
    with pytest.raises(IncompleteStoreError):
        read_metadata(copy)
    assert not verify_store(copy)["ok"]


def test_converting_the_golden_source_again_gives_the_golden_arrays(shared_data, tmp_path):
    """Stores converted by this jdct equal those of the version that wrote the golden store, byte for
    byte (its arrays' sha256, recorded when it was made from tiny-imagenet-20 by make_store_v1.py)."""
    tiny = shared_data / "tiny-imagenet-20"
    src = tmp_path / "src"
    for cls in sorted(p.name for p in (tiny / "train").iterdir())[:2]:
        (src / "train" / cls).mkdir(parents=True)
        for f in sorted((tiny / "train" / cls).iterdir())[:2]:
            (src / "train" / cls / f.name).symlink_to(f)
    out = tmp_path / "again.zarr"
    convert(src, out, options=ConvertOptions(size=32, seed=1, chunk_samples=2, shard_samples=4), workers=1)
    expected = json.loads((GOLDEN / "store-v1.expected.json").read_text())["arrays"]
    g = zarr.open_group(str(out), mode="r")
    for key, want in expected.items():
        assert hashlib.sha256(g[key][...].tobytes()).hexdigest() == want["sha256"], key
    golden, again = read_metadata(STORE).metadata, read_metadata(out).metadata
    assert again.splits == golden.splits and again.stats == golden.stats and again.quant_tables == golden.quant_tables


def test_save_jpeg_writes_a_crops_sample_back_losslessly(tmp_path):
    """`jdct inspect STORE --sample I --save-jpeg out.jpg`: the sample's coefficients written to a
    JPEG file (jpeg_write_coefficients) read back identical, with the store's tables, 4:2:0."""
    from jdct_cli import jpeg

    out = tmp_path / "s1.jpg"
    res = CliRunner().invoke(main, ["inspect", str(STORE), "--sample", "1", "--save-jpeg", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    info = read_metadata(STORE)
    g = zarr.open_group(str(STORE), mode="r")
    head = jpeg.read_header(out.read_bytes())
    assert (head["width"], head["height"]) == (info.size, info.size)
    assert jpeg.sampling_name(head["components"]) == "4:2:0"
    got = jpeg.read_coefficients(out.read_bytes(), strict=True)
    q = info.metadata.quant_tables
    np.testing.assert_array_equal(got.quant, [q.luma, q.chroma, q.chroma])
    for plane, comp in zip(("y", "cb", "cr"), got.components):
        np.testing.assert_array_equal(np.moveaxis(g[f"train/{plane}"][0, 1], 0, -1), comp)
