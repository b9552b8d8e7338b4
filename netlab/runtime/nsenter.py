"""Re-export of :mod:`netlab.nsenter` (a base utility every layer that acts may use)."""

from netlab.nsenter import (  # noqa: F401
    CLONE_NEWNET,
    CLONE_NEWNS,
    NETNS_RUN_DIR,
    netns,
    netns_fd,
    netns_inode,
    netns_path,
    open_netns,
    setns,
    unshare,
)
