"""Hop reconstruction: every TCP connection of a capture as ordered hops, joined into paths.

1. Each captured frame (:mod:`netlab.observe.pcapfiles`, the merged pcapng) is decoded
   (:mod:`netlab.observe.decode`); a TCP segment carried in Geneve counts for its inner
   connection, with the VNI on that hop.
2. Sightings of one 4-tuple as seen form a *segment*; the side that sent the SYN is the client
   (without a SYN in the capture: the ephemeral port's side). NAT (kube-proxy's DNAT, REDIRECT)
   gives one connection several segments: they share the client's address and port and its
   sequence space (NAT rewrites addresses, never sequence numbers), which is how they are
   joined into one :class:`~netlab.observe.model.Leg`.
3. A hop is one (netns, device, flow, encapsulation) with the time of its first packet, its
   packet and wire-byte counts and whether the SYN passed there. Forward hops in time order are
   the way the connection went; reverse hops, the way its replies came back.
4. Proxy legs are joined with ztunnel's access log: the outbound line's ``src.addr`` is the
   app's connection to ztunnel; the inbound line with the same ``dst.addr`` (the destination's
   15008), the same source IP, the mirrored byte counts and an overlapping time names the
   HBONE connection (its ``src.addr``); the connection the inbound ztunnel opened to
   ``dst.hbone_addr`` from the client's IP, carrying exactly the inbound line's byte counts, is
   the last leg. One request is then one :class:`~netlab.observe.model.Path` through both
   ztunnels. Connections no log line claims are paths of their own (``--mode none``, pods out
   of the mesh).

:func:`reconstruct` is pure (sightings, access entries, names in; paths out); the report calls it,
and :func:`paths_for_capture` feeds it a capture's files and the lab's logs.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from netlab import names as nm
from netlab.lab.state import load_record
from netlab.observe import accesslog, pcapfiles
from netlab.observe.accesslog import AccessEntry
from netlab.observe.decode import decode, ntoa
from netlab.observe.model import CaptureResult, Hop, Leg, Path
from netlab.plan.registry import RegistryDoc

HBONE_PORT = 15008
OUTBOUND_PORT = 15001
EPHEMERAL_MIN = 32768
_SEQ = 1 << 32
_HALF = 1 << 31

Endpoint = tuple[str, int]
RawEndpoint = tuple[bytes, int]  # the address as its 4 raw bytes (what the decoder gives)


@dataclass
class Names:
    """Who owns an address or a netns, for display: pods, ztunnel pods, nodes, service VIPs."""

    ips: dict[str, str] = field(default_factory=dict)  # ip -> pod / ztunnel-<node> / node / service
    netns: dict[str, str] = field(default_factory=dict)  # netns -> lab TARGET
    ztunnel_ips: dict[str, str] = field(default_factory=dict)  # ztunnel pod ip -> ztunnel-<node>
    pod_netns_ztunnel: dict[str, str] = field(default_factory=dict)  # inpod: pod netns -> ztunnel-<node>

    def ip(self, ip: str) -> str:
        return self.ips.get(ip, ip)


@dataclass(slots=True)
class _HopAcc:
    time_ns: int
    netns: str
    device: str
    outgoing: bool
    src: bytes
    sport: int
    dst: bytes
    dport: int
    vni: int | None
    packets: int = 0
    bytes: int = 0
    syn: bool = False


@dataclass(slots=True)
class _Seq:
    """One direction's sequence space: payload bytes counted once however many hops saw them
    (retransmissions included); the SYN and FIN sequence numbers carry no payload."""

    base: int = -1
    lo: int = 0
    hi: int = 0
    data: bool = False

    def add(self, seq: int, length: int, syn: int) -> None:
        if syn:
            self.base = seq + 1
            return
        if not length:
            return
        if self.base < 0:
            self.base = seq
        rel = (seq - self.base) % _SEQ
        if rel >= _HALF:
            rel -= _SEQ
        if not self.data:
            self.lo, self.hi, self.data = rel, rel + length, True
            return
        self.lo = min(self.lo, rel)
        self.hi = max(self.hi, rel + length)

    @property
    def bytes(self) -> int:
        return self.hi - self.lo if self.data else 0


@dataclass(slots=True)
class _Segment:
    client: RawEndpoint
    server: RawEndpoint
    hops: dict[tuple, _HopAcc] = field(default_factory=dict)
    up: _Seq = field(default_factory=_Seq)
    down: _Seq = field(default_factory=_Seq)
    first_ns: int = 0
    last_ns: int = 0
    isn: int | None = None
    tls: bool = False


def _client_of(a: RawEndpoint, b: RawEndpoint) -> RawEndpoint:
    """Without a SYN: the side on an ephemeral port opened the connection (else the higher port)."""
    if (a[1] >= EPHEMERAL_MIN) != (b[1] >= EPHEMERAL_MIN):
        return a if a[1] >= EPHEMERAL_MIN else b
    return a if a[1] > b[1] else b


def segments(sightings: Iterable[pcapfiles.Sighting]) -> list[_Segment]:
    """Group every TCP sighting by its 4-tuple as seen, client side first."""
    segs: dict[tuple[RawEndpoint, RawEndpoint], _Segment] = {}
    done: list[_Segment] = []
    for s in sightings:
        p = decode(s.data)
        if p is None:
            continue
        a, b = (p.src, p.sport), (p.dst, p.dport)
        seg = segs.get((a, b)) or segs.get((b, a))
        if seg is not None and p.syn and seg.isn is not None and p.seq != seg.isn:
            done.append(seg)  # the 4-tuple was reused by a new connection
            del segs[(seg.client, seg.server)]
            seg = None
        if seg is None:
            syn_ack = p.flags & 0x12 == 0x12
            client = a if p.syn else b if syn_ack else _client_of(a, b)
            seg = _Segment(client, b if client == a else a, first_ns=s.ts_ns)
            segs[(seg.client, seg.server)] = seg
        forward = a == seg.client
        key = (s.netns, s.device, forward, p.vni)
        hop = seg.hops.get(key)
        if hop is None:
            hop = seg.hops[key] = _HopAcc(s.ts_ns, s.netns, s.device, s.outgoing, p.src, p.sport, p.dst, p.dport, p.vni)
        hop.packets += 1
        hop.bytes += s.wirelen or len(s.data)
        if p.syn:
            hop.syn = True
            seg.isn = p.seq
        (seg.up if forward else seg.down).add(p.seq, p.payload, p.flags & 0x02)
        if p.first_byte in (0x16, 0x17) and HBONE_PORT in (p.sport, p.dport):
            seg.tls = True
        seg.last_ns = s.ts_ns
    return done + list(segs.values())


def connections(segs: list[_Segment]) -> list[list[_Segment]]:
    """Segments of one connection across NAT: same client endpoint and sequence space."""
    by_client: dict[RawEndpoint, list[list[_Segment]]] = {}
    for seg in sorted(segs, key=lambda g: g.first_ns):
        groups = by_client.setdefault(seg.client, [])
        for g in groups:
            ref = g[0]
            if (seg.isn is not None and seg.isn == ref.isn) or (
                    seg.isn is None or ref.isn is None) and abs(seg.first_ns - ref.first_ns) < 2_000_000_000:
                g.append(seg)
                break
        else:
            groups.append([seg])
    return [g for groups in by_client.values() for g in groups]


def _hop(h: _HopAcc, names: Names, flow: str) -> Hop:
    return Hop(time=h.time_ns / 1e9, netns=h.netns, device=h.device, direction="out" if h.outgoing else "in",
               src=ntoa(h.src), sport=h.sport, dst=ntoa(h.dst), dport=h.dport,
               encap="geneve" if h.vni is not None else ("hbone" if HBONE_PORT in (h.sport, h.dport) else "none"),
               vni=h.vni, packets=h.packets, bytes=h.bytes, flow=flow, syn=h.syn,  # type: ignore[arg-type]
               member=names.netns.get(h.netns, h.netns))


def leg_of(group: list[_Segment], names: Names) -> Leg:
    accs = [(h, fwd) for seg in group for (_, _, fwd, _), h in seg.hops.items()]
    fwd = sorted((h for h, f in accs if f), key=lambda h: (h.time_ns, not h.outgoing))
    rev = sorted((h for h, f in accs if not f), key=lambda h: (h.time_ns, not h.outgoing))
    first = group[0]
    last_fwd = fwd[-1] if fwd else None
    server = (ntoa(last_fwd.dst), last_fwd.dport) if last_fwd else (ntoa(first.server[0]), first.server[1])
    tls = any(seg.tls for seg in group)
    client = ntoa(first.client[0])
    return Leg(src=client, sport=first.client[1], dst=ntoa(first.server[0]), dport=first.server[1],
               encap="hbone" if tls and server[1] == HBONE_PORT else "none",
               hops=tuple(_hop(h, names, "forward") for h in fwd),
               reverse_hops=tuple(_hop(h, names, "reverse") for h in rev),
               server_dst=server[0], server_dport=server[1], client=names.ip(client),
               server=names.ip(server[0]), payload_up=max(seg.up.bytes for seg in group),
               payload_down=max(seg.down.bytes for seg in group), start=min(seg.first_ns for seg in group) / 1e9)


def _overlaps(leg: Leg, e: AccessEntry, slack: float = 1.0) -> bool:
    return e.start - slack <= leg.start <= e.end + slack


def reconstruct(sightings: Iterable[pcapfiles.Sighting], entries: list[AccessEntry], names: Names) -> list[Path]:
    """Paths (in time order) of every TCP connection in ``sightings``, joined through ``entries``."""
    legs = [leg_of(g, names) for g in connections(segments(sightings))]
    legs.sort(key=lambda g: g.start)
    by_client: dict[Endpoint, list[int]] = {}
    for i, leg in enumerate(legs):
        by_client.setdefault((leg.src, leg.sport), []).append(i)
    used: set[int] = set()
    used_in: set[int] = set()
    inbound = sorted((e for e in entries if e.direction == "inbound"), key=lambda e: e.start)
    inbound_at: dict[tuple[Endpoint, str], list[int]] = {}  # (dst.addr, source IP) -> indices by start
    for k, e in enumerate(inbound):
        inbound_at.setdefault((e.dst, e.src[0]), []).append(k)
    inbound_starts = {key: [inbound[k].start for k in ks] for key, ks in inbound_at.items()}
    upstream_at: dict[tuple[str, Endpoint], list[int]] = {}  # (client IP, server endpoint) -> legs by start
    for j, leg in enumerate(legs):
        upstream_at.setdefault((leg.src, (leg.server_dst, leg.server_dport)), []).append(j)
    upstream_starts = {key: [legs[j].start for j in js] for key, js in upstream_at.items()}
    paths: list[tuple[float, Path]] = []

    def find_leg(ep: Endpoint, e: AccessEntry, dport: int | None = None) -> int | None:
        for i in by_client.get(ep, []):
            if i not in used and _overlaps(legs[i], e) and (dport is None or legs[i].server_dport == dport):
                return i
        return None

    for o in sorted((e for e in entries if e.direction == "outbound"), key=lambda e: e.start):
        a = find_leg(o.src, o)
        if a is None:
            continue
        chain = [a]
        legs[a] = dataclasses.replace(legs[a], role="to-ztunnel", server=f"{o.ztunnel}:{OUTBOUND_PORT}")
        used.add(a)
        lines = [o.line]
        zts = [o.ztunnel]
        # the inbound side: same destination, same client IP, mirrored byte counts, overlapping time
        best = None
        key = (o.dst, o.src[0])
        ks = inbound_at.get(key, [])
        for k in ks[bisect.bisect_left(inbound_starts.get(key, []), o.start - 2):]:
            e = inbound[k]
            if e.start > o.end + 1:
                break
            if k in used_in or e.end < o.start - 1:
                continue
            score = (e.bytes_recv != o.bytes_sent) + (e.bytes_sent != o.bytes_recv), abs(e.end - o.end)
            if best is None or score < best[0]:
                best = (score, k)
        if best is not None:
            k = best[1]
            used_in.add(k)
            ie = inbound[k]
            lines.append(ie.line)
            if ie.ztunnel not in zts:
                zts.append(ie.ztunnel)
            b = find_leg(ie.src, ie, HBONE_PORT) if ie.dst[1] == HBONE_PORT else None
            if b is not None:
                used.add(b)
                legs[b] = dataclasses.replace(legs[b], role="hbone", client=o.ztunnel, server=f"{ie.ztunnel}:{HBONE_PORT}")
                chain.append(b)
            target = ie.hbone or o.dst
            c = _find_upstream(legs, used, ie, upstream_at.get((ie.src[0], target), []),
                               upstream_starts.get((ie.src[0], target), []))
            if c is not None:
                used.add(c)
                legs[c] = dataclasses.replace(legs[c], role="from-ztunnel", client=ie.ztunnel)
                chain.append(c)
        last = legs[chain[-1]]
        server = last.server if last.role == "from-ztunnel" else (o.dst_workload or names.ip(o.dst[0]))
        paths.append((legs[a].start, Path(client=names.ip(o.src[0]), server=server, legs=tuple(legs[j] for j in chain),
                                          ztunnels=tuple(zts), access_log=tuple(lines),
                                          app_bytes_up=o.bytes_sent, app_bytes_down=o.bytes_recv)))
    for i, leg in enumerate(legs):
        if i not in used:
            paths.append((leg.start, Path(client=leg.client, server=leg.server, legs=(leg,))))
    paths.sort(key=lambda p: p[0])
    return [p for _, p in paths]


def _find_upstream(legs: list[Leg], used: set[int], inbound: AccessEntry, candidates: list[int],
                   starts: list[float]) -> int | None:
    """The inbound ztunnel's connection to the app: from the client's IP to ``dst.hbone_addr``
    (``candidates``: such legs, by start time), carrying the inbound line's byte counts."""
    best = None
    for j in candidates[bisect.bisect_left(starts, inbound.start - 1):]:
        leg = legs[j]
        if leg.start > inbound.end + 1:
            break
        if j in used:
            continue
        score = (leg.payload_up != inbound.bytes_recv) + (leg.payload_down != inbound.bytes_sent), abs(leg.start - inbound.start)
        if best is None or score < best[0]:
            best = (score, j)
    return None if best is None else best[1]


def lab_names(lab: str) -> Names:
    """Names for a lab's addresses and netns, from its record and registry."""

    rec = load_record(lab)
    n = Names()
    if rec is None:
        return n
    n.netns = {ns: member for member, ns in rec.members.items()}
    for pod, info in rec.pods.items():
        n.ips[info["ip"]] = pod
    for node, info in rec.nodes.items():
        if info.get("ztunnel_ip"):
            n.ips[info["ztunnel_ip"]] = n.ztunnel_ips[info["ztunnel_ip"]] = nm.ztunnel_pod(node)
        if info.get("gateway"):
            n.ips[info["gateway"]] = node
    try:
        with open(nm.registry_path(nm.state_dir(lab))) as f:
            reg = RegistryDoc.from_json(f.read())
        for svc in reg.services:
            n.ips.setdefault(svc.vip, f"{svc.name} (VIP)")
    except (OSError, ValueError):
        pass
    return n


def paths_for_capture(res: CaptureResult) -> list[Path]:
    """Hop reconstruction of a capture ``netlab capture`` just made (its merged file, its lab's logs)."""

    rec = load_record(res.lab)
    nodes = sorted(rec.nodes) if rec else []
    sightings = list(pcapfiles.read_merged(res.merged))
    since = sightings[0].ts_ns / 1e9 - 5 if sightings else 0.0
    entries = accesslog.read_lab(res.lab, nodes, since=since)
    return reconstruct(sightings, entries, lab_names(res.lab))


def path_json(p: Path) -> dict:
    return dataclasses.asdict(p)


OVERHEAD_NOTE = ("HBONE overhead = TLS 1.3 records (5 B header + 16 B AEAD tag + 1 B content type each) and "
                 "HTTP/2 frames (9 B header each: the CONNECT HEADERS and its 200, DATA, SETTINGS, WINDOW_UPDATE, "
                 "PING), plus the TLS handshake if the connection opened during the capture; the connection is "
                 "pooled, so streams of other requests on it count too")


def hbone_overhead(p: Path) -> tuple[int, int] | None:
    """(up, down) bytes the HBONE leg carried beyond what the access log says the app sent."""
    leg = next((g for g in p.legs if g.role == "hbone"), None)
    if leg is None or p.app_bytes_up is None or p.app_bytes_down is None:
        return None
    return leg.payload_up - p.app_bytes_up, leg.payload_down - p.app_bytes_down
