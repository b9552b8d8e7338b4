"""Tell the supervisor a lab process is ready (listeners open), once.

The supervisor passes the write end of a pipe as ``NETLAB_READY_FD``; a process writes one
line to it when it can serve. Processes started by hand (no variable) skip this.
"""

from __future__ import annotations

import os


def notify_ready() -> None:
    fd = os.environ.pop("NETLAB_READY_FD", None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except (OSError, ValueError):
        pass
