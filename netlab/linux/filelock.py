"""One writer at a time, across threads and processes: an exclusive ``flock`` on a lock file.

Used where several lab processes (or concurrent CLI runs) rewrite the same files: the lab
record and registry (:func:`netlab.lab.state.state_lock`), the lab's SVID files
(:mod:`netlab.runtime.ztunnel.certs`). A second lock of the same file from the same process
waits for itself: callers must not nest them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


@contextlib.contextmanager
def exclusive(path: str, mode: int = 0o600) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
