"""The SFU topology: every participant has one connection, to the server, which forwards.

Server side (:class:`SfuServerStrategy`, started for each ``sfu`` room by
:class:`~rtckit.topology.strategies.RoomStrategies`): the server joins the room through the
signaling hub as a participant of its own, with the reserved peer id
:data:`~rtckit.topology.base.SFU_PEER_ID`
(an in-process, trusted connection; only trusted or ``admin`` peers may choose an id, so no
client can pose as the server). It opens one :class:`~rtckit.peer.session.PeerSession` to
each participant (the server impolite, the participant polite; both offer when they need
to: perfect negotiation). On that one connection:

* what the participant publishes is handed to an :class:`~rtckit.sfu.engine.SfuRouter`
  (published under :class:`~rtckit.sfu.engine.TrackKey` ``(participant, mid)``), never decoded;
* every other participant's publication is added as a send-only forwarded track, subscribed
  once negotiated; a subscriber that joins mid-stream gets a keyframe (the router asks the
  publisher for one);
* when a participant unpublishes or leaves, its forwarded tracks are removed from everyone's
  connection (renegotiation), so nothing stale is forwarded.

Which participant a forwarded track comes from travels in the SDP itself: the ``msid``
track id of a forwarded m-line is ``"<participant id>~<serial>"`` (:func:`participant_of_msid`).
Clients read it from the remote description when the track arrives.

Send-only members (WHIP publishers, :mod:`rtckit.whip`): :meth:`SfuServerStrategy.add_publisher`
answers the SDP offer of a connection that only publishes, with no signaling session and no
renegotiation (an HTTP client cannot be sent a new offer). Its tracks are published to the
router like any member's and forwarded to every member, without re-encoding; nothing is
forwarded to it. It is a participant of the room in signaling too (the caller joins it with the
metadata ``{"rtckit_role": "whip"}``, :data:`~rtckit.topology.base.PUBLISHER_ROLE`), which
the SFU does not connect to: a client that claims that role only gets no media itself. The returned
:class:`SfuPublisher` handle adds trickled candidates, reports when the connection ends
(failed, or not connected within *connect_timeout*) and ends it.

Receive-only members (WHEP viewers, :mod:`rtckit.whip.whep`):
:meth:`SfuServerStrategy.add_viewer` answers the SDP offer of a connection that only receives.
It is not a participant (not in signaling, nobody sees it, nothing is forwarded from it) and is
never renegotiated: it plays the audio and video of the participant with a given name
(:meth:`SfuServerStrategy.name_of`), or of the room's first publisher of video, through router
subscriptions made once on the m-lines it offered. When whom it should play changes (the
participant joins again with a new peer id, the first publisher leaves), the subscriptions move
(:meth:`~rtckit.sfu.engine.SfuRouter.move`): the viewer's stream continues with the same SSRC
and continuous sequence numbers and timestamps.

Room data messages use the same pre-negotiated channel as mesh (label ``rtckit-room``, id
1001) with a small envelope: a client sends ``"<to>\\x00<data>"`` (``to`` empty: everyone),
the server relays ``"<from>\\x00<data>"`` (bytes: the same with bytes).

Client side (:class:`SfuRoom`, opened by :func:`~rtckit.topology.base.join_room` when the
welcome says ``sfu``): the same :class:`~rtckit.topology.base.Room` API and events as mesh.
The server peer is hidden from ``participants``; connection state events name it
(``ParticipantConnectionChanged(participant_id=SFU_PEER_ID)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpTransceiver,
)

from rtckit._aiortc.sdp import SdpDescription
from rtckit.errors import SignalingError, TopologyError
from rtckit.peer.events import (
    ConnectionReplaced,
    DataMessage,
    TrackAdded,
    TrackRemoved,
)
from rtckit.peer.session import PeerSession, SessionConfig
from rtckit.sfu.engine import (
    VIDEO_QUALITIES,
    ForwardingTrack,
    SfuConfig,
    SfuRouter,
    SfuStats,
    Subscription,
    TrackKey,
    accept_forwarding_transceiver,
)
from rtckit.signaling import protocol as sp
from rtckit.signaling.client import Reconnected, SignalingClient
from rtckit.topology._http_peer import (
    HttpPeer,
    answer_offer,
    new_peer_connection,
    receive_only,
)
from rtckit.topology._server_peer import ServerPeer
from rtckit.topology._server_room import ServerSessionRoom
from rtckit.topology.base import (
    PUBLISHER_ROLE,
    SFU_PEER_ID,
    VIDEO_LAYER_MESSAGE,
    VIDEO_OFF,
    VIDEO_QUALITY_MESSAGE,
    RoomDataMessage,
    ServerStrategyFactory,
    Topology,
    TrackPublished,
    TrackUnpublished,
    VideoLayerChanged,
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

if TYPE_CHECKING:
    from rtckit.signaling.hub import SignalingHub

__all__ = [
    "PUBLISHER_ROLE",
    "SFU_PEER_ID",
    "SfuPublisher",
    "SfuRoom",
    "SfuServerStrategy",
    "SfuViewer",
    "open_sfu",
    "participant_of_msid",
    "sfu_strategy_factory",
]
logger = logging.getLogger(__name__)

_MSID_SEPARATOR = "~"
_SUBSCRIBE_TIMEOUT = 30.0
_POLL = 0.02
_MAX_PREFS = 256  # video quality preferences kept per member
_KEYFRAME_RETRY = 0.5

# --- pure helpers ---------------------------------------------------------------------------


def participant_of_msid(msid: str | None) -> str | None:
    """The publishing participant named by a forwarded m-line's ``msid`` (``"stream track"``)."""
    if not msid:
        return None
    track_id = msid.split()[-1]
    participant, sep, serial = track_id.rpartition(_MSID_SEPARATOR)
    if not sep or not participant or not serial.isdigit():
        return None
    return participant


def _msid_of_mid(sdp: str, mid: str) -> str | None:
    for media in SdpDescription.parse(sdp).media:
        if str(media.rtp.muxId) == mid:
            return media.msid
    return None


# --- server side ----------------------------------------------------------------------------


class _ForwardedTrack(ForwardingTrack):
    """The placeholder a subscriber's sender carries; its id names the publisher (msid)."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__(kind)
        self._track_id = track_id

    @property
    def id(self) -> str:
        return self._track_id


class _Forward:
    """One publication forwarded to one member."""

    def __init__(self, key: TrackKey, track: _ForwardedTrack) -> None:
        self.key = key
        self.track = track
        self.subscription: Subscription | None = None
        self.waiter: asyncio.Task[None] | None = None
        #: what the member was last told it receives: (layer, layers, paused)
        self.reported: tuple[str | None, tuple[str, ...], bool] | None = None


class _Member:
    """One participant as the SFU sees it: its session and what flows on it."""

    def __init__(self, peer_id: str, session: PeerSession) -> None:
        self.id = peer_id
        self.session = session
        self.pump: asyncio.Task[None] | None = None
        #: what this member publishes, by mid of its connection
        self.published: dict[str, TrackKey] = {}
        #: what is forwarded to this member, by publication
        self.forwards: dict[TrackKey, _Forward] = {}
        #: the simulcast layer this member asked for (or ``"off"``), by publishing participant
        self.video_quality: dict[str, str] = {}


class SfuPublisher(HttpPeer):
    """A send-only member of an SFU room (see :meth:`SfuServerStrategy.add_publisher`).

    Its connection only receives; ``answer`` is the SDP answer to its offer (all of the
    server's candidates in it). It ends when ``aclose()`` is called, when its connection
    fails or closes, when it has not connected within the *connect_timeout* given to
    ``add_publisher``, or when the room stops; ``wait_ended()`` returns then (with the
    reason), and its tracks have left the room. ``add_candidate()`` adds a trickled candidate.
    """

    label = "WHIP"

    def __init__(self, strategy: SfuServerStrategy, participant_id: str, pc: RTCPeerConnection):
        super().__init__(participant_id, pc, policy=strategy.session_config.candidate_policy)
        #: the publications of this member (empty once it ended)
        self.keys: list[TrackKey] = []
        self._strategy = strategy

    async def _detach(self) -> None:
        await self._strategy._remove_publisher(self)


class SfuViewer(HttpPeer):
    """A receive-only member of an SFU room (see :meth:`SfuServerStrategy.add_viewer`).

    It plays one participant's audio and video (*participant*: a name, see
    :meth:`SfuServerStrategy.name_of`; ``None``: the room's first publisher of video), forwarded
    without decoding. :attr:`source` is the participant id it plays now. Its life is the one of
    :class:`SfuPublisher`.
    """

    label = "WHEP"

    def __init__(
        self,
        strategy: SfuServerStrategy,
        participant_id: str,
        pc: RTCPeerConnection,
        participant: str | None,
    ):
        super().__init__(participant_id, pc, policy=strategy.session_config.candidate_policy)
        #: the name of the participant it plays (``None``: the first publisher of video)
        self.participant = participant
        #: the participant id whose tracks it plays now (``None``: nobody yet)
        self.source: str | None = None
        #: its sending transceivers by kind (``audio``, ``video``)
        self.transceivers: dict[str, RTCRtpTransceiver] = {}
        #: the router subscriptions feeding them, by kind
        self.subscriptions: dict[str, Subscription] = {}
        self._strategy = strategy

    async def _detach(self) -> None:
        self._strategy._remove_viewer(self)


class SfuServerStrategy:
    """The server side of an SFU room: joins it, connects to everyone, forwards.

    Built per room by :class:`~rtckit.topology.strategies.RoomStrategies` with the hub (the
    registered factory), or with :func:`sfu_strategy_factory` for a configured one.
    *on_forwarded* is called with the number of RTP packets forwarded since its previous
    call, about once a second and when the room stops (e.g.
    ``metrics.forwarded_packets.inc`` of ``rtckit.server.metrics.Metrics``).
    """

    topology = Topology.SFU

    def __init__(
        self,
        hub: SignalingHub,
        *,
        sfu_config: SfuConfig | None = None,
        session_config: SessionConfig | None = None,
        on_forwarded: Callable[[int], None] | None = None,
        report_interval: float = 1.0,
    ) -> None:
        if hub is None:
            raise TopologyError("an SFU room strategy needs the signaling hub")
        self.hub = hub
        self.sfu_config = sfu_config or SfuConfig()
        self.session_config = session_config or SessionConfig()
        self.on_forwarded = on_forwarded
        self.report_interval = report_interval
        self.room: str | None = None
        self.router: SfuRouter | None = None
        self.members: dict[str, _Member] = {}
        #: the send-only members (WHIP publishers), by participant id
        self.publishers: dict[str, SfuPublisher] = {}
        #: the receive-only members (WHEP viewers), by viewer id
        self.viewers: dict[str, SfuViewer] = {}
        # every publication's serial number (publication order)
        self._publication_order: dict[TrackKey, int] = {}
        #: data messages relayed between participants
        self.data_messages_relayed = 0
        self._serial = itertools.count(1)
        self._reported = 0
        self._peer = ServerPeer(hub, peer_id=SFU_PEER_ID, role="sfu")
        self._reader: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = asyncio.Event()
        self._lock = asyncio.Lock()

    # -- life cycle -------------------------------------------------------------------------

    @property
    def client(self) -> SignalingClient | None:
        """The SFU's signaling client while it is in the room."""
        return self._peer.client

    async def start_room(self, room: str) -> None:
        """Join *room* as :data:`~rtckit.topology.base.SFU_PEER_ID`; connect to everyone in it."""
        self.room = room
        self.router = SfuRouter(self.sfu_config)
        self._peer.follow(self._come_back)
        client = await self._join()
        if not client.peers:
            # everyone left before the SFU came in: leave, so that the room can close
            await self._leave()
        self._reporter = asyncio.create_task(self._report_loop(), name=f"sfu-report-{room}")
        self._started.set()

    async def _join(self) -> SignalingClient:
        assert self.room is not None
        client = await self._peer.join(self.room)
        for peer_id in list(client.peers):
            await self._add_member(peer_id)
        self._reader = asyncio.create_task(self._read(client), name=f"sfu-reader-{self.room}")
        return client

    async def _come_back(self) -> None:
        """Someone came to the room the SFU had left: join again."""
        async with self._lock:
            if not self._stopping and self._peer.client is None:
                await self._join()

    async def stop_room(self, room: str) -> None:
        """Leave the room: close every connection and the router. Idempotent."""
        del room
        if self._stopping:
            return
        self._stopping = True
        for publisher in list(self.publishers.values()):
            await publisher.aclose("room stopped")
        for viewer in list(self.viewers.values()):
            await viewer.aclose("room stopped")
        await self._peer.aclose()
        reporter, self._reporter = self._reporter, None
        if reporter is not None:
            reporter.cancel()
            await asyncio.wait([reporter])
        await self._leave()
        router, self.router = self.router, None
        if router is not None:
            self._report(router)
            await router.aclose()

    async def _leave(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.wait([reader])
        for peer_id in list(self.members):
            await self._remove_member(peer_id)
        await self._peer.leave()

    # -- observation ------------------------------------------------------------------------

    def stats(self) -> SfuStats | None:
        """The room router's counters (``None`` once stopped)."""
        return None if self.router is None else self.router.stats()

    @property
    def forwarded_packets(self) -> int:
        """RTP packets forwarded so far in this room."""
        stats = self.stats()
        return self._reported if stats is None else stats.packets_out

    def _report(self, router: SfuRouter) -> None:
        total = router.stats().packets_out
        delta, self._reported = total - self._reported, total
        if delta > 0 and self.on_forwarded is not None:
            try:
                self.on_forwarded(delta)
            except Exception:
                logger.exception("on_forwarded callback failed")

    async def _report_loop(self) -> None:
        next_report = asyncio.get_running_loop().time() + self.report_interval
        while True:
            await asyncio.sleep(_KEYFRAME_RETRY)
            router = self.router
            if router is None:
                continue
            await self._retry_keyframes(router)
            self._report_layers()
            if asyncio.get_running_loop().time() >= next_report:
                next_report += self.report_interval
                self._report(router)

    @staticmethod
    async def _retry_keyframes(router: SfuRouter) -> None:
        """Ask again for a keyframe for subscriptions still waiting for one.

        The router asks once per new subscription (and once its transport connects); a
        request lost on the way, or one the publisher got before its encoder ran, would
        leave the subscriber without picture until the publisher's next periodic keyframe.
        """
        for sub in router.subscriptions():
            pub, rewriter = sub.publication, sub.rewriter
            if (
                pub is not None
                and rewriter is not None
                and sub.ready
                and not sub.paused
                and rewriter.waiting_keyframe
            ):
                await pub.request_keyframe()

    # -- signaling --------------------------------------------------------------------------

    async def _read(self, client: SignalingClient) -> None:
        try:
            async for event in client:
                async with self._lock:
                    try:
                        await self._on_signaling(event)
                    except Exception as exc:  # noqa: BLE001 - a peer's bad message is dropped
                        log_dropped(logger, f"SFU room {self.room!r}", event, exc)
                    if not self.members and not client.peers and not self._stopping:
                        # Everyone left: leave too, so that a room created on demand closes.
                        # Someone joining meanwhile, or later, brings the SFU back.
                        await self._leave()
                        return
        except SignalingError as exc:
            logger.warning("SFU signaling for room %r failed: %s", self.room, exc)

    async def _on_signaling(self, event: object) -> None:
        if isinstance(event, sp.PeerJoined):
            await self._add_member(event.peer.id)
        elif isinstance(event, sp.PeerLeft):
            await self._remove_member(event.peer_id)
            publisher = self.publishers.get(event.peer_id)
            if publisher is not None:
                publisher._end("left")
        elif isinstance(event, Reconnected) and not event.resumed:
            for peer_id in list(self.members):
                await self._remove_member(peer_id)
            assert self.client is not None
            for peer_id in list(self.client.peers):
                await self._add_member(peer_id)
        elif isinstance(event, sp.Relayed):
            message = peer_message_from_signaling(event)
            member = self.members.get(event.sender or "")
            if message is not None and member is not None:
                await member.session.receive(message)

    # -- members ----------------------------------------------------------------------------

    async def _add_member(self, peer_id: str) -> None:
        client, router = self.client, self.router
        if peer_id in self.members or peer_id == SFU_PEER_ID or client is None or router is None:
            return
        info = client.peers.get(peer_id)
        if info is not None and (info.metadata or {}).get("rtckit_role") == PUBLISHER_ROLE:
            return  # a send-only member: add_publisher connects it, not signaling
        session = PeerSession(
            SignalingSignaller(client, peer_id),
            polite=False,
            # the router forwards each simulcast layer apart (rtckit.js sends three)
            config=attrs.evolve(self.session_config, accept_simulcast=True),
            name=f"sfu->{peer_id}",
        )
        member = _Member(peer_id, session)
        self.members[peer_id] = member
        session.create_data_channel(ROOM_CHANNEL_LABEL, negotiated_id=ROOM_CHANNEL_ID)
        for key in list(router.publications):
            if key.participant != peer_id:
                self._forward(member, key)
        await session.start()
        member.pump = asyncio.create_task(self._pump(member), name=f"sfu-pump-{peer_id}")

    async def _remove_member(self, peer_id: str) -> None:
        member = self.members.pop(peer_id, None)
        if member is None:
            return
        router = self.router
        for key in list(member.published.values()):
            self._unpublished(key)
        for forward in list(member.forwards.values()):
            self._drop_forward(member, forward, renegotiate=False)
        if router is not None:
            router.remove_participant(peer_id)
        await member.session.close()
        if member.pump is not None and member.pump is not asyncio.current_task():
            await asyncio.wait([member.pump])

    async def _pump(self, member: _Member) -> None:
        async for event in member.session.events():
            try:
                self._on_session_event(member, event)
            except Exception as exc:  # noqa: BLE001 - one bad event must not end the pump
                log_dropped(logger, f"SFU room {self.room!r}", event, exc, sender=member.id)

    def _on_session_event(self, member: _Member, event: object) -> None:
        if isinstance(event, TrackAdded):
            self._published(member, event)
        elif isinstance(event, TrackRemoved):
            key = member.published.pop(str(event.mid), None)
            if key is not None:
                self._unpublished(key)
        elif isinstance(event, DataMessage) and event.label == ROOM_CHANNEL_LABEL:
            self._relay(member, event.data)
        elif isinstance(event, ConnectionReplaced):
            # new connection: the forwarded tracks are re-added to it; subscribe again
            for forward in member.forwards.values():
                self._resubscribe(member, forward)

    def _published(self, member: _Member, event: TrackAdded) -> None:
        router = self.router
        pc = member.session.peer_connection
        if router is None or pc is None or event.mid is None:
            return
        transceiver = next((t for t in pc.getTransceivers() if t.mid == event.mid), None)
        if transceiver is None:
            return
        key = TrackKey(member.id, str(event.mid))
        layers = member.session.simulcast_layers(str(event.mid))
        router.publish(member.id, transceiver, name=key.name, layers=layers)
        member.published[key.name] = key
        self._note_published(key)
        for other in self.members.values():
            if other is not member:
                self._forward(other, key)
        self._retarget_viewers()

    def _unpublished(self, key: TrackKey) -> None:
        if self.router is not None:
            self.router.unpublish(key)
        self._publication_order.pop(key, None)
        for other in self.members.values():
            forward = other.forwards.get(key)
            if forward is not None:
                self._drop_forward(other, forward, renegotiate=True)
        self._retarget_viewers()

    def _relay(self, sender: _Member, message: str | bytes) -> None:
        opened = open_envelope(message)
        if opened is None:
            return
        to, data = opened
        if to == SFU_PEER_ID:
            self._on_request(sender, data)
            return
        for other in self.members.values():
            if other is sender or (to and other.id != to):
                continue
            if send_room_data(other.session, seal_envelope(sender.id, data)):
                self.data_messages_relayed += 1

    def _on_request(self, member: _Member, data: str | bytes) -> None:
        """A room-channel message addressed to the SFU itself: a video quality preference."""
        parsed = _video_quality_request(data)
        if parsed is None:
            logger.info("SFU: ignoring a malformed request of %s", member.id)
            return
        participant, quality = parsed
        if participant not in member.video_quality and len(member.video_quality) >= _MAX_PREFS:
            return  # a participant asking about endless made-up ids grows nothing
        member.video_quality[participant] = quality
        router = self.router
        for key, forward in member.forwards.items():
            if key.participant == participant and forward.subscription is not None and router:
                _apply_quality(router, forward.subscription, quality)

    def _report_layers(self) -> None:
        """Tell each member which layer of each video it receives, when that changed.

        One small room-channel message (:data:`VIDEO_LAYER_MESSAGE`) per change, so that a
        page can show what it gets without comparing frame sizes.
        """
        for member in self.members.values():
            for key, forward in member.forwards.items():
                sub = forward.subscription
                if sub is None or sub.transceiver.kind != "video" or sub.publication is None:
                    continue
                now = (sub.layer, sub.publication.layers, sub.paused)
                if now == forward.reported:
                    continue
                message = {
                    "type": VIDEO_LAYER_MESSAGE,
                    "participant": key.participant,
                    "layer": now[0],
                    "layers": list(now[1]),
                    "paused": now[2],
                }
                sealed = seal_envelope(SFU_PEER_ID, json.dumps(message))
                if send_room_data(member.session, sealed):
                    forward.reported = now

    # -- send-only members (WHIP) -----------------------------------------------------------

    async def _wait_started(self, start_timeout: float) -> SfuRouter:
        try:
            async with asyncio.timeout(start_timeout):
                await self._started.wait()
        except TimeoutError:
            raise TopologyError(f"the SFU of room {self.room!r} did not start") from None
        router = self.router
        if router is None or self._stopping:
            raise TopologyError(f"the SFU of room {self.room!r} is stopped")
        return router

    async def add_publisher(
        self,
        participant_id: str,
        offer: str,
        *,
        connect_timeout: float = 20.0,
        start_timeout: float = 10.0,
    ) -> SfuPublisher:
        """Answer *offer* from a connection that only publishes, as *participant_id*.

        Its audio and video are published to the room (forwarded to every member, never
        decoded); nothing is sent to it, and it is never renegotiated. Waits up to
        *start_timeout* for the room to be started. Raises
        :class:`~rtckit.errors.TopologyError` if the room is not running or the id is taken,
        :class:`~rtckit.errors.NegotiationError` if aiortc cannot answer the offer. The
        publisher ends if it is not connected within *connect_timeout* seconds.
        """
        router = await self._wait_started(start_timeout)
        if participant_id in self.members or participant_id in self.publishers:
            raise TopologyError(f"participant {participant_id!r} is already in the room")
        publisher = SfuPublisher(self, participant_id, new_peer_connection(self.session_config))
        self.publishers[participant_id] = publisher

        await answer_offer(publisher, offer, self.session_config, receive_only)
        async with self._lock:
            for transceiver in publisher._pc.getTransceivers():
                if transceiver.mid is None or transceiver.kind not in ("audio", "video"):
                    continue
                key = TrackKey(participant_id, str(transceiver.mid))
                router.publish(participant_id, transceiver, name=key.name)
                publisher.keys.append(key)
                self._note_published(key)
                for member in self.members.values():
                    self._forward(member, key)
            self._retarget_viewers()
        publisher.watch(connect_timeout)
        return publisher

    async def _remove_publisher(self, publisher: SfuPublisher) -> None:
        if self.publishers.get(publisher.participant_id) is not publisher:
            return
        del self.publishers[publisher.participant_id]
        keys, publisher.keys = publisher.keys, []
        for key in keys:
            self._unpublished(key)
        if self.router is not None:
            self.router.remove_participant(publisher.participant_id)

    # -- receive-only members (WHEP) --------------------------------------------------------

    def name_of(self, participant_id: str) -> str:
        """The stable name of a participant: the identity of its token (``sub``), else the
        string ``name`` of its signaling metadata, else its peer id (which changes when it
        joins again)."""
        client = self.client
        info = None if client is None else client.peers.get(participant_id)
        if info is None:
            return participant_id
        if info.identity:
            return info.identity
        name = (info.metadata or {}).get("name")
        return name if isinstance(name, str) and name else participant_id

    def publishing(self) -> list[str]:
        """The participants publishing video now, first publication first."""
        order = sorted(
            (serial, key.participant)
            for key, serial in self._publication_order.items()
            if self._kind_of(key) == "video"
        )
        return list(dict.fromkeys(participant for _serial, participant in order))

    async def add_viewer(
        self,
        viewer_id: str,
        offer: str,
        *,
        participant: str | None = None,
        connect_timeout: float = 20.0,
        start_timeout: float = 10.0,
    ) -> SfuViewer:
        """Answer *offer* from a connection that only receives, as *viewer_id*.

        The viewer plays the audio and video of the participant named *participant*
        (:meth:`name_of`), or with ``None`` of the room's first publisher of video (in order of
        publication) and, when that one stops, of the next. Its tracks are forwarded through
        the room's router (no decoding, a keyframe asked of the publisher when the viewer
        subscribes). It is not a participant: nobody sees it, nothing is forwarded from it, and
        it is never renegotiated. When the participant it plays stops publishing (it leaves,
        its connection is replaced, it joins again with a new peer id under the same name),
        the viewer waits, and the next publication it should play continues its stream (same
        SSRC, continuous sequence numbers and timestamps: the router's source switch).
        Raises like :meth:`add_publisher`.
        """
        router = await self._wait_started(start_timeout)
        if viewer_id in self.viewers:
            raise TopologyError(f"viewer {viewer_id!r} is already in the room")
        pc = new_peer_connection(self.session_config)
        viewer = SfuViewer(self, viewer_id, pc, participant)
        self.viewers[viewer_id] = viewer

        def send_only(pc: RTCPeerConnection) -> None:
            for transceiver in pc.getTransceivers():
                if transceiver.kind in ("audio", "video"):
                    accept_forwarding_transceiver(transceiver)
                    viewer.transceivers.setdefault(transceiver.kind, transceiver)

        await answer_offer(viewer, offer, self.session_config, send_only)
        async with self._lock:
            if self.router is router:
                self._retarget(viewer)
        viewer.watch(connect_timeout)
        return viewer

    def _remove_viewer(self, viewer: SfuViewer) -> None:
        if self.viewers.get(viewer.participant_id) is not viewer:
            return
        del self.viewers[viewer.participant_id]
        subscriptions, viewer.subscriptions = viewer.subscriptions, {}
        if self.router is not None:
            for subscription in subscriptions.values():
                self.router.unsubscribe(subscription)

    def _kind_of(self, key: TrackKey) -> str | None:
        pub = None if self.router is None else self.router.publications.get(key)
        return None if pub is None else pub.kind

    def _note_published(self, key: TrackKey) -> None:
        self._publication_order[key] = next(self._serial)

    def _source_for(self, viewer: SfuViewer) -> str | None:
        """The participant *viewer* should play now (its current one while it publishes)."""
        publishing = self.publishing()
        if viewer.participant is not None:
            named = [p for p in publishing if self.name_of(p) == viewer.participant]
            if not named:  # audio only
                named = [
                    key.participant
                    for key in self._publication_order
                    if self.name_of(key.participant) == viewer.participant
                ]
            if viewer.source in named:
                return viewer.source
            return named[-1] if named else None  # the latest one (a rejoin)
        if viewer.source in publishing:
            return viewer.source
        return publishing[0] if publishing else None

    def _retarget_viewers(self) -> None:
        for viewer in list(self.viewers.values()):
            self._retarget(viewer)

    def _retarget(self, viewer: SfuViewer) -> None:
        """Move *viewer*'s subscriptions to the tracks of the participant it should play;
        with nobody to play, they stay where they are (waiting)."""
        router = self.router
        source = self._source_for(viewer)
        if router is None or viewer.ended or source is None:
            return
        viewer.source = source
        keys = sorted(
            (serial, key)
            for key, serial in self._publication_order.items()
            if key.participant == source
        )
        for _serial, key in reversed(keys):  # the latest track of each kind
            kind = self._kind_of(key)
            transceiver = viewer.transceivers.get(kind or "")
            if kind is None or transceiver is None:
                continue
            current = viewer.subscriptions.get(kind)
            if current is None:
                viewer.subscriptions[kind] = router.subscribe(
                    viewer.participant_id, key, transceiver
                )
            elif current.key != key:
                router.move(current, key)
            else:
                continue
            logger.info("WHEP viewer %s of room %s plays %s %s", viewer, self.room, kind, key)
            problem = viewer.subscriptions[kind].problem
            if problem:
                logger.warning("SFU: %s cannot receive %s: %s", viewer, key, problem)

    # -- forwarding -------------------------------------------------------------------------

    def _forward(self, member: _Member, key: TrackKey) -> None:
        router = self.router
        if router is None or key in member.forwards or member.session.closed:
            return
        pub = router.publications.get(key)
        if pub is None:
            return
        track = _ForwardedTrack(pub.kind, f"{key.participant}{_MSID_SEPARATOR}{next(self._serial)}")
        forward = _Forward(key, track)
        member.forwards[key] = forward
        member.session.add_track(track)
        self._resubscribe(member, forward)

    def _resubscribe(self, member: _Member, forward: _Forward) -> None:
        if forward.waiter is not None:
            forward.waiter.cancel()
        if forward.subscription is not None and self.router is not None:
            self.router.unsubscribe(forward.subscription)
            forward.subscription = None
        forward.waiter = asyncio.create_task(
            self._subscribe_when_negotiated(member, forward), name=f"sfu-sub-{member.id}"
        )

    async def _subscribe_when_negotiated(self, member: _Member, forward: _Forward) -> None:
        """Subscribe once the member's connection has negotiated the forwarded m-line."""
        track = forward.track
        try:
            async with asyncio.timeout(_SUBSCRIBE_TIMEOUT):
                while True:
                    transceiver = self._transceiver_of(member, track)
                    if transceiver is not None:
                        break
                    await asyncio.sleep(_POLL)
        except TimeoutError:
            logger.warning("SFU: %s never negotiated %s", member.id, forward.key)
            return
        router = self.router
        if router is None or member.forwards.get(forward.key) is not forward:
            return
        forward.subscription = router.subscribe(member.id, forward.key, transceiver)
        quality = member.video_quality.get(forward.key.participant)
        if quality is not None:
            _apply_quality(router, forward.subscription, quality)
        if forward.subscription.problem:
            logger.warning(
                "SFU: %s cannot receive %s: %s",
                member.id,
                forward.key,
                forward.subscription.problem,
            )

    @staticmethod
    def _transceiver_of(member: _Member, track: MediaStreamTrack) -> RTCRtpTransceiver | None:
        pc = member.session.peer_connection
        if pc is None:
            return None
        for transceiver in pc.getTransceivers():
            sent = transceiver.sender.track
            if (sent is track or getattr(sent, "source", None) is track) and (
                transceiver.currentDirection in ("sendonly", "sendrecv")
            ):
                return transceiver
        return None

    def _drop_forward(self, member: _Member, forward: _Forward, *, renegotiate: bool) -> None:
        member.forwards.pop(forward.key, None)
        if forward.waiter is not None:
            forward.waiter.cancel()
        if forward.subscription is not None and self.router is not None:
            self.router.unsubscribe(forward.subscription)
        if renegotiate and not member.session.closed:
            with contextlib.suppress(Exception):
                member.session.remove_track(forward.track)
        forward.track.stop()


def _apply_quality(router: SfuRouter, subscription: Subscription, quality: str) -> None:
    """Pause the forward for :data:`VIDEO_OFF`; else resume it (keyframe) at that layer.

    A preference is about video: the participant's audio plays on, whatever is asked.
    """
    if subscription.transceiver.kind != "video":
        return
    if quality == VIDEO_OFF:
        router.pause(subscription)
        return
    router.set_quality(subscription, quality)
    if subscription.paused:
        task = asyncio.ensure_future(router.resume(subscription))
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("SFU: resuming a forward failed", exc_info=task.exception())


def _json_message(data: str | bytes, kind: str) -> dict[str, Any] | None:
    """The JSON object in *data* if its ``type`` is *kind*, else None."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != kind:
        return None
    return message


def _video_layer_report(data: str | bytes) -> VideoLayerChanged | None:
    """The :data:`VIDEO_LAYER_MESSAGE` in *data* as an event, None if it is not one."""
    report = _json_message(data, VIDEO_LAYER_MESSAGE)
    if report is None:
        return None
    participant, layer = report.get("participant"), report.get("layer")
    layers, paused = report.get("layers"), report.get("paused")
    if (
        not isinstance(participant, str)
        or not (layer is None or isinstance(layer, str))
        or not isinstance(layers, list)
        or not all(isinstance(rid, str) for rid in layers)
        or not isinstance(paused, bool)
    ):
        return None
    return VideoLayerChanged(
        participant_id=participant, layer=layer, layers=tuple(layers), paused=paused
    )


def _video_quality_request(data: str | bytes) -> tuple[str, str] | None:
    """``(participant, quality)`` of a video quality message, None if it is not one."""
    request = _json_message(data, VIDEO_QUALITY_MESSAGE)
    if request is None:
        return None
    participant, quality = request.get("participant"), request.get("quality")
    if not isinstance(participant, str) or not isinstance(quality, str):
        return None
    wanted = quality in VIDEO_QUALITIES or quality == VIDEO_OFF
    return (participant, quality) if wanted else None


def sfu_strategy_factory(
    *,
    sfu_config: SfuConfig | None = None,
    session_config: SessionConfig | None = None,
    on_forwarded: Callable[[int], None] | None = None,
) -> ServerStrategyFactory:
    """A factory of configured :class:`SfuServerStrategy` for
    ``RoomStrategies(hub, factories={"sfu": ...})``."""

    def factory(hub: Any) -> SfuServerStrategy:
        return SfuServerStrategy(
            hub, sfu_config=sfu_config, session_config=session_config, on_forwarded=on_forwarded
        )

    return factory


# --- client side ----------------------------------------------------------------------------


class _RemoteView(MediaStreamTrack):
    """A forwarded track as the application sees it: it ends when its publication does.

    The m-line (and aiortc's receiver track) behind it may be reused later for another
    participant's track, which then gets a view of its own.
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._ended = asyncio.Event()

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = asyncio.ensure_future(self._source.recv())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait([frame, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not frame.done():
                frame.cancel()
        if frame.cancelled() or self.readyState != "live":
            raise MediaStreamError
        return frame.result()

    def stop(self) -> None:
        self._ended.set()
        super().stop()


class SfuRoom(ServerSessionRoom):
    """An SFU room on a joined :class:`~rtckit.signaling.client.SignalingClient`.

    See the module documentation; the API is the one of
    :class:`~rtckit.topology.base.Room`, the same as :class:`~rtckit.topology.mesh.MeshRoom`.
    Every other participant's published track arrives as its own
    :class:`~rtckit.topology.base.TrackPublished`, named by the forwarded m-line's ``msid``.
    """

    TOPOLOGY = Topology.SFU

    def __init__(self, client: SignalingClient, *, session_config: SessionConfig) -> None:
        super().__init__(client, session_config=session_config, server_id=SFU_PEER_ID)
        # mid -> (participant, view) of the forwarded tracks being received
        self._views: dict[str, tuple[str, _RemoteView]] = {}
        #: what the SFU says it forwards of each participant's video (the last report)
        self.video_layers: dict[str, VideoLayerChanged] = {}

    def _on_media(self, session: PeerSession, event: TrackAdded | TrackRemoved) -> None:
        mid = str(event.mid)
        if isinstance(event, TrackRemoved):
            if mid in self._views:
                self._end_view(mid)
            return
        pc = session.peer_connection
        remote = None if pc is None else pc.remoteDescription
        msid = None if remote is None else _msid_of_mid(remote.sdp, mid)
        participant = participant_of_msid(msid)
        if participant is None:
            logger.warning("SFU track on mid %s names no participant (%r)", mid, msid)
            return
        if mid in self._views:
            self._end_view(mid)
        view = _RemoteView(event.track)
        self._views[mid] = (participant, view)
        self._emit(TrackPublished(participant_id=participant, track=view, kind=view.kind))

    def _on_room_data(self, data: str | bytes) -> None:
        opened = open_envelope(data)
        if opened is not None and opened[0] == SFU_PEER_ID:
            report = _video_layer_report(opened[1])
            if report is not None:
                if report.participant_id in self.video_layers or len(self.video_layers) < 256:
                    self.video_layers[report.participant_id] = report
                self._emit(report)
                return
        if opened is not None:
            self._emit(RoomDataMessage(participant_id=opened[0], data=opened[1]))

    def _end_remote_tracks(self) -> None:
        for mid in list(self._views):
            self._end_view(mid)

    def _participant_gone(self, peer_id: str) -> None:
        self.video_layers.pop(peer_id, None)
        for mid, (participant, _view) in list(self._views.items()):
            if participant == peer_id:
                self._end_view(mid)

    def set_video_quality(self, participant: str, quality: str) -> None:
        """Ask the SFU for the simulcast layer of rank *quality* of *participant*'s video.

        ``"low"``, ``"medium"`` or ``"high"`` (the default); carried on the room's data
        channel. A publication without simulcast ignores the rank. ``"off"``
        (:data:`~rtckit.topology.base.VIDEO_OFF`) pauses the video: the SFU forwards none
        of it (a video nobody shows costs nothing) until another quality is asked for, and
        then resumes at a keyframe.
        """
        qualities = (*VIDEO_QUALITIES, VIDEO_OFF)
        if quality not in qualities:
            raise TopologyError(
                f"video quality must be one of {', '.join(qualities)}, not {quality!r}"
            )
        message = {"type": VIDEO_QUALITY_MESSAGE, "participant": participant, "quality": quality}
        session = self.session
        if session is not None and not session.closed:
            session.send(ROOM_CHANNEL_LABEL, seal_envelope(SFU_PEER_ID, json.dumps(message)))

    def _end_view(self, mid: str) -> None:
        participant, view = self._views.pop(mid)
        view.stop()
        self._emit(TrackUnpublished(participant_id=participant, track=view, kind=view.kind))


async def open_sfu(
    client: SignalingClient, *, session_config: SessionConfig | None = None, **options: Any
) -> SfuRoom:
    """The SFU :class:`~rtckit.topology.base.ClientStrategy`: start an :class:`SfuRoom`.

    Without *session_config*, the session uses the ICE servers of the server's ``welcome``.
    """
    if options:
        raise TopologyError(f"unknown sfu options {sorted(options)}")
    room = SfuRoom(client, session_config=session_config or session_config_from_welcome(client))
    await room.start()
    return room
