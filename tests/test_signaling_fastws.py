"""The signaling server on picows (:mod:`rtckit.signaling.fastws`): the transport conformance
suite, and the frames only it checks (RFC 6455 5.1: an unmasked client frame closes 1002).

picows is in the ``test`` dependency group: these tests skip only where it is not installed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator

import pytest

from rtckit.signaling import OpenAuth, SignalingConfig, WebSocketTransport
from rtckit.testing import conformance

pytest.importorskip("picows", reason="picows is not installed (pip install 'rtckit[speed]')")

from rtckit.signaling.fastws import PicowsSignalingServer


@pytest.fixture
async def server() -> AsyncIterator[PicowsSignalingServer]:
    async with PicowsSignalingServer(SignalingConfig(auth=OpenAuth())) as server:
        await server.listen("127.0.0.1", 0)
        yield server


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
async def test_conformance(check: conformance.Check, server: PicowsSignalingServer) -> None:
    await check(lambda: WebSocketTransport(server.url))


async def _upgraded(
    server: PicowsSignalingServer,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.url.split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _close_code(reader: asyncio.StreamReader) -> int | None:
    async with asyncio.timeout(5):
        while True:
            head = await reader.readexactly(2)
            size = head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
            payload = await reader.readexactly(size)
            if head[0] & 0x0F == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


async def test_an_unmasked_client_frame_is_closed_1002(server: PicowsSignalingServer) -> None:
    """RFC 6455 5.1: "a server MUST close the connection upon receiving a frame that is not
    masked" (aiohttp accepts such frames)."""
    reader, writer = await _upgraded(server)
    try:
        hello = b'{"type":"hello","version":1}'
        writer.write(bytes([0x81, len(hello)]) + hello)  # mask bit clear
        await writer.drain()
        assert await _close_code(reader) == 1002
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and the socket is closed
    finally:
        writer.close()
