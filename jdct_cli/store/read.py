"""Opening a store: its metadata (without importing zarr for a local store), its arrays, its size.

A store is a local folder or an object-store URL (:mod:`.location`); every function here takes
either (a path, a URL string or a :class:`~.location.StoreLocation`).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import IncompleteStoreError, JdctError, SourceNotFoundError, StorageError, StoreError
from ..jpeg import sniff_format
from ..sources import is_image_name
from .format import LOCK_OBJECT, PROGRESS_DIR, CropsLayout, ImagesLayout, ImagesMeta, ImagesSplitMeta, SplitMeta, \
    StoreMeta, parse_group_json
from .location import StoreLocation, as_location, storage_error

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
    """A complete store: where it lives (``path``: a local folder's Path, or the URL of an object
    store; ``location``: the :class:`~.location.StoreLocation` to open it with), its typed metadata
    (:class:`StoreMeta` for a crops store, :class:`ImagesMeta` for an images store), attrs["jdct"]
    as stored, and ``zarr_json``: the root zarr.json's bytes."""

    path: Union[Path, str]
    metadata: "StoreMeta | ImagesMeta"
    meta: dict[str, Any]
    location: Optional[StoreLocation] = None
    zarr_json: bytes = b""

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


def read_metadata(path: "os.PathLike | str | StoreLocation") -> StoreInfo:
    """Read and validate attrs["jdct"] of the store at ``path`` (a local store: zarr is not
    imported); either layout.

    Raises SourceNotFoundError (no such path, or no store at that URL), StoreError (not a jdct
    store: a JPEG file, a folder of images, not a Zarr v3 group...), IncompleteStoreError (group
    present but attrs["jdct"] missing: interrupted conversion), StoreVersionError (a format version
    this jdct does not read), StoreMetadataError (a field is missing or invalid; the error names it)
    and, on an object store, StorageError (missing bucket, credentials, access, endpoint).
    """
    loc = as_location(path)
    if not loc.is_local:
        return _read_remote_metadata(loc)
    path = loc.path
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
    return _parsed(loc, path, data, lambda: (path / PROGRESS_DIR).is_dir())


def _parsed(loc: StoreLocation, where, data: bytes, has_progress) -> StoreInfo:
    try:
        meta, doc = parse_group_json(data)
    except JdctError as exc:
        raise exc.with_path(where) from None
    if meta is None:
        if not has_progress():
            # jdct convert makes its progress folder before zarr.json: without it nothing can resume
            raise IncompleteStoreError(
                "store is incomplete: a Zarr group without jdct metadata (attrs['jdct']) and without an "
                f"interrupted conversion to resume ({PROGRESS_DIR} absent): not a jdct store, or convert "
                "it again with --overwrite",
                where,
            )
        raise IncompleteStoreError(
            "store is incomplete: its metadata (attrs['jdct']) was never written, so its conversion "
            "did not finish; run the same `jdct convert` again to resume it",
            where,
        )
    return StoreInfo(path=where, metadata=meta, meta=doc, location=loc, zarr_json=data)


def _read_remote_metadata(loc: StoreLocation) -> StoreInfo:
    """:func:`read_metadata` of an object-store URL: one GET of zarr.json; when it is absent, one
    listing tells a missing bucket, an empty place, an interrupted conversion and other files apart."""
    objects = loc.objects()
    data = objects.get("zarr.json")
    if data is None:
        found = objects.first_keys("", 2)  # a missing bucket fails here, as BucketNotFoundError
        if not found:
            raise SourceNotFoundError("no such store (nothing is stored under this URL)", loc.url)
        if found == [LOCK_OBJECT] or objects.first_keys(PROGRESS_DIR, 1):
            raise IncompleteStoreError("store is incomplete: its conversion did not get as far as creating the "
                                       "Zarr group; run the same `jdct convert` again to resume it", loc.url)
        raise StoreError("not a Zarr v3 store (no zarr.json under this URL): not a jdct store", loc.url)
    return _parsed(loc, loc.url, data, lambda: bool(objects.first_keys(PROGRESS_DIR, 1)))


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


def open_group(path: "os.PathLike | str | StoreLocation", mode: str = "r"):
    """The store's root zarr group; StoreError when zarr cannot open it (StorageError when the
    object store fails)."""
    import zarr

    loc = as_location(path)
    try:
        with quiet_zarr():
            return zarr.open_group(loc.zarr_target(read_only=mode == "r"), mode=mode, zarr_format=3)
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for a broken hierarchy
        mapped = storage_error(exc, loc)
        if mapped is not None:
            raise mapped from None
        raise StoreError(f"cannot open as a Zarr group ({exc})", str(loc)) from None


def array_problem(layout: "CropsLayout | ImagesLayout", split: "SplitMeta | ImagesSplitMeta", name: str,
                  arr) -> Optional[str]:
    """:meth:`CropsLayout.array_problem` (or the images layout's) of the zarr array ``arr`` of ``split``."""
    return layout.array_problem(name, split.views, split.num_samples, arr.shape, str(arr.dtype), arr.chunks,
                                getattr(arr, "shards", None))


def dir_bytes(path: "os.PathLike | str | StoreLocation", sub: str = "") -> int:
    """Bytes stored under ``path`` (a store; ``sub``: one of its folders, e.g. ``"train/y"``),
    skipping the conversion's ``PROGRESS_DIR`` bookkeeping; files that vanish meanwhile count 0."""
    loc = as_location(path)
    if not loc.is_local:
        return loc.objects().total_bytes(sub, skip=(PROGRESS_DIR + "/", LOCK_OBJECT))
    total = 0
    for dirpath, dirnames, filenames in os.walk(loc.path / sub if sub else loc.path):
        dirnames[:] = [d for d in dirnames if d != PROGRESS_DIR]
        for name in filenames:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total
