"""Every kernel object of a running lab as text, normalised to what does not vary run to run.

One dump per lab: for each member netns its links (``ip -d``), addresses, routes of every
table (IPv4 and IPv6), rules, ipsets, ``iptables-save`` and hosts file. What the kernel picks
afresh each time is masked: MAC addresses and the IPv6 link-local addresses made from them,
ifindexes, netns ids of veth peers, bridge timers, ipset hash seeds (and so member order), how far IPv6 duplicate address
detection has got on each link-local address, and the order of the IPv6 routes the kernel
adds by itself when each link gets its carrier (sorted). Two builds of the same plan must give the
same dump, whatever code made the objects and in whatever order it batched them.
"""

from __future__ import annotations

import os
import re

from netlab import names
from tests.kernel.helpers import ip, run

MAC = re.compile(r"\b([0-9a-f]{2}:){5}[0-9a-f]{2}\b")
LINK_LOCAL = re.compile(r"fe80::[0-9a-f:]+")
BRIDGE_ID = re.compile(r"\b[0-9a-f]{4}\.[0-9a-f]{1,2}(:[0-9a-f]{1,2}){5}\b")  # iproute2 drops leading 0s
MASKS = [
    (re.compile(r"^\d+: ", re.M), ""),  # ifindex
    (re.compile(r"@if\d+"), "@if"),  # peer ifindex
    (re.compile(r"@(\w+):"), r"@\1:"),
    (re.compile(r"link-netns(id)? \S+"), "link-netns"),
    (re.compile(r"\b\w+_timer\s+\S+"), ""),  # bridge timers tick
    (BRIDGE_ID, "BRIDGE-ID"),
    (MAC, "MAC"),
    (LINK_LOCAL, "fe80::LL"),
    (re.compile(r"\[\d+:\d+\]"), "[0:0]"),  # iptables counters
    (re.compile(r"initval 0x[0-9a-f]+"), "initval"),  # ipset's random hash seed
    (re.compile(r"Size in memory: \d+"), "Size in memory: N"),  # the set's allocator, not its content
    (re.compile(r" tentative"), ""),  # IPv6 duplicate address detection still running
    (re.compile(r"^local fe80::LL .*\n", re.M), ""),  # added when that detection ends
]


def normalise(text: str) -> str:
    for rx, repl in MASKS:
        text = rx.sub(repl, text)
    return "\n".join(ln.rstrip() for ln in text.splitlines() if not ln.startswith("# "))


def ipsets(text: str) -> str:
    """``ipset list`` with each set's members sorted (listed in hash order, seeded at random)."""
    out: list[str] = []
    members: list[str] = []
    for ln in text.splitlines() + ["Name: (end)"]:
        if ln.startswith("Name: "):
            out += sorted(members)
            members = []
            if ln != "Name: (end)":
                out.append(ln)
        elif out and out[-1] == "Members:" or members:
            if ln.strip():
                members.append(ln)
        else:
            out.append(ln)
    return "\n".join(out)


def dump(lab: str, members: list[str]) -> str:
    """The lab's kernel state, member by member, in a fixed order."""
    out = []
    for m in sorted(members):
        ns = names.netns(lab, m)
        parts = {
            "links": ip(ns, "-d", "link", "show"),
            "addrs": ip(ns, "addr", "show"),
            "routes4": ip(ns, "-4", "route", "show", "table", "all"),
            # the kernel adds these itself as each link gets its carrier: same set, any order
            "routes6": "\n".join(sorted(ip(ns, "-6", "route", "show", "table", "all").splitlines())),
            "rules4": ip(ns, "-4", "rule", "show"),
            "rules6": ip(ns, "-6", "rule", "show"),
            "ipset": ipsets(run("ipset", "list", ns=ns, check=False)),
            "iptables": run("iptables-save", ns=ns, check=False),
        }
        hosts = os.path.join(names.etc_netns_dir(ns), "hosts")
        parts["hosts"] = open(hosts).read() if os.path.exists(hosts) else "(none)\n"
        out.append(f"==== {m}")
        for k, v in parts.items():
            out.append(f"-- {k}\n{normalise(v.replace(lab, 'LAB'))}")
    return "\n".join(out) + "\n"
