"""The workload/service registry ztunnel reads, shaped like ztunnel's own model.

Pure: derived from the topology only. UIDs are deterministic UUIDs (uuid5) so the plan and
golden files are stable; in Kubernetes they would be random per pod.
"""

from __future__ import annotations

import uuid

from netlab.topology.model import Pod, Topology

TRUST_DOMAIN = "cluster.local"
_NS_UUID = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # RFC 4122 URL namespace


def pod_uid(pod: Pod) -> str:
    """A stable Kubernetes-like UID: ``uuid5(URL, 'netlab:<ns>/<pod>')``."""
    return str(uuid.uuid5(_NS_UUID, f"netlab:{pod.namespace}/{pod.name}"))


def identity(namespace: str, sa: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{sa}"


def workload(topo: Topology, pod: Pod, mode: str) -> dict:
    return {
        "uid": f"{pod.namespace}/{pod.name}",
        "k8s_uid": pod_uid(pod),
        "name": pod.name,
        "namespace": pod.namespace,
        "node": pod.node,
        "ip": str(pod.ip),
        "service_account": pod.sa,
        "protocol": "HBONE" if mode != "none" and topo.ambient(pod) else "TCP",
        "labels": dict(sorted(pod.labels.items())),
        "workload_type": "deployment",
        "canonical_name": pod.labels.get("app", pod.name),
        "canonical_revision": pod.labels.get("version", pod.version),
    }


def build_registry(topo: Topology, *, mode: str) -> dict:
    return {
        "trust_domain": TRUST_DOMAIN,
        "workloads": [workload(topo, p, mode) for p in topo.pods],
        "services": [{
            "name": s.name, "namespace": s.namespace, "hostname": s.hostname, "vip": str(s.vip),
            "ports": [{"port": sp.port, "target_port": sp.target} for sp in s.ports],
            "endpoints": [f"{p.namespace}/{p.name}" for p in topo.endpoints(s)],
        } for s in topo.services],
        "ztunnels": [{"node": n.name, "ip": str(n.ztunnel_ip)} for n in topo.nodes] if mode != "none" else [],
        "policies": [{
            "name": p.name, "namespace": p.namespace, "action": p.action,
            "selector": p.selector, "principals": p.principals, "ports": p.ports,
        } for p in topo.policies],
    }


def identities(topo: Topology) -> list[str]:
    return sorted({identity(p.namespace, p.sa) for p in topo.pods})
