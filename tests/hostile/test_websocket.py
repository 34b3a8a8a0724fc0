"""Hostile WebSocket frames and signaling messages.

Expected answers (docs/topics/signaling-protocol.rst): a frame that breaks RFC 6455 closes the
connection with 1002, a message over the size limit with 1009, a binary frame with 1002; bad
JSON, wrong types and unknown types get an ``error`` with their code and the connection stays
usable; a refused ``join`` gets its ``auth_*``/``unknown_room`` error; a flood gets
``rate_limited`` and close 1008 (both reach the client: the server's close lingers); a
connection that never sends ``hello``/``join`` is closed with 4000 at the handshake timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import time
from typing import Any

import aiohttp
import pytest

from hostile.harness import (
    Canary,
    close_quietly,
    frame,
    hostile_case,
    raw_websocket,
    read_close_code,
    websocket,
)
from hostile.targets import ATTACK_ROOM, MAX_MESSAGE_BYTES, SECRET, Target
from rtckit.signaling.auth import TokenAuth

TEXT, BINARY, CLOSE, PING, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0x0
HELLO = json.dumps({"type": "hello", "version": 1})

#: Frames that break RFC 6455, and the close code each must get.
BAD_FRAMES: dict[str, tuple[bytes, int]] = {
    "reserved-opcode": (frame(0x3, b"x"), 1002),
    "reserved-control-opcode": (frame(0xB, b"x"), 1002),
    "reserved-bits": (frame(TEXT, HELLO.encode(), rsv=0b100), 1002),
    "fragmented-ping": (frame(PING, b"x", fin=False), 1002),
    "oversized-ping": (frame(PING, b"x" * 126), 1002),
    "bad-close-code": (frame(CLOSE, struct.pack("!H", 999)), 1002),
    "stray-continuation": (frame(CONTINUATION, b"x"), 1002),
    "binary-frame": (frame(BINARY, b"\x00\x01"), 1002),
    "announced-oversize": (frame(TEXT, length=MAX_MESSAGE_BYTES + 1), 1009),
    "announced-2-63": (frame(TEXT, length=(1 << 63) - 1), 1009),
}


@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
async def test_malformed_frames_close_with_the_protocol_code(
    target: Target, canary: Canary, kind: str
) -> None:
    data, code = BAD_FRAMES[kind]
    async with hostile_case(target, canary):
        for _ in range(5):
            reader, writer = await raw_websocket(target)
            try:
                writer.write(data)
                await writer.drain()
                assert await read_close_code(reader) == code
            finally:
                close_quietly(writer)


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next signaling message (pings answered, server pings skipped)."""
    while True:
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type == aiohttp.WSMsgType.TEXT, (message.type, message.data)
        decoded: dict[str, Any] = json.loads(message.data)
        if decoded["type"] != "ping":
            return decoded


async def _close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """The code of the close frame the server sent, or aiohttp's code if none arrived (1006:
    the connection dropped). Not ``ws.close_code`` alone: over TLS, aiohttp replaces the
    server's code by 1006 when its own close reply finds the server's TLS already closed."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while not ws.closed:
                message = await ws.receive()
                if message.type == aiohttp.WSMsgType.CLOSE:
                    return int(message.data)
                if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
    return ws.close_code


#: Messages that get an ``error`` and leave the connection usable: (frames sent first, the bad
#: frame, its error code).
BAD_MESSAGES: dict[str, tuple[list[str], str, str]] = {
    "not-json": ([], "{nope", "bad_json"),
    "nan": ([], '{"type": "hello", "version": NaN}', "bad_json"),
    "repeated-key": ([], '{"type": "hello", "type": "hello", "version": 1}', "bad_json"),
    "not-an-object": ([], "[1, 2, 3]", "bad_message"),
    "wrong-type": ([], '{"type": "hello", "version": "1"}', "bad_message"),
    "extra-field": ([], '{"type": "hello", "version": 1, "admin": true}', "bad_message"),
    "unknown-type": ([], '{"type": "shutdown-server"}', "unknown_type"),
    "too-deep": (
        [HELLO],
        '{"type": "join", "room": "hall", "metadata": {"a": ' + "[" * 40 + "]" * 40 + "}}",
        "too_deep",
    ),
    "before-hello": ([], '{"type": "join", "room": "hall"}', "unexpected"),
    "relay-before-join": ([HELLO], '{"type": "app", "payload": 1, "seq": 1}', "not_joined"),
}


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
async def test_bad_messages_get_their_error(target: Target, canary: Canary, kind: str) -> None:
    before, bad, code = BAD_MESSAGES[kind]
    async with hostile_case(target, canary), websocket(target) as ws:
        for text in before:
            await ws.send_str(text)
            assert (await _receive(ws))["type"] == "hello"
        for _ in range(3):
            await ws.send_str(bad)
            answer = await _receive(ws)
            assert answer["type"] == "error", answer
            assert answer["code"] == code, answer
        if HELLO not in before:  # still usable: the handshake goes on
            await ws.send_str(HELLO)
            assert (await _receive(ws))["type"] == "hello"


async def test_message_over_the_size_limit_is_closed(target: Target, canary: Canary) -> None:
    """Whole messages over the limit, five back to back: the server closes with 1009 at the
    first, and the client sees the close frame although it is still sending the others (the
    server's close lingers, reading them; closing a socket with unread data makes TCP reset
    the connection, and an asyncio client whose write then fails drops the close frame
    unread: 1006)."""
    huge = json.dumps({"type": "app", "payload": "x" * (MAX_MESSAGE_BYTES + 1), "seq": 1})
    async with hostile_case(target, canary):
        for _ in range(3):
            async with websocket(target) as ws:
                await ws.send_str(HELLO)
                await _receive(ws)
                with contextlib.suppress(ConnectionError):
                    for _ in range(5):
                        await ws.send_str(huge)
                assert await _close_code(ws) == 1009


def _forged_tokens() -> dict[str, tuple[str, str]]:
    """Tokens a client might try, and the error each must get."""
    good = TokenAuth(secret=SECRET)
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    claims = json.dumps({"room": ATTACK_ROOM, "sub": "eve", "exp": time.time() + 600}).encode()
    body = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    return {
        "wrong-secret": (
            TokenAuth(secret="not-the-secret-" + "y" * 24).mint(room=ATTACK_ROOM, identity="e"),
            "auth_invalid",
        ),
        "alg-none": (f"{header}.{body}.", "auth_invalid"),
        "garbage": ("not.a.token", "auth_invalid"),
        "huge": ("a" * 8000, "bad_message"),  # over the 1024 characters of a token
        "expired": (
            TokenAuth(secret=SECRET, clock=lambda: time.time() - 7200).mint(
                room=ATTACK_ROOM, identity="e", ttl=60
            ),
            "auth_expired",
        ),
        "other-room": (good.mint(room="canary", identity="e"), "auth_wrong_room"),
        "missing": ("", "auth_required"),
    }


@pytest.mark.parametrize("kind", sorted(_forged_tokens()))
async def test_forged_and_expired_tokens_are_refused(
    target: Target, canary: Canary, kind: str
) -> None:
    token, code = _forged_tokens()[kind]
    join: dict[str, Any] = {"type": "join", "room": ATTACK_ROOM}
    if token:
        join["token"] = token
    async with hostile_case(target, canary), websocket(target) as ws:
        await ws.send_str(HELLO)
        await _receive(ws)
        for _ in range(3):
            await ws.send_str(json.dumps(join))
            answer = await _receive(ws)
            assert answer["type"] == "error", answer
            assert answer["code"] == code, answer


async def test_unknown_room_is_refused(target: Target, canary: Canary) -> None:
    token = target.token("nowhere", "eve")
    async with hostile_case(target, canary), websocket(target) as ws:
        await ws.send_str(HELLO)
        await _receive(ws)
        await ws.send_str(json.dumps({"type": "join", "room": "nowhere", "token": token}))
        answer = await _receive(ws)
        assert answer["code"] == "unknown_room", answer


async def test_a_full_room_refuses_more_peers(target: Target, canary: Canary) -> None:
    """More joins than the room holds, all at once: the first ``max_peers`` get ``welcome``,
    the others ``room_full``; the canary's room is not affected."""
    extra = 5

    async def join(index: int) -> tuple[str, aiohttp.ClientWebSocketResponse]:
        ws = await session.ws_connect(target.ws_url, autoping=True)
        await ws.send_str(HELLO)
        await _receive(ws)
        token = target.token(ATTACK_ROOM, f"crowd-{index}")
        await ws.send_str(json.dumps({"type": "join", "room": ATTACK_ROOM, "token": token}))
        answer = await _receive(ws)
        return answer.get("code", answer["type"]), ws

    connector = aiohttp.TCPConnector(ssl=target.main.tls or False, limit=0)
    async with hostile_case(target, canary), aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(*(join(i) for i in range(target.max_peers + extra)))
        try:
            answers = sorted(answer for answer, _ in results)
            assert answers.count("welcome") == target.max_peers
            assert answers.count("room_full") == extra
        finally:  # leave at once (a dropped peer would hold its place for the resume window)
            for _, ws in results:
                await ws.send_str(json.dumps({"type": "bye"}))
            await asyncio.gather(*(ws.close() for _, ws in results))
    if target.main.tls is not None:
        await asyncio.sleep(0.25)  # aiohttp's advice: let TLS transports close


async def test_message_flood_is_cut_at_the_rate_limit(target: Target, canary: Canary) -> None:
    """300 broadcasts at once (over the burst of 200) from a peer of another room: error
    ``rate_limited``, then close 1008 (the server's lingering close reads the rest of the
    flood, so TCP does not reset the connection before the client reads both)."""
    token = target.token(ATTACK_ROOM, "flooder")
    async with hostile_case(target, canary), websocket(target) as ws:
        await ws.send_str(HELLO)
        await _receive(ws)
        await ws.send_str(json.dumps({"type": "join", "room": ATTACK_ROOM, "token": token}))
        assert (await _receive(ws))["type"] == "welcome"
        with contextlib.suppress(ConnectionError):
            for seq in range(1, 301):
                await ws.send_str(json.dumps({"type": "app", "payload": seq, "seq": seq}))
                if ws.closed:
                    break
        errors = []
        close = None
        async with asyncio.timeout(10):
            while close is None:
                message = await ws.receive()
                if message.type == aiohttp.WSMsgType.TEXT:
                    answer = json.loads(message.data)
                    if answer["type"] == "error":
                        errors.append(answer["code"])
                else:
                    close = message
        assert errors == ["rate_limited"]
        assert close.type == aiohttp.WSMsgType.CLOSE, (close, ws.exception())
        assert close.data == 1008


async def test_connect_disconnect_churn(target: Target, canary: Canary) -> None:
    """300 WebSockets opened and dropped (half after ``hello``, half abruptly), 20 at once."""

    async def one(index: int) -> None:
        reader, writer = await raw_websocket(target)
        if index % 2:
            writer.write(frame(TEXT, HELLO.encode()))
            await writer.drain()
            await asyncio.wait_for(reader.read(100), 10)
        close_quietly(writer)

    async with hostile_case(target, canary):
        for batch in range(15):
            await asyncio.gather(*(one(batch * 20 + i) for i in range(20)))


async def test_silent_websockets_are_closed_at_the_handshake_timeout(
    target: Target, canary: Canary
) -> None:
    """50 upgraded WebSockets that never send ``hello``: all closed 4000 within the signaling
    handshake timeout (10 s)."""
    async with hostile_case(target, canary):
        sockets = [await raw_websocket(target) for _ in range(50)]
        start = time.monotonic()
        try:
            codes = await asyncio.gather(*(read_close_code(reader, 15) for reader, _ in sockets))
        finally:
            for _, writer in sockets:
                close_quietly(writer)
        assert set(codes) == {4000}
        assert time.monotonic() - start < 13
