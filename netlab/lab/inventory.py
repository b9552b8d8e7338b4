"""Which labs exist, which objects are whose, and whether a lab's supervisor is its own.

Everything here is found by exact markers: a lab's netns are those named
``names.lab_prefix(lab) + member`` (the separator cannot occur in a lab name, so no other
lab's netns ever matches), plus the netns its record lists. Nothing is matched by a guess.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from netlab import names
from netlab.apply import hosts as hosts_mod
from netlab.apply import netns as netns_mod
from netlab.lab.state import LabRecord, UnreadableRecord, load_record, state_labs, supervisor_pid
from netlab.linux import reaper

SUPERVISOR_MODULE = "netlab.runtime.supervisor"


def known_labs() -> list[str]:
    """Labs with a state dir or at least one netns carrying their marker."""
    labs = set(state_labs())
    for n in netns_mod.list_netns():
        lab = names.lab_from_netns(n)
        if lab:
            labs.add(lab)
    return sorted(labs)


def lab_netns(lab: str, rec: LabRecord | None = None) -> list[str]:
    """Every netns of ``lab`` that exists: by its exact prefix, and those its record lists
    (the record's list is the lab's own by construction, whatever scheme named them)."""
    found = set(netns_mod.list_netns(names.lab_prefix(lab)))
    if rec is not None:
        found |= {n for n in rec.members.values() if n.startswith(names.MARKER) and netns_mod.inode(n)}
    return sorted(found)


def lab_hosts_dirs(lab: str) -> list[str]:
    return hosts_mod.lab_hosts_dirs(names.lab_prefix(lab))


def supervisor_of(lab: str) -> int | None:
    """The pid in ``supervisor.pid`` if that process is this lab's supervisor, else None.

    A stale pid file can name any process by now, even another lab's supervisor: the
    process must run the supervisor module with this lab as its argument.
    """
    pid = supervisor_pid(lab)
    if not pid or not reaper.alive(pid):
        return None
    argv = reaper.cmdline(pid)
    if SUPERVISOR_MODULE not in argv or argv[-1:] != [lab]:
        return None
    return pid


@dataclass(frozen=True)
class SupervisorHealth:
    """What became of a lab's supervisor, as a user should read it."""

    pid: int | None
    state: str  # running | stopped | unreachable | gone

    @property
    def alive(self) -> bool:
        return self.state != "gone"


def supervisor_health(lab: str, reachable: bool) -> SupervisorHealth:
    """``reachable``: did it answer on its socket? If not, say why: SIGSTOPped, not answering
    (or we may not connect: not root), or gone."""
    pid = supervisor_of(lab)
    if pid is None:
        return SupervisorHealth(None, "gone")
    if reachable:
        return SupervisorHealth(pid, "running")
    if reaper.state_of(pid) == "T":
        return SupervisorHealth(pid, "stopped")
    return SupervisorHealth(pid, "unreachable")


def creator_alive(rec: LabRecord) -> bool:
    """Is the ``netlab up`` that started creating ``rec`` still running? (Records written
    before the creator was recorded say 0: assume it may be, and leave the lab alone.)"""
    if not rec.creator_pid:
        return True
    return reaper.same_process(rec.creator_pid, rec.creator_start)


def stale_probes() -> list[str]:
    """Kernel-probe netns whose maker is gone (a probe killed with SIGKILL)."""
    out = []
    for n in netns_mod.list_netns(names.PROBE):
        pid = names.probe_pid(n)
        if pid is not None and pid != os.getpid() and not reaper.alive(pid):
            out.append(n)
    return out


def load_record_or_none(lab: str) -> LabRecord | None:
    """The record, or None when missing or unreadable (teardown does not need it)."""
    try:
        return load_record(lab)
    except UnreadableRecord:
        return None
