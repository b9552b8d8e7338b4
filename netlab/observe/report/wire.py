"""Bytes on the wire per leg and hop, and how much of them is encapsulation.

For every hop of a path the pcap of that hop's interface is read back (scapy, offline) and the
connection's packets counted both ways: frame bytes, TCP payload, and for Geneve frames the
outer Ethernet/IP/UDP/Geneve bytes around the inner frame. The ztunnel access log gives the
application bytes each proxy relayed (hop reconstruction puts them on the path), so on the
HBONE leg the TLS + HTTP/2 framing is the TCP payload minus those bytes, and on the plain legs
the TCP payload must equal them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.observe.model import Hop, Path
from netlab.observe.report.schema import LegBytes


@dataclass(frozen=True)
class Counted:
    packets: int
    wire: int  # frame bytes as captured
    payload_fwd: int  # TCP payload src -> dst of the leg
    payload_rev: int  # TCP payload dst -> src
    encap: int  # Geneve outer bytes (outer Ethernet + IP + UDP + Geneve header)


def count(pcap: str, hop: Hop) -> Counted:
    """The hop's connection in ``pcap``, both directions (inner packets of Geneve frames too).

    The connection is known by its client endpoint alone (address and ephemeral port), because
    the server side can differ by direction: on a pod's ``lo`` after REDIRECT the requests go to
    ``127.0.0.1:15001`` while the replies, de-NATed on output, come from the original
    destination. A frame seen twice in a row (``lo`` captures a packet leaving and arriving)
    counts once. A hop in Geneve counts the Geneve frames on its device, any other hop the
    plain ones (a device can carry the connection both ways: tunnelled out, routed back).
    """
    # scapy takes about a second to import: loaded only when packets are read
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapReader

    a = (hop.src, hop.sport)
    packets = wire = fwd = rev = encap = 0
    last = b""
    with PcapReader(pcap) as rd:
        for pkt in rd:
            raw = bytes(pkt)
            if raw == last:
                continue
            last = raw
            if (GENEVE in pkt) != (hop.encap == "geneve"):  # a Geneve hop counts its frames only, and back
                continue
            inner = pkt
            outer = 0
            if GENEVE in pkt:
                inner = pkt[GENEVE].payload
                outer = len(pkt) - len(inner)
            if IP not in inner or TCP not in inner:
                continue
            ip, tcp = inner[IP], inner[TCP]
            s, d = (ip.src, tcp.sport), (ip.dst, tcp.dport)
            if s == a:
                fwd += len(tcp.payload)
            elif d == a:
                rev += len(tcp.payload)
            else:
                continue
            packets += 1
            wire += len(pkt)
            encap += outer
    return Counted(packets, wire, fwd, rev, encap)


def leg_bytes(path: Path, pcaps: dict[tuple[str, str], str]) -> list[LegBytes]:
    """One row per hop: wire bytes, and the encapsulation overhead seen there.

    ``pcaps`` maps (netns, device) to the pcap of that interface. Overhead is the Geneve outer
    bytes on tunnel hops, and on every other hop the bytes that are not TCP payload (Ethernet, IP
    and TCP headers); the HBONE leg's TLS + HTTP/2 share is :func:`netlab.observe.hops.hbone_overhead`.
    """
    rows = []
    n = 0
    for li, leg in enumerate(path.legs, 1):
        for h in leg.hops:
            n += 1
            pcap = pcaps.get((h.netns, h.device))
            c = count(pcap, h) if pcap else Counted(h.packets, h.bytes, 0, 0, 0)
            over = c.encap if h.encap == "geneve" else c.wire - c.payload_fwd - c.payload_rev
            rows.append(LegBytes(leg=li, hop=n, netns=h.netns, member=h.member or h.netns, device=h.device, encap=h.encap, vni=h.vni,
                                 packets=c.packets, wire_bytes=c.wire, payload_fwd=c.payload_fwd,
                                 payload_rev=c.payload_rev, overhead_bytes=over,
                                 overhead_per_packet=round(over / c.packets, 1) if c.packets else 0.0))
    return rows
