"""End to end over real WebSockets on loopback: many clients, resume through cut connections,
limits, origins, server-side participants, mounting in an app."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from rtckit.errors import AuthError, ConnectionClosedError, RoomError
from rtckit.signaling import (
    Answer,
    AppMessage,
    CloseCode,
    Disconnected,
    Error,
    ErrorCode,
    MessageEvent,
    Offer,
    OpenAuth,
    PeerJoined,
    PeerJoinedEvent,
    PeerLeft,
    PeerLeftEvent,
    Reconnected,
    ReconnectPolicy,
    RoomConfig,
    ServerEvent,
    SignalingClient,
    SignalingConfig,
    SignalingServer,
    TokenAuth,
)
from rtckit.signaling.protocol import Hello, Join, Welcome, decode, encode
from rtckit.signaling.wsserver import client_script
from rtckit.testing.proxy import TcpProxy

SECRET = "0123456789abcdef-0123456789abcdef-test-secret"
FAST_RECONNECT = ReconnectPolicy(initial_delay=0.01, max_delay=0.2)


@attrs.frozen
class Running:
    server: SignalingServer
    url: str
    port: int


@pytest.fixture
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    config = SignalingConfig(**{"auth": OpenAuth(), **overrides})
    async with SignalingServer(config) as server:
        _host, port = await server.listen("127.0.0.1", 0)
        yield Running(server, server.url, port)


def config(**overrides: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("running", [overrides], indirect=True)


async def raw_join(
    url: str, session: aiohttp.ClientSession, room: str = "r", *, autoping: bool = True
) -> Any:
    ws = await session.ws_connect(url, autoping=autoping)
    await ws.send_str(encode(Hello()))
    await ws.send_str(encode(Join(room=room)))
    assert isinstance(decode((await ws.receive()).data), Hello)
    welcome = decode((await ws.receive()).data)
    assert isinstance(welcome, Welcome)
    return ws, welcome


async def next_of(client: SignalingClient, kind: type[Any]) -> Any:
    while True:
        event = await client.next_event()
        if isinstance(event, kind):
            return event


async def test_many_clients_join_broadcast_and_leave(running: Running) -> None:
    count = 30
    async with asyncio.timeout(60):
        clients = [await SignalingClient.connect(running.url, room="big") for _ in range(count)]
        try:
            ids = {c.peer_id for c in clients}
            assert len(ids) == count
            last = clients[-1]
            assert set(last.peers) == ids - {last.peer_id}
            for client in clients[:-1]:
                # everyone saw everyone who came later
                while len(client.peers) < count - 1:
                    await next_of(client, PeerJoined)
            await clients[0].send_app(None, "hello all")
            for client in clients[1:]:
                message = await next_of(client, AppMessage)
                assert (message.sender, message.payload) == (clients[0].peer_id, "hello all")
            # half of them leave
            leaving = clients[: count // 2]
            for client in leaving:
                await client.aclose()
            gone = {c.peer_id for c in leaving}
            for client in clients[count // 2 :]:
                seen: set[str] = set()
                while seen != gone:
                    seen.add((await next_of(client, PeerLeft)).peer_id)
                assert not gone & set(client.peers)
            assert len(running.server.hub.peers("big")) == count - count // 2
        finally:
            for client in clients:
                await client.aclose()


@config(max_messages_per_second=1e6, burst=1_000_000, max_pending=100_000)
async def test_resume_through_cut_connections_loses_and_duplicates_nothing(
    running: Running,
) -> None:
    total = 3000
    async with asyncio.timeout(90), TcpProxy("127.0.0.1", running.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws"
        a = await SignalingClient.connect(url, room="resume", reconnect=FAST_RECONNECT)
        b = await SignalingClient.connect(url, room="resume", reconnect=FAST_RECONNECT)
        try:
            await next_of(a, PeerJoined)
            received: dict[str, list[int]] = {a.peer_id: [], b.peer_id: []}
            reconnects: dict[str, int] = {a.peer_id: 0, b.peer_id: 0}
            errors: list[Error] = []

            async def pump(src: SignalingClient, dst: str) -> None:
                for i in range(total):
                    await src.send_app(dst, {"i": i, "pad": "x" * 300})
                    if i % 50 == 0:
                        await asyncio.sleep(0.001)

            async def collect(client: SignalingClient) -> None:
                mine = received[client.peer_id]
                while len(mine) < total:
                    event = await client.next_event()
                    if isinstance(event, AppMessage):
                        mine.append(event.payload["i"])
                    elif isinstance(event, Reconnected):
                        assert event.resumed
                        reconnects[client.peer_id] += 1
                    elif isinstance(event, Error):
                        errors.append(event)

            async def chaos() -> None:
                rng = random.Random(7)
                for _ in range(6):
                    await asyncio.sleep(rng.uniform(0.05, 0.3))
                    proxy.cut()

            await asyncio.gather(
                pump(a, b.peer_id), pump(b, a.peer_id), collect(a), collect(b), chaos()
            )
            assert errors == []
            assert received[a.peer_id] == list(range(total))
            assert received[b.peer_id] == list(range(total))
            assert proxy.cuts == 6
            assert sum(reconnects.values()) >= 2  # the cuts really hit connections
            assert a.peer_id in b.peers
            assert b.peer_id in a.peers
        finally:
            await a.aclose()
            await b.aclose()


@config(resume_window=0.5, heartbeat_interval=0.2, dead_peer_timeout=0.6)
async def test_session_expiry_reports_undeliverable_and_rejoins(running: Running) -> None:
    async with asyncio.timeout(30), TcpProxy("127.0.0.1", running.port) as proxy:
        a = await SignalingClient.connect(running.url, room="exp")
        b = await SignalingClient.connect(
            f"ws://127.0.0.1:{proxy.port}/ws", room="exp", reconnect=FAST_RECONNECT
        )
        try:
            await next_of(a, PeerJoined)
            old_b = b.peer_id
            proxy.block()
            proxy.cut()
            assert isinstance(await b.next_event(), Disconnected)
            seq = await a.send_offer(old_b, "v=0")  # queued for b, never acknowledged
            seen: list[Any] = []
            while not seen or not isinstance(seen[-1], PeerLeft):
                seen.append(await a.next_event())
            error, left = seen[-2:]  # the loss report comes first, then peer-left
            assert isinstance(error, Error)
            assert (error.code, error.ref) == (ErrorCode.UNDELIVERABLE, seq)
            assert (left.peer_id, left.reason) == (old_b, "timeout")
            own_seq = await b.send_app(a.peer_id, "sent while cut off")
            proxy.unblock()
            # b cannot resume: it joins again as a new peer and reports its own loss
            reported = await next_of(b, Error)
            assert (reported.code, reported.ref) == (ErrorCode.UNDELIVERABLE, own_seq)
            back = await next_of(b, Reconnected)
            assert not back.resumed
            assert back.welcome is not None
            assert b.peer_id != old_b
            assert a.peer_id in b.peers
            joined = await next_of(a, PeerJoined)
            assert joined.peer.id == b.peer_id
        finally:
            await a.aclose()
            await b.aclose()


@config(max_message_size=10_000)
async def test_oversize_message_closes_1009(running: Running) -> None:
    async with asyncio.timeout(20), aiohttp.ClientSession() as session:
        ws, _ = await raw_join(running.url, session)
        await ws.send_str('{"type":"app","payload":"' + "x" * 20_000 + '"}')
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == CloseCode.MESSAGE_TOO_BIG
        # the server still serves others
        async with SignalingClient.connect(running.url, room="r") as client:
            assert client.peer_id


@config(max_messages_per_second=20, burst=30)
async def test_rate_limit_error_then_close_1008(running: Running) -> None:
    async with asyncio.timeout(20), aiohttp.ClientSession() as session:
        ws, _ = await raw_join(running.url, session)
        for _ in range(40):
            await ws.send_str('{"type":"ping"}')
        codes: list[str] = []
        while True:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            decoded = decode(message.data)
            if isinstance(decoded, Error):
                codes.append(decoded.code)
        assert codes == [ErrorCode.RATE_LIMITED]
        assert ws.close_code == CloseCode.POLICY_VIOLATION


@config(max_messages_per_second=20, burst=30)
async def test_python_client_stops_after_rate_limit_close(running: Running) -> None:
    async with asyncio.timeout(20):
        client = await SignalingClient.connect(running.url, room="r")
        try:
            for _ in range(60):
                try:
                    await client.send_app(None, "spam")
                except ConnectionClosedError:
                    break
            failure = None
            while failure is None:
                try:
                    await client.next_event()
                except ConnectionClosedError as exc:
                    failure = exc
            assert failure.code == CloseCode.POLICY_VIOLATION
        finally:
            await client.aclose()


@config(max_peers_per_room=2, rooms=[RoomConfig(name="solo", max_peers=1)])
async def test_room_full(running: Running) -> None:
    async with asyncio.timeout(20):
        async with (
            SignalingClient.connect(running.url, room="r"),
            SignalingClient.connect(running.url, room="r"),
        ):
            with pytest.raises(RoomError) as info:
                await SignalingClient.connect(running.url, room="r")
            assert info.value.code == ErrorCode.ROOM_FULL
        async with SignalingClient.connect(running.url, room="solo"):
            with pytest.raises(RoomError):
                await SignalingClient.connect(running.url, room="solo")


@config(handshake_timeout=0.5, tick_interval=0.1)
async def test_handshake_timeout(running: Running) -> None:
    async with asyncio.timeout(20), aiohttp.ClientSession() as session:
        ws = await session.ws_connect(running.url)
        await ws.send_str(encode(Hello()))
        assert isinstance(decode((await ws.receive()).data), Hello)
        message = await ws.receive()  # nothing more sent: the server gives up
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == CloseCode.HANDSHAKE_TIMEOUT


@config(heartbeat_interval=0.3, dead_peer_timeout=1.0, resume_window=1.0, tick_interval=0.1)
async def test_vanished_peer_is_removed_by_heartbeat(running: Running) -> None:
    async with (
        asyncio.timeout(20),
        aiohttp.ClientSession() as session,
        SignalingClient.connect(running.url, room="r") as watcher,
    ):
        # a peer that joins then never answers pings (its socket stays open)
        ws, welcome = await raw_join(running.url, session, autoping=False)
        joined = await next_of(watcher, PeerJoined)
        assert joined.peer.id == welcome.peer_id
        started = asyncio.get_running_loop().time()
        left = await next_of(watcher, PeerLeft)
        elapsed = asyncio.get_running_loop().time() - started
        assert (left.peer_id, left.reason) == (welcome.peer_id, "timeout")
        assert elapsed < 15
        pings = 0
        while True:  # the server's heartbeats are WebSocket pings
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.PING:
                break
            pings += 1
        assert pings >= 1
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert message.data == CloseCode.HEARTBEAT_TIMEOUT
        await ws.close()


@config(heartbeat_interval=0.2, dead_peer_timeout=0.6, tick_interval=0.05)
async def test_websocket_pongs_keep_a_peer_alive(running: Running) -> None:
    # A client that answers the server's heartbeats only at the WebSocket level (its stack
    # answers pings; it ignores protocol messages) stays in the room.
    async with (
        asyncio.timeout(20),
        aiohttp.ClientSession() as session,
        SignalingClient.connect(running.url, room="r") as watcher,
    ):
        ws, welcome = await raw_join(running.url, session)
        frames: list[aiohttp.WSMsgType] = []

        async def read() -> None:
            while not ws.closed:  # receive() answers pings (autoping)
                frames.append((await ws.receive()).type)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            await asyncio.sleep(2.0)  # ten heartbeat periods, three dead-peer timeouts
            assert welcome.peer_id in watcher.peers
            assert not ws.closed
            assert aiohttp.WSMsgType.CLOSE not in frames
        finally:
            reader.cancel()
            await ws.close()


async def _raw_websocket_join(port: int) -> tuple[asyncio.StreamWriter, str]:
    """Join room ``r`` over a hand-made WebSocket; return the writer and the peer id.

    The caller then stops reading: its socket neither answers pings nor takes frames.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    for text in (encode(Hello()), encode(Join(room="r"))):
        data = text.encode()
        writer.write(bytes([0x81, 0x80 | len(data)]) + b"\0\0\0\0" + data)  # zero mask
    frames = b""
    while b'"welcome"' not in frames or b'"peer_id":"' not in frames.split(b'"welcome"')[1]:
        frames += await reader.read(4096)
    after = frames.split(b'"welcome"')[1].split(b'"peer_id":"')[1]
    return writer, after.split(b'"')[0].decode()


@config(heartbeat_interval=0.3, dead_peer_timeout=1.0, resume_window=1.0, tick_interval=0.1)
async def test_peer_whose_socket_stops_reading_is_reported_left(running: Running) -> None:
    config = running.server.config
    # the defaults, by arithmetic: silence for dead_peer_timeout closes the connection, the
    # session then waits resume_window, both noticed at the next tick
    defaults = SignalingConfig(auth=OpenAuth())
    assert defaults.dead_peer_timeout + defaults.resume_window + defaults.tick_interval <= 15
    async with (
        asyncio.timeout(20),
        SignalingClient.connect(running.url, room="r") as watcher,
    ):
        writer, peer_id = await _raw_websocket_join(running.port)
        try:
            joined = await next_of(watcher, PeerJoined)
            assert joined.peer.id == peer_id
            started = asyncio.get_running_loop().time()
            left = await next_of(watcher, PeerLeft)
            elapsed = asyncio.get_running_loop().time() - started
            assert (left.peer_id, left.reason) == (peer_id, "timeout")
            budget = config.dead_peer_timeout + config.resume_window + config.tick_interval
            assert budget - 0.2 <= elapsed <= budget + 1.0
        finally:
            writer.close()


async def test_pings_then_reset_log_no_traceback(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    # A client that pings and resets at once: the server's pong finds the transport closing.
    # (With aiohttp's autoping the error escaped the handler: one traceback per connection.)
    async with asyncio.timeout(20):
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"\x89\x80\0\0\0\0" * 2000)  # masked empty pings
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            writer.transport.abort()  # RST
        await asyncio.sleep(0.5)
        async with SignalingClient.connect(running.url, room="r") as client:
            assert client.peer_id  # the server still serves
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_python_client_answers_heartbeats(running: Running) -> None:
    # defaults are a 2 s heartbeat; use a short one through the config
    config = attrs.evolve(
        running.server.config, heartbeat_interval=0.2, dead_peer_timeout=0.7, tick_interval=0.1
    )
    async with asyncio.timeout(20), SignalingServer(config) as server:
        await server.listen("127.0.0.1", 0)
        async with (
            SignalingClient.connect(server.url, room="r") as a,
            SignalingClient.connect(server.url, room="r") as b,
        ):
            await asyncio.sleep(2.0)  # ten heartbeat periods
            await b.send_app(a.peer_id, "still here")
            message = await next_of(a, AppMessage)
            assert message.payload == "still here"
            assert b.peer_id in a.peers
            assert a.connected
            assert b.connected


@pytest.mark.parametrize(
    ("allowed", "origin", "ok"),
    [
        ((), None, True),
        ((), "http://127.0.0.1:{port}", True),
        ((), "http://evil.example", False),
        (("https://app.example",), "https://app.example", True),
        (("https://app.example",), "http://127.0.0.1:{port}", False),
        (("*",), "http://anything.example", True),
    ],
)
async def test_origin_allow_list(allowed: tuple[str, ...], origin: str | None, ok: bool) -> None:
    config = SignalingConfig(auth=OpenAuth(), allowed_origins=allowed)
    async with asyncio.timeout(20), SignalingServer(config) as server:
        _, port = await server.listen("127.0.0.1", 0)
        headers = {} if origin is None else {"Origin": origin.format(port=port)}
        if ok:
            async with SignalingClient.connect(server.url, room="r", headers=headers) as c:
                assert c.peer_id
        else:
            with pytest.raises(ConnectionClosedError, match="403"):
                await SignalingClient.connect(server.url, room="r", headers=headers)


async def test_token_auth_over_websocket() -> None:
    auth = TokenAuth(secret=SECRET)
    async with asyncio.timeout(20), SignalingServer(SignalingConfig(auth=auth)) as server:
        await server.listen("127.0.0.1", 0)
        with pytest.raises(AuthError) as info:
            await SignalingClient.connect(server.url, room="a")
        assert info.value.code == ErrorCode.AUTH_REQUIRED
        with pytest.raises(AuthError) as info:
            await SignalingClient.connect(
                server.url, room="b", token=auth.mint(room="a", identity="x")
            )
        assert info.value.code == ErrorCode.AUTH_WRONG_ROOM
        token = auth.mint(room="a", identity="ada", permissions=["subscribe"])
        async with SignalingClient.connect(server.url, room="a", token=token) as client:
            assert client.identity == "ada"
            assert client.welcome.permissions == ("subscribe",)


async def test_server_side_participant_and_events(running: Running) -> None:
    events: list[ServerEvent] = []
    remove = running.server.add_listener(events.append)
    async with asyncio.timeout(20):
        sfu = await SignalingClient.connect(
            running.server.local_transport(), room="conf", peer_id="sfu"
        )
        try:
            async with SignalingClient.connect(running.url, room="conf") as browser:
                assert "sfu" in browser.peers
                await browser.send_offer("sfu", "v=0 offer")
                offer = await next_of(sfu, Offer)
                assert offer.sender == browser.peer_id
                await sfu.send_answer(browser.peer_id, "v=0 answer")
                answer = await next_of(browser, Answer)
                assert answer.sender == "sfu"
                browser_id = browser.peer_id
        finally:
            await sfu.aclose()
    remove()
    kinds = [type(e) for e in events]
    assert kinds.count(PeerJoinedEvent) == 2
    assert kinds.count(PeerLeftEvent) == 2
    relayed = [e.message.type for e in events if isinstance(e, MessageEvent)]
    assert relayed == ["offer", "answer"]
    assert any(isinstance(e, PeerLeftEvent) and e.peer_id == browser_id for e in events)


async def test_mount_in_an_application_and_serve_client_script() -> None:
    server = SignalingServer(SignalingConfig(auth=OpenAuth()))
    app = web.Application()

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text="my app")

    app.router.add_get("/", index)
    server.add_routes(app, path="/signal")
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with asyncio.timeout(20), aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/signal/rtckit.js") as response:
                assert response.status == 200
                assert response.content_type == "text/javascript"
                assert await response.text() == client_script()
            async with SignalingClient.connect(f"ws://127.0.0.1:{port}/signal", room="r") as client:
                assert client.peer_id
    finally:
        await runner.cleanup()
    assert server.hub.closed


async def test_server_close_makes_clients_reconnect_then_give_up(running: Running) -> None:
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=3)
    async with asyncio.timeout(20):
        client = await SignalingClient.connect(running.url, room="r", reconnect=policy)
        try:
            await running.server.aclose()
            event = await client.next_event()
            assert isinstance(event, Disconnected)
            assert event.code == CloseCode.GOING_AWAY
            with pytest.raises(ConnectionClosedError, match="gave up"):
                await client.next_event()
        finally:
            await client.aclose()


async def test_binary_frames_are_refused(running: Running) -> None:
    async with asyncio.timeout(20), aiohttp.ClientSession() as session:
        ws, _ = await raw_join(running.url, session)
        await ws.send_bytes(b'{"type":"ping"}')
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == CloseCode.PROTOCOL_ERROR


async def test_bad_input_gets_errors_and_others_keep_being_served(running: Running) -> None:
    async with (
        asyncio.timeout(20),
        aiohttp.ClientSession() as session,
        SignalingClient.connect(running.url, room="r") as a,
        SignalingClient.connect(running.url, room="r") as b,
    ):
        ws, _ = await raw_join(running.url, session)
        frames = [
            "not json",
            '{"type":"app","payload":"\\ud800 lone surrogate","seq":1}',
            "[" * 1000,
            '{"type":"offer","to":1,"sdp":"x","seq":2}',
            '{"type":"whatever"}',
            '{"type":"join","room":"r"}',
            '{"type":"offer","to":"nobody","sdp":"x","seq":3}',
        ]
        for frame in frames:
            await ws.send_str(frame)
        codes: list[str] = []
        while len(codes) < len(frames) - 1:
            decoded = decode((await ws.receive()).data)
            if isinstance(decoded, Error):
                codes.append(decoded.code)
        assert codes == [
            ErrorCode.BAD_JSON,
            ErrorCode.TOO_DEEP,
            ErrorCode.BAD_MESSAGE,
            ErrorCode.UNKNOWN_TYPE,
            ErrorCode.ALREADY_JOINED,
            ErrorCode.UNKNOWN_PEER,
        ]
        surrogate = await next_of(b, AppMessage)  # relayed intact, as JSON escapes
        assert surrogate.payload == "\ud800 lone surrogate"
        await a.send_app(b.peer_id, "fine")
        assert (await next_of(b, AppMessage)).payload == "fine"
        await ws.close()
