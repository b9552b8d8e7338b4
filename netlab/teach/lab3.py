"""Lab 3, the inbound path in node-routing: table 100, istioin, 15008 vs 15006, the client's IP kept."""

from __future__ import annotations

import os

from netlab.teach import probe
from netlab.teach.common import SERVER_NODE, counted, inbound_line, out_of_mesh, pod_ip
from netlab.teach.model import Counter, Ctx, Outcome, Step, TeachingLab, missing, ok


def _table100(ctx: Ctx) -> Outcome:
    ip = pod_ip(ctx, "productpage-v1")
    rules = probe.ip_rules(ctx.lab, SERVER_NODE)
    if rules.get(103) != "from all lookup 100":
        return missing(f"ip rule 103 (from all lookup 100) is missing on {SERVER_NODE}")
    route = next((r for r in probe.routes(ctx.lab, SERVER_NODE, "100") if r.split()[0] in (ip, f"{ip}/32")), "")
    if "via 192.168.126.2 dev istioin" not in route:
        return missing(f"table 100 on {SERVER_NODE} has no route `{ip} via 192.168.126.2 dev istioin`")
    got = probe.route_get(ctx.lab, SERVER_NODE, ip, "from", "172.18.0.2", "iif", "eth0")
    if "dev istioin" not in got:
        return missing(f"ip route get {ip} from 172.18.0.2 iif eth0 gives {got!r}, not istioin")
    return ok(f"table 100: {route}; rule 103 sends everything unmarked there; ip route get: {got}")


def _hbone(ctx: Ctx) -> Outcome:
    return counted(ctx, "tproxy15008", "TPROXY on pistioin, dport 15008, took the HBONE SYN")


def _plaintext(ctx: Ctx) -> Outcome:
    o = counted(ctx, "tproxy15006", "TPROXY on pistioin (any other port) took notsleep's plaintext SYN to 15006")
    if not o.ok:
        return o
    inn = inbound_line(ctx, "productpage-v1", pod_ip(ctx, "notsleep"))
    if inn is None or inn.get("src.identity"):
        return missing("ztunnel-ambient-worker2 has no identity-less inbound line from notsleep (curl from notsleep "
                       "after unenrolling it)")
    return ok(o.detail + f"; logged dst.addr={inn.get('dst.addr')} with no identity")


def _one_syn(ctx: Ctx) -> Outcome:

    server = pod_ip(ctx, "productpage-v1")
    seen = probe.captured(os.path.join(ctx.workdir, "in"))
    if not seen:
        return missing(f"no capture in {ctx.workdir}/in: run the `netlab capture` of this step")
    conn = [s for s in seen if s.dst == server and s.dport == 15008 and s.vni is None]
    tun = [s for s in conn if s.device == "istioin"]
    wire = [s for s in conn if s.device == "eth0"]
    if not tun:
        return missing("no packet to 10.244.1.7:15008 crossed istioin: restart ztunnel-ambient-worker first, "
                       "so that its HBONE connection is new (a pooled one has no SYN left to send)")
    if any(not s.syn for s in tun):
        return missing(f"{sum(not s.syn for s in tun)} non-SYN packet(s) of the HBONE connection crossed istioin")
    return ok(f"{len(tun)} packet(s) of the HBONE connection crossed istioin, every one a SYN; {len(wire)} crossed "
              f"eth0: after the SYN, the connection's mark (0x210 -> 0x40, table 102) takes the direct veth")


def _source_ip(ctx: Ctx) -> Outcome:
    server = pod_ip(ctx, "productpage-v1")
    seen: dict[str, str] = {}
    for ln in probe.conntrack(ctx.lab, SERVER_NODE):
        f = ln.split()
        if f"dst={server}" in f and "dport=9080" in f:
            src = next(x[4:] for x in f if x.startswith("src="))
            seen.setdefault(src, ln)
    want = {pod_ip(ctx, "sleep"): "sleep", pod_ip(ctx, "notsleep"): "notsleep"}
    found = [f"{name} ({ip})" for ip, name in want.items() if ip in seen]
    if pod_ip(ctx, "sleep") not in seen:
        return missing(f"conntrack on {SERVER_NODE} has no connection from sleep's IP to {server}:9080: ztunnel did "
                       "not deliver with the client's address, or the entry expired (curl from sleep again)")
    return ok(f"conntrack on {SERVER_NODE}: connections to {server}:9080 from {', '.join(found)}: ztunnel "
              "delivered them with the client's own IP (IP_TRANSPARENT), not its own 10.244.1.2")


LAB = TeachingLab(
    number=3, slug="inbound-node-routing", title="The inbound path",
    topology="bookinfo", mode="node-routing",
    goal="Follow traffic into productpage's node: rule 103 and table 100 send it through istioin to the "
         "ztunnel pod, where TPROXY splits HBONE (15008) from plaintext (15006); then see that productpage "
         "gets connections from the client's own IP.",
    counters=(
        Counter("tproxy15008", f"ztunnel-{SERVER_NODE}", "mangle", ("--dport 15008", "--on-port 15008")),
        Counter("tproxy15006", f"ztunnel-{SERVER_NODE}", "mangle", ("--on-port 15006",)),
    ),
    notes="""Rule 103 has no selector: everything rules 100-102 did not take looks up table 100, which
only has routes for the node's enrolled pods. An HBONE connection from another node crosses
`istioin` with one packet, its SYN (1 on istioin, 12 on eth0 in a measured run): the ztunnel pod
answers from the pod's address, so the node marks the connection 0x210 and sends the rest by
table 102. productpage sees the client's own IP because ztunnel connects with `IP_TRANSPARENT`
from it: conntrack on the node shows `src=10.244.2.4 dst=10.244.1.7 dport=9080`.""",
    steps=(
        Step("Table 100 routes each enrolled pod through istioin",
             f"netlab exec {{lab}} {SERVER_NODE} -- ip route show table 100\n"
             f"netlab exec {{lab}} {SERVER_NODE} -- ip route get 10.244.1.7 from 172.18.0.2 iif eth0",
             "one `/32 via 192.168.126.2 dev istioin src 10.244.1.1` per enrolled pod, plus the ztunnel pod's "
             "own address; a packet arriving from the other node for 10.244.1.7 leaves by istioin",
             _table100, "rule 103 (`from all lookup 100`) has no mark: it catches all that rules 100-102 left",
             kind="look"),
        Step("A meshed request arrives as HBONE: TPROXY to 15008",
             "netlab restart {lab} ztunnel-ambient-worker\n"
             "netlab exec {lab} sleep -- curl -s http://productpage:9080/ | head -n1\n"
             f"netlab exec {{lab}} ztunnel-{SERVER_NODE} -- iptables-save -c -t mangle",
             "the `--dport 15008 ... --on-port 15008` counter moved; 15001 moved too (productpage's own "
             "outbound calls to details and reviews). HBONE connections are pooled: restarting sleep's ztunnel "
             "first makes sure this request opens a new one, whose SYN is what TPROXY counts",
             _hbone, "restart ztunnel-ambient-worker (it empties its HBONE pool), then curl from sleep"),
        Step("Only the SYN crosses istioin",
             "netlab restart {lab} ztunnel-ambient-worker\n"
             f"netlab capture {{lab}} -o {{dir}}/in --only {SERVER_NODE} --filter 'tcp port 15008 or udp port 6081' "
             "-- sleep curl -s -o /dev/null http://productpage:9080/",
             "on ambient-worker2, istioin carries the SYN of the new HBONE connection to 10.244.1.7:15008 (and the "
             "veth to the ztunnel pod the same SYN in Geneve VNI 1000); every later packet of that connection "
             "arrives on eth0 and goes to the ztunnel pod directly (connmark 0x210 -> mark 0x40 -> table 102)",
             _one_syn, "restarting the client's ztunnel empties its HBONE connection pool"),
        Step("Take notsleep out of the mesh",
             "netlab unenroll {lab} notsleep",
             "its ipset entry and table-100 route on ambient-worker are gone",
             lambda ctx: out_of_mesh(ctx, "notsleep", "ambient-worker"), "`netlab unenroll {lab} notsleep`"),
        Step("Its plaintext request is still captured: TPROXY to 15006",
             "netlab exec {lab} notsleep -- curl -s http://productpage:9080/ | head -n1\n"
             f"netlab exec {{lab}} ztunnel-{SERVER_NODE} -- iptables-save -c -t mangle | grep 15006",
             "the `-i pistioin -p tcp -j TPROXY --on-port 15006` counter moved: productpage is enrolled, so "
             "table 100 still sends it everything; with no HBONE, ztunnel takes it on 15006",
             _plaintext, "unenroll notsleep first (step 3), then curl from it"),
        Step("The server sees the client's IP, not ztunnel's",
             f"netlab exec {{lab}} {SERVER_NODE} -- conntrack -L -p tcp --orig-dst 10.244.1.7 --orig-port-dst 9080",
             "src=10.244.2.4 (sleep) and src=10.244.2.5 (notsleep) to 10.244.1.7:9080, with mark=528 (0x210: "
             "sent by ztunnel with a spoofed source): ztunnel binds the client's address (IP_TRANSPARENT)",
             _source_ip, "run it within two minutes of the requests (TIME_WAIT entries expire)", kind="look"),
    ),
)
