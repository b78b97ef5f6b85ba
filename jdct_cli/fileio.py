"""Atomic file writes: the one way jdct writes a file that must never be seen half-written
(store metadata and progress markers, checkpoints, run configs, inspect outputs, caches).

A temporary file is created beside the target (same filesystem, so the rename is atomic), written,
flushed and fsync'ed, given the usual permissions (``0o666 & ~umask``; mkstemp makes 0600 files),
then renamed over the target. A crash, an error or Ctrl-C at any point leaves the old file (or
none) and no temporary file behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def atomic_write(path: os.PathLike | str, write: Callable[[IO[bytes]], Any]) -> Path:
    """Create or replace ``path`` with what ``write(binary_file)`` writes; returns the path.

    The folder of ``path`` must exist (OSError otherwise, like ``open``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: os.PathLike | str, text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: os.PathLike | str, obj: Any, *, indent: int = 1) -> Path:
    """:func:`atomic_write` of ``obj`` as JSON (NaN and infinities refused: they are not JSON)."""
    return atomic_write_bytes(path, json.dumps(obj, indent=indent, allow_nan=False).encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set and restore at once
    os.umask(mask)
    return mask
