"""The on-disk format of a jdct store (Zarr v3) and how to open one.

Layout (format ``jdct-dct-store``, ``FORMAT_VERSION`` 1; schema ``schemas/store.v1.schema.json``)::

    OUT.zarr/              zarr v3 group; attrs["jdct"] is written LAST (absent = incomplete store)
      <split>/y            int16   [V, N, 64, S/8,  S/8 ]  quantized coefficients, natural order 8*v+u
      <split>/cb, cr       int16   [V, N, 64, S/16, S/16]
      <split>/label        int32   [V, N]                 class index (into attrs classes); -1 = failed sample
      <split>/image        int32   [V, N]                 index into the split's file list
      <split>/box          float32 [V, N, 4]              crop x, y, width, height in source pixels

V is the number of augmented views (val always has 1), N the number of samples of the split,
S the crop size in pixels. Samples are chunked ``chunk_samples`` at a time inside shards of
``shard_samples``. Within a view the samples are a seeded permutation of the split's files. A
file that failed during conversion keeps its slot: label -1, box and coefficients all zero
(readers skip it). Every chunk is Blosc(zstd, 1, bit-shuffle) then CRC32C; shard indexes CRC32C.
While a conversion runs, ``OUT/.jdct-progress/`` holds its plan and per-shard completion markers.

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
                       "file_labels": [int per file], "failures": [{"file": str, "reason": str,
                       "kind": str, "stage": "plan"|"convert", "view": int (convert only)}],
                       "counts": {"files": int, "converted": int, "failed": int,
                                  "failed_samples": int}}}
           "plan" failures are not in "files"; "convert" ones have a label -1 sample in "view".
    source: str (SRC at conversion time)   convert_options: {...} (the options, for reruns)
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
from .fileio import atomic_write_json

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
        if not (path / PROGRESS_DIR).is_dir():
            # jdct convert makes its progress folder before zarr.json: without it nothing can resume
            raise IncompleteStoreError(
                "store is incomplete: a Zarr group without jdct metadata (attrs['jdct']) and without an "
                f"interrupted conversion to resume ({PROGRESS_DIR} absent): not a jdct store, or convert "
                "it again with --overwrite",
                path,
            )
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


# ------------------------------------------------------------------------------------------------
# Writing (used by jdct convert; zarr is imported lazily so read_metadata stays zarr-free)
# ------------------------------------------------------------------------------------------------

#: Files of an unfinished conversion (plan and per-shard completion markers) live here, inside OUT.
PROGRESS_DIR = ".jdct-progress"
ARRAY_DTYPES = {"y": "int16", "cb": "int16", "cr": "int16", "label": "int32", "image": "int32", "box": "float32"}


def codec_description() -> dict[str, Any]:
    """How every array is encoded (stored verbatim in attrs["jdct"]["codec"])."""
    return {
        "sharding": "sharding_indexed",
        "chunk_codecs": ["bytes(little)", "blosc(cname=zstd, clevel=1, shuffle=bitshuffle)", "crc32c"],
        "index_codecs": ["bytes(little)", "crc32c"],
    }


def raw_sample_bytes(size: int) -> int:
    """Bytes of one sample's y, cb and cr as raw int16 (the base of every compression ratio)."""
    return 2 * 64 * ((size // 8) ** 2 + 2 * (size // 16) ** 2)


def sample_shape(name: str, size: int) -> tuple[int, ...]:
    """Per-sample shape of array ``name`` for crop side ``size`` (e.g. y: (64, S/8, S/8))."""
    if name == "y":
        return (64, size // 8, size // 8)
    if name in ("cb", "cr"):
        return (64, size // 16, size // 16)
    if name == "box":
        return (4,)
    if name in ("label", "image"):
        return ()
    raise KeyError(name)


def shard_ranges(num_samples: int, shard_samples: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` sample ranges of the shards along the sample axis (last may be short)."""
    return [(s, min(s + shard_samples, num_samples)) for s in range(0, num_samples, shard_samples)]


def shard_key(name: str, view: int, shard: int) -> str:
    """Relative path of the shard file of array ``name`` (default v3 chunk keys, '/' separator)."""
    trailing = {"y": 3, "cb": 3, "cr": 3, "box": 1, "label": 0, "image": 0}[name]
    return "/".join(["c", str(view), str(shard)] + ["0"] * trailing)


def create_store(path: os.PathLike | str) -> None:
    """An empty zarr v3 group at ``path`` (no attrs: a store stays 'incomplete' until the end).

    ``path`` must hold nothing but jdct's progress folder (mode "a": zarr's "w" would delete it)."""
    import zarr

    zarr.open_group(os.fspath(path), mode="a", zarr_format=3)


def create_split_arrays(path: os.PathLike | str, split: str, views: int, num_samples: int, size: int,
                        chunk_samples: int, shard_samples: int) -> None:
    """Create the six arrays of ``split`` (shapes in the module docstring), chunked ``chunk_samples``
    samples at a time inside shards of ``shard_samples``: Blosc zstd-1 bit-shuffle then a CRC32C
    checksum on every chunk, CRC32C on every shard index. Empty chunks are written too, so every
    shard is a file whose absence means 'not written'."""
    import zarr
    from zarr.codecs import BloscCodec, Crc32cCodec

    group = zarr.open_group(os.fspath(path), mode="r+", zarr_format=3)
    sub = group.require_group(split)
    for name in ALL_ARRAYS:
        per = sample_shape(name, size)
        fill = -1 if name == "label" else 0
        sub.create_array(
            name,
            shape=(views, num_samples) + per,
            chunks=(1, chunk_samples) + per,
            shards=(1, shard_samples) + per,
            dtype=ARRAY_DTYPES[name],
            compressors=[BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"), Crc32cCodec()],
            fill_value=fill,
            config={"write_empty_chunks": True},
            overwrite=True,
        )


def write_metadata(path: os.PathLike | str, meta: dict[str, Any]) -> None:
    """Set attrs["jdct"] = ``meta`` in the group's zarr.json, atomically (the last write of a conversion)."""
    zarr_json = Path(path) / "zarr.json"
    group_meta = json.loads(zarr_json.read_text())
    group_meta.setdefault("attributes", {})[ATTRS_KEY] = meta
    atomic_write_json(zarr_json, group_meta)


def dir_bytes(path: os.PathLike | str) -> int:
    """Bytes on disk of the files under ``path`` (a store or one of its arrays), skipping the
    conversion's ``PROGRESS_DIR`` bookkeeping; files that vanish meanwhile count 0."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != PROGRESS_DIR]
        for name in filenames:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total
