"""Cluster nodes that die: ``rtckit serve`` with ``[cluster]`` in a child process is killed
with SIGKILL (and started again on its port) beside a node in this process, both on a real
redis-server. Clients reconnect and resume; nothing sent to them meanwhile is lost or
duplicated."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cluster_nodes import listening_nodes, next_of
from integration.serve_nodes import ServeNode, free_port, write_serve_config
from rtckit.backplane.redis import RedisBackplane, RedisBackplaneConfig
from rtckit.signaling import (
    AppMessage,
    Error,
    OpenAuth,
    PeerJoined,
    PeerLeft,
    Reconnected,
    ReconnectPolicy,
    SignalingClient,
    SignalingConfig,
)
from rtckit.testing.proxy import TcpProxy
from rtckit.testing.redisserver import RedisServer

FAST_RECONNECT = ReconnectPolicy(initial_delay=0.01, max_delay=0.2, connect_timeout=3.0)
NAMESPACE = "k"


@contextlib.asynccontextmanager
async def _serve_node(
    redis_server: RedisServer,
    tmp_path: Path,
    *,
    extra: str = "",
    node_ttl: float = 5,
    level: str = "warning",
) -> AsyncIterator[ServeNode]:
    """``rtckit serve`` with ``[cluster]`` in a child process (node ``b``), killed on exit."""
    port = free_port()
    config = tmp_path / "b.toml"
    write_serve_config(
        config,
        redis_server.url,
        port,
        namespace=NAMESPACE,
        node_ttl=node_ttl,
        extra=extra,
        level=level,
    )
    node = ServeNode(config, port, tmp_path / "b.log")
    try:
        await node.start()
        yield node
    finally:
        await node.kill()
    assert "Traceback" not in node.stderr(), node.stderr()


@contextlib.asynccontextmanager
async def _node_a(redis_server: RedisServer, config: SignalingConfig) -> AsyncIterator[Any]:
    """Node ``a``: a signaling server in this process (default node TTL: 5 s)."""
    backplane = RedisBackplane(
        RedisBackplaneConfig(url=redis_server.url, namespace=NAMESPACE, node_id="a")
    )
    async with listening_nodes([backplane], config=config) as (a,):
        yield a


async def test_kill_9_of_a_node_its_peers_resume_on_the_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Node b is killed: *mover* (through a load balancer, which then sends it to a) resumes
    its session on a with nothing lost; *stayer* does not come back and is reported left to
    the room's peers on a within 15 s."""
    loop = asyncio.get_running_loop()
    async with (
        asyncio.timeout(60),
        _node_a(redis_server, SignalingConfig(auth=OpenAuth())) as a,
        _serve_node(redis_server, tmp_path) as b,
        TcpProxy("127.0.0.1", b.port) as balancer,
        contextlib.AsyncExitStack() as stack,
    ):
        host = await stack.enter_async_context(SignalingClient.connect(a.url, room="calls"))
        mover = await stack.enter_async_context(
            SignalingClient.connect(
                f"ws://127.0.0.1:{balancer.port}/ws", room="calls", reconnect=FAST_RECONNECT
            )
        )
        stayer = await stack.enter_async_context(
            SignalingClient.connect(b.url, room="calls", reconnect=ReconnectPolicy(enabled=False))
        )
        for _ in range(2):
            await next_of(host, PeerJoined)
        assert a.router.rooms == ["calls"]

        await b.kill()
        killed = loop.time()
        balancer.target = ("127.0.0.1", int(a.url.split(":")[2].split("/")[0]))
        for i in range(20):  # sent while mover is away: held for it on a
            await host.send_app(mover.peer_id, i)
        events: list[Any] = []  # the mover's, until the 20 messages held for it
        while sum(isinstance(e, AppMessage) for e in events) < 20:
            events.append(await mover.next_event())
            if isinstance(events[-1], Reconnected):
                resumed_after = loop.time() - killed
        first = next(e for e in events if isinstance(e, Reconnected | AppMessage))
        assert first == Reconnected(resumed=True)  # before every message held for it
        held = [(e.sender, e.payload) for e in events if isinstance(e, AppMessage)]
        assert held == [(host.peer_id, i) for i in range(20)]  # each once, in order
        await mover.send_app(host.peer_id, "back")
        assert (await next_of(host, AppMessage)).payload == "back"

        left = await next_of(host, PeerLeft)
        left_after = loop.time() - killed
        assert left.peer_id == stayer.peer_id
        assert left_after < 15
        assert set(host.peers) == {mover.peer_id}
    print(f"kill -9: resumed on a after {resumed_after:.2f} s, peer-left after {left_after:.2f} s")


async def test_10000_messages_across_a_restart_of_the_receivers_node(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Sender on a (the room's home), receiver on b; b is killed after 3,000 messages and
    started again on its port while the sender goes on: the receiver resumes through the new
    b and gets every message once, in order."""
    total, kill_at = 10_000, 3_000
    config = SignalingConfig(
        auth=OpenAuth(),
        max_messages_per_second=1e6,
        burst=1_000_000,
        max_pending=2 * total,
        resume_window=30,
    )
    limits = "[limits]\nmessages_per_second = 100000\n"  # the edge forwards the acks
    loop = asyncio.get_running_loop()
    async with (
        asyncio.timeout(90),
        _node_a(redis_server, config) as a,
        _serve_node(redis_server, tmp_path, extra=limits) as b,
        SignalingClient.connect(a.url, room="stream") as sender,
        SignalingClient.connect(b.url, room="stream", reconnect=FAST_RECONNECT) as receiver,
    ):
        await next_of(sender, PeerJoined)
        assert a.router.rooms == ["stream"]
        got: list[Any] = []
        resumed: list[bool] = []
        errors: list[Error] = []
        restart: dict[str, float] = {}

        async def restart_b() -> None:
            await b.kill()
            restart["killed"] = loop.time()
            await b.start()
            restart["started"] = loop.time()

        async def send() -> None:
            restarting = None
            for i in range(total):
                await sender.send_app(receiver.peer_id, i)
                if i == kill_at:
                    restarting = loop.create_task(restart_b())
                if i % 50 == 0:
                    await asyncio.sleep(0.005)
            assert restarting is not None
            await restarting

        async def receive() -> None:
            while len(got) < total:
                event = await receiver.next_event()
                if isinstance(event, AppMessage):
                    got.append(event.payload)
                elif isinstance(event, Reconnected):
                    resumed.append(event.resumed)
                    restart["resumed"] = loop.time()
                    restart["before"] = len(got)
                elif isinstance(event, Error):
                    errors.append(event)

        async def watch_sender() -> None:
            while True:
                event = await sender.next_event()
                if isinstance(event, Error):
                    errors.append(event)

        watcher = loop.create_task(watch_sender())
        started = loop.time()
        try:
            await asyncio.gather(send(), receive())
        finally:
            watcher.cancel()
        elapsed = loop.time() - started
        assert errors == []
        assert resumed == [True]
        assert kill_at - 1_000 < restart["before"] < total - 1_000  # b restarted midway
        assert len(got) == total
        assert len(set(got)) == total  # none twice
        assert got == list(range(total))  # none lost, in order
    print(
        f"10k messages in {elapsed:.1f} s; b down {restart['started'] - restart['killed']:.2f} s, "
        f"the receiver resumed {restart['resumed'] - restart['killed']:.2f} s after the kill, "
        f"{restart['before']} messages received before"
    )


async def test_sigterm_drains_a_node_its_rooms_move_to_the_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """``rtckit serve`` (node b) homes a room and gets SIGTERM: it hands the room over and
    exits 0; the room's clients (one through a load balancer that then sends it to a, one on
    a) reconnect and resume their sessions on a, which took the room from its journal."""
    loop = asyncio.get_running_loop()
    async with (
        asyncio.timeout(60),
        _node_a(redis_server, SignalingConfig(auth=OpenAuth())) as a,
        _serve_node(redis_server, tmp_path, extra="drain_timeout = 5\n", level="info") as b,
        TcpProxy("127.0.0.1", b.port) as balancer,
        contextlib.AsyncExitStack() as stack,
    ):
        mover = await stack.enter_async_context(
            SignalingClient.connect(
                f"ws://127.0.0.1:{balancer.port}/ws", room="calls", reconnect=FAST_RECONNECT
            )
        )
        host = await stack.enter_async_context(
            SignalingClient.connect(a.url, room="calls", reconnect=FAST_RECONNECT)
        )
        await next_of(mover, PeerJoined)
        assert a.router.rooms == []  # homed on b

        balancer.target = ("127.0.0.1", int(a.url.split(":")[2].split("/")[0]))
        asked = loop.time()
        status = await b.terminate()
        stopped_after = loop.time() - asked
        assert status == 0
        assert '"drained"' in b.stderr()  # before it stopped: not a plain close
        ids = (mover.peer_id, host.peer_id)
        for client in (mover, host):
            assert (await next_of(client, Reconnected)).resumed  # the journal kept them
        assert (mover.peer_id, host.peer_id) == ids
        async with asyncio.timeout(20):
            while len(mover.peers) != 1 or len(host.peers) != 1:  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.01)
        assert a.router.rooms == ["calls"]
        await mover.send_app(host.peer_id, "moved")
        assert (await next_of(host, AppMessage)).payload == "moved"
    print(f"SIGTERM: node b drained and exited after {stopped_after:.2f} s")


async def test_kill_9_of_a_rooms_home_its_sessions_resume_on_the_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The room lives on b (its first peer joined there); sender and receiver are on a. b is
    killed (SIGKILL) in the middle of 5,000 messages: a takes the room over from its journal
    in Redis once b's lease lapses, both clients resume there, and the receiver gets every
    message once, in order."""
    total, kill_at = 5_000, 1_500
    config = SignalingConfig(
        auth=OpenAuth(),
        max_messages_per_second=1e6,
        burst=1_000_000,
        max_pending=2 * total,
    )
    limits = "[limits]\nmessages_per_second = 100000\n"
    loop = asyncio.get_running_loop()
    async with (
        asyncio.timeout(90),
        _node_a(redis_server, config) as a,
        _serve_node(redis_server, tmp_path, extra=limits) as b,
        SignalingClient.connect(b.url, room="homed", reconnect=ReconnectPolicy(enabled=False)),
        SignalingClient.connect(a.url, room="homed", reconnect=FAST_RECONNECT) as sender,
        SignalingClient.connect(a.url, room="homed", reconnect=FAST_RECONNECT) as receiver,
    ):
        assert a.router.rooms == []  # homed on b
        got: list[Any] = []
        resumed: list[bool] = []
        errors: list[Error] = []
        times: dict[str, float] = {}

        async def send() -> None:
            for i in range(total):
                await sender.send_app(receiver.peer_id, i)
                if i == kill_at:
                    await b.kill()
                    times["killed"] = loop.time()
                if i % 50 == 0:
                    await asyncio.sleep(0.005)

        async def receive() -> None:
            while len(got) < total:
                event = await receiver.next_event()
                if isinstance(event, AppMessage):
                    got.append(event.payload)
                elif isinstance(event, Reconnected):
                    resumed.append(event.resumed)
                    times["resumed"] = loop.time()
                elif isinstance(event, Error):
                    errors.append(event)

        async def watch_sender() -> None:
            while True:
                event = await sender.next_event()
                if isinstance(event, Error):
                    errors.append(event)
                elif isinstance(event, Reconnected):
                    resumed.append(event.resumed)

        watcher = loop.create_task(watch_sender())
        try:
            await asyncio.gather(send(), receive())
        finally:
            watcher.cancel()
        assert errors == []
        assert resumed == [True, True]
        assert got == list(range(total))  # none lost, none twice, in order
        assert a.router.rooms == ["homed"]
        took = times["resumed"] - times["killed"]
        assert took < 20  # b's node TTL (5 s) and lease TTL (10 s) at most, and a poll
    print(f"home killed: the receiver resumed on a {took:.2f} s after the kill")
