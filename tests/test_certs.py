"""rtckit.certs: certificates checked by cryptography, the openssl binary and keytool."""

from __future__ import annotations

import datetime as dt
import doctest
import ipaddress
import re
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

import rtckit.certs.x509
from rtckit import CertificateError, CertificateExpiredError
from rtckit.certs import (
    CA_CERT_FILE,
    CA_DER_FILE,
    CA_KEY_FILE,
    CertificateSpec,
    IssuedCertificate,
    KeyType,
    LocalCA,
    certificate_hosts,
    check_validity,
    client_ssl_context,
    create_self_signed,
    days_left,
    ensure_dev_certificate,
    fingerprint,
    key_description,
    load_certificates,
    normalize_host,
    parse_host,
    server_ssl_context,
)
from rtckit.testing import require_executable

HOSTS = ("localhost", "127.0.0.1", "::1")
UTC = dt.UTC


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create(key_type=KeyType.EC)


@pytest.fixture(scope="module")
def leaf(ca: LocalCA) -> IssuedCertificate:
    return ca.issue(CertificateSpec(hosts=HOSTS, key_type=KeyType.EC))


@pytest.fixture(scope="module")
def rsa_self_signed() -> IssuedCertificate:
    """The only RSA key of this module (RSA generation is the slow part)."""
    return create_self_signed(CertificateSpec(hosts=["localhost", "127.0.0.1", "::1"]))


def _openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    openssl = require_executable("openssl", hint="apt-get install openssl")
    return subprocess.run(
        [openssl, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _x509_text(pem: bytes) -> str:
    result = _openssl("x509", "-noout", "-text", stdin=pem)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _openssl_date(text: str, field: str) -> dt.datetime:
    match = re.search(rf"{field}\s*:\s*(\w+\s+\d+ \d\d:\d\d:\d\d \d{{4}}) GMT", text)
    assert match, text
    return dt.datetime.strptime(" ".join(match.group(1).split()), "%b %d %H:%M:%S %Y").replace(
        tzinfo=UTC
    )


# --- hosts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost", "localhost"),
        ("LocalHost.", "localhost"),
        (" my-pc.lan ", "my-pc.lan"),
        ("*.example.test", "*.example.test"),
        ("127.0.0.1", "127.0.0.1"),
        ("192.168.1.20", "192.168.1.20"),
        ("::1", "::1"),
        ("[0:0::1]", "::1"),
        ("FD00::2", "fd00::2"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_host_normalization(text: str, expected: str) -> None:
    assert normalize_host(text) == expected


def test_parse_host_kinds() -> None:
    assert parse_host("localhost") == x509.DNSName("localhost")
    assert parse_host("10.0.0.1") == x509.IPAddress(ipaddress.IPv4Address("10.0.0.1"))
    assert parse_host("[::1]") == x509.IPAddress(ipaddress.IPv6Address("::1"))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "required"),
        ("localhost:8443", "without scheme, port or path"),
        ("https://example.test", "without scheme, port or path"),
        ("256.1.1.1", "not a valid IP address"),
        ("10.0.0", "not a valid IP address"),
        ("exa mple.test", "letters, digits"),
        ("under_score.test", "letters, digits"),
        ("-bad.test", "start or end with '-'"),
        ("a..b", "1 to 63"),
        ("x" * 64 + ".test", "1 to 63"),
        ("bücher.example", "xn--"),
        ("fe80::1%eth0", "zone"),
        ("[not-ipv6]", "not an IPv6 address"),
        ("*.test", "leftmost label"),
        ("a.*.test", "leftmost label"),
    ],
)
def test_bad_hosts_are_refused_clearly(text: str, says: str) -> None:
    with pytest.raises(CertificateError, match=re.escape(says)) as info:
        parse_host(text)
    if text:
        assert repr(text.strip()) in str(info.value) or text.strip("[]") in str(info.value)


def test_spec_normalizes_and_deduplicates() -> None:
    spec = CertificateSpec(hosts=["LOCALHOST", "localhost.", "[::1]", "::1", "127.0.0.1"])
    assert spec.hosts == ("localhost", "::1", "127.0.0.1")
    assert spec.subject_common_name == "localhost"
    assert CertificateSpec(hosts=["a" * 60 + ".test"]).subject_common_name == "rtckit"
    assert CertificateSpec(hosts=["x.test"], common_name="My app").subject_common_name == "My app"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hosts": "localhost"},
        {"hosts": []},
        {"hosts": ["ok.test", "bad host"]},
        {"days": 0},
        {"days": -5},
        {"days": True},
        {"days": 36_501},
        {"days": 1.5},
        {"key_type": "rsa"},
        {"common_name": "x" * 65},
        {"common_name": ""},
    ],
)
def test_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(CertificateError):
        CertificateSpec(**kwargs)  # type: ignore[arg-type]


# --- generated certificates, read by openssl --------------------------------------------------


def test_self_signed_rsa_seen_by_openssl(rsa_self_signed: IssuedCertificate) -> None:
    text = _x509_text(rsa_self_signed.cert_pem())
    assert "Public-Key: (2048 bit)" in text
    assert "rsaEncryption" in text
    assert "sha256WithRSAEncryption" in text
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text
    assert "CA:FALSE" in text
    assert "TLS Web Server Authentication" in text
    assert "Digital Signature, Key Encipherment" in text
    not_before = _openssl_date(text, "Not Before")
    not_after = _openssl_date(text, "Not After ")
    now = dt.datetime.now(UTC)
    assert not_before <= now <= not_before + dt.timedelta(hours=2)  # backdated one hour
    assert abs(not_after - (now + dt.timedelta(days=700))) < dt.timedelta(minutes=5)
    # cryptography agrees
    key = rsa_self_signed.private_key
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert rsa_self_signed.key_type is KeyType.RSA
    assert rsa_self_signed.is_self_signed
    assert rsa_self_signed.hosts == HOSTS
    assert key_description(rsa_self_signed.certificate) == "RSA 2048"


def test_local_ca_seen_by_openssl(ca: LocalCA) -> None:
    text = _x509_text(ca.cert_pem())
    assert re.search(r"Basic Constraints: critical\s+CA:TRUE, pathlen:0", text), text
    assert re.search(r"Key Usage: critical\s+Certificate Sign, CRL Sign", text), text
    assert "Subject Key Identifier" in text
    assert "ASN1 OID: prime256v1" in text
    assert "ecdsa-with-SHA256" in text
    assert ca.common_name.startswith("rtckit local CA ")
    assert 3649 <= ca.days_left() <= 3650


def test_leaf_from_local_ca_seen_by_openssl(
    ca: LocalCA, leaf: IssuedCertificate, tmp_path: Path
) -> None:
    text = _x509_text(leaf.cert_pem())
    assert "ASN1 OID: prime256v1" in text
    assert "Public-Key: (256 bit)" in text
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text
    assert "TLS Web Server Authentication" in text
    assert "Authority Key Identifier" in text
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    cert_file = tmp_path / "cert.pem"
    cert_file.write_bytes(leaf.cert_pem())
    result = _openssl(
        "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(ca_file), str(cert_file)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
    # and a certificate from another CA does not verify against this one
    other = LocalCA.create(key_type=KeyType.EC).issue(CertificateSpec(key_type=KeyType.EC))
    cert_file.write_bytes(other.cert_pem())
    result = _openssl("verify", "-CAfile", str(ca_file), str(cert_file))
    assert result.returncode != 0


def test_leaf_extensions(ca: LocalCA, leaf: IssuedCertificate) -> None:
    cert = leaf.certificate
    assert cert.issuer == ca.certificate.subject
    cert.verify_directly_issued_by(ca.certificate)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert not basic.value.ca
    assert isinstance(leaf.private_key, ec.EllipticCurvePrivateKey)
    assert leaf.key_type is KeyType.EC
    assert leaf.chain == (ca.certificate,)
    assert not leaf.is_self_signed
    assert 699 <= leaf.days_left() <= 700
    ca_basic = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_basic.critical
    assert ca_basic.value.ca
    assert ca_basic.value.path_length == 0


def test_fingerprint_matches_openssl(leaf: IssuedCertificate) -> None:
    result = _openssl("x509", "-noout", "-fingerprint", "-sha256", stdin=leaf.cert_pem())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split("=", 1)[1] == leaf.fingerprint
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint(leaf.certificate))


def test_name_constraints(tmp_path: Path) -> None:
    constrained = LocalCA.create(
        key_type=KeyType.EC, permitted=["localhost", "lan.test", "127.0.0.0/8", "::1"]
    )
    extension = constrained.certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert extension.critical
    ok = constrained.issue(
        CertificateSpec(hosts=["localhost", "pc.lan.test", "127.0.0.1", "::1"], key_type=KeyType.EC)
    )
    assert ok.hosts == ("localhost", "pc.lan.test", "127.0.0.1", "::1")
    for host in ("example.test", "10.0.0.1", "fd00::2", "notlan.test"):
        with pytest.raises(CertificateError, match="name constraints"):
            constrained.issue(CertificateSpec(hosts=[host], key_type=KeyType.EC))
    (tmp_path / "ca.pem").write_bytes(constrained.cert_pem())
    (tmp_path / "cert.pem").write_bytes(ok.cert_pem())
    result = _openssl(
        "verify", "-x509_strict", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "cert.pem")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(CertificateError, match="bad name constraint"):
        LocalCA.create(key_type=KeyType.EC, permitted=["10.0.0.0/33"])
    with pytest.raises(CertificateError):
        LocalCA.create(key_type=KeyType.EC, permitted=[])


# --- validity ---------------------------------------------------------------------------------


def test_expired_certificate() -> None:
    past = dt.datetime.now(UTC) - dt.timedelta(days=30)
    old = create_self_signed(
        CertificateSpec(hosts=["localhost"], days=2, key_type=KeyType.EC), now=past
    )
    with pytest.raises(CertificateExpiredError, match=r"expired on \d{4}-\d\d-\d\d") as info:
        old.check_validity()
    assert f"{old.not_valid_after:%Y-%m-%d}" in str(info.value)
    assert isinstance(info.value, CertificateError)
    assert old.days_left() < -25
    old.check_validity(now=past + dt.timedelta(days=1))  # valid back then
    assert days_left(old.certificate, now=past) == 1
    with pytest.raises(CertificateExpiredError):
        server_ssl_context(old)
    assert isinstance(server_ssl_context(old, check=False), ssl.SSLContext)


def test_not_yet_valid_certificate() -> None:
    future = dt.datetime.now(UTC) + dt.timedelta(days=3)
    early = create_self_signed(
        CertificateSpec(hosts=["localhost"], key_type=KeyType.EC), now=future
    )
    with pytest.raises(CertificateExpiredError, match="not valid yet: valid from"):
        check_validity(early.certificate)
    with pytest.raises(CertificateError, match="timezone-aware"):
        check_validity(early.certificate, now=dt.datetime(2030, 1, 1))


def test_expired_ca_cannot_issue() -> None:
    past = dt.datetime.now(UTC) - dt.timedelta(days=10)
    old_ca = LocalCA.create(key_type=KeyType.EC, days=1, now=past)
    with pytest.raises(CertificateExpiredError):
        old_ca.issue(CertificateSpec(key_type=KeyType.EC))


def test_leaf_never_outlives_its_ca() -> None:
    short_ca = LocalCA.create(key_type=KeyType.EC, days=10)
    issued = short_ca.issue(CertificateSpec(key_type=KeyType.EC, days=700))
    assert issued.not_valid_after == short_ca.certificate.not_valid_after_utc


# --- files ------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_pem_files_round_trip(leaf: IssuedCertificate, tmp_path: Path) -> None:
    files = leaf.save(tmp_path / "out")
    assert _mode(files.key) == 0o600
    assert not _mode(files.cert) & 0o022
    assert len(load_certificates(files.fullchain)) == 2
    assert load_certificates(files.cert) == [leaf.certificate]
    loaded = IssuedCertificate.load(tmp_path / "out")
    assert loaded == leaf
    assert loaded.fingerprint == leaf.fingerprint
    assert loaded.chain == leaf.chain
    alone = IssuedCertificate.from_files(files.cert, files.key)
    assert alone.chain == ()
    # saving again replaces the files and keeps the key private
    files.key.chmod(0o644)
    leaf.save(tmp_path / "out")
    assert _mode(files.key) == 0o600
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_encrypted_key_file(leaf: IssuedCertificate, tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(leaf.key_pem(password="pw-123456"))
    cert_file = tmp_path / "fullchain.pem"
    cert_file.write_bytes(leaf.fullchain_pem())
    assert IssuedCertificate.from_files(cert_file, key_file, password="pw-123456") == leaf
    with pytest.raises(CertificateError, match="encrypted, give its password"):
        IssuedCertificate.from_files(cert_file, key_file)
    with pytest.raises(CertificateError, match="password is wrong"):
        IssuedCertificate.from_files(cert_file, key_file, password="nope")


def test_file_errors(leaf: IssuedCertificate, tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"does not exist"):
        IssuedCertificate.load(tmp_path)
    with pytest.raises(CertificateError, match=r"does not exist"):
        load_certificates(tmp_path / "nothing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"hello")
    with pytest.raises(CertificateError, match="no PEM or DER certificate"):
        load_certificates(garbage)
    with pytest.raises(CertificateError, match="it holds a private key"):
        load_certificates(leaf.save(tmp_path / "saved").key)
    other = create_self_signed(CertificateSpec(key_type=KeyType.EC))
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem())
    (tmp_path / "key.pem").write_bytes(other.key_pem())
    with pytest.raises(CertificateError, match="does not belong"):
        IssuedCertificate.load(tmp_path)
    with pytest.raises(CertificateError, match="does not belong"):
        IssuedCertificate(certificate=leaf.certificate, private_key=other.private_key)


def test_local_ca_files(ca: LocalCA, tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    assert not LocalCA.exists(folder)
    with pytest.raises(CertificateError, match="no local CA in"):
        LocalCA.load(folder)
    pem = ca.save(folder)
    assert pem == folder / CA_CERT_FILE
    assert _mode(folder / CA_KEY_FILE) == 0o600
    assert load_certificates(folder / CA_DER_FILE) == [ca.certificate]
    loaded = LocalCA.load(folder)
    assert loaded.fingerprint == ca.fingerprint
    assert LocalCA.load_or_create(folder).fingerprint == ca.fingerprint
    fresh = LocalCA.load_or_create(tmp_path / "fresh", key_type=KeyType.EC)
    assert LocalCA.load_or_create(tmp_path / "fresh").fingerprint == fresh.fingerprint


def test_a_leaf_is_not_a_ca(leaf: IssuedCertificate) -> None:
    with pytest.raises(CertificateError, match="not a CA certificate"):
        LocalCA(certificate=leaf.certificate, private_key=leaf.private_key)


# --- PKCS#12 ----------------------------------------------------------------------------------


def test_pkcs12_round_trip(leaf: IssuedCertificate, tmp_path: Path) -> None:
    path = leaf.save_pkcs12(tmp_path / "keystore.p12", "s3cret-pw", alias="web")
    assert _mode(path) == 0o600
    loaded = IssuedCertificate.load_pkcs12(path, "s3cret-pw")
    assert loaded.alias == "web"
    assert loaded.certificate == leaf.certificate
    assert loaded.chain == leaf.chain
    assert loaded.key_pem() == leaf.key_pem()
    # the alias travels on: writing it again keeps it unless told otherwise
    again = IssuedCertificate.from_pkcs12(loaded.to_pkcs12(b"other-pw"), b"other-pw")
    assert again.alias == "web"


def test_pkcs12_read_by_openssl(leaf: IssuedCertificate, tmp_path: Path) -> None:
    path = leaf.save_pkcs12(tmp_path / "keystore.p12", "s3cret-pw", alias="my-alias")
    result = _openssl("pkcs12", "-info", "-nokeys", "-in", str(path), "-passin", "pass:s3cret-pw")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "friendlyName: my-alias" in out
    assert "PBES2, PBKDF2, AES-256-CBC" in out
    assert "MAC: sha256" in out
    assert out.count("BEGIN CERTIFICATE") == 2
    wrong = _openssl("pkcs12", "-info", "-nokeys", "-in", str(path), "-passin", "pass:wrong")
    assert wrong.returncode != 0


def test_pkcs12_errors(leaf: IssuedCertificate, tmp_path: Path) -> None:
    data = leaf.to_pkcs12("right-pw")
    with pytest.raises(CertificateError, match="wrong password"):
        IssuedCertificate.from_pkcs12(data, "wrong-pw")
    with pytest.raises(CertificateError, match="wrong password"):
        IssuedCertificate.from_pkcs12(b"not a keystore", "right-pw")
    with pytest.raises(CertificateError, match="non-empty password"):
        leaf.to_pkcs12("")
    with pytest.raises(CertificateError, match="alias cannot be empty"):
        leaf.to_pkcs12("pw", alias="")
    missing = tmp_path / "missing.p12"
    with pytest.raises(CertificateError, match="does not exist"):
        IssuedCertificate.load_pkcs12(missing, "pw")
    path = tmp_path / "keystore.p12"
    path.write_bytes(data)
    with pytest.raises(CertificateError, match=re.escape(str(path))):
        IssuedCertificate.load_pkcs12(path, "wrong-pw")


# --- TLS --------------------------------------------------------------------------------------


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str
) -> x509.Certificate:
    """Run a TLS handshake in memory; return the certificate the client saw."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            der = client_side.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der)
    raise AssertionError("TLS handshake did not finish")


def test_tls_handshake_trusting_only_the_ca(ca: LocalCA, leaf: IssuedCertificate) -> None:
    server = leaf.server_ssl_context()
    client = ca.client_ssl_context()
    assert client.check_hostname
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.verify_flags & ssl.VERIFY_X509_STRICT
    for name in ("localhost", "127.0.0.1", "::1"):
        assert _handshake(server, client, name) == leaf.certificate
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(server, client, "example.test")
    stranger = client_ssl_context(LocalCA.create(key_type=KeyType.EC))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, stranger, "localhost")


def test_tls_handshake_self_signed(rsa_self_signed: IssuedCertificate) -> None:
    client = client_ssl_context(rsa_self_signed)  # trust that one certificate
    seen = _handshake(rsa_self_signed.server_ssl_context(), client, "localhost")
    assert seen == rsa_self_signed.certificate


def test_client_context_needs_something_to_trust() -> None:
    with pytest.raises(CertificateError, match="at least one"):
        client_ssl_context([])
    with pytest.raises(CertificateError, match="not a certificate"):
        client_ssl_context([42])  # type: ignore[list-item]


def test_client_context_trusting_a_certificate_file(
    ca: LocalCA, leaf: IssuedCertificate, tmp_path: Path
) -> None:
    """A path (string or Path) is a file of certificates to trust, not a list of characters."""
    ca.save(tmp_path / "ca")
    ca_file = tmp_path / "ca" / CA_CERT_FILE
    server = leaf.server_ssl_context()
    for trust in (str(ca_file), ca_file, [str(ca_file)]):
        client = client_ssl_context(trust)
        assert _handshake(server, client, "localhost") == leaf.certificate
    with pytest.raises(CertificateError, match=r"missing\.pem"):
        client_ssl_context(str(tmp_path / "missing.pem"))


# --- development certificates -----------------------------------------------------------------


def test_ensure_dev_certificate_creates_then_reuses(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    first = ensure_dev_certificate(folder, HOSTS, key_type=KeyType.EC)
    assert first.created_ca
    assert first.renewed
    assert first.certificate.hosts == HOSTS
    assert first.ca_file == folder / CA_CERT_FILE
    assert first.files.key.exists()
    first.certificate.certificate.verify_directly_issued_by(first.ca.certificate)
    assert isinstance(first.server_ssl_context(), ssl.SSLContext)

    again = ensure_dev_certificate(folder, ["::1", "LOCALHOST", "127.0.0.1"], key_type=KeyType.EC)
    assert not again.created_ca
    assert not again.renewed
    assert again.certificate.fingerprint == first.certificate.fingerprint

    more = ensure_dev_certificate(folder, [*HOSTS, "192.168.1.20"], key_type=KeyType.EC)
    assert not more.created_ca
    assert more.renewed
    assert more.ca.fingerprint == first.ca.fingerprint
    assert "192.168.1.20" in IssuedCertificate.load(folder).hosts


def test_ensure_dev_certificate_renews_near_expiry(tmp_path: Path) -> None:
    first = ensure_dev_certificate(tmp_path, HOSTS, key_type=KeyType.EC, days=100)
    later = first.certificate.not_valid_after - dt.timedelta(days=10)
    renewed = ensure_dev_certificate(
        tmp_path, HOSTS, key_type=KeyType.EC, days=100, renew_within_days=30, now=later
    )
    assert renewed.renewed
    assert not renewed.created_ca
    assert renewed.certificate.not_valid_after > first.certificate.not_valid_after
    kept = ensure_dev_certificate(
        tmp_path, HOSTS, key_type=KeyType.EC, days=100, renew_within_days=5, now=later
    )
    assert not kept.renewed


def test_ensure_dev_certificate_reissues_for_another_ca_or_damage(tmp_path: Path) -> None:
    first = ensure_dev_certificate(tmp_path, HOSTS, key_type=KeyType.EC)
    LocalCA.create(key_type=KeyType.EC).save(tmp_path)  # someone replaced the CA
    second = ensure_dev_certificate(tmp_path, HOSTS, key_type=KeyType.EC)
    assert second.renewed
    assert second.ca.fingerprint != first.ca.fingerprint
    second.certificate.certificate.verify_directly_issued_by(second.ca.certificate)
    (tmp_path / "cert.pem").write_text("damaged")
    (tmp_path / "fullchain.pem").unlink()
    third = ensure_dev_certificate(tmp_path, HOSTS, key_type=KeyType.EC)
    assert third.renewed
    assert third.ca.fingerprint == second.ca.fingerprint
    (tmp_path / CA_KEY_FILE).write_text("damaged")
    with pytest.raises(CertificateError):
        ensure_dev_certificate(tmp_path, HOSTS, key_type=KeyType.EC)


def test_ensure_dev_certificate_validates_arguments(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="renew_within_days"):
        ensure_dev_certificate(tmp_path, HOSTS, days=10, renew_within_days=10)
    with pytest.raises(CertificateError, match="bad host"):
        ensure_dev_certificate(tmp_path, ["no such host"])
    assert not (tmp_path / CA_CERT_FILE).exists()


def test_certificate_hosts_without_san() -> None:
    ca = LocalCA.create(key_type=KeyType.EC)
    assert certificate_hosts(ca.certificate) == ()


def test_docstring_examples() -> None:
    result = doctest.testmod(rtckit.certs.x509, raise_on_error=False)
    assert result.attempted >= 1
    assert result.failed == 0


def test_ensure_dev_certificate_replaces_an_expiring_ca_but_not_a_future_one(
    tmp_path: Path,
) -> None:
    first = ensure_dev_certificate(tmp_path, HOSTS, key_type=KeyType.EC)
    near_end = first.ca.certificate.not_valid_after_utc - dt.timedelta(days=10)
    late = ensure_dev_certificate(tmp_path, HOSTS, key_type=KeyType.EC, now=near_end)
    assert late.created_ca
    assert late.renewed
    assert late.ca.fingerprint != first.ca.fingerprint
    late.certificate.certificate.verify_directly_issued_by(late.ca.certificate)
    # a clock set before the CA's start: the CA is kept and the error names the clock
    long_ago = late.ca.certificate.not_valid_before_utc - dt.timedelta(days=1)
    with pytest.raises(CertificateExpiredError, match="check this machine's clock"):
        ensure_dev_certificate(tmp_path, HOSTS, key_type=KeyType.EC, now=long_ago)
    assert LocalCA.load(tmp_path).fingerprint == late.ca.fingerprint
