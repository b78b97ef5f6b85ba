"""Stores on object storage (issue 15): a local S3-compatible server (moto, tests/s3server.py) on
127.0.0.1, one per session (the ``s3_server`` fixture in conftest.py).

Every store written there is compared object for object with the same conversion written to
local disk by the same library: the same keys, the same bytes (conversion is deterministic).
Conversion is also exercised on the conditions of a real deployment: worker pools and a Dask
LocalCluster writing shards straight to the bucket, a SIGKILL and a resume, a worker killed
mid-run, a server that answers 503/500, resets connections and cuts bodies short, and the
one-line errors a user sees for a missing bucket, refused credentials, a missing permission and
an unreachable endpoint. Reading: verify, inspect, plain zarr (the example), the loader over 2
ranks (each fetching only its part), its disk cache, and a 2-process gloo training run.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import REPO
from jdct_cli.cli import main
from jdct_cli.convert import ConvertOptions, convert
from jdct_cli.convert.lifeline import ObjectLock
from jdct_cli.data import DCTLoader
from jdct_cli.errors import ConfigError, IncompleteStoreError, StoreError
from jdct_cli.store import LOCK_OBJECT, PROGRESS_DIR, StoreLocation, as_location, parse_storage_options, read_metadata
from jdct_cli.store.cache import DiskCache
from jdct_cli.store.report import inspect_store, verify_store
from photos import make_photo_tree
from s3server import FaultProxy, free_port

CROPS = ConvertOptions(size=32, views=2, seed=3, chunk_samples=4, shard_samples=8)
IMAGES = ConvertOptions(layout="images", size=32, seed=3, chunk_samples=4, shard_samples=8, stats_images=8)
LAYOUTS = {"crops": CROPS, "images": IMAGES}
#: Fast retries for tests (production backs off from 100 ms).
FAST = {"retry_init_backoff": "0.01", "retry_max_backoff": "0.2"}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 3-class source (8 train + 5 val photographs each) and its two local reference stores."""
    tmp = tmp_path_factory.mktemp("remote")
    src = make_photo_tree(tmp / "src", classes=3, train_per_class=8, val_per_class=5)
    refs = {}
    for name, opts in LAYOUTS.items():
        refs[name] = tmp / f"{name}.zarr"
        convert(src, refs[name], options=opts, workers=1)
    return src, refs


@pytest.fixture
def bucket(s3_server):
    return s3_server.create_bucket(f"jdct-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def remote_stores(case, s3_server):
    """Both layouts converted into one bucket by a pool of 2 worker processes: {layout: URL}."""
    src, _ = case
    name = s3_server.create_bucket(f"jdct-{uuid.uuid4().hex[:12]}")
    urls = {}
    for layout, opts in LAYOUTS.items():
        urls[layout] = f"s3://{name}/data/{layout}.zarr"
        convert(src, urls[layout], options=opts, workers=2)
    return name, urls


def files_of(store: Path) -> dict[str, bytes]:
    """Every file of a local store (its progress folder aside) by its path relative to the store."""
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and PROGRESS_DIR not in p.parts}


def assert_same_store(server, bucket: str, prefix: str, ref: Path) -> None:
    """The objects under ``prefix`` are the local store ``ref``'s files, key for key, byte for byte
    (and nothing else: no progress objects, no lock left behind)."""
    objects = server.objects(bucket, prefix)
    files = files_of(ref)
    assert sorted(objects) == sorted(files)
    different = [k for k in files if objects[k] != files[k]]
    assert not different, different


def one_line_error(res, *words):
    out = res.output.strip()
    assert res.exit_code == 1, res.output
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert out.startswith("Error: ") and all(w in out for w in words), out
    return out


# ------------------------------------------------------------------ convert, verify, inspect


def test_pool_conversion_into_s3_equals_local_and_verify_inspect_read_it(case, remote_stores, s3_server):
    """Both layouts, converted by 2 worker processes straight into the bucket, are the local
    conversions object for object; verify reads every chunk back; inspect reports the same store."""
    src, refs = case
    bucket, urls = remote_stores
    runner = CliRunner()
    for layout, url in urls.items():
        assert_same_store(s3_server, bucket, f"data/{layout}.zarr", refs[layout])
        info = read_metadata(url)
        assert info.path == url and info.meta == read_metadata(refs[layout]).meta
        res = runner.invoke(main, ["verify", url])
        assert res.exit_code == 0 and f"{url}: OK" in res.output, res.output
        res = runner.invoke(main, ["inspect", "--json", url])
        assert res.exit_code == 0, res.output
        doc, ref = json.loads(res.output), inspect_store(refs[layout])
        assert doc["path"] == url and doc["bytes_on_disk"] == ref["bytes_on_disk"] > 0
        assert doc["splits"] == ref["splits"]
    # a sample rebuilt from the remote store, compared with its source file (images: its bytes)
    doc = inspect_store(urls["images"], sample=1)
    assert doc["samples"][0]["same_bytes_as_source"] in (True, False) and doc["samples"][0]["psnr_db"] > 30
    doc = inspect_store(urls["crops"], sample=1)
    assert doc["samples"][0]["psnr_db"] > 20
    # the summary of a complete remote store: nothing to do, the same bytes as on disk
    summary = convert(src, urls["crops"], options=CROPS, workers=1)
    assert summary["already_complete"] and summary["bytes_on_disk"] == sum(map(len, files_of(refs["crops"]).values()))


def test_convert_and_inspect_never_import_torch_and_plain_zarr_reads_the_url(remote_stores, case):
    """`jdct convert` and `jdct inspect` on a URL stay torch-free; the example reads the store with
    plain zarr + obstore (no jdct), credentials and endpoint from the environment."""
    src, _ = case
    bucket, urls = remote_stores
    url = f"s3://{bucket}/data/torch-free.zarr"
    code = ("import sys\nfrom jdct_cli.cli import main\n"
            "main(sys.argv[1:], standalone_mode=False)\n"
            "main(['inspect', '--sample', '0', sys.argv[3]], standalone_mode=False)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('torch-free')\n")
    res = subprocess.run([sys.executable, "-c", code, "convert", str(src), url, "--size", "16", "--workers", "1",
                          "-q"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0 and "torch-free" in res.stdout, res.stderr[-2000:]
    res = subprocess.run([sys.executable, str(REPO / "examples/read_store_with_zarr.py"), urls["crops"]],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "format jdct-dct-store v1, size 32" in res.stdout and "train/y (2, 24, 64, 4, 4) int16" in res.stdout


def test_fsspec_fallback_scheme(case, tmp_path):
    """A scheme obstore does not serve goes through fsspec (here its in-memory filesystem): the
    same store, read back by the loader."""
    src, refs = case
    url = f"memory://jdct-{uuid.uuid4().hex[:8]}/c.zarr"
    convert(src, url, options=CROPS, workers=1)
    loc = as_location(url)
    assert loc.backend == "fsspec"
    assert dict(loc.objects().list("")) == {k: len(v) for k, v in files_of(refs["crops"]).items()}
    assert verify_store(url)["ok"]
    a = next(iter(DCTLoader(url, "val", batch_size=6, threads=1)))
    b = next(iter(DCTLoader(refs["crops"], "val", batch_size=6, threads=1)))
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and torch.equal(a[1], b[1])


# ------------------------------------------------------------------ the loader


def _batches(loader):
    return [(tuple(t.clone() for t in inputs), labels.clone()) for inputs, labels in loader]


def _chunk_ranges(proxy, start: int) -> set:
    """(path, Range) of the ranged GETs of coefficient chunks since request number ``start``."""
    return {(path, rng) for method, path, rng, _ in proxy.requests[start:]
            if method == "GET" and rng and not rng.startswith("bytes=-") and any(
                f"/{a}/c/" in path for a in ("y", "cb", "cr"))}


def test_loader_over_two_ranks_reads_each_sample_once_and_only_its_part(remote_stores, case, s3_server):
    """An epoch over 2 ranks from the bucket yields exactly the local store's batches (same
    samples, flips, values), every usable sample once over the ranks; each rank fetches only the
    chunks of its own part (ranged GETs, counted at a proxy), and shard indexes once per shard."""
    _, refs = case
    _, urls = remote_stores
    proxy = FaultProxy(("127.0.0.1", s3_server.port))
    try:
        fetched, seen = [], []
        for rank in (0, 1):
            kw = dict(batch_size=4, rank=rank, world_size=2, drop_last=False, seed=5, window_chunks=1, threads=2)
            remote = DCTLoader(urls["crops"], "train", storage_options={"endpoint": proxy.endpoint}, **kw)
            local = DCTLoader(refs["crops"], "train", **kw)
            for epoch in (0, 1):
                remote.set_epoch(epoch)
                local.set_epoch(epoch)
                start = len(proxy.requests)
                got, want = _batches(remote), _batches(local)
                assert len(got) == len(want) == len(remote)
                for (gi, gl), (wi, wl) in zip(got, want):
                    assert torch.equal(gl, wl) and all(torch.equal(a, b) for a, b in zip(gi, wi))
                plan = remote.plan()
                seen.append((epoch, plan.indices[plan.indices >= 0]))
                if epoch == 0:
                    fetched.append(_chunk_ranges(proxy, start))
                    indexes = [p for m, p, r, _ in proxy.requests[start:] if r and r.startswith("bytes=-")]
                    assert len(indexes) == len(set(indexes))  # each shard's index fetched once
        for epoch in (0, 1):
            both = np.concatenate([idx for e, idx in seen if e == epoch])
            assert sorted(both.tolist()) == list(range(24))  # every train sample once (none failed)
        all_chunks = 24 // 4 * 3  # chunks of one view x 3 coefficient arrays
        assert len(fetched[0] | fetched[1]) == all_chunks
        assert len(fetched[0]) < all_chunks and len(fetched[1]) < all_chunks
        assert len(fetched[0] & fetched[1]) <= 2 * 3  # at most the chunks where their parts meet
    finally:
        proxy.stop()


def test_loader_disk_cache_serves_the_next_epochs_and_stays_bounded(remote_stores, case, s3_server, tmp_path):
    """With cache_dir, a second loader (a new process would do the same) reads the epoch from local
    disk: no coefficient chunk is fetched again, the batches are the same. A small bound evicts
    the least recently used ranges and holds."""
    _, refs = case
    _, urls = remote_stores
    proxy = FaultProxy(("127.0.0.1", s3_server.port))
    try:
        opts = {"endpoint": proxy.endpoint}
        first = DCTLoader(urls["crops"], "val", batch_size=5, threads=2, storage_options=opts, cache_dir=tmp_path / "c")
        start = len(proxy.requests)
        a = _batches(first)
        assert _chunk_ranges(proxy, start)
        second = DCTLoader(urls["crops"], "val", batch_size=5, threads=2, storage_options=opts,
                           cache_dir=tmp_path / "c")
        start = len(proxy.requests)
        b = _batches(second)
        assert not _chunk_ranges(proxy, start)
        assert [torch.equal(x[1], y[1]) and all(torch.equal(p, q) for p, q in zip(x[0], y[0]))
                for x, y in zip(a, b)] == [True] * len(a)
        cached = DiskCache(tmp_path / "c", "x").size()
        assert cached > 0
        # bounded: a third of what one epoch reads
        bound = cached // 3
        small = DCTLoader(urls["crops"], "val", batch_size=5, threads=1, storage_options=opts,
                          cache_dir=tmp_path / "small", cache_bytes=bound)
        _batches(small)
        assert 0 < DiskCache(tmp_path / "small", "x").size() <= bound
    finally:
        proxy.stop()
    # a store converted again with other content gets another cache namespace
    loc = as_location(urls["crops"])
    assert loc.cache_namespace(b'{"a": 1}') != loc.cache_namespace(b'{"a": 2}')


def test_remote_loader_pickles_and_refuses_to_read_after_fork(remote_stores):
    """A loader pickles (spawned workers re-open the store); in a forked child, where obstore's
    client cannot work, it says so instead of hanging or crashing."""
    _, urls = remote_stores
    loader = DCTLoader(urls["crops"], "val", batch_size=5, threads=1)
    want = next(iter(loader))
    again = pickle.loads(pickle.dumps(loader))
    got = next(iter(again))
    assert torch.equal(got[1], want[1]) and all(torch.equal(a, b) for a, b in zip(got[0], want[0]))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never touch obstore, report and leave
        try:
            next(iter(loader))
            msg = b"read"
        except StoreError as exc:
            msg = str(exc).encode()
        except BaseException as exc:  # noqa: BLE001
            msg = repr(exc).encode()
        os.write(w, msg[:4000])
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    msg = os.read(r, 4096).decode()
    os.close(r)
    assert os.WEXITSTATUS(status) == 0 and "cannot be used in a forked process" in msg, msg


# ------------------------------------------------------------------ errors a user meets


def test_missing_bucket_credentials_access_and_endpoint_are_one_line_errors(s3_server, bucket, case, tmp_path,
                                                                           monkeypatch):
    src, _ = case
    runner = CliRunner()
    url = f"s3://{bucket}/x.zarr"
    conv = ["convert", str(src), "--size", "32", "--workers", "1"]
    # missing bucket: reading, and converting (nothing is created)
    one_line_error(runner.invoke(main, ["verify", "s3://jdct-no-such-bucket/x.zarr"]),
                   "no such bucket 'jdct-no-such-bucket'")
    one_line_error(runner.invoke(main, conv[:2] + ["s3://jdct-no-such-bucket/x.zarr"] + conv[2:]), "no such bucket")
    one_line_error(runner.invoke(main, ["inspect", "s3://jdct-no-such-bucket/x.zarr"]), "no such bucket")
    # nothing at that URL in an existing bucket
    one_line_error(runner.invoke(main, ["verify", url]), "no such store")
    # refused credentials: an unknown access key, a wrong secret
    unknown = ["--storage-option", "access_key_id=AKIAJDCTUNKNOWN0000", "--storage-option", "secret_access_key=x"]
    one_line_error(runner.invoke(main, ["verify", url] + unknown), "refused the credentials", "InvalidAccessKeyId")
    one_line_error(runner.invoke(main, conv[:2] + [url] + conv[2:] + unknown), "InvalidAccessKeyId")
    wrong = ["--storage-option", f"key={s3_server.admin[0]}", "--storage-option", "secret=not-the-secret"]
    one_line_error(runner.invoke(main, ["inspect", url] + wrong), "SignatureDoesNotMatch")
    # valid credentials without the permission (list only)
    lister = ["--storage-option", f"access_key_id={s3_server.lister[0]}",
              "--storage-option", f"secret_access_key={s3_server.lister[1]}"]
    one_line_error(runner.invoke(main, conv[:2] + [url] + conv[2:] + lister), "access denied")
    one_line_error(runner.invoke(main, ["verify", url] + lister), "access denied")
    # an endpoint nobody answers at
    gone = ["--storage-option", f"endpoint=http://127.0.0.1:{free_port()}", "--storage-option", "max_retries=2",
            *sum((["--storage-option", f"{k}={v}"] for k, v in FAST.items()), [])]
    t0 = time.monotonic()
    one_line_error(runner.invoke(main, conv[:2] + [url] + conv[2:] + gone), "cannot reach the object store at http")
    one_line_error(runner.invoke(main, ["verify", url] + gone), "cannot reach")
    assert time.monotonic() - t0 < 30
    # bad option names and values
    one_line_error(runner.invoke(main, ["verify", url, "--storage-option", "no_such_key=1"]), "unknown storage option")
    one_line_error(runner.invoke(main, ["verify", url, "--storage-option", "novalue"]), "KEY=VALUE")
    one_line_error(runner.invoke(main, ["verify", str(tmp_path), "--storage-option", "region=x"]), "apply to URLs")
    # no credentials anywhere: not in the environment, no ~/.aws
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    one_line_error(runner.invoke(main, ["verify", url]), "no credentials found for s3://")
    one_line_error(runner.invoke(main, conv[:2] + [url] + conv[2:]), "no credentials found")
    # ... which an AWS profile provides (config files read through boto3, endpoint included)
    (tmp_path / "creds").write_text(f"[p]\naws_access_key_id = {s3_server.admin[0]}\n"
                                    f"aws_secret_access_key = {s3_server.admin[1]}\n")
    (tmp_path / "conf").write_text(f"[profile p]\nregion = us-east-1\nendpoint_url = {s3_server.endpoint}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "creds"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "conf"))
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    one_line_error(runner.invoke(main, ["verify", url, "--storage-option", "profile=p"]), "no such store")


def test_train_with_a_missing_bucket_is_one_line(tmp_path):
    res = CliRunner().invoke(main, ["train", "--arch", "late_concat_rfa_thinner", "--data",
                                    "s3://jdct-no-such-bucket/x.zarr", "--out", str(tmp_path / "r"), "--device", "cpu"])
    one_line_error(res, "no such bucket")


def test_storage_options_and_urls_are_parsed_in_one_place(tmp_path):
    assert parse_storage_options(["endpoint=http://h:9000", "region = eu-west-1"]) == {
        "endpoint": "http://h:9000", "region": "eu-west-1"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_storage_options(["endpoint"])
    loc = as_location("s3://b/p/x.zarr/", {"endpoint_url": "http://h:1", "Secret": "s"})
    assert (loc.url, loc.bucket, loc.prefix, loc.backend) == ("s3://b/p/x.zarr", "b", "p/x.zarr", "obstore")
    assert loc.options_dict == {"endpoint": "http://h:1", "secret_access_key": "s"}
    assert loc.redacted_options()["secret_access_key"] == "***"
    assert pickle.loads(pickle.dumps(loc)) == loc
    local = as_location(f"file://{tmp_path}/a.zarr")
    assert local.is_local and local.path == tmp_path / "a.zarr"
    assert as_location(tmp_path).path == tmp_path and as_location(StoreLocation("x")) == StoreLocation("x")
    with pytest.raises(ConfigError, match="names no bucket"):
        as_location("s3:///x.zarr")
    with pytest.raises(ConfigError, match="apply to URLs"):
        as_location(tmp_path, {"region": "x"})


# ------------------------------------------------------------------ resuming, locking, faults


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_then_resume_equals_an_uninterrupted_conversion(case, s3_server, bucket):
    """`jdct convert` into the bucket (2 workers, through a proxy adding latency so that the kill
    lands mid-run) is killed with SIGKILL once a shard is finished. The store is incomplete and
    says so; the same command finishes it (taking over the dead run's lock at once: same
    machine, process gone), aborting a multipart upload a killed writer left behind, and the
    result is the uninterrupted conversion, object for object."""
    src, refs = case
    url = f"s3://{bucket}/k.zarr"
    s3 = s3_server.s3()
    proxy = FaultProxy(("127.0.0.1", s3_server.port), latency=0.03)
    args = [sys.executable, "-m", "jdct_cli", "convert", str(src), url, "--workers", "2", "--size", "32", "--views",
            "2", "--seed", "3", "--chunk-samples", "4", "--shard-samples", "8", "--storage-option",
            f"endpoint={proxy.endpoint}", "-q"]
    try:
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        markers = lambda: [k for k in s3_server.objects(bucket, "k.zarr") if "-v" in k and PROGRESS_DIR in k]  # noqa
        try:
            _wait_for(lambda: markers() or proc.poll() is not None, 120, "a shard marker")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        # the pool's workers die with it (their lifeline), but one may finish the marker of the
        # shard it was writing first: count once the count has stopped changing
        done, since = len(markers()), time.monotonic()
        while time.monotonic() - since < 1.5:
            time.sleep(0.25)
            if len(markers()) != done:
                done, since = len(markers()), time.monotonic()
        assert 1 <= done < 8  # killed mid-run
        with pytest.raises(IncompleteStoreError):
            read_metadata(url)
        report = verify_store(url)
        assert not report["ok"] and not report["complete"]
        assert sum(p["problem"] == "shard not converted yet" for p in report["problems"]) >= 1
        lock = json.loads(s3.get_object(Bucket=bucket, Key=f"k.zarr/{LOCK_OBJECT}")["Body"].read())
        assert lock["pid"] == proc.pid
        # what a writer killed in the middle of a multipart upload leaves (shards over 5 GiB use them)
        s3.create_multipart_upload(Bucket=bucket, Key="k.zarr/train/y/c/0/1/0/0/0")
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
        res = subprocess.run(args[:-1], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "resumed" in res.stdout and f"{done} shards were already done" in res.stdout, res.stdout
    finally:
        proxy.stop()
    assert_same_store(s3_server, bucket, "k.zarr", refs["crops"])
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_faults_are_retried_and_nothing_is_lost(case, s3_server, bucket):
    """Through a proxy that answers 503 SlowDown or 500, resets the connection or cuts a 2xx body
    short on about a quarter of the requests, a pool conversion, verify and a loader epoch all
    complete, and the store is the local conversion, byte for byte."""
    src, refs = case
    url = f"s3://{bucket}/f.zarr"
    proxy = FaultProxy(("127.0.0.1", s3_server.port), faults={"503": 0.1, "500": 0.04, "reset": 0.05,
                                                               "truncate": 0.06}, seed=11)
    try:
        opts = {"endpoint": proxy.endpoint, **FAST}
        summary = convert(src, url, options=CROPS, workers=2, storage_options=opts)
        assert summary["converted"] == summary["images"] == 39
        assert verify_store(as_location(url, opts))["ok"]
        got = _batches(DCTLoader(url, "train", batch_size=6, threads=2, storage_options=opts, seed=2))
        want = _batches(DCTLoader(refs["crops"], "train", batch_size=6, threads=2, seed=2))
        assert all(torch.equal(g[1], w[1]) and all(torch.equal(a, b) for a, b in zip(g[0], w[0]))
                   for g, w in zip(got, want)) and len(got) == len(want)
        counts = dict(proxy.counts)
    finally:
        proxy.stop()
    assert all(counts[k] > 0 for k in ("503", "500", "reset", "truncate")), counts
    assert_same_store(s3_server, bucket, "f.zarr", refs["crops"])


def test_a_permanent_error_mid_run_stops_in_one_line_and_the_store_resumes(case, s3_server, bucket):
    """The write permission is taken away while the conversion runs (the proxy answers 403
    AccessDenied to shard writes once the first shard is finished): one line saying how to
    resume, the finished shards kept; with the permission back, the same command completes the
    store, which is the uninterrupted conversion."""
    src, refs = case
    url = f"s3://{bucket}/p.zarr"
    finished = []

    def deny(method, path):
        if method == "PUT" and f"/{PROGRESS_DIR}/train-v" in path:
            finished.append(path)
            return False
        return method == "PUT" and "/c/" in path and len(finished) > 0

    proxy = FaultProxy(("127.0.0.1", s3_server.port), deny=deny)
    try:
        res = CliRunner().invoke(main, ["convert", str(src), url, "--size", "32", "--views", "2", "--seed", "3",
                                        "--chunk-samples", "4", "--shard-samples", "8", "--workers", "1",
                                        "--storage-option", f"endpoint={proxy.endpoint}"])
        one_line_error(res, "cannot write the store: access denied", "run the same `jdct convert` again to resume")
    finally:
        proxy.stop()
    with pytest.raises(IncompleteStoreError):
        read_metadata(url)
    summary = convert(src, url, options=CROPS, workers=1)
    assert summary["resumed_shards"] >= 1
    assert_same_store(s3_server, bucket, "p.zarr", refs["crops"])


def test_object_lock_one_conversion_at_a_time(case, s3_server, bucket):
    """A live conversion's lock makes a second one stop in one line naming the holder; a lock whose
    process is gone (same machine) or whose lease expired is taken over."""
    src, refs = case
    url = f"s3://{bucket}/l.zarr"
    loc = as_location(url)
    holder = ObjectLock(loc)
    holder.acquire()
    try:
        with pytest.raises(StoreError, match=r"another `jdct convert` \(pid \d+ on .*lock renewed \d+ s ago"):
            ObjectLock(loc).acquire(wait_s=0.5)
        assert json.loads(loc.objects().get(LOCK_OBJECT))["run"] == holder.run
    finally:
        holder.release()
    assert loc.objects().get(LOCK_OBJECT) is None  # released: removed
    # a dead process's lock (this machine): taken over at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"run": "r0", "pid": int(dead.stdout), "host": os.uname().nodename,
              "boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip(), "started": "x",
              "renewed": time.time(), "lease_s": 600}
    loc.objects().put(LOCK_OBJECT, json.dumps(record).encode())
    taker = ObjectLock(loc)
    taker.acquire(wait_s=0.5)
    assert taker.took_over["run"] == "r0"
    taker.release()
    # a lease that expired (another machine): taken over; one still fresh: refused
    loc.objects().put(LOCK_OBJECT, json.dumps({**record, "host": "elsewhere", "renewed": time.time() - 120,
                                               "lease_s": 60}).encode())
    taker = ObjectLock(loc)
    taker.acquire(wait_s=0.5)
    taker.release()
    loc.objects().put(LOCK_OBJECT, json.dumps({**record, "host": "elsewhere", "renewed": time.time()}).encode())
    res = CliRunner().invoke(main, ["convert", str(src), url, "--size", "32", "--workers", "1"])
    one_line_error(res, "another `jdct convert` (pid", "on elsewhere", "is writing into this store")
    # a holder that stopped renewing for longer than its lease loses the store, and notices
    loc.objects().delete([LOCK_OBJECT])
    late = ObjectLock(loc, lease_s=0.3, renew_s=1.0)
    late.acquire()
    time.sleep(0.5)
    other = ObjectLock(loc)
    other.acquire(wait_s=1)
    _wait_for(lambda: late.lost, 5, "the late holder to notice")
    late.release()
    assert json.loads(loc.objects().get(LOCK_OBJECT))["run"] == other.run  # not removed by the loser
    other.release()


def test_pool_workers_see_credentials_set_after_the_first_pool(case, s3_server, bucket, tmp_path):
    """A program that converts once, then sets its credentials and converts into a bucket: the pool's
    workers (forked by a forkserver that started with the old environment) use the new ones."""
    src, _ = case
    script = tmp_path / "later.py"
    script.write_text(
        "import json, os, sys\n"
        "from jdct_cli.convert import ConvertOptions, convert\n"
        "if __name__ == '__main__':\n"
        "    opts = ConvertOptions(size=32, views=1, chunk_samples=4, shard_samples=8)\n"
        "    convert(sys.argv[1], sys.argv[2], options=opts, workers=2)  # starts the forkserver\n"
        "    os.environ.update(json.loads(sys.argv[4]))\n"
        "    convert(sys.argv[1], sys.argv[3], options=opts, workers=2)\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
                 AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), PYTHONPATH=str(REPO))
    url = f"s3://{bucket}/later.zarr"
    res = subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "first.zarr"), url,
                          json.dumps(s3_server.env())], env=clean, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert read_metadata(url).metadata.classes == read_metadata(tmp_path / "first.zarr").metadata.classes
    assert verify_store(url)["ok"]
