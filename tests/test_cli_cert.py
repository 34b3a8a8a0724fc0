"""``rtckit cert``: the files it writes load back, and its errors are clear."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rtckit.certs import (
    CertificateSpec,
    IssuedCertificate,
    KeyType,
    LocalCA,
    create_self_signed,
    load_certificates,
)
from rtckit.cli import build_parser, main
from rtckit.testing import require_executable

SRC = Path(__file__).resolve().parent.parent / "src"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_cert_is_a_listed_command() -> None:
    assert "cert" in build_parser().format_help()


def test_readme_quickstart_command(tmp_path: Path) -> None:
    """The README's first command, as a user types it (run through ``python -m rtckit``)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    readme = "rtckit cert create --host localhost --host 127.0.0.1 --out certs"
    result = subprocess.run(
        [sys.executable, "-m", *readme.split()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out_dir = tmp_path / "certs"
    issued = IssuedCertificate.load(out_dir)
    assert issued.hosts == ("localhost", "127.0.0.1")
    assert issued.key_type is KeyType.RSA
    assert issued.is_self_signed
    assert 699 <= issued.days_left() <= 700
    assert stat.S_IMODE((out_dir / "key.pem").stat().st_mode) == 0o600
    assert issued.fingerprint in result.stdout
    assert str(Path("certs") / "cert.pem") in result.stdout
    assert "self-signed" in result.stdout
    openssl = require_executable("openssl", hint="apt-get install openssl")
    text = subprocess.run(
        [openssl, "x509", "-noout", "-text", "-in", str(out_dir / "cert.pem")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "DNS:localhost, IP Address:127.0.0.1" in text
    assert "Public-Key: (2048 bit)" in text


def test_create_with_local_ca_then_reuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "ca"
    argv = ["cert", "create", "--key-type", "ec", "--ca", str(ca_dir), "--host", "pc.lan.test"]
    status, out, _ = _run([*argv, "--host", "::1", "--out", str(tmp_path / "one")], capsys)
    assert status == 0
    assert f"Created a local CA in {ca_dir}" in out
    ca = LocalCA.load(ca_dir)
    assert ca.fingerprint in out
    assert "update-ca-certificates" in out
    assert str(ca_dir / "ca.crt") in out
    one = IssuedCertificate.load(tmp_path / "one")
    assert one.hosts == ("pc.lan.test", "::1")
    assert one.chain == (ca.certificate,)
    one.certificate.verify_directly_issued_by(ca.certificate)

    status, out, _ = _run([*argv, "--out", str(tmp_path / "two"), "--days", "30"], capsys)
    assert status == 0
    assert f"Using the local CA in {ca_dir}" in out
    two = IssuedCertificate.load(tmp_path / "two")
    two.certificate.verify_directly_issued_by(ca.certificate)
    assert LocalCA.load(ca_dir).fingerprint == ca.fingerprint
    assert 29 <= two.days_left() <= 30


def test_create_writes_a_pkcs12_keystore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTCKIT_TEST_P12", "keystore-pw")
    argv = ["cert", "create", "--key-type", "ec", "--out", str(tmp_path)]
    status, out, _ = _run(
        [*argv, "--p12-password-env", "RTCKIT_TEST_P12", "--alias", "tomcat"], capsys
    )
    assert status == 0
    keystore = tmp_path / "keystore.p12"
    assert f'{keystore} (PKCS#12, alias "tomcat")' in out
    loaded = IssuedCertificate.load_pkcs12(keystore, "keystore-pw")
    assert loaded.alias == "tomcat"
    assert loaded.certificate == IssuedCertificate.load(tmp_path).certificate

    status, out, _ = _run(
        ["cert", "create", "--key-type", "ec", "--out", str(tmp_path), "--p12-password", "pw2"],
        capsys,
    )
    assert status == 0
    assert IssuedCertificate.load_pkcs12(keystore, "pw2").alias == "rtckit"


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--host", "bad host"], "bad host 'bad host'"),
        (["--host", "localhost:8443"], "without scheme, port or path"),
        (["--days", "0"], "days must be"),
        (["--p12-password-env", "RTCKIT_TEST_UNSET_VARIABLE"], "is not set"),
        (["--alias", "web"], "--alias"),
    ],
)
def test_create_errors(
    extra: list[str],
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RTCKIT_TEST_UNSET_VARIABLE", raising=False)
    status, _, err = _run(
        ["cert", "create", "--key-type", "ec", "--out", str(tmp_path / "out"), *extra], capsys
    )
    assert status == 2
    assert says in err
    assert err.startswith("rtckit: error: ")
    assert not (tmp_path / "out" / "key.pem").exists()


def test_create_refuses_a_file_as_out_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    status, _, err = _run(["cert", "create", "--key-type", "ec", "--out", str(target)], capsys)
    assert status == 2
    assert "not a directory" in err


def test_create_rejects_two_password_options(tmp_path: Path) -> None:
    argv = ["cert", "create", "--out", str(tmp_path), "--p12-password", "a"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--p12-password-env", "B"])
    assert info.value.code == 2


def test_show_pem_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = LocalCA.create(key_type=KeyType.EC)
    issued = ca.issue(CertificateSpec(hosts=["localhost", "192.168.1.20"], key_type=KeyType.EC))
    files = issued.save(tmp_path)
    status, out, _ = _run(["cert", "show", str(files.fullchain)], capsys)
    assert status == 0
    assert f"{files.fullchain}: 2 certificates" in out
    assert "hosts:   localhost, 192.168.1.20" in out
    assert "key:     ECDSA P-256" in out
    assert "CA:      yes" in out
    assert issued.fingerprint in out
    assert ca.fingerprint in out
    assert "days left" in out
    assert f"{issued.not_valid_after:%Y-%m-%d %H:%M:%S} UTC" in out


def test_show_der_and_expired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=20)
    old = create_self_signed(CertificateSpec(days=5, key_type=KeyType.EC), now=past)
    ca_dir = tmp_path / "ca"
    LocalCA.create(key_type=KeyType.EC).save(ca_dir)
    (tmp_path / "old.pem").write_bytes(old.cert_pem())
    status, out, _ = _run(["cert", "show", str(tmp_path / "old.pem")], capsys)
    assert status == 0
    assert "(EXPIRED)" in out
    status, out, _ = _run(["cert", "show", str(ca_dir / "ca.crt")], capsys)
    assert status == 0
    assert "1 certificate\n" in out
    assert "(no subjectAltName)" in out
    assert load_certificates(ca_dir / "ca.crt")[0].subject.rfc4514_string() in out


def test_show_pkcs12(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = create_self_signed(CertificateSpec(key_type=KeyType.EC))
    keystore = issued.save_pkcs12(tmp_path / "store.p12", "pw-show", alias="shown")
    monkeypatch.setenv("RTCKIT_TEST_SHOW_PW", "pw-show")
    status, out, _ = _run(
        ["cert", "show", str(keystore), "--password-env", "RTCKIT_TEST_SHOW_PW"], capsys
    )
    assert status == 0
    assert "PKCS#12 keystore, alias 'shown'" in out
    assert issued.fingerprint in out
    status, _, err = _run(["cert", "show", str(keystore)], capsys)
    assert status == 2
    assert "give its password" in err
    status, _, err = _run(["cert", "show", str(keystore), "--password", "wrong"], capsys)
    assert status == 2
    assert "wrong password" in err


def test_show_missing_or_garbage_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(["cert", "show", str(tmp_path / "nope.pem")], capsys)
    assert status == 2
    assert "does not exist" in err
    (tmp_path / "junk.pem").write_text("not a certificate")
    status, _, err = _run(["cert", "show", str(tmp_path / "junk.pem")], capsys)
    assert status == 2
    assert "no PEM or DER certificate" in err
