"""The signaling server on picows (:mod:`rtckit.signaling.fastws`): the transport conformance
suite, and the frames only it checks (RFC 6455 5.1: an unmasked client frame closes 1002).

picows is in the ``test`` dependency group: these tests skip only where it is not installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtckit.signaling import (
    CloseCode,
    OpenAuth,
    SignalingClient,
    SignalingConfig,
    WebSocketTransport,
)
from rtckit.signaling.protocol import Ack, Ping, Pong, encode
from rtckit.testing import conformance
from test_signaling_limits import TEXT, RawWebSocket, raw_join, raw_sockets

pytest.importorskip("picows", reason="picows is not installed (pip install 'rtckit[speed]')")

from rtckit.signaling.fastws import PicowsSignalingServer, _Connection

__all__ = ["raw_sockets"]  # the fixture, shared with tests/test_signaling_limits.py
CONTINUATION = 0x0


@pytest.fixture
async def server() -> AsyncIterator[PicowsSignalingServer]:
    async with PicowsSignalingServer(SignalingConfig(auth=OpenAuth())) as server:
        await server.listen("127.0.0.1", 0)
        yield server


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
async def test_conformance(check: conformance.Check, server: PicowsSignalingServer) -> None:
    await check(lambda: WebSocketTransport(server.url))


async def _start(**overrides: Any) -> tuple[PicowsSignalingServer, int]:
    server = PicowsSignalingServer(SignalingConfig(**{"auth": OpenAuth(), **overrides}))
    await server.start()
    _host, port = await server.listen("127.0.0.1", 0)
    return server, port


async def test_an_unmasked_client_frame_is_closed_1002(raw_sockets: list[RawWebSocket]) -> None:
    """RFC 6455 5.1: "a server MUST close the connection upon receiving a frame that is not
    masked". aiohttp accepts such frames (tests/test_signaling_limits.py shows it); picows
    closes with 1002."""
    server, port = await _start()
    async with server, asyncio.timeout(20):
        raw = await raw_join(port, raw_sockets)
        await raw.send_frame(TEXT, encode(Ping(nonce=7)).encode(), mask=False)
        assert await raw.close_code() == 1002
        with pytest.raises(ConnectionError):  # and the socket is closed
            await raw.receive_frame()


async def test_a_client_that_stops_reading_is_closed_4004_with_bounded_memory(
    raw_sockets: list[RawWebSocket],
) -> None:
    """As on aiohttp (tests/test_signaling_limits.py): a client that acks everything without
    reading a byte; what the server holds for it (the socket's write buffer) stays bounded."""
    limit = 1024 * 1024
    server, port = await _start(
        max_messages_per_second=1e6,
        burst=1_000_000,
        max_pending_bytes=256 * 1024,
        max_send_buffer=limit,
        close_timeout=10.0,
    )
    async with server, asyncio.timeout(60):
        raw = await raw_join(port, raw_sockets, rcvbuf=4096)
        sender = await SignalingClient.connect(server.url, room="r")
        try:
            (target,) = [p.id for p in server.hub.peers("r") if p.id != sender.peer_id]
            peak = 0
            pad = "x" * 30_000
            for i in range(400):  # 12 MB: more than the kernel's buffers and the limit
                await sender.send_app(target, {"i": i, "pad": pad})
                if server.hub.state.connection_count == 2:
                    await raw.send(Ack(ack=i + 2))
                    await asyncio.sleep(0.005)
                held = [
                    c.transport.underlying_transport.get_write_buffer_size()
                    for c in server.hub._connections.values()
                    if isinstance(c, _Connection) and c.transport is not None
                ]
                peak = max(peak, server.hub.buffered_bytes, *held)
            assert peak <= limit + 64 * 1024
            assert await raw.close_code() == CloseCode.SLOW_CONSUMER
            assert server.hub.buffered_bytes == 0
        finally:
            await sender.aclose()


async def test_invalid_utf8_closes_1007(raw_sockets: list[RawWebSocket]) -> None:
    server, port = await _start()
    async with server, asyncio.timeout(20):
        raw = await raw_join(port, raw_sockets)
        await raw.send_frame(TEXT, b'{"type":"ping","x":"\xc3"}')
        assert await raw.close_code() == 1007


async def test_fragmented_messages_are_reassembled_up_to_the_limit(
    raw_sockets: list[RawWebSocket],
) -> None:
    """picows hands over frames, not messages: the server joins a fragmented text message,
    and closes 1009 once its fragments pass ``max_message_size``."""
    server, port = await _start(max_message_size=1000)
    async with server, asyncio.timeout(20):
        raw = await raw_join(port, raw_sockets)
        ping = encode(Ping(nonce=7)).encode()
        await raw.send_frame(TEXT, ping[:5], fin=False)
        await raw.send_frame(CONTINUATION, ping[5:9], fin=False)
        await raw.send_frame(CONTINUATION, ping[9:])
        assert await raw.receive() == Pong(nonce=7)
        await raw.send_frame(TEXT, b" " * 600, fin=False)
        await raw.send_frame(CONTINUATION, b" " * 600)
        assert await raw.close_code() == 1009
