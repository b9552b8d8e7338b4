"""kube-proxy's iptables mode, reduced to what a lab needs: service VIP -> endpoint DNAT.

Chain names are built like kube-proxy builds them (``KUBE-SVC-`` / ``KUBE-SEP-`` + the first
16 characters of base32(sha256(...))) so a node's ``iptables-save`` reads like a real one.
"""

from __future__ import annotations

import base64
import hashlib

from netlab.topology.model import Pod, Topology


def _chain(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def statistic_probability(p: float) -> str:
    """As iptables-save prints it: xt_statistic keeps ``round(p * 2**31)``; ``(1/3) -> '0.33333333349'``."""
    return f"{round(p * 0x80000000) / 0x80000000:.11f}"


def nat_rules(topo: Topology) -> tuple[list[str], list[str]]:
    """Chains and rules of the nat table (without the builtin chains' jumps)."""
    chains = ["KUBE-SERVICES"]
    rules: list[str] = []
    sep_rules: list[str] = []
    for svc in topo.services:
        eps: list[Pod] = topo.endpoints(svc)
        for sp in svc.ports:
            pname = sp.name or str(sp.port)
            svc_id = f"{svc.namespace}/{svc.name}:{pname}"
            svc_chain = _chain("KUBE-SVC-", svc_id, "tcp")
            comment = f'"{svc_id} cluster IP"'
            if not eps:
                continue
            chains.append(svc_chain)
            rules.append(f"-A KUBE-SERVICES -d {svc.vip}/32 -p tcp -m comment --comment {comment} "
                         f"-m tcp --dport {sp.port} -j {svc_chain}")
            n = len(eps)
            for i, ep in enumerate(eps):
                sep = _chain("KUBE-SEP-", svc_id, "tcp", f"{ep.ip}:{sp.target}")
                chains.append(sep)
                left = n - i
                if left > 1:
                    prob = statistic_probability(1 / left)
                    rules.append(f'-A {svc_chain} -m comment --comment "{svc_id} -> {ep.ip}:{sp.target}" '
                                 f"-m statistic --mode random --probability {prob} -j {sep}")
                else:
                    rules.append(f'-A {svc_chain} -m comment --comment "{svc_id} -> {ep.ip}:{sp.target}" -j {sep}')
                sep_rules.append(f'-A {sep} -p tcp -m comment --comment "{svc_id}" -m tcp '
                                 f"-j DNAT --to-destination {ep.ip}:{sp.target}")
    return chains, rules + sep_rules


JUMPS = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
]
