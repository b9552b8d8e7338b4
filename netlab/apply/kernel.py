"""Apply a whole plan to the kernel, stage by stage, in an order the kernel accepts.

Stages: netns -> links (bridges, veths with the peer placed straight into the other netns,
tunnels) -> up -> addresses -> routes -> rules -> sysctls -> ipsets -> iptables -> hosts.
Each stage walks every netns before the next starts, since a veth needs both ends' netns
and an iptables rule may name an ipset. ``progress`` is called once per stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from netlab.apply import hosts as hosts_mod
from netlab.apply import iptables, netns
from netlab.apply.ipset import apply_ipset
from netlab.apply.iptc_backend import restore as iptc_restore
from netlab.apply.netlink import NetnsLinks
from netlab.apply.sysctl import apply_sysctls
from netlab.apply.tuntap import create_tap
from netlab.plan.objects import Plan

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


def _noop(stage: str, done: int, total: int) -> None:
    pass


def apply_plan(plan: Plan, *, progress: Progress = _noop, iptables_backend: str = "restore") -> None:
    nss = plan.namespaces
    total = len(nss)
    for i, n in enumerate(nss):
        netns.create(n.name)
        progress("netns", i + 1, total)
    socks: dict[str, NetnsLinks] = {}
    try:
        for n in nss:
            socks[n.name] = NetnsLinks(n.name)
        # bridges first (veth ports get enslaved to them), then veths and tunnels
        for i, n in enumerate(nss):
            s = socks[n.name]
            for link in sorted(n.links, key=lambda x: x.kind != "bridge"):
                if link.kind == "tap":
                    create_tap(n.name, link.name)
                    if link.mtu:
                        s.set_mtu(link.name, link.mtu)
                else:
                    s.add_link(link)
            for link in n.links:
                s.set_master(link)
            progress("links", i + 1, total)
        for i, n in enumerate(nss):
            s = socks[n.name]
            devs = ["lo"] + [ln.name for ln in n.links]
            devs += [ln.peer for m in nss for ln in m.links if ln.kind == "veth" and ln.peer_ns == n.name and ln.peer]
            s.up(dict.fromkeys(d for d in devs if d))
            for a in n.addrs:
                s.add_addr(a)
            progress("addresses", i + 1, total)
        for i, n in enumerate(nss):
            s = socks[n.name]
            for r in n.routes:
                s.add_route(r)
            for rule in n.rules:
                s.add_rule(rule)
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
