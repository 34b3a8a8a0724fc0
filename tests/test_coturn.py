"""coturn management (rtckit.coturn): configuration rendering, the process wrapper without
coturn, the CLI's arguments (real coturn processes: tests/integration/test_coturn.py)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import ipaddress
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from rtckit import ConfigurationError, SystemComponentError
from rtckit.cli.turn_serve import config_from_args, register_serve, serve
from rtckit.coturn import (
    CLOUD_METADATA_ADDRESSES,
    DEFAULT_DENIED_PEER_NETWORKS,
    CoturnConfig,
    CoturnProcess,
)
from rtckit.ice import IceConfig, IceServer
from rtckit.ice.turn import TurnRestAuth

ROOT = Path(__file__).resolve().parent.parent
SECRET = "north-wind-7"


def base_config(**changes: object) -> CoturnConfig:
    arguments: dict[str, object] = {"realm": "lab.test", "static_auth_secrets": [SECRET]}
    arguments.update(changes)
    return CoturnConfig(**arguments)  # type: ignore[arg-type]


def lines(config: CoturnConfig) -> list[str]:
    return [line for line in config.render().splitlines() if not line.startswith("#")]


# --- rendering -----------------------------------------------------------------------------------


def test_default_config_is_safe() -> None:
    rendered = lines(base_config())
    for expected in (
        "listening-ip=127.0.0.1",
        "listening-port=3478",
        "realm=lab.test",
        "use-auth-secret",
        f"static-auth-secret={SECRET}",
        "fingerprint",
        "no-cli",
        "no-rfc5780",
        "no-stun-backward-compatibility",
        "no-software-attribute",
        "no-multicast-peers",
        "no-tls",
        "no-dtls",
        "stale-nonce=600",
        # private, loopback, link-local, CGNAT, 0/8, multicast, metadata; and IPv6 equivalents
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
        "denied-peer-ip=100.64.0.0-100.127.255.255",
        "denied-peer-ip=0.0.0.1-0.255.255.255",
        "denied-peer-ip=224.0.0.0-239.255.255.255",
        "denied-peer-ip=169.254.169.254",
        "denied-peer-ip=::1",
        "denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "denied-peer-ip=fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "denied-peer-ip=ff00::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "denied-peer-ip=::ffff:0:0-::ffff:ffff:ffff",
        "denied-peer-ip=fd00:ec2::254",
    ):
        assert expected in rendered, expected
    assert "allow-loopback-peers" not in rendered
    assert not any(line.startswith("allowed-peer-ip") for line in rendered)
    # coturn reads a zero address as "any": it must never be rendered on its own.
    assert "denied-peer-ip=0.0.0.0" not in rendered
    assert "denied-peer-ip=::" not in rendered
    assert not any(
        line.startswith(("denied-peer-ip=0.0.0.0", "denied-peer-ip=::-")) for line in rendered
    )


def test_every_default_network_is_denied() -> None:
    config = base_config()
    denied = config.effective_denied_peer_ips()
    for network in (*DEFAULT_DENIED_PEER_NETWORKS, *CLOUD_METADATA_ADDRESSES):
        assert network in denied
    for sample in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "127.0.0.53", "169.254.169.254"):
        address = ipaddress.ip_address(sample)
        assert any(address in network for network in denied), sample
    for sample in ("fd00:ec2::254", "fe80::1", "::ffff:10.0.0.1", "ff02::1", "::1"):
        address = ipaddress.ip_address(sample)
        assert any(address in network for network in denied), sample
    for public in ("198.51.100.10", "8.8.8.8", "2001:db8::1"):
        address = ipaddress.ip_address(public)
        assert not any(address in network for network in denied), public


def test_loopback_exception() -> None:
    rendered = lines(base_config(allow_loopback_peers=True))
    assert "allow-loopback-peers" in rendered
    assert "denied-peer-ip=127.0.0.0-127.255.255.255" not in rendered
    assert "denied-peer-ip=::1" not in rendered
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" in rendered
    assert "denied-peer-ip=169.254.169.254" in rendered


def test_allowed_peer_exceptions() -> None:
    config = base_config(allowed_peer_ips=["10.0.1.0/24", "192.168.7.5", "fd12:3456::/64"])
    rendered = lines(config)
    assert "allowed-peer-ip=10.0.1.0-10.0.1.255" in rendered
    assert "allowed-peer-ip=192.168.7.5" in rendered
    assert "allowed-peer-ip=fd12:3456::-fd12:3456::ffff:ffff:ffff:ffff" in rendered
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" in rendered  # the rest stays denied


@pytest.mark.parametrize("network", ["169.254.0.0/16", "169.254.169.254", "fd00::/8", "0.0.0.0/0"])
def test_metadata_can_never_be_allowed(network: str) -> None:
    with pytest.raises(ConfigurationError, match="metadata"):
        base_config(allowed_peer_ips=[network])


def test_tls_lines(tmp_path: Path) -> None:
    cert, key = tmp_path / "turn.pem", tmp_path / "turn.key"
    rendered = lines(base_config(tls_cert=cert, tls_key=key, tls_listening_port=5350))
    assert "tls-listening-port=5350" in rendered
    assert f"cert={cert}" in rendered
    assert f"pkey={key}" in rendered
    assert "no-tlsv1" in rendered
    assert "no-tlsv1_1" in rendered
    assert "no-tls" not in rendered
    assert "no-dtls" in rendered
    with pytest.raises(ConfigurationError, match="together"):
        base_config(tls_cert=cert)


def test_argv_matches_render() -> None:
    config = base_config(static_auth_secrets=["one", "two"], relay_ips=["127.0.0.1"], max_bps=1000)
    assert config.argv() == [f"--{line}" for line in lines(config)]
    assert "--static-auth-secret=two" in config.argv()
    assert "--max-bps=1000" in config.argv()
    assert config.argv([("pidfile", "/run/x.pid"), ("simple-log", None)])[-2:] == [
        "--pidfile=/run/x.pid",
        "--simple-log",
    ]


def test_urls() -> None:
    assert base_config(listening_port=3479).urls() == [
        "stun:127.0.0.1:3479",
        "turn:127.0.0.1:3479?transport=udp",
        "turn:127.0.0.1:3479?transport=tcp",
    ]
    tls = base_config(
        listening_ips=["::"], tls_cert="/etc/turn.pem", tls_key="/etc/turn.key", udp=False
    )
    assert tls.urls() == [
        "stun:[::1]:3478",
        "turn:[::1]:3478?transport=tcp",
        "turns:[::1]:5349?transport=tcp",
    ]
    assert base_config(external_ip="203.0.113.9/10.0.0.4").urls()[0] == "stun:203.0.113.9:3478"
    assert str(tls.uri("turns")) == "turns:[::1]"
    assert (
        str(tls.uri("turn", "tcp", host="turn.example.org"))
        == "turn:turn.example.org?transport=tcp"
    )
    with pytest.raises(ConfigurationError, match="no single turn: over udp"):
        tls.uri("turn", "udp")
    with pytest.raises(ConfigurationError, match="no single turn:"):
        base_config().uri("turn")  # UDP and TCP: say which


@pytest.mark.parametrize(
    "changes",
    [
        {"realm": "two words"},
        {"realm": ""},
        {"static_auth_secrets": []},
        {"static_auth_secrets": ["ok\nlistening-ip=0.0.0.0"]},  # no option injection
        {"static_auth_secrets": ["has#hash"]},
        {"listening_ips": ["localhost"]},
        {"listening_port": 0},
        {"min_port": 50000, "max_port": 40000},
        {"external_ip": "a.b.c.d"},
        {"allowed_peer_ips": ["10.0.0.300"]},
        {"dtls": True},
        {"udp": False, "tcp": False},
        {"extra_options": ["bad option"]},
        {"tls_cert": "/tmp/with space.pem", "tls_key": "/tmp/k.pem"},
        {"startup_timeout": 0},
    ],
)
def test_config_validation(changes: dict[str, object]) -> None:
    arguments: dict[str, object] = {"realm": "lab.test", "static_auth_secrets": [SECRET]}
    arguments.update(changes)
    with pytest.raises(ConfigurationError):
        CoturnConfig(**arguments)  # type: ignore[arg-type]


def test_howto_lists_every_default_range() -> None:
    text = (ROOT / "docs" / "howto" / "coturn.rst").read_text(encoding="utf-8")
    for network in (*DEFAULT_DENIED_PEER_NETWORKS, *CLOUD_METADATA_ADDRESSES):
        shown = str(network.network_address if network.num_addresses == 1 else network)
        # Python 3.13 writes IPv4-mapped networks in dotted form; the docs use the hex form.
        shown = shown.replace("::ffff:0.0.0.0/96", "::ffff:0:0/96")
        assert shown in text, shown


# --- the missing binary --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "executable", ["/nonexistent/sbin/turnserver", "rtckit-no-such-turnserver"]
)
async def test_missing_turnserver_has_install_hint(executable: str) -> None:
    process = CoturnProcess(base_config(executable=executable))
    with pytest.raises(SystemComponentError, match="apt-get install coturn"):
        await process.start()
    await process.aclose()
    assert process.pid is None


async def test_process_needs_udp_or_tcp_to_probe(tmp_path: Path) -> None:
    config = base_config(udp=False, tcp=False, tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k")
    assert "no-udp" in lines(config)  # a TLS-only configuration renders fine
    with pytest.raises(ConfigurationError, match="UDP or TCP"):
        await CoturnProcess(config).start()


async def test_spawn_hook_gets_the_command_line_and_must_pipe_stdout() -> None:
    """The hook starts ``<turnserver> -c <conf>`` (never -n); no stdout pipe is refused."""
    true = shutil.which("true")
    assert true is not None
    seen: list[list[str]] = []
    started: list[asyncio.subprocess.Process] = []

    async def spawn(argv: Sequence[str]) -> asyncio.subprocess.Process:
        seen.append(list(argv))
        started.append(await asyncio.create_subprocess_exec("sleep", "30"))
        return started[-1]

    process = CoturnProcess(base_config(executable=true), spawn=spawn)
    with pytest.raises(ConfigurationError, match="pipe stdout"):
        await process.start()
    [argv] = seen
    assert argv[:2] == [true, "-c"]
    assert argv[2].endswith("turnserver.conf")
    assert "-n" not in argv
    assert started[0].returncode is not None  # killed, not left running
    conf = process.config_path
    assert conf is not None
    assert str(conf) == argv[2]
    assert not conf.exists()  # its directory is gone


def test_cli_missing_turnserver(capsys: pytest.CaptureFixture[str]) -> None:
    args = _turn_parser().parse_args(
        [
            "turn",
            "serve",
            "--secret",
            SECRET,
            "--realm",
            "lab.test",
            "--turnserver",
            "/nonexistent/x",
        ]
    )
    with pytest.raises(SystemComponentError, match="apt-get install coturn"):
        serve(args)


# --- the CLI handler ------------------------------------------------------------------------------


def _turn_parser() -> argparse.ArgumentParser:
    """A parser with a ``turn`` group as rtckit.cli.turn builds it, plus ``serve``."""
    parser = argparse.ArgumentParser(prog="rtckit")
    commands = parser.add_subparsers(dest="command", required=True)
    turn = commands.add_parser("turn")
    register_serve(turn.add_subparsers(dest="turn_command", required=True))
    return parser


def test_cli_print_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text("# rotated monthly\nfirst-secret\n\nsecond-secret\n", encoding="utf-8")
    args = _turn_parser().parse_args(
        [
            "turn",
            "serve",
            "--secret-file",
            str(secrets),
            "--realm",
            "example.org",
            "--listen",
            "127.0.0.1",
            "--listen",
            "::1",
            "--port",
            "3479",
            "--tls-cert",
            "/etc/rtckit/turn.pem",
            "--tls-key",
            "/etc/rtckit/turn.key",
            "--allow-peer",
            "10.0.1.0/24",
            "--print-config",
        ]
    )
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    rendered = out.splitlines()
    for expected in (
        "static-auth-secret=first-secret",
        "static-auth-secret=second-secret",
        "realm=example.org",
        "listening-ip=::1",
        "listening-port=3479",
        "cert=/etc/rtckit/turn.pem",
        "allowed-peer-ip=10.0.1.0-10.0.1.255",
        "denied-peer-ip=169.254.169.254",
    ):
        assert expected in rendered, expected


def test_cli_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _turn_parser()
    monkeypatch.setenv("RTCKIT_TURN_SECRET", "from-env")
    args = parser.parse_args(["turn", "serve", "--realm", "lab.test"])
    assert config_from_args(args).static_auth_secrets == ("from-env",)
    monkeypatch.delenv("RTCKIT_TURN_SECRET")
    with pytest.raises(ConfigurationError, match="--secret"):
        config_from_args(args)


def test_cli_serves_what_the_environment_tells_clients(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("RTCKIT_ICE_SERVERS", "stun:203.0.113.9:3479 turn:203.0.113.9:3479")
    monkeypatch.setenv("RTCKIT_TURN_SECRET", "from-env")
    args = _turn_parser().parse_args(["turn", "serve", "--realm", "lab.test", "--from-env"])
    config = config_from_args(args)
    assert config.listening_ips == ("203.0.113.9",)
    assert (config.listening_port, config.udp, config.tcp) == (3479, True, False)
    assert config.static_auth_secrets == ("from-env",)
    # Explicit options win: behind a 1:1 NAT, listen on the private address.
    args = _turn_parser().parse_args(
        ["turn", "serve", "--realm", "lab.test", "--from-env", "--listen", "10.0.0.4"]
    )
    assert config_from_args(args).listening_ips == ("10.0.0.4",)
    # A turns: URI needs the certificate.
    monkeypatch.setenv("RTCKIT_ICE_SERVERS", "turns:203.0.113.9:443")
    with pytest.raises(ConfigurationError, match="tls_cert"):
        config_from_args(args)
    monkeypatch.setenv("RTCKIT_ICE_SERVERS", "")
    with pytest.raises(ConfigurationError, match="no ICE server"):
        config_from_args(args)


# --- between rtckit's ICE configuration and coturn's ----------------------------------------------


def test_ice_config_for_the_clients() -> None:
    config = base_config(listening_ips=["198.51.100.1"], listening_port=3479)
    auth = TurnRestAuth(secrets=[SECRET], clock=lambda: 1_700_000_000.0)
    ice = config.ice_config(user="alice", auth=auth, ttl=60)
    assert [str(uri) for uri in ice.uris] == [
        "stun:198.51.100.1:3479",
        "turn:198.51.100.1:3479",
        "turn:198.51.100.1:3479?transport=tcp",
    ]
    [stun, turn] = ice.servers
    assert stun.username is None
    assert turn.username == "1700000060:alice"
    # The credential is the one coturn computes from its secret (independent computation).
    assert (turn.username, turn.credential) == rest_credential_at(SECRET, turn.username)
    assert auth.verify(turn.username, turn.credential or "").user == "alice"
    # Default auth: coturn's own secrets; a DNS name for clients; the relay policy.
    relay = config.ice_config(host="turn.example.org", transport_policy="relay")
    assert str(relay.uris[1]) == "turn:turn.example.org:3479"
    assert relay.transport_policy.value == "relay"
    assert relay.servers[-1].username is not None
    assert relay.servers[-1].username.endswith(":rtckit")


def test_ice_config_refuses_a_secret_coturn_does_not_know() -> None:
    config = base_config()
    with pytest.raises(ConfigurationError, match="401"):
        config.ice_config(auth=TurnRestAuth(secrets=["another-secret"]))
    # Rotation: a config with old and new secrets issues with whichever auth gives first.
    rotated = base_config(static_auth_secrets=["new-secret", SECRET])
    assert rotated.ice_config(auth=TurnRestAuth(secrets=[SECRET])).servers
    with pytest.raises(ConfigurationError, match="separator"):
        config.ice_config(auth=TurnRestAuth(secrets=[SECRET], separator="/"))


def test_from_rest_auth() -> None:
    auth = TurnRestAuth(secrets=["new-secret", "old-secret"], separator="/")
    config = CoturnConfig.from_ice(auth, realm="example.org", listening_ips=["203.0.113.9"])
    assert config.static_auth_secrets == ("new-secret", "old-secret")
    assert config.rest_api_separator == "/"
    assert "rest-api-separator=/" in lines(config)
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" in lines(config)  # safe defaults kept
    assert (config.udp, config.tcp, config.tls) == (True, True, False)
    # What coturn serves is what clients are told, credentials verified by the same auth.
    ice = config.ice_config(user="bob", auth=auth)
    turn = ice.servers[-1]
    assert auth.verify(turn.username or "", turn.credential or "").user == "bob"
    assert "rest-api-separator" not in "\n".join(lines(base_config()))


def test_from_ice_derives_the_listeners(tmp_path: Path) -> None:
    auth = TurnRestAuth(secrets=[SECRET])
    ice = IceConfig(
        servers=[
            IceServer(urls=["stun:198.51.100.1:3479"]),
            auth.ice_server(["turn:198.51.100.1:3479?transport=tcp"], "alice"),
        ]
    )
    config = CoturnConfig.from_ice(ice, auth=auth, realm="lab.test", allow_loopback_peers=True)
    assert config.listening_ips == ("198.51.100.1",)
    assert config.listening_port == 3479
    assert (config.udp, config.tcp, config.tls, config.dtls) == (True, True, False, False)
    assert config.allow_loopback_peers
    assert config.static_auth_secrets == (SECRET,)
    # TCP only, and TLS with rtckit.certs files.
    tls = IceConfig(
        servers=[
            auth.ice_server(
                ["turn:[2001:db8::5]?transport=tcp", "turns:[2001:db8::5]:443"], "alice"
            )
        ]
    )
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    config = CoturnConfig.from_ice(tls, auth=auth, realm="lab.test", tls_cert=cert, tls_key=key)
    assert (config.udp, config.tcp, config.tls) == (False, True, True)
    assert config.listening_ips == ("2001:db8::5",)
    assert (config.listening_port, config.tls_listening_port) == (3478, 443)
    assert [str(uri) for uri in config.ice_config(auth=auth).uris] == [
        "stun:[2001:db8::5]",
        "turn:[2001:db8::5]?transport=tcp",
        "turns:[2001:db8::5]:443",
    ]
    with pytest.raises(ConfigurationError, match="tls_cert"):
        CoturnConfig.from_ice(tls, auth=auth, realm="lab.test")


def test_from_ice_refuses_what_coturn_cannot_serve() -> None:
    auth = TurnRestAuth(secrets=[SECRET])
    named = IceConfig(servers=[auth.ice_server(["turn:turn.example.org"], "a")])
    with pytest.raises(ConfigurationError, match="listening_ips"):
        CoturnConfig.from_ice(named, auth=auth, realm="lab.test")
    config = CoturnConfig.from_ice(
        named, auth=auth, realm="lab.test", listening_ips=["10.0.0.4"], external_ip="203.0.113.9"
    )
    assert config.ice_config(host="turn.example.org").uris[0].host == "turn.example.org"
    two_ports = IceConfig.from_uris(["stun:192.0.2.1:3478", "stun:192.0.2.1:3479"])
    with pytest.raises(ConfigurationError, match="one listening port"):
        CoturnConfig.from_ice(two_ports, auth=auth, realm="lab.test")
    with pytest.raises(ConfigurationError, match="auth="):
        CoturnConfig.from_ice(two_ports, realm="lab.test")
    foreign = IceConfig(servers=[TurnRestAuth(secrets=["x"]).ice_server(["turn:192.0.2.1"], "a")])
    with pytest.raises(ConfigurationError, match="not issued with these REST secrets"):
        CoturnConfig.from_ice(foreign, auth=auth, realm="lab.test")
    static = IceConfig(
        servers=[IceServer(urls=["turn:192.0.2.1"], username="alice", credential="pw")]
    )
    with pytest.raises(ConfigurationError, match="malformed"):
        CoturnConfig.from_ice(static, auth=auth, realm="lab.test")
    # An expired credential was still issued with the secret: coturn's config is right.
    old = TurnRestAuth(secrets=[SECRET], clock=lambda: 1_000_000_000.0)
    expired = IceConfig(servers=[old.ice_server(["turn:192.0.2.1"], "a")])
    assert CoturnConfig.from_ice(expired, auth=auth, realm="lab.test").listening_ips == (
        "192.0.2.1",
    )


def rest_credential_at(secret: str, username: str) -> tuple[str, str]:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()
