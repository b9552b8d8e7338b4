"""Lab 1, a first mesh: bookinfo in node-routing, one request, both ztunnels' access logs."""

from __future__ import annotations

from netlab.teach.common import (
    CLIENT_NODE,
    SERVER_NODE,
    SPIFFE,
    inbound_line,
    lab_ready,
    out_of_mesh,
    outbound_line,
    pod_ip,
    requested,
)
from netlab.teach.model import Ctx, Outcome, Step, TeachingLab, missing, ok


def _client_side(ctx: Ctx) -> Outcome:
    a = outbound_line(ctx, "sleep", "productpage-v1")
    if a is None:
        return missing("no outbound sleep -> productpage-v1 line in ztunnel-ambient-worker's access log (step 2)")
    want = {"src.identity": SPIFFE + "sleep", "dst.identity": SPIFFE + "bookinfo-productpage"}
    bad = [f"{k}={a.get(k) or '(none)'} (want {v})" for k, v in want.items() if a.get(k) != v]
    if bad or not a.get("dst.addr").endswith(":15008"):
        return missing("the outbound line is not an mTLS HBONE connection: " + "; ".join(bad or [a.get("dst.addr")]))
    return ok(f"src.identity={a.get('src.identity')} dst.addr={a.get('dst.addr')} (HBONE to the pod) "
              f"dst.hbone_addr={a.get('dst.hbone_addr')} (the service VIP)")


def _server_side(ctx: Ctx) -> Outcome:
    out = outbound_line(ctx, "sleep", "productpage-v1")
    inn = inbound_line(ctx, "productpage-v1", pod_ip(ctx, "sleep"))
    if out is None or inn is None:
        return missing("ztunnel-ambient-worker2 has no inbound line from sleep to productpage-v1 (step 2)")
    if inn.get("src.identity") != SPIFFE + "sleep":
        return missing(f"the inbound line carries no sleep identity: src.identity={inn.get('src.identity') or '(none)'}")
    # both ends count the same application bytes of one connection, seen from opposite sides
    pairs = {(o.get("bytes_sent"), o.get("bytes_recv")) for o in ctx.access(CLIENT_NODE)
             if o.get("src.workload") == "sleep" and o.get("dst.workload") == "productpage-v1"}
    if (inn.get("bytes_recv"), inn.get("bytes_sent")) not in pairs:
        return missing(f"inbound bytes_recv={inn.get('bytes_recv')} bytes_sent={inn.get('bytes_sent')} match no "
                       "outbound line's bytes_sent/bytes_recv")
    return ok(f"ztunnel-ambient-worker2: dst.hbone_addr={inn.get('dst.hbone_addr')} (the pod), "
              f"bytes_recv={inn.get('bytes_recv')} = the client side's bytes_sent, "
              f"bytes_sent={inn.get('bytes_sent')} = its bytes_recv")


def _plaintext(ctx: Ctx) -> Outcome:
    inn = inbound_line(ctx, "productpage-v1", pod_ip(ctx, "notsleep"))
    if inn is None:
        return missing("ztunnel-ambient-worker2 has logged no inbound connection from notsleep "
                       f"({pod_ip(ctx, 'notsleep')}) since the lab started")
    if inn.get("src.identity"):
        return missing(f"the inbound line from notsleep still has src.identity={inn.get('src.identity')}: "
                       "notsleep was still in the mesh when it called (step 5 first)")
    return ok(f"inbound plaintext: src.addr={inn.get('src.addr')} (notsleep's own IP) dst.addr={inn.get('dst.addr')} "
              "and no src.identity: no mTLS, so no identity")


LAB = TeachingLab(
    number=1, slug="first-mesh", title="A first mesh", topology="bookinfo", mode="node-routing",
    goal="Stand up bookinfo in the mesh, send one request, and read what both ztunnels logged about it: "
         "who talked to whom (SPIFFE identities) and how many bytes.",
    notes="""The outbound line on sleep's node and the inbound line on productpage's node describe one
connection from both ends: the same identities, and each side's `bytes_sent` is the other's
`bytes_recv` (80 and 814 in a fresh lab). `dst.hbone_addr` is the VIP (10.96.0.10:9080) outbound,
because sleep's ztunnel logs what sleep asked for, and the pod (10.244.1.7:9080) inbound, because
the server's ztunnel only sees the HBONE CONNECT target. From an unenrolled client the request
still reaches productpage's ztunnel (productpage is enrolled), but as plaintext on 15006: no
identity can be logged. The full path: [walk](../walk-node-routing.md).""",
    steps=(
        Step("Look at the lab: two nodes, a ztunnel on each, every process ready",
             "netlab status {lab}",
             "mode node-routing, istio 1.20; the processes table: one ztunnel/<node> per node, the "
             "geneve/<node> forwarders when the kernel has no geneve links (encap geneve-user), one pod/<name> per workload",
             lambda ctx: lab_ready(ctx, "node-routing"),
             "`netlab lab start 1` stands the lab up; wait until every process is ready", kind="look"),
        Step("Send one request from sleep to productpage",
             "netlab exec {lab} sleep -- curl -s http://productpage:9080/ | head -n1",
             "the first line of the page, <!DOCTYPE html>: the request went through two ztunnels",
             lambda ctx: requested(ctx, "sleep", "productpage-v1"),
             "run the curl inside the sleep pod with `netlab exec {lab} sleep -- ...`"),
        Step("Read the client side: ztunnel-ambient-worker's access log",
             f"netlab logs {{lab}} ztunnel-{CLIENT_NODE} -n 3",
             "direction=\"outbound\"; src.identity spiffe://cluster.local/ns/default/sa/sleep; dst.addr "
             "10.244.1.7:15008 (HBONE to the pod) and dst.hbone_addr 10.96.0.10:9080 (the VIP sleep asked "
             "for); bytes_sent (the request) and bytes_recv (the page)",
             _client_side, "the line with src.workload=\"sleep\" and direction=\"outbound\"", kind="look"),
        Step("Read the server side: ztunnel-ambient-worker2's access log",
             f"netlab logs {{lab}} ztunnel-{SERVER_NODE} -n 6",
             "direction=\"inbound\" for productpage-v1 with the same two identities; dst.hbone_addr is now "
             "the pod IP 10.244.1.7:9080; bytes_recv here = bytes_sent on the client side; productpage's own "
             "calls to details and reviews (outbound and inbound on the same node)",
             _server_side, "compare the byte counts of the two lines", kind="look"),
        Step("Take notsleep out of the mesh",
             "netlab unenroll {lab} notsleep",
             "ipset del ztunnel-pods-ips 10.244.2.5 and the table-100 route removed, as istio-cni did",
             lambda ctx: out_of_mesh(ctx, "notsleep", CLIENT_NODE),
             "`netlab unenroll {lab} notsleep`"),
        Step("Call productpage from notsleep, now in plaintext",
             "netlab exec {lab} notsleep -- curl -s http://productpage:9080/ | head -n1\n"
             f"netlab logs {{lab}} ztunnel-{SERVER_NODE} -n 1",
             "the page still loads; the inbound line has src.addr 10.244.2.5 and no src.identity: "
             "productpage's ztunnel captured it (port 15006, plaintext), nobody proved who notsleep is",
             _plaintext, "unenroll notsleep first (step 5), then curl from notsleep"),
    ),
)
