"""In-pod mode: PodManager opens the pod's listeners inside the pod netns and closes everything on delete."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import socket

import pytest

from netlab import names
from netlab.apply import netns as netns_mod
from netlab.apply.kernel import apply_plan
from netlab.linux import nsenter
from netlab.plan.objects import Addr, NetnsPlan, Plan
from netlab.protocols.zds import WorkloadInfo
from netlab.runtime.ztunnel import certs
from netlab.runtime.ztunnel.accesslog import AccessLog
from netlab.runtime.ztunnel.podmanager import PodManager
from netlab.runtime.ztunnel.proxy import Proxy
from netlab.runtime.ztunnel.registry import Registry
from netlab.runtime.ztunnel.tls import Contexts
from tests.kernel.helpers import netns_inode, run, socket_netns_inode

pytestmark = pytest.mark.root

POD_IP = "10.244.3.5"


@pytest.fixture
def pod_ns() -> str:
    name = names.netns(f"zt{os.getpid() % 100000}", "p")
    pod = NetnsPlan(name, "pod", "p", addrs=(Addr(name, "lo", f"{POD_IP}/32"),))  # on lo: no dummy module here
    try:
        apply_plan(Plan(f"zt{os.getpid() % 100000}", "inpod", None, None, (pod,)))
        yield name
    finally:
        netns_mod.remove(name)


def _listeners(ns: str) -> dict[int, str]:
    out = run("ss", "-Htlnp", ns=ns)
    got = {}
    for line in out.splitlines():
        cols = line.split()
        port = int(cols[3].rsplit(":", 1)[1])
        got[port] = line
    return got


def _fds() -> int:
    gc.collect()  # objects of earlier tests closing their fds mid-test would skew the count
    return len(os.listdir("/proc/self/fd"))


def test_podmanager_add_del_listeners_and_fds(pod_ns: str, tmp_path) -> None:
    """add -> 15001/15006/15008 in the pod netns owned by this pid (mark 0x539); del -> gone, fds back."""
    reg = Registry.from_dict({"trust_domain": "cluster.local", "workloads": [
        {"uid": "default/pod1", "name": "pod1", "namespace": "default", "node": "n1", "ip": POD_IP,
         "service_account": "pod1", "protocol": "HBONE"}]})
    certs.ensure_identities(str(tmp_path), reg.identities())
    proxy = Proxy(node="n1", mode="inpod", registry=reg, contexts=Contexts(str(tmp_path)), access_log=AccessLog(io.StringIO()))
    info = WorkloadInfo(name="pod1", namespace="default", service_account="pod1")

    async def main() -> None:
        pm = PodManager(proxy)
        fd = nsenter.open_netns(pod_ns)
        base = _fds()
        try:
            await pm.add_workload("default/pod1", fd, info)
            await pm.add_workload("default/pod1", fd, info)  # same inode: no-op
            assert pm.uids() == {"default/pod1"}
            ls = await asyncio.to_thread(_listeners, pod_ns)
            assert {15001, 15006, 15008} <= set(ls), ls
            for port in (15001, 15006, 15008):
                assert f"pid={os.getpid()}," in ls[port], ls[port]
            # the listener answers inside the pod netns (and only there)
            loop = asyncio.get_running_loop()
            with nsenter.netns(pod_ns):
                c = socket.socket()
            c.setblocking(False)
            await loop.sock_connect(c, (POD_IP, 15008))
            c.close()
            assert (await asyncio.to_thread(run, "ss", "-Htlnpe", "sport = :15001", ns=pod_ns)).count("15001") == 1
            await pm.del_workload("default/pod1")
            await asyncio.sleep(0.05)
            assert pm.uids() == set()
            ls = await asyncio.to_thread(_listeners, pod_ns)
            assert not {15001, 15006, 15008} & set(ls), ls
            assert _fds() == base
            # re-add, then drain_except({}) removes it
            await pm.add_workload("default/pod1", fd, info)
            await pm.drain_except(set())
            assert pm.uids() == set() and _fds() == base
        finally:
            os.close(fd)
            await pm.close()

    asyncio.run(main())


def test_podmanager_socket_options(pod_ns: str, tmp_path) -> None:
    """Listeners carry SO_MARK 0x539, SO_REUSEPORT and IP_TRANSPARENT, as ztunnel's in-pod ones do,
    and live in the pod's netns, not in the one ztunnel runs in."""
    from netlab.runtime.ztunnel.sockets import IP_TRANSPARENT, SO_MARK, InpodSocketFactory

    fd = nsenter.open_netns(pod_ns)
    try:
        s = InpodSocketFactory(fd).listener(15001)
        try:
            assert s.getsockopt(socket.SOL_SOCKET, SO_MARK) == 0x539
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert s.getsockopt(socket.SOL_IP, IP_TRANSPARENT) == 1
            assert socket_netns_inode(s) == netns_inode(pod_ns) != os.stat("/proc/self/ns/net").st_ino
        finally:
            s.close()
        u = InpodSocketFactory(fd).upstream(bind_ip="10.9.9.9")
        try:
            assert u.getsockopt(socket.SOL_SOCKET, SO_MARK) == 0x539
            assert u.getsockname()[0] == "10.9.9.9"
        finally:
            u.close()
    finally:
        os.close(fd)


def test_podmanager_finds_the_workload_by_k8s_uid(pod_ns: str, tmp_path, caplog) -> None:
    """ZDS AddWorkload{uid} carries the pod's Kubernetes UID: found by uid, by name only with a warning."""
    k8s_uid = "3f1e2d3c-4b5a-5697-8a9b-0c1d2e3f4a5b"
    reg = Registry.from_dict({"trust_domain": "cluster.local", "workloads": [
        {"uid": "default/pod1", "k8s_uid": k8s_uid, "name": "pod1", "namespace": "default", "node": "n1",
         "ip": POD_IP, "service_account": "pod1", "protocol": "HBONE"}]})
    certs.ensure_ca(str(tmp_path))
    proxy = Proxy(node="n1", mode="inpod", registry=reg, contexts=Contexts(str(tmp_path)), access_log=AccessLog(io.StringIO()))

    async def main() -> None:
        pm = PodManager(proxy)
        fd = nsenter.open_netns(pod_ns)
        try:
            # ZDS's name differs: the uid decides, silently
            await pm.add_workload(k8s_uid, fd, WorkloadInfo(name="pod1-renamed", namespace="default",
                                                            service_account="pod1"))
            assert pm._pods[k8s_uid].listeners.scope.workload_uid == "default/pod1"
            assert not [r for r in caplog.records if r.levelname == "WARNING"]
            await pm.del_workload(k8s_uid)
            other = "99999999-8888-5777-8666-555555555555"
            await pm.add_workload(other, fd, WorkloadInfo(name="pod1", namespace="default", service_account="pod1"))
            assert pm._pods[other].listeners.scope.workload_uid == "default/pod1"
            assert any("matched default/pod1 by name" in r.getMessage() for r in caplog.records)
        finally:
            os.close(fd)
            await pm.close()

    with caplog.at_level("WARNING", logger="netlab.runtime.ztunnel.registry"):
        asyncio.run(main())
