"""``rtckit doctor`` against a real coturn on loopback: green, wrong secret, denied peers, and
an ICE configuration file with per-server credentials (the rest is in tests/test_doctor.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from rtckit.coturn import CoturnConfig, CoturnProcess, run_coturn
from rtckit.ice.doctor import (
    DoctorConfig,
    format_report,
    probe_server,
    run_doctor,
)
from rtckit.ice.turn import TurnRestAuth
from rtckit.testing import require_executable
from rtckit.testing.coturn import free_port
from rtckit.testing.natlab import LabTls, lab_tls

SECRET = "loop-secret"


@attrs.frozen(kw_only=True)
class Loopback:
    config: CoturnConfig
    process: CoturnProcess
    tls: LabTls

    def uri(self, scheme: str, transport: str | None = None) -> str:
        if scheme == "stuns":  # coturn answers STUN on its TLS port too; clients are not told
            return f"stuns:127.0.0.1:{self.config.tls_listening_port}"
        return self.config.uri(scheme, transport).format(explicit=True)


@contextlib.asynccontextmanager
async def _loopback_coturn(tmp_path: Path, **changes: Any) -> AsyncIterator[Loopback]:
    require_executable("turnserver", hint="apt-get install coturn")
    low = random.randrange(20000, 60000, 100)
    tls = lab_tls(tmp_path, "127.0.0.1")
    config = CoturnConfig.from_ice(
        TurnRestAuth(secrets=[SECRET]),
        realm="lab.test",
        listening_port=free_port(),
        tls_listening_port=free_port(),
        min_port=low,
        max_port=low + 99,
        tls_cert=tls.cert_file,
        tls_key=tls.key_file,
        **changes,
    )
    async with run_coturn(config) as process:
        yield Loopback(config=config, process=process, tls=tls)


def _credential(secret: str = SECRET) -> tuple[str, str]:
    issued = TurnRestAuth(secrets=[secret], ttl=600).issue("rtckit-doctor")
    return issued.username, issued.password


@pytest.fixture
async def loopback_coturn(tmp_path: Path) -> AsyncIterator[Loopback]:
    async with _loopback_coturn(tmp_path) as ct:
        yield ct


async def test_loopback_coturn_green(tmp_path: Path) -> None:
    async with _loopback_coturn(tmp_path, allow_loopback_peers=True) as ct:
        username, password = _credential()
        config = DoctorConfig(
            timeout=3, username=username, credential=password, ca_file=str(ct.tls.ca_file)
        )
        uris = [ct.uri("stuns"), ct.uri("turn", "udp"), ct.uri("turn", "tcp"), ct.uri("turns")]
        report = await run_doctor(uris, config)
    assert [r.verdict for r in report.results] == ["ok"] * 4, format_report(report)
    assert report.relay_available
    assert report.ok
    for result in report.results[1:]:
        assert result.relayed_address is not None
        assert result.relayed_address[0] == "127.0.0.1"
    assert "relay path available" in format_report(report)


def test_cli_ice_config_with_per_server_credentials(tmp_path: Path) -> None:
    """An ICE configuration file: each TURN server probed with its own credential."""

    async def scenario() -> tuple[int, str]:
        async with _loopback_coturn(tmp_path, allow_loopback_peers=True) as ct:
            # Exactly what the clients of this coturn get, TLS URI included.
            ice = ct.config.ice_config(user="alice")
            path = tmp_path / "ice.json"
            path.write_text(ice.to_json())
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
            env["SSL_CERT_FILE"] = str(ct.tls.ca_file)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "rtckit", "doctor", "--ice-config", str(path), "--quiet",
                env=env,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(30):
                out, _ = await proc.communicate()
            return proc.returncode or 0, out.decode()

    status, output = asyncio.run(scenario())
    assert status == 0, output
    assert "relay path available" in output


async def test_loopback_coturn_green_wrong_and_denied(loopback_coturn: Loopback) -> None:
    ct = loopback_coturn
    username, password = _credential()
    good = DoctorConfig(timeout=3, username=username, credential=password)
    uris = [ct.uri("stun"), ct.uri("turn", "udp"), ct.uri("turn", "tcp")]
    lines: list[str] = []
    report = await run_doctor(uris, good, progress=lines.append)
    stun, turn_udp, turn_tcp = report.results
    assert stun.ok
    assert stun.reflexive_address is not None
    assert stun.reflexive_address[0] == "127.0.0.1"
    # coturn on loopback refuses to relay to loopback peers (our own reflexive address):
    # the allocation works, the permission is the 403 diagnosis.
    for result in (turn_udp, turn_tcp):
        assert result.relayed_address is not None
        assert not result.ok
        assert result.error_code == 403
        assert "peer address" in result.cause
    assert not report.relay_available
    assert not report.ok
    assert sum(line.startswith("probing") for line in lines) == 3

    username, _ = _credential("wrong-secret")
    bad = DoctorConfig(timeout=3, username=username, credential="nope")
    result = await probe_server(ct.uri("turn", "udp"), bad)
    assert result.error_code == 401
    assert "clock skew" in result.cause
    table = format_report(await run_doctor([ct.uri("turn", "udp")], bad))
    assert "401" in table
    assert "NO relay path available" in table
