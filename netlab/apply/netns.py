"""Lab network namespaces: create, list and remove, by their ``nl-`` names only."""

from __future__ import annotations

import errno
import logging
import os

from pyroute2 import netns as pr_netns

from netlab import names
from netlab.errors import ApplyError
from netlab.linux.nsenter import NETNS_RUN_DIR

log = logging.getLogger(__name__)


def list_netns(prefix: str = names.MARKER) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def create(ns: str) -> bool:
    """Create ``ns``; False if it already existed (idempotent reconcile)."""
    if os.path.exists(os.path.join(NETNS_RUN_DIR, ns)):
        return False
    log.debug("ip netns add %s", ns)
    try:
        pr_netns.create(ns)
    except OSError as e:
        raise ApplyError(f"ip netns add {ns}: {e.strerror}", obj=f"netns {ns}", errno=e.errno) from None
    return True


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
