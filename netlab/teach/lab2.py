"""Lab 2, one outbound packet in node-routing: ipset, mark 0x100, rule 101, istioout, TPROXY 15001."""

from __future__ import annotations

import json
import os
import shutil

from netlab.lab import lifecycle as lablib
from netlab.teach import probe
from netlab.teach.common import CLIENT_NODE, IPSET, counted, pod_ip
from netlab.teach.model import Counter, Ctx, Outcome, Step, TeachingLab, missing, ok

VIP = "10.96.0.10"  # productpage's service VIP in bookinfo


def _member(ctx: Ctx) -> Outcome:
    ip = pod_ip(ctx, "sleep")
    members = probe.ipset_members(ctx.lab, CLIENT_NODE, IPSET)
    if ip not in members:
        return missing(f"sleep's IP {ip} is not in ipset {IPSET} on {CLIENT_NODE}: its packets will not be marked")
    uid = lablib.record_of(ctx.lab).pods["sleep"]["uid"]
    if members[ip] != uid:
        return missing(f"{ip} is in {IPSET} with comment {members[ip]!r}, not sleep's UID {uid}")
    return ok(f"{ip} is in {IPSET} with comment \"{uid}\" (sleep's pod UID), one of {len(members)} members")


def _marked(ctx: Ctx) -> Outcome:
    a = counted(ctx, "mark100", "mangle ztunnel-PREROUTING marked sleep's packets 0x100")
    b = counted(ctx, "nat100", "nat ztunnel-PREROUTING ACCEPTed the 0x100 SYN before KUBE-SERVICES")
    if not a.ok:
        return a
    if not b.ok:
        return b
    return ok(a.detail + "; " + b.detail)


def _vip_kept(ctx: Ctx) -> Outcome:
    ip = pod_ip(ctx, "sleep")
    for ln in probe.conntrack(ctx.lab, CLIENT_NODE):
        if f"src={ip} dst={VIP} " in ln and "dport=9080" in ln:
            reply = ln.split("src=")[2].split()[0]
            if reply == VIP:
                return ok(f"conntrack on {CLIENT_NODE}: {ip} -> {VIP}:9080 replies from {reply}: no DNAT, "
                          "the VIP reaches ztunnel unchanged")
            return missing(f"conntrack on {CLIENT_NODE}: the connection to {VIP} was DNATed to {reply}: "
                           "kube-proxy handled it, ztunnel never saw it (is sleep in the mesh?)")
    if not probe.conntrack(ctx.lab, CLIENT_NODE) and not _has_conntrack(ctx):
        return missing("conntrack is not installed (apt-get install conntrack)")
    return missing(f"conntrack on {CLIENT_NODE} has no connection from sleep ({ip}) to {VIP}:9080: "
                   "send the request of step 2 again (entries expire 2 minutes after a connection closes)")


def _has_conntrack(ctx: Ctx) -> bool:

    return shutil.which("conntrack") is not None


def _rule101(ctx: Ctx) -> Outcome:
    rules = probe.ip_rules(ctx.lab, CLIENT_NODE)
    if "fwmark 0x100/0x100 lookup 101" not in rules.get(101, ""):
        return missing(f"ip rule 101 (fwmark 0x100/0x100 lookup 101) is missing on {CLIENT_NODE}")
    ip = pod_ip(ctx, "sleep")
    veth = probe.host_veth(ctx.lab, CLIENT_NODE, ip)
    got = probe.route_get(ctx.lab, CLIENT_NODE, VIP, "from", ip, "iif", veth, "mark", "0x100")
    if "dev istioout" not in got or "table 101" not in got:
        return missing(f"ip route get {VIP} from {ip} iif {veth} mark 0x100 gives {got!r}, not istioout/table 101")
    return ok(f"rule 101: {rules[101]}; ip route get {VIP} ... mark 0x100: {got}")


def _geneve(ctx: Ctx) -> Outcome:

    ip = pod_ip(ctx, "sleep")
    seen = probe.captured(os.path.join(ctx.workdir, "out"))
    if not seen:
        return missing(f"no capture in {ctx.workdir}/out: run the `netlab capture` of this step")
    syns = [s for s in seen if s.syn and s.src == ip and s.dst == VIP and s.dport == 9080]
    tunnel = [s for s in syns if s.vni == 1001]
    tap = [s for s in syns if s.device == "istioout" and s.vni is None]
    if not tunnel:
        vnis = sorted({s.vni for s in seen if s.vni is not None})
        return missing(f"the capture has no Geneve packet (VNI 1001) carrying sleep's SYN to {VIP}:9080 "
                       f"(VNIs seen: {vnis or 'none'})")
    where = {s.device for s in tunnel}
    return ok(f"sleep's SYN {ip} -> {VIP}:9080 seen on istioout ({len(tap)}x) and inside Geneve VNI 1001 on "
              f"{', '.join(sorted(where))} (the veth to the ztunnel pod): the VIP, not a pod IP, rides the tunnel")


def _traced(ctx: Ctx) -> Outcome:
    """The trace's decisions for the SYN and the first ACK, each confirmed by the live kernel."""
    path = os.path.join(ctx.workdir, "trace.json")
    try:
        with open(path) as f:
            steps = json.load(f)["data"]["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return missing(f"no trace in {path}: run the `netlab trace ... --json` of this step")

    def route(packet: str, member: str, prio: int) -> dict | None:
        return next((s for s in steps if s["kind"] == "route" and s["packet"] == packet and s["member"] == member
                     and s["priority"] == prio), None)

    syn101 = route("SYN", CLIENT_NODE, 101)
    tproxy = next((s for s in steps if s["kind"] == "rule" and s["packet"] == "SYN"
                   and s["member"] == f"ztunnel-{CLIENT_NODE}" and "--on-port 15001" in s["rule"]), None)
    ack102 = route("ACK", CLIENT_NODE, 102)
    if not (syn101 and tproxy and ack102):
        return missing("the trace lacks " + ", ".join(n for n, x in (("the SYN's rule 101", syn101),
                       ("the SYN's TPROXY to 15001", tproxy), ("the ACK's rule 102", ack102)) if not x))
    rules = probe.ip_rules(ctx.lab, CLIENT_NODE)
    if "lookup 101" not in rules.get(101, "") or "lookup 102" not in rules.get(102, ""):
        return missing(f"the kernel of {CLIENT_NODE} no longer has rules 101/102 the trace went through")
    if not any(r == tproxy["rule"]
               for _, r in probe.iptables_rules(ctx.lab, f"ztunnel-{CLIENT_NODE}", "mangle")):
        return missing("the TPROXY rule in the trace is not in the ztunnel pod's mangle table")
    return ok(f"SYN: mark 0x100, rule 101 -> {syn101['resolved']}; TPROXY 15001 mark {tproxy['mark_after']:#x}; "
              f"ACK: mark 0x40, rule 102 -> {ack102['resolved']} (every decision still in the kernel)")


def _tproxy(ctx: Ctx) -> Outcome:
    rules = probe.ip_rules(ctx.lab, f"ztunnel-{CLIENT_NODE}")
    if "fwmark 0x400/0xfff lookup 100" not in rules.get(20000, ""):
        return missing(f"rule 20000 (fwmark 0x400/0xfff lookup 100) is missing in ztunnel-{CLIENT_NODE}")
    return counted(ctx, "tproxy15001", "TPROXY on pistioout handed outbound SYNs to ztunnel's port 15001")


LAB = TeachingLab(
    number=2, slug="outbound-node-routing", title="Follow an outbound packet in node-routing",
    topology="bookinfo", mode="node-routing",
    goal="Follow sleep's request to the productpage VIP through the node: the ipset match, the 0x100 mark, "
         "the nat ACCEPT that keeps the VIP, ip rule 101 and table 101, the istioout Geneve tunnel (VNI 1001) "
         "and the TPROXY rule that hands the SYN to ztunnel on 15001.",
    counters=(
        Counter("mark100", CLIENT_NODE, "mangle", ("--match-set ztunnel-pods-ips src", "0x100/0x100")),
        Counter("nat100", CLIENT_NODE, "nat", ("-A ztunnel-PREROUTING -m mark --mark 0x100/0x100 -j ACCEPT",)),
        Counter("tproxy15001", f"ztunnel-{CLIENT_NODE}", "mangle", ("--on-port 15001",)),
    ),
    notes="""In a fresh lab one request moves the 0x100 rule by exactly 1 packet: only the SYN is marked.
ztunnel answers sleep as the VIP through the ztunnel veth, so the connection gets connmark 0x210,
and every later packet of sleep's takes mark 0x40 → rule 102 → table 102 straight to the ztunnel
pod. The SYN is also the only packet of that connection inside Geneve VNI 1001. Why the VIP is
still the destination: nat's `ztunnel-PREROUTING` ACCEPTs 0x100 before kube-proxy's
`KUBE-SERVICES`, so conntrack's reply tuple starts `src=10.96.0.10`. Step by step with counters:
[walk](../walk-node-routing.md).""",
    steps=(
        Step("sleep is a member of the node's ipset",
             f"netlab exec {{lab}} {CLIENT_NODE} -- ipset list {IPSET}",
             "Type hash:ip with comments; 10.244.2.4 (sleep) and 10.244.2.5 (notsleep), each with its pod UID",
             _member, "istio-cni adds every enrolled pod's IP; `netlab enroll {lab} sleep` if it is missing",
             kind="look"),
        Step("Send one request; watch the 0x100 mark rule count it",
             "netlab exec {lab} sleep -- curl -s http://productpage:9080/ | head -n1\n"
             f"netlab exec {{lab}} {CLIENT_NODE} -- iptables-save -c -t mangle | grep 0x100",
             "[packets:bytes] before the rule `-p tcp -m set --match-set ztunnel-pods-ips src -j MARK --set-xmark "
             "0x100/0x100`: one per packet sleep sent that was not yet marked otherwise",
             _marked, "the counters only move when sleep sends traffic: curl from sleep"),
        Step("The VIP is not translated: nat ACCEPTs 0x100 before kube-proxy",
             f"netlab exec {{lab}} {CLIENT_NODE} -- iptables-save -c -t nat | head -n 20\n"
             f"netlab exec {{lab}} {CLIENT_NODE} -- conntrack -L -p tcp --orig-dst {VIP}",
             "`-A ztunnel-PREROUTING -m mark --mark 0x100/0x100 -j ACCEPT` is reached before KUBE-SERVICES "
             f"(its jump is first in PREROUTING); conntrack's reply tuple starts src={VIP}: no DNAT",
             _vip_kept, "look at the connection of step 2 in conntrack within two minutes of sending it",
             kind="look"),
        Step("Rule 101 sends 0x100 to table 101, whose default route is istioout",
             f"netlab exec {{lab}} {CLIENT_NODE} -- ip rule\n"
             f"netlab exec {{lab}} {CLIENT_NODE} -- ip route show table 101\n"
             f"netlab exec {{lab}} {CLIENT_NODE} -- ip route get {VIP} from 10.244.2.4 "
             f"iif {{veth:{CLIENT_NODE}:10.244.2.4}} mark 0x100",
             "rule `101: from all fwmark 0x100/0x100 lookup 101`; table 101 `default via 192.168.127.2 dev "
             "istioout`; the kernel's own answer for a 0x100 packet from sleep's veth: `via 192.168.127.2 dev "
             "istioout table 101`",
             _rule101, "without `mark 0x100` the same lookup goes to the main table (eth0)", kind="look"),
        Step("Capture it: the SYN rides Geneve VNI 1001",
             f"netlab capture {{lab}} -o {{dir}}/out --only {CLIENT_NODE} -- sleep curl -s -o /dev/null "
             "http://productpage:9080/\n"
             "tshark -r {dir}/out/merged.pcapng -Y 'geneve.vni == 1001 && tcp.flags.syn == 1' "
             "-T fields -e frame.interface_description -e ip.dst -e tcp.dstport",
             "the SYN to 10.96.0.10:9080 on istioout, then the same SYN inside UDP 6081 Geneve, VNI 1001, on the "
             "veth to the ztunnel pod (outer 10.244.2.1 -> 10.244.2.2); the replies do not come back this way",
             _geneve, "`netlab capture` runs the command while every interface of ambient-worker is captured"),
        Step("Trace one connection: every rule and route decision, SYN and ACK",
             "netlab trace {lab} --from sleep --to productpage:9080\n"
             "netlab trace {lab} --from sleep --to productpage:9080 --json > {dir}/trace.json",
             "the SYN: ztunnel-PREROUTING marks 0x100, nat ACCEPT, rule 101 -> istioout, then in the ztunnel "
             "pod TPROXY --on-port 15001 (0x400) and rule 20000 -> local; the ACK: connmark 0x210 -> mark "
             "0x40, rule 102 -> the ztunnel veth, 0x4d3 and rule 20003 in the ztunnel pod",
             _traced, "netlab trace opens one new connection and reads nftables tracing; nothing is left behind"),
        Step("In the ztunnel pod, TPROXY hands the SYN to port 15001",
             f"netlab exec {{lab}} ztunnel-{CLIENT_NODE} -- iptables-save -c -t mangle\n"
             f"netlab exec {{lab}} ztunnel-{CLIENT_NODE} -- ip rule",
             "`-i pistioout -p tcp -j TPROXY --on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff` "
             "counted the SYNs; rule 20000 (0x400) sends them to table 100 `local default dev lo`",
             _tproxy, "the counter moves with each new connection sleep opens", kind="look"),
    ),
)
