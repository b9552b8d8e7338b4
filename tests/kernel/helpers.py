"""Helpers for kernel tests: run the real CLI, always tear labs down, run a command in a netns.

The one place for these: every kernel test module imports them from here instead of
defining its own ``ip``/``run``. Nothing here depends on the current directory: the CLI runs
from the repository with this checkout on ``PYTHONPATH``, and netns paths come from netlab.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from netlab import names
from netlab.linux import reaper
from netlab.linux.nsenter import NETNS_RUN_DIR, netns_path

REPO = Path(__file__).resolve().parents[2]
NETLAB = [sys.executable, "-m", "netlab"]
SIOCGSKNS = 0x894C  # <linux/sockios.h>: an fd of the netns a socket belongs to (Linux 4.9+)


def run(*cmd: str, ns: str | None = None, check: bool = True, input: str | None = None,
        timeout: float = 30) -> str:
    """``cmd``'s stdout, run inside ``ns`` (``ip netns exec``) or here; RuntimeError on failure if ``check``."""
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip()}")
    return p.stdout


def ip(ns: str, *args: str, check: bool = False) -> str:
    """``ip -n NS ...`` stdout (unchecked by default: an empty table 100 makes ip fail)."""
    return run("ip", "-n", ns, *args, check=check)


def netns_inode(ns: str) -> int:
    return os.stat(netns_path(ns)).st_ino


def socket_netns_inode(sock: socket.socket) -> int:
    """The inode of the netns ``sock`` was created in (asked of the kernel, not assumed)."""
    fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def netlab(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """``python -m netlab ARGS`` from the repository root, importing this checkout."""
    env = kw.pop("env", None) or dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    kw.setdefault("cwd", REPO)
    p = subprocess.run([*NETLAB, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"netlab {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def lab_netns(lab: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(names.lab_prefix(lab)))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def lab_up(topology: str, name: str, *extra: str) -> Iterator[str]:
    netlab("up", topology, "--name", name, *extra)
    try:
        yield name
    finally:
        netlab("down", name, check=False)


def in_lab(lab: str, target: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return netlab("exec", lab, target, "--", *cmd, check=False, timeout=timeout)


def lab_processes(lab: str) -> set[int]:
    inodes = set()
    for n in lab_netns(lab):
        with contextlib.suppress(OSError):
            inodes.add(netns_inode(n))
    return reaper.pids_in(inodes) if inodes else set()
