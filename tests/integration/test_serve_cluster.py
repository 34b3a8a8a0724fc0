"""``rtckit serve`` as a cluster node, on a real redis-server: two servers in one process
share a room (peers on different nodes see each other), each reports its node and the
backplane's state on ``/healthz`` and ``/metrics`` through an outage; ``--workers 2`` runs two
processes on one port that share rooms; an unreachable Redis is a one-line error."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import attrs
from aiortc.mediastreams import MediaStreamError

from integration.serve_nodes import ServeNode, env, free_port, write_serve_config
from rtckit.peer import SessionConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack
from rtckit.server.app import RtcKitServer
from rtckit.server.config import (
    AuthSettings,
    ClusterSettings,
    RoomSettings,
    RoomsSettings,
    ServeConfig,
    ServerSettings,
)
from rtckit.signaling import Reconnected, ReconnectPolicy, SignalingClient
from rtckit.signaling.protocol import AppMessage, PeerJoined, PeerLeft
from rtckit.testing.redisserver import RedisServer
from rtckit.topology import TrackPublished, join_room

TIMEOUT = 60


def _config(redis_url: str, port: int = 0) -> ServeConfig:
    return ServeConfig(
        server=ServerSettings(host="127.0.0.1", port=port, insecure=True),
        auth=AuthSettings(mode="open"),
        rooms=RoomsSettings(declared=(RoomSettings(name="hall", topology="sfu"),)),
        cluster=ClusterSettings(redis_url=redis_url, namespace="t", node_ttl=2.0),
    )


def _ws(server: RtcKitServer) -> str:
    return server.url("127.0.0.1").replace("http", "ws", 1) + "ws"


@asynccontextmanager
async def _nodes(config: ServeConfig, count: int) -> AsyncIterator[list[RtcKitServer]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(RtcKitServer(config)) for _ in range(count)]


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = (
            await response.json() if response.content_type == "application/json" else None
        ) or await response.text()
        return response.status, body


async def _next(client: SignalingClient, kind: type[Any]) -> Any:
    while True:
        event = await client.next_event()
        if isinstance(event, kind):
            return event


async def test_two_nodes_share_a_room_and_report_the_backplane(
    redis_server: RedisServer,
) -> None:
    async with asyncio.timeout(TIMEOUT), _nodes(_config(redis_server.url), 2) as (one, two):
        async with (
            SignalingClient.connect(_ws(one), room="a:b*") as a,
            SignalingClient.connect(_ws(two), room="a:b*") as b,
        ):
            assert list(b.peers) == [a.peer_id]
            joined = await _next(a, PeerJoined)
            assert joined.peer.id == b.peer_id
            await b.send_app(a.peer_id, {"hello": "from node two"})
            message = await _next(a, AppMessage)
            assert (message.sender, message.payload) == (b.peer_id, {"hello": "from node two"})

        healths = [(await _get(s.url("127.0.0.1") + "healthz"))[1] for s in (one, two)]
        assert {h["backplane"] for h in healths} == {"up"}
        assert healths[0]["node"] != healths[1]["node"]
        assert {h["pid"] for h in healths} == {os.getpid()}
        _, metrics = await _get(one.url("127.0.0.1") + "metrics")
        assert "rtckit_backplane_up 1.0" in metrics

        await redis_server.stop()
        status, health = await _until_backplane(one, "down")
        assert (status, health["status"]) == (200, "degraded")  # local rooms still served
        _, metrics = await _get(one.url("127.0.0.1") + "metrics")
        assert "rtckit_backplane_up 0.0" in metrics
        await redis_server.start()
        status, health = await _until_backplane(one, "up")
        assert (status, health["status"]) == (200, "ok")

        assert await one.drain()  # SIGTERM's first step: the balancer must stop sending here
        status, health = await _get(one.url("127.0.0.1") + "healthz")
        assert (status, health["status"]) == (503, "draining")


async def test_a_new_media_room_and_its_media_server_go_to_the_least_loaded_node(
    redis_server: RedisServer,
) -> None:
    """Node one homes an SFU room (and runs its media server): a second SFU room joined
    through one is placed on two, where its media server starts."""
    sfu = RoomsSettings(default_topology="sfu")
    async with (
        asyncio.timeout(TIMEOUT),
        _nodes(attrs.evolve(_config(redis_server.url), rooms=sfu), 2) as (one, two),
        SignalingClient.connect(_ws(one), room="hall") as ada,
    ):
        await _next(ada, PeerJoined)  # the media server joined, on one
        async with SignalingClient.connect(_ws(one), room="second") as bob:
            await _next(bob, PeerJoined)
            assert "rtckit-sfu" in bob.peers
            _, first = await _get(one.url("127.0.0.1") + "healthz")
            _, second = await _get(two.url("127.0.0.1") + "healthz")
            assert (first["rooms"], first["peers"]) == (1, 1)
            assert (second["rooms"], second["peers"]) == (1, 1)


FAST_RECONNECT = ReconnectPolicy(initial_delay=0.01, max_delay=0.2)


async def test_durable_sessions_false_turns_the_journal_off(redis_server: RedisServer) -> None:
    config = _config(redis_server.url)
    assert config.cluster is not None
    plain = attrs.evolve(config, cluster=attrs.evolve(config.cluster, durable_sessions=False))
    async with _nodes(config, 1) as (durable,), _nodes(plain, 1) as (volatile,):
        for server, journal in ((durable, True), (volatile, False)):
            router = server.signaling.router
            assert router is not None
            assert router.cluster.durable_sessions is journal
            assert server.signaling.hub.state.journal is journal


FAST = SessionConfig(heartbeat_interval=0.25, disconnected_after=1.0, restart_after=2.0)


async def test_an_sfu_room_runs_on_its_home_and_forwards_to_another_node(
    redis_server: RedisServer,
) -> None:
    """The SFU joins the room on its home (the node of its first joiner); a participant on
    the other node signals with it through the backplane and gets the media straight from it."""
    async with (
        asyncio.timeout(TIMEOUT),
        _nodes(_config(redis_server.url), 2) as (one, two),
        SignalingClient.connect(_ws(one), room="hall") as ada_signaling,
        join_room(ada_signaling, session_config=FAST) as ada,
    ):
        await ada.publish(TestPatternTrack(PatternConfig(width=160, height=120, fps=10)))
        async with (
            SignalingClient.connect(_ws(two), room="hall") as bob_signaling,
            join_room(bob_signaling, session_config=FAST) as bob,
        ):
            async for event in bob.events():
                if isinstance(event, TrackPublished) and event.participant_id == ada.local_id:
                    frame = await event.track.recv()
                    assert (frame.width, frame.height) == (160, 120)
                    break
            _, home = await _get(one.url("127.0.0.1") + "healthz")
            _, edge = await _get(two.url("127.0.0.1") + "healthz")
            assert (home["rooms"], home["peers"]) == (1, 2)  # the room lives on one
            assert (edge["rooms"], edge["peers"]) == (0, 0)
            assert "rtckit-sfu" in bob_signaling.peers


async def test_a_draining_node_hands_its_sfu_room_and_media_server_over(
    redis_server: RedisServer,
) -> None:
    """Node one homes an SFU room and drains: the room's media server stops there and starts
    on two, where the room's participant (connected to one) resumes its session."""
    async with (
        asyncio.timeout(TIMEOUT),
        _nodes(_config(redis_server.url), 2) as (one, two),
        SignalingClient.connect(_ws(one), room="hall", reconnect=FAST_RECONNECT) as ada,
    ):
        await _next(ada, PeerJoined)  # the media server joined, on one
        assert await one.drain()
        assert (await _next(ada, Reconnected)).resumed  # its session moved with the room
        left = await _next(ada, PeerLeft)  # one's media server, from the room's journal...
        assert left.peer_id == "rtckit-sfu"
        joined = await _next(ada, PeerJoined)  # ...and two's, on the room's new home
        assert joined.peer.id == "rtckit-sfu"
        _, first = await _get(one.url("127.0.0.1") + "healthz")
        _, second = await _get(two.url("127.0.0.1") + "healthz")
        assert (first["status"], first["rooms"]) == ("draining", 0)
        assert (second["rooms"], second["peers"]) == (1, 1)


@asynccontextmanager
async def _call_beside(
    home: ServeNode, redis_server: RedisServer
) -> AsyncIterator[tuple[RtcKitServer, RtcKitServer, SignalingClient, Any, SignalingClient, Any]]:
    """An SFU call in room ``hall`` homed on *home* (a person joins there first, without
    reconnecting) with ada and bob on two other nodes, ada publishing a test pattern: yields
    (one, two, ada's signaling, ada, bob's signaling, bob)."""
    async with (
        SignalingClient.connect(home.url, room="hall", reconnect=ReconnectPolicy(enabled=False)),
        _nodes(_config(redis_server.url), 2) as (one, two),
        SignalingClient.connect(_ws(one), room="hall") as ada_signaling,
        join_room(ada_signaling, session_config=FAST) as ada,
        SignalingClient.connect(_ws(two), room="hall") as bob_signaling,
        join_room(bob_signaling, session_config=FAST) as bob,
    ):
        await ada.publish(TestPatternTrack(PatternConfig(width=160, height=120, fps=10)))
        yield one, two, ada_signaling, ada, bob_signaling, bob


def _sfu_home(redis_server: RedisServer, tmp_path: Path) -> ServeNode:
    """An ``rtckit serve`` node (not started) declaring the SFU room ``hall``, namespace t."""
    port = free_port()
    config_file = tmp_path / "home.toml"
    write_serve_config(
        config_file,
        redis_server.url,
        port,
        namespace="t",
        extra='[[rooms.declare]]\nname = "hall"\ntopology = "sfu"\n',
    )
    return ServeNode(config_file, port, tmp_path / "home.log")


async def test_an_sfu_rooms_home_is_killed_and_another_node_takes_the_room_over(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The SFU room's home (an ``rtckit serve`` process, where its first person joined) is
    killed with SIGKILL; the participants, connected to two other nodes, resume their
    sessions on the node that takes the room over (within 10 s of the kill, without a
    join), whose own SFU joins with the freed peer id: media flows again."""
    home = _sfu_home(redis_server, tmp_path)
    loop = asyncio.get_running_loop()
    await home.start()
    try:
        async with (
            asyncio.timeout(TIMEOUT),
            _call_beside(home, redis_server) as (one, two, ada_signaling, ada, bob_signaling, bob),
        ):
            frames = 0
            async for event in bob.events():
                if isinstance(event, TrackPublished) and event.participant_id == ada.local_id:
                    frame = await event.track.recv()
                    frames += 1
                    if frames == 1:
                        await home.kill()
                        killed = loop.time()
                    else:
                        assert (frame.width, frame.height) == (160, 120)
                        break
            took = loop.time() - killed
            assert (ada_signaling.peer_id, bob_signaling.peer_id) == (ada.local_id, bob.local_id)
            rooms = [len(server.signaling.router.rooms) for server in (one, two)]  # type: ignore[union-attr]
            assert sorted(rooms) == [0, 1]
            assert "rtckit-sfu" in bob_signaling.peers
    finally:
        await home.kill()
    assert "Traceback" not in home.stderr(), home.stderr()
    print(f"SFU home killed: media again {took:.2f} s later")


async def test_an_sfu_rooms_home_paused_for_20_s_never_makes_two_media_servers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The SFU room's home is stopped (SIGSTOP) for 20 s: another node takes the room over
    and runs its SFU; when the paused home resumes (SIGCONT) it closes its copy of the room
    and its SFU at once (its own clock says its lease lapsed) and never takes it back: one
    media server per room, one ``rtckit-sfu`` in the room, throughout."""
    home = _sfu_home(redis_server, tmp_path)
    await home.start()
    health = f"http://127.0.0.1:{home.port}/healthz"
    try:
        async with (
            asyncio.timeout(TIMEOUT + 30),
            _call_beside(home, redis_server) as (one, two, _ada_signaling, ada, bob_signaling, bob),
        ):
            assert (await _get(health))[1]["media_servers"] == 1
            assert home.process is not None
            home.process.send_signal(signal.SIGSTOP)
            paused_at = asyncio.get_running_loop().time()
            running: list[int] = []
            while asyncio.get_running_loop().time() - paused_at < 20:
                running.append(await _media_servers(one, two))
                await asyncio.sleep(0.25)
            assert max(running) == 1  # the other nodes: one SFU at most, and one by now
            assert running[-1] == 1
            home.process.send_signal(signal.SIGCONT)
            _, resumed = await _get(health)
            assert (resumed["media_servers"], resumed["rooms"]) == (0, 0)
            for _ in range(20):  # 5 s: it stays that way
                running.append(await _media_servers(one, two))
                assert (await _get(health))[1]["media_servers"] == 0
                await asyncio.sleep(0.25)
            assert running[-1] == 1
            assert list(bob_signaling.peers).count("rtckit-sfu") == 1
            async for event in bob.events():  # media from the SFU that took the room over
                if isinstance(event, TrackPublished) and event.participant_id == ada.local_id:
                    try:
                        frame = await event.track.recv()
                    except MediaStreamError:
                        continue  # the track of the former SFU (published before the pause)
                    assert (frame.width, frame.height) == (160, 120)
                    break
    finally:
        if home.process is not None:
            home.process.send_signal(signal.SIGCONT)
        await home.kill()
    assert "Traceback" not in home.stderr(), home.stderr()


async def _media_servers(*servers: RtcKitServer) -> int:
    """The SFUs and MCUs running on *servers*, by their ``/healthz``."""
    return sum([(await _get(s.url("127.0.0.1") + "healthz"))[1]["media_servers"] for s in servers])


async def _until_backplane(server: RtcKitServer, state: str) -> tuple[int, Any]:
    for _ in range(400):  # 20 s
        status, health = await _get(server.url("127.0.0.1") + "healthz")
        if health["backplane"] == state:
            return status, health
        await asyncio.sleep(0.05)
    raise AssertionError(f"the backplane never became {state}")


async def test_workers_share_the_port_and_the_rooms(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "serve.toml"
    write_serve_config(config, redis_server.url, port)
    supervisor = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "rtckit", "serve", "--config", str(config), "--workers", "2"),
        env=env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        async with asyncio.timeout(TIMEOUT):
            nodes: set[str] = set()
            for _ in range(600):  # until both workers answered (each new connection is
                try:  # given to one of them by the kernel)
                    _, health = await _get(base + "healthz")
                    nodes.add(health["node"])
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)  # not listening yet
                if len(nodes) == 2:
                    break
            assert len(nodes) == 2
            # eight peers in one room, wherever the kernel put each: all see each other
            async with AsyncExitStack() as stack:
                peers = [
                    await stack.enter_async_context(
                        SignalingClient.connect(f"ws://127.0.0.1:{port}/ws", room="lobby")
                    )
                    for _ in range(8)
                ]
                assert list(peers[-1].peers) == [p.peer_id for p in peers[:-1]]
                await peers[-1].send_app(None, "hi")
                for peer in peers[:-1]:
                    assert (await _next(peer, AppMessage)).payload == "hi"
            supervisor.send_signal(signal.SIGTERM)
            out, err = await supervisor.communicate()
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()
    assert supervisor.returncode == 0, err
    assert b"2 workers" in out
    assert b"rtckit serve: stopped" in out
    assert out.count(b"Draining.") == 2  # SIGTERM reached both workers: they drained
    assert b"Traceback" not in err


def test_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    write_serve_config(config, f"redis://127.0.0.1:{free_port()}/0", free_port())
    result = subprocess.run(
        [sys.executable, "-m", "rtckit", "serve", "--config", str(config)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("rtckit: error:")]
    assert len(errors) == 1, result.stderr
    assert "redis://127.0.0.1:" in errors[0]
