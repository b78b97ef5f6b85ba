"""Conversion under faults, damaged stores and hostile checkpoints.

- ten SIGKILLs at random moments of one conversion, each followed by a resume: the final store's
  arrays are byte-identical to an uninterrupted run's (sha256 of every array);
- an output filesystem that fills up (a 1 MiB tmpfs) or turns read-only mid-run: a clear error, the
  finished shards still read back with valid checksums and equal the reference, a resume completes;
- hostile source trees (symlink loops, a FIFO and a directory named like JPEGs, a dangling link,
  an empty class folder, a file vanishing mid-run, spaces and non-ASCII names): never fatal, each
  recorded; ``--labels`` entries leaving SRC are refused;
- ``verify_store`` finds every injected corruption (a flipped byte in a chunk of each array, in a
  shard index, a missing or truncated shard, metadata disagreeing with the arrays) and names the
  array and the sample range; the loader raises StoreCorruptionError on a damaged chunk;
- a checkpoint carrying a pickled callable is refused by the weights_only loader, nothing runs.

Real data: trees of scikit-image's photographs made at test time (tests/photos.py), crops of 32 pixels.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jdct_cli import store as st
from jdct_cli.checkpoint import FORMAT_NAME, FORMAT_VERSION, load_checkpoint
from jdct_cli.convert import ConvertOptions, convert
from jdct_cli.errors import CheckpointError, JdctError, SourceError, StoreCorruptionError
from jdct_cli.store.report import render_verify_text, verify_store
from jdct_cli.transforms import convert_image, image_rng
from photos import make_photo_tree, photo_jpeg
from storetools import assert_no_orphans, descendants, store_hashes

REPO = Path(__file__).resolve().parent.parent
OPTS = dict(size=32, views=2, seed=3, chunk_samples=1, shard_samples=2)
CLI_OPTS = ["--size", "32", "--views", "2", "--seed", "3", "--chunk-samples", "1", "--shard-samples", "2",
            "--workers", "1", "--quiet"]


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jdct_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """train: 3 classes x 20, val: 3 x 4 photographs of 96-320 px (72 files, 66 shards of 2 samples)."""
    return make_photo_tree(tmp_path_factory.mktemp("src"), classes=3, train_per_class=20, val_per_class=4,
                           min_side=96, max_side=320)


@pytest.fixture(scope="module")
def ref(src, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    convert(src, out, options=ConvertOptions(**OPTS), workers=1)
    return out


def _markers(out: Path) -> int:
    try:
        return sum(1 for p in (out / st.PROGRESS_DIR).iterdir() if p.name != "plan.json" and p.suffix == ".json")
    except OSError:
        return 0


# ------------------------------------------------------------------------------------------------
# SIGKILL / resume
# ------------------------------------------------------------------------------------------------

def test_ten_sigkills_then_resume_equal_an_uninterrupted_run(src, ref, tmp_path):
    out = tmp_path / "killed.zarr"
    total = 3 * 20 // 2 * 2 + 3 * 4 // 2  # shards: train 30 x 2 views, val 6
    rng = np.random.default_rng(2026)
    # Kill points: once a random number (0-2) of new shards is finished (0: during start-up,
    # planning or array creation), plus a random delay: kills land in imports, planning, array
    # creation, mid-shard and between shards.
    steps = rng.integers(0, 3, 10)
    delays = rng.uniform(0.0, 0.12, 10)
    hits = []
    for step, delay in zip(steps, delays):
        target = _markers(out) + step
        proc = subprocess.Popen([sys.executable, "-m", "jdct_cli", "convert", src, out, *CLI_OPTS],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        children: set[int] = set()
        while proc.poll() is None and _markers(out) < target and time.monotonic() < deadline:
            children |= descendants(proc.pid)
            time.sleep(0.002)
        time.sleep(delay)
        children |= descendants(proc.pid)
        alive = proc.poll() is None
        hits.append(_markers(out))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert alive, f"conversion ended before kill #{len(hits)} ({proc.stderr.read().decode()[-500:]})"
        assert_no_orphans(children)
    assert hits[-1] < total, "every kill came after the last shard"
    done = _cli("convert", src, out, *CLI_OPTS)
    assert done.returncode == 0, done.stderr
    assert store_hashes(out) == store_hashes(ref)
    assert st.read_metadata(out).metadata.splits == st.read_metadata(ref).metadata.splits
    assert verify_store(out)["ok"]
    print(f"\nkills landed after {hits} of {total} shards")


def test_verify_checks_the_finished_shards_of_an_interrupted_store(src, tmp_path):
    out = tmp_path / "part.zarr"

    def stop(stage, done, total):
        if stage == "convert" and done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(JdctError, match="interrupted"):
        convert(src, out, options=ConvertOptions(**OPTS), workers=1, progress=stop)
    _verify_finished_shards(out)
    shard = out / "train" / "cb" / _layout(out).shard_key("cb", 0, 1)  # samples 2-3 of view 0, finished
    off, nbytes = _chunk_ranges(shard, 2)[1]
    _flip(shard, off + nbytes // 2)
    report = verify_store(out)
    assert any(p["array"] == "cb" and p["view"] == 0 and p["samples"] == [3, 4] and "unreadable chunk" in p["problem"]
               for p in report["problems"]), report["problems"]


# ------------------------------------------------------------------------------------------------
# Output out of space / read-only
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs ({exc})")
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)


def _remount(mnt: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", mnt], check=True, capture_output=True, timeout=30)


def _finished_shards_match(out: Path, ref: Path) -> int:
    """Read every array of every shard with a completion marker (checksums checked by zarr) and
    compare with the reference store; returns the number of shards checked."""
    import zarr

    n = 0
    for marker in (out / st.PROGRESS_DIR).glob("*-v*-s*.json"):
        m = st.ShardMarker.parse(json.loads(marker.read_text()))
        for a in st.ALL_ARRAYS:
            got = zarr.open_array(os.fspath(out / m.split / a), mode="r")[m.view, m.start:m.stop]
            want = zarr.open_array(os.fspath(ref / m.split / a), mode="r")[m.view, m.start:m.stop]
            assert np.array_equal(got, want), (marker.name, a)
        n += 1
    return n


def _verify_finished_shards(out: Path) -> None:
    """``verify`` of an interrupted store: incomplete, every chunk of the finished shards intact."""
    report = verify_store(out)
    assert not report["ok"] and not report["complete"] and report["checked_chunks"] > 0
    kinds = {p["problem"] for p in report["problems"]}
    assert kinds <= {report["problems"][0]["problem"], "shard not converted yet"}, report["problems"]
    assert "metadata" in report["problems"][0]["problem"]


def test_out_of_space_is_a_clear_error_and_resume_completes(src, ref, tmpfs):
    out = tmpfs / "out.zarr"
    res = _cli("convert", src, out, *CLI_OPTS)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "Error:" in res.stderr, res.stderr[-2000:]
    assert "No space left on device" in res.stderr, res.stderr
    assert _finished_shards_match(out, ref) > 0
    _verify_finished_shards(out)
    _remount(tmpfs, "size=32m")
    res = _cli("convert", src, out, *CLI_OPTS)
    assert res.returncode == 0, res.stderr
    assert store_hashes(out) == store_hashes(ref) and verify_store(out)["ok"]


def test_output_turning_read_only_is_a_clear_error_and_resume_completes(src, ref, tmpfs):
    _remount(tmpfs, "size=32m")
    out = tmpfs / "out.zarr"

    def progress(stage, done, total):
        if stage == "convert" and done >= total // 2:
            _remount(tmpfs, "ro")

    with pytest.raises(JdctError, match="Read-only file system") as info:
        convert(src, out, options=ConvertOptions(**OPTS), workers=1, progress=progress)
    assert info.value.path and Path(info.value.path).is_relative_to(out)
    _remount(tmpfs, "rw")
    assert _finished_shards_match(out, ref) >= 33
    _verify_finished_shards(out)
    convert(src, out, options=ConvertOptions(**OPTS), workers=1)
    assert store_hashes(out) == store_hashes(ref) and verify_store(out)["ok"]


# ------------------------------------------------------------------------------------------------
# Hostile source trees
# ------------------------------------------------------------------------------------------------

def test_hostile_source_tree_is_converted_and_every_oddity_recorded(tmp_path):
    root = make_photo_tree(tmp_path / "photos", classes=2, train_per_class=0, val_per_class=3,
                           splits=("val",)) / "val"
    classes = sorted(p.name for p in root.iterdir())[:2]
    tree = tmp_path / "src"
    a, b = tree / "val" / "clé à molette", tree / "val" / classes[1]
    a.mkdir(parents=True)
    b.mkdir()
    (tree / "val" / "empty class").mkdir()
    for i, f in enumerate(sorted((root / classes[0]).iterdir())[:3]):
        shutil.copy(f, a / f"photo {i} ü.JPEG")
    for f in sorted((root / classes[1]).iterdir())[:3]:
        shutil.copy(f, b / f.name)
    (b / "loop").symlink_to("..")                    # back to val/: would list the other class
    (b / "self").symlink_to(".")                     # to itself
    (a / "twice").symlink_to(b)                      # another class folder, linked in
    (b / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(b / "fifo.jpg")                        # opening it would block forever
    (b / "folder.jpg").mkdir()
    vanishing = a / "photo 1 ü.JPEG"

    def progress(stage, done, total):
        if stage == "convert" and vanishing.exists():
            vanishing.unlink()                       # gone after planning, before its shard

    out = tmp_path / "out.zarr"
    summary = convert(tree, out, options=ConvertOptions(size=32, chunk_samples=2, shard_samples=4), workers=1,
                      progress=progress)
    meta = st.read_metadata(out).metadata
    val = meta.splits["val"]
    failed = {f.file: f for f in val.failures}
    assert list(meta.classes) == sorted(["clé à molette", classes[1]])
    assert sorted(val.files) == sorted(
        [f"val/clé à molette/photo {i} ü.JPEG" for i in range(3)]
        + [f"val/{classes[1]}/{f.name}" for f in sorted((root / classes[1]).iterdir())[:3]])
    assert failed[f"val/{classes[1]}/dangling.jpg"].kind == "unreadable"
    assert failed["val/clé à molette/photo 1 ü.JPEG"].stage == "convert"
    assert "no such file" in failed["val/clé à molette/photo 1 ü.JPEG"].reason
    # left out of the listing, never opened, recorded as plan-stage failures with the reason
    for rel, why in ((f"val/{classes[1]}/fifo.jpg", "not a regular file"), (f"val/{classes[1]}/loop", "symlink"),
                     (f"val/{classes[1]}/self", "symlink"), ("val/clé à molette/twice", "symlink")):
        assert rel in failed and failed[rel].stage == "plan" and why in failed[rel].reason, (rel, val.failures)
    # every image listed once: 3 + 3 real files, no duplicates through the links
    assert len(val.files) == len(set(val.files)) == 6
    assert summary["converted"] == 5 and val.counts.converted == 5
    assert val.counts.failed == 6 and val.counts.files == 11  # + dangling, vanished, 4 skipped
    assert verify_store(out)["ok"]
    # each stored sample is its own file's crop (failures keep their slot, shift nothing)
    import zarr

    g = zarr.open_group(os.fspath(out), mode="r")
    opts = ConvertOptions(size=32, chunk_samples=2, shard_samples=4)
    labels, images, ys = g["val/label"][0], g["val/image"][0], g["val/y"][0]
    for k in range(len(images)):
        rel = val.files[images[k]]
        if rel in failed:
            assert labels[k] == -1 and not ys[k].any()
            continue
        want = convert_image((tree / rel).read_bytes(), rel, train=False, rng=image_rng(0, 1, 0, int(images[k])),
                             opts=opts.recipe())[0]
        assert labels[k] == val.file_labels[images[k]] and np.array_equal(ys[k], want), rel


def test_a_huge_file_is_refused_without_being_read_whole(tmp_path):
    # a real JPEG followed by 2 GiB of (sparse) zeros: its header is fine, its size is not
    first = photo_jpeg(tmp_path / "first.JPEG", "rocket", size=(200, 150))
    cls = tmp_path / "src" / "val" / "a"
    cls.mkdir(parents=True)
    (cls / "ok.JPEG").symlink_to(first)
    big = cls / "huge.JPEG"
    big.write_bytes(first.read_bytes())
    os.truncate(big, 2 << 30)
    out = tmp_path / "o.zarr"
    convert(tmp_path / "src", out, options=ConvertOptions(size=32), workers=1)
    val = st.read_metadata(out).split("val")
    (rec,) = val.failures
    assert rec.file == "val/a/huge.JPEG" and rec.kind == "too-large" and "bytes" in rec.reason, rec
    assert val.counts.converted == 1


def test_labels_entries_cannot_leave_the_source(tmp_path):
    flat = tmp_path / "src" / "val"
    flat.mkdir(parents=True)
    first = photo_jpeg(tmp_path / "n01_1.JPEG", "chelsea", size=(120, 90))
    (flat / first.name).symlink_to(first)
    for entry in ("../../secret.jpg", "/etc/passwd", "sub/../../x.jpg"):
        labels = tmp_path / "labels.csv"
        labels.write_text(f"{first.name},a\n{entry},b\n")
        with pytest.raises(SourceError, match="line 2: .* points outside the source folder"):
            convert(tmp_path / "src", tmp_path / "o.zarr", options=ConvertOptions(size=32), labels=labels, workers=1)
    res = _cli("convert", tmp_path / "src", tmp_path / "o.zarr", "--labels", labels, "--size", "32", "--workers", "1")
    assert res.returncode == 1 and "points outside the source folder" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------------------------------------
# Damaged stores
# ------------------------------------------------------------------------------------------------

def _chunk_ranges(shard: Path, n_chunks: int) -> list[tuple[int, int]]:
    """(offset, nbytes) of each chunk of a zarr v3 shard file (index at the end: n x 2 uint64 + crc32c)."""
    data = shard.read_bytes()
    index = data[-(16 * n_chunks + 4):-4]
    return [struct.unpack("<QQ", index[16 * i:16 * i + 16]) for i in range(n_chunks)]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _layout(store: Path) -> st.CropsLayout:
    """The array layout of a complete store, or of an interrupted conversion's plan."""
    folder = st.ProgressFolder(store)
    return folder.read_plan().layout if folder.has_plan() else st.read_metadata(store).layout


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """val only, 3 classes x 4 photographs, chunks of 2 samples in shards of 4."""
    tree = make_photo_tree(tmp_path_factory.mktemp("vsrc"), classes=3, train_per_class=0, val_per_class=4,
                           splits=("val",), min_side=64, max_side=240)
    out = tmp_path_factory.mktemp("vstore") / "s.zarr"
    convert(tree, out, options=ConvertOptions(size=32, chunk_samples=2, shard_samples=4), workers=1)
    assert verify_store(out)["ok"]
    return out


def _copy(store: Path, dst: Path) -> Path:
    shutil.copytree(store, dst)
    return dst


def _hit(report: dict, array: str, lo: int, hi: int) -> bool:
    return any(p["array"] == array and p["samples"][0] <= lo and hi <= p["samples"][1] and p["split"] == "val"
               for p in report["problems"])


@pytest.mark.parametrize("array", st.ALL_ARRAYS)
@pytest.mark.parametrize("shard, chunk", [(0, 0), (1, 1), (2, 0)])
def test_verify_finds_a_flipped_byte_in_any_chunk(small_store, tmp_path, array, shard, chunk):
    out = _copy(small_store, tmp_path / "s.zarr")
    path = out / "val" / array / _layout(out).shard_key(array, 0, shard)
    off, nbytes = _chunk_ranges(path, 2)[chunk]
    _flip(path, off + nbytes // 2)
    report = verify_store(out)
    lo = shard * 4 + chunk * 2
    assert not report["ok"] and _hit(report, array, lo, lo + 2), report["problems"]


def test_verify_finds_index_damage_missing_and_truncated_shards(small_store, tmp_path):
    out = _copy(small_store, tmp_path / "s.zarr")
    layout = _layout(out)
    idx = out / "val" / "y" / layout.shard_key("y", 0, 0)
    _flip(idx, idx.stat().st_size - 10)  # inside the shard index
    (out / "val" / "cb" / layout.shard_key("cb", 0, 1)).unlink()
    cr = out / "val" / "cr" / layout.shard_key("cr", 0, 2)
    cr.write_bytes(cr.read_bytes()[: cr.stat().st_size // 2])
    report = verify_store(out)
    checks = {"index": _hit(report, "y", 0, 4), "missing": _hit(report, "cb", 4, 8),
              "truncated": _hit(report, "cr", 8, 12)}
    assert all(checks.values()), report["problems"]
    text = render_verify_text(report)
    assert "val/cb view 0 samples 4-7: shard file missing" in text, text


def _edit_meta(out: Path, fn) -> None:
    zj = out / "zarr.json"
    doc = json.loads(zj.read_text())
    fn(doc["attributes"]["jdct"])
    zj.write_text(json.dumps(doc))


@pytest.mark.parametrize("what, edit, array", [
    ("num_samples", lambda m: m["splits"]["val"].update(num_samples=13), None),
    ("file label", lambda m: m["splits"]["val"]["file_labels"].__setitem__(5, 0), "label"),
    ("counts", lambda m: m["splits"]["val"]["counts"].update(converted=11), None),
    ("size", lambda m: m.update(size=64), "y"),
])
def test_verify_finds_metadata_disagreeing_with_the_arrays(small_store, tmp_path, what, edit, array):
    out = _copy(small_store, tmp_path / "s.zarr")
    _edit_meta(out, edit)
    report = verify_store(out)
    assert not report["ok"], what
    assert any(p["split"] == "val" and (array is None or p["array"] == array) for p in report["problems"]), report


def test_loader_raises_on_a_damaged_chunk(small_store, tmp_path):
    from jdct_cli.data import DCTLoader

    out = _copy(small_store, tmp_path / "s.zarr")
    path = out / "val" / "y" / _layout(out).shard_key("y", 0, 1)
    off, nbytes = _chunk_ranges(path, 2)[1]
    _flip(path, off + nbytes // 2)
    with pytest.raises(StoreCorruptionError, match=r"samples 6\.\.7 of val"):
        for _ in DCTLoader(out, "val", batch_size=4, threads=1):
            pass


def test_checkpoint_with_a_pickled_callable_is_refused_without_running_it(tmp_path):
    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "model": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()

