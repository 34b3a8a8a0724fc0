"""``rtckit doctor``: URI parsing, credentials, diagnoses on loopback (coturn for the rest).

The doctor's runs inside the NAT lab are in test_natlab.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from rtckit.cli import main
from rtckit.doctor import (
    DoctorConfig,
    DoctorServer,
    format_report,
    load_ice_config,
    mint_rest_credential,
    parse_ice_uri,
    probe_server,
    run_doctor,
    with_all_transports,
)
from rtckit.errors import ConfigurationError
from rtckit.testing import require_executable
from rtckit.testing._labcoturn import Coturn, coturn, free_port

# -- URIs and credentials ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("stun:example.org", ("stun", "example.org", 3478, "udp", "udp")),
        ("stun:192.0.2.1:19302", ("stun", "192.0.2.1", 19302, "udp", "udp")),
        ("stuns:example.org", ("stuns", "example.org", 5349, "tcp", "tls")),
        ("turn:example.org?transport=tcp", ("turn", "example.org", 3478, "tcp", "tcp")),
        ("turn:[2001:db8::1]:3479?transport=udp", ("turn", "2001:db8::1", 3479, "udp", "udp")),
        ("turns:example.org:443?transport=tcp", ("turns", "example.org", 443, "tcp", "tls")),
        ("stun:[::1]", ("stun", "::1", 3478, "udp", "udp")),
    ],
)
def test_parse_ice_uri(uri: str, expected: tuple[str, str, int, str, str]) -> None:
    parsed = parse_ice_uri(uri)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.transport, parsed.label) == expected
    assert parsed.uri == uri
    assert parsed.is_turn == parsed.scheme.startswith("turn")


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.org",
        "example.org",
        "stun:",
        "turn:example.org:0",
        "turn:example.org:70000",
        "turn:example.org:x",
        "turn:example.org?transport=sctp",
        "turn:example.org?transport=udp&transport=tcp",
        "turn:example.org?foo=bar",
        "turns:example.org?transport=udp",
        "turn:user@example.org",
        "turn:[2001:db8::1",
    ],
)
def test_parse_ice_uri_rejects(uri: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_ice_uri(uri)


def test_mint_rest_credential() -> None:
    username, password = mint_rest_credential("s3cret", user="alice", ttl=60, now=1_700_000_000)
    assert username == "1700000060:alice"
    expected = hmac.new(b"s3cret", b"1700000060:alice", hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


def test_load_ice_config() -> None:
    text = json.dumps(
        {
            "iceServers": [
                {"urls": "stun:192.0.2.1"},
                {
                    "urls": ["turn:192.0.2.1?transport=udp", "turns:192.0.2.1:443"],
                    "username": "u",
                    "credential": "p",
                },
            ]
        }
    )
    servers = load_ice_config(text)
    assert [s.uri.uri for s in servers] == [
        "stun:192.0.2.1",
        "turn:192.0.2.1?transport=udp",
        "turns:192.0.2.1:443",
    ]
    assert servers[0].username is None
    assert (servers[2].username, servers[2].credential) == ("u", "p")
    assert load_ice_config(json.dumps([{"urls": "stun:a.example"}]))[0].uri.host == "a.example"
    for bad in ("{", "{}", '[{"url": "stun:x"}]', '[{"urls": 5}]', '[{"urls": "http:x"}]'):
        with pytest.raises(ConfigurationError):
            load_ice_config(bad)


def test_with_all_transports() -> None:
    servers = [
        DoctorServer(uri=parse_ice_uri(u), username="u", credential="p")
        for u in ("turn:192.0.2.1", "turn:192.0.2.1?transport=tcp", "turns:192.0.2.1", "stun:[::1]")
    ]
    expanded = with_all_transports(servers)
    assert [s.uri.uri for s in expanded] == [
        "turn:192.0.2.1",
        "turn:192.0.2.1:3478?transport=tcp",
        "turns:192.0.2.1",
        "stun:[::1]",
        "stun:[::1]:3478?transport=tcp",
    ]
    assert all(s.username == "u" for s in expanded)
    for server in expanded:
        assert parse_ice_uri(server.uri.uri) == server.uri


def test_turn_without_credentials_is_a_usage_error() -> None:
    assert main(["doctor", "--quiet"]) == 2  # nothing to probe
    assert main(["doctor", "turn:127.0.0.1:9", "--quiet"]) == 2
    assert main(["doctor", "--ice-config", "/nonexistent/ice.json", "--quiet"]) == 2


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
    for uri in (f"turn:127.0.0.1:{port}?transport=tcp", f"stun:127.0.0.1:{port}?transport=tcp"):
        result = await probe_server(uri, config)
        assert not result.ok
        assert "connection refused" in result.cause
    # UDP: the ICMP port unreachable surfaces as refused for a STUN binding.
    result = await probe_server(f"stun:127.0.0.1:{port}", config)
    assert not result.ok
    assert "refused" in result.cause or "no answer" in result.cause


def test_cli_exit_status_on_timeout(silent_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["doctor", f"stun:127.0.0.1:{silent_port}", "--timeout", "0.5"])
    captured = capsys.readouterr()
    assert status == 1
    assert "NO STUN server reachable" in captured.out
    assert "probing stun:" in captured.err
    assert "[1/1]" in captured.err


# -- against a loopback coturn ----------------------------------------------------------------


async def _spawn(argv: Sequence[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


@contextlib.asynccontextmanager
async def _loopback_coturn(tmp_path: Path, *extra: str) -> AsyncIterator[Coturn]:
    require_executable("turnserver", hint="apt-get install coturn")
    low = random.randrange(20000, 60000, 100)
    async with coturn(
        _spawn,
        tmp_path,
        ip="127.0.0.1",
        secret="loop-secret",
        port=free_port(),
        tls_port=free_port(),
        min_port=low,
        max_port=low + 99,
        extra=extra,
    ) as ct:
        yield ct


@pytest.fixture
async def loopback_coturn(tmp_path: Path) -> AsyncIterator[Coturn]:
    async with _loopback_coturn(tmp_path) as ct:
        yield ct


@pytest.mark.integration
async def test_loopback_coturn_green(tmp_path: Path) -> None:
    async with _loopback_coturn(tmp_path, "--allow-loopback-peers") as ct:
        username, password = mint_rest_credential(ct.secret)
        config = DoctorConfig(
            timeout=3, username=username, credential=password, ca_file=str(tmp_path / "cert.pem")
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
        async with _loopback_coturn(tmp_path, "--allow-loopback-peers") as ct:
            username, password = mint_rest_credential(ct.secret)
            config = {
                "iceServers": [
                    {"urls": ct.uri("stun")},
                    {"urls": ct.uri("turn", "udp"), "username": username, "credential": password},
                ]
            }
            path = tmp_path / "ice.json"
            path.write_text(json.dumps(config))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "rtckit", "doctor", "--ice-config", str(path), "--quiet",
                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(30):
                out, _ = await proc.communicate()
            return proc.returncode or 0, out.decode()

    status, output = asyncio.run(scenario())
    assert status == 0, output
    assert "relay path available" in output


@pytest.mark.integration
async def test_loopback_coturn_green_wrong_and_denied(loopback_coturn: Coturn) -> None:
    ct = loopback_coturn
    username, password = mint_rest_credential(ct.secret)
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

    username, _ = mint_rest_credential("wrong-secret")
    bad = DoctorConfig(timeout=3, username=username, credential="nope")
    result = await probe_server(ct.uri("turn", "udp"), bad)
    assert result.error_code == 401
    assert "clock skew" in result.cause
    table = format_report(await run_doctor([ct.uri("turn", "udp")], bad))
    assert "401" in table
    assert "NO relay path available" in table
