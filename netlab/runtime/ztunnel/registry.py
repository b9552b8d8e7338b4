"""Workload/service/policy registry: what istiod's xDS (WDS) gives ztunnel, from the lab's JSON.

A workload's ``uid`` is the registry's own key (``<ns>/<name>``, what service endpoints list);
``k8s_uid`` is the pod's Kubernetes UID, the one ZDS ``AddWorkload{uid}`` carries in in-pod
mode. Both are indexed: :meth:`Registry.workload_for_pod` finds a ZDS pod by uid first and by
namespace/name only as a fallback (with a warning).

>>> r = Registry.from_dict({"trust_domain": "cluster.local",
...     "workloads": [{"uid": "default/a", "name": "a", "namespace": "default", "node": "n1",
...                    "ip": "10.244.1.7", "service_account": "sa-a", "protocol": "HBONE"}],
...     "services": [{"name": "a", "namespace": "default", "hostname": "a.default.svc.cluster.local",
...                   "vip": "10.96.0.10", "ports": [{"port": 80, "target_port": 8080}],
...                   "endpoints": ["default/a"]}]})
>>> svc, port = r.service_by_vip("10.96.0.10", 80)
>>> r.pick_endpoint(svc).ip, port.target_port, r.identity(r.workload_by_ip("10.244.1.7"))
('10.244.1.7', 8080, 'spiffe://cluster.local/ns/default/sa/sa-a')
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from netlab.errors import NetlabError

log = logging.getLogger(__name__)


class RegistryError(NetlabError):
    """The registry file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Workload:
    uid: str
    name: str
    namespace: str
    node: str
    ip: str
    service_account: str
    protocol: str = "HBONE"
    labels: dict[str, str] = field(default_factory=dict)
    workload_type: str = "deployment"
    canonical_name: str = ""
    canonical_revision: str = ""
    k8s_uid: str = ""

    @property
    def hbone(self) -> bool:
        return self.protocol == "HBONE"


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    target_port: int


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    namespace: str
    hostname: str
    vip: str
    ports: tuple[ServicePort, ...]
    endpoints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    namespace: str
    action: str  # "ALLOW" | "DENY"
    selector: dict[str, str] | None
    principals: tuple[str, ...]
    ports: tuple[int, ...]

    def applies_to(self, w: Workload) -> bool:
        if self.namespace != w.namespace:
            return False
        return self.selector is None or all(w.labels.get(k) == v for k, v in self.selector.items())

    def matches(self, port: int, src_identity: str | None) -> bool:
        if self.ports and port not in self.ports:
            return False
        if self.principals:
            return src_identity is not None and src_identity in self.principals
        return True


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise RegistryError(f"registry: {where}: missing key {key!r}") from None


class Registry:
    """Lookups by IP, by VIP:port (round-robin endpoint pick), identities and L4 policy."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None  # inode, mtime ns, size of what was loaded
        self.trust_domain = "cluster.local"
        self.workloads: dict[str, Workload] = {}
        self.by_ip: dict[str, Workload] = {}
        self.by_k8s_uid: dict[str, Workload] = {}
        self.by_name: dict[tuple[str, str], Workload] = {}
        self.services: list[Service] = []
        self.by_vip: dict[tuple[str, int], tuple[Service, ServicePort]] = {}
        self.by_hostname: dict[str, Service] = {}
        self.ztunnels: dict[str, str] = {}
        self.policies: list[Policy] = []
        self._rr: dict[str, int] = {}
        if path is not None:
            self.reload(force=True)

    @classmethod
    def load(cls, path: str) -> Registry:
        return cls(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Registry:
        r = cls()
        r._apply(data)
        return r

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (another inode, mtime or size); returns whether it was (re)loaded.

        A malformed new version is logged and ignored (the old one stays in force).
        """
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError as e:
            if force:
                raise RegistryError(f"registry: cannot read {self.path}: {e.strerror}") from None
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # writers rename a new file over it; mtime alone can
        if not force and stamp == self._stamp:  # repeat within one timestamp tick
            return False
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            self._apply(data)
        except (OSError, ValueError, RegistryError, TypeError) as e:
            if force:
                raise RegistryError(f"registry: {self.path}: {e}") from None
            log.error("registry reload failed, keeping the previous one: %s", e)
            return False
        self._stamp = stamp
        log.info("registry loaded: %d workloads, %d services, %d policies",
                 len(self.workloads), len(self.services), len(self.policies))
        return True

    def _apply(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict):
            raise RegistryError("registry: top level must be an object")
        td = data.get("trust_domain", "cluster.local")
        workloads: dict[str, Workload] = {}
        for i, w in enumerate(data.get("workloads", [])):
            where = f"workloads[{i}]"
            wl = Workload(
                uid=_req(w, "uid", where), name=_req(w, "name", where), namespace=_req(w, "namespace", where),
                node=_req(w, "node", where), ip=_req(w, "ip", where),
                service_account=_req(w, "service_account", where), protocol=w.get("protocol", "HBONE"),
                labels=dict(w.get("labels") or {}), workload_type=w.get("workload_type", "deployment"),
                canonical_name=w.get("canonical_name", "") or "", canonical_revision=w.get("canonical_revision", "") or "",
                k8s_uid=w.get("k8s_uid", "") or "",
            )
            if wl.uid in workloads:
                raise RegistryError(f"registry: {where}: duplicate uid {wl.uid!r}")
            workloads[wl.uid] = wl
        services: list[Service] = []
        for i, s in enumerate(data.get("services", [])):
            where = f"services[{i}]"
            ports = tuple(ServicePort(int(_req(p, "port", where)), int(p.get("target_port", p["port"])))
                          for p in _req(s, "ports", where))
            services.append(Service(name=_req(s, "name", where), namespace=_req(s, "namespace", where),
                                    hostname=_req(s, "hostname", where), vip=_req(s, "vip", where), ports=ports,
                                    endpoints=tuple(s.get("endpoints", []))))
        policies = []
        for i, p in enumerate(data.get("policies", [])):
            where = f"policies[{i}]"
            action = _req(p, "action", where)
            if action not in ("ALLOW", "DENY"):
                raise RegistryError(f"registry: {where}: action must be ALLOW or DENY, not {action!r}")
            policies.append(Policy(name=_req(p, "name", where), namespace=_req(p, "namespace", where), action=action,
                                   selector=p.get("selector"), principals=tuple(p.get("principals") or ()),
                                   ports=tuple(int(x) for x in p.get("ports") or ())))
        self.trust_domain = td
        self.workloads = workloads
        self.by_ip = {w.ip: w for w in workloads.values()}
        self.by_k8s_uid = {w.k8s_uid: w for w in workloads.values() if w.k8s_uid}
        self.by_name = {(w.namespace, w.name): w for w in workloads.values()}
        self.services = services
        self.by_vip = {(s.vip, p.port): (s, p) for s in services for p in s.ports}
        self.by_hostname = {s.hostname: s for s in services}
        self.ztunnels = {z["node"]: z["ip"] for z in data.get("ztunnels", [])}
        self.policies = policies

    # lookups -----------------------------------------------------------------------------------
    def workload_by_ip(self, ip: str) -> Workload | None:
        return self.by_ip.get(ip)

    def workload_by_uid(self, uid: str) -> Workload | None:
        """By the registry uid, or by the Kubernetes pod UID (``k8s_uid``)."""
        return self.workloads.get(uid) or self.by_k8s_uid.get(uid)

    def workload_by_name(self, namespace: str, name: str) -> Workload | None:
        return self.by_name.get((namespace, name))

    def workload_for_pod(self, uid: str, namespace: str, name: str) -> Workload | None:
        """The workload of a pod ZDS announced: by uid first, else by namespace/name (warned:
        the registry and the CNI agent disagree on the pod's UID)."""
        w = self.workload_by_uid(uid)
        if w is not None:
            return w
        w = self.workload_by_name(namespace, name)
        if w is not None:
            log.warning("pod %s: uid not in the registry, matched %s/%s by name (registry uid %s, k8s_uid %s)",
                        uid, namespace, name, w.uid, w.k8s_uid or "unset")
        return w

    def service_by_vip(self, vip: str, port: int) -> tuple[Service, ServicePort] | None:
        return self.by_vip.get((vip, port))

    def pick_endpoint(self, svc: Service) -> Workload | None:
        """Round robin over the service's endpoints that are known workloads."""
        eps = [w for uid in svc.endpoints if (w := self.workloads.get(uid)) is not None]
        if not eps:
            return None
        n = self._rr.get(svc.hostname, 0)
        self._rr[svc.hostname] = n + 1
        return eps[n % len(eps)]

    def service_for(self, w: Workload, target_port: int, hostname: str | None = None) -> Service | None:
        """The service a connection to ``w:target_port`` was meant for (``hostname`` wins if it fits)."""
        if hostname:
            s = self.by_hostname.get(hostname)
            if s is not None and w.uid in s.endpoints:
                return s
        for s in self.services:
            if w.uid in s.endpoints and any(p.target_port == target_port for p in s.ports):
                return s
        return None

    def identity(self, w: Workload) -> str:
        return f"spiffe://{self.trust_domain}/ns/{w.namespace}/sa/{w.service_account}"

    def identities(self) -> list[str]:
        return sorted({self.identity(w) for w in self.workloads.values()})

    def check_policy(self, dst: Workload, port: int, src_identity: str | None) -> tuple[bool, str | None]:
        """L4 authorization as ztunnel does it: any matching DENY denies; if ALLOW policies
        select the workload, one must match. Returns ``(allowed, deciding policy name)``."""
        allows = []
        for p in self.policies:
            if not p.applies_to(dst):
                continue
            if p.action == "DENY":
                if p.matches(port, src_identity):
                    return False, f"{p.namespace}/{p.name}"
            else:
                allows.append(p)
        if not allows:
            return True, None
        for p in allows:
            if p.matches(port, src_identity):
                return True, f"{p.namespace}/{p.name}"
        return False, "allow policies present, none matched"
