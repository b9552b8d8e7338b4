"""Where a lab process writes its logs, by TARGET name."""

from __future__ import annotations

import os

from netlab import names
from netlab.errors import LabError
from netlab.lab.lifecycle import record_of
from netlab.runtime.supervisor import log_name


def process_name(lab: str, target: str) -> str:
    rec = record_of(lab)
    if target in rec.pods:
        return f"pod/{target}"
    if target.startswith("ztunnel-") and target[len("ztunnel-"):] in rec.roles:
        return f"ztunnel/{target[len('ztunnel-'):]}"
    for prefix, kind in (("geneve-", "geneve"), ("cni-", "cni-agent")):
        if target.startswith(prefix):
            return f"{kind}/{target[len(prefix):]}"
    raise LabError(f"lab {lab}: no process for {target!r}",
                   hint="pods, ztunnel-<node>, geneve-<node>, cni-<node>")


def log_files(lab: str, target: str) -> list[str]:
    d = os.path.join(names.state_dir(lab), "logs")
    rec = record_of(lab)
    if target == "supervisor":
        files = ["supervisor.log"]
    elif target in rec.roles and rec.roles[target] == "node":
        # node-routing: istio-cni's node work (enroll/unenroll, cleanupNode) is logged by netlab
        # itself in istio-cni.<node>.log; inpod: the CNI agent process writes cni-agent.<node>.log
        files = [log_name(f"geneve/{target}"), f"istio-cni.{target}.log", log_name(f"cni-agent/{target}")]
    elif target.startswith("ztunnel-"):
        node = target[len("ztunnel-"):]
        files = [f"ztunnel.{node}.access.log", log_name(f"ztunnel/{node}")]
    else:
        files = [log_name(process_name(lab, target))]
    found = [os.path.join(d, f) for f in files if os.path.exists(os.path.join(d, f))]
    if not found:
        raise LabError(f"lab {lab}: no logs for {target!r} yet")
    return found
