"""Apply a whole plan to the kernel, stage by stage, in an order the kernel accepts.

Stages: netns -> links (bridges, veths with the peer placed straight into the other netns,
tunnels) -> up -> addresses -> routes -> rules -> sysctls -> ipsets -> iptables -> hosts.
Each stage walks every netns before the next starts, since a veth needs both ends' netns
and an iptables rule may name an ipset. ``progress`` is called once per netns and stage.
The bulk (veths, link flags, addresses, routes, rules) goes through :mod:`netlab.apply.nlbatch`,
one batch per netns and stage; the rest through pyroute2, in the same order as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from netlab.apply import hosts as hosts_mod
from netlab.apply import iptables, netns
from netlab.apply.ipset import apply_ipset
from netlab.apply.iptc_backend import restore as iptc_restore
from netlab.apply.netlink import NetnsLinks
from netlab.apply.nlbatch import RtnlBatch
from netlab.apply.sysctl import apply_sysctls
from netlab.apply.tuntap import create_tap
from netlab.plan.objects import Plan

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


def _noop(stage: str, done: int, total: int) -> None:
    pass


class _Netns:
    """One netns's two channels: the batch (veths, link flags, addresses, routes, rules) and, only
    if the netns has rarer objects, a pyroute2 socket. Every batched request is sent before
    any pyroute2 call, so the kernel sees the plan's order exactly."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.batch = RtnlBatch(ns)
        self._links: NetnsLinks | None = None

    @property
    def links(self) -> NetnsLinks:
        self.batch.commit()
        if self._links is None:
            self._links = NetnsLinks(self.ns)
        return self._links

    def close(self) -> None:
        self.batch.close()
        if self._links is not None:
            self._links.close()


def apply_plan(plan: Plan, *, progress: Progress = _noop, iptables_backend: str = "restore") -> None:
    nss = plan.namespaces
    total = len(nss)
    netns.create_many([n.name for n in nss], lambda i: progress("netns", i, total))
    socks: dict[str, _Netns] = {}
    peers: dict[str, list[str]] = {}  # netns -> the veth ends other netns put there
    for m in nss:
        for ln in m.links:
            if ln.kind == "veth" and ln.peer_ns and ln.peer:
                peers.setdefault(ln.peer_ns, []).append(ln.peer)
    try:
        for n in nss:
            socks[n.name] = _Netns(n.name)
        # bridges first (veth ports get enslaved to them), then veths and tunnels
        for i, n in enumerate(nss):
            s = socks[n.name]
            for link in sorted(n.links, key=lambda x: x.kind != "bridge"):
                if link.kind == "veth":
                    s.batch.add_veth(link)
                elif link.kind == "tap":
                    s.batch.commit()
                    create_tap(n.name, link.name)
                    if link.mtu:
                        s.links.set_mtu(link.name, link.mtu)
                else:
                    s.links.add_link(link)
            s.batch.commit()
            for link in n.links:
                if link.master:
                    s.links.set_master(link)
            progress("links", i + 1, total)
        for i, n in enumerate(nss):
            b = socks[n.name].batch
            b.refresh_index()
            devs = ["lo"] + [ln.name for ln in n.links] + peers.get(n.name, [])
            for d in dict.fromkeys(d for d in devs if d):
                b.up(d)
            for a in n.addrs:
                b.add_addr(a)
            b.commit()
            progress("addresses", i + 1, total)
        for i, n in enumerate(nss):
            s = socks[n.name]
            for r in n.routes:
                s.batch.add_route(r)
            for rule in n.rules:
                s.batch.add_rule(rule)
            s.batch.commit()
            progress("routes", i + 1, total)
    finally:
        for s in socks.values():
            s.close()
    for i, n in enumerate(nss):
        apply_sysctls(n.name, n.sysctls)
        for st in n.ipsets:
            apply_ipset(n.name, st)
        if n.iptables:
            if iptables_backend == "python-iptables":
                iptc_restore(n.name, n.iptables)
            else:
                iptables.restore(n.name, n.iptables.render())
        if n.hosts is not None:
            hosts_mod.write_hosts(n.name, n.hosts)
        progress("rules", i + 1, total)
