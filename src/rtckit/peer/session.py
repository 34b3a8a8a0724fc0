"""``PeerSession``: one call leg on aiortc, with perfect negotiation, restarts and typed events.

A session owns one aiortc ``RTCPeerConnection`` at a time. Everything that touches it (adding
tracks, applying descriptions and candidates, replacing it) runs in one worker task, one step
at a time, driven by the pure :class:`~rtckit.peer.negotiation.Negotiator`. The application
talks to the other side through a :class:`~rtckit.peer.signaller.Signaller` and feeds incoming
messages to :meth:`PeerSession.receive`.

Liveness: aiortc has no ``disconnected`` ICE state and only notices a dead path after aioice's
consent freshness gives up (about 30 s). A session therefore opens a negotiated, unreliable
data channel (label ``rtckit-heartbeat``, stream id 1000) and sends a small heartbeat on it
every ``heartbeat_interval``. Without heartbeats for ``disconnected_after`` the session is
``disconnected``; after ``restart_after`` (twice that on the polite side, so that both sides
rarely restart at once) it replaces its connection if the signaller is connected; after
``dead_peer_timeout`` it reports the peer gone and closes. Heartbeats can flow only once the
SCTP association is up, which follows DTLS and takes seconds on a loaded machine: until the
heartbeat channel opens, a ``connected`` session waits ``heartbeat_open_timeout`` instead of
``disconnected_after``, and the channel opening counts as a sign of life. See
:doc:`/topics/ice-restart`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiortc
import attrs
from aiortc import (
    InvalidStateError,
    MediaStreamError,
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)

from rtckit import _aiortc
from rtckit._aiortc.sdp import SdpDescription, candidate_from_sdp
from rtckit.errors import ConfigurationError, NegotiationError, PeerError, RtcKitError
from rtckit.ice import IceConfig
from rtckit.ice.aiortc import to_aiortc
from rtckit.ice.candidates import CandidatePolicy, filter_sdp_candidates, parse_candidate
from rtckit.peer.events import (
    ConnectionReplaced,
    ConnectionStateChanged,
    DataChannelOpened,
    DataMessage,
    PeerEvent,
    QualityChanged,
    SessionClosed,
    StatsUpdated,
    TrackAdded,
    TrackRemoved,
)
from rtckit.peer.negotiation import (
    ApplyRemoteDescription,
    Decision,
    DropDescription,
    IgnoreOffer,
    MakeAnswer,
    MakeOffer,
    Negotiator,
    Nothing,
    SendDescription,
    Wait,
)
from rtckit.peer.signaller import Description, PeerCandidate, PeerMessage, PeerRestart, Signaller
from rtckit.peer.simulcast import add_simulcast_recv, simulcast_send_layers
from rtckit.peer.stats import (
    CandidatePairInfo,
    Quality,
    StatsSnapshot,
    quality_of,
    snapshot_from_report,
)

__all__ = ["HEARTBEAT_CHANNEL_ID", "HEARTBEAT_LABEL", "DataChannel", "PeerSession", "SessionConfig"]

logger = logging.getLogger(__name__)

HEARTBEAT_LABEL = "rtckit-heartbeat"
HEARTBEAT_CHANNEL_ID = 1000
_HEARTBEAT = "\x00rtckit-hb"
_MAX_BUFFERED = 1000
#: Remote candidates kept until the remote description arrives (a browser sends a few dozen).
_MAX_PENDING_CANDIDATES = 200
#: Characters of remote input quoted in a log line.
_QUOTE = 100


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{attribute.name} must be > 0, got {value!r}")


def _optional_positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(_inst, attribute, value)


@attrs.frozen(kw_only=True)
class SessionConfig:
    """How a session connects and watches its connection (all times in seconds).

    ``ice`` is always explicit: the default :class:`~rtckit.ice.IceConfig` has *no* server
    (host candidates only), never aiortc's default public STUN server. Its relay policy applies
    to every connection the session makes, replacements included.
    """

    ice: IceConfig = attrs.field(factory=IceConfig)
    heartbeat_interval: float = attrs.field(default=1.0, validator=_positive)
    disconnected_after: float = attrs.field(default=3.0, validator=_positive)
    restart_after: float = attrs.field(default=4.0, validator=_positive)
    dead_peer_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: How long a ``connected`` connection may stay silent while its heartbeat channel is not
    #: open yet (the SCTP association follows DTLS; on a loaded machine it takes seconds).
    #: Judging it by ``disconnected_after`` would replace healthy new connections.
    heartbeat_open_timeout: float = attrs.field(default=10.0, validator=_positive)
    auto_restart: bool = True
    close_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: Longest wait for STUN/TURN answers while gathering (aioice's own cap is 5 s).
    gather_timeout: float = attrs.field(default=2.0, validator=_positive)
    #: The remote candidates this side may send checks to. By default none at loopback,
    #: link-local, unspecified, multicast or cloud-metadata addresses, so a remote peer cannot
    #: make this side probe its own internal services. Labs on loopback relax it.
    candidate_policy: CandidatePolicy = attrs.field(factory=CandidatePolicy)
    stats_interval: float | None = attrs.field(default=None, validator=_optional_positive)
    #: Accept the simulcast layers a remote offer sends (``a=simulcast:send``, what rtckit.js
    #: sends to an SFU): the answers and every later offer receive them. Only for a side that
    #: forwards the layers apart (the SFU): aiortc's own receiver would feed them all into
    #: one decoder. Off, the remote side sends one layer.
    accept_simulcast: bool = False

    def rtc_configuration(self) -> RTCConfiguration:
        """The aiortc configuration: :func:`rtckit.ice.aiortc.to_aiortc` of ``ice``, max-bundle.

        One bundled transport per connection: gathering happens once, and a replacement
        (see :doc:`/topics/ice-restart`) re-creates one transport only.
        """
        configuration = to_aiortc(self.ice)
        configuration.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
        return configuration


class DataChannel:
    """A data channel that survives connection replacement (same label, re-created inside).

    Messages sent while the underlying channel is not open are buffered (up to 1000) and
    flushed when it opens.
    """

    def __init__(
        self,
        label: str,
        *,
        ordered: bool,
        max_retransmits: int | None,
        negotiated_id: int | None = None,
    ) -> None:
        self.label = label
        self.ordered = ordered
        self.max_retransmits = max_retransmits
        #: Stream id of a pre-negotiated channel (both sides create it), or ``None``.
        self.negotiated_id = negotiated_id
        self._channel: RTCDataChannel | None = None
        self._buffer: list[str | bytes] = []
        #: The connection the current underlying channel belongs to.
        self.bound_to: RTCPeerConnection | None = None

    @property
    def is_open(self) -> bool:
        """Whether the current underlying channel is open."""
        return self._channel is not None and self._channel.readyState == "open"

    def send(self, data: str | bytes) -> None:
        """Send *data* now, or when the channel (re)opens."""
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(data)
            return
        if len(self._buffer) >= _MAX_BUFFERED:
            raise PeerError(f"data channel {self.label!r} is not open and its buffer is full")
        self._buffer.append(data)

    def _bind(self, channel: RTCDataChannel) -> None:
        self._channel = channel

        def flush() -> None:
            if self._channel is channel:
                buffered, self._buffer = self._buffer, []
                for item in buffered:
                    channel.send(item)

        if channel.readyState == "open":
            flush()
        else:
            channel.on("open", flush)


class _ForwardTrack(MediaStreamTrack):
    """What a connection's sender reads: the application's track, behind a stop barrier.

    aiortc's ``RTCRtpSender`` *stops* its track when it stops (when its connection closes).
    Senders therefore get this forwarding track, one per connection: a replacement stops the
    old forwarder, never the application's track (a camera, a ``MediaRelay`` proxy...).
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source

    @property
    def id(self) -> str:
        """The application track's id: the SDP's ``msid`` names it, as a browser's does."""
        return self.source.id

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.source.recv()


_Op = tuple[str, Any]


class _UnanswerableOfferError(NegotiationError):
    """A remote offer was applied, but no answer can be made to it."""


def _check_description(sdp: str) -> None:
    """Refuse remote SDP that aiortc 1.x accepts but then fails on in a task of its own.

    * Any text ("garbage", NUL bytes) parses into a description without media, which aiortc
      answers. Every rtckit or browser offer has at least one m-line (rtckit's heartbeat
      channel is one), so none is lost by refusing those.
    * A media section without ``a=fingerprint`` is accepted; connecting then fails on an
      ``AssertionError`` in ``RTCPeerConnection.__connect``, logged as an unretrieved task
      exception with its traceback.
    * ``a=sctp-port`` outside 1-65535 is accepted; SCTP then fails to pack it (``struct.error``
      in the same task, and a traceback logged by ``aiortc.rtcdtlstransport``).
    """
    if not sdp.startswith("v=0"):
        raise NegotiationError("not an SDP description")
    media = SdpDescription.parse(sdp).media
    if not media:
        raise NegotiationError("an SDP description without a media section")
    for section in media:
        if section.port == 0:
            continue  # rejected: nothing is connected for it
        if section.dtls is None or not section.dtls.fingerprints:
            raise NegotiationError(f"m-line {section.kind} has no DTLS fingerprint")
        if section.sctp_port is not None and not 0 < section.sctp_port <= 0xFFFF:
            raise NegotiationError(f"sctp-port {section.sctp_port} is out of range")


def _quote(text: str) -> str:
    """Remote input quoted in a log line: escaped (one line) and cut short."""
    quoted = repr(text)
    return quoted if len(quoted) <= _QUOTE else quoted[:_QUOTE] + "..."


def _one_line(exc: Exception) -> str:
    """An error as one short log line (its text may quote what the remote side sent)."""
    text = " ".join(str(exc).split())
    if len(text) > 2 * _QUOTE:
        text = text[: 2 * _QUOTE] + "..."
    return f"{type(exc).__name__}: {text}"


def _what(kind: str, arg: Any) -> str:
    """A worker operation as a log line names it (``remote answer``, ``add_track``...)."""
    if kind != "remote":
        return kind
    if isinstance(arg, Description):
        return f"remote {arg.type} (generation {arg.generation})"
    return f"remote {type(arg).__name__.lower()} (generation {arg.generation})"


class PeerSession:
    """One peer-to-peer connection with the W3C perfect-negotiation pattern on aiortc.

    Use as ``async with PeerSession(signaller, polite=...) as session:``; feed messages from
    the other side to :meth:`receive`; read events with ``async for event in
    session.events()``. *polite* must be the opposite on the two sides (see
    :func:`rtckit.peer.negotiation.polite_for`).
    """

    def __init__(
        self,
        signaller: Signaller,
        *,
        polite: bool,
        config: SessionConfig | None = None,
        name: str = "",
    ) -> None:
        self._signaller = signaller
        self.polite = polite
        self.config = config if config is not None else SessionConfig()
        self.name = name
        self._generation = 0
        self._pc: RTCPeerConnection | None = None
        self._negotiator = Negotiator(polite=polite)
        self._ops: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._events: asyncio.Queue[PeerEvent | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._local_tracks: list[MediaStreamTrack] = []
        # per connection: the application's track -> the forwarding track its sender reads
        self._forwards: dict[MediaStreamTrack, _ForwardTrack] = {}
        self._channels: dict[str, DataChannel] = {}
        self._local_labels: list[str] = []
        self._remote_tracks: dict[str, MediaStreamTrack] = {}
        self._pending_candidates: list[PeerCandidate] = []
        #: mid -> RIDs of the simulcast layers the remote side sends (accept_simulcast)
        self._simulcast: dict[str, tuple[str, ...]] = {}
        self._heartbeat: RTCDataChannel | None = None
        self._state = "new"
        self._started = False
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._connected_event = asyncio.Event()
        now = time.monotonic()
        self._last_alive = now
        self._last_replacement = now
        self._offer_started: float | None = None
        self._restart_started: float | None = None
        self._quality = Quality.UNKNOWN
        #: Seconds from the first offer of the current connection to ``connected``.
        self.setup_time: float | None = None
        #: Seconds from the last replacement start to ``connected`` again.
        self.recovery_time: float | None = None
        self.replacements = 0

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> PeerSession:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the connection and start negotiating (the impolite side offers first)."""
        if self._started:
            return
        self._started = True
        self._new_connection()
        self._tasks.append(asyncio.create_task(self._worker(), name=f"peer-worker-{self.name}"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name=f"peer-watchdog-{self.name}"))
        if self.config.stats_interval is not None:
            self._tasks.append(
                asyncio.create_task(self._stats_loop(), name=f"peer-stats-{self.name}")
            )
        self._ops.put_nowait(("change", None))

    async def close(self) -> None:
        """Close the connection, end the event stream, and stop every task. Idempotent."""
        await self._shutdown("local")

    async def _shutdown(self, reason: str) -> None:
        if self._closing is None:
            self._closed = True
            caller = asyncio.current_task()
            # The work runs in its own task: a caller cancelled half-way (e.g. a room closing
            # while it disconnects this session) must not leave the connection half-closed.
            self._closing = asyncio.get_running_loop().create_task(
                self._do_shutdown(reason, caller), name=f"peer-close-{self.name}"
            )
        await asyncio.shield(self._closing)

    async def _do_shutdown(self, reason: str, caller: asyncio.Task[Any] | None) -> None:
        others = [task for task in self._tasks if task is not caller]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others)
        pc, self._pc = self._pc, None
        if pc is not None:
            await self._close_pc(pc)
        self._set_state("closed")
        self._emit(SessionClosed(reason=reason))
        self._events.put_nowait(None)

    async def _close_pc(self, pc: RTCPeerConnection) -> None:
        pc.remove_all_listeners()
        try:
            async with asyncio.timeout(self.config.close_timeout):
                # Shielded: cancelling a task that awaits a second pc.close() would cancel
                # aiortc's shared "closed" future and break every other waiter.
                await asyncio.shield(pc.close())
        except TimeoutError:
            logger.warning("%s: closing the old connection timed out", self.name)

    # -- public API -------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """How many times the connection was replaced (tags every signalling message)."""
        return self._generation

    @property
    def state(self) -> str:
        """The last :class:`~rtckit.peer.events.ConnectionStateChanged` state."""
        return self._state

    @property
    def closed(self) -> bool:
        """Whether the session is closed (or closing)."""
        return self._closed

    @property
    def peer_connection(self) -> RTCPeerConnection | None:
        """The current aiortc connection (it changes on replacement)."""
        return self._pc

    def simulcast_layers(self, mid: str) -> tuple[str, ...]:
        """The RIDs of the simulcast layers the remote side sends on *mid*, lowest first.

        Empty unless :attr:`SessionConfig.accept_simulcast` is set and the remote side
        offered simulcast on that m-line.
        """
        return self._simulcast.get(mid, ())

    @property
    def local_tracks(self) -> Sequence[aiortc.MediaStreamTrack]:
        """The tracks this side sends."""
        return tuple(self._local_tracks)

    @property
    def remote_tracks(self) -> Sequence[aiortc.MediaStreamTrack]:
        """The tracks the remote side currently sends to this side."""
        return tuple(self._remote_tracks.values())

    def add_track(self, track: MediaStreamTrack) -> None:
        """Send *track* to the remote side (renegotiates)."""
        self._check_open()
        if track in self._local_tracks:
            raise PeerError("track already added")
        self._local_tracks.append(track)
        self._ops.put_nowait(("add_track", track))

    def remove_track(self, track: MediaStreamTrack) -> None:
        """Stop sending *track* (renegotiates; the track itself is not stopped)."""
        self._check_open()
        if track not in self._local_tracks:
            raise PeerError("track was not added")
        self._local_tracks.remove(track)
        self._ops.put_nowait(("remove_track", track))

    def create_data_channel(
        self,
        label: str,
        *,
        ordered: bool = True,
        max_retransmits: int | None = None,
        negotiated_id: int | None = None,
    ) -> DataChannel:
        """Open a data channel named *label* (unique per session) to the remote side.

        With *negotiated_id*, the channel is pre-negotiated: both sides must create it with
        the same label and id (ids 1000 and up are reserved for rtckit), and no
        :class:`~rtckit.peer.events.DataChannelOpened` event is emitted.
        """
        self._check_open()
        if label == HEARTBEAT_LABEL or label in self._channels:
            raise PeerError(f"data channel label {label!r} is already used")
        if negotiated_id == HEARTBEAT_CHANNEL_ID:
            raise PeerError(f"data channel id {negotiated_id} is rtckit's heartbeat")
        channel = DataChannel(
            label, ordered=ordered, max_retransmits=max_retransmits, negotiated_id=negotiated_id
        )
        self._channels[label] = channel
        self._local_labels.append(label)
        self._ops.put_nowait(("channel", channel))
        return channel

    def channel(self, label: str) -> DataChannel:
        """The data channel *label* (created by either side)."""
        try:
            return self._channels[label]
        except KeyError:
            raise PeerError(f"no data channel {label!r}") from None

    def send(self, label: str, data: str | bytes) -> None:
        """Send *data* on the data channel *label*."""
        self.channel(label).send(data)

    async def receive(self, message: PeerMessage) -> None:
        """Feed one message from the other side (in the order the signaller delivered them)."""
        if not self._closed:
            self._ops.put_nowait(("remote", message))

    async def restart(self) -> None:
        """Replace the connection now (rtckit's ICE restart on aiortc)."""
        self._check_open()
        self._ops.put_nowait(("restart", ("requested", None)))

    async def wait_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - bounded by design
        """Wait until the session is ``connected`` (raise ``TimeoutError`` after *timeout*)."""
        async with asyncio.timeout(timeout):
            await self._connected_event.wait()

    async def events(self) -> AsyncIterator[PeerEvent]:
        """The session's events, until it is closed (one consumer)."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)
                return
            yield event

    async def stats(self) -> StatsSnapshot:
        """A typed snapshot of the current connection's counters."""
        pc = self._pc
        if pc is None:
            return StatsSnapshot(timestamp=time.time())
        report = await pc.getStats()
        pair = _aiortc.selected_pair(pc)
        return snapshot_from_report(
            report.values(),
            timestamp=time.time(),
            candidate_pair=None if pair is None else CandidatePairInfo.from_candidates(*pair),
        )

    # -- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PeerError("the session is closed")

    def _emit(self, event: PeerEvent) -> None:
        self._events.put_nowait(event)

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if state == "connected":
                self._connected_event.set()
            else:
                self._connected_event.clear()
            self._emit(ConnectionStateChanged(state=state, generation=self._generation))

    def _new_connection(self) -> None:
        pc = RTCPeerConnection(self.config.rtc_configuration())
        # before any transport exists: DTLS with peers whose certificate is RSA (webrtcbin)
        _aiortc.widen_dtls_ciphers(pc)
        self._pc = pc
        generation = self._generation
        # The heartbeat's SCTP transport comes first and is marked bundled, so that every
        # transceiver created later shares it and is bundled too: aiortc then never "replaces"
        # (and stops) the one shared transport, whatever m-line order the remote side uses.
        heartbeat = pc.createDataChannel(
            HEARTBEAT_LABEL,
            negotiated=True,
            id=HEARTBEAT_CHANNEL_ID,
            ordered=False,
            maxRetransmits=0,
        )
        self._heartbeat = heartbeat
        _aiortc.mark_sctp_bundled(pc)
        # Route incoming RTP by SSRC, MID and RID, RTX SSRCs included (aiortc alone loses
        # retransmissions when two video m-lines share the RTX payload type).
        _aiortc.install_rtp_routing(pc)
        _aiortc.guard_receive(pc)
        # One bundled transport: its gatherer exists now, bound its STUN/TURN wait.
        _aiortc.bound_gathering(pc, self.config.gather_timeout)

        def on_heartbeat(_message: object) -> None:
            self._alive()

        def on_heartbeat_open() -> None:
            # The SCTP association is up: the remote side answered, and heartbeats can flow
            # from now on. The silence clock starts here rather than at DTLS ``connected``.
            if self._pc is pc and not self._closed:
                self._alive()

        heartbeat.on("message", on_heartbeat)
        heartbeat.on("open", on_heartbeat_open)
        self._forwards = {}
        for track in self._local_tracks:
            self._send_track(pc, track)
        for label in self._local_labels:
            self._open_local_channel(pc, self._channels[label])

        def on_state() -> None:
            if self._pc is pc and not self._closed:
                self._on_pc_state(pc.connectionState, generation)

        def on_datachannel(channel: RTCDataChannel) -> None:
            if self._pc is pc and not self._closed:
                self._on_remote_channel(channel)

        pc.on("connectionstatechange", on_state)
        pc.on("datachannel", on_datachannel)
        self._negotiator = Negotiator(polite=self.polite)
        self._pending_candidates = []
        self._simulcast = {}
        self._offer_started = None

    def _send_track(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        forward = _ForwardTrack(track)
        self._forwards[track] = forward
        pc.addTrack(forward)

    def _open_local_channel(self, pc: RTCPeerConnection, wrapper: DataChannel) -> None:
        wrapper.bound_to = pc
        channel = pc.createDataChannel(
            wrapper.label,
            ordered=wrapper.ordered,
            maxRetransmits=wrapper.max_retransmits,
            negotiated=wrapper.negotiated_id is not None,
            id=wrapper.negotiated_id,
        )
        self._watch_channel(wrapper, channel)

    def _watch_channel(self, wrapper: DataChannel, channel: RTCDataChannel) -> None:
        wrapper._bind(channel)
        label = wrapper.label

        def on_message(data: str | bytes) -> None:
            if wrapper._channel is channel and not self._closed:
                self._emit(DataMessage(label=label, data=data))

        channel.on("message", on_message)

    def _on_remote_channel(self, channel: RTCDataChannel) -> None:
        wrapper = self._channels.get(channel.label)
        if wrapper is None:
            wrapper = DataChannel(
                channel.label, ordered=channel.ordered, max_retransmits=channel.maxRetransmits
            )
            self._channels[channel.label] = wrapper
            self._watch_channel(wrapper, channel)
            self._emit(DataChannelOpened(label=channel.label))
        else:
            self._watch_channel(wrapper, channel)

    def _alive(self) -> None:
        self._last_alive = time.monotonic()
        if self._state == "disconnected":
            self._set_state("connected")

    def _on_pc_state(self, state: str, generation: int) -> None:
        if generation != self._generation:
            return
        if state == "connected":
            now = time.monotonic()
            self._last_alive = now
            if self._offer_started is not None and self.setup_time is None:
                self.setup_time = now - self._offer_started
            if self._restart_started is not None:
                self.recovery_time = now - self._restart_started
                self._restart_started = None
            self._ops.put_nowait(("resume", generation))
            self._set_state("connected")
        elif state == "connecting":
            self._set_state("connecting")
        elif state == "failed":
            self._set_state("failed")
            if self.config.auto_restart and self._signaller.connected:
                self._ops.put_nowait(("restart", ("failed", generation)))
        elif state == "closed":
            # aiortc closes the connection when the remote side closed its DTLS: the remote
            # is replacing its connection (its "restart" message follows) or leaving (the
            # room says so). The watchdog restarts only if heartbeats stay away.
            self._set_state("failed")

    async def _watchdog(self) -> None:
        config = self.config
        interval = config.heartbeat_interval
        restart_after = config.restart_after * (2 if self.polite else 1)
        while True:
            await asyncio.sleep(interval)
            heartbeat = self._heartbeat
            if heartbeat is not None and heartbeat.readyState == "open":
                with contextlib.suppress(Exception):
                    heartbeat.send(_HEARTBEAT)
            now = time.monotonic()
            silent = now - self._last_alive
            if silent >= config.dead_peer_timeout:
                logger.info("%s: no heartbeat for %.1f s, peer gone", self.name, silent)
                await self._shutdown("peer-timeout")
                return
            if self._state == "connected" and silent >= self._silence_limit(heartbeat):
                self._set_state("disconnected")
            if (
                self._state in ("disconnected", "failed")
                and config.auto_restart
                and silent >= restart_after
                and now - self._last_replacement >= restart_after
                and self._signaller.connected
            ):
                self._ops.put_nowait(("restart", ("disconnected", self._generation)))
                self._last_replacement = now

    def _silence_limit(self, heartbeat: RTCDataChannel | None) -> float:
        """How long a ``connected`` session may go without heartbeats before ``disconnected``."""
        config = self.config
        if heartbeat is not None and heartbeat.readyState == "connecting":
            # No heartbeat can arrive before the heartbeat channel opens.
            return max(config.disconnected_after, config.heartbeat_open_timeout)
        return config.disconnected_after

    async def _stats_loop(self) -> None:
        interval = self.config.stats_interval
        assert interval is not None
        while True:
            await asyncio.sleep(interval)
            try:
                snapshot = await self.stats()
            except Exception:
                logger.exception("%s: stats failed", self.name)
                continue
            self._emit(StatsUpdated(stats=snapshot))
            quality = quality_of(snapshot)
            if quality != self._quality:
                self._quality = quality
                self._emit(QualityChanged(quality=quality.value, stats=snapshot))

    async def _worker(self) -> None:
        while True:
            op = await self._ops.get()
            if op is None:
                return
            kind, arg = op
            try:
                await self._run_op(kind, arg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                pc = self._pc
                if pc is not None and pc.signalingState == "closed":
                    # aiortc closes a connection by itself once the remote side closed DTLS
                    # (it left); what was queued for it has nobody to negotiate with.
                    logger.debug("%s: %s skipped: the connection is closed", self.name, kind)
                elif kind == "remote" or isinstance(exc, RtcKitError):
                    # The remote side sent something unusable (bad SDP, an answer aiortc
                    # refuses...): one line, no traceback; the session carries on.
                    logger.warning("%s: %s failed: %s", self.name, _what(kind, arg), _one_line(exc))
                else:
                    logger.exception("%s: %s failed", self.name, kind)

    async def _run_op(self, kind: str, arg: Any) -> None:
        pc = self._pc
        assert pc is not None
        if kind == "remote":
            await self._on_remote(arg)
        elif kind == "restart":
            reason, generation = arg
            if generation is None or (
                generation == self._generation and self._state != "connected"
            ):
                await self._replace(reason)
        elif kind == "add_track":
            # idempotent: a replacement since the call may have added it already
            if arg in self._local_tracks and arg not in self._forwards:
                self._send_track(pc, arg)
            await self._drive(self._negotiator.local_change())
        elif kind == "remove_track":
            forward = self._forwards.pop(arg, None)
            for transceiver in pc.getTransceivers():
                if forward is not None and transceiver.sender.track is forward:
                    transceiver.sender.replaceTrack(None)
                    forward.stop()
                    transceiver.direction = (
                        "recvonly" if transceiver.direction == "sendrecv" else "inactive"
                    )
            await self._drive(self._negotiator.local_change())
        elif kind == "channel":
            if arg.bound_to is not pc:  # a replacement since the call may have opened it
                self._open_local_channel(pc, arg)
        elif kind == "resume":
            if arg == self._generation:
                try:
                    await _aiortc.resume_connect(pc)
                except (ConnectionError, InvalidStateError) as exc:  # the connection died
                    logger.debug("%s: resume skipped: %s", self.name, exc)
        elif kind == "change":
            await self._drive(self._negotiator.local_change())

    async def _send(self, message: PeerMessage) -> None:
        try:
            await self._signaller.send(message)
        except Exception as exc:  # noqa: BLE001 - a closed signaller must not kill the session
            logger.warning("%s: cannot send %s: %s", self.name, type(message).__name__, exc)

    async def _drive(self, decision: Decision) -> None:
        """Perform decisions until the machine has nothing more to do right now."""
        negotiator = self._negotiator
        while True:
            pc = self._pc
            assert pc is not None
            if isinstance(decision, MakeOffer):
                if self._offer_started is None:
                    self._offer_started = time.monotonic()
                try:
                    await pc.setLocalDescription(await _aiortc.create_stable_offer(pc))
                except Exception:
                    negotiator.offer_failed()
                    raise
                decision = negotiator.offer_made()
            elif isinstance(decision, MakeAnswer):
                try:
                    answer = await pc.createAnswer()
                    _aiortc.settle_unoffered_transceivers(pc)
                    await pc.setLocalDescription(answer)
                except Exception as exc:
                    raise _UnanswerableOfferError(_one_line(exc)) from exc
                decision = negotiator.answer_made()
            elif isinstance(decision, SendDescription):
                local = pc.localDescription
                sdp = add_simulcast_recv(local.sdp, self._simulcast)
                await self._send(Description(type=local.type, sdp=sdp, generation=self._generation))
                decision = negotiator.next_step()
            elif isinstance(decision, Wait | Nothing):
                return
            else:
                raise NegotiationError(f"unexpected decision {decision!r}")

    async def _on_remote(self, message: PeerMessage) -> None:
        generation = message.generation
        if generation < self._generation:
            logger.debug("%s: dropping %s of generation %d", self.name, message, generation)
            return
        if generation > self._generation:
            await self._replace("remote", generation=generation)
        if isinstance(message, PeerRestart):
            return
        if isinstance(message, PeerCandidate):
            await self._add_candidate(message)
            return
        await self._on_description(message)

    async def _on_description(self, message: Description) -> None:
        pc = self._pc
        assert pc is not None
        negotiator = self._negotiator
        decision = negotiator.remote_description(message.type)
        if isinstance(decision, IgnoreOffer):
            logger.debug("%s: ignoring a colliding offer (impolite)", self.name)
            return
        if isinstance(decision, DropDescription):
            logger.debug("%s: dropping description: %s", self.name, decision.reason)
            return
        assert isinstance(decision, ApplyRemoteDescription)
        if decision.rollback:
            _aiortc.rollback_local_offer(pc)
            negotiator.rolled_back()
        try:
            _check_description(message.sdp)
            sdp, refused = filter_sdp_candidates(message.sdp, self.config.candidate_policy)
            for ignored, reason in refused:
                logger.info("%s: ignoring remote candidate %s: %s", self.name, ignored, reason)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=message.type))
        except Exception as exc:
            negotiator.remote_failed(message.type)
            detail = str(exc) or type(exc).__name__
            raise NegotiationError(f"cannot apply the remote {message.type}: {detail}") from exc
        if self.config.accept_simulcast:
            self._simulcast = simulcast_send_layers(message.sdp)
        self._update_remote_tracks(message.sdp)
        pending, self._pending_candidates = self._pending_candidates, []
        for candidate in pending:
            await self._add_candidate(candidate)
        try:
            await self._drive(negotiator.remote_applied(message.type))
        except _UnanswerableOfferError as exc:
            # aiortc took the offer but cannot answer it (e.g. an m-line kind it does not
            # know), and it cannot roll a remote offer back: the connection would wait in
            # have-remote-offer for ever, renegotiating nothing. Start a fresh one.
            logger.warning("%s: cannot answer the remote offer (%s); replacing", self.name, exc)
            await self._replace("bad-offer")

    async def _add_candidate(self, message: PeerCandidate) -> None:
        pc = self._pc
        assert pc is not None
        remote: RTCSessionDescription | None = pc.remoteDescription
        if remote is None:
            if len(self._pending_candidates) < _MAX_PENDING_CANDIDATES:
                self._pending_candidates.append(message)
            elif len(self._pending_candidates) == _MAX_PENDING_CANDIDATES:
                self._pending_candidates.append(message)  # one over: warn once
                logger.warning(
                    "%s: more than %d remote candidates before a remote description; "
                    "dropping the rest",
                    self.name,
                    _MAX_PENDING_CANDIDATES,
                )
            return
        text = message.candidate
        try:
            if not text:
                await pc.addIceCandidate(None)
                return
            reason = self.config.candidate_policy.refusal_reason(parse_candidate(text))
            if reason is not None:
                logger.info("%s: ignoring remote candidate %s: %s", self.name, _quote(text), reason)
                return
            candidate = candidate_from_sdp(text.removeprefix("candidate:"))
            candidate.sdpMid = message.sdp_mid
            candidate.sdpMLineIndex = message.sdp_mline_index
            # not pc.addIceCandidate: it drops candidates for bundled m-lines, i.e. all of them
            await _aiortc.add_trickled_candidate(pc, candidate)
        except Exception as exc:  # noqa: BLE001 - aiortc raises ValueError, KeyError...
            if not self._negotiator.accept_candidate_errors():
                logger.warning(
                    "%s: bad remote candidate %s: %s", self.name, _quote(text), _one_line(exc)
                )

    def _update_remote_tracks(self, sdp: str) -> None:
        pc = self._pc
        assert pc is not None
        sending: set[str] = set()
        for media in SdpDescription.parse(sdp).media:
            if media.kind in ("audio", "video") and media.direction in ("sendrecv", "sendonly"):
                sending.add(str(media.rtp.muxId))
        by_mid = {t.mid: t for t in pc.getTransceivers() if t.mid is not None}
        for mid in list(self._remote_tracks):
            if mid not in sending:
                gone = self._remote_tracks.pop(mid)
                self._emit(
                    TrackRemoved(track=gone, kind=gone.kind, mid=mid, generation=self._generation)
                )
        for mid in sorted(sending):
            transceiver = by_mid.get(mid)
            if mid in self._remote_tracks or transceiver is None:
                continue
            track: MediaStreamTrack | None = getattr(transceiver.receiver, "track", None)
            if track is None:  # aiortc types it as always set; it is None until negotiated
                continue
            self._remote_tracks[mid] = track
            self._emit(
                TrackAdded(track=track, kind=track.kind, mid=mid, generation=self._generation)
            )

    async def _replace(self, reason: str, *, generation: int | None = None) -> None:
        """Replace the RTCPeerConnection: same tracks, same data channel labels, new ICE/DTLS."""
        old = self._pc
        self._generation = generation if generation is not None else self._generation + 1
        self._last_replacement = time.monotonic()
        self._restart_started = self._last_replacement
        self.replacements += 1
        self._set_state("restarting")
        for mid, track in self._remote_tracks.items():
            self._emit(
                TrackRemoved(track=track, kind=track.kind, mid=mid, generation=self._generation)
            )
        self._remote_tracks.clear()
        if reason != "remote":
            await self._send(PeerRestart(generation=self._generation))
        if old is not None:
            await self._close_pc(old)
        self._new_connection()
        self._emit(ConnectionReplaced(generation=self._generation, reason=reason))
        await self._drive(self._negotiator.local_change())
