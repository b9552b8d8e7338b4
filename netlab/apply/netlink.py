"""Links, addresses, routes and rules of one netns through one pyroute2 socket.

``ensure`` semantics (pyroute2 style): add, and on EEXIST keep what is there. Routes use
``replace`` (the kernel's own idempotent add). Each call is logged at DEBUG with the plan
line it implements, so ``-v`` shows exactly which command failed.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netlab.errors import ApplyError
from netlab.linux import nsenter
from netlab.plan.objects import Addr, Link, Route, Rule, normalise_dst

log = logging.getLogger(__name__)

IFA_F_NOPREFIXROUTE = 0x200
RTNH_F_ONLINK = 4
RTPROT_BOOT = 3  # what `ip route add` uses: iproute2 prints no "proto" for it, as on a real node
SCOPES = {"universe": 0, "link": 253, "host": 254}


class NetnsLinks:
    """A netlink socket bound to one lab netns (never the root one)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        try:
            # Made by this thread inside the netns (setns there and back): a netlink socket
            # belongs to the netns it was created in. pyroute2's own ``netns=`` forks a helper
            # process per socket for the same result, ~10 ms each, and enroll opens one per pod.
            #
            # pyroute2 keeps its socket per thread and makes a new one, lazily, for any other
            # thread, in that thread's netns: used from another thread this object would talk
            # to the root netns. So it belongs to the thread that made it, and says so.
            with nsenter.netns(ns):
                self._ipr = IPRoute()
                self._ipr.get_links(1)  # the socket exists now, made in the lab netns
        except OSError as e:
            raise ApplyError(f"cannot open netns {ns}: {e.strerror}", obj=f"netns {ns}", errno=e.errno) from None
        self._owner = threading.get_ident()
        self._idx: dict[str, int] = {}

    @property
    def ipr(self) -> IPRoute:
        if threading.get_ident() != self._owner:
            raise ApplyError(f"{self.ns}: netlink socket used from another thread (it would act on that "
                             "thread's netns)", obj=f"netns {self.ns}")
        return self._ipr

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> NetnsLinks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def index(self, name: str) -> int:
        if name not in self._idx:
            found = self.ipr.link_lookup(ifname=name)
            if not found:
                raise ApplyError(f"{self.ns}: no link {name}", obj=f"link {name}", errno=errno.ENODEV)
            self._idx[name] = found[0]
        return self._idx[name]

    def _fail(self, obj: str, e: NetlinkError) -> ApplyError:
        return ApplyError(f"{self.ns}: {obj}: {e.args[1] if len(e.args) > 1 else e}", obj=obj, errno=e.code)

    def add_link(self, link: Link) -> None:
        log.debug("%s: %s", self.ns, link.render())
        kw: dict = {"ifname": link.name, "kind": link.kind}
        if link.kind == "veth":
            kw["peer"] = {"ifname": link.peer, "net_ns_fd": link.peer_ns}
        elif link.kind == "geneve":
            kw.update(geneve_id=link.vni, geneve_remote=link.remote, geneve_port=link.port)
        elif link.kind == "vxlan":
            kw.update(vxlan_id=link.vni, vxlan_group=link.remote, vxlan_port=link.port)
        if link.mtu and link.kind != "veth":
            kw["mtu"] = link.mtu
        try:
            self.ipr.link("add", **kw)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                hint = None
                if e.code == errno.EOPNOTSUPP and link.kind in ("geneve", "vxlan"):
                    hint = f"this kernel has no {link.kind} links: use --encap geneve-user"
                err = self._fail(link.render(), e)
                err.hint = hint
                raise err from None

    def set_master(self, link: Link) -> None:
        if link.master:
            self.ipr.link("set", index=self.index(link.name), master=self.index(link.master))

    def set_mtu(self, name: str, mtu: int) -> None:
        self.ipr.link("set", index=self.index(name), mtu=mtu)

    def up(self, names: Iterable[str]) -> None:
        for n in names:
            self.ipr.link("set", index=self.index(n), state="up")

    def add_addr(self, a: Addr) -> None:
        log.debug("%s: %s", self.ns, a.render())
        kw: dict = {"index": self.index(a.dev), "address": a.address, "prefixlen": a.prefixlen}
        if a.noprefixroute:
            kw["flags"] = IFA_F_NOPREFIXROUTE
        try:
            self.ipr.addr("add", **kw)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise self._fail(a.render(), e) from None

    def route_kwargs(self, r: Route) -> dict:
        dst, plen = normalise_dst(r.dst)
        kw: dict = {"dst": f"{dst}/{plen}", "table": r.table, "proto": RTPROT_BOOT}
        if r.dev:
            kw["oif"] = self.index(r.dev)
        if r.via:
            kw["gateway"] = r.via
        if r.scope:
            kw["scope"] = SCOPES[r.scope]
        if r.src:
            kw["prefsrc"] = r.src
        if r.type == "local":
            kw["type"] = "local"
            kw["scope"] = SCOPES["host"]
        if r.onlink:
            kw["flags"] = RTNH_F_ONLINK
        return kw

    def add_route(self, r: Route) -> None:
        log.debug("%s: %s", self.ns, r.render())
        try:
            self.ipr.route("replace", **self.route_kwargs(r))
        except NetlinkError as e:
            raise self._fail(r.render(), e) from None

    def del_route(self, r: Route) -> None:
        log.debug("%s: del %s", self.ns, r.render())
        try:
            self.ipr.route("del", **self.route_kwargs(r))
        except NetlinkError as e:
            if e.code not in (errno.ESRCH, errno.ENOENT):
                raise self._fail("del " + r.render(), e) from None

    def add_rule(self, r: Rule) -> None:
        log.debug("%s: %s", self.ns, r.render())
        if any(x.get("priority") == r.priority for x in self.ipr.rule("dump")):
            return
        kw: dict = {"priority": r.priority}
        if r.fwmark is not None:
            kw.update(fwmark=r.fwmark, fwmask=r.mask)
        if r.goto is not None:
            kw.update(action="goto", goto=r.goto)
        else:
            kw["table"] = r.table
        try:
            self.ipr.rule("add", **kw)
        except NetlinkError as e:
            raise self._fail(r.render(), e) from None

    def del_rule(self, priority: int) -> None:
        try:
            self.ipr.rule("del", priority=priority)
        except NetlinkError as e:
            if e.code not in (errno.ENOENT, errno.ESRCH):
                raise self._fail(f"rule del pref {priority}", e) from None

    def del_link(self, name: str) -> None:
        try:
            self.ipr.link("del", index=self.index(name))
        except (ApplyError, NetlinkError):
            pass
        self._idx.pop(name, None)
