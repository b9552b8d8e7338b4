"""The node-routing design on real kernel objects: what a student sees, and where packets go.

The redirection is checked without ztunnel: its process is stopped and a test-only
transparent listener takes 15001/15006/15008 in the ztunnel pod, recording the original
destination of each connection it gets. Captures are decoded as Geneve by tshark.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from netlab import names
from netlab.linux import nsenter
from netlab.runtime import supervisor
from tests.kernel.helpers import in_lab, lab_up, netlab

pytestmark = pytest.mark.root
IP_TRANSPARENT = 19
LAB = "nrt"


class TransparentListener:
    """Accepts on 15001/15006/15008 in a netns and records (port, original dst)."""

    def __init__(self, ns: str) -> None:
        self.socks = []
        self.seen: list[tuple[int, tuple[str, int]]] = []
        with nsenter.netns(ns):
            for port in (15001, 15006, 15008):
                s = socket.socket()
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))
                s.listen(16)
                s.settimeout(0.2)
                self.socks.append((port, s))
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self) -> None:
        while not self.stop:
            for port, s in self.socks:
                try:
                    c, _ = s.accept()
                except (TimeoutError, OSError):
                    continue
                self.seen.append((port, c.getsockname()))
                with contextlib.suppress(OSError):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nzt\n")
                c.close()

    def close(self) -> None:
        self.stop = True
        self.t.join()
        for _, s in self.socks:
            s.close()


@pytest.fixture(scope="module")
def lab():
    with lab_up("bookinfo", LAB, "--mode", "node-routing", "--encap", "geneve-user") as name:
        yield name


def sh(lab: str, target: str, *cmd: str) -> str:
    r = in_lab(lab, target, *cmd)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_node_shows_what_a_real_node_shows(lab: str) -> None:
    """``ip rule``, routes and tables as on an Istio 1.20 ambient node of a kind cluster."""
    assert sh(lab, "ambient-worker2", "ip", "rule").splitlines() == [
        "0:\tfrom all lookup local",
        "100:\tfrom all fwmark 0x200/0x200 goto 32766",
        "101:\tfrom all fwmark 0x100/0x100 lookup 101",
        "102:\tfrom all fwmark 0x40/0x40 lookup 102",
        "103:\tfrom all lookup 100",
        "32766:\tfrom all lookup main",
        "32767:\tfrom all lookup default",
    ]
    t101 = sh(lab, "ambient-worker2", "ip", "r", "show", "table", "101").splitlines()
    assert t101[0].strip() == "default via 192.168.127.2 dev istioout"
    assert t101[1].startswith("10.244.1.2 dev veth") and t101[1].strip().endswith("scope link")
    get = sh(lab, "ambient-worker2", "ip", "r", "get", "10.244.1.7").splitlines()[0]
    assert get.startswith("10.244.1.7 via 192.168.126.2 dev istioin table 100 src 10.244.1.1")
    ipset = sh(lab, "ambient-worker2", "ipset", "list", "ztunnel-pods-ips")
    assert "Type: hash:ip" in ipset
    members = {ln.split()[0] for ln in ipset.split("Members:\n")[1].splitlines() if ln.strip()}
    assert members == {f"10.244.1.{i}" for i in range(4, 10)}
    addr = sh(lab, "ambient-worker2", "ip", "a", "show", "istioout")
    assert "mtu 1450" in addr and "inet 192.168.127.1/30" in addr
    zsave = sh(lab, "ztunnel-ambient-worker2", "iptables-save")
    for line in (
        "-A PREROUTING -i pistioout -p tcp -j TPROXY --on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff",
        "-A PREROUTING -i pistioin -p tcp -m tcp --dport 15008 -j TPROXY --on-port 15008 --on-ip 127.0.0.1 "
        "--tproxy-mark 0x400/0xfff",
        "-A PREROUTING -i pistioin -p tcp -j TPROXY --on-port 15006 --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff",
    ):
        assert line in zsave.splitlines()


def test_iptables_save_equals_the_plan(lab: str) -> None:
    from netlab.plan import build_plan
    from netlab.protocols.iptables_save import rules_of
    from netlab.topology import load_topology

    plan = build_plan(load_topology("bookinfo"), lab=LAB, mode="node-routing", encap="geneve-user")
    for member in ("ambient-worker2", "ztunnel-ambient-worker"):
        want = rules_of(plan.by_member(member).iptables.render())
        got = rules_of(sh(lab, member, "iptables-save"))
        assert sorted(got) == sorted(want)
        # per chain, the order is exactly the plan's
        for chain in {ln.split()[1] for ln in want if ln.startswith("-A")}:
            assert [x for x in got if x.startswith(f"-A {chain} ")] == [x for x in want if x.startswith(f"-A {chain} ")]


@pytest.fixture
def zt_listener(lab: str):
    """Replace both ztunnels by transparent test listeners for the duration of a test."""
    for node in ("ambient-worker", "ambient-worker2"):
        assert supervisor.request(lab, {"op": "stop", "name": f"ztunnel/{node}"})["ok"]
    time.sleep(0.2)
    ls = {node: TransparentListener(names.netns(lab, names.ztunnel_pod(node))) for node in ("ambient-worker", "ambient-worker2")}
    yield ls
    for x in ls.values():
        x.close()
    for node in ("ambient-worker", "ambient-worker2"):
        supervisor.request(lab, {"op": "start", "spec": _spec(lab, f"ztunnel/{node}")})


def _spec(lab: str, name: str) -> dict:
    import json

    with open(f"/run/netlab/{lab}/processes.json") as f:
        return next(s for s in json.load(f) if s["name"] == name)


def curl(lab: str, pod: str, url: str) -> str:
    return in_lab(lab, pod, "curl", "-s", "--max-time", "5", url).stdout


def capture(ns: str, iface: str, traffic, filt: str = "udp port 6081", proto: str = "geneve") -> list[tuple[str, str, str]]:
    """Run ``traffic()`` while tcpdump captures; (vni, proto type, inner dst) of each Geneve packet
    that carries TCP, decoded by tshark. One retry: on a loaded 2-core machine tcpdump can miss
    the first short connection right after it reports "listening"."""
    for _ in range(3):
        rows = _capture(ns, iface, traffic, filt, proto)
        if rows:
            return rows
    return rows


def _capture(ns: str, iface: str, traffic, filt: str, proto: str) -> list[tuple[str, str, str]]:
    if not shutil.which("tshark"):
        pytest.skip("tshark not installed")
    pcap = f"/tmp/{ns}-{os.getpid()}.pcap"
    p = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "--immediate-mode", "-U", "-q", "-i", iface, "-w", pcap, filt],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in p.stderr.readline()  # capture really started before traffic
        time.sleep(0.2)
        traffic()
        time.sleep(0.3)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(5)
    kind = "geneve.proto_type" if proto == "geneve" else "vxlan.flags"
    out = subprocess.run(["tshark", "-r", pcap, "-Y", f"{proto} && tcp", "-T", "fields", "-e", f"{proto}.vni",
                          "-e", kind, "-e", "ip.dst"], capture_output=True, text=True).stdout
    os.unlink(pcap)
    rows = [ln.split("\t") for ln in out.splitlines() if ln.strip()]
    return [(str(int(r[0], 0)), r[1], r[2].split(",")[-1]) for r in rows if r[0]]


def test_redirection_reaches_the_right_ports(lab: str, zt_listener) -> None:
    # outbound: sleep -> productpage VIP arrives on node ambient-worker's ztunnel 15001, VIP intact
    assert curl(lab, "sleep", "http://productpage:9080/") == "zt\n"
    assert (15001, ("10.96.0.10", 9080)) in zt_listener["ambient-worker"].seen
    # a connection to port 15008 of an enrolled pod arrives on 15008 of its node's ztunnel
    netlab("unenroll", lab, "sleep")
    try:
        curl(lab, "sleep", "http://10.244.1.7:15008/")
        assert (15008, ("10.244.1.7", 15008)) in zt_listener["ambient-worker2"].seen
        # inbound plaintext: unenrolled sleep -> enrolled productpage pod arrives on 15006
        assert curl(lab, "sleep", "http://10.244.1.7:9080/") == "zt\n"
        assert (15006, ("10.244.1.7", 9080)) in zt_listener["ambient-worker2"].seen
        # both unenrolled: the app answers directly, no ztunnel involved
        netlab("unenroll", lab, "productpage-v1")
        n = len(zt_listener["ambient-worker2"].seen)
        page = curl(lab, "sleep", "http://10.244.1.7:9080/health")
        assert page == "ok\n" and len(zt_listener["ambient-worker2"].seen) == n
    finally:
        netlab("enroll", lab, "sleep", check=False)
        netlab("enroll", lab, "productpage-v1", check=False)


def test_tunnels_carry_geneve_vni_1001_out_and_1000_in(lab: str, zt_listener) -> None:
    pkts = capture(names.netns(lab, "ztunnel-ambient-worker"), "eth0",
                   lambda: curl(lab, "sleep", "http://productpage:9080/"))
    vnis = {p[0] for p in pkts}
    assert "1001" in vnis, pkts
    assert all(p[1] == "0x6558" for p in pkts)
    netlab("unenroll", lab, "sleep")
    try:
        pkts = capture(names.netns(lab, "ztunnel-ambient-worker2"), "eth0",
                       lambda: curl(lab, "sleep", "http://10.244.1.7:9080/"))
        assert "1000" in {p[0] for p in pkts}, pkts
        # unenrolled source: nothing goes into the outbound tunnel of its node
        pkts = capture(names.netns(lab, "ztunnel-ambient-worker"), "eth0",
                       lambda: curl(lab, "sleep", "http://10.244.1.7:9080/"))
        assert "1001" not in {p[0] for p in pkts}
    finally:
        netlab("enroll", lab, "sleep", check=False)


def test_enroll_unenroll_flip_ipset_and_route(lab: str) -> None:
    netlab("unenroll", lab, "ratings-v1")
    try:
        assert "10.244.1.8" not in sh(lab, "ambient-worker2", "ipset", "list", "ztunnel-pods-ips")
        assert "10.244.1.8" not in sh(lab, "ambient-worker2", "ip", "r", "show", "table", "100")
        assert "10.244.1.7" in sh(lab, "ambient-worker2", "ip", "r", "show", "table", "100")
        log = open(f"/run/netlab/{lab}/logs/istio-cni.ambient-worker2.log").read()
        assert "Removing pod 'ratings-v1/default'" in log
    finally:
        netlab("enroll", lab, "ratings-v1")
    assert "10.244.1.8" in sh(lab, "ambient-worker2", "ipset", "list", "ztunnel-pods-ips")
    assert ("10.244.1.8 via 192.168.126.2 dev istioin src 10.244.1.1" in
            sh(lab, "ambient-worker2", "ip", "r", "show", "table", "100"))
    log = open(f"/run/netlab/{lab}/logs/istio-cni.ambient-worker2.log").read()
    assert "Adding route for ratings-v1/default: [table 100 10.244.1.8/32 via 192.168.126.2 dev istioin src 10.244.1.1]" in log


def test_kernel_vxlan_tunnels_carry_the_mesh() -> None:
    """``--encap vxlan``: real kernel VXLAN links named istioin/istioout, VNI 1001 out, and the
    design teardown deletes them like geneve links."""
    with lab_up("bookinfo", "nrv", "--encap", "vxlan") as lab:
        link = sh(lab, "ambient-worker", "ip", "-d", "link", "show", "istioout")
        assert "vxlan id 1001" in link and "dstport 4789" in link and "mtu 1450" in link
        pages: list[str] = []
        pkts = capture(names.netns(lab, "ztunnel-ambient-worker"), "eth0",
                       lambda: pages.append(curl(lab, "sleep", "http://productpage:9080/")),
                       filt="udp port 4789", proto="vxlan")
        assert pages and pages[0].startswith("<!DOCTYPE html>")
        assert "1001" in {p[0] for p in pkts}, pkts
        netlab("down", lab, "--design-only")
        assert "istioout" not in sh(lab, "ambient-worker", "ip", "-o", "link")
        assert curl(lab, "sleep", "http://productpage:9080/").startswith("<!DOCTYPE html>")

