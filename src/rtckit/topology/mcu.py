"""The MCU topology: every participant talks to the server, which mixes and composes.

Server side (:class:`McuServerStrategy`, started by
:class:`~rtckit.topology.strategies.RoomStrategies` for rooms whose topology is ``mcu``): the
server joins the room through the signaling protocol as the participant ``"rtckit-mcu"``
(:data:`~rtckit.topology.base.MCU_PEER_ID`, an in-process trusted
:class:`~rtckit.signaling.memory.MemoryTransport`)
and opens one :class:`~rtckit.peer.session.PeerSession` to every other participant. Each
participant sends its audio and video up; the server sends back the room's composite video
(the same encoded frames to everyone) and the participant's mix-minus audio, from one
:class:`~rtckit.mcu.engine.McuEngine` per room. A join or leave only redraws the grid; the
engine stops when the last participant leaves, and the server then leaves the room too (a
room created on demand closes; in a declared room the server comes back with the next
participant).

Send-only members (WHIP publishers, :mod:`rtckit.whip`): :meth:`McuServerStrategy.add_publisher`
answers the SDP offer of a connection that only publishes (it is in the room's signaling with
the metadata ``{"rtckit_role": "whip"}``, :data:`~rtckit.topology.base.PUBLISHER_ROLE`, and
the MCU opens no session to it). Its audio and video are decoded and mixed like a member's: a
cell in the grid, its voice in everyone's mix-minus; nothing is sent to it and it is never
renegotiated. The returned :class:`McuPublisher` adds trickled candidates, reports when the
connection ends (failed, closed, or not connected within *connect_timeout*) and ends it; its
cell leaves the grid then. The MCU stays in a room while a publisher is in it.

Viewers who are not participants (WHEP, :mod:`rtckit.whip.whep`):
:meth:`McuServerStrategy.add_viewer` answers a receive-only offer with the room's full mix, the
composite video and the common audio mix (every participant, not a mix-minus), the packets the
engine already encodes (:meth:`~rtckit.mcu.engine.McuEngine.add_output`): a viewer adds no
encoder. A viewer is not drawn, not mixed, not in signaling, and ends when the engine stops.

Client side (:class:`McuRoom`, opened by :func:`~rtckit.topology.base.join_room` when the
server says the room is ``mcu``): one session to the server, whatever the number of
participants. The application sees the same :class:`~rtckit.topology.base.Room` API and
events as in a mesh, except that remote media comes as exactly **one** video and **one**
audio track, published by the server's pseudo-participant :data:`~rtckit.topology.base.MCU_PEER_ID`;
:attr:`McuRoom.layout` lists the participants drawn in the composite, in grid order.

Roles: the server is the impolite side (it makes the first offer), clients are polite. Room
data messages travel on the pre-negotiated ``rtckit-room`` channel of each session; the
server relays them with the SFU's envelope (:func:`~rtckit.topology.bridge.seal_envelope`:
``"<to>\\x00<data>"`` up, ``"<from>\\x00<data>"`` down). The server's own messages on that
channel (sender :data:`~rtckit.topology.base.MCU_PEER_ID`) carry the layout,
``{"mcu-layout": [peer ids]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender

from rtckit._aiortc import on_keyframe_request
from rtckit.errors import NegotiationError, SignalingError, TopologyError
from rtckit.ice.candidates import CandidatePolicy
from rtckit.mcu.engine import McuConfig, McuEngine, McuOutput, McuParticipant
from rtckit.peer.events import (
    ConnectionReplaced,
    DataMessage,
    SessionClosed,
    TrackAdded,
    TrackRemoved,
)
from rtckit.peer.session import PeerSession, SessionConfig
from rtckit.signaling import protocol as sp
from rtckit.signaling.client import SignalingClient
from rtckit.topology._http_peer import (
    HttpPeer,
    answer_offer,
    new_peer_connection,
    receive_only,
)
from rtckit.topology._server_peer import ServerPeer
from rtckit.topology._server_room import ServerSessionRoom
from rtckit.topology.base import (
    MCU_PEER_ID,
    PUBLISHER_ROLE,
    RoomDataMessage,
    Topology,
    TrackPublished,
    TrackUnpublished,
)
from rtckit.topology.bridge import (
    ROOM_CHANNEL_ID,
    ROOM_CHANNEL_LABEL,
    SignalingSignaller,
    log_dropped,
    open_envelope,
    peer_message_from_signaling,
    seal_envelope,
    send_room_data,
    session_config_from_welcome,
)

__all__ = [
    "MCU_PEER_ID",
    "McuPublisher",
    "McuRoom",
    "McuRoomConfig",
    "McuServerStrategy",
    "McuViewer",
    "open_mcu",
]

logger = logging.getLogger(__name__)


_LAYOUT_KEY = "mcu-layout"


# --- server side ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class McuRoomConfig:
    """Settings of the MCU rooms of a server (:class:`McuServerStrategy`)."""

    engine: McuConfig = attrs.field(factory=McuConfig)
    """The mixing engine of each room (resolution, frame rate, bitrates)."""
    session: SessionConfig = attrs.field(factory=SessionConfig)
    """The server's peer sessions to the participants (ICE servers, heartbeats)."""
    peer_id: str = MCU_PEER_ID
    """The server's peer id in the room."""


class _Member:
    """The server's session to one participant, with its engine slot and event pump."""

    def __init__(self, peer_id: str, session: PeerSession, participant: McuParticipant) -> None:
        self.peer_id = peer_id
        self.session = session
        self.participant = participant
        self.pump: asyncio.Task[None] | None = None


class McuPublisher(HttpPeer):
    """A send-only member of an MCU room (see :meth:`McuServerStrategy.add_publisher`).

    Its connection only receives; ``answer`` is the SDP answer to its offer (all of the
    server's candidates in it). It ends when ``aclose()`` is called, when its connection
    fails or closes, when it has not connected within the *connect_timeout* given to
    ``add_publisher``, or when the room stops; ``wait_ended()`` returns then (with the
    reason), and its cell and its voice have left the mix. ``add_candidate()`` adds a
    trickled candidate.
    """

    label = "WHIP"

    def __init__(
        self, strategy: McuServerStrategy, participant_id: str, pc: RTCPeerConnection
    ) -> None:
        super().__init__(participant_id, pc, policy=strategy.config.session.candidate_policy)
        self._strategy = strategy

    async def _detach(self) -> None:
        await self._strategy._remove_publisher(self)


class McuViewer(HttpPeer):
    """A receive-only member of an MCU room (see :meth:`McuServerStrategy.add_viewer`): it
    gets the room's full mix, and ends when the room's engine stops."""

    label = "WHEP"

    def __init__(
        self,
        participant_id: str,
        pc: RTCPeerConnection,
        *,
        engine: McuEngine,
        output: McuOutput,
        policy: CandidatePolicy,
    ) -> None:
        super().__init__(participant_id, pc, policy=policy)
        self.engine = engine
        self.output = output
        self._engine_watch: asyncio.Task[None] | None = None

    def watch(self, connect_timeout: float) -> None:
        super().watch(connect_timeout)
        self._engine_watch = asyncio.create_task(
            self._until_engine_stops(), name=f"WHEP-mcu-{self.participant_id}"
        )

    async def _until_engine_stops(self) -> None:
        await self.engine.wait_closed()
        self._end("room stopped")

    async def _detach(self) -> None:
        self.engine.remove_output(self.output.id)
        task = self._engine_watch
        if task is not None and task is not asyncio.current_task():
            task.cancel()


class McuServerStrategy:
    """The server side of MCU rooms (one instance per room; see the module documentation).

    *hub* is the :class:`~rtckit.signaling.hub.SignalingHub` the room lives on.
    """

    topology = Topology.MCU

    def __init__(self, hub: Any, *, config: McuRoomConfig | None = None) -> None:
        self.hub = hub
        self.config = config if config is not None else McuRoomConfig()
        self.room: str | None = None
        #: The running engine (``None`` while the room has no participant).
        self.engine: McuEngine | None = None
        self._peer = ServerPeer(hub, peer_id=self.config.peer_id, role="mcu")
        self._members: dict[str, _Member] = {}
        #: the send-only members (WHIP publishers), by participant id
        self.publishers: dict[str, McuPublisher] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopped = False
        self._in_room = asyncio.Event()  # joined, engine running

    @property
    def client(self) -> SignalingClient | None:
        """The MCU's signaling client while it is in the room."""
        return self._peer.client

    @property
    def members(self) -> Sequence[str]:
        """The participants the server has a session with."""
        return tuple(self._members)

    async def start_room(self, room: str) -> None:
        """Join *room* as the MCU and serve everyone in it."""
        self.room = room
        self._peer.follow(self._join)  # a declared room outlives its people: come back
        await self._join()

    async def stop_room(self, room: str) -> None:
        """Leave the room, close every session, stop the engine. Idempotent."""
        self._stopped = True
        await self._peer.aclose()
        await self._leave()

    async def add_viewer(
        self,
        viewer_id: str,
        offer: str,
        *,
        kinds: Sequence[str] = ("audio", "video"),
        connect_timeout: float = 20.0,
    ) -> McuViewer:
        """Answer *offer* (receive-only, an m-line of each of *kinds*, any order) from a viewer who
        is not a participant: it gets the room's full mix, the composite video (VP8) and every
        participant's audio mixed (Opus; not a mix-minus), the packets the engine encodes once
        for everyone (:meth:`~rtckit.mcu.engine.McuEngine.add_output`). Nobody sees it; it
        is never renegotiated; it ends when the room's engine stops (the room's last
        participant left). Raises :class:`~rtckit.errors.TopologyError` if the room has no
        engine running, :class:`~rtckit.errors.NegotiationError` if the offer cannot be
        answered (e.g. no VP8 or Opus in it)."""
        engine = self.engine
        if engine is None or self._stopped:
            raise TopologyError(f"the MCU of room {self.room!r} is not running (nobody is in it)")
        output = engine.add_output(viewer_id)
        pc = new_peer_connection(self.config.session)
        viewer = McuViewer(
            viewer_id, pc, engine=engine, output=output, policy=self.config.session.candidate_policy
        )
        # the offer's m-lines take these transceivers (same kind, no mid yet), and with them
        # the codec the engine encodes. They are made in the offer's m-line order: with
        # max-bundle, aiortc gives the first one made the transport and, when the offer's
        # first (bundle-tagged) m-line takes another one, stops that transport (the answer has
        # no candidates, the viewer never connects)
        media = {
            "video": (output.video_track, "video/VP8"),
            "audio": (output.audio_track, "audio/opus"),
        }
        offered = [ln[2:].split(" ", 1)[0] for ln in offer.splitlines() if ln.startswith("m=")]
        for kind in dict.fromkeys(offered):
            if kind in kinds and kind in media:
                track, mime = media[kind]
                transceiver = pc.addTransceiver(track, direction="sendonly")
                codecs = RTCRtpSender.getCapabilities(kind).codecs
                transceiver.setCodecPreferences(
                    [c for c in codecs if c.mimeType.lower() in (mime.lower(), f"{kind}/rtx")]
                )
                if kind == "video":
                    on_keyframe_request(transceiver.sender, engine.request_keyframe)
        await answer_offer(viewer, offer, self.config.session, lambda _pc: None)
        viewer.watch(connect_timeout)
        return viewer

    # -- send-only members (WHIP) -----------------------------------------------------------

    async def add_publisher(
        self,
        participant_id: str,
        offer: str,
        *,
        connect_timeout: float = 20.0,
        start_timeout: float = 10.0,
    ) -> McuPublisher:
        """Answer *offer* from a connection that only publishes, as *participant_id*.

        *participant_id* is already in the room's signaling, with the metadata
        ``{"rtckit_role": "whip"}`` (:data:`~rtckit.topology.base.PUBLISHER_ROLE`: the MCU
        opens no session to it); a ``name`` in that metadata labels its cell. Its audio and
        video are decoded and mixed like a member's (a cell in the grid, its voice in every
        member's mix-minus); nothing is sent to it, and it is never renegotiated. Waits up to
        *start_timeout* for the MCU to be in the room. Raises
        :class:`~rtckit.errors.TopologyError` if the room is not running, is full or the id
        is taken, :class:`~rtckit.errors.NegotiationError` if aiortc cannot answer the offer.
        The publisher ends if it is not connected within *connect_timeout* seconds.
        """
        try:
            async with asyncio.timeout(start_timeout):
                await self._in_room.wait()
        except TimeoutError:
            raise TopologyError(f"the MCU of room {self.room!r} did not start") from None
        async with self._lock:
            engine, client = self.engine, self.client
            if engine is None or client is None or self._stopped:
                raise TopologyError(f"the MCU of room {self.room!r} is stopped")
            if participant_id in self._members or participant_id in self.publishers:
                raise TopologyError(f"participant {participant_id!r} is already in the room")
            info = client.peers.get(participant_id)
            name = (info.metadata or {}).get("name") if info is not None else None
            pc = new_peer_connection(self.config.session)
            publisher = McuPublisher(self, participant_id, pc)
            try:
                participant = engine.add_participant(
                    participant_id, name=name if isinstance(name, str) else None
                )
            except TopologyError:  # the grid is full
                await publisher.aclose()
                raise
            self.publishers[participant_id] = publisher
        participant.video_track.stop()  # it receives nothing
        participant.audio_track.stop()

        def on_track(track: MediaStreamTrack) -> None:
            if self.publishers.get(participant_id) is publisher and self.engine is engine:
                with contextlib.suppress(TopologyError):  # removed meanwhile
                    engine.add_input(participant_id, track)

        pc.on("track", on_track)
        try:
            await answer_offer(publisher, offer, self.config.session, receive_only)
        except NegotiationError:
            if self.engine is not engine:  # stop_room, meanwhile
                raise TopologyError(f"the MCU of room {self.room!r} stopped") from None
            raise
        publisher.watch(connect_timeout)
        self._send_layout()
        return publisher

    async def _remove_publisher(self, publisher: McuPublisher) -> None:
        if self.publishers.get(publisher.participant_id) is not publisher:
            return
        del self.publishers[publisher.participant_id]
        if self.engine is not None:
            await self.engine.remove_participant(publisher.participant_id)
        self._send_layout()

    def _serving(self, client: SignalingClient | None) -> bool:
        """Whether anyone is left to serve: a member, a publisher, or one joining (a WHIP
        publisher is in signaling before it is connected)."""
        if self._members or self.publishers:
            return True
        peers = {} if client is None else client.peers
        return any(
            (info.metadata or {}).get("rtckit_role") == PUBLISHER_ROLE for info in peers.values()
        )

    # -- internals --------------------------------------------------------------------------

    async def _join(self) -> None:
        async with self._lock:
            if self.client is not None or self._stopped or self.room is None:
                return
            engine = McuEngine(self.config.engine)
            engine.start()
            self.engine = engine
            client = await self._peer.join(self.room)
            for peer_id, info in client.peers.items():
                await self._add(peer_id, info.metadata)
            self._reader = asyncio.create_task(self._read(client), name=f"mcu-room-{self.room}")
            self._in_room.set()
        if not self._serving(self.client):
            # everyone left before the MCU came in: leave, so that the room can close
            await self._leave()

    async def _leave(self) -> None:
        async with self._lock:
            self._in_room.clear()
            reader, self._reader = self._reader, None
            if reader is not None and reader is not asyncio.current_task():
                reader.cancel()
                await asyncio.wait([reader])
            for peer_id in list(self._members):
                await self._remove(peer_id)
            for publisher in list(self.publishers.values()):
                await publisher.aclose()
            engine, self.engine = self.engine, None
            if engine is not None:
                await engine.aclose()
            await self._peer.leave()  # last: someone who came meanwhile brings the MCU back

    async def _read(self, client: SignalingClient) -> None:
        try:
            async for event in client:
                try:
                    await self._on_signaling(event)
                except Exception as exc:  # noqa: BLE001 - a peer's bad message is dropped
                    log_dropped(logger, f"MCU room {self.room!r}", event, exc)
                if isinstance(event, sp.PeerLeft) and not self._serving(client):
                    break  # nobody left to serve
        except SignalingError as exc:
            logger.warning("MCU room %r: signaling failed: %s", self.room, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("MCU room %r failed", self.room)
        self._reader = None  # _leave must not wait for the task it runs in
        await self._leave()

    async def _on_signaling(self, event: object) -> None:
        if isinstance(event, sp.PeerJoined):
            await self._add(event.peer.id, event.peer.metadata)
        elif isinstance(event, sp.PeerLeft):
            await self._remove(event.peer_id)
            publisher = self.publishers.get(event.peer_id)
            if publisher is not None:
                await publisher.aclose("left")
        elif isinstance(event, sp.Relayed):
            message = peer_message_from_signaling(event)
            member = self._members.get(event.sender or "")
            if message is not None and member is not None:
                await member.session.receive(message)

    async def _add(self, peer_id: str, metadata: Mapping[str, Any] | None) -> None:
        engine = self.engine
        client = self.client
        if engine is None or client is None or peer_id in self._members:
            return
        if (metadata or {}).get("rtckit_role") == PUBLISHER_ROLE:
            return  # a send-only member: add_publisher connects it, not signaling
        name = metadata.get("name") if metadata else None
        try:
            participant = engine.add_participant(
                peer_id, name=name if isinstance(name, str) else None
            )
        except TopologyError as exc:
            logger.warning("MCU room %r: %s", self.room, exc)
            return
        session = PeerSession(
            SignalingSignaller(client, peer_id),
            polite=False,  # the server offers first
            config=self.config.session,
            name=f"{self.config.peer_id}->{peer_id}",
        )
        session.add_track(participant.video_track)
        session.add_track(participant.audio_track)
        session.create_data_channel(ROOM_CHANNEL_LABEL, negotiated_id=ROOM_CHANNEL_ID)
        member = _Member(peer_id, session, participant)
        self._members[peer_id] = member
        await session.start()  # creates the connection; its offer is made by a task later
        self._wire_senders(member, prefer_codecs=True)
        member.pump = asyncio.create_task(self._pump(member), name=f"mcu-pump-{session.name}")
        self._send_layout()

    def _wire_senders(self, member: _Member, *, prefer_codecs: bool) -> None:
        """Hook keyframe requests (and, before the first offer, prefer VP8 and Opus)."""
        pc = member.session.peer_connection
        if pc is None:
            return
        for transceiver in pc.getTransceivers():
            source = getattr(transceiver.sender.track, "source", None)
            if source is member.participant.video_track:
                on_keyframe_request(transceiver.sender, self._keyframe)
                mime = "video/VP8"
            elif source is member.participant.audio_track:
                mime = "audio/opus"
            else:
                continue
            if prefer_codecs:
                kind = mime.split("/")[0]
                codecs = RTCRtpSender.getCapabilities(kind).codecs
                transceiver.setCodecPreferences(
                    [c for c in codecs if c.mimeType.lower() in (mime.lower(), f"{kind}/rtx")]
                )

    def _keyframe(self) -> None:
        if self.engine is not None:
            self.engine.request_keyframe()

    async def _remove(self, peer_id: str) -> None:
        member = self._members.pop(peer_id, None)
        if member is None:
            return
        await member.session.close()
        if member.pump is not None and member.pump is not asyncio.current_task():
            await asyncio.wait([member.pump])
        if self.engine is not None:
            await self.engine.remove_participant(peer_id)
        self._send_layout()

    def _send_layout(self) -> None:
        """Tell every participant who is in the grid (in order)."""
        engine = self.engine
        if engine is None:
            return
        text = json.dumps({_LAYOUT_KEY: [p.id for p in engine.participants]})
        for member in self._members.values():
            send_room_data(member.session, seal_envelope(self.config.peer_id, text))

    async def _pump(self, member: _Member) -> None:
        engine = self.engine
        async for event in member.session.events():
            try:
                await self._on_session_event(member, engine, event)
            except Exception as exc:  # noqa: BLE001 - one bad event must not end the pump
                log_dropped(logger, f"MCU room {self.room!r}", event, exc, sender=member.peer_id)

    async def _on_session_event(
        self, member: _Member, engine: McuEngine | None, event: object
    ) -> None:
        if isinstance(event, TrackAdded) and engine is not None:
            with contextlib.suppress(TopologyError):  # removed meanwhile
                engine.add_input(member.peer_id, event.track)
        elif isinstance(event, ConnectionReplaced):
            self._wire_senders(member, prefer_codecs=False)
        elif isinstance(event, DataMessage) and event.label == ROOM_CHANNEL_LABEL:
            self._relay(member.peer_id, event.data)
        elif (
            isinstance(event, SessionClosed)
            and event.reason == "peer-timeout"
            and self._members.get(member.peer_id) is member
        ):
            # the participant vanished: free its cell now (signaling reports it later)
            del self._members[member.peer_id]
            if engine is not None:
                await engine.remove_participant(member.peer_id)
            self._send_layout()

    def _relay(self, sender: str, data: str | bytes) -> None:
        opened = open_envelope(data)
        if opened is None:
            logger.debug("MCU room %r: dropped a data message of %s", self.room, sender)
            return
        to, payload = opened
        wrapped = seal_envelope(sender, payload)
        for peer_id, member in self._members.items():
            if peer_id != sender and to in ("", peer_id):
                send_room_data(member.session, wrapped)


# --- client side ----------------------------------------------------------------------------


class McuRoom(ServerSessionRoom):
    """An MCU room on a joined :class:`~rtckit.signaling.client.SignalingClient`.

    See the module documentation; the API is the one of :class:`~rtckit.topology.base.Room`.
    The server sends one video (the composite) and one audio (the mix), both published by
    *server_id*; :attr:`layout` says who is drawn where.
    """

    TOPOLOGY = Topology.MCU

    def __init__(
        self, client: SignalingClient, *, session_config: SessionConfig, server_id: str
    ) -> None:
        super().__init__(client, session_config=session_config, server_id=server_id)
        self._remote: dict[str, MediaStreamTrack] = {}
        self._layout: tuple[str, ...] = ()

    @property
    def layout(self) -> Sequence[str]:
        """Peer ids drawn in the composite video, in grid order (as the server last said)."""
        return self._layout

    def _on_media(self, session: PeerSession, event: TrackAdded | TrackRemoved) -> None:
        del session
        server = self.server_id
        key = event.mid or event.track.id
        if isinstance(event, TrackAdded):
            self._remote[key] = event.track
            self._emit(TrackPublished(participant_id=server, track=event.track, kind=event.kind))
        elif self._remote.pop(key, None) is not None:
            self._emit(TrackUnpublished(participant_id=server, track=event.track, kind=event.kind))

    def _on_room_data(self, data: str | bytes) -> None:
        opened = open_envelope(data)
        if opened is None:
            logger.debug("MCU room: dropped a data message without an envelope")
            return
        sender, payload = opened
        if sender == self.server_id and isinstance(payload, str):
            with contextlib.suppress(ValueError, TypeError):
                layout = json.loads(payload)[_LAYOUT_KEY]
                self._layout = tuple(str(peer) for peer in layout)
            return
        if sender:
            self._emit(RoomDataMessage(participant_id=sender, data=payload))

    def _end_remote_tracks(self) -> None:
        for track in self._remote.values():
            self._emit(
                TrackUnpublished(participant_id=self.server_id, track=track, kind=track.kind)
            )
        self._remote.clear()


async def open_mcu(
    client: SignalingClient,
    *,
    session_config: SessionConfig | None = None,
    server_id: str = MCU_PEER_ID,
    **options: Any,
) -> McuRoom:
    """The MCU :class:`~rtckit.topology.base.ClientStrategy`: start a :class:`McuRoom`.

    Without *session_config*, the session uses the ICE servers of the server's ``welcome``.
    """
    if options:
        raise TopologyError(f"unknown MCU options {sorted(options)}")
    room = McuRoom(
        client,
        session_config=session_config or session_config_from_welcome(client),
        server_id=server_id,
    )
    await room.start()
    return room
