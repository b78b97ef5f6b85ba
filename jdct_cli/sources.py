"""Finding the images of a conversion source: splits, classes, file lists and labels.

Layouts understood (torchvision's ImageFolder conventions):

- ``SRC/train/<class>/...`` and/or ``SRC/val/<class>/...``: each present split folder is a split;
- ``SRC/<class>/...``: class folders directly, one split named ``train``;
- a flat split folder (``SRC/val/*.JPEG`` like ImageNet's original validation set, or ``SRC/*.jpg``)
  whose files are mapped to classes by ``--labels FILE`` (``filename,class`` lines).

Classes are the sorted union of every split's class-folder names and of the classes named in the
labels file, so label ``i`` means the same class in every split. Files are listed recursively,
sorted by class then by relative path, as torchvision does. Paths are kept relative to SRC with
``/`` separators.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import SourceError, SourceNotFoundError

#: File name extensions treated as images (lower-cased). Non-JPEG images among them are listed and
#: then recorded as failures ("not a JPEG (PNG)") rather than silently ignored.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".mpo"}
)
#: Fixed split identifiers (they enter the random seeds, so they must never change).
SPLIT_IDS = {"train": 0, "val": 1}


@dataclass
class SplitSource:
    """One split: ``files`` relative to SRC (str, ``/``-separated) and their int ``labels``."""

    name: str
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


@dataclass
class Source:
    """What a source tree holds: ``root``, sorted ``classes`` and the splits in order (train first).

    ``skipped``: ``{"file": path relative to root, "reason": ...}`` for each path left out of the
    listing (symlink loops, FIFOs/sockets/devices named like images).
    """

    root: Path
    classes: list[str]
    splits: dict[str, SplitSource]
    skipped: list[dict] = field(default_factory=list)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(folder: Path, skipped: Optional[list] = None, root: Optional[Path] = None) -> list[Path]:
    """Image files under ``folder`` (recursively, following symlinks), sorted by relative path.

    Symlinked folders are followed except where following could list an image twice or forever:
    a link to a folder inside ``root`` (the source, listed under its own name anyway), and a
    folder reached a second time (a loop, or a link to a folder above ``folder``). Entries that are
    neither regular files nor dangling links (FIFOs, sockets, devices) are left out too: opening a
    FIFO would block forever. Each left-out path is appended to ``skipped`` as ``(path, reason)``.
    A dangling link stays listed: reading it fails, and that failure is recorded then.
    """
    found = []
    root_real = os.path.realpath(root if root is not None else folder)
    seen: set[tuple[int, int]] = set()
    for parent in Path(os.path.realpath(folder)).parents:
        try:
            info = os.stat(parent)
        except OSError:
            continue
        seen.add((info.st_dev, info.st_ino))

    def skip(path, why):
        if skipped is not None:
            skipped.append((Path(path), why))

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            info = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            dirnames[:] = []
            skip(dirpath, "folder reached twice through symlinks (a loop): skipped")
            continue
        seen.add((info.st_dev, info.st_ino))
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                real = os.path.realpath(full)
                if real == root_real or real.startswith(root_real + os.sep):
                    skip(full, "symlink to a folder inside the source (listed under its own name): skipped")
                    continue
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith(".") or not is_image_name(name):
                continue
            path = Path(dirpath) / name
            try:
                mode = os.stat(path).st_mode
            except OSError:
                mode = None  # dangling link or vanished: listed, its read failure is recorded
            if mode is not None and not stat.S_ISREG(mode):
                skip(path, "not a regular file (FIFO, socket or device): skipped")
                continue
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _direct_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_name(p.name))


def read_labels_file(path: os.PathLike | str) -> dict[str, str]:
    """Parse ``filename,class`` lines (blank lines and ``#`` comments ignored) into {filename: class}.

    ``filename`` may be a bare name or a path relative to the flat folder. Raises SourceNotFoundError
    / SourceError naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError("no such labels file", path)
    mapping: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"unreadable labels file ({exc})", path) from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise SourceError(f"line {lineno}: expected 'filename,class', got {line!r}", path)
        name = parts[0].replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/") or (len(name) > 1 and name[1] == ":"):
            # entries only name files inside the flat folder; a path leaving it is refused
            raise SourceError(f"line {lineno}: {parts[0]!r} points outside the source folder", path)
        if parts[0] in mapping and mapping[parts[0]] != parts[1]:
            raise SourceError(f"line {lineno}: {parts[0]!r} is given two classes", path)
        mapping[parts[0]] = parts[1]
    if not mapping:
        raise SourceError("labels file has no 'filename,class' lines", path)
    return mapping


def discover(src: os.PathLike | str, labels_file: Optional[os.PathLike | str] = None) -> Source:
    """List the splits, classes and image files of ``src`` (see the module docstring for layouts).

    Raises SourceNotFoundError when ``src`` is missing and SourceError when it holds no images, or
    a flat folder has no ``labels_file``, or a flat file has no entry in it.
    """
    root = Path(src)
    if not root.exists():
        raise SourceNotFoundError("no such source folder", root)
    if not root.is_dir():
        raise SourceError("the conversion source must be a folder (an ImageFolder root)", root)
    labels_map = read_labels_file(labels_file) if labels_file is not None else None

    split_dirs = {name: root / name for name in ("train", "val") if (root / name).is_dir()}
    if not split_dirs:
        split_dirs = {"train": root}

    skipped: list[tuple[Path, str]] = []
    # First pass: per split, either class folders or a flat folder needing the labels file.
    layout: dict[str, tuple[str, list]] = {}
    class_names: set[str] = set()
    for name, folder in split_dirs.items():
        classes = [c for c in _class_dirs(folder) if _walk_images(folder / c, root=root)]
        flat = _direct_images(folder)
        if classes and flat and labels_map is None:
            raise SourceError(
                f"split {name!r} mixes class folders with {len(flat)} loose images; move them or give --labels",
                folder,
            )
        # --labels is for the flat split (ImageNet: train/<class>/ next to a flat val/): a split of
        # class folders none of whose files the labels file names keeps its folder classes
        if classes and (labels_map is None or (not flat and not _names_any(labels_map, folder, root))):
            layout[name] = ("folders", classes)
            class_names.update(classes)
        elif flat or labels_map is not None:
            if labels_map is None:
                raise SourceError(
                    f"split {name!r} is a flat folder of {len(flat)} images: give --labels FILE "
                    "('filename,class' lines) to assign their classes",
                    folder,
                )
            files = _walk_images(folder, skipped, root)
            layout[name] = ("labels", files)
            class_names.update(labels_map.values())
        # a split folder without any image is simply not a split
    if not layout:
        raise SourceError("no image files found (expected SRC/<class>/*.jpg or SRC/train|val/<class>/*.jpg)", root)

    classes = sorted(class_names)
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, SplitSource] = {}
    for name, (kind, payload) in layout.items():
        split = SplitSource(name)
        folder = split_dirs[name]
        if kind == "folders":
            for cls in payload:
                for path in _walk_images(folder / cls, skipped, root):
                    split.files.append(path.relative_to(root).as_posix())
                    split.labels.append(index[cls])
        else:
            for path in payload:
                rel_split = path.relative_to(folder).as_posix()
                cls = labels_map.get(rel_split, labels_map.get(path.name))
                if cls is None:
                    raise SourceError(f"{rel_split!r} has no line in the labels file {labels_file}", folder)
                split.files.append(path.relative_to(root).as_posix())
                split.labels.append(index[cls])
        if split.files:
            splits[name] = split
    skipped_records = [{"file": _relative_name(p, root), "reason": why} for p, why in skipped]
    return Source(root=root, classes=classes, splits=splits, skipped=skipped_records)


def _names_any(labels_map: dict[str, str], folder: Path, root: Path) -> bool:
    """True when the labels file has a line for at least one image under ``folder``."""
    return any(p.relative_to(folder).as_posix() in labels_map or p.name in labels_map
               for p in _walk_images(folder, None, root))


def _relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
