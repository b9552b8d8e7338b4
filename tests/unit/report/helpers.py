"""Reports and paths built by hand, shaped like the ones a bookinfo run produces."""

from __future__ import annotations

from netlab.observe.model import Hop, Leg, Path, RouteDecision, RuleMatch
from netlab.observe.report.diagram import Where
from netlab.observe.report.schema import (
    Bulk,
    DesignRun,
    Enrollment,
    Latency,
    Listener,
    NetnsObjects,
    ObjectChange,
    Phase,
    Report,
    Scenario,
)

NODE_OF = {"sleep": "ambient-worker", "productpage-v1": "ambient-worker2"}


def hop(ns: str, dev: str, s: str, sp: int, d: str, dp: int, enc: str = "none", vni: int | None = None) -> Hop:
    return Hop(1.0, ns, dev, "out", s, sp, d, dp, enc, vni, 6, 600)  # type: ignore[arg-type]


def node_routing_path(client: str = "sleep") -> Path:
    c, s = "10.244.2.4", "10.244.1.7"
    l1 = Leg(c, 40000, s, 9080, "none", (
        hop(client, "eth0", c, 40000, s, 9080), hop("ambient-worker", "veth1", c, 40000, s, 9080),
        hop("ambient-worker", "istioout", c, 40000, s, 9080, "geneve", 1001),
        hop("ztunnel-ambient-worker", "pistioout", c, 40000, s, 9080, "geneve", 1001)))
    l2 = Leg(c, 40001, s, 15008, "hbone", (
        hop("ztunnel-ambient-worker", "eth0", c, 40001, s, 15008, "hbone"),
        hop("ambient-worker", "eth0", c, 40001, s, 15008, "hbone"),
        hop("ambient-worker2", "eth0", c, 40001, s, 15008, "hbone"),
        hop("ambient-worker2", "istioin", c, 40001, s, 15008, "geneve", 1000),
        hop("ztunnel-ambient-worker2", "pistioin", c, 40001, s, 15008, "geneve", 1000)))
    l3 = Leg(c, 40002, s, 9080, "none", (
        hop("ztunnel-ambient-worker2", "eth0", c, 40002, s, 9080), hop("ambient-worker2", "veth2", c, 40002, s, 9080),
        hop("productpage-v1", "eth0", c, 40002, s, 9080)))
    return Path(client, "productpage-v1", (l1, l2, l3), ("ztunnel-ambient-worker", "ztunnel-ambient-worker2"))


def inpod_path() -> Path:
    c, s = "10.244.2.4", "10.244.1.7"
    l1 = Leg(c, 40000, s, 9080, "none", ())
    l2 = Leg(c, 40001, s, 15008, "hbone", (
        hop("sleep", "eth0", c, 40001, s, 15008, "hbone"), hop("ambient-worker", "veth1", c, 40001, s, 15008, "hbone"),
        hop("ambient-worker", "eth0", c, 40001, s, 15008, "hbone"), hop("ambient-worker2", "eth0", c, 40001, s, 15008, "hbone"),
        hop("ambient-worker2", "veth2", c, 40001, s, 15008, "hbone"), hop("productpage-v1", "eth0", c, 40001, s, 15008, "hbone")))
    return Path("sleep", "productpage-v1", (l1, l2), ("ztunnel-ambient-worker", "ztunnel-ambient-worker2"))


def where(ns: str) -> Where:
    if ns.startswith("ztunnel-"):
        return Where(ns[len("ztunnel-"):], ns, "ztunnel")
    if ns.startswith("ambient-"):
        return Where(ns, ns, "node")
    return Where(NODE_OF.get(ns, "ambient-worker"), ns, "pod")


def objects(design: str, pod_name: str = "sleep") -> list[NetnsObjects]:
    nr = design == "node-routing"
    ip = design == "inpod"
    node = NetnsObjects(member="ambient-worker", netns="nl-x.ambient-worker", role="node", node="ambient-worker",
                        ip_rules=7 if nr else 3, routes={"main": 4, **({"100": 2, "101": 1, "102": 1} if nr else {})},
                        ipset_members={"ztunnel-pods-ips": 2} if nr else {}, iptables={"nat": {"KUBE-SERVICES": 4}},
                        links=["lo", "eth0"], listeners=[],
                        lines={"rules": ["0:\tfrom all lookup local", "32766:\tfrom all lookup main",
                                         "32767:\tfrom all lookup default"] + (["100:\tfrom all lookup 100"] * 4 if nr else [])})
    pod = NetnsObjects(member=pod_name, netns=f"nl-x.{pod_name}", role="pod", node="ambient-worker",
                       ip_rules=4 if ip else 3, routes={"main": 2}, ipset_members={},
                       iptables={"mangle": {"ISTIO_PRERT": 7}} if ip else {}, links=["lo", "eth0"],
                       listeners=[Listener(address="0.0.0.0", port=15001, owner="ztunnel/ambient-worker", pid=9)] if ip else [])
    return [node, pod]


def design_run(design: str, p50: float, pod_name: str = "sleep", path: Path | None = None) -> DesignRun:
    from netlab.observe.report.diagram import layout, render_svg
    from netlab.observe.report.schema import PathReport

    pr = None
    if path is not None:
        pr = PathReport(path=path, hops=len(path.hops), netns_crossings=3, ztunnel_traversals=len(path.ztunnels),
                        bytes=[], access_log_bytes={}, hbone_framing_bytes=None, svg=render_svg(layout(path, where)))
    return DesignRun(
        design=design, lab=f"rp-{design}", istio_version=None if design == "none" else "1.20", encap=None,
        phases=[Phase(name="up", seconds=1.0)],
        latency=Latency(url="http://productpage:9080/", requests=10, ok=10, p50_ms=p50, p99_ms=2 * p50, mean_ms=p50,
                        requests_per_s=1000 / p50, response_bytes=800),
        bulk=Bulk(server="productpage-v1", bytes=1 << 20, seconds=0.1, mbit_s=80.0 / p50, retransmits=0),
        ratios=None, objects=objects(design, pod_name), path=pr,
        trace=[RuleMatch("nl-x.ambient-worker", "mangle", "ztunnel-PREROUTING", "-A ztunnel-PREROUTING -j MARK", 0, 0x100,
                         "MARK"), RouteDecision("nl-x.ambient-worker", 101, "101", "default via 192.168.127.2 dev istioout")]
        if design == "node-routing" else None,
        enrollment=None if design == "none" else Enrollment(
            pod="notsleep", seconds=0.02, ready_seconds=None,
            added=[ObjectChange(member="ambient-worker", kind="ipset", line="ztunnel-pods-ips 10.244.2.5")], removed=[]),
        pcaps=[])


def report(pod_name: str = "sleep") -> Report:
    from netlab.observe.report.runner import ratios

    runs = [design_run("none", 1.0, pod_name), design_run("node-routing", 2.5, pod_name, node_routing_path()),
            design_run("inpod", 2.0, pod_name, inpod_path())]
    runs = [runs[0]] + [r.model_copy(update={"ratios": ratios(r, runs[0])}) for r in runs[1:]]
    return Report(netlab_version="0.1.0", created="2026-01-01T00:00:00Z", host="Linux test, 2 CPUs",
                  scenario=Scenario(topology="bookinfo", client="sleep", url="http://productpage:9080/",
                                    requests=10, bulk_mib=1), designs=runs, seconds=3.0)
