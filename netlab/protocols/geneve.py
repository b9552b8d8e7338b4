"""The Geneve header (RFC 8926) as the userspace forwarder writes and reads it — sans-IO.

Wire format, 8 bytes without options (what Istio's geneve links ``istioin``/``istioout`` send)::

     0                   1                   2                   3
    |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
    |        Virtual Network Identifier (VNI)       |    Reserved   |

``Ver`` 0, ``Opt Len`` 0, ``Protocol Type`` 0x6558 (Transparent Ethernet Bridging: the payload is
an Ethernet frame), VNI 1000 (``istioin``) or 1001 (``istioout``), UDP destination port 6081.

The declarative form is scapy's own layer, ``scapy.contrib.geneve.GENEVE`` (``fields_desc``;
bound to ``UDP(dport=6081)`` and to ``Ether`` for ``proto=0x6558``). It is re-exported here as
:data:`GENEVE` but imported lazily, so the forwarder's hot path never loads scapy: it packs the
header with :mod:`struct` and recognises its own headers by an exact 8-byte lookup.

>>> pack_header(1001).hex()
'000065580003e900'
>>> parse_header(pack_header(1000)).vni
1000
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

GENEVE_PORT = 6081
PROTO_TEB = 0x6558  # Transparent Ethernet Bridging
HEADER_LEN = 8
VERSION = 0
VNI_MAX = (1 << 24) - 1
FLAG_OAM = 0x80
FLAG_CRITICAL = 0x40

_HEADER = struct.Struct("!BBHI")  # ver|optlen, O|C|rsvd, protocol type, VNI<<8 | reserved


class MalformedHeader(ValueError):
    """Not a Geneve header this forwarder accepts; ``reason`` names the drop counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GeneveHeader:
    version: int
    opt_len: int  # in bytes (the wire field counts 4-byte words)
    oam: bool
    critical: bool
    proto: int
    vni: int

    @property
    def length(self) -> int:
        """Header length including options: where the payload starts."""
        return HEADER_LEN + self.opt_len


def pack_header(vni: int, proto: int = PROTO_TEB) -> bytes:
    """The 8-byte Geneve header (version 0, no options, no flags) for ``vni``.

    >>> pack_header(1000) == bytes([0, 0, 0x65, 0x58, 0x00, 0x03, 0xE8, 0])
    True
    """
    if not 0 <= vni <= VNI_MAX:
        raise ValueError(f"VNI {vni} out of range 0..{VNI_MAX}")
    return _HEADER.pack(VERSION << 6, 0, proto, vni << 8)


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> GeneveHeader:
    """Parse the Geneve header at ``offset``; raise :class:`MalformedHeader` if unusable.

    Unusable: shorter than 8 bytes or than its options, version other than 0.

    >>> parse_header(bytes.fromhex("0000655800000100"))
    GeneveHeader(version=0, opt_len=0, oam=False, critical=False, proto=25944, vni=1)
    """
    if len(data) - offset < HEADER_LEN:
        raise MalformedHeader("short", f"{len(data) - offset} bytes, need {HEADER_LEN}")
    first, flags, proto, vni_word = _HEADER.unpack_from(data, offset)
    version = first >> 6
    if version != VERSION:
        raise MalformedHeader("bad_version", f"version {version}")
    opt_len = (first & 0x3F) * 4
    if len(data) - offset < HEADER_LEN + opt_len:
        raise MalformedHeader("short", f"options of {opt_len} bytes truncated")
    return GeneveHeader(version, opt_len, bool(flags & FLAG_OAM), bool(flags & FLAG_CRITICAL), proto,
                        vni_word >> 8)


class Decapsulator:
    """Sans-IO receive side: Geneve datagram in, (target, payload offset) or a counted drop out.

    ``targets`` maps VNI to anything (the forwarder uses its TAP writer objects). The common case,
    a header byte-identical to :func:`pack_header` for a known VNI, is a single dict lookup;
    anything else goes through :func:`parse_header` (options are skipped per RFC 8926 §3.5 unless
    the C bit says a critical option is present, since this endpoint understands none).
    ``drops`` counts by reason: ``short``, ``bad_version``, ``critical_option``, ``oam``,
    ``bad_proto``, ``unknown_vni``.

    >>> d = Decapsulator({1000: "pistioin"})
    >>> d.receive(pack_header(1000) + b"frame")
    ('pistioin', 8)
    >>> d.receive(pack_header(7) + b"frame"), d.drops
    (None, {'unknown_vni': 1})
    """

    def __init__(self, targets: dict[int, Any]) -> None:
        self.targets = dict(targets)
        self.fast = {pack_header(vni): target for vni, target in self.targets.items()}
        self.drops: dict[str, int] = {}

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def receive(self, datagram: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int] | None:
        target = self.fast.get(bytes(datagram[offset:offset + HEADER_LEN]))
        if target is not None:
            return target, offset + HEADER_LEN
        return self.slow(datagram, offset)

    def slow(self, datagram: bytes | bytearray | memoryview, offset: int) -> tuple[Any, int] | None:
        try:
            hdr = parse_header(datagram, offset)
        except MalformedHeader as exc:
            self.drop(exc.reason)
            return None
        if hdr.critical:
            self.drop("critical_option")
            return None
        if hdr.oam:
            self.drop("oam")
            return None
        if hdr.proto != PROTO_TEB:
            self.drop("bad_proto")
            return None
        target = self.targets.get(hdr.vni)
        if target is None:
            self.drop("unknown_vni")
            return None
        return target, offset + hdr.length


def __getattr__(name: str) -> Any:
    """Lazy re-export of scapy's declarative ``GENEVE`` layer.

    Imported on first use, not at the top: importing scapy takes about a second and loads its
    whole layer registry, and the Geneve forwarder (which imports this module for the header
    codec) must start fast and never needs scapy.
    """
    if name == "GENEVE":
        # scapy is imported on first use only (see the docstring)
        from scapy.contrib.geneve import GENEVE

        return GENEVE
    raise AttributeError(name)
