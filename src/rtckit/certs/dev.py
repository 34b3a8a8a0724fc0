"""The development certificate of this machine: made once, reused, renewed when needed.

:func:`ensure_dev_certificate` creates a :class:`~rtckit.certs.ca.LocalCA` and a server
certificate in a directory once, then reuses them, issuing a new server certificate when the
host list changes or expiry comes near. :func:`default_dev_hosts` names this machine as a
phone on the LAN reaches it (:func:`rtckit.net.lan_addresses`).
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from collections.abc import Iterable
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from rtckit.certs.ca import CA_CERT_FILE, LocalCA
from rtckit.certs.x509 import (
    CERT_FILE,
    DEFAULT_DAYS,
    DEFAULT_HOSTS,
    FULLCHAIN_FILE,
    KEY_FILE,
    CertificateFiles,
    CertificateSpec,
    IssuedCertificate,
    KeyType,
    _utc_now,
    server_ssl_context,
)
from rtckit.errors import CertificateError
from rtckit.net import lan_addresses

__all__ = [
    "DevCertificate",
    "default_dev_hosts",
    "ensure_dev_certificate",
]


def default_dev_hosts() -> tuple[str, ...]:
    """:data:`~rtckit.certs.x509.DEFAULT_HOSTS` plus :func:`~rtckit.net.lan_addresses`.

    What a phone on the LAN may use.
    """
    return DEFAULT_HOSTS + tuple(str(address) for address in lan_addresses())


@attrs.frozen(kw_only=True)
class DevCertificate:
    """What :func:`ensure_dev_certificate` found or made in its directory."""

    ca: LocalCA
    """The local CA (trust :attr:`ca_file` once on each device)."""
    certificate: IssuedCertificate
    """The server certificate, issued by :attr:`ca`."""
    files: CertificateFiles
    """Where the server certificate and key are."""
    ca_file: Path
    """The CA certificate's PEM file."""
    created_ca: bool
    """Whether this call created the CA (devices must trust the new one)."""
    renewed: bool
    """Whether this call issued a new server certificate."""

    def server_ssl_context(self) -> ssl.SSLContext:
        """A TLS server context presenting the server certificate."""
        return server_ssl_context(self.certificate)


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _leaf_is_current(
    leaf: IssuedCertificate,
    ca: LocalCA,
    spec: CertificateSpec,
    renew_within_days: int,
    now: dt.datetime,
) -> bool:
    return (
        set(leaf.hosts) == set(spec.hosts)
        and leaf.key_type is spec.key_type
        and _issued_by(leaf.certificate, ca.certificate)
        and leaf.not_valid_before <= now
        and leaf.days_left(now=now) >= renew_within_days
    )


def ensure_dev_certificate(
    directory: str | os.PathLike[str],
    hosts: Iterable[str],
    *,
    key_type: KeyType = KeyType.RSA,
    days: int = DEFAULT_DAYS,
    renew_within_days: int = 30,
    now: dt.datetime | None = None,
) -> DevCertificate:
    """Create once, then reuse, a local CA and a server certificate for *hosts* in *directory*.

    The CA (:data:`~rtckit.certs.ca.CA_CERT_FILE`, :data:`~rtckit.certs.ca.CA_KEY_FILE`,
    :data:`~rtckit.certs.ca.CA_DER_FILE`) is created only if missing or expiring within
    *renew_within_days* (devices must then trust the new one). The server certificate
    (:data:`~rtckit.certs.x509.CERT_FILE`, :data:`~rtckit.certs.x509.KEY_FILE`,
    :data:`~rtckit.certs.x509.FULLCHAIN_FILE`) is issued again when *hosts* or *key_type*
    changed, when the CA changed, or when it expires within *renew_within_days*. A damaged CA
    raises :class:`~rtckit.errors.CertificateError` rather than being replaced behind the back
    of devices that trust it. Not safe for two processes at once on the same directory.
    """
    folder = Path(directory)
    moment = _utc_now(now)
    spec = CertificateSpec(hosts=tuple(hosts), days=days, key_type=key_type)
    if isinstance(renew_within_days, bool) or not 0 <= renew_within_days < days:
        raise CertificateError(
            f"renew_within_days must be from 0 to days - 1, not {renew_within_days!r}"
        )
    created_ca = False
    ca: LocalCA | None = None
    if LocalCA.exists(folder):
        ca = LocalCA.load(folder)
        if ca.days_left(now=moment) < renew_within_days:
            ca = None  # a CA not valid *yet* is kept: issue() then blames the clock
    if ca is None:
        ca = LocalCA.create(key_type=key_type, now=moment)
        ca.save(folder)
        created_ca = True
    leaf: IssuedCertificate | None = None
    if (folder / CERT_FILE).exists() and (folder / KEY_FILE).exists():
        try:
            leaf = IssuedCertificate.load(folder)
        except CertificateError:
            leaf = None  # a damaged server certificate is simply issued again
    renewed = leaf is None or not _leaf_is_current(leaf, ca, spec, renew_within_days, moment)
    if renewed or leaf is None:
        leaf = ca.issue(spec, now=moment)
        files = leaf.save(folder)
    else:
        files = CertificateFiles(
            cert=folder / CERT_FILE, key=folder / KEY_FILE, fullchain=folder / FULLCHAIN_FILE
        )
    return DevCertificate(
        ca=ca,
        certificate=leaf,
        files=files,
        ca_file=folder / CA_CERT_FILE,
        created_ca=created_ca,
        renewed=renewed,
    )
