"""Persistent TAP devices inside a lab netns (the userspace Geneve forwarder's endpoints).

Where the kernel has no ``geneve`` link type, the lab creates TAP devices with the names Istio
gives its geneve links (``istioin``/``istioout`` in the node, ``pistioin``/``pistioout`` in the
ztunnel pod) and ``netlab.runtime.geneve`` attaches to them. A TAP is made by opening
``/dev/net/tun`` with the thread in the target netns (``nsenter.netns``), asking
for ``IFF_TAP | IFF_NO_PI`` with ``TUNSETIFF`` and pinning it with ``TUNSETPERSIST 1``: the device
outlives the fd and belongs to the lab (it dies with the netns, or with :func:`delete_tap`).

The device is created single-queue: a later ``TUNSETIFF`` on it must ask for the same
``IFF_MULTI_QUEUE`` setting, and the forwarder attaches single-queue (see ``docs/geneve.md``).
``IFF_VNET_HDR`` is a per-attachment choice of the reader and is not set here.

Example (root)::

    create_tap("nl-demo.node", "istioin")   # then address / MTU / up via pyroute2
    delete_tap("nl-demo.node", "istioin")
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netlab.errors import ApplyError
from netlab.linux import nsenter

log = logging.getLogger(__name__)

TUN_DEVICE = "/dev/net/tun"

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08

IFNAMSIZ = 16
_IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")  # struct ifreq: name + ifr_flags, padded to 40 bytes


def ifreq(ifname: str, flags: int = 0) -> bytes:
    """Pack a ``struct ifreq`` with a name and ``ifr_flags``.

    >>> len(ifreq("istioin", IFF_TAP | IFF_NO_PI))
    40
    """
    name = ifname.encode()
    if not name or len(name) >= IFNAMSIZ or b"/" in name or b" " in name:
        raise ApplyError(f"invalid interface name {ifname!r}", obj=f"tap {ifname}", errno=errno.EINVAL)
    return _IFREQ.pack(name, flags)


def open_tap(ifname: str, flags: int) -> int:
    """Open ``/dev/net/tun`` and attach it to ``ifname`` in the *calling thread's* netns.

    Creates the device if it does not exist. Returns the fd (O_CLOEXEC; caller closes).
    Call it inside ``with nsenter.netns(name):`` to reach a lab netns.
    """
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, ifreq(ifname, flags))
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_tap(netns_name: str, ifname: str, *, multi_queue: bool = False) -> int:
    """Create (or keep) the persistent TAP ``ifname`` in netns ``netns_name``; return its ifindex.

    Idempotent: an existing TAP of that name is kept, even while a forwarder is attached
    (``EBUSY``). A non-TAP link of that name is an :class:`ApplyError`. The device is left down,
    without address; the caller sets address, MTU and state.
    """
    if not os.path.exists(nsenter.netns_path(netns_name)):
        raise ApplyError(f"netns {netns_name} does not exist", obj=f"tap {ifname}", errno=errno.ENOENT)
    flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
    with nsenter.netns(netns_name):
        try:
            fd = open_tap(ifname, flags)
        except OSError as exc:
            if exc.errno == errno.EBUSY and _link_kind(netns_name, ifname) == "tun":
                log.debug("tap %s in %s exists and is attached; kept", ifname, netns_name)
                return socket.if_nametoindex(ifname)
            raise ApplyError(
                f"cannot create TAP {ifname} in {netns_name}: {os.strerror(exc.errno or 0)}",
                obj=f"tap {ifname}",
                errno=exc.errno,
                hint="a link of that name exists and is not a single-queue TAP"
                if exc.errno in (errno.EINVAL, errno.EBUSY, errno.EEXIST)
                else "needs root and /dev/net/tun (modprobe tun)",
            ) from None
        try:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        finally:
            os.close(fd)
        index = socket.if_nametoindex(ifname)
    log.debug("ip tuntap add dev %s mode tap (netns %s, ifindex %d)", ifname, netns_name, index)
    return index


def _link_kind(netns_name: str, ifname: str) -> str | None:
    """``IFLA_INFO_KIND`` of ``ifname`` in ``netns_name`` ("tun" for tun/tap), None if absent."""
    with IPRoute(netns=netns_name, flags=0) as ipr:
        links = ipr.get_links(ifname=ifname)
        if not links:
            return None
        return links[0].get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) or ""


def delete_tap(netns_name: str, ifname: str) -> bool:
    """Delete the TAP ``ifname`` in ``netns_name``; False if it (or the netns) was already gone.

    Works whether or not a forwarder is attached (``RTM_DELLINK`` through pyroute2, socket
    opened in the netns). Only ``ENODEV``/``ENOENT`` count as "already gone".
    """
    if not os.path.exists(nsenter.netns_path(netns_name)):
        return False
    kind = _link_kind(netns_name, ifname)
    if kind is None:
        return False
    if kind != "tun":
        raise ApplyError(f"{ifname} in {netns_name} is a {kind or 'plain'} link, not a TAP; not deleted",
                         obj=f"tap {ifname}")
    with IPRoute(netns=netns_name, flags=0) as ipr:
        try:
            ipr.link("del", ifname=ifname)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise ApplyError(f"cannot delete TAP {ifname} in {netns_name}: {exc}", obj=f"tap {ifname}",
                             errno=exc.code) from None
    log.debug("ip link del %s (netns %s)", ifname, netns_name)
    return True
