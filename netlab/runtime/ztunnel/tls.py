"""mTLS for HBONE: SSLContexts per SPIFFE identity, and the SAN check after the handshake.

Python's ``ssl`` has no verify callback, so the chain is verified by OpenSSL against the lab
CA (``CERT_REQUIRED``: an expired or not-yet-valid peer certificate fails the handshake), and
the peer's SPIFFE URI SAN is checked afterwards with ``cryptography`` on
``getpeercert(binary_form=True)``.

Certificates rotate as ztunnel's do: each identity's SVID is issued in memory by the lab CA
with the configured TTL, and renewed half-way through its validity (:meth:`Contexts.rotate_due`,
driven by the ztunnel's event loop). A renewal swaps in new SSLContexts: connections already
established keep theirs, new ones present the new certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from netlab.protocols import spiffe
from netlab.runtime.ztunnel import certs

log = logging.getLogger(__name__)


class IdentityError(Exception):
    """The peer's certificate does not carry the identity we require."""


def _load_chain(ctx: ssl.SSLContext, svid: certs.Svid) -> None:
    """``load_cert_chain`` from memory: ``ssl`` only reads files, so hand it an anonymous
    memfd (never on disk) through ``/proc/self/fd``."""
    fd = os.memfd_create(f"svid-{svid.serial:x}", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(svid.cert_pem + svid.key_pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class Contexts:
    """One client and one server SSLContext per identity (TLS 1.3, ALPN h2), from in-memory
    SVIDs issued by the lab CA of ``certs_dir`` on first use (or :meth:`prefetch`)."""

    def __init__(self, certs_dir: str, trust_domain: str = "cluster.local", *,
                 cert_ttl: float = certs.DEFAULT_TTL_SECONDS) -> None:
        self.certs_dir = certs_dir
        self.trust_domain = trust_domain
        self.cert_ttl = cert_ttl
        self.ca_path = f"{certs_dir}/{certs.CA_CERT}"
        self.rotations = 0  # SVIDs renewed (the metric netlab_ztunnel_cert_rotations_total)
        self._ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
        self._svids: dict[str, certs.Svid] = {}
        self._cache: dict[tuple[str, bool], ssl.SSLContext] = {}

    def _issue(self, identity: str) -> certs.Svid:
        if self._ca is None:
            self._ca = certs.load_ca(self.certs_dir)
        return certs.issue_svid(*self._ca, identity, ttl_seconds=self.cert_ttl)

    def svid(self, identity: str) -> certs.Svid:
        """The identity's current SVID (issued now if it has none)."""
        s = self._svids.get(identity)
        if s is None:
            s = self._svids[identity] = self._issue(identity)
            log.debug("certificate for %s issued: serial %x, valid until %s", identity, s.serial,
                      s.not_after.isoformat())
        return s

    def prefetch(self, identities: list[str]) -> None:
        for identity in identities:
            self.svid(identity)

    def _make(self, svid: certs.Svid, server: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if not server:
            ctx.check_hostname = False  # identities are URIs; checked by verify_peer()
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.ca_path)
        _load_chain(ctx, svid)
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def get(self, identity: str, *, server: bool) -> ssl.SSLContext:
        key = (identity, server)
        ctx = self._cache.get(key)
        if ctx is None:
            ctx = self._cache[key] = self._make(self.svid(identity), server)
        return ctx

    def retain(self, identities: set[str] | frozenset[str]) -> list[str]:
        """Forget the SVIDs and contexts of every identity not in ``identities`` (gone from the
        registry: no longer renewed; issued anew should one be used again). Returns those dropped."""
        gone = sorted(i for i in self._svids if i not in identities)
        for identity in gone:
            del self._svids[identity]
        for key in [k for k in self._cache if k[0] not in identities]:
            del self._cache[key]
        if gone:
            log.debug("certificates dropped (identities gone): %s", ", ".join(gone))
        return gone

    # rotation -----------------------------------------------------------------------------------
    def due(self, now: dt.datetime) -> list[str]:
        """Identities whose SVID has reached half of its lifetime at ``now``."""
        return sorted(i for i, s in self._svids.items() if s.refresh_at <= now)

    def next_refresh(self) -> dt.datetime | None:
        """The earliest renewal time of the SVIDs held (None: none held yet)."""
        return min((s.refresh_at for s in self._svids.values()), default=None)

    def _renewed(self, identity: str) -> tuple[certs.Svid, ssl.SSLContext, ssl.SSLContext]:
        svid = self._issue(identity)
        return svid, self._make(svid, False), self._make(svid, True)

    def install(self, svid: certs.Svid, client: ssl.SSLContext | None = None,
                server: ssl.SSLContext | None = None) -> None:
        """Make ``svid`` the identity's certificate for new connections (contexts built if not given)."""
        old = self._svids.get(svid.spiffe)
        self._svids[svid.spiffe] = svid
        self._cache[(svid.spiffe, False)] = client or self._make(svid, False)
        self._cache[(svid.spiffe, True)] = server or self._make(svid, True)
        if old is not None:
            self.rotations += 1
            log.info("certificate for %s rotated: serial %x -> %x, valid until %s, next renewal at %s",
                     svid.spiffe, old.serial, svid.serial, svid.not_after.isoformat(), svid.refresh_at.isoformat())

    async def rotate_due(self, now: dt.datetime | None = None) -> list[str]:
        """Renew every SVID due at ``now`` (keys and signatures made off the event loop)."""
        ids = self.due(now or dt.datetime.now(dt.UTC))
        for identity in ids:
            renewed = await asyncio.to_thread(self._renewed, identity)
            if identity in self._svids:  # not dropped by retain() meanwhile
                self.install(*renewed)
        return ids


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
            td, _, _ = spiffe.parse(ident)
        except ValueError:
            raise IdentityError(f"peer identity {ident} is not a workload identity") from None
        if td != trust_domain:
            raise IdentityError(f"peer identity {ident} is not in trust domain {trust_domain}")
    return ident
