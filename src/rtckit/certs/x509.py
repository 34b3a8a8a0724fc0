"""X.509 certificates and keys: make, read, write, check (no I/O other than the files named).

* :class:`CertificateSpec` and :func:`create_self_signed`: one certificate that signs itself
  (each browser warns once); :class:`IssuedCertificate` holds a certificate, its key and its
  issuers;
* PEM files (private keys written with mode ``0600``), password-protected PKCS#12 keystores
  (the format Java's ``keytool`` reads), SHA-256 fingerprints, validity checks;
* :func:`server_ssl_context`: the TLS server context for a certificate.

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
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rtckit.certs.tls import server_context
from rtckit.errors import CertificateError, CertificateExpiredError

if TYPE_CHECKING:
    from rtckit.net import IPAddress

__all__ = [
    "CERT_FILE",
    "DEFAULT_DAYS",
    "DEFAULT_HOSTS",
    "FULLCHAIN_FILE",
    "KEYSTORE_FILE",
    "KEY_FILE",
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
]

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
"""The private keys rtckit makes and accepts, RSA or ECDSA (every browser supports both)."""


DEFAULT_DAYS = 700
"""Validity of a server certificate, in days (as ``keytool -validity 700`` in the HTTPS how-to).

Apple platforms refuse TLS server certificates valid for more than 825 days, even from a CA the
user trusts, so keep ``days`` at most 825 for certificates that iPhones and Macs must accept.
"""


DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""The hosts of a certificate for this machine only."""

PKCS12_KDF_ROUNDS = 100_000
"""PBKDF2 iterations protecting PKCS#12 keystores (Java's default is 10 000)."""

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

    Made by :func:`create_self_signed` and :meth:`~rtckit.certs.ca.LocalCA.issue`, or loaded with
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

    Each browser warns once about it; a :class:`~rtckit.certs.ca.LocalCA` avoids that. *now* sets
    the start of validity (tests use it to make expired certificates).
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


def server_ssl_context(certificate: IssuedCertificate, *, check: bool = True) -> ssl.SSLContext:
    """Return a TLS server context (TLS 1.2 or newer) presenting *certificate* and its chain.

    With *check* (the default) an expired or not yet valid certificate raises
    :class:`~rtckit.errors.CertificateExpiredError` here rather than as a browser error later.
    The key reaches :mod:`ssl` as :func:`rtckit.certs.tls.server_context` says.
    """
    if check:
        certificate.check_validity()
    return server_context((certificate.certificate, *certificate.chain), certificate.private_key)
