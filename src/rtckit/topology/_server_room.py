"""The client side shared by SFU and MCU rooms: one peer session to the room's server peer.

In both topologies a participant holds a single :class:`~rtckit.peer.session.PeerSession` to
the server's peer (``rtckit-sfu`` or ``rtckit-mcu``), polite (the server offers first), with the
room's data channel on it; the other participants are known from signaling only (the
bookkeeping, reader, closing and rejoining are :class:`~rtckit.topology._room.ClientRoom`'s).
What differs is what the server's tracks and data messages mean: subclasses implement the hooks
:meth:`ServerSessionRoom._on_media`, :meth:`ServerSessionRoom._on_room_data`,
:meth:`ServerSessionRoom._end_remote_tracks` and (optionally)
:meth:`ServerSessionRoom._participant_gone`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rtckit.peer.events import (
    ConnectionStateChanged,
    DataMessage,
    TrackAdded,
    TrackRemoved,
)
from rtckit.peer.session import PeerSession, SessionConfig
from rtckit.signaling import protocol as sp
from rtckit.signaling.client import SignalingClient
from rtckit.topology._room import ClientRoom
from rtckit.topology.base import ParticipantConnectionChanged
from rtckit.topology.bridge import (
    ROOM_CHANNEL_ID,
    ROOM_CHANNEL_LABEL,
    SignalingSignaller,
    log_dropped,
    open_envelope,
    peer_message_from_signaling,
    seal_envelope,
    send_room_data,
)

__all__ = ["ServerSessionRoom", "open_envelope", "seal_envelope", "send_room_data"]

logger = logging.getLogger(__name__)


class ServerSessionRoom(ClientRoom):
    """A room whose media goes through one session to the server peer *server_id*."""

    def __init__(
        self, client: SignalingClient, *, session_config: SessionConfig, server_id: str
    ) -> None:
        super().__init__(client)
        self.session_config = session_config
        self.server_id = server_id
        self._session: PeerSession | None = None
        self._pump_task: asyncio.Task[None] | None = None

    # -- Room API ---------------------------------------------------------------------------

    @property
    def session(self) -> PeerSession | None:
        """The session to the server (``None`` while the server is not in the room)."""
        return self._session

    def send(self, data: str | bytes, *, to: str | None = None) -> None:
        """Send a data message to every participant, or to *to* only (relayed by the server)."""
        self._check_target(to)
        if self._session is not None and not self._session.closed:
            self._session.send(ROOM_CHANNEL_LABEL, seal_envelope(to or "", data))

    # -- hooks ------------------------------------------------------------------------------

    def _on_media(self, session: PeerSession, event: TrackAdded | TrackRemoved) -> None:
        """A track from the server came or went."""
        raise NotImplementedError

    def _on_room_data(self, data: str | bytes) -> None:
        """A message on the room's data channel (an envelope from the server)."""
        raise NotImplementedError

    def _end_remote_tracks(self) -> None:
        """The session to the server is gone: end every track received on it."""
        raise NotImplementedError

    def _participant_gone(self, peer_id: str) -> None:
        """*peer_id* left the room (before :class:`ParticipantLeft` is reported)."""

    # -- ClientRoom hooks -------------------------------------------------------------------

    def _is_participant(self, peer_id: str) -> bool:
        return peer_id not in (self._local_id, self.server_id)

    def _track_published(self, track: Any) -> None:
        if self._session is not None and not self._session.closed:
            self._session.add_track(track)

    def _track_unpublished(self, track: Any) -> None:
        if self._session is not None and not self._session.closed:
            self._session.remove_track(track)

    async def _connect_all(self) -> None:
        if self.server_id in self.client.peers:
            await self._connect()

    async def _disconnect_all(self) -> None:
        await self._disconnect()

    async def _participant_left(self, peer_id: str) -> None:
        self._participant_gone(peer_id)

    async def _other_peer(self, event: sp.PeerJoined | sp.PeerLeft) -> None:
        if isinstance(event, sp.PeerJoined):
            if event.peer.id == self.server_id:
                await self._connect()
        elif event.peer_id == self.server_id:
            await self._disconnect()

    async def _relayed(self, event: sp.Relayed) -> None:
        if event.sender != self.server_id:
            return
        message = peer_message_from_signaling(event)
        if message is not None and self._session is not None:
            await self._session.receive(message)

    # -- internals --------------------------------------------------------------------------

    async def _connect(self) -> None:
        if self._session is not None:
            return
        session = PeerSession(
            SignalingSignaller(self.client, self.server_id),
            polite=True,  # the server offers first
            config=self.session_config,
            name=f"{self._local_id}->{self.server_id}",
        )
        self._session = session
        for track in self._published:
            session.add_track(track)
        session.create_data_channel(ROOM_CHANNEL_LABEL, negotiated_id=ROOM_CHANNEL_ID)
        await session.start()
        self._pump_task = asyncio.create_task(
            self._pump(session), name=f"{self.TOPOLOGY}-pump-{session.name}"
        )

    async def _disconnect(self) -> None:
        session, self._session = self._session, None
        pump, self._pump_task = self._pump_task, None
        self._end_remote_tracks()
        if session is not None:
            await asyncio.shield(session.close())
        if pump is not None and pump is not asyncio.current_task():
            await asyncio.wait([pump])

    async def _pump(self, session: PeerSession) -> None:
        async for event in session.events():
            try:
                self._on_session_event(session, event)
            except Exception as exc:  # noqa: BLE001 - one bad event must not end the pump
                log_dropped(logger, f"{self.TOPOLOGY} room {self._local_id}", event, exc)

    def _on_session_event(self, session: PeerSession, event: object) -> None:
        if isinstance(event, TrackAdded | TrackRemoved):
            self._on_media(session, event)
        elif isinstance(event, DataMessage) and event.label == ROOM_CHANNEL_LABEL:
            self._on_room_data(event.data)
        elif isinstance(event, ConnectionStateChanged):
            self._emit(
                ParticipantConnectionChanged(participant_id=self.server_id, state=event.state)
            )
