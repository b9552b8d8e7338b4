"""The node-routing design's teardown (Istio 1.18-1.20 ``cleanupNode``), step by step, as data.

istio-cni's ``cleanupNode`` runs when the node's active ztunnel changes and when the agent
stops; it does not patch, it removes every node object in one fixed order (``cni/pkg/ambient/
net_linux.go``): flush every ztunnel chain, then per hook delete the jump and the chain, flush route
tables 100-102, delete ip rules 100-103, take down and delete ``istioin``/``istioout``, and
destroy the ipset. Nothing is removed inside the ztunnel pod's netns: it goes with the pod.

Each :class:`Step` is one object's removal and renders as the command a student would type,
so the order can be read (and golden-tested) without a kernel:

>>> [s.render() for s in node_teardown("1.20")][:2]
['iptables -t nat -F ztunnel-PREROUTING', 'iptables -t nat -F ztunnel-POSTROUTING']
>>> node_teardown("1.18")[-1].render()
'ipset destroy ztunnel-pods-ips'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from netlab.plan.noderouting import (
    INBOUND_TUN,
    IPSET,
    OUTBOUND_TUN,
    TABLE_INBOUND,
    TABLE_OUTBOUND,
    TABLE_PROXY,
)

StepKind = Literal["chain-flush", "jump-delete", "chain-delete", "route-flush", "rule-delete",
                   "link-down", "link-delete", "ipset-destroy"]


@dataclass(frozen=True)
class Step:
    """One removal. ``table``/``chain`` for iptables steps, ``hook`` for the jump's built-in chain."""

    kind: StepKind
    table: str = ""
    chain: str = ""
    hook: str = ""
    number: int = 0  # route table or rule priority
    name: str = ""  # link or ipset

    @property
    def is_iptables(self) -> bool:
        return self.kind in ("chain-flush", "jump-delete", "chain-delete")

    def restore_line(self) -> str:
        """The same step as an ``iptables-restore --noflush`` line (inside ``*<table>``)."""
        return {"chain-flush": f"-F {self.chain}",
                "jump-delete": f"-D {self.hook} -j {self.chain}",
                "chain-delete": f"-X {self.chain}"}[self.kind]

    def render(self) -> str:
        if self.is_iptables:
            return f"iptables -t {self.table} {self.restore_line()}"
        return {"route-flush": f"ip route flush table {self.number}",
                "rule-delete": f"ip rule del priority {self.number}",
                "link-down": f"ip link set {self.name} down",
                "link-delete": f"ip link del {self.name}",
                "ipset-destroy": f"ipset destroy {self.name}"}[self.kind]


# cleanupNode first flushes the chains in this order, then deletes jump + chain per hook in the
# second; filter FORWARD exists from 1.19 on.
FLUSH_ORDER = (("nat", "PREROUTING"), ("nat", "POSTROUTING"), ("mangle", "PREROUTING"), ("mangle", "POSTROUTING"),
               ("mangle", "OUTPUT"), ("mangle", "INPUT"), ("mangle", "FORWARD"), ("filter", "FORWARD"))
DELETE_ORDER = (("nat", "PREROUTING"), ("nat", "POSTROUTING"), ("mangle", "PREROUTING"), ("mangle", "POSTROUTING"),
                ("mangle", "FORWARD"), ("mangle", "INPUT"), ("mangle", "OUTPUT"), ("filter", "FORWARD"))


def _in(version: str, order: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [(t, h) for t, h in order if t != "filter" or version != "1.18"]


def node_teardown(version: str) -> tuple[Step, ...]:
    """Every removal of ``cleanupNode`` for ``version``, in the order istio-cni makes them."""
    steps = [Step("chain-flush", table=t, chain=f"ztunnel-{h}") for t, h in _in(version, FLUSH_ORDER)]
    for t, h in _in(version, DELETE_ORDER):
        steps += [Step("jump-delete", table=t, chain=f"ztunnel-{h}", hook=h),
                  Step("chain-delete", table=t, chain=f"ztunnel-{h}")]
    steps += [Step("route-flush", number=n) for n in (TABLE_INBOUND, TABLE_OUTBOUND, TABLE_PROXY)]
    steps += [Step("rule-delete", number=n) for n in (100, 101, 102, 103)]
    for link in (INBOUND_TUN, OUTBOUND_TUN):
        steps += [Step("link-down", name=link), Step("link-delete", name=link)]
    steps.append(Step("ipset-destroy", name=IPSET))
    return tuple(steps)


def render(steps: tuple[Step, ...]) -> str:
    return "".join(s.render() + "\n" for s in steps)
