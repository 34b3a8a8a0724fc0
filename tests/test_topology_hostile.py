"""A hostile participant cannot kill a room's reader: one log line per bad message, no traceback.

Real aiortc participants in SFU, MCU and mesh rooms on the in-memory signaling hub. "mallory"
is a bare :class:`~rtckit.signaling.client.SignalingClient`: it sends, to the server peer (or
to another participant in a mesh), a ``restart`` whose ``session`` is ``"g\\u00b2"``
(``"²".isdigit()`` is true, ``int("²")`` raises), an over-long generation, garbage SDP answers
and offers, and garbage candidates. The room must go on: a newcomer still gets an offer and
connects, the MCU stays in the room, and nothing is logged with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtckit.errors import ProtocolError
from rtckit.peer.media import TestPatternTrack
from rtckit.signaling import (
    MemoryTransport,
    OpenAuth,
    RoomConfig,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
)
from rtckit.signaling import protocol as sp
from rtckit.signaling.state import PeerLeftEvent
from rtckit.topology import Room, RoomDataMessage, Topology, TrackPublished, join_room
from rtckit.topology.base import MCU_PEER_ID, SFU_PEER_ID, ServerStrategyFactory
from rtckit.topology.bridge import generation_from_session
from rtckit.topology.mcu import McuRoom, McuServerStrategy
from rtckit.topology.mesh import MeshRoom
from rtckit.topology.sfu import SfuRoom, sfu_strategy_factory
from rtckit.topology.strategies import RoomStrategies
from test_topology_mcu import small_mcu
from test_topology_mesh import FAST
from test_topology_sfu import SMALL, RoomLog

GARBAGE_SDP = [
    "garbage",
    "v=0\r\n",
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2 3 4\r\n"
    "m=application 9 DTLS/SCTP 5000\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n",
    "\x00" * 64,
]


def test_generation_from_session_takes_ascii_digits_only() -> None:
    assert generation_from_session(None) == 0
    assert generation_from_session("g0") == 0
    assert generation_from_session("g12") == 12
    assert generation_from_session("g999999999") == 999_999_999
    for bad in ["g\u00b2", "g\u0663", "g", "g-1", "g+1", "g 1", "g1_0", "g" + "9" * 10, "x1", ""]:
        with pytest.raises(ProtocolError, match="session"):
            generation_from_session(bad)


@contextlib.asynccontextmanager
async def rooms() -> AsyncIterator[tuple[SignalingHub, RoomStrategies]]:
    config = SignalingConfig(
        auth=OpenAuth(),
        rooms=[
            RoomConfig(name="sfu", topology="sfu"),
            RoomConfig(name="mcu", topology="mcu"),
            RoomConfig(name="mesh", topology="mesh"),
        ],
    )
    factories: dict[Topology | str, ServerStrategyFactory] = {
        Topology.SFU: sfu_strategy_factory(session_config=FAST),
        Topology.MCU: small_mcu,
    }
    async with (
        SignalingHub(config) as hub,
        RoomStrategies(hub, factories=factories) as strategies,
    ):
        yield hub, strategies


@contextlib.asynccontextmanager
async def participant(hub: SignalingHub, room: str, name: str) -> AsyncIterator[Room]:
    transport = MemoryTransport(hub, trusted=True)  # readable peer ids
    async with (
        SignalingClient.connect(transport, room=room, peer_id=name) as client,
        join_room(client, session_config=FAST) as joined,
    ):
        yield joined


async def first_offer(client: SignalingClient, sender: str) -> sp.Offer:
    async with asyncio.timeout(20):
        async for event in client:
            if isinstance(event, sp.Offer) and event.sender == sender:
                return event
    raise AssertionError("the client closed before an offer came")


def broken(answer: str) -> list[str]:
    """A real answer, made unusable in ways aiortc once took and then failed on in a task."""
    return [
        re.sub(r"a=fingerprint:.*\r\n", "", answer),  # AssertionError in aiortc's __connect
        re.sub(r"a=sctp-port:\d+", "a=sctp-port:99999", answer),  # struct.error in SCTP
        answer.replace("a=setup:active", "a=setup:actpass"),
        re.sub(r"a=ice-ufrag:.*\r\n", "", answer),
        answer.replace("a=rtcp-mux", "a=ssrc:abc cname:x\r\na=rtcp-mux"),
    ]


async def attack(client: SignalingClient, target: str, generation: int = 0) -> None:
    """Everything a hostile peer can send that once killed a reader or logged a traceback."""
    session = f"g{generation}"
    await client.send_restart(target, session="g\u00b2")  # the repro of the issue
    await client.send_restart(target, session="g" + "9" * 100)
    await client.send_candidate(target, "candidate:1 1 udp 1 1.2.3.4 5 typ host", session="g\u00b2")
    for sdp in GARBAGE_SDP:
        await client.send_answer(target, sdp, session=session)
        await client.send_candidate(target, sdp, session=session)
    for sdp in GARBAGE_SDP:
        await client.send_offer(target, sdp, session=session)
    await client.send_restart(target, session="g\u00b2")


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud]


async def wait_connected(room: Room) -> None:
    assert isinstance(room, SfuRoom | McuRoom)
    async with asyncio.timeout(30):
        while room.session is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await room.session.wait_connected(timeout=30)


@pytest.mark.parametrize("topology", ["sfu", "mcu"])
async def test_a_hostile_participant_cannot_stop_the_server_peer(
    topology: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rtckit")
    server_id = SFU_PEER_ID if topology == "sfu" else MCU_PEER_ID
    left: list[PeerLeftEvent] = []
    async with (
        contextlib.AsyncExitStack() as stack,
        rooms() as (hub, strategies),
        participant(hub, topology, "alice") as alice,
    ):
        await wait_connected(alice)

        def on_event(event: object) -> None:
            if isinstance(event, PeerLeftEvent) and event.peer_id == server_id:
                left.append(event)

        remove = hub.add_listener(on_event)
        async with SignalingClient.connect(
            MemoryTransport(hub, trusted=True), room=topology, peer_id="mallory"
        ) as mallory:
            offer = await first_offer(mallory, server_id)
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            stack.push_async_callback(pc.close)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription.sdp
            for bad in broken(answer):
                await mallory.send_answer(server_id, bad, session=offer.session)
            await attack(mallory, server_id)
            # after all that, mallory's real answer: the server's session to her connects
            await mallory.send_answer(server_id, answer, session=offer.session)
            # alice sends it all too: the server's session to her is connected (stable)
            assert isinstance(alice, SfuRoom | McuRoom)
            assert alice.session is not None
            await attack(alice.client, server_id, alice.session.generation)
            await asyncio.sleep(1.0)  # let the server read all of it
            async with participant(hub, topology, "bob") as bob:
                await wait_connected(bob)  # the newcomer got an offer and connected
                assert server_id in {peer.id for peer in hub.peers(topology)}
                async with asyncio.timeout(30):
                    while pc.connectionState != "connected":  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                assert not alice.session.closed
                if topology == "sfu":
                    # the server's session to alice still negotiates: bob's track reaches her
                    log = RoomLog(alice)
                    await bob.publish(TestPatternTrack(SMALL))
                    await log.wait(
                        lambda events: any(
                            isinstance(e, TrackPublished) and e.participant_id == "bob"
                            for e in events
                        )
                    )
                    await log.aclose()
        remove()
        strategy = strategies.running[topology]
        if isinstance(strategy, McuServerStrategy):
            assert strategy.client is not None
            assert "alice" in strategy.members
    assert not left, f"the server peer left the room: {left}"
    assert_no_traceback(caplog)
    dropped = [r.getMessage() for r in caplog.records if "mallory" in r.getMessage()]
    assert any("\u00b2" in message or "session" in message for message in dropped), dropped


async def test_a_hostile_participant_cannot_close_a_mesh_room(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rtckit")
    async with rooms() as (hub, _), participant(hub, "mesh", "alice") as alice:
        assert isinstance(alice, MeshRoom)
        async with SignalingClient.connect(
            MemoryTransport(hub, trusted=True), room="mesh", peer_id="mallory"
        ) as mallory:
            await attack(mallory, "alice")
            await asyncio.sleep(1.0)
            async with participant(hub, "mesh", "bob") as bob:
                assert isinstance(bob, MeshRoom)
                async with asyncio.timeout(30):
                    while "bob" not in alice.sessions:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                await alice.sessions["bob"].wait_connected(timeout=30)
    assert_no_traceback(caplog)


async def test_a_participant_that_never_connects_does_not_stop_room_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SFU buffers room messages for a participant whose channel is not open, up to a
    limit; past it, that participant's copies are dropped, and the others still get theirs."""
    caplog.set_level(logging.INFO, logger="rtckit")
    count = 1100  # past the 1000 messages a closed channel buffers
    async with rooms() as (hub, _), participant(hub, "sfu", "alice") as alice:
        await wait_connected(alice)
        async with (
            SignalingClient.connect(
                MemoryTransport(hub, trusted=True), room="sfu", peer_id="mallory"
            ) as mallory,
            participant(hub, "sfu", "bob") as bob,
        ):
            await first_offer(mallory, SFU_PEER_ID)  # and never answered
            await wait_connected(bob)
            log = RoomLog(bob)
            await asyncio.sleep(0.5)  # the room channels open after DTLS
            for i in range(count):
                alice.send(f"m{i}")
            await log.wait(lambda events: len(log.of(RoomDataMessage)) == count, within=30)
            assert [e.data for e in log.of(RoomDataMessage)] == [f"m{i}" for i in range(count)]
            await log.aclose()
    assert_no_traceback(caplog)
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and "dropped" in r.getMessage()
    ]
