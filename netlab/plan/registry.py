"""The workload/service registry ztunnel reads, shaped like ztunnel's own model.

istiod tells ztunnel about workloads, services and authorization policies over xDS (WDS);
netlab writes the same facts into one JSON file per lab (``<state>/registry.json``) that
ztunnel watches. :class:`RegistryDoc` is that file's typed model, used by every reader and writer:
the plan builds it from the topology (:func:`build_registry`), the lab writes it
(:meth:`RegistryDoc.to_json`), ztunnel and the tests read it back (:meth:`RegistryDoc.from_json`).

Two uids per workload: ``uid`` is the registry's own key (``<ns>/<name>``, what service
endpoints list); ``k8s_uid`` is the pod's Kubernetes UID, the one ZDS ``AddWorkload{uid}``
carries in in-pod mode. :attr:`Workload.pod_uid` is the pod's uid as the CNI agent and ZDS
see it. UIDs are deterministic UUIDs (uuid5) so the plan and golden files are stable; in
Kubernetes they would be random per pod.

Pure: derived from the topology only.

>>> r = RegistryDoc.from_json('{"workloads": [{"uid": "default/a", "name": "a", "namespace": "default",'
...                        ' "node": "n1", "ip": "10.244.1.7", "service_account": "sa-a"}]}')
>>> w = r.workloads[0]
>>> w.hbone, w.pod_uid, r.identity(w)
(True, 'default/a', 'spiffe://cluster.local/ns/default/sa/sa-a')
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from netlab.protocols.spiffe import spiffe_id

if TYPE_CHECKING:  # annotations only: ztunnel reads the registry without loading the topology model
    from netlab.topology.model import Pod, Topology

TRUST_DOMAIN = "cluster.local"
_NS_UUID = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # RFC 4122 URL namespace


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Workload(_Model):
    uid: str  # the registry key, ``<namespace>/<name>``
    name: str
    namespace: str
    node: str
    ip: str
    service_account: str
    protocol: Literal["HBONE", "TCP"] = "HBONE"  # HBONE = enrolled in the mesh
    labels: dict[str, str] = Field(default_factory=dict)
    workload_type: str = "deployment"
    canonical_name: str = ""
    canonical_revision: str = ""
    k8s_uid: str = ""  # the pod's Kubernetes UID ("" in hand-written registries)

    @property
    def hbone(self) -> bool:
        return self.protocol == "HBONE"

    @property
    def pod_uid(self) -> str:
        """The uid ZDS and the CNI agent know the pod by: its Kubernetes UID, else the registry uid."""
        return self.k8s_uid or self.uid


class ServicePort(_Model):
    port: int
    target_port: int

    @model_validator(mode="before")
    @classmethod
    def _target_defaults_to_port(cls, data: object) -> object:
        if isinstance(data, dict) and "target_port" not in data and "port" in data:
            return {**data, "target_port": data["port"]}
        return data


class Service(_Model):
    name: str
    namespace: str
    hostname: str
    vip: str
    ports: tuple[ServicePort, ...]
    endpoints: tuple[str, ...] = ()  # workload uids


class Policy(_Model):
    """An L4 AuthorizationPolicy as ztunnel enforces it: by principal and port only."""

    name: str
    namespace: str
    action: Literal["ALLOW", "DENY"]
    selector: dict[str, str] | None = None  # None = every workload of the namespace
    principals: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()

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


class ZtunnelEntry(_Model):
    node: str
    ip: str


class RegistryDoc(_Model):
    trust_domain: str = TRUST_DOMAIN
    workloads: tuple[Workload, ...] = ()
    services: tuple[Service, ...] = ()
    ztunnels: tuple[ZtunnelEntry, ...] = ()
    policies: tuple[Policy, ...] = ()

    @model_validator(mode="after")
    def _unique_uids(self) -> RegistryDoc:
        seen: set[str] = set()
        for i, w in enumerate(self.workloads):
            if w.uid in seen:
                raise ValueError(f"workloads[{i}]: duplicate uid {w.uid!r}")
            seen.add(w.uid)
        return self

    def identity(self, w: Workload) -> str:
        return spiffe_id(self.trust_domain, w.namespace, w.service_account)

    def identities(self) -> list[str]:
        return sorted({self.identity(w) for w in self.workloads})

    def with_protocol(self, on: bool, pods: set[str] | None = None) -> RegistryDoc:
        """A copy with ``pods`` (by name; default every workload) marked HBONE (``on``) or TCP."""
        proto: Literal["HBONE", "TCP"] = "HBONE" if on else "TCP"
        return self.model_copy(update={"workloads": tuple(
            w.model_copy(update={"protocol": proto}) if pods is None or w.name in pods else w
            for w in self.workloads)})

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RegistryDoc:
        """Raises ``pydantic.ValidationError`` (a ``ValueError``) on a malformed document."""
        return cls.model_validate_json(text)


def pod_uid(pod: Pod) -> str:
    """A stable Kubernetes-like UID: ``uuid5(URL, 'netlab:<ns>/<pod>')``."""
    return str(uuid.uuid5(_NS_UUID, f"netlab:{pod.namespace}/{pod.name}"))


def workload(topo: Topology, pod: Pod, mode: str) -> Workload:
    return Workload(
        uid=f"{pod.namespace}/{pod.name}",
        k8s_uid=pod_uid(pod),
        name=pod.name,
        namespace=pod.namespace,
        node=pod.node,
        ip=str(pod.ip),
        service_account=pod.sa,
        protocol="HBONE" if mode != "none" and topo.ambient(pod) else "TCP",
        labels=dict(sorted(pod.labels.items())),
        workload_type="deployment",
        canonical_name=pod.labels.get("app", pod.name),
        canonical_revision=pod.labels.get("version", pod.version),
    )


def build_registry(topo: Topology, *, mode: str) -> RegistryDoc:
    return RegistryDoc(
        trust_domain=TRUST_DOMAIN,
        workloads=tuple(workload(topo, p, mode) for p in topo.pods),
        services=tuple(Service(
            name=s.name, namespace=s.namespace, hostname=s.hostname, vip=str(s.vip),
            ports=tuple(ServicePort(port=sp.port, target_port=sp.target) for sp in s.ports),
            endpoints=tuple(f"{p.namespace}/{p.name}" for p in topo.endpoints(s)),
        ) for s in topo.services),
        ztunnels=tuple(ZtunnelEntry(node=n.name, ip=str(n.ztunnel_ip)) for n in topo.nodes) if mode != "none" else (),
        policies=tuple(Policy(
            name=p.name, namespace=p.namespace, action=p.action,
            selector=p.selector, principals=tuple(p.principals), ports=tuple(p.ports),
        ) for p in topo.policies),
    )
