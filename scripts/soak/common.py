"""What the soak runs share: the CLI, leftover checks by marker, the root-netns snapshot."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

from netlab import names

NETLAB = [sys.executable, "-m", "netlab"]
SYSCTLS = ["net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter",
           "net/ipv4/conf/all/route_localnet", "net/ipv4/conf/all/src_valid_mark", "net/ipv4/ip_nonlocal_bind",
           "net/ipv6/conf/all/forwarding", "net/ipv6/conf/all/disable_ipv6", "net/bridge/bridge-nf-call-iptables"]


def netlab(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    p = subprocess.run([*NETLAB, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"netlab {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"<{argv[0]}: {e}>"


def root_snapshot() -> dict[str, str]:
    """The root netns as the lab must never change it: links, addresses, every route table,
    rules, iptables-save of every table (counters zeroed), ipset list, the sysctls a lab could
    touch. Other engineers' labs live in their own netns, so this is stable while they run."""
    ipt = re.sub(r"\[\d+:\d+\]", "[0:0]", "\n".join(
        ln for ln in _run(["iptables-save"]).splitlines() if not ln.startswith("#")))
    sysctls = {}
    for s in SYSCTLS:
        try:
            sysctls[s] = open(f"/proc/sys/{s}").read().strip()
        except OSError:
            sysctls[s] = "-"
    return {"links": re.sub(r"^\d+: ", "", _run(["ip", "-o", "link", "show"]), flags=re.M),
            "addrs": _run(["ip", "-o", "addr", "show"]),
            "routes": _run(["ip", "route", "show", "table", "all"]),
            "routes6": _run(["ip", "-6", "route", "show", "table", "all"]),
            "rules": _run(["ip", "rule", "show"]) + _run(["ip", "-6", "rule", "show"]),
            "iptables": ipt,
            "ipset": _run(["ipset", "list"]),
            "sysctls": json.dumps(sysctls, sort_keys=True)}


def snapshot_diff(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return [k for k in a if a[k] != b[k]]


def leftovers(lab: str) -> dict[str, list[str]]:
    """Everything of ``lab`` still on the machine, by its markers: netns, /etc/netns dirs,
    mounts, state files, the lock file, processes in or holding a lab netns or state file."""
    prefix = names.lab_prefix(lab)
    out: dict[str, list[str]] = {}
    out["netns"] = [n for n in os.listdir("/var/run/netns") if n.startswith(prefix)] \
        if os.path.isdir("/var/run/netns") else []
    out["etc_netns"] = [d for d in os.listdir(names.ETC_NETNS) if d.startswith(prefix)] \
        if os.path.isdir(names.ETC_NETNS) else []
    with open("/proc/self/mountinfo") as f:
        out["mounts"] = [ln.split()[4] for ln in f if prefix in ln or names.state_dir(lab) + "/" in ln]
    out["state"] = [p for p in (names.state_dir(lab), names.lock_path(lab)) if os.path.exists(p)]
    procs, fds = [], []
    sd = names.state_dir(lab) + "/"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            if sd in cmd or f"netlab.runtime.supervisor {lab}" in cmd or f"--lab {lab} " in cmd:
                procs.append(f"{pid} {cmd[:80]}")
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    t = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if t.startswith(sd) or prefix in t:
                        fds.append(f"{pid}:{fd} {t}")
    out["processes"], out["fds"] = procs, fds
    return {k: v for k, v in out.items() if v}


def wait_for(pred, timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def lab_pids(lab: str) -> dict[str, int]:
    """Process name -> pid, from the lab's supervisor."""
    from netlab.runtime import supervisor

    st = supervisor.request(lab, {"op": "status"}, timeout=5)
    return {p["name"]: p["pid"] for p in st["processes"] if p["pid"]}


def rss_fds(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open fds) of ``pid``."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                rss = int(ln.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def curl(lab: str, pod: str, url: str, timeout: float = 5) -> str:
    p = netlab("exec", lab, pod, "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
               str(timeout), url, check=False, timeout=timeout + 20)
    return p.stdout.strip()


@contextlib.contextmanager
def lab_up(topology: str, name: str, *extra: str) -> Iterator[str]:
    netlab("up", topology, "--name", name, *extra)
    try:
        yield name
    finally:
        netlab("down", name, check=False)


def gc_mine(prefix: str = "rl") -> list[str]:
    """gc over this run's labs only: a shared machine's other labs are never candidates."""
    from netlab.lab import lifecycle as lablib

    return [r.lab for r in lablib.gc(only=lambda lab: lab.startswith(prefix))]
