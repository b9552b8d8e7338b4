"""Take the mesh design off a running lab, the way istio-cni's agent does when it stops.

``netlab down LAB --design-only`` on a node-routing lab runs ``cleanupNode``
(:func:`netlab.plan.teardown.node_teardown`) on every node, each removal logged in the
node's ``istio-cni`` log, then lets the ztunnel pods go (process stopped, netns deleted:
"nothing is removed inside the ztunnel netns, it disappears with the pod"). The pods keep
running and talk directly through kube-proxy: the lab is then exactly the ``--mode none`` lab
of the same topology, and its record says so.

With the userspace Geneve forwarder, the forwarder is the rest of ``istioin``/``istioout``:
it is stopped when the teardown reaches its "set down and delete the tunnels" step, not before.

The record is saved after each node, so a failure halfway leaves it true to the kernel; a
second run picks up where the first stopped (absent objects and processes are skipped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from netlab import names
from netlab.apply import netns as netns_mod
from netlab.apply import teardown
from netlab.apply.iptables import backend_variant
from netlab.errors import LabError, NetlabError
from netlab.lab.enroll import cni_log, set_registry_protocol
from netlab.lab.lock import lab_lock
from netlab.lab.state import LabRecord, load_record, update_record
from netlab.plan.teardown import Step, node_teardown
from netlab.runtime import supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DesignTeardown:
    lab: str
    removed: dict[str, list[str]] = field(default_factory=dict)  # node -> rendered steps done
    processes_removed: list[str] = field(default_factory=list)
    netns_removed: list[str] = field(default_factory=list)


def _ask(lab: str, req: dict) -> dict:
    try:
        resp = supervisor.request(lab, req)
    except OSError as e:
        raise LabError(f"lab {lab}: supervisor not reachable ({e.strerror or e})",
                       hint=f"`netlab down {lab}` removes the whole lab") from None
    if not resp.get("ok"):
        raise LabError(f"lab {lab}: supervisor refused {req.get('op')} {req.get('name', '')}: {resp.get('error')}")
    return resp


def remove_design(lab: str) -> DesignTeardown:
    """Under the lab's lock: no ``up``, ``down`` or ``gc`` works on the lab meanwhile."""
    with lab_lock(lab, "down --design-only"):
        return _remove_design(lab)


def _remove_design(lab: str) -> DesignTeardown:
    rec = load_record(lab)
    if rec is None:
        raise LabError(f"no lab named {lab!r}", hint="`netlab status` lists the labs")
    if rec.mode != "node-routing":
        raise LabError(f"lab {lab} runs mode {rec.mode}: --design-only undoes the node-routing design "
                       "(istio-cni cleanupNode); in inpod mode use `netlab unenroll`",
                       hint=f"`netlab down {lab}` removes the whole lab")
    # what the lab becomes, checked before anything is touched (the topology file may be gone)
    from netlab.lab.lifecycle import make_plan, plan_sha

    try:
        sha = plan_sha(make_plan(rec.topology, name=lab, mode="none", istio_version=None, encap="auto",
                                 probe=False))
    except NetlabError as e:
        raise LabError(f"lab {lab}: cannot rebuild its topology {rec.topology} as --mode none: {e}",
                       hint=f"`netlab down {lab}` removes the whole lab") from None
    variant = backend_variant(rec.iptables_backend)
    running = {p["name"] for p in _ask(lab, {"op": "status"})["processes"]}
    result = DesignTeardown(lab)
    steps = node_teardown(rec.istio_version or "1.20")
    for node in sorted(rec.nodes):
        nns = names.netns(lab, node)

        def logged(s: Step, done: bool, node: str = node) -> None:
            if done:
                cni_log(lab, node, f"cleanupNode: {s.render()}")

        def at_tunnels(s: Step, node: str = node) -> None:
            if s.kind == "link-down":  # the userspace forwarder is the rest of istioin/istioout
                _remove_process(lab, f"geneve/{node}", running, result.processes_removed)

        cni_log(lab, node, "Cleaning up node: removing ambient redirection")
        done = teardown.run(nns, steps, variant=variant, on_step=logged, before_netlink=at_tunnels)
        result.removed[node] = [s.render() for s in done]
        _remove_process(lab, f"ztunnel/{node}", running, result.processes_removed)
        zpod = names.ztunnel_pod(node)
        zns = rec.members.get(zpod)
        if zns:
            netns_mod.remove(zns)
            result.netns_removed.append(zns)

        def forget_pod(r: LabRecord, zpod: str = zpod) -> None:
            ns = r.members.pop(zpod, None)
            r.roles.pop(zpod, None)
            if ns:
                r.netns.pop(ns, None)

        update_record(lab, forget_pod, during="the design teardown")
        log.debug("%s: node-routing design removed (%d objects)", node, len(done))

    def unmeshed(r: LabRecord) -> None:
        set_registry_protocol(lab, False)
        for info in r.pods.values():
            info["ambient"] = False
        r.plan_sha = sha
        r.mode, r.istio_version, r.encap = "none", None, None

    update_record(lab, unmeshed, during="the design teardown")
    return result


def _remove_process(lab: str, name: str, running: set[str], out: list[str]) -> None:
    if name in running:
        _ask(lab, {"op": "remove", "name": name})
        running.discard(name)
        out.append(name)

