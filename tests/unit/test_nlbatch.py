"""The batched rtnetlink requests are byte for byte what pyroute2 sends for the same objects.

The expected bodies were captured from pyroute2 0.9 (``NetnsLinks``) making each object in a
scratch netns (header flags and the body after the 16-byte header; the veth's peer netns fd
was 3). Same bytes, same kernel state: the kernel-state golden dumps check the whole lab.
"""

from __future__ import annotations

import pytest

from netlab.apply import nlbatch
from netlab.plan.objects import Addr, Route, Rule

NS = "nl-x.a"
F_CREATE_EXCL = 0x605
F_REPLACE = 0x505

ROUTES = [
    (Route(ns=NS, dst="10.244.1.3", dev="veth1", scope="host"),
     "02200000fe03fe0100000000080001000af4010308000f00fe0000000800040002000000"),
    (Route(ns=NS, dst="10.244.1.1", dev="veth1", scope="link", src="10.244.1.2"),
     "02200000fe03fd0100000000080001000af4010108000f00fe0000000800040002000000080007000af40102"),
    (Route(ns=NS, dst="default", dev="veth1", via="10.244.1.1"),
     "02000000fe0300010000000008000f00fe0000000800040002000000080005000af40101"),
    (Route(ns=NS, dst="10.244.1.0/24", dev="veth1", via="10.244.1.1", src="10.244.1.2"),
     "02180000fe03000100000000080001000af4010008000f00fe0000000800040002000000080005000af40101080007000af40102"),
    (Route(ns=NS, dst="10.9.0.0/16", dev="veth1", scope="link", table=100),
     "021000006403fd0100000000080001000a09000008000f00640000000800040002000000"),
    (Route(ns=NS, dst="0.0.0.0/0", dev="lo", table=100, type="local"),
     "020000006403fe020000000008000f00640000000800040001000000"),
    (Route(ns=NS, dst="10.8.0.0/16", dev="veth1", via="10.7.0.1", table=102, onlink=True),
     "021000006603000104000000080001000a08000008000f00660000000800040002000000080005000a070001"),
]


def test_veth_with_its_peer_in_another_netns() -> None:
    assert nlbatch.veth_body("veth1", "eth0", 3).hex() == (
        "000000000000000000000000000000000a00030076657468310000003c0012000900010076657468000000002c00020028000100"
        "0000000000000000000000000000000009000300657468300000000008001c0003000000")


def test_link_up() -> None:
    assert nlbatch.up_body(2).hex() == "00000000020000000100000001000000"


def test_addresses() -> None:
    assert nlbatch.addr_body(Addr(ns=NS, dev="veth1", cidr="10.244.1.1/32"), 2).hex() == \
        "0220000002000000080001000af40101080002000af40101"
    assert nlbatch.addr_body(Addr(ns=NS, dev="veth1", cidr="10.244.1.2/24", noprefixroute=True), 2).hex() == \
        "0218000002000000080001000af401020800080000020000080002000af40102"


@pytest.mark.parametrize(("route", "want"), ROUTES, ids=[r.render() for r, _ in ROUTES])
def test_routes(route: Route, want: str) -> None:
    oif = 1 if route.dev == "lo" else 2
    assert nlbatch.route_body(route, oif).hex() == want


def test_queued_headers_carry_pyroute2s_flags() -> None:
    b = nlbatch.RtnlBatch.__new__(nlbatch.RtnlBatch)
    b.ns, b.seq, b.queue, b._fds, b.index = NS, 0, [], [], {"lo": 1, "veth1": 2}
    b.up("veth1")
    b.add_addr(Addr(ns=NS, dev="veth1", cidr="10.244.1.1/32"))
    b.add_route(ROUTES[0][0])
    flags = [nlbatch.HDR.unpack_from(m)[1:3] for _, m, _, _ in b.queue]
    assert flags == [(nlbatch.RTM_NEWLINK, 0x5), (nlbatch.RTM_NEWADDR, F_CREATE_EXCL), (nlbatch.RTM_NEWROUTE, F_REPLACE)]
    assert [seq for seq, _, _, _ in b.queue] == [1, 2, 3]


def test_unknown_device_is_a_plan_error_not_a_crash() -> None:
    b = nlbatch.RtnlBatch.__new__(nlbatch.RtnlBatch)
    b.ns, b.seq, b.queue, b._fds, b.index = NS, 0, [], [], {"lo": 1}
    with pytest.raises(nlbatch.ApplyError, match="no link veth9"):
        b.up("veth9")



RULES = [
    (Rule(ns=NS, priority=32764, fwmark=273, mask=4095, table=100),
     "02000000640000010000000008000600fc7f000008000a001101000008001000ff0f000008000f0064000000"),
    (Rule(ns=NS, priority=100, fwmark=0x200, mask=0x200, goto=32766),
     "020000000000000200000000080006006400000008000a0000020000080010000002000008000400fe7f0000"),
    (Rule(ns=NS, priority=103, table=100), "020000006400000100000000080006006700000008000f0064000000"),
]


@pytest.mark.parametrize(("rule", "want"), RULES, ids=[r.render() for r, _ in RULES])
def test_rules(rule: Rule, want: str) -> None:
    assert nlbatch.rule_body(rule).hex() == want
