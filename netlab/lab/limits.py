"""Open-file limits: raise the soft limit to the hard one, and refuse a lab that cannot fit.

``up`` holds a netlink socket per lab netns while it applies the plan (pyroute2's IPRoute
costs 4 fds each: the socket plus its event loop's), and an in-pod ztunnel keeps, per pod of
its node, the pod's netns fd and its listeners. Before any object is made, ``up`` raises
``RLIMIT_NOFILE`` to its hard limit (the supervisor and every lab process inherit it) and
refuses a lab whose estimate exceeds it, naming the number of pods that would fit, instead
of failing with "Too many open files" halfway through.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

FDS_BASE = 64  # the interpreter, logs, pipes, sockets to the supervisor
FDS_PER_NETNS_APPLY = 4  # one IPRoute per netns during apply (measured: 4.0)
FDS_PER_POD_ZTUNNEL = 8  # in-pod: netns fd, 15001/15006/15008/15053 listeners, headroom for conns


@dataclass(frozen=True)
class FdBudget:
    soft: int
    hard: int
    need: int

    @property
    def ok(self) -> bool:
        return self.need <= self.hard


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (allowed without privileges); (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard


def need(netns: int, max_pods_per_node: int, inpod: bool) -> int:
    """Estimated peak fds of the busiest lab process (``up`` itself or an in-pod ztunnel)."""
    apply = FDS_BASE + FDS_PER_NETNS_APPLY * netns
    zt = FDS_BASE + FDS_PER_POD_ZTUNNEL * max_pods_per_node if inpod else 0
    return max(apply, zt)


def max_netns(limit: int) -> int:
    return max(0, (limit - FDS_BASE) // FDS_PER_NETNS_APPLY)


def budget(netns: int, max_pods_per_node: int, inpod: bool) -> FdBudget:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = soft if hard == resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY else hard
    return FdBudget(soft, hard if hard != resource.RLIM_INFINITY else 1 << 30, need(netns, max_pods_per_node, inpod))
