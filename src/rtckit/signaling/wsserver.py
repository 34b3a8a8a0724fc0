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

``listen(..., ssl=context)`` serves ``wss://`` with a TLS server context.

The server is a thin layer: it hands each frame to a
:class:`~rtckit.signaling.hub.SignalingHub`, which runs the sans-I/O
:class:`~rtckit.signaling.state.SignalingState`. Server-side participants (an SFU or MCU in the
room) connect with :meth:`SignalingServer.local_transport` and speak the same protocol; event
listeners (:meth:`SignalingServer.add_listener`) see peers join, leave and talk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from rtckit.errors import ConnectionClosedError
from rtckit.httpserver import HttpLimits, LimitedSite, runner_options
from rtckit.signaling.browser import (
    CLIENT_SCRIPT,
    client_modules,
    client_routes,
    client_script,
    serve_client_module,
)
from rtckit.signaling.cluster import ClusterConfig, SignalingRouter
from rtckit.signaling.config import SignalingConfig
from rtckit.signaling.hub import EventListener, EventStream, SignalingHub
from rtckit.signaling.memory import MemoryTransport
from rtckit.signaling.origin import origin_allowed
from rtckit.signaling.protocol import CloseCode

if TYPE_CHECKING:
    from rtckit.backplane.base import Backplane

__all__ = ["CLIENT_SCRIPT", "SignalingServer", "client_modules", "client_script"]

logger = logging.getLogger(__name__)

# Seconds between two looks at a closing connection's write buffer.
_FLUSH_POLL = 0.02

# A WebSocket ping frame (FIN, opcode 9, unmasked, empty payload): the server's heartbeat.
_PING_FRAME = b"\x89\x00"


def _write_buffer_size(transport: asyncio.Transport | None) -> int:
    """Bytes in *transport*'s write buffer; 0 without a transport, or for asyncio's TLS
    transport once it was closed twice: CPython (3.11 to 3.13) then drops its protocol, and
    ``get_write_buffer_size()`` raises ``AttributeError`` (a client that resets a ``wss://``
    connection while the server closes it gets there)."""
    if transport is None:
        return 0
    try:
        return transport.get_write_buffer_size()
    except AttributeError:
        return 0


def _step(coro: Coroutine[Any, Any, None]) -> Any:
    """Run *coro* to its next suspension, as an asyncio task's step does; return what it
    waits for (a future, or ``None`` for a bare yield). Raises StopIteration when it is done.

    Like ``Task.__step``, clear the flag the future's ``__await__`` set to tell the task it
    is being awaited (asyncio's Future protocol, see :func:`asyncio.isfuture`). Left set, the
    next ``await`` of that future raises "await wasn't used with future": aiohttp shares one
    drain waiter between every writer of a connection, so the close frame's drain (and ours
    in :meth:`_WebSocketConnection._finish`) would fail the first time the socket blocked.
    """
    blocker = coro.send(None)
    if getattr(blocker, "_asyncio_future_blocking", False):
        blocker._asyncio_future_blocking = False
    return blocker


class _WebSocketConnection:
    """The hub's view of one aiohttp WebSocket: ordered, non-blocking, bounded sends.

    ``send_str`` of an uncompressed frame writes to the socket at once and only suspends when
    the socket's buffer is full (flow control). So :meth:`send_text` runs the coroutine's first
    step right here, like a task would, and only when it suspends does a task finish it and
    then send what queued up meanwhile. This saves creating a task per relayed message.

    What queues up while the socket is blocked is bounded: with the transport's own write
    buffer it may not pass ``max_send_buffer`` bytes, nor the queues of all connections
    ``max_total_send_buffer`` (:meth:`SignalingHub.reserve
    <rtckit.signaling.hub.SignalingHub.reserve>`). A client that does not read (or acks what
    it never read, which empties its session's queue but not the socket's) is closed with
    4004, slow consumer. Every close waits ``close_timeout`` at most for the client to take
    what is queued and the close frame, then drops the socket: a blocked one would otherwise
    hold its buffer forever.
    """

    __slots__ = ("_closer", "_closing", "_flusher", "_held", "_hub", "_pending", "transport", "ws")

    def __init__(
        self, ws: web.WebSocketResponse, hub: SignalingHub, transport: asyncio.Transport | None
    ) -> None:
        self.ws = ws
        self.transport = transport
        self._hub = hub
        self._pending: list[str] = []
        self._held = 0  # bytes in _pending, reserved from the hub
        self._flusher: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closing: tuple[int, str] | None = None

    @property
    def buffered(self) -> int:
        """Bytes waiting for the client: queued here and in the transport's write buffer."""
        transport = self.transport
        return self._held + _write_buffer_size(transport)

    def send_text(self, text: str) -> None:
        if self._closing is not None:
            return
        if self._flusher is not None:
            size = len(text)  # ASCII (the codec escapes the rest)
            if not self._hub.reserve(self.buffered, size):
                self._drop_pending()
                self._start_close(CloseCode.SLOW_CONSUMER, "slow consumer")
                return
            self._held += size
            self._pending.append(text)
            return
        coro = self.ws.send_str(text)
        try:
            blocker = _step(coro)
        except StopIteration:
            return  # written synchronously: the usual case
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return  # the connection is going away; the hub hears of it from the reader
        self._flusher = asyncio.get_running_loop().create_task(self._finish(coro, blocker))

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._start_close(code, reason)

    def ping(self) -> None:
        """Write a WebSocket ping frame; the client's WebSocket stack answers it by itself.

        Written straight to the transport (two constant bytes, no coroutine): frames are
        uncompressed and aiohttp writes each whole, so it cannot land inside another one.
        """
        transport = self.transport
        if (
            self._closing is None
            and transport is not None
            and not transport.is_closing()
            and not self.ws.closed
        ):
            transport.write(_PING_FRAME)

    def _drop_pending(self) -> None:
        self._pending.clear()
        self._hub.release(self._held)
        self._held = 0

    def _start_close(self, code: int, reason: str) -> None:
        self._closing = (code, reason)
        self._closer = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _finish(self, coro: Coroutine[Any, Any, None] | None, blocker: Any) -> None:
        ws = self.ws
        try:
            while coro is not None:  # drive the suspended send_str to its end
                if blocker is None:
                    await asyncio.sleep(0)
                else:
                    await blocker
                try:
                    blocker = _step(coro)
                except StopIteration:
                    coro = None
            while self._pending:
                batch, self._pending = self._pending, []
                for text in batch:
                    self._held -= len(text)
                    self._hub.release(len(text))
                    await ws.send_str(text)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            self._drop_pending()
        finally:
            if coro is not None:
                coro.close()
            self._flusher = None

    async def _close(self, code: int, reason: str) -> None:
        ws = self.ws
        try:
            async with asyncio.timeout(self._hub.config.close_timeout):
                # What was sent before the close goes first; a slow consumer's queue was
                # dropped, and its flusher may wait for the client forever. (The flusher is
                # not cancelled while it may wait on aiohttp's drain waiter: that would cancel
                # the waiter, which aiohttp shares with the close frame's drain.)
                flusher = self._flusher
                if flusher is not None and code != CloseCode.SLOW_CONSUMER:
                    await asyncio.wait([flusher])
                if not ws.closed:
                    await ws.close(code=code, message=reason.encode()[:120])
                transport = self.transport
                # close() returns without waiting for the transport's buffer to reach the
                # client when the handler was waiting in receive() (it then closes at once);
                # asyncio still flushes it, give it time. Polled: the transport tells only its
                # protocol (aiohttp's) when it drains.
                while _write_buffer_size(transport):  # noqa: ASYNC110
                    await asyncio.sleep(_FLUSH_POLL)
        except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError):
            pass
        finally:
            self._drop_pending()
            transport = self.transport
            if transport is not None and _write_buffer_size(transport):
                transport.abort()  # the client did not take it in time: free the buffer
            if self._flusher is not None:  # the close is done: stop waiting for the client
                self._flusher.cancel()


# Bytes a lingering close reads and discards at most (see _linger).
_LINGER_BYTES = 1 << 20


async def _linger(protocol: Any, sock: socket.socket, limit: float, max_bytes: int) -> None:
    """Close a WebSocket's TCP connection without losing the close frame to a reset.

    A server that closes a socket with unread data in it (a flood the client is still
    sending, the rest of an oversized frame) makes the kernel send RST instead of FIN, and a
    client that receives RST may lose the close frame it had not read yet: it then sees 1006
    instead of 1008 or 1009. aiohttp closes its transport right after the close frame; *sock*
    is a duplicate of the connection's socket, taken when the connection opened, so that the
    connection outlives that. Once aiohttp's *protocol* has lost its transport (everything it
    wrote, the close frame included, is in the kernel), this sends FIN
    (``shutdown(SHUT_WR)``), then reads and discards what the client sends until it closes
    its side (its close frame, if it sends one, is discarded too), for *max_bytes* and *limit*
    seconds at most; then it closes the socket.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limit):
            while protocol.transport is not None:  # noqa: ASYNC110 - no event tells us
                await asyncio.sleep(_FLUSH_POLL)
            sock.shutdown(socket.SHUT_WR)
            read = 0
            while read < max_bytes and (chunk := await loop.sock_recv(sock, 65536)):
                read += len(chunk)
    except (TimeoutError, OSError):
        pass
    finally:
        sock.close()


def _duplicate_socket(transport: asyncio.BaseTransport | None) -> socket.socket | None:
    """A non-blocking duplicate of *transport*'s socket (``None`` if it has none).

    Taken while the transport certainly owns its socket: once it is closed, its descriptor
    number may already belong to another connection (uvloop closes it at once).
    """
    if transport is None or transport.is_closing():
        return None
    original = transport.get_extra_info("socket")
    if original is None:
        return None
    try:
        duplicate: socket.socket = original.dup()
    except (AttributeError, OSError, RuntimeError):
        return None
    duplicate.setblocking(False)
    return duplicate


class SignalingServer:
    """A WebSocket signaling server (async context manager).

    *config* holds limits and auth (:class:`~rtckit.signaling.config.SignalingConfig`).

    *backplane*: this server is one node of a cluster sharing it; its connections are routed
    to their rooms' nodes by a :class:`~rtckit.signaling.cluster.SignalingRouter`
    (:attr:`router`, configured by *cluster*; see :doc:`/topics/cluster`). Event listeners
    then see the events of the rooms homed on this node.
    """

    def __init__(
        self,
        config: SignalingConfig,
        backplane: Backplane | None = None,
        *,
        cluster: ClusterConfig | None = None,
    ) -> None:
        self.config = config
        self.hub = SignalingHub(config)
        #: The router of a cluster node (``None`` without a backplane).
        self.router = None if backplane is None else SignalingRouter(self.hub, backplane, cluster)
        self._entry: SignalingHub | SignalingRouter = (
            self.hub if self.router is None else self.router
        )
        self._runner: web.AppRunner | None = None
        self._site_address: tuple[str, int] | None = None
        self._path = "/ws"
        self._scheme = "ws"
        self._handlers: set[asyncio.Task[object]] = set()
        self._lingering: set[asyncio.Task[None]] = set()
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
        """Start the hub's timer (done by ``async with`` and by a mounting app's startup);
        with a backplane, join it (:class:`~rtckit.errors.BackplaneError` if unreachable)."""
        await self._entry.start()

    async def aclose(self) -> None:
        """Close every connection (1001 going away) and the standalone site. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._entry.aclose()
        if self._handlers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._lingering:  # each bounded by close_timeout
            await asyncio.gather(*self._lingering, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    close = aclose

    # --- mounting ------------------------------------------------------------------------

    def add_routes(self, app: web.Application, path: str = "/ws") -> None:
        """Serve the WebSocket at *path* and the browser client at ``<path>/rtckit.js`` (with
        the modules it imports at ``<path>/rtckit/``, see :mod:`rtckit.signaling.browser`).

        The hub starts with the app and closes (every connection gets 1001) at its shutdown.
        """
        self._path = path
        app.router.add_get(path, self.handle)
        for route in client_routes(path):
            app.router.add_get(route, self.handle_script)

        async def on_startup(_app: web.Application) -> None:
            await self.start()

        async def on_shutdown(_app: web.Application) -> None:
            await self.aclose()

        app.on_startup.append(on_startup)
        app.on_shutdown.append(on_shutdown)

    async def listen(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        path: str = "/ws",
        limits: HttpLimits | None = None,
        ssl: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """Run standalone on *host*:*port* (0: any free port) with the WebSocket at *path*;
        return the bound address.

        *limits* bounds the HTTP connections before their upgrade: idle and slow-header
        timeout, header sizes, and with *ssl* the TLS handshake
        (:class:`~rtckit.httpserver.HttpLimits`, its defaults if ``None``). *ssl* is a server
        context (e.g. :func:`rtckit.certs.x509.server_ssl_context`): the site then speaks TLS only,
        and :attr:`url` is ``wss://``.
        """
        if self._runner is not None:
            raise RuntimeError("already listening")
        await self.start()
        chosen = limits or HttpLimits()
        app = web.Application()
        self._path = path
        app.router.add_get(path, self.handle)
        for route in client_routes(path):
            app.router.add_get(route, self.handle_script)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1,
            **runner_options(chosen),
        )
        await runner.setup()
        site = LimitedSite(
            runner,
            host,
            port,
            ssl_context=ssl,
            tls_handshake_timeout=chosen.tls_handshake_timeout,
        )
        await site.start()
        self._runner = runner
        self._scheme = "ws" if ssl is None else "wss"
        bound = runner.addresses[0] if runner.addresses else (host, port)
        self._site_address = (str(bound[0]), int(bound[1]))
        return self._site_address

    @property
    def url(self) -> str:
        """``ws://host:port/path`` of the standalone site (``wss://`` with TLS; after
        :meth:`listen`)."""
        if self._site_address is None:
            raise RuntimeError("not listening (call listen())")
        host, port = self._site_address
        return f"{self._scheme}://{host}:{port}{self._path}"

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
        return origin_allowed(self.config, request.headers.get("Origin"), request.host)

    async def handle_script(self, request: web.Request) -> web.Response:
        """Serve the browser client: the entry ``rtckit.js`` or a module it imports."""
        return serve_client_module(request)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket endpoint (an aiohttp handler)."""
        if not self._origin_allowed(request):
            raise web.HTTPForbidden(text="origin not allowed")
        if self.hub.closed:
            raise web.HTTPServiceUnavailable(text="signaling server is closing")
        # autoping off: the loop below answers pings itself and reports pongs to the hub,
        # which sends the heartbeats (WebSocket pings: no protocol message to encode, and
        # every client's WebSocket stack answers them).
        ws = web.WebSocketResponse(
            max_msg_size=self.config.max_message_size,
            autoping=False,
            compress=False,
        )
        await ws.prepare(request)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        connection = _WebSocketConnection(ws, self.hub, request.transport)
        try:
            conn = self._entry.open(connection, transport_pings=True)
        except ConnectionClosedError:
            await ws.close(code=CloseCode.GOING_AWAY, message=b"server closing")
            return ws
        # lingering close: the connection must outlive aiohttp's transport (see _linger)
        sock = _duplicate_socket(request.transport)
        entry = self._entry
        feed, touch, receive = entry.feed, entry.touch, ws.receive
        text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        ping, pong = aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG
        try:
            while True:  # receive() rather than ``async for``: one coroutine less per frame
                message = await receive()
                kind = message.type
                if kind == text:
                    feed(conn, message.data)
                elif kind == pong:
                    touch(conn)
                elif kind == ping:
                    touch(conn)
                    try:
                        await ws.pong(message.data)
                    except (ConnectionError, RuntimeError, aiohttp.ClientError):
                        break  # the client reset the connection after pinging
                elif kind == binary:
                    await ws.close(code=CloseCode.PROTOCOL_ERROR, message=b"text frames only")
                    break
                else:  # close, closing, closed, error
                    break
        finally:
            entry.connection_lost(conn)
            if task is not None:
                self._handlers.discard(task)
            if sock is not None:
                self._start_linger(request.protocol, sock)
        return ws

    def _start_linger(self, protocol: Any, sock: socket.socket) -> None:
        """Close the connection lingering (:func:`_linger`), in a task that :meth:`aclose`
        waits for."""
        config = self.config
        linger = asyncio.get_running_loop().create_task(
            _linger(
                protocol,
                sock,
                config.close_timeout,
                max(_LINGER_BYTES, 2 * config.max_message_size),
            )
        )
        self._lingering.add(linger)
        linger.add_done_callback(self._lingering.discard)
