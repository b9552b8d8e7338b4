"""Capture, hop reconstruction and trace against real labs, one lab per mode (module-scoped).

tshark is the independent decoder of what ``netlab capture`` wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from netlab import names
from netlab.lab.state import load_record
from netlab.observe import capture as caplib
from netlab.observe import hops as hopslib
from netlab.observe import trace as tracelib
from netlab.observe.model import RouteDecision, RuleMatch
from tests.kernel.helpers import in_lab, lab_netns, lab_up, netlab

pytestmark = pytest.mark.root
CURL = ("curl", "-s", "--max-time", "10", "http://productpage:9080/")


@pytest.fixture(scope="module")
def nr():
    """A fresh lab: the captured curl is its first request, so its HBONE connection is new."""
    with lab_up("bookinfo", "cp-onr", "--mode", "node-routing") as lab:
        yield lab


def tshark(*args: str) -> list[list[str]]:
    p = subprocess.run(["tshark", *args], capture_output=True, text=True, check=True)
    return [ln.split("\t") for ln in p.stdout.splitlines() if ln]


def packet_sockets(lab: str) -> dict[str, int]:
    """AF_PACKET sockets open in each lab netns (``/proc/net/packet`` lines, header excluded)."""
    out = {}
    for ns in lab_netns(lab):
        p = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/packet"], capture_output=True, text=True)
        out[ns] = len(p.stdout.splitlines()) - 1
    return out


@pytest.fixture(scope="module")
def nr_capture(nr, tmp_path_factory):
    """One capture of sleep's curl to productpage, shared by the node-routing tests."""
    before = packet_sockets(nr)
    rec = load_record(nr)
    d = str(tmp_path_factory.mktemp("nr"))
    res = caplib.capture(nr, d, members=rec.members, command=(rec.members["sleep"], [*CURL, "-o", os.devnull]))
    assert packet_sockets(nr) == before, "a capture socket was left open"
    return res


def test_capture_files_per_interface_and_merged(nr, nr_capture) -> None:
    res = nr_capture
    assert res.command_rc == 0 and not res.interrupted
    names = {(i.member, i.device) for i in res.interfaces}
    assert ("sleep", "eth0") in names and ("ambient-worker", "istioout") in names and ("net", "br0") in names
    assert len(res.interfaces) >= 40
    for i in res.interfaces:
        assert os.path.basename(i.pcap) == f"{i.netns}__{i.device}.pcap" and os.path.exists(i.pcap)
        assert i.kernel_drops == 0
    sleep = next(i for i in res.interfaces if (i.member, i.device) == ("sleep", "eth0"))
    assert sleep.packets > 0 and len(tshark("-r", sleep.pcap)) == sleep.packets
    rows = tshark("-r", res.merged, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.interface_description")
    assert len(rows) == sum(i.packets for i in res.interfaces)
    sleep_ns = names.netns(nr, "sleep")
    assert [f"{sleep_ns}/eth0", f"eth0 in netns {sleep_ns}"] in rows


def test_geneve_decodes_and_hbone_is_tls_on_15008(nr, nr_capture) -> None:
    rows = tshark("-r", nr_capture.merged, "-Y", "geneve and tcp.flags.syn == 1 and tcp.flags.ack == 0",
                  "-T", "fields", "-e", "frame.interface_name", "-e", "geneve.vni", "-e", "tcp.dstport")
    assert any(int(r[1], 16) == 1001 for r in rows), rows  # the SYN to the ztunnel pod in VNI 1001
    tls = tshark("-r", nr_capture.merged, "-Y", "tls", "-T", "fields", "-e", "frame.interface_name", "-e", "tcp.port")
    assert tls and all("15008" in r[1] for r in tls)
    underlay = tshark("-r", nr_capture.merged, "-Y", f'frame.interface_name contains "{names.netns(nr, "net")}/" and tcp',
                      "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport")
    assert underlay and all("15008" in r for r in underlay), "plaintext crossed the underlay"


def test_ctrl_c_still_writes_closed_pcaps(nr, tmp_path) -> None:
    before = packet_sockets(nr)
    d = str(tmp_path / "cc")
    p = subprocess.Popen([sys.executable, "-m", "netlab", "capture", nr, "-o", d, "--seconds", "60", "--only",
                          "sleep,ambient-worker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "capturing on" in p.stderr.readline()
        assert in_lab(nr, "sleep", *CURL).returncode == 0
        p.send_signal(signal.SIGINT)
        out, errtext = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, errtext
    assert "interrupted" in errtext
    files = sorted(os.listdir(d))
    sleep_pcap = f"{names.netns(nr, 'sleep')}__eth0.pcap"
    assert "merged.pcapng" in files and sleep_pcap in files
    assert not [f for f in files if f.endswith(".tmp")]
    for f in files:
        subprocess.run(["tshark", "-r", os.path.join(d, f), "-c", "1"], capture_output=True, check=True)
    assert tshark("-r", os.path.join(d, sleep_pcap), "-Y", "tcp.flags.syn == 1")
    time.sleep(0.2)
    assert packet_sockets(nr) == before


def sleep_to_productpage(paths):
    return next(p for p in paths if (p.client, p.server) == ("sleep", "productpage-v1"))


def in_order(hops, *wanted) -> list[int]:
    """Indices of the first hop matching each predicate, each after the previous one."""
    idx, at = [], 0
    for pred in wanted:
        at = next(i for i in range(at, len(hops)) if pred(hops[i]))
        idx.append(at)
        at += 1
    return idx


def test_node_routing_hops_follow_one_request_through_both_ztunnels(nr, nr_capture) -> None:
    rec = load_record(nr)
    sleep_ip = rec.pods["sleep"]["ip"]
    p = sleep_to_productpage(hopslib.paths_for_capture(nr_capture))
    assert p.ztunnels == ("ztunnel-ambient-worker", "ztunnel-ambient-worker2")
    a, b, c = p.legs
    assert [g.role for g in p.legs] == ["to-ztunnel", "hbone", "from-ztunnel"]
    # 1-3: sleep eth0, the node's veth, istioout, the SYN in Geneve VNI 1001, the ztunnel pod on 15001
    in_order(a.hops, lambda h: (h.member, h.device, h.direction) == ("sleep", "eth0", "out") and h.syn,
             lambda h: h.member == "ambient-worker" and h.device.startswith("veth") and h.direction == "in",
             lambda h: (h.member, h.device) == ("ambient-worker", "istioout") and h.syn,
             lambda h: h.encap == "geneve" and h.vni == 1001 and h.syn,
             lambda h: (h.member, h.device) == ("ztunnel-ambient-worker", "pistioout") and h.syn)
    assert a.server == "ztunnel-ambient-worker:15001" and a.sport == int(p.access_log[0].split("src.addr=")[1].split()[0].rsplit(":", 1)[1])
    # 4: the underlay carries only TLS to 15008
    underlay = [h for path in hopslib.paths_for_capture(nr_capture) for g in path.legs for h in g.hops + g.reverse_hops
                if h.member == "net"]
    assert underlay and all(15008 in (h.sport, h.dport) and h.encap == "hbone" for h in underlay)
    assert b.encap == "hbone" and b.server_dport == 15008 and any(h.member == "net" for h in b.hops)
    # 5: the server node's istioin (Geneve VNI 1000) to ztunnel, inbound on 15008
    in_order(b.hops, lambda h: (h.member, h.device) == ("ambient-worker2", "eth0"),
             lambda h: (h.member, h.device) == ("ambient-worker2", "istioin") and h.syn,
             lambda h: h.encap == "geneve" and h.vni == 1000,
             lambda h: (h.member, h.device) == ("ztunnel-ambient-worker2", "pistioin"))
    assert b.server == "ztunnel-ambient-worker2:15008"
    # 6: productpage's eth0, sleep's source IP preserved
    last = c.hops[-1]
    assert (last.member, last.device, last.src, last.dport) == ("productpage-v1", "eth0", sleep_ip, 9080)
    # bytes: the app legs carry exactly what the access log counted; HBONE adds the stated overhead
    assert (a.payload_up, a.payload_down) == (p.app_bytes_up, p.app_bytes_down) == (c.payload_up, c.payload_down)
    up, down = hopslib.hbone_overhead(p)
    assert 0 < up < 8192 and 0 < down < 8192 + p.app_bytes_down // 10, (up, down)


def no_trace_tables(lab: str) -> bool:
    return not any("nl-trace" in subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                                                capture_output=True, text=True).stdout for ns in lab_netns(lab))


def step_index(steps, pred) -> int:
    return next(i for i, s in enumerate(steps) if pred(s))


def test_trace_node_routing(nr) -> None:
    tr = tracelib.trace(nr, source="sleep", destination="productpage:9080")
    assert tr.connected and no_trace_tables(nr)
    syn = [s for s in tr.steps if s.packet == "SYN"]
    i = step_index(syn, lambda s: isinstance(s, RuleMatch) and s.member == "ambient-worker"
                   and s.chain == "ztunnel-PREROUTING" and "--match-set ztunnel-pods-ips src" in s.rule
                   and "0x100/0x100" in s.rule and s.mark_after & 0x100)
    j = step_index(syn, lambda s: isinstance(s, RouteDecision) and s.member == "ambient-worker")
    assert (syn[j].priority, syn[j].table, syn[j].route) == (101, "101", "default via 192.168.127.2 dev istioout")
    k = step_index(syn, lambda s: isinstance(s, RuleMatch) and s.member == "ztunnel-ambient-worker"
                   and s.verdict == "TPROXY" and "--on-port 15001" in s.rule)
    assert i < j < k
    assert syn[i].rule == "-A ztunnel-PREROUTING -p tcp -m set --match-set ztunnel-pods-ips src -j MARK --set-xmark 0x100/0x100"
    # later packets of the flow: connmark 0x210 -> mark 0x40 -> table 102, not the tunnel
    ack = [s for s in tr.steps if s.packet == "ACK" and isinstance(s, RouteDecision) and s.member == "ambient-worker"]
    assert ack and ack[0].priority == 102


@pytest.fixture(scope="module")
def inpod():
    with lab_up("bookinfo", "cp-oip", "--mode", "inpod") as lab:
        yield lab


def test_inpod_hops_stay_in_the_pods(inpod, tmp_path) -> None:
    p = netlab("capture", inpod, "-o", str(tmp_path), "--hops", "--json", "--", "sleep", *CURL, "-o", os.devnull,
               timeout=180)
    data = json.loads(p.stdout)["data"]
    assert data["command_rc"] == 0
    devices = {i["device"] for i in data["interfaces"]}
    assert not devices & {"istioin", "istioout", "pistioin", "pistioout"}
    path = next(x for x in data["paths"] if (x["client"], x["server"]) == ("sleep", "productpage-v1"))
    a, b, c = path["legs"]
    assert [g["role"] for g in path["legs"]] == ["to-ztunnel", "hbone", "from-ztunnel"]
    hops = [h for g in path["legs"] for h in g["hops"] + g["reverse_hops"]]
    assert all(h["encap"] != "geneve" and h["vni"] is None for h in hops)
    # the redirect happens inside sleep's netns: the app's connection never leaves it
    assert {h["member"] for h in a["hops"]} == {"sleep"} and (a["server_dst"], a["server_dport"]) == ("127.0.0.1", 15001)
    # ztunnel's sockets are in the pod netns: HBONE leaves from sleep's, the last leg starts in productpage's
    assert (b["hops"][0]["member"], b["hops"][0]["device"], b["hops"][0]["direction"]) == ("sleep", "eth0", "out")
    assert b["hops"][-1]["member"] == "productpage-v1" and b["server_dport"] == 15008
    assert {h["member"] for h in c["hops"]} == {"productpage-v1"}


def test_trace_inpod(inpod) -> None:
    p = netlab("trace", inpod, "--from", "sleep", "--to", "productpage:9080", "--json", timeout=120)
    steps = json.loads(p.stdout)["data"]["steps"]
    assert no_trace_tables(inpod)
    redirect = [s for s in steps if s["kind"] == "rule" and s["packet"] == "SYN" and s["verdict"] == "REDIRECT"]
    assert redirect and redirect[0]["member"] == "sleep" and redirect[0]["chain"] == "ISTIO_OUTPUT"
    assert "--to-ports 15001" in redirect[0]["rule"]


@pytest.fixture(scope="module")
def direct():
    with lab_up("bookinfo", "cp-ono", "--mode", "none") as lab:
        yield lab


def test_none_hops_one_leg_through_kube_proxy(direct, tmp_path) -> None:
    rec = load_record(direct)
    res = caplib.capture(direct, str(tmp_path), members=rec.members, command=(rec.members["sleep"], [*CURL, "-o", os.devnull]))
    p = sleep_to_productpage(hopslib.paths_for_capture(res))
    [leg] = p.legs
    assert leg.role == "direct" and not p.ztunnels and p.app_bytes_up is None
    assert (leg.dst, leg.server_dst, leg.server_dport) == ("10.96.0.10", rec.pods["productpage-v1"]["ip"], 9080)
    in_order(leg.hops, lambda h: (h.member, h.device) == ("sleep", "eth0"),
             lambda h: (h.member, h.device) == ("ambient-worker", "eth0"),
             lambda h: h.member == "net",
             lambda h: (h.member, h.device) == ("ambient-worker2", "eth0"),
             lambda h: (h.member, h.device) == ("productpage-v1", "eth0"))


def test_trace_none(direct) -> None:
    tr = tracelib.trace(direct, source="sleep", destination="productpage:9080")
    assert tr.connected and no_trace_tables(direct)
    dnat = [s for s in tr.steps if isinstance(s, RuleMatch) and s.packet == "SYN" and s.verdict == "DNAT"]
    assert dnat and dnat[0].member == "ambient-worker" and "--to-destination 10.244.1.7:9080" in dnat[0].rule
