"""Turn the plan's processes into supervisor specs, writing the files they need.

Kept apart from the supervisor so the same specs can be printed by ``--dry-run`` and tested.
"""

from __future__ import annotations

import json
import os
import sys

from netlab import names
from netlab.errors import PreflightError
from netlab.linux.files import write_atomic
from netlab.plan.objects import Plan, Process
from netlab.runtime.spec import ProcessSpec, Workload

# ztunnel's log level in a lab: `NETLAB_ZTUNNEL_LOG_LEVEL=debug netlab up ...` adds the access
# log's `connection opened` lines (ztunnel's default is info, as RUST_LOG in Istio's chart)
ZTUNNEL_LOG_LEVEL_ENV = "NETLAB_ZTUNNEL_LOG_LEVEL"


def ztunnel_log_level() -> str:
    """Checked by ``up`` before anything is built, read again when the ztunnel configs are written."""
    from netlab.runtime.ztunnel.accesslog import DEFAULT_LEVEL, LEVELS

    level = os.environ.get(ZTUNNEL_LOG_LEVEL_ENV) or DEFAULT_LEVEL
    if level not in LEVELS:
        raise PreflightError(f"{ZTUNNEL_LOG_LEVEL_ENV}={level!r}: must be one of {', '.join(LEVELS)}")
    return level


def _py(module: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module, *args)


def prepare_mesh(plan: Plan, state: str) -> None:
    """Registry and lab PKI for ztunnel (only when a mesh design is on)."""
    write_atomic(names.registry_path(state), plan.registry.to_json())
    if plan.mode == "none":
        return
    from netlab.runtime.ztunnel import certs

    certs.ensure_identities(os.path.join(state, "certs"), plan.registry.identities())


def _need(p: Process, k: str) -> str:
    """An argument the planner always gives this kind of process."""
    v = p.arg(k)
    assert v is not None, f"{p.name}: no {k}= argument"
    return v


def spec(plan: Plan, p: Process, state: str, iptables_backend: str = "restore") -> ProcessSpec:
    if p.kind == "workload":
        app = _need(p, "app")
        if app == "sleep":
            return ProcessSpec(p.name, p.ns, argv=("sleep", "infinity"), ready="alive")
        return ProcessSpec(p.name, p.ns, comm=app, ready="pipe",
                           workload=Workload(app, _need(p, "pod"), int(_need(p, "port")), _need(p, "version")))
    if p.kind == "ztunnel":
        node = _need(p, "node")
        cfg = {"node": node, "mode": p.arg("mode"), "registry": names.registry_path(state),
               "certs_dir": os.path.join(state, "certs"),
               "access_log": os.path.join(names.logs_dir(state), f"ztunnel.{node}.access.log"),
               "zds_socket": names.zds_socket(state, node) if p.arg("mode") == "inpod" else None,
               "trust_domain": plan.registry.trust_domain,
               "log_level": ztunnel_log_level()}
        path = os.path.join(state, f"ztunnel-{node}.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1, sort_keys=True)
        return ProcessSpec(p.name, p.ns, argv=_py("netlab.runtime.ztunnel", "--config", path), hosts=False,
                           ready="pipe")
    if p.kind == "geneve":
        node = p.name.split("/", 1)[1]
        return ProcessSpec(p.name, p.ns, hosts=False, ready="pipe", argv=_py(
            "netlab.runtime.geneve", "--node-netns", _need(p, "node-netns"), "--pod-netns", _need(p, "pod-netns"),
            "--node-ip", _need(p, "node-ip"), "--pod-ip", _need(p, "pod-ip"), "--port", _need(p, "port"),
            "--stats-file", os.path.join(names.logs_dir(state), f"geneve.{node}.stats.json")))
    if p.kind == "cni-agent":
        from netlab.runtime.cniagent import agent as cniagent

        node = _need(p, "node")
        path = cniagent.write_config(plan, node, state)
        from netlab.apply.iptables import VARIANT_ENV, backend_variant

        v = backend_variant(iptables_backend)
        return ProcessSpec(p.name, p.ns, hosts=False, ready="pipe", argv=_py(
            "netlab.runtime.cniagent", "--lab", plan.lab, "--node", node, "--config", path),
            env={VARIANT_ENV: v} if v else {})
    raise ValueError(f"unknown process kind {p.kind}")


def specs(plan: Plan, state: str, iptables_backend: str = "restore") -> list[ProcessSpec]:
    os.makedirs(names.sockets_dir(state), exist_ok=True)
    # infrastructure first: tunnels and ztunnels before workloads, as a node would start them
    order = {"geneve": 0, "cni-agent": 1, "ztunnel": 2, "workload": 3}
    return [spec(plan, p, state, iptables_backend) for p in sorted(plan.processes, key=lambda p: (order[p.kind], p.name))]


def state_dir(plan: Plan) -> str:
    return names.state_dir(plan.lab)
