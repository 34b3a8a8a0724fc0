"""rtckit.ice.aiortc: IceConfig -> aiortc, choosing deliberately and warning loudly."""

from __future__ import annotations

import warnings

import pytest
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcicetransport import connection_kwargs

from rtckit import ConfigurationError
from rtckit.ice import IceConfig, IceConfigWarning, IceServer, parse_uri
from rtckit.ice.aiortc import aiortc_has_transport_policy, select_for_aiortc, to_aiortc
from rtckit.peer.connection import RtcKitPeerConnection, create_peer_connection

TURN = {"username": "u", "credential": "c"}


def test_empty_config_means_no_server_not_aiortc_default() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        configuration = to_aiortc(IceConfig())
    assert configuration.iceServers == []
    assert connection_kwargs(configuration.iceServers) == {}


def test_one_stun_one_turn_pass_through_explicitly() -> None:
    config = IceConfig.from_dict(
        {"iceServers": [{"urls": "stun:s"}, {"urls": "turn:t?transport=tcp", **TURN}]}
    )
    configuration = to_aiortc(config)
    assert configuration.iceServers == [
        RTCIceServer(urls=["stun:s:3478"]),
        RTCIceServer(urls=["turn:t:3478?transport=tcp"], username="u", credential="c"),
    ]
    assert connection_kwargs(configuration.iceServers) == {
        "stun_server": ("s", 3478),
        "turn_server": ("t", 3478),
        "turn_ssl": False,
        "turn_transport": "tcp",
        "turn_username": "u",
        "turn_password": "c",
    }


def test_aiortc_still_keeps_only_the_first_stun_and_turn() -> None:
    """The aiortc limitation rtckit works around; if this fails, revisit rtckit.ice.aiortc."""
    kwargs = connection_kwargs(
        [
            RTCIceServer(urls=["stun:a", "stun:b"]),
            RTCIceServer(urls=["turn:x", "turn:y"], username="u", credential="c"),
        ]
    )
    assert kwargs["stun_server"] == ("a", 3478)
    assert kwargs["turn_server"] == ("x", 3478)


def test_extra_servers_are_dropped_with_a_warning_each() -> None:
    config = IceConfig.from_dict(
        {
            "iceServers": [
                {"urls": ["stun:a", "stun:b"]},
                {"urls": ["turn:x", "turns:y"], **TURN},
            ]
        }
    )
    with pytest.warns(IceConfigWarning) as record:
        configuration = to_aiortc(config)
    messages = [str(w.message) for w in record]
    assert messages == [
        "ICE server URI 'stun:b' left out: aiortc uses one STUN server, stun:a comes first",
        "ICE server URI 'turns:y' left out: aiortc uses one TURN server, turn:x comes first",
    ]
    assert record[0].filename == __file__
    assert configuration.iceServers is not None
    assert [s.urls for s in configuration.iceServers] == [
        ["stun:a:3478"],
        ["turn:x:3478?transport=udp"],
    ]


def test_unusable_uris_are_skipped_for_the_next_usable_one() -> None:
    config = IceConfig(
        servers=[
            IceServer(urls=["stuns:secure", "stun:[2001:db8::1]", "stun:plain"]),
            IceServer(urls=["turns:dtls?transport=udp", "turn:[::1]"], **TURN),
            IceServer(urls=["turns:tls:443"], username="u2", credential="c2"),
        ]
    )
    selection = select_for_aiortc(config)  # silent
    with pytest.warns(IceConfigWarning) as record:
        configuration = to_aiortc(config)
    assert selection.stun == parse_uri("stun:plain")
    assert selection.turn == parse_uri("turns:tls:443")
    assert selection.turn_server is config.servers[2]
    reasons = {str(uri): why for uri, why in selection.dropped}
    assert "stuns:" in reasons["stuns:secure"]
    assert "IPv6" in reasons["stun:[2001:db8::1]"]
    assert "DTLS" in reasons["turns:dtls?transport=udp"]
    assert "IPv6" in reasons["turn:[::1]"]
    assert len(record) == 4
    assert configuration.iceServers is not None
    assert configuration.iceServers[1] == RTCIceServer(
        urls=["turns:tls:443?transport=tcp"], username="u2", credential="c2"
    )
    assert connection_kwargs(configuration.iceServers)["turn_ssl"] is True


def test_relay_policy() -> None:
    config = IceConfig.from_dict(
        {"iceServers": [{"urls": "turn:t", **TURN}], "iceTransportPolicy": "relay"}
    )
    configuration = to_aiortc(config)
    assert aiortc_has_transport_policy() == hasattr(RTCConfiguration(), "iceTransportPolicy")
    if aiortc_has_transport_policy():
        from aiortc import RTCIceTransportPolicy

        assert configuration.iceTransportPolicy is RTCIceTransportPolicy.RELAY
        assert to_aiortc(IceConfig()).iceTransportPolicy is RTCIceTransportPolicy.ALL


def test_relay_policy_without_usable_turn_is_an_error() -> None:
    config = IceConfig.from_dict(
        {"iceServers": [{"urls": "turn:[::1]", **TURN}], "iceTransportPolicy": "relay"}
    )
    with pytest.raises(ConfigurationError, match=r"needs a TURN URI aiortc can use.*turn:\[::1\]"):
        to_aiortc(config)
    with pytest.raises(ConfigurationError, match="needs a TURN URI aiortc can use"):
        create_peer_connection(config)


async def test_create_peer_connection_warns_and_gathers_without_turn() -> None:
    config = IceConfig(servers=[IceServer(urls=["stun:127.0.0.1:9", "stuns:127.0.0.1"])])
    with pytest.warns(IceConfigWarning, match="stuns:127.0.0.1"):
        pc = create_peer_connection(config)
    assert isinstance(pc, RtcKitPeerConnection)
    assert pc.ice_config is config
    assert pc.aiortc_selection.stun == parse_uri("stun:127.0.0.1:9")
    await pc.close()
    await pc.close()  # idempotent
