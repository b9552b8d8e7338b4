"""Find the processes of a lab by its netns inodes, not by names or pid files alone.

A process belongs to the lab if any of its *threads* is in a lab netns (``ip netns pids``
only looks at the main thread: the Geneve forwarder and in-pod ztunnel move single threads),
or if it holds an open fd on a lab netns (a netns fd passed over SCM_RIGHTS).
"""

from __future__ import annotations

import os
import signal
import time


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in(inodes: set[int], paths: set[str] = frozenset()) -> set[int]:  # type: ignore[assignment]
    found: set[int] = set()
    me = os.getpid()
    links = {f"net:[{i}]" for i in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me:
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        if any(_ino(f"/proc/{pid}/task/{t}/ns/net") in inodes for t in tids):
            found.add(pid)
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in links or target in paths:
                found.add(pid)
                break
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def terminate(pids: set[int], timeout: float = 2.0) -> set[int]:
    """SIGTERM, wait, then SIGKILL what is left; returns the pids that were signalled."""
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        left = {p for p in left if alive(p)}
        if left:
            time.sleep(0.02)
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    t2 = time.monotonic() + 2
    while left and time.monotonic() < t2:
        left = {p for p in left if alive(p)}
        time.sleep(0.01)
    return pids


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22): with the pid,
    an identity a recycled pid cannot fake."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: int, started: int | None) -> bool:
    """Is ``pid`` still the process that started at ``started`` (and not a zombie)?"""
    return bool(pid) and alive(pid) and (started is None or start_time(pid) == started)


def state_of(pid: int) -> str | None:
    """The process state letter (R, S, D, T stopped, Z zombie...), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return None
