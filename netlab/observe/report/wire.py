"""Bytes on the wire per leg and hop, and how much of them is encapsulation.

For every hop of a path the pcap of that hop's interface is read back (scapy, offline) and the
connection's packets counted both ways: frame bytes, TCP payload, and for Geneve frames the
outer Ethernet/IP/UDP/Geneve bytes around the inner frame. The ztunnel access log gives the
application bytes each proxy relayed, so on the HBONE leg the TLS + HTTP/2 framing is the TCP
payload minus those bytes, and on the plain legs the TCP payload must equal them exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netlab.observe.model import Hop, Path
from netlab.observe.report.schema import LegBytes

_KV = re.compile(r'([a-z_.]+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclass(frozen=True)
class AccessEntry:
    """One ``connection complete`` line of a ztunnel access log."""

    ztunnel: str
    direction: str
    src: str
    dst: str
    bytes_sent: int
    bytes_recv: int


def parse_access_log(ztunnel: str, text: str) -> list[AccessEntry]:
    r"""``connection complete`` entries (other lines skipped).

    >>> e, = parse_access_log("ztunnel-n1", '2024-04-11T15:38:42.182974Z\tinfo\taccess\tconnection complete\t'
    ...     'src.addr=10.0.0.1:5000 dst.addr=10.0.0.2:15008 direction="outbound" bytes_sent=67 bytes_recv=490')
    >>> e.direction, e.src, e.dst, e.bytes_sent, e.bytes_recv
    ('outbound', '10.0.0.1:5000', '10.0.0.2:15008', 67, 490)
    """
    out = []
    for ln in text.splitlines():
        parts = ln.split("\t")
        if len(parts) < 5 or parts[3] != "connection complete":
            continue
        kv = {k: v.strip('"') for k, v in _KV.findall(parts[4])}
        out.append(AccessEntry(ztunnel, kv.get("direction", "?"), kv.get("src.addr", ""), kv.get("dst.addr", ""),
                               int(kv.get("bytes_sent", 0)), int(kv.get("bytes_recv", 0))))
    return out


@dataclass(frozen=True)
class Counted:
    packets: int
    wire: int  # frame bytes as captured
    payload_fwd: int  # TCP payload src -> dst of the leg
    payload_rev: int  # TCP payload dst -> src
    encap: int  # Geneve outer bytes (outer Ethernet + IP + UDP + Geneve header)


def count(pcap: str, hop: Hop) -> Counted:
    """The hop's connection in ``pcap``, both directions (inner packets of Geneve frames too)."""
    # scapy takes about a second to import: loaded only when packets are read
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapReader

    a, b = (hop.src, hop.sport), (hop.dst, hop.dport)
    packets = wire = fwd = rev = encap = 0
    with PcapReader(pcap) as rd:
        for pkt in rd:
            inner = pkt
            outer = 0
            if GENEVE in pkt:
                inner = pkt[GENEVE].payload
                outer = len(pkt) - len(inner)
            if IP not in inner or TCP not in inner:
                continue
            ip, tcp = inner[IP], inner[TCP]
            s, d = (ip.src, tcp.sport), (ip.dst, tcp.dport)
            if (s, d) not in ((a, b), (b, a)):
                continue
            n = len(tcp.payload)
            packets += 1
            wire += len(pkt)
            encap += outer
            if (s, d) == (a, b):
                fwd += n
            else:
                rev += n
    return Counted(packets, wire, fwd, rev, encap)


def leg_bytes(path: Path, pcaps: dict[tuple[str, str], str]) -> list[LegBytes]:
    """One row per hop: wire bytes, and the encapsulation overhead seen there.

    ``pcaps`` maps (netns, device) to the pcap of that interface. Overhead is the Geneve outer
    bytes on tunnel hops, and on every other hop the bytes that are not TCP payload (Ethernet, IP
    and TCP headers); the HBONE leg's TLS + HTTP/2 share is given by :func:`hbone_framing`.
    """
    rows = []
    n = 0
    for li, leg in enumerate(path.legs, 1):
        for h in leg.hops:
            n += 1
            pcap = pcaps.get((h.netns, h.device))
            c = count(pcap, h) if pcap else Counted(h.packets, h.bytes, 0, 0, 0)
            over = c.encap if h.encap == "geneve" else c.wire - c.payload_fwd - c.payload_rev
            rows.append(LegBytes(leg=li, hop=n, netns=h.netns, device=h.device, encap=h.encap, vni=h.vni,
                                 packets=c.packets, wire_bytes=c.wire, payload_fwd=c.payload_fwd,
                                 payload_rev=c.payload_rev, overhead_bytes=over,
                                 overhead_per_packet=round(over / c.packets, 1) if c.packets else 0.0))
    return rows


def hbone_framing(rows: list[LegBytes], legs_encap: list[str], app_bytes: int) -> int | None:
    """TLS + HTTP/2 bytes on the HBONE leg: its TCP payload (both ways) minus the app bytes relayed."""
    for r in rows:
        if legs_encap[r.leg - 1] == "hbone" and r.packets:
            return r.payload_fwd + r.payload_rev - app_bytes
    return None
