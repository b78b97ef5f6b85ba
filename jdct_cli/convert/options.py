"""The options of a conversion: everything that determines a store's content."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..jpegmath.sample import FDCT_METHODS
from ..errors import ConfigError
from ..jpeg import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS
from ..store import DEFAULT_CHUNK_SAMPLES, DEFAULT_SHARD_SAMPLES, CropsLayout
from ..transforms import SampleRecipe

#: Largest --size: 16x a 224 crop, far beyond what a DCT network takes.
MAX_SIZE = 4096
#: Largest shard a worker builds in memory (bytes of its coefficient arrays): 154 MB by default.
MAX_SHARD_BYTES = 4 << 30

#: The command-line flag of each option (library-only options have none).
FLAGS = {"size": "--size", "quality": "--quality", "views": "--views", "seed": "--seed", "exif": "--exif",
         "exact_decode": "--exact-decode", "chunk_samples": "--chunk-samples", "shard_samples": "--shard-samples"}


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that determines a store's content (compared on resume). Sizes in pixels/samples.

    ``size``, ``quality``, ``exif``, ``exact_decode``, ``max_pixels`` and ``fdct`` make the sample
    recipe (:meth:`recipe`); ``views`` augmented passes over train; ``seed`` of every draw;
    ``chunk_samples`` / ``shard_samples`` the store's chunking; ``max_file_bytes`` the largest
    source file read.
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
        if shard_bytes > MAX_SHARD_BYTES:
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

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON scalars (a plan's ``options``, a store's ``convert_options``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "ConvertOptions":
        """The options saved by :meth:`to_dict`; ConfigError for an unknown option or a value of
        another type than the option's."""
        defaults = {f.name: f.default for f in fields(cls)}
        for key, value in doc.items():
            if key not in defaults:
                raise ConfigError(f"unknown conversion option {key!r}")
            if type(value) is not type(defaults[key]):
                raise ConfigError(f"conversion option {key!r} is {value!r}, not a {type(defaults[key]).__name__}")
        return cls(**doc)

    def recipe(self) -> SampleRecipe:
        """The sample recipe of these options (what :func:`jdct_cli.transforms.convert_image` takes)."""
        return SampleRecipe(size=self.size, quality=self.quality, exif=self.exif, exact_decode=self.exact_decode,
                            max_pixels=self.max_pixels, fdct=self.fdct)

    def layout(self) -> CropsLayout:
        """The store's array layout for these options."""
        return CropsLayout(self.size, self.chunk_samples, self.shard_samples)


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
