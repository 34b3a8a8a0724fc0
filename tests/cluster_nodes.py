"""Signaling nodes sharing a backplane, and the cross-node checks that every backplane runs:
over a MemoryBroker (tests/) and over a real redis-server (tests/integration/)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from rtckit.backplane.base import Backplane
from rtckit.signaling import (
    AppMessage,
    Error,
    Offer,
    OpenAuth,
    PeerJoined,
    PeerLeft,
    Reconnected,
    SignalingClient,
    SignalingConfig,
    SignalingServer,
    WebSocketTransport,
)
from rtckit.signaling.cluster import ClusterConfig
from rtckit.signaling.protocol import Bye, Hello, Join, Welcome, decode, encode
from rtckit.testing import conformance

#: The server kinds of a two-node cluster: two aiohttp servers, or one aiohttp and one picows.
NODE_KINDS = ["aiohttp", "aiohttp+picows"]


def _second_kind(kind: str) -> Any:
    if kind == "aiohttp+picows":
        pytest.importorskip("picows", reason="picows is not installed")
        from rtckit.signaling.fastws import PicowsSignalingServer

        return PicowsSignalingServer
    return SignalingServer


@contextlib.asynccontextmanager
async def listening_nodes(
    backplanes: Sequence[Backplane],
    *,
    kind: str = "aiohttp",
    config: SignalingConfig | None = None,
    cluster: ClusterConfig | None = None,
) -> AsyncIterator[list[Any]]:
    """One signaling server per backplane, listening on 127.0.0.1 (open auth by default); with
    *kind* ``aiohttp+picows`` (:data:`NODE_KINDS`) every node after the first is a picows one."""
    config = config or SignalingConfig(auth=OpenAuth())
    later = _second_kind(kind)
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for index, backplane in enumerate(backplanes):
            kind_of = SignalingServer if index == 0 else later
            node = await stack.enter_async_context(kind_of(config, backplane, cluster=cluster))
            await node.listen("127.0.0.1", 0)
            nodes.append(node)
        yield nodes


async def next_of(client: SignalingClient, kind: type[Any]) -> Any:
    """The client's next event of *kind* (the others skipped)."""
    while True:
        event = await client.next_event()
        if isinstance(event, kind):
            return event


async def raw_join(session: aiohttp.ClientSession, url: str, room: str) -> Any:
    """A bare WebSocket client that sends hello and join at once; returns it and its welcome."""
    ws = await session.ws_connect(url)
    await ws.send_str(encode(Hello()))
    await ws.send_str(encode(Join(room=room)))
    assert isinstance(decode((await ws.receive()).data), Hello)
    welcome = decode((await ws.receive()).data)
    assert isinstance(welcome, Welcome), welcome
    return ws, welcome


async def offer_right_after_welcome(home: Any, edge: Any, rounds: int, room: str = "order") -> None:
    """A peer connected to *edge* offers to a peer on *home* (the room's home) right after its
    welcome, *rounds* times: the host sees peer-joined first, then the offer, every time.

    *home* and *edge* are listening servers of one cluster whose :attr:`router` is set; the
    room must be new (its first joiner, on *home*, makes *home* its home).
    """
    async with aiohttp.ClientSession() as session:
        host = await SignalingClient.connect(home.url, room=room)
        try:
            assert home.router.rooms == [room]
            for i in range(rounds):
                ws, welcome = await raw_join(session, edge.url, room)
                offer = Offer(to=host.peer_id, sdp=f"v=0 {i}", seq=1)
                await ws.send_str(encode(offer))
                await ws.send_str(encode(Bye()))
                await ws.close()
                me = welcome.peer_id
                joined = await host.next_event()
                assert isinstance(joined, PeerJoined), (i, joined)
                assert joined.peer.id == me
                got = await host.next_event()
                assert isinstance(got, Offer), (i, got)
                assert (got.sender, got.sdp) == (me, f"v=0 {i}")
                left = await next_of(host, PeerLeft)
                assert left.peer_id == me
            assert edge.router.rooms == []  # every one of them was served by the home
        finally:
            await host.aclose()


async def check_spread_over(nodes: Sequence[Any], check: conformance.Check) -> None:
    """Run a conformance *check* with each new client connected to the next node in turn: a
    room's clients are spread over every node, whichever is the room's home."""
    urls = itertools.cycle([node.url for node in nodes])
    await check(lambda: WebSocketTransport(next(urls)))


@dataclass
class Exchange:
    """What two clients received from each other in :func:`exchange`."""

    got: dict[str, list[int]] = field(default_factory=dict)  # peer id -> numbers received
    resumed: list[bool] = field(default_factory=list)  # each Reconnected, in order
    errors: list[Error] = field(default_factory=list)


async def exchange(
    first: SignalingClient,
    second: SignalingClient,
    total: int,
    at_a_third: Callable[[], None],
    *,
    pause: float = 0.002,
) -> Exchange:
    """*first* and *second* send each other *total* numbered app messages (a short *pause*
    every 20), and each reads until it has received all of them; *at_a_third* runs once,
    when *first* has sent a third (a node dies, a connection is cut...)."""
    seen = Exchange(got={first.peer_id: [], second.peer_id: []})

    async def pump(src: SignalingClient, dst: str) -> None:
        for i in range(total):
            await src.send_app(dst, {"i": i})
            if i == total // 3 and src is first:
                at_a_third()
            if i % 20 == 0:
                await asyncio.sleep(pause)

    async def collect(client: SignalingClient) -> None:
        mine = seen.got[client.peer_id]
        while len(mine) < total:
            event = await client.next_event()
            if isinstance(event, AppMessage):
                mine.append(event.payload["i"])
            elif isinstance(event, Reconnected):
                seen.resumed.append(event.resumed)
            elif isinstance(event, Error):
                seen.errors.append(event)

    await asyncio.gather(
        pump(first, second.peer_id), pump(second, first.peer_id), collect(first), collect(second)
    )
    return seen
