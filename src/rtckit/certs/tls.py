"""TLS contexts from certificates and keys: what :mod:`ssl` needs, made safely.

:func:`server_context` presents a certificate chain with its key; :func:`client_context`
trusts only the certificates given, not the system's CAs. Both ask for TLS 1.2 or newer. The
certificate classes build on these: :meth:`~rtckit.certs.x509.IssuedCertificate.server_ssl_context`,
:func:`~rtckit.certs.x509.server_ssl_context`, :meth:`~rtckit.certs.ca.LocalCA.client_ssl_context`
and :func:`~rtckit.certs.ca.client_ssl_context`.
"""

from __future__ import annotations

import os
import secrets
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rtckit.errors import CertificateError

__all__ = [
    "client_context",
    "server_context",
]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def server_context(
    chain: Sequence[x509.Certificate], private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
) -> ssl.SSLContext:
    """Return a TLS server context presenting *chain* (the leaf first) with *private_key*.

    :mod:`ssl` only loads keys from files: the key goes through a private temporary directory,
    encrypted with a one-time password, and is deleted before this returns.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    password = secrets.token_hex(32)
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(password.encode()),
    )
    chain_pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)
    with tempfile.TemporaryDirectory(prefix="rtckit-tls-") as folder:
        chain_file = Path(folder, "fullchain.pem")
        key_file = Path(folder, "key.pem")
        try:
            _write_private(chain_file, chain_pem)
            _write_private(key_file, key_pem)
            context.load_cert_chain(chain_file, key_file, password=password)
        except ssl.SSLError as exc:
            raise CertificateError(f"cannot use the certificate for TLS: {exc}") from exc
        except OSError as exc:
            raise CertificateError(f"cannot write {folder}: {exc.strerror or exc}") from exc
    return context


def client_context(certificates: Sequence[x509.Certificate]) -> ssl.SSLContext:
    """Return a TLS client context that trusts only *certificates*, not the system's CAs.

    Host names are checked, and OpenSSL's strict X.509 checks are on (as Python 3.13 does by
    default).
    """
    if not certificates:
        raise CertificateError("a client context needs at least one certificate to trust")
    cadata = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata.decode())
    except ssl.SSLError as exc:
        raise CertificateError(f"cannot trust these certificates: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context
