"""GStreamer's webrtcbin publishes into an rtckit SFU or MCU room over WHIP (an independent stack).

webrtcbin (libnice, its own DTLS with an RSA certificate, its own SRTP) runs in a child process
under Debian's Python (:mod:`rtckit.testing._webrtcbin`) and offers a VP8 test pattern. The test
is its WHIP client's HTTP side: it POSTs the offer, trickles webrtcbin's candidates with PATCH
(its offer has none: webrtcbin trickles), and hands the answer back. An rtckit room member
receives the video: in an SFU room forwarded without decoding, in an MCU room decoded and drawn
in its cell of the composite. Host candidates on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from rtckit.mcu.engine import McuConfig
from rtckit.mcu.video import CompositorConfig
from rtckit.peer import SessionConfig
from rtckit.peer.signaller import Description, PeerCandidate
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig
from rtckit.signaling.wsserver import SignalingServer
from rtckit.testing._webrtcbin import WebrtcbinPeer, require_webrtcbin
from rtckit.topology import ParticipantLeft, Room, TrackPublished, join_room
from rtckit.topology.mcu import MCU_PEER_ID, McuRoomConfig, McuServerStrategy
from rtckit.topology.sfu import SfuServerStrategy, sfu_strategy_factory
from rtckit.topology.strategies import RoomStrategies
from rtckit.whip import WhipEndpoint

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
async def whip_server() -> AsyncIterator[tuple[SignalingServer, RoomStrategies, str]]:
    declared = [RoomConfig(name="sfu", topology="sfu"), RoomConfig(name="mcu", topology="mcu")]
    config = SignalingConfig(auth=OpenAuth(), rooms=declared)
    async with SignalingServer(config) as server:
        await server.listen("127.0.0.1", 0)
        factories = {
            "sfu": sfu_strategy_factory(session_config=SESSION),
            "mcu": lambda hub: McuServerStrategy(hub, config=MCU),
        }
        async with RoomStrategies(server.hub, factories=factories) as rooms:
            whip = WhipEndpoint(server.hub, rooms)
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


def _fragment(offer: str, candidates: list[PeerCandidate], *, end: bool) -> str:
    lines = offer.replace("\r\n", "\n").split("\n")
    ice = [ln for ln in lines if ln.startswith(("a=ice-ufrag:", "a=ice-pwd:"))][:2]
    mid = next(ln for ln in lines if ln.startswith("a=mid:"))
    body = [*ice, "m=video 9 UDP/TLS/RTP/SAVPF 0", mid]
    body += [f"a={c.candidate.removeprefix('a=')}" for c in candidates if c.candidate]
    if end:
        body.append("a=end-of-candidates")
    return "\r\n".join(body) + "\r\n"


async def _drawn_in_its_cell(viewer: Room, strategy: McuServerStrategy, publisher_id: str) -> None:
    """The MCU decodes the publisher's video and draws it in its cell of the composite the
    room member gets: webrtcbin's ball (white on black) is there, and moves."""
    seen: list[np.ndarray] = []
    async with asyncio.timeout(WITHIN):
        composite = None
        async for event in viewer.events():
            if isinstance(event, TrackPublished) and event.participant_id == MCU_PEER_ID:
                composite = event.track
                if event.kind == "video":
                    break
        assert composite is not None
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
    publisher is reaped: it leaves the room, its resource answers 404."""
    async with (
        whip_server() as (server, rooms, base),
        SignalingClient.connect(server.url, room=room) as viewer_client,
        join_room(viewer_client, session_config=SESSION) as viewer,
        WebrtcbinPeer(role="offer", send_video=True) as peer,
        aiohttp.ClientSession() as http,
    ):
        messages = peer.messages()
        async with asyncio.timeout(WITHIN):
            offer = None
            early: list[PeerCandidate] = []
            async for message in messages:
                if isinstance(message, Description) and message.type == "offer":
                    offer = message.sdp
                    break
                if isinstance(message, PeerCandidate):
                    early.append(message)
        assert offer is not None
        async with http.post(
            f"{base}/whip/{room}", data=offer, headers={"Content-Type": "application/sdp"}
        ) as response:
            assert response.status == 201, await response.text()
            resource = base + response.headers["Location"]
            etag = response.headers["ETag"]
            answer = await response.text()
        await peer.send(Description(type="answer", sdp=answer))

        async def trickle() -> None:
            pending = list(early)
            async for message in messages:
                if isinstance(message, PeerCandidate):
                    pending.append(message)
                    end = not message.candidate
                    async with http.patch(
                        resource,
                        data=_fragment(offer, pending, end=end),
                        headers={
                            "Content-Type": "application/trickle-ice-sdpfrag",
                            "If-Match": etag,
                        },
                    ) as patched:
                        assert patched.status == 204, await patched.text()
                    pending = []

        trickling = asyncio.create_task(trickle())
        try:
            strategy = rooms.running[room]
            assert isinstance(strategy, SfuServerStrategy | McuServerStrategy)
            (publisher_id,) = strategy.publishers
            if isinstance(strategy, McuServerStrategy):
                await _drawn_in_its_cell(viewer, strategy, publisher_id)
            else:
                frames = 0
                async with asyncio.timeout(WITHIN):
                    async for event in viewer.events():
                        if (
                            isinstance(event, TrackPublished)
                            and event.participant_id == publisher_id
                        ):
                            while frames < 30:
                                frame = await event.track.recv()
                                assert (frame.width, frame.height) == (320, 240)
                                frames += 1
                            break
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
        finally:
            trickling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await trickling
