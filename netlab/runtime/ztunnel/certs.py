"""Lab PKI: one CA per lab and short-lived SPIFFE X.509-SVIDs (EC P-256), as istiod issues them.

Files in ``dir``: ``ca.pem``/``ca-key.pem`` and, per identity
``spiffe://<td>/ns/<ns>/sa/<sa>``, ``<ns>.<sa>.pem``/``<ns>.<sa>-key.pem`` (Kubernetes names
cannot contain ``.`` for namespaces, so the split is unambiguous).

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> _ = ensure_ca(d)
>>> cert, key = issue_identity(d, "spiffe://cluster.local/ns/default/sa/sleep")
>>> os.path.basename(cert), spiffe_ids_of(open(cert, "rb").read())
('default.sleep.pem', ['spiffe://cluster.local/ns/default/sa/sleep'])

ztunnel itself keeps its SVIDs in memory (:func:`issue_svid`, as it would get them from
istiod with a CSR) and renews each at half of its lifetime (:func:`refresh_at`); the files
are the lab's copies for clients outside ztunnel (curl, openssl).

>>> ca, ca_key = load_ca(d)
>>> svid = issue_svid(ca, ca_key, "spiffe://cluster.local/ns/default/sa/sleep", ttl_seconds=3600)
>>> svid.not_after - svid.not_before == dt.timedelta(minutes=60 + 5)  # backdated 5 min for clock skew
True
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netlab.linux.filelock import exclusive
from netlab.linux.files import write_atomic
from netlab.protocols.spiffe import parse as parse_spiffe

log = logging.getLogger(__name__)

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
# not_before is backdated for clock skew: 5 minutes (istiod's grace), at most a tenth of the TTL
CLOCK_SKEW = dt.timedelta(minutes=5)
DEFAULT_TTL_SECONDS = 24 * 3600  # Istio's default workload certificate TTL


def identity_paths(dir: str, spiffe: str) -> tuple[str, str]:
    _, ns, sa = parse_spiffe(spiffe)
    return os.path.join(dir, f"{ns}.{sa}.pem"), os.path.join(dir, f"{ns}.{sa}-key.pem")


@contextlib.contextmanager
def _issuing(dir: str) -> Iterator[None]:
    """Exclusive right to (re)write identity files in ``dir``, across processes: every ztunnel of
    a lab refreshes the same files on a registry reload, and a key of one issue next to the
    certificate of another would make the pair unusable for curl."""
    with exclusive(os.path.join(dir, ".issue.lock")):
        yield


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_ca(dir: str, *, trust_domain: str = "cluster.local", ttl_days: int = 3650) -> tuple[str, str]:
    """Create the lab CA in ``dir`` unless it exists; returns ``(cert_pem_path, key_path)``."""
    os.makedirs(dir, exist_ok=True)
    cert_path, key_path = os.path.join(dir, CA_CERT), os.path.join(dir, CA_KEY)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=ttl_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomic(key_path, _key_pem(key), mode=0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def load_ca(dir: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The lab CA of ``dir`` (created if missing): ``(certificate, private key)``."""
    cert_path, key_path = ensure_ca(dir)
    with open(cert_path, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return ca, key


def _svid_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, spiffe: str,
               key: ec.EllipticCurvePrivateKey, ttl: dt.timedelta, now: dt.datetime) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - min(CLOCK_SKEW, ttl / 10))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        # empty subject => SAN must be critical (RFC 5280 4.2.1.6), as in istiod's SVIDs
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def _issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, spiffe: str, cert_path: str,
           key_path: str, ttl_hours: float) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _svid_cert(ca, ca_key, spiffe, key, dt.timedelta(hours=ttl_hours), _now())
    write_atomic(key_path, _key_pem(key), mode=0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def issue_identity(dir: str, spiffe: str, *, ttl_hours: float = 24) -> tuple[str, str]:
    """Issue (always anew) the SVID for ``spiffe`` signed by the CA in ``dir``."""
    parse_spiffe(spiffe)
    ca, ca_key = load_ca(dir)
    cert_path, key_path = identity_paths(dir, spiffe)
    with _issuing(dir):
        _issue(ca, ca_key, spiffe, cert_path, key_path, ttl_hours)
    return cert_path, key_path


def _still_valid(cert_path: str, key_path: str, margin: dt.timedelta) -> bool:
    """The pair exists, belongs together and is not about to expire."""
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError):
        return False
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        return False
    return cert.not_valid_after_utc - margin > _now()


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def ensure_identities(dir: str, ids: Iterable[str], *, ttl_hours: float = 24) -> dict[str, tuple[str, str]]:
    """Issue the SVIDs of ``ids`` that are missing or expire within the hour (CA loaded once).

    Returns ``{spiffe_id: (cert_path, key_path)}``.
    """
    ca, ca_key = load_ca(dir)
    margin = dt.timedelta(hours=min(1.0, ttl_hours / 2))
    out: dict[str, tuple[str, str]] = {}
    with _issuing(dir):
        for spiffe in sorted(set(ids)):
            parse_spiffe(spiffe)
            cert_path, key_path = identity_paths(dir, spiffe)
            if not _still_valid(cert_path, key_path, margin):
                _issue(ca, ca_key, spiffe, cert_path, key_path, ttl_hours)
            out[spiffe] = (cert_path, key_path)
    return out


@dataclass(frozen=True, slots=True)
class Svid:
    """One X.509-SVID held in memory: PEM certificate and key, and what rotation needs."""

    spiffe: str
    cert_pem: bytes
    key_pem: bytes
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def refresh_at(self) -> dt.datetime:
        return refresh_at(self.not_before, self.not_after)


def refresh_at(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """When ztunnel renews a certificate: half-way through its validity.

    >>> t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    >>> refresh_at(t0, t0 + dt.timedelta(hours=24)).hour
    12
    """
    return not_before + max(not_after - not_before, dt.timedelta(0)) / 2


def issue_svid(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, spiffe: str, *, ttl_seconds: float,
               now: dt.datetime | None = None) -> Svid:
    """A new SVID for ``spiffe`` valid ``ttl_seconds`` from ``now`` (default: the current time)."""
    parse_spiffe(spiffe)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _svid_cert(ca, ca_key, spiffe, key, dt.timedelta(seconds=ttl_seconds), now or _now())
    return Svid(spiffe, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), cert.serial_number,
                cert.not_valid_before_utc, cert.not_valid_after_utc)


def spiffe_ids_of(cert_bytes: bytes) -> list[str]:
    """URI SANs starting with ``spiffe://`` of a PEM or DER certificate."""
    if cert_bytes.startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(cert_bytes)
    else:
        cert = x509.load_der_x509_certificate(cert_bytes)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
