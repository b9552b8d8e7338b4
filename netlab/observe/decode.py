"""Just the header fields hop reconstruction needs, read straight from captured frames.

scapy dissects a frame in ~100 µs; reconstructing the hops of a thousand connections means
hundreds of thousands of sightings, so this reads the few fixed fields it needs with
:mod:`struct` (Ethernet → IPv4 → TCP, or → UDP 6081 → Geneve → the inner Ethernet frame), in
~3 µs. ``tests/unit/test_hops.py`` checks it field by field against scapy's dissection of the
same frames, and the Geneve header is read by the lab's own codec
(:func:`netlab.protocols.geneve.parse_header`).

>>> from scapy.layers.inet import IP, TCP
>>> from scapy.layers.l2 import Ether
>>> p = decode(bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags="S", seq=7)))
>>> (ntoa(p.src), p.sport, ntoa(p.dst), p.dport, p.syn, p.seq, p.vni)
('10.0.0.1', 1234, '10.0.0.2', 80, True, 7, None)
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from netlab.protocols.geneve import GENEVE_PORT, PROTO_TEB, MalformedHeader, parse_header

ETH_IPV4 = 0x0800
ETH_VLAN = 0x8100
PROTO_TCP, PROTO_UDP = 6, 17
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
_ETHTYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBB")
_UDP = struct.Struct("!HH")
ntoa = socket.inet_ntoa


@dataclass(slots=True)
class TcpPacket:
    """A TCP segment's addresses and sequence space; ``vni`` is set when it rode in Geneve.

    Addresses stay the 4 raw bytes (hop reconstruction keys on them; :func:`ntoa` formats).
    """

    src: bytes
    sport: int
    dst: bytes
    dport: int
    flags: int
    seq: int
    payload: int  # TCP payload bytes
    first_byte: int  # first payload byte (-1 when none): 0x16/0x17 start TLS records
    vni: int | None = None
    syn: bool = False  # a SYN without ACK: the client opening the connection


def decode(frame: bytes, offset: int = 0, vni: int | None = None) -> TcpPacket | None:
    """The TCP segment in an Ethernet frame (looking inside Geneve), or None for anything else."""
    try:
        (etype,) = _ETHTYPE.unpack_from(frame, offset + 12)
        off = offset + 14
        if etype == ETH_VLAN:
            (etype,) = _ETHTYPE.unpack_from(frame, off + 2)
            off += 4
        if etype != ETH_IPV4:
            return None
        vihl, _tos, total, _id, frag, _ttl, proto, _sum, src, dst = _IPV4.unpack_from(frame, off)
        if vihl >> 4 != 4 or frag & 0x1FFF:  # later fragments carry no L4 header
            return None
        ihl = (vihl & 0x0F) * 4
        l4 = off + ihl
        end = min(len(frame), off + total) if total else len(frame)
        if proto == PROTO_TCP:
            sport, dport, seq, _ack, doff, flags = _TCP.unpack_from(frame, l4)
            data = l4 + (doff >> 4) * 4
            payload = max(0, end - data)
            return TcpPacket(src, sport, dst, dport, flags, seq, payload, frame[data] if payload else -1, vni,
                             flags & (SYN | ACK) == SYN)
        if proto == PROTO_UDP and vni is None:
            _sp, dp = _UDP.unpack_from(frame, l4)
            if dp == GENEVE_PORT:
                h = parse_header(frame, l4 + 8)
                return decode(frame, l4 + 8 + h.length, h.vni) if h.proto == PROTO_TEB else None
        return None
    except (struct.error, IndexError, MalformedHeader):
        return None
