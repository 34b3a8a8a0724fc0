"""The client side shared by SFU and MCU rooms: one peer session to the room's server peer.

In both topologies a participant holds a single :class:`~rtckit.peer.session.PeerSession` to
the server's peer (``rtckit-sfu`` or ``rtckit-mcu``), polite (the server offers first), with the
room's data channel on it; the other participants are known from signaling only. What differs
is what the server's tracks and data messages mean: subclasses implement the hooks
:meth:`ServerSessionRoom._on_media`, :meth:`ServerSessionRoom._on_room_data`,
:meth:`ServerSessionRoom._end_remote_tracks` and (optionally)
:meth:`ServerSessionRoom._participant_gone`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiortc import MediaStreamTrack

from rtckit.errors import PeerError, SignalingError, TopologyError
from rtckit.peer.events import (
    ConnectionStateChanged,
    DataMessage,
    TrackAdded,
    TrackRemoved,
)
from rtckit.peer.session import PeerSession, SessionConfig
from rtckit.signaling import protocol as sp
from rtckit.signaling.client import Reconnected, SignalingClient
from rtckit.topology.base import (
    ParticipantConnectionChanged,
    ParticipantJoined,
    ParticipantLeft,
    RoomClosed,
    RoomEvent,
    Topology,
)
from rtckit.topology.mesh import (
    ROOM_CHANNEL_ID,
    ROOM_CHANNEL_LABEL,
    SignalingSignaller,
    log_dropped,
    peer_message_from_signaling,
)

__all__ = ["ServerSessionRoom", "open_envelope", "seal_envelope", "send_room_data"]

logger = logging.getLogger(__name__)

_MISSING: Any = object()


def seal_envelope(peer: str, data: str | bytes) -> str | bytes:
    """Wrap a room data message with a peer id (target from a client, origin from the SFU)."""
    if isinstance(data, bytes):
        return peer.encode() + b"\x00" + data
    return f"{peer}\x00{data}"


def open_envelope(message: str | bytes) -> tuple[str, str | bytes] | None:
    """The ``(peer id, data)`` of an enveloped message, or ``None`` if it has no envelope."""
    if isinstance(message, bytes):
        peer_b, sep, data = message.partition(b"\x00")
        if not sep:
            return None
        try:
            return peer_b.decode(), data
        except UnicodeDecodeError:
            return None
    peer_s, sep_s, text = message.partition("\x00")
    return (peer_s, text) if sep_s else None


def send_room_data(session: PeerSession, data: str | bytes) -> bool:
    """Send *data* on *session*'s room channel; ``False`` if it was dropped.

    A session that is closed, or whose channel never opened and whose buffer is full (a
    participant that never completes its connection), drops the message: the server relays
    to every participant in turn, and one that takes nothing must not stop the others.
    """
    if session.closed:
        return False
    try:
        session.send(ROOM_CHANNEL_LABEL, data)
    except PeerError as exc:
        logger.debug("%s: room message dropped: %s", session.name, exc)
        return False
    return True


class ServerSessionRoom:
    """A room whose media goes through one session to the server peer *server_id*."""

    #: The room's topology (set by each subclass).
    TOPOLOGY: Topology

    def __init__(
        self, client: SignalingClient, *, session_config: SessionConfig, server_id: str
    ) -> None:
        self.client = client
        self.session_config = session_config
        self.server_id = server_id
        self._session: PeerSession | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._participants: dict[str, Mapping[str, Any] | None] = {}
        self._published: list[MediaStreamTrack] = []
        self._events: asyncio.Queue[RoomEvent | None] = asyncio.Queue()
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
        """The other participants (peer id -> metadata); the server is not one."""
        return dict(self._participants)

    @property
    def session(self) -> PeerSession | None:
        """The session to the server (``None`` while the server is not in the room)."""
        return self._session

    async def publish(self, track: MediaStreamTrack) -> None:
        """Send *track* to the server."""
        if track in self._published:
            raise TopologyError("track already published")
        self._published.append(track)
        if self._session is not None and not self._session.closed:
            self._session.add_track(track)

    async def unpublish(self, track: MediaStreamTrack) -> None:
        """Stop sending *track*."""
        if track not in self._published:
            raise TopologyError("track is not published")
        self._published.remove(track)
        if self._session is not None and not self._session.closed:
            self._session.remove_track(track)

    def send(self, data: str | bytes, *, to: str | None = None) -> None:
        """Send a data message to every participant, or to *to* only (relayed by the server)."""
        if to is not None and to not in self._participants:
            raise TopologyError(f"unknown participant {to!r}")
        if self._session is not None and not self._session.closed:
            self._session.send(ROOM_CHANNEL_LABEL, seal_envelope(to or "", data))

    async def events(self) -> AsyncIterator[RoomEvent]:
        """Room events until the room is closed."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)
                return
            yield event

    async def start(self) -> None:
        """Report the participants present; connect to the server now or once it is there."""
        self._take_peers()
        if self.server_id in self.client.peers:
            await self._connect()
        name = f"{self.TOPOLOGY}-room-{self._local_id}"
        self._reader = asyncio.create_task(self._read(), name=name)

    async def aclose(self) -> None:
        """Close the session to the server (the signaling client stays open). Idempotent."""
        await self._close("left")

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

    # -- internals --------------------------------------------------------------------------

    def _emit(self, event: RoomEvent) -> None:
        self._events.put_nowait(event)

    def _take_peers(self) -> None:
        """Report the signaling client's peers that are new (the server is not a person)."""
        for peer_id, info in self.client.peers.items():
            if peer_id == self.server_id:
                continue
            if peer_id not in self._participants:
                self._emit(ParticipantJoined(participant_id=peer_id, metadata=info.metadata))
            self._participants[peer_id] = info.metadata

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
        except Exception:
            logger.exception("%s room reader failed", self.TOPOLOGY)
            reason = "error"
        await self._close(reason)

    async def _on_signaling(self, event: object) -> None:
        if isinstance(event, sp.PeerJoined):
            peer_id = event.peer.id
            if peer_id == self.server_id:
                await self._connect()
            elif peer_id != self._local_id:
                self._participants[peer_id] = event.peer.metadata
                self._emit(ParticipantJoined(participant_id=peer_id, metadata=event.peer.metadata))
        elif isinstance(event, sp.PeerLeft):
            if event.peer_id == self.server_id:
                await self._disconnect()
            elif self._participants.pop(event.peer_id, _MISSING) is not _MISSING:
                self._participant_gone(event.peer_id)
                self._emit(ParticipantLeft(participant_id=event.peer_id, reason=event.reason))
        elif isinstance(event, Reconnected) and not event.resumed:
            # a new signaling session: a new peer id, and a new session to the server
            await self._disconnect()
            for peer_id in list(self._participants):
                if peer_id not in self.client.peers:
                    del self._participants[peer_id]
                    self._participant_gone(peer_id)
                    self._emit(ParticipantLeft(participant_id=peer_id, reason="rejoined"))
            self._local_id = self.client.peer_id
            self._take_peers()
            if self.server_id in self.client.peers:
                await self._connect()
        elif isinstance(event, sp.Relayed) and event.sender == self.server_id:
            message = peer_message_from_signaling(event)
            if message is not None and self._session is not None:
                await self._session.receive(message)

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
            await asyncio.shield(self._disconnect())
            self._emit(RoomClosed(reason=reason))
            self._events.put_nowait(None)
        finally:
            self._closing.set_result(None)
