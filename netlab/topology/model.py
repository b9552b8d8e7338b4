"""The topology model: nodes, namespaces, pods, services, policies and addressing.

``Raw*`` shapes are what a user may write (brief forms, ``replicas``); :func:`resolve`
turns them into the complete :class:`Topology` with every address assigned, so the plan
never guesses. Addressing defaults mirror a two-worker kind cluster (kindnet's ptp CNI, Istio's ambient
guide), so addresses read as on a real node:
node ``i`` (1-based, in file order) gets pod CIDR ``10.244.i.0/24`` and underlay address
``172.18.0.(i+1)``; in each pod CIDR ``.1`` is the node's gateway, ``.2`` the node's
ztunnel pod, pods take ``.3`` upward; service VIPs start at ``10.96.0.10``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AMBIENT_LABEL = "istio.io/dataplane-mode"
AMBIENT_VALUE = "ambient"
APP_KINDS = ("sleep", "productpage", "details", "reviews", "ratings", "echo")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IFNAME_BAD = re.compile(r"[\s/:]")


Loc = tuple[str | int, ...]


class LocatedError(ValueError):
    """A validation error that knows which entry of the topology file it is about.

    ``loc`` is a YAML path such as ``("pods", 3, "ip")`` (indices as written in the file, before
    replicas expand), so the loader can print the file's line for errors that no single
    pydantic field owns: an unknown node, a duplicate name, an address clash.
    """

    def __init__(self, message: str, loc: Loc = ()) -> None:
        super().__init__(message)
        self.loc = loc


def _dns_label(v: str, what: str, max_len: int = 63) -> str:
    if not DNS1123.match(v) or len(v) > max_len:
        raise ValueError(
            f"{what} {v!r} must be lower-case letters, digits and '-', start and end with a letter "
            f"or digit, at most {max_len} characters")
    return v


def valid_ifname(v: str) -> str:
    """Linux interface names: 1-15 bytes, no whitespace, '/' or ':' (IsValidInterfaceName)."""
    if not v or len(v.encode()) > 15 or IFNAME_BAD.search(v) or v in (".", ".."):
        raise ValueError(f"interface name {v!r} is not valid: 1-15 characters, no space, '/' or ':'")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Addressing(_Strict):
    underlay: ipaddress.IPv4Network = ipaddress.IPv4Network("172.18.0.0/16")
    pod_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.244.0.0/16")
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.96.0.0/16")


class Node(_Strict):
    name: str
    pod_cidr: ipaddress.IPv4Network | None = None
    underlay_ip: ipaddress.IPv4Address | None = None

    _n = field_validator("name")(lambda v: _dns_label(v, "node name", 40))

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        assert self.pod_cidr is not None
        return self.pod_cidr.network_address + 1

    @property
    def ztunnel_ip(self) -> ipaddress.IPv4Address:
        assert self.pod_cidr is not None
        return self.pod_cidr.network_address + 2


class Namespace(_Strict):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)

    _n = field_validator("name")(lambda v: _dns_label(v, "namespace name"))


class Pod(_Strict):
    name: str
    node: str
    namespace: str = "default"
    app: Literal["sleep", "productpage", "details", "reviews", "ratings", "echo"] = "echo"
    labels: dict[str, str] = Field(default_factory=dict)
    service_account: str | None = None
    version: str = "v1"
    ip: ipaddress.IPv4Address | None = None
    replicas: Annotated[int, Field(ge=1, le=5000)] = 1
    port: Annotated[int, Field(ge=1, le=65535)] = 9080
    interface: str = "eth0"

    _n = field_validator("name")(lambda v: _dns_label(v, "pod name", 50))
    _i = field_validator("interface")(valid_ifname)

    @property
    def sa(self) -> str:
        return self.service_account or self.labels.get("app") or self.name

    @property
    def app_label(self) -> str:
        return self.labels.get("app", self.name)


class ServicePort(_Strict):
    port: Annotated[int, Field(ge=1, le=65535)]
    target_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    name: str | None = None

    @property
    def target(self) -> int:
        return self.target_port or self.port


class Service(_Strict):
    name: str
    namespace: str = "default"
    selector: dict[str, str]
    ports: list[ServicePort]
    vip: ipaddress.IPv4Address | None = None

    _n = field_validator("name")(lambda v: _dns_label(v, "service name"))

    @field_validator("ports", mode="before")
    @classmethod
    def _brief_ports(cls, v: object) -> object:
        """Accept the brief form ``ports: [9080]`` besides ``[{port: 9080, target_port: 80}]``."""
        if isinstance(v, list):
            return [{"port": p} if isinstance(p, int) and not isinstance(p, bool) else p for p in v]
        return v

    @property
    def hostname(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


class Policy(_Strict):
    """An L4 authorization policy ztunnel enforces (AuthorizationPolicy, principals only)."""

    name: str
    namespace: str = "default"
    action: Literal["DENY", "ALLOW"] = "DENY"
    selector: dict[str, str] | None = None
    principals: list[str] = Field(default_factory=list)
    ports: list[int] = Field(default_factory=list)


class Topology(_Strict):
    """A complete lab. After :meth:`resolved` every node, pod and service has its addresses."""

    name: str = "lab"
    addressing: Addressing = Addressing()
    nodes: list[Node]
    namespaces: list[Namespace] = Field(default_factory=list)
    pods: list[Pod] = Field(default_factory=list)
    services: list[Service] = Field(default_factory=list)
    policies: list[Policy] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _lab_name(cls, v: str) -> str:
        return _dns_label(v, "lab name", 24)

    @field_validator("nodes")
    @classmethod
    def _some_nodes(cls, v: list[Node]) -> list[Node]:
        if not v:
            raise ValueError("a topology needs at least one node")
        return v

    @model_validator(mode="after")
    def _check(self) -> Topology:
        _unique("node", [n.name for n in self.nodes], "nodes")
        _unique("namespace", [n.name for n in self.namespaces], "namespaces")
        _unique("service", [f"{s.namespace}/{s.name}" for s in self.services], "services")
        nodes = {n.name for n in self.nodes}
        for i, p in enumerate(self.pods):
            if p.node not in nodes:
                raise LocatedError(f"pod {p.name!r}: unknown node {p.node!r} (nodes: {', '.join(sorted(nodes))})",
                                   ("pods", i, "node"))
            if p.replicas > 1 and p.ip is not None:
                raise LocatedError(f"pod {p.name!r}: a fixed ip cannot be used with replicas > 1", ("pods", i, "ip"))
        return self

    # -- resolution ------------------------------------------------------------------------

    def resolved(self) -> Topology:
        """Expand replicas and assign every default address; raises ValueError on clashes."""
        return resolve(self)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def namespace_labels(self, ns: str) -> dict[str, str]:
        for n in self.namespaces:
            if n.name == ns:
                return n.labels
        return {}

    def ambient(self, pod: Pod) -> bool:
        """Enrolled as Istio decides it: the pod label wins, else the namespace label."""
        if AMBIENT_LABEL in pod.labels:
            return pod.labels[AMBIENT_LABEL] == AMBIENT_VALUE
        return self.namespace_labels(pod.namespace).get(AMBIENT_LABEL) == AMBIENT_VALUE

    def pod(self, name: str) -> Pod:
        for p in self.pods:
            if p.name == name:
                return p
        raise KeyError(name)

    def endpoints(self, svc: Service) -> list[Pod]:
        return [p for p in self.pods if p.namespace == svc.namespace
                and all(p.labels.get(k) == v for k, v in svc.selector.items())]


def _unique(what: str, names: list[str], section: str, index: list[int] | None = None,
            field: str = "name") -> None:
    """Refuse a repeated name, pointing at its second entry (``index`` maps a position in
    ``names`` to the entry of ``section`` in the file, when replicas expanded it)."""
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise LocatedError(f"duplicate {what} {n!r}", (section, index[i] if index else i, field))
        seen.add(n)


def _explicit_underlay_ips(t: Topology) -> set[ipaddress.IPv4Address]:
    """Fixed node underlay addresses, checked like pod IPs: unique, inside the underlay, and
    not its network, broadcast or bridge (.1, the underlay's gateway) address."""
    ul = t.addressing.underlay
    reserved = {ul.network_address: "the underlay's network address",
                ul.broadcast_address: "the underlay's broadcast address",
                ul.network_address + 1: "the underlay bridge's own address"}
    seen: dict[ipaddress.IPv4Address, str] = {}
    for n in t.nodes:
        ip = n.underlay_ip
        if ip is None:
            continue
        if ip not in ul:
            raise ValueError(f"node {n.name!r}: underlay_ip {ip} is outside {ul}")
        if ip in reserved:
            raise ValueError(f"node {n.name!r}: underlay_ip {ip} is {reserved[ip]}")
        if ip in seen:
            raise ValueError(f"node {n.name!r}: underlay_ip {ip} is already node {seen[ip]!r}'s")
        seen[ip] = n.name
    return set(seen)


def resolve(t: Topology) -> Topology:
    a = t.addressing
    subnets = a.pod_cidr.subnets(new_prefix=24)
    next(subnets)  # 10.244.0.0/24 is the (absent) control plane's, as in kind
    nodes: list[Node] = []
    used_cidrs = {n.pod_cidr for n in t.nodes if n.pod_cidr}
    used_under = _explicit_underlay_ips(t)
    under_hosts = a.underlay.hosts()
    next(under_hosts)  # .1 is the underlay bridge's gateway address
    for ni, n in enumerate(t.nodes):
        cidr = n.pod_cidr
        while cidr is None:
            c = next(subnets, None)
            if c is None:
                raise LocatedError(f"pod_cidr {a.pod_cidr} has no free /24 left for node {n.name!r}", ("nodes", ni))
            cidr = None if c in used_cidrs else c
        uip = n.underlay_ip
        while uip is None:
            h = next(under_hosts, None)
            if h is None:
                raise LocatedError(f"underlay {a.underlay} has no free address left for node {n.name!r}",
                                   ("nodes", ni))
            uip = None if h in used_under else h
        if uip not in a.underlay:
            raise LocatedError(f"node {n.name!r}: underlay_ip {uip} is outside {a.underlay}",
                               ("nodes", ni, "underlay_ip"))
        nodes.append(n.model_copy(update={"pod_cidr": cidr, "underlay_ip": uip}))
    cidrs = [c for n in nodes if (c := n.pod_cidr) is not None]  # every node has one by now
    for i, c in enumerate(cidrs):
        for j, c2 in enumerate(cidrs[i + 1:], i + 1):
            if c.overlaps(c2):
                raise LocatedError(f"pod CIDRs {c} and {c2} overlap", ("nodes", j, "pod_cidr"))
    by_node = {n.name: n for n in nodes}

    # expand replicas, keep file order
    expanded: list[Pod] = []
    src: list[int] = []  # expanded[k] comes from t.pods[src[k]]
    for i, p in enumerate(t.pods):
        if p.replicas == 1:
            expanded.append(p)
            src.append(i)
            continue
        for r in range(p.replicas):
            labels = {"app": p.app_label, **p.labels}
            expanded.append(p.model_copy(update={"name": f"{p.name}-{r}", "replicas": 1, "labels": labels,
                                                 "service_account": p.sa}))
            src.append(i)
    _unique("pod", [p.name for p in expanded], "pods", src)

    taken: dict[ipaddress.IPv4Address, str] = {}
    for n in nodes:
        taken[n.gateway] = f"node {n.name} gateway"
        taken[n.ztunnel_ip] = f"ztunnel of {n.name}"
    for k, p in enumerate(expanded):
        if p.ip is None:
            continue
        node = by_node[p.node]
        if p.ip not in node.pod_cidr:  # type: ignore[operator]
            raise LocatedError(f"pod {p.name!r}: ip {p.ip} is not in node {node.name!r} pod CIDR {node.pod_cidr}",
                               ("pods", src[k], "ip"))
        if p.ip in taken:
            raise LocatedError(f"pod {p.name!r}: ip {p.ip} clashes with {taken[p.ip]}", ("pods", src[k], "ip"))
        taken[p.ip] = f"pod {p.name}"
    free = {n.name: n.pod_cidr.hosts() for n in nodes}  # type: ignore[union-attr]
    pods: list[Pod] = []
    for k, p in enumerate(expanded):
        ip = p.ip
        while ip is None:
            h = next(free[p.node], None)
            if h is None or h == by_node[p.node].pod_cidr.broadcast_address:  # type: ignore[union-attr]
                raise LocatedError(f"node {p.node!r}: pod CIDR is full, cannot place pod {p.name!r}",
                                   ("pods", src[k]))
            if h not in taken:
                ip = h
        taken[ip] = f"pod {p.name}"
        pods.append(p.model_copy(update={"ip": ip}))

    known_ns = {n.name for n in t.namespaces}
    namespaces = list(t.namespaces) + [Namespace(name=ns) for ns in
                                       sorted({p.namespace for p in pods} | {s.namespace for s in t.services})
                                       if ns not in known_ns]
    vips = a.service_cidr.hosts()
    for _ in range(9):
        next(vips)  # .1 kubernetes, .10 kube-dns in kind; ours start at .10
    used_vips = {s.vip for s in t.services if s.vip}
    services: list[Service] = []
    for si, s in enumerate(t.services):
        vip = s.vip
        while vip is None:
            h = next(vips, None)
            if h is None:
                raise LocatedError(f"service_cidr {a.service_cidr} is full", ("services", si))
            vip = None if h in used_vips else h
        if vip not in a.service_cidr:
            raise LocatedError(f"service {s.name!r}: vip {vip} is outside {a.service_cidr}", ("services", si, "vip"))
        services.append(s.model_copy(update={"vip": vip}))
    _unique("service VIP", [str(s.vip) for s in services], "services", field="vip")
    return t.model_copy(update={"nodes": nodes, "pods": pods, "services": services, "namespaces": namespaces})
