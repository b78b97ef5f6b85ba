"""Stores on object storage: the loader and `jdct convert` against a local S3 server vs the local
filesystem, same run.

    python3 benchmarks/remote.py [--source ../shared/data/imagenet-originals] [--threads 1 2]
                                 [--size 224] [--batch-size 64] [--seconds 8] [--repeats 3]
                                 [--workers 2] [--latency-ms 0] [--fsspec [--fsspec-path DIR]]

- The server: moto's server mode (tests/s3server.py), a separate process on 127.0.0.1. It runs on
  the same cores as the client: every request costs CPU here that a real S3 spends on its own
  machines, so the remote/local ratios are pessimistic for a real deployment, and on a 2-core
  machine the server competes with the loader for them. ``--latency-ms`` puts a proxy in front of
  it adding that delay to every request (what a network round trip to an object store costs).
- convert: ``--source`` converted at ``--size`` (crops layout, one view, chunks of 64 in shards of
  1024... the defaults) by ``--workers`` worker processes into a local folder and into the bucket,
  alternately, ``--repeats`` times; images/s of the conversion phase (after planning).
- loader: ``DCTLoader`` float32 batches on the CPU over the train split (shuffle and flip on, as
  in training), each configuration in a fresh process for about ``--seconds`` after a warm-up
  batch, for each ``--threads`` T: the local store; the store in the bucket (obstore, T chunks in
  flight, each chunk's three arrays at once, shard indexes in memory); the same with a warm
  ``cache_dir`` (the next epochs of a run with a disk cache); ``--fsspec``: the bucket through
  zarr's FsspecStore (s3fs, installed separately) instead of obstore, everything else the same.
  Reported: samples/s (wall) and samples per CPU-second of the loader's process, and remote/local.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # s3server: the test suite's local S3 server
DEFAULT_SOURCE = (HERE.parent.parent / "shared" / "data" / "imagenet-originals").resolve()


def run_loader(store: str, threads: int, batch: int, seconds: float, cache_dir: str | None, backend: str) -> dict:
    """One loader configuration (in its own process): samples/s over ``seconds`` after a warm-up batch."""
    import torch
    import zarr

    zarr.config.set({"threading.max_workers": threads})
    torch.set_num_threads(1)
    from jdct_cli.data import DCTLoader

    loader = DCTLoader(store, "train", batch_size=batch, threads=threads, shuffle=True, flip=True, drop_last=True,
                       cache_dir=cache_dir)
    if backend == "fsspec":  # the same loader over zarr's FsspecStore (s3fs) instead of obstore
        from zarr.storage import FsspecStore

        from jdct_cli.store.cache import caching_store

        fs_store = FsspecStore.from_url(store, read_only=True, storage_options={
            "endpoint_url": os.environ["AWS_ENDPOINT_URL"], "key": os.environ["AWS_ACCESS_KEY_ID"],
            "secret": os.environ["AWS_SECRET_ACCESS_KEY"]})
        loader._zarr_target = lambda: caching_store(fs_store)
        loader._open()

    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            for _inputs, labels in loader:
                yield labels
            epoch += 1

    it = batches()
    next(it)
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        n += len(next(it))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"samples": n, "wall_s": wall, "cpu_s": cpu, "per_s": n / wall, "per_cpu_s": n / cpu}


def _child(store: str, threads: int, args, cache_dir=None, backend="obstore", env=None) -> dict:
    cmd = [sys.executable, __file__, "--_loader", store, str(threads), "--batch-size", str(args.batch_size),
           "--seconds", str(args.seconds), "--_backend", backend]
    if cache_dir:
        cmd += ["--_cache", cache_dir]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env or os.environ, timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"loader run failed ({store}, T={threads}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--fsspec", action="store_true", help="also read the bucket through s3fs (pip install s3fs)")
    ap.add_argument("--fsspec-path", help="a folder holding s3fs and its dependencies (pip install --target), put "
                                          "first on the fsspec run's path (s3fs pins its own botocore)")
    ap.add_argument("--_loader", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_cache", help=argparse.SUPPRESS)
    ap.add_argument("--_backend", default="obstore", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._loader:
        store, threads = args._loader
        print(json.dumps(run_loader(store, int(threads), args.batch_size, args.seconds, args._cache, args._backend)))
        return

    from jdct_cli.convert import ConvertOptions, convert
    from s3server import FaultProxy, MotoServer

    if not args.source.is_dir():
        raise SystemExit(f"no source folder {args.source} (give --source)")
    server = MotoServer()
    proxy = None
    try:
        os.environ.update(server.env())
        endpoint = server.endpoint
        if args.latency_ms:
            proxy = FaultProxy(("127.0.0.1", server.port), latency=args.latency_ms / 1000)
            endpoint = proxy.endpoint
            os.environ["AWS_ENDPOINT_URL"] = endpoint
        server.create_bucket("bench")
        opts = ConvertOptions(size=args.size)
        tmp = Path(tempfile.mkdtemp(prefix="jdct-remote-bench-"))
        conv = {"local": [], "s3": []}
        for rep in range(args.repeats):
            for where in ("local", "s3"):
                out = str(tmp / f"c{rep}.zarr") if where == "local" else f"s3://bench/c{rep}.zarr"
                s = convert(args.source, out, options=opts, workers=args.workers)
                conv[where].append(s["images_per_second"])
                print(f"convert {where:5s} rep {rep}: {s['images']} images, {s['images_per_second']:.1f} images/s",
                      flush=True)
        local, remote = str(tmp / "c0.zarr"), "s3://bench/c0.zarr"
        cache = str(tmp / "cache")
        _child(remote, 1, argparse.Namespace(batch_size=args.batch_size, seconds=1.0), cache_dir=cache)  # warm it
        rows = []
        for threads in args.threads:
            for rep in range(args.repeats):
                res = {"local": _child(local, threads, args), "s3": _child(remote, threads, args),
                       "s3+cache": _child(remote, threads, args, cache_dir=cache)}
                if args.fsspec:
                    env = dict(os.environ)
                    if args.fsspec_path:
                        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.fsspec_path, env.get("PYTHONPATH")]))
                    res["s3 fsspec"] = _child(remote, threads, args, backend="fsspec", env=env)
                for name, r in res.items():
                    rows.append({"threads": threads, "rep": rep, "store": name, **r})
                    print(f"loader T={threads} rep {rep} {name:10s} {r['per_s']:7.0f} samples/s "
                          f"{r['per_cpu_s']:7.0f} /CPU-s  ratio vs local {res['local']['per_s'] / r['per_s']:.2f}x",
                          flush=True)
        print("\nsummary (medians)")
        lc, rc = statistics.median(conv["local"]), statistics.median(conv["s3"])
        print(f"convert: local {lc:.1f} images/s, s3 {rc:.1f} images/s (local/s3 {lc / rc:.2f}x), "
              f"{args.workers} workers, size {args.size}, latency {args.latency_ms:g} ms")
        for threads in args.threads:
            med = {name: statistics.median(r["per_s"] for r in rows if r["threads"] == threads and r["store"] == name)
                   for name in dict.fromkeys(r["store"] for r in rows)}
            print(f"loader T={threads}: "
                  + ", ".join(f"{k} {v:.0f}/s ({med['local'] / v:.2f}x)" for k, v in med.items()))
        print(json.dumps({"convert": conv, "loader": rows}))
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()


if __name__ == "__main__":
    main()
