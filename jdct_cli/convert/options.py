"""The options of a conversion: everything that determines a store's content."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..jpegmath.sample import FDCT_METHODS
from ..errors import ConfigError
from ..jpeg import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS
from ..store import DEFAULT_CHUNK_SAMPLES, DEFAULT_SHARD_SAMPLES, Codec, CropsLayout, ImagesLayout, \
    layout_from_options
from ..transforms import SampleRecipe

#: Largest --size: 16x a 224 crop, far beyond what a DCT network takes.
MAX_SIZE = 4096
#: Largest shard a worker builds in memory (bytes of its coefficient arrays): 154 MB by default.
MAX_SHARD_BYTES = 4 << 30

#: The store layouts ``--layout`` offers.
LAYOUT_NAMES = ("crops", "images")
#: What ``--check`` offers for the images layout.
CHECKS = ("markers", "decode")
#: Default ``--codec`` (benchmarks/RESULTS.md, "Chunk codec"): lz4 decodes the crops layout's
#: coefficients 2.3-2.5x faster than zstd-1, which makes the loader 1.2-1.3x faster per core, for
#: 1.34-1.5x the bytes. (The images layout's fixed-size arrays are a few bytes per image and its
#: JPEGs are not compressed: the codec hardly matters there.)
DEFAULT_CODEC = "lz4"
#: Default ``--max-side`` of the images layout (benchmarks/RESULTS.md: "Choosing --max-side").
DEFAULT_MAX_SIDE = 2048
#: Default number of train images whose crops give an images store its statistics.
DEFAULT_STATS_IMAGES = 256

#: The command-line flag of each option (library-only options have none).
FLAGS = {"size": "--size", "quality": "--quality", "views": "--views", "seed": "--seed", "exif": "--exif",
         "exact_decode": "--exact-decode", "chunk_samples": "--chunk-samples", "shard_samples": "--shard-samples",
         "layout": "--layout", "codec": "--codec", "max_side": "--max-side", "restart_segments": "--restart-segments",
         "check": "--check", "stats_images": "--stats-images"}

#: The value an option had before it existed: options saved by an earlier jdct (a store's
#: ``convert_options``) lack it, and meant this.
LEGACY = {"layout": "crops", "codec": "zstd", "max_side": 0, "restart_segments": False, "check": "markers",
          "stats_images": 0}


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that determines a store's content (compared on resume). Sizes in pixels/samples.

    ``size``, ``quality``, ``exif``, ``exact_decode``, ``max_pixels`` and ``fdct`` make the sample
    recipe (:meth:`recipe`); ``views`` augmented passes over train; ``seed`` of every draw;
    ``chunk_samples`` / ``shard_samples`` the store's chunking; ``max_file_bytes`` the largest
    source file read; ``layout`` "crops" (fixed crops as coefficients) or "images" (each image
    once as a JPEG); ``codec`` "zstd" or "lz4" (:meth:`jdct_cli.store.Codec.named`: the Blosc codec
    of every fixed-size array).

    Images layout only: ``max_side`` (longest side of a stored image, pixels; larger images are
    re-encoded, 0: no limit), ``restart_segments`` (transcode every file with restart markers so
    that the loader decodes only a crop's segments), ``check`` ("markers": each stored file's
    marker structure is checked to EOI; "decode": every coefficient is decoded, strictly),
    ``stats_images`` (train images whose recipe crop, at ``size`` and ``quality``, give the
    statistics; 0: none). ``size`` and ``quality`` there only describe those crops: the loader
    chooses both.
    """

    size: int = 224
    quality: int = 100
    views: int = 1
    seed: int = 0
    exif: str = "ignore"
    exact_decode: bool = False
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES
    shard_samples: int = DEFAULT_SHARD_SAMPLES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    fdct: str = "fdct"
    layout: str = "crops"
    codec: str = DEFAULT_CODEC
    max_side: int = DEFAULT_MAX_SIDE
    restart_segments: bool = False
    check: str = "markers"
    stats_images: int = DEFAULT_STATS_IMAGES

    def validate(self) -> None:
        """ConfigError (naming the flag) for an option out of its range."""
        if self.size < 16 or self.size % 16:
            raise ConfigError(f"--size must be a positive multiple of 16 (4:2:0 blocks), got {self.size}")
        if self.size > MAX_SIZE:
            raise ConfigError(f"--size must be at most {MAX_SIZE}, got {self.size}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1..100, got {self.quality}")
        if self.views < 1:
            raise ConfigError(f"--views must be >= 1, got {self.views}")
        if self.exif not in ("ignore", "apply"):
            raise ConfigError(f"--exif must be 'ignore' or 'apply', got {self.exif!r}")
        if self.chunk_samples < 1 or self.shard_samples < 1 or self.shard_samples % self.chunk_samples:
            raise ConfigError(
                f"--shard-samples ({self.shard_samples}) must be a positive multiple of --chunk-samples "
                f"({self.chunk_samples})"
            )
        # A task holds its whole shard in memory (coefficients: 3 bytes per pixel of int16).
        shard_bytes = self.shard_samples * 3 * self.size * self.size
        if self.layout == "crops" and shard_bytes > MAX_SHARD_BYTES:
            raise ConfigError(
                f"one shard of {self.shard_samples} samples at --size {self.size} needs "
                f"{shard_bytes / 2**30:.1f} GiB of memory per worker (at most {MAX_SHARD_BYTES >> 30} GiB): "
                "lower --shard-samples")
        if self.fdct not in FDCT_METHODS:
            raise ConfigError(f"unknown DCT method {self.fdct!r} (one of {', '.join(FDCT_METHODS)})")
        if self.max_file_bytes < 1 or self.max_pixels < 1:
            raise ConfigError("max_file_bytes and max_pixels must be positive")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be 0..2**63-1, got {self.seed}")
        if self.layout not in LAYOUT_NAMES:
            raise ConfigError(f"--layout must be one of {', '.join(LAYOUT_NAMES)}, got {self.layout!r}")
        if self.codec not in Codec.NAMED:
            raise ConfigError(f"--codec must be one of {', '.join(Codec.NAMED)}, got {self.codec!r}")
        if self.check not in CHECKS:
            raise ConfigError(f"--check must be one of {', '.join(CHECKS)}, got {self.check!r}")
        if self.max_side != 0 and not 16 <= self.max_side <= 65500:
            raise ConfigError(f"--max-side must be 0 (no limit) or 16..65500 pixels, got {self.max_side}")
        if self.stats_images < 0:
            raise ConfigError(f"--stats-images must be >= 0, got {self.stats_images}")
        if self.layout == "images" and self.views != 1:
            raise ConfigError("--views is for the crops layout: an images store keeps each image once and the "
                              "loader draws a fresh crop of it every epoch")

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON scalars (a plan's ``options``, a store's ``convert_options``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "ConvertOptions":
        """The options saved by :meth:`to_dict` (by this jdct or an earlier one: an option it did
        not have takes its :data:`LEGACY` value); ConfigError for an unknown option or a value of
        another type than the option's."""
        defaults = {f.name: f.default for f in fields(cls)}
        for key, value in doc.items():
            if key not in defaults:
                raise ConfigError(f"unknown conversion option {key!r}")
            if type(value) is not type(defaults[key]):
                raise ConfigError(f"conversion option {key!r} is {value!r}, not a {type(defaults[key]).__name__}")
        return cls(**{**{k: v for k, v in LEGACY.items() if k not in doc}, **doc})

    @classmethod
    def normalized(cls, doc: Mapping[str, Any]) -> dict[str, Any]:
        """``doc`` (saved options) with the options it lacks at their :data:`LEGACY` values: what
        to compare with :meth:`to_dict` of the options of this run."""
        return {**{k: v for k, v in LEGACY.items() if k not in doc}, **doc}

    def recipe(self) -> SampleRecipe:
        """The sample recipe of these options (what :func:`jdct_cli.transforms.convert_image` takes)."""
        return SampleRecipe(size=self.size, quality=self.quality, exif=self.exif, exact_decode=self.exact_decode,
                            max_pixels=self.max_pixels, fdct=self.fdct)

    def array_layout(self) -> "CropsLayout | ImagesLayout":
        """The store's array layout for these options."""
        return layout_from_options(self.to_dict())


def option_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """The options whose values differ, as ``"--size 32 there, 64 now; --views 2 there, 1 now"``
    (flags where the option has one), in the options' order."""
    out = []
    for key in list(wanted) + [k for k in saved if k not in wanted]:
        if saved.get(key) != wanted.get(key):
            out.append(f"{FLAGS.get(key, key)} {_value(saved.get(key))} there, {_value(wanted.get(key))} now")
    return "; ".join(out)


def _value(v: Any) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)
