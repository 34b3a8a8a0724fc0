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
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

import test_whip_server as whip_tests
from rtckit.peer.media import TestPatternTrack, ToneTrack, read_frame_counter
from rtckit.sfu.rtp import parse_rtp_header
from rtckit.signaling import (
    MemoryTransport,
    RoomConfig,
    SignalingClient,
    TokenAuth,
)
from rtckit.topology import Room, Topology, join_room
from rtckit.topology.base import ServerStrategyFactory
from rtckit.topology.mcu import McuServerStrategy
from rtckit.topology.sfu import sfu_strategy_factory
from rtckit.topology.strategies import RoomStrategies
from rtckit.whip import WhepConfig, WhepEndpoint, WhepSession, WhipConfig, WhipEndpoint
from test_mcu_engine import tone_magnitudes
from test_topology_mcu import SMALL_MCU
from test_whip_server import (
    FAST,
    ICE,
    SECRET,
    SMALL,
    Reply,
    _live_connections,
    _open_fds,
    _without_candidates,
    check_patch_rules,
    post,
    problem,
    serving,
    whip_offer,
)

http = whip_tests.http  # the aiohttp client session fixture


def small_mcu(hub: Any) -> McuServerStrategy:
    return McuServerStrategy(hub, config=SMALL_MCU)


class Server(whip_tests.Server):
    """Signaling + SFU/MCU rooms + WHIP + WHEP on one loopback aiohttp app."""

    def __init__(self, *, token_auth: bool, connect_timeout: float) -> None:
        mcu = RoomConfig(name="mcu", topology="mcu")
        super().__init__(token_auth=token_auth, connect_timeout=connect_timeout, rooms=[mcu])
        self.hub = self.signaling.hub
        self.whep: WhepEndpoint | None = None

    def url(self, path: str) -> str:
        return self.base + path

    def sessions(self) -> dict[str, WhepSession]:
        assert self.whep is not None
        return self.whep.sessions

    def subscribers(self) -> list[str]:
        router = self.sfu().router
        assert router is not None
        return [sub.subscriber for sub in router.subscriptions()]


@contextlib.asynccontextmanager
async def running(
    *, token_auth: bool = False, connect_timeout: float = 20.0
) -> AsyncIterator[Server]:
    srv = Server(token_auth=token_auth, connect_timeout=connect_timeout)
    factories: dict[Topology | str, ServerStrategyFactory] = {
        Topology.SFU: sfu_strategy_factory(session_config=FAST),
        Topology.MCU: small_mcu,
    }
    async with srv.signaling, RoomStrategies(srv.hub, factories=factories) as strategies:
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
        async with serving(app) as srv.base:
            try:
                yield srv
            finally:
                await srv.whep.aclose()
                await srv.whip.aclose()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running() as srv:
        yield srv


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


# the offer's m-lines in either order (browsers and most WHEP libraries offer audio first)
OFFER_ORDERS = pytest.mark.parametrize(
    "kinds", [("audio", "video"), ("video", "audio")], ids=["audio-first", "video-first"]
)


@OFFER_ORDERS
async def test_a_room_member_is_played_by_name_and_by_default(
    server: Server, http: aiohttp.ClientSession, kinds: tuple[str, ...]
) -> None:
    async with (
        member(server, "p-1", name="alice", tone=440.0),
        viewer(kinds) as by_name,
        viewer(kinds) as by_default,
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
        await by_default.wait_frames("audio", 10)
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
                stats = server.sfu().stats()
                assert stats is not None
                assert stats.plis_relayed > 0  # a keyframe asked of the publisher for it
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


async def test_the_viewer_keeps_playing_when_its_participant_publishes_again(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with member(server, "dave", video=False) as room, viewer(("video",)) as v:
        first = TestPatternTrack(SMALL)
        await room.publish(first)
        assert (await v.play(http, server.url("/whep/sfu/dave"))).status == 201
        await v.wait_frames("video", 10)
        (watching,) = server.sfu().viewers.values()
        sub = watching.subscriptions["video"]
        await room.unpublish(first)
        await wait_until(lambda: server.sfu().publishing() == [], "the unpublication")
        before = v.frames["video"]
        await room.publish(TestPatternTrack(SMALL))  # a new track, renegotiated
        await v.wait_frames("video", before + 10)
        assert watching.subscriptions["video"] is sub
        assert len(v.tracks) == 1


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


def _inbound(stats: Any) -> list[Any]:
    return [s for s in stats.values() if getattr(s, "type", None) == "inbound-rtp"]


async def test_the_stream_of_a_rejoining_participant_is_continuous_on_the_wire(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """What the server sends the viewer across the switch: one SSRC, sequence numbers that
    follow each other, timestamps that go on (the rewritten packets, before encryption)."""
    sent: list[tuple[int, int, int]] = []  # (ssrc, sequence number, timestamp)

    def record(data: bytes) -> bool:
        if not 192 <= data[1] <= 223:  # RTP, not RTCP
            header = parse_rtp_header(data)
            sent.append((header.ssrc, header.sequence_number, header.timestamp))
        return True

    async with member(server, "bob", video=False), viewer(("video",)) as v:
        async with member(server, "carol-1", name="carol"):
            assert (await v.play(http, server.url("/whep/sfu/carol"))).status == 201
            (watching,) = server.sfu().viewers.values()
            await wait_until(lambda: "video" in watching.subscriptions, "a subscription")
            watching.subscriptions["video"].set_send_filter(record)
            await v.wait_frames("video", 20)
        await wait_until(lambda: "carol-1" not in server.sfu().members, "carol to leave")
        switch = len(sent)
        before = v.frames["video"]
        async with member(server, "carol-2", name="carol"):
            await v.wait_frames("video", before + 20)
    (ssrc,) = {s for s, _, _ in sent[:switch]}
    media = [(seq, ts) for s, seq, ts in sent if s == ssrc]  # not the RTX stream
    assert len(media) > len([s for s, _, _ in sent[:switch] if s == ssrc]) + 10  # carol-2's
    for (seq_a, ts_a), (seq_b, ts_b) in itertools.pairwise(media):
        assert (seq_b - seq_a) % 65536 == 1, (seq_a, seq_b)
        assert 0 <= (ts_b - ts_a) % 2**32 < 90000 * 30, (ts_a, ts_b)


# --- MCU rooms ---------------------------------------------------------------------------


@OFFER_ORDERS
async def test_an_mcu_room_plays_as_one_full_mix(
    server: Server, http: aiohttp.ClientSession, kinds: tuple[str, ...]
) -> None:
    async with viewer(kinds) as v:
        async with (
            member(server, "red", room="mcu", tone=440.0),
            member(server, "green", room="mcu", tone=660.0),
        ):
            assert server.strategies is not None
            mcu = server.strategies.running["mcu"]
            assert isinstance(mcu, McuServerStrategy)
            await wait_until(lambda: len(mcu.members) == 2, "both participants in the MCU")
            async with viewer(("video",)) as refused:
                body = await problem(await refused.play(http, server.url("/whep/mcu/red")), 409)
                assert "/whep/mcu" in body["detail"]
            async with viewer(("video",)) as h264:
                (transceiver,) = h264.pc.getTransceivers()
                capabilities = RTCRtpReceiver.getCapabilities("video")
                assert capabilities is not None
                codecs = capabilities.codecs
                transceiver.setCodecPreferences([c for c in codecs if c.mimeType == "video/H264"])
                body = await problem(await h264.play(http, server.url("/whep/mcu")), 400)
                assert "cannot be answered" in body["detail"]
            assert (await v.play(http, server.url("/whep/mcu"))).status == 201
            await v.wait_frames("video", 10)
            await v.wait_frames("audio", 50)
            engine = mcu.engine
            assert engine is not None
            (session,) = server.sessions().values()
            assert [o.id for o in engine.outputs] == [session.participant_id]
            assert len(engine.participants) == 2  # the viewer is not drawn nor mixed
            v.audio.clear()
            await v.wait_frames("audio", v.frames["audio"] + 100)
            samples = np.concatenate([a.mean(axis=1) for a in v.audio[-100:]])
            magnitudes = tone_magnitudes(samples, {"red": 440.0, "green": 660.0, "none": 1000.0})
            # both tones: a full mix (a mix-minus of either participant would lack its own)
            assert magnitudes["red"] > 20 * magnitudes["none"], magnitudes
            assert magnitudes["green"] > 20 * magnitudes["none"], magnitudes
            stats = engine.stats()
            before = stats.audio_encodes_common
            await asyncio.sleep(0.2)
            assert engine.stats().audio_encodes_common > before
        # everyone left: the MCU stopped, the viewer's session ended
        await wait_until(lambda: not server.sessions(), "the viewer to be reaped")
        assert session.peer.end_reason == "room stopped"
        async with http.delete(server.url(v.location)) as gone:
            await problem(gone, 404)  # the server ended it: no late DELETE


# --- the protocol ------------------------------------------------------------------------


def _sdpfrag(sdp: str, candidates: list[str], *, mid: str | None = None) -> str:
    lines = sdp.split("\r\n")
    ufrag = next(ln for ln in lines if ln.startswith("a=ice-ufrag:"))
    pwd = next(ln for ln in lines if ln.startswith("a=ice-pwd:"))
    mid_line = mid or next(ln for ln in lines if ln.startswith("a=mid:"))
    body = [ufrag, pwd, "m=video 9 UDP/TLS/RTP/SAVPF 0", mid_line, *candidates]
    return "\r\n".join([*body, "a=end-of-candidates"]) + "\r\n"


FRAG = "application/trickle-ice-sdpfrag"


async def test_a_trickling_viewer_plays(server: Server, http: aiohttp.ClientSession) -> None:
    async with member(server, "alice"), viewer(("video",)) as v:
        full = await v.offer()
        offer, candidates = _without_candidates(full)
        created = await post(http, server.url("/whep/sfu/alice"), offer)
        assert created.status == 201, await created.text()
        answer = RTCSessionDescription(sdp=await created.text(), type="answer")
        await v.pc.setRemoteDescription(answer)
        async with http.patch(
            server.url(created.headers["Location"]),
            data=_sdpfrag(full, candidates),
            headers={"Content-Type": FRAG, "If-Match": created.headers["ETag"]},
        ) as patched:
            assert patched.status == 204, await patched.text()
        (watching,) = server.sfu().viewers.values()
        assert watching.candidates_added == len(candidates) > 0
        await v.wait_frames("video", 10)


async def test_requests_refused_with_their_status(
    server: Server, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with viewer() as v:
        offer = await v.offer()
    url = server.url
    async with member(server, "alice"):
        await problem(await post(http, url("/whep/sfu"), offer, **{"Content-Type": "text/x"}), 415)
        await problem(await post(http, url("/whep/sfu"), "hello"), 400)
        await problem(await post(http, url("/whep/sfu"), "v=0\r\no=- 1 1 IN IP4 0\r\nx"), 400)
        # 422: an offer that sends, or carries other media
        sends = offer.replace("a=recvonly", "a=sendonly")
        body = await problem(await post(http, url("/whep/sfu"), sends), 422)
        assert "WHEP" in body["detail"]
        await problem(
            await post(http, url("/whep/sfu"), offer.replace("m=audio", "m=application")), 422
        )
        twice = offer + offer[offer.index("m=video") :]
        await problem(await post(http, url("/whep/sfu"), twice), 422)
        # 413: too large (declared, or sent in chunks)
        await problem(await post(http, url("/whep/sfu"), offer + "a=x:" + "y" * 70000), 413)
        # 400: an offer aiortc cannot apply (no rtcp-mux): no traceback
        broken = "\r\n".join(line for line in offer.split("\r\n") if line != "a=rtcp-mux")
        body = await problem(await post(http, url("/whep/sfu"), broken), 400)
        assert "cannot be answered" in body["detail"]
        assert server.sfu().viewers == {}
        # 409: a mesh room has no media server
        body = await problem(await post(http, url("/whep/mesh"), offer), 409)
        assert "mesh" in body["detail"]
        # 405 with Allow; 404 for no session
        async with http.get(url("/whep/sfu")) as got:
            await problem(got, 405)
            assert got.headers["Allow"] == "OPTIONS, POST"
        async with http.get(url("/whep/sfu/alice")) as got:
            await problem(got, 405)
        async with http.delete(url("/whep/sfu/~/not-a-session")) as gone:
            await problem(gone, 404)
        # OPTIONS: CORS, Accept-Post, the ICE servers (not on a CORS preflight)
        for path in ("/whep/sfu", "/whep/sfu/alice"):
            async with http.options(url(path)) as options:
                assert options.status == 204
                assert options.headers["Accept-Post"] == "application/sdp"
                assert "POST" in options.headers["Access-Control-Allow-Methods"]
                assert options.headers.getall("Link") == ['<stun:127.0.0.1:3478>; rel="ice-server"']
        async with http.options(
            url("/whep/sfu"), headers={"Access-Control-Request-Method": "POST"}
        ) as preflight:
            assert preflight.status == 204
            assert "Link" not in preflight.headers

        # a session's resource: PATCH rules, DELETE
        async with viewer(("video",)) as v:
            created = await v.play(http, url("/whep/sfu/alice"))
            assert created.status == 201
            resource, etag = url(v.location), created.headers["ETag"]
            await check_patch_rules(http, resource, etag, _sdpfrag(await v.offer(), []))
            async with http.delete(resource) as deleted:
                assert deleted.status == 200
            async with http.delete(resource) as again:
                await problem(again, 404)
    # nobody in the room: nothing to play
    await wait_until(lambda: server.strategies and "sfu" not in server.strategies.running, "stop")
    async with viewer(("video",)) as v:
        body = await problem(await v.play(http, url("/whep/sfu")), 404)
        assert "nobody" in body["detail"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_tokens_and_the_session_limit(http: aiohttp.ClientSession) -> None:
    async with running(token_auth=True) as server, member(server, "alice"):
        watch = server.token("subscribe", identity="eve")
        async with viewer(("video",)) as v:
            malformed = await v.play(http, server.url("/whep/sfu"), Authorization="Basic eA==")
            await problem(malformed, 401)
        async with viewer(("video",)) as v:
            forged = TokenAuth(secret="x" * 40).mint(
                room="sfu", identity="eve", permissions=["subscribe"]
            )
            refused = await v.play(http, server.url("/whep/sfu"), Authorization=f"Bearer {forged}")
            await problem(refused, 401)
        async with viewer(("video",)) as v:
            elsewhere = server.token("subscribe", room="other")
            other_room = await v.play(
                http, server.url("/whep/sfu"), Authorization=f"Bearer {elsewhere}"
            )
            await problem(other_room, 401)
        async with contextlib.AsyncExitStack() as stack:
            assert server.whep is not None
            for _ in range(server.whep.config.max_sessions):
                v = await stack.enter_async_context(viewer(("video",)))
                ok = await v.play(http, server.url("/whep/sfu"), Authorization=f"Bearer {watch}")
                assert ok.status == 201, await ok.text()
            extra = await stack.enter_async_context(viewer(("video",)))
            full = await extra.play(http, server.url("/whep/sfu"), Authorization=f"Bearer {watch}")
            body = await problem(full, 503)
            assert "WHEP sessions" in body["detail"]


# --- session life ------------------------------------------------------------------------


async def test_a_viewer_that_never_connects_is_reaped(http: aiohttp.ClientSession) -> None:
    async with (
        running(connect_timeout=1.5) as server,
        member(server, "alice"),
        viewer(("video",)) as v,
    ):
        created = await post(http, server.url("/whep/sfu/alice"), await v.offer())
        assert created.status == 201  # the answer is never applied: no ICE, no DTLS
        (watching,) = server.sfu().viewers.values()
        await wait_until(lambda: watching.participant_id in server.subscribers(), "subscribed")
        async with asyncio.timeout(20):
            assert await watching.wait_ended() == "timeout"
        await wait_until(lambda: not server.sessions(), "the session to end")
        assert server.sfu().viewers == {}
        assert watching.participant_id not in server.subscribers()
        async with http.delete(server.url(created.headers["Location"])) as gone:
            await problem(gone, 404)


async def test_a_viewer_that_hangs_up_without_delete_is_reaped(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with member(server, "alice"):
        v = Viewer(("video",))
        try:
            assert (await v.play(http, server.url("/whep/sfu/alice"))).status == 201
            await v.wait_frames("video", 5)
            (watching,) = server.sfu().viewers.values()
        finally:
            await v.aclose()  # DTLS close_notify, no DELETE
        async with asyncio.timeout(30):
            assert await watching.wait_ended() == "connection closed"
        await wait_until(lambda: not server.sessions(), "the session to end")
        # a browser client closes first, then sends its DELETE (WhepConfig.delete_grace)
        async with http.delete(server.url(v.location)) as late:
            assert late.status == 200
        async with http.delete(server.url(v.location)) as gone:
            await problem(gone, 404)


async def test_viewers_end_when_the_room_stops(server: Server, http: aiohttp.ClientSession) -> None:
    async with viewer(("video",)) as v:
        async with member(server, "alice"):
            assert (await v.play(http, server.url("/whep/sfu/alice"))).status == 201
            await v.wait_frames("video", 5)
            (watching,) = server.sfu().viewers.values()
        async with asyncio.timeout(20):
            assert await watching.wait_ended() == "room stopped"
        await wait_until(lambda: not server.sessions(), "the session to end")
        async with http.delete(server.url(v.location)) as gone:
            await problem(gone, 404)


async def test_a_flood_of_posts_that_never_connect_leaves_no_descriptor_behind(
    http: aiohttp.ClientSession,
) -> None:
    async with running(connect_timeout=1.5) as server, member(server, "alice"):
        assert server.whep is not None
        viewers = [Viewer() for _ in range(5)]
        try:
            offers = [await v.offer() for v in viewers]
            await post(http, server.url("/whep/sfu"), offers[0])  # warm up
            await wait_until(lambda: not server.sessions(), "the warm-up to end")
            await asyncio.sleep(0.2)
            baseline, connections = _open_fds(), _live_connections()
            for offer in offers:
                assert (await post(http, server.url("/whep/sfu"), offer)).status == 201
            assert len(server.sessions()) == len(offers)
            assert _open_fds() > baseline  # each session holds its ICE sockets
            assert _live_connections() > connections  # and its connection
            await wait_until(lambda: not server.sessions(), "the flood to be reaped")
            await asyncio.sleep(0.2)  # the closed transports release their sockets
            assert _open_fds() <= baseline
            assert _live_connections() <= connections  # memory: no session kept its state
            assert server.sfu().viewers == {}
            assert server.subscribers() == []
        finally:
            for v in viewers:
                await v.aclose()


async def test_rtckit_serve_mounts_whep_behind_its_auth() -> None:
    """``rtckit serve``'s app: WHEP with the server's room tokens (``subscribe``)."""
    from aiohttp.test_utils import TestClient, TestServer

    from rtckit.server.app import create_app
    from rtckit.server.config import (
        AuthSettings,
        RoomSettings,
        RoomsSettings,
        ServeConfig,
        ServerSettings,
    )

    config = ServeConfig(
        server=ServerSettings(insecure=True),
        auth=AuthSettings(mode="token", secret=SECRET),
        rooms=RoomsSettings(declared=(RoomSettings(name="hall", topology="sfu"),)),
    )
    tokens = TokenAuth(secret=SECRET)
    async with (
        viewer(("video",)) as v,
        asyncio.timeout(60),
        TestClient(TestServer(create_app(config))) as client,
    ):
        offer = await v.offer()
        headers = {"Content-Type": "application/sdp"}
        await problem(await client.post("/whep/hall", data=offer, headers=headers), 401)
        token = tokens.mint(room="hall", identity="viewer", permissions=["subscribe"])
        headers["Authorization"] = f"Bearer {token}"
        # mounted and authorized; nobody is in the room yet: nothing to play
        body = await problem(await client.post("/whep/hall", data=offer, headers=headers), 404)
        assert "nobody" in body["detail"]
