"""Conformance suite for signaling transports (built in or your own).

A transport conforms if :class:`~rtckit.signaling.client.SignalingClient` works over it
against an rtckit signaling server: frames arrive whole and in order, both ways, closures
surface as :class:`~rtckit.errors.ConnectionClosedError`, and the transport can connect again after
a close. Run every check from your own tests::

    import pytest
    from rtckit.testing import conformance

    @pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
    async def test_my_transport(check, my_server):
        await check(lambda: MyTransport(my_server.url))

or all at once: ``await conformance.run_all(factory)``. *factory* returns a NEW, unconnected
transport to the same server each time it is called; the server must admit joins to rooms
named ``conformance-*`` (e.g. ``SignalingConfig(auth=OpenAuth())``), or pass ``token`` (a
function ``room -> token``) to the checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from rtckit.errors import ConnectionClosedError
from rtckit.signaling.client import ClientEvent, SignalingClient
from rtckit.signaling.protocol import (
    Answer,
    AppMessage,
    Bye,
    Candidate,
    Error,
    ErrorCode,
    Hello,
    Join,
    Message,
    Offer,
    PeerJoined,
    PeerLeft,
    Resume,
    Resumed,
    Welcome,
    decode,
    encode,
)
from rtckit.signaling.transport import ClientTransport

__all__ = [
    "CHECKS",
    "Check",
    "TokenFactory",
    "TransportFactory",
    "check_broadcast",
    "check_close",
    "check_errors",
    "check_handshake",
    "check_large_and_unicode_frames",
    "check_ordering",
    "check_peer_left",
    "check_reconnect",
    "check_relay",
    "run_all",
]

TransportFactory = Callable[[], ClientTransport]
TokenFactory = Callable[[str], "str | None"]
Check = Callable[..., Awaitable[None]]

_T = TypeVar("_T")

#: Seconds each check may take.
TIMEOUT = 20.0


@contextlib.asynccontextmanager
async def _deadline(time_limit: float) -> AsyncIterator[None]:
    """Fail (AssertionError) if the block takes longer than *time_limit* seconds."""
    try:
        async with asyncio.timeout(time_limit):
            yield
    except TimeoutError:
        raise AssertionError(f"no complete answer within {time_limit} s") from None


def _room() -> str:
    return f"conformance-{secrets.token_hex(4)}"


def _no_token(_room: str) -> str | None:
    return None


async def _raw(transport: ClientTransport, message: Message) -> None:
    await transport.send(encode(message))


async def _receive(transport: ClientTransport) -> Message:
    return decode(await transport.receive())


async def _next_of(client: SignalingClient, kind: type[_T]) -> _T:
    """Skip acks/other events until one of *kind* arrives."""
    while True:
        event: ClientEvent = await client.next_event()
        if isinstance(event, kind):
            return event


async def _clients(
    factory: TransportFactory, room: str, token: TokenFactory, count: int
) -> list[SignalingClient]:
    clients = []
    for _ in range(count):
        client = await SignalingClient.connect(factory(), room=room, token=token(room))
        clients.append(client)
    # drain the peer-joined events so that each test starts clean
    for index, client in enumerate(clients):
        for _ in range(count - index - 1):
            await _next_of(client, PeerJoined)
    return clients


async def _close_all(clients: list[SignalingClient]) -> None:
    for client in clients:
        await client.aclose()


async def check_handshake(
    factory: TransportFactory, token: TokenFactory = _no_token, *, time_limit: float = TIMEOUT
) -> None:
    """hello is answered with hello, join with welcome, frame by frame."""
    transport = factory()
    room = _room()
    async with _deadline(time_limit):
        await transport.connect()
        try:
            await _raw(transport, Hello())
            hello = await _receive(transport)
            assert isinstance(hello, Hello), hello
            assert hello.version == 1
            await _raw(transport, Join(room=room, token=token(room), metadata={"k": "v"}))
            welcome = await _receive(transport)
            assert isinstance(welcome, Welcome), welcome
            assert welcome.room == room
            assert welcome.peers == ()
            await _raw(transport, Bye())
        finally:
            await transport.close()


async def check_relay(
    factory: TransportFactory, token: TokenFactory = _no_token, *, time_limit: float = TIMEOUT
) -> None:
    """An offer reaches its target with the sender stamped by the server."""
    async with _deadline(time_limit):
        a, b = await _clients(factory, _room(), token, 2)
        try:
            assert a.peer_id in b.peers
            assert b.peer_id in a.peers
            await a.send_offer(b.peer_id, "v=0\r\n")
            offer = await _next_of(b, Offer)
            assert offer.sender == a.peer_id
            assert offer.sdp == "v=0\r\n"
            await b.send_answer(a.peer_id, "v=0 answer\r\n")
            await b.send_candidate(
                a.peer_id, "candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0"
            )
            assert (await _next_of(a, Answer)).sdp == "v=0 answer\r\n"
            candidate = await _next_of(a, Candidate)
            assert (candidate.sdp_mid, candidate.sender) == ("0", b.peer_id)
        finally:
            await _close_all([a, b])


async def check_ordering(
    factory: TransportFactory,
    token: TokenFactory = _no_token,
    count: int = 150,
    *,
    time_limit: float = TIMEOUT,
) -> None:
    """Many messages arrive in order, exactly once, both ways at once.

    *count* per direction stays under the server's default burst (200 messages).
    """
    async with _deadline(time_limit):
        a, b = await _clients(factory, _room(), token, 2)
        try:

            async def pump(src: SignalingClient, dst: SignalingClient) -> None:
                for i in range(count):
                    await src.send_app(dst.peer_id, {"i": i})

            async def collect(client: SignalingClient) -> list[Any]:
                got: list[Any] = []
                while len(got) < count:
                    message = await _next_of(client, AppMessage)
                    got.append(message.payload["i"])
                return got

            results = await asyncio.gather(pump(a, b), pump(b, a), collect(a), collect(b))
            assert results[2] == list(range(count))
            assert results[3] == list(range(count))
        finally:
            await _close_all([a, b])


async def check_broadcast(
    factory: TransportFactory, token: TokenFactory = _no_token, *, time_limit: float = TIMEOUT
) -> None:
    """``to=None`` app messages reach every other peer, not the sender."""
    async with _deadline(time_limit):
        clients = await _clients(factory, _room(), token, 3)
        try:
            await clients[0].send_app(None, "all")
            for client in clients[1:]:
                message = await _next_of(client, AppMessage)
                assert (message.payload, message.sender) == ("all", clients[0].peer_id)
            await clients[1].send_app(clients[0].peer_id, "only you")
            message = await _next_of(clients[0], AppMessage)
            assert message.payload == "only you"
        finally:
            await _close_all(clients)


async def check_peer_left(
    factory: TransportFactory, token: TokenFactory = _no_token, *, time_limit: float = TIMEOUT
) -> None:
    """When a peer leaves (bye), the others get peer-left and it is gone from peers."""
    async with _deadline(time_limit):
        a, b = await _clients(factory, _room(), token, 2)
        try:
            gone = b.peer_id
            await b.aclose()
            left = await _next_of(a, PeerLeft)
            assert (left.peer_id, left.reason) == (gone, "bye")
            assert gone not in a.peers
        finally:
            await _close_all([a, b])


async def check_errors(
    factory: TransportFactory, token: TokenFactory = _no_token, *, time_limit: float = TIMEOUT
) -> None:
    """Unknown peers and bad frames get typed errors; the connection keeps working."""
    room = _room()
    async with _deadline(time_limit):
        (a,) = await _clients(factory, room, token, 1)
        try:
            seq = await a.send_offer("no-such-peer", "v=0")
            error = await _next_of(a, Error)
            assert (error.code, error.ref) == (ErrorCode.UNKNOWN_PEER, seq)
        finally:
            await a.aclose()
        transport = factory()
        await transport.connect()
        try:
            for frame, code in [
                ("not json", ErrorCode.BAD_JSON),
                ('{"type":"nope"}', ErrorCode.UNKNOWN_TYPE),
                ('{"type":"offer","to":"x","sdp":"v=0","seq":1}', ErrorCode.NOT_JOINED),
            ]:
                await transport.send(frame)
                reply = await _receive(transport)
                assert isinstance(reply, Error), reply
                assert reply.code == code, (frame, reply)
            await _raw(transport, Hello())
            assert isinstance(await _receive(transport), Hello)
        finally:
            await transport.close()


async def check_large_and_unicode_frames(
    factory: TransportFactory, token: TokenFactory = _no_token, *, time_limit: float = TIMEOUT
) -> None:
    """A 30 kB SDP and non-ASCII text arrive intact."""
    async with _deadline(time_limit):
        a, b = await _clients(factory, _room(), token, 2)
        try:
            sdp = "a=x-rtckit:" + "é☃𝄞" * 2000 + "\r\n" + "v" * 10_000
            await a.send_offer(b.peer_id, sdp)
            assert (await _next_of(b, Offer)).sdp == sdp
        finally:
            await _close_all([a, b])


async def check_close(
    factory: TransportFactory, token: TokenFactory = _no_token, *, time_limit: float = TIMEOUT
) -> None:
    """close() is idempotent; after it, send and receive raise ConnectionClosedError."""
    room = _room()
    transport = factory()
    async with _deadline(time_limit):
        await transport.connect()
        await _raw(transport, Hello())
        await _receive(transport)
        await _raw(transport, Join(room=room, token=token(room)))
        assert isinstance(await _receive(transport), Welcome)
        await transport.close()
        await transport.close()
        for attempt in (transport.send(encode(Hello())), transport.receive()):
            try:
                await attempt
            except ConnectionClosedError:
                continue
            raise AssertionError("a closed transport must raise ConnectionClosedError")
        # the server closing the connection surfaces the same way
        transport = factory()
        await transport.connect()
        try:
            await _raw(transport, Bye())
            while True:
                try:
                    await transport.receive()
                except ConnectionClosedError:
                    break
        finally:
            await transport.close()


async def check_reconnect(
    factory: TransportFactory, token: TokenFactory = _no_token, *, time_limit: float = TIMEOUT
) -> None:
    """The same transport connects again after a close, and the session resumes."""
    room = _room()
    transport = factory()
    async with _deadline(time_limit):
        await transport.connect()
        try:
            await _raw(transport, Hello())
            await _receive(transport)
            await _raw(transport, Join(room=room, token=token(room)))
            welcome = await _receive(transport)
            assert isinstance(welcome, Welcome)
            await transport.close()
            await transport.connect()
            await _raw(transport, Hello())
            await _receive(transport)
            await _raw(transport, Resume(resume_token=welcome.resume_token, ack=0))
            resumed = await _receive(transport)
            assert isinstance(resumed, Resumed), resumed
            assert resumed.peer_id == welcome.peer_id
            await _raw(transport, Bye())
        finally:
            await transport.close()


#: Every check, in a sensible order.
CHECKS: tuple[Check, ...] = (
    check_handshake,
    check_relay,
    check_ordering,
    check_broadcast,
    check_peer_left,
    check_errors,
    check_large_and_unicode_frames,
    check_close,
    check_reconnect,
)


async def run_all(
    factory: TransportFactory, token: TokenFactory = _no_token, *, time_limit: float = TIMEOUT
) -> list[str]:
    """Run every check; return their names. Raises the first failure (AssertionError)."""
    names = []
    for check in CHECKS:
        await check(factory, token, time_limit=time_limit)
        names.append(check.__name__)
    return names
