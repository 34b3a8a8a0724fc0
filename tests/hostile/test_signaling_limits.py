"""Hostile use of the signaling protocol's own limits (docs/topics/signaling-protocol.rst,
"Delivery" and "Limits").

Expected answers: an ``ack`` (alone or in ``resume``) beyond the last ``seq`` sent gets
``bad_ack`` and acknowledges nothing (a refused ``resume`` leaves the session to a later good
one); ``join`` metadata over 1 KiB gets ``too_large``; a ``join`` whose ``welcome`` would pass
the message size limit gets ``room_full``; ``resume`` with an unknown token gets
``resume_failed``, after the room token expired ``auth_expired``; a client that acknowledges
what it never read while its room is flooded is closed with 4004.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hostile.harness import (
    Canary,
    close_quietly,
    frame,
    hostile_case,
    read_frame,
    status_of,
    upgrade_request,
    websocket,
)
from hostile.targets import (
    ALL_TARGETS,
    ATTACK_ROOM,
    CROWD_ROOM,
    MAX_MESSAGE_BYTES,
    SECRET,
    Target,
)
from rtckit.signaling.auth import TokenAuth

TEXT = 0x1
HELLO = json.dumps({"type": "hello", "version": 1})
MAX_SEQ = 2**53 - 1
#: ``max_metadata_size`` (the default).
MAX_METADATA = 1024


class _Peer:
    """A signaling client speaking the protocol by hand over *ws*; remembers the last
    ``seq`` it received."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        """The next ``hello``, ``welcome``, ``resumed`` or ``error`` (the others skipped)."""
        while True:
            message = await asyncio.wait_for(self.ws.receive(), 10)
            assert message.type == aiohttp.WSMsgType.TEXT, (message.type, message.data)
            decoded: dict[str, Any] = json.loads(message.data)
            if isinstance(decoded.get("seq"), int) and decoded["type"] != "app":
                self.seq = max(self.seq, decoded["seq"])
            if decoded["type"] in ("hello", "welcome", "resumed", "error"):
                return decoded

    async def join(self, target: Target, identity: str, **extra: Any) -> dict[str, Any]:
        await self.send({"type": "hello", "version": 1})
        assert (await self.receive())["type"] == "hello"
        token = extra.pop("token", None) or target.token(ATTACK_ROOM, identity)
        await self.send({"type": "join", "room": ATTACK_ROOM, "token": token, **extra})
        return await self.receive()

    async def expect_error(self, code: str) -> dict[str, Any]:
        answer = await self.receive()
        assert answer["type"] == "error", answer
        assert answer["code"] == code, answer
        return answer


async def test_acks_of_what_was_never_sent(target: Target, canary: Canary) -> None:
    """``ack`` of 2^53 - 1 and of one past the last ``seq`` sent: ``bad_ack`` each time, the
    session's queue is kept (a later ``resume`` with ``ack`` 0 gets every message again)."""
    async with hostile_case(target, canary), websocket(target) as ws:
        peer = _Peer(ws)
        assert (await peer.join(target, "acker"))["type"] == "welcome"
        for _ in range(3):
            await peer.send({"type": "ack", "ack": MAX_SEQ})
            await peer.expect_error("bad_ack")
            await peer.send({"type": "ack", "ack": peer.seq + 1})  # the error took peer.seq
            await peer.expect_error("bad_ack")
        await peer.send({"type": "bye"})


async def test_resume_with_acks_from_the_future(target: Target, canary: Canary) -> None:
    """A dropped session resumed with ``ack`` 2^53 - 1, then one past the last ``seq`` sent:
    ``bad_ack``, refused; the session is still there: a ``resume`` with a true ``ack``
    succeeds and gets the unacknowledged errors again."""
    async with hostile_case(target, canary):
        async with websocket(target) as ws:
            peer = _Peer(ws)
            welcome = await peer.join(target, "resumer")
            await peer.send({"type": "ack", "ack": MAX_SEQ})
            await peer.expect_error("bad_ack")  # seq 1 in the session: unacknowledged
            sent = peer.seq
        assert sent == 1
        async with websocket(target) as ws:
            peer = _Peer(ws)
            await peer.send({"type": "hello", "version": 1})
            await peer.receive()
            for ack in (MAX_SEQ, sent + 1, sent + 1000):
                await peer.send(
                    {"type": "resume", "resume_token": welcome["resume_token"], "ack": ack}
                )
                await peer.expect_error("bad_ack")
            await peer.send({"type": "resume", "resume_token": welcome["resume_token"], "ack": 0})
            assert (await peer.receive())["type"] == "resumed"
            resent = await peer.receive()  # the first bad_ack, kept and sent again
            assert resent["code"] == "bad_ack"
            await peer.send({"type": "bye"})


async def test_resume_of_an_unknown_session(target: Target, canary: Canary) -> None:
    """``resume`` with tokens no session has (random, empty-ish, the longest allowed):
    ``resume_failed``; the connection may still ``join``."""
    tokens = ["x" * 32, "AAAA", "z" * 128]
    async with hostile_case(target, canary), websocket(target) as ws:
        peer = _Peer(ws)
        await peer.send({"type": "hello", "version": 1})
        await peer.receive()
        for token in tokens:
            await peer.send({"type": "resume", "resume_token": token, "ack": 0})
            await peer.expect_error("resume_failed")
        token = target.token(ATTACK_ROOM, "stranger")
        await peer.send({"type": "join", "room": ATTACK_ROOM, "token": token})
        assert (await peer.receive())["type"] == "welcome"
        await peer.send({"type": "bye"})


async def test_resume_after_the_room_token_expired(target: Target, canary: Canary) -> None:
    """Join with a token valid for 2 s, drop the connection, resume once it has expired
    (inside the 5 s resume window): ``auth_expired``."""
    auth = TokenAuth(secret=SECRET)
    async with hostile_case(target, canary):
        token = auth.mint(room=ATTACK_ROOM, identity="late", ttl=2)
        expires = json.loads(_claims(token))["exp"]
        async with websocket(target) as ws:
            welcome = await _Peer(ws).join(target, "late", token=token)
            assert welcome["type"] == "welcome", welcome
        await asyncio.sleep(max(0.0, expires - time.time()) + 0.2)
        async with websocket(target) as ws:
            peer = _Peer(ws)
            await peer.send({"type": "hello", "version": 1})
            await peer.receive()
            for _ in range(2):
                await peer.send(
                    {"type": "resume", "resume_token": welcome["resume_token"], "ack": 0}
                )
                await peer.expect_error("auth_expired")


def _claims(token: str) -> bytes:
    body = token.split(".")[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


async def test_oversized_join_metadata(target: Target, canary: Canary) -> None:
    """``join`` metadata one byte over 1 KiB of compact JSON, and far over it (60 KiB, under
    the message limit): ``too_large``; a ``join`` within the limit then succeeds."""
    just_over = {"k": "x" * (MAX_METADATA - len('{"k":""}') + 1)}
    far_over = {"k": "x" * (MAX_MESSAGE_BYTES - 4096)}
    async with hostile_case(target, canary), websocket(target) as ws:
        peer = _Peer(ws)
        await peer.send({"type": "hello", "version": 1})
        await peer.receive()
        token = target.token(ATTACK_ROOM, "bloated")
        for metadata in (just_over, far_over, just_over):
            await peer.send(
                {"type": "join", "room": ATTACK_ROOM, "token": token, "metadata": metadata}
            )
            await peer.expect_error("too_large")
        fits = {"k": "x" * (MAX_METADATA - len('{"k":""}'))}
        await peer.send({"type": "join", "room": ATTACK_ROOM, "token": token, "metadata": fits})
        assert (await peer.receive())["type"] == "welcome"
        await peer.send({"type": "bye"})


async def test_a_welcome_over_the_message_limit_is_refused(target: Target, canary: Canary) -> None:
    """Peers with the largest metadata and identity join a room that holds more of them than
    one ``welcome`` can list: once the member list would pass the message size limit, the
    next ``join`` gets ``room_full`` (not a ``welcome`` the client could not receive)."""
    metadata = {"k": "x" * (MAX_METADATA - len('{"k":""}'))}
    answers: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(ssl=target.main.tls or False, limit=0)
    async with hostile_case(target, canary), aiohttp.ClientSession(connector=connector) as session:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        try:
            for index in range(target.crowd_peers):
                ws = await session.ws_connect(target.ws_url, max_msg_size=0, autoping=True)
                sockets.append(ws)
                peer = _Peer(ws)
                await peer.send({"type": "hello", "version": 1})
                await peer.receive()
                identity = f"{index:04d}" + "i" * 124  # 128 characters, the most allowed
                token = target.token(CROWD_ROOM, identity)
                await peer.send(
                    {"type": "join", "room": CROWD_ROOM, "token": token, "metadata": metadata}
                )
                answer = await peer.receive()
                answers.append(answer)
                if answer["type"] == "error":
                    break
            welcomes = [answer for answer in answers if answer["type"] == "welcome"]
            refused = answers[-1]
            assert refused["type"] == "error", f"{len(welcomes)} peers joined"
            assert refused["code"] == "room_full", refused
            assert "welcome" in refused["message"], refused
            assert len(welcomes) < target.crowd_peers - 1
        finally:
            for ws in sockets:
                with contextlib.suppress(ConnectionError):
                    await ws.send_str(json.dumps({"type": "bye"}))
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    if target.main.tls is not None:
        await asyncio.sleep(0.25)


# --- the slow consumer -----------------------------------------------------------------------

#: ``max_send_buffer`` (the default): bytes a connection may hold for a client.
MAX_SEND_BUFFER = 8 * 2**20
#: Payload of each flood message, and messages per second (under the rate limit of 100).
FLOOD_PAYLOAD = 48_000
FLOOD_RATE = 80
#: Refusals in a row that tell the flooder its target's connection is gone.
REFUSED_IN_A_ROW = 8


def _kernel_send_buffer_max() -> int:
    """The most the kernel buffers for one TCP socket's sends (``tcp_wmem``'s maximum)."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


async def _read_json(reader: asyncio.StreamReader) -> dict[str, Any]:
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
        if opcode == TEXT:
            decoded: dict[str, Any] = json.loads(payload)
            if decoded["type"] != "ping":
                return decoded


async def _slow_websocket(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket whose socket receives into a small kernel buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    endpoint = target.main
    await asyncio.get_running_loop().sock_connect(sock, (endpoint.host, endpoint.port))
    reader, writer = await asyncio.open_connection(
        sock=sock,
        ssl=endpoint.tls,
        server_hostname=endpoint.host if endpoint.tls else None,
        limit=2**15,  # the reader stops taking data at twice this (or the TLS layer's buffer)
    )
    writer.write(upgrade_request(target))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert status_of(head) == 101, head
    return reader, writer


@pytest.mark.parametrize("target", ALL_TARGETS, indirect=True)  # over wss:// on both layers too
async def test_a_slow_consumer_is_closed(target: Target, canary: Canary) -> None:
    """A peer stops reading its socket (4 KiB receive buffer) but acknowledges every message
    relayed to it (so that its session's queue stays short) while another peer sends it
    48 kB messages at 80 per second: once the server holds ``max_send_buffer`` for it, the
    server closes the connection (4004) and keeps the session for ``resume``. The peer then
    reads what is queued at full speed: it finds the close frame 4004 if it caught up within
    the server's ``close_timeout`` (2 s), else the connection dropped, as documented (the
    flooder learns of the close only when its messages are refused, about 2 s later). Either
    way long before the 8 s heartbeat timeout; then a ``resume`` of the session succeeds.
    Memory stays bounded (the case's RSS check)."""
    async with hostile_case(target, canary, settle=target.idle_timeout + 8):
        reader, writer = await _slow_websocket(target)
        try:
            writer.write(frame(TEXT, HELLO.encode()))
            token = target.token(ATTACK_ROOM, "sloth")
            join = {"type": "join", "room": ATTACK_ROOM, "token": token}
            writer.write(frame(TEXT, json.dumps(join).encode()))
            assert (await _read_json(reader))["type"] == "hello"
            welcome = await _read_json(reader)
            assert welcome["type"] == "welcome", welcome
            await _flood(target, welcome["peer_id"], writer)
            # the server closed it: take what it holds, as a client back to life would
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20
            )
            code: int | None = None
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                async with asyncio.timeout(5):  # the dead-peer timeout is 8 s
                    while True:
                        opcode, payload = await read_frame(reader)
                        if opcode == 0x8:
                            code = struct.unpack("!H", payload[:2])[0]
                            break
            assert code in (4004, None), code
        finally:
            close_quietly(writer)
        async with websocket(target) as ws:
            peer = _Peer(ws)
            await peer.send({"type": "hello", "version": 1})
            await peer.receive()
            await peer.send({"type": "resume", "resume_token": welcome["resume_token"], "ack": 0})
            assert (await peer.receive())["type"] == "resumed"
            await peer.send({"type": "bye"})


async def _flood(target: Target, sloth: str, sloth_writer: asyncio.StreamWriter) -> None:
    """Send *sloth* messages at :data:`FLOOD_RATE` until the server refuses
    :data:`REFUSED_IN_A_ROW` of them in a row (``backlog_full``: *sloth*'s connection was
    closed, its acknowledgements no longer count) or surely holds more than
    ``max_send_buffer`` for it; acknowledge each on *sloth*'s behalf once the server has
    relayed it (its ``ack`` to the flooder says it processed it, minus those refused)."""
    # what the server holds, the most its kernel buffers, and a margin for what the client
    # takes in (its kernel, its StreamReader, its TLS layer's 256 KiB)
    total = MAX_SEND_BUFFER + _kernel_send_buffer_max() + 2 * 2**20
    payload = "x" * FLOOD_PAYLOAD
    async with websocket(target) as ws:
        flooder = _Peer(ws)
        assert (await flooder.join(target, "flooder"))["type"] == "welcome"
        # sloth's seq: 1 was peer-joined (flooder), then one per message relayed. Others'
        # arrivals or departures in the room only raise it: never acknowledge too much.
        refused = 0  # messages refused so far: the server's error for k comes before ack k+1
        run = last_refused = 0

        async def watch() -> None:
            nonlocal refused, run, last_refused
            acked = 0
            while run < REFUSED_IN_A_ROW:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    return
                decoded = json.loads(message.data)
                if decoded["type"] == "ack" and decoded["ack"] > acked:
                    acked = decoded["ack"]
                    relayed = acked - 1 - refused  # not sure of acked itself yet
                    sloth_writer.write(
                        frame(TEXT, json.dumps({"type": "ack", "ack": 1 + relayed}).encode())
                    )
                elif decoded["type"] == "error":
                    assert decoded["code"] == "backlog_full", decoded
                    refused += 1
                    run = run + 1 if decoded["ref"] == last_refused + 1 else 1
                    last_refused = decoded["ref"]

        watcher = asyncio.create_task(watch())
        try:
            sent = 0
            start = time.monotonic()
            seq = 0
            while sent < total and not watcher.done():
                seq += 1
                message = {"type": "app", "to": sloth, "payload": payload, "seq": seq}
                await ws.send_str(json.dumps(message))
                sent += FLOOD_PAYLOAD
                await asyncio.sleep(max(0.0, start + seq / FLOOD_RATE - time.monotonic()))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher  # raises what the watcher found
            await flooder.send({"type": "bye"})
