"""Per-pod mesh readiness of an in-pod lab: has ztunnel acknowledged the pod over ZDS?

Istio's CNI plugin holds a pod's start until ztunnel has acked its ``AddWorkload``: before
that, the pod's traffic is redirected to listeners that do not exist yet. Each node's CNI
agent knows which of its enrolled pods its ztunnel acked; this asks every agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netlab import names
from netlab.lab.state import load_record
from netlab.linux import jsonline


@dataclass(frozen=True)
class MeshReadiness:
    ready: list[str] = field(default_factory=list)  # enrolled pods ztunnel serves
    waiting: list[str] = field(default_factory=list)  # enrolled pods not acked yet
    unreachable: list[str] = field(default_factory=list)  # nodes whose agent did not answer


def mesh_readiness(lab: str, timeout: float = 2.0) -> MeshReadiness:
    rec = load_record(lab)
    if rec is None or rec.mode != "inpod":
        return MeshReadiness()
    ready: list[str] = []
    waiting: list[str] = []
    unreachable: list[str] = []
    state = names.state_dir(lab)
    for node in sorted(rec.nodes):
        enrolled = sorted(p for p, info in rec.pods.items() if info["node"] == node and info["ambient"])
        try:
            st = jsonline.request(names.cni_socket(state, node), {"op": "status"}, timeout)
        except (OSError, ValueError):
            unreachable.append(node)
            waiting += enrolled
            continue
        if "mesh_ready" not in st:  # an agent that does not report acks: nothing to wait for
            continue
        acked = set(st["mesh_ready"])
        enrolled = sorted(set(st.get("enrolled", enrolled)))
        ready += [p for p in enrolled if p in acked]
        waiting += [p for p in enrolled if p not in acked]
    return MeshReadiness(sorted(ready), sorted(waiting), unreachable)
