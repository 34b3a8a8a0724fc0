"""The forwarding engine on aiortc: publications, subscriptions, feedback, no decoding.

An :class:`SfuRouter` is given, per participant, the server-side aiortc transceivers:

* :meth:`SfuRouter.publish` takes a transceiver that *receives* a participant's track. Its
  receiver is taken over before it starts: aiortc's decoder thread and jitter buffer are never
  started; the decrypted RTP packets go straight to the forwarding code.
* :meth:`SfuRouter.subscribe` takes a transceiver that *sends* to another participant (its
  sender carries a :class:`ForwardingTrack` placeholder, so aiortc never creates an encoder).
  Each packet of the publication is rewritten for the subscriber (SSRC, payload type,
  sequence number, timestamp, header extension IDs) and handed to the subscriber's DTLS
  transport, which encrypts and sends it.
* RTCP from subscribers is handled here: NACKs are answered from the publication's packet
  cache (or relayed upstream when the packet is not cached), PLI/FIR are relayed upstream
  rate limited, REMB estimates are aggregated (minimum) and relayed upstream. The
  publisher's sender reports are rewritten for each subscriber.

Tracks are named by a :class:`TrackKey` (participant, name). When a participant publishes
again under the same key (a reconnect, a camera switch), every subscription moves to the new
source with continuous sequence numbers and timestamps and no renegotiation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any

import attrs
from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpSender,
    RTCRtpTransceiver,
)

from rtckit import _aiortc
from rtckit._aiortc.sfu import RTCRtpReceiveParameters
from rtckit._deprecated import renamed
from rtckit.errors import ConfigurationError, TopologyError
from rtckit.sfu.forward import (
    BandwidthAggregator,
    KeyframeRequestLimiter,
    LossTracker,
    OutputParameters,
    PacketCache,
    ReceptionStatistics,
    StreamRewriter,
)
from rtckit.sfu.rtp import (
    MAX_PADDING,
    ExtensionRemap,
    RtcpFir,
    RtcpNack,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpReportBlock,
    RtcpSenderReport,
    RtpHeader,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sr,
    is_keyframe,
    iter_extensions,
    parse_rtcp,
    parse_rtp_header,
    rewrite_abs_send_time,
    unwrap_rtx,
)
from rtckit.sfu.selection import LayerPolicy, LayerSelector

__all__ = [
    "DEFAULT_FORWARDED_EXTENSIONS",
    "VIDEO_QUALITIES",
    "ForwardingTrack",
    "PacketSink",
    "PublishedTrack",
    "SfuConfig",
    "SfuEvent",
    "SfuRouter",
    "SfuStats",
    "SfuTrackPublished",
    "SfuTrackUnpublished",
    "Subscription",
    "SubscriptionPaused",
    "SubscriptionResumed",
    "TrackKey",
    "TrackSubscribed",
    "TrackUnsubscribed",
    "accept_forwarding_transceiver",
    "add_forwarding_transceiver",
    "reads_forwarding_track",
]

logger = logging.getLogger(__name__)

ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"

#: a subscriber's layer preference for a simulcast publication, as an index into its layers
#: (lowest first); "high" is the last one
VIDEO_QUALITIES: Mapping[str, int] = {"low": 0, "medium": 1, "high": -1}

#: Header extensions forwarded (remapped to the subscriber's IDs) by default. Others are
#: stripped: ``sdes:mid`` and ``rid`` name the publisher's m-line, and transport-wide
#: congestion control numbers belong to one transport.
DEFAULT_FORWARDED_EXTENSIONS: frozenset[str] = frozenset(
    {
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        ABS_SEND_TIME_URI,
        "urn:ietf:params:rtp-hdrext:toffset",
        "urn:3gpp:video-orientation",
        "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time",
        "http://www.webrtc.org/experiments/rtp-hdrext/color-space",
    }
)


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ConfigurationError(f"{attribute.name} must be positive, not {value!r}")


def _cache_size(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 16 or value & (value - 1):
        raise ConfigurationError(f"{attribute.name} must be a power of two >= 16, not {value}")


@attrs.frozen(kw_only=True)
class SfuConfig:
    """Tuning of an :class:`SfuRouter`. Times are in seconds."""

    #: packets kept per published track (per simulcast layer) to answer NACKs (a power of two)
    packet_cache_size: int = attrs.field(default=512, validator=_cache_size)
    #: minimum time between two keyframe requests sent upstream for one track
    keyframe_request_interval: float = attrs.field(default=0.3, validator=_positive)
    #: minimum time between two REMB messages sent upstream for one track
    bandwidth_feedback_interval: float = attrs.field(default=1.0, validator=_positive)
    #: a subscriber's REMB estimate is forgotten after this long
    bandwidth_estimate_max_age: float = attrs.field(default=5.0, validator=_positive)
    #: set abs-send-time to the SFU's send time (receivers estimate bandwidth from it)
    rewrite_abs_send_time: bool = True
    #: header extension URIs forwarded to subscribers (remapped to their IDs)
    forwarded_extensions: frozenset[str] = attrs.field(
        default=DEFAULT_FORWARDED_EXTENSIONS, converter=frozenset
    )
    #: relay keyframe requests upstream as FIR instead of PLI
    use_fir: bool = False
    #: ask publishers for their lost video packets (NACK) as soon as a gap is seen
    nack_upstream: bool = True
    #: interval of the receiver reports sent to publishers
    receiver_report_interval: float = attrs.field(default=1.0, validator=_positive)
    #: bitrate (bit/s) announced by REMB to a simulcast publisher, every
    #: ``bandwidth_feedback_interval``, instead of its subscribers' minimum: each subscriber
    #: takes the layer it wants, so one slow subscriber must not cut the top layer
    simulcast_uplink_bitrate: int = attrs.field(default=3_000_000, validator=_positive)
    #: a simulcast layer silent this long counts as stopped (a browser turned it off, or
    #: adapted to CPU or bandwidth): its subscriptions move to the nearest layer still
    #: sending, and back when it sends again; checked every ``receiver_report_interval``
    layer_timeout: float = attrs.field(default=1.0, validator=_positive)
    #: how each subscription of a simulcast publication picks its layer from its downlink
    #: (REMB, loss, probing; the preference of :meth:`SfuRouter.set_quality` is the
    #: ceiling), re-decided every ``receiver_report_interval``; None: the preference alone
    layer_policy: LayerPolicy | None = attrs.field(factory=LayerPolicy)
    #: a packet asked for again by a subscriber's NACK within this time of its last
    #: retransmission is not sent again: aiortc's receiver repeats every packet still missing
    #: in each NACK, which on a congested link would multiply the traffic that congests it
    retransmission_interval: float = attrs.field(default=0.5, validator=_positive)
    #: a retransmission is sent again, up to this many times, every
    #: ``repair_retry_interval``, until a NACK of the subscriber no longer lists its packet:
    #: aiortc's receiver asks for a missing packet only when a new gap appears, and its
    #: jitter buffer waits for a hole until 512 packets later, so a retransmission lost
    #: on a congested link (the last ones before the SFU moves the subscriber down) would
    #: freeze its picture for tens of seconds. When the repeats are used up without a NACK
    #: saying the packet arrived, the subscriber's stream restarts at a keyframe of its
    #: layer (requested at once), its sequence numbers skipping
    #: ``rtckit._aiortc.AIORTC_JITTER_SKIP`` so that aiortc's jitter buffer drops the hole
    #: (at most once per ``repair_retry_interval`` times four). 0 disables both. A
    #: subscriber seen asking again for the same packets on its own (libwebrtc, Firefox,
    #: GStreamer; :attr:`Subscription.renacks`) gets neither: it repairs its losses and asks
    #: for a keyframe itself, and the SFU cannot tell its repaired packets from lost ones.
    repair_retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    repair_retry_interval: float = attrs.field(default=0.2, validator=_positive)
    #: the most padding (bit/s) sent to one subscriber while its selector probes the next
    #: layer's rate (``LayerSelector.probe_bitrate``; subscribers with RTX only)
    probe_padding_max: int = attrs.field(default=2_000_000, validator=_positive)


@attrs.frozen
class TrackKey:
    """A published track's stable name: the participant and a name it chooses (or the kind)."""

    participant: str
    name: str

    def __str__(self) -> str:
        return f"{self.participant}/{self.name}"


@attrs.frozen(kw_only=True)
class SfuStats:
    """Counters of an :class:`SfuRouter` since it was created."""

    publications: int
    subscriptions: int
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    #: packets not forwarded to one subscriber (paused, waiting for a keyframe, stale)
    packets_dropped: int
    send_errors: int
    keyframes_in: int
    nacks_received: int
    #: lost packets asked for by subscribers, answered from the cache
    nacks_answered: int
    #: lost packets asked for that were not cached (relayed upstream)
    nacks_missed: int
    #: lost packets not re-sent because they came before a keyframe the subscriber has
    #: since been sent, and it recovers on its own (``Subscription.renacks``)
    nacks_obsolete: int
    #: retransmissions sent again unasked (``SfuConfig.repair_retries``)
    retransmissions_repeated: int
    #: subscriber streams restarted at a keyframe after a loss they could not repair
    keyframe_restarts: int
    #: padding packets (RTX, no payload) sent to probe subscribers' links, and their bytes
    padding_packets_sent: int
    padding_bytes_sent: int
    #: NACK messages sent upstream (relayed cache misses and the SFU's own)
    nacks_relayed: int
    #: lost publisher packets the SFU asked for itself (upstream NACK), and RTX received
    nacks_generated: int
    retransmissions_in: int
    keyframe_requests_received: int
    #: PLI (or FIR) sent upstream to publishers
    plis_relayed: int
    rembs_relayed: int
    receiver_reports_sent: int
    sender_reports_forwarded: int
    data_messages_relayed: int
    #: decoders/encoders aiortc created for the SFU's forwarded tracks (should stay 0)
    decoders_created: int
    encoders_created: int
    #: receivers or senders of the SFU found with a decoder thread / encoder right now
    decoders_running: int
    encoders_running: int


# --- events ---------------------------------------------------------------------------------


@attrs.frozen
class SfuTrackPublished:
    """A track is published (or published again under the same key).

    (Named apart from the room event :class:`rtckit.topology.base.TrackPublished`; the old
    name ``rtckit.sfu.engine.TrackPublished`` still imports, with a warning.)
    """

    key: TrackKey
    kind: str
    mime_type: str
    republished: bool


@attrs.frozen
class SfuTrackUnpublished:
    """A track is no longer published; its subscriptions wait for it to come back.

    (Named apart from the room event :class:`rtckit.topology.base.TrackUnpublished`; the old
    name ``rtckit.sfu.engine.TrackUnpublished`` still imports, with a warning.)
    """

    key: TrackKey


@attrs.frozen
class TrackSubscribed:
    """A subscriber now receives a track."""

    subscriber: str
    key: TrackKey


@attrs.frozen
class TrackUnsubscribed:
    """A subscriber no longer receives a track."""

    subscriber: str
    key: TrackKey


@attrs.frozen
class SubscriptionPaused:
    """Forwarding of a track to a subscriber is paused."""

    subscriber: str
    key: TrackKey


@attrs.frozen
class SubscriptionResumed:
    """Forwarding of a track to a subscriber is resumed."""

    subscriber: str
    key: TrackKey


SfuEvent = (
    SfuTrackPublished
    | SfuTrackUnpublished
    | TrackSubscribed
    | TrackUnsubscribed
    | SubscriptionPaused
    | SubscriptionResumed
)

# Deprecated names: rtckit.topology.base has the room events TrackPublished and TrackUnpublished.
__getattr__ = renamed(
    __name__,
    {
        "TrackPublished": ("rtckit.sfu.engine.SfuTrackPublished", SfuTrackPublished),
        "TrackUnpublished": ("rtckit.sfu.engine.SfuTrackUnpublished", SfuTrackUnpublished),
    },
)


# A sink sees every packet of a publication, after RTX unwrap: (data, header, keyframe);
# keyframe is True for the first packet of a keyframe, never for a retransmitted copy.
PacketSink = Callable[[bytes, RtpHeader, bool], None]


class ForwardingTrack(MediaStreamTrack):
    """Placeholder track for a sender whose packets the SFU sends itself.

    ``recv()`` waits until the track is stopped: aiortc's sender loop stays idle and never
    creates an encoder.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._stopped = asyncio.Event()

    async def recv(self) -> Any:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        self._stopped.set()
        super().stop()


def reads_forwarding_track(track: MediaStreamTrack | None) -> bool:
    """Whether a sender's *track* is a :class:`ForwardingTrack`, or a wrapper reading one.

    A wrapper is a track whose ``source`` attribute is the :class:`ForwardingTrack` (as
    :class:`rtckit.peer.session.PeerSession` puts between its senders and the tracks given
    to ``add_track``): its ``recv()`` waits as long as the placeholder's, so no encoder runs.
    """
    if isinstance(track, ForwardingTrack):
        return True
    return isinstance(getattr(track, "source", None), ForwardingTrack)


def _codec_matches(a: RTCRtpCodecParameters, b: RTCRtpCodecParameters) -> bool:
    if a.mimeType.lower() != b.mimeType.lower() or a.clockRate != b.clockRate:
        return False
    if a.mimeType.lower() == "video/h264":
        pa, pb = a.parameters, b.parameters
        if pa.get("packetization-mode", 0) != pb.get("packetization-mode", 0):
            return False
    return True


def _is_rtx(codec: RTCRtpCodecParameters) -> bool:
    return codec.mimeType.lower().endswith("/rtx")


class _Counters:
    """Mutable counters behind :class:`SfuStats`."""

    def __init__(self) -> None:
        self.receiver_reports_sent = 0
        self.publications = 0
        self.subscriptions = 0
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.packets_dropped = 0
        self.send_errors = 0
        self.keyframes_in = 0
        self.nacks_received = 0
        self.nacks_answered = 0
        self.nacks_missed = 0
        self.nacks_obsolete = 0
        self.retransmissions_repeated = 0
        self.keyframe_restarts = 0
        self.padding_packets_sent = 0
        self.padding_bytes_sent = 0
        self.nacks_relayed = 0
        self.nacks_generated = 0
        self.retransmissions_in = 0
        self.keyframe_requests_received = 0
        self.plis_relayed = 0
        self.rembs_relayed = 0
        self.sender_reports_forwarded = 0
        self.data_messages_relayed = 0
        self.decoders_created = 0
        self.encoders_created = 0
        self.decoders_running = 0
        self.encoders_running = 0


class PublishedTrack:
    """One published track: its source receiver, packet cache and feedback state.

    A simulcast publication (``layers``: the RIDs the publisher sends, lowest first) has one
    source SSRC per layer, learned from the RID header extension of its first packets; a new
    SSRC of a known RID replaces that layer's source (not the track's). Receiver reports,
    upstream NACKs and keyframe requests are per layer; each subscription forwards one layer
    (``Subscription.quality``). ``source_ssrc`` is then the top layer seen so far.
    """

    def __init__(
        self,
        router: SfuRouter,
        key: TrackKey,
        transceiver: RTCRtpTransceiver,
        layers: tuple[str, ...] = (),
    ) -> None:
        self.key = key
        #: RIDs of the simulcast layers, lowest first; empty for a single-stream publication
        self.layers = layers
        #: RID -> the SSRC its packets come with (simulcast)
        self.layer_ssrcs: dict[str, int] = {}
        self._layer_of: dict[int, str] = {}
        self._rtx_media: dict[int, int] = {}
        self._layer_limiters: dict[int, KeyframeRequestLimiter] = {}
        self._layer_losses: dict[int, LossTracker] = {}
        self._receptions: dict[int, ReceptionStatistics] = {}
        self._rid_id: int | None = None
        self._repaired_rid_id: int | None = None
        self._next_uplink = 0.0
        #: media SSRC of a layer -> when its last packet arrived
        self._layer_seen: dict[int, float] = {}
        #: media SSRC of a layer -> bytes since the last rate update, and its bitrate (bit/s)
        self._layer_bytes: dict[int, int] = {}
        self._layer_rates: dict[int, float] = {}
        self._rates_at: float | None = None
        self.kind: str = transceiver.kind
        self.transceiver = transceiver
        self._router = router
        cfg = router.config
        self.cache = PacketCache(cfg.packet_cache_size)
        self.keyframes = KeyframeRequestLimiter(cfg.keyframe_request_interval)
        self.bandwidth = BandwidthAggregator(
            interval=cfg.bandwidth_feedback_interval, max_age=cfg.bandwidth_estimate_max_age
        )
        self.subscriptions: list[Subscription] = []
        self.sinks: list[PacketSink] = []
        self.codecs: dict[int, RTCRtpCodecParameters] = {}
        self.extensions: dict[str, int] = {}
        self.rtx_apt: dict[int, int] = {}
        self.source_ssrc: int | None = None
        self.started = False
        self.closed = False
        self._abs_send_time_id: int | None = None
        self._keyframe_wanted = False
        self._retired: set[int] = set()
        self._losses = LossTracker() if self.kind == "video" and cfg.nack_upstream else None
        self._receive_filter: Callable[[bytes], bool] | None = None
        self._next_report = 0.0
        self._fir_seq = 0
        #: codec name ("vp8", "h264"...) by payload type: keyframes are recognised by the
        #: codec of each packet, which need not be the first negotiated one
        self._codec_names: dict[int, str] = {}
        self._received_pt: int | None = None
        receiver = transceiver.receiver
        self._rtcp_ssrc, _ = _aiortc.sfu_sender_ssrcs(transceiver.sender)
        self._transport = receiver.transport
        self._send = _aiortc.sfu_send_function(self._transport)
        _aiortc.sfu_watch_codecs(receiver, router._codec_created)
        negotiated = RTCRtpReceiveParameters(
            codecs=_aiortc.sfu_negotiated_codecs(transceiver),
            headerExtensions=_aiortc.sfu_negotiated_header_extensions(transceiver),
        )
        self._configure(negotiated)
        if not _aiortc.sfu_take_over_receiver(receiver, self._on_start):
            # published late: the receiver had started; its decoder thread is now stopped
            self._on_start(negotiated)
        _aiortc.sfu_install_rtp_tap(self._transport, receiver, self._on_rtp)
        _aiortc.sfu_intercept_rtcp(receiver, self._on_rtcp)

    @property
    def mime_type(self) -> str:
        """The MIME type of the codec received (``video/VP8``...), "" before start.

        Before the first packet, the first negotiated codec. A browser may send another
        negotiated codec than the first one listed: Chromium sends the first codec of the
        *remote* description, so the codec it lists first in its own answer (its
        ``setCodecPreferences`` order) need not be the one it sends.
        """
        received = self.codecs.get(self._received_pt) if self._received_pt is not None else None
        if received is not None:
            return received.mimeType
        for codec in self.codecs.values():
            if not _is_rtx(codec):
                return codec.mimeType
        return ""

    def _on_start(self, parameters: RTCRtpReceiveParameters) -> None:
        if self.closed:
            return
        self._configure(parameters)
        self.started = True
        for sub in self.subscriptions:
            sub._bind(self)

    def _configure(self, parameters: RTCRtpReceiveParameters) -> None:
        self.codecs = {}
        self.rtx_apt = {}
        for codec in parameters.codecs:
            if _is_rtx(codec):
                apt = codec.parameters.get("apt")
                if isinstance(apt, int) and codec.payloadType is not None:
                    self.rtx_apt[codec.payloadType] = apt
            elif codec.payloadType is not None:
                self.codecs[codec.payloadType] = codec
        self.extensions = {ext.uri: ext.id for ext in parameters.headerExtensions}
        if self._router.config.rewrite_abs_send_time:
            self._abs_send_time_id = self.extensions.get(ABS_SEND_TIME_URI)
        self._rid_id = self.extensions.get(RID_URI)
        self._repaired_rid_id = self.extensions.get(REPAIRED_RID_URI)
        self._codec_names = {
            pt: codec.mimeType.split("/")[-1].lower() for pt, codec in self.codecs.items()
        }
        if self.layers:
            return  # the layers' SSRCs are learned from their packets
        for encoding in parameters.encodings:
            if encoding.ssrc:
                self.source_ssrc = encoding.ssrc
                break

    # -- media path ----------------------------------------------------------------------------

    def set_receive_filter(self, keep: Callable[[bytes], bool] | None) -> None:
        """Fault injection for tests: incoming packets for which ``keep(data)`` is False are
        dropped on arrival, as if lost between the publisher and the SFU. None removes it."""
        self._receive_filter = keep

    async def _on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        if self.closed:
            return
        if self._receive_filter is not None and not self._receive_filter(data):
            return
        router = self._router
        counters = router._counters
        try:
            header = parse_rtp_header(data)
        except ValueError:
            return
        apt = self.rtx_apt.get(header.payload_type)
        if apt is not None:
            media_ssrc = self._repaired_ssrc(data, header) if self.layers else self.source_ssrc
            if media_ssrc is None:
                return
            try:
                data = bytes(unwrap_rtx(data, header, payload_type=apt, ssrc=media_ssrc))
                header = parse_rtp_header(data)
            except ValueError:
                return
            counters.retransmissions_in += 1
        elif self.layers:
            if header.ssrc not in self._layer_of and not self._new_layer(data, header):
                return
        elif header.ssrc != self.source_ssrc:
            if header.ssrc in self._retired:
                return  # a late packet of a source the publisher replaced
            self._new_source(header.ssrc)
        counters.packets_in += 1
        counters.bytes_in += len(data)
        self._received_pt = header.payload_type
        now = router.clock()
        reception = self._receptions.get(header.ssrc)
        if reception is None:
            if not self.layers:
                self._receptions.clear()  # a new source replaces the old one
            codec = self.codecs.get(header.payload_type)
            clock_rate = codec.clockRate if codec is not None else 90000
            reception = self._receptions[header.ssrc] = ReceptionStatistics(header.ssrc, clock_rate)
        if apt is None:
            reception.add(header.sequence_number, header.timestamp, now)
            if self.layers:
                self._layer_seen[header.ssrc] = now
                self._layer_bytes[header.ssrc] = self._layer_bytes.get(header.ssrc, 0) + len(data)
        lost: tuple[int, ...] = ()
        losses = self._layer_losses.get(header.ssrc) if self.layers else self._losses
        if losses is not None:
            lost = losses.add(header.sequence_number)
        subs = tuple(self.subscriptions)
        keyframe = False
        if self.kind == "video":
            # A publisher may send any negotiated codec, not only the first one listed (see
            # mime_type): read each packet as the codec of its payload type.
            codec_name = self._codec_names.get(header.payload_type)
            keyframe = codec_name is not None and is_keyframe(
                codec_name, memoryview(data)[header.payload_offset : header.payload_end]
            )
            if keyframe and apt is None:
                counters.keyframes_in += 1
                self._limiter(header.ssrc).keyframe_seen(now)
            elif keyframe:
                # A re-sent copy of a keyframe's first packet (libwebrtc sends some unasked,
                # as padding): no segment starts at it, since the packets after it may have
                # gone by already; a subscription waiting for a keyframe needs a new one.
                keyframe = False
                if any(s._rewriter is not None and s._rewriter.waiting_keyframe for s in subs):
                    self._keyframe_wanted = True
        if self._abs_send_time_id is not None and header.extension_offset >= 0:
            buf = bytearray(data)
            if rewrite_abs_send_time(buf, header, self._abs_send_time_id, _ntp_now()):
                data = bytes(buf)
        # A re-sent packet the cache already holds reached the subscribers before (libwebrtc
        # also re-sends packets unasked, as padding to probe its uplink, tens per second):
        # forwarding it would spend the subscribers' bandwidth on copies they did not ask
        # for (their NACKs are answered from the cache). Only a repair of a packet lost on
        # the way in is forwarded.
        if apt is not None and self.cache.get(header.ssrc, header.sequence_number) is not None:
            return
        self.cache.put(header.ssrc, header.sequence_number, data)
        if header.ssrc == self.source_ssrc:  # a simulcast publication: its top layer
            for sink in self.sinks:
                sink(data, header, keyframe)
        extension_cache: dict[ExtensionRemap, bytes] = {}
        retransmission = apt is not None
        layered = bool(self.layers)
        for sub in subs:
            rewriter = sub._rewriter
            if rewriter is None or not sub._ready:
                continue
            if layered and header.ssrc != sub._layer_ssrc:
                if header.ssrc != sub._pending_ssrc or not keyframe:
                    continue
                # the keyframe of the layer the subscription moves to: switch here
                sub._layer_ssrc, sub._pending_ssrc = header.ssrc, None
                rewriter.switch(header.ssrc)
            out = rewriter.rewrite(
                data,
                header,
                now,
                keyframe=keyframe,
                extension_cache=extension_cache,
                retransmission=retransmission,
            )
            if out is None:
                counters.packets_dropped += 1
                continue
            keep = sub._keep
            if (keep is None or keep(out)) and not sub._fast_send(out):
                try:
                    await sub._transport_send(out)
                except ConnectionError:
                    counters.send_errors += 1
                    continue
            counters.packets_out += 1
            counters.bytes_out += len(out)
            if sub._repairs and now >= sub._next_repair:
                await sub._repeat_repairs(self, now)
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            if not keyframe:
                await self.request_keyframe()
        else:
            limiter = self._limiter(header.ssrc)
            if limiter.pending and limiter.poll(now):
                await self._send_keyframe_request(header.ssrc)
        if lost and self.rtx_apt:
            counters.nacks_generated += len(lost)
            await self._send_nack(list(lost), header.ssrc)
        if now >= self._next_report:
            self._next_report = now + router.config.receiver_report_interval
            await self._send_receiver_report(now)
            if layered:
                self._update_layer_rates(now)
                rates = self.layer_bitrates()  # once for every subscription of this report
                for sub in subs:
                    if sub._rewriter is not None and not sub.closed:
                        self._select_layer(sub, rates)
        if layered and now >= self._next_uplink:
            self._next_uplink = now + router.config.bandwidth_feedback_interval
            await self._send_uplink_estimate()

    # -- simulcast layers ------------------------------------------------------------------------

    def _rid(self, data: bytes, header: RtpHeader, x_id: int | None) -> str | None:
        if x_id is None:
            return None
        for found, offset, length in iter_extensions(data, header):
            if found == x_id:
                try:
                    return data[offset : offset + length].decode("ascii")
                except UnicodeDecodeError:
                    return None
        return None

    def _repaired_ssrc(self, data: bytes, header: RtpHeader) -> int | None:
        """The media SSRC an RTX packet of a simulcast publication repairs (None: unknown)."""
        media = self._rtx_media.get(header.ssrc)
        if media is None:
            rid = self._rid(data, header, self._repaired_rid_id)
            media = self.layer_ssrcs.get(rid) if rid is not None else None
            if media is None:
                return None
            if len(self._rtx_media) >= 4 * len(self.layers):  # bounded: start over
                self._rtx_media.clear()
            self._rtx_media[header.ssrc] = media
        return media

    def _new_layer(self, data: bytes, header: RtpHeader) -> bool:
        """Learn the layer of a packet of a new SSRC from its RID; False if it has none."""
        rid = self._rid(data, header, self._rid_id)
        if rid is None or rid not in self.layers:
            return False
        ssrc = header.ssrc
        previous = self.layer_ssrcs.get(rid)
        if previous is not None:  # the publisher restarted this layer with a new SSRC
            del self._layer_of[previous]
            self._receptions.pop(previous, None)
            self._layer_losses.pop(previous, None)
            self._layer_limiters.pop(previous, None)
            self._layer_seen.pop(previous, None)
            self._layer_bytes.pop(previous, None)
            self._layer_rates.pop(previous, None)
            self._rtx_media = {r: m for r, m in self._rtx_media.items() if m != previous}
        self.layer_ssrcs[rid] = ssrc
        self._layer_of[ssrc] = rid
        self._layer_seen[ssrc] = self._router.clock()
        if self._router.config.nack_upstream:
            self._layer_losses[ssrc] = LossTracker()
        top = max(self.layer_ssrcs, key=self.layers.index)
        self.source_ssrc = self.layer_ssrcs[top]
        for sub in self.subscriptions:
            if previous is not None and previous in (sub._layer_ssrc, sub._pending_ssrc):
                sub._layer_ssrc = sub._pending_ssrc = None
            self._select_layer(sub)
        return True

    def layer_ssrc(self, quality: str) -> int | None:
        """The SSRC of the layer a subscriber asking for *quality* gets, None if none yet.

        The layer of that rank (``VIDEO_QUALITIES``), else the nearest one seen, lower first;
        a layer silent for ``SfuConfig.layer_timeout`` only if every layer is.
        """
        if not self.layer_ssrcs:
            return None
        wanted = VIDEO_QUALITIES[quality] % len(self.layers)
        ranked = sorted(range(len(self.layers)), key=lambda i: (abs(i - wanted), i > wanted))
        known = [s for i in ranked if (s := self.layer_ssrcs.get(self.layers[i])) is not None]
        oldest = self._router.clock() - self._router.config.layer_timeout
        sending = [s for s in known if self._layer_seen.get(s, oldest) > oldest]
        return (sending or known)[0]

    def _update_layer_rates(self, now: float) -> None:
        """Measure each layer's incoming bitrate since the last call (smoothed)."""
        since, self._rates_at = self._rates_at, now
        counted, self._layer_bytes = self._layer_bytes, {}
        if since is None or now <= since:
            return
        for ssrc in self._layer_of:
            rate = counted.get(ssrc, 0) * 8 / (now - since)
            previous = self._layer_rates.get(ssrc)
            self._layer_rates[ssrc] = rate if previous is None else (previous + rate) / 2

    def layer_bitrates(self) -> list[float | None]:
        """Each layer's measured bitrate (bit/s), lowest first; None: not sending (or unseen)."""
        oldest = self._router.clock() - self._router.config.layer_timeout
        rates: list[float | None] = []
        for rid in self.layers:
            ssrc = self.layer_ssrcs.get(rid)
            if ssrc is None or self._layer_seen.get(ssrc, oldest) <= oldest:
                rates.append(None)
            else:
                rates.append(self._layer_rates.get(ssrc, 0.0))
        return rates

    def _chosen_layer_ssrc(
        self, sub: Subscription, rates: list[float | None] | None = None
    ) -> int | None:
        """The SSRC *sub* should forward: its selector's choice, else its preference's layer.
        *rates*: :meth:`layer_bitrates`, if the caller has them."""
        selector = sub._selector
        if selector is None:
            return self.layer_ssrc(sub.quality)
        now = self._router.clock()
        ceiling = VIDEO_QUALITIES[sub.quality] % len(self.layers)
        if rates is None:
            rates = self.layer_bitrates()
        rewriter = sub._rewriter
        padding = rewriter is not None and rewriter.params.rtx_ssrc is not None
        index = selector.update(
            now, sub.estimate(now), sub._take_loss(), rates, ceiling, padding=padding
        )
        sub._update_padding()
        if index is None:
            return self.layer_ssrc(sub.quality)
        return self.layer_ssrcs.get(self.layers[index])

    def _select_layer(self, sub: Subscription, rates: list[float | None] | None = None) -> None:
        """Point *sub* at its layer: at once if it has none, else at the target's keyframe."""
        target = self._chosen_layer_ssrc(sub, rates)
        rewriter = sub._rewriter
        if target is None or rewriter is None:
            return
        if sub._layer_ssrc is None:
            sub._layer_ssrc, sub._pending_ssrc = target, None
            rewriter.switch(target)
        elif target == sub._layer_ssrc:
            sub._pending_ssrc = None
            return
        else:
            sub._pending_ssrc = target
        self._want_keyframe(target)

    def _want_keyframe(self, ssrc: int) -> None:
        task = asyncio.ensure_future(self.request_keyframe(ssrc))
        task.add_done_callback(_log_failure)

    def _limiter(self, ssrc: int) -> KeyframeRequestLimiter:
        if not self.layers:
            return self.keyframes
        limiter = self._layer_limiters.get(ssrc)
        if limiter is None:
            interval = self._router.config.keyframe_request_interval
            limiter = self._layer_limiters[ssrc] = KeyframeRequestLimiter(interval)
        return limiter

    async def _send_uplink_estimate(self) -> None:
        ssrcs = list(self._layer_of)
        if not ssrcs or self.closed:
            return
        bitrate = self._router.config.simulcast_uplink_bitrate
        with contextlib.suppress(ConnectionError):
            await self._send(build_remb(self._rtcp_ssrc, bitrate, ssrcs))
            self._router._counters.rembs_relayed += 1

    def _new_source(self, ssrc: int) -> None:
        previous = self.source_ssrc
        self.source_ssrc = ssrc
        if self._losses is not None:
            self._losses = LossTracker()
        if previous is not None:
            self._retired.add(previous)
            # the publisher changed its SSRC without renegotiation: a new segment
            for sub in self.subscriptions:
                if sub._rewriter is not None:
                    sub._rewriter.switch(ssrc)

    async def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = parse_rtcp(data)
        except ValueError:
            return
        for packet in packets:
            if isinstance(packet, RtcpSenderReport) and (
                packet.ssrc == self.source_ssrc or packet.ssrc in self._layer_of
            ):
                reception = self._receptions.get(packet.ssrc)
                if reception is not None:
                    reception.sender_report(packet.ntp_timestamp, self._router.clock())
                await self._forward_sender_report(packet)

    async def _forward_sender_report(self, report: RtcpSenderReport) -> None:
        for sub in tuple(self.subscriptions):
            if sub._rewriter is None:
                continue
            rewritten = sub._rewriter.rewrite_sender_report(report)
            if rewritten is None:
                continue
            try:
                await sub._send(build_sr(rewritten))
            except ConnectionError:
                continue
            self._router._counters.sender_reports_forwarded += 1

    # -- feedback upstream ---------------------------------------------------------------------

    async def request_keyframe(self, ssrc: int | None = None) -> None:
        """Ask the publisher for a keyframe, rate limited and coalesced.

        ``ssrc`` names a simulcast layer; by default every layer seen (or the one source).
        """
        if self.kind != "video":
            return
        if self.source_ssrc is None:
            self._keyframe_wanted = True  # asked once the first packet names the source
            return
        now = self._router.clock()
        targets = [ssrc] if ssrc is not None else list(self._layer_of) or [self.source_ssrc]
        for target in targets:
            if self._limiter(target).request(now):
                await self._send_keyframe_request(target)

    async def _send_keyframe_request(self, ssrc: int | None = None) -> None:
        media = ssrc if ssrc is not None else self.source_ssrc
        if media is None or self.closed:
            return
        if self._router.config.use_fir:
            self._fir_seq = (self._fir_seq + 1) & 0xFF
            packet = build_fir(self._rtcp_ssrc, media, self._fir_seq)
        else:
            packet = build_pli(self._rtcp_ssrc, media)
        with contextlib.suppress(ConnectionError):
            await self._send(packet)
            self._router._counters.plis_relayed += 1

    async def _send_nack(self, lost: list[int], ssrc: int | None = None) -> None:
        # without RTX the publisher cannot re-send (SRTP forbids re-protecting an index)
        media = ssrc if ssrc is not None else self.source_ssrc
        if media is None or self.closed or not lost or not self.rtx_apt:
            return
        with contextlib.suppress(ConnectionError):
            await self._send(build_nack(self._rtcp_ssrc, media, lost))
            self._router._counters.nacks_relayed += 1

    async def _send_receiver_report(self, now: float) -> None:
        if self.closed:
            return
        blocks = tuple(
            block
            for reception in self._receptions.values()
            if (block := reception.report_block(now)) is not None
        )
        if not blocks:
            return
        with contextlib.suppress(ConnectionError):
            await self._send(build_rr(RtcpReceiverReport(self._rtcp_ssrc, blocks)))
            self._router._counters.receiver_reports_sent += 1

    async def _send_bandwidth(self, now: float) -> None:
        if self.layers:
            return  # the publisher gets simulcast_uplink_bitrate instead
        value = self.bandwidth.poll(now)
        if value is None or self.source_ssrc is None or self.closed:
            return
        with contextlib.suppress(ConnectionError):
            await self._send(build_remb(self._rtcp_ssrc, value, [self.source_ssrc]))
            self._router._counters.rembs_relayed += 1

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        receiver = self.transceiver.receiver
        _aiortc.sfu_uninstall_rtp_tap(self._transport, receiver)
        _aiortc.sfu_release_receiver(receiver)
        self.cache.clear()


class Subscription:
    """One subscriber receiving one track (by key, across republications)."""

    def __init__(
        self, router: SfuRouter, subscriber: str, key: TrackKey, transceiver: RTCRtpTransceiver
    ) -> None:
        self.subscriber = subscriber
        self.key = key
        self.transceiver = transceiver
        self.paused = False
        self.closed = False
        #: the simulcast layer wanted ("low", "medium", "high"), see :meth:`SfuRouter.set_quality`
        self.quality = "high"
        #: why the subscription does not forward (no common codec...), or None
        self.problem: str | None = None
        #: the simulcast layer forwarded, and the one it moves to at its next keyframe
        self._layer_ssrc: int | None = None
        self._pending_ssrc: int | None = None
        policy = router.config.layer_policy
        self._selector = LayerSelector(policy) if policy is not None else None
        #: the subscriber's last REMB (bit/s) and when it came; its last reported loss
        self._remb: tuple[float, float] | None = None
        self._loss: float | None = None
        #: outgoing sequence number -> when it was last retransmitted (bounded, see _on_rtcp)
        self._resent: dict[int, float] = {}
        #: retransmitted outgoing sequence number -> (times sent, last sent), until a NACK
        #: no longer lists it (see SfuConfig.repair_retries); and when to look at them next
        self._repairs: dict[int, tuple[int, float]] = {}
        self._next_repair = 0.0
        #: the packets the subscriber's last NACK listed
        self._nacked: frozenset[int] = frozenset()
        #: True once the subscriber asked again for packets it had asked for, with no new
        #: one (libwebrtc, Firefox and GStreamer retry their NACKs; aiortc asks for a packet
        #: only when its gap appears): such a receiver gets no repeated retransmissions
        #: and no restarts (``SfuConfig.repair_retries``)
        self.renacks = False
        #: when the stream last restarted at a keyframe, and the sequence numbers it skipped
        #: (first one after the skip, how many) not yet covered by a receiver report
        self._restarted: float | None = None
        self._skips: list[tuple[int, int]] = []
        #: highest sequence number and cumulative loss of the last receiver report
        self._last_report: tuple[int, int] | None = None
        #: the task sending padding while the selector probes, and the first outgoing
        #: sequence number sent during the probe (a NACK from there on ends it)
        self._padding_task: asyncio.Task[None] | None = None
        self._probe_seq = 0
        self._abs_send_time_id: int | None = None
        self._router = router
        self._publication: PublishedTrack | None = None
        self._rewriter: StreamRewriter | None = None
        sender = transceiver.sender
        if not reads_forwarding_track(sender.track):
            sender.replaceTrack(ForwardingTrack(transceiver.kind))
        self._ssrc, self._rtx_ssrc = _aiortc.sfu_sender_ssrcs(sender)
        self._transport_send = _aiortc.sfu_send_function(sender.transport)
        self._send = self._transport_send
        self._fast_send = _aiortc.sfu_fast_rtp_sender(sender.transport)
        self._keep: Callable[[bytes], bool] | None = None
        _aiortc.sfu_silence_sender_reports(sender)
        _aiortc.sfu_intercept_rtcp(sender, self._on_rtcp)
        _aiortc.sfu_watch_codecs(sender, router._codec_created)
        transport = sender.transport
        self._ready = transport.state == "connected"
        transport.on("statechange", self._on_transport_state)

    def _on_transport_state(self) -> None:
        ready = self.transceiver.sender.transport.state == "connected"
        if ready and not self._ready and not self.closed:
            # start the stream at a keyframe the subscriber can actually receive
            pub = self._publication
            if self._rewriter is not None and pub is not None:
                self._rewriter.switch(self._source_of(pub))
                task = asyncio.ensure_future(pub.request_keyframe(self._layer_ssrc))
                task.add_done_callback(_log_failure)
        self._ready = ready

    @property
    def ready(self) -> bool:
        """True once the subscriber's DTLS transport is connected (packets can flow)."""
        return self._ready

    def set_send_filter(self, keep: Callable[[bytes], bool] | None) -> None:
        """Fault injection for tests: packets for which ``keep(data)`` is False are dropped.

        Applies to every RTP and RTCP packet sent to this subscriber, after the rewrite,
        as if lost on the network (counted as sent). ``None`` removes the filter.
        """
        self._keep = keep
        send = self._transport_send
        if keep is None:
            self._send = send
            return

        async def filtered(data: bytes) -> None:
            if keep(data):
                await send(data)

        self._send = filtered

    @property
    def publication(self) -> PublishedTrack | None:
        """The publication currently forwarded, or None while the track is not published."""
        return self._publication

    @property
    def layer(self) -> str | None:
        """RID of the simulcast layer forwarded now, or None (not simulcast, or no layer yet)."""
        pub = self._publication
        if pub is None or self._layer_ssrc is None:
            return None
        return pub._layer_of.get(self._layer_ssrc)

    def estimate(self, now: float) -> float | None:
        """The subscriber's downlink estimate (its last REMB, bit/s), None if none is recent."""
        if self._remb is None:
            return None
        bitrate, at = self._remb
        return bitrate if now - at <= self._router.config.bandwidth_estimate_max_age else None

    def _take_loss(self) -> float | None:
        loss, self._loss = self._loss, None
        return loss

    def _source_of(self, pub: PublishedTrack) -> int | None:
        """The source SSRC to forward from *pub*: the one source, or the chosen layer's."""
        if not pub.layers:
            return pub.source_ssrc
        self._layer_ssrc, self._pending_ssrc = pub.layer_ssrc(self.quality), None
        return self._layer_ssrc

    @property
    def rewriter(self) -> StreamRewriter | None:
        """The stream rewriter (sequence state and counters), once bound to a publication."""
        return self._rewriter

    def _output_parameters(self, pub: PublishedTrack) -> OutputParameters | None:
        codecs = _aiortc.sfu_negotiated_codecs(self.transceiver)
        pt_map: dict[int, int] = {}
        first_out: RTCRtpCodecParameters | None = None
        for in_pt, in_codec in pub.codecs.items():
            for out_codec in codecs:
                out_pt = out_codec.payloadType
                if (
                    out_pt is not None
                    and not _is_rtx(out_codec)
                    and _codec_matches(in_codec, out_codec)
                ):
                    pt_map[in_pt] = out_pt
                    first_out = first_out or out_codec
                    break
        if first_out is None:
            self.problem = f"subscriber did not negotiate {pub.mime_type or 'the codec'}"
            return None
        # the RTX payload type of each forwarded codec: a retransmission must name the codec
        # of the packet it carries, which need not be the first one
        rtx_of: dict[int, int] = {}
        for c in codecs:
            apt = c.parameters.get("apt")
            if _is_rtx(c) and isinstance(apt, int) and c.payloadType is not None:
                rtx_of.setdefault(apt, c.payloadType)
        rtx_pts = {out_pt: rtx_of[out_pt] for out_pt in pt_map.values() if out_pt in rtx_of}
        rtx_pt = rtx_pts.get(first_out.payloadType) if first_out.payloadType is not None else None
        forwarded = self._router.config.forwarded_extensions
        out_ext = {
            e.uri: e.id
            for e in _aiortc.sfu_negotiated_header_extensions(self.transceiver)
            if e.uri in forwarded
        }
        in_ext = {uri: x_id for uri, x_id in pub.extensions.items() if uri in forwarded}
        self._abs_send_time_id = out_ext.get(ABS_SEND_TIME_URI)
        self.problem = None
        return OutputParameters(
            ssrc=self._ssrc,
            payload_types=pt_map,
            extensions=self._router._intern_remap(ExtensionRemap.by_uri(in_ext, out_ext)),
            clock_rate=first_out.clockRate,
            is_video=pub.kind == "video",
            rtx_ssrc=self._rtx_ssrc if rtx_pts else None,
            rtx_payload_type=rtx_pt,
            rtx_payload_types=rtx_pts,
            initial_sequence_number=(self._ssrc >> 7) & 0x7FFF,
            initial_timestamp=(self._ssrc * 2654435761) & 0xFFFFFFFF,
            vp8_payload_types=frozenset(
                pt for pt, codec in pub.codecs.items() if codec.mimeType.lower() == "video/vp8"
            ),
        )

    def _bind(self, pub: PublishedTrack) -> None:
        self._publication = pub
        if not pub.started:
            return
        params = self._output_parameters(pub)
        if params is None:
            return
        if self._rewriter is None:
            # a sender reused after an earlier subscription (aiortc's addTrack reuses idle
            # senders, same SSRC): continue its stream, SRTP refuses sequence numbers going back
            retired = self._router._retired_rewriters.pop(self.transceiver.sender, None)
            if retired is not None:
                self._rewriter = retired
                retired.update_parameters(params)
                retired.resume()
                retired.switch(self._source_of(pub))
            else:
                self._rewriter = StreamRewriter(params)
                self._rewriter.switch(self._source_of(pub))
            if self.paused:
                self._rewriter.pause()
        else:
            self._rewriter.update_parameters(params)
            self._rewriter.switch(self._source_of(pub))

    def _unbind(self) -> None:
        self._publication = None

    async def _on_rtcp(self, data: bytes) -> None:
        pub = self._publication
        rewriter = self._rewriter
        if pub is None or rewriter is None:
            return
        try:
            packets = parse_rtcp(data)
        except ValueError:
            return
        counters = self._router._counters
        for packet in packets:
            if isinstance(packet, RtcpNack):
                counters.nacks_received += 1
                missing: list[int] = []
                now = self._router.clock()
                interval = self._router.config.retransmission_interval
                if len(self._resent) > 1024:
                    self._resent = {q: t for q, t in self._resent.items() if now - t < interval}
                lost = frozenset(packet.lost)
                if lost and not self.renacks and lost <= self._nacked:
                    # the same packets asked for again with no new one: a receiver that
                    # retries its NACKs, and asks for a keyframe itself when it gives up
                    self.renacks = True
                    self._repairs.clear()
                self._nacked = lost
                if self._repairs:
                    # a NACK lists what is still missing: a repair it leaves out arrived
                    self._repairs = {q: r for q, r in self._repairs.items() if q in lost}
                selector = self._selector
                if (
                    selector is not None
                    and selector.probe_bitrate is not None
                    and any((q - self._probe_seq) & 0xFFFF < 0x8000 for q in packet.lost)
                    and selector.loss_seen(now)
                ):
                    self._update_padding()  # a packet sent during the probe was lost
                for out_seq in packet.lost:
                    sent_at = self._resent.get(out_seq)
                    if sent_at is not None and now - sent_at < interval:
                        continue
                    if self.renacks and rewriter.sent_before_the_segment(out_seq):
                        # the stream went on from a keyframe since, which a receiver that
                        # recovers on its own decodes without it: re-sending it would only
                        # load a congested link (the usual reason for the switch)
                        counters.nacks_obsolete += 1
                        continue
                    found = rewriter.incoming_sequence_number(out_seq)
                    if found is None:
                        counters.nacks_missed += 1
                        continue
                    cached = pub.cache.get(*found)
                    if cached is None:
                        counters.nacks_missed += 1
                        missing.append(found[1])
                        continue
                    out = rewriter.retransmission(cached, parse_rtp_header(cached))
                    if out is None or not await self._retransmit(out, out_seq, now):
                        continue
                    counters.nacks_answered += 1
                    if (
                        len(self._repairs) < _MAX_REPAIRS
                        and self._router.config.repair_retries
                        and not self.renacks
                    ):
                        tries = self._repairs.get(out_seq, (0, now))[0]
                        self._repairs[out_seq] = (tries + 1, now)
                        self._next_repair = min(
                            self._next_repair, now + self._router.config.repair_retry_interval
                        )
                await pub._send_nack(missing, self._layer_ssrc)
            elif isinstance(packet, (RtcpPli, RtcpFir)):
                counters.keyframe_requests_received += 1
                await pub.request_keyframe(self._pending_ssrc or self._layer_ssrc)
            elif isinstance(packet, RtcpReceiverReport):
                for block in packet.reports:
                    if block.ssrc == self._ssrc:
                        loss = self._reported_loss(block)
                        self._loss = loss if self._loss is None else max(self._loss, loss)
                if self._loss is not None and pub.layers and not self.closed:
                    pub._select_layer(self)  # at once: the next report tick is up to 1 s away
            elif isinstance(packet, RtcpRemb):
                now = self._router.clock()
                self._remb = (float(packet.bitrate), now)
                pub.bandwidth.update(self, packet.bitrate, now)
                await pub._send_bandwidth(now)

    def _update_padding(self) -> None:
        """Start or stop the padding of a probe (``LayerSelector.probe_bitrate``)."""
        selector, rewriter = self._selector, self._rewriter
        wanted = (
            selector is not None
            and selector.probe_bitrate is not None
            and rewriter is not None
            and not self.paused
            and not self.closed
            and self._ready
        )
        if wanted and self._padding_task is None:
            assert rewriter is not None
            self._probe_seq = ((rewriter.last_sequence_number or 0) + 1) & 0xFFFF
            self._padding_task = asyncio.ensure_future(self._pad())
            self._padding_task.add_done_callback(_log_failure)
        elif not wanted and self._padding_task is not None:
            self._padding_task.cancel()
            self._padding_task = None

    async def _pad(self) -> None:
        """Send RTX padding at the probe's rate, paced, until the probe ends."""
        counters = self._router._counters
        cfg = self._router.config
        clock = self._router.clock
        credit = 0.0
        last = clock()
        try:
            while True:
                await asyncio.sleep(_PADDING_TICK)
                selector, rewriter = self._selector, self._rewriter
                rate = selector.probe_bitrate if selector is not None else None
                if rate is None or rewriter is None or self.paused or self.closed:
                    return
                now = clock()
                rate = min(rate, cfg.probe_padding_max)
                # bounded: at most two ticks' worth (or two packets) after a late wake-up
                most = max(rate * 2 * _PADDING_TICK / 8, 2 * _PADDING_PACKET)
                credit = min(credit + rate * (now - last) / 8, most)
                last = now
                while credit >= _PADDING_PACKET:
                    ext = self._abs_send_time_id
                    packet = rewriter.padding(
                        _PADDING_SIZE, abs_send_time=(ext, _ntp_now()) if ext else None
                    )
                    if packet is None:
                        return
                    await self._send(packet)
                    credit -= len(packet)
                    counters.padding_packets_sent += 1
                    counters.padding_bytes_sent += len(packet)
        except ConnectionError:
            counters.send_errors += 1
        finally:
            if self._padding_task is asyncio.current_task():
                self._padding_task = None

    def _reported_loss(self, block: RtcpReportBlock) -> float:
        """The loss fraction of a receiver report block, not counting skipped numbers.

        A report covering a restart's skip counts the skipped numbers as lost; its loss is
        then computed again from its cumulative loss and highest sequence number.
        """
        previous = self._last_report
        self._last_report = (block.highest_sequence, block.packets_lost)
        if not self._skips or previous is None:
            return block.fraction_lost / 256
        expected = (block.highest_sequence - previous[0]) & 0xFFFFFFFF
        if expected >= 0x80000000:
            return block.fraction_lost / 256  # a report older than the last one
        skipped = 0
        for first, count in list(self._skips):
            if 0 < (first - previous[0]) & 0xFFFF <= expected:
                skipped += count
                self._skips.remove((first, count))
        if not skipped:
            return block.fraction_lost / 256
        lost = block.packets_lost - previous[1] - skipped
        return min(1.0, max(0, lost) / max(1, expected - skipped))

    async def _repeat_repairs(self, pub: PublishedTrack, now: float) -> None:
        """Send again the retransmissions no NACK has confirmed (``repair_retries``)."""
        cfg = self._router.config
        rewriter = self._rewriter
        last = rewriter.last_sequence_number if rewriter is not None else None
        self._next_repair = now + cfg.repair_retry_interval
        counters = self._router._counters
        given_up = False
        for out_seq, (tries, sent_at) in list(self._repairs.items()):
            if now - sent_at < cfg.repair_retry_interval:
                self._next_repair = min(self._next_repair, sent_at + cfg.repair_retry_interval)
                continue
            del self._repairs[out_seq]
            if tries > cfg.repair_retries:
                given_up = True
                continue
            # aiortc takes a copy of a packet 100 older than its oldest hole for a restart
            if last is None or (last - out_seq) & 0xFFFF > 64:
                continue
            found = rewriter.incoming_sequence_number(out_seq) if rewriter is not None else None
            cached = pub.cache.get(*found) if found is not None else None
            out = (
                rewriter.retransmission(cached, parse_rtp_header(cached))
                if cached is not None and rewriter is not None
                else None
            )
            if out is None or not await self._retransmit(out, out_seq, now):
                continue
            self._repairs[out_seq] = (tries + 1, now)
            counters.retransmissions_repeated += 1
        if given_up:
            await self._restart(pub, now)

    async def _retransmit(self, out: bytes, out_seq: int, now: float) -> bool:
        """Send a retransmission of the outgoing packet *out_seq*; False if it failed."""
        counters = self._router._counters
        try:
            await self._send(out)
        except ConnectionError:
            counters.send_errors += 1
            return False
        self._resent[out_seq] = now
        counters.packets_out += 1
        counters.bytes_out += len(out)
        return True

    async def _restart(self, pub: PublishedTrack, now: float) -> None:
        """Give up repairing: continue at a keyframe, past the hole (``repair_retries``)."""
        rewriter = self._rewriter
        cfg = self._router.config
        if rewriter is None or (
            self._restarted is not None and now - self._restarted < 4 * cfg.repair_retry_interval
        ):
            return
        self._restarted = now
        self._repairs.clear()
        if self._pending_ssrc is not None:  # the layer it was moving to anyway
            self._layer_ssrc, self._pending_ssrc = self._pending_ssrc, None
        selector = self._selector
        if pub.layers and selector is not None:
            # a loss for good is congestion: restart one layer down rather than on a layer
            # whose keyframe the link would lose again
            ceiling = VIDEO_QUALITIES[self.quality] % len(pub.layers)
            index = selector.unrepairable(now, pub.layer_bitrates(), ceiling)
            self._update_padding()
            ssrc = pub.layer_ssrcs.get(pub.layers[index]) if index is not None else None
            if ssrc is not None:
                self._layer_ssrc = ssrc
        source = self._layer_ssrc if pub.layers else pub.source_ssrc
        last = rewriter.last_sequence_number
        if last is not None:
            skip = (last + 1 + _aiortc.AIORTC_JITTER_SKIP) & 0xFFFF, _aiortc.AIORTC_JITTER_SKIP
            self._skips = [*self._skips[-7:], skip]
        rewriter.restart(source, skip=_aiortc.AIORTC_JITTER_SKIP)
        self._router._counters.keyframe_restarts += 1
        await pub.request_keyframe(self._layer_ssrc if pub.layers else None)

    def _close(self) -> None:
        self.closed = True
        self._repairs.clear()
        if self._padding_task is not None:
            self._padding_task.cancel()
            self._padding_task = None
        if self._publication is not None:
            self._publication.bandwidth.remove(self)
        track = self.transceiver.sender.track
        if isinstance(track, ForwardingTrack):
            track.stop()


class SfuRouter:
    """Forward published tracks to subscribers without decoding; see the module docstring.

    Use as an async context manager (or call :meth:`aclose`). All methods must be called
    from the event loop the aiortc connections run on.
    """

    def __init__(
        self, config: SfuConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or SfuConfig()
        self.clock = clock
        self._counters = _Counters()
        self._publications: dict[TrackKey, PublishedTrack] = {}
        self._subscriptions: dict[TrackKey, list[Subscription]] = {}
        self._events: asyncio.Queue[SfuEvent | None] = asyncio.Queue()
        self._channels: dict[str, list[RTCDataChannel]] = {}
        self._ever_published: set[TrackKey] = set()
        self._remaps: dict[frozenset[tuple[int, int]], ExtensionRemap] = {}
        #: recorders by key (rtckit.sfu.record.TrackRecorder), re-attached on republish
        self._recorders: dict[TrackKey, list[Any]] = {}
        #: rewriters of ended subscriptions by sender, continued if the sender is reused
        self._retired_rewriters: weakref.WeakKeyDictionary[RTCRtpSender, StreamRewriter] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False
        _aiortc.sfu_codec_counters()

    async def __aenter__(self) -> SfuRouter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop forwarding everything (idempotent). Connections are the caller's to close."""
        if self._closed:
            return
        self._closed = True
        for subs in self._subscriptions.values():
            for sub in subs:
                sub._close()
        for pub in self._publications.values():
            pub._close()
        self._subscriptions.clear()
        self._publications.clear()
        self._channels.clear()
        self._events.put_nowait(None)

    def _check_open(self) -> None:
        if self._closed:
            raise TopologyError("the SFU router is closed")

    def _emit(self, event: SfuEvent) -> None:
        self._events.put_nowait(event)

    def _intern_remap(self, remap: ExtensionRemap) -> ExtensionRemap:
        return self._remaps.setdefault(remap.key, remap)

    def _codec_created(self, kind: str) -> None:
        if kind == "decoder":
            self._counters.decoders_created += 1
        else:
            self._counters.encoders_created += 1

    # -- publications ------------------------------------------------------------------------

    @property
    def publications(self) -> Mapping[TrackKey, PublishedTrack]:
        """The tracks published now."""
        return dict(self._publications)

    def publish(
        self,
        participant: str,
        transceiver: RTCRtpTransceiver,
        *,
        name: str | None = None,
        layers: tuple[str, ...] = (),
    ) -> PublishedTrack:
        """Forward the track ``transceiver`` receives from ``participant``.

        Call it as soon as the transceiver exists (in the ``track`` event or right after
        ``setRemoteDescription``), before the connection completes, so that aiortc never
        starts a decoder for it. ``name`` defaults to the kind (``"audio"``, ``"video"``).
        Publishing again under the same key replaces the previous source: subscribers move
        to the new one with continuous sequence numbers.

        ``layers`` are the RIDs of the simulcast layers the transceiver receives, lowest
        first (:meth:`rtckit.peer.session.PeerSession.simulcast_layers`): each subscription
        then forwards one of them (:meth:`set_quality`).
        """
        self._check_open()
        key = TrackKey(participant, name or transceiver.kind)
        previous = self._publications.pop(key, None)
        if previous is not None:
            if previous.transceiver is transceiver and previous.layers == layers:
                self._publications[key] = previous
                return previous
            previous._close()
        pub = PublishedTrack(self, key, transceiver, layers)
        self._publications[key] = pub
        for sub in self._subscriptions.get(key, []):
            pub.subscriptions.append(sub)
            sub._bind(pub)
        for recorder in self._recorders.get(key, []):
            recorder._attach(pub)
        republished = key in self._ever_published
        self._ever_published.add(key)
        self._emit(
            SfuTrackPublished(
                key=key, kind=pub.kind, mime_type=pub.mime_type, republished=republished
            )
        )
        if pub.subscriptions or self._recorders.get(key):
            pub._keyframe_wanted = True  # asked once the first packet names the source
        return pub

    def unpublish(self, key: TrackKey) -> None:
        """Stop forwarding a published track (idempotent); its subscriptions stay, waiting."""
        pub = self._publications.pop(key, None)
        if pub is None:
            return
        pub._close()
        for sub in pub.subscriptions:
            sub._unbind()
        self._emit(SfuTrackUnpublished(key=key))

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(
        self, subscriber: str, key: TrackKey, transceiver: RTCRtpTransceiver
    ) -> Subscription:
        """Forward the track ``key`` to ``subscriber`` through ``transceiver`` (sending).

        ``transceiver`` belongs to the subscriber's server-side connection and has negotiated
        (or will negotiate) the publication's codec. Its sender gets a
        :class:`ForwardingTrack` if it has no such track. The key need not be published yet.
        """
        self._check_open()
        pub = self._publications.get(key)
        if pub is not None and pub.kind != transceiver.kind:
            raise TopologyError(f"{key} is {pub.kind}, the transceiver is {transceiver.kind}")
        for sub in self._subscriptions.get(key, []):
            if sub.transceiver is transceiver:
                return sub
        sub = Subscription(self, subscriber, key, transceiver)
        self._add_subscription(sub, pub)
        return sub

    def _add_subscription(self, sub: Subscription, pub: PublishedTrack | None) -> None:
        """File *sub* under its key; bind it to *pub*, asking the publisher for a keyframe."""
        self._subscriptions.setdefault(sub.key, []).append(sub)
        if pub is not None:
            pub.subscriptions.append(sub)
            sub._bind(pub)
            task = asyncio.ensure_future(pub.request_keyframe(sub._layer_ssrc))
            task.add_done_callback(_log_failure)
        self._emit(TrackSubscribed(subscriber=sub.subscriber, key=sub.key))

    def move(self, subscription: Subscription, key: TrackKey) -> None:
        """Forward the track ``key`` through ``subscription`` instead of the one it has.

        For a subscriber that follows whoever it is told to play (a WHEP viewer whose
        participant joined again under a new id): its stream continues with the same SSRC and
        continuous sequence numbers and timestamps, from the new track's next keyframe (which
        is requested), as for a republication under the same key.
        """
        self._check_open()
        if subscription.key == key:
            return
        subs = self._subscriptions.get(subscription.key, [])
        if subscription not in subs:
            raise TopologyError(f"{subscription.subscriber}'s subscription has ended")
        pub = self._publications.get(key)
        if pub is not None and pub.kind != subscription.transceiver.kind:
            raise TopologyError(f"{key} is {pub.kind}, the subscription is not")
        subs.remove(subscription)
        old = subscription.publication
        if old is not None and subscription in old.subscriptions:
            old.subscriptions.remove(subscription)
            old.bandwidth.remove(subscription)
        subscription._unbind()
        self._emit(TrackUnsubscribed(subscriber=subscription.subscriber, key=subscription.key))
        subscription.key = key
        self._add_subscription(subscription, pub)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop forwarding to this subscription (idempotent)."""
        subs = self._subscriptions.get(subscription.key, [])
        if subscription not in subs:
            return
        subs.remove(subscription)
        pub = subscription.publication
        if pub is not None and subscription in pub.subscriptions:
            pub.subscriptions.remove(subscription)
        subscription._close()
        if subscription.rewriter is not None:
            self._retired_rewriters[subscription.transceiver.sender] = subscription.rewriter
        self._emit(TrackUnsubscribed(subscriber=subscription.subscriber, key=subscription.key))

    def pause(self, subscription: Subscription) -> None:
        """Stop sending this track to the subscriber, keeping the subscription."""
        if subscription.paused:
            return
        subscription.paused = True
        if subscription.rewriter is not None:
            subscription.rewriter.pause()
        self._emit(SubscriptionPaused(subscriber=subscription.subscriber, key=subscription.key))

    async def resume(self, subscription: Subscription) -> None:
        """Send the track again (from the next keyframe, which is requested)."""
        if not subscription.paused:
            return
        subscription.paused = False
        pub = subscription.publication
        if subscription.rewriter is not None:
            source = subscription._source_of(pub) if pub is not None else None
            subscription.rewriter.resume(source)
        self._emit(SubscriptionResumed(subscriber=subscription.subscriber, key=subscription.key))
        if pub is not None:
            await pub.request_keyframe(subscription._layer_ssrc)

    def set_quality(self, subscription: Subscription, quality: str) -> None:
        """Forward the simulcast layer of rank *quality* (``"low"``, ``"medium"``, ``"high"``).

        The layers of a publication are ranked as the publisher lists them, lowest first;
        ``"medium"`` of two layers is the top one. The subscription moves at the next
        keyframe of that layer (which is requested), keeping its sequence numbers and
        timestamps continuous; until then it gets the layer it has. A publication without
        simulcast ignores the preference (it is kept for its next publication).
        """
        if quality not in VIDEO_QUALITIES:
            raise ConfigurationError(
                f"video quality must be one of {', '.join(VIDEO_QUALITIES)}, not {quality!r}"
            )
        subscription.quality = quality
        pub = subscription.publication
        if pub is not None and pub.layers and not subscription.closed:
            pub._select_layer(subscription)

    def subscriptions(self, subscriber: str | None = None) -> list[Subscription]:
        """All subscriptions, or those of one subscriber."""
        return [
            s
            for subs in self._subscriptions.values()
            for s in subs
            if subscriber is None or s.subscriber == subscriber
        ]

    def remove_participant(self, participant: str) -> None:
        """Unpublish all of a participant's tracks and end its subscriptions and channels."""
        for key in [k for k in self._publications if k.participant == participant]:
            self.unpublish(key)
        for sub in self.subscriptions(participant):
            self.unsubscribe(sub)
        self._channels.pop(participant, None)

    # -- data channels -----------------------------------------------------------------------

    def add_data_channel(self, participant: str, channel: RTCDataChannel) -> None:
        """Relay messages received on ``channel`` to the other participants' channels.

        Messages go to every other participant's open channel with the same label.
        """
        self._check_open()
        self._channels.setdefault(participant, []).append(channel)

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            self._relay(participant, channel.label, message)

        @channel.on("close")
        def on_close() -> None:
            channels = self._channels.get(participant, [])
            if channel in channels:
                channels.remove(channel)

    def _relay(self, sender: str, label: str, message: str | bytes) -> None:
        for participant, channels in self._channels.items():
            if participant == sender:
                continue
            for channel in channels:
                if channel.label == label and channel.readyState == "open":
                    channel.send(message)
                    self._counters.data_messages_relayed += 1

    # -- observation -------------------------------------------------------------------------

    def stats(self) -> SfuStats:
        """A snapshot of the counters."""
        c = self._counters
        values = dict(vars(c))
        values["publications"] = len(self._publications)
        values["subscriptions"] = sum(len(s) for s in self._subscriptions.values())
        values["decoders_running"] = sum(
            _aiortc.sfu_receiver_decoding(p.transceiver.receiver)
            for p in self._publications.values()
        )
        values["encoders_running"] = sum(
            _aiortc.sfu_sender_encoding(s.transceiver.sender) for s in self.subscriptions()
        )
        return SfuStats(**values)

    async def events(self) -> AsyncIterator[SfuEvent]:
        """Publication and subscription events, until the router is closed."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)
                return
            yield event


def add_forwarding_transceiver(
    pc: RTCPeerConnection, kind: str, *, mime_type: str | None = None
) -> RTCRtpTransceiver:
    """Add a send-only transceiver for forwarded media to a subscriber's connection.

    Its sender carries a :class:`ForwardingTrack`; with ``mime_type`` (``"video/VP8"``,
    ``"video/H264"``, ``"audio/opus"``: the publication's :attr:`PublishedTrack.mime_type`)
    the codec preferences offer only that codec (and its RTX), since forwarding cannot
    transcode. Call before creating the offer, then :meth:`SfuRouter.subscribe`.
    """
    transceiver = pc.addTransceiver(ForwardingTrack(kind), direction="sendonly")
    if mime_type is not None:
        caps = RTCRtpSender.getCapabilities(kind).codecs
        chosen = [c for c in caps if c.mimeType.lower() == mime_type.lower()]
        if not chosen:
            raise TopologyError(f"aiortc cannot negotiate {mime_type}")
        chosen += [c for c in caps if c.mimeType.lower().endswith("/rtx")]
        transceiver.setCodecPreferences(chosen)
    return transceiver


def accept_forwarding_transceiver(transceiver: RTCRtpTransceiver) -> RTCRtpTransceiver:
    """Make a transceiver created by a subscriber's *offer* send forwarded media.

    For the flow where the subscriber (a browser) offers ``recvonly`` m-lines: after
    ``setRemoteDescription(offer)`` and before ``createAnswer``, call this on the server-side
    transceiver, then :meth:`SfuRouter.subscribe` it once negotiated. The subscriber's
    payload types and header extension IDs are kept (they are remapped per packet).
    """
    if transceiver.direction in ("recvonly", "inactive"):
        transceiver.direction = "sendonly"
    if not isinstance(transceiver.sender.track, ForwardingTrack):
        transceiver.sender.replaceTrack(ForwardingTrack(transceiver.kind))
    return transceiver


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("SFU keyframe request failed", exc_info=task.exception())


#: retransmissions followed per subscription (SfuConfig.repair_retries)
_MAX_REPAIRS = 256
#: a probe's padding: packets of this many padding bytes, sent every tick
_PADDING_SIZE = MAX_PADDING
_PADDING_PACKET = _PADDING_SIZE + 20  # with its RTP header and abs-send-time
_PADDING_TICK = 0.02

_NTP_EPOCH_OFFSET = 2208988800


def _ntp_now() -> int:
    now = time.time()
    seconds = int(now)
    return ((seconds + _NTP_EPOCH_OFFSET) << 32) | int((now - seconds) * (1 << 32))
