"""The report-shaped snapshot: parsers of ip rule / ip route / ipset / iptables-save / ss / ztunnel logs.

The command outputs below are the forms those tools print (node-routing values from Istio 1.20's
istio-cni, in-pod listeners as ztunnel opens them in a pod's netns); the iptables text is the
plan's own golden file, so a lab and a real node go through the same parser.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from netlab.export import snapshot as snap

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

IP_RULE = """0:\tfrom all lookup local
100:\tfrom all fwmark 0x200/0x200 goto 32766
101:\tfrom all fwmark 0x100/0x100 lookup 101
102:\tfrom all fwmark 0x40/0x40 lookup 102
103:\tfrom all lookup 100
32766:\tfrom all lookup main
32767:\tfrom all lookup default
"""
ROUTES = """default via 172.18.0.1 dev eth0
10.244.1.2 dev vethd1f0a4e7 scope link
10.244.1.2 dev vethd1f0a4e7 table 101 scope link
default via 192.168.127.2 dev istioout table 101
10.244.1.7 via 192.168.126.2 dev istioin table 100 src 10.244.1.1
local 10.244.1.1 dev vethd1f0a4e7 table local proto kernel scope host src 10.244.1.1
broadcast 172.18.255.255 dev eth0 table local proto kernel scope link src 172.18.0.3
"""
LINKS = """1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00 promiscuity 0
2: istioin: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT group default
    geneve id 1000 remote 10.244.1.2 ttl auto dstport 6081
7: vethd1f0a4e7@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default
"""
IPSET = """Name: ztunnel-pods-ips
Type: hash:ip
Revision: 0
Header: family inet hashsize 1024 maxelem 65536 comment
Size in memory: 472
References: 1
Number of entries: 2
Members:
10.244.1.7 comment "0a5e3b4c-productpage"
10.244.1.4 comment "9f1c2d3e-reviews-v1"

Name: empty-set
Type: hash:ip
Members:
"""
SS = """State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess
LISTEN 0      128          0.0.0.0:15008      0.0.0.0:*    users:(("ztunnel",pid=1234,fd=20))
LISTEN 0      128                *:15001            *:*    users:(("ztunnel",pid=1234,fd=21))
LISTEN 0      128             [::]:15006         [::]:*    users:(("ztunnel",pid=1234,fd=22))
LISTEN 0      4096               *:9080             *:*
"""
LOG_122 = ("2024-04-11T15:38:42.182974Z\tinfo\taccess\tconnection complete\tsrc.addr=10.244.0.24:46238 "
           'src.workload="shell-6d8bcd654d-t88gp" src.namespace="default" '
           'src.identity="spiffe://cluster.local/ns/default/sa/default" dst.addr=10.244.0.42:15008 '
           'dst.hbone_addr=10.96.108.116:80 dst.service="echo.default.svc.cluster.local" direction="outbound" '
           'bytes_sent=67 bytes_recv=490 duration="13ms"\n'
           "2024-04-11T15:38:42.100000Z\tdebug\taccess\tconnection opened\tsrc.addr=10.244.0.24:46238\n")
LOG_120 = ("2023-11-10T10:00:00.123456Z  INFO outbound{id=5c0e peer_ip=10.244.2.4}: ztunnel::proxy::outbound: "
           "complete dur=2.1ms\n"
           "2023-11-10T10:00:00.100000Z  INFO ztunnel::proxy::inbound_passthrough: connection complete "
           'source=10.244.2.4:5000 destination=10.244.1.7:9080 component="inbound plaintext"\n'
           "2023-11-10T09:59:59.000000Z  INFO ztunnel::readiness: Task 'proxy' complete (1.2ms), still awaiting\n"
           "garbage line\n")


def test_ip_rule_whitespace_normalised() -> None:
    rules = snap.parse_ip_rule(IP_RULE)
    assert rules[1] == "100: from all fwmark 0x200/0x200 goto 32766"
    assert len(rules) == 7


def test_ipset_members_keep_their_comment() -> None:
    assert snap.parse_ipset(IPSET) == {"ztunnel-pods-ips": ['10.244.1.7 comment "0a5e3b4c-productpage"',
                                                            '10.244.1.4 comment "9f1c2d3e-reviews-v1"'],
                                       "empty-set": []}


def test_routes_by_table_without_the_kernels_local_entries() -> None:
    r = snap.parse_routes(ROUTES)
    assert {t: len(v) for t, v in r.items()} == {"main": 2, "101": 2, "100": 1}
    assert r["101"][1] == "default via 192.168.127.2 dev istioout table 101"


def test_link_names() -> None:
    assert snap.parse_links(LINKS) == ["lo", "istioin", "vethd1f0a4e7"]


def test_iptables_save_of_the_plan_golden() -> None:
    text = (GOLDEN / "bookinfo/node-routing/iptables-ambient-worker2.txt").read_text()
    t = snap.parse_iptables_save(text)
    assert t["mangle"]["ztunnel-PREROUTING"][0] == "-A ztunnel-PREROUTING -i istioin -j MARK --set-xmark 0x200/0x200"
    assert "ztunnel-POSTROUTING" not in t["mangle"]  # declared but empty: left out, as netlab report does
    assert sum(len(r) for c in t.values() for r in c.values()) == text.count("\n-A ")


def test_listeners_name_their_process() -> None:
    ls = snap.parse_ss_listen(SS)
    assert [(x.address, x.port, x.owner, x.pid) for x in ls] == [
        ("*", 9080, "?", None), ("*", 15001, "ztunnel", 1234), ("::", 15006, "ztunnel", 1234),
        ("0.0.0.0", 15008, "ztunnel", 1234)]


def test_access_log_122_plain_format() -> None:
    [e] = snap.parse_access_log("ztunnel-n1", LOG_122)
    assert (e.level, e.message) == ("info", "connection complete")
    assert e.fields["dst.hbone_addr"] == "10.96.108.116:80"
    assert e.fields["src.identity"] == "spiffe://cluster.local/ns/default/sa/default"
    assert e.fields["bytes_recv"] == "490" and e.fields["duration"] == "13ms"


def test_access_log_120_tracing_layout() -> None:
    entries = snap.parse_access_log("ztunnel-n1", LOG_120)
    assert [e.message for e in entries] == ["complete", "connection complete"]  # not the readiness line
    assert entries[0].message == "complete" and entries[0].fields == {"dur": "2.1ms"}
    assert entries[1].fields["component"] == "inbound plaintext"
    assert entries[1].fields["destination"] == "10.244.1.7:9080"


def _raw(tmp: Path) -> Path:
    raw = tmp / "raw"
    node = raw / "node" / "ambient-worker2"
    node.mkdir(parents=True)
    (node / "node").write_text("ambient-worker2\n")
    (node / "ip-rule.txt").write_text(IP_RULE)
    (node / "netns").write_text("ambient-worker2\n")
    (node / "routes.txt").write_text(ROUTES)
    (node / "links.txt").write_text(LINKS)
    (node / "ipset.txt").write_text(IPSET)
    (node / "iptables.txt").write_text((GOLDEN / "bookinfo/node-routing/iptables-ambient-worker2.txt").read_text())
    zt = raw / "ztunnel" / "ztunnel-ambient-worker2"
    zt.mkdir(parents=True)
    (zt / "node").write_text("ambient-worker2\n")
    (zt / "listen.txt").write_text(SS)
    (raw / "logs").mkdir()
    (raw / "logs" / "ztunnel-ambient-worker2.log").write_text(LOG_122)
    (raw / "latency.txt").write_text("".join(f"0.0{i} 200 1683\n" for i in range(1, 10)) + "0.500 503 0\n")
    return raw


ARGS = ["--cluster", "ambient", "--topology", "bookinfo", "--istio-version", "1.20", "--design", "node-routing",
        "--client", "sleep", "--url", "http://productpage:9080/", "--netlab-version", "0.1.0",
        "--host", "kind cluster ambient: 3 nodes", "--seconds", "12.5"]


def test_main_writes_the_report_shape(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    out = tmp_path / "report.json"
    assert snap.main([str(raw), "-o", str(out), *ARGS]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == snap.SCHEMA_VERSION
    assert doc["scenario"] == {"topology": "bookinfo", "client": "sleep", "url": "http://productpage:9080/",
                               "requests": 10, "bulk_mib": 0}
    [run] = doc["designs"]
    assert (run["design"], run["lab"], run["istio_version"], run["encap"]) == ("node-routing", "ambient", "1.20",
                                                                               "geneve")
    assert run["latency"]["ok"] == 9 and run["latency"]["p50_ms"] == 50.0 and run["latency"]["p99_ms"] == 500.0
    node, zt = run["objects"]
    assert (node["member"], node["netns"], node["role"], node["node"]) == ("ambient-worker2", "ambient-worker2",
                                                                           "node", "ambient-worker2")
    assert node["routes"] == {"100": 1, "101": 2, "main": 2}
    assert node["ip_rules"] == 7 and node["ipset_members"] == {"empty-set": 0, "ztunnel-pods-ips": 2}
    assert node["iptables"]["mangle"]["ztunnel-PREROUTING"] == 15
    assert node["links"] == ["lo", "istioin", "vethd1f0a4e7"]
    assert zt["member"] == "ztunnel-ambient-worker2" and len(zt["listeners"]) == 4
    assert zt["netns"] == "ztunnel-ambient-worker2"  # no netns file: the member name stands in
    [entry] = json.loads((tmp_path / "access-log.json").read_text())
    assert entry["ztunnel"] == "ztunnel-ambient-worker2" and entry["fields"]["bytes_sent"] == "67"


def test_report_validates_against_netlab_reports_schema(tmp_path: Path) -> None:
    """`netlab report --compare` reads this file through its own model (once that model is here)."""
    schema = pytest.importorskip("netlab.observe.report.schema")
    out = tmp_path / "report.json"
    snap.main([str(_raw(tmp_path)), "-o", str(out), *ARGS])
    assert snap.SCHEMA_VERSION == schema.SCHEMA_VERSION
    schema.Report.model_validate_json(out.read_text())


def test_snapshot_module_is_standard_library_only() -> None:
    """It is copied next to observe.sh and run with a bare python3: no netlab, no third party."""
    tree = ast.parse(Path(snap.__file__).read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods <= set(sys.stdlib_module_names) | {"__future__"}, mods
