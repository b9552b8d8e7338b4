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

    def path(self) -> str:
        return os.path.join(names.state_dir(self.lab), "lab.json")

    def save(self) -> None:
        os.makedirs(names.state_dir(self.lab), exist_ok=True)
        write_atomic(self.path(), json.dumps(asdict(self), indent=1, sort_keys=True))


def load_record(lab: str) -> LabRecord | None:
    try:
        with open(os.path.join(names.state_dir(lab), "lab.json")) as f:
            return LabRecord(**json.load(f))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        raise LabError(f"lab {lab}: state record is unreadable ({e}); run `netlab gc`") from None


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
        with open(os.path.join(names.state_dir(lab), "supervisor.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
