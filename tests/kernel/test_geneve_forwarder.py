"""The userspace Geneve forwarder between two real netns: ping, TCP, captures, clean exit.

Creates ``nl-gv.node`` and ``nl-gv.zt`` (always deleted), a veth 10.244.9.1/24 <-> 10.244.9.2/24,
the four TAPs through ``netlab.apply.tuntap`` with Istio's tunnel addresses and MTU 1450, and
runs ``python -m netlab.runtime.geneve`` as a real subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab import names
from netlab.apply import tuntap
from netlab.linux import nsenter
from netlab.runtime.geneve import Forwarder, TunnelSpec
from tests.kernel.helpers import run

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
]

ROOT = Path(__file__).resolve().parents[2]
NODE, ZT = names.netns("gv", "node"), names.netns("gv", "zt")
NODE_IP, ZT_IP = "10.244.9.1", "10.244.9.2"
TUNNELS = {  # vni: (node tap, pod tap, node addr, pod addr)
    1000: ("istioin", "pistioin", "192.168.126.1", "192.168.126.2"),
    1001: ("istioout", "pistioout", "192.168.127.1", "192.168.127.2"),
}


def _delete_netns() -> None:
    for ns in (NODE, ZT):
        if os.path.exists(nsenter.netns_path(ns)):
            subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture
def lab() -> Iterator[None]:
    _delete_netns()
    try:
        run("ip", "netns", "add", NODE)
        run("ip", "netns", "add", ZT)
        run("ip", "-n", NODE, "link", "add", "vethgv0", "type", "veth", "peer", "name", "eth0", "netns", ZT)
        run("ip", "-n", NODE, "addr", "add", f"{NODE_IP}/24", "dev", "vethgv0")
        run("ip", "-n", ZT, "addr", "add", f"{ZT_IP}/24", "dev", "eth0")
        for ns, dev in ((NODE, "lo"), (NODE, "vethgv0"), (ZT, "lo"), (ZT, "eth0")):
            run("ip", "-n", ns, "link", "set", dev, "up")
        for node_tap, pod_tap, node_addr, pod_addr in TUNNELS.values():
            for ns, tap, addr in ((NODE, node_tap, node_addr), (ZT, pod_tap, pod_addr)):
                tuntap.create_tap(ns, tap)
                run("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", tap)
                run("ip", "-n", ns, "link", "set", tap, "mtu", "1450", "up")
        yield
    finally:
        for node_tap, pod_tap, *_ in TUNNELS.values():
            tuntap.delete_tap(NODE, node_tap)
            tuntap.delete_tap(ZT, pod_tap)
        _delete_netns()
    assert not os.path.exists(nsenter.netns_path(NODE)) and not os.path.exists(nsenter.netns_path(ZT))


class Running:
    def __init__(self, proc: subprocess.Popen[str], stats: Path) -> None:
        self.proc, self.stats = proc, stats


@pytest.fixture
def forwarder(lab: None, tmp_path: Path) -> Iterator[Running]:
    stats = tmp_path / "geneve.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "netlab.runtime.geneve", "--node-netns", NODE, "--pod-netns", ZT,
         "--node-ip", NODE_IP, "--pod-ip", ZT_IP, "--stats-file", str(stats)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "forwarder printed nothing within 20 s"
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        yield Running(proc, stats)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---- traffic helpers: sockets opened inside the netns (netlab.linux.nsenter) --------------------


def _socket(ns: str, *args: int) -> socket.socket:
    with nsenter.netns(ns):
        return socket.socket(*args)


def _icmp_checksum(data: bytes) -> int:
    total = int.from_bytes(data + b"\0" * (len(data) % 2), "big") % 0xFFFF
    return ~total & 0xFFFF


def ping(ns: str, dst: str, count: int = 3, timeout: float = 2.0) -> int:
    """ICMP echo from netns ``ns`` (raw socket); returns the number of replies."""
    s = _socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    ident = os.getpid() & 0xFFFF
    replies = 0
    try:
        for seq in range(count):
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"netlab-geneve" * 4
            s.sendto(body[:2] + struct.pack("!H", _icmp_checksum(body)) + body[4:], (dst, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    data, (src, _) = s.recvfrom(2048)
                except TimeoutError:
                    break
                ihl = (data[0] & 0x0F) * 4
                typ, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
                if src == dst and typ == 0 and rid == ident and rseq == seq:
                    replies += 1
                    break
    finally:
        s.close()
    return replies


def tcp_transfer(src_ns: str, dst_ns: str, dst: str, size: int = 4 << 20) -> tuple[int, str, str]:
    """Send ``size`` random-ish bytes over TCP; returns (received, sha256 sent, sha256 received)."""
    srv = _socket(dst_ns, socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((dst, 0))
    srv.listen(1)
    srv.settimeout(20)
    port = srv.getsockname()[1]
    got = hashlib.sha256()
    received = [0]

    def sink() -> None:
        conn, _ = srv.accept()
        conn.settimeout(20)
        with conn:
            while chunk := conn.recv(1 << 16):
                got.update(chunk)
                received[0] += len(chunk)

    t = threading.Thread(target=sink)
    t.start()
    data = hashlib.shake_256(b"netlab").digest(size)
    c = _socket(src_ns, socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(20)
    try:
        c.connect((dst, port))
        c.sendall(data)
    finally:
        c.close()
        t.join(30)
        srv.close()
    return received[0], hashlib.sha256(data).hexdigest(), got.hexdigest()


def read_stats(run: Running) -> dict:
    run.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if run.stats.exists():
            return json.loads(run.stats.read_text())
        time.sleep(0.05)
    raise AssertionError("no stats file after SIGUSR1")


# ---- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("vni", [1000, 1001], ids=["istioin", "istioout"])
def test_ping_both_ways(forwarder: Running, vni: int) -> None:
    """ICMP crosses the tunnel node -> ztunnel pod and back, and pod -> node (ARP inside too)."""
    _, _, node_addr, pod_addr = TUNNELS[vni]
    assert ping(NODE, pod_addr) == 3
    assert ping(ZT, node_addr) == 3


@pytest.mark.parametrize("vni", [1000, 1001], ids=["istioin", "istioout"])
def test_tcp_transfer_both_directions(forwarder: Running, vni: int) -> None:
    """4 MiB over TCP arrive intact both ways (super-frames, GSO and partial checksums included)."""
    _, _, node_addr, pod_addr = TUNNELS[vni]
    n, sent, got = tcp_transfer(NODE, ZT, pod_addr)
    assert (n, got) == (4 << 20, sent)
    n, sent, got = tcp_transfer(ZT, NODE, node_addr)
    assert (n, got) == (4 << 20, sent)
    tunnel = next(t for t in read_stats(forwarder)["tunnels"] if t["vni"] == vni)
    assert tunnel["node_to_pod"]["decap_bytes"] >= 4 << 20
    assert tunnel["pod_to_node"]["decap_bytes"] >= 4 << 20


@pytest.mark.skipif(not (shutil.which("tcpdump") and shutil.which("tshark")), reason="needs tcpdump and tshark")
def test_capture_on_veth_shows_geneve_vni_per_tunnel(forwarder: Running, tmp_path: Path) -> None:
    """tshark decodes the veth capture in the ztunnel netns: VNI 1001 for istioout, 1000 for istioin."""
    pcap = tmp_path / "zt-eth0.pcap"
    dump = subprocess.Popen(["ip", "netns", "exec", ZT, "tcpdump", "-Z", "root", "-i", "eth0", "--immediate-mode", "-U", "-n", "-w", str(pcap),
                             "udp", "port", "6081"], stderr=subprocess.PIPE, text=True)
    try:
        assert dump.stderr is not None
        ready, _, _ = select.select([dump.stderr], [], [], 10)
        assert ready and "listening on" in dump.stderr.readline()
        assert ping(NODE, "192.168.127.2", count=2) == 2
        assert ping(NODE, "192.168.126.2", count=2) == 2
        time.sleep(0.3)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "icmp", "-T", "fields", "-e", "udp.dstport", "-e", "geneve.version",
         "-e", "geneve.proto_type", "-e", "geneve.vni", "-e", "ip.dst", "-e", "icmp.type"],
        check=True, capture_output=True, text=True).stdout
    rows = [line.split("\t") for line in out.splitlines() if line]
    # tshark prints the VNI in hex (0x0003e9); outer and inner ip.dst come comma-separated
    seen = {(int(r[3], 0), r[4].split(",")[-1], r[5]) for r in rows}
    assert all(r[0] == "6081" and int(r[1], 0) == 0 and int(r[2], 0) == 0x6558 for r in rows), rows
    assert (1001, "192.168.127.2", "8") in seen, seen  # echo request over istioout
    assert (1001, "192.168.127.1", "0") in seen  # its reply, pistioout -> istioout
    assert (1000, "192.168.126.2", "8") in seen
    assert (1000, "192.168.126.1", "0") in seen


def test_unknown_vni_dropped_and_counted(forwarder: Running) -> None:
    """A Geneve datagram for a VNI with no tunnel is dropped and counted on the receiving side."""
    s = _socket(NODE, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(bytes.fromhex("0000655800007b00") + bytes(60), (ZT_IP, 6081))  # VNI 123
        s.sendto(b"\x40\x00", (ZT_IP, 6081))  # truncated
    finally:
        s.close()
    deadline = time.monotonic() + 5
    drops: dict = {}
    while time.monotonic() < deadline:
        drops = read_stats(forwarder)["drops"]["pod"]
        if drops.get("unknown_vni") and drops.get("short"):
            break
        time.sleep(0.1)
    assert drops == {"unknown_vni": 1, "short": 1}


def test_sigterm_exits_cleanly_and_leaves_taps(forwarder: Running) -> None:
    """SIGTERM: exit 0, final stats written, TAPs still there (persistent, owned by the lab)."""
    assert ping(NODE, "192.168.127.2", count=1) == 1
    forwarder.proc.send_signal(signal.SIGTERM)
    assert forwarder.proc.wait(10) == 0
    assert forwarder.proc.stderr is not None and forwarder.proc.stderr.read() == ""
    stats = json.loads(forwarder.stats.read_text())
    assert stats["tunnels"][1]["node_to_pod"]["decap_frames"] >= 1
    with nsenter.netns(NODE):
        assert socket.if_nametoindex("istioout") > 0
    with nsenter.netns(ZT):
        assert socket.if_nametoindex("pistioout") > 0


@pytest.mark.parametrize(("io", "n_threads"), [("epoll", 1), ("threads", 6)])
def test_in_process_forwarder_leaks_no_fds(lab: None, io: str, n_threads: int) -> None:
    """open/start/stop in this process: every fd and thread it made is gone afterwards."""
    before = set(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    fwd = Forwarder(node_netns=NODE, pod_netns=ZT, node_ip=NODE_IP, pod_ip=ZT_IP, io=io,
                    tunnels=[TunnelSpec.parse("istioin:pistioin:1000"), TunnelSpec.parse("istioout:pistioout:1001")])
    fwd.open()
    fwd.start()
    assert threading.active_count() == threads + n_threads
    assert ping(ZT, "192.168.126.1", count=1) == 1
    fwd.stop()
    assert set(os.listdir("/proc/self/fd")) == before
    assert threading.active_count() == threads


def test_missing_tap_is_a_clear_error(lab: None) -> None:
    """A forwarder never creates TAPs itself: a missing one is a one-line error, exit code 5."""
    r = subprocess.run([sys.executable, "-m", "netlab.runtime.geneve", "--node-netns", NODE, "--pod-netns", ZT,
                        "--node-ip", NODE_IP, "--pod-ip", ZT_IP, "--tunnel", "nosuchtap:pistioin:1000"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 5
    assert r.stdout == ""
    assert r.stderr.strip() == f"geneve: TAP nosuchtap does not exist in netns {NODE}"
    with nsenter.netns(NODE):
        with pytest.raises(OSError):
            socket.if_nametoindex("nosuchtap")


def test_forwarded_pod_traffic_through_tunnel(forwarder: Running) -> None:
    """A pod behind the node reaches the ztunnel pod via istioout and back (GSO forwarded both ways).

    This is the lab's real path (node table 101: default via 192.168.127.2 dev istioout): the node
    forwards the pod's super-frames into the TAP, and writes received super-frames back out to a
    veth, where the kernel must segment them with the rebuilt gso_size.
    """
    pod = names.netns("gv", "pod")
    try:
        run("ip", "netns", "add", pod)
        run("ip", "-n", NODE, "link", "add", "vethgvpod", "type", "veth", "peer", "name", "eth0", "netns", pod)
        run("ip", "-n", NODE, "addr", "add", "10.244.8.1/24", "dev", "vethgvpod")
        run("ip", "-n", NODE, "link", "set", "vethgvpod", "up")
        run("ip", "-n", pod, "addr", "add", "10.244.8.5/24", "dev", "eth0")
        run("ip", "-n", pod, "link", "set", "eth0", "up")
        run("ip", "-n", pod, "route", "add", "default", "via", "10.244.8.1")
        subprocess.run(["ip", "netns", "exec", NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        run("ip", "-n", ZT, "route", "add", "10.244.8.0/24", "via", "192.168.127.1", "dev", "pistioout")
        n, sent, got = tcp_transfer(pod, ZT, "192.168.127.2", 8 << 20)
        assert (n, got) == (8 << 20, sent)
        n, sent, got = tcp_transfer(ZT, pod, "10.244.8.5", 8 << 20)
        assert (n, got) == (8 << 20, sent)
        stats = read_stats(forwarder)
        assert stats["drops"] == {"node": {}, "pod": {}}
        assert all(t[d]["tap_write_errors"] == 0 for t in stats["tunnels"] for d in ("node_to_pod", "pod_to_node"))
    finally:
        subprocess.run(["ip", "netns", "del", pod], check=False)
