"""Hostile input for the STUN server (``rtckit stun --tcp``, its default limits).

Expected answers (docs/reference/stun.rst): a source over its UDP rate limit (50 a second,
bursts of 100) gets nothing while others are served; a datagram that is not an RFC 8489
message gets nothing; an unknown comprehension-required attribute gets 420, another method
400, and no response is more than 2.2 times its request; over TCP a source holds at most 8
connections (more are closed at once), a stream that is not STUN is closed, and a message
that does not arrive whole within ``tcp_message_timeout`` (5 s) is closed.

The checks of every case are :func:`~hostile.harness.hostile_case`'s, with the STUN canary
(:mod:`hostile.stun_canary`: UDP Binding round trips from 127.0.0.2). Each case attacks from
a loopback address of its own, so that one case's rate limit does not spill into the next.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Iterator

import pytest

from hostile.harness import (
    RTT_BAR,
    RTT_MAX,
    SLOW_SHARE,
    Canary,
    close_quietly,
    hostile_case,
    read_to_close,
)
from hostile.targets import Target, start_stun
from rtckit.stun import (
    MAGIC_COOKIE,
    Attribute,
    AttributeType,
    MessageClass,
    Method,
    RateLimit,
    StunMessage,
    binding_request,
    decode_error_code,
    new_transaction_id,
    parse_message,
    serialize_message,
)

CANARY_SOURCE = "127.0.0.2"
#: The most a response may be, relative to its request (docs/reference/stun.rst).
AMPLIFICATION = 2.2
LIMIT = RateLimit()  # what ``rtckit stun`` runs with
MAX_TCP_PER_SOURCE = 8
TCP_MESSAGE_TIMEOUT = 5.0
LATE = 1.5
BINDING, ALLOCATE = 0x0001, 0x0003
SUCCESS_RESPONSE = 0x0101


@pytest.fixture(scope="module")
def stun(tmp_path_factory: pytest.TempPathFactory, _suite_budget: None) -> Iterator[Target]:
    server = start_stun(tmp_path_factory.mktemp("hostile-stun"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stun_canary(stun: Target) -> Iterator[Canary]:
    bird = Canary(stun, "hostile.stun_canary", [stun.main.host, str(stun.main.port), CANARY_SOURCE])
    bird.start()
    stun.rss_start = stun.rss()
    try:
        yield bird
    finally:
        bird.stop()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.received.append(data)
        self.arrived.set()


async def _udp(source: str) -> tuple[asyncio.DatagramTransport, _Datagrams]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Datagrams, local_addr=(source, 0))
    return transport, protocol


def _message(kind: int, body: bytes = b"", *, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return struct.pack("!HHI12s", kind, size, MAGIC_COOKIE, os.urandom(12)) + body


def _attribute(kind: int, value: bytes = b"") -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\x00" * (-len(value) % 4)


def _fingerprinted(data: bytes) -> bytes:
    """*data* with its last byte (in the FINGERPRINT) flipped."""
    return data[:-1] + bytes([data[-1] ^ 0xFF])


#: Datagrams and the answer each gets: ``None`` (nothing), or the response class and
#: error code (0: success).
UDP_CASES: dict[str, tuple[bytes, tuple[MessageClass, int] | None]] = {
    "truncated-header": (binding_request()[:10], None),
    "bad-magic-cookie": (
        struct.pack("!HHI12s", BINDING, 0, 0x12345678, os.urandom(12)),
        None,
    ),
    "length-not-multiple-of-4": (_message(BINDING, b"\x00" * 3), None),
    "length-beyond-data": (_message(BINDING, length=100), None),
    "length-short-of-data": (_message(BINDING, b"\x00" * 8, length=4), None),
    "attribute-overrun": (_message(BINDING, struct.pack("!HH", 0x8022, 200)), None),
    "bad-fingerprint": (_fingerprinted(binding_request(fingerprint=True)), None),
    "a-response": (_message(SUCCESS_RESPONSE), None),
    "unknown-required-attribute": (
        _message(BINDING, _attribute(0x7F00)),
        (MessageClass.ERROR_RESPONSE, 420),
    ),
    "change-request": (
        _message(BINDING, _attribute(0x0003, b"\x00\x00\x00\x06")),
        (MessageClass.ERROR_RESPONSE, 420),
    ),
    "16000-unknown-required-attributes": (
        _message(BINDING, b"".join(_attribute(0x4000 + i) for i in range(16000))),
        (MessageClass.ERROR_RESPONSE, 420),
    ),
    "16000-unknown-optional-attributes": (
        _message(BINDING, b"".join(_attribute(0x8100 + i % 0x7000) for i in range(16000))),
        (MessageClass.SUCCESS_RESPONSE, 0),
    ),
    "another-method": (_message(ALLOCATE), (MessageClass.ERROR_RESPONSE, 400)),
    "binding": (_message(BINDING), (MessageClass.SUCCESS_RESPONSE, 0)),
}


def _code(answer: bytes) -> tuple[MessageClass, int]:
    message = parse_message(answer)
    if message.message_class != MessageClass.ERROR_RESPONSE:
        return message.message_class, 0
    value = next(attr.value for attr in message.attributes if attr.type == AttributeType.ERROR_CODE)
    return message.message_class, decode_error_code(value)[0]


def _answers(data: bytes, transaction: bytes) -> bool:
    return data[8:20] == transaction


async def _probe(protocol: _Datagrams, transport: asyncio.DatagramTransport, port: int) -> None:
    """Send a Binding request and wait for its answer (datagrams on loopback keep their
    order: whatever an earlier datagram got has arrived by then)."""
    transaction = new_transaction_id()
    transport.sendto(binding_request(transaction), ("127.0.0.1", port))
    async with asyncio.timeout(2):
        while not any(_answers(data, transaction) for data in protocol.received):
            protocol.arrived.clear()
            await protocol.arrived.wait()


async def test_malformed_and_unusual_datagrams(stun: Target, stun_canary: Canary) -> None:
    """Each datagram of :data:`UDP_CASES` five times: its answer (or none); no answer more
    than :data:`AMPLIFICATION` times its request."""
    port = stun.main.port
    async with hostile_case(stun, stun_canary):
        transport, protocol = await _udp("127.0.0.4")
        try:
            for name, (data, expected) in UDP_CASES.items():
                for _ in range(5):
                    protocol.received.clear()
                    transport.sendto(data, ("127.0.0.1", port))
                    await _probe(protocol, transport, port)
                    answers = protocol.received[:-1]  # the last one answers the probe
                    if expected is None:
                        assert answers == [], name
                        continue
                    assert len(answers) == 1, (name, answers)
                    assert _code(answers[0]) == expected, name
                    assert len(answers[0]) <= AMPLIFICATION * len(data), (name, len(answers[0]))
                await asyncio.sleep(0.2)  # 10 answers a round: the rate limit's pace
        finally:
            transport.close()


async def test_answer_sizes_match_the_amplification_table(
    stun: Target, stun_canary: Canary
) -> None:
    """The IPv4 rows of docs/reference/stun.rst's table, against the running server (the
    IPv6 rows are checked on the codec by tests/test_stun.py)."""
    change = serialize_message(
        StunMessage(
            method=Method.BINDING,
            message_class=MessageClass.REQUEST,
            transaction_id=new_transaction_id(),
            attributes=(Attribute(AttributeType.CHANGE_REQUEST, b"\x00\x00\x00\x06"),),
        ),
        fingerprint=True,
    )
    rows = [
        (_message(BINDING), 20, 32),
        (binding_request(fingerprint=True), 28, 40),
        (_message(BINDING, _attribute(0x7F00)), 24, 36),
        (change, 36, 44),
        (_message(ALLOCATE), 20, 28),
    ]
    port = stun.main.port
    async with hostile_case(stun, stun_canary):
        transport, protocol = await _udp("127.0.0.8")
        try:
            for request, request_size, answer_size in rows:
                assert len(request) == request_size
                protocol.received.clear()
                transport.sendto(request, ("127.0.0.1", port))
                async with asyncio.timeout(2):
                    await protocol.arrived.wait()
                protocol.arrived.clear()
                assert [len(data) for data in protocol.received] == [answer_size]
                assert answer_size <= AMPLIFICATION * request_size
        finally:
            transport.close()


async def test_udp_flood_from_one_source(stun: Target, stun_canary: Canary) -> None:
    """2000 Binding requests from one source in about 0.2 s: it gets at most its burst plus
    what the rate earns meanwhile; the canary (another source) is served throughout."""
    port = stun.main.port
    async with hostile_case(stun, stun_canary):
        transport, protocol = await _udp("127.0.0.1")
        try:
            start = time.monotonic()
            for index in range(2000):
                transport.sendto(binding_request(fingerprint=False), ("127.0.0.1", port))
                if index % 100 == 99:
                    await asyncio.sleep(0.01)  # a bounded rate, and the loop breathes
            await asyncio.sleep(1.0)
            took = time.monotonic() - start
            answers = protocol.received
            assert answers, "the flooding source got nothing at all"
            assert len(answers) <= LIMIT.burst + LIMIT.rate * took + 1, (len(answers), took)
            assert all(len(data) <= AMPLIFICATION * 20 for data in answers)
        finally:
            transport.close()


async def _tcp_binding(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: float = 2.0
) -> float:
    """One Binding round trip on an open TCP connection, in seconds."""
    transaction = new_transaction_id()
    start = time.perf_counter()
    writer.write(binding_request(transaction))
    async with asyncio.timeout(limit):
        header = await reader.readexactly(20)
        body = await reader.readexactly(struct.unpack("!H", header[2:4])[0])
    answer = parse_message(header + body)
    assert answer.transaction_id == transaction
    assert answer.message_class == MessageClass.SUCCESS_RESPONSE
    return time.perf_counter() - start


async def test_tcp_connection_flood_from_one_source(stun: Target, stun_canary: Canary) -> None:
    """40 connections from one source: at most 8 stay open (and are served), the others are
    closed at once; meanwhile a client from another source gets its Binding answers over TCP
    as fast as the canary's over UDP."""
    host, port = stun.main.host, stun.main.port
    async with hostile_case(stun, stun_canary):
        connections = [
            await asyncio.open_connection(host, port, local_addr=("127.0.0.5", 0))
            for _ in range(40)
        ]
        try:
            canary = await asyncio.open_connection(host, port, local_addr=("127.0.0.6", 0))
            try:
                rtts = [await _tcp_binding(*canary) for _ in range(20)]
            finally:
                close_quietly(canary[1])
            slow = [rtt for rtt in rtts if rtt >= RTT_BAR]
            assert len(slow) <= SLOW_SHARE * len(rtts), rtts
            assert max(rtts) < RTT_MAX, rtts

            async def still_open(reader: asyncio.StreamReader) -> bool:
                try:
                    return await asyncio.wait_for(reader.read(1), 0.5) != b""
                except TimeoutError:
                    return True
                except ConnectionError:
                    return False

            states = await asyncio.gather(*(still_open(reader) for reader, _ in connections))
            open_ones = [pair for pair, alive in zip(connections, states, strict=True) if alive]
            assert 1 <= len(open_ones) <= MAX_TCP_PER_SOURCE, len(open_ones)
            for pair in open_ones:
                await _tcp_binding(*pair)
        finally:
            for _, writer in connections:
                close_quietly(writer)


#: Streams that are not STUN, or stop being it: each is closed.
TCP_GARBAGE: dict[str, bytes] = {
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "bad-cookie": struct.pack("!HHI12s", BINDING, 0, 0x12345678, os.urandom(12)),
    "binding-then-garbage": binding_request() + b"\xff" * 20,
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20,
}


async def test_tcp_streams_that_are_not_stun_are_closed(stun: Target, stun_canary: Canary) -> None:
    host, port = stun.main.host, stun.main.port
    async with hostile_case(stun, stun_canary):
        for name, data in TCP_GARBAGE.items():
            for _ in range(3):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=("127.0.0.9", 0)
                )
                try:
                    writer.write(data)
                    answer, took = await read_to_close(reader, 3)
                    assert took != float("inf"), f"{name}: left open"
                    assert len(answer) <= AMPLIFICATION * len(data), name
                finally:
                    close_quietly(writer)


async def test_tcp_message_that_never_arrives_whole(stun: Target, stun_canary: Canary) -> None:
    """Five connections send a header announcing 65532 bytes (two of them 1000 bytes of it),
    then nothing: each is closed within ``tcp_message_timeout``, not the 30 s idle timeout."""
    host, port = stun.main.host, stun.main.port
    header = _message(BINDING, length=65532)
    async with hostile_case(stun, stun_canary):

        async def one(index: int) -> float:
            reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.7", 0))
            try:
                writer.write(header + (b"\x00" * 1000 if index % 2 else b""))
                answer, took = await read_to_close(reader, TCP_MESSAGE_TIMEOUT + 5)
                assert answer == b""
                return took
            finally:
                close_quietly(writer)

        took = await asyncio.gather(*(one(index) for index in range(5)))
        assert max(took) < TCP_MESSAGE_TIMEOUT + LATE, took
        assert min(took) > TCP_MESSAGE_TIMEOUT - LATE, took
