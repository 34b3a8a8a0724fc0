"""Certificates of :mod:`rtckit.certs` read by other tools installed on the system (the
unit tests, with ``openssl``, are in tests/test_certs.py, whose ``ca`` and ``leaf`` fixtures
this module shares)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from rtckit.certs import IssuedCertificate
from rtckit.testing import require_executable
from test_certs import ca as ca
from test_certs import leaf as leaf


def test_pkcs12_read_by_java_keytool(leaf: IssuedCertificate, tmp_path: Path) -> None:
    keytool = require_executable("keytool", hint="apt-get install default-jre-headless")
    path = leaf.save_pkcs12(tmp_path / "keystore.p12", "s3cret-pw", alias="webapp")
    command = [keytool, "-list", "-v", "-keystore", str(path), "-storetype", "PKCS12"]
    result = subprocess.run(
        [*command, "-storepass", "s3cret-pw"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Alias name: webapp" in result.stdout
    assert "Entry type: PrivateKeyEntry" in result.stdout
    assert "Certificate chain length: 2" in result.stdout
    assert leaf.fingerprint in result.stdout
