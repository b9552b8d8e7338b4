"""Every kernel and file-system name netlab makes, built in one place.

Naming scheme (the ``nl-`` prefix is the lab marker that ``down`` and ``gc`` search for):

* network namespaces: ``nl-<lab>-net`` (underlay bridge), ``nl-<lab>-<node>`` (a node),
  ``nl-<lab>-<pod>`` (a pod), ``nl-<lab>-ztunnel-<node>`` (a node's ztunnel pod);
* state directory: ``/run/netlab/<lab>/`` (pids, logs, certs, plan, sockets);
* per-netns hosts file for ``ip netns exec``: ``/etc/netns/nl-<lab>-<x>/hosts``;
* inside a lab netns names need no marker and copy Kubernetes/Istio: pod side ``eth0``,
  node side ``veth`` + 8 hex of sha1(lab, pod) (as CNIs name host veths), node underlay
  ``eth0``, bridge ports ``nl`` + 8 hex, bridge ``br0`` (in ``nl-<lab>-net``), tunnels
  ``istioin``/``istioout`` (node) and ``pistioin``/``pistioout`` (ztunnel pod).
"""

from __future__ import annotations

import hashlib
import os
import re

MARKER = "nl-"
STATE_ROOT = os.environ.get("NETLAB_STATE_ROOT", "/run/netlab")
ETC_NETNS = "/etc/netns"
IFNAMSIZ = 15  # usable characters of a Linux interface name
LAB_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")


def _h8(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:8]


def netns(lab: str, member: str) -> str:
    """Netns name of a lab member: ``netns("demo", "sleep") -> 'nl-demo-sleep'``."""
    return f"{MARKER}{lab}-{member}"


def underlay_netns(lab: str) -> str:
    return netns(lab, "net")


def ztunnel_pod(node: str) -> str:
    """Pod name of a node's ztunnel (also a valid TARGET): ``ztunnel-<node>``."""
    return f"ztunnel-{node}"


def pod_host_veth(lab: str, pod: str) -> str:
    """Node-side veth of a pod, like kindnet/ptp name it: ``veth`` + 8 hex."""
    return "veth" + _h8(lab, pod)


def bridge_port(lab: str, node: str) -> str:
    return "nl" + _h8(lab, node)


def lab_from_netns(name: str) -> str | None:
    """Cannot be exact (labs and members both contain dashes); callers match by prefix."""
    return name[len(MARKER):].split("-", 1)[0] if name.startswith(MARKER) else None


def state_dir(lab: str) -> str:
    return os.path.join(STATE_ROOT, lab)


def etc_netns_dir(ns: str) -> str:
    return os.path.join(ETC_NETNS, ns)
