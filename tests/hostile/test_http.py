"""Hostile HTTP connections: idle, slow, oversized, malformed, half-open TLS.

Expected answers (docs/howto/deploy.rst, "Connection limits"): a connection that has not sent
complete request headers within the idle timeout is closed without an answer; a request line
or header line over 8190 bytes, or over 128 headers, gets 400; garbage gets 400 or a close; a
TLS handshake not finished within the TLS handshake timeout is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import pytest

from hostile.harness import (
    Canary,
    close_quietly,
    hostile_case,
    http_exchange,
    open_raw,
    read_to_close,
    status_of,
    upgrade_request,
)
from hostile.targets import TLS_TARGETS, Endpoint, Target

#: How late after the idle timeout the server may close (timer granularity, load).
LATE = 2.0


async def _closed_silently(
    endpoint: Endpoint, after: float, *, tls: bool = True, send: bytes = b""
) -> float:
    reader, writer = await open_raw(endpoint, tls=tls)
    try:
        if send:
            writer.write(send)
        data, took = await read_to_close(reader, after + LATE)
    finally:
        close_quietly(writer)
    assert data == b"", f"expected silence, got {data[:200]!r}"
    assert took != float("inf"), f"{endpoint.name}: still open {after + LATE} s later"
    return took


async def test_idle_connections_are_closed(target: Target, canary: Canary) -> None:
    """200 connections that never send a byte, on every HTTP port: all closed, no answer."""
    async with hostile_case(target, canary):
        for endpoint in target.endpoints:
            results = await asyncio.gather(
                *(_closed_silently(endpoint, target.idle_timeout) for _ in range(200))
            )
            assert max(results) < target.idle_timeout + LATE


async def _trickle(
    endpoint: Endpoint, data: bytes, interval: float, limit: float
) -> tuple[bytes, float, int]:
    """Send *data* one byte per *interval*; return the answer, when the server closed, and how
    many bytes went out."""
    reader, writer = await open_raw(endpoint)
    start = time.monotonic()
    sent = 0
    answer = b""
    try:
        for byte in data:
            if reader.at_eof() or writer.is_closing():
                break
            writer.write(bytes([byte]))
            sent += 1
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    chunk = await reader.read(4096)
                    answer += chunk
                    if not chunk:
                        break
            if time.monotonic() - start > limit:
                break
        if not reader.at_eof():
            rest, _ = await read_to_close(reader, 1.0)
            answer += rest
        return answer, time.monotonic() - start, sent
    except ConnectionError:
        return answer, time.monotonic() - start, sent
    finally:
        close_quietly(writer)


async def test_slowloris_headers_are_cut(target: Target, canary: Canary) -> None:
    """20 connections sending headers one byte every 0.2 s, without end: closed at the idle
    timeout, unanswered."""
    endless = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-Slow: " + b"a" * 4000
    limit = target.idle_timeout + LATE + 1
    async with hostile_case(target, canary):
        for endpoint in target.endpoints:
            results = await asyncio.gather(
                *(_trickle(endpoint, endless, 0.2, limit) for _ in range(20))
            )
            for answer, took, _sent in results:
                assert answer == b""
                assert took < target.idle_timeout + LATE


async def test_trickled_websocket_upgrade_never_upgrades(target: Target, canary: Canary) -> None:
    """A WebSocket upgrade sent one byte per 0.1 s (it would take ~20 s): closed at the idle
    timeout, before its headers are complete, never answered 101."""
    request = upgrade_request(target)
    assert len(request) * 0.1 > 3 * target.idle_timeout
    async with hostile_case(target, canary):
        answer, took, sent = await _trickle(target.main, request, 0.1, 3 * target.idle_timeout)
        assert answer == b""
        assert sent < len(request)
        assert took < target.idle_timeout + LATE


async def test_idle_keepalive_connection_is_closed(target: Target, canary: Canary) -> None:
    """After a response, a keep-alive connection that sends nothing more is closed."""
    path = "/ws/rtckit.js" if target.name.startswith("signaling") else "/healthz"
    async with hostile_case(target, canary):
        reader, writer = await open_raw(target.main)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert status_of(head) == 200
            _, took = await read_to_close(reader, target.idle_timeout + LATE)
            assert took < target.idle_timeout + LATE
        finally:
            close_quietly(writer)


OVERSIZED = {
    "header-line": b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\nHost: localhost\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    + b"\r\n",
    "long-url": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
}


@pytest.mark.parametrize("kind", sorted(OVERSIZED))
async def test_oversized_requests_get_400_and_one_log_line(
    target: Target, canary: Canary, kind: str
) -> None:
    """Over 8190 bytes of header line or URL, or over 128 headers: 400, and the log says so in
    one line without a traceback (the issue's item 4)."""
    async with hostile_case(target, canary):
        offset = target.log_size()
        for endpoint in target.endpoints:
            assert status_of(await http_exchange(endpoint, OVERSIZED[kind])) == 400
        await asyncio.sleep(0.2)
        lines = [line for line in target.logs_since(offset).splitlines() if "bad request" in line]
        assert len(lines) >= len(target.endpoints), target.logs_since(offset)


MALFORMED = {
    "garbage": b"\x00\x01\x02 nonsense \xff\xfe\r\n\r\n",
    "bad-version": b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n",
    "bad-header": b"GET / HTTP/1.1\r\nHost: localhost\r\nNo colon here\r\n\r\n",
    "bad-chunked": b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nxx\r\n0\r\n\r\n",
    "two-lengths": b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "tls-on-plain": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_http_is_refused(target: Target, canary: Canary, kind: str) -> None:
    """Garbage, unknown versions, broken headers or chunks, conflicting lengths, a TLS hello
    on a plain port: 400 (or a close without an answer), nothing else."""
    async with hostile_case(target, canary):
        for endpoint in target.endpoints:
            if kind == "tls-on-plain" and endpoint.tls is not None:
                continue
            answer = await http_exchange(endpoint, MALFORMED[kind])
            assert answer == b"" or status_of(answer) == 400, answer[:300]


async def test_pipelined_request_flood_is_answered_in_order(target: Target, canary: Canary) -> None:
    """1000 requests pipelined in one write on one connection: answered one after the other
    (404 each), while the canary keeps its round trip. A server without keep-alive answers
    the first (``Connection: close``) and closes, ignoring the rest."""
    request = b"GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n" * 1000
    count = 1000 if target.keep_alive else 1
    async with hostile_case(target, canary):
        reader, writer = await open_raw(target.main)
        try:
            writer.write(request)
            with contextlib.suppress(ConnectionError):  # a server that closes after one
                await writer.drain()
            answered = 0
            async with asyncio.timeout(30):
                while answered < count:
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert status_of(head) == 404
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    answered += 1
            if not target.keep_alive:
                assert b"connection: close" in head.lower()
                _, took = await read_to_close(reader, 5)
                assert took != float("inf"), "the server left the connection open"
        finally:
            close_quietly(writer)


@pytest.mark.parametrize("target", TLS_TARGETS, indirect=True)
async def test_half_open_tls_is_closed(target: Target, canary: Canary) -> None:
    """50 connections to the TLS port that never finish the handshake (half of them send a
    partial ClientHello): closed at the TLS handshake timeout."""
    tls = [endpoint for endpoint in target.endpoints if endpoint.tls is not None]
    timeout = target.tls_handshake_timeout
    assert tls
    assert timeout is not None
    partial = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20
    async with hostile_case(target, canary):
        results = await asyncio.gather(
            *(
                _closed_silently(tls[0], timeout, tls=False, send=partial if i % 2 else b"")
                for i in range(50)
            )
        )
        assert max(results) < timeout + LATE


#: What is not TLS, sent to a TLS port.
NOT_TLS: dict[str, Callable[[], bytes]] = {
    "plain-http": lambda: b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "random-bytes": lambda: os.urandom(1024),
}


@pytest.mark.parametrize("kind", sorted(NOT_TLS))
@pytest.mark.parametrize("target", TLS_TARGETS, indirect=True)
async def test_plain_http_on_the_tls_port(target: Target, canary: Canary, kind: str) -> None:
    """Plain HTTP, or random bytes, sent to the TLS port: closed, no traceback."""
    tls = [endpoint for endpoint in target.endpoints if endpoint.tls is not None]
    assert tls
    async with hostile_case(target, canary):
        for _ in range(20):
            reader, writer = await open_raw(tls[0], tls=False)
            writer.write(NOT_TLS[kind]())
            _, took = await read_to_close(reader, 5)
            close_quietly(writer)
            assert took != float("inf")
