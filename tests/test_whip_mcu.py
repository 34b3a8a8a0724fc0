"""WHIP into MCU rooms, over real HTTP on loopback: the MCU decodes and mixes the publisher.

The server is test_whip_server's (signaling, SFU and MCU rooms, :class:`rtckit.whip.WhipEndpoint`);
the room member is an aiortc participant of test_topology_mcu (a colour and a tone); the WHIP
client is a bare aiortc ``RTCPeerConnection`` sending rtckit's test pattern (a solid colour) and
a tone, with explicit empty ICE servers.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtckit.mcu.engine import McuEngine
from rtckit.peer import SessionConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack, ToneTrack
from rtckit.topology._http_peer import HttpPeer, new_peer_connection
from rtckit.topology.base import PublishingStrategy
from rtckit.topology.mcu import McuServerStrategy
from rtckit.topology.sfu import SfuServerStrategy
from test_mcu_engine import COLOURS, TONES, shows, tone_magnitudes, wait_for
from test_topology_mcu import Participant, mcu_room, participant
from test_whip_server import Server, post, problem, running

PUBLISHER = "yellow"  # the WHIP publisher's colour and tone
WITHIN = 40.0


def mcu(server: Server) -> McuServerStrategy:
    assert server.strategies is not None
    strategy = server.strategies.running["mcu"]
    assert isinstance(strategy, McuServerStrategy)
    return strategy


def engine_of(server: Server) -> McuEngine:
    engine = mcu(server).engine
    assert engine is not None
    return engine


async def whip_offer() -> tuple[RTCPeerConnection, str]:
    """A bare aiortc WHIP client: a solid-colour test pattern and a tone, send-only."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pattern = PatternConfig(width=320, height=240, fps=15, colour=COLOURS[PUBLISHER], counter=False)
    pc.addTransceiver(TestPatternTrack(pattern), direction="sendonly")
    pc.addTransceiver(ToneTrack(TONES[PUBLISHER]), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def publish(
    server: Server, http: aiohttp.ClientSession, pc: RTCPeerConnection, offer: str
) -> tuple[str, str]:
    """POST *offer* to the MCU room, apply the answer; (the publisher's id, its resource)."""
    response = await post(http, f"{server.base}/whip/mcu", offer)
    assert response.status == 201, await response.text()
    answer = await response.text()
    assert answer.count("a=recvonly") == 2  # it receives nothing
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    (publisher_id,) = mcu(server).publishers
    return publisher_id, server.base + response.headers["Location"]


async def sees_in_grid(server: Server, viewer: Participant, *names: str) -> None:
    """Wait until *viewer*'s composed video shows each participant's colour in its cell
    (the publisher's is :data:`PUBLISHER`'s)."""

    def drawn() -> bool:
        engine = mcu(server).engine
        if engine is None or sorted(p.id for p in engine.participants) != sorted(names):
            return False
        return all(
            shows(viewer.latest, engine.cell_of(n), n if n in COLOURS else PUBLISHER) for n in names
        )

    await wait_for(drawn, f"{viewer.name} to see {names} in the grid", WITHIN)


async def hears(viewer: Participant, seconds: float = 1.0) -> dict[str, float]:
    """The magnitudes of the member's and the publisher's tones in what *viewer* hears."""
    viewer.audio.clear()
    viewer.recording = True
    samples = int(48000 * seconds)
    await wait_for(lambda: sum(a.size for a in viewer.audio) >= samples, "audio", WITHIN)
    viewer.recording = False
    tones = {viewer.name: TONES[viewer.name], PUBLISHER: TONES[PUBLISHER]}
    return tone_magnitudes(np.concatenate(viewer.audio)[-samples:], tones)


async def session_ended(server: Server, http: aiohttp.ClientSession, resource: str) -> None:
    """Wait until the WHIP session ended; its resource answers 404."""
    await wait_for(lambda: not server.whip or not server.whip.sessions, "the session end")
    async with http.delete(resource) as gone:
        await problem(gone, 404)


def test_sfu_and_mcu_strategies_take_publishers() -> None:
    # the WHIP endpoint dispatches on this protocol; a mesh room's strategy has no media
    assert issubclass(SfuServerStrategy, PublishingStrategy)
    assert issubclass(McuServerStrategy, PublishingStrategy)


async def test_whip_publisher_is_mixed_into_an_mcu_room_and_leaves_on_delete() -> None:
    async with (
        running() as server,
        aiohttp.ClientSession() as http,
        participant(server.signaling.hub, "mcu", "red") as red,
    ):
        pc, offer = await whip_offer()
        try:
            publisher_id, resource = await publish(server, http, pc, offer)
            assert publisher_id.startswith("whip-")
            # a send-only member: no signaling session from the MCU, no mix sent to it
            assert publisher_id not in mcu(server).members

            # the member's composed video has the publisher's cell, in the layout it was told
            await sees_in_grid(server, red, "red", publisher_id)
            await wait_for(lambda: mcu_room(red).layout == ("red", publisher_id), "the layout")
            assert publisher_id in red.room.participants
            # its voice is in the member's mix-minus (and the member's own voice is not)
            mags = await hears(red)
            assert mags[PUBLISHER] > 0
            assert mags["red"] < 0.1 * mags[PUBLISHER], mags
            stats = engine_of(server).stats()
            assert (stats.participants, stats.viewers) == (2, 1)

            async with http.delete(resource) as deleted:
                assert deleted.status == 200
            assert mcu(server).publishers == {}
            # its cell is gone: the member alone fills the grid again
            engine = engine_of(server)
            await wait_for(lambda: engine.cell_of(publisher_id) is None, "a grid without it")
            await sees_in_grid(server, red, "red")
            await wait_for(lambda: mcu_room(red).layout == ("red",), "the layout without it")
            await wait_for(lambda: publisher_id not in red.room.participants, "it leaving")
            async with http.delete(resource) as again:
                await problem(again, 404)
        finally:
            await pc.close()


@pytest.mark.parametrize("ending", ["never-connects", "hangs-up"])
async def test_an_mcu_publisher_that_dies_is_reaped(ending: str) -> None:
    """``never-connects``: the client never applies the answer (no ICE, no DTLS);
    ``hangs-up``: it closes its connection (DTLS close_notify) without a DELETE."""
    async with (
        running(connect_timeout=1.5) as server,
        aiohttp.ClientSession() as http,
        participant(server.signaling.hub, "mcu", "red") as red,
    ):
        pc, offer = await whip_offer()
        try:
            if ending == "never-connects":
                response = await post(http, f"{server.base}/whip/mcu", offer)
                assert response.status == 201
                resource = server.base + response.headers["Location"]
                (publisher,) = mcu(server).publishers.values()
            else:
                _, resource = await publish(server, http, pc, offer)
                (publisher,) = mcu(server).publishers.values()
                await sees_in_grid(server, red, "red", publisher.participant_id)
                await pc.close()
            async with asyncio.timeout(WITHIN):
                reason = await publisher.wait_ended()
            assert reason == ("timeout" if ending == "never-connects" else "connection closed")
            assert mcu(server).publishers == {}
            engine = engine_of(server)
            await wait_for(lambda: engine.cell_of(publisher.participant_id) is None, "a grid")
            await sees_in_grid(server, red, "red")
            await session_ended(server, http, resource)
        finally:
            await pc.close()


async def test_a_publisher_alone_in_an_mcu_room_is_served_until_the_room_stops() -> None:
    """The MCU stays for a room whose only person is a WHIP publisher (it does not leave and
    come back in a loop); when the room stops, the publisher ends and its session with it."""
    async with running() as server, aiohttp.ClientSession() as http:
        pc, offer = await whip_offer()
        try:
            _, resource = await publish(server, http, pc, offer)
            strategy, engine = mcu(server), engine_of(server)
            (publisher,) = strategy.publishers.values()
            await wait_for(lambda: engine.stats().video_frames_decoded > 10, "its decoded video")
            await wait_for(lambda: engine.stats().audio_frames_decoded > 10, "its decoded audio")
            client = strategy.client
            assert client is not None
            await asyncio.sleep(1.0)
            assert (strategy.client, strategy.engine) == (client, engine)  # stayed

            await strategy.stop_room("mcu")
            async with asyncio.timeout(WITHIN):
                assert await publisher.wait_ended() == "closed"
            await session_ended(server, http, resource)
        finally:
            await pc.close()


async def test_a_post_into_a_full_mcu_room_is_a_503() -> None:
    async with (
        running() as server,
        aiohttp.ClientSession() as http,
        participant(server.signaling.hub, "mcu", "red") as red,
    ):
        await sees_in_grid(server, red, "red")
        engine = engine_of(server)
        for i in range(engine.config.max_participants - 1):
            engine.add_participant(f"extra-{i}")  # the grid's other cells
        pc, offer = await whip_offer()
        try:
            body = await problem(await post(http, f"{server.base}/whip/mcu", offer), 503)
            assert "full" in body["detail"]
            assert mcu(server).publishers == {}
            assert server.whip is not None
            assert server.whip.sessions == {}
            await wait_for(lambda: len(red.room.participants) == 0, "the refused one leaving")
        finally:
            await pc.close()


async def test_a_publisher_ended_while_answered_is_not_watched() -> None:
    """A room that stops while a publisher's offer is answered ends it; the strategy's
    ``watch`` after the answer then starts nothing (no watchdog task left waiting out the
    connect timeout)."""
    config = SessionConfig()  # no ICE servers: nothing leaves this machine
    peer = HttpPeer("late", new_peer_connection(config), policy=config.candidate_policy)
    await peer.aclose("room stopped")
    before = asyncio.all_tasks()
    peer.watch(30.0)
    assert asyncio.all_tasks() == before
    assert await peer.wait_ended() == "room stopped"
