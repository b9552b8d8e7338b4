"""Hop reconstruction from synthetic sightings: NAT joins segments, proxies join through the log.

The fast decoder is checked field by field against scapy's dissection of the same frames.
"""

from __future__ import annotations

import pytest
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from netlab.observe import hops
from netlab.observe.accesslog import parse_line
from netlab.observe.decode import decode, ntoa
from netlab.observe.pcapfiles import Sighting

T0 = 1_800_000_000_000_000_000


def frame(src, sport, dst, dport, flags="A", seq=0, payload=b"", vni=None) -> bytes:
    inner = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq) / payload
    if vni is None:
        return bytes(inner)
    return bytes(Ether() / IP(src="10.244.2.1", dst="10.244.2.2") / UDP(sport=6081, dport=6081)
                 / GENEVE(vni=vni, proto=0x6558) / inner)


@pytest.mark.parametrize("f", [
    frame("10.0.0.1", 40000, "10.0.0.2", 9080, "S", 100),
    frame("10.0.0.2", 9080, "10.0.0.1", 40000, "SA", 5),
    frame("10.0.0.1", 40000, "10.0.0.2", 9080, "PA", 101, b"GET / HTTP/1.1\r\n\r\n"),
    frame("10.244.2.4", 40000, "10.96.0.10", 9080, "S", 7, vni=1001),
    frame("10.244.2.4", 50000, "10.244.1.7", 15008, "PA", 9, b"\x16\x03\x01\x00\x05hello", vni=1000),
], ids=["syn", "syn-ack", "data", "geneve-syn", "geneve-tls"])
def test_decode_agrees_with_scapy(f: bytes) -> None:
    p = decode(f)
    s = Ether(f)
    if GENEVE in s:
        assert p.vni == s[GENEVE].vni
        s = s[GENEVE].payload
    ip, tcp = s[IP], s[TCP]
    assert (ntoa(p.src), p.sport, ntoa(p.dst), p.dport) == (ip.src, tcp.sport, ip.dst, tcp.dport)
    assert p.syn == (tcp.flags == "S")
    assert (p.flags, p.seq, p.payload) == (int(tcp.flags), tcp.seq, len(bytes(tcp.payload)))


def test_decode_ignores_what_is_not_tcp() -> None:
    assert decode(bytes(Ether() / IP() / UDP(dport=53))) is None
    assert decode(b"\x00" * 10) is None


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self, step_us: int = 10) -> int:
        self.t += step_us * 1000
        return self.t


def conn(clock, path, c, s, up: bytes, down: bytes, isn=1000, rev_path=None, s_after=None):
    """Sightings of one TCP connection: SYN, SYN-ACK, request, response, each across ``path``.

    ``path`` items are (netns, device, outgoing[, vni]); ``s_after`` = (index, server endpoint):
    from that hop on the server address is rewritten (DNAT).
    """
    out = []

    def send(src, dst, flags, seq, payload, hops_):
        for i, h in enumerate(hops_):
            d = dst
            if s_after and i >= s_after[0] and dst == s:
                d = s_after[1]
            sr = src
            if s_after and i >= s_after[0] and src == s:
                sr = s_after[1]
            f = frame(sr[0], sr[1], d[0], d[1], flags, seq, payload, h[3] if len(h) > 3 else None)
            out.append(Sighting(clock(), h[0], h[1], h[2], f))

    rp = rev_path or [(n, d, not o) for n, d, o, *_ in reversed(path)]
    send(c, s, "S", isn, b"", path)
    send(s, c, "SA", 5000, b"", rp)
    send(c, s, "PA", isn + 1, up, path)
    send(s, c, "PA", 5001, down, rp)
    send(c, s, "FA", isn + 1 + len(up), b"", path)
    return out


def test_dnat_segments_join_into_one_leg() -> None:
    """--mode none: sleep sees the VIP, the server side sees the pod; one connection, one leg."""
    clock = Clock()
    path = [("nl-x.sleep", "eth0", True), ("nl-x.w1", "veth1", False), ("nl-x.w1", "eth0", True),
            ("nl-x.w2", "eth0", False), ("nl-x.pp", "eth0", False)]
    s = conn(clock, path, ("10.244.2.4", 40000), ("10.96.0.10", 9080), b"x" * 80, b"y" * 800,
             s_after=(2, ("10.244.1.7", 9080)))
    names = hops.Names(ips={"10.244.2.4": "sleep", "10.244.1.7": "productpage-v1"},
                       netns={"nl-x.sleep": "sleep", "nl-x.w1": "w1", "nl-x.w2": "w2", "nl-x.pp": "productpage-v1"})
    [p] = hops.reconstruct(s, [], names)
    [leg] = p.legs
    assert (p.client, p.server) == ("sleep", "productpage-v1")
    assert [(h.member, h.device, h.direction) for h in leg.hops] == [
        ("sleep", "eth0", "out"), ("w1", "veth1", "in"), ("w1", "eth0", "out"), ("w2", "eth0", "in"),
        ("productpage-v1", "eth0", "in")]
    assert (leg.dst, leg.dport, leg.server_dst, leg.server_dport) == ("10.96.0.10", 9080, "10.244.1.7", 9080)
    assert leg.hops[0].syn and (leg.payload_up, leg.payload_down) == (80, 800)
    assert leg.hops[0].packets == 3 and leg.reverse_hops[-1].member == "sleep"


def line(direction, src, dst, hbone, sent, recv, end="2027-01-15T08:00:00.100000Z"):
    return (f"{end}\tinfo\taccess\tconnection complete\tsrc.addr={src} dst.addr={dst} dst.hbone_addr={hbone} "
            f'direction="{direction}" bytes_sent={sent} bytes_recv={recv} duration="100ms"')


def test_proxy_legs_join_through_the_access_log() -> None:
    clock = Clock()
    clock.t = 1_800_000_000 * 10**9  # 2027-01-15T08:00:00Z
    a = conn(clock, [("nl-x.sleep", "eth0", True), ("nl-x.w1", "veth1", False), ("nl-x.w1", "istioout", True),
                     ("nl-x.w1", "vethz", True, 1001), ("nl-x.ztunnel-w1", "pistioout", False)],
             ("10.244.2.4", 40000), ("10.96.0.10", 9080), b"q" * 80, b"r" * 900)
    b = conn(clock, [("nl-x.ztunnel-w1", "eth0", True), ("nl-x.net", "nl1", False), ("nl-x.w2", "istioin", True),
                     ("nl-x.ztunnel-w2", "pistioin", False)],
             ("10.244.2.4", 50000), ("10.244.1.7", 15008), b"\x17\x03\x03" + b"t" * 300, b"\x17\x03\x03" + b"u" * 1200)
    c = conn(clock, [("nl-x.ztunnel-w2", "eth0", True), ("nl-x.pp", "eth0", False)],
             ("10.244.2.4", 45000), ("10.244.1.7", 9080), b"q" * 80, b"r" * 900)
    other = conn(clock, [("nl-x.notsleep", "eth0", True)], ("10.244.2.5", 41000), ("10.244.1.9", 9080), b"z", b"z")
    entries = [parse_line(line("outbound", "10.244.2.4:40000", "10.244.1.7:15008", "10.96.0.10:9080", 80, 900), node="w1"),
               parse_line(line("inbound", "10.244.2.4:50000", "10.244.1.7:15008", "10.244.1.7:9080", 900, 80), node="w2")]
    names = hops.Names(ips={"10.244.2.4": "sleep", "10.244.1.7": "productpage-v1"})
    paths = hops.reconstruct(a + b + c + other, entries, names)
    assert len(paths) == 2
    p = paths[0]
    assert (p.client, p.server, p.ztunnels) == ("sleep", "productpage-v1", ("ztunnel-w1", "ztunnel-w2"))
    assert [g.role for g in p.legs] == ["to-ztunnel", "hbone", "from-ztunnel"]
    assert [g.server for g in p.legs] == ["ztunnel-w1:15001", "ztunnel-w2:15008", "productpage-v1"]
    assert p.legs[1].encap == "hbone" and p.legs[0].encap == "none"
    assert [h.vni for h in p.legs[0].hops] == [None, None, None, 1001, None]
    assert hops.hbone_overhead(p) == (303 - 80, 1203 - 900)
    assert paths[1].legs[0].role == "direct" and paths[1].client == "10.244.2.5"


def test_a_reused_four_tuple_is_a_new_connection() -> None:
    clock = Clock()
    path = [("nl-x.sleep", "eth0", True)]
    first = conn(clock, path, ("10.244.2.4", 40000), ("10.244.1.7", 9080), b"a", b"b", isn=1000)
    second = conn(clock, path, ("10.244.2.4", 40000), ("10.244.1.7", 9080), b"cc", b"dd", isn=9_000_000)
    paths = hops.reconstruct(first + second, [], hops.Names())
    assert [(p.legs[0].payload_up, p.legs[0].payload_down) for p in paths] == [(1, 1), (2, 2)]
