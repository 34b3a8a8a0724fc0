"""WHEP egress over real HTTP on loopback: bare aiortc viewers play SFU and MCU rooms.

The server is a signaling hub with SFU and MCU room strategies, :class:`rtckit.whip.WhipEndpoint`
and :class:`rtckit.whip.WhepEndpoint` on an aiohttp app; room members are real rtckit
participants (in-process signaling, real aiortc connections); WHIP publishers and WHEP
viewers are bare aiortc ``RTCPeerConnection`` objects speaking HTTP with aiohttp, with an
explicit empty ICE server list.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtckit.peer.media import TestPatternTrack, ToneTrack, read_frame_counter
from rtckit.signaling import (
    MemoryTransport,
    OpenAuth,
    RoomConfig,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
    TokenAuth,
)
from rtckit.topology import Room, Topology, join_room
from rtckit.topology.base import ServerStrategyFactory
from rtckit.topology.mcu import McuServerStrategy
from rtckit.topology.sfu import SfuServerStrategy, sfu_strategy_factory
from rtckit.topology.strategies import RoomStrategies
from rtckit.whip import WhepConfig, WhepEndpoint, WhipConfig, WhipEndpoint
from test_topology_mcu import SMALL_MCU
from test_whip_server import FAST, SECRET, SMALL, Reply, post, problem, whip_offer

ICE = [{"urls": "stun:127.0.0.1:3478"}]


def small_mcu(hub: Any) -> McuServerStrategy:
    return McuServerStrategy(hub, config=SMALL_MCU)


class Server:
    """Signaling hub + SFU/MCU rooms + WHIP + WHEP on one loopback aiohttp app."""

    def __init__(self, *, token_auth: bool) -> None:
        self.auth = TokenAuth(secret=SECRET) if token_auth else None
        self.config = SignalingConfig(
            auth=self.auth or OpenAuth(),
            rooms=[
                RoomConfig(name="mesh", topology="mesh"),
                RoomConfig(name="sfu", topology="sfu"),
                RoomConfig(name="mcu", topology="mcu"),
            ],
            default_topology="sfu",
        )
        self.hub = SignalingHub(self.config)
        self.strategies: RoomStrategies | None = None
        self.whip: WhipEndpoint | None = None
        self.whep: WhepEndpoint | None = None
        self.base = ""

    def sfu(self, room: str = "sfu") -> SfuServerStrategy:
        assert self.strategies is not None
        strategy = self.strategies.running[room]
        assert isinstance(strategy, SfuServerStrategy)
        return strategy

    def token(self, *permissions: str, room: str = "sfu", identity: str = "obs") -> str:
        assert self.auth is not None
        return self.auth.mint(room=room, identity=identity, permissions=permissions)

    def url(self, path: str) -> str:
        return self.base + path


@contextlib.asynccontextmanager
async def running(
    *, token_auth: bool = False, connect_timeout: float = 20.0
) -> AsyncIterator[Server]:
    srv = Server(token_auth=token_auth)
    async with srv.hub:
        factories: dict[Topology | str, ServerStrategyFactory] = {
            Topology.SFU: sfu_strategy_factory(session_config=FAST),
            Topology.MCU: small_mcu,
        }
        async with RoomStrategies(srv.hub, factories=factories) as strategies:
            srv.strategies = strategies
            srv.whip = WhipEndpoint(
                srv.hub, strategies, config=WhipConfig(connect_timeout=connect_timeout)
            )
            srv.whep = WhepEndpoint(
                srv.hub,
                strategies,
                config=WhepConfig(connect_timeout=connect_timeout, max_sessions=8),
                ice_servers=lambda: ICE,
            )
            app = web.Application()
            srv.whip.add_routes(app)
            srv.whep.add_routes(app)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            srv.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            try:
                yield srv
            finally:
                await srv.whep.aclose()
                await srv.whip.aclose()
                await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running() as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@contextlib.asynccontextmanager
async def member(
    srv: Server,
    peer_id: str,
    *,
    room: str = "sfu",
    name: str | None = None,
    tone: float | None = None,
    video: bool = True,
) -> AsyncIterator[Room]:
    """A room participant (in-process signaling, a real aiortc connection to the server)
    publishing a test pattern and, with *tone*, a sine tone."""
    token = srv.token("publish", "subscribe", room=room, identity=peer_id) if srv.auth else None
    metadata = {"name": name} if name is not None else None
    async with (
        SignalingClient.connect(
            MemoryTransport(srv.hub, trusted=True),
            room=room,
            peer_id=peer_id,
            token=token,
            metadata=metadata,
        ) as client,
        join_room(client, session_config=FAST) as joined,
    ):
        if video:
            await joined.publish(TestPatternTrack(SMALL))
        if tone is not None:
            await joined.publish(ToneTrack(tone))
        yield joined


class Viewer:
    """A bare aiortc WHEP client: recvonly audio and video, counting what it decodes."""

    def __init__(self, kinds: tuple[str, ...] = ("video", "audio")) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for kind in kinds:
            self.pc.addTransceiver(kind, direction="recvonly")
        self.frames: dict[str, int] = {"audio": 0, "video": 0}
        self.counters: list[int] = []
        self.audio: list[np.ndarray] = []
        self.tracks: list[MediaStreamTrack] = []
        self.response: Reply | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tracks.append(track)
        self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frames[track.kind] += 1
                if isinstance(frame, av.VideoFrame):
                    self.counters.append(read_frame_counter(frame))
                elif isinstance(frame, av.AudioFrame):
                    self.audio.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels)))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def play(self, http: aiohttp.ClientSession, url: str, **headers: str) -> Reply:
        """POST the offer to *url*; on 201 apply the answer."""
        self.response = await post(http, url, await self.offer(), **headers)
        if self.response.status == 201:
            answer = RTCSessionDescription(sdp=await self.response.text(), type="answer")
            await self.pc.setRemoteDescription(answer)
        return self.response

    @property
    def location(self) -> str:
        assert self.response is not None
        return str(self.response.headers["Location"])

    async def wait_frames(self, kind: str, count: int, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            while self.frames[kind] < count:  # noqa: ASYNC110 - decoded frames, no event
                await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def viewer(kinds: tuple[str, ...] = ("video", "audio")) -> AsyncIterator[Viewer]:
    v = Viewer(kinds)
    try:
        yield v
    finally:
        await v.aclose()


async def wait_until(cond: Any, what: str, within: float = 20.0) -> None:
    try:
        async with asyncio.timeout(within):
            while not cond():  # noqa: ASYNC110 - polling server state, bounded
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


# --- SFU rooms ---------------------------------------------------------------------------


async def test_a_room_member_is_played_by_name_and_by_default(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with (
        member(server, "p-1", name="alice", tone=440.0),
        viewer() as by_name,
        viewer() as by_default,
    ):
        created = await by_name.play(http, server.url("/whep/sfu/alice"))
        assert created.status == 201, await created.text()
        assert created.content_type == "application/sdp"
        assert by_name.location.startswith("/whep/sfu/~/")
        assert len(by_name.location) > len("/whep/sfu/~/") + 20
        assert created.headers["ETag"]
        assert created.headers.getall("Link") == ['<stun:127.0.0.1:3478>; rel="ice-server"']
        for exposed in ("Location", "ETag", "Link"):
            assert exposed in created.headers["Access-Control-Expose-Headers"]
        assert "a=sendonly" in await created.text()
        assert (await by_default.play(http, server.url("/whep/sfu"))).status == 201

        await by_name.wait_frames("video", 10)
        await by_name.wait_frames("audio", 10)
        await by_default.wait_frames("video", 10)
        sfu = server.sfu()
        assert {v.source for v in sfu.viewers.values()} == {"p-1"}
        assert sfu.members.keys() == {"p-1"}  # viewers are not members
        stats = sfu.stats()
        assert stats is not None
        assert (stats.decoders_created, stats.encoders_created) == (0, 0)

        async with http.delete(server.url(by_name.location)) as deleted:
            assert deleted.status == 200
        assert len(sfu.viewers) == 1
        async with http.delete(server.url(by_name.location)) as again:
            await problem(again, 404)


async def test_a_whip_publisher_is_played_by_its_token_identity(
    http: aiohttp.ClientSession,
) -> None:
    async with running(token_auth=True) as server:
        pc, offer, _ = await whip_offer()
        try:
            # someone is in the room first (a viewer alone has nothing to play)
            published = await post(
                http, server.url("/whip/sfu"), offer, token=server.token("publish", identity="obs")
            )
            assert published.status == 201, await published.text()
            answer = RTCSessionDescription(sdp=await published.text(), type="answer")
            await pc.setRemoteDescription(answer)
            watch = server.token("subscribe", identity="someone")
            async with viewer(("video",)) as v:
                no_token = await v.play(http, server.url("/whep/sfu/obs"))
                await problem(no_token, 401)
                assert no_token.headers["WWW-Authenticate"] == "Bearer"
            async with viewer(("video",)) as v:
                publish_only = server.token("publish", identity="someone")
                body = await problem(
                    await v.play(
                        http, server.url("/whep/sfu/obs"), Authorization=f"Bearer {publish_only}"
                    ),
                    403,
                )
                assert "subscribe" in body["detail"]
            async with viewer(("video",)) as v:
                created = await v.play(
                    http, server.url("/whep/sfu/obs"), Authorization=f"Bearer {watch}"
                )
                assert created.status == 201, await created.text()
                await v.wait_frames("video", 10)
                (publisher_id,) = server.sfu().publishers
                (watching,) = server.sfu().viewers.values()
                assert watching.source == publisher_id
                assert server.sfu().name_of(publisher_id) == "obs"
                # the resource is bound to the token that created it
                async with http.delete(server.url(v.location)) as anonymous:
                    await problem(anonymous, 401)
                other = server.token("subscribe", identity="other")
                async with http.delete(
                    server.url(v.location), headers={"Authorization": f"Bearer {other}"}
                ) as foreign:
                    await problem(foreign, 403)
                async with http.delete(
                    server.url(v.location), headers={"Authorization": f"Bearer {watch}"}
                ) as deleted:
                    assert deleted.status == 200
        finally:
            await pc.close()


async def test_the_viewer_keeps_playing_when_its_participant_joins_again(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with member(server, "bob", video=False), viewer(("video",)) as v:
        async with member(server, "alice-1", name="alice"):
            assert (await v.play(http, server.url("/whep/sfu/alice"))).status == 201
            await v.wait_frames("video", 10)
            (watching,) = server.sfu().viewers.values()
            sub = watching.subscriptions["video"]
            rewriter = sub.rewriter
            assert rewriter is not None
        # alice left: the viewer stays, waiting; bob keeps the room open
        await wait_until(lambda: "alice-1" not in server.sfu().members, "alice to leave")
        assert watching in server.sfu().viewers.values()
        before = v.frames["video"]
        (track,) = v.tracks
        async with member(server, "alice-2", name="alice"):
            await v.wait_frames("video", before + 10)
            assert watching.source == "alice-2"
            # the same subscription and stream rewriter: same SSRC, continuous numbering
            assert watching.subscriptions["video"] is sub
            assert sub.rewriter is rewriter
            assert v.tracks == [track]  # no new track on the viewer's side
            assert server.sfu().name_of("alice-2") == "alice"


async def test_the_default_viewer_moves_to_the_next_publisher(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with member(server, "keep", video=False), viewer(("video",)) as v:
        async with member(server, "one"):
            async with member(server, "two"):
                await wait_until(lambda: server.sfu().publishing() == ["one", "two"], "two")
                assert (await v.play(http, server.url("/whep/sfu"))).status == 201
                await v.wait_frames("video", 5)
                (watching,) = server.sfu().viewers.values()
                assert watching.source == "one"
            # "two" left first: nothing changes for the viewer of "one"
            await wait_until(lambda: server.sfu().publishing() == ["one"], "two to leave")
            assert watching.source == "one"
        await wait_until(lambda: server.sfu().publishing() == [], "one to leave")
        before = v.frames["video"]
        async with member(server, "three"):
            await v.wait_frames("video", before + 5)
            assert watching.source == "three"
