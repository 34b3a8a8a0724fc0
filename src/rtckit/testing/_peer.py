"""In-process peer pairs: two :class:`~rtckit.peer.session.PeerSession` objects wired directly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from rtckit.errors import ConnectionClosedError
from rtckit.peer.session import PeerSession, SessionConfig
from rtckit.peer.signaller import PeerMessage

__all__ = ["DirectSignaller", "peer_pair"]


class DirectSignaller:
    """A :class:`~rtckit.peer.signaller.Signaller` that hands messages to another session.

    Set ``connected`` to ``False`` to simulate a signaling outage (messages are then
    refused with :class:`~rtckit.errors.ConnectionClosedError`); *sent* counts messages.
    """

    def __init__(self) -> None:
        self.target: PeerSession | None = None
        self.connected = True
        self.sent = 0

    async def send(self, message: PeerMessage) -> None:
        """Deliver *message* to the ``target`` session."""
        if not self.connected or self.target is None:
            raise ConnectionClosedError("direct signaller is disconnected")
        self.sent += 1
        await self.target.receive(message)


@contextlib.asynccontextmanager
async def peer_pair(
    config: SessionConfig | None = None,
) -> AsyncIterator[tuple[PeerSession, PeerSession]]:
    """Two connected-by-signaling sessions ``(impolite, polite)``; both closed on exit.

    Add tracks and data channels, then ``await a.wait_connected()``.
    """
    sig_a, sig_b = DirectSignaller(), DirectSignaller()
    a = PeerSession(sig_a, polite=False, config=config, name="a")
    b = PeerSession(sig_b, polite=True, config=config, name="b")
    sig_a.target, sig_b.target = b, a
    try:
        async with a, b:
            yield a, b
    finally:
        await a.close()
        await b.close()
