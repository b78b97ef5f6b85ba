"""Opening a store: its metadata (without importing zarr), its arrays, its size on disk."""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import IncompleteStoreError, JdctError, SourceNotFoundError, StoreError
from ..jpeg import sniff_format
from ..sources import is_image_name
from .format import PROGRESS_DIR, CropsLayout, ImagesLayout, ImagesMeta, ImagesSplitMeta, SplitMeta, StoreMeta, \
    parse_group_json

#: How many entries of a folder without zarr.json are looked at to recognise a folder of images.
_SCAN_ENTRIES = 2000


@contextlib.contextmanager
def quiet_zarr():
    """Silence zarr's warning that the ``variable_length_bytes`` data type (the ``jpeg`` array of an
    images store) has no Zarr v3 specification: the store format pins its representation itself
    (:class:`~.format.ImagesLayout`), so the warning says nothing to jdct's users."""
    with warnings.catch_warnings():
        try:
            from zarr.errors import UnstableSpecificationWarning
        except ImportError:  # a zarr without the warning
            yield
            return
        warnings.simplefilter("ignore", UnstableSpecificationWarning)
        yield


@dataclass(frozen=True)
class StoreInfo:
    """A complete store: where it lives, its typed metadata (:class:`StoreMeta` for a crops store,
    :class:`ImagesMeta` for an images store), and attrs["jdct"] as stored."""

    path: Path
    metadata: "StoreMeta | ImagesMeta"
    meta: dict[str, Any]

    @property
    def format_version(self) -> int:
        return self.metadata.format_version

    @property
    def layout_name(self) -> str:
        """"crops" or "images"."""
        return self.metadata.layout

    @property
    def size(self) -> int:
        """Crop side in pixels (a multiple of 16) of a crops store; an images store has none (the
        loader chooses the crop size): StoreError."""
        if isinstance(self.metadata, ImagesMeta):
            raise StoreError("this is an images-layout store: it holds whole JPEGs, not crops of a fixed size "
                             "(a loader reading the images layout chooses the crop size)", self.path)
        return self.metadata.size

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.classes)

    @property
    def splits(self) -> list[str]:
        return list(self.metadata.splits)

    @property
    def layout(self) -> "CropsLayout | ImagesLayout":
        return self.metadata.array_layout

    def split(self, name: str) -> "SplitMeta | ImagesSplitMeta":
        """The split ``name``; StoreError naming the store and its splits when it has no such split."""
        try:
            return self.metadata.split(name)
        except StoreError as exc:
            raise exc.with_path(self.path) from None


def read_metadata(path: os.PathLike | str) -> StoreInfo:
    """Read and validate attrs["jdct"] of the store at ``path`` (zarr is not imported); either layout.

    Raises SourceNotFoundError (no such path), StoreError (not a jdct store: a JPEG file, a folder
    of images, not a Zarr v3 group...), IncompleteStoreError (group present but attrs["jdct"]
    missing: interrupted conversion), StoreVersionError (a format version this jdct does not
    read) and StoreMetadataError (a field is missing or invalid; the error names it).
    """
    path = Path(path)
    if not path.exists():
        raise SourceNotFoundError("no such store", path)
    if not path.is_dir():
        raise StoreError(_not_a_store_file(path), path)
    zarr_json = path / "zarr.json"
    if not zarr_json.is_file():
        raise StoreError(_not_a_store_folder(path), path)
    try:
        data = zarr_json.read_bytes()
    except OSError as exc:
        raise StoreError(f"unreadable zarr.json ({exc.strerror or exc})", path) from None
    try:
        meta, doc = parse_group_json(data)
    except JdctError as exc:
        raise exc.with_path(path) from None
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
    return StoreInfo(path=path, metadata=meta, meta=doc)


def _not_a_store_file(path: Path) -> str:
    if path.name == "zarr.json":
        return f"give the store folder ({path.parent}), not its zarr.json"
    try:
        with open(path, "rb") as fh:
            kind = sniff_format(fh.read(1024))
    except OSError:
        kind = None
    if kind == "JPEG":
        return "this is a JPEG file, not a jdct store: run `jdct convert` first (on a folder of JPEGs)"
    what = f"a {kind} file" if kind not in (None, "text", "empty") else "a file"
    return f"not a jdct store: this is {what} (a store is a folder made by `jdct convert`)"


def _not_a_store_folder(path: Path) -> str:
    if _holds_images(path):
        return (f"this is a folder of JPEGs, not a jdct store: run `jdct convert {path} OUT.zarr` first, "
                "then use OUT.zarr")
    return "not a Zarr v3 store (no zarr.json): not a jdct store"


def _holds_images(folder: Path) -> bool:
    """True when an image file lies within three levels of ``folder`` (SRC/train/<class>/x.jpg),
    looking at no more than a few thousand entries."""
    seen = 0
    level = [folder]
    for _ in range(3):
        below = []
        for d in level:
            try:
                with os.scandir(d) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > _SCAN_ENTRIES:
                            return False
                        if entry.name.startswith("."):
                            continue
                        if entry.is_dir():
                            below.append(Path(entry.path))
                        elif is_image_name(entry.name):
                            return True
            except OSError:
                continue
        level = below
    return False


def open_group(path: os.PathLike | str, mode: str = "r"):
    """The store's root zarr group; StoreError when zarr cannot open it."""
    import zarr

    try:
        with quiet_zarr():
            return zarr.open_group(os.fspath(path), mode=mode, zarr_format=3)
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for a broken hierarchy
        raise StoreError(f"cannot open as a Zarr group ({exc})", path) from None


def array_problem(layout: "CropsLayout | ImagesLayout", split: "SplitMeta | ImagesSplitMeta", name: str,
                  arr) -> Optional[str]:
    """:meth:`CropsLayout.array_problem` (or the images layout's) of the zarr array ``arr`` of ``split``."""
    return layout.array_problem(name, split.views, split.num_samples, arr.shape, str(arr.dtype), arr.chunks,
                                getattr(arr, "shards", None))


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
