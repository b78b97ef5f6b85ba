"""Failure records: what went wrong with one source file, as stored in the metadata."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import ImageTooLargeError, JdctError, JpegError, NotAJpegError, SourceError, UnsupportedJpegError
from ..store import Failure

_KINDS = (("not-a-jpeg", NotAJpegError), ("too-large", ImageTooLargeError), ("unsupported", UnsupportedJpegError),
          ("unreadable", SourceError))


def failure_kind(exc: BaseException) -> str:
    """A short category for summaries: not-a-jpeg, too-large, unsupported, unreadable, corrupt."""
    for kind, cls in _KINDS:
        if isinstance(exc, cls):
            return kind
    return "unreadable" if isinstance(exc, OSError) else "corrupt"


def failure(rel: str, exc: BaseException, stage: str, view: Optional[int] = None) -> Failure:
    """The record of ``exc`` for the file ``rel`` (relative to SRC) at ``stage`` ("plan"/"convert")."""
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return Failure(file=rel, reason=reason, kind=failure_kind(exc), stage=stage, view=view)


def error_of(rec: Failure, root: Path) -> JdctError:
    """The error a failure record stands for (``--on-error fail`` raises it), naming the file."""
    cls = dict(_KINDS).get(rec.kind or "", JpegError)
    return cls(rec.reason, root / rec.file)
