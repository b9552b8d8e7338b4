"""Reading a live lab for the teaching labs' checks: one small function per thing looked at.

Every function runs the same tool a learner runs (``iptables-save -c``, ``ip rule``, ``ipset
list``, ``ss``, ``conntrack``) inside the member's netns, or reads a file the lab's processes
write (access logs), and returns plain values the checks compare.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from dataclasses import dataclass

from netlab import names
from netlab.lab import lifecycle as lablib
from netlab.linux.nsenter import netns_path
from netlab.observe.decode import decode, ntoa
from netlab.observe.pcapfiles import read_merged
from netlab.observe.show import iptables_save_tool
from netlab.runtime import supervisor

_FIELD = re.compile(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S+)')


def run(lab: str, target: str, argv: list[str]) -> str:
    """stdout of ``argv`` inside ``target``'s netns ('' when the tool fails)."""
    ns = lablib.target_netns(lab, target)
    try:
        p = subprocess.run(["nsenter", f"--net={netns_path(ns)}", *argv], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stdout if p.returncode == 0 else ""


def iptables_rules(lab: str, target: str, table: str) -> list[tuple[int, str]]:
    """``(packets, rule)`` for every rule of ``table`` (``iptables-save -c``; rule without counters)."""
    tool = iptables_save_tool(lablib.record_of(lab).iptables_backend)
    out = []
    for ln in run(lab, target, [tool, "-c", "-t", table]).splitlines():
        m = re.match(r"\[(\d+):\d+\] (-A .*)", ln)
        if m:
            out.append((int(m.group(1)), m.group(2)))
    return out


def counter(lab: str, target: str, table: str, *needles: str) -> int | None:
    """Packets matched by the rule(s) containing every needle; None when no such rule exists."""
    hits = [n for n, r in iptables_rules(lab, target, table) if all(x in r for x in needles)]
    return sum(hits) if hits else None


def ip_rules(lab: str, target: str) -> dict[int, str]:
    out = {}
    for ln in run(lab, target, ["ip", "rule", "show"]).splitlines():
        prio, _, rest = ln.partition(":")
        if prio.strip().isdigit():
            out[int(prio)] = rest.strip()
    return out


def routes(lab: str, target: str, table: str) -> list[str]:
    return [ln.strip() for ln in run(lab, target, ["ip", "route", "show", "table", table]).splitlines() if ln.strip()]


def route_get(lab: str, target: str, *args: str) -> str:
    return " ".join(run(lab, target, ["ip", "route", "get", *args]).split())


def ipset_members(lab: str, target: str, name: str) -> dict[str, str]:
    """ip -> comment of ``name`` in ``target`` ({} when the set does not exist)."""
    out = {}
    members = False
    for ln in run(lab, target, ["ipset", "list", name]).splitlines():
        if ln.startswith("Members:"):
            members = True
        elif members and ln.strip():
            ip, _, rest = ln.partition(" ")
            m = re.search(r'comment "([^"]*)"', rest)
            out[ip] = m.group(1) if m else ""
    return out


@dataclass(frozen=True)
class Listener:
    port: int
    fwmark: int
    pid: int | None


def listeners(lab: str, target: str) -> list[Listener]:
    """TCP listeners in ``target``'s netns with their socket mark and owning pid (``ss -tlnHep``)."""
    out = []
    for ln in run(lab, target, ["ss", "-tlnHep"]).splitlines():
        parts = ln.split()
        if len(parts) < 4:
            continue
        port = int(parts[3].rsplit(":", 1)[1])
        mark = re.search(r"fwmark:(0x[0-9a-f]+)", ln)
        pid = re.search(r"pid=(\d+)", ln)
        out.append(Listener(port, int(mark.group(1), 16) if mark else 0, int(pid.group(1)) if pid else None))
    return out


def conntrack(lab: str, target: str) -> list[str]:
    """``conntrack -L`` lines of ``target``'s netns ([] when conntrack is not installed)."""
    return [ln for ln in run(lab, target, ["conntrack", "-L"]).splitlines() if ln.strip()]


def host_veth(lab: str, node: str, pod_ip: str) -> str:
    """The node-side veth of the pod with ``pod_ip`` (its /32 route in the node's main table)."""
    for ln in routes(lab, node, "main"):
        p = ln.split()
        if p[0] == pod_ip and "dev" in p:
            return p[p.index("dev") + 1]
    return ""


def processes(lab: str) -> dict[str, dict]:
    """name -> {pid, ready, restarts, ...} from the lab's supervisor ({} when it is unreachable)."""
    try:
        st = supervisor.request(lab, {"op": "status"}, timeout=3)
    except (OSError, ValueError):
        return {}
    return {p["name"]: p for p in st["processes"]}


def pid_state(pid: int) -> str:
    """The one-letter state of a process (R, S, T = stopped, Z, ...), '' when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def netns_fds(pid: int) -> set[int]:
    """Inodes of the network namespaces ``pid`` holds open as file descriptors.

    A netns fd opened from its bind mount shows as ``/run/netns/<name>`` in ``/proc/<pid>/fd``,
    one received from ``/proc/<pid>/ns/net`` as ``net:[<inode>]``; ``stat`` through the link gives
    the namespace's inode either way.
    """
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith(("net:[", "/run/netns/", "/var/run/netns/")):
                out.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
        except OSError:
            continue
    return out


def netns_inode(lab: str, target: str) -> int:
    return os.stat(netns_path(lablib.target_netns(lab, target))).st_ino


@dataclass(frozen=True)
class AccessLine:
    time: datetime.datetime
    fields: dict[str, str]

    def get(self, key: str) -> str:
        return self.fields.get(key, "")


def access_log(lab: str, node: str, since: float = 0.0) -> list[AccessLine]:
    """ztunnel-<node>'s ``connection complete`` lines at or after ``since`` (epoch seconds)."""
    path = os.path.join(names.state_dir(lab), "logs", f"ztunnel.{node}.access.log")
    out: list[AccessLine] = []
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return out
    for ln in lines:
        parts = ln.rstrip("\n").split("\t")
        if len(parts) < 5 or parts[3] != "connection complete":
            continue
        t = datetime.datetime.strptime(parts[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
        if t.timestamp() + 1e-3 < since:
            continue
        out.append(AccessLine(t, {k: v.strip('"') for k, v in _FIELD.findall(parts[4])}))
    return out


@dataclass(frozen=True)
class Seen:
    """One TCP segment a capture saw: where, and Geneve's VNI when it rode in a tunnel."""

    netns: str
    device: str
    src: str
    sport: int
    dst: str
    dport: int
    syn: bool
    vni: int | None


def captured(directory: str) -> list[Seen]:
    """Every TCP segment in ``directory/merged.pcapng`` (``netlab capture``), Geneve opened."""

    path = os.path.join(directory, "merged.pcapng")
    if not os.path.exists(path):
        return []
    out = []
    for s in read_merged(path):
        t = decode(s.data)
        if t is not None:
            out.append(Seen(s.netns, s.device, ntoa(t.src), t.sport, ntoa(t.dst), t.dport, t.syn, t.vni))
    return out


def log_text(lab: str, filename: str) -> str:
    try:
        with open(os.path.join(names.state_dir(lab), "logs", filename), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
