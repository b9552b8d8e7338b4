"""Build the whole plan of a lab: the base cluster, then the chosen ambient design on top.

The base cluster (``--mode none``) is what a kind cluster with kindnet and kube-proxy gives:
an underlay bridge joining the nodes, ptp veths from each node to its pods (the node holds
the pod gateway address on every pod veth), routes between nodes' pod CIDRs over the
underlay, and service VIP DNAT in each node's nat table. Designs add objects; they never
rewrite the base.
"""

from __future__ import annotations

from dataclasses import replace

from netlab import names
from netlab.errors import PlanError
from netlab.plan import inpod, noderouting
from netlab.plan.kubeproxy import JUMPS, nat_rules
from netlab.plan.objects import (
    BUILTIN_CHAINS,
    Addr,
    Iptables,
    IptablesTable,
    Link,
    NetnsPlan,
    Plan,
    Process,
    Route,
    Sysctl,
)
from netlab.plan.registry import build_registry
from netlab.topology.model import Topology

MODES = ("none", "node-routing", "inpod")
DEFAULT_VERSION = {"node-routing": "1.20", "inpod": "1.22"}
VERSIONS = {"node-routing": ("1.18", "1.19", "1.20"), "inpod": ("1.21", "1.22", "1.23", "1.24")}
ENCAPS = ("auto", "geneve", "geneve-user", "vxlan")


def hosts_file(topo: Topology) -> str:
    """/etc/hosts for every pod: localhost plus each service's short and full names."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for s in topo.services:
        lines.append(f"{s.vip}\t{s.name} {s.name}.{s.namespace} {s.name}.{s.namespace}.svc {s.hostname}")
    for p in topo.pods:
        lines.append(f"{p.ip}\t{p.name}.{p.namespace}.pod.cluster.local")
    return "\n".join(lines) + "\n"


def check_options(*, lab: str | None, mode: str, istio_version: str | None, encap: str) -> None:
    """The choices a user makes on the command line, each refused with the valid values.

    Called by :func:`build_plan`, and by ``up`` before anything else runs (a kernel probe
    included), so a bad ``--name`` or ``--encap`` never reaches the kernel.

    >>> check_options(lab="demo", mode="inpod", istio_version=None, encap="bogus")
    Traceback (most recent call last):
    netlab.errors.PlanError: unknown encap 'bogus' (choose from auto, geneve, geneve-user, vxlan)
    """
    if lab is not None and not names.LAB_NAME_RE.match(lab):
        raise PlanError(f"lab name {lab!r} must be 1-24 lower-case letters, digits or '-', "
                        "starting and ending with a letter or digit")
    if mode not in MODES:
        raise PlanError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if mode != "none" and istio_version is not None and istio_version not in VERSIONS[mode]:
        raise PlanError(f"mode {mode} reproduces Istio {', '.join(VERSIONS[mode])}, not {istio_version}")
    if encap not in ENCAPS:
        raise PlanError(f"unknown encap {encap!r} (choose from {', '.join(ENCAPS)})")


def build_plan(topo: Topology, *, lab: str | None = None, mode: str = "none",
               istio_version: str | None = None, encap: str = "geneve-user") -> Plan:
    """The desired state of a whole lab.

    ``encap`` must already be concrete (``geneve``, ``geneve-user`` or ``vxlan``): choosing
    ``auto`` needs a kernel probe, which is apply's job.

    >>> from netlab.topology import Topo
    >>> t = Topo("demo").node("n1").pod("a", node="n1", app="sleep").build()
    >>> p = build_plan(t)
    >>> [n.name for n in p.namespaces]
    ['nl-demo.a', 'nl-demo.n1', 'nl-demo.net']
    """
    lab = lab or topo.name
    check_options(lab=lab, mode=mode, istio_version=istio_version, encap=encap)
    istio_version = None if mode == "none" else istio_version or DEFAULT_VERSION[mode]
    if encap not in ("geneve", "geneve-user", "vxlan"):
        raise PlanError(f"encap {encap!r} is not concrete here (auto is resolved by apply)")
    members = [n.name for n in topo.nodes] + [p.name for p in topo.pods] + ["net"]
    if mode != "none":
        members += [names.ztunnel_pod(n.name) for n in topo.nodes]
    seen: set[str] = set()
    for m in members:
        if m in seen:
            raise PlanError(f"name {m!r} is used twice (node, pod and ztunnel-<node> names share one space)")
        seen.add(m)

    ns: dict[str, NetnsPlan] = {}
    under = names.underlay_netns(lab)
    ul = topo.addressing.underlay
    gw_under = str(ul.network_address + 1)
    under_links: list[Link] = [Link(under, "br0", "bridge")]
    for node in topo.nodes:
        under_links.append(Link(under, names.bridge_port(lab, node.name), "veth", peer="eth0",
                                peer_ns=names.netns(lab, node.name), master="br0"))
    ns[under] = NetnsPlan(under, "underlay", "net", links=tuple(under_links),
                          addrs=(Addr(under, "br0", f"{gw_under}/{ul.prefixlen}"),),
                          sysctls=(Sysctl(under, "net.ipv4.ip_forward", "0"),))
    hosts = hosts_file(topo)
    kchains, krules = nat_rules(topo)
    for node in topo.nodes:
        nname = names.netns(lab, node.name)
        links: list[Link] = []
        addrs = [Addr(nname, "eth0", f"{node.underlay_ip}/{ul.prefixlen}")]
        routes = [Route(nname, "default", via=gw_under, dev="eth0")]
        for other in topo.nodes:
            if other.name != node.name:
                routes.append(Route(nname, str(other.pod_cidr), via=str(other.underlay_ip), dev="eth0"))
        pods = [p for p in topo.pods if p.node == node.name]
        for pod in pods:
            veth = names.pod_host_veth(lab, pod.name)
            pns = names.netns(lab, pod.name)
            links.append(Link(nname, veth, "veth", peer=pod.interface, peer_ns=pns))
            addrs.append(Addr(nname, veth, f"{node.gateway}/32"))
            routes.append(Route(nname, str(pod.ip), dev=veth, scope="host"))
            ns[pns] = _pod_ns(pns, pod.name, node, str(pod.ip), pod.interface, hosts)
        sysctls = [Sysctl(nname, "net.ipv4.ip_forward", "1")]
        nat = IptablesTable("nat", tuple(kchains), tuple(JUMPS + krules), BUILTIN_CHAINS["nat"])
        ns[nname] = NetnsPlan(nname, "node", node.name, node=node.name, links=tuple(links),
                              addrs=tuple(addrs), routes=tuple(routes), sysctls=tuple(sysctls),
                              iptables=Iptables(nname, (nat,)), hosts=hosts)

    processes: list[Process] = []
    for pod in topo.pods:
        processes.append(Process(f"pod/{pod.name}", "workload", names.netns(lab, pod.name), args=(
            ("app", pod.app), ("pod", pod.name), ("namespace", pod.namespace),
            ("port", str(pod.port)), ("version", pod.version))))

    if mode != "none":
        # every design runs one ztunnel pod per node, on the node's pod network at .2
        for node in topo.nodes:
            zname = names.ztunnel_pod(node.name)
            zns = names.netns(lab, zname)
            nname = names.netns(lab, node.name)
            veth = names.pod_host_veth(lab, zname)
            n = ns[nname]
            ns[nname] = replace(n, links=(*n.links, Link(nname, veth, "veth", peer="eth0", peer_ns=zns)),
                                addrs=(*n.addrs, Addr(nname, veth, f"{node.gateway}/32")),
                                routes=(*n.routes, Route(nname, str(node.ztunnel_ip), dev=veth, scope="host")))
            ns[zns] = _pod_ns(zns, zname, node, str(node.ztunnel_ip), "eth0", hosts, role="ztunnel")
        assert istio_version is not None  # set above for every mesh mode
        if mode == "node-routing":
            noderouting.add(ns, processes, topo, lab=lab, version=istio_version, encap=encap)
        else:
            inpod.add(ns, processes, topo, lab=lab, version=istio_version)
    registry = build_registry(topo, mode=mode)
    return Plan(lab, mode, istio_version, encap if mode == "node-routing" else None,  # type: ignore[arg-type]
                tuple(ns[k] for k in sorted(ns)), tuple(sorted(processes, key=lambda p: p.name)),
                registry=registry,
                nodes={n.name: {"gateway": str(n.gateway), "pod_cidr": str(n.pod_cidr), "ztunnel_ip": str(n.ztunnel_ip)}
                       for n in topo.nodes})


def _pod_ns(pns: str, member: str, node, ip: str, iface: str, hosts: str,
            role: str = "pod") -> NetnsPlan:
    """A pod netns as the ptp CNI leaves it: /24 address, subnet and default via the gateway."""
    gw = str(node.gateway)
    return NetnsPlan(
        pns, role, member, node=node.name,  # type: ignore[arg-type]
        addrs=(Addr(pns, iface, f"{ip}/{node.pod_cidr.prefixlen}", noprefixroute=True),),
        routes=(Route(pns, gw, dev=iface, scope="link", src=ip),
                Route(pns, str(node.pod_cidr), via=gw, dev=iface, src=ip),
                Route(pns, "default", via=gw, dev=iface)),
        hosts=hosts)
