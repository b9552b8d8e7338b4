"""Every kernel and file-system name netlab makes, built in one place.

Naming scheme (the ``nl-`` prefix is the lab marker that ``down`` and ``gc`` search for):

* network namespaces: ``nl-<lab>.<member>``: ``nl-<lab>.net`` (underlay bridge),
  ``nl-<lab>.<node>`` (a node), ``nl-<lab>.<pod>`` (a pod), ``nl-<lab>.ztunnel-<node>`` (a
  node's ztunnel pod). The ``.`` separator is a character neither a lab name nor a member
  name (DNS-1123 labels) may contain, so a netns name splits back into exactly one
  (lab, member): lab ``a`` with pod ``b-net`` (``nl-a.b-net``) can never be mistaken for the
  underlay of a lab ``a-b`` (``nl-a-b.net``), and ``down a`` never touches lab ``a-b``;
* kernel probes: ``nl-_probe-<pid>``: ``_`` cannot start a lab name, so no lab and no member
  ever owns a probe netns, and ``gc`` removes one whose pid is gone;
* state directory: ``/run/netlab/<lab>/`` (pids, logs, certs, plan, sockets); the lab's lock
  ``/run/netlab/<lab>.lock`` sits beside it (it must outlive the directory it guards);
* per-netns hosts file for ``ip netns exec``: ``/etc/netns/nl-<lab>.<x>/hosts``;
* inside a lab netns names need no marker and copy Kubernetes/Istio: pod side ``eth0``,
  node side ``veth`` + 8 hex of sha1(lab, pod) (as CNIs name host veths), node underlay
  ``eth0``, bridge ports ``nl`` + 8 hex, bridge ``br0`` (in ``nl-<lab>.net``), tunnels
  ``istioin``/``istioout`` (node) and ``pistioin``/``pistioout`` (ztunnel pod).
"""

from __future__ import annotations

import hashlib
import os
import re

MARKER = "nl-"
SEP = "."  # between lab and member; DNS-1123 labels (lab and member names) cannot contain it
PROBE = MARKER + "_probe-"
STATE_ROOT = os.environ.get("NETLAB_STATE_ROOT", "/run/netlab")
ETC_NETNS = "/etc/netns"
IFNAMSIZ = 15  # usable characters of a Linux interface name
LAB_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")
MEMBER_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
UNDERLAY = "net"  # the member name of the underlay netns, reserved in every lab


def _h8(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:8]


def netns(lab: str, member: str) -> str:
    """Netns name of a lab member: ``netns("demo", "sleep") -> 'nl-demo.sleep'``."""
    return f"{lab_prefix(lab)}{member}"


def lab_prefix(lab: str) -> str:
    """What every netns (and /etc/netns dir) of ``lab`` starts with, and no other lab's does:
    ``lab_prefix("a") -> 'nl-a.'`` (lab ``a-b`` gives ``nl-a-b.``)."""
    return f"{MARKER}{lab}{SEP}"


def underlay_netns(lab: str) -> str:
    return netns(lab, UNDERLAY)


def probe_netns(pid: int | None = None) -> str:
    """A throw-away netns for kernel feature probes: ``nl-_probe-<pid>``, owned by no lab."""
    return f"{PROBE}{os.getpid() if pid is None else pid}"


def probe_pid(name: str) -> int | None:
    """The pid that made a probe netns (``gc`` removes probes whose pid is gone)."""
    rest = name[len(PROBE):] if name.startswith(PROBE) else ""
    return int(rest) if rest.isdigit() else None


def split_netns(name: str) -> tuple[str, str] | None:
    """(lab, member) of a lab netns name, exactly, or None for anything else:
    ``split_netns("nl-a-b.x-net") -> ('a-b', 'x-net')``."""
    if not name.startswith(MARKER):
        return None
    lab, sep, member = name[len(MARKER):].partition(SEP)
    if not sep or not LAB_NAME_RE.match(lab) or not MEMBER_RE.match(member):
        return None
    return lab, member


def lab_from_netns(name: str) -> str | None:
    parts = split_netns(name)
    return parts[0] if parts else None


def ztunnel_pod(node: str) -> str:
    """Pod name of a node's ztunnel (also a valid TARGET): ``ztunnel-<node>``."""
    return f"ztunnel-{node}"


def pod_host_veth(lab: str, pod: str) -> str:
    """Node-side veth of a pod, like kindnet/ptp name it: ``veth`` + 8 hex."""
    return "veth" + _h8(lab, pod)


def bridge_port(lab: str, node: str) -> str:
    return "nl" + _h8(lab, node)


# -- the state directory ---------------------------------------------------------------------

def state_dir(lab: str) -> str:
    return os.path.join(STATE_ROOT, lab)


def lock_path(lab: str) -> str:
    """The lab's lock file, beside (not inside) its state dir: ``down`` removes the dir."""
    return os.path.join(STATE_ROOT, f"{lab}.lock")


# Paths inside a state dir take the dir itself (``state_dir(lab)`` for a lab; tests may use a
# temporary one), so every file name of the layout is spelled here and nowhere else.

def record_path(state: str) -> str:
    return os.path.join(state, "lab.json")


def supervisor_pid_path(state: str) -> str:
    return os.path.join(state, "supervisor.pid")


def supervisor_socket(state: str) -> str:
    return os.path.join(state, "supervisor.sock")


def processes_path(state: str) -> str:
    return os.path.join(state, "processes.json")


def registry_path(state: str) -> str:
    return os.path.join(state, "registry.json")


def logs_dir(state: str) -> str:
    return os.path.join(state, "logs")


def sockets_dir(state: str) -> str:
    return os.path.join(state, "sockets")


def cni_socket(state: str, node: str) -> str:
    """The CNI agent's pod-event socket of ``node`` (what the "CNI plugin" talks to)."""
    return os.path.join(sockets_dir(state), f"cni-{node}.sock")


def zds_socket(state: str, node: str) -> str:
    """ztunnel's ZDS socket of ``node`` (in-pod: the CNI agent listens, ztunnel connects, as in Istio)."""
    return os.path.join(sockets_dir(state), f"ztunnel-{node}.sock")


def etc_netns_dir(ns: str) -> str:
    return os.path.join(ETC_NETNS, ns)
