"""ZDS as transcripts (no sockets): bytes in >> events out, actions >> bytes out."""

from __future__ import annotations

import pytest

from netlab.errors import ProtocolError
from netlab.protocols import zds
from netlab.protocols.zds import (
    AckReceived,
    AddReceived,
    AgentConn,
    Code,
    DelReceived,
    HelloReceived,
    KeepReceived,
    SnapshotReceived,
    State,
    WorkloadInfo,
    ZtunnelConn,
)

HELLO = bytes.fromhex("0801")
ACK_OK = bytes.fromhex("0a00")
ACK_X = bytes.fromhex("0a030a0178")
SNAPSHOT_SENT = bytes.fromhex("1a00")
ADD_ABC = bytes.fromhex("0a050a03616263")
DEL_ABC = bytes.fromhex("12051203616263")
KEEP_ABC = bytes.fromhex("2a050a03616263")
FD = 42  # the cores never touch fds: any number stands for one


# -- wire bytes, scapy style: build, compare exact bytes, dissect -------------------------------


@pytest.mark.parametrize("built,wire", [
    (zds.encode_hello(), HELLO),
    (zds.encode_ack(), ACK_OK),
    (zds.encode_ack("x"), ACK_X),
    (zds.encode_snapshot_sent(), SNAPSHOT_SENT),
    (zds.encode_add("abc"), ADD_ABC),
    (zds.encode_del("abc"), DEL_ABC),
    (zds.encode_keep("abc"), KEEP_ABC),
], ids=["hello-v1", "ack-ok", "ack-error-x", "snapshot-sent", "add-abc", "del-abc-field-2", "keep-abc"])
def test_wire_bytes_match_hand_encoded_ones(built: bytes, wire: bytes) -> None:
    """Each message encodes to bytes hand-encoded from Istio's schema (field numbers and types)."""
    assert built == wire


def test_add_with_workload_info_dissects_back() -> None:
    """AddWorkload with WorkloadInfo (1.22, trust_domain = field 4) round-trips field by field."""
    info = WorkloadInfo("sleep", "default", "sleep", "cluster.local")
    data = zds.encode_add("u1", info)
    assert data[:1] == b"\x0a"  # WorkloadRequest.add = field 1, length-delimited
    z = ZtunnelConn()
    z.hello()
    (ev,) = z.receive_data(data, [FD])
    assert ev == AddReceived("u1", info, FD)


# -- agent side transcripts ------------------------------------------------------------------------


def test_agent_snapshot_then_steady_state() -> None:
    """hello >> snapshot (add+fd, keep) >> SnapshotSent >> add and del in lock-step."""
    c = AgentConn()
    assert c.receive_data(HELLO) == [HelloReceived(1)]
    c.send_add("abc", FD)
    assert c.data_to_send() == [(ADD_ABC, (FD,))]
    assert c.receive_data(ACK_OK) == [AckReceived("add", "abc", "")]
    c.send_keep("abc")
    assert c.data_to_send() == [(KEEP_ABC, ())]
    assert c.receive_data(ACK_X) == [AckReceived("keep", "abc", "x")]
    c.send_snapshot_sent()
    assert c.data_to_send() == [(SNAPSHOT_SENT, ())]
    assert c.receive_data(ACK_OK) == [AckReceived("snapshot_sent", "", "")]
    assert c.state == State.READY
    c.send_del("abc")
    assert c.data_to_send() == [(DEL_ABC, ())]
    assert c.receive_data(ACK_OK) == [AckReceived("del", "abc", "")]
    c.send_add("abc", FD)
    assert c.data_to_send() == [(ADD_ABC, (FD,))]


@pytest.mark.parametrize("steps,code", [
    (lambda c: c.receive_data(bytes.fromhex("0802")), Code.VERSION),
    (lambda c: c.receive_data(b"\xff\xff"), Code.DECODE),
    (lambda c: c.send_add("abc", FD), Code.UNEXPECTED),
    (lambda c: (c.receive_data(HELLO), c.receive_data(ACK_OK)), Code.UNEXPECTED),
    (lambda c: (c.receive_data(HELLO), c.send_del("abc")), Code.UNEXPECTED),
    (lambda c: (c.receive_data(HELLO), c.send_add("a", FD), c.send_add("b", FD)), Code.UNEXPECTED),
    (lambda c: (c.receive_data(HELLO), c.send_snapshot_sent(), c.receive_data(ACK_OK), c.send_keep("a")),
     Code.UNEXPECTED),
    (lambda c: (c.receive_data(HELLO), c.send_snapshot_sent(), c.receive_data(ACK_OK), c.send_snapshot_sent()),
     Code.UNEXPECTED),
    (lambda c: c.receive_data(HELLO, [FD]), Code.FDS),
], ids=["hello-v2", "garbage", "add-before-hello", "unsolicited-ack", "del-during-snapshot", "no-lockstep",
        "keep-after-snapshot", "second-snapshot-sent", "fd-from-ztunnel"])
def test_agent_refuses(steps, code: Code) -> None:
    """What the agent side refuses, each with its ProtocolError code."""
    with pytest.raises(ProtocolError) as e:
        steps(AgentConn())
    assert e.value.code == code


# -- ztunnel side transcripts ------------------------------------------------------------------------


def _ready_ztunnel() -> ZtunnelConn:
    z = ZtunnelConn()
    z.hello()
    z.receive_data(SNAPSHOT_SENT)
    z.ack()
    z.data_to_send()
    return z


def test_ztunnel_hello_snapshot_and_acks() -> None:
    """ztunnel says hello V1, acks each request, and gets the snapshot's uids with SnapshotSent."""
    z = ZtunnelConn()
    z.hello()
    assert z.data_to_send() == [(HELLO, ())]
    assert z.receive_data(ADD_ABC, [FD]) == [AddReceived("abc", None, FD)]
    z.ack()
    assert z.receive_data(zds.encode_keep("k"), []) == [KeepReceived("k")]
    z.ack("x")
    assert z.data_to_send() == [(ACK_OK, ()), (ACK_X, ())]
    assert z.receive_data(SNAPSHOT_SENT) == [SnapshotReceived(frozenset({"abc", "k"}))]
    z.ack()
    assert z.state == State.READY
    assert z.receive_data(DEL_ABC) == [DelReceived("abc")]
    z.ack()
    assert z.receive_data(ADD_ABC, [FD]) == [AddReceived("abc", None, FD)]


@pytest.mark.parametrize("make,data,fds,code", [
    (ZtunnelConn, ADD_ABC, [FD], Code.UNEXPECTED),  # before hello
    (lambda: _hello(), DEL_ABC, [], Code.UNEXPECTED),  # Del only after SnapshotSent
    (_ready_ztunnel, KEEP_ABC, [], Code.UNEXPECTED),  # Keep only before SnapshotSent
    (_ready_ztunnel, SNAPSHOT_SENT, [], Code.UNEXPECTED),  # a second SnapshotSent
    (lambda: _hello(), ADD_ABC, [], Code.FDS),  # Add without its fd
    (lambda: _hello(), ADD_ABC, [FD, FD + 1], Code.FDS),  # Add with two fds
    (lambda: _hello(), KEEP_ABC, [FD], Code.FDS),  # an fd with anything but Add
    (lambda: _hello(), b"", [], Code.DECODE),  # empty request: no payload
], ids=["add-before-hello", "del-in-snapshot", "keep-after-snapshot", "second-snapshot-sent", "add-no-fd",
        "add-two-fds", "keep-with-fd", "no-payload"])
def test_ztunnel_refuses(make, data: bytes, fds: list[int], code: Code) -> None:
    """ztunnel's side of the protocol: each violation raises ProtocolError with its code."""
    with pytest.raises(ProtocolError) as e:
        make().receive_data(data, fds)
    assert e.value.code == code


def test_ztunnel_refuses_a_request_before_acking_the_last() -> None:
    """Lock-step: a second request while the first is unacked is a protocol error."""
    z = _hello()
    z.receive_data(ADD_ABC, [FD])
    with pytest.raises(ProtocolError) as e:
        z.receive_data(KEEP_ABC)
    assert e.value.code == Code.UNEXPECTED


def _hello() -> ZtunnelConn:
    z = ZtunnelConn()
    z.hello()
    return z


def test_transition_table_is_the_only_authority() -> None:
    """Every allowed step is in TRANSITIONS; READY allows exactly Add and Del."""
    ready = {i for (s, i) in zds.TRANSITIONS if s == State.READY}
    assert ready == {zds.Input.ADD, zds.Input.DEL}
    snap = {i for (s, i) in zds.TRANSITIONS if s == State.SNAPSHOT}
    assert snap == {zds.Input.ADD, zds.Input.KEEP, zds.Input.SNAPSHOT_SENT}
