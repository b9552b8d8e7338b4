"""Enter a network namespace from one thread only.

``setns(2)`` switches the *calling thread*; a socket keeps the netns it was created in for
its whole life. So a process can hold listening sockets, TAP fds and netlink sockets in many
namespaces at once: switch the thread, create the fd, switch back. Python 3.11 has no
``os.setns``, hence ctypes. Never call this from a thread that runs other work concurrently
(e.g. the asyncio loop thread while it waits on other fds is fine: the switch is synchronous).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 1 << 20
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace behind ``fd``."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def mount(src: str | None, target: str, fstype: str | None, flags: int) -> None:
    """mount(2) (``MS_*`` flags), raising OSError like the other calls here."""
    if _libc.mount(src.encode() if src else None, target.encode(), fstype.encode() if fstype else None,
                   ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def open_netns(name_or_path: str) -> int:
    """Open a netns by iproute2 name or by path; returns an O_RDONLY fd (caller closes)."""
    path = name_or_path if name_or_path.startswith("/") else netns_path(name_or_path)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


@contextlib.contextmanager
def netns_fd(fd: int) -> Iterator[None]:
    """Run the body with this thread in the netns behind ``fd``, then switch back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWNET)
        try:
            yield
        finally:
            setns(own, CLONE_NEWNET)
    finally:
        os.close(own)


@contextlib.contextmanager
def netns(name_or_path: str) -> Iterator[None]:
    """Like :func:`netns_fd` with a netns name (``/var/run/netns/<name>``) or path."""
    fd = open_netns(name_or_path)
    try:
        with netns_fd(fd):
            yield
    finally:
        os.close(fd)


def netns_inode(name_or_path: str) -> int:
    path = name_or_path if name_or_path.startswith("/") else netns_path(name_or_path)
    return os.stat(path).st_ino
