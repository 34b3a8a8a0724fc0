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

Signaling mapping: a session's messages become the signaling protocol's ``offer``,
``answer``, ``candidate``, ``end-of-candidates`` and ``restart``, with the session's
connection generation in the ``session`` field as ``"g<generation>"`` (ASCII digits, at most
nine): :func:`generation_from_session` refuses anything else with a
:class:`~rtckit.errors.RemoteProtocolError`.

Nothing a peer sends ends a room's reader: every reader (this module's, the SFU's and the
MCU's, client and server side) handles each message on its own, and a message it cannot
handle is logged as one warning line naming the sender (:func:`log_dropped`) and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay

from rtckit.errors import RemoteProtocolError, SignalingError, TopologyError
from rtckit.ice import IceConfig
from rtckit.peer.events import (
    ConnectionStateChanged,
    DataMessage,
    SessionClosed,
    TrackAdded,
    TrackRemoved,
)
from rtckit.peer.negotiation import polite_for
from rtckit.peer.session import PeerSession, SessionConfig
from rtckit.peer.signaller import Description, PeerCandidate, PeerMessage, PeerRestart
from rtckit.signaling import protocol as sp
from rtckit.signaling.client import Reconnected, SignalingClient
from rtckit.topology.base import (
    ParticipantConnectionChanged,
    ParticipantJoined,
    ParticipantLeft,
    RoomClosed,
    RoomDataMessage,
    RoomEvent,
    Topology,
    TrackPublished,
    TrackUnpublished,
)

__all__ = [
    "ROOM_CHANNEL_ID",
    "ROOM_CHANNEL_LABEL",
    "MeshRoom",
    "MeshServerStrategy",
    "SignalingSignaller",
    "generation_from_session",
    "log_dropped",
    "open_mesh",
    "peer_message_from_signaling",
]

logger = logging.getLogger(__name__)

ROOM_CHANNEL_LABEL = "rtckit-room"
ROOM_CHANNEL_ID = 1001


_MAX_GENERATION_DIGITS = 9
_MAX_LOGGED = 200  # characters of an error (which may quote a peer's message) in a log line


def generation_from_session(session: str | None) -> int:
    """The connection generation carried in a signaling ``session`` field (``"g3"`` -> 3).

    No ``session`` is generation 0. Anything but ``"g"`` and one to nine ASCII digits raises
    :class:`~rtckit.errors.RemoteProtocolError` (``str.isdigit`` alone would let ``"g\u00b2"``
    through to ``int()``, which raises ``ValueError``).
    """
    if session is None:
        return 0
    digits = session[1:]
    if (
        session[:1] == "g"
        and 0 < len(digits) <= _MAX_GENERATION_DIGITS
        and digits.isascii()
        and digits.isdigit()
    ):
        return int(digits)
    raise RemoteProtocolError(
        f"session {session[:40]!r} is not 'g' and 1 to {_MAX_GENERATION_DIGITS} digits",
        code=sp.ErrorCode.BAD_MESSAGE,
    )


def log_dropped(
    log: logging.Logger, where: str, event: object, exc: Exception, *, sender: str | None = None
) -> None:
    """Log, on one line and without a traceback, an *event* that could not be handled.

    Readers call it for each message they drop, so that a peer's bad message costs one line
    and never ends the reader. *sender* defaults to the event's own ``sender``. The error text
    is cut to one short line: it may quote what the peer sent.
    """
    sender = sender or getattr(event, "sender", None)
    kind = getattr(event, "type", None) or type(event).__name__
    text = " ".join(str(exc).split())
    if len(text) > _MAX_LOGGED:
        text = text[:_MAX_LOGGED] + "..."
    log.warning(
        "%s: dropped %s from %s: %s: %s", where, kind, sender or "?", type(exc).__name__, text
    )


class SignalingSignaller:
    """A :class:`~rtckit.peer.signaller.Signaller` over an rtckit signaling client, to one peer."""

    def __init__(self, client: SignalingClient, remote_id: str) -> None:
        self.client = client
        self.remote_id = remote_id

    @property
    def connected(self) -> bool:
        """Whether the signaling connection is up."""
        return self.client.connected

    async def send(self, message: PeerMessage) -> None:
        """Send *message* to the remote peer as a signaling protocol message."""
        to, session = self.remote_id, f"g{message.generation}"
        if isinstance(message, Description):
            if message.type == "offer":
                await self.client.send_offer(to, message.sdp, session=session)
            else:
                await self.client.send_answer(to, message.sdp, session=session)
        elif isinstance(message, PeerCandidate):
            if message.candidate:
                await self.client.send_candidate(
                    to,
                    message.candidate,
                    sdp_mid=message.sdp_mid,
                    sdp_mline_index=message.sdp_mline_index,
                    session=session,
                )
            else:
                await self.client.send_end_of_candidates(to, session=session)
        else:
            await self.client.send_restart(to, session=session)


def peer_message_from_signaling(message: sp.Message) -> PeerMessage | None:
    """The peer-session message carried by a signaling message, or ``None`` if none."""
    if isinstance(message, sp.Offer | sp.Answer):
        return Description(
            type=message.type,
            sdp=message.sdp,
            generation=generation_from_session(message.session),
        )
    if isinstance(message, sp.Candidate):
        return PeerCandidate(
            candidate=message.candidate,
            sdp_mid=message.sdp_mid,
            sdp_mline_index=message.sdp_mline_index,
            generation=generation_from_session(message.session),
        )
    if isinstance(message, sp.EndOfCandidates):
        return PeerCandidate(candidate="", generation=generation_from_session(message.session))
    if isinstance(message, sp.Restart):
        return PeerRestart(generation=generation_from_session(message.session))
    return None


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


class MeshRoom:
    """A mesh room on a joined :class:`~rtckit.signaling.client.SignalingClient`.

    See the module documentation.
    """

    def __init__(self, client: SignalingClient, *, session_config: SessionConfig) -> None:
        self.client = client
        self.session_config = session_config
        self._relay = MediaRelay()
        self._sources: dict[MediaStreamTrack, _SharedSource] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self._links: dict[str, _Link] = {}
        self._participants: dict[str, Mapping[str, Any] | None] = {}
        self._published: list[MediaStreamTrack] = []
        self._events: asyncio.Queue[RoomEvent | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._local_id = client.peer_id

    # -- Room API ---------------------------------------------------------------------------

    @property
    def topology(self) -> Topology:
        """Always ``Topology.MESH``."""
        return Topology.MESH

    @property
    def local_id(self) -> str:
        """This participant's peer id (changes if the signaling session had to be rejoined)."""
        return self._local_id

    @property
    def participants(self) -> Mapping[str, Mapping[str, Any] | None]:
        """The other participants (peer id -> metadata)."""
        return dict(self._participants)

    @property
    def sessions(self) -> Mapping[str, PeerSession]:
        """The open peer sessions, by remote peer id (N-1 of them)."""
        return {peer_id: link.session for peer_id, link in self._links.items()}

    async def publish(self, track: MediaStreamTrack) -> None:
        """Send *track* to every participant, present and future."""
        if track in self._published:
            raise TopologyError("track already published")
        self._published.append(track)
        self._sources[track] = _SharedSource(track)
        for link in self._links.values():
            self._add_to(link, track)

    async def unpublish(self, track: MediaStreamTrack) -> None:
        """Stop sending *track* to everyone."""
        if track not in self._published:
            raise TopologyError("track is not published")
        self._published.remove(track)
        for link in self._links.values():
            proxy = link.proxies.pop(track, None)
            if proxy is not None and not link.session.closed:
                link.session.remove_track(proxy)
                proxy.stop()
        self._sources.pop(track).stop()

    def send(self, data: str | bytes, *, to: str | None = None) -> None:
        """Send a data message to every participant, or to *to* only (buffered until open)."""
        if to is not None and to not in self._participants:
            raise TopologyError(f"unknown participant {to!r}")
        link = None if to is None else self._links.get(to)
        targets = list(self._links.values()) if to is None else [link] if link else []
        for link in targets:
            if not link.session.closed:
                link.session.send(ROOM_CHANNEL_LABEL, data)

    async def events(self) -> AsyncIterator[RoomEvent]:
        """Room events until the room is closed."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)
                return
            yield event

    async def start(self) -> None:
        """Connect to every participant already there and follow the room.

        A :class:`~rtckit.topology.base.ParticipantJoined` event is emitted for each
        participant already present, then for each newcomer.
        """
        for peer_id, info in self.client.peers.items():
            self._participants[peer_id] = info.metadata
            self._emit(ParticipantJoined(participant_id=peer_id, metadata=info.metadata))
            await self._connect(peer_id)
        self._reader = asyncio.create_task(self._read(), name=f"mesh-reader-{self._local_id}")

    async def aclose(self) -> None:
        """Close every session (the signaling client stays open). Idempotent."""
        await self._close("left")

    # -- internals --------------------------------------------------------------------------

    def _emit(self, event: RoomEvent) -> None:
        self._events.put_nowait(event)

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

    async def _read(self) -> None:
        reason = "signaling closed"
        try:
            async for event in self.client:
                try:
                    await self._on_signaling(event)
                except Exception as exc:  # noqa: BLE001 - a peer's bad message is dropped
                    log_dropped(logger, f"mesh room {self._local_id}", event, exc)
        except SignalingError as exc:
            reason = f"signaling failed: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: close the room loudly rather than hang
            logger.exception("mesh room reader failed")
            reason = "error"
        await self._close(reason)

    async def _on_signaling(self, event: object) -> None:
        if isinstance(event, sp.PeerJoined):
            peer_id = event.peer.id
            if peer_id == self._local_id:
                return
            self._participants[peer_id] = event.peer.metadata
            self._emit(ParticipantJoined(participant_id=peer_id, metadata=event.peer.metadata))
            await self._connect(peer_id)
        elif isinstance(event, sp.PeerLeft):
            if self._participants.pop(event.peer_id, ...) is not ...:
                await self._disconnect(event.peer_id)
                self._emit(ParticipantLeft(participant_id=event.peer_id, reason=event.reason))
        elif isinstance(event, Reconnected) and not event.resumed:
            await self._rejoined()
        elif isinstance(event, sp.Relayed):
            message = peer_message_from_signaling(event)
            sender = event.sender
            if message is None or sender is None:
                return
            if sender not in self._links:
                if sender not in self.client.peers:
                    logger.debug("message from unknown peer %s dropped", sender)
                    return
                self._participants.setdefault(sender, self.client.peers[sender].metadata)
                await self._connect(sender)
            await self._links[sender].session.receive(message)

    async def _rejoined(self) -> None:
        """Our signaling session expired and we joined again: reconnect to everyone."""
        for peer_id in list(self._links):
            await self._disconnect(peer_id)
        for peer_id in list(self._participants):
            if peer_id not in self.client.peers:
                del self._participants[peer_id]
                self._emit(ParticipantLeft(participant_id=peer_id, reason="rejoined"))
        self._local_id = self.client.peer_id
        for peer_id, info in self.client.peers.items():
            if peer_id not in self._participants:
                self._emit(ParticipantJoined(participant_id=peer_id, metadata=info.metadata))
            self._participants[peer_id] = info.metadata
            await self._connect(peer_id)

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
            for peer_id in list(self._links):
                await self._disconnect(peer_id)
            if self._finishing:
                await asyncio.wait(set(self._finishing))
            self._emit(RoomClosed(reason=reason))
            self._events.put_nowait(None)
        finally:
            self._closing.set_result(None)


async def open_mesh(
    client: SignalingClient, *, session_config: SessionConfig | None = None, **options: Any
) -> MeshRoom:
    """The mesh :class:`~rtckit.topology.base.ClientStrategy`: start a :class:`MeshRoom`.

    Without *session_config*, sessions use the ICE servers of the server's ``welcome`` (none
    if it gave none).
    """
    if options:
        raise TopologyError(f"unknown mesh options {sorted(options)}")
    if session_config is None:
        servers = client.ice_servers
        ice = IceConfig(servers=servers) if servers else IceConfig()
        session_config = SessionConfig(ice=ice)
    room = MeshRoom(client, session_config=session_config)
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
