"""Istio ambient's original node-level redirection (Istio 1.18-1.20), object for object.

Values and order follow istio-cni's ``cni/pkg/ambient/net_linux.go`` (``CreateRulesOnNode``,
``CreateRulesWithinNodeProxyNS``, ``AddPodToMesh``) in Istio 1.18.7, 1.19.10 and 1.20.8.
Rules carry no comment of netlab's own: ``iptables-save`` in a lab node prints Istio's rules.
"""

from __future__ import annotations

from dataclasses import replace

from netlab import names
from netlab.plan.objects import (
    BUILTIN_CHAINS,
    Addr,
    IpsetEntry,
    IpsetSet,
    Iptables,
    IptablesTable,
    Link,
    NetnsPlan,
    Process,
    Route,
    Rule,
    Sysctl,
)
from netlab.plan.registry import pod_uid
from netlab.topology.model import Node, Pod, Topology

IPSET = "ztunnel-pods-ips"
INBOUND_TUN, OUTBOUND_TUN = "istioin", "istioout"
INBOUND_VNI, OUTBOUND_VNI = 1000, 1001
INBOUND_TUN_IP, ZT_INBOUND_TUN_IP = "192.168.126.1", "192.168.126.2"
OUTBOUND_TUN_IP, ZT_OUTBOUND_TUN_IP = "192.168.127.1", "192.168.127.2"
TUN_PREFIX = 30
TUN_MTU = 1450
GENEVE_PORT = 6081
VXLAN_PORT = 4789
TABLE_INBOUND, TABLE_OUTBOUND, TABLE_PROXY = 100, 101, 102
MAIN_PRIO = 32766
ZTUNNEL_CHAINS = ("ztunnel-PREROUTING", "ztunnel-POSTROUTING", "ztunnel-INPUT", "ztunnel-OUTPUT",
                  "ztunnel-FORWARD")


def _mark(v: int, m: int) -> str:
    return f"--set-xmark {v:#x}/{m:#x}"


def node_mangle_rules(zt_veth: str, zt_ip: str, host_ip: str, version: str, port: int = GENEVE_PORT) -> list[str]:
    """The user-chain rules of the node's mangle table, in iptables-save form and order."""
    pre = "-A ztunnel-PREROUTING"
    rules = [
        f"{pre} -i {INBOUND_TUN} -j MARK {_mark(0x200, 0x200)}",
        f"{pre} -i {INBOUND_TUN} -j RETURN",
        f"{pre} -i {OUTBOUND_TUN} -j MARK {_mark(0x200, 0x200)}",
        f"{pre} -i {OUTBOUND_TUN} -j RETURN",
        f"{pre} -p udp -m udp --dport {port} -j RETURN",
        f"{pre} -m connmark --mark 0x220/0x220 -j MARK {_mark(0x200, 0x200)}",
        f"{pre} -m mark --mark 0x200/0x200 -j RETURN",
        f"{pre} ! -i {zt_veth} -m connmark --mark 0x210/0x210 -j MARK {_mark(0x40, 0x40)}",
        f"{pre} -m mark --mark 0x40/0x40 -j RETURN",
        f"{pre} ! -s {zt_ip}/32 -i {zt_veth} -j MARK {_mark(0x210, 0x210)}",
        f"{pre} -m mark --mark 0x200/0x200 -j RETURN",
        f"{pre} -i {zt_veth} -j MARK {_mark(0x220, 0x220)}",
        f"{pre} -p udp -j MARK {_mark(0x220, 0x220)}",
        f"{pre} -m mark --mark 0x200/0x200 -j RETURN",
        f"{pre} -p tcp -m set --match-set {IPSET} src -j MARK {_mark(0x100, 0x100)}",
        "-A ztunnel-FORWARD -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220",
        "-A ztunnel-FORWARD -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask 0x210 --ctmask 0x210",
        "-A ztunnel-INPUT -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220",
        "-A ztunnel-INPUT -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask 0x210 --ctmask 0x210",
    ]
    if version in ("1.18", "1.19"):
        rules.append(f"-A ztunnel-OUTPUT -s {host_ip}/32 -j MARK --set-xmark 0x220/0xffffffff")
    else:
        rules.append(f"-A ztunnel-OUTPUT -s {host_ip}/32 -p tcp -m owner --socket-exists "
                     f"-m set --match-set {IPSET} dst -j MARK --set-xmark 0x220/0xffffffff")
    return rules


def node_tables(zt_veth: str, zt_ip: str, host_ip: str, version: str, kube_nat: IptablesTable,
                port: int = GENEVE_PORT) -> tuple[IptablesTable, ...]:
    """Final mangle/nat/filter tables of a node: Istio's jumps sit first (inserted at 1)."""
    mangle = IptablesTable(
        "mangle", ("ztunnel-FORWARD", "ztunnel-INPUT", "ztunnel-OUTPUT", "ztunnel-POSTROUTING", "ztunnel-PREROUTING"),
        ("-A PREROUTING -j ztunnel-PREROUTING", "-A INPUT -j ztunnel-INPUT", "-A FORWARD -j ztunnel-FORWARD",
         "-A OUTPUT -j ztunnel-OUTPUT", "-A POSTROUTING -j ztunnel-POSTROUTING",
         *node_mangle_rules(zt_veth, zt_ip, host_ip, version, port)),
        BUILTIN_CHAINS["mangle"])
    kube_jumps = [r for r in kube_nat.rules if r.startswith(("-A PREROUTING", "-A OUTPUT"))]
    kube_rest = [r for r in kube_nat.rules if r not in kube_jumps]
    nat = IptablesTable(
        "nat", tuple(sorted({*kube_nat.chains, "ztunnel-POSTROUTING", "ztunnel-PREROUTING"})),
        ("-A PREROUTING -j ztunnel-PREROUTING", *[r for r in kube_jumps if r.startswith("-A PREROUTING")],
         *[r for r in kube_jumps if r.startswith("-A OUTPUT")],
         "-A POSTROUTING -j ztunnel-POSTROUTING",
         *kube_rest,
         "-A ztunnel-POSTROUTING -m mark --mark 0x100/0x100 -j ACCEPT",
         "-A ztunnel-PREROUTING -m mark --mark 0x100/0x100 -j ACCEPT"),
        BUILTIN_CHAINS["nat"])
    tables = [mangle, nat]
    if version != "1.18":
        tables.append(IptablesTable("filter", ("ztunnel-FORWARD",),
                                    ("-A FORWARD -j ztunnel-FORWARD",
                                     "-A ztunnel-FORWARD -m mark --mark 0x100/0x100 -j ACCEPT"),
                                    BUILTIN_CHAINS["filter"]))
    return tuple(tables)


def ztunnel_mangle(zt_ip: str) -> IptablesTable:
    opt = "--on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff"
    return IptablesTable("mangle", (), (
        f"-A PREROUTING -i p{INBOUND_TUN} -p tcp -m tcp --dport 15008 -j TPROXY --on-port 15008 {opt}",
        f"-A PREROUTING -i p{OUTBOUND_TUN} -p tcp -j TPROXY --on-port 15001 {opt}",
        f"-A PREROUTING -i p{INBOUND_TUN} -p tcp -j TPROXY --on-port 15006 {opt}",
        f"-A PREROUTING ! -d {zt_ip}/32 -i eth0 -p tcp -j MARK --set-xmark 0x4d3/0xfff",
    ), BUILTIN_CHAINS["mangle"])


def pod_route(ns: str, pod_ip: str, host_ip: str) -> Route:
    """Table 100 route of one enrolled pod (``AddPodToMesh`` step 2)."""
    return Route(ns, f"{pod_ip}/32", via=ZT_INBOUND_TUN_IP, dev=INBOUND_TUN, table=TABLE_INBOUND, src=host_ip)


def enrolled_pods(topo: Topology, node: Node) -> list[Pod]:
    return [p for p in topo.pods if p.node == node.name and topo.ambient(p)]


def _tunnel(ns: str, name: str, vni: int, remote: str, encap: str) -> Link:
    if encap == "geneve":
        return Link(ns, name, "geneve", vni=vni, remote=remote, port=GENEVE_PORT, mtu=TUN_MTU)
    if encap == "vxlan":
        return Link(ns, name, "vxlan", vni=vni, remote=remote, port=VXLAN_PORT, mtu=TUN_MTU)
    return Link(ns, name, "tap", mtu=TUN_MTU)


def add(ns: dict[str, NetnsPlan], processes: list[Process], topo: Topology, *, lab: str, version: str,
        encap: str) -> None:
    """Add the node-routing objects of every node and ztunnel pod to ``ns`` (in place)."""
    port = VXLAN_PORT if encap == "vxlan" else GENEVE_PORT
    for node in topo.nodes:
        nname = names.netns(lab, node.name)
        zname = names.ztunnel_pod(node.name)
        zns = names.netns(lab, zname)
        zt_veth = names.pod_host_veth(lab, zname)
        zt_ip = str(node.ztunnel_ip)
        host_ip = str(node.gateway)
        n = ns[nname]
        kube_nat = next(t for t in n.iptables.tables if t.name == "nat")  # type: ignore[union-attr]
        pods = enrolled_pods(topo, node)
        links = (_tunnel(nname, INBOUND_TUN, INBOUND_VNI, zt_ip, encap),
                 _tunnel(nname, OUTBOUND_TUN, OUTBOUND_VNI, zt_ip, encap))
        addrs = (Addr(nname, INBOUND_TUN, f"{INBOUND_TUN_IP}/{TUN_PREFIX}"),
                 Addr(nname, OUTBOUND_TUN, f"{OUTBOUND_TUN_IP}/{TUN_PREFIX}"))
        routes = (
            Route(nname, zt_ip, dev=zt_veth, table=TABLE_OUTBOUND, scope="link"),
            Route(nname, "0.0.0.0/0", via=ZT_OUTBOUND_TUN_IP, dev=OUTBOUND_TUN, table=TABLE_OUTBOUND),
            Route(nname, zt_ip, dev=zt_veth, table=TABLE_PROXY, scope="link"),
            Route(nname, "0.0.0.0/0", via=zt_ip, dev=zt_veth, table=TABLE_PROXY, onlink=True),
            Route(nname, zt_ip, dev=zt_veth, table=TABLE_INBOUND, scope="link"),
            *(pod_route(nname, str(p.ip), host_ip) for p in pods),
        )
        rules = (
            Rule(nname, 100, fwmark=0x200, mask=0x200, goto=MAIN_PRIO),
            Rule(nname, 101, fwmark=0x100, mask=0x100, table=TABLE_OUTBOUND),
            Rule(nname, 102, fwmark=0x40, mask=0x40, table=TABLE_PROXY),
            Rule(nname, 103, table=TABLE_INBOUND),
        )
        sysctls: list[Sysctl] = []
        for dev in ("default", "all", zt_veth, INBOUND_TUN, OUTBOUND_TUN):
            sysctls.append(Sysctl(nname, f"net.ipv4.conf.{dev}.rp_filter", "0"))
        for dev in (zt_veth, INBOUND_TUN, OUTBOUND_TUN):
            sysctls.append(Sysctl(nname, f"net.ipv4.conf.{dev}.accept_local", "1"))
        for p in pods:
            sysctls.append(Sysctl(nname, f"net.ipv4.conf.{names.pod_host_veth(lab, p.name)}.rp_filter", "0"))
        ipset = IpsetSet(nname, IPSET, entries=tuple(IpsetEntry(str(p.ip), pod_uid(p)) for p in pods))
        ns[nname] = replace(
            n, links=n.links + links, addrs=n.addrs + addrs, routes=n.routes + routes, rules=rules,
            sysctls=n.sysctls + tuple(sysctls), ipsets=(ipset,),
            iptables=Iptables(nname, node_tables(zt_veth, zt_ip, host_ip, version, kube_nat, port)))

        z = ns[zns]
        zlinks = (_tunnel(zns, "p" + INBOUND_TUN, INBOUND_VNI, host_ip, encap),
                  _tunnel(zns, "p" + OUTBOUND_TUN, OUTBOUND_VNI, host_ip, encap))
        zaddrs = (Addr(zns, "p" + INBOUND_TUN, f"{ZT_INBOUND_TUN_IP}/{TUN_PREFIX}"),
                  Addr(zns, "p" + OUTBOUND_TUN, f"{ZT_OUTBOUND_TUN_IP}/{TUN_PREFIX}"))
        zroutes = (
            Route(zns, "0.0.0.0/0", dev="lo", table=TABLE_INBOUND, type="local"),
            Route(zns, "0.0.0.0/0", via=OUTBOUND_TUN_IP, dev="p" + OUTBOUND_TUN, table=TABLE_OUTBOUND),
            Route(zns, f"{host_ip}/32", dev="eth0", table=TABLE_OUTBOUND, scope="link"),
            Route(zns, "0.0.0.0/0", via=INBOUND_TUN_IP, dev="p" + INBOUND_TUN, table=TABLE_PROXY),
            Route(zns, f"{host_ip}/32", dev="eth0", table=TABLE_PROXY, scope="link"),
        )
        zrules = (Rule(zns, 20000, fwmark=0x400, mask=0xfff, table=TABLE_INBOUND),
                  Rule(zns, 20003, fwmark=0x4d3, mask=0xfff, table=TABLE_INBOUND))
        zsys = tuple(Sysctl(zns, f"net.ipv4.conf.{d}.rp_filter", "0")
                     for d in ("default", "all", "eth0", "p" + INBOUND_TUN, "p" + OUTBOUND_TUN))
        ns[zns] = replace(z, links=z.links + zlinks, addrs=z.addrs + zaddrs, routes=z.routes + zroutes,
                          rules=zrules, sysctls=z.sysctls + zsys,
                          iptables=Iptables(zns, (ztunnel_mangle(zt_ip),)))
        processes.append(Process(f"ztunnel/{node.name}", "ztunnel", zns,
                                 args=(("mode", "node-routing"), ("node", node.name))))
        if encap == "geneve-user":
            processes.append(Process(f"geneve/{node.name}", "geneve", nname, args=(
                ("node-ip", host_ip), ("node-netns", nname), ("pod-ip", zt_ip), ("pod-netns", zns),
                ("port", str(GENEVE_PORT)))))
