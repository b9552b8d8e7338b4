"""Enroll a pod in the mesh at run time, or take it out: the ambient label flipped live.

node-routing does what istio-cni's ``AddPodToMesh``/``DelPodFromMesh`` did on the node
(ipset member, table-100 route, rp_filter on the pod's veth) and logs it the same way;
inpod asks the node's CNI agent, which writes the rules inside the pod netns and tells
ztunnel over ZDS. Either way the registry ztunnel reads is updated (protocol HBONE/TCP).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

from netlab import names
from netlab.apply.ipset import add_entry, del_entry, open_ipset
from netlab.apply.netlink import NetnsLinks
from netlab.apply.sysctl import apply_sysctls
from netlab.errors import LabError
from netlab.lab.state import LabRecord, load_record, update_record
from netlab.linux.files import write_atomic
from netlab.plan import noderouting
from netlab.plan.objects import Sysctl
from netlab.plan.registry import RegistryDoc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnrollResult:
    lab: str
    pod: str
    enrolled: bool
    changed: bool
    actions: tuple[str, ...] = ()


def cni_log(lab: str, node: str, msg: str) -> None:
    ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with open(os.path.join(names.state_dir(lab), "logs", f"istio-cni.{node}.log"), "a") as f:
        f.write(f"{ts}\tinfo\tambient\t{msg}\n")


def set_registry_protocol(lab: str, on: bool, pods: set[str] | None = None) -> None:
    """Mark ``pods`` (default: every workload) HBONE or TCP in the registry ztunnel reads.

    Call it under :func:`netlab.lab.state.state_lock`: it is a read-modify-write.
    """
    path = names.registry_path(names.state_dir(lab))
    with open(path) as f:
        reg = RegistryDoc.from_json(f.read())
    write_atomic(path, reg.with_protocol(on, pods).to_json())


def set_enrollment(lab: str, pod: str, on: bool) -> EnrollResult:
    rec = load_record(lab)
    if rec is None:
        raise LabError(f"no lab named {lab!r}")
    if pod not in rec.pods:
        raise LabError(f"lab {lab}: no pod named {pod!r}", hint="pods: " + ", ".join(sorted(rec.pods)))
    if rec.mode == "none":
        raise LabError(f"lab {lab} runs without a mesh (--mode none): nothing to enroll in")
    info = rec.pods[pod]
    if bool(info.get("ambient")) == on:
        return EnrollResult(lab, pod, on, False)
    if rec.mode == "node-routing":
        actions = _node_routing(rec, pod, on)
    else:
        from netlab.runtime.cniagent import agent as cniagent

        sock = names.cni_socket(names.state_dir(lab), info["node"])
        resp = cniagent.plugin_event(sock, "add" if on else "del", pod)
        if not resp.get("ok", False):
            raise LabError(f"lab {lab}: CNI agent on {info['node']} refused: {resp.get('error', resp)}")
        actions = tuple(resp.get("actions", ()))
    def enrolled(fresh: LabRecord) -> None:  # another enroll may have saved the record meanwhile
        set_registry_protocol(lab, on, {pod})
        fresh.pods[pod]["ambient"] = on

    # the kernel and agent work above may run for several pods at once; the bookkeeping may not
    update_record(lab, enrolled, during=f"the enrollment of {pod}")
    return EnrollResult(lab, pod, on, True, actions)


def _node_routing(rec: LabRecord, pod: str, on: bool) -> tuple[str, ...]:
    info = rec.pods[pod]
    node = info["node"]
    nns = names.netns(rec.lab, node)
    gw = rec.nodes[node]["gateway"]
    uid = info["uid"]
    ns = info["namespace"]
    route = noderouting.pod_route(nns, info["ip"], gw)
    actions = []
    ips = open_ipset(nns)
    try:
        with NetnsLinks(nns) as nl:
            if on:
                cni_log(rec.lab, node, f"Adding pod '{pod}/{ns}' ({uid}) to ipset")
                add_entry(ips, noderouting.IPSET, info["ip"], uid, ns=nns)
                actions.append(f"ipset add {noderouting.IPSET} {info['ip']}")
                cni_log(rec.lab, node, f"Adding route for {pod}/{ns}: [table 100 {info['ip']}/32 via "
                                        f"{noderouting.ZT_INBOUND_TUN_IP} dev {noderouting.INBOUND_TUN} src {gw}]")
                nl.add_route(route)
                actions.append(route.render())
                veth = names.pod_host_veth(rec.lab, pod)
                apply_sysctls(nns, [Sysctl(nns, f"net.ipv4.conf.{veth}.rp_filter", "0")])
            else:
                cni_log(rec.lab, node, f"Removing pod '{pod}/{ns}' ({uid}) from ipset")
                del_entry(ips, noderouting.IPSET, info["ip"])
                actions.append(f"ipset del {noderouting.IPSET} {info['ip']}")
                cni_log(rec.lab, node, f"Removing route for {pod}/{ns}: [table 100 {info['ip']}/32 via "
                                        f"{noderouting.ZT_INBOUND_TUN_IP} dev {noderouting.INBOUND_TUN} src {gw}]")
                nl.del_route(route)
                actions.append("route del" + route.render()[len("route add"):])
    finally:
        ips.close()
    return tuple(actions)
