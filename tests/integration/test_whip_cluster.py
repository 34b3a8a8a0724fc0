"""WHIP and WHEP across the nodes of a cluster (``rtckit serve`` nodes on a real
redis-server): a ``POST`` that reaches a node which does not home the room is redirected (307)
to the node that does, where the publisher joins the room's SFU or the viewer plays it; a room
with no home is placed as a signaling ``join`` would place it for WHIP, and not at all for
WHEP; mesh and unknown rooms keep their problem status; a redirected request is never sent on
again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from integration.serve_nodes import env, free_port, write_serve_config
from rtckit.server.app import RtcKitServer
from rtckit.server.config import (
    AuthSettings,
    ClusterSettings,
    RoomSettings,
    RoomsSettings,
    ServeConfig,
    ServerSettings,
)
from rtckit.signaling import SignalingClient, TokenAuth
from rtckit.signaling.protocol import PeerJoined
from rtckit.testing.redisserver import RedisServer
from rtckit.topology import TrackPublished, join_room
from rtckit.whip.client import WhipClient, open_source
from rtckit.whip.cluster import REDIRECT_MARKER
from test_whep_server import viewer
from test_whip_server import SECRET, SMALL, whip_offer

TIMEOUT = 60
SDP = {"Content-Type": "application/sdp"}


def _config(redis_url: str, **rooms: Any) -> ServeConfig:
    declared = (RoomSettings(name="hall", topology="sfu"), RoomSettings(name="lobby"))
    return ServeConfig(
        server=ServerSettings(host="127.0.0.1", port=0, insecure=True),
        auth=AuthSettings(mode="open"),
        rooms=RoomsSettings(declared=declared, default_topology="sfu", **rooms),
        cluster=ClusterSettings(redis_url=redis_url, namespace="w", node_ttl=2.0),
    )


@asynccontextmanager
async def _nodes(config: ServeConfig, count: int = 2) -> AsyncIterator[list[RtcKitServer]]:
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(RtcKitServer(config)) for _ in range(count)]
        for node in nodes:  # each node's public URL is on the backplane before a test asks
            router = node.signaling.router
            assert router is not None
            for other in nodes:
                other_router = other.signaling.router
                assert other_router is not None
                for _ in range(200):  # 10 s: its next heartbeat carries it
                    if await router.backplane.public_url(other_router.node_id) is not None:
                        break
                    await asyncio.sleep(0.05)
        yield nodes


@asynccontextmanager
async def _hall_on_one(
    config: ServeConfig, token: str | None = None
) -> AsyncIterator[tuple[RtcKitServer, RtcKitServer, aiohttp.ClientSession]]:
    """Two nodes, the SFU room ``hall`` homed on the first (a member joined it there and its
    SFU joined), and an HTTP client."""
    async with (
        _nodes(config) as (one, two),
        SignalingClient.connect(_ws(one), room="hall", token=token) as first,
        aiohttp.ClientSession() as http,
    ):
        await _next(first, PeerJoined)  # the SFU joined, on one: the room's home
        yield one, two, http


def _base(server: RtcKitServer) -> str:
    return server.url("127.0.0.1").rstrip("/")


def _ws(server: RtcKitServer) -> str:
    return _base(server).replace("http", "ws", 1) + "/ws"


async def _post(
    http: aiohttp.ClientSession,
    url: str,
    offer: str,
    *,
    follow: bool = False,
    token: str | None = None,
) -> tuple[int, dict[str, str], str]:
    headers = SDP if token is None else {**SDP, "Authorization": f"Bearer {token}"}
    async with http.post(
        url, data=offer.encode(), headers=headers, allow_redirects=follow
    ) as response:
        return response.status, dict(response.headers), await response.text()


async def _rooms(server: RtcKitServer) -> int:
    async with aiohttp.ClientSession() as http, http.get(_base(server) + "/healthz") as reply:
        return int((await reply.json())["rooms"])


async def _next(client: SignalingClient, kind: type[Any]) -> Any:
    while True:
        event = await client.next_event()
        if isinstance(event, kind):
            return event


def _problem(status: int, body: str, expected: int) -> dict[str, Any]:
    assert status == expected, body
    problem = json.loads(body)
    assert problem["status"] == expected
    return dict(problem)


@pytest.mark.parametrize("kind", ["whip", "whep"])
async def test_a_post_to_the_wrong_node_is_redirected_to_the_room_home_and_served_there(
    redis_server: RedisServer, kind: str
) -> None:
    """The SFU room ``hall`` lives on node one (its first member joined there); a WHIP or
    WHEP POST to node two is answered 307 to one's URL of the same path and query; aiohttp
    follows it (POST, body kept) and the session is served by one: a WHIP publisher joins
    the SFU there (a member connected to node two gets its video, forwarded by one), a WHEP
    viewer plays the room's publisher from one. The 201's Location is one's absolute URL:
    DELETE there ends the session."""
    publisher, offer, _ = await whip_offer()
    async with (
        asyncio.timeout(TIMEOUT),
        _hall_on_one(_config(redis_server.url)) as (one, two, http),
        SignalingClient.connect(_ws(two), room="hall") as member_signaling,
        join_room(member_signaling) as member,
        viewer(("video",)) as watcher,
    ):
        pc = publisher
        if kind == "whep":  # the room's publisher, posted to its home; a viewer's offer
            status, _headers, answer = await _post(http, f"{_base(one)}/whip/hall", offer)
            assert status == 201, answer
            await publisher.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            pc, offer = watcher.pc, await watcher.offer()
        status, headers, body = await _post(http, f"{_base(two)}/{kind}/hall?x=1", offer)
        redirect = _problem(status, body, 307)
        assert headers["Location"] == f"{_base(one)}/{kind}/hall?x=1&{REDIRECT_MARKER}=1"
        assert redirect["title"] == "Temporary Redirect"
        assert headers["Location"] in redirect["detail"]
        assert headers["Content-Type"] == "application/problem+json"
        assert "Location" in headers["Access-Control-Expose-Headers"]

        status, headers, answer = await _post(
            http, f"{_base(two)}/{kind}/hall?x=1", offer, follow=True
        )
        assert status == 201, answer
        resource = headers["Location"]
        assert resource.startswith(f"{_base(one)}/{kind}/hall/")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        if kind == "whep":
            await watcher.wait_frames("video", 5)
        else:
            async for event in member.events():
                if isinstance(event, TrackPublished) and event.participant_id.startswith("whip-"):
                    frame = await event.track.recv()
                    assert (frame.width, frame.height) == (SMALL.width, SMALL.height)
                    break
        assert (await _rooms(one), await _rooms(two)) == (1, 0)  # one SFU, on one
        async with http.delete(resource) as deleted:
            assert deleted.status == 200
    await publisher.close()


async def test_a_room_without_home_is_placed_like_a_join_and_a_redirect_never_loops(
    redis_server: RedisServer,
) -> None:
    """Node two homes an SFU room (it counts in its load), so a new SFU room is placed on
    one: a WHIP POST for it to two is redirected there, and served there (the lease taken
    by one). A POST that carries the redirect marker is never redirected again: served where
    it lands when the room has no home (without asking placement, which would send it back),
    503 when another node homes the room. A WHEP POST places no room: a room no node homes
    is a 404 where it lands, and no node takes it."""
    pcs = [await whip_offer() for _ in range(3)]
    async with (
        asyncio.timeout(TIMEOUT),
        _nodes(_config(redis_server.url)) as (one, two),
        SignalingClient.connect(_ws(two), room="busy") as busy,
        aiohttp.ClientSession() as http,
    ):
        await _next(busy, PeerJoined)  # the SFU of "busy" joined, on two
        async with viewer(("video",)) as watcher:
            status, headers, body = await _post(
                http, f"{_base(two)}/whep/fresh", await watcher.offer()
            )
            assert "nobody is in room" in _problem(status, body, 404)["detail"]
            assert "Location" not in headers
        for node in (one, two):
            assert node.signaling.router is not None
            assert "fresh" not in node.signaling.router.rooms
        offer = pcs[0][1]
        status, headers, body = await _post(http, f"{_base(two)}/whip/fresh", offer)
        _problem(status, body, 307)
        assert headers["Location"].startswith(f"{_base(one)}/whip/fresh?")
        status, headers, answer = await _post(http, headers["Location"], offer)
        assert status == 201, answer
        assert headers["Location"].startswith(f"{_base(one)}/whip/fresh/")
        router_one = one.signaling.router
        assert router_one is not None
        assert "fresh" in router_one.rooms

        # marked, for a room homed elsewhere: refused, not sent on
        marked = f"{_base(two)}/whip/fresh?{REDIRECT_MARKER}=1"
        status, headers, body = await _post(http, marked, pcs[1][1])
        assert "Location" not in headers
        _problem(status, body, 503)

        # marked, for a room with no home: served where it lands (placement would say one)
        marked = f"{_base(two)}/whip/other?{REDIRECT_MARKER}=1"
        status, headers, answer = await _post(http, marked, pcs[2][1])
        assert status == 201, answer
        assert headers["Location"].startswith(f"{_base(two)}/whip/other/")
        router_two = two.signaling.router
        assert router_two is not None
        assert "other" in router_two.rooms
    for pc, _offer, _candidates in pcs:
        await pc.close()


async def test_mesh_and_unknown_rooms_keep_their_problem_status(
    redis_server: RedisServer,
) -> None:
    """A mesh room homed on another node is still a 409 (no media server to publish into),
    an unknown room a 404 (although placement would pick the other node, node two homing an
    SFU room): neither is redirected."""
    pc, offer, _ = await whip_offer()
    config = _config(redis_server.url, create_on_demand=False)
    async with (
        asyncio.timeout(TIMEOUT),
        _nodes(config) as (one, two),
        SignalingClient.connect(_ws(one), room="lobby"),
        SignalingClient.connect(_ws(two), room="hall") as busy,
        aiohttp.ClientSession() as http,
    ):
        await _next(busy, PeerJoined)  # the SFU of "hall" joined, on two
        status, headers, body = await _post(http, f"{_base(two)}/whip/lobby", offer)
        assert "mesh room" in _problem(status, body, 409)["detail"]
        assert "Location" not in headers
        status, headers, body = await _post(http, f"{_base(two)}/whip/nowhere", offer)
        _problem(status, body, 404)
        assert "Location" not in headers
    await pc.close()


async def test_without_the_backplane_a_node_answers_503_for_a_room_it_does_not_home(
    redis_server: RedisServer,
) -> None:
    """Redis stopped: node two cannot tell which node homes ``hall`` (it is one), so a POST
    there is a 503 problem, not a guess (nor a room of its own beside one's)."""
    pc, offer, _ = await whip_offer()
    async with (
        asyncio.timeout(TIMEOUT),
        _hall_on_one(_config(redis_server.url)) as (_one, two, http),
    ):
        await redis_server.stop()
        router = two.signaling.router
        assert router is not None
        for _ in range(400):  # 20 s
            if not router.backplane.up:
                break
            await asyncio.sleep(0.05)
        assert not router.backplane.up
        status, headers, body = await _post(http, f"{_base(two)}/whip/hall", offer)
        assert "cannot tell which node" in _problem(status, body, 503)["detail"]
        assert "Location" not in headers
        assert two.signaling.hub.state.peers("hall") == []
        await redis_server.start()
    await pc.close()


async def test_a_token_is_sent_again_to_the_room_home(redis_server: RedisServer) -> None:
    """With room tokens, the owner checks the token again: a client that follows the 307
    with its ``Authorization`` header publishes; aiohttp's own redirect handling drops that
    header towards another origin (another port), so the owner answers 401 (what the docs
    tell clients: re-send the token)."""
    config = attrs.evolve(_config(redis_server.url), auth=AuthSettings(mode="token", secret=SECRET))
    token = TokenAuth(secret=SECRET).mint(room="hall", identity="enc", permissions=["publish"])
    member = TokenAuth(secret=SECRET).mint(room="hall", identity="member")
    pc, offer, _ = await whip_offer()
    async with asyncio.timeout(TIMEOUT), _hall_on_one(config, member) as (one, two, http):
        status, _headers, body = await _post(http, f"{_base(two)}/whip/hall", offer)
        _problem(status, body, 401)  # checked on the first node already
        status, headers, body = await _post(http, f"{_base(two)}/whip/hall", offer, token=token)
        _problem(status, body, 307)
        status, _headers, body = await _post(
            http, f"{_base(two)}/whip/hall", offer, follow=True, token=token
        )
        _problem(status, body, 401)  # aiohttp dropped Authorization on the way to one
        status, headers, answer = await _post(http, headers["Location"], offer, token=token)
        assert status == 201, answer
        assert headers["Location"].startswith(f"{_base(one)}/whip/hall/")
        # rtckit's own client follows the 307 itself, with its token
        source = open_source("test")
        try:
            client = WhipClient(f"{_base(two)}/whip/hall", token=token, tracks=source.tracks)
            async with client:
                assert str(client.location).startswith(f"{_base(one)}/whip/hall/")
                assert client.pc is not None
                assert client.pc.connectionState == "connected"
        finally:
            source.close()
    await pc.close()


async def test_workers_advertise_their_own_ports_and_redirect_there(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """``rtckit serve --workers 2`` with ``worker_base_port``: whichever worker the kernel
    gives a WHIP POST on the shared port, it is served by the worker that homes the room (a
    307 to that worker's own port, or a 201 there), and its session resource is on that
    worker's own port, where DELETE finds it."""
    port, base = free_port(), free_port()
    while base + 1 == port:
        base = free_port()
    config = tmp_path / "serve.toml"
    write_serve_config(
        config,
        redis_server.url,
        port,
        extra=f'worker_base_port = {base}\n[[rooms.declare]]\nname = "hall"\ntopology = "sfu"\n',
    )
    supervisor = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "rtckit", "serve", "--config", str(config), "--workers", "2"),
        env=env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    own = {f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"}
    pcs: list[RTCPeerConnection] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            for url in own:  # both workers up, each on its own port too
                for _ in range(600):
                    with contextlib.suppress(aiohttp.ClientConnectionError):
                        if (await _health(url))["backplane"] == "up":
                            break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"no worker answers on {url}")
            async with SignalingClient.connect(f"ws://127.0.0.1:{port}/ws", room="hall") as ada:
                await _next(ada, PeerJoined)  # the SFU joined the room on its home worker
                (home,) = [url for url in own if (await _health(url))["rooms"] == 1]
                statuses: set[int] = set()
                for _ in range(20):  # new connections: the kernel spreads them over the workers
                    if 307 in statuses and len(pcs) >= 4:
                        break
                    pc, offer, _ = await whip_offer()
                    pcs.append(pc)
                    connector = aiohttp.TCPConnector(force_close=True)
                    async with aiohttp.ClientSession(connector=connector) as http:
                        status, headers, body = await _post(
                            http, f"http://127.0.0.1:{port}/whip/hall", offer
                        )
                        statuses.add(status)
                        if status == 307:
                            assert headers["Location"].startswith(f"{home}/whip/hall?"), body
                            status, headers, body = await _post(http, headers["Location"], offer)
                        assert status == 201, body
                        assert headers["Location"].startswith(f"{home}/whip/hall/")
                        async with http.delete(headers["Location"]) as deleted:
                            assert deleted.status == 200
                assert 307 in statuses  # (a worker that is not the room's home got some)
            supervisor.send_signal(signal.SIGINT)
            _out, err = await supervisor.communicate()
    finally:
        for pc in pcs:
            await pc.close()
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()
    assert b"Traceback" not in err


async def _health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as reply:
        return dict(await reply.json())
