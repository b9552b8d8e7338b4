"""``/etc/netns/<ns>/hosts``: what ``ip netns exec`` bind-mounts over /etc/hosts in a lab netns.

These files are the only lab files outside the state directory; their directory carries the
netns name (and so the ``nl-`` marker), and ``down``/``gc`` remove them.
"""

from __future__ import annotations

import os
import shutil

from netlab import names
from netlab.linux.files import write_atomic


def write_hosts(ns: str, text: str) -> None:
    d = names.etc_netns_dir(ns)
    os.makedirs(d, exist_ok=True)
    write_atomic(os.path.join(d, "hosts"), text)


def remove_hosts(ns: str) -> None:
    if not ns.startswith(names.MARKER):
        raise ValueError(f"refusing to remove /etc/netns/{ns}: not a lab netns")
    shutil.rmtree(names.etc_netns_dir(ns), ignore_errors=True)
    try:  # /etc/netns itself goes too once no netns uses it (ip netns would leave it)
        os.rmdir(names.ETC_NETNS)
    except OSError:
        pass


def lab_hosts_dirs(prefix: str) -> list[str]:
    try:
        return sorted(d for d in os.listdir(names.ETC_NETNS) if d.startswith(prefix))
    except FileNotFoundError:
        return []
