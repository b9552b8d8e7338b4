"""One lock per lab, held by every command that creates, changes or removes the lab as a whole.

``up``, ``down``, ``down --design-only`` and ``gc`` each hold ``/run/netlab/<lab>.lock``
(an exclusive ``flock``) for their whole run, so two of them never work on the same lab at
once: a second ``up`` of the same name gets one clear line instead of racing the first; ``gc``
skips a lab whose lock is held (it is being made or removed right now, not crashed).

The lock file sits beside the state dir, not in it (``down`` removes the dir), and exists
only while held: the holder unlinks it on release. A waiter that then wins the lock on the
unlinked file sees that the path no longer names the file it locked, and locks again (the
usual unlink-safe lock-file protocol). A holder killed with SIGKILL leaves a file nobody
holds: the next taker locks it at once and removes it. The file names its holder
(``<pid> <operation>``) for the refusal message. ``flock`` on a second fd waits even in the
same process, so code that already holds the lock calls the ``*_locked`` variants.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from netlab import names
from netlab.errors import LabError


@dataclass(frozen=True)
class Holder:
    pid: int
    op: str

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        pid, _, op = text.strip().partition(" ")
        return cls(int(pid), op or "?") if pid.isdigit() else None


class LabBusy(LabError):
    """Another netlab command holds the lab's lock."""


def holder(lab: str) -> Holder | None:
    """Who holds ``lab``'s lock right now, or None if nobody does."""
    try:
        fd = os.open(names.lock_path(lab), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Holder.parse(os.pread(fd, 64, 0).decode(errors="replace")) or Holder(0, "?")
        return None  # we could lock it: nobody holds it
    finally:
        os.close(fd)


GC_WAIT_S = 10.0  # gc holds a lab's lock only to look at it (or to remove it): worth waiting for


def _acquire(lab: str, op: str, wait: float) -> int:
    os.makedirs(names.STATE_ROOT, exist_ok=True)
    path = names.lock_path(lab)
    start = time.monotonic()
    deadline = start + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = Holder.parse(os.pread(fd, 64, 0).decode(errors="replace"))
            os.close(fd)
            # a gc passing by is waited for (it lets go in moments); another up or down is not
            gc_passing = op != "gc" and (who is None or who.op == "gc") and time.monotonic() < start + GC_WAIT_S
            if time.monotonic() < deadline or gc_passing:
                time.sleep(0.05)
                continue
            by = f"pid {who.pid} is running `netlab {who.op}` on it" if who else "another netlab command holds it"
            raise LabBusy(f"lab {lab!r} is busy: {by}",
                          hint="wait for it to finish (Ctrl-C on an `up` rolls it back)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            try:  # who holds it, for the refusal message; a full disk must not stop the lock
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {op}\n".encode(), 0)
            except OSError:
                pass
            return fd
        os.close(fd)  # the holder we waited for removed that file: lock the new one


def _release(lab: str, fd: int) -> None:
    try:
        os.unlink(names.lock_path(lab))
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def lab_lock(lab: str, op: str, *, wait: float = 0.0) -> Iterator[None]:
    """Hold ``lab``'s lock for ``op`` (``up``, ``down``, ``gc``...); :class:`LabBusy` if
    another command holds it for longer than ``wait`` seconds."""
    fd = _acquire(lab, op, wait)
    try:
        yield
    finally:
        _release(lab, fd)


@contextlib.contextmanager
def try_lab_lock(lab: str, op: str) -> Iterator[bool]:
    """Like :func:`lab_lock`, but yields False (and holds nothing) if the lab is busy."""
    try:
        fd = _acquire(lab, op, 0.0)
    except LabBusy:
        yield False
        return
    try:
        yield True
    finally:
        _release(lab, fd)


def stale_locks() -> list[str]:
    """Labs with a lock file (held or left by a killed holder)."""
    try:
        return sorted(f[:-len(".lock")] for f in os.listdir(names.STATE_ROOT) if f.endswith(".lock"))
    except FileNotFoundError:
        return []
