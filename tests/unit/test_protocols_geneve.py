"""Geneve header and forwarder codec, scapy-style: build, compare exact bytes, dissect, check fields."""

from __future__ import annotations

import struct

import pytest
from scapy.compat import raw
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import checksum

from netlab.protocols import geneve as geneve_codec
from netlab.protocols.geneve import (
    GENEVE_PORT,
    PROTO_TEB,
    Decapsulator,
    MalformedHeader,
    pack_header,
    parse_header,
)
from netlab.protocols.offload import (
    NO_VNET,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_ECN,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HDR,
    split_gso,
    vnet_header_for,
)

INNER = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.168.127.1", dst="192.168.127.2") / ICMP()


@pytest.mark.parametrize(("vni", "wire"), [
    (1000, "00006558" "0003e800"),
    (1001, "00006558" "0003e900"),
    (0, "00006558" "00000000"),
    ((1 << 24) - 1, "00006558" "ffffff00"),
], ids=["istioin-1000", "istioout-1001", "vni-0", "vni-max"])
def test_pack_header_exact_bytes(vni: int, wire: str) -> None:
    """Version 0, no options, no flags, protocol 0x6558, VNI in the top 24 bits of word 2."""
    assert pack_header(vni) == bytes.fromhex(wire)


def test_pack_header_rejects_out_of_range_vni() -> None:
    """A VNI is 24 bits."""
    with pytest.raises(ValueError):
        pack_header(1 << 24)


def test_header_matches_scapy_build() -> None:
    """Our header + frame is byte-identical to scapy's GENEVE(vni=1001, proto=0x6558)/Ether."""
    ours = pack_header(1001) + raw(INNER)
    theirs = raw(GENEVE(vni=1001, proto=PROTO_TEB) / INNER)
    assert ours == theirs


def test_scapy_dissects_our_datagram_on_port_6081() -> None:
    """UDP dport 6081 binds to GENEVE, proto 0x6558 binds to Ether: fields come back."""
    wire = raw(IP(src="10.244.9.1", dst="10.244.9.2") / UDP(sport=40000, dport=GENEVE_PORT)
               / (pack_header(1000) + raw(INNER)))
    pkt = IP(wire)
    g = pkt[GENEVE]
    assert (g.version, g.optionlen, g.oam, g.critical, g.proto, g.vni, g.reserved2) == (0, 0, 0, 0, 0x6558, 1000, 0)
    assert pkt[Ether].dst == "02:00:00:00:00:02"
    assert pkt[ICMP].type == 8


def test_parse_header_round_trip_from_scapy() -> None:
    """parse_header reads what scapy builds, options included."""
    built = raw(GENEVE(vni=1001, proto=PROTO_TEB, options=b"\x01\x02\x03\x04\x00\x00\x00\x00") / INNER)
    hdr = parse_header(built)
    assert (hdr.version, hdr.opt_len, hdr.proto, hdr.vni, hdr.length) == (0, 8, PROTO_TEB, 1001, 16)
    assert built[hdr.length:] == raw(INNER)


def test_geneve_reexported_lazily() -> None:
    """The module hands out scapy's own layer."""
    assert geneve_codec.GENEVE is GENEVE


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x00\x00\x65", "short"),
    (bytes.fromhex("4000655800000100"), "bad_version"),
    (bytes.fromhex("0100655800000100"), "short"),  # announces 4 option bytes, has none
], ids=["truncated", "version-1", "options-truncated"])
def test_parse_header_malformed(data: bytes, reason: str) -> None:
    """Malformed headers raise with the drop counter's name."""
    with pytest.raises(MalformedHeader) as exc:
        parse_header(data)
    assert exc.value.reason == reason


def test_decap_fast_path_known_vni() -> None:
    """An exact header for a known VNI maps to its target, payload right after 8 bytes."""
    d = Decapsulator({1000: "pistioin", 1001: "pistioout"})
    assert d.receive(pack_header(1001) + raw(INNER)) == ("pistioout", 8)
    assert d.drops == {}


def test_decap_unknown_vni_dropped_and_counted() -> None:
    """A VNI with no tunnel is dropped and counted as unknown_vni."""
    d = Decapsulator({1000: "pistioin"})
    assert d.receive(pack_header(1001) + raw(INNER)) is None
    assert d.receive(pack_header(42) + raw(INNER)) is None
    assert d.drops == {"unknown_vni": 2}


@pytest.mark.parametrize(("packet", "reason"), [
    (GENEVE(vni=1000, proto=0x0800) / IP(), "bad_proto"),
    (GENEVE(vni=1000, proto=PROTO_TEB, critical=1, options=b"\x00" * 4) / INNER, "critical_option"),
    (GENEVE(vni=1000, proto=PROTO_TEB, oam=1) / INNER, "oam"),
    (GENEVE(version=1, vni=1000, proto=PROTO_TEB) / INNER, "bad_version"),
], ids=["ipv4-payload", "critical-option", "oam", "version-1"])
def test_decap_drops_malformed(packet, reason: str) -> None:  # type: ignore[no-untyped-def]
    """What the forwarder cannot deliver is dropped under a named reason."""
    d = Decapsulator({1000: "pistioin"})
    assert d.receive(raw(packet)) is None
    assert d.drops == {reason: 1}


def test_decap_skips_non_critical_options() -> None:
    """Options without the C bit are skipped (RFC 8926 §3.5): payload starts after them."""
    d = Decapsulator({1000: "pistioin"})
    assert d.receive(raw(GENEVE(vni=1000, proto=PROTO_TEB, options=b"\x00" * 8) / INNER)) == ("pistioin", 16)


# ---- virtio_net_hdr reconstruction and the oversize slow path -------------------------------------


def _partial(pkt: Ether) -> bytearray:
    """The frame as the kernel hands it over with offload: L4 checksum = pseudo-header sum."""
    frame = bytearray(raw(pkt))
    ip_layer = pkt[IP] if IP in pkt else pkt[IPv6]
    l4 = 14 + (len(raw(ip_layer)) - len(raw(ip_layer.payload)))
    off = 16 if TCP in pkt else 6
    l4_len = len(frame) - l4
    if IP in pkt:
        pseudo = raw(ip_layer)[12:20] + struct.pack("!BBH", 0, ip_layer.proto, l4_len)
    else:
        pseudo = raw(ip_layer)[8:40] + struct.pack("!IxxxB", l4_len, ip_layer.nh)
    frame[l4 + off:l4 + off + 2] = struct.pack("!H", ~checksum(pseudo) & 0xFFFF)
    return frame


def test_vnet_partial_udp_checksum_marked_needs_csum() -> None:
    """A UDP frame whose checksum is the bare pseudo-header sum gets NEEDS_CSUM at its L4 offset."""
    frame = _partial(Ether() / IP(src="192.168.127.1", dst="192.168.127.2") / UDP(sport=1, dport=2) / b"hello")
    assert VNET_HDR.unpack(vnet_header_for(frame, 0, len(frame), 1450)) == (VNET_F_NEEDS_CSUM, 0, 0, 0, 34, 6)


def test_vnet_full_checksum_left_alone() -> None:
    """A frame with a complete checksum, ARP, or an IP fragment gets no offload flags."""
    for pkt in (Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP() / b"data",
                Ether() / ARP(),
                Ether() / IP(src="1.1.1.1", dst="2.2.2.2", flags="MF") / UDP() / b"frag"):
        frame = raw(pkt)
        assert vnet_header_for(frame, 0, len(frame), 1450) == NO_VNET


def test_vnet_tcp_super_frame_is_gso() -> None:
    """A TCP packet longer than the TAP MTU is GSO, segment size = MTU - IP - TCP headers."""
    pkt = (Ether() / IP(src="192.168.127.1", dst="192.168.127.2")
           / TCP(flags="A", options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / (b"x" * 20000))
    frame = _partial(pkt)
    flags, gso_type, hdr_len, gso_size, cs, co = VNET_HDR.unpack(vnet_header_for(frame, 0, len(frame), 1450))
    assert (flags, gso_type, hdr_len, gso_size, cs, co) == (VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 66, 1398, 34, 16)
    cwr = _partial(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="CA") / (b"x" * 3000))
    assert VNET_HDR.unpack(vnet_header_for(cwr, 0, len(cwr), 1450))[1] == VNET_GSO_TCPV4 | VNET_GSO_ECN


def test_vnet_ipv6_tcp_super_frame_is_gso() -> None:
    """Same for IPv6: gso_size = MTU - 40 - TCP header."""
    frame = _partial(Ether() / IPv6(src="fd00::1", dst="fd00::2") / TCP(flags="A") / (b"x" * 5000))
    assert VNET_HDR.unpack(vnet_header_for(frame, 0, len(frame), 1450)) == (
        VNET_F_NEEDS_CSUM, VNET_GSO_TCPV6, 74, 1390, 54, 16)


def test_split_gso_cuts_super_frame_into_valid_pieces() -> None:
    """An oversize super-frame becomes pieces <= limit, with right lengths, seq, flags and checksums."""
    payload = bytes(range(256)) * 250  # 64000 bytes; a small limit forces the cut
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", id=100) / TCP(seq=1000, flags="FPA") / payload
    pieces = split_gso(_partial(pkt), gso_size=1398, limit=30000)
    assert len(pieces) == 3
    assert all(len(p) <= 30000 for p in pieces)
    got = b""
    for i, piece in enumerate(pieces):
        p = Ether(piece)
        assert p[IP].len == len(piece) - 14
        assert checksum(raw(p[IP])[:20]) == 0  # header checksum valid
        assert p[TCP].seq == 1000 + len(got)
        assert str(p[TCP].flags) == ("FPA" if i == len(pieces) - 1 else "A")
        assert p[TCP].chksum == ~checksum(raw(p[IP])[12:20] + struct.pack("!BBH", 0, 6, len(piece) - 34)) & 0xFFFF
        assert len(p[TCP].payload) % 1398 == 0 or i == len(pieces) - 1
        got += raw(p[TCP].payload)
    assert got == payload
    assert Ether(pieces[1])[IP].id != 100


def test_split_gso_refuses_non_tcp() -> None:
    """Only TCP super-frames can be cut."""
    assert split_gso(raw(Ether() / IP() / UDP() / (b"x" * 60000)), 1398, 30000) == []
