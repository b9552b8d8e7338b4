"""Checks several teaching labs share, written against bookinfo's names and addresses."""

from __future__ import annotations

from netlab.lab import lifecycle as lablib
from netlab.teach import probe
from netlab.teach.model import Ctx, Outcome, missing, ok

IPSET = "ztunnel-pods-ips"
SPIFFE = "spiffe://cluster.local/ns/default/sa/"
CLIENT_NODE, SERVER_NODE = "ambient-worker", "ambient-worker2"


def pod_ip(ctx: Ctx, pod: str) -> str:
    return str(lablib.record_of(ctx.lab).pods[pod]["ip"])


def lab_ready(ctx: Ctx, mode: str) -> Outcome:
    rec = lablib.record_of(ctx.lab)
    if rec.mode != mode:
        return missing(f"lab {ctx.lab} runs {rec.mode}, this lab needs {mode}")
    procs = probe.processes(ctx.lab)
    if not procs:
        return missing(f"lab {ctx.lab}: its supervisor does not answer (`netlab status {ctx.lab}`)")
    down = sorted(n for n, p in procs.items() if not p["ready"])
    if down:
        return missing(f"not ready yet: {', '.join(down)}")
    zt = sorted(n for n in procs if n.startswith("ztunnel/"))
    return ok(f"{len(procs)} processes ready, {len(zt)} ztunnels ({', '.join(zt)}), mode {rec.mode}")


def outbound_line(ctx: Ctx, client: str, server: str, node: str = CLIENT_NODE) -> probe.AccessLine | None:
    lines = [a for a in ctx.access(node) if a.get("direction") == "outbound" and a.get("src.workload") == client
             and a.get("dst.workload") == server]
    return lines[-1] if lines else None


def inbound_line(ctx: Ctx, server: str, client_ip: str, node: str = SERVER_NODE) -> probe.AccessLine | None:
    lines = [a for a in ctx.access(node) if a.get("direction") == "inbound" and a.get("dst.workload") == server
             and a.get("src.addr").split(":")[0] == client_ip]
    return lines[-1] if lines else None


def requested(ctx: Ctx, client: str, server: str) -> Outcome:
    a = outbound_line(ctx, client, server)
    if a is None:
        return missing(f"ztunnel-{CLIENT_NODE} has logged no outbound connection from {client} to {server} "
                       f"since the lab started: the request was not sent, or did not go through ztunnel")
    return ok(f"ztunnel-{CLIENT_NODE} logged {client} -> {server}: dst.addr={a.get('dst.addr')} "
              f"dst.hbone_addr={a.get('dst.hbone_addr')} bytes_sent={a.get('bytes_sent')} "
              f"bytes_recv={a.get('bytes_recv')}")


def out_of_mesh(ctx: Ctx, pod: str, node: str) -> Outcome:
    ip = pod_ip(ctx, pod)
    problems = []
    if ip in probe.ipset_members(ctx.lab, node, IPSET):
        problems.append(f"{ip} is still in ipset {IPSET} on {node}")
    if any(r.split()[0] in (ip, f"{ip}/32") for r in probe.routes(ctx.lab, node, "100")):
        problems.append(f"table 100 on {node} still routes {ip} to istioin")
    if problems:
        return missing(f"{pod} is still in the mesh: " + "; ".join(problems))
    return ok(f"{pod} ({ip}) is out of ipset {IPSET} and table 100 on {node}")


def in_mesh(ctx: Ctx, pod: str, node: str) -> Outcome:
    ip = pod_ip(ctx, pod)
    problems = []
    if ip not in probe.ipset_members(ctx.lab, node, IPSET):
        problems.append(f"{ip} is not in ipset {IPSET} on {node}")
    if not any(r.split()[0] in (ip, f"{ip}/32") for r in probe.routes(ctx.lab, node, "100")):
        problems.append(f"table 100 on {node} has no route for {ip}")
    if problems:
        return missing(f"{pod} is not in the mesh: " + "; ".join(problems))
    return ok(f"{pod} ({ip}) is in ipset {IPSET} and routed to istioin by table 100 on {node}")


def counted(ctx: Ctx, key: str, what: str) -> Outcome:
    d = ctx.delta(key)
    if d is None:
        return missing(f"the rule is gone: {ctx.rule_text(key)}")
    if d <= 0:
        return missing(f"{what}: its counter has not moved since the lab started ({ctx.rule_text(key)})")
    return ok(f"{what}: {d} packet(s) since the lab started ({ctx.rule_text(key)})")
