"""The client transport interface: one reconnectable text-frame channel to a signaling server.

:class:`~rtckit.signaling.client.SignalingClient` speaks the protocol over any object with
these four coroutines. rtckit has two: :class:`~rtckit.signaling.websocket.WebSocketTransport`
and :class:`~rtckit.signaling.memory.MemoryTransport`. Your own (another WebSocket library, a
message bus...) can be checked with :mod:`rtckit.testing.conformance`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["ClientTransport"]


@runtime_checkable
class ClientTransport(Protocol):
    """One connection at a time to a signaling server, re-openable after a failure.

    * :meth:`connect` opens a new connection, closing the previous one if any (the client
      calls it again to reconnect);
    * :meth:`send` sends one text frame, in order;
    * :meth:`receive` returns the next text frame;
    * :meth:`close` closes the connection (idempotent).

    :meth:`send` and :meth:`receive` raise :class:`~rtckit.errors.ConnectionClosedError`
    (``code`` is the WebSocket close code if known) once the connection is closed or broken,
    never another exception type for that.
    """

    async def connect(self) -> None:
        """Open a (new) connection; raise :class:`OSError` or ConnectionClosedError if refused."""
        ...

    async def send(self, text: str) -> None:
        """Send one frame."""
        ...

    async def receive(self) -> str:
        """Return the next frame."""
        ...

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        ...
