"""Lab network namespaces: create, list and remove, by their ``nl-`` names only.

A netns is made as ``ip netns add`` makes it: ``/var/run/netns`` a shared mount, an empty
file there, a fresh netns bind-mounted onto it. The fresh netns comes from ``unshare`` in a
helper thread that then switches back (``setns`` is per thread), not from a forked child
per netns as pyroute2's ``netns.create`` does (~10 ms each, 10 s for a 1,000-pod lab); and
the run directory is made shared once per batch, not once per netns (the recursive
remount walks every netns mount below it: quadratic over a batch). The objects left
behind are the same: the mount, its propagation, the netns.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from pyroute2 import netns as pr_netns

from netlab import names
from netlab.errors import ApplyError
from netlab.linux import nsenter
from netlab.linux.nsenter import NETNS_RUN_DIR

log = logging.getLogger(__name__)
_share_lock = threading.Lock()


def list_netns(prefix: str = names.MARKER) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def _share_run_dir() -> None:
    """``/var/run/netns`` as a shared mount (iproute2's order: make it shared; if it is no
    mount point yet, bind it onto itself first), so netns mounts propagate to other mount
    namespaces and their removal too."""
    with _share_lock:
        os.makedirs(NETNS_RUN_DIR, exist_ok=True)
        try:
            nsenter.mount("", NETNS_RUN_DIR, "none", nsenter.MS_SHARED | nsenter.MS_REC)
        except OSError:
            nsenter.mount(NETNS_RUN_DIR, NETNS_RUN_DIR, "none", nsenter.MS_BIND | nsenter.MS_REC)
            nsenter.mount("", NETNS_RUN_DIR, "none", nsenter.MS_SHARED | nsenter.MS_REC)


def _make(ns: str) -> bool:
    """In the calling (helper) thread: a new netns mounted at ``ns``'s path; the thread is
    back in its own netns when this returns, whatever happens."""
    path = os.path.join(NETNS_RUN_DIR, ns)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        return False
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        nsenter.unshare(nsenter.CLONE_NEWNET)
        try:
            nsenter.mount("/proc/thread-self/ns/net", path, "none", nsenter.MS_BIND)
        finally:
            nsenter.setns(own, nsenter.CLONE_NEWNET)
    except OSError:
        os.unlink(path)
        raise
    finally:
        os.close(own)
    return True


def create_many(nss: Iterable[str], done: Callable[[int], None] | None = None) -> list[str]:
    """Create each netns not there yet, in order; ``done(i)`` after the i-th (1-based), in
    the caller's thread (it may raise to stop: what was made so far stays, for rollback).
    Returns the names created."""
    made: list[str] = []
    _share_run_dir()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns") as ex:
        for i, ns in enumerate(nss):
            if not os.path.exists(os.path.join(NETNS_RUN_DIR, ns)):
                log.debug("ip netns add %s", ns)
                try:
                    if ex.submit(_make, ns).result():
                        made.append(ns)
                except OSError as e:
                    raise ApplyError(f"ip netns add {ns}: {e.strerror}", obj=f"netns {ns}", errno=e.errno) from None
            if done:
                done(i + 1)
    return made


def create(ns: str) -> bool:
    """Create ``ns``; False if it already existed (idempotent reconcile)."""
    return bool(create_many([ns]))


def remove(ns: str) -> None:
    if not ns.startswith(names.MARKER):
        raise ValueError(f"refusing to remove netns {ns}: not a lab netns")
    log.debug("ip netns del %s", ns)
    try:
        pr_netns.remove(ns)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EINVAL):
            raise ApplyError(f"ip netns del {ns}: {e.strerror}", obj=f"netns {ns}", errno=e.errno) from None
    # a half-created netns can leave the mount point file behind
    path = os.path.join(NETNS_RUN_DIR, ns)
    if os.path.exists(path):
        try:
            os.unlink(path)
        except OSError:
            pass


def inode(ns: str) -> int | None:
    try:
        return os.stat(os.path.join(NETNS_RUN_DIR, ns)).st_ino
    except FileNotFoundError:
        return None
