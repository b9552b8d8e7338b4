"""Run-time enrollment, measured: the kernel objects one pod's enrollment adds or removes.

The pod is taken out of the mesh first (``netlab unenroll``), its node, its own netns and its
node's ztunnel pod are read, the pod is enrolled again and timed, and the same netns are read
once more: the diff is what the design writes per pod. In-pod the CNI agent answers before
ztunnel has opened the pod's listeners, so the time until ``15001`` listens in the pod's netns
is measured too.
"""

from __future__ import annotations

import time

from netlab.lab.enroll import set_enrollment
from netlab.lab.lifecycle import record_of
from netlab.lab.state import LabRecord
from netlab.observe.report.objects import collect, diff
from netlab.observe.report.schema import Enrollment, ObjectChange
from netlab.observe.show import run_in


def _members(rec: LabRecord, pod: str) -> list[str]:
    node = rec.pods[pod]["node"]
    return [m for m in (node, pod, f"ztunnel-{node}") if m in rec.members]


def pick_pod(pods: dict[str, dict], busy: set[str]) -> str | None:
    """An enrolled pod the scenario does not use (the sorted first), so the diff is all its own."""
    free = sorted(p for p, v in pods.items() if v.get("ambient") and p not in busy)
    return free[0] if free else None


def measure(lab: str, pod: str, timeout: float = 10.0) -> Enrollment:
    rec = record_of(lab)
    members = _members(rec, pod)
    set_enrollment(lab, pod, False)
    before = collect(lab, members)
    t0 = time.monotonic()
    set_enrollment(lab, pod, True)
    seconds = time.monotonic() - t0
    ready = None
    if rec.mode == "inpod":
        ns = rec.members[pod]
        while time.monotonic() - t0 < timeout:
            if run_in(ns, ["ss", "-Hltn", "sport = :15001"]).strip():
                ready = time.monotonic() - t0
                break
            time.sleep(0.005)
    after = collect(lab, members)
    added, removed = diff(before, after)
    return Enrollment(pod=pod, seconds=round(seconds, 4), ready_seconds=None if ready is None else round(ready, 4),
                      added=[ObjectChange(member=m, kind=k, line=ln) for m, k, ln in added],
                      removed=[ObjectChange(member=m, kind=k, line=ln) for m, k, ln in removed])
