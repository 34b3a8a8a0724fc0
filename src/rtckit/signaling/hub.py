"""The asyncio driver of :class:`~rtckit.signaling.state.SignalingState` (no sockets).

A :class:`SignalingHub` owns one state machine, its timer task and the connections attached to
it. Transports (the aiohttp WebSocket server, the in-memory transport) hand it frames and
closures; it performs the state machine's actions on them and calls event listeners. It is what
:class:`~rtckit.signaling.wsserver.SignalingServer` runs, and what in-process participants (an SFU
or MCU being a member of the room) connect to through
:class:`~rtckit.signaling.memory.MemoryTransport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from rtckit.errors import ConnectionClosedError
from rtckit.signaling.config import SignalingConfig
from rtckit.signaling.protocol import Message, PeerInfo
from rtckit.signaling.state import (
    Action,
    Close,
    ConnectionId,
    Output,
    Send,
    ServerEvent,
    SignalingState,
)

if TYPE_CHECKING:
    from rtckit.backplane.journal import Record, RoomSnapshot

__all__ = ["DeferredOutput", "EventListener", "EventStream", "ServerConnection", "SignalingHub"]

logger = logging.getLogger(__name__)

#: A callback receiving every server-side event (called synchronously; must not block).
EventListener = Callable[[ServerEvent], None]


class ServerConnection(Protocol):
    """The server side of one connection, as a transport gives it to the hub."""

    def send_text(self, text: str) -> None:
        """Queue *text* (one frame) for sending; must not block.

        What it holds for a client that does not read is bounded: it counts it with
        :meth:`SignalingHub.reserve` (and :meth:`SignalingHub.release` once read), and closes
        the connection with 4004 (:attr:`~rtckit.signaling.protocol.CloseCode.SLOW_CONSUMER`)
        when refused.
        """
        ...

    def close(self, code: int, reason: str) -> None:
        """Close the connection with *code*; must not block; idempotent."""
        ...

    def ping(self) -> None:
        """Send a transport-level ping (a WebSocket ping frame); must not block.

        Called only for connections opened with ``transport_pings=True``; others may do
        nothing. The transport reports the pong with :meth:`SignalingHub.touch`.
        """
        ...


class EventStream:
    """Server events as an async iterator (from :meth:`SignalingHub.subscribe`).

    .. code-block:: python

        with server.subscribe() as events:
            async for event in events:
                if isinstance(event, PeerJoinedEvent): ...

    Iteration ends after :meth:`close` (or leaving the ``with`` block) once the queued events
    are consumed. Events are queued without bound: consume them.
    """

    def __init__(self, hub: SignalingHub) -> None:
        self._queue: asyncio.Queue[ServerEvent | None] = asyncio.Queue()
        self._remove = hub.add_listener(self._queue.put_nowait)
        self._closed = False

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        if not self._closed:
            self._closed = True
            self._remove()
            self._queue.put_nowait(None)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ServerEvent:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return event


class DeferredOutput:
    """An :class:`~rtckit.signaling.state.Output` bound to its connections, to perform later
    (:meth:`SignalingHub.bind`, :meth:`SignalingHub.perform`): a cluster's journal writer
    stores its *records* first."""

    __slots__ = ("events", "records", "steps")

    def __init__(
        self,
        steps: list[tuple[ServerConnection, Action, str | None]],
        events: list[ServerEvent],
        records: list[Record] | None,
    ) -> None:
        #: (connection, action, room of the connection's session) in order.
        self.steps = steps
        self.events = events
        self.records = records


class SignalingHub:
    """Run a :class:`~rtckit.signaling.state.SignalingState` under asyncio.

    The hub owns the timer, the connections and the event listeners.

    Use as an async context manager (or call :meth:`start` and :meth:`aclose`).
    """

    def __init__(self, config: SignalingConfig) -> None:
        self.config = config
        self.state = SignalingState(config)
        self._connections: dict[ConnectionId, ServerConnection] = {}
        self._ids = itertools.count(1)
        self._listeners: list[EventListener] = []
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        self._buffered = 0
        #: A cluster's journal writer, which takes the outputs to perform later (it returns
        #: True for those).
        self.defer: Callable[[Output], bool] | None = None

    # --- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> SignalingHub:
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
        """Start the timer task (idempotent)."""
        if self._closed:
            raise ConnectionClosedError("this hub is closed")
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick_loop(), name="rtckit-signaling-tick"
            )

    async def aclose(self) -> None:
        """Close every connection (1001) and stop the timer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._apply(self.state.shutdown(self._now()))
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    # --- listeners -----------------------------------------------------------------------

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call *listener* for every server event; return a function that removes it."""
        self._listeners.append(listener)
        self.state.message_events = True

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
            self.state.message_events = bool(self._listeners)

        return remove

    def subscribe(self) -> EventStream:
        """Return an :class:`EventStream` of every server event from now on."""
        return EventStream(self)

    # --- connections ---------------------------------------------------------------------

    def open(
        self,
        connection: ServerConnection,
        *,
        trusted: bool = False,
        transport_pings: bool = False,
        greeted: bool = False,
    ) -> ConnectionId:
        """Attach a new connection; return its id (pass it to :meth:`feed`).

        *transport_pings*: the server's heartbeats on it are :meth:`ServerConnection.ping`
        calls (WebSocket ping frames) instead of ``ping`` messages; the transport then calls
        :meth:`touch` for each pong. *greeted*: it exchanged ``hello`` on another node of a
        cluster (see :meth:`handoff`).
        """
        if self._closed:
            raise ConnectionClosedError("the signaling hub is closed")
        conn = next(self._ids)
        self._connections[conn] = connection
        self._apply(
            self.state.open(
                conn,
                self._now(),
                trusted=trusted,
                transport_pings=transport_pings,
                greeted=greeted,
            )
        )
        return conn

    def handoff(self, conn: ConnectionId) -> ServerConnection:
        """Detach the open connection *conn*, which has not joined, without closing it, and
        return it: another node of a cluster serves it from now on
        (:meth:`SignalingState.handoff <rtckit.signaling.state.SignalingState.handoff>`)."""
        self.state.handoff(conn)
        return self._connections.pop(conn)

    def reject(self, conn: ConnectionId, code: str, text: str) -> None:
        """Send *conn* an ``error`` with *code* (see
        :meth:`SignalingState.reject <rtckit.signaling.state.SignalingState.reject>`)."""
        self._apply(self.state.reject(conn, code, text))

    def evict_room(self, room: str, code: int, reason: str) -> None:
        """Drop *room*, closing its members' connections with *code* (see
        :meth:`SignalingState.evict_room <rtckit.signaling.state.SignalingState.evict_room>`)."""
        self._apply(self.state.evict_room(room, code, reason))

    def feed(self, conn: ConnectionId, data: str | bytes) -> None:
        """A frame arrived on *conn*."""
        self._apply(self.state.receive_data(conn, data, self._now()))

    def touch(self, conn: ConnectionId) -> None:
        """*conn* showed a sign of life its transport handled (a pong); constant time."""
        self.state.touch(conn, self._now())

    def feed_message(self, conn: ConnectionId, message: Message) -> None:
        """A decoded message arrived on *conn* (in-process connections)."""
        self._apply(self.state.receive(conn, message, self._now()))

    def connection_lost(self, conn: ConnectionId) -> None:
        """*conn* closed or failed (idempotent)."""
        if self._connections.pop(conn, None) is not None:
            self._apply(self.state.closed(conn, self._now()))

    # --- send buffers (for transports) ----------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Bytes all connections hold for clients that have not read them yet."""
        return self._buffered

    def reserve(self, held: int, size: int) -> bool:
        """Account *size* more bytes for a connection holding *held* bytes its client has
        not read; False (nothing accounted) if that would pass
        :attr:`~rtckit.signaling.config.SignalingConfig.max_send_buffer` or
        :attr:`~rtckit.signaling.config.SignalingConfig.max_total_send_buffer`: the transport
        then closes the connection with 4004 (slow consumer)."""
        config = self.config
        if (
            held + size > config.max_send_buffer
            or self._buffered + size > config.max_total_send_buffer
        ):
            return False
        self._buffered += size
        return True

    def release(self, size: int) -> None:
        """The client read (or the connection dropped) *size* bytes :meth:`reserve` counted."""
        self._buffered -= size

    def remove_peer(self, room: str, peer_id: str) -> None:
        """Remove a peer from a room (others get ``peer-left`` with reason ``removed``)."""
        self._apply(self.state.remove_peer(room, peer_id))

    def peers(self, room: str) -> list[PeerInfo]:
        """Current members of *room*."""
        return self.state.peers(room)

    def restore_room(self, snapshot: RoomSnapshot, *, grace: float = 0.0) -> None:
        """Take *snapshot*'s room over (see :meth:`SignalingState.restore_room
        <rtckit.signaling.state.SignalingState.restore_room>`)."""
        self._apply(self.state.restore_room(snapshot, self._now(), grace=grace))

    # --- deferred outputs (a cluster's journal) -------------------------------------------

    def bind(self, out: Output) -> DeferredOutput:
        """Bind *out*'s actions to their connections now (a closed connection is forgotten
        now, as :meth:`perform` would), to :meth:`perform` them later."""
        connections = self._connections
        room_of = self.state.room_of
        steps: list[tuple[ServerConnection, Action, str | None]] = []
        for action in out.actions:
            if isinstance(action, Close):
                connection = connections.pop(action.conn, None)
                if connection is not None:
                    steps.append((connection, action, None))
            else:
                target = connections.get(action.conn)
                if target is not None:
                    steps.append((target, action, room_of(action.conn)))
        return DeferredOutput(steps, out.events, out.records)

    def perform(self, deferred: DeferredOutput, skip: frozenset[str] = frozenset()) -> None:
        """Perform a bound output, but for the sends to the members of the rooms in *skip*."""
        for connection, action, room in deferred.steps:
            if isinstance(action, Send):
                if room is None or room not in skip:
                    connection.send_text(action.text)
            elif isinstance(action, Close):
                connection.close(action.code, action.reason)
            else:
                connection.ping()
        self._emit(deferred.events)

    # --- internals -----------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic()  # the clock of asyncio's loop.time()

    def _apply(self, out: Output) -> None:
        defer = self.defer
        if defer is not None and defer(out):
            return
        connections = self._connections
        for action in out.actions:
            if isinstance(action, Send):
                target = connections.get(action.conn)
                if target is not None:
                    target.send_text(action.text)
            elif isinstance(action, Close):
                connection = connections.pop(action.conn, None)
                if connection is not None:
                    connection.close(action.code, action.reason)
            else:  # Heartbeat
                target = connections.get(action.conn)
                if target is not None:
                    target.ping()
        if out.events:
            self._emit(out.events)

    def _emit(self, events: list[ServerEvent]) -> None:
        for event in events:
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:
                    logger.exception("signaling event listener %r failed", listener)

    async def _tick_loop(self) -> None:
        interval = min(
            self.config.tick_interval,
            self.config.heartbeat_interval / 2,
            self.config.handshake_timeout / 2,
        )
        while True:
            await asyncio.sleep(interval)
            try:
                self._apply(self.state.tick(self._now()))
            except Exception:  # pragma: no cover - a bug; keep serving
                logger.exception("signaling tick failed")
