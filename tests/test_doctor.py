"""``rtckit doctor``: URI parsing, credentials, diagnoses on loopback (coturn for the rest).

The doctor's runs inside the NAT lab are in test_natlab.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from rtckit.cli import main
from rtckit.coturn import CoturnConfig, CoturnProcess, run_coturn
from rtckit.errors import ConfigurationError
from rtckit.ice import IceConfig, IceServerUri
from rtckit.ice.doctor import (
    DoctorConfig,
    DoctorServer,
    format_report,
    probe_server,
    run_doctor,
    servers_from_ice,
    with_all_transports,
)
from rtckit.ice.turn import TurnRestAuth
from rtckit.testing import require_executable
from rtckit.testing.coturn import free_port
from rtckit.testing.natlab import LabTls, lab_tls

# -- servers, URIs and credentials ------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("stun:example.org", ("stun:example.org:3478", "udp")),
        ("stun:192.0.2.1:19302", ("stun:192.0.2.1:19302", "udp")),
        ("stuns:example.org", ("stuns:example.org:5349", "tls")),
        ("turn:example.org?transport=tcp", ("turn:example.org:3478?transport=tcp", "tcp")),
        ("turn:[2001:db8::1]:3479", ("turn:[2001:db8::1]:3479?transport=udp", "udp")),
        ("turns:example.org:443", ("turns:example.org:443?transport=tcp", "tls")),
        ("stun:[::1]", ("stun:[::1]:3478", "udp")),
    ],
)
def test_doctor_server(uri: str, expected: tuple[str, str]) -> None:
    server = DoctorServer(uri=uri)
    assert (server.name, server.label) == expected
    assert server.uri == IceServerUri.parse(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.org",
        "stun:",
        "turn:example.org:0",
        "turn:example.org?transport=udp&transport=tcp",
        "turn:user@example.org",
        "stun:example.org?transport=tcp",  # RFC 7064: STUN URIs take no query
        "turns:example.org?transport=udp",  # DTLS: the doctor cannot probe it
    ],
)
def test_bad_servers_are_usage_errors(uri: str) -> None:
    with pytest.raises(ConfigurationError):
        DoctorServer(uri=uri)
    assert main(["doctor", uri, "--username", "u", "--credential", "p", "--quiet"]) == 2


def test_stun_over_tcp_and_turn_transport() -> None:
    assert DoctorServer(uri="stun:192.0.2.1", transport="tcp").label == "tcp"
    with pytest.raises(ConfigurationError, match="transport"):
        DoctorServer(uri="turn:192.0.2.1", transport="tcp")  # the URI says UDP


def test_servers_from_ice_keep_their_own_credentials() -> None:
    auth = TurnRestAuth(secrets=["s3cret"])
    config = IceConfig(
        servers=[
            {"urls": "stun:192.0.2.1"},
            auth.ice_server(["turn:192.0.2.1?transport=udp", "turns:192.0.2.1:443"], "alice"),
        ]
    )
    servers = servers_from_ice(config)
    assert [s.name for s in servers] == [
        "stun:192.0.2.1:3478",
        "turn:192.0.2.1:3478?transport=udp",
        "turns:192.0.2.1:443?transport=tcp",
    ]
    assert servers[0].username is None
    assert servers[2].username == config.servers[1].username
    assert auth.verify(servers[2].username or "", servers[2].credential or "").user == "alice"
    assert "credential" not in repr(servers[2]).replace("credential=", "")


def test_with_all_transports() -> None:
    servers = [
        DoctorServer(uri=u, username="u", credential="p")
        for u in ("turn:192.0.2.1", "turn:192.0.2.1?transport=tcp", "turns:192.0.2.1", "stun:[::1]")
    ]
    expanded = with_all_transports(servers)
    assert [(s.name, s.label) for s in expanded] == [
        ("turn:192.0.2.1:3478?transport=udp", "udp"),
        ("turn:192.0.2.1:3478?transport=tcp", "tcp"),
        ("turns:192.0.2.1:5349?transport=tcp", "tls"),
        ("stun:[::1]:3478", "udp"),
        ("stun:[::1]:3478", "tcp"),
    ]
    assert all(s.username == "u" for s in expanded)


def test_turn_without_credentials_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["doctor", "--quiet"]) == 2  # nothing to probe
    assert main(["doctor", "turn:127.0.0.1:9", "--quiet"]) == 2
    assert main(["doctor", "--ice-config", "/nonexistent/ice.json", "--quiet"]) == 2
    bad = tmp_path / "ice.json"
    for text in ("{", "{}x", '[{"url": "stun:x"}]', '[{"urls": 5}]', '[{"urls": "turn:x"}]'):
        bad.write_text(text)
        assert main(["doctor", "--ice-config", str(bad), "--quiet"]) == 2, text
    both = ["turn:127.0.0.1:9", "--secret", "s", "--username", "u", "--quiet"]
    assert main(["doctor", *both]) == 2


# -- diagnoses without any server -------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port on loopback where something listens but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def closed_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_timeout_is_diagnosed(silent_port: int) -> None:
    config = DoctorConfig(timeout=0.6, username="u", credential="p")
    for uri in (f"stun:127.0.0.1:{silent_port}", f"turn:127.0.0.1:{silent_port}"):
        result = await probe_server(uri, config)
        assert not result.ok
        assert "no answer within 0.6 s" in result.cause
        assert "firewall" in result.cause


async def test_refused_is_diagnosed() -> None:
    port = closed_tcp_port()
    config = DoctorConfig(timeout=2, username="u", credential="p")
    for server in (
        DoctorServer(uri=f"turn:127.0.0.1:{port}?transport=tcp"),
        DoctorServer(uri=f"stun:127.0.0.1:{port}", transport="tcp"),
    ):
        result = await probe_server(server, config)
        assert not result.ok
        assert "connection refused: nothing listens on TCP" in result.cause
    # UDP: the ICMP port unreachable surfaces as refused for a STUN binding.
    result = await probe_server(f"stun:127.0.0.1:{port}", config)
    assert not result.ok
    assert "connection refused: nothing listens on UDP" in result.cause


def test_cli_exit_status_on_timeout(silent_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["doctor", f"stun:127.0.0.1:{silent_port}", "--timeout", "0.5"])
    captured = capsys.readouterr()
    assert status == 1
    assert "NO STUN server reachable" in captured.out
    assert "probing stun:" in captured.err
    assert "[1/1]" in captured.err


def test_cli_probes_the_environment_configuration(
    silent_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RTCKIT_ICE_SERVERS", f"stun:127.0.0.1:{silent_port}")
    status = main(["doctor", "--from-env", "--timeout", "0.5", "--quiet"])
    assert status == 1
    assert f"stun:127.0.0.1:{silent_port}" in capsys.readouterr().out
    monkeypatch.setenv("RTCKIT_ICE_SERVERS", "turn:127.0.0.1:9")  # TURN without a credential
    assert main(["doctor", "--from-env", "--quiet"]) == 2


# -- against a loopback coturn ----------------------------------------------------------------


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


@pytest.mark.integration
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


@pytest.mark.integration
def test_cli_ice_config_with_per_server_credentials(tmp_path: Path) -> None:
    """An ICE configuration file: each TURN server probed with its own credential."""

    async def scenario() -> tuple[int, str]:
        async with _loopback_coturn(tmp_path, allow_loopback_peers=True) as ct:
            # Exactly what the clients of this coturn get, TLS URI included.
            ice = ct.config.ice_config(user="alice")
            path = tmp_path / "ice.json"
            path.write_text(ice.to_json())
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
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


@pytest.mark.integration
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
