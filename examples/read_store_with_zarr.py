#!/usr/bin/env python3
"""Read a jdct store with plain zarr-python (no jdct import): metadata, one batch, one picture.

    python3 examples/read_store_with_zarr.py STORE.zarr [--split train] [--view 0]
    python3 examples/read_store_with_zarr.py s3://bucket/imagenette.zarr   # object storage (obstore)

A store on object storage is opened with zarr's own ObjectStore over obstore
(``pip install obstore``); credentials, region and endpoint come from the environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL for MinIO/Ceph...).

Shows the whole contract a foreign reader needs: attrs["jdct"] in the root group, arrays
<split>/y|cb|cr (int16 [V, N, 64, h, w], natural order 8*v+u), label (-1 = failed sample),
image (index into attrs files), box; dequantize with the quant tables; 8x8 inverse DCT.
"""
import argparse
import json
import os

import numpy as np
import zarr


def idct_plane(coefs, table):
    """(64, bh, bw) quantized coefficients -> (8*bh, 8*bw) pixels (float), level shift included."""
    x = np.arange(8)
    c = np.where(x[:, None] == 0, 1 / np.sqrt(2), 1.0) / 2 * np.cos((2 * x[None, :] + 1) * x[:, None] * np.pi / 16)
    _, bh, bw = coefs.shape
    f = (coefs * np.asarray(table).reshape(64, 1, 1)).reshape(8, 8, bh, bw)
    return np.einsum("vy,ux,vuij->iyjx", c, c, f).reshape(8 * bh, 8 * bw) + 128


def open_store(url: str):
    """What zarr opens: the path itself, or for s3://, gs://, az:// an ObjectStore (read-only)."""
    if not url.startswith(("s3://", "gs://", "az://")):
        return url
    from obstore.store import from_url
    from zarr.storage import ObjectStore

    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    options = {"client_options": {"allow_http": True}} if endpoint.startswith("http://") else {}
    return ObjectStore(from_url(url, **options), read_only=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--split", default="train")
    ap.add_argument("--view", type=int, default=0)
    args = ap.parse_args()

    root = zarr.open_group(open_store(args.store), mode="r", zarr_format=3)
    meta = root.attrs.get("jdct")
    if meta is None:
        raise SystemExit(f"{args.store}: no attrs['jdct']: the conversion did not finish")
    print(f"format {meta['format']} v{meta['format_version']}, size {meta['size']}, quality {meta['quality']}, "
          f"classes {len(meta['classes'])}, splits {list(meta['splits'])}")
    y, cb, cr = (root[f"{args.split}/{a}"] for a in ("y", "cb", "cr"))
    print(f"{args.split}/y {y.shape} {y.dtype} chunks {y.chunks} shards {y.shards}")
    # one chunk's worth of samples: a contiguous slice is the fast way to read
    n = y.chunks[1]
    labels = root[f"{args.split}/label"][args.view, :n]
    batch = y[args.view, :n]
    keep = labels >= 0  # label -1 marks an image that failed during conversion
    print(f"batch {batch.shape}, labels {labels[:8].tolist()}..., {int((~keep).sum())} failed samples skipped")
    files = meta["splits"][args.split]["files"]
    image = int(root[f"{args.split}/image"][args.view, 0])
    print(f"sample 0: {files[image]} class {meta['classes'][labels[0]] if labels[0] >= 0 else '-'}, "
          f"box {root[f'{args.split}/box'][args.view, 0].tolist()}")
    q = meta["quant_tables"]
    lum = idct_plane(y[args.view, 0].astype(np.float64), q["luma"])
    print(f"sample 0 luma reconstructed: {lum.shape}, mean {lum.mean():.1f}; "
          f"train DC mean/std {meta['stats']['y']['mean'][0]:.1f}/{meta['stats']['y']['std'][0]:.1f}")
    print(json.dumps(meta["splits"][args.split]["counts"]))


if __name__ == "__main__":
    main()
