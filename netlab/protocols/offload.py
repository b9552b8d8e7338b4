"""Offload arithmetic for TAP devices opened with ``IFF_VNET_HDR`` (pure).

Geneve carries no ``virtio_net_hdr``, so a receiver that writes a decapsulated TCP
super-frame into a TAP must rebuild that header from the inner packet's own headers
(:func:`vnet_header_for`), and a sender whose super-frame does not fit one UDP datagram cuts
it into MSS-sized segments itself (:func:`split_gso`). Both are byte arithmetic on one frame:
no socket, no device, so they are tested directly against packets built with scapy.
"""

from __future__ import annotations

import struct

# struct virtio_net_hdr (native endian, 10 bytes), <linux/virtio_net.h>
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
VNET_F_NEEDS_CSUM = 1
VNET_GSO_NONE = 0
VNET_GSO_TCPV4 = 1
VNET_GSO_TCPV6 = 4
VNET_GSO_ECN = 0x80
NO_VNET = bytes(VNET_HDR_LEN)
ETH_LEN = 14



def vnet_header_for(frame: bytes | bytearray | memoryview, start: int, end: int, mtu: int) -> bytes:
    """The ``virtio_net_hdr`` to write in front of the Ethernet frame ``frame[start:end]``.

    Geneve carries no offload metadata, so it is rebuilt from the inner headers: GSO for a TCP
    packet longer than ``mtu`` (the receiving TAP's MTU), ``NEEDS_CSUM`` when the TCP/UDP
    checksum field holds the bare pseudo-header sum (a partial checksum, as the kernel leaves it
    for offload). Anything else (ARP, ICMP, IP fragments, full checksums) gets no flags.

    >>> vnet_header_for(bytes(60), 0, 60, 1450) == NO_VNET
    True
    """
    if end - start < ETH_LEN + 20:
        return NO_VNET
    ethertype = frame[start + 12] << 8 | frame[start + 13]
    ip = start + ETH_LEN
    if ethertype == 0x0800:
        ihl = (frame[ip] & 0x0F) << 2
        if ihl < 20 or frame[ip + 6] & 0x3F or frame[ip + 7]:  # options ok; fragments: no offload
            return NO_VNET
        proto = frame[ip + 9]
        ip_len = frame[ip + 2] << 8 | frame[ip + 3]
        l4_len = ip_len - ihl
        pseudo = int.from_bytes(frame[ip + 12:ip + 20], "big") + proto + l4_len
        gso_type = VNET_GSO_TCPV4
    elif ethertype == 0x86DD:
        if end - ip < 48:
            return NO_VNET
        ihl = 40
        proto = frame[ip + 6]
        l4_len = frame[ip + 4] << 8 | frame[ip + 5]
        ip_len = l4_len + 40
        pseudo = int.from_bytes(frame[ip + 8:ip + 40], "big") + proto + l4_len
        gso_type = VNET_GSO_TCPV6
    else:
        return NO_VNET
    l4 = ip + ihl
    if proto == 6:
        csum_offset = 16
        if end - l4 < 20:
            return NO_VNET
        thl = (frame[l4 + 12] >> 4) << 2
        if ip_len > mtu:
            if frame[l4 + 13] & 0x80:  # CWR: let segmentation clear it after the first segment
                gso_type |= VNET_GSO_ECN
            gso_size = mtu - ihl - thl
            if gso_size <= 0:
                return NO_VNET
            return VNET_HDR.pack(VNET_F_NEEDS_CSUM, gso_type, ETH_LEN + ihl + thl, gso_size,
                                 ETH_LEN + ihl, csum_offset)
    elif proto == 17:
        csum_offset = 6
        if end - l4 < 8:
            return NO_VNET
    else:
        return NO_VNET
    check = frame[l4 + csum_offset] << 8 | frame[l4 + csum_offset + 1]
    if check and check % 0xFFFF == pseudo % 0xFFFF:
        return VNET_HDR.pack(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 0, ETH_LEN + ihl, csum_offset)
    return NO_VNET


def _fold(total: int) -> int:
    """Ones'-complement 16-bit sum of the big-endian words of ``total`` (never 0 for non-zero)."""
    folded = total % 0xFFFF
    return folded or (0xFFFF if total else 0)


def split_gso(frame: bytes | bytearray | memoryview, gso_size: int, limit: int) -> list[bytes]:
    """Cut a TCP super-frame into super-frames of whole ``gso_size`` segments, each ``<= limit``.

    The slow path for a frame too big for one Geneve datagram (65507 bytes of UDP payload):
    rare, since TCP keeps its super-frames under the TAP's ``gso_max_size``, but a forwarded GRO
    packet can reach 64 KiB. Each piece gets its own IP length, id and header checksum, TCP
    sequence number and flags (CWR on the first piece only, FIN/PSH on the last), and a partial
    TCP checksum (the pseudo-header sum, as the kernel leaves it for offload) so the peer's
    :func:`vnet_header_for` marks it for completion. Returns ``[]`` for what it cannot cut.
    """
    frame = bytes(frame)
    ethertype = frame[12] << 8 | frame[13]
    ip = ETH_LEN
    if ethertype == 0x0800:
        ihl = (frame[ip] & 0x0F) << 2
        if frame[ip + 9] != 6:
            return []
        addrs = int.from_bytes(frame[ip + 12:ip + 20], "big")
    elif ethertype == 0x86DD and frame[ip + 6] == 6:
        ihl = 40
        addrs = int.from_bytes(frame[ip + 8:ip + 40], "big")
    else:
        return []
    l4 = ip + ihl
    thl = (frame[l4 + 12] >> 4) << 2
    head = l4 + thl
    payload = frame[head:]
    if gso_size <= 0:
        return []
    per_piece = max(1, (limit - head) // gso_size) * gso_size
    seq = int.from_bytes(frame[l4 + 4:l4 + 8], "big")
    flags = frame[l4 + 13]
    ip_id = frame[ip + 4] << 8 | frame[ip + 5]
    pieces = []
    for i, off in enumerate(range(0, len(payload), per_piece)):
        chunk = payload[off:off + per_piece]
        last = off + per_piece >= len(payload)
        hdr = bytearray(frame[:head])
        tcp_len = thl + len(chunk)
        if ethertype == 0x0800:
            hdr[ip + 2:ip + 4] = (ihl + tcp_len).to_bytes(2, "big")
            if i:  # ids of a TSO burst count up per segment; keep them distinct per piece
                hdr[ip + 4:ip + 6] = ((ip_id + off // gso_size) & 0xFFFF).to_bytes(2, "big")
            hdr[ip + 10:ip + 12] = b"\0\0"
            hdr[ip + 10:ip + 12] = (~_fold(int.from_bytes(hdr[ip:l4], "big")) & 0xFFFF).to_bytes(2, "big")
        else:
            hdr[ip + 4:ip + 6] = tcp_len.to_bytes(2, "big")
        hdr[l4 + 4:l4 + 8] = ((seq + off) & 0xFFFFFFFF).to_bytes(4, "big")
        f = flags
        if i:
            f &= ~0x80  # CWR
        if not last:
            f &= ~0x09  # FIN, PSH
        hdr[l4 + 13] = f
        hdr[l4 + 16:l4 + 18] = _fold(addrs + 6 + tcp_len).to_bytes(2, "big")
        pieces.append(bytes(hdr) + chunk)
    return pieces
