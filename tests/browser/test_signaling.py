"""rtckit.js in real headless Chromium: two pages and a Python client in one room, and the
modules of rtckit.js loaded from a standalone signaling server; on both WebSocket layers (the
aiohttp server mounted in an app, the picows server standalone), and over ``wss://``."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import attrs
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from jsmodules import ENTRY_EXPORTS
from rtckit.backplane.memory import MemoryBackplane, MemoryBroker
from rtckit.certs import CertificateSpec, KeyType, client_ssl_context, create_self_signed
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

#: Run in a page whose origin is the signaling server's (it opened ``/ws/rtckit.js``): what
#: the tests call on the page. The WebSocket goes to the page's own host, over ``wss://``
#: when the page came over HTTPS.
SETUP = """async () => {
  const { RtcKitSignaling } = await import("/ws/rtckit.js");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  window.RtcKitSignaling = RtcKitSignaling;
  window.log = [];
  window.join = async (room, token) => {
    const sig = await RtcKitSignaling.connect(url, {
      room, token, metadata: { agent: "browser" }, reconnect: { initialDelay: 20 },
    });
    sig.addEventListener("message", (event) => window.log.push(event.detail));
    for (const name of ["disconnected", "reconnected"]) {
      sig.addEventListener(name, (event) => window.log.push({ type: name, ...event.detail }));
    }
    window.sig = sig;
    return sig.peerId;
  };
}"""


@attrs.frozen(kw_only=True)
class Served:
    """A signaling server the browser reaches at *origin*, its WebSocket at *ws_url*."""

    origin: str
    ws_url: str
    #: The TLS context a Python client needs (``wss://``), else ``None``.
    client_ssl: ssl.SSLContext | None
    #: The Chromium switches that make it trust the server's certificate (``wss://``).
    chromium_args: tuple[str, ...]

    async def open_page(self, browser: Any) -> Any:
        """A page at the server's origin, with :data:`SETUP` run in it."""
        page = await browser.new_page()
        await page.goto(f"{self.origin}/ws/rtckit.js")
        await page.evaluate(SETUP)
        return page


ServerFactory = Callable[[SignalingConfig], AbstractAsyncContextManager[Served]]


def _tls(scheme: str) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None, tuple[str, ...]]:
    """The server and client contexts of *scheme*, and the switch that makes Chromium trust
    the certificate (its key's SPKI hash: nothing else is trusted)."""
    if scheme == "ws":
        return None, None, ()
    own = create_self_signed(CertificateSpec(hosts=["127.0.0.1"], key_type=KeyType.EC))
    spki = own.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    switch = f"--ignore-certificate-errors-spki-list={pin}"
    return own.server_ssl_context(), client_ssl_context(own), (switch,)


@asynccontextmanager
async def _aiohttp_app(config: SignalingConfig, scheme: str) -> AsyncIterator[Served]:
    """The aiohttp server mounted in an app (as ``rtckit serve`` mounts it)."""
    server_ssl, client_ssl, switches = _tls(scheme)
    server = SignalingServer(config)
    app = web.Application()
    server.add_routes(app, path="/ws")
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    host = f"127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield Served(
            origin=f"{'https' if server_ssl else 'http'}://{host}",
            ws_url=f"{scheme}://{host}/ws",
            client_ssl=client_ssl,
            chromium_args=switches,
        )
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _picows(config: SignalingConfig, scheme: str) -> AsyncIterator[Served]:
    """The standalone server on picows (``rtckit signaling --transport picows``)."""
    pytest.importorskip("picows", reason="picows is not installed")
    from rtckit.signaling.fastws import PicowsSignalingServer

    server_ssl, client_ssl, switches = _tls(scheme)
    async with PicowsSignalingServer(config) as server:
        host, port = await server.listen("127.0.0.1", 0, ssl=server_ssl)
        yield Served(
            origin=f"{'https' if server_ssl else 'http'}://{host}:{port}",
            ws_url=server.url,
            client_ssl=client_ssl,
            chromium_args=switches,
        )


#: Server factories by name: each WebSocket layer, over ``ws://`` and ``wss://``.
FACTORIES: dict[str, ServerFactory] = {
    "aiohttp": functools.partial(_aiohttp_app, scheme="ws"),
    "picows": functools.partial(_picows, scheme="ws"),
    "aiohttp-wss": functools.partial(_aiohttp_app, scheme="wss"),
    "picows-wss": functools.partial(_picows, scheme="wss"),
}


@pytest.fixture(params=["aiohttp", "picows"])
def serve(request: pytest.FixtureRequest) -> ServerFactory:
    """Start a signaling server on a WebSocket layer (tests name the ``wss://`` ones)."""
    return FACTORIES[request.param]


async def _wait_log(page: Any, predicate_js: str, timeout_ms: int = 15_000) -> Any:
    handle = await page.wait_for_function(
        f"() => window.log.find((m) => {predicate_js})", timeout=timeout_ms
    )
    return await handle.json_value()


@pytest.mark.parametrize("serve", sorted(FACTORIES), indirect=True)
async def test_two_pages_and_a_python_client(serve: ServerFactory) -> None:
    """Over both WebSocket layers, and over ``wss://`` with a certificate Chromium and the
    Python client trust."""
    require_executable("chromium", hint="apt-get install chromium")
    async with (
        asyncio.timeout(90),
        serve(SignalingConfig(auth=OpenAuth())) as served,
        launch_chromium(extra_args=served.chromium_args) as browser,
    ):
        pages = [await served.open_page(browser) for _ in range(2)]
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
        async with SignalingClient.connect(
            served.ws_url, room="room1", ssl=served.client_ssl
        ) as python:
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


async def test_browser_pages_on_two_nodes_and_a_backplane_outage() -> None:
    """Two pages connected to two nodes of a cluster share a room; during a backplane outage
    the page whose room lives on the other node is cut (1001), its resumes are answered
    ``unavailable`` and retried, and it resumes once the backplane is back."""
    require_executable("chromium", hint="apt-get install chromium")
    broker = MemoryBroker()
    config = SignalingConfig(auth=OpenAuth())
    async with (
        asyncio.timeout(90),
        SignalingServer(config, MemoryBackplane(broker, "a")) as node_a,
        SignalingServer(config, MemoryBackplane(broker, "b")) as node_b,
        launch_chromium() as browser,
    ):
        pages = []
        for node in (node_a, node_b):
            host, port = await node.listen("127.0.0.1", 0)
            page = await browser.new_page()
            await page.goto(f"http://{host}:{port}/ws/rtckit.js")
            await page.evaluate(SETUP)
            pages.append(page)
        first = await pages[0].evaluate("() => window.join('nodes')")  # homed on a
        second = await pages[1].evaluate("() => window.join('nodes')")  # through b
        await _wait_log(pages[0], f"m.type === 'peer-joined' && m.peer.id === {second!r}")
        await pages[1].evaluate("(to) => window.sig.sendOffer(to, 'v=0 across')", first)
        offer = await _wait_log(pages[0], "m.type === 'offer'")
        assert (offer["from"], offer["sdp"]) == (second, "v=0 across")

        broker.set_up(False)
        cut = await _wait_log(pages[1], "m.type === 'disconnected'")
        assert cut["code"] == 1001
        await asyncio.sleep(0.5)  # its resumes are refused (unavailable) meanwhile
        broker.set_up(True)
        await _wait_log(pages[1], "m.type === 'reconnected' && m.resumed === true")
        await pages[0].evaluate("(to) => window.sig.sendApp(to, 'after')", second)
        await _wait_log(pages[1], "m.type === 'app' && m.payload === 'after'")


async def test_browser_join_refused_with_code(serve: ServerFactory) -> None:
    require_executable("chromium", hint="apt-get install chromium")
    auth = TokenAuth(secret=SECRET)
    async with (
        asyncio.timeout(60),
        serve(SignalingConfig(auth=auth)) as served,
        launch_chromium() as browser,
    ):
        page = await served.open_page(browser)
        code = await page.evaluate(
            "() => window.join('r', 'not-a-token').then(() => 'joined', (e) => e.code)"
        )
        assert code == "auth_invalid"
        token = auth.mint(room="r", identity="ada")
        assert await page.evaluate("(t) => window.join('r', t)", token)
        assert await page.evaluate("() => window.sig.identity") == "ada"


async def test_browser_stops_when_resume_finds_its_token_expired(serve: ServerFactory) -> None:
    """The server checks the token again on resume; retrying cannot help, so the page stops."""
    require_executable("chromium", hint="apt-get install chromium")
    clock = [1_000_000.0]
    auth = TokenAuth(secret=SECRET, clock=lambda: clock[0])
    async with (
        asyncio.timeout(60),
        serve(SignalingConfig(auth=auth, resume_window=30.0)) as served,
        launch_chromium() as browser,
    ):
        page = await served.open_page(browser)
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


async def test_idle_browser_stays_through_websocket_heartbeats(serve: ServerFactory) -> None:
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
    async with (
        asyncio.timeout(60),
        serve(config) as served,
        launch_chromium() as browser,
        SignalingClient.connect(served.ws_url, room="idle") as watcher,
    ):
        page = await served.open_page(browser)
        peer_id = await page.evaluate("() => window.join('idle')")
        await asyncio.sleep(5.0)  # five dead-peer timeouts, idle
        assert peer_id in watcher.peers
        assert await page.evaluate("() => window.sig.connected")
        log = await page.evaluate("() => window.log")
        assert [m for m in log if m["type"] in ("disconnected", "peer-left")] == []
