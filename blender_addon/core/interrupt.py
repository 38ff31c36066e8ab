"""Ctrl-C, SIGTERM and a dead parent as a request to stop a render between two images.

Blender calls Python inside its render call (Cycles' ``engine.render``) and swallows any
exception raised there, KeyboardInterrupt included, so Python's default SIGINT handler loses a
Ctrl-C that arrives mid-image; one that arrives while bpy initialises can even crash it
(SIGSEGV). While carprobe renders, SIGINT and SIGTERM therefore only set a flag, which the
render loop reads between images: the current image is finished and kept, then the loop stops
and the command exits 130.

Render workers also stop when their parent dies: Linux sends them SIGTERM (prctl
PR_SET_PDEATHSIG), and elsewhere the flag notices that the parent's pid is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class StopRequest:
    """`requested()` once a stop signal arrived (or the watched parent process is gone)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.parent_pid: int | None = None
        self.on_request: Callable[[], None] | None = None  # run once, at the first signal

    def set(self, signum: int, frame=None) -> None:  # the signal handler: remember it, no exception
        first = self.signum is None
        self.signum = signum
        if first and self.on_request is not None:
            self.on_request()

    def parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def requested(self) -> bool:
        return self.signum is not None or self.parent_gone()

    def die_with_parent(self, parent_pid: int) -> None:
        """Stop when process `parent_pid` (our parent) dies: a SIGTERM from the kernel on Linux,
        and on every platform a check of the parent's pid each time the flag is read."""
        self.parent_pid = parent_pid
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            except (OSError, AttributeError):
                pass  # the pid check still stops us between images


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """While inside, SIGINT and SIGTERM set the yielded StopRequest instead of raising
    (outside the main thread signals cannot be caught: the request then stays unset)."""
    request = StopRequest()
    previous = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, request.set)
    except ValueError:  # not the main thread
        pass
    try:
        yield request
    finally:
        for signum, handler in previous.items():  # None: a handler installed by C (Blender's own)
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
