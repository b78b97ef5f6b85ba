"""Ctrl-C during training: a request to stop after the current step and save, not an exception."""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (main thread only)."""

    #: Signals within this many seconds of the first are the same request: a terminal's Ctrl-C
    #: reaches torchrun's workers directly *and* torchrun forwards SIGINT then SIGTERM at once.
    GRACE_S = 2.0

    def __init__(self):
        self.requested = False
        self.signum = None
        self.first = 0.0

    def _handler(self, signum, _frame):
        if self.requested:
            # a second Ctrl-C, later: the user really wants out, now (checkpoints are atomic)
            if signum == signal.SIGINT and time.monotonic() - self.first > self.GRACE_S:
                raise KeyboardInterrupt
            return
        self.requested = True
        self.signum = signum
        self.first = time.monotonic()

    @contextmanager
    def installed(self):
        """Handle SIGINT/SIGTERM with this flag inside the block (a no-op outside the main thread,
        where Python cannot install handlers), restoring the previous handlers after it."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self._handler)
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)
