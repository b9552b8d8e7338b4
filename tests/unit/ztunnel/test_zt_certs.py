"""Lab PKI: SPIFFE SAN, EC P-256, expiry, file names, idempotent issuing."""

from __future__ import annotations

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
