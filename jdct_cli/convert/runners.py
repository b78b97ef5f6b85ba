"""Where tasks run: in this process, on a pool of worker processes, or on a Dask cluster.

Every runner has ``map_unordered(fn, tasks)`` (results as they finish) and ``stop(kill,
progress)``. Pool workers die with the conversion (:mod:`.lifeline`) and share its lock on OUT.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed, wait
from typing import Callable, Iterable, Iterator, Optional

from ..errors import ConfigError
from .lifeline import InheritedFd, Lifeline
from .worker import worker_init

ProgressFn = Callable[[str, int, int], None]


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class InProcess:
    """Run each task here, in order."""

    def map_unordered(self, fn, tasks: Iterable) -> Iterator:
        for t in tasks:
            yield fn(t)

    def stop(self, kill: bool = False, progress: Optional[ProgressFn] = None) -> None:
        pass


class Pool:
    """``workers`` processes (forkserver, else spawn; never fork: zarr runs an asyncio loop in a
    thread that fork would copy in an unusable state). ``lock``: OUT's locked descriptor, shared
    with the workers."""

    def __init__(self, workers: int, lock: Optional[InheritedFd] = None):
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self.lifeline = Lifeline()
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method),
                                            initializer=worker_init,
                                            initargs=(self.lifeline.token(), lock, dict(os.environ)))
        self.futures: list = []

    def map_unordered(self, fn, tasks: Iterable) -> Iterator:
        self.futures = [self.executor.submit(fn, t) for t in tasks]
        for fut in as_completed(self.futures):
            yield fut.result()

    def stop(self, kill: bool = False, progress: Optional[ProgressFn] = None) -> None:
        """Shut the pool down. ``kill`` (Ctrl-C, errors): drop queued tasks and let the running
        ones finish their shard (their markers keep them); a second Ctrl-C terminates them (their
        shards have no marker and will be redone)."""
        if self.executor is None:
            return
        if kill:
            # Cancel here, not through shutdown(cancel_futures=True): the executor's thread cancels
            # asynchronously and wait() would never see those futures finish.
            running = [f for f in self.futures if not f.cancel() and not f.done()]
            if running and progress:
                progress("stopping", 0, len(running))
            try:
                wait(running)
            except KeyboardInterrupt:
                for proc in list((getattr(self.executor, "_processes", None) or {}).values()):
                    proc.terminate()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.lifeline.close()
        # Drop the executor now: an error's traceback keeps this object alive until exit.
        self.executor = None
        self.futures = []


class Dask:
    """Tasks submitted to the Dask scheduler at ``address`` (OUT on a file system the workers share).

    Dask workers are the cluster's, not this conversion's: when it is killed their running tasks
    finish, and each checks before writing that its conversion still owns OUT (:func:`.lifeline.
    still_owner`), so a later run is never overwritten by them.
    """

    def __init__(self, address: str):
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("--dask-scheduler needs dask[distributed] (pip install 'jdct[dask]')") from None
        try:
            self.client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot connect to the Dask scheduler at {address}: {exc}") from None
        self.futures: list = []

    def map_unordered(self, fn, tasks: Iterable) -> Iterator:
        from distributed import as_completed as dask_completed

        self.futures = [self.client.submit(fn, t, pure=False) for t in tasks]
        for fut in dask_completed(self.futures):
            yield fut.result()

    def stop(self, kill: bool = False, progress: Optional[ProgressFn] = None) -> None:
        if self.futures:
            self.client.cancel(self.futures)
        self.client.close()
