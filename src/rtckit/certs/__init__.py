"""Certificates for HTTPS development: self-signed, or issued by a local CA.

Browsers open the camera and microphone only on a secure origin (``https://`` or
``http://localhost``), so a WebRTC app served to a phone on the LAN needs a certificate for the
machine's address. This package makes them in a few lines, with no I/O other than the files
you ask it to read or write:

* :mod:`~rtckit.certs.tls` -- :mod:`ssl` contexts from certificates and keys;
* :mod:`~rtckit.certs.x509` -- certificates and keys: self-signed certificates, PEM and
  PKCS#12 files, fingerprints, validity checks;
* :mod:`~rtckit.certs.ca` -- :class:`~rtckit.certs.ca.LocalCA`, a small certificate authority
  kept in a directory, and client contexts that trust it;
* :mod:`~rtckit.certs.dev` -- :func:`~rtckit.certs.dev.ensure_dev_certificate`, the
  development certificate of this machine, made once and renewed when needed.

Every name of the submodules except :mod:`~rtckit.certs.tls`'s is importable from
``rtckit.certs``. This machine's LAN addresses are :func:`rtckit.net.lan_addresses`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
    from rtckit.certs.ca import (
        CA_CERT_FILE,
        CA_DER_FILE,
        CA_KEY_FILE,
        DEFAULT_CA_DAYS,
        LocalCA,
        client_ssl_context,
    )
    from rtckit.certs.dev import (
        DevCertificate,
        default_dev_hosts,
        ensure_dev_certificate,
    )
    from rtckit.certs.x509 import (
        CERT_FILE,
        DEFAULT_DAYS,
        DEFAULT_HOSTS,
        FULLCHAIN_FILE,
        KEY_FILE,
        KEYSTORE_FILE,
        PKCS12_KDF_ROUNDS,
        CertificateFiles,
        CertificateSpec,
        IssuedCertificate,
        KeyType,
        PrivateKey,
        certificate_hosts,
        check_validity,
        create_self_signed,
        days_left,
        fingerprint,
        is_ca_certificate,
        key_description,
        load_certificates,
        load_private_key,
        normalize_host,
        parse_host,
        server_ssl_context,
    )
    from rtckit.net import IPAddress


__all__ = [
    "CA_CERT_FILE",
    "CA_DER_FILE",
    "CA_KEY_FILE",
    "CERT_FILE",
    "DEFAULT_CA_DAYS",
    "DEFAULT_DAYS",
    "DEFAULT_HOSTS",
    "FULLCHAIN_FILE",
    "KEYSTORE_FILE",
    "KEY_FILE",
    "PKCS12_KDF_ROUNDS",
    "CertificateFiles",
    "CertificateSpec",
    "DevCertificate",
    "IPAddress",
    "IssuedCertificate",
    "KeyType",
    "LocalCA",
    "PrivateKey",
    "certificate_hosts",
    "check_validity",
    "client_ssl_context",
    "create_self_signed",
    "days_left",
    "default_dev_hosts",
    "ensure_dev_certificate",
    "fingerprint",
    "is_ca_certificate",
    "key_description",
    "load_certificates",
    "load_private_key",
    "normalize_host",
    "parse_host",
    "server_ssl_context",
]
# Type checkers read the imports under TYPE_CHECKING instead: a module __getattr__ would make
# any name valid for them, a misspelt one too.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "rtckit.certs.ca": [
                "CA_CERT_FILE",
                "CA_DER_FILE",
                "CA_KEY_FILE",
                "DEFAULT_CA_DAYS",
                "LocalCA",
                "client_ssl_context",
            ],
            "rtckit.certs.dev": ["DevCertificate", "default_dev_hosts", "ensure_dev_certificate"],
            "rtckit.certs.x509": [
                "CERT_FILE",
                "DEFAULT_DAYS",
                "DEFAULT_HOSTS",
                "FULLCHAIN_FILE",
                "KEY_FILE",
                "KEYSTORE_FILE",
                "PKCS12_KDF_ROUNDS",
                "CertificateFiles",
                "CertificateSpec",
                "IssuedCertificate",
                "KeyType",
                "PrivateKey",
                "certificate_hosts",
                "check_validity",
                "create_self_signed",
                "days_left",
                "fingerprint",
                "is_ca_certificate",
                "key_description",
                "load_certificates",
                "load_private_key",
                "normalize_host",
                "parse_host",
                "server_ssl_context",
            ],
            "rtckit.net": ["IPAddress"],
        },
        renamed={"lan_addresses": "rtckit.net.lan_addresses"},  # deprecated
    )
