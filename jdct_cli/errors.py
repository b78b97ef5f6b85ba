"""The one error hierarchy of jdct.

Every error carries its data as attributes (``path``, ``reason``...) and subclasses the builtin a
caller would naturally catch (``ValueError``, ``FileNotFoundError``, ``OSError``). The CLI maps any
:class:`JdctError` to a one-line ``Error: <path>: <reason>`` message.
"""
from __future__ import annotations

import os
from typing import Optional


class JdctError(Exception):
    """Base of every jdct error. ``path`` (may be None) names the file, ``reason`` says why."""

    def __init__(self, reason: str, path: Optional[os.PathLike | str] = None):
        self.reason = str(reason)
        # a path, or anything naming a place by its str() (a store URL, a StoreLocation)
        self.path = None if path is None else (
            os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path))
        super().__init__(self.reason if self.path is None else f"{self.path}: {self.reason}")

    def with_path(self, path):
        """The same error (same class and reason) naming ``path``; returns a new instance."""
        err = self.__class__.__new__(self.__class__)
        JdctError.__init__(err, self.reason, path)
        for key, value in vars(self).items():
            if key not in ("reason", "path"):
                setattr(err, key, value)
        return err


class JpegError(JdctError, ValueError):
    """libjpeg refused the data (corrupt, truncated in strict mode...); ``reason`` says why.

    ``libjpeg_message``: libjpeg's own words when the refusal is libjpeg's (else None); the C
    boundary's reason is exactly that message, the JPEG layer's (:mod:`jdct_cli.jpeg`) a
    sentence ending with it in parentheses.
    """

    libjpeg_message: Optional[str] = None


class NotAJpegError(JpegError):
    """The bytes are another format (``detected_format``: "PNG", "GIF", "WebP", "BMP", "text"...) or empty."""

    def __init__(self, reason, path=None, detected_format: Optional[str] = None):
        super().__init__(reason, path)
        self.detected_format = detected_format


class UnsupportedJpegError(JpegError):
    """A valid JPEG jdct does not handle (12-bit, lossless, more than 4 components...)."""


class ImageTooLargeError(JpegError):
    """The header declares more pixels than the budget; refused before any allocation."""

    def __init__(self, reason, path=None, pixels: Optional[int] = None, max_pixels: Optional[int] = None):
        super().__init__(reason, path)
        self.pixels = pixels
        self.max_pixels = max_pixels


class StoreError(JdctError, ValueError):
    """A Zarr store that jdct cannot use: not a jdct store, wrong split, damaged data."""


class IncompleteStoreError(StoreError):
    """The store lacks its metadata (attrs["jdct"]): its conversion was interrupted; resume it."""


class StoreVersionError(StoreError):
    """The store's ``format_version`` is not one this jdct reads."""


class StoreMetadataError(StoreError):
    """A field of a store's metadata (attrs["jdct"]), conversion plan or shard marker is missing
    or invalid; ``field`` names it (``splits.val.num_samples``), ``document`` the file it is in."""

    def __init__(self, reason, path=None, field: Optional[str] = None, document: Optional[str] = None):
        super().__init__(reason, path)
        self.field = field
        self.document = document


class StoreCorruptionError(StoreError):
    """A chunk failed its checksum or an array disagrees with the metadata."""


class StorageError(JdctError, OSError):
    """The object store (or remote filesystem) holding a store failed or refused a request, after
    its retries: ``path`` is the store's URL, ``reason`` one line saying what happened."""


class BucketNotFoundError(StorageError, FileNotFoundError):
    """The bucket (or container) a store URL names does not exist on that endpoint; ``bucket``."""

    def __init__(self, reason, path=None, bucket: Optional[str] = None):
        super().__init__(reason, path)
        self.bucket = bucket


class CredentialsError(StorageError, PermissionError):
    """No credentials were found for the object store, or it refused the ones given (an unknown
    access key, a secret that does not match, an expired token)."""


class AccessDeniedError(StorageError, PermissionError):
    """The credentials are valid but lack the permission for the request (HTTP 403 AccessDenied)."""


class EndpointUnreachableError(StorageError, ConnectionError):
    """The object store's endpoint could not be reached (refused, unresolvable, timed out), after retries."""


class SourceError(JdctError, ValueError):
    """The conversion source tree is unusable (no images, no classes, bad --labels file)."""


class SourceNotFoundError(JdctError, FileNotFoundError):
    """A file or folder given by the user does not exist."""


class CheckpointError(JdctError, ValueError):
    """A checkpoint that cannot be used: incomplete, other format version, other architecture."""


class ConfigError(JdctError, ValueError):
    """Invalid options or config file for a command."""


class UnknownModelError(JdctError, KeyError):
    """No model registered under that name; ``reason`` lists the known ones."""

    def __str__(self):  # KeyError would repr() the message
        return Exception.__str__(self)


class ExportError(JdctError, RuntimeError):
    """A model could not be exported for deployment (the exporter failed, a package is missing), or the
    exported model does not give the checkpoint's logits."""


class NoSpaceError(JdctError, OSError):
    """Not enough free space to write a file; ``needed`` and ``free`` in bytes (None when unknown)."""

    def __init__(self, reason, path=None, needed: Optional[int] = None, free: Optional[int] = None):
        super().__init__(reason, path)
        self.needed = needed
        self.free = free


class Interrupted(JdctError):
    """The work was stopped by Ctrl-C (SIGINT) or SIGTERM; ``reason`` says what was kept and how to go on.

    The CLI turns it into a one-line message and exit code 130, as for any interrupt.
    """
