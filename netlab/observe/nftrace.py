"""nftables trace events, straight from the kernel (what ``nft monitor trace`` prints).

A packet with ``meta nftrace set 1`` makes nf_tables send one netlink message
(``NFT_MSG_TRACE`` to group ``NFNLGRP_NFTRACE``) per rule it matched, chain it returned from and
base-chain policy it met, in the netns where that happened. ``nft monitor trace`` (nftables
1.0.6, Debian 12) prints them without the rule handle; the message itself carries it
(``NFTA_TRACE_RULE_HANDLE``), and the handle is what maps an iptables-nft rule back to its
``iptables-save`` line. So this listens itself: a ``NETLINK_NETFILTER`` socket made inside each
netns (``netlab.linux.nsenter``) and subscribed to the trace group, messages decoded with
pyroute2's netlink attribute machinery (the message layout is the kernel's
``enum nft_trace_attributes``, ``include/uapi/linux/netfilter/nf_tables.h``).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from pyroute2.netlink import nla
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, NFNLGRP_NFTRACE, nfgen_msg

from netlab.linux import nsenter

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFT_MSG_TRACE = 17
TRACE_MSG_TYPE = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE
TRACE_TYPES = {1: "policy", 2: "return", 3: "rule"}
VERDICTS = {0: "DROP", 1: "ACCEPT", 2: "STOLEN", 3: "QUEUE", 4: "REPEAT", 5: "STOP", -1: "continue",
            -2: "break", -3: "jump", -4: "goto", -5: "return"}
_NLMSG = struct.Struct("=IHHII")


class nft_trace_msg(nfgen_msg):
    """``NFT_MSG_TRACE``: the attributes of one trace event."""

    prefix = "NFTA_TRACE_"
    nla_map = (
        ("NFTA_TRACE_UNSPEC", "none"),
        ("NFTA_TRACE_TABLE", "asciiz"),
        ("NFTA_TRACE_CHAIN", "asciiz"),
        ("NFTA_TRACE_RULE_HANDLE", "be64"),
        ("NFTA_TRACE_TYPE", "be32"),
        ("NFTA_TRACE_VERDICT", "verdict"),
        ("NFTA_TRACE_ID", "be32"),
        ("NFTA_TRACE_LL_HEADER", "cdata"),
        ("NFTA_TRACE_NETWORK_HEADER", "cdata"),
        ("NFTA_TRACE_TRANSPORT_HEADER", "cdata"),
        ("NFTA_TRACE_IIF", "be32"),
        ("NFTA_TRACE_IIFTYPE", "be16"),
        ("NFTA_TRACE_OIF", "be32"),
        ("NFTA_TRACE_OIFTYPE", "be16"),
        ("NFTA_TRACE_MARK", "be32"),
        ("NFTA_TRACE_NFPROTO", "be32"),
        ("NFTA_TRACE_POLICY", "be32"),
        ("NFTA_TRACE_PAD", "hex"),
    )

    class verdict(nla):
        nla_map = (
            ("NFTA_VERDICT_UNSPEC", "none"),
            ("NFTA_VERDICT_CODE", "be32"),
            ("NFTA_VERDICT_CHAIN", "asciiz"),
        )


@dataclass(frozen=True)
class TraceEvent:
    """One trace message: which rule (handle) of which chain did what to the packet."""

    netns: str
    trace_id: int
    family: int  # NFPROTO of the table (2 = ip: iptables-nft; 1 = inet)
    table: str
    chain: str
    kind: str  # rule | return | policy
    handle: int | None
    verdict: str  # ACCEPT, DROP, continue, jump, goto, return, ...
    target_chain: str | None  # for jump/goto
    mark: int  # the packet's mark after this event (0 when the kernel sent none)
    iif: int | None
    oif: int | None
    network_header: bytes | None  # the IP header (sent with a hook's first event)
    transport_header: bytes | None


def open_listener(netns: str) -> socket.socket:
    """A netlink socket of ``netns`` subscribed to nftables trace events (non-blocking)."""
    with nsenter.netns(netns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_NETFILTER)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((0, 0))
        s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
    except OSError:
        s.close()
        raise
    return s


def _signed(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def parse(data: bytes, netns: str) -> list[TraceEvent]:
    """Every trace event in one netlink read."""
    out = []
    off = 0
    while off + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size:
            break
        if mtype == TRACE_MSG_TYPE:
            msg = nft_trace_msg(data[off:off + length])
            msg.decode()
            v = msg.get_attr("NFTA_TRACE_VERDICT")
            code = _signed(v.get_attr("NFTA_VERDICT_CODE")) if v is not None else None
            out.append(TraceEvent(
                netns=netns, trace_id=msg.get_attr("NFTA_TRACE_ID") or 0, family=msg["nfgen_family"],
                table=msg.get_attr("NFTA_TRACE_TABLE") or "", chain=msg.get_attr("NFTA_TRACE_CHAIN") or "",
                kind=TRACE_TYPES.get(msg.get_attr("NFTA_TRACE_TYPE") or 0, "?"),
                handle=msg.get_attr("NFTA_TRACE_RULE_HANDLE"),
                verdict=VERDICTS.get(code, str(code)) if code is not None else
                VERDICTS.get(msg.get_attr("NFTA_TRACE_POLICY") or 0, "?"),
                target_chain=v.get_attr("NFTA_VERDICT_CHAIN") if v is not None else None,
                mark=msg.get_attr("NFTA_TRACE_MARK") or 0, iif=msg.get_attr("NFTA_TRACE_IIF"),
                oif=msg.get_attr("NFTA_TRACE_OIF"), network_header=_bytes(msg.get_attr("NFTA_TRACE_NETWORK_HEADER")),
                transport_header=_bytes(msg.get_attr("NFTA_TRACE_TRANSPORT_HEADER"))))
        off += (length + 3) & ~3
    return out


def _bytes(v: str | bytes | None) -> bytes | None:
    if v is None:
        return None
    return bytes(v) if not isinstance(v, str) else bytes.fromhex(v.replace(":", ""))


def read_all(sock: socket.socket, netns: str) -> list[TraceEvent]:
    """Drain a listener without blocking."""
    out: list[TraceEvent] = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        out.extend(parse(data, netns))
