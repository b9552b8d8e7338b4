"""Fixtures for the ztunnel kernel tests; the lab itself is in ``ztlab.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ztlab import (
    LOCAL_IP,
    SERVER_IP,
    Ztunnel,
    _Counter,
    _Echo,
    _Http,
    _Server,
    build_lab,
    destroy_lab,
    registry_doc,
    serve,
)

from netlab.runtime.ztunnel import certs


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The netns lab, app servers, shared CA + SVIDs, and ztunnels A and B (node-routing).

    Every test here is marked ``root`` (skipped without root by the top-level conftest)."""
    work = tmp_path_factory.mktemp("zt")
    certs_dir = work / "certs"
    ids = [f"spiffe://cluster.local/ns/default/sa/{sa}" for sa in ("sleep", "localsrv", "echo", "imposter")]
    certs.ensure_ca(str(certs_dir))
    certs.ensure_identities(str(certs_dir), ids)
    names = build_lab()
    servers: list[_Server] = []
    zts: dict[str, Ztunnel] = {}
    try:
        s = names["s"]
        servers += [serve(s, SERVER_IP, 9000, _Echo), serve(s, SERVER_IP, 9001, _Echo),
                    serve(s, SERVER_IP, 9002, _Counter), serve(s, SERVER_IP, 9080, _Http),
                    serve(names["l"], LOCAL_IP, 8080, _Echo)]
        reg = registry_doc()
        zts["a"] = Ztunnel(names["a"], "node-a", work / "zt-a", registry=reg, certs_dir=certs_dir)
        zts["b"] = Ztunnel(names["b"], "node-b", work / "zt-b", registry=reg, certs_dir=certs_dir)
        yield {"names": names, "zt": zts, "work": work, "certs": certs_dir, "registry": reg}
    finally:
        for z in zts.values():
            z.stop()
        for srv in servers:
            srv.shutdown()
            srv.server_close()
        destroy_lab(names)
