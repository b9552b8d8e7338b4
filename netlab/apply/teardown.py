"""Carry out a design teardown (:mod:`netlab.plan.teardown`) in one lab netns, in its order.

Like istio-cni's ``cleanupNode``, a step whose object is already gone is skipped, not an
error: the teardown must finish on a half-built or half-cleaned node. What is present is read
once (``iptables-save``, links, rules, ipsets); iptables steps go to ``iptables-restore
--noflush`` as one input whose ``*table`` blocks keep the plan's order, and the rest through
netlink. ``on_step`` hears every step with whether it removed something, for the lab log.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

from pyroute2.netlink.exceptions import NetlinkError

from netlab.apply import iptables
from netlab.apply.ipset import open_ipset
from netlab.apply.netlink import NetnsLinks
from netlab.errors import ApplyError
from netlab.plan.teardown import Step
from netlab.protocols import iptables_save

log = logging.getLogger(__name__)
OnStep = Callable[[Step, bool], None]


def _present_iptables(saved: str) -> tuple[set[tuple[str, str]], set[tuple[str, str, str]]]:
    """({(table, user chain)}, {(table, hook, target)}) of an ``iptables-save`` dump."""
    tables = iptables_save.parse(saved).values()
    return ({(t.name, c) for t in tables for c in t.user_chains()},
            {(t.name, hook, target) for t in tables for hook, target in t.jumps()})


def restore_text(steps: list[Step]) -> str:
    """``*table`` blocks for consecutive steps of one table, each committed before the next.

    >>> print(restore_text([Step("chain-flush", table="nat", chain="a"),
    ...                     Step("chain-flush", table="mangle", chain="b"),
    ...                     Step("chain-delete", table="nat", chain="a")]), end="")
    *nat
    -F a
    COMMIT
    *mangle
    -F b
    COMMIT
    *nat
    -X a
    COMMIT
    """
    out: list[str] = []
    current = None
    for s in steps:
        if s.table != current:
            if current is not None:
                out.append("COMMIT")
            out.append(f"*{s.table}")
            current = s.table
        out.append(s.restore_line())
    if current is not None:
        out.append("COMMIT")
    return "".join(line + "\n" for line in out)


def run(ns: str, steps: tuple[Step, ...], *, variant: str | None = None,
        on_step: OnStep = lambda s, done: None,
        before_netlink: Callable[[Step], None] = lambda s: None) -> list[Step]:
    """Remove what ``steps`` name from ``ns`` in order; return the steps that removed something.

    ``before_netlink`` runs before each route/rule/link/ipset step (the iptables steps, which
    come first in ``cleanupNode``'s order, have all been committed by then).
    """
    chains, jumps = _present_iptables(iptables.save(ns, variant))
    ipt_steps = [s for s in steps if s.is_iptables and
                 ((s.table, s.hook, s.chain) in jumps if s.kind == "jump-delete" else (s.table, s.chain) in chains)]
    done: list[Step] = []
    if ipt_steps:
        iptables.restore(ns, restore_text(ipt_steps), noflush=True, v=variant)
    removed = set(ipt_steps)
    with NetnsLinks(ns) as nl:
        rules = {r.get("priority") for r in nl.ipr.rule("dump")}
        links = {link.get_attr("IFLA_IFNAME") for link in nl.ipr.get_links()}
        for s in steps:
            if s.is_iptables:
                ok = s in removed
            else:
                before_netlink(s)
                ok = _netlink_step(nl, s, rules, links)
            log.debug("%s: %s%s", ns, s.render(), "" if ok else " (absent)")
            if ok:
                done.append(s)
            on_step(s, ok)
    return done


GONE = (errno.ENODEV, errno.ENOENT)


def _netlink_step(nl: NetnsLinks, s: Step, rules: set[int], links: set[str]) -> bool:
    if s.kind == "route-flush":
        return bool(nl.ipr.flush_routes(table=s.number))
    if s.kind == "rule-delete":
        if s.number not in rules:
            return False
        nl.del_rule(s.number)
        return True
    if s.kind in ("link-down", "link-delete"):
        return s.name in links and _link_op(nl, s)
    return _destroy_ipset(nl.ns, s.name)  # ipset-destroy


def _link_op(nl: NetnsLinks, s: Step) -> bool:
    """Set down or delete; False only if the link vanished meanwhile, any other error raises."""
    try:
        if s.kind == "link-down":
            nl.ipr.link("set", index=nl.index(s.name), state="down")
        else:
            nl.ipr.link("del", index=nl.index(s.name))
    except NetlinkError as e:
        if e.code in GONE:
            return False
        raise ApplyError(f"{nl.ns}: {s.render()}: {e}", obj=f"link {s.name}", errno=e.code) from None
    return True


def _destroy_ipset(ns: str, name: str) -> bool:
    """False if the set is not there; in use (EBUSY) or any other refusal raises."""
    ips = open_ipset(ns)
    try:
        ips.destroy(name)
        return True
    except NetlinkError as e:
        if e.code == errno.ENOENT:
            return False
        raise ApplyError(f"{ns}: ipset destroy {name}: {e}", obj=f"ipset {name}", errno=e.code) from None
    finally:
        ips.close()
