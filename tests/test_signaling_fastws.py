"""The signaling server on picows (:mod:`rtckit.signaling.fastws`): the transport conformance
suite, and the frames only it checks (RFC 6455 5.1: an unmasked client frame closes 1002;
fragments, which picows hands over one by one). The limits both layers enforce alike are
tested on both in tests/test_signaling_limits.py.

picows is in the ``test`` dependency group: these tests skip only where it is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from rtckit.signaling import OpenAuth, SignalingConfig
from rtckit.signaling.protocol import Hello, Join, Ping, Pong, encode
from rtckit.testing import conformance
from test_signaling_limits import TEXT, RawWebSocket, raw_join, raw_sockets, start
from test_signaling_tls import SCHEMES, transport_factory

pytest.importorskip("picows", reason="picows is not installed (pip install 'rtckit[speed]')")

from rtckit.signaling.fastws import PicowsSignalingServer

__all__ = ["raw_sockets"]  # the fixture, shared with tests/test_signaling_limits.py
CONTINUATION = 0x0


@pytest.fixture
async def server() -> AsyncIterator[PicowsSignalingServer]:
    async with PicowsSignalingServer(SignalingConfig(auth=OpenAuth())) as server:
        await server.listen("127.0.0.1", 0)
        yield server


@pytest.fixture(params=SCHEMES)
async def websocket(request: pytest.FixtureRequest) -> AsyncIterator[conformance.TransportFactory]:
    """Client transports to a picows server, over ``ws://`` or ``wss://``."""
    async with PicowsSignalingServer(SignalingConfig(auth=OpenAuth())) as server:
        yield await transport_factory(server, request.param)


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
async def test_conformance(
    check: conformance.Check, websocket: conformance.TransportFactory
) -> None:
    await check(websocket)


async def test_an_unmasked_client_frame_is_closed_1002(raw_sockets: list[RawWebSocket]) -> None:
    """RFC 6455 5.1: "a server MUST close the connection upon receiving a frame that is not
    masked". aiohttp accepts such frames (tests/test_signaling_limits.py shows it); picows
    closes with 1002."""
    server, port = await start("picows")
    async with server, asyncio.timeout(20):
        raw = await raw_join(port, raw_sockets)
        await raw.send_frame(TEXT, encode(Ping(nonce=7)).encode(), mask=False)
        assert await raw.close_code() == 1002
        with pytest.raises(ConnectionError):  # and the socket is closed
            await raw.receive_frame()


async def test_fragmented_messages_are_reassembled_up_to_the_limit(
    raw_sockets: list[RawWebSocket],
) -> None:
    """picows hands over frames, not messages: the server joins a fragmented text message,
    and closes 1009 once its fragments pass ``max_message_size``."""
    server, port = await start("picows", max_message_size=1000)
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


async def test_a_client_still_sending_gets_the_close_frame(
    server: PicowsSignalingServer,
) -> None:
    """A binary frame (1002) and more frames after it: the close lingers, reading and
    discarding them, so the close frame reaches the client rather than a reset (closing a
    socket with unread data in it makes TCP reset the connection, and aiohttp's client, whose
    write then fails, drops the close frame unread: 1006)."""
    async with asyncio.timeout(20), aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.ws_connect(server.url) as ws:
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(b"\x00")
                    for _ in range(20):
                        await ws.send_str(" " * 60_000)
                message = await ws.receive()
                while message.type is aiohttp.WSMsgType.TEXT:
                    message = await ws.receive()
                assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1002)


async def test_heartbeats_are_websocket_pings_and_pongs_keep_a_peer_alive() -> None:
    """On picows, as on aiohttp, the server's heartbeat is a WebSocket ping frame (no protocol
    ``ping`` to encode) and the client's pong counts as a sign of life: a client whose stack
    answers pings stays through several dead-peer timeouts; one that never answers is closed
    with 4001."""
    config = SignalingConfig(
        auth=OpenAuth(), heartbeat_interval=0.2, dead_peer_timeout=0.6, tick_interval=0.05
    )
    async with (
        PicowsSignalingServer(config) as server,
        asyncio.timeout(20),
        aiohttp.ClientSession() as session,
    ):
        await server.listen("127.0.0.1", 0)
        answering = await session.ws_connect(server.url, autoping=True)
        silent = await session.ws_connect(server.url, autoping=False)
        for ws in (answering, silent):
            await ws.send_str(encode(Hello()))
            await ws.send_str(encode(Join(room="r")))
        seen: dict[str, list[aiohttp.WSMsgType]] = {"answering": [], "silent": []}

        async def read(name: str, ws: aiohttp.ClientWebSocketResponse) -> None:
            while not ws.closed:
                seen[name].append((await ws.receive()).type)

        readers = [
            asyncio.create_task(read("answering", answering)),
            asyncio.create_task(read("silent", silent)),
        ]
        try:
            await asyncio.sleep(2.0)  # ten heartbeat periods, three dead-peer timeouts
            assert not answering.closed
            assert aiohttp.WSMsgType.CLOSE not in seen["answering"]
            assert aiohttp.WSMsgType.PING in seen["silent"]
            assert silent.closed
            assert silent.close_code == 4001
        finally:
            for reader in readers:
                reader.cancel()
            await answering.close()
