"""ipsets of a lab netns through ``pyroute2.ipset`` (netlink socket created inside the netns)."""

from __future__ import annotations

import errno
import logging

from pyroute2.ipset import IPSet
from pyroute2.netlink.exceptions import NetlinkError

from netlab.errors import ApplyError
from netlab.linux import nsenter
from netlab.plan.objects import IpsetSet

log = logging.getLogger(__name__)
IPSET_ERR_EXIST = 4103  # ipset's own "element/set already exists"


def open_ipset(ns: str) -> IPSet:
    with nsenter.netns(ns):
        return IPSet()


def apply_ipset(ns: str, s: IpsetSet) -> None:
    ips = open_ipset(ns)
    try:
        log.debug("%s: %s", ns, s.render())
        try:
            ips.create(s.name, stype=s.type, comment=s.comment)
        except NetlinkError as e:
            if e.code not in (errno.EEXIST, IPSET_ERR_EXIST):
                raise ApplyError(f"{ns}: ipset create {s.name}: {e}", obj=f"ipset {s.name}", errno=e.code) from None
        for ent in s.entries:
            add_entry(ips, s.name, ent.ip, ent.comment, ns=ns)
    finally:
        ips.close()


def add_entry(ips: IPSet, name: str, ip: str, comment: str | None, *, ns: str = "") -> None:
    try:
        ips.add(name, ip, etype="ip", comment=comment) if comment else ips.add(name, ip, etype="ip")
    except NetlinkError as e:
        if e.code not in (errno.EEXIST, IPSET_ERR_EXIST):
            raise ApplyError(f"{ns}: ipset add {name} {ip}: {e}", obj=f"ipset {name}", errno=e.code) from None


def del_entry(ips: IPSet, name: str, ip: str) -> None:
    try:
        ips.delete(name, ip, etype="ip")
    except NetlinkError as e:
        if e.code not in (errno.ENOENT, 4105, 4109):  # IPSET_ERR_EXIST variants for "not in set"
            raise
