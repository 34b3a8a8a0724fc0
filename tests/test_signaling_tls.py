"""``wss://`` on both WebSocket layers (``listen(..., ssl=context)``): the TLS handshake is
bounded by ``HttpLimits.tls_handshake_timeout``, and what is not TLS on the TLS port (plain
HTTP, random bytes, a handshake never finished) is dropped without an answer or a traceback
while the server keeps serving.

The transport conformance suites run over ``wss://`` too (tests/test_signaling_conformance.py,
tests/test_signaling_fastws.py) with :data:`SCHEMES` and :func:`transport_factory`; the
hostile-input suite attacks ``rtckit signaling --cert/--key`` on both layers
(tests/hostile/targets.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import time
from typing import Any

import pytest

from rtckit.certs import CertificateSpec, KeyType, client_ssl_context, create_self_signed
from rtckit.errors import ConnectionClosedError
from rtckit.httpserver import HttpLimits
from rtckit.signaling import AppMessage, SignalingClient, WebSocketTransport
from rtckit.testing.conformance import TransportFactory
from test_signaling_limits import start

#: The WebSocket layers of the signaling server.
TRANSPORTS = ["aiohttp", "picows"]
#: The schemes the conformance suites run over.
SCHEMES = ["ws", "wss"]
#: The TLS handshake timeout of these tests, and how late the server may close after it.
HANDSHAKE_TIMEOUT = 0.5
LATE = 2.0
#: The start of a TLS ClientHello (a record header and a handshake header), never finished.
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20


@functools.cache
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context presenting a self-signed certificate for 127.0.0.1, and a client
    context trusting that certificate only (made once per test run)."""
    own = create_self_signed(CertificateSpec(hosts=["127.0.0.1"], key_type=KeyType.EC))
    return own.server_ssl_context(), client_ssl_context(own)


async def transport_factory(server: Any, scheme: str) -> TransportFactory:
    """Make *server* (either layer) listen on 127.0.0.1 over *scheme*; return a factory of
    client transports to it (trusting the test certificate over ``wss://``)."""
    server_context, client_context = tls_contexts() if scheme == "wss" else (None, None)
    await server.listen("127.0.0.1", 0, ssl=server_context)
    url: str = server.url
    assert url.startswith(f"{scheme}://127.0.0.1:"), url
    return lambda: WebSocketTransport(url, ssl=client_context)


async def _closed_silently(port: int, send: bytes) -> float:
    """Open a TCP connection to *port*, send *send*; return how long until the server closed
    it. Fails if it answered anything."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start_time = time.monotonic()
    try:
        if send:
            writer.write(send)
        data = b""
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT + LATE):
                while chunk := await reader.read(4096):
                    data += chunk
        except ConnectionError:
            pass
        except TimeoutError:
            return float("inf")  # still open
        # a TLS alert record is the only answer allowed (OpenSSL sends one for a bad hello)
        assert data == b"" or data[:1] == b"\x15", data[:200]
        return time.monotonic() - start_time
    finally:
        writer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_what_is_not_tls_is_dropped_and_the_server_keeps_serving(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    server_context, client_context = tls_contexts()
    limits = HttpLimits(tls_handshake_timeout=HANDSHAKE_TIMEOUT)
    server, port = await start(transport, tls=server_context, limits=limits)
    async with server, asyncio.timeout(30):
        assert server.url == f"wss://127.0.0.1:{port}/ws"
        garbage = [
            b"",  # opens TCP, never starts the handshake
            PARTIAL_HELLO,  # starts it, never finishes
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # plain HTTP
            os.urandom(512),  # random bytes
        ]
        took = await asyncio.gather(*(_closed_silently(port, data) for data in garbage * 5))
        # the half-open ones at the handshake timeout, not asyncio's 60 s
        assert max(took) < HANDSHAKE_TIMEOUT + LATE, took
        # plain ws:// to the TLS port is refused; wss:// trusting the certificate works
        with pytest.raises(ConnectionClosedError):
            await SignalingClient.connect(f"ws://127.0.0.1:{port}/ws", room="r")
        async with (
            SignalingClient.connect(server.url, room="r", ssl=client_context) as a,
            SignalingClient.connect(server.url, room="r", ssl=client_context) as b,
        ):
            await a.send_app(b.peer_id, "over tls")
            while not isinstance(event := await b.next_event(), AppMessage):
                pass
            assert event.payload == "over tls"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_client_that_does_not_trust_the_certificate_is_refused(transport: str) -> None:
    """The client side checks the server: without a context that trusts the test certificate
    (the system's CAs do not), ``wss://`` fails with a clear error."""
    server_context, _client_context = tls_contexts()
    server, _port = await start(transport, tls=server_context)
    async with server, asyncio.timeout(30):
        with pytest.raises(ConnectionClosedError, match="certificate"):
            await SignalingClient.connect(server.url, room="r")
