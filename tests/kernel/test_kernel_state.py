"""The whole kernel state a lab leaves, per design, against golden dumps.

The golden dumps were recorded from the one-request-at-a-time pyroute2 build; the faster
build (batched netlink, netns made by threads, concurrent in-pod enrollment) must leave
exactly the same netns, links, addresses, routes, rules, ipsets, iptables and hosts files.
"""

from __future__ import annotations

import json
import time

import pytest

from netlab import names
from tests.kernel.helpers import lab_up
from tests.kernel.state_dump import dump

pytestmark = pytest.mark.root

CASES = [
    ("bookinfo", "none", ()),
    ("bookinfo", "node-routing", ("--encap", "geneve-user")),
    ("bookinfo", "node-routing", ("--encap", "vxlan")),
    ("bookinfo", "inpod", ()),
    ("bookinfo", "inpod", ("--istio-version", "1.24")),
]


@pytest.mark.parametrize(("topology", "mode", "extra"), CASES,
                         ids=[f"{t}-{m}{'-' + '-'.join(e[1:]) if e else ''}" for t, m, e in CASES])
def test_kernel_state_equals_the_golden_dump(topology, mode, extra, golden) -> None:
    with lab_up(topology, "lcks", "--mode", mode, *extra) as lab:
        with open(names.record_path(names.state_dir(lab))) as f:
            members = list(json.load(f)["members"])
        time.sleep(2)  # carrier and bridge port states settle asynchronously (linkwatch: up to 1 s)
        text = dump(lab, members)
    suffix = "-".join(e.lstrip("-") for e in extra)
    golden(f"kernel-state/{topology}-{mode}{'-' + suffix if suffix else ''}.txt", text)
