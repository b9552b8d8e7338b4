"""Kernel objects as frozen dataclasses: one ``key`` (identity) and one ``render()`` each.

``render()`` prints the object the way iproute2 / ipset / iptables-save would, so that
``--dry-run`` output reads like the commands a student would type, and golden files diff
cleanly. Values are normalised on construction by small functions (pyroute2 ``requests``
style): apply never parses strings.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from netlab.plan.registry import RegistryDoc

TABLE_NAMES = {"main": 254, "local": 255, "default": 253}


def table_id(t: int | str) -> int:
    """``table_id("main") -> 254``; numeric strings pass through as int."""
    return TABLE_NAMES[t] if isinstance(t, str) and t in TABLE_NAMES else int(t)


def table_name(t: int) -> str:
    return {v: k for k, v in TABLE_NAMES.items()}.get(t, str(t))


def normalise_dst(dst: str) -> tuple[str, int]:
    """``normalise_dst("10.0.0.0/255.255.255.0") -> ('10.0.0.0', 24)``; ``default`` is 0/0."""
    if dst in ("default", "0.0.0.0/0"):
        return "0.0.0.0", 0
    net = ipaddress.IPv4Network(dst, strict=False)
    return str(net.network_address), net.prefixlen


@dataclass(frozen=True)
class Link:
    """A link inside ``ns``. kind: veth (with peer in ``peer_ns``), bridge, tap, geneve, vxlan."""

    ns: str
    name: str
    kind: Literal["veth", "bridge", "tap", "geneve", "vxlan"]
    peer: str | None = None
    peer_ns: str | None = None
    master: str | None = None
    mtu: int | None = None
    vni: int | None = None
    remote: str | None = None
    port: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.ns, self.name)

    def render(self) -> str:
        s = f"link add {self.name}"
        if self.mtu:
            s += f" mtu {self.mtu}"
        s += f" type {self.kind}"
        if self.kind == "veth":
            s += f" peer name {self.peer} netns {self.peer_ns}"
        elif self.kind in ("geneve", "vxlan"):
            s += f" id {self.vni} remote {self.remote}"
            if self.port:
                s += f" dstport {self.port}"
        elif self.kind == "tap":
            s = f"tuntap add dev {self.name} mode tap" + (f"  # then: link set {self.name} mtu {self.mtu}" if self.mtu else "")
        if self.master:
            s += f"; link set {self.name} master {self.master}"
        return s


@dataclass(frozen=True)
class Addr:
    ns: str
    dev: str
    cidr: str  # "10.244.1.7/24"
    noprefixroute: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.ns, self.dev, self.cidr)

    @property
    def address(self) -> str:
        return self.cidr.split("/")[0]

    @property
    def prefixlen(self) -> int:
        return int(self.cidr.split("/")[1])

    def render(self) -> str:
        return f"addr add {self.cidr} dev {self.dev}" + (" noprefixroute" if self.noprefixroute else "")


@dataclass(frozen=True)
class Route:
    ns: str
    dst: str  # "default", "10.244.1.7", "10.244.2.0/24", "0.0.0.0/0"
    dev: str | None = None
    via: str | None = None
    table: int = 254
    scope: Literal["universe", "link", "host"] | None = None
    src: str | None = None
    type: Literal["unicast", "local"] = "unicast"
    onlink: bool = False

    @property
    def key(self) -> tuple[str, int, str, str]:
        return (self.ns, self.table, *map(str, normalise_dst(self.dst)))  # type: ignore[return-value]

    def render(self) -> str:
        s = "route add " + ("local " if self.type == "local" else "") + self.dst
        if self.via:
            s += f" via {self.via}"
        if self.dev:
            s += f" dev {self.dev}"
        if self.table != 254:
            s += f" table {table_name(self.table)}"
        if self.scope:
            s += f" scope {self.scope}"
        if self.src:
            s += f" src {self.src}"
        if self.onlink:
            s += " onlink"
        return s


@dataclass(frozen=True)
class Rule:
    ns: str
    priority: int
    fwmark: int | None = None
    mask: int | None = None
    table: int | None = None
    goto: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.ns, self.priority)

    def render(self) -> str:
        s = f"rule add pref {self.priority}"
        if self.fwmark is not None:
            s += f" fwmark {self.fwmark:#x}/{self.mask:#x}"
        if self.goto is not None:
            s += f" goto {self.goto}"
        else:
            s += f" lookup {table_name(self.table or 254)}"
        return s


@dataclass(frozen=True)
class Sysctl:
    ns: str
    key_: str  # "net.ipv4.ip_forward"
    value: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.ns, self.key_)

    @property
    def path(self) -> str:
        return "/proc/sys/" + self.key_.replace(".", "/")

    def render(self) -> str:
        return f"sysctl -w {self.key_}={self.value}"


@dataclass(frozen=True)
class IpsetEntry:
    ip: str
    comment: str | None = None


@dataclass(frozen=True)
class IpsetSet:
    ns: str
    name: str
    type: str = "hash:ip"
    comment: bool = True
    entries: tuple[IpsetEntry, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.ns, self.name)

    def render(self) -> str:
        lines = [f"ipset create {self.name} {self.type} family inet hashsize 1024 maxelem 65536"
                 + (" comment" if self.comment else "")]
        lines += [f"ipset add {self.name} {e.ip}" + (f' comment "{e.comment}"' if e.comment else "")
                  for e in self.entries]
        return "\n".join(lines)


@dataclass(frozen=True)
class IptablesTable:
    """One table in iptables-restore form: chains (builtin with policy, or user) and rules."""

    name: str  # mangle, nat, filter, raw
    chains: tuple[str, ...]  # user chains, in creation order
    rules: tuple[str, ...]  # "-A CHAIN ..." lines in final order
    builtin: tuple[str, ...] = ()

    def render(self) -> str:
        out = [f"*{self.name}"]
        out += [f":{c} ACCEPT [0:0]" for c in self.builtin]
        out += [f":{c} - [0:0]" for c in self.chains]
        out += list(self.rules)
        out.append("COMMIT")
        return "\n".join(out)


BUILTIN_CHAINS = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}
TABLE_ORDER = ("raw", "mangle", "nat", "filter")


@dataclass(frozen=True)
class Iptables:
    """All iptables tables of one netns, rendered as one ``iptables-restore`` document."""

    ns: str
    tables: tuple[IptablesTable, ...]

    @property
    def key(self) -> tuple[str]:
        return (self.ns,)

    def render(self) -> str:
        order = {t: i for i, t in enumerate(TABLE_ORDER)}
        return "\n".join(t.render() for t in sorted(self.tables, key=lambda t: order[t.name])) + "\n"


@dataclass(frozen=True)
class Process:
    """A long-lived lab process the supervisor runs, restarts and stops.

    ``kind`` picks the runtime entry (workload, ztunnel, geneve, cni-agent); ``ns`` is the
    netns it is started in; ``args`` are its options as sorted key/value pairs.
    """

    name: str  # unique in the lab: "pod/sleep", "ztunnel/ambient-worker"
    kind: Literal["workload", "ztunnel", "geneve", "cni-agent"]
    ns: str
    args: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str]:
        return (self.name,)

    def arg(self, k: str, default: str | None = None) -> str | None:
        return dict(self.args).get(k, default)

    def render(self) -> str:
        return f"run {self.kind} {self.name} in {self.ns}" + "".join(f" {k}={v}" for k, v in self.args)


@dataclass(frozen=True)
class NetnsPlan:
    name: str
    role: Literal["underlay", "node", "pod", "ztunnel"]
    member: str  # node or pod name (TARGET)
    node: str | None = None
    links: tuple[Link, ...] = ()
    addrs: tuple[Addr, ...] = ()
    routes: tuple[Route, ...] = ()
    rules: tuple[Rule, ...] = ()
    sysctls: tuple[Sysctl, ...] = ()
    ipsets: tuple[IpsetSet, ...] = ()
    iptables: Iptables | None = None
    hosts: str | None = None  # contents of /etc/netns/<ns>/hosts
    # shown by render(), never applied: what a design's runtime agent (the in-pod CNI agent)
    # writes into this netns itself, e.g. at enrollment
    agent: tuple[str, ...] = ()

    def render(self) -> str:
        out = [f"# netns {self.name} ({self.role} {self.member})"]
        out += [f"ip netns add {self.name}"]
        for group in (self.links, self.addrs, self.routes, self.rules, self.sysctls):
            out += [f"ip -n {self.name} {o.render()}" if not isinstance(o, Sysctl) else
                    f"ip netns exec {self.name} {o.render()}" for o in group]
        out += [ln for s in self.ipsets for ln in s.render().splitlines()]
        if self.iptables:
            out.append(f"ip netns exec {self.name} iptables-restore <<EOF")
            out.append(self.iptables.render().rstrip("\n"))
            out.append("EOF")
        out += list(self.agent)
        return "\n".join(out)


@dataclass(frozen=True)
class Plan:
    lab: str
    mode: Literal["none", "node-routing", "inpod"]
    istio_version: str | None
    encap: str | None
    namespaces: tuple[NetnsPlan, ...]
    processes: tuple[Process, ...] = ()
    registry: RegistryDoc = field(default_factory=RegistryDoc, compare=False, hash=False)
    nodes: dict = field(default_factory=dict, compare=False, hash=False)  # name -> {gateway, pod_cidr, ztunnel_ip}

    def netns(self, name: str) -> NetnsPlan:
        return next(n for n in self.namespaces if n.name == name)

    def by_member(self, member: str) -> NetnsPlan:
        for n in self.namespaces:
            if n.member == member and n.role != "underlay":
                return n
        raise KeyError(member)

    def render(self) -> str:
        head = [f"# lab {self.lab}: mode {self.mode}"
                + (f", istio {self.istio_version}" if self.istio_version else "")
                + (f", encap {self.encap}" if self.encap else "")]
        body = [n.render() for n in self.namespaces]
        procs = ["# processes"] + [p.render() for p in self.processes]
        return "\n\n".join(head + body + ["\n".join(procs)]) + "\n"
