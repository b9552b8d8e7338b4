"""Lab PKI: SPIFFE SAN, EC P-256, expiry, file names, idempotent issuing."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from netlab.runtime.ztunnel import certs

SID = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"


def test_issue_identity_san_key_expiry(tmp_path) -> None:
    """URI SAN = the SPIFFE id, P-256 key, valid ~ttl hours, signed by the lab CA."""
    ca_path, _ = certs.ensure_ca(str(tmp_path))
    cert_path, key_path = certs.issue_identity(str(tmp_path), SID, ttl_hours=2)
    assert os.path.basename(cert_path) == "default.bookinfo-productpage.pem"
    assert os.path.basename(key_path) == "default.bookinfo-productpage-key.pem"
    assert os.stat(key_path).st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    assert certs.spiffe_ids_of(open(cert_path, "rb").read()) == [SID]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    life = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=1, minutes=55) < life <= dt.timedelta(hours=2)
    ca = x509.load_pem_x509_certificate(open(ca_path, "rb").read())
    cert.verify_directly_issued_by(ca)
    # usable by ssl with the CA as trust anchor
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    ctx.load_verify_locations(ca_path)


def test_ensure_identities_reuses_valid_and_renews_expiring(tmp_path) -> None:
    """Valid SVIDs are kept; ones expiring within the margin are re-issued."""
    ids = [SID, "spiffe://cluster.local/ns/default/sa/sleep"]
    paths = certs.ensure_identities(str(tmp_path), ids)
    assert set(paths) == set(ids)
    before = open(paths[SID][0], "rb").read()
    assert certs.ensure_identities(str(tmp_path), ids)[SID] == paths[SID]
    assert open(paths[SID][0], "rb").read() == before
    certs.issue_identity(str(tmp_path), SID, ttl_hours=0.1)  # about to expire
    short = open(paths[SID][0], "rb").read()
    certs.ensure_identities(str(tmp_path), ids)
    assert open(paths[SID][0], "rb").read() != short


def test_ensure_identities_reissues_a_pair_that_does_not_match(tmp_path) -> None:
    """A key that is not the certificate's (left by a crash, or another writer) is re-issued."""
    sleep = "spiffe://cluster.local/ns/default/sa/sleep"
    paths = certs.ensure_identities(str(tmp_path), [SID, sleep])
    cert_path, key_path = paths[SID]
    os.replace(paths[sleep][1], key_path)  # productpage's cert next to sleep's key
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ssl.SSLError):
        ctx.load_cert_chain(cert_path, key_path)
    certs.ensure_identities(str(tmp_path), [SID])
    ctx.load_cert_chain(cert_path, key_path)
    assert certs.spiffe_ids_of(open(cert_path, "rb").read()) == [SID]


def _issue_when(go, d: str) -> None:
    go.wait(30)
    certs.issue_identity(d, SID)


def test_issuers_take_turns(tmp_path) -> None:
    """Every ztunnel of a lab refreshes the same files: while one writer holds the directory,
    another waits, so a pair never mixes two issues."""
    import multiprocessing

    mp = multiprocessing.get_context("fork")
    certs.ensure_ca(str(tmp_path))
    cert_path, key_path = certs.issue_identity(str(tmp_path), SID)
    before = open(cert_path, "rb").read()
    go = mp.Event()
    child = mp.Process(target=_issue_when, args=(go, str(tmp_path)))
    child.start()  # forked before we hold the lock: it must not inherit our lock's descriptor
    try:
        with certs._issuing(str(tmp_path)):
            go.set()
            child.join(0.5)
            assert child.is_alive() and open(cert_path, "rb").read() == before  # waiting for us
        child.join(30)
        assert child.exitcode == 0 and open(cert_path, "rb").read() != before
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)
        child.close()  # its sentinel pipe, not left for a later test's fd count
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_ca_is_created_once(tmp_path) -> None:
    """ensure_ca does not replace an existing CA."""
    a = certs.ensure_ca(str(tmp_path))
    before = open(a[0], "rb").read()
    assert certs.ensure_ca(str(tmp_path)) == a and open(a[0], "rb").read() == before


@pytest.mark.parametrize("bad", ["spiffe://cluster.local/default/sleep", "https://x/ns/a/sa/b", ""],
                         ids=["no-ns-sa", "scheme", "empty"])
def test_bad_spiffe_id_refused(tmp_path, bad: str) -> None:
    """Only spiffe://td/ns/N/sa/S is accepted."""
    with pytest.raises(ValueError):
        certs.issue_identity(str(tmp_path), bad)


# --- in-memory SVIDs and rotation (tls.Contexts) ---------------------------------------------------
T0 = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A full TLS handshake over memory BIOs (no sockets); raises what either side raises."""
    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    ends = [client.wrap_bio(cin, cout), server.wrap_bio(sin, sout, server_side=True)]
    done = [False, False]
    for _ in range(10):
        for i, end in enumerate(ends):
            if not done[i]:
                try:
                    end.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
        sin.write(cout.read())
        cin.write(sout.read())
        if all(done):
            return ends[0], ends[1]
    raise AssertionError("handshake did not finish")


def _serial(obj: ssl.SSLObject) -> int:
    return x509.load_der_x509_certificate(obj.getpeercert(binary_form=True)).serial_number


def test_issue_svid_with_ttl(tmp_path) -> None:
    """In-memory SVID: valid ttl seconds from now, backdated min(5 min, ttl/10), SPIFFE SAN, signed by the CA."""
    ca, ca_key = certs.load_ca(str(tmp_path))
    day = certs.issue_svid(ca, ca_key, SID, ttl_seconds=86400, now=T0)
    assert (day.not_before, day.not_after) == (T0 - dt.timedelta(minutes=5), T0 + dt.timedelta(days=1))
    assert day.refresh_at == T0 + dt.timedelta(hours=12, minutes=-2, seconds=-30)
    short = certs.issue_svid(ca, ca_key, SID, ttl_seconds=10, now=T0)
    assert (short.not_before, short.not_after) == (T0 - dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=10))
    cert = x509.load_pem_x509_certificate(short.cert_pem)
    cert.verify_directly_issued_by(ca)
    assert cert.serial_number == short.serial and certs.spiffe_ids_of(short.cert_pem) == [SID]
    assert short.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("lifetime,expected", [
    (dt.timedelta(hours=24), dt.timedelta(hours=12)),
    (dt.timedelta(seconds=5), dt.timedelta(seconds=2.5)),
    (dt.timedelta(seconds=-5), dt.timedelta(0)),  # not_after before not_before: renew at once
], ids=["day", "seconds", "inverted"])
def test_refresh_at_is_half_life(lifetime: dt.timedelta, expected: dt.timedelta) -> None:
    assert certs.refresh_at(T0, T0 + lifetime) == T0 + expected


def test_renewal_decisions(tmp_path) -> None:
    """Nothing held: no renewal planned; an SVID is due from its half-life on, not before."""
    from netlab.runtime.ztunnel.tls import Contexts

    c = Contexts(str(tmp_path), cert_ttl=100)
    assert c.next_refresh() is None and c.due(T0) == []
    c.prefetch([SID, SLEEP])
    s1, s2 = c.svid(SID), c.svid(SLEEP)
    assert s1.not_after - s1.not_before == dt.timedelta(seconds=110)  # 100 s + 10 s backdating (truncated)
    assert c.next_refresh() == min(s1.refresh_at, s2.refresh_at)
    first = min(s1.refresh_at, s2.refresh_at)
    assert c.due(first - dt.timedelta(seconds=1)) == []
    assert c.due(max(s1.refresh_at, s2.refresh_at)) == sorted([SID, SLEEP])
    assert c.due(s1.not_before) == []


def test_rotation_new_connections_get_the_new_certificate(tmp_path) -> None:
    """rotate_due renews only due SVIDs, swaps both contexts, counts; a new handshake shows the new serial."""
    from netlab.runtime.ztunnel.tls import Contexts

    server, client = Contexts(str(tmp_path), cert_ttl=3600), Contexts(str(tmp_path), cert_ttl=3600)
    sctx = server.get(SID, server=True)
    old = server.svid(SID)
    _, s_end = _handshake(client.get(SLEEP, server=False), sctx)
    c_end, _ = _handshake(client.get(SLEEP, server=False), sctx)
    assert _serial(c_end) == old.serial and _serial(s_end) == client.svid(SLEEP).serial
    assert asyncio.run(server.rotate_due(old.refresh_at - dt.timedelta(seconds=1))) == []
    assert asyncio.run(server.rotate_due(old.refresh_at)) == [SID]
    new = server.svid(SID)
    assert new.serial != old.serial and server.rotations == 1 and new.not_after >= old.not_after
    assert server.get(SID, server=True) is not sctx
    c_end, _ = _handshake(client.get(SLEEP, server=False), server.get(SID, server=True))
    assert _serial(c_end) == new.serial
    c_end, _ = _handshake(client.get(SLEEP, server=False), sctx)  # a context already handed out keeps working
    assert _serial(c_end) == old.serial


def test_expired_certificate_refused_both_ways(tmp_path) -> None:
    """The peer check refuses an expired certificate, presented by a server or by a client."""
    from netlab.runtime.ztunnel.tls import Contexts

    ca, ca_key = certs.load_ca(str(tmp_path))
    expired = certs.issue_svid(ca, ca_key, SID, ttl_seconds=60, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    bad, good = Contexts(str(tmp_path)), Contexts(str(tmp_path))
    bad.install(expired)
    assert bad.rotations == 0  # a first SVID is not a rotation
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        _handshake(good.get(SLEEP, server=False), bad.get(SID, server=True))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        _handshake(bad.get(SID, server=False), good.get(SLEEP, server=True))


def test_identities_gone_from_registry_are_dropped(tmp_path) -> None:
    """retain() forgets the SVIDs and contexts of identities no longer wanted: they are not
    renewed any more (no rotation counted), and one used again is issued afresh."""
    from netlab.runtime.ztunnel.tls import Contexts

    c = Contexts(str(tmp_path), cert_ttl=100)
    c.prefetch([SID, SLEEP])
    c.get(SID, server=True)
    c.get(SLEEP, server=False)
    old = c.svid(SLEEP)
    assert c.retain({SID}) == [SLEEP]
    assert c.retain({SID}) == []
    assert c.due(old.not_after) == [SID] and c.next_refresh() == c.svid(SID).refresh_at
    assert {k[0] for k in c._cache} == {SID}
    assert asyncio.run(c.rotate_due(old.not_after)) == [SID] and c.rotations == 1
    assert c.svid(SLEEP).serial != old.serial and c.rotations == 1  # issued anew, not a rotation


def test_ztunnel_reload_drops_removed_identities(tmp_path) -> None:
    """On a registry reload the ztunnel keeps the SVIDs of the identities still registered only."""
    import types

    from netlab.runtime.ztunnel.server import Ztunnel
    from netlab.runtime.ztunnel.tls import Contexts

    class _Reg:
        workloads = {"productpage": types.SimpleNamespace(node="n1")}

        def identity(self, w) -> str:
            return SID

    z = Ztunnel.__new__(Ztunnel)
    z.config = types.SimpleNamespace(certs_dir=str(tmp_path), node="n1")  # type: ignore[assignment]
    z.registry, z.pod_manager = _Reg(), None  # type: ignore[assignment]
    z.contexts = Contexts(str(tmp_path))
    z.contexts.prefetch([SID, SLEEP])  # sleep was registered before the reload
    z._ensure_certs()
    assert z.contexts.due(dt.datetime.max.replace(tzinfo=dt.UTC)) == [SID]
