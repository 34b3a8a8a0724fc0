"""rtckit.js in real headless Chromium: two pages and a Python client in one room, and the
modules of rtckit.js loaded from a standalone signaling server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from jsmodules import ENTRY_EXPORTS
from rtckit.signaling import (
    Answer,
    AppMessage,
    OpenAuth,
    PeerJoined,
    SignalingClient,
    SignalingConfig,
    SignalingServer,
    TokenAuth,
)
from rtckit.signaling.browser import client_modules
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium

SECRET = "0123456789abcdef-0123456789abcdef-test-secret"

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>rtckit signaling test</title>
<script type="module">
  import { RtcKitSignaling } from "/ws/rtckit.js";
  window.RtcKitSignaling = RtcKitSignaling;
  window.log = [];
  window.join = async (room, token) => {
    const sig = await RtcKitSignaling.connect(`ws://${location.host}/ws`, {
      room, token, metadata: { agent: "browser" }, reconnect: { initialDelay: 20 },
    });
    sig.addEventListener("message", (event) => window.log.push(event.detail));
    for (const name of ["disconnected", "reconnected"]) {
      sig.addEventListener(name, (event) => window.log.push({ type: name, ...event.detail }));
    }
    window.sig = sig;
    return sig.peerId;
  };
  window.ready = true;
</script>
"""


async def _serve(config: SignalingConfig) -> AsyncIterator[tuple[str, SignalingServer]]:
    server = SignalingServer(config)
    app = web.Application()

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    server.add_routes(app, path="/ws")
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}", server
    finally:
        await runner.cleanup()


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, SignalingServer]]:
    async for value in _serve(SignalingConfig(auth=OpenAuth())):
        yield value


async def _wait_log(page: Any, predicate_js: str, timeout_ms: int = 15_000) -> Any:
    handle = await page.wait_for_function(
        f"() => window.log.find((m) => {predicate_js})", timeout=timeout_ms
    )
    return await handle.json_value()


async def test_two_pages_and_a_python_client(served: tuple[str, SignalingServer]) -> None:
    require_executable("chromium", hint="apt-get install chromium")
    host, _server = served
    async with asyncio.timeout(90), launch_chromium() as browser:
        pages = [await browser.new_page() for _ in range(2)]
        for page in pages:
            await page.goto(f"http://{host}/")
            await page.wait_for_function("() => window.ready === true")
        first = await pages[0].evaluate("() => window.join('room1')")
        second = await pages[1].evaluate("() => window.join('room1')")
        joined = await _wait_log(pages[0], f"m.type === 'peer-joined' && m.peer.id === {second!r}")
        assert joined["peer"]["metadata"] == {"agent": "browser"}
        assert await pages[1].evaluate("() => [...window.sig.peers.keys()]") == [first]
        assert await pages[1].evaluate("() => window.sig.topology") == "mesh"

        # page -> page, all relayed kinds
        await pages[0].evaluate(
            """(to) => {
                window.sig.sendOffer(to, "v=0 offer");
                window.sig.sendCandidate(to, {candidate: "candidate:1 1 udp 1 10.0.0.1 9 typ host",
                                              sdpMid: "0", sdpMLineIndex: 0});
                window.sig.sendEndOfCandidates(to);
                window.sig.sendApp(to, {n: 1, text: "héllo"});
            }""",
            second,
        )
        offer = await _wait_log(pages[1], "m.type === 'offer'")
        assert (offer["from"], offer["sdp"]) == (first, "v=0 offer")
        candidate = await _wait_log(pages[1], "m.type === 'candidate'")
        assert (candidate["sdp_mid"], candidate["sdp_mline_index"]) == ("0", 0)
        await _wait_log(pages[1], "m.type === 'end-of-candidates'")
        app = await _wait_log(pages[1], "m.type === 'app'")
        assert app["payload"] == {"n": 1, "text": "héllo"}

        # Python client joins the same room
        async with SignalingClient.connect(f"ws://{host}/ws", room="room1") as python:
            assert set(python.peers) == {first, second}
            for page in pages:
                await _wait_log(
                    page, f"m.type === 'peer-joined' && m.peer.id === {python.peer_id!r}"
                )
            await python.send_app(None, "from python")
            for page in pages:
                got = await _wait_log(page, "m.type === 'app' && m.payload === 'from python'")
                assert got["from"] == python.peer_id
            await pages[1].evaluate(
                "(to) => window.sig.sendAnswer(to, 'v=0 answer from browser')", python.peer_id
            )
            while True:
                event = await python.next_event()
                if not isinstance(event, AppMessage | PeerJoined):
                    break
            assert isinstance(event, Answer)
            assert event.sender == second
            python_id = python.peer_id
        left = await _wait_log(pages[0], f"m.type === 'peer-left' && m.peer_id === {python_id!r}")
        assert left["reason"] == "bye"

        # a browser connection dropped under the page resumes without loss
        await pages[1].evaluate("() => window.sig._ws.close()")
        await pages[0].evaluate(
            "(to) => { for (let i = 0; i < 200; i++) window.sig.sendApp(to, {i}); }", second
        )
        await _wait_log(pages[1], "m.type === 'reconnected' && m.resumed === true")
        await pages[1].wait_for_function(
            "() => window.log.filter((m) => m.type === 'app' && m.payload.i !== undefined)"
            ".length >= 200",
            timeout=15_000,
        )
        numbers = await pages[1].evaluate(
            "() => window.log.filter((m) => m.type === 'app' && m.payload.i !== undefined)"
            ".map((m) => m.payload.i)"
        )
        assert numbers == list(range(200))
        assert await pages[1].evaluate("() => window.sig.peerId") == second

        # errors reach the page with a ref to the message's seq
        seq = await pages[0].evaluate("() => window.sig.sendApp('nobody', 1)")
        error = await _wait_log(pages[0], "m.type === 'error'")
        assert (error["code"], error["ref"]) == ("unknown_peer", seq)

        await pages[0].evaluate("() => window.sig.close()")
        await _wait_log(pages[1], f"m.type === 'peer-left' && m.peer_id === {first!r}")


async def test_browser_join_refused_with_code() -> None:
    require_executable("chromium", hint="apt-get install chromium")
    auth = TokenAuth(secret=SECRET)
    async for host, _server in _serve(SignalingConfig(auth=auth)):
        async with asyncio.timeout(60), launch_chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"http://{host}/")
            await page.wait_for_function("() => window.ready === true")
            code = await page.evaluate(
                "() => window.join('r', 'not-a-token').then(() => 'joined', (e) => e.code)"
            )
            assert code == "auth_invalid"
            token = auth.mint(room="r", identity="ada")
            assert await page.evaluate("(t) => window.join('r', t)", token)
            assert await page.evaluate("() => window.sig.identity") == "ada"


async def test_browser_stops_when_resume_finds_its_token_expired() -> None:
    """The server checks the token again on resume; retrying cannot help, so the page stops."""
    require_executable("chromium", hint="apt-get install chromium")
    clock = [1_000_000.0]
    auth = TokenAuth(secret=SECRET, clock=lambda: clock[0])
    async for host, _server in _serve(SignalingConfig(auth=auth, resume_window=30.0)):
        async with asyncio.timeout(60), launch_chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"http://{host}/")
            await page.wait_for_function("() => window.ready === true")
            token = auth.mint(room="r", identity="ada", ttl=60)
            assert await page.evaluate("(t) => window.join('r', t)", token)
            await page.evaluate(
                """() => window.sig.addEventListener("closed", (event) =>
                    window.log.push({type: "closed", code: event.detail.error?.code}))"""
            )
            clock[0] += 61
            await page.evaluate("() => window.sig._ws.close()")
            closed = await _wait_log(page, "m.type === 'closed'")
            assert closed["code"] == "auth_expired"


JOIN_WITH_MODULES = """async (entry) => {
  const rtc = await import(entry);
  const signaling = await rtc.connectSignaling(`ws://${location.host}/ws`, { room: "modules" });
  const room = rtc.joinRoom(signaling, { iceServers: [] });
  window.got = [];
  room.addEventListener("message", ({ detail }) => window.got.push(detail));
  window.room = room;
  return { peerId: signaling.peerId, exports: Object.keys(rtc).sort() };
}"""


def _standalone(transport: str, config: SignalingConfig) -> Any:
    if transport == "picows":
        pytest.importorskip("picows", reason="picows is not installed")
        from rtckit.signaling.fastws import PicowsSignalingServer

        return PicowsSignalingServer(config)
    return SignalingServer(config)


@pytest.mark.parametrize("transport", ["aiohttp", "picows"])
async def test_standalone_server_serves_every_module(transport: str) -> None:
    """What ``rtckit signaling`` runs (a standalone server, on either WebSocket layer) serves
    the entry and every module it imports: two pages import the entry from it, meet in a mesh
    room with joinRoom and exchange a message on the room's data channel (signaling, peer and
    room modules at work).
    """
    require_executable("chromium", hint="apt-get install chromium")
    async with (
        asyncio.timeout(90),
        _standalone(transport, SignalingConfig(auth=OpenAuth())) as server,
        launch_chromium() as browser,
    ):
        host, port = await server.listen("127.0.0.1", 0)
        entry = f"http://{host}:{port}/ws/rtckit.js"
        loaded: list[tuple[str, int]] = []
        pages = [await browser.new_page() for _ in range(2)]
        joined = []
        for page in pages:
            page.on("response", lambda r: loaded.append((r.url, r.status)))
            await page.goto(entry)  # the page's origin is the server's: no CORS needed
            joined.append(await page.evaluate(JOIN_WITH_MODULES, entry))
        for result in joined:
            assert result["exports"] == sorted(ENTRY_EXPORTS)
        base = f"http://{host}:{port}/ws/"
        assert {url for url, _status in loaded} == {base + name for name in client_modules()}
        assert {status for _url, status in loaded} == {200}
        first = joined[0]["peerId"]
        await pages[0].evaluate("(text) => window.room.send(text)", f"hello from {first}")
        await pages[1].wait_for_function("() => window.got.length > 0", timeout=30_000)
        got = await pages[1].evaluate("() => window.got")
        assert got == [{"participantId": first, "data": f"hello from {first}"}]
        for page in pages:
            await page.evaluate("() => window.room.close()")


async def test_idle_browser_stays_through_websocket_heartbeats() -> None:
    """The server's heartbeats are WebSocket pings, which Chromium answers by itself; the page
    itself never sees them and pings when the server is silent. An idle page stays joined
    and connected through many dead-peer timeouts."""
    require_executable("chromium", hint="apt-get install chromium")
    config = SignalingConfig(
        auth=OpenAuth(),
        heartbeat_interval=0.3,
        dead_peer_timeout=1.0,
        resume_window=1.0,
        tick_interval=0.1,
    )
    async for host, _server in _serve(config):
        async with (
            asyncio.timeout(60),
            launch_chromium() as browser,
            SignalingClient.connect(f"ws://{host}/ws", room="idle") as watcher,
        ):
            page = await browser.new_page()
            await page.goto(f"http://{host}/")
            await page.wait_for_function("() => window.ready === true")
            peer_id = await page.evaluate("() => window.join('idle')")
            await asyncio.sleep(5.0)  # five dead-peer timeouts, idle
            assert peer_id in watcher.peers
            assert await page.evaluate("() => window.sig.connected")
            log = await page.evaluate("() => window.log")
            assert [m for m in log if m["type"] in ("disconnected", "peer-left")] == []
