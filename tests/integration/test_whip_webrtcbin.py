"""GStreamer's webrtcbin publishes into an rtckit SFU or MCU room over WHIP (an independent stack).

webrtcbin (libnice, its own DTLS with an RSA certificate, its own SRTP) runs in a child process
under Debian's Python (:mod:`rtckit.testing._webrtcbin`) and offers a test pattern: VP8, or
H.264 from ``x264enc`` set up as OBS sends it, with or without an Opus tone. The test is its
WHIP client's HTTP side: it POSTs the offer, trickles webrtcbin's candidates with PATCH (its
offer has none: webrtcbin trickles) or, as a client without trickle, sends an offer made after
gathering with every candidate in it, and hands the answer back. An rtckit room member receives
the media: in an SFU room forwarded without decoding, in an MCU room (VP8 only) decoded and
drawn in its cell of the composite. Host candidates on this machine only, or relayed ones
from a coturn on 127.0.0.1 whose address and credentials webrtcbin took from the ``Link``
headers of rtckit's ``OPTIONS`` answer, before gathering.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from rtckit import _aiortc
from rtckit.ice import IceConfig
from rtckit.ice.turn import ice_server
from rtckit.mcu.engine import McuConfig
from rtckit.mcu.video import CompositorConfig
from rtckit.peer import SessionConfig
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig
from rtckit.signaling.wsserver import SignalingServer
from rtckit.testing import require_executable
from rtckit.testing._webrtcbin import WebrtcbinPeer, require_webrtcbin, turn_server_url
from rtckit.testing.coturn import run_loopback_coturn
from rtckit.topology import ParticipantLeft, TrackPublished, join_room
from rtckit.topology.base import Room
from rtckit.topology.mcu import MCU_PEER_ID, McuRoomConfig, McuServerStrategy
from rtckit.topology.sfu import SfuServerStrategy, sfu_strategy_factory
from rtckit.topology.strategies import RoomStrategies
from rtckit.whip import WhipEndpoint
from whippublish import assert_forwarded, assert_no_errors, whip_publish

SESSION = SessionConfig(heartbeat_interval=0.5, disconnected_after=5.0, restart_after=8.0)
WITHIN = 40.0
CONSENT_WITHIN = 60.0  # aioice gives up after 6 consent checks 4-6 s apart
MCU = McuRoomConfig(
    engine=McuConfig(video=CompositorConfig(width=320, height=240, labels=False), fps=15.0),
    session=SESSION,
)


@pytest.fixture(autouse=True)
def _webrtcbin() -> None:
    require_webrtcbin()


@contextlib.asynccontextmanager
async def whip_server(
    *,
    session: SessionConfig = SESSION,
    ice_servers: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
) -> AsyncIterator[tuple[SignalingServer, RoomStrategies, str]]:
    declared = [RoomConfig(name="sfu", topology="sfu"), RoomConfig(name="mcu", topology="mcu")]
    config = SignalingConfig(auth=OpenAuth(), rooms=declared)
    async with SignalingServer(config) as server:
        await server.listen("127.0.0.1", 0)
        factories = {
            "sfu": sfu_strategy_factory(session_config=session),
            "mcu": lambda hub: McuServerStrategy(hub, config=MCU),
        }
        async with RoomStrategies(server.hub, factories=factories) as rooms:
            whip = WhipEndpoint(server.hub, rooms, ice_servers=ice_servers)
            app = web.Application()
            whip.add_routes(app)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            try:
                yield server, rooms, f"http://127.0.0.1:{runner.addresses[0][1]}"
            finally:
                await whip.aclose()
                await runner.cleanup()


async def first_tracks(viewer: Room, publisher_id: str, kinds: set[str]) -> dict[str, Any]:
    """The tracks of *kinds* the room member *viewer* gets from *publisher_id*, by kind."""
    tracks: dict[str, Any] = {}
    async with asyncio.timeout(WITHIN):
        async for event in viewer.events():
            if isinstance(event, TrackPublished) and event.participant_id == publisher_id:
                tracks[event.kind] = event.track
                if set(tracks) >= kinds:
                    return tracks
    raise AssertionError(f"the room ended before {kinds} arrived (got {set(tracks)})")


async def receive_video(track: Any, frames: int = 30) -> None:
    """*frames* decoded 320x240 frames of the test pattern (decoded by the room member)."""
    for _ in range(frames):
        frame = await track.recv()
        assert (frame.width, frame.height) == (320, 240)


async def drawn_in_its_cell(viewer: Room, strategy: McuServerStrategy, publisher_id: str) -> None:
    """The MCU decodes the publisher's video and draws it in its cell of the composite the
    room member gets: webrtcbin's ball (white on black) is there, and moves."""
    seen: list[np.ndarray] = []
    async with asyncio.timeout(WITHIN):
        (composite,) = (await first_tracks(viewer, MCU_PEER_ID, {"video"})).values()
        while len(seen) < 2:
            frame = await composite.recv()
            cell = None if strategy.engine is None else strategy.engine.cell_of(publisher_id)
            if cell is None:
                continue
            x, y, w, h = cell
            luma = frame.to_ndarray(format="yuv420p")[y : y + h, x : x + w].astype(np.int16)
            if luma.max() > 200 and (not seen or np.abs(luma - seen[-1]).mean() > 1):
                seen.append(luma)


@pytest.mark.parametrize(
    ("room", "ending"), [("sfu", "delete"), ("sfu", "kill"), ("mcu", "delete")]
)
async def test_webrtcbin_publishes_vp8_into_a_room_over_whip(room: str, ending: str) -> None:
    """*ending* ``delete``: the session ends with a DELETE. ``kill``: the publisher is killed
    (SIGKILL: no DELETE, no DTLS close); ICE consent fails (aioice: about 30 s) and the
    publisher is reaped: it leaves the room, its resource answers 404. In the SFU room the
    member gets the publisher's video forwarded; in the MCU room, drawn in its cell."""
    async with (
        whip_server() as (server, rooms, base),
        SignalingClient.connect(server.url, room=room) as viewer_client,
        join_room(viewer_client, session_config=SESSION) as viewer,
        WebrtcbinPeer(role="offer", send_video=True) as peer,
        aiohttp.ClientSession() as http,
        whip_publish(http, f"{base}/whip/{room}", peer) as publish,
    ):
        resource = publish.resource
        strategy = rooms.running[room]
        assert isinstance(strategy, SfuServerStrategy | McuServerStrategy)
        (publisher_id,) = strategy.publishers
        if isinstance(strategy, McuServerStrategy):
            await drawn_in_its_cell(viewer, strategy, publisher_id)
        else:
            async with asyncio.timeout(WITHIN):
                tracks = await first_tracks(viewer, publisher_id, {"video"})
                await receive_video(tracks["video"])
            stats = strategy.stats()
            assert stats is not None
            assert stats.decoders_created == 0
            assert stats.encoders_created == 0
        (publisher,) = strategy.publishers.values()
        if ending == "delete":
            async with http.delete(resource) as deleted:
                assert deleted.status == 200
        else:
            peer.kill()
            async with asyncio.timeout(CONSENT_WITHIN):
                # aiortc closes the connection when consent fails
                assert await publisher.wait_ended() == "connection closed"
        async with asyncio.timeout(WITHIN):
            async for event in viewer.events():
                if isinstance(event, ParticipantLeft) and event.participant_id == publisher_id:
                    break
        async with http.delete(resource) as gone:
            assert gone.status == 404


async def receive_audio(track: Any, frames: int = 25) -> None:
    """*frames* decoded 20 ms frames of the Opus tone (48 kHz)."""
    for _ in range(frames):
        frame = await track.recv()
        assert frame.sample_rate == 48000


@pytest.mark.parametrize(
    ("video_codec", "trickle"),
    [
        pytest.param("h264", True, id="h264-trickle"),
        pytest.param("vp8", False, id="vp8-no-trickle"),
    ],
)
async def test_webrtcbin_publishes_video_and_opus_over_whip(
    video_codec: str, caplog: pytest.LogCaptureFixture, *, trickle: bool
) -> None:
    """H.264 as OBS sends it (x264, zerolatency, constrained baseline, no B-frames) with Opus,
    its candidates trickled by PATCH; and VP8 with Opus from a client that does not trickle (its
    offer made after gathering, every candidate in it, no PATCH). A room member (aiortc, which
    negotiates H.264 too) decodes both kinds; the SFU decoded and encoded nothing, and
    forwarded webrtcbin's full-size packets (up to 1400 bytes) without an error."""
    async with (
        whip_server() as (server, rooms, base),
        SignalingClient.connect(server.url, room="sfu") as viewer_client,
        join_room(viewer_client, session_config=SESSION) as viewer,
        WebrtcbinPeer(
            role="offer", send_video=True, send_audio=True, video_codec=video_codec, trickle=trickle
        ) as peer,
        aiohttp.ClientSession() as http,
        whip_publish(http, f"{base}/whip/sfu", peer) as publish,
    ):
        strategy = rooms.running["sfu"]
        assert isinstance(strategy, SfuServerStrategy)
        (publisher_id,) = strategy.publishers
        (publisher,) = strategy.publishers.values()
        async with asyncio.timeout(WITHIN):
            tracks = await first_tracks(viewer, publisher_id, {"audio", "video"})
            await receive_video(tracks["video"], frames=1)
            print(
                f"webrtcbin {video_codec} (trickle: {trickle}): POST to the member's first "
                f"decoded frame {time.monotonic() - publish.posted_at:.2f} s"
            )
            await asyncio.gather(receive_video(tracks["video"]), receive_audio(tracks["audio"]))
        offered = publish.offer.count("a=candidate:")
        if trickle:
            assert offered == 0
            assert publish.patches > 0
            assert publisher.candidates_added > 0
        else:
            assert offered > 0
            assert publish.patches == 0
            assert publisher.candidates_added == 0
        assert_forwarded(strategy, {"h264": "video/H264", "vp8": "video/VP8"}[video_codec])
        assert_no_errors(caplog)
        async with http.delete(publish.resource) as deleted:
            assert deleted.status == 200


async def test_webrtcbin_publishes_through_turn_with_the_ice_servers_of_options(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The publisher asks the WHIP endpoint for its ICE servers with OPTIONS before it gathers
    (webrtcbin gathers when its offer is set: the ``Link`` headers of the 201 come after),
    reads the TURN URL and the credentials minted for it from the ``Link`` headers, gathers
    relay-only (``ice-transport-policy`` relay) and trickles its relayed candidates by PATCH:
    the media reaches the room through a real coturn on 127.0.0.1 (the server's selected pair
    has a coturn relay address as its remote end)."""
    require_executable("turnserver", hint="apt-get install coturn")
    async with run_loopback_coturn() as coturn:
        auth = coturn.auth
        turn = [coturn.uri("udp")]

        def ice_servers() -> list[dict[str, Any]]:
            server = ice_server(turn, auth.issue(f"whip-{len(issued)}"))
            issued.append(server)
            browser: list[dict[str, Any]] = IceConfig(servers=[server]).to_browser()["iceServers"]
            return browser

        issued: list[Any] = []
        async with (
            whip_server(ice_servers=ice_servers) as (server, rooms, base),
            aiohttp.ClientSession() as http,
        ):
            async with http.options(f"{base}/whip/sfu") as answered:
                assert answered.status == 204
                links = answered.links.getall("ice-server", [])
            (link,) = links
            url = turn_server_url(str(link["url"]), str(link["username"]), str(link["credential"]))
            assert issued, "OPTIONS minted no TURN credential"
            async with (
                SignalingClient.connect(server.url, room="sfu") as viewer_client,
                join_room(viewer_client, session_config=SESSION) as viewer,
                WebrtcbinPeer(
                    role="offer", send_video=True, send_audio=True, turn_server=url, relay_only=True
                ) as peer,
                whip_publish(http, f"{base}/whip/sfu", peer) as publish,
            ):
                strategy = rooms.running["sfu"]
                assert isinstance(strategy, SfuServerStrategy)
                (publisher_id,) = strategy.publishers
                async with asyncio.timeout(WITHIN):
                    tracks = await first_tracks(viewer, publisher_id, {"audio", "video"})
                    await receive_video(tracks["video"])
                assert_forwarded(strategy, "video/VP8")
                assert_no_errors(caplog)
                router = strategy.router
                assert router is not None
                publication = next(iter(router.publications.values()))
                ice = publication.transceiver.receiver.transport.transport
                pairs = _aiortc.nominated_pairs(ice)
                assert pairs, "no nominated pair"
                # the publisher trickled relayed candidates only; the server may learn the
                # relay's address from its first check (peer-reflexive) before the PATCH
                relays = coturn.config.min_port, coturn.config.max_port
                for _local, remote in pairs:
                    assert remote.host == coturn.host, pairs
                    assert relays[0] <= remote.port <= relays[1], (pairs, relays)
                assert publish.candidates
                assert all(" typ relay" in c for c in publish.candidates), publish.candidates
                async with http.delete(publish.resource) as deleted:
                    assert deleted.status == 200
