"""Writing a store: the empty group, the arrays of a split, one shard, and the metadata (last).

Each function takes a path, a URL or a :class:`~.location.StoreLocation`; on an object store a
failure is a :class:`~jdct_cli.errors.StorageError` (an ``OSError``, as a local disk's failures are).
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from ..errors import StorageError
from .format import ATTRS_KEY, CropsLayout, ImagesLayout, ImagesMeta, StoreMeta
from .location import StoreLocation, as_location, storage_error
from .read import quiet_zarr


def _storage_failures(loc: StoreLocation, what: str):
    """Context: an object store's failure inside zarr becomes one StorageError line."""
    return _Mapped(loc, what)


class _Mapped:
    def __init__(self, loc: StoreLocation, what: str):
        self.loc, self.what = loc, what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or self.loc.is_local or isinstance(exc, StorageError):
            return False
        mapped = storage_error(exc, self.loc, key=self.what, op="write")
        if mapped is not None:
            raise mapped from None
        return False


def create_store(path: "os.PathLike | str | StoreLocation") -> None:
    """An empty zarr v3 group at ``path`` (no attrs: a store stays 'incomplete' until the end).

    ``path`` must hold nothing but jdct's progress folder (mode "a": zarr's "w" would delete it)."""
    import zarr

    loc = as_location(path)
    with _storage_failures(loc, "zarr.json"):
        zarr.open_group(loc.zarr_target(), mode="a", zarr_format=3)


def create_split_arrays(path: "os.PathLike | str | StoreLocation", split: str, views: int, num_samples: int,
                        layout: "CropsLayout | ImagesLayout") -> None:
    """Create every array of ``split`` as ``layout`` says (shapes, dtypes, chunks inside shards,
    codecs, fill values). Empty chunks are written too, so every shard is a file whose absence
    means 'not written'."""
    import zarr

    loc = as_location(path)
    with _storage_failures(loc, f"{split}/"):
        group = zarr.open_group(loc.zarr_target(), mode="r+", zarr_format=3)
        sub = group.require_group(split)
        with quiet_zarr():
            for spec in layout.arrays:
                sub.create_array(
                    spec.name,
                    shape=layout.shape(spec.name, views, num_samples),
                    chunks=layout.chunks(spec.name),
                    shards=layout.shards(spec.name),
                    config={"write_empty_chunks": True},
                    overwrite=True,
                    **layout.zarr_kwargs(spec.name),
                )


def write_shard(path: "os.PathLike | str | StoreLocation", split: str, view: int, start: int, stop: int,
                arrays: Mapping[str, np.ndarray]) -> None:
    """Write samples ``start``..``stop`` of ``view`` of every array in ``arrays`` ({name: values of
    shape ``(stop - start,) + sample shape``}); a whole shard is one write of each array (on an
    object store, one PUT: the shard appears whole or not at all)."""
    import zarr

    loc = as_location(path)
    with quiet_zarr():
        for name, values in arrays.items():
            with _storage_failures(loc, f"{split}/{name}"):
                arr = zarr.open_array(loc.zarr_target(), path=f"{split}/{name}", mode="r+", zarr_format=3)
                arr[view, start:stop] = values


def write_metadata(path: "os.PathLike | str | StoreLocation", meta: "StoreMeta | ImagesMeta") -> None:
    """Set attrs["jdct"] in the group's zarr.json, atomically (the last write of a conversion)."""
    loc = as_location(path)
    objects = loc.objects()
    data = objects.get("zarr.json")
    if data is None:
        raise FileNotFoundError(2, "no zarr.json to write the metadata into", loc.child_url("zarr.json"))
    group_meta = json.loads(data)
    group_meta.setdefault("attributes", {})[ATTRS_KEY] = meta.to_dict()
    objects.put("zarr.json", json.dumps(group_meta, indent=1, allow_nan=False).encode("utf-8"))
