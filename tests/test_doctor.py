"""``rtckit doctor``: URI parsing, credentials, diagnoses of silent and closed loopback ports.

Its runs against a loopback coturn are in tests/integration/test_doctor.py, inside the NAT lab
in tests/integration/test_natlab.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtckit.cli import main
from rtckit.errors import ConfigurationError
from rtckit.ice import IceConfig, IceServerUri
from rtckit.ice.doctor import (
    DoctorConfig,
    DoctorServer,
    probe_server,
    servers_from_ice,
    with_all_transports,
)
from rtckit.ice.turn import TurnRestAuth

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
