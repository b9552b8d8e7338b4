"""Plan layer: pure functions from a topology and a design to the desired kernel state.

The plan says, per network namespace, which links, addresses, routes, ip rules, sysctls,
ipsets and iptables rules must exist, and which processes run. It never touches the kernel,
never reads the clock, the environment or randomness: the same input renders the same text
(golden files, ``netlab up --dry-run``). The apply layer is the only consumer that acts.
"""

from netlab.plan.build import build_plan
from netlab.plan.objects import (
    Addr,
    IpsetSet,
    Iptables,
    Link,
    NetnsPlan,
    Plan,
    Process,
    Route,
    Rule,
    Sysctl,
)

__all__ = ["Addr", "IpsetSet", "Iptables", "Link", "NetnsPlan", "Plan", "Process", "Route", "Rule",
           "Sysctl", "build_plan"]
