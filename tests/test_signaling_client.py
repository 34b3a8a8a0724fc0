"""The hub's event stream and the client's life cycle, in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from rtckit.signaling import (
    MemoryTransport,
    OpenAuth,
    PeerJoinedEvent,
    PeerLeftEvent,
    RoomClosedEvent,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
)
from rtckit.signaling.protocol import Bye


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
