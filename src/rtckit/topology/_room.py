"""What every topology's client-side room shares: the participants, the event queue, the
signaling reader, closing and rejoining.

:class:`ClientRoom` follows the room on its signaling client and keeps the bookkeeping the
:class:`~rtckit.topology.base.Room` API promises; subclasses
(:class:`~rtckit.topology.mesh.MeshRoom`,
:class:`~rtckit.topology._server_room.ServerSessionRoom`) only say what to do with the media
sessions, through the hooks in the "hooks" section. A fix to shutdown, to the reader or to
rejoining lands here, once, for every topology.

The reader handles each signaling message on its own: one it cannot handle is logged as one
warning line (:func:`~rtckit.topology.bridge.log_dropped`) and dropped, and the reader goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from rtckit.errors import SignalingError, TopologyError
from rtckit.signaling import protocol as sp
from rtckit.signaling.client import Reconnected, SignalingClient
from rtckit.topology.base import (
    ParticipantJoined,
    ParticipantLeft,
    RoomClosed,
    RoomEvent,
    Topology,
)
from rtckit.topology.bridge import log_dropped

__all__ = ["ClientRoom"]

logger = logging.getLogger(__name__)

_MISSING: Any = object()


class ClientRoom:
    """The client side of a room on a joined :class:`~rtckit.signaling.client.SignalingClient`.

    The participants are the signaling client's peers for which :meth:`_is_participant` is
    true (a server peer is not one). :meth:`start` reports those present and starts the
    reader; :meth:`aclose` (idempotent) stops it, closes the media sessions, reports
    :class:`~rtckit.topology.base.RoomClosed` and ends :meth:`events`; it leaves no task.
    """

    #: The room's topology (set by each subclass).
    TOPOLOGY: ClassVar[Topology]

    def __init__(self, client: SignalingClient) -> None:
        self.client = client
        self._participants: dict[str, Mapping[str, Any] | None] = {}
        self._published: list[Any] = []
        self._events: asyncio.Queue[RoomEvent | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._local_id = client.peer_id

    # -- Room API ---------------------------------------------------------------------------

    @property
    def topology(self) -> Topology:
        """The room's topology."""
        return self.TOPOLOGY

    @property
    def local_id(self) -> str:
        """This participant's peer id (changes if the signaling session had to be rejoined)."""
        return self._local_id

    @property
    def participants(self) -> Mapping[str, Mapping[str, Any] | None]:
        """The other participants (peer id -> metadata); a server peer is not one."""
        return dict(self._participants)

    async def publish(self, track: Any) -> None:
        """Send *track* to the room (to every participant, present and future)."""
        if track in self._published:
            raise TopologyError("track already published")
        self._published.append(track)
        self._track_published(track)

    async def unpublish(self, track: Any) -> None:
        """Stop sending *track*."""
        if track not in self._published:
            raise TopologyError("track is not published")
        self._published.remove(track)
        self._track_unpublished(track)

    def _check_target(self, to: str | None) -> None:
        if to is not None and to not in self._participants:
            raise TopologyError(f"unknown participant {to!r}")

    async def events(self) -> AsyncIterator[RoomEvent]:
        """Room events until the room is closed."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)
                return
            yield event

    async def start(self) -> None:
        """Report the participants already there, open the media sessions, follow the room.

        A :class:`~rtckit.topology.base.ParticipantJoined` event is emitted for each
        participant already present, then for each newcomer.
        """
        self._take_peers()
        await self._connect_all()
        name = f"{self.TOPOLOGY}-room-reader-{self._local_id}"
        self._reader = asyncio.create_task(self._read(), name=name)

    async def aclose(self) -> None:
        """Close every media session (the signaling client stays open). Idempotent."""
        await self._close("left")

    # -- hooks ------------------------------------------------------------------------------

    def _is_participant(self, peer_id: str) -> bool:
        """Whether *peer_id* is a person of the room (a server peer is not)."""
        return peer_id != self._local_id

    def _track_published(self, track: Any) -> None:
        """*track* was added to the published ones: send it."""
        raise NotImplementedError

    def _track_unpublished(self, track: Any) -> None:
        """*track* was removed from the published ones: stop sending it."""
        raise NotImplementedError

    async def _connect_all(self) -> None:
        """Open the media sessions the room needs now (after start or a rejoin)."""
        raise NotImplementedError

    async def _disconnect_all(self) -> None:
        """Close every media session (closing, or rejoining with a new peer id)."""
        raise NotImplementedError

    async def _participant_joined(self, peer_id: str) -> None:
        """*peer_id* joined (after :class:`ParticipantJoined` is reported)."""

    async def _participant_left(self, peer_id: str) -> None:
        """*peer_id* left (before :class:`ParticipantLeft` is reported)."""

    async def _other_peer(self, event: sp.PeerJoined | sp.PeerLeft) -> None:
        """A peer that is not a participant (a server peer) joined or left."""

    async def _relayed(self, event: sp.Relayed) -> None:
        """A message relayed from a peer (an offer, answer, candidate or restart)."""

    # -- internals --------------------------------------------------------------------------

    def _emit(self, event: RoomEvent) -> None:
        self._events.put_nowait(event)

    def _take_peers(self) -> None:
        """Report the signaling client's participants that are new; refresh the others."""
        for peer_id, info in self.client.peers.items():
            if not self._is_participant(peer_id):
                continue
            if peer_id not in self._participants:
                self._emit(ParticipantJoined(participant_id=peer_id, metadata=info.metadata))
            self._participants[peer_id] = info.metadata

    async def _read(self) -> None:
        reason = "signaling closed"
        try:
            async for event in self.client:
                try:
                    await self._on_signaling(event)
                except Exception as exc:  # noqa: BLE001 - a peer's bad message is dropped
                    log_dropped(logger, f"{self.TOPOLOGY} room {self._local_id}", event, exc)
        except SignalingError as exc:
            reason = f"signaling failed: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: close the room loudly rather than hang
            logger.exception("%s room reader failed", self.TOPOLOGY)
            reason = "error"
        await self._close(reason)

    async def _on_signaling(self, event: object) -> None:
        if isinstance(event, sp.PeerJoined):
            peer_id = event.peer.id
            if peer_id == self._local_id:
                return
            if not self._is_participant(peer_id):
                await self._other_peer(event)
                return
            self._participants[peer_id] = event.peer.metadata
            self._emit(ParticipantJoined(participant_id=peer_id, metadata=event.peer.metadata))
            await self._participant_joined(peer_id)
        elif isinstance(event, sp.PeerLeft):
            if not self._is_participant(event.peer_id):
                await self._other_peer(event)
            elif self._participants.pop(event.peer_id, _MISSING) is not _MISSING:
                await self._participant_left(event.peer_id)
                self._emit(ParticipantLeft(participant_id=event.peer_id, reason=event.reason))
        elif isinstance(event, Reconnected) and not event.resumed:
            await self._rejoined()
        elif isinstance(event, sp.Relayed):
            await self._relayed(event)

    async def _rejoined(self) -> None:
        """Our signaling session expired and we joined again, with a new peer id: close every
        session, report who left meanwhile and who came, and connect again."""
        await self._disconnect_all()
        for peer_id in list(self._participants):
            if peer_id not in self.client.peers:
                del self._participants[peer_id]
                await self._participant_left(peer_id)
                self._emit(ParticipantLeft(participant_id=peer_id, reason="rejoined"))
        self._local_id = self.client.peer_id
        self._take_peers()
        await self._connect_all()

    async def _close(self, reason: str) -> None:
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            reader = self._reader
            if reader is not None and reader is not asyncio.current_task():
                reader.cancel()
                await asyncio.wait([reader])
            await asyncio.shield(self._disconnect_all())
            self._emit(RoomClosed(reason=reason))
            self._events.put_nowait(None)
        finally:
            self._closing.set_result(None)
