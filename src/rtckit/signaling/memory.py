"""In-memory transport: clients in the same process as the hub, no sockets.

For tests, for examples, and for server-side participants (an SFU or MCU joining the room it
serves): :class:`MemoryTransport` connects to a :class:`~rtckit.signaling.hub.SignalingHub`
and goes through the same codec and state machine as a WebSocket client.

.. code-block:: python

    async with SignalingHub(SignalingConfig(auth=OpenAuth())) as hub:
        async with SignalingClient.connect(MemoryTransport(hub), room="lobby") as alice:
            ...
"""

from __future__ import annotations

import asyncio

import attrs

from rtckit.errors import ConnectionClosedError
from rtckit.signaling.hub import SignalingHub
from rtckit.signaling.protocol import CloseCode
from rtckit.signaling.state import ConnectionId

__all__ = ["MemoryTransport"]


@attrs.frozen
class _Closed:
    code: int
    reason: str


class _ServerSide:
    """The hub's view of one in-memory connection.

    The queue is bounded like a socket's buffer: the bytes it holds count against the hub's
    ``max_send_buffer`` and ``max_total_send_buffer``; a frame that would pass them closes the
    connection with 4004 (slow consumer), dropping what the client has not read (the session
    keeps it for ``resume``).
    """

    def __init__(self, hub: SignalingHub) -> None:
        self.hub = hub
        self.conn: ConnectionId | None = None
        self.queue: asyncio.Queue[str | _Closed] = asyncio.Queue()
        self.held = 0  # bytes of text in the queue, reserved from the hub
        self.closed: _Closed | None = None

    def send_text(self, text: str) -> None:
        if self.closed is not None:
            return
        size = len(text)  # ASCII (the codec escapes the rest)
        if not self.hub.reserve(self.held, size):
            self.discard()
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: too much unread")
            if self.conn is not None:  # not from inside the hub's own loop
                asyncio.get_running_loop().call_soon(self.hub.connection_lost, self.conn)
            return
        self.held += size
        self.queue.put_nowait(text)

    def taken(self, text: str) -> None:
        """The client read *text*."""
        self.held -= len(text)
        self.hub.release(len(text))

    def discard(self) -> None:
        """Drop every frame not read yet (the connection is going away)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.hub.release(self.held)
        self.held = 0
        if self.closed is not None:
            self.queue.put_nowait(self.closed)

    def ping(self) -> None:
        """Not called: in-process connections get ``ping`` messages (no transport pings)."""

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = _Closed(code, reason)
            self.queue.put_nowait(self.closed)


class MemoryTransport:
    """A :class:`~rtckit.signaling.transport.ClientTransport` to a hub in the same process.

    *trusted* connections skip the rate limit and may choose their peer id (for server-side
    participants).
    """

    def __init__(self, hub: SignalingHub, *, trusted: bool = False) -> None:
        self.hub = hub
        self.trusted = trusted
        self._side: _ServerSide | None = None
        self._conn: ConnectionId | None = None

    async def connect(self) -> None:
        """Open a new in-memory connection (closing the previous one)."""
        await self.close()
        side = _ServerSide(self.hub)
        self._conn = side.conn = self.hub.open(side, trusted=self.trusted)
        self._side = side

    async def send(self, text: str) -> None:
        """Hand one frame to the hub (processed before this returns)."""
        side, conn = self._side, self._conn
        if side is None or conn is None or side.closed is not None:
            raise ConnectionClosedError(
                "in-memory connection is closed",
                code=None if side is None or side.closed is None else side.closed.code,
            )
        self.hub.feed(conn, text)
        await asyncio.sleep(0)  # let receivers run, as a socket would

    async def receive(self) -> str:
        """Return the next frame from the hub."""
        side = self._side
        if side is None:
            raise ConnectionClosedError("in-memory connection is not open")
        item = await side.queue.get()
        if isinstance(item, _Closed):
            side.queue.put_nowait(item)  # every later receive fails the same way
            raise ConnectionClosedError(
                f"connection closed ({item.code} {item.reason})", code=item.code
            )
        side.taken(item)
        return item

    async def close(self) -> None:
        """Close the connection (the hub sees it as gone). Idempotent."""
        side, conn = self._side, self._conn
        if side is None or conn is None:
            return
        if side.closed is None:
            side.close(CloseCode.NORMAL, "closed by client")
        side.discard()
        self.hub.connection_lost(conn)

    async def abort(self) -> None:
        """Drop the connection as a network failure would (same as close, in memory)."""
        await self.close()
