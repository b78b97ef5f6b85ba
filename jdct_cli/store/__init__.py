"""The jdct store: its contract (:mod:`.format`), reading (:mod:`.read`), writing (:mod:`.write`),
the progress folder of a running conversion (:mod:`.progress`) and the inspect / verify reports
(:mod:`.report`, which imports zarr and is not loaded here).

A store lives in a local folder or on object storage (:mod:`.location`: ``s3://``, ``gs://``,
``az://`` URLs); every function takes a path, a URL or a :class:`StoreLocation`.

``read_metadata(path)`` -> :class:`StoreInfo` (``.metadata`` is the typed :class:`StoreMeta` of a
crops store or :class:`ImagesMeta` of an images store; ``.layout_name`` says which).
"""
from .format import (
    ALL_ARRAYS,
    ATTRS_KEY,
    COEFFICIENT_ARRAYS,
    DEFAULT_CHUNK_SAMPLES,
    DEFAULT_SHARD_SAMPLES,
    FAILURE_KINDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGES_ARRAYS,
    IMAGES_FORMAT_VERSION,
    LAYOUT_VERSIONS,
    LAYOUTS,
    LOCK_OBJECT,
    SAMPLINGS,
    TREATMENTS,
    PROGRESS_DIR,
    SUPPORTED_VERSIONS,
    ChannelStats,
    Codec,
    CropsLayout,
    Failure,
    ImagesLayout,
    ImagesMeta,
    ImagesSplitMeta,
    ImagesStats,
    Plan,
    PlanSplit,
    QuantTables,
    ShardMarker,
    Software,
    SplitCounts,
    SplitMeta,
    Stats,
    StoreMeta,
    Transform,
    layout_from_options,
    parse_group_json,
    parse_metadata,
    raw_sample_bytes,
    sample_shape,
    shard_ranges,
)
from .location import StoreLocation, as_location, is_url, parse_storage_options, storage_error
from .progress import ProgressFolder
from .read import StoreInfo, array_problem, dir_bytes, open_group, read_metadata
from .write import create_split_arrays, create_store, write_metadata, write_shard

__all__ = [
    "ALL_ARRAYS", "ATTRS_KEY", "COEFFICIENT_ARRAYS", "DEFAULT_CHUNK_SAMPLES", "DEFAULT_SHARD_SAMPLES",
    "FAILURE_KINDS", "FORMAT_NAME", "FORMAT_VERSION", "IMAGES_ARRAYS", "IMAGES_FORMAT_VERSION", "LAYOUTS",
    "LAYOUT_VERSIONS", "LOCK_OBJECT", "PROGRESS_DIR", "SAMPLINGS", "SUPPORTED_VERSIONS", "TREATMENTS",
    "ChannelStats", "Codec", "CropsLayout", "Failure", "ImagesLayout", "ImagesMeta", "ImagesSplitMeta", "ImagesStats",
    "Plan", "PlanSplit", "ProgressFolder", "QuantTables",
    "ShardMarker", "Software", "SplitCounts", "SplitMeta", "Stats", "StoreInfo", "StoreLocation", "StoreMeta",
    "Transform", "array_problem", "as_location", "is_url", "parse_storage_options", "storage_error", "create_split_arrays", "create_store", "dir_bytes", "layout_from_options", "open_group",
    "parse_group_json", "parse_metadata", "raw_sample_bytes", "read_metadata", "sample_shape", "shard_ranges",
    "write_metadata", "write_shard",
]
