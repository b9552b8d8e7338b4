"""A lab's state directory and its record (``lab.json``): what ``up`` made, for everyone else.

The record is a convenience, not the source of truth: ``down`` and ``gc`` also find a lab's
objects by marker (netns names, /etc/netns dirs) and by netns inode (processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from netlab import names
from netlab.errors import LabError
from netlab.linux.filelock import exclusive
from netlab.linux.files import write_atomic


@dataclass
class LabRecord:
    lab: str
    topology: str
    mode: str
    istio_version: str | None
    encap: str | None
    plan_sha: str
    iptables_backend: str = "restore"
    netns: dict[str, int] = field(default_factory=dict)  # name -> inode
    members: dict[str, str] = field(default_factory=dict)  # TARGET -> netns
    roles: dict[str, str] = field(default_factory=dict)  # TARGET -> underlay/node/pod/ztunnel
    pods: dict[str, dict] = field(default_factory=dict)  # pod -> {node, ip, namespace, ambient, uid}
    nodes: dict[str, dict] = field(default_factory=dict)  # node -> {gateway, ztunnel_ip}
    created: float = 0.0
    state: str = "creating"  # creating -> up
    # the `netlab up` that is making the lab (pid + start time: a recycled pid is not it);
    # gc removes a lab left `creating` once this process is gone
    creator_pid: int = 0
    creator_start: int | None = None

    def path(self) -> str:
        return names.record_path(names.state_dir(self.lab))

    def save(self) -> None:
        os.makedirs(names.state_dir(self.lab), exist_ok=True)
        write_atomic(self.path(), json.dumps(asdict(self), indent=1, sort_keys=True))


class UnreadableRecord(LabError):
    """``lab.json`` exists but cannot be parsed: the lab is shown as unreadable, and ``down``
    (or ``gc``, once no supervisor serves it) removes it by its markers."""


def load_record(lab: str) -> LabRecord | None:
    try:
        with open(names.record_path(names.state_dir(lab))) as f:
            return LabRecord(**json.load(f))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnreadableRecord(f"lab {lab}: state record is unreadable ({msg})",
                               hint=f"`netlab down {lab}` removes the lab by its markers") from None


@contextlib.contextmanager
def state_lock(lab: str) -> Iterator[None]:
    """One writer at a time of ``lab.json`` and ``registry.json`` (read-modify-write), across
    threads and processes: concurrent ``netlab enroll`` runs must not undo each other."""
    with exclusive(os.path.join(names.state_dir(lab), "enroll.lock"), 0o644):
        yield


def update_record(lab: str, change: Callable[[LabRecord], None], *, during: str) -> None:
    """Re-read ``lab.json`` under :func:`state_lock`, apply ``change``, save it. ``change`` may
    rewrite ``registry.json`` too (same lock); it must not take the lock again (flock on a
    second fd of this process would wait for itself)."""
    with state_lock(lab):
        rec = load_record(lab)
        if rec is None:
            raise LabError(f"lab {lab} went away during {during}")
        change(rec)
        rec.save()


def state_labs() -> list[str]:
    try:
        return sorted(d for d in os.listdir(names.STATE_ROOT)
                      if os.path.isdir(os.path.join(names.STATE_ROOT, d)))
    except FileNotFoundError:
        return []


def remove_state(lab: str) -> None:
    d = names.state_dir(lab)
    if os.path.dirname(d) != names.STATE_ROOT.rstrip("/") or not lab:
        raise ValueError(f"refusing to remove {d}")
    shutil.rmtree(d, ignore_errors=True)


def supervisor_pid(lab: str) -> int | None:
    try:
        with open(names.supervisor_pid_path(names.state_dir(lab))) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def write_supervisor_pid(lab: str, pid: int) -> None:
    """The one writer of ``supervisor.pid`` (``up`` and a supervisor restart, right after the
    spawn: the pid is known before the supervisor runs a line of its own)."""
    write_atomic(names.supervisor_pid_path(names.state_dir(lab)), f"{pid}\n")
