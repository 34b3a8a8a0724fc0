"""The mesh topology: every participant opens a peer session to every other one.

Client side (:class:`MeshRoom`, opened by :func:`~rtckit.topology.base.join_room` when the
server says the room is ``mesh``): for N participants each one holds N-1
:class:`~rtckit.peer.session.PeerSession` objects. Roles are deterministic: of two peers, the
one with the smaller peer id is polite (:func:`~rtckit.peer.negotiation.polite_for`), the other
is impolite and makes the first offer. Participants may join and leave at any time; a peer
that rejoins (with a new peer id, after its signaling session expired) reconnects to everyone.

Published tracks are shared between the N-1 sessions through aiortc's ``MediaRelay`` (one
source, one proxy per session); each session still encodes its own copy, as browsers do.
Room data messages travel on a pre-negotiated data channel (label ``rtckit-room``, id 1001).

Server side (:class:`MeshServerStrategy`): nothing but signaling.

Signaling, the room's data channel and the readers' handling of bad messages are the
ones of every topology (:mod:`rtckit.topology.bridge`); participants, events, the reader,
closing and rejoining are :class:`~rtckit.topology._room.ClientRoom`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay

from rtckit._deprecated import renamed
from rtckit.errors import TopologyError
from rtckit.peer.events import (
    ConnectionStateChanged,
    DataMessage,
    SessionClosed,
    TrackAdded,
    TrackRemoved,
)
from rtckit.peer.negotiation import polite_for
from rtckit.peer.session import PeerSession, SessionConfig
from rtckit.signaling import protocol as sp
from rtckit.signaling.client import SignalingClient
from rtckit.topology import bridge
from rtckit.topology._room import ClientRoom
from rtckit.topology.base import (
    ParticipantConnectionChanged,
    RoomDataMessage,
    Topology,
    TrackPublished,
    TrackUnpublished,
)
from rtckit.topology.bridge import (
    ROOM_CHANNEL_ID,
    ROOM_CHANNEL_LABEL,
    SignalingSignaller,
    peer_message_from_signaling,
    session_config_from_welcome,
)

__all__ = ["MeshRoom", "MeshServerStrategy", "open_mesh"]

# Moved to rtckit.topology.bridge: they still import from here, with a DeprecationWarning.
__getattr__ = renamed(
    __name__,
    {
        name: (f"rtckit.topology.bridge.{name}", getattr(bridge, name))
        for name in ("generation_from_session", "log_dropped")
    },
)

logger = logging.getLogger(__name__)


class _SharedSource(MediaStreamTrack):
    """Feeds ``MediaRelay`` frames every encoder can read at once (video in yuv420p).

    aiortc's VP8/H264 encoders run in executor threads and call ``frame.reformat()`` on
    frames that are not yuv420p. With ``MediaRelay`` several encoders get the same frame
    object, and concurrent ``reformat`` calls on one PyAV frame crash the process
    (segmentation fault, seen with aiortc 1.16 / PyAV 14). Converting once here avoids it.
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source

    async def recv(self) -> Any:
        frame = await self._source.recv()
        if isinstance(frame, av.VideoFrame) and frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        return frame

    def stop(self) -> None:
        super().stop()


class _Link:
    """One session to one remote participant, with its event pump and track proxies."""

    def __init__(self, peer_id: str, session: PeerSession) -> None:
        self.peer_id = peer_id
        self.session = session
        self.proxies: dict[MediaStreamTrack, MediaStreamTrack] = {}
        self.pump: asyncio.Task[None] | None = None


class MeshRoom(ClientRoom):
    """A mesh room on a joined :class:`~rtckit.signaling.client.SignalingClient`.

    See the module documentation.
    """

    TOPOLOGY = Topology.MESH

    def __init__(self, client: SignalingClient, *, session_config: SessionConfig) -> None:
        super().__init__(client)
        self.session_config = session_config
        self._relay = MediaRelay()
        self._sources: dict[MediaStreamTrack, _SharedSource] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self._links: dict[str, _Link] = {}

    # -- Room API ---------------------------------------------------------------------------

    @property
    def sessions(self) -> Mapping[str, PeerSession]:
        """The open peer sessions, by remote peer id (N-1 of them)."""
        return {peer_id: link.session for peer_id, link in self._links.items()}

    def send(self, data: str | bytes, *, to: str | None = None) -> None:
        """Send a data message to every participant, or to *to* only (buffered until open)."""
        self._check_target(to)
        link = None if to is None else self._links.get(to)
        targets = list(self._links.values()) if to is None else [link] if link else []
        for link in targets:
            if not link.session.closed:
                link.session.send(ROOM_CHANNEL_LABEL, data)

    # -- ClientRoom hooks -------------------------------------------------------------------

    def _track_published(self, track: MediaStreamTrack) -> None:
        self._sources[track] = _SharedSource(track)
        for link in self._links.values():
            self._add_to(link, track)

    def _track_unpublished(self, track: MediaStreamTrack) -> None:
        for link in self._links.values():
            proxy = link.proxies.pop(track, None)
            if proxy is not None and not link.session.closed:
                link.session.remove_track(proxy)
                proxy.stop()
        self._sources.pop(track).stop()

    async def _connect_all(self) -> None:
        for peer_id in list(self._participants):
            await self._connect(peer_id)

    async def _disconnect_all(self) -> None:
        for peer_id in list(self._links):
            await self._disconnect(peer_id)
        if self._finishing:
            await asyncio.wait(set(self._finishing))

    async def _participant_joined(self, peer_id: str) -> None:
        await self._connect(peer_id)

    async def _participant_left(self, peer_id: str) -> None:
        await self._disconnect(peer_id)

    async def _relayed(self, event: sp.Relayed) -> None:
        message = peer_message_from_signaling(event)
        sender = event.sender
        if message is None or sender is None:
            return
        if sender not in self._links:
            if sender not in self.client.peers or not self._is_participant(sender):
                logger.debug("message from unknown peer %s dropped", sender)
                return
            self._participants.setdefault(sender, self.client.peers[sender].metadata)
            await self._connect(sender)
        await self._links[sender].session.receive(message)

    # -- internals --------------------------------------------------------------------------

    def _add_to(self, link: _Link, track: MediaStreamTrack) -> None:
        proxy = self._relay.subscribe(self._sources[track], buffered=False)
        link.proxies[track] = proxy
        link.session.add_track(proxy)

    async def _connect(self, peer_id: str) -> None:
        if peer_id in self._links or peer_id == self._local_id:
            return
        session = PeerSession(
            SignalingSignaller(self.client, peer_id),
            polite=polite_for(self._local_id, peer_id),
            config=self.session_config,
            name=f"{self._local_id}->{peer_id}",
        )
        link = _Link(peer_id, session)
        self._links[peer_id] = link
        for track in self._published:
            self._add_to(link, track)
        session.create_data_channel(ROOM_CHANNEL_LABEL, negotiated_id=ROOM_CHANNEL_ID)
        await session.start()
        link.pump = asyncio.create_task(self._pump(link), name=f"mesh-pump-{session.name}")

    async def _disconnect(self, peer_id: str) -> None:
        link = self._links.pop(peer_id, None)
        if link is None:
            return
        # In its own task: if our caller is cancelled half-way (the room closing while it
        # handles a peer-left), the session is still closed and its pump still awaited.
        task = asyncio.create_task(self._finish(link), name=f"mesh-finish-{link.session.name}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        await asyncio.shield(task)

    async def _finish(self, link: _Link) -> None:
        await link.session.close()
        for proxy in link.proxies.values():
            proxy.stop()
        if link.pump is not None and link.pump is not asyncio.current_task():
            await asyncio.wait([link.pump])  # ends with the session

    async def _pump(self, link: _Link) -> None:
        peer_id = link.peer_id
        async for event in link.session.events():
            if isinstance(event, TrackAdded):
                self._emit(
                    TrackPublished(participant_id=peer_id, track=event.track, kind=event.kind)
                )
            elif isinstance(event, TrackRemoved):
                self._emit(
                    TrackUnpublished(participant_id=peer_id, track=event.track, kind=event.kind)
                )
            elif isinstance(event, DataMessage) and event.label == ROOM_CHANNEL_LABEL:
                self._emit(RoomDataMessage(participant_id=peer_id, data=event.data))
            elif isinstance(event, ConnectionStateChanged):
                self._emit(ParticipantConnectionChanged(participant_id=peer_id, state=event.state))
            elif (
                isinstance(event, SessionClosed)
                and event.reason == "peer-timeout"
                and self._links.get(peer_id) is link
            ):
                # The peer vanished; signaling will (or did) report it as left too.
                del self._links[peer_id]
                for proxy in link.proxies.values():
                    proxy.stop()


async def open_mesh(
    client: SignalingClient, *, session_config: SessionConfig | None = None, **options: Any
) -> MeshRoom:
    """The mesh :class:`~rtckit.topology.base.ClientStrategy`: start a :class:`MeshRoom`.

    Without *session_config*, sessions use the ICE servers of the server's ``welcome`` (none
    if it gave none).
    """
    if options:
        raise TopologyError(f"unknown mesh options {sorted(options)}")
    room = MeshRoom(client, session_config=session_config or session_config_from_welcome(client))
    await room.start()
    return room


class MeshServerStrategy:
    """Mesh rooms need nothing from the server but signaling."""

    topology = Topology.MESH

    def __init__(self, hub: object = None) -> None:
        del hub  # signaling is all a mesh room needs

    async def start_room(self, room: str) -> None:
        """Nothing to start."""

    async def stop_room(self, room: str) -> None:
        """Nothing to stop."""
