"""A small local certificate authority, kept in a directory (what mkcert does).

:class:`LocalCA` issues server certificates; trust it once on each desktop or phone and every
certificate it issues is accepted. It can be limited to some names (X.509 name constraints).
:func:`client_ssl_context` makes a TLS client context that trusts a CA, a certificate or a file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import socket
import ssl
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeAlias

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from rtckit.certs.tls import client_context
from rtckit.certs.x509 import (
    _BACKDATE,
    CertificateSpec,
    IssuedCertificate,
    KeyType,
    PrivateKey,
    _cert_pem,
    _check_dns_name,
    _check_key_matches,
    _describe,
    _general_name_text,
    _is_ca,
    _key_pem,
    _leaf_builder,
    _name,
    _parse_ip,
    _require_common_name,
    _require_days,
    _require_key_type,
    _utc_now,
    _write_file,
    check_validity,
    days_left,
    fingerprint,
    load_certificates,
    load_private_key,
)
from rtckit.errors import CertificateError

__all__ = [
    "CA_CERT_FILE",
    "CA_DER_FILE",
    "CA_KEY_FILE",
    "DEFAULT_CA_DAYS",
    "LocalCA",
    "client_ssl_context",
]

DEFAULT_CA_DAYS = 3650
"""Validity of a local CA in days, ten years since you trust it once by hand."""
CA_CERT_FILE = "ca.pem"
"""File name of a local CA's certificate (PEM) in its directory."""
CA_KEY_FILE = "ca-key.pem"
"""File name of a local CA's private key (PEM, mode ``0600``) in its directory."""
CA_DER_FILE = "ca.crt"
"""File name of a local CA's certificate in DER form, the file phones install."""


def _constraint(text: str) -> x509.GeneralName:
    value = text.strip()
    if "/" in value:
        try:
            return x509.IPAddress(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise CertificateError(f"bad name constraint {text!r}: not an IP network") from None
    address = _parse_ip(value)
    if address is not None:  # a single address: a /32 or /128 network
        return x509.IPAddress(ipaddress.ip_network(address))
    name = x509.DNSName(_check_dns_name(value, text))
    if name.value.startswith("*."):
        raise CertificateError(f"bad name constraint {text!r}: no wildcards; give the domain")
    return name


def _name_matches(name: x509.GeneralName, constraint: x509.GeneralName) -> bool:
    if isinstance(name, x509.DNSName) and isinstance(constraint, x509.DNSName):
        domain = constraint.value.lower().lstrip(".")
        host = name.value.lower()
        if constraint.value.startswith("."):
            return host.endswith("." + domain)
        return host == domain or host.endswith("." + domain)
    if isinstance(name, x509.IPAddress) and isinstance(constraint, x509.IPAddress):
        network = constraint.value
        address = name.value
        return (
            isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network)
            and isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
            and address.version == network.version
            and address in network
        )
    return False


def _check_name_constraints(ca: x509.Certificate, names: list[x509.GeneralName]) -> None:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return
    permitted = list(constraints.permitted_subtrees or ())
    excluded = list(constraints.excluded_subtrees or ())
    for name in names:
        text = _general_name_text(name)
        same_type = [c for c in permitted if type(c) is type(name)]
        if same_type and not any(_name_matches(name, c) for c in same_type):
            allowed = ", ".join(_general_name_text(c) for c in same_type)
            raise CertificateError(
                f"the local CA may not issue a certificate for {text}: its name constraints "
                f"permit only {allowed}"
            )
        if any(_name_matches(name, c) for c in excluded):
            raise CertificateError(
                f"the local CA may not issue a certificate for {text}: excluded by its "
                "name constraints"
            )


def _check_ca(instance: LocalCA) -> None:
    _check_key_matches(instance.certificate, instance.private_key, "local CA")
    if not _is_ca(instance.certificate):
        raise CertificateError(
            f"certificate {_describe(instance.certificate)} is not a CA certificate "
            "(basicConstraints CA:true is missing)"
        )


@attrs.frozen(kw_only=True)
class LocalCA:
    """A certificate authority of your own, to trust once on each device.

    Its certificate has basicConstraints ``CA:true, pathlen:0`` and keyUsage
    ``keyCertSign, cRLSign``; optional name constraints limit the hosts it may issue for.
    In a directory it is the files :data:`CA_CERT_FILE`, :data:`CA_KEY_FILE` (mode ``0600``,
    keep it private: whoever has it can impersonate any site to devices that trust the CA) and
    :data:`CA_DER_FILE` (the certificate again, in the DER form phones install).
    """

    certificate: x509.Certificate
    """The CA's self-signed certificate."""
    private_key: PrivateKey = attrs.field(eq=False, repr=False)
    """The CA's private key."""

    def __attrs_post_init__(self) -> None:
        _check_ca(self)

    @classmethod
    def create(
        cls,
        *,
        common_name: str | None = None,
        days: int = DEFAULT_CA_DAYS,
        key_type: KeyType = KeyType.RSA,
        permitted: Iterable[str] | None = None,
        now: dt.datetime | None = None,
    ) -> LocalCA:
        """Return a new CA.

        *common_name* defaults to ``"rtckit local CA <hostname> <random id>"`` so that several
        CAs are told apart in trust stores. *permitted* adds critical name constraints: DNS
        domains (``"example.test"`` also permits its subdomains) and IP networks
        (``"192.168.0.0/16"``, a bare address means just that one); a type of name not listed
        stays unconstrained (RFC 5280), and :meth:`issue` checks them before signing.
        """
        _require_days("days", days)
        _require_key_type(key_type)
        if common_name is None:
            common_name = f"rtckit local CA {socket.gethostname()[:30]} {secrets.token_hex(4)}"
        _require_common_name(common_name)
        moment = _utc_now(now)
        key = key_type.generate()
        name = _name(common_name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(moment - _BACKDATE)
            .not_valid_after(moment + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        if permitted is not None:
            if isinstance(permitted, str):
                raise CertificateError("permitted must be a list of domains and networks")
            subtrees = [_constraint(item) for item in permitted]
            if not subtrees:
                raise CertificateError("permitted name constraints cannot be empty")
            builder = builder.add_extension(
                x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None),
                critical=True,
            )
        certificate = builder.sign(key, hashes.SHA256())
        return cls(certificate=certificate, private_key=key)

    @staticmethod
    def exists(directory: str | os.PathLike[str]) -> bool:
        """Whether *directory* holds a CA's certificate and key files."""
        folder = Path(directory)
        return (folder / CA_CERT_FILE).is_file() and (folder / CA_KEY_FILE).is_file()

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> LocalCA:
        """Load the CA that :meth:`save` wrote in *directory*."""
        folder = Path(directory)
        if not cls.exists(folder):
            raise CertificateError(
                f"no local CA in {folder} ({CA_CERT_FILE} and {CA_KEY_FILE} are needed); "
                f"create one with LocalCA.create().save(...) or "
                f"'rtckit cert create --ca {folder} ...'"
            )
        certificate = load_certificates(folder / CA_CERT_FILE)[0]
        key = load_private_key(folder / CA_KEY_FILE)
        _check_key_matches(certificate, key, f"local CA in {folder}")
        return cls(certificate=certificate, private_key=key)

    @classmethod
    def load_or_create(
        cls,
        directory: str | os.PathLike[str],
        *,
        key_type: KeyType = KeyType.RSA,
        days: int = DEFAULT_CA_DAYS,
    ) -> LocalCA:
        """Load the CA in *directory*, or create and save one there if there is none."""
        if cls.exists(directory):
            return cls.load(directory)
        ca = cls.create(key_type=key_type, days=days)
        ca.save(directory)
        return ca

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the CA's files in *directory* (created if needed); return the PEM's path."""
        folder = Path(directory)
        _write_file(folder / CA_KEY_FILE, _key_pem(self.private_key), private=True)
        _write_file(folder / CA_DER_FILE, self.certificate.public_bytes(serialization.Encoding.DER))
        return _write_file(folder / CA_CERT_FILE, self.cert_pem())

    def cert_pem(self) -> bytes:
        """The CA certificate, PEM (what clients and trust stores import)."""
        return _cert_pem(self.certificate)

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the CA certificate (compare it when installing on a phone)."""
        return fingerprint(self.certificate)

    @property
    def common_name(self) -> str:
        """The CA's common name, as trust stores list it."""
        values = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(values[0].value) if values else ""

    def days_left(self, *, now: dt.datetime | None = None) -> int:
        """Whole days until the CA expires (negative once expired)."""
        return days_left(self.certificate, now=now)

    def issue(
        self, spec: CertificateSpec | None = None, *, now: dt.datetime | None = None
    ) -> IssuedCertificate:
        """Return a new server certificate for *spec*, signed by this CA.

        It has a serverAuth extended key usage and subject/authority key identifiers. Its
        validity ends no later than the CA's. Raises
        :class:`~rtckit.errors.CertificateExpiredError` if the CA is not valid *now*, and
        :class:`~rtckit.errors.CertificateError` if a host breaks the CA's name constraints.
        """
        spec = spec if spec is not None else CertificateSpec()
        moment = _utc_now(now)
        check_validity(self.certificate, now=moment)
        names = spec.general_names()
        _check_name_constraints(self.certificate, names)
        key = spec.key_type.generate()
        not_after = min(moment + dt.timedelta(days=spec.days), self.certificate.not_valid_after_utc)
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = _leaf_builder(spec, key, moment, not_after)
        builder = builder.issuer_name(self.certificate.subject).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
            critical=False,
        )
        certificate = builder.sign(self.private_key, hashes.SHA256())
        return IssuedCertificate(
            certificate=certificate, private_key=key, chain=(self.certificate,)
        )

    def client_ssl_context(self) -> ssl.SSLContext:
        """Return a client :class:`ssl.SSLContext` trusting only this CA."""
        return client_ssl_context(self)


_Trust: TypeAlias = LocalCA | IssuedCertificate | x509.Certificate | str | os.PathLike[str]


def _trusted_certificates(trust: _Trust | Iterable[_Trust]) -> Iterator[x509.Certificate]:
    # one item, or several: a path is one item (a string is not iterated as characters)
    single = (LocalCA, IssuedCertificate, x509.Certificate, str, os.PathLike)
    items: Iterable[_Trust] = [trust] if isinstance(trust, single) else trust
    for item in items:
        if isinstance(item, str | os.PathLike):
            yield from load_certificates(item)
        elif isinstance(item, LocalCA):
            yield item.certificate
        elif isinstance(item, IssuedCertificate):
            yield item.chain[-1] if item.chain else item.certificate
        elif isinstance(item, x509.Certificate):
            yield item
        else:
            raise CertificateError(f"cannot trust {item!r}: not a certificate")


def client_ssl_context(
    trust: _Trust | Iterable[_Trust],
) -> ssl.SSLContext:
    """Return a TLS client context that trusts only *trust*, not the system's CAs.

    *trust* is a :class:`LocalCA`, a certificate, an :class:`~rtckit.certs.x509.IssuedCertificate`
    (its root issuer, or itself when self-signed), the path of a PEM or DER certificate file (every
    certificate in it, as :func:`~rtckit.certs.x509.load_certificates` reads them), or several of
    them. Host names are checked, and OpenSSL's strict X.509 checks are on (as Python 3.13 does by
    default).
    """
    return client_context(list(_trusted_certificates(trust)))
