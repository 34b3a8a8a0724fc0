"""WHIP ingest over real HTTP on loopback: an aiortc WHIP client publishes into an SFU room.

The server is a signaling hub with SFU and MCU room strategies and
:class:`rtckit.whip.WhipEndpoint` on an aiohttp app; room members are real rtckit participants
over WebSocket; the WHIP client is a bare aiortc ``RTCPeerConnection`` (no rtckit on its side)
speaking HTTP with aiohttp. WHIP into MCU rooms: test_whip_mcu.py, on the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtckit.peer import SessionConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack, read_frame_counter
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig, TokenAuth
from rtckit.signaling.wsserver import SignalingServer
from rtckit.topology import (
    ParticipantJoined,
    ParticipantLeft,
    Room,
    RoomEvent,
    TrackPublished,
    TrackUnpublished,
    join_room,
)
from rtckit.topology.mcu import McuPublisher, McuServerStrategy
from rtckit.topology.sfu import SfuPublisher, SfuServerStrategy, sfu_strategy_factory
from rtckit.topology.strategies import RoomStrategies
from rtckit.whip import WhipConfig, WhipEndpoint
from test_topology_mcu import small_mcu

SMALL = PatternConfig(width=160, height=120, fps=15)
FAST = SessionConfig(heartbeat_interval=0.25, disconnected_after=1.0, restart_after=2.0)
SECRET = "s" * 40
ICE = [{"urls": "stun:127.0.0.1:3478"}]


class Server:
    """Signaling + SFU rooms (and *rooms*) + WHIP on one loopback aiohttp app."""

    def __init__(
        self, *, token_auth: bool, connect_timeout: float, rooms: Sequence[RoomConfig] = ()
    ) -> None:
        self.auth = TokenAuth(secret=SECRET) if token_auth else None
        config = SignalingConfig(
            auth=self.auth or OpenAuth(),
            rooms=[
                RoomConfig(name="mesh", topology="mesh"),
                RoomConfig(name="sfu", topology="sfu"),
                *rooms,
            ],
            default_topology="sfu",
        )
        self.signaling = SignalingServer(config)
        self.connect_timeout = connect_timeout
        self.strategies: RoomStrategies | None = None
        self.whip: WhipEndpoint | None = None
        self.base = ""

    def sfu(self, room: str = "sfu") -> SfuServerStrategy:
        assert self.strategies is not None
        strategy = self.strategies.running[room]
        assert isinstance(strategy, SfuServerStrategy)
        return strategy

    def publishers(self, room: str) -> Mapping[str, SfuPublisher | McuPublisher]:
        """The WHIP publishers of an SFU or MCU room."""
        assert self.strategies is not None
        strategy = self.strategies.running[room]
        assert isinstance(strategy, SfuServerStrategy | McuServerStrategy)
        return strategy.publishers

    def token(self, *permissions: str, room: str = "sfu", identity: str = "obs") -> str:
        assert self.auth is not None
        return self.auth.mint(room=room, identity=identity, permissions=permissions)


@contextlib.asynccontextmanager
async def running(
    *, token_auth: bool = False, connect_timeout: float = 20.0
) -> AsyncIterator[Server]:
    mcu = RoomConfig(name="mcu", topology="mcu")
    srv = Server(token_auth=token_auth, connect_timeout=connect_timeout, rooms=[mcu])
    async with srv.signaling:
        await srv.signaling.listen("127.0.0.1", 0)
        factory = sfu_strategy_factory(session_config=FAST)
        factories = {"sfu": factory, "mcu": small_mcu}
        async with RoomStrategies(srv.signaling.hub, factories=factories) as strategies:
            srv.strategies = strategies
            whip = WhipEndpoint(
                srv.signaling.hub,
                strategies,
                config=WhipConfig(connect_timeout=connect_timeout),
                ice_servers=lambda: ICE,
            )
            srv.whip = whip
            app = web.Application()
            whip.add_routes(app)
            async with serving(app) as srv.base:
                try:
                    yield srv
                finally:
                    await whip.aclose()


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve *app* on a free loopback port; yield its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running() as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class RoomLog:
    def __init__(self, room: Room) -> None:
        self.events: list[RoomEvent] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(room))

    async def _run(self, room: Room) -> None:
        async for event in room.events():
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def wait_for(self, cls: type, participant: str, within: float = 30) -> Any:
        async with asyncio.timeout(within), self._changed:
            while True:
                for event in self.events:
                    if (
                        isinstance(event, cls)
                        and getattr(event, "participant_id", None) == participant
                    ):
                        return event
                await self._changed.wait()

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def member(server: Server) -> AsyncIterator[tuple[Room, RoomLog]]:
    token = server.token("subscribe", "publish", identity="viewer") if server.auth else None
    async with (
        SignalingClient.connect(server.signaling.url, room="sfu", token=token) as client,
        join_room(client, session_config=FAST) as room,
    ):
        log = RoomLog(room)
        try:
            yield room, log
        finally:
            await log.aclose()


def _without_candidates(sdp: str) -> tuple[str, list[str]]:
    lines = sdp.split("\r\n")
    candidates = [line for line in lines if line.startswith("a=candidate:")]
    kept = [ln for ln in lines if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept), candidates


async def whip_offer(*, trickle: bool = False) -> tuple[RTCPeerConnection, str, list[str]]:
    """A bare aiortc WHIP client: one send-only video track; explicit empty ICE servers."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(TestPatternTrack(SMALL), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    if trickle:
        sdp, candidates = _without_candidates(sdp)
        return pc, sdp, candidates
    return pc, sdp, []


def _fragment(pc: RTCPeerConnection, candidates: list[str]) -> str:
    sdp = pc.localDescription.sdp
    ufrag = next(ln for ln in sdp.split("\r\n") if ln.startswith("a=ice-ufrag:"))
    pwd = next(ln for ln in sdp.split("\r\n") if ln.startswith("a=ice-pwd:"))
    mid = next(ln for ln in sdp.split("\r\n") if ln.startswith("a=mid:"))
    lines = [ufrag, pwd, "m=video 9 UDP/TLS/RTP/SAVPF 0", mid, *candidates, "a=end-of-candidates"]
    return "\r\n".join(lines) + "\r\n"


class Reply:
    """A response read whole (its connection released)."""

    def __init__(self, response: aiohttp.ClientResponse, body: bytes) -> None:
        self.status = response.status
        self.headers = response.headers
        self.content_type = response.content_type
        self.body = body

    async def read(self) -> bytes:
        return self.body

    async def text(self) -> str:
        return self.body.decode()


async def post(
    http: aiohttp.ClientSession, url: str, body: str, *, token: str | None = None, **headers: str
) -> Reply:
    sent = {"Content-Type": "application/sdp", **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=body.encode(), headers=sent) as response:
        return Reply(response, await response.read())


async def problem(response: aiohttp.ClientResponse | Reply, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body = json.loads(await response.read())
    assert body["status"] == status
    assert body["detail"]
    return dict(body)


@pytest.mark.parametrize("trickle", [False, True], ids=["full-offer", "trickle"])
async def test_whip_publisher_reaches_room_member_and_leaves_on_delete(
    server: Server, http: aiohttp.ClientSession, trickle: bool
) -> None:
    async with member(server) as (_room, log):
        pc, offer, candidates = await whip_offer(trickle=trickle)
        try:
            response = await post(http, f"{server.base}/whip/sfu", offer)
            assert response.status == 201, await response.text()
            assert response.content_type == "application/sdp"
            location, etag = response.headers["Location"], response.headers["ETag"]
            assert location.startswith("/whip/sfu/")
            assert len(location) > len("/whip/sfu/") + 20
            assert response.headers.getall("Link") == ['<stun:127.0.0.1:3478>; rel="ice-server"']
            for exposed in ("Location", "ETag", "Link"):
                assert exposed in response.headers["Access-Control-Expose-Headers"]
            answer = await response.text()
            assert "a=recvonly" in answer
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            resource = server.base + location
            if trickle:
                async with http.patch(
                    resource,
                    data=_fragment(pc, candidates),
                    headers={"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag},
                ) as patched:
                    assert patched.status == 204, await patched.text()
                (publisher,) = server.sfu().publishers.values()
                assert publisher.candidates_added == len(candidates) > 0

            # the room member sees the publisher join and gets its video, decoded on its side
            publisher_id = next(iter(server.sfu().publishers))
            assert publisher_id.startswith("whip-")
            # a send-only member: no signaling session from the SFU, nothing forwarded to it
            assert publisher_id not in server.sfu().members
            await log.wait_for(ParticipantJoined, publisher_id)
            published = await log.wait_for(TrackPublished, publisher_id)
            async with asyncio.timeout(30):
                frame = await published.track.recv()
            assert (frame.width, frame.height) == (SMALL.width, SMALL.height)
            assert read_frame_counter(frame) >= 0
            stats = server.sfu().stats()
            assert stats is not None
            assert stats.packets_out > 0
            assert stats.decoders_created == 0
            assert stats.encoders_created == 0

            async with http.delete(resource) as deleted:
                assert deleted.status == 200
            await log.wait_for(TrackUnpublished, publisher_id)
            await log.wait_for(ParticipantLeft, publisher_id)
            assert published.track.readyState == "ended"
            assert server.sfu().publishers == {}
            async with http.delete(resource) as again:
                await problem(again, 404)
        finally:
            await pc.close()


async def test_publisher_that_never_connects_is_reaped(http: aiohttp.ClientSession) -> None:
    async with running(connect_timeout=1.5) as server, member(server) as (_room, log):
        pc, offer, _ = await whip_offer()
        try:
            response = await post(http, f"{server.base}/whip/sfu", offer)
            assert response.status == 201
            resource = server.base + response.headers["Location"]
            # the client never applies the answer: no ICE, no DTLS
            publisher_id = next(iter(server.sfu().publishers))
            await log.wait_for(ParticipantJoined, publisher_id)
            await log.wait_for(ParticipantLeft, publisher_id, within=20)
            assert server.whip is not None
            assert server.whip.sessions == {}
            async with http.delete(resource) as gone:
                await problem(gone, 404)
        finally:
            await pc.close()


async def test_a_publisher_that_hangs_up_without_delete_is_reaped(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with member(server) as (_room, log):
        pc, offer, _ = await whip_offer()
        try:
            response = await post(http, f"{server.base}/whip/sfu", offer)
            assert response.status == 201
            resource = server.base + response.headers["Location"]
            answer = RTCSessionDescription(sdp=await response.text(), type="answer")
            await pc.setRemoteDescription(answer)
            (publisher,) = server.sfu().publishers.values()
            published = await log.wait_for(TrackPublished, publisher.participant_id)
            async with asyncio.timeout(30):
                await published.track.recv()
        finally:
            await pc.close()  # DTLS close_notify, no DELETE
        async with asyncio.timeout(30):
            reason = await publisher.wait_ended()
        assert reason == "connection closed"  # its DTLS close_notify, not a DELETE
        await log.wait_for(ParticipantLeft, publisher.participant_id)
        async with asyncio.timeout(10):
            while server.whip is not None and server.whip.sessions:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        fragment = "a=ice-ufrag:x\r\na=ice-pwd:y\r\na=end-of-candidates\r\n"
        patch_headers = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}
        async with http.patch(resource, data=fragment, headers=patch_headers) as patched:
            await problem(patched, 404)
        # a client that closes its connection before its DELETE (browsers' whip.js) gets a 200
        async with http.delete(resource) as late:
            assert late.status == 200, await late.text()
        async with http.delete(resource) as gone:
            await problem(gone, 404)


async def _hang_up(server: Server, http: aiohttp.ClientSession, token: str) -> str:
    """A publisher that connects, then closes its connection without a DELETE: its resource."""
    pc, offer, _ = await whip_offer()
    try:
        response = await post(http, f"{server.base}/whip/sfu", offer, token=token)
        assert response.status == 201, await response.text()
        answer = RTCSessionDescription(sdp=await response.text(), type="answer")
        await pc.setRemoteDescription(answer)
        (publisher,) = server.sfu().publishers.values()
        async with asyncio.timeout(30):
            while pc.connectionState != "connected":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await pc.close()
    async with asyncio.timeout(30):
        assert await publisher.wait_ended() == "connection closed"
        while server.whip is not None and server.whip.sessions:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return server.base + response.headers["Location"]


async def _only_the_owner_deletes(
    server: Server, http: aiohttp.ClientSession, resource: str, token: str
) -> None:
    """A DELETE of *resource* without a token: 401; with another's: 403; with *token*: 200."""
    async with http.delete(resource) as anonymous:
        await problem(anonymous, 401)
    other = server.token("publish", identity="someone-else")
    async with http.delete(resource, headers={"Authorization": f"Bearer {other}"}) as wrong:
        await problem(wrong, 403)
    async with http.delete(resource, headers={"Authorization": f"Bearer {token}"}) as ok:
        assert ok.status == 200


async def test_a_delete_after_a_hang_up_needs_the_owner_and_comes_in_time(
    http: aiohttp.ClientSession,
) -> None:
    """The 200 to a DELETE after a hang-up (WhipConfig.delete_grace): for the session's own
    token only, within the grace, and for the last max_sessions ended sessions only."""
    async with running(token_auth=True) as server:
        assert server.whip is not None
        server.whip.config = WhipConfig(max_sessions=1, delete_grace=2.0)
        token = server.token("publish")
        first = await _hang_up(server, http, token)
        second = await _hang_up(server, http, token)
        async with http.delete(first, headers={"Authorization": f"Bearer {token}"}) as old:
            await problem(old, 404)  # one ended session remembered (max_sessions)
        await _only_the_owner_deletes(server, http, second, token)
        third = await _hang_up(server, http, token)
        await asyncio.sleep(2.5)
        async with http.delete(third, headers={"Authorization": f"Bearer {token}"}) as late:
            await problem(late, 404)  # after the grace


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def _live_connections() -> int:
    """aiortc connections still in memory (after a collection): a session that ended and
    kept its connection (or its ICE, DTLS and SRTP state) alive would count here."""
    gc.collect()
    return sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects())


async def test_a_flood_of_posts_that_never_connect_leaves_no_descriptor_behind(
    http: aiohttp.ClientSession,
) -> None:
    async with running(connect_timeout=1.5) as server:
        clients = [await whip_offer() for _ in range(4)]
        try:
            await post(http, f"{server.base}/whip/sfu", clients[0][1])  # warm up the room
            assert server.whip is not None
            async with asyncio.timeout(20):
                while server.whip.sessions:  # noqa: ASYNC110 - bounded by the timeout
                    await asyncio.sleep(0.1)
            baseline, connections = _open_fds(), _live_connections()
            for _pc, offer, _ in clients:
                assert (await post(http, f"{server.base}/whip/sfu", offer)).status == 201
            assert len(server.whip.sessions) == len(clients)
            assert _open_fds() > baseline  # each session holds its ICE sockets
            assert _live_connections() > connections  # and its connection
            async with asyncio.timeout(20):
                while server.whip.sessions:  # noqa: ASYNC110 - bounded by the timeout
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.2)  # the closed transports release their sockets
            assert _open_fds() <= baseline
            assert _live_connections() <= connections  # memory: no session kept its state
        finally:
            for pc, _offer, _ in clients:
                await pc.close()


@pytest.mark.parametrize("room", ["sfu", "mcu"])
async def test_a_publisher_removed_from_the_room_ends_its_session(
    server: Server, http: aiohttp.ClientSession, room: str
) -> None:
    pc, offer, _ = await whip_offer()
    try:
        response = await post(http, f"{server.base}/whip/{room}", offer)
        assert response.status == 201
        resource = server.base + response.headers["Location"]
        (publisher,) = server.publishers(room).values()
        server.signaling.hub.remove_peer(room, publisher.participant_id)  # an admin kicks it
        async with asyncio.timeout(10):
            await publisher.wait_ended()  # the room removed it (its signaling closed)
        assert server.whip is not None
        async with asyncio.timeout(10):
            while server.whip.sessions:  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.05)
        async with http.delete(resource) as gone:
            await problem(gone, 404)
    finally:
        await pc.close()


@pytest.mark.parametrize("room", ["sfu", "mcu"])
async def test_an_offer_aiortc_cannot_apply_is_a_400_without_traceback(
    server: Server, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, room: str
) -> None:
    pc, offer, _ = await whip_offer()
    await pc.close()
    broken = "\r\n".join(line for line in offer.split("\r\n") if line != "a=rtcp-mux")
    with caplog.at_level(logging.INFO):
        body = await problem(await post(http, f"{server.base}/whip/{room}", broken), 400)
    assert "cannot be answered" in body["detail"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert server.whip is not None
    assert server.whip.sessions == {}
    # the refused publisher left the room it was the only person in: its media server stopped
    assert server.strategies is not None
    async with asyncio.timeout(10):
        while room in server.strategies.running:  # noqa: ASYNC110 - bounded by the timeout
            await asyncio.sleep(0.05)


async def test_an_offer_sent_in_many_chunks_is_read_whole(
    server: Server, http: aiohttp.ClientSession
) -> None:
    pc, offer, _ = await whip_offer()
    try:

        async def pieces() -> AsyncIterator[bytes]:
            data = offer.encode()
            for start in range(0, len(data), 100):
                yield data[start : start + 100]
                await asyncio.sleep(0.005)  # separate TCP segments, separate reads

        headers = {"Content-Type": "application/sdp"}
        async with http.post(f"{server.base}/whip/sfu", data=pieces(), headers=headers) as response:
            assert response.status == 201, await response.text()
            assert "a=recvonly" in await response.text()
    finally:
        await pc.close()


async def test_requests_refused_with_their_status(
    server: Server, http: aiohttp.ClientSession
) -> None:
    base = server.base
    _pc, offer, _ = await whip_offer()
    await _pc.close()
    # 415: not an SDP body
    await problem(
        await post(http, f"{base}/whip/sfu", offer, **{"Content-Type": "text/plain"}), 415
    )
    # 400: not SDP at all; 422: nothing it can publish
    await problem(await post(http, f"{base}/whip/sfu", "hello"), 400)
    recvonly = offer.replace("a=sendonly", "a=recvonly")
    await problem(await post(http, f"{base}/whip/sfu", recvonly), 422)
    # 409: a mesh room has no media server; the detail says so
    body = await problem(await post(http, f"{base}/whip/mesh", offer), 409)
    assert "mesh" in body["detail"]
    # 405 with Allow
    async with http.get(f"{base}/whip/sfu") as response:
        await problem(response, 405)
        assert response.headers["Allow"] == "OPTIONS, POST"
    # 404: no such session
    async with http.delete(f"{base}/whip/sfu/not-a-session") as response:
        await problem(response, 404)
    # OPTIONS: CORS and Accept-Post, the ICE servers
    async with http.options(f"{base}/whip/sfu") as response:
        assert response.status == 204
        assert response.headers["Accept-Post"] == "application/sdp"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "If-Match" in response.headers["Access-Control-Allow-Headers"]
        assert response.headers.getall("Link") == ['<stun:127.0.0.1:3478>; rel="ice-server"']
    # a CORS preflight gets no ICE servers (it carries no credentials)
    async with http.options(
        f"{base}/whip/sfu", headers={"Access-Control-Request-Method": "POST"}
    ) as response:
        assert response.status == 204
        assert "Link" not in response.headers


async def check_patch_rules(
    http: aiohttp.ClientSession, resource: str, etag: str, fragment: str
) -> None:
    """The statuses of PATCH on a session *resource* whose ETag is *etag* (*fragment*: a
    trickle fragment for its first m-line, without candidates), and the 405 of a GET."""
    frag_type = "application/trickle-ice-sdpfrag"

    async def patch(body: str, **headers: str) -> Reply:
        async with http.patch(resource, data=body, headers=headers) as answered:
            return Reply(answered, await answered.read())

    await problem(await patch(fragment, **{"Content-Type": frag_type}), 428)
    await problem(await patch(fragment, **{"Content-Type": frag_type, "If-Match": '"x"'}), 412)
    restart = await problem(
        await patch(fragment, **{"Content-Type": frag_type, "If-Match": "*"}), 422
    )
    assert "restart" in restart["detail"]
    new_ufrag = fragment.replace("a=ice-ufrag:", "a=ice-ufrag:new")
    await problem(await patch(new_ufrag, **{"Content-Type": frag_type, "If-Match": etag}), 422)
    await problem(
        await patch(fragment, **{"Content-Type": "application/sdp", "If-Match": etag}), 415
    )
    other_mid = (
        fragment.replace("a=mid:", "a=mid:9") + "a=candidate:1 1 udp 1 192.0.2.1 9 typ host\r\n"
    )
    await problem(await patch(other_mid, **{"Content-Type": frag_type, "If-Match": etag}), 400)
    ok = await patch(fragment, **{"Content-Type": frag_type, "If-Match": etag})
    assert ok.status == 204
    async with http.get(resource) as got:
        await problem(got, 405)
        assert got.headers["Allow"] == "OPTIONS, PATCH, DELETE"


async def test_patch_rules(server: Server, http: aiohttp.ClientSession) -> None:
    pc, offer, _ = await whip_offer()
    try:
        response = await post(http, f"{server.base}/whip/sfu", offer)
        assert response.status == 201
        resource, etag = server.base + response.headers["Location"], response.headers["ETag"]
        await check_patch_rules(http, resource, etag, _fragment(pc, []))
    finally:
        await pc.close()


async def test_tokens_and_limits(http: aiohttp.ClientSession) -> None:
    async with running(token_auth=True) as server:
        pc, offer, _ = await whip_offer()
        try:
            url = f"{server.base}/whip/sfu"
            response = await post(http, url, offer)
            await problem(response, 401)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            await problem(await post(http, url, offer, token="not-a-token"), 401)
            await problem(
                await post(http, url, offer, token=server.token("publish", room="other")), 401
            )
            await problem(await post(http, url, offer, token=server.token("subscribe")), 403)
            # OPTIONS without a token: CORS, no ICE servers (TURN credentials stay private)
            async with http.options(url) as options:
                assert options.status == 204
                assert "Link" not in options.headers
            token = server.token("publish")
            # ... and with a token the room admits, the ICE servers
            async with http.options(url, headers={"Authorization": f"Bearer {token}"}) as options:
                assert options.status == 204
                assert options.headers.getall("Link") == ['<stun:127.0.0.1:3478>; rel="ice-server"']
            created = await post(http, url, offer, token=token)
            assert created.status == 201, await created.text()
            resource = server.base + created.headers["Location"]
            # the session answers only to the token that created it
            await _only_the_owner_deletes(server, http, resource, token)
            # 413: a body over the limit
            await problem(await post(http, url, "v=0\r\n" + "a=x\r\n" * 20000, token=token), 413)
        finally:
            await pc.close()


async def test_session_limit() -> None:
    async with running() as server, aiohttp.ClientSession() as http:
        assert server.whip is not None
        server.whip.config = WhipConfig(max_sessions=1)
        first, offer1, _ = await whip_offer()
        second, offer2, _ = await whip_offer()
        try:
            assert (await post(http, f"{server.base}/whip/sfu", offer1)).status == 201
            await problem(await post(http, f"{server.base}/whip/sfu", offer2), 503)
        finally:
            await first.close()
            await second.close()


async def test_rtckit_serve_mounts_whip_behind_its_auth() -> None:
    """``rtckit serve``'s app: WHIP with the server's room tokens and ICE servers (TURN REST
    credentials minted per answer)."""
    from aiohttp.test_utils import TestClient, TestServer

    from rtckit.ice.turn import TurnRestAuth
    from rtckit.server.app import create_app
    from rtckit.server.config import (
        AuthSettings,
        IceSettings,
        RoomSettings,
        RoomsSettings,
        ServeConfig,
        ServerSettings,
    )

    turn_secret = "turn-secret-for-whip-tests"
    config = ServeConfig(
        server=ServerSettings(insecure=True),
        auth=AuthSettings(mode="token", secret=SECRET),
        rooms=RoomsSettings(declared=(RoomSettings(name="hall", topology="sfu"),)),
        ice=IceSettings(urls=("turn:127.0.0.1:3479?transport=udp",), turn_secret=turn_secret),
    )
    tokens = TokenAuth(secret=SECRET)
    pc, offer, _ = await whip_offer()
    try:
        async with asyncio.timeout(60), TestClient(TestServer(create_app(config))) as client:
            refused = await client.post(
                "/whip/hall", data=offer, headers={"Content-Type": "application/sdp"}
            )
            await problem(refused, 401)
            token = tokens.mint(room="hall", identity="encoder", permissions=["publish"])
            created = await client.post(
                "/whip/hall",
                data=offer,
                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
            )
            assert created.status == 201, await created.text()
            (link,) = created.headers.getall("Link")
            assert link.startswith('<turn:127.0.0.1:3479>; rel="ice-server"; ')
            params = dict(part.strip().split("=", 1) for part in link.split(";")[2:] if "=" in part)
            verified = TurnRestAuth(secrets=[turn_secret]).verify(
                params["username"].strip('"'), params["credential"].strip('"')
            )
            assert verified.user.startswith("whip-")
            assert len(app_signaling_peers(client.app, "hall")) == 2  # the publisher + the SFU
    finally:
        await pc.close()


def app_signaling_peers(app: web.Application | None, room: str) -> list[str]:
    from rtckit.server.app import app_signaling

    assert app is not None
    return [peer.id for peer in app_signaling(app).hub.state.peers(room)]


async def test_closing_the_endpoint_ends_its_sessions_and_refuses_new_ones(
    server: Server, http: aiohttp.ClientSession
) -> None:
    pc, offer, _ = await whip_offer()
    try:
        assert (await post(http, f"{server.base}/whip/sfu", offer)).status == 201
        (publisher,) = server.sfu().publishers.values()
        assert server.whip is not None
        async with server.whip:
            pass
        await server.whip.aclose()  # twice: nothing more to do
        assert publisher.ended
        assert server.whip.sessions == {}
        body = await problem(await post(http, f"{server.base}/whip/sfu", offer), 503)
        assert "closing" in body["detail"]
    finally:
        await pc.close()
