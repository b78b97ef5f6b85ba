"""Stores on object storage, several processes at once (issue 15): a conversion on a real
dask.distributed LocalCluster of worker processes writing into the local S3 server, surviving the
loss of a worker mid-run, and a 2-process gloo `jdct train` streaming its store from the bucket.
(The server: the ``s3_server`` fixture of conftest.py, tests/s3server.py.)"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import uuid

import pytest

from conftest import REPO
from jdct_cli.convert import ConvertOptions, convert
from jdct_cli.evaluate import evaluate
from s3server import FaultProxy
from test_remote import CROPS, assert_same_store
from test_remote import case  # noqa: F401 - the fixture: the source and its local stores
from trainfixture import make_tiny_store


@pytest.fixture
def bucket(s3_server):
    return s3_server.create_bucket(f"jdct-{uuid.uuid4().hex[:12]}")


def test_dask_localcluster_conversion_survives_a_killed_worker(case, s3_server, bucket):  # noqa: F811
    """2 worker processes (spawned by their nannies) write the shards into the bucket; one is killed
    with SIGKILL once the first shard is in (a proxy adds latency so that most are still to do).
    Its tasks run again elsewhere and the store is the local conversion, object for object."""
    distributed = pytest.importorskip("distributed")
    src, refs = case
    url = f"s3://{bucket}/dask.zarr"
    proxy = FaultProxy(("127.0.0.1", s3_server.port), latency=0.03)
    killed = []
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                      silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
            pids = client.run(os.getpid)

            def progress(stage, done, total):
                if stage == "convert" and done > 0 and not killed:
                    address, pid = sorted(pids.items())[0]
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, done, total))

            summary = convert(src, url, options=CROPS, dask_scheduler=cluster.scheduler_address, progress=progress,
                              storage_options={"endpoint": proxy.endpoint})
            after = client.run(os.getpid)
    finally:
        proxy.stop()
    (pid, done, total), = killed
    assert done < total and pid not in after.values()  # killed mid-run; the nanny started another worker
    assert summary["converted"] == summary["images"] and summary["resumed_shards"] == 0
    assert_same_store(s3_server, bucket, "dask.zarr", refs["crops"])


def test_two_process_gloo_training_streams_its_store_from_the_bucket(s3_server, bucket, tmp_path):
    """torchrun, 2 CPU processes (gloo), 2 epochs, the store read from the bucket (credentials and
    endpoint from the environment; each rank with its own disk cache). The validation it logs
    equals a 1-process eval of the same weights on the same store copied to local disk: every val
    sample counted once, the bytes read remotely the bytes on disk."""
    local, src = make_tiny_store(tmp_path / "tiny")
    url = f"s3://{bucket}/tiny.zarr"
    convert(src, url, options=ConvertOptions(size=32, quality=100, chunk_samples=8, shard_samples=16), workers=1)
    assert_same_store(s3_server, bucket, "tiny.zarr", local)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "jdct_cli",
           "train", "--arch", "late_concat_rfa_thinner", "--data", url, "--out", str(run), "--epochs", "2",
           "--batch-size", "5", "--device", "cpu", "--threads", "1", "--cache-dir", str(tmp_path / "cache"), "-q"]
    res = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                         timeout=500)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and all(m["val_samples"] == 11 for m in lines)
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == url and config["world_size"] == 2
    ev = evaluate(run / "last.pt", local, batch_size=11, device="cpu", threads=1)
    assert ev["samples"] == 11 and ev["top1"] == lines[-1]["val_top1"]
    assert math.isclose(ev["loss"], lines[-1]["val_loss"], rel_tol=1e-4)
    assert any((tmp_path / "cache").rglob("*-r*"))  # the ranks kept what they read
