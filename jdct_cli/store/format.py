"""The jdct store contract: every document a store holds, typed, parsed and validated once.

A store (format ``jdct-dct-store``, :data:`FORMAT_VERSION` 1, JSON Schema
``schemas/store.v1.schema.json``) is a Zarr v3 group::

    OUT.zarr/              zarr v3 group; attrs["jdct"] is written LAST (absent = incomplete store)
      <split>/y            int16   [V, N, 64, S/8,  S/8 ]  quantized coefficients, natural order 8*v+u
      <split>/cb, cr       int16   [V, N, 64, S/16, S/16]
      <split>/label        int32   [V, N]                 class index (into classes); -1 = failed sample
      <split>/image        int32   [V, N]                 index into the split's file list
      <split>/box          float32 [V, N, 4]              crop x, y, width, height in source pixels
      .jdct-progress/      only while a conversion runs: plan.json and one marker per finished shard

V is the number of augmented views (val always has 1), N the number of samples of the split, S the
crop size in pixels. Samples are chunked ``chunk_samples`` at a time inside shards of
``shard_samples`` (:class:`CropsLayout`). Within a view the samples are a seeded permutation of the
split's files; a file that failed during conversion keeps its slot: label -1, box and coefficients
zero.

The documents, each a frozen dataclass with ``parse`` (from the decoded JSON, every field checked
once; a bad field is a :class:`~jdct_cli.errors.StoreMetadataError` naming it, e.g.
``splits.val.num_samples: expected a non-negative integer, got "12"``) and ``to_dict`` (what is
written, keys in a fixed order so that equal metadata is equal bytes):

- :class:`StoreMeta`: attrs["jdct"] (:class:`SplitMeta`, :class:`Failure`, :class:`SplitCounts`,
  :class:`Stats`, :class:`QuantTables`, :class:`Codec`, :class:`Transform` inside it);
- :class:`Plan` (``.jdct-progress/plan.json``) and :class:`ShardMarker` (``.jdct-progress/<split>-
  v<view>-s<shard>.json``): the progress folder of a running conversion.

An **images** store (:data:`IMAGES_FORMAT_VERSION` 2, ``layout: "images"``, schema
``schemas/store.v2.schema.json``) keeps each image once, as JPEG bytes the loader entropy-decodes
(a fresh crop every epoch), with per-sample facts (:class:`ImagesLayout`, :class:`ImagesMeta`)::

    OUT.zarr/
      <split>/jpeg         bytes   [1, N]  the JPEG (variable length; empty when failed)
      <split>/label        int32   [1, N]  class index; -1 = failed sample
      <split>/image        int32   [1, N]  index into the split's file list
      <split>/width, height int32  [1, N]  pixels of the stored JPEG
      <split>/sampling     uint8   [1, N]  code of SAMPLINGS (grayscale, 4:2:0, 4:2:2, 4:4:4)
      <split>/treatment    uint8   [1, N]  code of TREATMENTS (verbatim, transcoded: ..., reencoded: ...)

:func:`parse_metadata` reads attrs["jdct"] of either layout.

Nothing here touches a file system: documents parse from dicts or bytes (:func:`parse_group_json`),
so the same contract serves stores on any zarr store backend.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import StoreError, StoreMetadataError, StoreVersionError

FORMAT_NAME = "jdct-dct-store"
#: The version crops stores are written with (format 1: the crops layout, unchanged since).
FORMAT_VERSION = 1
#: The version images stores are written with (format 2 added the images layout).
IMAGES_FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
#: Key of the jdct metadata in the root group's attributes.
ATTRS_KEY = "jdct"
#: Files of an unfinished conversion (plan and per-shard completion markers) live here, inside OUT.
PROGRESS_DIR = ".jdct-progress"
#: The lock of a conversion into an object store (a local store is locked with flock): an object at
#: the store's root, beside the progress folder so that starting afresh keeps it.
LOCK_OBJECT = ".jdct-lock.json"
PLAN_FILE = "plan.json"
DEFAULT_CHUNK_SAMPLES = 64
DEFAULT_SHARD_SAMPLES = 1024
COEFFICIENT_ARRAYS = ("y", "cb", "cr")
ALL_ARRAYS = ("y", "cb", "cr", "label", "image", "box")
#: The arrays of a split of an images store.
IMAGES_ARRAYS = ("jpeg", "label", "image", "width", "height", "sampling", "treatment")
#: ``sampling`` codes of an images store (index = code): the samplings the device path decodes.
SAMPLINGS = ("none", "grayscale", "4:2:0", "4:2:2", "4:4:4")
#: ``treatment`` codes of an images store (index = code): how each file became the stored JPEG.
TREATMENTS = (
    "failed",                          # nothing stored (label -1, empty bytes)
    "verbatim",                        # the source file, byte for byte
    "transcoded: progressive",         # lossless: the same coefficients, baseline Huffman coding
    "transcoded: arithmetic",
    "transcoded: multi-scan",          # sequential but one scan per component
    "transcoded: restart segments",    # --restart-segments: baseline with restart markers
    "reencoded: larger than max-side",  # decoded (DCT-scaled), resized, encoded at q100 4:2:0
    "reencoded: colour space",         # CMYK, YCCK, RGB...
    "reencoded: sampling",             # 4:4:0, 4:1:1, mixed factors...
    "reencoded: exif orientation",     # --exif apply on a rotated image
    "reencoded: not transcodable",     # libjpeg cannot code it as one baseline scan
)
FAILURE_KINDS = ("not-a-jpeg", "too-large", "unsupported", "unreadable", "corrupt")
FAILURE_STAGES = ("plan", "convert")
#: Quantization steps are 16-bit in JPEG.
MAX_QUANT_STEP = 65535


# ------------------------------------------------------------------------------------------------
# Field parsing: one function per kind of value, each naming the field it rejects
# ------------------------------------------------------------------------------------------------

_MISSING = object()


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(where: str, expected: str, value: Any) -> StoreMetadataError:
    return StoreMetadataError(f"{where}: expected {expected}, got {_show(value)}", field=where)


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def get(doc: Mapping, key: str, where: str, default: Any = _MISSING) -> Any:
    """``doc[key]``; a StoreMetadataError naming ``where.key`` when it is absent and has no default."""
    if key in doc:
        return doc[key]
    if default is _MISSING:
        raise StoreMetadataError(f"{_key(where, key)}: missing", field=_key(where, key))
    return default


def parse_object(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _bad(where, "an object", value)
    return value


def parse_int(value: Any, where: str, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """An integer (JSON booleans are not) within ``minimum``..``maximum``."""
    if type(value) is not int or (minimum is not None and value < minimum) \
            or (maximum is not None and value > maximum):
        raise _bad(where, _int_kind(minimum, maximum), value)
    return value


def _int_kind(minimum: Optional[int], maximum: Optional[int]) -> str:
    if maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    return {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}")


def parse_number(value: Any, where: str, minimum: Optional[float] = None) -> float:
    """A finite JSON number (int or float, not a boolean), at least ``minimum``."""
    if type(value) not in (int, float) or not math.isfinite(value) or (minimum is not None and value < minimum):
        raise _bad(where, "a finite number" if minimum is None else f"a finite number >= {minimum}", value)
    return value


def parse_str(value: Any, where: str, *, nonempty: bool = False) -> str:
    if type(value) is not str or (nonempty and not value):
        raise _bad(where, "a non-empty string" if nonempty else "a string", value)
    return value


def parse_bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise _bad(where, "true or false", value)
    return value


def parse_choice(value: Any, where: str, choices: Sequence[Any]) -> Any:
    if value not in choices or type(value) is bool and not any(type(c) is bool for c in choices):
        raise _bad(where, "one of " + ", ".join(json.dumps(c) for c in choices), value)
    return value


def parse_list(value: Any, where: str, length: Optional[int] = None) -> list:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise _bad(where, "an array" if length is None else f"an array of {length} items", value)
    return value


def parse_items(value: Any, where: str, item: Callable[[Any, str], Any], length: Optional[int] = None,
                fast: Optional[Callable[[list], bool]] = None) -> tuple:
    """A JSON array parsed item by item (``item(value, "where[i]")``) into a tuple.

    ``fast(list)``: a whole-list check that, when true, accepts the list without the per-item calls
    (ImageNet's 1.28 M file names are checked in one pass).
    """
    items = parse_list(value, where, length)
    if fast is not None and fast(items):
        return tuple(items)
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(items))


def parse_int_items(value: Any, where: str, minimum: Optional[int] = None, maximum: Optional[int] = None,
                    length: Optional[int] = None) -> tuple[int, ...]:
    def fast(items: list) -> bool:
        return all(type(v) is int for v in items) and (not items or (
            (minimum is None or min(items) >= minimum) and (maximum is None or max(items) <= maximum)))

    return parse_items(value, where, lambda v, w: parse_int(v, w, minimum, maximum), length, fast)


def parse_str_items(value: Any, where: str, *, nonempty: bool = False) -> tuple[str, ...]:
    return parse_items(value, where, lambda v, w: parse_str(v, w, nonempty=nonempty),
                       fast=lambda items: all(type(v) is str and (v or not nonempty) for v in items))


def parse_number_items(value: Any, where: str, length: Optional[int] = None,
                       minimum: Optional[float] = None) -> tuple[float, ...]:
    return parse_items(value, where, lambda v, w: parse_number(v, w, minimum), length)


def parse_scalars(value: Any, where: str) -> dict[str, Any]:
    """An object whose values are JSON scalars (strings, numbers, booleans, null)."""
    doc = parse_object(value, where)
    for k, v in doc.items():
        if v is not None and type(v) not in (str, int, float, bool):
            raise _bad(_key(where, k), "a string, number, boolean or null", v)
    return dict(doc)


def _optional(doc: Mapping, key: str, where: str, parse: Callable[[Any, str], Any]) -> Any:
    value = doc.get(key)
    return None if value is None else parse(value, _key(where, key))


def _put(out: dict, key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


# ------------------------------------------------------------------------------------------------
# The array layout
# ------------------------------------------------------------------------------------------------

def sample_shape(name: str, size: int) -> tuple[int, ...]:
    """Per-sample shape of array ``name`` for crop side ``size`` (y: (64, S/8, S/8), cb/cr: (64,
    S/16, S/16), box: (4,), label/image: ()); KeyError for another name."""
    if name == "y":
        return (64, size // 8, size // 8)
    if name in ("cb", "cr"):
        return (64, size // 16, size // 16)
    if name == "box":
        return (4,)
    if name in ("label", "image"):
        return ()
    raise KeyError(name)


def raw_sample_bytes(size: int) -> int:
    """Bytes of one sample's y, cb and cr as raw int16 (the base of every compression ratio)."""
    return sum(2 * math.prod(sample_shape(name, size)) for name in COEFFICIENT_ARRAYS)


def shard_ranges(num_samples: int, shard_samples: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` sample ranges of the shards along the sample axis (last may be short)."""
    return [(s, min(s + shard_samples, num_samples)) for s in range(0, num_samples, shard_samples)]


@dataclass(frozen=True)
class Codec:
    """How every chunk is compressed: Blosc (``cname``, ``clevel``, ``shuffle``), then a CRC32C
    checksum; every shard index is CRC32C-protected. Recorded in attrs["jdct"]["codec"] as a
    description of the zarr codec chain (:meth:`to_dict`)."""

    cname: str = "zstd"
    clevel: int = 1
    shuffle: str = "bitshuffle"

    CNAMES = ("zstd", "lz4", "lz4hc", "blosclz", "zlib")
    SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")
    #: The codecs ``jdct convert --codec`` offers (benchmarks/RESULTS.md measures them).
    NAMED = {"zstd": ("zstd", 1, "bitshuffle"), "lz4": ("lz4", 5, "bitshuffle")}

    @classmethod
    def named(cls, name: str) -> "Codec":
        """The codec of ``--codec NAME``: "zstd" (Blosc zstd level 1, bit-shuffle: smaller) or
        "lz4" (Blosc lz4 level 5, bit-shuffle: 2.3-2.5x faster to decode, 1.3-1.5x the bytes)."""
        cname, clevel, shuffle = cls.NAMED[name]
        return cls(cname=cname, clevel=clevel, shuffle=shuffle)

    @property
    def name(self) -> Optional[str]:
        """"zstd" or "lz4" for the named presets, else None."""
        return next((n for n, v in self.NAMED.items() if v == (self.cname, self.clevel, self.shuffle)), None)
    _BLOSC = re.compile(r"blosc\(cname=(\w+), clevel=(\d+), shuffle=(\w+)\)\Z")

    @classmethod
    def parse(cls, value: Any, where: str = "codec") -> "Codec":
        doc = parse_object(value, where)
        parse_choice(get(doc, "sharding", where), _key(where, "sharding"), ("sharding_indexed",))
        chunk = parse_str_items(get(doc, "chunk_codecs", where), _key(where, "chunk_codecs"))
        match = cls._BLOSC.match(chunk[1]) if len(chunk) == 3 else None
        if not match or chunk[0] != "bytes(little)" or chunk[2] != "crc32c":
            raise _bad(_key(where, "chunk_codecs"),
                       '["bytes(little)", "blosc(cname=..., clevel=..., shuffle=...)", "crc32c"]', list(chunk))
        cname, clevel, shuffle = match.group(1), int(match.group(2)), match.group(3)
        parse_choice(cname, _key(where, "chunk_codecs") + "[1] cname", cls.CNAMES)
        parse_int(clevel, _key(where, "chunk_codecs") + "[1] clevel", 0, 9)
        parse_choice(shuffle, _key(where, "chunk_codecs") + "[1] shuffle", cls.SHUFFLES)
        index = parse_str_items(get(doc, "index_codecs", where), _key(where, "index_codecs"))
        if list(index) != ["bytes(little)", "crc32c"]:
            raise _bad(_key(where, "index_codecs"), '["bytes(little)", "crc32c"]', list(index))
        return cls(cname=cname, clevel=clevel, shuffle=shuffle)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sharding": "sharding_indexed",
            "chunk_codecs": ["bytes(little)", f"blosc(cname={self.cname}, clevel={self.clevel}, "
                                              f"shuffle={self.shuffle})", "crc32c"],
            "index_codecs": ["bytes(little)", "crc32c"],
        }

    def zarr_compressors(self) -> list:
        """The zarr codecs after ``bytes`` for one chunk (imports zarr)."""
        from zarr.codecs import BloscCodec, Crc32cCodec

        return [BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=self.shuffle), Crc32cCodec()]


@dataclass(frozen=True)
class ArraySpec:
    """One array of a split: ``name``, numpy ``dtype`` name, per-sample shape, fill value."""

    name: str
    dtype: str
    sample_shape: tuple[int, ...]
    fill_value: int


@dataclass(frozen=True)
class CropsLayout:
    """The ``crops`` layout (the only one of format v1): fixed crops of ``size`` pixels as quantized
    4:2:0 coefficients, six arrays per split, shape ``(views, num_samples) + sample_shape``, each
    chunked ``(1, chunk_samples) + sample_shape`` inside shards of ``(1, shard_samples) +
    sample_shape`` (a shard file per view and ``shard_samples`` samples, key :meth:`shard_key`)."""

    size: int
    chunk_samples: int
    shard_samples: int
    codec: Codec = field(default_factory=Codec)

    name = "crops"
    DTYPES = {"y": "int16", "cb": "int16", "cr": "int16", "label": "int32", "image": "int32", "box": "float32"}

    def spec(self, name: str) -> ArraySpec:
        return ArraySpec(name, self.DTYPES[name], sample_shape(name, self.size), -1 if name == "label" else 0)

    @property
    def arrays(self) -> tuple[ArraySpec, ...]:
        return tuple(self.spec(name) for name in ALL_ARRAYS)

    def shape(self, name: str, views: int, num_samples: int) -> tuple[int, ...]:
        return (views, num_samples) + sample_shape(name, self.size)

    def chunks(self, name: str) -> tuple[int, ...]:
        return (1, self.chunk_samples) + sample_shape(name, self.size)

    def shards(self, name: str) -> tuple[int, ...]:
        return (1, self.shard_samples) + sample_shape(name, self.size)

    def shard_ranges(self, num_samples: int) -> list[tuple[int, int]]:
        return shard_ranges(num_samples, self.shard_samples)

    def shard_key(self, name: str, view: int, shard: int) -> str:
        """Path of a shard file inside its array folder (zarr v3 default chunk keys, '/')."""
        return "/".join(["c", str(view), str(shard)] + ["0"] * len(sample_shape(name, self.size)))

    def raw_sample_bytes(self) -> int:
        return raw_sample_bytes(self.size)

    def array_problem(self, name: str, views: int, num_samples: int, shape: Sequence[int], dtype: str,
                      chunks: Sequence[int], shards: Optional[Sequence[int]]) -> Optional[str]:
        """What is wrong with an array of this ``name`` found with ``shape``/``dtype``/``chunks``/
        ``shards`` (None when it matches the layout): the one check of the loader and ``verify``."""
        want_shape, want_dtype = self.shape(name, views, num_samples), self.DTYPES[name]
        if tuple(shape) != want_shape or str(dtype) != want_dtype:
            return f"is {dtype} {tuple(shape)}, the metadata says {want_dtype} {want_shape}"
        if tuple(chunks) != self.chunks(name) or (shards is not None and tuple(shards) != self.shards(name)):
            return (f"is chunked {tuple(chunks)} in shards {None if shards is None else tuple(shards)}, the "
                    f"metadata says {self.chunks(name)} in {self.shards(name)}")
        return None


    def zarr_kwargs(self, name: str) -> dict[str, Any]:
        """The arguments of zarr's ``create_array`` for array ``name`` (beside shape, chunks, shards)."""
        spec = self.spec(name)
        return {"dtype": spec.dtype, "compressors": self.codec.zarr_compressors(), "fill_value": spec.fill_value}


@dataclass(frozen=True)
class ImagesLayout:
    """The ``images`` layout (format 2): each image once, as the bytes of a JPEG the loader
    decodes (a fresh crop every epoch), and fixed-dtype facts per sample. Every array is
    ``(1, num_samples)`` (one view: the axis keeps both layouts indexed ``[view, sample]``),
    chunked ``(1, chunk_samples)`` inside shards of ``(1, shard_samples)``.

    - ``jpeg``: variable-length bytes (zarr's ``variable_length_bytes`` data type, ``vlen-bytes``
      codec, then CRC32C; no compression: JPEG does not compress), empty for a failed sample;
    - ``label`` int32 (-1: failed), ``image`` int32 (index into the split's files), ``width`` and
      ``height`` int32 (pixels of the stored JPEG), ``sampling`` uint8 (:data:`SAMPLINGS`),
      ``treatment`` uint8 (:data:`TREATMENTS`): each chunk ``bytes`` -> Blosc ``codec`` -> CRC32C.

    zarr calls ``variable_length_bytes`` a data type without a Zarr v3 specification; this layout
    pins its representation: each chunk is zarr-python's ``vlen-bytes`` encoding (a little-endian
    uint32 item count, then per item a uint32 length and the bytes), inside ``sharding_indexed``.
    """

    chunk_samples: int
    shard_samples: int
    codec: Codec = field(default_factory=Codec)

    name = "images"
    DTYPES = {"jpeg": "bytes", "label": "int32", "image": "int32", "width": "int32", "height": "int32",
              "sampling": "uint8", "treatment": "uint8"}

    def spec(self, name: str) -> ArraySpec:
        fill = {"label": -1, "jpeg": b""}.get(name, 0)
        return ArraySpec(name, self.DTYPES[name], (), fill)

    @property
    def arrays(self) -> tuple[ArraySpec, ...]:
        return tuple(self.spec(name) for name in IMAGES_ARRAYS)

    def shape(self, name: str, views: int, num_samples: int) -> tuple[int, ...]:
        self.DTYPES[name]  # KeyError for an unknown array
        return (views, num_samples)

    def chunks(self, name: str) -> tuple[int, ...]:
        return (1, self.chunk_samples)

    def shards(self, name: str) -> tuple[int, ...]:
        return (1, self.shard_samples)

    def shard_ranges(self, num_samples: int) -> list[tuple[int, int]]:
        return shard_ranges(num_samples, self.shard_samples)

    def shard_key(self, name: str, view: int, shard: int) -> str:
        return f"c/{view}/{shard}"

    def zarr_kwargs(self, name: str) -> dict[str, Any]:
        """The arguments of zarr's ``create_array`` for array ``name`` (imports zarr)."""
        from zarr.codecs import Crc32cCodec, VLenBytesCodec
        from zarr.core.dtype import VariableLengthBytes

        if name == "jpeg":
            return {"dtype": VariableLengthBytes(), "serializer": VLenBytesCodec(), "compressors": [Crc32cCodec()],
                    "fill_value": b""}
        spec = self.spec(name)
        return {"dtype": spec.dtype, "compressors": self.codec.zarr_compressors(), "fill_value": spec.fill_value}

    def array_problem(self, name: str, views: int, num_samples: int, shape: Sequence[int], dtype: str,
                      chunks: Sequence[int], shards: Optional[Sequence[int]]) -> Optional[str]:
        """What is wrong with an array found with these facts (None when it matches the layout)."""
        want_shape, want_dtype = self.shape(name, views, num_samples), self.DTYPES[name]
        got_dtype = "bytes" if name == "jpeg" and str(dtype) in ("object", "bytes", "|O") else str(dtype)
        if tuple(shape) != want_shape or got_dtype != want_dtype:
            return f"is {dtype} {tuple(shape)}, the metadata says {want_dtype} {want_shape}"
        if tuple(chunks) != self.chunks(name) or (shards is not None and tuple(shards) != self.shards(name)):
            return (f"is chunked {tuple(chunks)} in shards {None if shards is None else tuple(shards)}, the "
                    f"metadata says {self.chunks(name)} in {self.shards(name)}")
        return None


#: The store layouts by name; attrs["jdct"]["layout"] absent means "crops".
LAYOUTS = {"crops": CropsLayout, "images": ImagesLayout}
#: The format version of the stores of each layout.
LAYOUT_VERSIONS = {"crops": FORMAT_VERSION, "images": IMAGES_FORMAT_VERSION}


# ------------------------------------------------------------------------------------------------
# attrs["jdct"]
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantTables:
    """The two quantization tables of the stored coefficients (64 steps each, natural order 8*v+u):
    luma for y, chroma for cb and cr; dequantized coefficient = coefficient x step."""

    luma: tuple[int, ...]
    chroma: tuple[int, ...]

    @classmethod
    def parse(cls, value: Any, where: str = "quant_tables") -> "QuantTables":
        doc = parse_object(value, where)
        return cls(*(parse_int_items(get(doc, k, where), _key(where, k), 1, MAX_QUANT_STEP, 64)
                     for k in ("luma", "chroma")))

    @classmethod
    def parse_pair(cls, value: Any, where: str) -> "QuantTables":
        """From ``[luma, chroma]`` (the form of a conversion plan)."""
        pair = parse_list(value, where, 2)
        return cls(*(parse_int_items(t, f"{where}[{i}]", 1, MAX_QUANT_STEP, 64) for i, t in enumerate(pair)))

    def to_dict(self) -> dict[str, list[int]]:
        return {"luma": list(self.luma), "chroma": list(self.chroma)}

    def by_plane(self) -> dict[str, tuple[int, ...]]:
        """{"y": luma, "cb": chroma, "cr": chroma}."""
        return {"y": self.luma, "cb": self.chroma, "cr": self.chroma}


@dataclass(frozen=True)
class Failure:
    """A file that could not be converted: ``file`` (relative to SRC), ``reason``, ``kind`` (one of
    :data:`FAILURE_KINDS`), ``stage`` ("plan": left out of the files; "convert": its sample in
    ``view`` has label -1)."""

    file: str
    reason: str
    kind: Optional[str] = None
    stage: Optional[str] = None
    view: Optional[int] = None

    @classmethod
    def parse(cls, value: Any, where: str) -> "Failure":
        doc = parse_object(value, where)
        return cls(file=parse_str(get(doc, "file", where), _key(where, "file")),
                   reason=parse_str(get(doc, "reason", where), _key(where, "reason")),
                   kind=_optional(doc, "kind", where, lambda v, w: parse_choice(v, w, FAILURE_KINDS)),
                   stage=_optional(doc, "stage", where, lambda v, w: parse_choice(v, w, FAILURE_STAGES)),
                   view=_optional(doc, "view", where, lambda v, w: parse_int(v, w, 0)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "reason": self.reason}
        _put(out, "kind", self.kind)
        _put(out, "stage", self.stage)
        _put(out, "view", self.view)
        return out


def _parse_failures(value: Any, where: str) -> tuple[Failure, ...]:
    return parse_items(value, where, Failure.parse)


@dataclass(frozen=True)
class SplitCounts:
    """Files listed, converted and failed (``failed_samples``: samples left empty, label -1)."""

    files: int
    converted: int
    failed: int
    failed_samples: Optional[int] = None

    @classmethod
    def parse(cls, value: Any, where: str) -> "SplitCounts":
        doc = parse_object(value, where)
        ints = [parse_int(get(doc, k, where), _key(where, k), 0) for k in ("files", "converted", "failed")]
        return cls(*ints, failed_samples=_optional(doc, "failed_samples", where, lambda v, w: parse_int(v, w, 0)))

    def to_dict(self) -> dict[str, int]:
        out = {"files": self.files, "converted": self.converted, "failed": self.failed}
        _put(out, "failed_samples", self.failed_samples)
        return out


@dataclass(frozen=True)
class SplitMeta:
    """One split: ``views`` x ``num_samples`` samples; image ``i`` is ``files[i]`` (relative to
    SRC) of class ``file_labels[i]``; its failures and counts."""

    views: int
    num_samples: int
    files: tuple[str, ...]
    file_labels: tuple[int, ...]
    failures: tuple[Failure, ...]
    counts: SplitCounts

    @classmethod
    def parse(cls, value: Any, where: str, num_classes: int) -> "SplitMeta":
        doc = parse_object(value, where)
        views = parse_int(get(doc, "views", where), _key(where, "views"), 1)
        n = parse_int(get(doc, "num_samples", where), _key(where, "num_samples"), 0)
        files = parse_str_items(get(doc, "files", where), _key(where, "files"))
        if len(files) != n:
            raise StoreMetadataError(f"{_key(where, 'num_samples')}: {n}, but {_key(where, 'files')} lists "
                                     f"{len(files)} files", field=_key(where, "num_samples"))
        labels = parse_int_items(get(doc, "file_labels", where), _key(where, "file_labels"), 0,
                                 max(num_classes - 1, 0))
        if len(labels) != n:
            raise StoreMetadataError(f"{_key(where, 'file_labels')}: {len(labels)} labels for {n} files",
                                     field=_key(where, "file_labels"))
        return cls(views=views, num_samples=n, files=files, file_labels=labels,
                   failures=_parse_failures(get(doc, "failures", where), _key(where, "failures")),
                   counts=SplitCounts.parse(get(doc, "counts", where), _key(where, "counts")))

    def to_dict(self) -> dict[str, Any]:
        return {"views": self.views, "num_samples": self.num_samples, "files": list(self.files),
                "file_labels": list(self.file_labels), "failures": [f.to_dict() for f in self.failures],
                "counts": self.counts.to_dict()}

    def failure_of(self, file: str) -> Optional[Failure]:
        """The first failure recorded for ``file`` (None when it has none)."""
        return next((f for f in self.failures if f.file == file), None)


@dataclass(frozen=True)
class ChannelStats:
    """Per coefficient channel (64, natural order): mean and standard deviation, dequantized units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def parse(cls, value: Any, where: str) -> "ChannelStats":
        doc = parse_object(value, where)
        return cls(mean=parse_number_items(get(doc, "mean", where), _key(where, "mean"), 64),
                   std=parse_number_items(get(doc, "std", where), _key(where, "std"), 64, minimum=0))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class Stats:
    """Statistics of the dequantized coefficients of y, cb, cr over every converted sample of every
    view of ``split`` (train when present)."""

    split: str
    y: ChannelStats
    cb: ChannelStats
    cr: ChannelStats

    @classmethod
    def parse(cls, value: Any, where: str = "stats") -> "Stats":
        doc = parse_object(value, where)
        return cls(split=parse_str(get(doc, "split", where), _key(where, "split")),
                   **{k: ChannelStats.parse(get(doc, k, where), _key(where, k)) for k in COEFFICIENT_ARRAYS})

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, **{k: getattr(self, k).to_dict() for k in COEFFICIENT_ARRAYS}}

    def by_plane(self) -> dict[str, dict[str, list[float]]]:
        """{"y"|"cb"|"cr": {"mean": [64], "std": [64]}} (what the loader's normalization takes)."""
        return {k: getattr(self, k).to_dict() for k in COEFFICIENT_ARRAYS}


@dataclass(frozen=True)
class Transform:
    """How samples were made: ``train`` / ``val`` (descriptions of RandomResizedCrop and
    Resize+CenterCrop), ``exif`` ("ignore" | "apply": boxes in upright coordinates),
    ``exact_decode``, and what jdct records about its decoding (filter, DCT scaling, ROI, pixel
    budget); absent optional facts are None."""

    train: dict
    val: dict
    exif: str
    exact_decode: bool
    resize_filter: Optional[str] = None
    dct_scaling: Optional[bool] = None
    roi_decode: Optional[bool] = None
    dct_scaling_eighths: Optional[dict] = None
    max_pixels: Optional[int] = None

    @classmethod
    def parse(cls, value: Any, where: str = "transform") -> "Transform":
        doc = parse_object(value, where)
        return cls(
            train=dict(parse_object(get(doc, "train", where), _key(where, "train"))),
            val=dict(parse_object(get(doc, "val", where), _key(where, "val"))),
            exif=parse_choice(get(doc, "exif", where), _key(where, "exif"), ("ignore", "apply")),
            exact_decode=parse_bool(get(doc, "exact_decode", where), _key(where, "exact_decode")),
            resize_filter=_optional(doc, "resize_filter", where, parse_str),
            dct_scaling=_optional(doc, "dct_scaling", where, parse_bool),
            roi_decode=_optional(doc, "roi_decode", where, parse_bool),
            dct_scaling_eighths=_optional(doc, "dct_scaling_eighths", where,
                                          lambda v, w: {k: list(parse_int_items(x, _key(w, k), 1, 8))
                                                        for k, x in parse_object(v, w).items()}),
            max_pixels=_optional(doc, "max_pixels", where, lambda v, w: parse_int(v, w, 1)),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"train": dict(self.train), "val": dict(self.val)}
        _put(out, "resize_filter", self.resize_filter)
        out["exif"] = self.exif
        out["exact_decode"] = self.exact_decode
        for key in ("dct_scaling", "roi_decode", "dct_scaling_eighths", "max_pixels"):
            _put(out, key, getattr(self, key))
        return out


def _parse_layout_and_splits(doc: Mapping, split_type) -> tuple[int, int, list[str], dict]:
    """The fields both layouts share: ``(chunk_samples, shard_samples, classes, splits)``, the
    splits parsed by ``split_type.parse`` (StoreMetadataError naming the first bad field)."""
    chunk = parse_int(get(doc, "chunk_samples", ""), "chunk_samples", 1)
    shard = parse_int(get(doc, "shard_samples", ""), "shard_samples", 1)
    if shard % chunk:
        raise _bad("shard_samples", f"a multiple of chunk_samples ({chunk})", shard)
    classes = parse_str_items(get(doc, "classes", ""), "classes")
    if len(set(classes)) != len(classes):
        raise _bad("classes", "distinct class names", [c for c in classes if classes.count(c) > 1][:3])
    splits_doc = parse_object(get(doc, "splits", ""), "splits")
    if not splits_doc:
        raise _bad("splits", "at least one split", {})
    splits = {parse_str(name, "splits", nonempty=True): split_type.parse(sp, f"splits.{name}", len(classes))
              for name, sp in splits_doc.items()}
    return chunk, shard, classes, splits


@dataclass(frozen=True)
class StoreMeta:
    """attrs["jdct"] of a complete store (see the module docstring; the schema is
    ``schemas/store.v1.schema.json``). Sizes in pixels, counts in samples."""

    jdct_version: str
    libjpeg_version: str
    size: int
    quality: int
    quant_tables: QuantTables
    classes: tuple[str, ...]
    chunk_samples: int
    shard_samples: int
    codec: Codec
    seed: int
    transform: Transform
    splits: dict[str, SplitMeta]
    stats: Stats
    source: Optional[str] = None
    convert_options: Optional[dict] = None
    layout: str = "crops"
    subsampling: str = "4:2:0"
    coefficient_order: str = "natural"
    format_version: int = FORMAT_VERSION

    @classmethod
    def parse(cls, value: Any) -> "StoreMeta":
        """Validate and type attrs["jdct"]. StoreError when it is not a jdct store's,
        StoreVersionError for a version this jdct does not read, StoreMetadataError naming the
        first bad field."""
        if not isinstance(value, Mapping):
            raise StoreError(f"not a jdct store (attrs['jdct'] is {_show(value)}, not an object)")
        if value.get("format") != FORMAT_NAME:
            raise StoreError(f"not a jdct store (format {value.get('format')!r})")
        version = _check_version(value)
        if version != FORMAT_VERSION:
            raise StoreVersionError(f"a crops store has format version {FORMAT_VERSION}, not {version}")
        doc, w = value, ""
        layout = parse_choice(doc.get("layout", "crops"), "layout", ("crops",))
        size = parse_int(get(doc, "size", w), "size", 16)
        if size % 16:
            raise _bad("size", "a multiple of 16", size)
        chunk, shard, classes, splits = _parse_layout_and_splits(doc, SplitMeta)
        stats = Stats.parse(get(doc, "stats", w))
        if stats.split not in splits:
            raise _bad("stats.split", "one of the splits (" + ", ".join(splits) + ")", stats.split)
        return cls(
            jdct_version=parse_str(get(doc, "jdct_version", w), "jdct_version"),
            libjpeg_version=parse_str(get(doc, "libjpeg_version", w), "libjpeg_version"),
            size=size,
            quality=parse_int(get(doc, "quality", w), "quality", 1, 100),
            quant_tables=QuantTables.parse(get(doc, "quant_tables", w)),
            classes=classes,
            chunk_samples=chunk,
            shard_samples=shard,
            codec=Codec.parse(get(doc, "codec", w)),
            seed=parse_int(get(doc, "seed", w), "seed", 0),
            transform=Transform.parse(get(doc, "transform", w)),
            splits=splits,
            stats=stats,
            source=_optional(doc, "source", w, parse_str),
            convert_options=_optional(doc, "convert_options", w, parse_scalars),
            layout=layout,
            subsampling=parse_choice(get(doc, "subsampling", w), "subsampling", ("4:2:0",)),
            coefficient_order=parse_choice(get(doc, "coefficient_order", w), "coefficient_order", ("natural",)),
            format_version=version,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT_NAME, "format_version": self.format_version,
            "jdct_version": self.jdct_version, "libjpeg_version": self.libjpeg_version,
        }
        if self.layout != "crops":
            out["layout"] = self.layout
        out.update({
            "size": self.size, "quality": self.quality, "subsampling": self.subsampling,
            "coefficient_order": self.coefficient_order, "quant_tables": self.quant_tables.to_dict(),
            "classes": list(self.classes), "chunk_samples": self.chunk_samples,
            "shard_samples": self.shard_samples, "codec": self.codec.to_dict(), "seed": self.seed,
            "transform": self.transform.to_dict(),
        })
        _put(out, "source", self.source)
        _put(out, "convert_options", None if self.convert_options is None else dict(self.convert_options))
        out["splits"] = {name: sp.to_dict() for name, sp in self.splits.items()}
        out["stats"] = self.stats.to_dict()
        return out

    @property
    def array_layout(self) -> CropsLayout:
        """The arrays of every split (names, dtypes, shapes, chunking, codecs)."""
        return LAYOUTS[self.layout](self.size, self.chunk_samples, self.shard_samples, self.codec)

    def split(self, name: str) -> SplitMeta:
        """The split ``name``; StoreError listing the store's splits when it has no such split."""
        try:
            return self.splits[name]
        except KeyError:
            raise StoreError(f"no split {name!r} in this store (it has: {', '.join(self.splits) or 'none'})") \
                from None


# ------------------------------------------------------------------------------------------------
# attrs["jdct"] of an images store (format 2)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImagesSplitMeta:
    """One split of an images store: ``num_samples`` samples; image ``i`` is ``files[i]`` (relative
    to SRC) of class ``file_labels[i]``; its failures, counts, how many files got each treatment
    (``treatments``: {name: count}, names of :data:`TREATMENTS`), and the bytes of the JPEGs stored
    and of their source files (``stored_bytes``, ``source_bytes``)."""

    num_samples: int
    files: tuple[str, ...]
    file_labels: tuple[int, ...]
    failures: tuple[Failure, ...]
    counts: SplitCounts
    treatments: dict
    stored_bytes: int
    source_bytes: int

    views = 1

    @classmethod
    def parse(cls, value: Any, where: str, num_classes: int) -> "ImagesSplitMeta":
        doc = parse_object(value, where)
        base = SplitMeta.parse({**doc, "views": 1}, where, num_classes)
        treatments_doc = parse_object(get(doc, "treatments", where), _key(where, "treatments"))
        treatments = {parse_str(k, _key(where, "treatments"), nonempty=True):
                      parse_int(v, _key(_key(where, "treatments"), k), 0) for k, v in treatments_doc.items()}
        return cls(num_samples=base.num_samples, files=base.files, file_labels=base.file_labels,
                   failures=base.failures, counts=base.counts, treatments=treatments,
                   stored_bytes=parse_int(get(doc, "stored_bytes", where), _key(where, "stored_bytes"), 0),
                   source_bytes=parse_int(get(doc, "source_bytes", where), _key(where, "source_bytes"), 0))

    def to_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "files": list(self.files), "file_labels": list(self.file_labels),
                "failures": [f.to_dict() for f in self.failures], "counts": self.counts.to_dict(),
                "treatments": dict(self.treatments), "stored_bytes": self.stored_bytes,
                "source_bytes": self.source_bytes}

    def failure_of(self, file: str) -> Optional[Failure]:
        """The first failure recorded for ``file`` (None when it has none)."""
        return next((f for f in self.failures if f.file == file), None)


@dataclass(frozen=True)
class ImagesStats:
    """Per-channel statistics of the coefficients the loader makes from an images store: those of
    ``images`` train images' crops made by the crops layout's recipe (RandomResizedCrop, resize,
    4:2:0 forward DCT) at ``size`` pixels and IJG ``quality``, one seeded crop per image (the same
    crop a crops store of this source with this seed would hold), dequantized; ``split`` is the
    split they were drawn from."""

    split: str
    size: int
    quality: int
    images: int
    y: ChannelStats
    cb: ChannelStats
    cr: ChannelStats

    @classmethod
    def parse(cls, value: Any, where: str = "stats") -> "ImagesStats":
        doc = parse_object(value, where)
        return cls(split=parse_str(get(doc, "split", where), _key(where, "split")),
                   size=parse_int(get(doc, "size", where), _key(where, "size"), 16),
                   quality=parse_int(get(doc, "quality", where), _key(where, "quality"), 1, 100),
                   images=parse_int(get(doc, "images", where), _key(where, "images"), 0),
                   **{k: ChannelStats.parse(get(doc, k, where), _key(where, k)) for k in COEFFICIENT_ARRAYS})

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "size": self.size, "quality": self.quality, "images": self.images,
                **{k: getattr(self, k).to_dict() for k in COEFFICIENT_ARRAYS}}

    def by_plane(self) -> dict[str, dict[str, list[float]]]:
        """{"y"|"cb"|"cr": {"mean": [64], "std": [64]}} (what the loader's normalization takes)."""
        return {k: getattr(self, k).to_dict() for k in COEFFICIENT_ARRAYS}


@dataclass(frozen=True)
class ImagesMeta:
    """attrs["jdct"] of an images store (format 2, ``layout: "images"``; the schema is
    ``schemas/store.v2.schema.json``): no crop size (the loader chooses it), the JPEGs as stored.

    ``max_side``: longest side of a stored image (0: no limit; larger sources were re-encoded);
    ``restart_segments``: every JPEG not re-encoded was transcoded with restart markers (the loader
    then decodes only the crop's restart segments); ``reencode``: how re-encoded images were made
    (quality, subsampling, resize filter, DCT scaling); ``exif``: "ignore" | "apply" (rotated
    images re-encoded upright); ``check``: what conversion checked of each stored file
    ("markers": its marker structure to EOI; "decode": a strict decode of every coefficient);
    ``samplings`` / ``treatments``: the names of the codes of the ``sampling`` / ``treatment``
    arrays (index = code)."""

    jdct_version: str
    libjpeg_version: str
    classes: tuple[str, ...]
    chunk_samples: int
    shard_samples: int
    codec: Codec
    seed: int
    max_side: int
    restart_segments: bool
    reencode: dict
    exif: str
    check: str
    samplings: tuple[str, ...]
    treatments: tuple[str, ...]
    splits: dict[str, ImagesSplitMeta]
    stats: Optional[ImagesStats] = None
    source: Optional[str] = None
    convert_options: Optional[dict] = None
    layout: str = "images"
    format_version: int = IMAGES_FORMAT_VERSION

    CHECKS = ("markers", "decode")

    @classmethod
    def parse(cls, value: Any) -> "ImagesMeta":
        """Validate and type attrs["jdct"] of an images store (see :func:`parse_metadata`)."""
        doc, w = parse_object(value, ""), ""
        version = _check_version(doc)
        if version != IMAGES_FORMAT_VERSION:
            raise StoreVersionError(f"an images store has format version {IMAGES_FORMAT_VERSION}, not {version}")
        parse_choice(get(doc, "layout", w), "layout", ("images",))
        chunk, shard, classes, splits = _parse_layout_and_splits(doc, ImagesSplitMeta)
        stats = _optional(doc, "stats", w, ImagesStats.parse)
        if stats is not None and stats.split not in splits:
            raise _bad("stats.split", "one of the splits (" + ", ".join(splits) + ")", stats.split)
        samplings = parse_str_items(get(doc, "samplings", w), "samplings", nonempty=True)
        treatments = parse_str_items(get(doc, "treatments", w), "treatments", nonempty=True)
        for name, table, mine in (("samplings", samplings, SAMPLINGS), ("treatments", treatments, TREATMENTS)):
            if len(table) > 255:
                raise _bad(name, "at most 255 names (uint8 codes)", len(table))
            if tuple(table[:len(mine)]) != mine[:len(table)]:
                raise _bad(name, "the names of this format's codes, in order (" + ", ".join(mine) + ")", list(table))
        return cls(
            jdct_version=parse_str(get(doc, "jdct_version", w), "jdct_version"),
            libjpeg_version=parse_str(get(doc, "libjpeg_version", w), "libjpeg_version"),
            classes=classes, chunk_samples=chunk, shard_samples=shard,
            codec=Codec.parse(get(doc, "codec", w)),
            seed=parse_int(get(doc, "seed", w), "seed", 0),
            max_side=parse_int(get(doc, "max_side", w), "max_side", 0),
            restart_segments=parse_bool(get(doc, "restart_segments", w), "restart_segments"),
            reencode=parse_scalars(get(doc, "reencode", w), "reencode"),
            exif=parse_choice(get(doc, "exif", w), "exif", ("ignore", "apply")),
            check=parse_choice(get(doc, "check", w), "check", cls.CHECKS),
            samplings=samplings, treatments=treatments, splits=splits, stats=stats,
            source=_optional(doc, "source", w, parse_str),
            convert_options=_optional(doc, "convert_options", w, parse_scalars),
            format_version=version,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT_NAME, "format_version": self.format_version, "layout": self.layout,
            "jdct_version": self.jdct_version, "libjpeg_version": self.libjpeg_version,
            "classes": list(self.classes), "chunk_samples": self.chunk_samples,
            "shard_samples": self.shard_samples, "codec": self.codec.to_dict(), "seed": self.seed,
            "max_side": self.max_side, "restart_segments": self.restart_segments, "reencode": dict(self.reencode),
            "exif": self.exif, "check": self.check, "samplings": list(self.samplings),
            "treatments": list(self.treatments),
        }
        _put(out, "source", self.source)
        _put(out, "convert_options", None if self.convert_options is None else dict(self.convert_options))
        out["splits"] = {name: sp.to_dict() for name, sp in self.splits.items()}
        _put(out, "stats", None if self.stats is None else self.stats.to_dict())
        return out

    @property
    def array_layout(self) -> ImagesLayout:
        """The arrays of every split (names, dtypes, shapes, chunking, codecs)."""
        return ImagesLayout(self.chunk_samples, self.shard_samples, self.codec)

    def split(self, name: str) -> ImagesSplitMeta:
        """The split ``name``; StoreError listing the store's splits when it has no such split."""
        try:
            return self.splits[name]
        except KeyError:
            raise StoreError(f"no split {name!r} in this store (it has: {', '.join(self.splits) or 'none'})") \
                from None


def _check_version(value: Mapping) -> int:
    """The ``format_version`` of a jdct store's attrs (format checked), or StoreVersionError."""
    version = value.get("format_version")
    if version not in SUPPORTED_VERSIONS or type(version) is not int:
        raise StoreVersionError(f"store format version {version!r} is not supported by this jdct "
                                f"(reads {list(SUPPORTED_VERSIONS)})")
    return version


def parse_metadata(value: Any) -> "StoreMeta | ImagesMeta":
    """Validate and type attrs["jdct"] of either layout: :class:`StoreMeta` (crops, format 1) or
    :class:`ImagesMeta` (images, format 2). Same errors as :meth:`StoreMeta.parse`."""
    if not isinstance(value, Mapping):
        raise StoreError(f"not a jdct store (attrs['jdct'] is {_show(value)}, not an object)")
    if value.get("format") != FORMAT_NAME:
        raise StoreError(f"not a jdct store (format {value.get('format')!r})")
    if _check_version(value) == IMAGES_FORMAT_VERSION:
        if value.get("layout", "crops") == "crops":
            # a crops store claiming a version this jdct never wrote for crops
            raise StoreVersionError(f"store format version {IMAGES_FORMAT_VERSION} is the images layout's, but this "
                                    "store is a crops store: not a store this jdct reads")
        return ImagesMeta.parse(value)
    return StoreMeta.parse(value)


def parse_group_json(data: bytes | str) -> tuple[Optional["StoreMeta | ImagesMeta"], dict]:
    """Parse a root group's ``zarr.json``: ``(StoreMeta or ImagesMeta, or None when attrs["jdct"]
    is absent; the attrs["jdct"] document as stored or {})``. StoreError when it is not a Zarr v3
    group."""
    try:
        group = json.loads(data)
    except ValueError as exc:
        raise StoreError(f"unreadable zarr.json ({exc})") from None
    if not isinstance(group, dict) or group.get("node_type") != "group":
        raise StoreError("not a Zarr v3 group")
    attrs = group.get("attributes") or {}
    if not isinstance(attrs, dict) or attrs.get(ATTRS_KEY) is None:
        return None, {}
    doc = attrs[ATTRS_KEY]
    return parse_metadata(doc), doc


# ------------------------------------------------------------------------------------------------
# The progress folder of a running conversion
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Software:
    """jdct's and libjpeg-turbo's versions (a conversion resumes only with the ones that began it)."""

    jdct: str
    libjpeg: str

    @classmethod
    def parse(cls, value: Any, where: str = "software") -> "Software":
        doc = parse_object(value, where)
        return cls(*(parse_str(get(doc, k, where), _key(where, k)) for k in ("jdct", "libjpeg")))

    def to_dict(self) -> dict[str, str]:
        return {"jdct": self.jdct, "libjpeg": self.libjpeg}


@dataclass(frozen=True)
class PlanSplit:
    """One split of a plan: the files listed (``discovered``, with their labels), those planned for
    conversion (``files``/``labels``, image index = position), the plan-stage failures, ``views``,
    and ``skipped`` (paths the listing left out; they are among the failures)."""

    discovered: tuple[str, ...]
    discovered_labels: tuple[int, ...]
    files: tuple[str, ...]
    labels: tuple[int, ...]
    views: int
    failures: tuple[Failure, ...]
    skipped: int = 0

    @classmethod
    def parse(cls, value: Any, where: str, num_classes: int) -> "PlanSplit":
        doc = parse_object(value, where)
        top = max(num_classes - 1, 0)
        split = cls(
            discovered=parse_str_items(get(doc, "discovered", where), _key(where, "discovered")),
            discovered_labels=parse_int_items(get(doc, "discovered_labels", where),
                                              _key(where, "discovered_labels"), 0, top),
            files=parse_str_items(get(doc, "files", where), _key(where, "files")),
            labels=parse_int_items(get(doc, "labels", where), _key(where, "labels"), 0, top),
            views=parse_int(get(doc, "views", where), _key(where, "views"), 1),
            failures=_parse_failures(get(doc, "failures", where), _key(where, "failures")),
            skipped=parse_int(doc.get("skipped", 0), _key(where, "skipped"), 0),
        )
        for a, b in (("files", "labels"), ("discovered", "discovered_labels")):
            if len(getattr(split, a)) != len(getattr(split, b)):
                raise StoreMetadataError(f"{_key(where, b)}: {len(getattr(split, b))} labels for "
                                         f"{len(getattr(split, a))} files", field=_key(where, b))
        return split

    def to_dict(self) -> dict[str, Any]:
        out = {"discovered": list(self.discovered), "discovered_labels": list(self.discovered_labels),
               "files": list(self.files), "labels": list(self.labels), "views": self.views,
               "failures": [f.to_dict() for f in self.failures]}
        if self.skipped:
            out["skipped"] = self.skipped
        return out


@dataclass(frozen=True)
class Plan:
    """``.jdct-progress/plan.json``: what a conversion will write, saved before its first shard.

    ``options``: the conversion options (JSON scalars, compared on resume); ``software``; ``root``:
    SRC (absolute); ``classes``; ``quant``: the tables of the coefficients; ``splits``.
    """

    options: dict
    software: Software
    root: str
    classes: tuple[str, ...]
    quant: QuantTables
    splits: dict[str, PlanSplit]

    @classmethod
    def parse(cls, value: Any) -> "Plan":
        doc, w = parse_object(value, ""), ""
        options = parse_scalars(get(doc, "options", w), "options")
        for key in ("size", "chunk_samples", "shard_samples"):
            parse_int(get(options, key, "options"), f"options.{key}", 1)
        classes = parse_str_items(get(doc, "classes", w), "classes")
        splits_doc = parse_object(get(doc, "splits", w), "splits")
        if not splits_doc:
            raise _bad("splits", "at least one split", {})
        return cls(options=options, software=Software.parse(get(doc, "software", w)),
                   root=parse_str(get(doc, "root", w), "root"), classes=classes,
                   quant=QuantTables.parse_pair(get(doc, "quant", w), "quant"),
                   splits={name: PlanSplit.parse(sp, f"splits.{name}", len(classes))
                           for name, sp in splits_doc.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"options": dict(self.options), "software": self.software.to_dict(), "root": self.root,
                "classes": list(self.classes), "quant": [list(self.quant.luma), list(self.quant.chroma)],
                "splits": {name: sp.to_dict() for name, sp in self.splits.items()}}

    @property
    def chunk_samples(self) -> int:
        return self.options["chunk_samples"]

    @property
    def shard_samples(self) -> int:
        return self.options["shard_samples"]

    @property
    def layout(self) -> "CropsLayout | ImagesLayout":
        """The arrays the conversion writes."""
        return layout_from_options(self.options)

    @property
    def stats_split(self) -> str:
        """The split whose coefficients the statistics cover: train when present, else the first."""
        return "train" if "train" in self.splits else next(iter(self.splits))

    def shards(self) -> list[tuple[str, int, int, int, int]]:
        """Every shard to write, in order: ``(split, view, shard, start, stop)``."""
        return [(name, view, k, s0, s1) for name, sp in self.splits.items() for view in range(sp.views)
                for k, (s0, s1) in enumerate(shard_ranges(len(sp.files), self.shard_samples))]


def layout_from_options(options: Mapping[str, Any]) -> "CropsLayout | ImagesLayout":
    """The array layout a conversion's options make (``layout``, ``codec``, ``size``, chunking);
    options saved before the images layout and the codec choice mean crops and zstd."""
    codec = Codec.named(parse_choice(options.get("codec", "zstd"), "options.codec", tuple(Codec.NAMED)))
    layout = parse_choice(options.get("layout", "crops"), "options.layout", tuple(LAYOUTS))
    if layout == "images":
        return ImagesLayout(options["chunk_samples"], options["shard_samples"], codec)
    return CropsLayout(options["size"], options["chunk_samples"], options["shard_samples"], codec)


def marker_name(split: str, view: int, shard: int) -> str:
    """File name of the completion marker of one shard, inside the progress folder."""
    return f"{split}-v{view}-s{shard}.json"


@dataclass(frozen=True)
class ShardMarker:
    """A finished shard (written atomically after the shard): samples ``start``..``stop`` of
    ``view`` of ``split``; ``converted`` images and the convert-stage ``failures``; for the
    statistics, ``sums`` / ``sumsq`` (3 x 64 float sums of the dequantized coefficients and their
    squares, planes y, cb, cr) over ``blocks`` (3 counts of 8x8 blocks). Images layout only:
    ``treatments`` (files per code of :data:`TREATMENTS`), ``stored_bytes`` (of the JPEGs written),
    ``source_bytes`` (of their sources) and ``stats_images`` (images whose crops the statistics
    cover)."""

    split: str
    view: int
    shard: int
    start: int
    stop: int
    converted: int
    failures: tuple[Failure, ...]
    sums: tuple[tuple[float, ...], ...]
    sumsq: tuple[tuple[float, ...], ...]
    blocks: tuple[int, int, int]
    treatments: tuple[int, ...] = ()
    stored_bytes: int = 0
    source_bytes: int = 0
    stats_images: int = 0

    @classmethod
    def parse(cls, value: Any) -> "ShardMarker":
        doc, w = parse_object(value, ""), ""
        planes = lambda key: tuple(parse_number_items(row, f"{key}[{i}]", 64)  # noqa: E731
                                   for i, row in enumerate(parse_list(get(doc, key, w), key, 3)))
        marker = cls(split=parse_str(get(doc, "split", w), "split"),
                     view=parse_int(get(doc, "view", w), "view", 0),
                     shard=parse_int(get(doc, "shard", w), "shard", 0),
                     start=parse_int(get(doc, "start", w), "start", 0),
                     stop=parse_int(get(doc, "stop", w), "stop", 0),
                     converted=parse_int(get(doc, "converted", w), "converted", 0),
                     failures=_parse_failures(get(doc, "failures", w), "failures"),
                     sums=planes("sums"), sumsq=planes("sumsq"),
                     blocks=parse_int_items(get(doc, "blocks", w), "blocks", 0, length=3),
                     treatments=parse_int_items(doc.get("treatments", []), "treatments", 0),
                     stored_bytes=parse_int(doc.get("stored_bytes", 0), "stored_bytes", 0),
                     source_bytes=parse_int(doc.get("source_bytes", 0), "source_bytes", 0),
                     stats_images=parse_int(doc.get("stats_images", 0), "stats_images", 0))
        if marker.stop < marker.start:
            raise _bad("stop", f"at least start ({marker.start})", marker.stop)
        return marker

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "view": self.view, "shard": self.shard, "start": self.start,
                "stop": self.stop, "converted": self.converted, "failures": [f.to_dict() for f in self.failures],
                "sums": [list(r) for r in self.sums], "sumsq": [list(r) for r in self.sumsq],
                "blocks": list(self.blocks),
                **({"treatments": list(self.treatments), "stored_bytes": self.stored_bytes,
                    "source_bytes": self.source_bytes, "stats_images": self.stats_images} if self.treatments else {})}

    @property
    def name(self) -> str:
        return marker_name(self.split, self.view, self.shard)
