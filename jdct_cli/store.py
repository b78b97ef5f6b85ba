"""The on-disk format of a jdct store (Zarr v3) and how to open one.

Layout (format ``jdct-dct-store``, ``FORMAT_VERSION`` 1; schema ``schemas/store.v1.schema.json``)::

    OUT.zarr/              zarr v3 group; attrs["jdct"] is written LAST (absent = incomplete store)
      <split>/y            int16   [V, N, 64, S/8,  S/8 ]  quantized coefficients, natural order 8*v+u
      <split>/cb, cr       int16   [V, N, 64, S/16, S/16]
      <split>/label        int32   [V, N]                 class index (into attrs classes)
      <split>/image        int32   [V, N]                 index into the split's file list
      <split>/box          float32 [V, N, 4]              crop x, y, width, height in source pixels

V is the number of augmented views (val always has 1), N the number of samples of the split,
S the crop size in pixels. Samples are chunked ``chunk_samples`` at a time inside shards of
``shard_samples``.

attrs["jdct"] (the contract between convert, loader, verify and training; schema is authoritative)::

    format: "jdct-dct-store"          format_version: 1
    jdct_version, libjpeg_version: str
    size: int (S)   quality: int   subsampling: "4:2:0"   coefficient_order: "natural"
    quant_tables: {"luma": [64 ints], "chroma": [64 ints]}     natural order; dequantized = coef * table
    classes: [str]                     label i is classes[i] (sorted folder names)
    chunk_samples: int   shard_samples: int   codec: {...description of the zarr codecs...}
    seed: int
    transform: {"train": {...RandomResizedCrop params...}, "val": {...}, "exif": "ignore"|"apply",
                "exact_decode": bool}
    splits: {<split>: {"views": V, "num_samples": N, "files": [paths relative to SRC],
                       "file_labels": [int per file], "failures": [{"file": str, "reason": str}],
                       "counts": {"files": int, "converted": int, "failed": int}}}
    stats: {"split": "train", "y"|"cb"|"cr": {"mean": [64 floats], "std": [64 floats]}}
           per-channel statistics of the *dequantized* coefficients (coef * quant table) over
           every sample of every view of the split named in "split" (train when present).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import IncompleteStoreError, SourceNotFoundError, StoreError, StoreVersionError

FORMAT_NAME = "jdct-dct-store"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
ATTRS_KEY = "jdct"
COEFFICIENT_ARRAYS = ("y", "cb", "cr")
ALL_ARRAYS = ("y", "cb", "cr", "label", "image", "box")
DEFAULT_CHUNK_SAMPLES = 64
DEFAULT_SHARD_SAMPLES = 1024


@dataclass(frozen=True)
class StoreInfo:
    """The parsed attrs["jdct"] of a complete store plus where it lives.

    ``meta`` is the full metadata dict (see the schema); the attributes below are shortcuts.
    """

    path: Path
    meta: dict[str, Any]

    @property
    def format_version(self) -> int:
        return int(self.meta["format_version"])

    @property
    def size(self) -> int:
        """Crop side in pixels (a multiple of 16)."""
        return int(self.meta["size"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"].keys())

    def split(self, name: str) -> dict[str, Any]:
        """The per-split metadata (files, counts, views, failures...); StoreError if absent."""
        try:
            return self.meta["splits"][name]
        except KeyError:
            raise StoreError(
                f"no split {name!r} in this store (it has: {', '.join(self.splits) or 'none'})", self.path
            ) from None


def read_metadata(path: os.PathLike | str) -> StoreInfo:
    """Read and validate attrs["jdct"] of the store at ``path`` without importing zarr.

    Raises SourceNotFoundError (no such path), StoreError (not a zarr v3 group / not a jdct store),
    IncompleteStoreError (group present but attrs["jdct"] missing: interrupted conversion) and
    StoreVersionError (a format version this jdct does not read).
    """
    path = Path(path)
    if not path.exists():
        raise SourceNotFoundError("no such store", path)
    zarr_json = path / "zarr.json"
    if not zarr_json.is_file():
        raise StoreError("not a Zarr v3 store (no zarr.json)", path)
    try:
        group_meta = json.loads(zarr_json.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"unreadable zarr.json ({exc})", path) from None
    if group_meta.get("node_type") != "group":
        raise StoreError("not a Zarr v3 group", path)
    meta = (group_meta.get("attributes") or {}).get(ATTRS_KEY)
    if meta is None:
        raise IncompleteStoreError(
            "store is incomplete: its metadata (attrs['jdct']) was never written, so its conversion "
            "did not finish; run the same `jdct convert` again to resume it",
            path,
        )
    if meta.get("format") != FORMAT_NAME:
        raise StoreError(f"not a jdct store (format {meta.get('format')!r})", path)
    version = meta.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise StoreVersionError(
            f"store format version {version!r} is not supported by this jdct (reads {list(SUPPORTED_VERSIONS)})",
            path,
        )
    return StoreInfo(path=path, meta=meta)
