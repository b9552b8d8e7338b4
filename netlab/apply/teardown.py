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
import re
from collections.abc import Callable

from pyroute2.netlink.exceptions import NetlinkError

from netlab.apply import iptables
from netlab.apply.ipset import open_ipset
from netlab.apply.netlink import NetnsLinks
from netlab.errors import ApplyError
from netlab.plan.teardown import Step

log = logging.getLogger(__name__)
OnStep = Callable[[Step, bool], None]


def _present_iptables(saved: str) -> tuple[set[tuple[str, str]], set[tuple[str, str, str]]]:
    """({(table, user chain)}, {(table, hook, target)}) of an ``iptables-save`` dump."""
    chains: set[tuple[str, str]] = set()
    jumps: set[tuple[str, str, str]] = set()
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and line.split()[1] == "-":  # user chains only
            chains.add((table, line[1:].split()[0]))
        else:
            m = re.fullmatch(r"-A (\S+) -j (\S+)", line.strip())
            if m:
                jumps.add((table, m.group(1), m.group(2)))
    return chains, jumps


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
        on_step: OnStep = lambda s, done: None) -> list[Step]:
    """Remove what ``steps`` name from ``ns`` in order; return the steps that removed something."""
    chains, jumps = _present_iptables(iptables.save(ns, variant))
    ipt_steps: list[Step] = []
    done: list[Step] = []
    for s in (s for s in steps if s.is_iptables):
        if s.kind == "chain-flush":
            present = (s.table, s.chain) in chains
        elif s.kind == "jump-delete":
            present = (s.table, s.hook, s.chain) in jumps
        else:
            present = (s.table, s.chain) in chains
        if present:
            ipt_steps.append(s)
    if ipt_steps:
        iptables.restore(ns, restore_text(ipt_steps), noflush=True, v=variant)
    removed = set(ipt_steps)
    with NetnsLinks(ns) as nl:
        rules = {r.get("priority") for r in nl.ipr.rule("dump")}
        links = {link.get_attr("IFLA_IFNAME") for link in nl.ipr.get_links()}
        for s in steps:
            if s.is_iptables:
                ok = s in removed
            elif s.kind == "route-flush":
                ok = bool(nl.ipr.flush_routes(table=s.number))
            elif s.kind == "rule-delete":
                ok = s.number in rules
                if ok:
                    nl.del_rule(s.number)
            elif s.kind in ("link-down", "link-delete"):
                ok = s.name in links and _link_op(nl, s)
            else:  # ipset-destroy
                ok = _destroy_ipset(ns, s.name)
            log.debug("%s: %s%s", ns, s.render(), "" if ok else " (absent)")
            if ok:
                done.append(s)
            on_step(s, ok)
    return done


GONE = (errno.ENODEV, errno.ENOENT)


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
