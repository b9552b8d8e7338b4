"""Workload/service/policy registry: what istiod's xDS (WDS) gives ztunnel, from the lab's JSON.

The file's model is :class:`netlab.plan.registry.RegistryDoc` (one definition for the writer
and the reader); this module is ztunnel's live view of it: indexes for the lookups on the
connection path, round-robin endpoint picks, L4 policy, and reloading when the file changes.

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
from typing import Any

import pydantic

from netlab.errors import NetlabError
from netlab.plan.registry import Policy, RegistryDoc, Service, ServicePort, Workload
from netlab.protocols.spiffe import spiffe_id

__all__ = ["Policy", "Registry", "RegistryError", "Service", "ServicePort", "Workload"]

log = logging.getLogger(__name__)


class RegistryError(NetlabError):
    """The registry file is missing or malformed."""


def _where(loc: tuple[int | str, ...]) -> str:
    """``('workloads', 0, 'name')`` -> ``workloads[0].name``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def _error(e: pydantic.ValidationError) -> RegistryError:
    """The first problem, with its place: ``registry: workloads[0]: missing key 'name'``."""
    err = e.errors()[0]
    loc = tuple(err["loc"])
    if err["type"] == "missing" and loc:
        return RegistryError(f"registry: {_where(loc[:-1])}: missing key {loc[-1]!r}")
    if not loc:  # a whole-document check (duplicate uids): its message names the place
        return RegistryError(f"registry: {err['msg'].removeprefix('Value error, ')}")
    return RegistryError(f"registry: {_where(loc)}: {err['msg']}")


def parse(data: Any) -> RegistryDoc:
    """A decoded JSON document -> the typed registry; RegistryError names the first bad place."""
    if not isinstance(data, dict):
        raise RegistryError("registry: top level must be an object")
    try:
        return RegistryDoc.model_validate(data)
    except pydantic.ValidationError as e:
        raise _error(e) from None


class Registry:
    """Lookups by IP, by VIP:port (round-robin endpoint pick), identities and L4 policy."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None  # inode, mtime ns, size of what was loaded
        self.doc = RegistryDoc()
        self.trust_domain = self.doc.trust_domain
        self.workloads: dict[str, Workload] = {}
        self.by_ip: dict[str, Workload] = {}
        self.by_k8s_uid: dict[str, Workload] = {}
        self.by_name: dict[tuple[str, str], Workload] = {}
        self.services: tuple[Service, ...] = ()
        self.by_vip: dict[tuple[str, int], tuple[Service, ServicePort]] = {}
        self.by_hostname: dict[str, Service] = {}
        self.ztunnels: dict[str, str] = {}
        self.policies: tuple[Policy, ...] = ()
        self._rr: dict[str, int] = {}
        if path is not None:
            self.reload(force=True)

    @classmethod
    def load(cls, path: str) -> Registry:
        return cls(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Registry:
        return cls.from_doc(parse(data))

    @classmethod
    def from_doc(cls, doc: RegistryDoc) -> Registry:
        r = cls()
        r._apply(doc)
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
            self._apply(parse(data))
        except (OSError, ValueError, RegistryError) as e:
            if force:
                raise RegistryError(f"registry: {self.path}: {e}") from None
            log.error("registry reload failed, keeping the previous one: %s", e)
            return False
        self._stamp = stamp
        log.info("registry loaded: %d workloads, %d services, %d policies",
                 len(self.workloads), len(self.services), len(self.policies))
        return True

    def _apply(self, doc: RegistryDoc) -> None:
        workloads = {w.uid: w for w in doc.workloads}
        self.doc = doc
        self.trust_domain = doc.trust_domain
        self.workloads = workloads
        self.by_ip = {w.ip: w for w in workloads.values()}
        self.by_k8s_uid = {w.k8s_uid: w for w in workloads.values() if w.k8s_uid}
        self.by_name = {(w.namespace, w.name): w for w in workloads.values()}
        self.services = doc.services
        self.by_vip = {(s.vip, p.port): (s, p) for s in doc.services for p in s.ports}
        self.by_hostname = {s.hostname: s for s in doc.services}
        self.ztunnels = {z.node: z.ip for z in doc.ztunnels}
        self.policies = doc.policies

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
        return spiffe_id(self.trust_domain, w.namespace, w.service_account)

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
