"""Many rtnetlink requests to one netns in one ``sendto``, for the bulk of a lab's objects.

A 1,000-pod lab makes ~10,000 veths, link flags, addresses and routes. Through pyroute2 each
is a round trip through its request machinery (~1 ms of Python apiece, and ``link_lookup``
per name); here each is a few ``struct.pack`` calls, sent in chunks and acknowledged in
bulk. The messages are byte for byte what pyroute2 sends for the same object (same header
flags, same attributes in the same order, no ``NLA_F_NESTED``): the kernel state is the
same, only the Python around it is gone. Rarer objects (bridges, tunnels, masters, MTUs, ip
rules) stay on :class:`netlab.apply.netlink.NetnsLinks`.

Each request is acknowledged (``NLM_F_ACK``); the kernel carries on after a failed one, so
``commit`` reports the first failure in queue order, with the plan line it implements.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

from netlab.errors import ApplyError
from netlab.linux import nsenter
from netlab.plan.objects import Addr, Link, Route, Rule, normalise_dst

NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWRULE, RTM_GETRULE = 16, 18, 20, 24, 32, 34
IFLA_IFNAME, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 7, 15
FRA_GOTO, FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 4, 6, 10, 15, 16
FR_ACT_TO_TBL, FR_ACT_GOTO = 1, 2
IFF_UP = 1
IFA_F_NOPREFIXROUTE = 0x200
RTNH_F_ONLINK = 4
RTPROT_BOOT = 3  # what `ip route add` uses: iproute2 prints no "proto" for it, as on a real node
RTN_UNICAST, RTN_LOCAL = 1, 2
SCOPES = {"universe": 0, "link": 253, "host": 254}
RT_TABLE_COMPAT = 252  # the header's table when the real one (in RTA_TABLE) does not fit a byte
CHUNK = 128  # requests per sendto: their acks must fit the receive buffer
RCVBUF = 4 << 20
HDR = struct.Struct("=IHHII")
IFINFO = struct.Struct("=BxHiII")


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes (the length field counts the payload unpadded)."""
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _ip(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


def _u32(v: int) -> bytes:
    return struct.pack("=I", v)


def veth_body(name: str, peer: str, peer_fd: int) -> bytes:
    peer_info = IFINFO.pack(0, 0, 0, 0, 0) + nla(IFLA_IFNAME, peer.encode() + b"\0") + nla(IFLA_NET_NS_FD, _u32(peer_fd))
    info = nla(IFLA_INFO_KIND, b"veth\0") + nla(IFLA_INFO_DATA, nla(VETH_INFO_PEER, peer_info))
    return IFINFO.pack(0, 0, 0, 0, 0) + nla(IFLA_IFNAME, name.encode() + b"\0") + nla(IFLA_LINKINFO, info)


def up_body(index: int) -> bytes:
    return IFINFO.pack(0, 0, index, IFF_UP, IFF_UP)


def addr_body(a: Addr, index: int) -> bytes:
    ip = _ip(a.address)
    flags = nla(IFA_FLAGS, _u32(IFA_F_NOPREFIXROUTE)) if a.noprefixroute else b""
    return struct.pack("=BBBBi", socket.AF_INET, a.prefixlen, 0, 0, index) + nla(IFA_ADDRESS, ip) + flags + nla(IFA_LOCAL, ip)


def route_body(r: Route, oif: int | None) -> bytes:
    """``oif`` None: a gateway route without a device (the kernel picks it from the gateway)."""
    dst, plen = normalise_dst(r.dst)
    scope = SCOPES["host"] if r.type == "local" else SCOPES[r.scope] if r.scope else 0
    rtype = RTN_LOCAL if r.type == "local" else RTN_UNICAST
    head = struct.pack("=BBBBBBBBI", socket.AF_INET, plen, 0, 0, r.table if r.table < 256 else RT_TABLE_COMPAT,
                       RTPROT_BOOT, scope, rtype, RTNH_F_ONLINK if r.onlink else 0)
    attrs = nla(RTA_DST, _ip(dst)) if plen else b""
    attrs += nla(RTA_TABLE, _u32(r.table))
    if oif is not None:
        attrs += nla(RTA_OIF, _u32(oif))
    if r.via:
        attrs += nla(RTA_GATEWAY, _ip(r.via))
    if r.src:
        attrs += nla(RTA_PREFSRC, _ip(r.src))
    return head + attrs


def rule_body(r: Rule) -> bytes:
    table = 0 if r.goto is not None else (r.table or 0)
    head = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, table if table < 256 else RT_TABLE_COMPAT, 0, 0,
                       FR_ACT_GOTO if r.goto is not None else FR_ACT_TO_TBL, 0)
    attrs = nla(FRA_PRIORITY, _u32(r.priority))
    if r.fwmark is not None:
        attrs += nla(FRA_FWMARK, _u32(r.fwmark)) + nla(FRA_FWMASK, _u32(r.mask if r.mask is not None else 0xFFFFFFFF))
    attrs += nla(FRA_GOTO, _u32(r.goto)) if r.goto is not None else nla(FRA_TABLE, _u32(r.table or 0))
    return head + attrs


class RtnlBatch:
    """A raw rtnetlink socket made inside one lab netns, and the requests queued for it."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        try:
            with nsenter.netns(ns):
                self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        except OSError as e:
            raise ApplyError(f"cannot open netns {ns}: {e.strerror}", obj=f"netns {ns}", errno=e.errno) from None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.bind((0, 0))
        self.seq = 0
        self.queue: list[tuple[int, bytes, str, tuple[int, ...]]] = []
        self._fds: list[int] = []
        self.index: dict[str, int] = {}

    def close(self) -> None:
        self._close_fds()
        self.sock.close()

    def _close_fds(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def _put(self, msg_type: int, flags: int, body: bytes, what: str, ok: tuple[int, ...] = ()) -> None:
        self.seq += 1
        self.queue.append((self.seq, HDR.pack(HDR.size + len(body), msg_type, flags, self.seq, 0) + body, what, ok))

    # -- requests ----------------------------------------------------------------------

    def add_veth(self, link: Link) -> None:
        assert link.kind == "veth" and link.peer and link.peer_ns
        fd = nsenter.open_netns(link.peer_ns)
        self._fds.append(fd)
        self._put(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
                  veth_body(link.name, link.peer, fd), link.render(), (errno.EEXIST,))

    def up(self, name: str) -> None:
        self._put(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, up_body(self._index(name)), f"link set {name} up")

    def add_addr(self, a: Addr) -> None:
        self._put(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
                  addr_body(a, self._index(a.dev)), a.render(), (errno.EEXIST,))

    def add_route(self, r: Route) -> None:
        self._put(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE,
                  route_body(r, self._index(r.dev) if r.dev else None), r.render())

    def add_rule(self, r: Rule) -> None:
        """Queued only if no rule (of any family) has its priority yet, as
        :meth:`netlab.apply.netlink.NetnsLinks.add_rule` decides."""
        if r.priority in self.rule_priorities():
            return
        self._put(RTM_NEWRULE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE, rule_body(r), r.render())

    def _index(self, name: str) -> int:
        if name not in self.index:
            raise ApplyError(f"{self.ns}: no link {name}", obj=f"link {name}", errno=errno.ENODEV)
        return self.index[name]

    # -- sending -----------------------------------------------------------------------

    def commit(self) -> None:
        """Send everything queued; raise the first failure (in queue order) not allowed for."""
        queue, self.queue = self.queue, []
        first: ApplyError | None = None
        try:
            for i in range(0, len(queue), CHUNK):
                part = queue[i:i + CHUNK]
                self.sock.sendto(b"".join(m for _, m, _, _ in part), (0, 0))
                codes = self._acks({seq for seq, _, _, _ in part})
                for seq, _, what, ok in part:
                    code = codes[seq]
                    if code and code not in ok and first is None:
                        first = ApplyError(f"{self.ns}: {what}: {os.strerror(code)}", obj=what, errno=code)
        finally:
            self._close_fds()
        if first is not None:
            raise first

    def _acks(self, want: set[int]) -> dict[int, int]:
        """errno (0: done) per sequence number, read until every one in ``want`` is acked."""
        codes: dict[int, int] = {}
        while len(codes) < len(want):
            data = self.sock.recv(1 << 20)
            off = 0
            while off + HDR.size <= len(data):
                length, mtype, _, seq, _ = HDR.unpack_from(data, off)
                if mtype == NLMSG_ERROR and seq in want:
                    codes[seq] = -struct.unpack_from("=i", data, off + HDR.size)[0]
                off += (length + 3) & ~3
        return codes

    def _dump(self, msg_type: int, header: bytes) -> list[tuple[bytes, int]]:
        """A dump request's replies: (message, offset of its body) each."""
        self.seq += 1
        seq = self.seq
        self.sock.sendto(HDR.pack(HDR.size + len(header), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + header, (0, 0))
        out: list[tuple[bytes, int]] = []
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off + HDR.size <= len(data):
                length, mtype, _, mseq, _ = HDR.unpack_from(data, off)
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, off + HDR.size)[0]
                        raise ApplyError(f"{self.ns}: dump: {os.strerror(code)}", obj="dump", errno=code)
                    out.append((data[off:off + length], HDR.size))
                off += (length + 3) & ~3

    @staticmethod
    def _attr(msg: bytes, start: int, kind: int) -> bytes | None:
        a = start
        while a + 4 <= len(msg):
            alen, akind = struct.unpack_from("=HH", msg, a)
            if alen < 4:
                return None
            if akind & 0x3FFF == kind:
                return msg[a + 4:a + alen]
            a += (alen + 3) & ~3
        return None

    def refresh_index(self) -> dict[str, int]:
        """Every link of the netns by name (one dump), for the requests that need an ifindex."""
        index: dict[str, int] = {}
        for msg, body in self._dump(RTM_GETLINK, IFINFO.pack(0, 0, 0, 0, 0)):
            name = self._attr(msg, body + IFINFO.size, IFLA_IFNAME)
            if name is not None:
                index[name.rstrip(b"\0").decode()] = IFINFO.unpack_from(msg, body)[2]
        self.index = index
        return index

    def rule_priorities(self) -> set[int]:
        """The priorities of every ip rule, IPv4 and IPv6 (one dump)."""
        prios: set[int] = set()
        for msg, body in self._dump(RTM_GETRULE, b"\0" * 12):
            v = self._attr(msg, body + 12, FRA_PRIORITY)
            prios.add(struct.unpack("=I", v)[0] if v else 0)
        return prios
