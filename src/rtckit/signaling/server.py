"""The signaling server on aiohttp: mount it in your app, or run it standalone.

.. code-block:: python

    config = SignalingConfig(auth=TokenAuth(secret=SECRET))
    server = SignalingServer(config)

    app = web.Application()
    server.add_routes(app, path="/ws")  # WebSocket at /ws, browser client at /ws/rtckit.js
    web.run_app(app)

or standalone (what ``rtckit signaling`` does)::

    async with SignalingServer(config) as server:
        await server.listen("127.0.0.1", 8765)
        ...

The server is a thin layer: it hands each frame to a
:class:`~rtckit.signaling.hub.SignalingHub`, which runs the sans-I/O
:class:`~rtckit.signaling.state.SignalingState`. Server-side participants (an SFU or MCU in the
room) connect with :meth:`SignalingServer.local_transport` and speak the same protocol; event
listeners (:meth:`SignalingServer.add_listener`) see peers join, leave and talk.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from rtckit.errors import ConnectionClosedError
from rtckit.signaling.config import SignalingConfig
from rtckit.signaling.hub import EventListener, EventStream, SignalingHub
from rtckit.signaling.memory import MemoryTransport
from rtckit.signaling.protocol import CloseCode

__all__ = ["CLIENT_SCRIPT", "SignalingServer", "client_script"]

logger = logging.getLogger(__name__)

#: File name of the browser client module, served next to the WebSocket path.
CLIENT_SCRIPT = "rtckit.js"


def client_script() -> str:
    """Return the source of the browser client ES module (``rtckit.js``)."""
    resource = importlib.resources.files("rtckit.signaling") / "static" / CLIENT_SCRIPT
    return resource.read_text(encoding="utf-8")


class _WebSocketConnection:
    """The hub's view of one aiohttp WebSocket: ordered, non-blocking sends.

    ``send_str`` of an uncompressed frame writes to the socket at once and only suspends when
    the socket's buffer is full (flow control). So :meth:`send_text` runs the coroutine's first
    step right here, like a task would, and only when it suspends does a task finish it and
    then send what queued up meanwhile. This saves creating a task per relayed message.
    """

    __slots__ = ("_closing", "_flusher", "_pending", "ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._pending: list[str] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closing: tuple[int, str] | None = None

    def send_text(self, text: str) -> None:
        if self._closing is not None:
            return
        if self._flusher is not None:
            self._pending.append(text)
            return
        coro = self.ws.send_str(text)
        try:
            blocker = coro.send(None)
        except StopIteration:
            return  # written synchronously: the usual case
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return  # the connection is going away; the hub hears of it from the reader
        self._flusher = asyncio.get_running_loop().create_task(self._finish(coro, blocker))

    def close(self, code: int, reason: str) -> None:
        if self._closing is not None:
            return
        self._closing = (code, reason)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._finish(None, None))

    async def _finish(self, coro: Coroutine[Any, Any, None] | None, blocker: Any) -> None:
        ws = self.ws
        try:
            while coro is not None:  # drive the suspended send_str to its end
                if blocker is None:
                    await asyncio.sleep(0)
                else:
                    await blocker
                try:
                    blocker = coro.send(None)
                except StopIteration:
                    coro = None
            while self._pending:
                batch, self._pending = self._pending, []
                for text in batch:
                    await ws.send_str(text)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            self._pending.clear()
        finally:
            if coro is not None:
                coro.close()
            self._flusher = None
        if self._closing is not None and not ws.closed:
            code, reason = self._closing
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await ws.close(code=code, message=reason.encode()[:120])


class SignalingServer:
    """A WebSocket signaling server (async context manager).

    *config* holds limits and auth (:class:`~rtckit.signaling.config.SignalingConfig`).
    """

    def __init__(self, config: SignalingConfig) -> None:
        self.config = config
        self.hub = SignalingHub(config)
        self._runner: web.AppRunner | None = None
        self._site_address: tuple[str, int] | None = None
        self._path = "/ws"
        self._handlers: set[asyncio.Task[object]] = set()
        self._closed = False

    # --- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> SignalingServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the hub's timer (done by ``async with`` and by a mounting app's startup)."""
        await self.hub.start()

    async def aclose(self) -> None:
        """Close every connection (1001 going away) and the standalone site. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.hub.aclose()
        if self._handlers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    close = aclose

    # --- mounting ------------------------------------------------------------------------

    def add_routes(self, app: web.Application, path: str = "/ws") -> None:
        """Serve the WebSocket at *path* and the browser client at ``<path>/rtckit.js``.

        The hub starts with the app and closes (every connection gets 1001) at its shutdown.
        """
        self._path = path
        app.router.add_get(path, self.handle)
        app.router.add_get(f"{path.rstrip('/')}/{CLIENT_SCRIPT}", self.handle_script)

        async def on_startup(_app: web.Application) -> None:
            await self.start()

        async def on_shutdown(_app: web.Application) -> None:
            await self.aclose()

        app.on_startup.append(on_startup)
        app.on_shutdown.append(on_shutdown)

    async def listen(
        self, host: str = "127.0.0.1", port: int = 8765, *, path: str = "/ws"
    ) -> tuple[str, int]:
        """Run standalone on *host*:*port* (0: any free port) with the WebSocket at *path*;
        return the bound address."""
        if self._runner is not None:
            raise RuntimeError("already listening")
        await self.start()
        app = web.Application()
        self._path = path
        app.router.add_get(path, self.handle)
        app.router.add_get(f"{path.rstrip('/')}/{CLIENT_SCRIPT}", self.handle_script)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0] if runner.addresses else (host, port)
        self._site_address = (str(bound[0]), int(bound[1]))
        return self._site_address

    @property
    def url(self) -> str:
        """``ws://host:port/path`` of the standalone site (after :meth:`listen`)."""
        if self._site_address is None:
            raise RuntimeError("not listening (call listen())")
        host, port = self._site_address
        return f"ws://{host}:{port}{self._path}"

    # --- server-side participants and hooks ----------------------------------------------

    def local_transport(self, *, trusted: bool = True) -> MemoryTransport:
        """A transport for an in-process participant (an SFU/MCU) of this server's rooms.

        Trusted connections may choose their peer id (``Join.peer_id``, e.g. ``"sfu"``) and
        skip the rate limit.
        """
        return MemoryTransport(self.hub, trusted=trusted)

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call *listener* with every server event; return a function removing it."""
        return self.hub.add_listener(listener)

    def subscribe(self) -> EventStream:
        """Server events as an async iterator (see :class:`~rtckit.signaling.hub.EventStream`)."""
        return self.hub.subscribe()

    # --- handlers ------------------------------------------------------------------------

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser
        allowed = self.config.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        if allowed:
            return False
        try:
            parsed = URL(origin)
        except ValueError:
            return False
        return parsed.host is not None and parsed.raw_authority == request.host

    async def handle_script(self, _request: web.Request) -> web.Response:
        """Serve the browser client module."""
        return web.Response(
            text=client_script(),
            content_type="text/javascript",
            headers={"Cache-Control": "no-cache"},
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket endpoint (an aiohttp handler)."""
        if not self._origin_allowed(request):
            raise web.HTTPForbidden(text="origin not allowed")
        if self.hub.closed:
            raise web.HTTPServiceUnavailable(text="signaling server is closing")
        ws = web.WebSocketResponse(
            max_msg_size=self.config.max_message_size,
            autoping=True,
            compress=False,
        )
        await ws.prepare(request)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        connection = _WebSocketConnection(ws)
        try:
            conn = self.hub.open(connection)
        except ConnectionClosedError:
            await ws.close(code=CloseCode.GOING_AWAY, message=b"server closing")
            return ws
        feed, receive = self.hub.feed, ws.receive
        text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        try:
            while True:  # receive() rather than ``async for``: one coroutine less per frame
                message = await receive()
                kind = message.type
                if kind == text:
                    feed(conn, message.data)
                elif kind == binary:
                    await ws.close(code=CloseCode.PROTOCOL_ERROR, message=b"text frames only")
                    break
                else:  # close, closing, closed, error
                    break
        finally:
            self.hub.connection_lost(conn)
            if task is not None:
                self._handlers.discard(task)
        return ws
