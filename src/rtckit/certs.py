"""Certificates for HTTPS development: self-signed, or issued by a local CA.

Browsers open the camera and microphone only on a secure origin (``https://`` or
``http://localhost``), so a WebRTC app served to a phone on the LAN needs a certificate for the
machine's address. This module makes them in a few lines, with no I/O other than the files you
ask it to read or write:

* :func:`create_self_signed`: one certificate that signs itself (each browser warns once);
* :class:`LocalCA`: a small certificate authority kept in a directory, that issues server
  certificates; trust it once on each desktop or phone and every certificate it issues is
  accepted (what mkcert does);
* :func:`ensure_dev_certificate`: create the CA and a server certificate once, then reuse them,
  issuing a new server certificate when the host list changes or expiry comes near;
* PEM files (private keys written with mode ``0600``), password-protected PKCS#12 keystores
  (the format Java's ``keytool`` reads), :mod:`ssl` contexts for servers and clients, SHA-256
  fingerprints, validity checks.

Every failure raises :class:`~rtckit.errors.CertificateError` (or its subclass
:class:`~rtckit.errors.CertificateExpiredError`) with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import ipaddress
import os
import secrets
import socket
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeAlias

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rtckit.errors import CertificateError, CertificateExpiredError

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
    "lan_addresses",
    "load_certificates",
    "load_private_key",
    "normalize_host",
    "parse_host",
    "server_ssl_context",
]

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
"""The private keys rtckit makes and accepts, RSA or ECDSA (every browser supports both)."""

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
"""An IPv4 or IPv6 address."""

DEFAULT_DAYS = 700
"""Validity of a server certificate, in days (as ``keytool -validity 700`` in the HTTPS how-to).

Apple platforms refuse TLS server certificates valid for more than 825 days, even from a CA the
user trusts, so keep ``days`` at most 825 for certificates that iPhones and Macs must accept.
"""

DEFAULT_CA_DAYS = 3650
"""Validity of a local CA in days, ten years since you trust it once by hand."""

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""The hosts of a certificate for this machine only."""

PKCS12_KDF_ROUNDS = 100_000
"""PBKDF2 iterations protecting PKCS#12 keystores (Java's default is 10 000)."""

CA_CERT_FILE = "ca.pem"
"""File name of a local CA's certificate (PEM) in its directory."""
CA_KEY_FILE = "ca-key.pem"
"""File name of a local CA's private key (PEM, mode ``0600``) in its directory."""
CA_DER_FILE = "ca.crt"
"""File name of a local CA's certificate in DER form, the file phones install."""
CERT_FILE = "cert.pem"
"""File name of a server certificate (PEM, the certificate alone)."""
KEY_FILE = "key.pem"
"""File name of a server certificate's private key (PEM, mode ``0600``)."""
FULLCHAIN_FILE = "fullchain.pem"
"""File name of a server certificate followed by its issuers (PEM), what servers send."""
KEYSTORE_FILE = "keystore.p12"
"""File name of a PKCS#12 keystore holding key, certificate and issuers."""

_BACKDATE = dt.timedelta(hours=1)  # tolerate clocks (phones...) a little behind this machine
_MAX_DAYS = 36_500
_ORGANIZATION = "rtckit development certificate"


class KeyType(enum.Enum):
    """The kind of key a certificate gets."""

    RSA = "rsa"
    """RSA 2048 bits (what ``keytool -keyalg RSA -keysize 2048`` makes)."""
    EC = "ec"
    """ECDSA on the P-256 curve, smaller and much faster to generate."""

    def generate(self) -> PrivateKey:
        """Return a new private key of this type."""
        if self is KeyType.RSA:
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    @classmethod
    def of(cls, key: PrivateKey) -> KeyType:
        """Return the type of *key*."""
        return cls.RSA if isinstance(key, rsa.RSAPrivateKey) else cls.EC


# --- hosts -----------------------------------------------------------------------------------


def _parse_ip(text: str) -> IPAddress | None:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        try:
            address: IPAddress = ipaddress.IPv6Address(text)
        except ValueError:
            raise CertificateError(f"bad host [{text}]: not an IPv6 address") from None
    else:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise CertificateError(
            f"bad host {text!r}: a zone (%{address.scope_id}) cannot go in a certificate; "
            "give the address without it"
        )
    return address


def _check_dns_name(text: str, original: str) -> str:
    if not text.isascii():
        raise CertificateError(
            f"bad host {original!r}: give an internationalized name in its ASCII form (xn--...)"
        )
    name = text.lower().removesuffix(".")
    if ":" in name or "/" in name:
        raise CertificateError(
            f"bad host {original!r}: give a bare host name or IP address, "
            "without scheme, port or path"
        )
    if not name or len(name) > 253:
        raise CertificateError(f"bad host {original!r}: a DNS name has 1 to 253 characters")
    labels = name.split(".")
    for index, label in enumerate(labels):
        if label == "*":
            if index == 0 and len(labels) > 2:
                continue  # a wildcard: leftmost, above at least two labels
            raise CertificateError(
                f"bad host {original!r}: '*' may only be the leftmost label, above at least "
                "two others (*.example.test)"
            )
        if not 1 <= len(label) <= 63 or label.startswith("-") or label.endswith("-"):
            raise CertificateError(
                f"bad host {original!r}: label {label!r} must have 1 to 63 characters "
                "and not start or end with '-'"
            )
        if not all(ch.isalnum() or ch == "-" for ch in label):
            raise CertificateError(
                f"bad host {original!r}: label {label!r} may only hold letters, digits and '-'"
            )
    if labels[-1].isdigit():
        raise CertificateError(f"bad host {original!r}: not a valid IP address or DNS name")
    return name


def parse_host(host: str) -> x509.DNSName | x509.IPAddress:
    """Return the subjectAltName entry for *host*: a DNS name, an IPv4 or an IPv6 address.

    DNS names are lower-cased and lose a trailing dot; a leftmost ``*`` label makes a wildcard
    (``*.example.test``). IPv6 addresses may be written with or without brackets.
    Raises :class:`~rtckit.errors.CertificateError` for anything else (ports, URLs, bad labels,
    IPv6 zones).
    """
    if not isinstance(host, str):
        raise CertificateError(f"bad host {host!r}: expected a string")
    text = host.strip()
    if not text:
        raise CertificateError("bad host '': a host name or IP address is required")
    address = _parse_ip(text)
    if address is not None:
        return x509.IPAddress(address)
    return x509.DNSName(_check_dns_name(text, host))


def _general_name_text(name: x509.GeneralName) -> str:
    return str(name.value)


def normalize_host(host: str) -> str:
    """Return *host* in the canonical text form rtckit compares hosts with.

    ``"LocalHost."`` becomes ``"localhost"``, ``"[0:0::1]"`` becomes ``"::1"``.
    """
    return _general_name_text(parse_host(host))


def _normalize_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    if isinstance(hosts, str | bytes):
        raise CertificateError(
            f"hosts must be a list of host names or addresses, not the string {hosts!r}"
        )
    normalized: dict[str, None] = {}
    for host in hosts:
        normalized[normalize_host(host)] = None
    if not normalized:
        raise CertificateError("a certificate needs at least one host name or IP address")
    return tuple(normalized)


def _require_days(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_DAYS:
        raise CertificateError(
            f"{name} must be a whole number of days from 1 to {_MAX_DAYS}, not {value!r}"
        )


def _require_common_name(value: object) -> None:
    if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 64):
        raise CertificateError(f"common_name must have 1 to 64 characters, not {value!r}")


def _require_key_type(value: object) -> None:
    if not isinstance(value, KeyType):
        raise CertificateError(f"key_type must be a KeyType (RSA or EC), not {value!r}")


def _validate_days(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    _require_days(attribute.name, value)


def _validate_common_name(_instance: object, _attribute: object, value: str | None) -> None:
    _require_common_name(value)


def _validate_key_type(_instance: object, _attribute: object, value: KeyType) -> None:
    _require_key_type(value)


@attrs.frozen(kw_only=True)
class CertificateSpec:
    """What a server certificate is for: its hosts, validity and key type.

    >>> CertificateSpec(hosts=["LocalHost", "127.0.0.1", "[::1]"]).hosts
    ('localhost', '127.0.0.1', '::1')
    """

    hosts: tuple[str, ...] = attrs.field(default=DEFAULT_HOSTS, converter=_normalize_hosts)
    """DNS names and IP addresses (IPv4, IPv6), normalized, duplicates removed."""
    days: int = attrs.field(default=DEFAULT_DAYS, validator=_validate_days)
    """How long the certificate is valid, from now (see :data:`DEFAULT_DAYS`)."""
    key_type: KeyType = attrs.field(default=KeyType.RSA, validator=_validate_key_type)
    """The key to generate."""
    common_name: str | None = attrs.field(default=None, validator=_validate_common_name)
    """The subject's common name; by default the first host (browsers only read the SANs)."""

    @property
    def subject_common_name(self) -> str:
        """The common name the certificate gets."""
        if self.common_name is not None:
            return self.common_name
        first = self.hosts[0]
        return first if len(first) <= 64 else "rtckit"

    def general_names(self) -> list[x509.GeneralName]:
        """The subjectAltName entries for :attr:`hosts`."""
        return [parse_host(host) for host in self.hosts]


# --- reading certificates ---------------------------------------------------------------------


def _utc_now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise CertificateError("now must be a timezone-aware datetime (e.g. in dt.UTC)")
    return now.astimezone(dt.UTC)


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


def fingerprint(cert: x509.Certificate) -> str:
    """Return the SHA-256 fingerprint of *cert* as colon-separated upper-case hex.

    The form of SDP's ``a=fingerprint:sha-256 ...`` and of ``openssl x509 -fingerprint``.
    """
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def days_left(cert: x509.Certificate, *, now: dt.datetime | None = None) -> int:
    """Return the whole days until *cert* expires (negative once it has expired)."""
    return (cert.not_valid_after_utc - _utc_now(now)).days


def check_validity(cert: x509.Certificate, *, now: dt.datetime | None = None) -> None:
    """Raise :class:`~rtckit.errors.CertificateExpiredError` unless *cert* is valid *now*."""
    moment = _utc_now(now)
    if moment < cert.not_valid_before_utc:
        raise CertificateExpiredError(
            f"certificate {_describe(cert)} is not valid yet: valid from "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC, it is now "
            f"{moment:%Y-%m-%d %H:%M:%S} UTC (check this machine's clock)"
        )
    if moment > cert.not_valid_after_utc:
        raise CertificateExpiredError(
            f"certificate {_describe(cert)} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, it is now "
            f"{moment:%Y-%m-%d %H:%M:%S} UTC: create a new one"
        )


def certificate_hosts(cert: x509.Certificate) -> tuple[str, ...]:
    """Return the DNS names and IP addresses in *cert*'s subjectAltName, normalized."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names: list[str] = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    names += [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    return tuple(names)


def key_description(cert: x509.Certificate) -> str:
    """Describe *cert*'s public key: ``"RSA 2048"``, ``"ECDSA P-256"``, ..."""
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {curves.get(public.curve.name, public.curve.name)}"
    return type(public).__name__.removesuffix("PublicKey").removeprefix("_") or "unknown"


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """Whether *cert* may issue certificates (basicConstraints ``CA:true``)."""
    return _is_ca(cert)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise CertificateError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def load_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Return the certificates in a PEM file (one or a chain, in file order) or a DER file."""
    file = Path(path)
    data = _read(file, "certificate file")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        hint = (
            "it holds a private key"
            if b"PRIVATE KEY-----" in data
            else "a PKCS#12 keystore needs its password"
        )
        raise CertificateError(f"{file} holds no PEM or DER certificate ({hint})") from None


def _check_private_key(key: object, source: str) -> PrivateKey:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    raise CertificateError(
        f"{source}: unsupported key type {type(key).__name__}; rtckit uses RSA or ECDSA keys"
    )


def load_private_key(
    path: str | os.PathLike[str], *, password: str | bytes | None = None
) -> PrivateKey:
    """Return the private key in a PEM or DER file, decrypting it with *password* if given."""
    file = Path(path)
    data = _read(file, "private key file")
    secret = password.encode() if isinstance(password, str) else password
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, secret)
        else:
            key = serialization.load_der_private_key(data, secret)
    except TypeError:
        if secret is None:
            raise CertificateError(
                f"{file}: the private key is encrypted, give its password"
            ) from None
        raise CertificateError(
            f"{file}: the private key is not encrypted, give no password"
        ) from None
    except ValueError:
        raise CertificateError(f"{file}: not a private key, or the password is wrong") from None
    return _check_private_key(key, str(file))


# --- writing files ----------------------------------------------------------------------------


def _write_file(path: Path, data: bytes, *, private: bool = False) -> Path:
    """Write *data* to *path* atomically; private files get mode ``0600``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    mode = 0o600 if private else 0o644
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            if private and hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
            os.write(fd, data)
        finally:
            os.close(fd)
        temporary.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise CertificateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def _key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def _public_der(key: PrivateKey | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_key_matches(cert: x509.Certificate, key: PrivateKey, source: str) -> None:
    if _public_der(cert) != _public_der(key):
        raise CertificateError(
            f"{source}: the private key does not belong to certificate {_describe(cert)} "
            "(mismatched key and certificate files?)"
        )


@attrs.frozen(kw_only=True)
class CertificateFiles:
    """Where :meth:`IssuedCertificate.save` wrote a certificate."""

    cert: Path
    """The certificate alone (PEM)."""
    key: Path
    """Its private key (PEM, unencrypted, mode ``0600``)."""
    fullchain: Path
    """The certificate followed by its issuers, PEM; give this one to servers."""


# --- issued certificates ----------------------------------------------------------------------


def _certificate_tuple(certificates: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return tuple(certificates)


def _check_issued(instance: IssuedCertificate) -> None:
    _check_key_matches(instance.certificate, instance.private_key, "certificate")


@attrs.frozen(kw_only=True)
class IssuedCertificate:
    """A certificate with its private key and the certificates of its issuers.

    Made by :func:`create_self_signed` and :meth:`LocalCA.issue`, or loaded with
    :meth:`load`, :meth:`from_files` or :meth:`load_pkcs12`. Creating one checks that the key
    belongs to the certificate.
    """

    certificate: x509.Certificate
    """The certificate (the leaf)."""
    private_key: PrivateKey = attrs.field(eq=False, repr=False)
    """Its private key."""
    chain: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=_certificate_tuple)
    """The issuers' certificates, nearest first (the local CA); empty when self-signed."""
    alias: str | None = None
    """Its friendly name in the PKCS#12 keystore it was loaded from, if any."""

    def __attrs_post_init__(self) -> None:
        _check_issued(self)

    # properties

    @property
    def hosts(self) -> tuple[str, ...]:
        """The DNS names and IP addresses the certificate is for."""
        return certificate_hosts(self.certificate)

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the certificate (see :func:`fingerprint`)."""
        return fingerprint(self.certificate)

    @property
    def key_type(self) -> KeyType:
        """The type of the private key."""
        return KeyType.of(self.private_key)

    @property
    def not_valid_before(self) -> dt.datetime:
        """Start of validity (UTC)."""
        return self.certificate.not_valid_before_utc

    @property
    def not_valid_after(self) -> dt.datetime:
        """End of validity (UTC)."""
        return self.certificate.not_valid_after_utc

    @property
    def is_self_signed(self) -> bool:
        """Whether the certificate is its own issuer."""
        return not self.chain and self.certificate.issuer == self.certificate.subject

    def days_left(self, *, now: dt.datetime | None = None) -> int:
        """Whole days until the certificate expires (negative once expired)."""
        return days_left(self.certificate, now=now)

    def check_validity(self, *, now: dt.datetime | None = None) -> None:
        """Raise :class:`~rtckit.errors.CertificateExpiredError` unless valid *now*."""
        check_validity(self.certificate, now=now)

    # PEM

    def cert_pem(self) -> bytes:
        """The certificate alone, PEM."""
        return _cert_pem(self.certificate)

    def fullchain_pem(self) -> bytes:
        """The certificate followed by its issuers, PEM."""
        return _cert_pem(self.certificate, *self.chain)

    def key_pem(self, *, password: str | bytes | None = None) -> bytes:
        """The private key, PKCS#8 PEM, encrypted if *password* is given."""
        secret = password.encode() if isinstance(password, str) else password
        return _key_pem(self.private_key, secret)

    def save(self, directory: str | os.PathLike[str]) -> CertificateFiles:
        """Write :data:`CERT_FILE`, :data:`KEY_FILE` (mode ``0600``) and :data:`FULLCHAIN_FILE`.

        Existing files are replaced (each atomically). The directory is created if needed.
        """
        folder = Path(directory)
        files = CertificateFiles(
            cert=folder / CERT_FILE, key=folder / KEY_FILE, fullchain=folder / FULLCHAIN_FILE
        )
        _write_file(files.key, self.key_pem(), private=True)
        _write_file(files.cert, self.cert_pem())
        _write_file(files.fullchain, self.fullchain_pem())
        return files

    @classmethod
    def from_files(
        cls,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        password: str | bytes | None = None,
    ) -> IssuedCertificate:
        """Load a certificate (or a chain, leaf first) and its private key from files."""
        certs = load_certificates(cert_file)
        key = load_private_key(key_file, password=password)
        _check_key_matches(certs[0], key, f"{cert_file} and {key_file}")
        return cls(certificate=certs[0], private_key=key, chain=tuple(certs[1:]))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> IssuedCertificate:
        """Load what :meth:`save` wrote in *directory*."""
        folder = Path(directory)
        cert_file = folder / FULLCHAIN_FILE
        if not cert_file.exists():
            cert_file = folder / CERT_FILE
        return cls.from_files(cert_file, folder / KEY_FILE)

    # PKCS#12

    def to_pkcs12(self, password: str | bytes, *, alias: str | None = None) -> bytes:
        """Return a PKCS#12 keystore holding key, certificate and issuers.

        The keystore is encrypted with PBES2 (PBKDF2-SHA256, AES-256-CBC) and MACed with
        HMAC-SHA256, which Java 11.0.12+ ``keytool``, OpenSSL 3 and browsers read. *alias*
        (the "friendly name"; by default :attr:`alias` or ``"rtckit"``) is the keytool alias.
        """
        secret = _pkcs12_password(password)
        name = alias if alias is not None else (self.alias or "rtckit")
        if not name:
            raise CertificateError("a PKCS#12 alias cannot be empty")
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(PKCS12_KDF_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(secret)
        )
        return pkcs12.serialize_key_and_certificates(
            name.encode(), self.private_key, self.certificate, list(self.chain), encryption
        )

    def save_pkcs12(
        self,
        path: str | os.PathLike[str],
        password: str | bytes,
        *,
        alias: str | None = None,
    ) -> Path:
        """Write :meth:`to_pkcs12` to *path* (mode ``0600``) and return the path."""
        return _write_file(Path(path), self.to_pkcs12(password, alias=alias), private=True)

    @classmethod
    def from_pkcs12(
        cls, data: bytes, password: str | bytes, *, source: str = "PKCS#12 keystore"
    ) -> IssuedCertificate:
        """Read a PKCS#12 keystore holding one private key and its certificate chain.

        *source* names the keystore in error messages.
        """
        secret = _pkcs12_password(password)
        try:
            loaded = pkcs12.load_pkcs12(data, secret)
        except ValueError:
            raise CertificateError(
                f"cannot open {source}: wrong password, or not a PKCS#12 keystore"
            ) from None
        if loaded.key is None or loaded.cert is None:
            raise CertificateError(f"{source} holds no private key with a certificate")
        key = _check_private_key(loaded.key, source)
        friendly = loaded.cert.friendly_name
        return cls(
            certificate=loaded.cert.certificate,
            private_key=key,
            chain=tuple(extra.certificate for extra in loaded.additional_certs),
            alias=friendly.decode(errors="replace") if friendly else None,
        )

    @classmethod
    def load_pkcs12(cls, path: str | os.PathLike[str], password: str | bytes) -> IssuedCertificate:
        """Read a PKCS#12 keystore file (see :meth:`from_pkcs12`)."""
        file = Path(path)
        return cls.from_pkcs12(
            _read(file, "PKCS#12 keystore"), password, source=f"PKCS#12 keystore {file}"
        )

    # TLS

    def server_ssl_context(self, *, check: bool = True) -> ssl.SSLContext:
        """Return a server :class:`ssl.SSLContext` (see :func:`server_ssl_context`)."""
        return server_ssl_context(self, check=check)


def _pkcs12_password(password: str | bytes) -> bytes:
    secret = password.encode() if isinstance(password, str) else password
    if not secret:
        raise CertificateError("a PKCS#12 keystore needs a non-empty password")
    return secret


# --- generation -------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _leaf_builder(
    spec: CertificateSpec, key: PrivateKey, now: dt.datetime, not_after: dt.datetime
) -> x509.CertificateBuilder:
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(spec.subject_common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(spec.general_names()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def create_self_signed(
    spec: CertificateSpec | None = None, *, now: dt.datetime | None = None
) -> IssuedCertificate:
    """Return a new self-signed server certificate for *spec* (default: this machine only).

    Each browser warns once about it; a :class:`LocalCA` avoids that. *now* sets the start
    of validity (tests use it to make expired certificates).
    """
    spec = spec if spec is not None else CertificateSpec()
    moment = _utc_now(now)
    key = spec.key_type.generate()
    builder = _leaf_builder(spec, key, moment, moment + dt.timedelta(days=spec.days))
    builder = builder.issuer_name(_name(spec.subject_common_name)).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
    )
    certificate = builder.sign(key, hashes.SHA256())
    return IssuedCertificate(certificate=certificate, private_key=key)


# --- local CA ---------------------------------------------------------------------------------


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


# --- TLS contexts -----------------------------------------------------------------------------


def server_ssl_context(certificate: IssuedCertificate, *, check: bool = True) -> ssl.SSLContext:
    """Return a TLS server context (TLS 1.2 or newer) presenting *certificate* and its chain.

    With *check* (the default) an expired or not yet valid certificate raises
    :class:`~rtckit.errors.CertificateExpiredError` here rather than as a browser error later.
    :mod:`ssl` only loads keys from files: the key goes through a private temporary directory,
    encrypted with a one-time password, and is deleted before this returns.
    """
    if check:
        certificate.check_validity()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    password = secrets.token_hex(32)
    key_pem = certificate.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(password.encode()),
    )
    with tempfile.TemporaryDirectory(prefix="rtckit-tls-") as folder:
        chain_file = _write_file(Path(folder, FULLCHAIN_FILE), certificate.fullchain_pem())
        key_file = _write_file(Path(folder, KEY_FILE), key_pem, private=True)
        try:
            context.load_cert_chain(chain_file, key_file, password=password)
        except ssl.SSLError as exc:
            raise CertificateError(f"cannot use the certificate for TLS: {exc}") from exc
    return context


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

    *trust* is a :class:`LocalCA`, a certificate, an :class:`IssuedCertificate` (its root
    issuer, or itself when self-signed), the path of a PEM or DER certificate file (every
    certificate in it, as :func:`load_certificates` reads them), or several of them. Host
    names are checked, and OpenSSL's strict X.509 checks are on (as Python 3.13 does by
    default).
    """
    certificates = list(_trusted_certificates(trust))
    if not certificates:
        raise CertificateError("a client context needs at least one certificate to trust")
    cadata = _cert_pem(*certificates).decode("ascii")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata)
    except ssl.SSLError as exc:
        raise CertificateError(f"cannot trust these certificates: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


# --- this machine's addresses -----------------------------------------------------------------


def _proc_ipv4(text: str) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("|--", "+--")):
            last = stripped[3:].split()[0]
        elif stripped == "/32 host LOCAL" and last is not None:
            with contextlib.suppress(ValueError):
                address = ipaddress.IPv4Address(last)
                if address not in found:
                    found.append(address)
    return found


_IFA_F_SKIP = 0x01 | 0x08 | 0x40  # temporary (privacy), DAD failed, tentative


def _proc_ipv6(text: str) -> list[ipaddress.IPv6Address]:
    found: list[ipaddress.IPv6Address] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        try:
            address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            flags = int(fields[4], 16)
        except ValueError:
            continue
        if not flags & _IFA_F_SKIP and address not in found:
            found.append(address)
    return found


def _resolver_addresses() -> list[IPAddress]:
    hostname = socket.gethostname()
    if not hostname or hostname.endswith(".local"):
        return []  # ".local" names resolve by multicast DNS: that would send packets
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    found: list[IPAddress] = []
    for info in infos:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in found:
                found.append(address)
    return found


def lan_addresses(*, include_loopback: bool = False) -> list[IPAddress]:
    """Return this machine's IP addresses that other devices may reach, IPv4 first.

    Sends nothing on the network. On Linux it reads ``/proc/net/fib_trie`` and
    ``/proc/net/if_inet6``; elsewhere it resolves the machine's own name (which the system
    answers from ``/etc/hosts`` or its own records; ``.local`` names are skipped because they
    would need multicast DNS). Link-local and temporary IPv6 addresses are left out: they make
    poor certificate names. Returns ``[]`` when nothing can be found.
    """
    addresses: list[IPAddress] = []
    try:
        addresses += _proc_ipv4(Path("/proc/net/fib_trie").read_text())
        addresses += _proc_ipv6(Path("/proc/net/if_inet6").read_text())
        from_proc = True
    except OSError:
        from_proc = False
    if not from_proc:
        addresses = _resolver_addresses()
    result = [
        address
        for address in addresses
        if not address.is_link_local
        and not address.is_unspecified
        and not address.is_multicast
        and (include_loopback or not address.is_loopback)
    ]
    return sorted(dict.fromkeys(result), key=lambda a: (a.version, a.packed))


def default_dev_hosts() -> tuple[str, ...]:
    """:data:`DEFAULT_HOSTS` plus :func:`lan_addresses`: what a phone on the LAN may use."""
    return DEFAULT_HOSTS + tuple(str(address) for address in lan_addresses())


# --- development certificates -----------------------------------------------------------------


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

    The CA (:data:`CA_CERT_FILE`, :data:`CA_KEY_FILE`, :data:`CA_DER_FILE`) is created only if
    missing or expiring within *renew_within_days* (devices must then trust the new one). The
    server certificate (:data:`CERT_FILE`, :data:`KEY_FILE`, :data:`FULLCHAIN_FILE`) is issued
    again when *hosts* or *key_type* changed, when the CA changed, or when it expires within
    *renew_within_days*. A damaged CA raises :class:`~rtckit.errors.CertificateError` rather
    than being replaced behind the back of devices that trust it.
    Not safe for two processes at once on the same directory.
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
