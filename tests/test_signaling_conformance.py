"""The transport conformance suite over the in-memory and WebSocket transports (``ws://`` and
``wss://``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cluster_nodes import NODE_KINDS, check_spread_over, listening_nodes
from rtckit.backplane.memory import MemoryBackplane, MemoryBroker
from rtckit.signaling import (
    MemoryTransport,
    OpenAuth,
    SignalingConfig,
    SignalingHub,
    SignalingServer,
    TokenAuth,
    WebSocketTransport,
)
from rtckit.testing import conformance
from test_signaling_tls import SCHEMES, transport_factory

SECRET = "0123456789abcdef-0123456789abcdef-test-secret"


@pytest.fixture
async def hub() -> AsyncIterator[SignalingHub]:
    async with SignalingHub(SignalingConfig(auth=OpenAuth())) as hub:
        yield hub


@pytest.fixture(params=SCHEMES)
async def websocket(request: pytest.FixtureRequest) -> AsyncIterator[conformance.TransportFactory]:
    """Client transports to a standalone aiohttp server, over ``ws://`` or ``wss://``."""
    async with SignalingServer(SignalingConfig(auth=OpenAuth())) as server:
        yield await transport_factory(server, request.param)


@pytest.fixture(params=NODE_KINDS)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[list[Any]]:
    """Two nodes sharing a MemoryBroker (the same over redis-server: tests/integration/
    test_cluster_redis.py)."""
    broker = MemoryBroker()
    backplanes = [MemoryBackplane(broker, "a"), MemoryBackplane(broker, "b")]
    async with listening_nodes(backplanes, kind=request.param) as nodes:
        yield nodes


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
async def test_websocket_transport_over_two_nodes(
    check: conformance.Check, cluster: list[Any]
) -> None:
    await check_spread_over(cluster, check)


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
async def test_memory_transport(check: conformance.Check, hub: SignalingHub) -> None:
    await check(lambda: MemoryTransport(hub))


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
async def test_websocket_transport(
    check: conformance.Check, websocket: conformance.TransportFactory
) -> None:
    await check(websocket)


async def test_run_all_with_tokens() -> None:
    auth = TokenAuth(secret=SECRET)
    async with SignalingServer(SignalingConfig(auth=auth)) as server:
        await server.listen("127.0.0.1", 0)
        names = await conformance.run_all(
            lambda: WebSocketTransport(server.url),
            lambda room: auth.mint(room=room, identity="tester"),
        )
    assert names == [check.__name__ for check in conformance.CHECKS]


async def test_a_broken_transport_fails_the_suite(hub: SignalingHub) -> None:
    class Reordering(MemoryTransport):
        """Delivers frames out of order: must not conform."""

        def __init__(self, hub: SignalingHub) -> None:
            super().__init__(hub)
            self._held: str | None = None

        async def receive(self) -> str:
            text = await super().receive()
            if '"type":"app"' in text and self._held is None:
                self._held = text
                text = await super().receive()
                return text
            if self._held is not None:
                held, self._held = self._held, None
                return held
            return text

    with pytest.raises(AssertionError):
        await conformance.check_ordering(lambda: Reordering(hub), time_limit=2)
