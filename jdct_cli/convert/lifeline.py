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

from ..errors import StoreError
from ..fileio import atomic_write_json
from ..store import PROGRESS_DIR

_PR_SET_PDEATHSIG = 1
#: How long a conversion waits for OUT's lock before giving up (a killed run's workers need far less).
LOCK_WAIT_S = 5.0
OWNER_FILE = "owner.json"


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

    def write_owner(self, progress_dir: Path) -> None:
        """Record this conversion as the owner of OUT's progress folder (workers check it)."""
        atomic_write_json(progress_dir / OWNER_FILE, {
            "run": self.run, "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")})

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


def still_owner(progress_dir: Path, run: str) -> bool:
    """In a worker, before writing: whether the conversion ``run`` still owns OUT (a later run
    of ``jdct convert`` writes its own owner file; a worker of an earlier one then writes nothing)."""
    try:
        return json.loads((progress_dir / OWNER_FILE).read_text()).get("run") == run
    except (OSError, ValueError, AttributeError):
        return False
