"""rtckit.ice: STUN/TURN URIs, ICE servers and configurations (pure)."""

from __future__ import annotations

import ipaddress
import json

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtckit import ConfigurationError
from rtckit.ice import (
    IceConfig,
    IceServer,
    IceServerUri,
    IceTransportPolicy,
    TurnTransport,
    UriScheme,
    parse_uri,
)
from rtckit.ice.turn import TurnRestAuth

# --- URIs ---


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port", "transport"),
    [
        ("stun:stun.example.org", "stun", "stun.example.org", 3478, None),
        ("stun:stun.example.org:19302", "stun", "stun.example.org", 19302, None),
        ("stuns:stun.example.org", "stuns", "stun.example.org", 5349, None),
        ("turn:turn.example.org", "turn", "turn.example.org", 3478, "udp"),
        ("turn:turn.example.org?transport=tcp", "turn", "turn.example.org", 3478, "tcp"),
        ("turn:192.0.2.1:80?transport=tcp", "turn", "192.0.2.1", 80, "tcp"),
        ("turns:turn.example.org", "turns", "turn.example.org", 5349, "tcp"),
        ("turns:turn.example.org:443?transport=tcp", "turns", "turn.example.org", 443, "tcp"),
        ("turns:turn.example.org?transport=udp", "turns", "turn.example.org", 5349, "udp"),
        ("turn:[::1]", "turn", "::1", 3478, "udp"),
        ("turn:[2001:db8::1]:3479?transport=tcp", "turn", "2001:db8::1", 3479, "tcp"),
        ("stun:[2001:DB8:0::1]:1", "stun", "2001:db8::1", 1, None),
        ("TURN:Turn.Example.org?TRANSPORT=TCP", "turn", "Turn.Example.org", 3478, "tcp"),
        ("  stun:localhost  ", "stun", "localhost", 3478, None),
    ],
)
def test_parse_good_uris(
    text: str, scheme: str, host: str, port: int, transport: str | None
) -> None:
    uri = parse_uri(text)
    assert uri.scheme == scheme
    assert uri.host == host
    assert uri.port == port
    assert uri.transport == transport
    assert IceServerUri.parse(text) == uri


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http:example.org", "unknown scheme 'http'"),
        ("example.org", "missing scheme"),
        ("stun", "missing scheme"),
        ("turn://turn.example.org", "have no '//'"),
        ("stun:stun.example.org?transport=udp", "stun: URIs take no query"),
        ("stuns:stun.example.org?transport=udp", "stuns: URIs take no query"),
        ("turn:h?transport=sctp", "unknown transport 'sctp'"),
        ("turn:h?foo=bar", "the only query allowed"),
        ("turn:h?transport", "the only query allowed"),
        ("turn:h:0", "port 0 is out of range"),
        ("turn:h:65536", "port 65536 is out of range"),
        ("turn:h:", "port '' is not a number"),
        ("turn:h:x1", "port 'x1' is not a number"),
        ("turn:h:-1", "port '-1' is not a number"),
        ("turn:h:\u0663", "port '\u0663' is not a number"),
        ("turn:", "the host is empty"),
        ("turn::3478", "the host is empty"),
        ("turn:::1", "an IPv6 address must be in brackets"),
        ("turn:2001:db8::1:3478", "an IPv6 address must be in brackets"),
        ("turn:[::1", "unclosed '['"),
        ("turn:[192.0.2.1]", "is not an IPv6 address"),
        ("turn:[example.org]", "is not an IPv6 address"),
        ("turn:[::1]x", "unexpected text after ']'"),
        ("turn:[fe80::1%25eth0]", "zone identifiers are not supported"),
        ("turn:alice:pw@turn.example.org", "credentials do not go in the URI"),
        ("turn:-bad-.example.org", "not a valid host name"),
        ("turn:under_score.example.org", "not a valid host name"),
        ("turn:" + "a" * 64 + ".org", "not a valid host name"),
    ],
)
def test_parse_bad_uris_name_the_value(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid ICE server URI") as info:
        parse_uri(text)
    assert repr(text) in str(info.value)
    assert message in str(info.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ConfigurationError, match="expected a string"):
        parse_uri(3478)  # type: ignore[arg-type]


def test_format_omits_defaults_and_brackets_ipv6() -> None:
    assert str(parse_uri("turn:h:3478?transport=udp")) == "turn:h"
    assert str(parse_uri("turns:h:5349?transport=tcp")) == "turns:h"
    assert str(parse_uri("turn:[::1]:80?transport=tcp")) == "turn:[::1]:80?transport=tcp"
    assert parse_uri("turn:h").format(explicit=True) == "turn:h:3478?transport=udp"
    assert parse_uri("stuns:[::1]").format(explicit=True) == "stuns:[::1]:5349"


def test_uri_objects_validate_fields() -> None:
    assert IceServerUri(scheme="turns", host="h").port == 5349
    assert IceServerUri(scheme="turns", host="h").transport is TurnTransport.TCP
    assert IceServerUri(scheme=UriScheme.STUN, host="::1").address == ("::1", 3478)
    with pytest.raises(ConfigurationError, match="STUN URIs take no transport"):
        IceServerUri(scheme="stun", host="h", transport="udp")
    with pytest.raises(ConfigurationError, match="expected an integer 1-65535"):
        IceServerUri(scheme="stun", host="h", port=0)
    with pytest.raises(ConfigurationError, match="expected an integer 1-65535"):
        IceServerUri(scheme="stun", host="h", port=True)
    with pytest.raises(ConfigurationError, match="without brackets"):
        IceServerUri(scheme="stun", host="[::1]")
    with pytest.raises(ConfigurationError, match="zone identifiers"):
        IceServerUri(scheme="stun", host="fe80::1%eth0")
    with pytest.raises(ConfigurationError, match="expected one of"):
        IceServerUri(scheme="http", host="h")
    uri = IceServerUri(scheme="turn", host="h")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        uri.port = 1  # type: ignore[misc]


_hostnames = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{1,8}){0,3}", fullmatch=True)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)


@st.composite
def _uris(draw: st.DrawFn) -> IceServerUri:
    scheme = draw(st.sampled_from(list(UriScheme)))
    host = draw(st.one_of(_hostnames, _ipv4, _ipv6))
    kwargs: dict[str, object] = {"scheme": scheme, "host": host}
    if draw(st.booleans()):
        kwargs["port"] = draw(st.integers(1, 65535))
    if scheme.is_turn and draw(st.booleans()):
        kwargs["transport"] = draw(st.sampled_from(list(TurnTransport)))
    return IceServerUri(**kwargs)  # type: ignore[arg-type]


@given(_uris())
def test_uri_format_parse_round_trip(uri: IceServerUri) -> None:
    assert parse_uri(str(uri)) == uri
    assert parse_uri(uri.format(explicit=True)) == uri
    text = str(uri)
    assert text.startswith(f"{uri.scheme}:")
    if uri.is_ipv6:
        assert f"[{ipaddress.ip_address(uri.host)}]" in text


_uri_alphabet = st.sampled_from(list("stunrs:[]?=/@.%-_0123456789abcdefABCDEF transporudpc\u0663"))


@given(st.one_of(st.text(), st.text(_uri_alphabet, max_size=40)))
def test_parse_arbitrary_text_fails_only_with_configuration_error(text: str) -> None:
    try:
        uri = parse_uri(text)
    except ConfigurationError:
        return
    assert parse_uri(str(uri)) == uri


# --- servers ---


def test_server_from_strings_and_dict() -> None:
    server = IceServer(urls="stun:s")
    assert server.urls == (parse_uri("stun:s"),)
    assert not server.has_turn
    server = IceServer.from_dict(
        {"urls": ["turn:t", "turns:t"], "username": "u", "credential": "c"}
    )
    assert server.has_turn
    assert server.to_browser() == {
        "urls": ["turn:t", "turns:t"],
        "username": "u",
        "credential": "c",
    }
    assert "'c'" not in repr(server)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"urls": "turn:t"}, "TURN server 'turn:t' has no username"),
        ({"urls": "turn:t", "username": "u"}, "TURN server 'turn:t' has no credential"),
        ({"urls": ["stun:s", "turns:t"], "credential": "c"}, "'turns:t' has no username"),
        ({"urls": []}, "at least one URI"),
        ({"urls": 5}, "expected a URI string or a list"),
        ({"url": "stun:s"}, "'url' is obsolete, use 'urls'"),
        ({"urls": "stun:s", "usernam": "u"}, "unknown keys ['usernam']"),
        ({"username": "u"}, "missing 'urls'"),
        ({"urls": "turn:t", "username": "u", "credential": 5}, "expected a string"),
        (
            {"urls": "turn:t", "username": "u", "credential": "c", "credentialType": "oauth"},
            "only 'password'",
        ),
        ({"urls": "stun:s?transport=udp"}, "stun: URIs take no query"),
    ],
)
def test_bad_servers(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        IceServer.from_dict(data)
    assert message in str(info.value)


# --- configurations ---


def test_default_config_has_no_server() -> None:
    config = IceConfig()
    assert config.servers == ()
    assert config.transport_policy is IceTransportPolicy.ALL
    assert config.to_browser() == {"iceServers": [], "iceTransportPolicy": "all"}


def test_config_from_browser_dict_and_back() -> None:
    data = {
        "iceServers": [
            {"urls": "stun:stun.example.org"},
            {
                "urls": ["turn:turn.example.org", "turns:[2001:db8::1]:443"],
                "username": "u",
                "credential": "c",
            },
        ],
        "iceTransportPolicy": "relay",
        "bundlePolicy": "max-bundle",
    }
    config = IceConfig.from_dict(data)
    assert config.transport_policy is IceTransportPolicy.RELAY
    assert [str(u) for u in config.uris] == [
        "stun:stun.example.org",
        "turn:turn.example.org",
        "turns:[2001:db8::1]:443",
    ]
    browser = config.to_browser()
    assert browser["iceServers"][0] == {"urls": ["stun:stun.example.org"]}
    assert IceConfig.from_dict(browser) == config
    assert IceConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["iceTransportPolicy"] == "relay"


def test_config_from_json_list() -> None:
    config = IceConfig.from_json('[{"urls": "stun:s"}]')
    assert config.uris == (parse_uri("stun:s"),)
    assert IceConfig.from_json("{}") == IceConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "invalid ICE configuration JSON"),
        ('{"iceServers": [], "iceTransportPolicy": "none"}', "'none': expected 'all' or 'relay'"),
        ('{"iceServer": []}', "unknown keys ['iceServer']"),
        ('{"iceServers": {"urls": "stun:s"}}', "expected a list of ICE servers"),
        ('{"iceServers": null}', "expected a list of ICE servers"),
        ('{"iceServers": [{"urls": null}]}', "expected a URI string or a list"),
        ('{"iceServers": ["stun:s"]}', "expected an object with 'urls'"),
        ('"stun:s"', "expected an object with 'iceServers'"),
        (
            '{"iceServers": [{"urls": "stun:s"}], "iceTransportPolicy": "relay"}',
            "'relay' needs at least one turn: or turns: server",
        ),
    ],
)
def test_bad_config_json(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        IceConfig.from_json(text)
    assert message in str(info.value)


def test_config_from_uris_groups_turn_uris() -> None:
    config = IceConfig.from_uris(
        ["stun:a", "turn:b", "stun:c", "turns:b"], username="u", credential="c"
    )
    assert [s.to_browser()["urls"] for s in config.servers] == [
        ["stun:a"],
        ["stun:c"],
        ["turn:b", "turns:b"],
    ]
    assert config.servers[-1].username == "u"
    with pytest.raises(ConfigurationError, match="has no username"):
        IceConfig.from_uris(["turn:b"])


# --- environment ---


def test_env_unset_means_no_server() -> None:
    assert IceConfig.from_env({}) == IceConfig()
    assert IceConfig.from_env({"RTCKIT_ICE_SERVERS": "  "}) == IceConfig()


def test_env_uri_list_with_static_credentials() -> None:
    config = IceConfig.from_env(
        {
            "RTCKIT_ICE_SERVERS": "stun:a:3478, turn:b?transport=tcp turns:b",
            "RTCKIT_TURN_USERNAME": "u",
            "RTCKIT_TURN_CREDENTIAL": "c",
            "RTCKIT_ICE_TRANSPORT_POLICY": "relay",
        }
    )
    assert config.transport_policy is IceTransportPolicy.RELAY
    assert config.to_browser()["iceServers"] == [
        {"urls": ["stun:a"]},
        {"urls": ["turn:b?transport=tcp", "turns:b"], "username": "u", "credential": "c"},
    ]


def test_env_json_with_rest_secret() -> None:
    env = {
        "RTCKIT_ICE_SERVERS": json.dumps(
            {
                "iceServers": [
                    {"urls": "turn:t"},
                    {"urls": "turn:other", "username": "x", "credential": "y"},
                ],
                "iceTransportPolicy": "relay",
            }
        ),
        "RTCKIT_TURN_SECRET": "s3cret",
        "RTCKIT_TURN_USER": "bob",
        "RTCKIT_TURN_TTL": "60",
    }
    config = IceConfig.from_env(env, clock=lambda: 1_000_000.5)
    assert config.transport_policy is IceTransportPolicy.RELAY
    first, second = config.servers
    assert first.username == "1000060:bob"
    assert first.credential is not None
    auth = TurnRestAuth(secrets=["s3cret"], clock=lambda: 1_000_000.0)
    assert auth.verify(first.username, first.credential).user == "bob"
    assert (second.username, second.credential) == ("x", "y")


def test_env_policy_variable_wins_over_json() -> None:
    env = {
        "RTCKIT_ICE_SERVERS": '{"iceServers": [], "iceTransportPolicy": "relay"}',
        "RTCKIT_ICE_TRANSPORT_POLICY": "all",
    }
    assert IceConfig.from_env(env) == IceConfig()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RTCKIT_ICE_SERVERS": "turn:t"}, "RTCKIT_ICE_SERVERS: TURN server 'turn:t' has no"),
        ({"RTCKIT_ICE_SERVERS": "stun:s,http:x"}, "RTCKIT_ICE_SERVERS: invalid ICE server URI"),
        ({"RTCKIT_ICE_SERVERS": "[{]"}, "RTCKIT_ICE_SERVERS"),
        ({"RTCKIT_ICE_SERVERS": '{"iceServers": 3}'}, "expected a JSON list"),
        ({"RTCKIT_ICE_TRANSPORT_POLICY": "relayed"}, "RTCKIT_ICE_TRANSPORT_POLICY"),
        (
            {"RTCKIT_ICE_SERVERS": "stun:s", "RTCKIT_ICE_TRANSPORT_POLICY": "relay"},
            "needs at least one turn:",
        ),
        (
            {"RTCKIT_TURN_SECRET": "s", "RTCKIT_TURN_USERNAME": "u"},
            "RTCKIT_TURN_SECRET cannot be combined",
        ),
        ({"RTCKIT_TURN_USERNAME": "u"}, "must be set together"),
        ({"RTCKIT_TURN_SECRET": "s", "RTCKIT_TURN_TTL": "-5"}, "RTCKIT_TURN_TTL"),
        ({"RTCKIT_TURN_SECRET": "s", "RTCKIT_TURN_TTL": "1h"}, "positive number of seconds"),
    ],
)
def test_bad_env(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        IceConfig.from_env(env)
    assert message in str(info.value)
