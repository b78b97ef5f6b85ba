"""Processes that never outlive the conversion that started them, and one conversion per OUT.

- :class:`Lifeline`: the conversion keeps the write end of a pipe; every worker process gets the
  read end and a watchdog thread blocked reading it. When the conversion's process ends in any way
  (SIGKILL, the OOM killer, a scheduler's preemption) the kernel closes the write end, the read
  returns end-of-file and the worker kills itself at once: it writes nothing further. The
  forkserver and the resource tracker of ``multiprocessing`` exit by themselves once the
  conversion and its workers are gone (their own pipes reach end-of-file).
- :class:`OutLock`: an exclusive ``flock`` on the OUT folder, held by the conversion and shared by
  its workers (they inherit the locked file description), so a second ``jdct convert`` into the
  same OUT, or a resume started while a worker of a killed run is still alive, waits for it
  briefly and then stops with a clear error instead of racing with it.
- :class:`ObjectLock`: the same for a store on object storage, where there is no flock: a lease,
  the object ``OUT/.jdct-lock.json`` created only if absent (a conditional PUT, ``If-None-Match``),
  naming its conversion and renewed every :data:`LEASE_RENEW_S` by a thread of the conversion
  (a conditional PUT on its etag, ``If-Match``). Another conversion takes it over only once it is
  stale: not renewed for :data:`LEASE_S` (its conversion is gone), or at once when its holder ran
  on this machine and its process is dead. Workers (pool or Dask) check the owner record before
  each shard, so a taken-over conversion writes nothing more; the worst a race between the check
  and the write can do is write a shard twice, with the same bytes (conversion is deterministic).
  Limitation: a backend without conditional writes (fsspec's filesystems) gets the same protocol
  without atomicity (checked, then written).
- :func:`die_with_parent`: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` for a child started with
  ``subprocess`` (``preexec_fn``): it is killed when its parent dies (Linux; a no-op elsewhere).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import socket
import threading
import time
import uuid
from multiprocessing import reduction
from pathlib import Path
from typing import Optional

from ..errors import StorageError, StoreError
from ..store import LOCK_OBJECT, PROGRESS_DIR, ProgressFolder, StoreLocation
from ..store.progress import OWNER_FILE

_PR_SET_PDEATHSIG = 1
#: How long a conversion waits for OUT's lock before giving up (a killed run's workers need far less).
LOCK_WAIT_S = 5.0
#: An object-store lock not renewed for this long belongs to a conversion that is gone (seconds of
#: the machines' clocks, which NTP keeps far closer than this).
LEASE_S = 60.0
#: How often the holder renews its lock.
LEASE_RENEW_S = 10.0


class InheritedFd:
    """An open file descriptor that travels to a worker process when pickled while the worker is
    being started (multiprocessing passes it with the process: spawn and forkserver alike);
    unpickled, it is the worker's own descriptor of the same open file."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        return _rebuild_fd, (reduction.DupFd(self.fd),)


def _rebuild_fd(dup) -> int:
    return dup.detach()


class Lifeline:
    """A pipe whose read end workers watch (see the module docstring). ``close()`` when done."""

    def __init__(self):
        self._read, self._write = os.pipe()  # both close-on-exec: no other child inherits them

    def token(self) -> InheritedFd:
        """What a worker passes to :func:`watch_lifeline` (give it in the pool's ``initargs``)."""
        return InheritedFd(self._read)

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._read = self._write = -1


def watch_lifeline(fd: int) -> None:
    """In a worker: start a daemon thread that kills this process when ``fd`` (a lifeline's read
    end) reaches end-of-file, i.e. when the conversion that started the worker is gone."""

    def watch():
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="jdct-lifeline", daemon=True).start()


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only; elsewhere nothing).

    Meant as ``subprocess.Popen(..., preexec_fn=die_with_parent)``; the parent is the thread that
    started the child, so start children from a thread that lives as long as they should.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class OutLock:
    """The exclusive lock of a conversion on its OUT folder (created when missing).

    ``acquire()`` waits up to ``wait_s`` for a holder to go, then raises StoreError naming it (from
    the owner file a running conversion writes: its pid, host and start time). ``token()`` gives
    the workers the locked descriptor, so the lock lasts while any of them lives. ``created``: OUT
    did not exist before (``release(remove_if_empty=True)`` then removes it if still empty).
    On a file system without ``flock`` the conversion goes on unlocked.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.fd: Optional[int] = None
        self.created = False
        self.run = uuid.uuid4().hex

    def acquire(self, wait_s: float = LOCK_WAIT_S) -> None:
        if not self.out.exists():
            self.out.mkdir(parents=True)
            self.created = True
        self.fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return  # no flock here (some network file systems): unlocked
            if time.monotonic() >= deadline:
                holder = self._holder()
                self.release()
                raise StoreError(f"another `jdct convert`{holder} is writing into this folder; wait for it to "
                                 "finish or stop it, then run the command again", self.out)
            time.sleep(0.05)

    def _holder(self) -> str:
        try:
            owner = json.loads((self.out / PROGRESS_DIR / OWNER_FILE).read_text())
            return f" (pid {owner['pid']} on {owner['host']}, started {owner['started']})"
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def write_owner(self, progress) -> None:
        """Record this conversion as the owner of OUT's progress folder (workers check it);
        ``progress``: the :class:`~jdct_cli.store.ProgressFolder`, or the folder's path."""
        folder = progress if isinstance(progress, ProgressFolder) else ProgressFolder(Path(progress).parent)
        folder.write_owner(owner_record(self.run))

    @property
    def lost(self) -> bool:
        """Whether another conversion took OUT over (a flock cannot be taken over: never)."""
        return False

    def token(self) -> Optional[InheritedFd]:
        return None if self.fd is None else InheritedFd(self.fd)

    def release(self, remove_if_empty: bool = False) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing our descriptor; workers' copies keep the lock until they end
            self.fd = None
        if remove_if_empty and self.created:
            try:
                self.out.rmdir()
            except OSError:
                pass


def owner_record(run: str) -> dict:
    """What a conversion records about itself (owner file, object lock): its run id, pid, host,
    the host's boot id (a pid means something only within one boot) and start time."""
    return {"run": run, "pid": os.getpid(), "host": socket.gethostname(), "boot": _boot_id(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _process_gone(record: dict) -> bool:
    """Whether the conversion of ``record`` ran on this machine (same host, same boot) and its
    process no longer exists."""
    if record.get("host") != socket.gethostname() or record.get("boot") != _boot_id() or not _boot_id():
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError, OverflowError):
        return False
    return False


class ObjectLock:
    """The lock of a conversion on a store in an object store: a renewed lease (module docstring).

    Same interface as :class:`OutLock`: ``acquire(wait_s)`` (StoreError naming the holder when it
    stays held), ``write_owner(folder)``, ``token()`` (None: nothing to share with workers),
    ``release()``, ``run``; ``lost`` turns True when another conversion took the store over (after
    this one stopped renewing, e.g. stopped in a debugger for longer than the lease)."""

    def __init__(self, location: StoreLocation, lease_s: float = LEASE_S, renew_s: float = LEASE_RENEW_S):
        self.location = location
        self.objects = location.objects()
        self.run = uuid.uuid4().hex
        self.created = False
        self.lease_s, self.renew_s = lease_s, renew_s
        self._etag: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lost = False
        self.took_over: Optional[dict] = None

    @property
    def lost(self) -> bool:
        return self._lost

    def _record(self) -> bytes:
        return json.dumps({**owner_record(self.run), "renewed": time.time(), "lease_s": self.lease_s}).encode()

    def _current(self) -> tuple[Optional[dict], Optional[str]]:
        head = self.objects.head(LOCK_OBJECT)
        if head is None:
            return None, None
        data = self.objects.get(LOCK_OBJECT)
        try:
            doc = json.loads(data) if data is not None else None
        except ValueError:
            doc = {}
        return (doc if isinstance(doc, dict) else {}), head["etag"]

    def _stale(self, doc: dict) -> bool:
        try:
            age = time.time() - float(doc.get("renewed", 0))
        except (TypeError, ValueError):
            return True
        return age > float(doc.get("lease_s") or self.lease_s) or _process_gone(doc)

    def acquire(self, wait_s: float = LOCK_WAIT_S) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            etag = self.objects.create(LOCK_OBJECT, self._record())
            if etag is not None:
                break
            doc, etag = self._current()
            if doc is not None and doc.get("run") == self.run:
                break  # ours: a first attempt landed, its answer was lost and the retry found it
            if doc is not None and self._stale(doc):
                etag = self._replace(etag)
                if etag is not None:
                    self.took_over = doc
                    break
            elif doc is not None and time.monotonic() >= deadline:
                raise StoreError(self._busy(doc), self.location.url)
            time.sleep(0.2)
        self._etag = etag
        self._thread = threading.Thread(target=self._renew, name="jdct-lock-lease", daemon=True)
        self._thread.start()

    def _busy(self, doc: dict) -> str:
        try:
            age = f", lock renewed {max(0.0, time.time() - float(doc['renewed'])):.0f} s ago"
        except (KeyError, TypeError, ValueError):
            age = ""
        holder = (f" (pid {doc.get('pid')} on {doc.get('host')}, started {doc.get('started')}{age})"
                  if doc.get("pid") is not None else "")
        return (f"another `jdct convert`{holder} is writing into this store; wait for it to finish or stop it, "
                f"then run the command again (the lock of a conversion that died expires {self.lease_s:.0f} s after "
                f"its last renewal; {LOCK_OBJECT} at the store's root)")

    def _replace(self, etag: Optional[str]) -> Optional[str]:
        """Replace the lock object (still at ``etag``) by this conversion's record: the new etag, or
        None when another conversion's record is there now."""
        new = self.objects.replace(LOCK_OBJECT, self._record(), etag)
        if new is None:
            doc, now = self._current()
            if doc is not None and doc.get("run") == self.run:
                return now  # a first attempt landed, its answer was lost
        return new

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                etag = self._replace(self._etag)
            except (StorageError, OSError):
                continue  # a transient failure: the lease outlasts a few missed renewals
            if etag is None:
                self._lost = True
                return
            self._etag = etag

    def write_owner(self, progress) -> None:
        folder = progress if isinstance(progress, ProgressFolder) else ProgressFolder(self.location)
        folder.write_owner(owner_record(self.run))

    def token(self) -> None:
        return None

    def release(self, remove_if_empty: bool = False) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=30)
        self._thread = None
        try:
            doc, etag = self._current()
            if doc is not None and doc.get("run") == self.run:
                self.objects.delete([LOCK_OBJECT])
        except (StorageError, OSError):
            pass  # the lease expires by itself


def out_lock(location: StoreLocation):
    """The lock of a conversion into ``location``: :class:`OutLock` (flock) for a local folder,
    :class:`ObjectLock` (a renewed lease) for an object store."""
    return OutLock(location.path) if location.is_local else ObjectLock(location)


def still_owner(progress, run: str) -> bool:
    """In a worker, before writing: whether the conversion ``run`` still owns OUT (a later run
    of ``jdct convert`` writes its own owner record; a worker of an earlier one then writes
    nothing). ``progress``: the store's :class:`~jdct_cli.store.ProgressFolder` (or its folder's path)."""
    folder = progress if isinstance(progress, ProgressFolder) else ProgressFolder(Path(progress).parent)
    owner = folder.owner()  # an object store's failure propagates: it is not "someone else owns OUT"
    return owner is not None and owner.get("run") == run
