"""The hub's event stream and the client's life cycle, in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from rtckit.errors import ConnectionClosedError
from rtckit.signaling import (
    Disconnected,
    MemoryTransport,
    OpenAuth,
    PeerJoinedEvent,
    PeerLeftEvent,
    Reconnected,
    RoomClosedEvent,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
)
from rtckit.signaling.protocol import (
    Ack,
    AppMessage,
    Bye,
    CloseCode,
    Error,
    ErrorCode,
    Hello,
    Join,
    encode,
)


@pytest.fixture
async def hub() -> AsyncIterator[SignalingHub]:
    async with SignalingHub(SignalingConfig(auth=OpenAuth())) as hub:
        yield hub


async def test_client_removed_by_the_server_stops_iterating(hub: SignalingHub) -> None:
    async with (
        asyncio.timeout(10),
        SignalingClient.connect(MemoryTransport(hub), room="kick") as client,
    ):
        hub.remove_peer("kick", client.peer_id)
        events = [event async for event in client]
        assert events == [Bye(reason="removed")]
        assert client.closed
    assert hub.peers("kick") == []


async def test_event_stream(hub: SignalingHub) -> None:
    async with asyncio.timeout(10):
        with hub.subscribe() as events:
            async with SignalingClient.connect(MemoryTransport(hub), room="watched") as client:
                peer_id = client.peer_id
            seen = []
            async for event in events:
                seen.append(event)
                if isinstance(event, PeerLeftEvent):
                    break
        assert isinstance(seen[0], PeerJoinedEvent)
        assert seen[0].peer.id == peer_id
        assert seen[-1] == PeerLeftEvent(room="watched", peer_id=peer_id, reason="bye")
        assert [e async for e in events] == [RoomClosedEvent(room="watched")]
        assert not hub.state.message_events  # the listener is gone


async def test_a_flood_at_a_server_peer_that_does_not_consume_is_bounded() -> None:
    """The client acknowledges what the application consumed, so max_pending holds in-process.

    A server-side participant (an SFU) reading its events slower than a peer sends: the
    server refuses the excess (``backlog_full`` to the sender) instead of the participant's
    client queueing all of it.
    """
    config = SignalingConfig(auth=OpenAuth(), max_pending=16, max_messages_per_second=1e6)
    async with (
        asyncio.timeout(20),
        SignalingHub(config) as hub,
        SignalingClient.connect(
            MemoryTransport(hub, trusted=True), room="flood", peer_id="sfu"
        ) as sfu,
        SignalingClient.connect(MemoryTransport(hub), room="flood") as flooder,
    ):
        for i in range(200):
            await flooder.send_app("sfu", i)
        refused: list[int | None] = []
        while len(refused) < 200 - 15:  # the sfu holds its peer-joined and 15 of them
            event = await flooder.next_event()
            if isinstance(event, Error):
                assert event.code == ErrorCode.BACKLOG_FULL
                refused.append(event.ref)
        await asyncio.sleep(0.2)  # nothing more arrives at the sfu's client
        assert refused == list(range(16, 201))
        assert sfu._events.qsize() == 16
        # consuming acknowledges: the server relays again
        received: list[object] = []
        while len(received) < 15:
            event = await sfu.next_event()
            if isinstance(event, AppMessage):
                received.append(event.payload)
        assert received == list(range(15))
        await asyncio.sleep(1.5)  # the ack goes out within ack_delay (1 s)
        await flooder.send_app("sfu", "again")
        event = await sfu.next_event()
        assert isinstance(event, AppMessage)
        assert event.payload == "again"


async def test_memory_transport_queue_is_bounded() -> None:
    """A client that does not read its in-memory connection is closed with 4004."""
    config = SignalingConfig(
        auth=OpenAuth(),
        max_messages_per_second=1e6,
        max_pending_bytes=64 * 1024,
        max_send_buffer=150_000,
        max_pending=100_000,
    )
    async with asyncio.timeout(20), SignalingHub(config) as hub:
        transport = MemoryTransport(hub)
        await transport.connect()
        await transport.send(encode(Hello()))
        await transport.send(encode(Join(room="q")))
        async with SignalingClient.connect(MemoryTransport(hub), room="q") as sender:
            (peer_id,) = sender.peers

            async def flood() -> None:
                for i in range(800):  # about 240 KB of relays, acknowledged without reading
                    await sender.send_app(peer_id, {"i": i, "pad": "x" * 250})
                    await transport.send(encode(Ack(ack=i + 2)))  # peer-joined, then i + 1
                    assert hub.buffered_bytes <= 150_000

            async def drain() -> None:
                while True:
                    await transport.receive()

            with pytest.raises(ConnectionClosedError):
                await flood()
            with pytest.raises(ConnectionClosedError) as caught:
                await drain()
            assert caught.value.code == CloseCode.SLOW_CONSUMER
            assert hub.buffered_bytes == 0
        await transport.close()


async def test_closed_as_slow_consumer_the_client_resumes() -> None:
    """4004 is not final: the client reconnects, resumes, and nothing is lost."""
    config = SignalingConfig(auth=OpenAuth(), max_pending=4, burst=2)
    async with (
        asyncio.timeout(20),
        SignalingHub(config) as hub,
        # trusted: no rate limit, so that the burst only sizes the slow-consumer threshold
        SignalingClient.connect(MemoryTransport(hub, trusted=True), room="slow") as client,
    ):
        for _ in range(7):  # 7 errors it does not consume: more than max_pending + burst
            await client.send_app("nobody", "x")
        events: list[object] = []
        while not isinstance(event := await client.next_event(), Reconnected):
            events.append(event)
        assert event.resumed
        assert [e.code for e in events if isinstance(e, Disconnected)] == [CloseCode.SLOW_CONSUMER]
        refs = [e.ref for e in events if isinstance(e, Error)]
        assert refs == list(range(1, 8))
