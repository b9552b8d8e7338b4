"""What labs exist and how they are doing: one typed result per lab, for tables and ``--json``.

Health is read, never assumed: a lab is ``up`` only if its own supervisor answers, every
netns its record lists exists, no process is crash-looping and (in-pod) ztunnel has
acknowledged every enrolled pod. Otherwise the state says what is wrong and what to run. An
unreadable ``lab.json`` makes that one lab ``unreadable``; the others are shown as usual.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from netlab.lab.inventory import known_labs, lab_netns, supervisor_health
from netlab.lab.mesh import MeshReadiness, mesh_readiness
from netlab.lab.state import LabRecord, UnreadableRecord, load_record
from netlab.runtime import supervisor

CRASH_LOOP_RESTARTS = 3


@dataclass(frozen=True)
class ProcessStatus:
    """One supervised process as the supervisor reports it."""

    name: str
    pid: int | None
    ns: str
    ready: bool
    restarts: int
    stopped: bool
    exit_codes: list[int]

    @classmethod
    def from_supervisor(cls, d: dict) -> ProcessStatus:
        return cls(d["name"], d["pid"], d["ns"], d["ready"], d["restarts"], d["stopped"], list(d["exit_codes"]))

    @property
    def crash_looping(self) -> bool:
        return not self.stopped and not self.ready and self.restarts >= CRASH_LOOP_RESTARTS


@dataclass(frozen=True)
class LabStatus:
    """``netlab status --json`` prints :meth:`as_json` of each (keys as before, plus
    ``problems`` and, in-pod, ``mesh``)."""

    lab: str
    state: str
    netns: int
    mode: str | None = None
    istio_version: str | None = None
    encap: str | None = None
    topology: str | None = None
    pods: int = 0
    processes: list[ProcessStatus] = field(default_factory=list)
    supervisor: str = "down"
    enrolled: list[str] | None = None
    problems: list[str] = field(default_factory=list)
    mesh: MeshReadiness | None = None

    @property
    def ready(self) -> int:
        return sum(1 for p in self.processes if p.ready)

    def as_json(self) -> dict:
        d = asdict(self)
        d["ready"] = self.ready
        if self.enrolled is None:
            del d["enrolled"]
        if self.mesh is None:
            del d["mesh"]
        return d


def lab_status(lab: str) -> LabStatus:
    try:
        rec = load_record(lab)
    except UnreadableRecord as e:
        return LabStatus(lab, "unreadable", len(lab_netns(lab)), problems=[e.message, f"run `netlab down {lab}`"])
    nss = lab_netns(lab, rec)
    if rec is None:
        return LabStatus(lab, "leftover", len(nss), problems=[f"no record: run `netlab down {lab}`"])
    return _recorded(rec, nss)


def _recorded(rec: LabRecord, nss: list[str]) -> LabStatus:
    lab = rec.lab
    base = LabStatus(lab, rec.state, len(nss), rec.mode, rec.istio_version, rec.encap, rec.topology, len(rec.pods),
                     enrolled=sorted(p for p, v in rec.pods.items() if v["ambient"]))
    try:
        st = supervisor.request(lab, {"op": "status"}, timeout=2)
    except (OSError, ValueError):
        return _unanswered(base)
    procs = [ProcessStatus.from_supervisor(p) for p in st["processes"]]
    problems = []
    missing = sorted(set(rec.members.values()) - set(nss))
    if missing:
        problems.append(f"{len(missing)} netns missing: {', '.join(missing[:5])}")
    looping = [p.name for p in procs if p.crash_looping]
    if looping:
        problems.append(f"crash-looping: {', '.join(looping[:5])}")
    mesh = mesh_readiness(lab) if rec.mode == "inpod" and rec.state == "up" else None
    if mesh and mesh.waiting:
        problems.append(f"mesh not ready for {len(mesh.waiting)} pods: {', '.join(mesh.waiting[:5])}")
    state = "degraded" if problems and rec.state == "up" else rec.state
    return LabStatus(**{**base.__dict__, "state": state, "processes": procs, "supervisor": f"pid {st['pid']}",
                        "problems": problems, "mesh": mesh})


def _unanswered(base: LabStatus) -> LabStatus:
    """The supervisor did not answer: gone, stopped, or we may not ask (not root)."""
    h = supervisor_health(base.lab, reachable=False)
    lab = base.lab
    if h.state == "gone":
        if base.state == "creating":
            return base
        state, problem = "broken", f"supervisor gone: `netlab up` restarts it, `netlab down {lab}` removes the lab"
        sup = "down"
    elif h.state == "stopped":
        state, problem = "broken", f"supervisor pid {h.pid} is stopped (SIGSTOP): `kill -CONT {h.pid}`"
        sup = f"pid {h.pid} (stopped)"
    elif os.geteuid() != 0:
        state, problem, sup = base.state, "not root: process health unknown (run status as root)", f"pid {h.pid}"
    else:
        state, problem = "broken", f"supervisor pid {h.pid} does not answer"
        sup = f"pid {h.pid} (not answering)"
    return LabStatus(**{**base.__dict__, "state": state, "supervisor": sup, "problems": [problem]})


def all_status() -> list[LabStatus]:
    return [lab_status(x) for x in known_labs()]
