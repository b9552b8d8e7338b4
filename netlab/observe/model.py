"""Typed results of the observe layer: captures, hops, paths and traces.

``netlab capture``, ``netlab trace`` and ``netlab report`` all speak these types, so the report
(and anything a user scripts) reads the same fields the commands print. They are plain frozen
dataclasses with JSON-ready fields (``dataclasses.asdict`` gives the ``--json`` shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["in", "out"]  # as the capturing interface saw the packet (PACKET_OUTGOING = out)
Encap = Literal["none", "geneve", "hbone"]
Flow = Literal["forward", "reverse"]  # client -> server (the SYN's way), or the replies


@dataclass(frozen=True)
class InterfaceCapture:
    """One capture socket: the pcap it wrote and what it counted."""

    netns: str
    device: str
    pcap: str  # path of ``<netns>__<device>.pcap``
    packets: int
    kernel_drops: int  # PACKET_STATISTICS tp_drops (or tcpdump's "dropped by kernel")
    member: str = ""  # the lab TARGET owning the netns (pod, node, ztunnel-<node>, net)


@dataclass(frozen=True)
class CaptureResult:
    """What ``netlab capture`` wrote: one pcap per interface plus one merged pcapng."""

    lab: str
    directory: str
    merged: str  # path of the merged pcapng (interface descriptions name netns and device)
    interfaces: tuple[InterfaceCapture, ...]
    command_rc: int | None  # exit code of the command run in TARGET, None for --seconds
    interrupted: bool = False  # Ctrl-C: the files are still complete and closed


@dataclass(frozen=True)
class Hop:
    """One sighting of a connection's packets on one interface, in time order."""

    time: float  # first packet of this connection on this interface (epoch seconds)
    netns: str
    device: str
    direction: Direction
    src: str
    sport: int
    dst: str
    dport: int
    encap: Encap
    vni: int | None  # Geneve VNI when encap == "geneve"
    packets: int
    bytes: int  # on the wire, including every header as captured
    flow: Flow = "forward"
    syn: bool = False  # the connection's SYN was seen here (in this encapsulation)
    member: str = ""  # the lab TARGET owning ``netns``


@dataclass(frozen=True)
class Leg:
    """One TCP connection as the kernel carried it (a proxy splits a request into legs)."""

    src: str
    sport: int
    dst: str
    dport: int
    encap: Encap
    hops: tuple[Hop, ...]  # forward hops (client -> server), in time order
    reverse_hops: tuple[Hop, ...] = ()  # the replies' hops, in time order
    server_dst: str = ""  # the server's address as the server saw it (after DNAT/REDIRECT)
    server_dport: int = 0
    client: str = ""  # who opened it: a pod, ztunnel-<node>, or the address
    server: str = ""  # who accepted it: a pod, ztunnel-<node>:<port>, or the address
    role: str = "direct"  # direct | to-ztunnel | hbone | from-ztunnel
    payload_up: int = 0  # TCP payload bytes client -> server (each sequence byte once)
    payload_down: int = 0
    start: float = 0.0  # first packet, epoch seconds


@dataclass(frozen=True)
class Path:
    """One request end to end: its legs in order, joined through the ztunnels' access logs."""

    client: str  # pod name
    server: str  # pod name, or the destination address when no pod owns it
    legs: tuple[Leg, ...]
    ztunnels: tuple[str, ...] = field(default=())  # ztunnel-<node> names traversed, in order
    access_log: tuple[str, ...] = field(default=())  # the ztunnel access-log lines that joined the legs
    app_bytes_up: int | None = None  # what the access log says the app sent / received
    app_bytes_down: int | None = None

    @property
    def hops(self) -> tuple[Hop, ...]:
        return tuple(h for leg in self.legs for h in leg.hops)


@dataclass(frozen=True)
class RuleMatch:
    """One netfilter rule the traced connection matched (from ``nft monitor trace``)."""

    netns: str
    table: str
    chain: str
    rule: str  # as iptables-save prints it
    mark_before: int
    mark_after: int
    verdict: str  # TPROXY, REDIRECT, DNAT, ACCEPT, MARK, CONNMARK, ...
    packet: str = "SYN"  # which of the connection's packets (TCP flags) matched it
    member: str = ""  # the lab TARGET owning ``netns``


@dataclass(frozen=True)
class RouteDecision:
    """One routing decision: the ip rule that matched, its table and the route chosen."""

    netns: str
    priority: int
    table: str
    route: str  # the table's entry that matched, as ``ip route show table T`` prints it (``ip route get fibmatch``)
    packet: str = "SYN"
    member: str = ""
    iif: str | None = None  # the packet's input interface (None: sent from this netns)
    mark: int = 0  # the packet's mark when the route was looked up
    resolved: str = ""  # the route for this packet, as ``ip route get`` prints it


@dataclass(frozen=True)
class Trace:
    """``netlab trace``: every rule and routing decision one connection met, in path order."""

    lab: str
    source: str
    destination: str
    steps: tuple[RuleMatch | RouteDecision, ...]
    sport: int = 0  # the traced connection's source port
    connected: bool = False  # whether the connection was accepted
    netns_order: tuple[str, ...] = ()  # netns in the order the SYN reached them (from a capture)
