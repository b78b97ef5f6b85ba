"""Writing a store: the empty group, the arrays of a split, one shard, and the metadata (last)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..fileio import atomic_write_json
from .format import ATTRS_KEY, CropsLayout, ImagesLayout, ImagesMeta, StoreMeta
from .read import quiet_zarr


def create_store(path: os.PathLike | str) -> None:
    """An empty zarr v3 group at ``path`` (no attrs: a store stays 'incomplete' until the end).

    ``path`` must hold nothing but jdct's progress folder (mode "a": zarr's "w" would delete it)."""
    import zarr

    zarr.open_group(os.fspath(path), mode="a", zarr_format=3)


def create_split_arrays(path: os.PathLike | str, split: str, views: int, num_samples: int,
                        layout: "CropsLayout | ImagesLayout") -> None:
    """Create every array of ``split`` as ``layout`` says (shapes, dtypes, chunks inside shards,
    codecs, fill values). Empty chunks are written too, so every shard is a file whose absence
    means 'not written'."""
    import zarr

    group = zarr.open_group(os.fspath(path), mode="r+", zarr_format=3)
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


def write_shard(path: os.PathLike | str, split: str, view: int, start: int, stop: int,
                arrays: Mapping[str, np.ndarray]) -> None:
    """Write samples ``start``..``stop`` of ``view`` of every array in ``arrays`` ({name: values of
    shape ``(stop - start,) + sample shape``}); a whole shard is one write of each array."""
    import zarr

    with quiet_zarr():
        for name, values in arrays.items():
            arr = zarr.open_array(os.fspath(Path(path) / split / name), mode="r+")
            arr[view, start:stop] = values


def write_metadata(path: os.PathLike | str, meta: "StoreMeta | ImagesMeta") -> None:
    """Set attrs["jdct"] in the group's zarr.json, atomically (the last write of a conversion)."""
    zarr_json = Path(path) / "zarr.json"
    group_meta = json.loads(zarr_json.read_text())
    group_meta.setdefault("attributes", {})[ATTRS_KEY] = meta.to_dict()
    atomic_write_json(zarr_json, group_meta)
