"""Tearing labs down: ``down`` (one lab, all of it) and ``gc`` (crashed labs only).

Both hold the lab's lock (:mod:`netlab.lab.lock`) and never need the record to be intact:
netns are found by their exact marker prefix and the record's member list, processes by
netns inode (also of a netns deleted behind netlab's back), files by marker. ``gc`` removes a
lab only when nothing is working on it: its lock is free, its ``up`` is gone (state
``creating``) or its own supervisor is (state ``up``; a supervisor is the lab's own only if
it runs with the lab's name as its argument: a stale ``supervisor.pid`` proves nothing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from netlab import names
from netlab.apply import hosts as hosts_mod
from netlab.apply import netns as netns_mod
from netlab.errors import LabError, PreflightError
from netlab.lab import interrupt
from netlab.lab.inventory import (
    creator_alive,
    known_labs,
    lab_hosts_dirs,
    lab_netns,
    load_record_or_none,
    stale_probes,
    supervisor_of,
)
from netlab.lab.lock import lab_lock, stale_locks, try_lab_lock
from netlab.lab.state import UnreadableRecord, load_record, remove_state
from netlab.linux import reaper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownResult:
    lab: str
    netns_removed: list[str] = field(default_factory=list)
    processes_stopped: list[int] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def require_root() -> None:
    if os.geteuid() != 0:
        raise PreflightError("netlab needs root to create network namespaces",
                             hint="run it with sudo (or as root); `netlab up --dry-run` works without")


def down(lab: str) -> DownResult:
    """Remove everything of ``lab``: processes, netns, hosts files, state. Safe to repeat."""
    require_root()
    # a half-done down is worse than a slow one: Ctrl-C, SIGTERM and SIGHUP wait until it ends
    with interrupt.ignored(), lab_lock(lab, "down"):
        return down_locked(lab)


def exists(lab: str) -> bool:
    return lab in known_labs() or bool(lab_netns(lab)) or bool(lab_hosts_dirs(lab))


def _stop_supervisor(lab: str) -> int | None:
    pid = supervisor_of(lab)
    if pid is None:
        return None
    for s in (signal.SIGTERM, signal.SIGCONT):  # SIGCONT: a stopped supervisor must see the TERM
        try:
            os.kill(pid, s)
        except ProcessLookupError:
            return pid
    deadline = time.monotonic() + 6
    while reaper.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if reaper.alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


def down_locked(lab: str) -> DownResult:
    t0 = time.monotonic()
    if not exists(lab):
        raise LabError(f"no lab named {lab!r}", hint="`netlab status` lists the labs")
    stopped: list[int] = []
    pid = _stop_supervisor(lab)
    if pid:
        stopped.append(pid)
    rec = load_record_or_none(lab)  # an unreadable record must not stop the teardown
    nss = lab_netns(lab, rec)
    inodes = {i for i in (netns_mod.inode(n) for n in nss) if i}
    if rec:  # also the netns deleted behind netlab's back: processes may still be inside
        inodes |= {i for i in rec.netns.values() if i}
    # one /proc scan: threads in a lab netns, or an fd on one (recorded pids are found this way
    # too, and a recorded pid that left the lab's netns is somebody else's process by now)
    victims = reaper.pids_in(inodes, {os.path.join(d, n) for n in nss for d in ("/run/netns", "/var/run/netns")})
    stopped += sorted(reaper.terminate(victims))
    for n in nss:
        netns_mod.remove(n)
    files = []
    for d in lab_hosts_dirs(lab):
        hosts_mod.remove_hosts(d)
        files.append(names.etc_netns_dir(d))
    if os.path.isdir(names.state_dir(lab)):
        remove_state(lab)
        files.append(names.state_dir(lab))
    return DownResult(lab, nss, stopped, files, time.monotonic() - t0)


def gc_reason(lab: str) -> str | None:
    """Why ``gc`` may remove ``lab`` (its lock is held by the caller), or None to keep it."""
    try:
        rec = load_record(lab)
    except UnreadableRecord:
        return None if supervisor_of(lab) else "unreadable record, no supervisor"
    if rec is None:
        return None if supervisor_of(lab) else "leftovers without a record"
    if rec.state == "creating":
        return None if creator_alive(rec) else f"left half-built (its up, pid {rec.creator_pid}, is gone)"
    return None if supervisor_of(lab) else "supervisor gone"


def gc(only: Callable[[str], bool] | None = None) -> list[DownResult]:
    """Remove crashed labs: ``creating`` ones whose ``up`` is gone, others whose supervisor is.

    A lab whose lock is held (an ``up``, ``down`` or another ``gc`` at work) is never touched,
    nor one whose creator is alive. ``only`` limits gc to the labs it accepts (tests use it
    to keep to their own labs on a shared machine).
    """
    require_root()
    keep = only or (lambda _lab: True)
    out = []
    for lab in known_labs():
        if not keep(lab):
            continue
        with try_lab_lock(lab, "gc") as mine:
            if not mine:
                log.info("gc: %s is busy, left alone", lab)
                continue
            if not exists(lab):  # removed by a `down` between the listing and the lock
                continue
            why = gc_reason(lab)
            if why:
                log.info("gc: removing %s (%s)", lab, why)
                out.append(down_locked(lab))
    for probe in stale_probes():
        netns_mod.remove(probe)
        out.append(DownResult(probe, netns_removed=[probe]))
    for lab in stale_locks():  # a lock file whose holder was killed: taking it removes it
        if keep(lab):
            with try_lab_lock(lab, "gc"):
                pass
    # hosts dirs whose netns is gone and that no lab claims
    for d in hosts_mod.lab_hosts_dirs(names.MARKER):
        owner = names.lab_from_netns(d)
        if only is not None and not (owner and keep(owner)):
            continue
        if not os.path.exists(os.path.join("/var/run/netns", d)):
            hosts_mod.remove_hosts(d)
            out.append(DownResult(d, files_removed=[names.etc_netns_dir(d)]))
    return out
