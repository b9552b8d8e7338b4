"""Kernel objects of every netns of a lab, counted from what ``netlab show`` prints.

The counts come from the same commands ``netlab show`` runs (``ip rule``, ``ip route show
table all``, ``ipset list``, ``iptables-save``, ``ip link``), parsed here, plus ``ss -ltnp`` for
listening sockets, whose owning pid is named through the lab supervisor (so "15001 in sleep's
netns belongs to ztunnel/ambient-worker" is read, not assumed). The parsers are pure functions
over that text, tested on captured output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from netlab.export.snapshot import parse_ipset  # one parser for the lab and a real cluster
from netlab.lab.lifecycle import record_of
from netlab.observe.report.schema import Listener, NetnsObjects
from netlab.observe.show import iptables_save_tool, run_in, show
from netlab.protocols import iptables_save
from netlab.runtime import supervisor

_LINK = re.compile(r"^\d+: ([^:@]+)(?:@[^:]+)?: ")
_SS = re.compile(r"^LISTEN\s+\d+\s+\d+\s+(\S+):(\d+)\s+\S+(?:\s+users:\(\(\"([^\"]*)\",pid=(\d+))?")


def parse_rules(text: str) -> list[str]:
    """``ip rule show`` lines (the default rules 0/32766/32767 included, as a node shows them)."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def parse_routes(text: str) -> dict[str, list[str]]:
    """Routes by table (``table X`` in the line, else main), from ``ip route show table all``.

    >>> parse_routes("default via 10.0.0.1 dev eth0\\n10.0.0.0/24 via 192.168.126.2 dev istioin table 100\\n")
    {'main': ['default via 10.0.0.1 dev eth0'], '100': ['10.0.0.0/24 via 192.168.126.2 dev istioin table 100']}
    """
    out: dict[str, list[str]] = {}
    for ln in text.splitlines():
        ln = ln.strip()
        if not ln:
            continue
        m = re.search(r"\btable (\S+)", ln)
        out.setdefault(m.group(1) if m else "main", []).append(ln)
    return out


def parse_iptables(text: str) -> dict[str, dict[str, list[str]]]:
    """Rules per table and chain, from ``iptables-save`` (chains without rules left out).

    >>> parse_iptables("*nat\\n:OUTPUT ACCEPT [0:0]\\n-A OUTPUT -j ISTIO_OUTPUT\\nCOMMIT\\n")
    {'nat': {'OUTPUT': ['-A OUTPUT -j ISTIO_OUTPUT']}}
    """
    out = {t.name: {c.name: list(c.rules) for c in t.chains.values() if c.rules}
           for t in iptables_save.parse(text).values()}
    return {t: c for t, c in out.items() if c}


def parse_links(text: str) -> list[str]:
    """Link names from ``ip -d link show`` (the ``@peer`` suffix dropped)."""
    return [m.group(1) for m in map(_LINK.match, text.splitlines()) if m]


def parse_listeners(text: str, owners: dict[int, str]) -> list[Listener]:
    """TCP listeners from ``ss -Hltnp``, each owner named by ``owners`` (pid -> lab process).

    >>> parse_listeners('LISTEN 0 128 0.0.0.0:15001 0.0.0.0:* users:(("python3",pid=7,fd=25))', {7: "ztunnel/n1"})
    [Listener(address='0.0.0.0', port=15001, owner='ztunnel/n1', pid=7)]
    """
    out = []
    for ln in text.splitlines():
        m = _SS.match(ln.strip())
        if not m:
            continue
        pid = int(m.group(4)) if m.group(4) else None
        owner = owners.get(pid, m.group(3) or "?") if pid is not None else "?"
        out.append(Listener(address=m.group(1).strip("[]"), port=int(m.group(2)), owner=owner, pid=pid))
    return sorted(out, key=lambda x: (x.port, x.address))


def from_show(member: str, netns: str, role: str, node: str | None, sections: dict[str, str],
              ss: str, owners: dict[int, str]) -> NetnsObjects:
    """One netns's objects from ``netlab show``'s sections (command -> output) and ``ss``."""
    def section(prefix: str) -> str:
        return "".join(text for cmd, text in sections.items() if cmd.startswith(prefix)
                       or (prefix == "iptables" and cmd.split()[0].endswith("-save")))

    rules = parse_rules(section("ip rule"))
    routes = parse_routes(section("ip route"))
    ipsets = parse_ipset(section("ipset"))
    ipt = parse_iptables(section("iptables"))
    links = parse_links(section("ip -d link"))
    listeners = parse_listeners(ss, owners)
    lines = {"rules": rules, "routes": [r for t in sorted(routes) for r in routes[t]],
             "ipset": [f"{s} {m}" for s in sorted(ipsets) for m in ipsets[s]],
             "iptables": [f"{t} {r}" for t in sorted(ipt) for c in sorted(ipt[t]) for r in ipt[t][c]],
             "links": links, "listeners": [f"{x.address}:{x.port} {x.owner}" for x in listeners]}
    return NetnsObjects(member=member, netns=netns, role=role, node=node, ip_rules=len(rules),
                        routes={t: len(v) for t, v in sorted(routes.items())},
                        ipset_members={s: len(v) for s, v in sorted(ipsets.items())},
                        iptables={t: {c: len(r) for c, r in sorted(ch.items())} for t, ch in sorted(ipt.items())},
                        links=links, listeners=listeners, lines=lines)


def member_node(member: str, role: str, pods: dict[str, dict], nodes: Iterable[str]) -> str | None:
    """The node a lab member lives on (None for the underlay)."""
    if role == "node":
        return member
    if role == "pod" and member in pods:
        return pods[member]["node"]
    if role == "ztunnel":
        return next((n for n in nodes if member == f"ztunnel-{n}"), None)
    return None


def collect(lab: str, members: list[str] | None = None) -> list[NetnsObjects]:
    """Read every netns of a running lab (or only ``members``), several at a time."""
    rec = record_of(lab)
    tool = iptables_save_tool(rec.iptables_backend)
    try:
        owners = {p["pid"]: p["name"] for p in supervisor.request(lab, {"op": "status"}, timeout=5)["processes"]
                  if p["pid"]}
    except OSError:
        owners = {}
    wanted = sorted(rec.members) if members is None else members

    def one(member: str) -> NetnsObjects:
        ns = rec.members[member]
        role = rec.roles.get(member, "underlay")
        sections = dict(show(ns, "all", iptables_save=tool))
        return from_show(member, ns, role, member_node(member, role, rec.pods, rec.nodes), sections,
                         run_in(ns, ["ss", "-Hltnp"]), owners)

    with ThreadPoolExecutor(max_workers=8) as pool:  # each worker mostly waits on a subprocess
        return list(pool.map(one, wanted))


def diff(before: list[NetnsObjects], after: list[NetnsObjects]) -> tuple[list[tuple[str, str, str]],
                                                                          list[tuple[str, str, str]]]:
    """(added, removed) object lines, as (member, kind, line), between two snapshots."""
    def flat(snap: list[NetnsObjects]) -> set[tuple[str, str, str]]:
        return {(o.member, kind, ln) for o in snap for kind, lines in o.lines.items() for ln in lines}

    b, a = flat(before), flat(after)
    return sorted(a - b), sorted(b - a)
