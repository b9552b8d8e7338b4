"""mTLS for HBONE: SSLContexts per SPIFFE identity, and the SAN check after the handshake.

Python's ``ssl`` has no verify callback, so the chain is verified by OpenSSL against the lab
CA (``CERT_REQUIRED``), and the peer's SPIFFE URI SAN is checked afterwards with
``cryptography`` on ``getpeercert(binary_form=True)``.
"""

from __future__ import annotations

import logging
import ssl

from netlab.runtime.ztunnel import certs

log = logging.getLogger(__name__)


class IdentityError(Exception):
    """The peer's certificate does not carry the identity we require."""


class Contexts:
    """Caches one client and one server SSLContext per identity (TLS 1.3, ALPN h2)."""

    def __init__(self, certs_dir: str, trust_domain: str = "cluster.local") -> None:
        self.certs_dir = certs_dir
        self.trust_domain = trust_domain
        self.ca_path = f"{certs_dir}/{certs.CA_CERT}"
        self._cache: dict[tuple[str, bool], ssl.SSLContext] = {}

    def _make(self, identity: str, server: bool) -> ssl.SSLContext:
        cert_path, key_path = certs.identity_paths(self.certs_dir, identity)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if not server:
            ctx.check_hostname = False  # identities are URIs; checked by verify_peer()
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.ca_path)
        ctx.load_cert_chain(cert_path, key_path)
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def get(self, identity: str, *, server: bool) -> ssl.SSLContext:
        key = (identity, server)
        ctx = self._cache.get(key)
        if ctx is None:
            ctx = self._cache[key] = self._make(identity, server)
        return ctx

    def clear(self) -> None:
        """Forget cached contexts (after certificates were re-issued)."""
        self._cache.clear()


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    ids = certs.spiffe_ids_of(der)
    return ids[0] if len(ids) == 1 else None


def verify_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, *, expected: str | None = None,
                trust_domain: str | None = None) -> str:
    """Return the peer's SPIFFE id, or raise IdentityError with the reason.

    ``expected``: exact identity (client side: the destination workload's).
    ``trust_domain``: any workload identity of that trust domain (server side).
    """
    ident = peer_identity(ssl_object)
    if ident is None:
        raise IdentityError("peer certificate has no (single) SPIFFE URI SAN")
    if expected is not None and ident != expected:
        raise IdentityError(f"identity mismatch: expected {expected}, got {ident}")
    if trust_domain is not None:
        try:
            td, _, _ = certs.parse_spiffe(ident)
        except ValueError:
            raise IdentityError(f"peer identity {ident} is not a workload identity") from None
        if td != trust_domain:
            raise IdentityError(f"peer identity {ident} is not in trust domain {trust_domain}")
    return ident
