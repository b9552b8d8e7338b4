r"""The one parser of ``iptables-save`` text (and of the ``iptables-restore`` text netlab renders).

Everything that reads rules back goes through :func:`parse`: comparing a live dump with the
plan, the CNI agent's idempotence check (are exactly my in-pod rules there?), and teardown
(which design chains and jumps does this node hold?). The format, per table::

    *nat                                  table header
    :PREROUTING ACCEPT [0:0]              built-in chain: policy and counters
    :ISTIO_OUTPUT - [0:0]                 user chain: "-" for a policy
    -A OUTPUT -j ISTIO_OUTPUT             rules in order (a chain's rules are contiguous)
    COMMIT

Comments (``#``) and counters are dropped; a rule's text is kept byte for byte.

>>> t = parse("*nat\n:OUTPUT ACCEPT [0:0]\n:X - [0:0]\n-A OUTPUT -j X\n-A X -p udp -j RETURN\nCOMMIT\n")["nat"]
>>> [(c.name, c.builtin, c.rules) for c in t.chains.values()]
[('OUTPUT', True, ('-A OUTPUT -j X',)), ('X', False, ('-A X -p udp -j RETURN',))]
>>> t.jumps()
[('OUTPUT', 'X')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Chain:
    name: str
    builtin: bool  # declared with a policy (ACCEPT/DROP); user chains have "-"
    rules: tuple[str, ...] = ()  # the "-A <name> ..." lines, in order


@dataclass(frozen=True)
class Table:
    name: str
    chains: dict[str, Chain] = field(default_factory=dict)  # in order of declaration

    def user_chains(self) -> list[str]:
        return [c.name for c in self.chains.values() if not c.builtin]

    def jumps(self) -> list[tuple[str, str]]:
        """``(chain, target)`` of every rule that is only a jump (``-A C -j T``)."""
        return [(c.name, m.group(1)) for c in self.chains.values() for r in c.rules
                if (m := _JUMP.fullmatch(r.strip())) and r.split()[1] == c.name]


_JUMP = re.compile(r"-A \S+ -j (\S+)")


def parse(text: str) -> dict[str, Table]:
    """``{table: Table}`` in the order the tables appear. A rule for an undeclared chain
    (restore text may omit the declaration) declares it as a user chain."""
    tables: dict[str, dict[str, tuple[bool, list[str]]]] = {}
    cur: dict[str, tuple[bool, list[str]]] = {}
    for ln in text.splitlines():
        if ln.startswith("*"):
            cur = tables.setdefault(ln[1:].strip(), {})
        elif ln.startswith(":"):
            name, policy = (ln[1:].split() + ["-"])[:2]
            cur.setdefault(name, (policy != "-", []))
        elif ln.startswith("-A "):
            cur.setdefault(ln.split()[1], (False, []))[1].append(ln)
    return {t: Table(t, {c: Chain(c, b, tuple(rules)) for c, (b, rules) in chains.items()})
            for t, chains in tables.items()}


def by_chain(text: str) -> dict[str, dict[str, list[str]]]:
    r"""``{table: {chain: [rules in order]}}``: the form two dumps can be compared in.

    nft and legacy list chains in different orders, a plan lists rules in insertion order across
    chains, and legacy dumps every loaded table even when empty. User chains appear even when
    empty; built-in chains only when they hold rules; tables with nothing, not at all.

    >>> by_chain("*nat\n:PREROUTING ACCEPT [0:0]\n:X - [0:0]\n-A X -j RETURN\nCOMMIT\n*raw\nCOMMIT\n")
    {'nat': {'X': ['-A X -j RETURN']}}
    """
    out = {t.name: {c.name: list(c.rules) for c in t.chains.values() if c.rules or not c.builtin}
           for t in parse(text).values()}
    return {t: chains for t, chains in out.items() if chains}


def rules_of(text: str) -> list[str]:
    """The table headers, rules and COMMITs of a dump in their order, without chain
    declarations, comments and counters (two dumps of the same rules compare equal)."""
    return [ln for ln in text.splitlines() if ln.startswith(("*", "-A ")) or ln == "COMMIT"]
