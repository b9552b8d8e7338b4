"""Lab 5, compare: the same bookinfo in both designs, counted object by object, and the report."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import ValidationError

from netlab.lab import lifecycle as lablib
from netlab.observe.report.schema import Report
from netlab.teach import probe
from netlab.teach.common import SERVER_NODE, lab_ready
from netlab.teach.model import Ctx, Outcome, Step, TeachingLab, missing, ok


@dataclass(frozen=True)
class MeshObjects:
    """What the mesh added to one netns, by kind (kube-proxy's rules and the defaults not counted)."""

    iptables: int
    ip_rules: int
    routes: int
    ipset_members: int
    links: int

    @property
    def total(self) -> int:
        return self.iptables + self.ip_rules + self.routes + self.ipset_members + self.links

    def text(self) -> str:
        return (f"{self.total} ({self.iptables} iptables rules, {self.ip_rules} ip rules, {self.routes} routes, "
                f"{self.ipset_members} ipset members, {self.links} tunnel links)")


def mesh_objects(lab: str, target: str) -> MeshObjects:
    ipt = sum(1 for t in ("mangle", "nat", "filter") for _, r in probe.iptables_rules(lab, target, t)
              if "ztunnel-" in r or "ISTIO_" in r)
    rules = sum(1 for p in probe.ip_rules(lab, target) if p not in (0, 32766, 32767))
    routes = sum(len(probe.routes(lab, target, t)) for t in ("100", "101", "102"))
    members = sum(len(probe.ipset_members(lab, target, s))
                  for s in ("ztunnel-pods-ips", "istio-inpod-probes", "istio-inpod-probes-v4"))
    links = sum(1 for ln in probe.run(lab, target, ["ip", "-o", "link", "show"]).splitlines()
                if any(f" {n}:" in ln or f" {n}@" in ln for n in ("istioin", "istioout", "pistioin", "pistioout")))
    return MeshObjects(ipt, rules, routes, members, links)


def _nr(ctx: Ctx) -> str:
    return f"{ctx.lab}-nr"


def _both_ready(ctx: Ctx) -> Outcome:
    a = lab_ready(ctx, "inpod")
    other = Ctx(_nr(ctx), ctx.number, ctx.started, ctx.workdir)
    b = lab_ready(other, "node-routing")
    if not (a.ok and b.ok):
        return missing("; ".join(o.detail for o in (a, b) if not o.ok))
    return ok(f"{ctx.lab} (inpod): {a.detail}; {_nr(ctx)} (node-routing): {b.detail}")


def _node_objects(ctx: Ctx) -> Outcome:
    nr = mesh_objects(_nr(ctx), SERVER_NODE)
    ip = mesh_objects(ctx.lab, SERVER_NODE)
    if nr.total == 0 or ip.total == 0:
        return missing(f"a lab lacks its design's node objects: node-routing {nr.total}, inpod {ip.total}")
    if nr.total <= ip.total:
        return missing(f"node-routing's node has {nr.total} mesh objects, not more than inpod's {ip.total}")
    return ok(f"on {SERVER_NODE}: node-routing {nr.text()}; inpod {ip.text()}")


def _pod_objects(ctx: Ctx) -> Outcome:
    nr = mesh_objects(_nr(ctx), "productpage-v1")
    ip = mesh_objects(ctx.lab, "productpage-v1")
    if nr.total != 0:
        return missing(f"productpage-v1's netns in node-routing has {nr.text()}: expected none")
    if ip.total == 0:
        return missing("productpage-v1's netns in inpod has no mesh objects: is it enrolled?")
    return ok(f"inside productpage-v1: node-routing 0; inpod {ip.text()}")


def _unenroll_both(ctx: Ctx) -> Outcome:
    nr_rec, ip_rec = lablib.record_of(_nr(ctx)), lablib.record_of(ctx.lab)
    still = [lab for lab, rec in ((_nr(ctx), nr_rec), (ctx.lab, ip_rec)) if rec.pods["ratings-v1"].get("ambient")]
    if still:
        return missing(f"ratings-v1 is still enrolled in {', '.join(still)}")
    nr = mesh_objects(_nr(ctx), SERVER_NODE)
    pod = mesh_objects(ctx.lab, "ratings-v1")
    if pod.total:
        return missing(f"ratings-v1's netns in {ctx.lab} still has {pod.text()}")
    return ok(f"node-routing: the change was on the node (now {nr.total} objects there); inpod: ratings-v1's own "
              "netns emptied, the node kept its single SNAT rule")


def _report(ctx: Ctx) -> Outcome:
    path = os.path.join(ctx.workdir, "report", "report.json")
    try:
        with open(path) as f:
            rep = Report.model_validate_json(f.read())
    except (OSError, ValidationError) as e:
        return missing(f"no readable report at {path} ({str(e).splitlines()[0]}): run the `netlab report` of this step")
    designs = {d.design: d for d in rep.designs}
    if set(designs) != {"node-routing", "inpod"}:
        return missing(f"the report covers {sorted(designs)}, not node-routing and inpod")
    parts = []
    for name, d in designs.items():
        enr = d.enrollment
        where = sorted({a.member for a in enr.added}) if enr else []
        if not enr or not where:
            return missing(f"the {name} run recorded no objects added by its live enrollment")
        line = f"{name}: enrolling {enr.pod} added {len(enr.added)} object(s) in {', '.join(where)}"
        if d.path:
            line += f", one request = {d.path.hops} hops across {d.path.netns_crossings} netns boundaries"
        else:
            line += " (no hop count: " + ("; ".join(d.notes) or "no capture in this run") + ")"
        if d.latency:
            line += f", p50 {d.latency.p50_ms:.1f} ms"
        parts.append(line)
    return ok("; ".join(parts))


LAB = TeachingLab(
    number=5, slug="compare", title="Compare the two designs", topology="bookinfo", mode="inpod",
    companion_mode="node-routing",
    goal="Stand the same bookinfo up in both designs and count what each adds where: node-routing puts "
         "everything on the node (rules other CNIs also own), in-pod puts it in each pod and leaves the node "
         "almost untouched. That is why Istio moved to in-pod in 1.21.",
    notes="""Measured in a live bookinfo (`ambient-worker2`, six pods): node-routing adds 54 objects to the
node (31 iptables rules, 4 ip rules, 11 routes, 6 ipset members, 2 tunnels) and none to the pods;
in-pod adds 8 to the node (2 iptables rules, 6 probe-ipset members) and 16 to each pod (14
iptables rules, 1 ip rule, 1 route). Node-routing's rules sit first in the node's builtin chains,
use ip-rule priorities 100-103 and mark bits 0x100-0x400, the same space a CNI (Calico, Cilium)
owns; an eBPF CNI skips iptables and never sees the marks. That contention is why Istio 1.21
moved the rules into the pods, where only istio-cni writes.""",
    steps=(
        Step("Two labs: bookinfo in-pod ({lab}) and node-routing ({lab}-nr)",
             "netlab status {lab}\nnetlab status {lab}-nr",
             "both labs up, same pods and addresses; only the design differs",
             _both_ready, "`netlab lab start 5` stands up both", kind="look"),
        Step("Count the node's mesh objects in each design",
             f"netlab show {{lab}}-nr {SERVER_NODE} all\nnetlab show {{lab}} {SERVER_NODE} all",
             "node-routing: ztunnel-* chains with their jumps first in PREROUTING/FORWARD/..., ip rules 100-103, "
             "tables 100-102, istioin/istioout, an ipset of every pod; inpod: one nat rule (ISTIO_POSTRT) and "
             "the probe ipset",
             _node_objects, "only objects the mesh added count; kube-proxy's KUBE-* rules are there in both",
             kind="look"),
        Step("Count the pod's mesh objects in each design",
             "netlab show {lab}-nr productpage-v1 all\nnetlab show {lab} productpage-v1 all",
             "node-routing leaves the pod alone; inpod puts ISTIO_PRERT/ISTIO_OUTPUT, rule 32764 and a "
             "table-100 route in it",
             _pod_objects, "compare the iptables sections", kind="look"),
        Step("Unenroll ratings-v1 in both: where does the change happen?",
             "netlab unenroll {lab}-nr ratings-v1\nnetlab unenroll {lab} ratings-v1",
             "node-routing: `ipset del` and a route removed on the node; inpod: the agent deletes the chains, "
             "rule and route inside ratings-v1 and sends DelWorkload",
             _unenroll_both, "`netlab unenroll LAB ratings-v1` for each lab"),
        Step("The report: the same scenario in both designs, side by side",
             "netlab report bookinfo -o {dir}/report --designs node-routing,inpod --name {lab}-rep "
             "--requests 5 --bulk-mib 0\n"
             "sed -n '1,60p' {dir}/report/report.md",
             "per design: latency, every mesh object per netns (node vs pod), what one live enrollment added and "
             "where, and the hops one request took (each TCP leg, each interface it crossed)",
             _report, "the report stands up its own labs ({lab}-rep-nr, {lab}-rep-ip) and takes them down",
             settle=1.0),
    ),
)
