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
ROUTE_101 = """10.244.1.2 dev vethd1f0a4e7 scope link
default via 192.168.127.2 dev istioout
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


def test_ipset_members_without_comments() -> None:
    assert snap.parse_ipset(IPSET) == {"ztunnel-pods-ips": ["10.244.1.7", "10.244.1.4"], "empty-set": []}


def test_iptables_save_of_the_plan_golden() -> None:
    text = (GOLDEN / "bookinfo/node-routing/iptables-ambient-worker2.txt").read_text()
    t = snap.parse_iptables_save(text)
    assert t["mangle"]["ztunnel-PREROUTING"][0] == "-A ztunnel-PREROUTING -i istioin -j MARK --set-xmark 0x200/0x200"
    assert t["mangle"]["ztunnel-POSTROUTING"] == []  # declared, empty: kept
    assert sum(len(r) for c in t.values() for r in c.values()) == text.count("\n-A ")


def test_listeners_name_their_process() -> None:
    ls = snap.parse_ss_listen(SS)
    assert [(x.address, x.port, x.process) for x in ls] == [
        ("*", 9080, ""), ("*", 15001, "ztunnel"), ("::", 15006, "ztunnel"), ("0.0.0.0", 15008, "ztunnel")]


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
    (node / "route-101.txt").write_text(ROUTE_101)
    (node / "ipset.txt").write_text(IPSET)
    (node / "iptables.txt").write_text((GOLDEN / "bookinfo/node-routing/iptables-ambient-worker2.txt").read_text())
    zt = raw / "ztunnel" / "ztunnel-ambient-worker2"
    zt.mkdir(parents=True)
    (zt / "node").write_text("ambient-worker2\n")
    (zt / "listen.txt").write_text(SS)
    (raw / "logs").mkdir()
    (raw / "logs" / "ztunnel-ambient-worker2.log").write_text(LOG_122)
    return raw


def test_collect_and_main_write_the_report_shape(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    out = tmp_path / "report.json"
    assert snap.main([str(raw), "--name", "ambient", "--istio-version", "1.20", "--design", "node-routing",
                      "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert (doc["schema"], doc["schema_version"]) == ("netlab.report", 1)
    assert doc["source"] == {"kind": "cluster", "name": "ambient", "tool": "netlab export observe",
                             "istio_version": "1.20", "design": "node-routing"}
    [run] = doc["runs"]
    node, zt = run["kernel_objects"]
    assert (node["target"], node["role"], node["node"]) == ("ambient-worker2", "node", "ambient-worker2")
    assert node["routes"] == {"101": ["10.244.1.2 dev vethd1f0a4e7 scope link",
                                      "default via 192.168.127.2 dev istioout"]}
    assert node["counts"]["ip_rules"] == 7 and node["counts"]["ipset_members"] == 2
    assert zt["target"] == "ztunnel-ambient-worker2" and zt["counts"]["listeners"] == 4
    assert run["access_log"][0]["ztunnel"] == "ztunnel-ambient-worker2"


def test_snapshot_module_is_standard_library_only() -> None:
    """It is copied next to observe.sh and run with a bare python3: no netlab, no third party."""
    tree = ast.parse(Path(snap.__file__).read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods <= set(sys.stdlib_module_names) | {"__future__"}, mods
