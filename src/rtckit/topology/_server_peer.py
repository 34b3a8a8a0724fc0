"""The server's own participant in a room, shared by the SFU and MCU server strategies.

An SFU or MCU takes part in the rooms it serves as a peer of its own (:class:`ServerPeer`):

* it joins over an in-process, trusted :class:`~rtckit.signaling.memory.MemoryTransport`
  with a reserved peer id (:data:`~rtckit.topology.base.SFU_PEER_ID`,
  :data:`~rtckit.topology.base.MCU_PEER_ID`; only trusted or ``admin`` peers may choose an
  id, so no client can pose as the server), and with
  :class:`~rtckit.signaling.auth.TokenAuth` it mints its own token;
* when the room has no person left it leaves (:meth:`ServerPeer.leave`), so that a room
  created on demand closes;
* when a person comes back to a room it left (a declared room outlives its people), it calls
  the strategy's *rejoin* again (:meth:`ServerPeer.follow`), one call at a time, also for a
  person who came while it was leaving.

:class:`~rtckit.topology.strategies.RoomStrategies` also stops a room's strategy when its
last person leaves; the strategies leave and come back on their own too, for a program that
runs them without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from rtckit.signaling.client import SignalingClient
from rtckit.signaling.memory import MemoryTransport
from rtckit.signaling.state import PeerJoinedEvent, ServerEvent
from rtckit.topology.base import SERVER_PEER_IDS

__all__ = ["ServerPeer"]

logger = logging.getLogger(__name__)

#: What the server may do in the rooms it serves (the permissions of its minted token).
SERVER_PERMISSIONS = ("publish", "subscribe", "admin")


class ServerPeer:
    """The server's participant *peer_id* in one room of *hub* (see the module documentation).

    *role* goes in the peer's metadata (``{"rtckit_role": role}``).
    """

    def __init__(self, hub: Any, *, peer_id: str, role: str) -> None:
        self.hub = hub
        self.peer_id = peer_id
        self.role = role
        self.room: str | None = None
        #: the signaling client while the server is in the room
        self.client: SignalingClient | None = None
        self._rejoin: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._rejoining: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._closed = False

    def token(self, room: str) -> str | None:
        """A token for *room* minted by the hub's authenticator, if it mints (token auth)."""
        mint = getattr(self.hub.config.auth, "mint", None)
        if mint is None:
            return None
        token: str = mint(room=room, identity=self.peer_id, permissions=SERVER_PERMISSIONS)
        return token

    def people(self) -> list[str]:
        """The people in the room as the hub sees it (server peers are not people)."""
        if self.room is None:
            return []
        return [
            peer.id
            for peer in self.hub.peers(self.room)
            if peer.id not in SERVER_PEER_IDS and peer.id != self.peer_id
        ]

    async def join(self, room: str) -> SignalingClient:
        """Join *room* (the signaling client is :attr:`client` until :meth:`leave`)."""
        self.room = room
        client = SignalingClient(
            MemoryTransport(self.hub, trusted=True),
            room=room,
            token=self.token(room),
            peer_id=self.peer_id,
            metadata={"rtckit_role": self.role},
        )
        await client.start()
        self.client = client
        return client

    async def leave(self) -> None:
        """Leave the room (idempotent). If someone came meanwhile, come back (see
        :meth:`follow`)."""
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()
        self._come_back()

    def follow(self, rejoin: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Call *rejoin()* (in a task of its own) whenever a person joins the room while the
        server is not in it, until :meth:`aclose`."""
        self._rejoin = rejoin
        if self._remove_listener is None:
            self._remove_listener = self.hub.add_listener(self._on_hub_event)

    def _on_hub_event(self, event: ServerEvent) -> None:
        if (
            isinstance(event, PeerJoinedEvent)
            and event.room == self.room
            and event.peer.id not in SERVER_PEER_IDS
            and event.peer.id != self.peer_id
        ):
            self._come_back()

    def _come_back(self) -> None:
        rejoin = self._rejoin
        if (
            rejoin is None
            or self._closed
            or self.client is not None
            or self.hub.closed
            or not self.people()
            or (self._rejoining is not None and not self._rejoining.done())
        ):
            return
        self._rejoining = asyncio.get_running_loop().create_task(
            self._run(rejoin), name=f"{self.role}-rejoin-{self.room}"
        )

    async def _run(self, rejoin: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await rejoin()
        except Exception:  # the room's next visitor tries again
            logger.exception("%s could not join room %r again", self.role, self.room)

    async def aclose(self) -> None:
        """Stop following the room; wait for a rejoin under way. Idempotent (:meth:`leave`
        is separate: the strategy leaves when it has closed its sessions)."""
        self._closed = True
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        rejoining = self._rejoining
        if rejoining is not None and rejoining is not asyncio.current_task():
            await asyncio.wait([rejoining])
