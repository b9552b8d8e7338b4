"""What the supervisor runs: one typed spec per lab process, as written to ``processes.json``.

``up`` builds them (:mod:`netlab.lab.specs`), the supervisor reads them back with
:meth:`ProcessSpec.from_json` (the one constructor from the file or a ``start`` request),
so a misspelt or missing field fails loudly at the boundary instead of as a ``KeyError``
in a child later. The JSON keys are the field names; absent optional fields are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Ready = Literal["pipe", "alive"]


@dataclass(frozen=True)
class Workload:
    """An in-process workload (run from the fork, no interpreter start-up per pod)."""

    app: str
    pod: str
    port: int
    version: str = "v1"


@dataclass(frozen=True)
class ProcessSpec:
    """One lab process: its name, its netns, and either ``argv`` or a ``workload``.

    ``ready``: ``pipe`` (the process writes a line to fd ``NETLAB_READY_FD`` when it serves)
    or ``alive`` (ready once alive for a moment). ``hosts``: see the lab hosts file as
    /etc/hosts. ``comm``: the name ``ps`` shows.
    """

    name: str
    ns: str
    argv: tuple[str, ...] | None = None
    workload: Workload | None = None
    ready: Ready = "alive"
    hosts: bool = True
    comm: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.argv is None) == (self.workload is None):
            raise ValueError(f"process {self.name}: exactly one of argv and workload")
        if self.ready not in ("pipe", "alive"):
            raise ValueError(f"process {self.name}: ready must be pipe or alive, not {self.ready!r}")

    @classmethod
    def from_json(cls, d: dict) -> ProcessSpec:
        known = {"name", "ns", "argv", "workload", "ready", "hosts", "comm", "env"}
        extra = set(d) - known
        if extra:
            raise ValueError(f"process spec {d.get('name')!r}: unknown fields {sorted(extra)}")
        wl = d.get("workload")
        return cls(name=d["name"], ns=d["ns"], argv=tuple(d["argv"]) if d.get("argv") is not None else None,
                   workload=Workload(wl["app"], wl["pod"], int(wl["port"]), wl.get("version", "v1")) if wl else None,
                   ready=d.get("ready", "alive"), hosts=d.get("hosts", True), comm=d.get("comm"),
                   env=dict(d.get("env") or {}))

    def to_json(self) -> dict:
        d: dict = {"name": self.name, "ns": self.ns, "ready": self.ready, "hosts": self.hosts}
        if self.argv is not None:
            d["argv"] = list(self.argv)
        if self.workload is not None:
            w = self.workload
            d["workload"] = {"app": w.app, "pod": w.pod, "port": w.port, "version": w.version}
        if self.comm is not None:
            d["comm"] = self.comm
        if self.env:
            d["env"] = dict(self.env)
        return d
