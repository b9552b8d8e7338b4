"""Capture files: one classic pcap per interface, one merged pcapng, read back in time order.

Every format goes through scapy: ``RawPcapWriter`` (nanosecond pcap, linktype Ethernet) for the
per-interface files, ``RawPcapNgWriter`` for the merged file and ``RawPcapNgReader`` to read it
back. scapy's pcapng writer puts only ``if_name`` in an interface description and counts time
in microseconds; :class:`MergedWriter` adds ``if_description`` and ``if_tsresol`` (nanoseconds)
through scapy's own block builder. (python-pcapng writes those options too, but took ~190 µs
per packet here against scapy's ~10 µs, which a capture of a whole lab cannot afford.) The merged file names
each interface ``<netns>/<device>`` (``/`` occurs in neither a netns nor a device name) and
describes it as ``<device> in netns <netns>``, so Wireshark's ``frame.interface_name`` says where
a packet was seen; each packet carries its direction (``epb_flags``: 1 inbound, 2 outbound) and a
nanosecond timestamp (several hops of one packet fall within the same microsecond).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from scapy.utils import RawPcapNgReader, RawPcapNgWriter, RawPcapReader, RawPcapWriter

from netlab.linux.files import replacing

LINKTYPE_ETHERNET = 1
SNAPLEN = 262144  # a GSO/GRO super-frame on a veth is up to 64 KiB; tcpdump's default snaplen
DIR_IN, DIR_OUT = 1, 2  # pcapng epb_flags inbound/outbound


def pcap_name(netns: str, device: str) -> str:
    """``pcap_name("nl-demo.sleep", "eth0") -> 'nl-demo.sleep__eth0.pcap'``."""
    return f"{netns}__{device}.pcap"


def if_name(netns: str, device: str) -> str:
    return f"{netns}/{device}"


def split_if_name(name: str) -> tuple[str, str]:
    """Inverse of :func:`if_name`: ``'nl-demo.sleep/eth0' -> ('nl-demo.sleep', 'eth0')``."""
    netns, _, device = name.rpartition("/")
    return netns, device


class InterfaceWriter:
    """Streams one interface's packets into a nanosecond pcap while the capture runs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._w = RawPcapWriter(path, linktype=LINKTYPE_ETHERNET, nano=True, snaplen=SNAPLEN, sync=False)
        self._w._write_header(None)  # an interface that saw nothing still gets a valid, empty pcap
        self.directions = bytearray()  # DIR_IN/DIR_OUT per packet, for the merged file

    def write(self, data: bytes, ts_ns: int, outgoing: bool) -> None:
        self._w.write_packet(data, sec=ts_ns // 1_000_000_000, usec=ts_ns % 1_000_000_000, wirelen=len(data))
        self.directions.append(DIR_OUT if outgoing else DIR_IN)

    def close(self) -> None:
        self._w.close()


@dataclass(frozen=True)
class MergeInput:
    netns: str
    device: str
    path: str
    directions: bytes
    received: int
    drops: int


def _read_pcap(index: int, path: str, directions: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    with RawPcapReader(path) as r:
        for n, (data, meta) in enumerate(r):
            # nanosecond pcap: scapy reports the fraction in ``usec`` as nanoseconds
            ts = meta.sec * 1_000_000_000 + meta.usec
            yield ts, index, directions[n] if n < len(directions) else 0, data


class MergedWriter(RawPcapNgWriter):
    """scapy's pcapng writer with nanosecond timestamps and an ``if_description`` per interface."""

    OPT_IF_NAME, OPT_IF_DESCRIPTION, OPT_IF_TSRESOL = 2, 3, 9

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        self.tsresol = 1_000_000_000
        self.linktype = LINKTYPE_ETHERNET
        self.descriptions: dict[bytes, str] = {}
        self.interfaces2id = {}  # no anonymous interface 0: every interface is a netns/device

    def _write_header(self, pkt: object) -> None:
        if not self.header_present:
            self.header_present = True
            self._write_block_shb()

    def _option(self, code: int, value: bytes) -> bytes:
        return struct.pack(self.endian + "HH", code, len(value)) + self._add_padding(value)

    def _write_block_idb(self, linktype: int, ifname: bytes | None = None) -> None:
        ifname = ifname or b"unknown"
        body = struct.pack(self.endian + "HHI", linktype, 0, SNAPLEN)
        opts = (self._option(self.OPT_IF_NAME, ifname)
                + self._option(self.OPT_IF_DESCRIPTION, self.descriptions.get(ifname, "").encode())
                + self._option(self.OPT_IF_TSRESOL, b"\x09")
                + struct.pack(self.endian + "HH", 0, 0))
        self.f.write(self.build_block(struct.pack(self.endian + "I", 1), body, options=opts))


def merge(inputs: list[MergeInput], out_path: str) -> int:
    """Write every interface's packets, in timestamp order, into one pcapng; returns packets."""
    with replacing(out_path) as tmp:
        return _merge(inputs, tmp)


def _merge(inputs: list[MergeInput], tmp: str) -> int:
    count = 0
    w = MergedWriter(tmp)
    names = [if_name(m.netns, m.device).encode() for m in inputs]
    for m, name in zip(inputs, names, strict=True):
        w.descriptions[name] = f"{m.device} in netns {m.netns}"
    w._write_header(None)
    for name in names:  # every interface described up front, in input order (ids 0..n-1)
        w.interfaces2id[name] = len(w.interfaces2id)
        w._write_block_idb(LINKTYPE_ETHERNET, name)
    try:
        streams = [_read_pcap(i, m.path, m.directions) for i, m in enumerate(inputs)]
        for ts, index, direction, data in heapq.merge(*streams):
            # a Decimal, not the float scapy's comment says: it keeps the nanoseconds (scapy takes it)
            w._write_packet(data, LINKTYPE_ETHERNET, sec=Decimal(ts) / 1_000_000_000,  # type: ignore[arg-type]
                            ifname=names[index],
                            direction=direction or None)
            count += 1
    finally:
        w.close()
    return count


class Sighting(NamedTuple):
    """One packet as one interface saw it (what hop reconstruction works from; a tuple because
    hundreds of thousands are made, and a frozen dataclass is several times slower to build)."""

    ts_ns: int
    netns: str
    device: str
    outgoing: bool
    data: bytes
    wirelen: int = 0  # the frame's length on the wire (``data`` may be cut at the snap length)


_EPB = struct.Struct("<5I")
_FLAGS_ONLY = struct.pack("<HH", 2, 4)  # an epb_flags option, as MergedWriter writes it


class MergedReader(RawPcapNgReader):
    """scapy's pcapng reader with a lean path for the Enhanced Packet Blocks netlab writes.

    scapy's own EPB parser builds a metadata tuple, an options dict and process information for
    every packet (~20 µs); hop reconstruction reads hundreds of thousands of them. A block laid
    out exactly as :class:`MergedWriter` writes it (fixed header, data, one ``epb_flags`` option)
    is read with one ``struct`` call; any other block goes to scapy's parser. Section and
    interface blocks are always scapy's. ``tests/unit/test_pcapfiles.py`` checks both paths agree.
    """

    def _read_block_epb(self, block: bytes, size: int):
        if self.endian != "<" or len(block) < 20:
            return self._scapy_epb(block, size)
        intid, tshigh, tslow, caplen, wirelen = _EPB.unpack_from(block)
        off = 20 + caplen + (-caplen) % 4
        rest = len(block) - off
        if rest == 0:
            direction = None
        elif rest == 12 and block[off:off + 4] == _FLAGS_ONLY and block[off + 8:off + 12] == b"\0\0\0\0":
            direction = block[off + 4] & 3
        else:
            return self._scapy_epb(block, size)
        if intid >= len(self.interfaces):
            return None
        _linktype, _snaplen, opts = self.interfaces[intid]
        return block[20:20 + caplen], (intid, (tshigh << 32) | tslow, opts["tsresol"], wirelen, direction)

    def _scapy_epb(self, block: bytes, size: int):
        got = RawPcapNgReader._read_block_epb(self, block, 1 << 30)
        if got is None:
            return None
        data, meta = got
        intid = struct.unpack_from(self.endian + "I", block)[0]
        return data, (intid, (meta.tshigh << 32) | meta.tslow, meta.tsresol, meta.wirelen, meta.direction)

    def sightings(self) -> Iterator[Sighting]:
        where: dict[int, tuple[str, str]] = {}
        while True:
            try:
                # our _read_block_epb's (data, (intid, ts, tsresol, wirelen, direction)), not scapy's metadata
                got: tuple[bytes, tuple[int, int, int, int, int | None]] | None = self._read_block()  # type: ignore[assignment]
            except EOFError:
                return
            if got is None:
                continue
            data, (intid, ts, tsresol, wirelen, direction) = got
            w = where.get(intid)
            if w is None:
                raw = self.interfaces[intid][2].get("name") or b"?/?"
                w = where[intid] = split_if_name(raw.decode() if isinstance(raw, bytes) else raw)
            yield Sighting(ts * 1_000_000_000 // tsresol, w[0], w[1], direction == DIR_OUT, data, wirelen)


def read_merged(path: str) -> Iterator[Sighting]:
    """The packets of a merged pcapng, in file (= timestamp) order."""
    r = MergedReader(path)  # (scapy's __enter__ is typed as returning its base class)
    with r:
        yield from r.sightings()


def read_sorted(paths: Iterable[str]) -> list[Sighting]:
    """Several merged files' packets, sorted by time (stable: file order breaks ties)."""
    out = [s for p in paths for s in read_merged(p)]
    out.sort(key=lambda s: s.ts_ns)
    return out
