"""``rtckit serve`` configuration: parsing, defaults and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtckit.errors import ConfigurationError
from rtckit.httpserver import HttpLimits
from rtckit.server.config import ClusterSettings, ServeConfig, load_config, parse_config

OPEN_INSECURE = '[server]\ninsecure = true\n[auth]\nmode = "open"\n'


def _files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    return cert, key


def test_full_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _files(tmp_path)
    monkeypatch.setenv("TOKEN_SECRET", "s3cret")
    monkeypatch.setenv("TURN_SECRET", "t3rn")
    text = """
[server]
host = "127.0.0.1"
port = 9443
http_port = 9080
[tls]
cert = "cert.pem"
key = "key.pem"
[http]
idle_timeout = 4.5
tls_handshake_timeout = 3
max_line_size = 4096
max_field_size = 2048
max_headers = 32
[auth]
secret_env = "TOKEN_SECRET"
[ice]
urls = ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"]
turn_secret_env = "TURN_SECRET"
turn_ttl = 3600
policy = "relay"
[limits]
max_message_bytes = 4096
messages_per_second = 10
max_peers_per_room = 4
[rooms]
default_topology = "sfu"
[[rooms.declare]]
name = "hall"
topology = "mcu"
max_peers = 9
[[rooms.declare]]
name = "lobby"
[logging]
level = "debug"
format = "text"
[metrics]
path = "/m"
"""
    config = parse_config(text, base_dir=tmp_path)
    assert config.server.port == 9443
    assert config.server.http_port == 9080
    assert config.tls is not None
    assert config.tls.cert == tmp_path / "cert.pem"
    assert config.http == HttpLimits(
        idle_timeout=4.5,
        tls_handshake_timeout=3.0,
        max_line_size=4096,
        max_field_size=2048,
        max_headers=32,
    )
    assert config.auth.mode == "token"
    assert config.auth.secret == "s3cret"
    assert config.ice.turn_secret == "t3rn"
    assert config.ice.policy == "relay"
    assert config.limits.messages_per_second == 10.0
    assert [(r.name, r.topology, r.max_peers) for r in config.rooms.declared] == [
        ("hall", "mcu", 9),
        ("lobby", "sfu", None),
    ]
    assert config.logging.format == "text"
    assert config.metrics.path == "/m"
    assert "s3cret" not in repr(config)


def test_tokens_are_required_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTCKIT_SIGNALING_SECRET", raising=False)
    with pytest.raises(
        ConfigurationError,
        match=r"\[auth\] token mode needs a secret: set \$RTCKIT_SIGNALING_SECRET, or secret_env",
    ):
        parse_config("[server]\ninsecure = true\n")


def test_the_token_secret_defaults_to_the_signaling_secret_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As for ``rtckit signaling`` and ``rtckit token``: one variable for every command."""
    monkeypatch.setenv("RTCKIT_SIGNALING_SECRET", "from-the-environment")
    monkeypatch.setenv("OTHER_SECRET", "named-in-the-file")
    assert parse_config("[server]\ninsecure = true\n").auth.secret == "from-the-environment"
    named = parse_config('[server]\ninsecure = true\n[auth]\nsecret_env = "OTHER_SECRET"\n')
    assert named.auth.secret == "named-in-the-file"
    # open mode takes no secret, from the environment either
    assert parse_config(OPEN_INSECURE).auth.secret is None


def test_port_zero_picks_a_free_port_as_in_the_demo() -> None:
    config = parse_config(
        OPEN_INSECURE.replace("[server]\n", "[server]\nport = 0\nhttp_port = 0\n")
    )
    assert (config.server.port, config.server.http_port) == (0, 0)


def test_open_mode_is_explicit() -> None:
    config = parse_config(OPEN_INSECURE)
    assert config == ServeConfig(
        server=config.server, auth=config.auth
    )  # every other table at its default
    assert config.auth.mode == "open"


def test_tls_is_required_unless_insecure() -> None:
    with pytest.raises(ConfigurationError, match=r"\[tls\] cert and key are required"):
        parse_config('[auth]\nmode = "open"\n')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server\n", "not valid TOML"),
        ("[surver]\n", r"unknown table\(s\) surver"),
        (
            OPEN_INSECURE + "[limits]\nmax_peer_per_room = 3\n",
            r"unknown key\(s\) max_peer_per_room",
        ),
        (
            "[server]\ninsecure = true\nport = 70000\n[auth]\nmode='open'\n",
            "70000 is not in 0..65535",
        ),
        (
            "[server]\ninsecure = true\nport = '80'\n[auth]\nmode='open'\n",
            "expected an integer, got str",
        ),
        ("[server]\ninsecure = 1\n[auth]\nmode='open'\n", "expected true or false"),
        (
            OPEN_INSECURE + "[rooms]\ndefault_topology = 'p2p'\n",
            "'p2p' is not one of mesh, sfu, mcu",
        ),
        (OPEN_INSECURE + "[ice]\nurls = ['turn:x:3478']\n", "turn urls need turn_secret_env"),
        (
            OPEN_INSECURE + "[ice]\nurls = ['stun:x']\npolicy = 'relay'\n",
            "needs a turn: or turns: url",
        ),
        (OPEN_INSECURE + "[auth]\n", "auth"),
        (
            OPEN_INSECURE.replace(
                "[auth]\nmode", "[auth]\nsecret_env = 'RTCKIT_UNSET_VAR_X'\nmode"
            ),
            "RTCKIT_UNSET_VAR_X is not set",
        ),
        (
            OPEN_INSECURE + "[[rooms.declare]]\nname='a'\n[[rooms.declare]]\nname='a'\n",
            "declared twice",
        ),
        (OPEN_INSECURE + "[rooms]\ncreate_on_demand = false\n", "needs at least one"),
        (OPEN_INSECURE + "[metrics]\npath = 'metrics'\n", "must start with /"),
        ("[server]\nport = 8000\nhttp_port = 8000\n", "http_port must differ"),
        (OPEN_INSECURE + "[http]\nidle_timeout = 0\n", "idle_timeout: 0 is below 0.1"),
        (OPEN_INSECURE + "[http]\nmax_headers = 2\n", "max_headers: 2 is not in 8..1024"),
        (OPEN_INSECURE + "[http]\nheader_timeout = 5\n", r"unknown key\(s\) header_timeout"),
        (OPEN_INSECURE + "[cluster]\n", r"\[cluster\] redis_url \(or redis_url_env\): missing"),
        (OPEN_INSECURE + "[cluster]\nredis_url = 'http://x'\n", "must start with redis://"),
        (
            OPEN_INSECURE + "[cluster]\nredis_url = 'redis://x'\nnamespace = 'a:b'\n",
            r"namespace: letters, digits",
        ),
        (
            OPEN_INSECURE + "[cluster]\nredis_url = 'redis://x'\nnode_ttl = 0.5\n",
            "node_ttl: 0.5 is below 1.0",
        ),
        (
            OPEN_INSECURE + "[cluster]\nredis_url = 'redis://x'\ndrain_timeout = -1\n",
            "drain_timeout: -1 is below 0.0",
        ),
    ],
)
def test_bad_config_is_named(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_config(text, source="serve.toml")


def test_missing_tls_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"\[tls\] cert: file not found"):
        parse_config('[tls]\ncert = "nope.pem"\nkey = "nope.key"\n', base_dir=tmp_path)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(OPEN_INSECURE)
    assert load_config(path).auth.mode == "open"
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigurationError, match="not UTF-8"):
        load_config(path)


def test_cluster_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_config(OPEN_INSECURE).cluster is None  # one node, no Redis
    monkeypatch.setenv("RTCKIT_REDIS_URL", "redis://:pw@127.0.0.1:6379/2")
    config = parse_config(
        OPEN_INSECURE + '[cluster]\nredis_url_env = "RTCKIT_REDIS_URL"\nnamespace = "eu-1"\n'
    )
    assert config.cluster == ClusterSettings(
        redis_url="redis://:pw@127.0.0.1:6379/2", namespace="eu-1", node_ttl=5.0
    )
    assert "pw" not in repr(config)  # the URL may hold a password
    drain = parse_config(OPEN_INSECURE + "[cluster]\nredis_url = 'redis://x'\ndrain_timeout = 3\n")
    assert drain.cluster is not None
    assert drain.cluster.drain_timeout == 3.0
    assert drain.cluster.durable_sessions  # sessions outlive their node by default
    plain = parse_config(
        OPEN_INSECURE + "[cluster]\nredis_url = 'redis://x'\ndurable_sessions = false\n"
    )
    assert plain.cluster is not None
    assert not plain.cluster.durable_sessions
    with pytest.raises(ConfigurationError, match="durable_sessions"):
        parse_config(OPEN_INSECURE + "[cluster]\nredis_url = 'redis://x'\ndurable_sessions = 1\n")


def test_cluster_public_url_and_worker_ports() -> None:
    cluster = OPEN_INSECURE + "[cluster]\nredis_url = 'redis://x'\n"
    plain = parse_config(cluster).cluster
    assert plain is not None
    assert (plain.public_url, plain.worker_base_port) == (None, None)
    given = parse_config(
        cluster + "public_url = 'https://n1.example.org:8443/rtc'\nworker_base_port = 9001\n"
    ).cluster
    assert given is not None
    assert (given.public_url, given.worker_base_port) == ("https://n1.example.org:8443/rtc", 9001)
    for bad in (
        "ftp://n1.example.org",
        "n1.example.org:8443",
        "https://",
        "https://n1.example.org:99999",
        "https://user:pw@n1.example.org",
        "https://n1.example.org/?a=1",
        "https://n1.example.org/#x",
        "https://n1.exämple.org",
        "https://n1.example.org/a b",
    ):
        with pytest.raises(ConfigurationError, match=r"\[cluster\] public_url"):
            parse_config(cluster + f"public_url = {bad!r}\n")
    with pytest.raises(ConfigurationError, match="worker_base_port"):
        parse_config(cluster + "worker_base_port = 0\n")
    with pytest.raises(ConfigurationError, match="public_url"):
        ClusterSettings(redis_url="redis://x", public_url="ftp://x")


def test_public_url_default_comes_from_the_server_table() -> None:
    from rtckit.server.app import public_url

    cluster = "[cluster]\nredis_url = 'redis://x'\n"
    config = parse_config(OPEN_INSECURE + cluster)
    assert public_url(config) == f"http://localhost:{config.server.port}"  # 0.0.0.0
    assert public_url(config, 9000, secure=True) == "https://localhost:9000"
    assert public_url(config, own_port=9002) == "http://localhost:9002"
    v6 = parse_config(OPEN_INSECURE.replace("[server]\n", "[server]\nhost = '::1'\n") + cluster)
    assert public_url(v6, 9000) == "http://[::1]:9000"
    unbound = OPEN_INSECURE.replace("[server]\n", "[server]\nport = 0\n")
    assert public_url(parse_config(unbound + cluster)) == ""
    given = parse_config(OPEN_INSECURE + cluster + "public_url = 'https://n1.example.org/rtc/'\n")
    assert public_url(given, 9000) == "https://n1.example.org/rtc"
    assert public_url(given, own_port=9002) == "https://n1.example.org:9002/rtc"
