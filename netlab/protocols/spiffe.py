"""SPIFFE workload ids, built and parsed in one place.

Istio names a workload's identity after its Kubernetes service account:
``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` (the URI SAN of its X.509-SVID,
and the ``src.identity``/``dst.identity`` of ztunnel's access log).

>>> spiffe_id("cluster.local", "default", "sleep")
'spiffe://cluster.local/ns/default/sa/sleep'
>>> parse("spiffe://cluster.local/ns/default/sa/sleep")
('cluster.local', 'default', 'sleep')
"""

from __future__ import annotations

import re

_RE = re.compile(r"^spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)$")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def parse(ident: str) -> tuple[str, str, str]:
    """``spiffe://td/ns/N/sa/S`` -> ``(td, N, S)``; ValueError otherwise."""
    m = _RE.match(ident)
    if not m:
        raise ValueError(f"not a SPIFFE workload id: {ident!r}")
    return m.group(1), m.group(2), m.group(3)
