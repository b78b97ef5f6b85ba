"""Reading a store over the network: shard indexes kept in memory, byte ranges cached on local disk.

zarr reads a sharded array chunk by chunk: for each chunk the shard's index (a suffix of the shard
object, 16 bytes per chunk + 4) then the chunk's own byte range. :class:`CachingStore` wraps the
store a reader opens:

- shard indexes are kept in memory (a few hundred bytes each), which halves the requests per
  chunk on an object store (zarr itself reads the index again for every chunk);
- with a :class:`DiskCache`, every byte range read (a chunk of one rank's part of the data, not
  whole shards: ranks on different machines each fetch only what they read) is also written to
  ``cache_dir`` and served from there afterwards. The cache is bounded: when it exceeds its size,
  the least recently used ranges are deleted (recency is the file's mtime, so several processes
  sharing one ``cache_dir`` see each other's use; each rescans the folder before evicting).

Cached ranges are named by the store's *content* (:meth:`~.location.StoreLocation.cache_namespace`:
its URL and root zarr.json, which a conversion writes last and which differs for different
content), so a store converted again differently never serves stale bytes. Files are written
atomically (temporary file, then rename).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

#: Default bound of a loader's disk cache (bytes).
DEFAULT_CACHE_BYTES = 32 << 30
#: Shard indexes kept in memory per store (each a few hundred bytes).
INDEX_ENTRIES = 1 << 16
#: Eviction brings the cache down to this fraction of its bound (so that it does not run at every write).
_EVICT_TO = 0.9


def _range_name(byte_range) -> str:
    """A file-name-safe name of a zarr byte request."""
    if byte_range is None:
        return "all"
    for attr, tag in (("suffix", "s"), ("offset", "o")):
        if hasattr(byte_range, attr) and not hasattr(byte_range, "start"):
            return f"{tag}{getattr(byte_range, attr)}"
    return f"r{byte_range.start}-{byte_range.end}"


class DiskCache:
    """Byte ranges of one store under ``root/namespace/``, the whole ``root`` bounded to ``max_bytes``.

    Thread-safe; several processes may share ``root``. ``hits``/``misses``/``evicted`` count this
    process's lookups and deletions."""

    def __init__(self, root: os.PathLike | str, namespace: str, max_bytes: int = DEFAULT_CACHE_BYTES):
        if max_bytes < 1:
            raise ValueError("the cache size must be positive")
        self.root = Path(root)
        self.namespace = namespace
        self.max_bytes = int(max_bytes)
        self.dir = self.root / namespace
        self.hits = self.misses = self.evicted = 0
        self._lock = threading.Lock()
        self._total: Optional[int] = None

    def __getstate__(self):
        return {"root": self.root, "namespace": self.namespace, "max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(state["root"], state["namespace"], state["max_bytes"])

    def _file(self, key: str, byte_range) -> Path:
        digest = hashlib.sha1(key.encode()).hexdigest()[:24]
        return self.dir / f"{digest}-{_range_name(byte_range)}"

    def get(self, key: str, byte_range) -> Optional[bytes]:
        path = self._file(key, byte_range)
        try:
            data = path.read_bytes()
        except OSError:
            with self._lock:
                self.misses += 1
            return None
        try:
            os.utime(path)  # recency for LRU, visible to every process sharing the folder
        except OSError:
            pass
        with self._lock:
            self.hits += 1
        return data

    def put(self, key: str, byte_range, data: bytes) -> None:
        path = self._file(key, byte_range)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:  # a full or read-only cache disk: the read itself succeeded, so go on uncached
            try:
                tmp.unlink()
            except OSError:
                pass
            return
        with self._lock:
            if self._total is None:
                self._total = self._scan_total()
            else:
                self._total += len(data)
            over = self._total > self.max_bytes
        if over:
            self._evict()

    def _files(self) -> list[tuple[float, int, Path]]:
        out = []
        try:
            spaces = list(os.scandir(self.root))
        except OSError:
            return out
        for space in spaces:
            if not space.is_dir(follow_symlinks=False):
                continue
            try:
                entries = list(os.scandir(space.path))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size, Path(entry.path)))
        return out

    def _scan_total(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _evict(self) -> None:
        """Delete the least recently used files until the folder is within ``_EVICT_TO`` of the bound
        (rescanned first: other processes write there too)."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        target = self.max_bytes * _EVICT_TO
        removed = 0
        for _, size, path in files:
            if total <= target:
                break
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
            total -= size
        with self._lock:
            self._total = total
            self.evicted += removed

    def size(self) -> int:
        """Bytes in the whole cache folder now."""
        return self._scan_total()


def caching_store(store, disk: Optional[DiskCache] = None, index_entries: int = INDEX_ENTRIES):
    """``store`` (a zarr Store) wrapped by :class:`CachingStore` (the class is built on first use, so
    that importing this module does not import zarr)."""
    return _caching_class()(store, disk=disk, index_entries=index_entries)


_CLASS = None


def _caching_class():
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    from zarr.abc.store import SuffixByteRequest
    from zarr.storage import WrapperStore

    class CachingStore(WrapperStore):
        """A read-only view of a zarr store with shard indexes in memory and, with ``disk``, every
        byte range read cached on local disk (module docstring)."""

        def __init__(self, store, disk: Optional[DiskCache] = None, index_entries: int = INDEX_ENTRIES):
            super().__init__(store)
            self.disk = disk
            self.index_entries = index_entries
            self._index: "OrderedDict[tuple, bytes]" = OrderedDict()
            self._index_lock = threading.Lock()

        def _with_store(self, store):
            return type(self)(store, disk=self.disk, index_entries=self.index_entries)

        def __getstate__(self):
            return {"store": self._store, "disk": self.disk, "index_entries": self.index_entries}

        def __setstate__(self, state):
            self.__init__(state["store"], disk=state["disk"], index_entries=state["index_entries"])

        def __repr__(self):
            return f"CachingStore({self._store!r}, disk={self.disk.dir if self.disk else None})"

        async def get(self, key, prototype, byte_range=None):
            if key.endswith("zarr.json"):
                return await self._store.get(key, prototype, byte_range)
            is_index = isinstance(byte_range, SuffixByteRequest)
            ck = (key, _range_name(byte_range))
            if is_index:
                with self._index_lock:
                    hit = self._index.get(ck)
                    if hit is not None:
                        self._index.move_to_end(ck)
                if hit is not None:
                    return prototype.buffer.from_bytes(hit)
            if self.disk is not None:
                data = await asyncio.to_thread(self.disk.get, key, byte_range)
                if data is not None:
                    if is_index:
                        self._remember(ck, data)
                    return prototype.buffer.from_bytes(data)
            buf = await self._store.get(key, prototype, byte_range)
            if buf is None:
                return None
            if is_index or self.disk is not None:
                data = buf.to_bytes()
                if is_index:
                    self._remember(ck, data)
                if self.disk is not None:
                    await asyncio.to_thread(self.disk.put, key, byte_range, data)
            return buf

        def _remember(self, ck, data: bytes) -> None:
            with self._index_lock:
                self._index[ck] = data
                while len(self._index) > self.index_entries:
                    self._index.popitem(last=False)

        async def get_partial_values(self, prototype, key_ranges):
            return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    _CLASS = CachingStore
    return _CLASS


def __getattr__(name):  # CachingStore, for isinstance checks and documentation
    if name == "CachingStore":
        return _caching_class()
    raise AttributeError(name)
