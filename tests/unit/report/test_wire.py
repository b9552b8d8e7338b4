"""Bytes per hop, read back from pcaps written here with scapy (Geneve frames, lo doubles)."""

from __future__ import annotations

from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from netlab.observe.model import Leg, Path
from netlab.observe.report.wire import count, leg_bytes
from tests.unit.report.helpers import hop

C, S = ("10.244.2.4", 40000), ("10.96.0.10", 9080)


def seg(src, dst, payload: bytes = b"") -> Ether:
    return Ether() / IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], flags="PA") / payload


def geneve(inner: Ether, vni: int) -> Ether:
    return Ether() / IP(src="192.168.127.1", dst="192.168.127.2") / UDP(sport=50000, dport=6081) / \
        GENEVE(vni=vni, proto=0x6558) / inner


def test_plain_hop_counts_both_ways_by_client_endpoint(tmp_path) -> None:
    f = str(tmp_path / "lo.pcap")
    req, resp = seg(C, ("127.0.0.1", 15001), b"x" * 99), seg(S, C, b"y" * 833)  # REDIRECTed, de-NATed replies
    other = seg(("10.244.2.5", 1234), S, b"z" * 7)
    wrpcap(f, [req, req, resp, resp, other])  # lo: each frame seen leaving and arriving
    c = count(f, hop("sleep", "lo", *C, "127.0.0.1", 15001))
    assert (c.packets, c.payload_fwd, c.payload_rev, c.encap) == (2, 99, 833, 0)
    assert c.wire == len(req) + len(resp)


def test_geneve_hop_counts_outer_headers(tmp_path) -> None:
    f = str(tmp_path / "veth.pcap")
    inner = seg(C, S, b"x" * 99)
    frame = geneve(inner, 1001)
    wrpcap(f, [frame, inner])  # the tunnelled request, and a reply routed back plainly
    g = count(f, hop("n", "veth", *C, *S, "geneve", 1001))
    assert (g.packets, g.payload_fwd, g.encap) == (1, 99, len(frame) - len(inner))
    assert g.encap == 14 + 20 + 8 + 8  # outer Ethernet, IPv4, UDP, Geneve header without options
    p = count(f, hop("n", "veth", *C, *S))
    assert (p.packets, p.encap, p.wire) == (1, 0, len(inner))


def test_leg_bytes_rows_in_hop_order(tmp_path) -> None:
    f = str(tmp_path / "eth0.pcap")
    wrpcap(f, [seg(C, S, b"x" * 10), seg(S, C, b"y" * 20)])
    h1, h2 = hop("sleep", "eth0", *C, *S), hop("n", "veth", *C, *S)
    path = Path("sleep", "productpage-v1", (Leg(*C, *S, "none", (h1, h2)),))
    rows = leg_bytes(path, {("sleep", "eth0"): f})
    assert [(r.hop, r.payload_fwd, r.payload_rev) for r in rows] == [(1, 10, 20), (2, 0, 0)]
    assert rows[0].overhead_bytes == rows[0].wire_bytes - 30
    assert rows[1].packets == 6  # no pcap for that interface: the hop's own counts
