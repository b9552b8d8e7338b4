"""The kind cluster config (``kind.x-k8s.io/v1alpha4``, kind ``Cluster``) for a topology.

The models mirror the part of kind's v1alpha4 API an export uses, with the YAML names of
kind's Go struct tags (``pkg/apis/config/v1alpha4/types.go`` in kubernetes-sigs/kind; the tests
check every emitted key against that file's full field set).

What carries over from the topology, and what kind decides itself:

* one ``worker`` node per topology node, plus the ``control-plane`` node kind always needs
  (it holds no topology pod: kubeadm taints it). kind names its nodes ``<cluster>-worker``,
  ``<cluster>-worker2``, … in config order, so when the topology's node names already follow
  that scheme (bookinfo's ``ambient-worker``/``ambient-worker2``) the cluster is named after the
  prefix and the workers are ordered so that the real node names equal the topology's. Every
  worker also carries the label ``netlab/node=<topology node>``, which is what the manifests pin
  pods to, so pinning holds whatever kind names the nodes.
* ``networking.podSubnet`` and ``serviceSubnet`` are the topology's ``addressing.pod_cidr`` and
  ``service_cidr``. kind has no per-node pod CIDR: kube-controller-manager hands each node the
  next free /24 of the pod subnet as it registers (the control plane usually gets the first,
  10.244.0.0/24, which netlab also leaves unused), so a node's /24 may differ from the
  topology's; ``run.sh`` prints both side by side.
* the default CNI (kindnet) stays on; kube-proxy stays in iptables mode (kind's default).
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from netlab.topology.model import Topology

NODE_LABEL = "netlab/node"
API_VERSION: Final = "kind.x-k8s.io/v1alpha4"


class _KindModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class KindNode(_KindModel):
    role: Literal["control-plane", "worker"]
    image: str | None = None
    labels: dict[str, str] | None = None


class KindNetworking(_KindModel):
    ip_family: Literal["ipv4"] = Field(default="ipv4", alias="ipFamily")
    pod_subnet: str = Field(alias="podSubnet")
    service_subnet: str = Field(alias="serviceSubnet")
    kube_proxy_mode: Literal["iptables"] = Field(default="iptables", alias="kubeProxyMode")


class KindCluster(_KindModel):
    kind: Literal["Cluster"] = "Cluster"
    api_version: Literal["kind.x-k8s.io/v1alpha4"] = Field(default=API_VERSION, alias="apiVersion")
    name: str
    nodes: list[KindNode]
    networking: KindNetworking


def _kind_scheme(topo: Topology) -> tuple[str, list[str]] | None:
    """(cluster, nodes in worker order) when the node names are exactly kind's worker names.

    kind calls the workers of cluster ``c`` ``c-worker``, ``c-worker2``, … ``c-workerN``.
    """
    found: dict[int, str] = {}
    prefixes = set()
    for n in topo.nodes:
        m = re.fullmatch(r"(.+)-worker([2-9]|[1-9]\d+)?", n.name)
        if m is None:
            return None
        prefixes.add(m.group(1))
        found[int(m.group(2) or 1)] = n.name
    if len(prefixes) != 1 or sorted(found) != list(range(1, len(found) + 1)):
        return None
    return prefixes.pop(), [found[i] for i in sorted(found)]


def cluster_name(topo: Topology) -> str:
    """``c`` when every node is named like kind's workers of cluster ``c``, else the lab name.

    >>> from netlab.topology import load_topology
    >>> cluster_name(load_topology("bookinfo")), cluster_name(load_topology("minimal"))
    ('ambient', 'minimal')
    """
    scheme = _kind_scheme(topo)
    return scheme[0] if scheme else topo.name


def worker_order(topo: Topology) -> list[str]:
    """Topology node names in the order they become kind workers: kind's own order when the
    names follow its scheme (so each real node gets its topology name), else file order."""
    scheme = _kind_scheme(topo)
    return scheme[1] if scheme else [n.name for n in topo.nodes]


def kind_node_names(topo: Topology) -> dict[str, str]:
    """Topology node → the name kind gives its worker (``<cluster>-worker``, ``-worker2``, …)."""
    c = cluster_name(topo)
    return {n: f"{c}-worker" + (str(i + 1) if i else "") for i, n in enumerate(worker_order(topo))}


def kind_cluster(topo: Topology, *, node_image: str) -> KindCluster:
    nodes = [KindNode(role="control-plane", image=node_image)]
    nodes += [KindNode(role="worker", image=node_image, labels={NODE_LABEL: n}) for n in worker_order(topo)]
    net = KindNetworking(pod_subnet=str(topo.addressing.pod_cidr), service_subnet=str(topo.addressing.service_cidr))
    return KindCluster(name=cluster_name(topo), nodes=nodes, networking=net)
