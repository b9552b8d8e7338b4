"""Take the mesh design off a running lab, the way istio-cni's agent does when it stops.

``netlab down LAB --design-only`` on a node-routing lab runs ``cleanupNode`` (ambient-facts
A6, :func:`netlab.plan.teardown.node_teardown`) on every node, each removal logged in the
node's ``istio-cni`` log, then lets the ztunnel pods go (process stopped, netns deleted:
"nothing is removed inside the ztunnel netns, it disappears with the pod"). The pods keep
running and talk directly through kube-proxy: the lab is then exactly the ``--mode none`` lab
of the same topology, and its record says so.

With the userspace Geneve forwarder, the forwarder is the rest of ``istioin``/``istioout``:
it is stopped when A6 reaches its "set down and delete the tunnels" step, not before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from netlab import names
from netlab.apply import netns as netns_mod
from netlab.apply import teardown
from netlab.errors import LabError
from netlab.plan.teardown import Step, node_teardown
from netlab.runtime import supervisor
from netlab.runtime.enroll import _cni_log, _state_lock
from netlab.runtime.state import load_record


@dataclass(frozen=True)
class DesignTeardown:
    lab: str
    removed: dict[str, list[str]] = field(default_factory=dict)  # node -> rendered steps done
    processes_removed: list[str] = field(default_factory=list)
    netns_removed: list[str] = field(default_factory=list)


def _remove_process(lab: str, name: str, names_running: set[str], out: list[str]) -> None:
    if name in names_running:
        resp = supervisor.request(lab, {"op": "remove", "name": name})
        if not resp.get("ok"):
            raise LabError(f"lab {lab}: supervisor could not stop {name}: {resp.get('error')}")
        out.append(name)


def remove_design(lab: str) -> DesignTeardown:
    rec = load_record(lab)
    if rec is None:
        raise LabError(f"no lab named {lab!r}", hint="`netlab status` lists the labs")
    if rec.mode != "node-routing":
        raise LabError(f"lab {lab} runs mode {rec.mode}: --design-only undoes the node-routing design "
                       "(istio-cni cleanupNode); in inpod mode use `netlab unenroll`",
                       hint=f"`netlab down {lab}` removes the whole lab")
    variant = "legacy" if rec.iptables_backend == "python-iptables" else None
    running = {p["name"] for p in supervisor.request(lab, {"op": "status"})["processes"]}
    result = DesignTeardown(lab)
    steps = node_teardown(rec.istio_version or "1.20")
    first_link = next(i for i, s in enumerate(steps) if s.kind in ("link-down", "link-delete"))
    for node in sorted(rec.nodes):
        nns = names.netns(lab, node)

        def logged(s: Step, done: bool, node: str = node) -> None:
            if done:
                _cni_log(lab, node, f"cleanupNode: {s.render()}")

        _cni_log(lab, node, "Cleaning up node: removing ambient redirection")
        done = teardown.run(nns, steps[:first_link], variant=variant, on_step=logged)
        _remove_process(lab, f"geneve/{node}", running, result.processes_removed)
        done += teardown.run(nns, steps[first_link:], variant=variant, on_step=logged)
        result.removed[node] = [s.render() for s in done]
        zpod = names.ztunnel_pod(node)
        _remove_process(lab, f"ztunnel/{node}", running, result.processes_removed)
        zns = rec.members.pop(zpod, None)
        rec.roles.pop(zpod, None)
        if zns:
            rec.netns.pop(zns, None)
            netns_mod.remove(zns)
            result.netns_removed.append(zns)
    from netlab.runtime.lab import make_plan, plan_sha

    sha = plan_sha(make_plan(rec.topology, name=lab, mode="none", istio_version=None, encap="auto", probe=False))
    with _state_lock(lab):
        _registry_without_mesh(lab)
        fresh = load_record(lab) or rec
        fresh.members, fresh.roles, fresh.netns = rec.members, rec.roles, rec.netns
        for info in fresh.pods.values():
            info["ambient"] = False
        fresh.plan_sha = sha
        fresh.mode, fresh.istio_version, fresh.encap = "none", None, None
        fresh.save()
    return result


def _registry_without_mesh(lab: str) -> None:
    path = os.path.join(names.state_dir(lab), "registry.json")
    with open(path) as f:
        reg = json.load(f)
    for w in reg["workloads"]:
        w["protocol"] = "TCP"
    with open(path + ".tmp", "w") as f:
        json.dump(reg, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
