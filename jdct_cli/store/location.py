"""Where a store lives: a local folder or an object-store URL, in one place.

Every reader and writer of a store (``convert``, ``verify``, ``inspect``, the loader, training)
goes through :class:`StoreLocation`:

- ``StoreLocation.parse(target, storage_options)``: a path (``imagenet.zarr``, ``file:///data/in.zarr``)
  or a URL (``s3://bucket/imagenet.zarr``, ``gs://...``, ``az://...``; any other scheme fsspec
  knows, e.g. ``memory://``, as a fallback);
- :meth:`StoreLocation.zarr_target`: what zarr opens (the path for a local store; for an object
  store zarr's ``ObjectStore`` over obstore, whose shards go up in one PUT each; fsspec's
  ``FsspecStore`` for the other schemes);
- :meth:`StoreLocation.objects`: whole-object operations beside zarr (the metadata document, the
  conversion's plan, markers and lock): get, put (atomic), create-if-absent, replace-if-unchanged,
  list, delete;
- :func:`storage_error`: any failure of an object store as one :class:`~jdct_cli.errors.StorageError`
  line (missing bucket, no or refused credentials, access denied, unreachable endpoint, a server
  that kept failing after its retries).

Backends (``benchmarks/RESULTS.md``, "Stores on object storage", has the measurements): obstore
for ``s3://``, ``gs://`` and ``az://`` (Rust, one request per whole-object read, faster ranged
reads with many in flight, retries with backoff built in), fsspec for the other schemes, zarr's
``LocalStore`` (through the path) for local stores.

Credentials and endpoint come the usual way: the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
``AWS_PROFILE``; ``GOOGLE_APPLICATION_CREDENTIALS``; ``AZURE_STORAGE_*``), the AWS config files
(``~/.aws/credentials``, ``~/.aws/config``: profiles, SSO, assumed roles, ``endpoint_url``, read
through boto3), the instance's role, and explicit storage options (``--storage-option KEY=VALUE``:
see :data:`OPTION_HELP`). Explicit options travel with the location to worker processes and Dask
workers (pickled); whatever comes from the environment is looked up again in each process.

obstore is not fork-safe: a process must not fork (without exec) after it used an object store.
jdct's worker pools use forkserver or spawn, Dask's workers are spawned, and the loader refuses to
read an object store from a forked child.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union
from urllib.parse import unquote, urlsplit

from ..errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ConfigError,
    CredentialsError,
    EndpointUnreachableError,
    StorageError,
)
from ..fileio import atomic_write_bytes

#: URL schemes served by obstore, and its name for each service.
OBSTORE_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "azure": "azure",
                   "abfs": "azure", "abfss": "azure"}
#: The largest object written with one PUT (S3's limit is 5 GiB): one request, all or nothing, and
#: nothing left behind by a kill. Larger objects go up as multipart uploads.
SINGLE_PUT_MAX = (5 << 30) - 1
#: Defaults of the HTTP client and its retries (each overridable by a storage option): a connection
#: must open within 5 s, a response go silent for at most 60 s, a request (a shard's upload
#: included) finish within 10 min. Retries
#: cover 5xx answers, throttling, dropped connections and timeouts, with jittered exponential
#: backoff; 4xx answers (missing bucket, refused credentials, access denied) are not retried.
DEFAULT_CLIENT = {"connect_timeout": "5s", "read_timeout": "60s", "timeout": "10min"}
DEFAULT_RETRIES = {"max_retries": 10, "retry_timeout": 180.0, "retry_init_backoff": 0.1, "retry_max_backoff": 15.0}

#: Alternative names accepted for storage options (s3fs' and boto3's names) -> obstore's.
ALIASES = {"endpoint_url": "endpoint", "key": "access_key_id", "aws_access_key_id": "access_key_id",
           "secret": "secret_access_key", "aws_secret_access_key": "secret_access_key", "token": "session_token",
           "aws_session_token": "session_token", "anon": "skip_signature", "region_name": "region"}
#: Options of jdct's own (not obstore's configuration keys).
RETRY_KEYS = ("max_retries", "retry_timeout", "retry_init_backoff", "retry_max_backoff")
#: obstore's HTTP client options (the rest of the options are the service's configuration keys).
CLIENT_KEYS = ("allow_http", "allow_invalid_certificates", "connect_timeout", "timeout", "read_timeout",
               "pool_idle_timeout", "pool_max_idle_per_host", "proxy_url", "proxy_ca_certificate", "proxy_excludes",
               "user_agent", "http1_only", "http2_only", "randomize_addresses")
_DURATIONS = ("connect_timeout", "timeout", "read_timeout", "pool_idle_timeout")
_SECRET_WORDS = ("secret", "token", "password", "key")

#: What ``--storage-option`` says about the keys (the CLI's help and README).
OPTION_HELP = (
    "endpoint=URL (S3-compatible servers: MinIO, Ceph...), region=NAME, access_key_id=ID, secret_access_key=KEY, "
    "session_token=TOKEN, profile=NAME (an ~/.aws profile), skip_signature=true (public buckets), "
    "allow_http=true, connect_timeout=SECONDS, timeout=SECONDS, max_retries=N, retry_timeout=SECONDS; any other "
    "key of obstore's S3/GCS/Azure configuration; for other URL schemes, fsspec's options of that filesystem")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_STATUS = re.compile(r"status code: (\d{3})(?: ([A-Za-z][A-Za-z ]*[A-Za-z]))?")
_CODE = re.compile(r"<Code>([^<]+)</Code>")
_RETRIES = re.compile(r"after (\d+) retr")

_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_", "HOME")
# Built stores, per process (obstore's clients are not fork-safe and never travel between
# processes): keyed by (url, options, read_only, pid, the environment's storage variables).
_BUILT: dict[tuple, Any] = {}
_BUILT_LOCK = threading.Lock()


def _canonical(key: str) -> str:
    key = str(key).strip().lower().replace("-", "_")
    return ALIASES.get(key, key)


def parse_storage_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--storage-option``) -> ``{key: value}``; ConfigError for a pair
    without ``=`` or with an empty key."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--storage-option takes KEY=VALUE, got {pair!r} (keys: {OPTION_HELP})")
        out[key.strip()] = value.strip()
    return out


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _seconds(name: str, value: Any) -> float:
    text = str(value).strip().lower()
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        if text.endswith("min"):
            return float(text[:-3]) * 60
        return float(text[:-1] if text.endswith("s") else text)
    except ValueError:
        raise ConfigError(f"storage option {name}={value!r}: expected seconds (e.g. 30 or 30s)") from None


@dataclass(frozen=True)
class StoreLocation:
    """A store's place: ``url`` (a local path as given, or ``scheme://bucket/prefix``) and the
    storage ``options`` given explicitly (sorted ``(key, value)`` string pairs, keys canonical).

    Plain data: it pickles (worker processes, Dask) and every process builds its own clients."""

    url: str
    options: tuple[tuple[str, str], ...] = field(default=())

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(cls, target: Union["StoreLocation", os.PathLike, str],
              storage_options: Optional[Mapping[str, Any]] = None) -> "StoreLocation":
        """A location from a path, a ``file://`` URL or an object-store URL (``storage_options``:
        explicit options, merged over those ``target`` carries when it is a location already)."""
        if isinstance(target, StoreLocation):
            if not storage_options:
                return target
            merged = dict(target.options)
            merged.update({_canonical(k): str(v) for k, v in storage_options.items()})
            return cls(target.url, tuple(sorted(merged.items())))
        text = os.fspath(target)
        opts = tuple(sorted((_canonical(k), str(v)) for k, v in (storage_options or {}).items()))
        m = _SCHEME.match(text)
        if m is None:
            if opts:
                raise ConfigError(f"storage options apply to URLs (s3://, gs://...), not to a local path: {text}")
            return cls(text, ())
        scheme = m.group(1).lower()
        if scheme == "file":
            parts = urlsplit(text)
            if parts.netloc not in ("", "localhost"):
                raise ConfigError(f"a file:// URL names a local path (file:///abs/path), got {text}")
            return cls(unquote(parts.path) or "/", ())
        rest = text[m.end():].rstrip("/")
        if scheme in OBSTORE_SCHEMES and not rest.split("/")[0]:
            raise ConfigError(f"the URL names no bucket: {text} (expected {scheme}://BUCKET/path/to/store.zarr)")
        return cls(f"{scheme}://{rest}", opts)

    # ------------------------------------------------------------------ facts
    @property
    def scheme(self) -> str:
        m = _SCHEME.match(self.url)
        return m.group(1) if m else ""

    @property
    def is_local(self) -> bool:
        return not self.scheme

    @property
    def backend(self) -> str:
        """"local", "obstore" or "fsspec"."""
        if self.is_local:
            return "local"
        return "obstore" if self.scheme in OBSTORE_SCHEMES else "fsspec"

    @property
    def path(self) -> Path:
        """The folder of a local store (a remote one has none: StorageError)."""
        if not self.is_local:
            raise StorageError("an object-store location has no local path", self.url)
        return Path(self.url)

    @property
    def bucket(self) -> Optional[str]:
        return None if self.is_local else self.url[len(self.scheme) + 3:].split("/")[0]

    @property
    def prefix(self) -> str:
        """The store's key prefix inside its bucket ("" at the bucket's root)."""
        if self.is_local:
            return ""
        return "/".join(self.url[len(self.scheme) + 3:].split("/")[1:])

    @property
    def options_dict(self) -> dict[str, str]:
        return dict(self.options)

    def __str__(self) -> str:
        return self.url

    def child_url(self, key: str) -> str:
        """``url/key`` (for messages)."""
        return f"{self.url.rstrip('/')}/{key}" if key else self.url

    def endpoint(self) -> Optional[str]:
        """The S3 endpoint in use (explicit option, then ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
        then the profile's ``endpoint_url``); None for AWS itself and other services."""
        if self.backend != "obstore" or OBSTORE_SCHEMES[self.scheme] != "s3":
            return None
        opts = self.options_dict
        return (opts.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or _profile_setting(opts.get("profile"), "endpoint_url"))

    def redacted_options(self) -> dict[str, str]:
        """The explicit options with secrets masked (for reports and logs)."""
        return {k: ("***" if any(w in k for w in _SECRET_WORDS) and k != "access_key_id" else v)
                for k, v in self.options}

    # ------------------------------------------------------------------ zarr and objects
    def zarr_target(self, read_only: bool = False):
        """What to give zarr (``zarr.open_group(target, ...)``): the path of a local store, else a
        zarr ``Store`` for this location (built once per process)."""
        if self.is_local:
            return os.fspath(self.url)
        return self._built(read_only)[1]

    def objects(self) -> "Objects":
        """Whole-object operations on this location (see :class:`Objects`)."""
        if self.is_local:
            return _LocalObjects(self)
        return self._built(False)[0]

    def _built(self, read_only: bool):
        # the environment is part of the configuration (credentials, endpoint, profile, config files)
        env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
        key = (self.url, self.options, read_only, os.getpid(), env)
        with _BUILT_LOCK:
            hit = _BUILT.get(key)
        if hit is not None:
            return hit
        built = _build_obstore(self, read_only) if self.backend == "obstore" else _build_fsspec(self, read_only)
        with _BUILT_LOCK:
            return _BUILT.setdefault(key, built)

    def cache_namespace(self, zarr_json: bytes) -> str:
        """A name for this store's content in a local cache: the URL and its root ``zarr.json``
        (which holds attrs["jdct"]: the same metadata means the same arrays, since conversion is
        deterministic; a store converted again differently gets another name)."""
        return hashlib.sha256(self.url.encode() + b"\0" + zarr_json).hexdigest()[:24]


def as_location(target, storage_options: Optional[Mapping[str, Any]] = None) -> StoreLocation:
    """:meth:`StoreLocation.parse` (a location is returned as it is when no options are given)."""
    return StoreLocation.parse(target, storage_options)


def is_url(target) -> bool:
    """Whether ``target`` names a store by URL (an object store, or fsspec), not a local path."""
    if isinstance(target, StoreLocation):
        return not target.is_local
    try:
        text = os.fspath(target)
    except TypeError:
        return False
    m = _SCHEME.match(text)
    return m is not None and m.group(1).lower() != "file"


# ---------------------------------------------------------------------------------------------------
# retries on top of the client's
# ---------------------------------------------------------------------------------------------------

#: Failures obstore's own retries do not cover: a response whose body broke off after its status
#: (a listing, a small object) and transport errors of requests it does not consider idempotent
#: (conditional PUTs: their callers check whether a first attempt landed).
_TRANSIENT_WORDS = ("error sending request", "response body error", "error decoding response body",
                    "error reading a body",
                    "connection reset", "Connection reset", "broken pipe", "unexpected end of file",
                    "connection closed before message completed", "IncompleteMessage", "operation timed out")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a transient failure that the client did not retry already (its own
    retries of 5xx, throttling and dropped connections end with "after N retries": not again)."""
    if not (type(exc).__module__ or "").startswith("obstore"):
        return False
    text = str(exc)
    return _RETRIES.search(text) is None and any(w in text for w in _TRANSIENT_WORDS)


def _retry_settings(loc: Optional["StoreLocation"]) -> tuple[int, float, float]:
    opts = loc.options_dict if loc is not None else {}
    try:
        tries = int(opts.get("max_retries", DEFAULT_RETRIES["max_retries"]))
    except ValueError:
        tries = int(DEFAULT_RETRIES["max_retries"])
    first = _seconds("retry_init_backoff", opts.get("retry_init_backoff", DEFAULT_RETRIES["retry_init_backoff"]))
    most = _seconds("retry_max_backoff", opts.get("retry_max_backoff", DEFAULT_RETRIES["retry_max_backoff"]))
    return tries, first, most


def _backoff(attempt: int, first: float, most: float) -> float:
    import random

    return random.uniform(0, min(most, first * 2 ** attempt))


def retrying(loc: Optional["StoreLocation"], fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, again (jittered exponential backoff) while it fails transiently."""
    import time

    tries, first, most = _retry_settings(loc)
    for attempt in range(tries + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if attempt >= tries or not is_transient(exc):
                raise
            time.sleep(_backoff(attempt, first, most))


async def retrying_async(loc: Optional["StoreLocation"], make):
    """``await make()`` (a coroutine factory), again while it fails transiently."""
    import asyncio

    tries, first, most = _retry_settings(loc)
    for attempt in range(tries + 1):
        try:
            return await make()
        except Exception as exc:  # noqa: BLE001
            if attempt >= tries or not is_transient(exc):
                raise
            await asyncio.sleep(_backoff(attempt, first, most))


# ---------------------------------------------------------------------------------------------------
# whole-object operations
# ---------------------------------------------------------------------------------------------------

class Objects:
    """Whole-object operations, keys relative to the store (``"zarr.json"``, ``".jdct-progress/plan.json"``).

    ``get`` (None when absent), ``put`` (atomic: readers see the old object or the new one),
    ``create`` (only when absent: its new etag, None if it exists), ``head`` ({"size", "etag"} or
    None), ``replace`` (only when its etag is still ``etag``: the new etag, None otherwise), ``list`` ([(key, size)]
    under a prefix, recursively), ``delete`` (absent keys are fine), ``delete_prefix``.
    ``conditional``: whether create/replace are atomic on this backend (object stores with
    conditional writes and local files: yes; fsspec's filesystems: checked, then written)."""

    conditional = True

    def get(self, key: str) -> Optional[bytes]: ...
    def put(self, key: str, data: bytes) -> None: ...
    def create(self, key: str, data: bytes) -> Optional[str]: ...
    def head(self, key: str) -> Optional[dict]: ...
    def replace(self, key: str, data: bytes, etag: Optional[str]) -> Optional[str]: ...
    def list(self, prefix: str = "") -> list[tuple[str, int]]: ...
    def delete(self, keys: Iterable[str]) -> None: ...

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def first_keys(self, prefix: str = "", n: int = 2) -> list[str]:
        """Up to ``n`` keys under ``prefix`` (cheaper than :meth:`list` where the backend pages)."""
        return [k for k, _ in self.list(prefix)[:n]]

    def delete_prefix(self, prefix: str) -> None:
        self.delete([k for k, _ in self.list(prefix)])

    def total_bytes(self, prefix: str = "", skip: tuple[str, ...] = ()) -> int:
        """Bytes of the objects under ``prefix``, leaving out those whose key starts with one of ``skip``."""
        return sum(size for key, size in self.list(prefix) if not key.startswith(skip))


class _LocalObjects(Objects):
    def __init__(self, loc: StoreLocation):
        self.root = loc.path

    def _p(self, key: str) -> Path:
        return self.root / key if key else self.root

    def get(self, key):
        try:
            return self._p(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def put(self, key, data):
        p = self._p(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(p, data)

    def create(self, key, data):
        p = self._p(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.new")
        atomic_write_bytes(tmp, data)
        try:
            os.link(tmp, p)  # atomic create-if-absent
        except FileExistsError:
            return None
        finally:
            tmp.unlink(missing_ok=True)
        return self._etag(key)

    def _etag(self, key):
        now = self.head(key)
        return None if now is None else now["etag"]

    def head(self, key):
        try:
            st = self._p(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not self._p(key).is_file():
            return None
        return {"size": st.st_size, "etag": f"{st.st_mtime_ns}-{st.st_size}"}

    def replace(self, key, data, etag):
        now = self.head(key)
        if now is None or now["etag"] != etag:
            return None
        self.put(key, data)
        return self._etag(key)

    def list(self, prefix=""):
        base = self._p(prefix)
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                full = os.path.join(dirpath, name)
                try:
                    out.append((os.path.relpath(full, self.root).replace(os.sep, "/"), os.path.getsize(full)))
                except OSError:
                    pass
        return sorted(out)

    def delete(self, keys):
        for key in keys:
            try:
                self._p(key).unlink()
            except FileNotFoundError:
                pass

    def delete_prefix(self, prefix):
        shutil.rmtree(self._p(prefix), ignore_errors=True)


class _ObstoreObjects(Objects):
    def __init__(self, loc: StoreLocation, store):
        self.loc = loc
        self.store = store

    def _fail(self, exc: BaseException, key: str, op: str) -> BaseException:
        return storage_error(exc, self.loc, key=key, op=op) or exc

    def get(self, key):
        import obstore as obs

        try:
            return bytes(retrying(self.loc, lambda: obs.get(self.store, key).bytes()))
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise self._fail(exc, key, "read") from None
            return None
        except Exception as exc:  # noqa: BLE001 - obstore's errors, mapped
            raise self._fail(exc, key, "read") from None

    def put(self, key, data):
        import obstore as obs

        try:
            retrying(self.loc, obs.put, self.store, key, data, use_multipart=len(data) > SINGLE_PUT_MAX)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, key, "write") from None

    def create(self, key, data):
        import obstore as obs
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            put = retrying(self.loc, obs.put, self.store, key, data, mode="create", use_multipart=False)
            return put["e_tag"] or "?"
        except (AlreadyExistsError, PreconditionError):
            return None  # (or a first attempt that landed before its answer was lost: the caller checks)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, key, "write") from None

    def head(self, key):
        import obstore as obs

        try:
            meta = retrying(self.loc, obs.head, self.store, key)
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise self._fail(exc, key, "read") from None
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, key, "read") from None
        return {"size": int(meta["size"]), "etag": meta.get("e_tag")}

    def replace(self, key, data, etag):
        import obstore as obs
        from obstore.exceptions import PreconditionError

        if etag is None:
            return None
        try:
            return retrying(self.loc, obs.put, self.store, key, data, mode={"e_tag": etag},
                            use_multipart=False)["e_tag"] or "?"
        except (PreconditionError, FileNotFoundError):
            return None  # (or a first attempt that landed before its answer was lost: the caller checks)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, key, "write") from None

    def list(self, prefix=""):
        import obstore as obs

        try:
            metas = retrying(self.loc, lambda: obs.list(self.store, prefix=prefix.rstrip("/") or None).collect())
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, prefix, "list") from None
        return sorted((m["path"], int(m["size"])) for m in metas)

    def first_keys(self, prefix="", n=2):
        import obstore as obs

        def first():
            for batch in obs.list(self.store, prefix=prefix.rstrip("/") or None, chunk_size=max(n, 1)):
                return [m["path"] for m in batch][:n]
            return []

        try:
            return retrying(self.loc, first)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, prefix, "list") from None

    def delete(self, keys):
        import obstore as obs

        keys = list(keys)
        for i in range(0, len(keys), 1000):
            try:
                retrying(self.loc, obs.delete, self.store, keys[i:i + 1000])
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001
                raise self._fail(exc, keys[i], "delete") from None


class _FsspecObjects(Objects):
    conditional = False  # create() checks then writes: two racing writers are not excluded

    def __init__(self, loc: StoreLocation, fs, root: str):
        self.loc, self.fs, self.root = loc, fs, root.rstrip("/")

    def _p(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _fail(self, exc, key, op):
        return storage_error(exc, self.loc, key=key, op=op) or exc

    def get(self, key):
        try:
            return bytes(self.fs.cat_file(self._p(key)))
        except (FileNotFoundError, IsADirectoryError):
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, key, "read") from None

    def put(self, key, data):
        try:
            self.fs.pipe_file(self._p(key), data)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, key, "write") from None

    def create(self, key, data):
        if self.head(key) is not None:
            return None
        self.put(key, data)
        return self._etag(key)

    def _etag(self, key):
        now = self.head(key)
        return None if now is None else now["etag"]

    def head(self, key):
        try:
            info = self.fs.info(self._p(key))
        except (FileNotFoundError, IsADirectoryError):
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, key, "read") from None
        if info.get("type") == "directory":
            return None
        etag = info.get("ETag") or info.get("etag") or f"{info.get('mtime') or info.get('created')}-{info.get('size')}"
        return {"size": int(info.get("size") or 0), "etag": str(etag)}

    def replace(self, key, data, etag):
        now = self.head(key)
        if now is None or now["etag"] != etag:
            return None
        self.put(key, data)
        return self._etag(key)

    def list(self, prefix=""):
        base = self._p(prefix.rstrip("/"))
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, prefix, "list") from None
        out = []
        strip = self.root.lstrip("/")
        for path, info in found.items():
            rel = path.lstrip("/")[len(strip):].lstrip("/")
            out.append((rel, int(info.get("size") or 0)))
        return sorted(out)

    def delete(self, keys):
        for key in keys:
            try:
                self.fs.rm_file(self._p(key))
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001
                raise self._fail(exc, key, "delete") from None


def abort_multipart_uploads(loc: StoreLocation) -> Optional[int]:
    """Abort the incomplete multipart uploads under an ``s3://`` store's prefix (what a writer
    killed in the middle of one leaves behind: invisible, but billed until a lifecycle rule removes
    it). Returns how many were aborted; None when this cannot be done (not S3, boto3 missing, the
    permission ``s3:ListBucketMultipartUploads`` lacking...): it is housekeeping, never fatal.
    Only safe while holding the store's conversion lock."""
    if loc.backend != "obstore" or OBSTORE_SCHEMES[loc.scheme] != "s3":
        return None
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        return None
    opts = loc.options_dict
    kwargs: dict[str, Any] = {"endpoint_url": loc.endpoint(), "config": Config(retries={"max_attempts": 3},
                                                                               connect_timeout=5, read_timeout=30)}
    region = opts.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region_name"] = region
    if opts.get("access_key_id"):
        kwargs.update(aws_access_key_id=opts["access_key_id"], aws_secret_access_key=opts.get("secret_access_key"),
                      aws_session_token=opts.get("session_token"))
    prefix = loc.prefix.rstrip("/") + "/" if loc.prefix else ""
    try:
        client = boto3.Session(profile_name=opts.get("profile")).client("s3", **kwargs)
        aborted = 0
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=loc.bucket, Prefix=prefix):
            for up in page.get("Uploads") or ():
                client.abort_multipart_upload(Bucket=loc.bucket, Key=up["Key"], UploadId=up["UploadId"])
                aborted += 1
        return aborted
    except Exception:  # noqa: BLE001 - housekeeping only
        return None


# ---------------------------------------------------------------------------------------------------
# building clients
# ---------------------------------------------------------------------------------------------------

def _profile_setting(profile: Optional[str], name: str) -> Optional[str]:
    """A setting of the AWS config profile in use (``~/.aws/config``), through botocore when installed."""
    try:
        import botocore.session
    except ImportError:
        return None
    try:
        value = botocore.session.Session(profile=profile).get_scoped_config().get(name)
    except Exception:  # noqa: BLE001 - a missing profile is reported by the credentials step
        return None
    return value if isinstance(value, str) else None


_NO_CREDENTIALS = ("no credentials found for {scheme}://: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                   "AWS_PROFILE, ~/.aws/credentials), or pass --storage-option access_key_id=... "
                   "--storage-option secret_access_key=... (skip_signature=true for a public bucket)")


def _s3_credentials(loc: StoreLocation, config: dict):
    """The credential provider obstore needs beside its own environment lookup: None when the
    options or the environment hold the keys (obstore reads them), a boto3-backed provider for
    profiles, config files, SSO and roles; CredentialsError when nothing provides any."""
    if config.get("access_key_id") or _truthy(config.get("skip_signature", "")):
        return None
    profile = loc.options_dict.get("profile")
    if not profile and os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return None
    try:
        import botocore.session
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return None  # obstore's own chain (environment, web identity, container, instance role)
    try:
        session = botocore.session.Session(profile=profile)
        creds = session.get_credentials()
    except BotoCoreError as exc:
        raise CredentialsError(f"cannot read the AWS configuration ({exc})", loc.url) from None
    if creds is None:
        raise CredentialsError(_NO_CREDENTIALS.format(scheme=loc.scheme), loc.url)
    from obstore.auth.boto3 import Boto3CredentialProvider

    return Boto3CredentialProvider(session)


def _build_obstore(loc: StoreLocation, read_only: bool):
    try:
        from obstore.exceptions import UnknownConfigurationKeyError
        from obstore.store import from_url
    except ImportError:
        raise ConfigError(f"{loc.scheme}:// stores need obstore: pip install 'jdct[remote]'", loc.url) from None

    service = OBSTORE_SCHEMES[loc.scheme]
    client: dict[str, Any] = dict(DEFAULT_CLIENT)
    retry = dict(DEFAULT_RETRIES)
    config: dict[str, Any] = {}
    for key, value in loc.options:
        if key == "profile":
            continue
        if key in RETRY_KEYS:
            if key == "max_retries":
                try:
                    retry[key] = int(value)
                except ValueError:
                    raise ConfigError(f"storage option max_retries={value!r}: expected an integer") from None
            else:
                retry[key] = _seconds(key, value)
        elif key in CLIENT_KEYS:
            client[key] = f"{_seconds(key, value)}s" if key in _DURATIONS else value
        else:
            config[key] = value
    provider = None
    if service == "s3":
        endpoint = loc.endpoint()
        if endpoint:
            config["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                client.setdefault("allow_http", "true")
        region = (config.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                  or _profile_setting(loc.options_dict.get("profile"), "region"))
        if region:
            config["region"] = region
        provider = _s3_credentials(loc, config)
    retry_config = {
        "max_retries": retry["max_retries"], "retry_timeout": timedelta(seconds=retry["retry_timeout"]),
        "backoff": {"init_backoff": timedelta(seconds=retry["retry_init_backoff"]),
                    "max_backoff": timedelta(seconds=retry["retry_max_backoff"]), "base": 2.0}}
    try:
        store = from_url(loc.url, config=config or None, client_options=client, retry_config=retry_config,
                         credential_provider=provider)
    except UnknownConfigurationKeyError as exc:
        raise ConfigError(f"unknown storage option for {loc.scheme}:// ({str(exc).splitlines()[0]}); known: "
                          f"{OPTION_HELP}", loc.url) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid storage options for {loc.scheme}:// ({str(exc).splitlines()[0]})",
                          loc.url) from None
    except Exception as exc:  # noqa: BLE001 - obstore's configuration errors
        raise storage_error(exc, loc) or ConfigError(f"cannot use {loc.url}: {_first_line(exc)}") from None
    return _ObstoreObjects(loc, store), _SinglePutObjectStore(store, read_only=read_only, loc=loc)


def _build_fsspec(loc: StoreLocation, read_only: bool):
    try:
        import fsspec
        from zarr.storage import FsspecStore
    except ImportError:
        raise ConfigError(f"{loc.scheme}:// needs fsspec (pip install fsspec and its {loc.scheme} filesystem)",
                          loc.url) from None
    options = {k: _fsspec_value(v) for k, v in loc.options}
    try:
        fs, root = fsspec.core.url_to_fs(loc.url, **options)
        store = FsspecStore.from_url(loc.url, storage_options=options or None, read_only=read_only)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"cannot use {loc.scheme}:// URLs here ({_first_line(exc)})", loc.url) from None
    return _FsspecObjects(loc, fs, root), store


def _fsspec_value(value: str):
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(value)
    except ValueError:
        return value


def _single_put_store_class():
    from zarr.storage import ObjectStore

    class SinglePutObjectStore(ObjectStore):
        """zarr's ObjectStore writing each object with one PUT (up to :data:`SINGLE_PUT_MAX`): a
        shard appears whole or not at all, and a killed writer leaves no multipart upload behind.
        Every request is also retried on the transient failures obstore leaves to its caller
        (:func:`is_transient`: a body cut short after the status line, e.g. of a listing)."""

        location: Optional[StoreLocation] = None

        def _again(self, make):
            return retrying_async(self.location, make)

        def with_read_only(self, read_only: bool = False):
            other = super().with_read_only(read_only)
            other.location = self.location
            return other

        async def set(self, key, value) -> None:
            import obstore as obs

            self._check_writable()
            buf = value.as_buffer_like()
            await self._again(lambda: obs.put_async(self.store, key, buf, use_multipart=len(buf) > SINGLE_PUT_MAX))

        async def set_if_not_exists(self, key, value) -> None:
            return await self._again(lambda: ObjectStore.set_if_not_exists(self, key, value))

        async def get(self, key, prototype, byte_range=None):
            return await self._again(lambda: ObjectStore.get(self, key, prototype, byte_range))

        async def get_partial_values(self, prototype, key_ranges):
            key_ranges = list(key_ranges)
            return await self._again(lambda: ObjectStore.get_partial_values(self, prototype, key_ranges))

        async def exists(self, key):
            return await self._again(lambda: ObjectStore.exists(self, key))

        async def delete(self, key):
            return await self._again(lambda: ObjectStore.delete(self, key))

        async def delete_dir(self, prefix):
            return await self._again(lambda: ObjectStore.delete_dir(self, prefix))

        async def getsize(self, key):
            return await self._again(lambda: ObjectStore.getsize(self, key))

        async def _list(self, prefix=None):
            # a listing is taken whole (with retries), then handed out
            async def collect():
                return [item async for item in ObjectStore._list(self, prefix)]

            for item in await self._again(collect):
                yield item

        def list_dir(self, prefix):
            async def collect():
                return [item async for item in ObjectStore.list_dir(self, prefix)]

            async def gen():
                for item in await self._again(collect):
                    yield item

            return gen()

    return SinglePutObjectStore


_SINGLE_PUT_CLASS = None


def _SinglePutObjectStore(store, read_only: bool, loc: StoreLocation):
    global _SINGLE_PUT_CLASS
    if _SINGLE_PUT_CLASS is None:
        _SINGLE_PUT_CLASS = _single_put_store_class()
    zstore = _SINGLE_PUT_CLASS(store, read_only=read_only)
    zstore.location = loc
    return zstore


# ---------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_CODE_WORDS = {
    "InvalidAccessKeyId": "the access key id is not known to the object store",
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "TokenRefreshRequired": "the session token has expired",
}


def storage_error(exc: BaseException, where: Union[StoreLocation, str], *, key: str = "",
                  op: str = "access") -> Optional[StorageError]:
    """``exc`` (raised by obstore, fsspec/botocore or zarr over them) as one StorageError line
    naming the store ``where``, or None when it is not a storage failure (a missing object, a
    programming error...). Missing bucket -> BucketNotFoundError; no credentials or refused ones ->
    CredentialsError; a valid identity without the permission -> AccessDeniedError; endpoint not
    reached -> EndpointUnreachableError; anything else the store answered after its retries ->
    StorageError."""
    if isinstance(exc, StorageError):
        return exc
    loc = where if isinstance(where, StoreLocation) else None
    url = where.url if loc is not None else str(where)
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    text = str(exc)
    codes = _CODE.findall(text)
    code = codes[0] if codes else None
    status = _STATUS.search(text)
    endpoint = loc.endpoint() if loc is not None else None
    at = f" at {endpoint}" if endpoint else ""
    what = f"{op} {key}" if key else op
    bucket = loc.bucket if loc is not None else None
    if not (module.startswith(("obstore", "botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "aiohttp", "fsspec"))
            or isinstance(exc, (PermissionError, ConnectionError, TimeoutError))
            or (isinstance(exc, FileNotFoundError) and "NoSuchBucket" in text)):
        return None
    if code == "NoSuchBucket" or "specified bucket does not exist" in text or name == "NoSuchBucket":
        return BucketNotFoundError(f"no such bucket {bucket!r}{at}", url, bucket=bucket)
    if code in _CODE_WORDS:
        return CredentialsError(f"the object store refused the credentials ({code}: {_CODE_WORDS[code]})", url)
    if "169.254.169.254" in text or name in ("NoCredentialsError", "PartialCredentialsError") or \
            "Unable to locate credentials" in text:
        return CredentialsError(_NO_CREDENTIALS.format(scheme=loc.scheme if loc else "s3"), url)
    if name in ("UnauthenticatedError",) or (status and status.group(1) == "401"):
        return CredentialsError(f"the object store refused the credentials (HTTP 401 while trying to {what})", url)
    if name == "PermissionDeniedError" or code == "AccessDenied" or isinstance(exc, PermissionError) or \
            (status and status.group(1) == "403"):
        return AccessDeniedError(f"access denied (HTTP 403) to {what}: the credentials in use lack the permission "
                                 "for it", url)
    retries = _RETRIES.search(text)
    after = f", after {retries.group(1)} retries" if retries else ""
    if status and status.group(1).startswith("5"):
        words = f"HTTP {status.group(1)}" + (f" {status.group(2)}" if status.group(2) else "") + (
            f" {code}" if code else "")
        return StorageError(f"the object store kept failing ({words}{after}) to {what}", url)
    unreachable = ("error sending request", "dns error", "Connection refused", "connection refused", "timed out",
                   "Could not connect", "Cannot connect", "ConnectTimeout", "EndpointConnectionError")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError",
                "ServerTimeoutError") or isinstance(exc, (ConnectionError, TimeoutError)) or \
            any(w in text for w in unreachable):
        where_to = endpoint or (f"{loc.scheme}://" if loc else url)
        return EndpointUnreachableError(f"cannot reach the object store at {where_to} ({_short(text, name)}{after}); "
                                        "check the endpoint (--storage-option endpoint=URL or AWS_ENDPOINT_URL) and "
                                        "the network", url)
    if status:
        return StorageError(f"the object store answered HTTP {status.group(1)}"
                            + (f" {code}" if code else "") + f" to {what}", url)
    if isinstance(exc, FileNotFoundError):
        return None
    return StorageError(f"the object store failed to {what}: {_short(text, name)}", url)


def _short(text: str, name: str) -> str:
    """The cause in a few words: obstore's last " - " clause of its first line, else the first line."""
    first = text.strip().splitlines()[0] if text.strip() else name
    tail = first.rsplit(" - ", 1)[-1].strip()
    tail = re.sub(r"\s+", " ", tail)
    return tail[:160] or name
