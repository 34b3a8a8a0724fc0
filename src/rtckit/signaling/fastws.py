"""The signaling server on picows, a faster WebSocket layer (``pip install 'rtckit[speed]'``).

`picows <https://github.com/tarasko/picows>`_ is a WebSocket library for asyncio written in
Cython: it parses frames in C and calls a listener per frame, with no coroutine or task per
message. Under :class:`PicowsSignalingServer` it feeds the same sans-I/O
:class:`~rtckit.signaling.hub.SignalingHub` as the aiohttp server
(:class:`~rtckit.signaling.wsserver.SignalingServer`) and applies the same limits, at a lower
cost per relayed message (:doc:`/topics/signaling-benchmark`). ``rtckit signaling`` runs it
when picows is installed (``--transport``). It serves:

* the WebSocket at *path* (origin check, :class:`~rtckit.signaling.config.SignalingConfig`'s
  message size, rate, handshake, heartbeat and send-buffer limits, as the aiohttp server);
* the browser client at ``<path>/rtckit.js`` and ``<path>/rtckit/<module>``;
* 404 for anything else.

Differences from the aiohttp server, all from picows' HTTP layer: every plain HTTP answer
(the client script, 403, 404, 400) ends with ``Connection: close`` (no keep-alive); only
``GET`` requests without a body are understood (others get 400); request headers may take
16 KiB at most in total (a larger request is dropped without an answer), with picows' own
limit of 128 header lines.

Given a TLS context (``listen(..., ssl=context)``) it serves ``wss://`` and ``https://`` only,
with the TLS handshake bounded by :attr:`HttpLimits.tls_handshake_timeout
<rtckit.httpserver.HttpLimits.tls_handshake_timeout>`, as the aiohttp server; asyncio's TLS
layer then carries every frame (picows writes straight to the socket only without TLS).

Unlike aiohttp, picows enforces RFC 6455 5.1: a client frame that is not masked closes the
connection with 1002.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]

from rtckit.errors import ConnectionClosedError
from rtckit.httpserver import HTTP_LOGGER, HttpLimits
from rtckit.signaling.browser import CLIENT_MODULE_DIR, CLIENT_SCRIPT, client_module
from rtckit.signaling.cluster import ClusterConfig, SignalingRouter
from rtckit.signaling.config import SignalingConfig
from rtckit.signaling.hub import EventListener, EventStream, SignalingHub
from rtckit.signaling.memory import MemoryTransport
from rtckit.signaling.origin import origin_allowed
from rtckit.signaling.protocol import CloseCode

if TYPE_CHECKING:
    from rtckit.backplane.base import Backplane

__all__ = ["PicowsSignalingServer"]

#: Initial read buffer of a connection (picows' default is 16 KiB): signaling messages are
#: small, and picows grows the buffer for a larger one (up to ``max_message_size``).
_READ_BUFFER = 4096
_TEXT, _CLOSE = WSMsgType.TEXT, WSMsgType.CLOSE
_SCRIPT_HEADERS = {
    "Content-Type": "text/javascript; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


class _PicowsLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """picows' log, demoted: it logs every accepted and closed connection at ``info`` and a
    client's malformed frame at ``error``. Both are the client's doing, not the server's:
    they go to ``rtckit.signaling.fastws.picows`` at ``debug``. Its other warnings and errors
    (a listener that raised: a bug of ours) keep their level."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level < logging.WARNING or str(msg).startswith("WS parser error"):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs


_PICOWS_LOG = _PicowsLog(logging.getLogger(f"{__name__}.picows"))


class _Connection(WSListener):
    """One picows WebSocket, seen from both sides: the hub's
    :class:`~rtckit.signaling.hub.ServerConnection` and picows' listener.

    Sends go straight into the socket's write buffer (picows writes at once when the socket
    takes it). While the socket pushes back (picows calls :meth:`pause_writing` above the
    transport's high-water mark), what waits in that buffer counts against
    ``max_send_buffer`` and ``max_total_send_buffer`` (:meth:`SignalingHub.reserve
    <rtckit.signaling.hub.SignalingHub.reserve>`), as the aiohttp server's queue does; a
    client that does not read is closed with 4004. Every close lingers: after the close frame
    the server reads and discards what the client still sends (closing a socket with unread
    data in it makes TCP reset the connection, and the client could lose the close frame)
    until the client's close frame, then closes; after ``close_timeout`` it drops the socket.
    (picows' own frame errors, below, close 10 ms after their close frame, without
    lingering.)

    Frames: text is reassembled from fragments up to ``max_message_size`` (1009 above it);
    binary frames, reserved bits, a stray continuation close with 1002; invalid UTF-8 with
    1007. picows itself closes on unmasked frames, reserved opcodes, malformed control frames
    and bad close codes (1002) and on a frame over ``max_message_size`` (1009).
    """

    def __init__(self, server: PicowsSignalingServer) -> None:
        self._server = server
        self._hub = server._entry
        self._max_size = server.config.max_message_size
        self.transport: WSTransport | None = None
        self._conn = 0
        self._fragments: list[bytes] | None = None
        self._fragment_size = 0
        self._paused = False
        self._held = 0  # bytes reserved from the hub while paused
        self._closing = False
        self._abort: asyncio.TimerHandle | None = None

    # --- picows' side --------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._server._connections.add(self)
        try:
            # heartbeats as WebSocket ping frames, answered by the client's stack (as on aiohttp)
            self._conn = self._hub.open(self, transport_pings=True)
        except ConnectionClosedError:
            self._conn = 0
            self.close(CloseCode.GOING_AWAY, "server closing")

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _TEXT and frame.fin and self._fragments is None and not self._closing:
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                self._protocol_error(CloseCode.PROTOCOL_ERROR, "reserved bits set")
                return
            try:
                text = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                self._protocol_error(1007, "invalid UTF-8")
                return
            self._hub.feed(self._conn, text)
            return
        self._other_frame(frame, kind)

    def _other_frame(self, frame: WSFrame, kind: WSMsgType) -> None:
        if kind is _CLOSE:
            self._conn_lost()
            if not self._closing:
                self._closing = True
                code = frame.get_close_code()
                transport = self.transport
                assert transport is not None
                transport.send_close(code if int(code.value) else WSCloseCode.OK)
            self._disconnect()
            return
        if self._closing:
            return  # after our close frame, until the client's: read and discard
        if kind is WSMsgType.PONG or kind is WSMsgType.PING:  # picows answers pings itself
            if self._conn:
                self._hub.touch(self._conn)
            return
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._protocol_error(CloseCode.PROTOCOL_ERROR, "reserved bits set")
        elif kind is WSMsgType.BINARY:
            self._protocol_error(CloseCode.PROTOCOL_ERROR, "text frames only")
        elif kind is _TEXT:  # first fragment (a TEXT frame within a message is an error)
            if self._fragments is not None:
                self._protocol_error(CloseCode.PROTOCOL_ERROR, "unfinished message")
                return
            self._fragments = []
            self._fragment_size = 0
            self._add_fragment(frame)
        elif self._fragments is None:
            self._protocol_error(CloseCode.PROTOCOL_ERROR, "continuation without a message")
        else:
            self._add_fragment(frame)

    def _add_fragment(self, frame: WSFrame) -> None:
        fragments = self._fragments
        assert fragments is not None
        self._fragment_size += frame.payload_size
        if self._fragment_size > self._max_size:
            self._fragments = None
            self._protocol_error(1009, "message too big")
            return
        fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            self._fragments = None
            try:
                text = b"".join(fragments).decode("utf-8")
            except UnicodeDecodeError:
                self._protocol_error(1007, "invalid UTF-8")
                return
            self._hub.feed(self._conn, text)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._conn_lost()
        if self._abort is not None:
            self._abort.cancel()
            self._abort = None
        self._release()
        self._server._connections.discard(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._release()

    # --- the hub's side ------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        transport = self.transport
        if self._closing or transport is None:
            return
        # The client reads slower than we write: count what waits for it. The buffer size is
        # read on every send, not only between pause_writing and resume_writing: on Python
        # 3.13 picows' transport grew to 9 MB without pausing (tests/test_signaling_limits.py).
        backlog = transport.underlying_transport.get_write_buffer_size()
        hub = self._hub
        if self._held:  # what the buffer held at the last send is counted anew
            hub.release(self._held)
            self._held = 0
        if backlog or self._paused:
            size = len(text)  # ASCII (the codec escapes the rest)
            if not hub.reserve(0, backlog + size):
                self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
                return
            self._held = backlog + size
        transport.send(_TEXT, text.encode())

    def ping(self) -> None:
        transport = self.transport
        if not self._closing and transport is not None:
            transport.send_ping()

    def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        transport = self.transport
        if transport is None:
            return
        transport.send_close(WSCloseCode(code), reason.encode()[:120])
        if code == CloseCode.SLOW_CONSUMER:
            self._release()
        self._abort = asyncio.get_running_loop().call_later(
            self._hub.config.close_timeout, self._drop
        )

    # --- internals -----------------------------------------------------------------------

    def _protocol_error(self, code: int, reason: str) -> None:
        """Close for a frame that breaks the protocol; the stream itself is still whole, so
        the close lingers as every close does (see :meth:`close`)."""
        self._fragments = None
        self._conn_lost()
        self.close(code, reason)

    def _conn_lost(self) -> None:
        if self._conn:
            conn, self._conn = self._conn, 0
            self._hub.connection_lost(conn)

    def _release(self) -> None:
        if self._held:
            self._hub.release(self._held)
            self._held = 0

    def _disconnect(self) -> None:
        """Close the socket once what is queued (the close frame) is written; drop it if
        the client does not take it within ``close_timeout``."""
        transport = self.transport
        if transport is not None:
            transport.disconnect(graceful=True)
        if self._abort is None:
            self._abort = asyncio.get_running_loop().call_later(
                self._hub.config.close_timeout, self._drop
            )

    def _drop(self) -> None:
        self._abort = None
        self._release()
        transport = self.transport
        if transport is not None:
            transport.disconnect(graceful=False)


class _Protocol(WSProtocol):  # type: ignore[misc]
    """picows' protocol, told which connection it serves (for the log of refused requests)
    and which requests picows refused itself (it answers 400 without a log)."""

    def __init__(self, server: PicowsSignalingServer, limits: HttpLimits) -> None:
        self._rtckit_server = server
        self._routed = False
        super().__init__(
            None,
            None,
            False,  # server side
            self._route,
            _PICOWS_LOG,
            True,  # disconnect on exception
            limits.idle_timeout,  # the whole request must arrive within this
            False,  # picows' auto-ping: the signaling heartbeat does it
            20.0,
            20.0,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # auto-pong
            server.config.max_message_size,
            None,
            _READ_BUFFER,
        )
        self._limits = limits

    def _route(self, request: WSUpgradeRequest) -> Any:
        self._routed = True
        return self._rtckit_server._route(request, self._limits, self._peer())

    def _peer(self) -> str:
        transport = getattr(self, "transport", None)
        if transport is None:
            return "?"
        peer = transport.underlying_transport.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        if not self._routed and self.transport.underlying_transport.is_closing():
            self._routed = True  # picows refused the request (malformed, not GET, too big)
            # picows answered 400 (malformed, not GET, with a body) or, for headers over
            # 16 KiB, closed without an answer
            _bad_request(self._peer(), 400, "refused by picows' HTTP parser")


def _bad_request(peer: str, status: int, error: str) -> None:
    HTTP_LOGGER.info(
        "bad request from %s: %s %s",
        peer,
        status,
        error,
        extra={"remote": peer, "status": status, "error": error},
    )


class PicowsSignalingServer:
    """A standalone WebSocket signaling server on picows (async context manager).

    The same hub, limits and events as :class:`~rtckit.signaling.wsserver.SignalingServer`,
    without :meth:`~rtckit.signaling.wsserver.SignalingServer.add_routes` (it owns its port)::

        async with PicowsSignalingServer(config) as server:
            await server.listen("127.0.0.1", 8765)
            ...

    *backplane* and *cluster*: as for :class:`~rtckit.signaling.wsserver.SignalingServer`.
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
        #: The router of a cluster node (``None`` without a backplane; see
        #: :class:`~rtckit.signaling.wsserver.SignalingServer`).
        self.router = None if backplane is None else SignalingRouter(self.hub, backplane, cluster)
        self._entry: SignalingHub | SignalingRouter = (
            self.hub if self.router is None else self.router
        )
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._path = "/ws"
        self._scheme = "ws"
        self._connections: set[_Connection] = set()
        self._closed = False

    async def __aenter__(self) -> PicowsSignalingServer:
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
        """Start the hub's timer (done by ``async with``); with a backplane, join it."""
        await self._entry.start()

    async def aclose(self) -> None:
        """Close every connection (1001 going away) and the listening socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        await self._entry.aclose()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.close_timeout + 1):
                while self._connections:  # noqa: ASYNC110 - picows has no event to wait on
                    await asyncio.sleep(0.02)
        for connection in list(self._connections):
            connection._drop()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await self._server.wait_closed()
            self._server = None

    close = aclose

    async def listen(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        path: str = "/ws",
        limits: HttpLimits | None = None,
        ssl: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """Listen on *host*:*port* (0: any free port) with the WebSocket at *path*; return
        the bound address. *limits*: the idle timeout (a request's headers must arrive within
        it), header sizes and, with *ssl*, the TLS handshake timeout of
        :class:`~rtckit.httpserver.HttpLimits`. *ssl* is a server context: the port then
        speaks TLS only, and :attr:`url` is ``wss://`` (see
        :meth:`SignalingServer.listen <rtckit.signaling.wsserver.SignalingServer.listen>`)."""
        if self._server is not None:
            raise RuntimeError("already listening")
        await self.start()
        self._path = path
        chosen = limits or HttpLimits()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Protocol(self, chosen),
            host,
            port,
            ssl=ssl,
            ssl_handshake_timeout=chosen.tls_handshake_timeout if ssl is not None else None,
        )
        self._scheme = "ws" if ssl is None else "wss"
        bound = self._server.sockets[0].getsockname()
        self._address = (str(bound[0]), int(bound[1]))
        return self._address

    @property
    def url(self) -> str:
        """``ws://host:port/path`` (``wss://`` with TLS; after :meth:`listen`)."""
        if self._address is None:
            raise RuntimeError("not listening (call listen())")
        host, port = self._address
        return f"{self._scheme}://{host}:{port}{self._path}"

    def local_transport(self, *, trusted: bool = True) -> MemoryTransport:
        """A transport for an in-process participant (see
        :meth:`SignalingServer.local_transport
        <rtckit.signaling.wsserver.SignalingServer.local_transport>`)."""
        return MemoryTransport(self.hub, trusted=trusted)

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call *listener* with every server event; return a function removing it."""
        return self.hub.add_listener(listener)

    def subscribe(self) -> EventStream:
        """Server events as an async iterator (see :class:`~rtckit.signaling.hub.EventStream`)."""
        return self.hub.subscribe()

    # --- routing -------------------------------------------------------------------------

    def _route(self, request: WSUpgradeRequest, limits: HttpLimits, peer: str) -> Any:
        error = _header_error(request, limits)
        if error is not None:
            _bad_request(peer, 400, error)
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(400, error.encode()), None
            )
        target = request.path.decode("latin-1").partition("?")[0]
        headers = request.headers
        if target == self._path:
            origin = headers.get("Origin")
            if not origin_allowed(self.config, origin, headers.get("Host", "")):
                return _refuse(403, b"origin not allowed")
            if self.hub.closed:
                return _refuse(503, b"signaling server is closing")
            return _Connection(self)
        prefix = self._path.rstrip("/") + "/"
        if target.startswith(prefix):
            name = target[len(prefix) :]
            if name == CLIENT_SCRIPT or name.startswith(CLIENT_MODULE_DIR + "/"):
                source = client_module(name)
                if source is not None:
                    response = WSUpgradeResponse.create_ok_response(source.encode())
                    for key, value in _SCRIPT_HEADERS.items():
                        response.headers[key] = value
                    return WSUpgradeResponseWithListener(response, None)
        return _refuse(404, b"not found")


def _refuse(status: int, body: bytes) -> WSUpgradeResponseWithListener:
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_error_response(status, body), None
    )


def _header_error(request: WSUpgradeRequest, limits: HttpLimits) -> str | None:
    """Why *request* breaks *limits*' header sizes (as aiohttp's parser applies them), or
    ``None``."""
    line = len(request.method) + len(request.path) + len(request.version) + 2
    if line > limits.max_line_size:
        return f"request line too long ({line} > {limits.max_line_size} bytes)"
    headers = request.headers
    if len(headers) > limits.max_headers:
        return f"too many headers ({len(headers)} > {limits.max_headers})"
    for name, value in headers.items():
        size = len(name) + 2 + len(value)
        if size > limits.max_field_size:
            return f"header line too long ({size} > {limits.max_field_size} bytes)"
    return None
