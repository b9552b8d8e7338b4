"""Lab 6's detectors: each broken state of a node-routing lab, found in the kernel and named.

Every detector reads the live lab and returns findings with a stable ``key`` (journaled, so a
later check can tell "repaired" from "never broken"), the symptom a learner will see, and the
repair. None of them guesses from output a learner typed.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.lab import lifecycle as lablib
from netlab.teach import probe
from netlab.teach.common import IPSET
from netlab.teach.model import Ctx
from netlab.topology import load_topology

RULES = {
    100: ("from all fwmark 0x200/0x200 goto 32766", "skip-marked packets (0x200) no longer jump to the main table: "
          "ztunnel's own and tunnel traffic loops back through tables 101/100"),
    101: ("from all fwmark 0x100/0x100 lookup 101", "outbound packets marked 0x100 fall to the main table with "
          "the service VIP untranslated (nat ACCEPTed them past kube-proxy): meshed pods on this node reach no "
          "service, curl times out"),
    102: ("from all fwmark 0x40/0x40 lookup 102", "replies to ztunnel's spoofed connections (0x40) go straight to "
          "the pod instead of back to ztunnel: the pod gets a reset, connections hang"),
    103: ("from all lookup 100", "table 100 is never consulted: traffic for enrolled pods is no longer sent through "
          "istioin, it reaches them directly in plaintext without ztunnel (no inbound log line)"),
}


@dataclass(frozen=True)
class Finding:
    key: str
    symptom: str
    repair: str


def diagnose(ctx: Ctx) -> list[Finding]:
    """Every broken state of the lab now; their keys are added to ``ctx.journal``."""
    rec = lablib.record_of(ctx.lab)
    found: list[Finding] = []
    nodes = [n for n, role in rec.roles.items() if role == "node"]
    topo = load_topology(rec.topology).resolved()
    wanted = {p.name: topo.ambient(p) for p in topo.pods}
    for node in sorted(nodes):
        rules = probe.ip_rules(ctx.lab, node)
        for prio, (text, symptom) in RULES.items():
            if rules.get(prio) != text:
                found.append(Finding(f"rule-missing:{node}:{prio}",
                                     f"ip rule {prio} ({text}) is missing on {node}: {symptom}",
                                     f"netlab exec {ctx.lab} {node} -- ip rule add priority {prio} "
                                     + text.removeprefix("from all ")))
        members = probe.ipset_members(ctx.lab, node, IPSET)
        for pod, info in sorted(rec.pods.items()):
            if info["node"] == node and info.get("ambient") and info["ip"] not in members:
                found.append(Finding(
                    f"ipset-missing:{pod}",
                    f"{pod} is enrolled but its IP {info['ip']} is missing from ipset {IPSET} on {node}: its packets "
                    "are never marked 0x100, so they bypass ztunnel (kube-proxy DNATs the VIP, no outbound access-log "
                    "line, no mTLS)",
                    f"netlab exec {ctx.lab} {node} -- ipset add {IPSET} {info['ip']} comment {info['uid']}"))
    procs = probe.processes(ctx.lab)
    for name, p in sorted(procs.items()):
        if not name.startswith("ztunnel/"):
            continue
        node = name.split("/", 1)[1]
        base = ctx.baseline.get(f"restarts:{name}") or 0
        if not p["ready"] or not p.get("pid") or probe.pid_state(p["pid"]) in ("", "T", "Z"):
            found.append(Finding(f"ztunnel-down:{node}",
                                 f"ztunnel-{node} is not running (or stopped): every meshed connection through "
                                 f"{node} fails until it is back", f"netlab restart {ctx.lab} ztunnel-{node}"))
        elif p["restarts"] > base:
            found.append(Finding(f"ztunnel-restarted:{node}",
                                 f"ztunnel-{node} died and the supervisor started it again ({p['restarts'] - base} "
                                 f"time(s) since the lab started, now pid {p['pid']}): connections it held were "
                                 "reset, new ones work once it is ready",
                                 f"nothing: it is back; `netlab logs {ctx.lab} ztunnel-{node}` shows the restart"))
    for pod, info in sorted(rec.pods.items()):
        if wanted.get(pod) and not info.get("ambient"):
            found.append(Finding(f"unenrolled:{pod}",
                                 f"{pod} was taken out of the mesh at run time (istio.io/dataplane-mode=none): no "
                                 f"ipset entry, no table-100 route on {info['node']}; meshed clients' ztunnels reach "
                                 "it in plaintext, without identities", f"netlab enroll {ctx.lab} {pod}"))
    for f in found:
        if f.key not in ctx.journal:
            ctx.journal.append(f.key)
    return found
