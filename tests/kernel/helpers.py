"""Helpers for kernel tests: run the real CLI, always tear labs down."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

from netlab import names

NETLAB = [sys.executable, "-m", "netlab"]


def netlab(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([*NETLAB, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"netlab {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def lab_netns(lab: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/var/run/netns") if n.startswith(names.lab_prefix(lab)))
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
    from netlab.linux import reaper

    inodes = set()
    for n in lab_netns(lab):
        with contextlib.suppress(OSError):
            inodes.add(os.stat(f"/var/run/netns/{n}").st_ino)
    return reaper.pids_in(inodes) if inodes else set()
