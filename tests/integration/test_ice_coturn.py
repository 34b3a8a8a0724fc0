"""TURN credentials and relay-only ICE against a real coturn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransport, RTCPeerConnection

from rtckit import IceError, TurnAuthError, _aiortc
from rtckit.ice import IceConfig, IceConfigWarning, IceTransportPolicy
from rtckit.ice import aiortc as ice_aiortc
from rtckit.ice.turn import TurnRestAuth, ice_server
from rtckit.peer import connection as peer_connection
from rtckit.peer.connection import RtcKitPeerConnection, create_peer_connection
from rtckit.testing import require_executable
from rtckit.testing.coturn import LoopbackCoturn, run_loopback_coturn, turnutils_uclient


@pytest.fixture
async def coturn() -> AsyncIterator[LoopbackCoturn]:
    require_executable("turnserver", hint="apt-get install coturn")
    async with run_loopback_coturn() as server:
        yield server


def _relay_config(server: LoopbackCoturn, auth: TurnRestAuth, transport: str = "udp") -> IceConfig:
    return IceConfig(
        servers=[ice_server([server.uri(transport)], auth.issue("peer"))],
        transport_policy=IceTransportPolicy.RELAY,
    )


async def _connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    """Negotiate a data channel and exchange one message each way."""
    channel = offerer.createDataChannel("chat")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    received: asyncio.Queue[str] = asyncio.Queue()
    channel.on("message", received.put_nowait)

    @answerer.on("datachannel")
    def on_datachannel(remote: object) -> None:
        remote.on("message", lambda message: remote.send(f"echo {message}"))  # type: ignore[attr-defined]

    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    async with asyncio.timeout(20):
        await opened.wait()
        channel.send("ping")
        assert await received.get() == "echo ping"


def _ice_transport(pc: RTCPeerConnection) -> RTCIceTransport:
    assert pc.sctp is not None
    transport: RTCIceTransport = pc.sctp.transport.transport
    return transport


async def test_issued_credentials_allocate(coturn: LoopbackCoturn) -> None:
    creds = coturn.auth.issue("alice", ttl=60)
    for transport in ("udp", "tcp"):
        host, port = await _aiortc.allocate_turn(
            server=(coturn.host, coturn.port),
            username=creds.username,
            password=creds.password,
            transport=transport,
        )
        assert host == "127.0.0.1"
        assert port > 0


async def test_rotated_secret_issues_what_coturn_accepts(coturn: LoopbackCoturn) -> None:
    rotated = TurnRestAuth(secrets=[coturn.secret, "older-secret"])
    creds = rotated.issue("bob")
    await _aiortc.allocate_turn(
        server=(coturn.host, coturn.port), username=creds.username, password=creds.password
    )


@pytest.mark.parametrize("case", ["expired", "forged", "malformed"])
async def test_bad_credentials_are_refused_with_401(coturn: LoopbackCoturn, case: str) -> None:
    auth = coturn.auth
    if case == "expired":
        creds = TurnRestAuth(secrets=[coturn.secret], clock=lambda: 1_000_000_000.0).issue("a")
        username, password = creds.username, creds.password
    elif case == "forged":
        creds = TurnRestAuth(secrets=["not-the-secret"]).issue("a")
        username, password = creds.username, creds.password
    else:
        username, password = "alice", auth.issue("alice").password
    with pytest.raises(TurnAuthError) as info:
        await _aiortc.allocate_turn(
            server=(coturn.host, coturn.port), username=username, password=password
        )
    message = str(info.value)
    assert f"turn:{coturn.host}:{coturn.port}?transport=udp" in message
    assert "401" in message


async def _uclient(coturn: LoopbackCoturn, username: str, password: str) -> tuple[int, str]:
    """Run coturn's own test client (independent of aioice); return its status and output."""
    require_executable("turnutils_uclient", hint="apt-get install coturn")
    return await turnutils_uclient(
        coturn.host, coturn.port, username=username, password=password, messages=3
    )


async def test_independent_client_agrees(coturn: LoopbackCoturn) -> None:
    good = coturn.auth.issue("alice", ttl=120)
    status, out = await _uclient(coturn, good.username, good.password)
    assert status == 0, out
    expired = TurnRestAuth(secrets=[coturn.secret], clock=lambda: 1_000_000_000.0).issue("a")
    status, out = await _uclient(coturn, expired.username, expired.password)
    assert status != 0
    assert "Cannot complete Allocation" in out
    forged = TurnRestAuth(secrets=["wrong"]).issue("a")
    status, out = await _uclient(coturn, forged.username, forged.password)
    assert status != 0
    assert "Cannot complete Allocation" in out


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_relay_only_peers_connect_through_coturn(
    coturn: LoopbackCoturn, transport: str
) -> None:
    a = create_peer_connection(_relay_config(coturn, coturn.auth, transport))
    b = create_peer_connection(_relay_config(coturn, coturn.auth, transport))
    try:
        await _connect(a, b)
        for pc in (a, b):
            sdp = pc.localDescription.sdp
            candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
            assert candidates
            assert all(" typ relay" in line for line in candidates), candidates
            pairs = _aiortc.nominated_pairs(_ice_transport(pc))
            assert pairs
            for local, remote in pairs:
                assert local.type == "relay"
                assert remote.type == "relay"
                assert local.host == "127.0.0.1"
    finally:
        await a.close()
        await b.close()


async def test_force_relay_policy_internal_fallback(coturn: LoopbackCoturn) -> None:
    """The path for aiortc < 1.16: a policy-less configuration made relay-only by rtckit."""
    creds = coturn.auth.issue("old-aiortc")
    configuration = RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=coturn.uri(), username=creds.username, credential=creds.password)
        ]
    )
    a, b = RTCPeerConnection(configuration), RTCPeerConnection(configuration)
    try:
        channel = a.createDataChannel("x")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        for pc in (a,):
            assert pc.sctp is not None
            _aiortc.force_relay_policy(pc.sctp.transport.transport.iceGatherer)
        await a.setLocalDescription(await a.createOffer())
        assert "typ host" not in a.localDescription.sdp
        assert "typ relay" in a.localDescription.sdp
        await b.setRemoteDescription(a.localDescription)
        assert b.sctp is not None
        _aiortc.force_relay_policy(b.sctp.transport.transport.iceGatherer)
        await b.setLocalDescription(await b.createAnswer())
        assert "typ host" not in b.localDescription.sdp
        await a.setRemoteDescription(b.localDescription)
        async with asyncio.timeout(20):
            await opened.wait()
        ((local, _remote),) = _aiortc.nominated_pairs(_ice_transport(a))
        assert local.type == "relay"
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("policy", ["relay", "all"])
async def test_wrong_credentials_raise_turn_auth_error(coturn: LoopbackCoturn, policy: str) -> None:
    forged = TurnRestAuth(secrets=["not-the-secret"]).issue("mallory")
    config = IceConfig(servers=[ice_server([coturn.uri()], forged)], transport_policy=policy)
    pc = create_peer_connection(config)
    try:
        pc.createDataChannel("x")
        async with asyncio.timeout(10):  # promptly: no ICE timeout involved
            offer = await pc.createOffer()
            with pytest.raises(TurnAuthError) as info:
                await pc.setLocalDescription(offer)
        assert f"turn:{coturn.host}:{coturn.port}?transport=udp" in str(info.value)
        assert "401" in str(info.value)
        assert isinstance(info.value, IceError)
    finally:
        await pc.close()


async def test_unreachable_turn_with_relay_policy_is_an_ice_error(coturn: LoopbackCoturn) -> None:
    # A TCP port bound but not listening refuses connections: an IceError, not a 401.
    creds = coturn.auth.issue("a")
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    config = IceConfig(
        servers=[ice_server([f"turn:127.0.0.1:{port}?transport=tcp"], creds)],
        transport_policy="relay",
    )
    pc = create_peer_connection(config, turn_check_timeout=3.0)
    try:
        pc.createDataChannel("x")
        async with asyncio.timeout(20):
            with pytest.raises(IceError) as info:
                await pc.setLocalDescription(await pc.createOffer())
        assert not isinstance(info.value, TurnAuthError)
        assert "no relayed candidate" in str(info.value)
        assert f"turn:127.0.0.1:{port}?transport=tcp" in str(info.value)
    finally:
        await pc.close()
        closed.close()


async def test_without_the_check_aiortc_hides_the_refusal(coturn: LoopbackCoturn) -> None:
    """What rtckit's check exists for: aiortc offers no candidate at all and says nothing."""
    forged = TurnRestAuth(secrets=["not-the-secret"]).issue("mallory")
    config = IceConfig(servers=[ice_server([coturn.uri()], forged)], transport_policy="relay")
    pc = create_peer_connection(config, check_turn=False)
    assert isinstance(pc, RtcKitPeerConnection)
    try:
        pc.createDataChannel("x")
        async with asyncio.timeout(10):
            await pc.setLocalDescription(await pc.createOffer())
        assert "a=candidate:" not in pc.localDescription.sdp
        assert pc.iceConnectionState == "new"
    finally:
        await pc.close()


async def test_relay_policy_on_aiortc_without_transport_policy(
    coturn: LoopbackCoturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiortc 1.14/1.15 have no iceTransportPolicy: create_peer_connection still applies it."""
    monkeypatch.setattr(ice_aiortc, "aiortc_has_transport_policy", lambda: False)
    monkeypatch.setattr(peer_connection, "aiortc_has_transport_policy", lambda: False)
    config = _relay_config(coturn, coturn.auth)
    with pytest.warns(IceConfigWarning, match="has no iceTransportPolicy"):
        assert ice_aiortc.to_aiortc(config).iceTransportPolicy.value == "all"
    a = create_peer_connection(config)
    b = create_peer_connection(config)
    try:
        await _connect(a, b)
        for pc in (a, b):
            assert "typ host" not in pc.localDescription.sdp
            ((local, remote),) = _aiortc.nominated_pairs(_ice_transport(pc))
            assert (local.type, remote.type) == ("relay", "relay")
    finally:
        await a.close()
        await b.close()
