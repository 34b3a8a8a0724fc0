"""Forwarding state, per published track and per subscriber: pure, no asyncio, no aiortc.

* :class:`StreamRewriter` turns the packets of one published track into one subscriber's
  outgoing stream: the subscriber's SSRC and payload types, its header extension IDs, and
  sequence numbers and timestamps that stay continuous when the source changes (a publisher
  restarts, a track is switched, a paused subscription resumes).
* :class:`PacketCache` keeps the last packets of a published track to answer NACKs.
* :class:`KeyframeRequestLimiter` coalesces PLI/FIR requests from subscribers into at most one
  upstream request per interval.
* :class:`BandwidthAggregator` keeps the subscribers' bandwidth estimates (REMB) and yields
  their minimum, rate limited, for the publisher.

Times are plain floats in seconds from any monotonic clock the caller chooses.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import attrs

from rtckit.errors import ConfigurationError
from rtckit.sfu.rtp import (
    ExtensionRemap,
    RtcpReportBlock,
    RtcpSenderReport,
    RtpHeader,
    build_padding,
    rewrite_rtp_header,
    shift_vp8_ids,
    vp8_ids,
    wrap_rtx,
)

__all__ = [
    "BandwidthAggregator",
    "KeyframeRequestLimiter",
    "LossTracker",
    "OutputParameters",
    "PacketCache",
    "ReceptionStatistics",
    "StreamRewriter",
]

_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF


@attrs.frozen(kw_only=True)
class OutputParameters:
    """What one subscriber's connection negotiated for one outgoing stream."""

    #: SSRC the subscriber expects (its sender's SSRC on the SFU side)
    ssrc: int
    #: incoming payload type -> outgoing payload type; an unmapped payload type is dropped
    payload_types: Mapping[int, int]
    #: header extension ID remap (and strip) from the publisher's to the subscriber's IDs
    extensions: ExtensionRemap = attrs.field(factory=lambda: ExtensionRemap(ids={}))
    #: RTP clock rate of the codec (90000 for video, 48000 for Opus)
    clock_rate: int
    #: whether this is video (after a source change, forwarding waits for a keyframe)
    is_video: bool
    #: RTX (RFC 4588) SSRC and payload type for retransmissions, if negotiated
    rtx_ssrc: int | None = None
    rtx_payload_type: int | None = None
    #: outgoing payload type -> its RTX payload type, when several codecs are forwarded (a
    #: publisher may send any negotiated codec); if set, it wins over ``rtx_payload_type``
    #: and a payload type missing from it is not retransmitted
    rtx_payload_types: Mapping[int, int] = attrs.field(factory=dict)
    #: first outgoing sequence number and timestamp of a new stream
    initial_sequence_number: int = attrs.field(default=0)
    initial_timestamp: int = attrs.field(default=0)
    #: incoming payload types carrying VP8, whose picture IDs and TL0PICIDX are kept
    #: continuous across segments
    vp8_payload_types: frozenset[int] = attrs.field(factory=frozenset)


class StreamRewriter:
    """Map one published track's packets to one subscriber's outgoing RTP stream.

    The mapping is an offset per *segment* (a run of packets from one source SSRC): the
    outgoing sequence number is the incoming one plus ``seq_offset`` and likewise for the
    timestamp, so late and retransmitted packets of the segment map to the same numbers.
    When a new segment starts (new source SSRC, :meth:`switch`, :meth:`resume`), the offsets
    are recomputed at its first accepted packet: the sequence number continues at last + 1
    and the timestamp advances by the wall-clock gap in clock units. Video segments start
    only at a keyframe; packets before it are dropped (the caller asks upstream for one).
    No segment starts at a retransmitted packet. VP8 picture IDs and TL0PICIDX continue too
    (each simulcast layer numbers its pictures on its own): a segment's first picture gets
    the last forwarded one's ID + 1; the first segment keeps the publisher's numbers.

    The mappings of the last ``PREVIOUS_SEGMENTS`` segments are kept after a new one starts,
    so that a NACK for a packet sent just before a switch (a simulcast layer change) is still
    answered: a receiver cannot skip such a hole (aiortc's jitter buffer waits for it until
    512 packets later), and the packet is usually still in the publication's cache.
    """

    #: closed segments whose packets can still be retransmitted
    PREVIOUS_SEGMENTS = 3

    __slots__ = (
        "_base_ext",
        "_expected_ssrc",
        "_highest_ext",
        "_highest_in",
        "_last_data",
        "_last_header",
        "_last_out_seq",
        "_last_out_ts",
        "_last_time",
        "_paused",
        "_pid_delta",
        "_previous",
        "_rebase",
        "_rtx_seq",
        "_seq_offset",
        "_skip",
        "_src_ssrc",
        "_tl0_delta",
        "_ts_offset",
        "_waiting_keyframe",
        "dropped",
        "octets_sent",
        "packets_sent",
        "params",
    )

    def __init__(self, params: OutputParameters) -> None:
        self.params = params
        self._src_ssrc: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self._base_ext = 0
        self._highest_ext = 0
        self._highest_in = 0
        self._last_out_seq: int | None = None
        self._last_out_ts = 0
        self._last_time = 0.0
        self._rebase = True
        self._expected_ssrc: int | None = None
        self._waiting_keyframe = params.is_video
        self._paused = False
        self._rtx_seq = params.initial_sequence_number ^ 0x5A5A
        # the newest packet forwarded, and the VP8 picture ID / TL0PICIDX shift of the segment
        self._last_data: bytes | bytearray | None = None
        self._last_header: RtpHeader | None = None
        self._pid_delta = 0
        self._tl0_delta = 0
        self._previous: list[_Segment] = []
        self._skip = 0
        #: packets and payload octets sent on the outgoing stream (for sender reports)
        self.packets_sent = 0
        self.octets_sent = 0
        #: packets not forwarded (paused, waiting for a keyframe, stale source, unknown PT)
        self.dropped = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def waiting_keyframe(self) -> bool:
        """True while a video stream waits for a keyframe to start a new segment."""
        return self._waiting_keyframe

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    @property
    def last_sequence_number(self) -> int | None:
        """The highest outgoing sequence number sent so far, or None before the first packet."""
        return self._last_out_seq

    def switch(self, source_ssrc: int | None = None) -> None:
        """Start a new segment at the next accepted packet (track switch, new publisher).

        If ``source_ssrc`` is given, only a packet of that source can start the segment;
        packets of any other source are dropped from now on.
        """
        self._rebase = True
        self._expected_ssrc = source_ssrc
        self._waiting_keyframe = self.params.is_video

    def restart(self, source_ssrc: int | None, *, skip: int) -> None:
        """Give up on what was sent: start a new segment at the next keyframe of
        *source_ssrc*, with sequence numbers *skip* past the last one sent.

        For a receiver with a hole that cannot be repaired (see
        ``rtckit._aiortc.AIORTC_JITTER_SKIP``). What was sent before is no longer
        retransmitted.
        """
        self._previous.clear()
        self._src_ssrc = None
        self._skip = skip
        self.switch(source_ssrc)

    def pause(self) -> None:
        """Stop forwarding; :meth:`resume` continues the stream without a sequence gap."""
        self._paused = True

    def resume(self, source_ssrc: int | None = None) -> None:
        """Forward again, from a new segment (and for video, from the next keyframe).

        ``source_ssrc`` is the source to continue from (default: the one before the pause,
        or the one announced by a :meth:`switch` during the pause).
        """
        if self._paused:
            self._paused = False
            if source_ssrc is None:
                source_ssrc = self._expected_ssrc if self._rebase else self._src_ssrc
            self.switch(source_ssrc)

    def update_parameters(self, params: OutputParameters) -> None:
        """Replace the negotiated parameters (renegotiation); sequence state is kept."""
        self.params = params

    # -- forwarding --------------------------------------------------------------------------

    def rewrite(
        self,
        data: bytes | bytearray,
        header: RtpHeader,
        now: float,
        *,
        keyframe: bool,
        extension_cache: dict[ExtensionRemap, bytes] | None = None,
        retransmission: bool = False,
    ) -> bytes | None:
        """Return the subscriber's copy of the packet, or None if it must not be forwarded.

        ``keyframe`` tells whether this packet starts a keyframe (see
        :func:`rtckit.sfu.rtp.is_keyframe`); it matters only while waiting for one.
        ``extension_cache``, a dict fresh for each incoming packet, lets subscribers sharing
        one :class:`~rtckit.sfu.rtp.ExtensionRemap` share its rewritten extension block.
        ``retransmission`` marks a packet the publisher re-sent (unwrapped from RTX): it is
        forwarded inside the current segment but never starts one, since it may be a copy of
        an old packet whose successors went by before the segment (libwebrtc sends such
        copies unasked, as padding).
        """
        params = self.params
        out_pt = params.payload_types.get(header.payload_type)
        if self._paused or out_pt is None:
            self.dropped += 1
            return None
        in_seq = header.sequence_number
        if self._rebase:
            expected = self._expected_ssrc
            if expected is not None and header.ssrc != expected:
                self.dropped += 1
                return None
            if retransmission or (self._waiting_keyframe and not keyframe):
                self.dropped += 1
                return None
            self._start_segment(data, header, now)
            ext = self._base_ext
        elif header.ssrc != self._src_ssrc:
            self.dropped += 1  # a late packet of a previous source
            return None
        else:
            delta = (in_seq - self._highest_in) & _SEQ_MASK
            if delta >= 0x8000:
                delta -= 0x10000
            ext = self._highest_ext + delta
            if ext < self._base_ext:
                self.dropped += 1
                return None
        out_seq = (ext + self._seq_offset) & _SEQ_MASK
        out_ts = (header.timestamp + self._ts_offset) & _TS_MASK
        if ext >= self._highest_ext:
            self._highest_ext = ext
            self._highest_in = in_seq
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_time = now
            self._last_data = data
            self._last_header = header
        buf = bytearray(data)
        rewrite_rtp_header(
            buf, payload_type=out_pt, sequence_number=out_seq, timestamp=out_ts, ssrc=params.ssrc
        )
        if self._pid_delta or self._tl0_delta:
            self._shift_vp8(buf, header, self._pid_delta, self._tl0_delta)
        if header.extension_offset >= 0:
            extensions = params.extensions
            cached = extension_cache.get(extensions) if extension_cache is not None else None
            if cached is None:
                cached = extensions.block(data, header)
                if extension_cache is not None:
                    extension_cache[extensions] = cached
            block = cached
            buf[header.extension_offset + 4 : header.payload_offset] = block
        self.packets_sent += 1
        self.octets_sent += header.payload_end - header.payload_offset
        return bytes(buf)

    def _shift_vp8(self, buf: bytearray, header: RtpHeader, pid_delta: int, tl0_delta: int) -> None:
        if header.payload_type in self.params.vp8_payload_types:
            ids = vp8_ids(memoryview(buf)[header.payload_offset : header.payload_end])
            if ids is not None:
                shift_vp8_ids(buf, header.payload_offset, ids, pid_delta, tl0_delta)

    def _continue_vp8_ids(self, data: bytes | bytearray, header: RtpHeader) -> None:
        """Shift the new segment's VP8 numbers to follow the last forwarded packet's."""
        vp8 = self.params.vp8_payload_types
        last, last_header = self._last_data, self._last_header
        if header.payload_type not in vp8 or last is None or last_header is None:
            return
        if last_header.payload_type not in vp8:
            return
        new = vp8_ids(memoryview(data)[header.payload_offset : header.payload_end])
        old = vp8_ids(memoryview(last)[last_header.payload_offset : last_header.payload_end])
        if new is None or old is None:
            return
        if new.picture_id_bits and old.picture_id_bits:
            last_id = old.picture_id + self._pid_delta
            self._pid_delta = (last_id + 1 - new.picture_id) & 0x7FFF
        if new.tl0picidx_offset >= 0 and old.tl0picidx_offset >= 0:
            last_tl0 = old.tl0picidx + self._tl0_delta
            self._tl0_delta = (last_tl0 + 1 - new.tl0picidx) & 0xFF

    def _segment(self) -> _Segment | None:
        """The mapping of the segment forwarded last (None before the first packet)."""
        if self._src_ssrc is None:
            return None
        return _Segment(
            src_ssrc=self._src_ssrc,
            seq_offset=self._seq_offset,
            ts_offset=self._ts_offset,
            base_ext=self._base_ext,
            highest_ext=self._highest_ext,
            highest_in=self._highest_in,
            pid_delta=self._pid_delta,
            tl0_delta=self._tl0_delta,
        )

    def _start_segment(self, data: bytes | bytearray, header: RtpHeader, now: float) -> None:
        closed = self._segment()
        if closed is not None:
            self._previous = [*self._previous[1 - self.PREVIOUS_SEGMENTS :], closed]
        self._continue_vp8_ids(data, header)
        in_seq = header.sequence_number
        if self._last_out_seq is None:
            first_seq = self.params.initial_sequence_number
            first_ts = self.params.initial_timestamp
        else:
            first_seq = (self._last_out_seq + 1 + self._skip) & _SEQ_MASK
            self._skip = 0
            gap = max(1, round((now - self._last_time) * self.params.clock_rate))
            first_ts = (self._last_out_ts + gap) & _TS_MASK
        self._seq_offset = (first_seq - in_seq) & _SEQ_MASK
        self._ts_offset = (first_ts - header.timestamp) & _TS_MASK
        self._src_ssrc = header.ssrc
        self._base_ext = in_seq
        self._highest_ext = in_seq
        self._highest_in = in_seq
        self._rebase = False
        self._waiting_keyframe = False

    # -- feedback ----------------------------------------------------------------------------

    def _segments(self) -> list[_Segment]:
        """The segments whose packets can be retransmitted, newest first."""
        current = self._segment()
        return [*([current] if current is not None else []), *reversed(self._previous)]

    def _sender_of(self, out_seq: int) -> tuple[int, _Segment, int] | None:
        """The kept segment that sent the outgoing *out_seq*: (its age, 0 for the current
        one, the segment, the incoming sequence number), None if none did."""
        for age, segment in enumerate(self._segments()):
            in_seq = (out_seq - segment.seq_offset) & _SEQ_MASK
            if segment.holds(in_seq):
                return age, segment, in_seq
        return None

    def sent_before_the_segment(self, out_seq: int) -> bool:
        """Whether the outgoing *out_seq* was sent by a segment before the current one.

        A video segment starts at a keyframe, so a receiver can decode on without such a
        packet (only a receiver waiting for every hole in order, aiortc's, needs it).
        """
        if self._src_ssrc is None:  # no current segment
            return False
        found = self._sender_of(out_seq)
        return found is not None and found[0] > 0

    def incoming_sequence_number(self, out_seq: int) -> tuple[int, int] | None:
        """Map an outgoing sequence number (from a NACK) to ``(source ssrc, incoming seq)``.

        None if no segment kept (the current one and ``PREVIOUS_SEGMENTS`` before it) sent it.
        """
        found = self._sender_of(out_seq)
        return None if found is None else (found[1].src_ssrc, found[2])

    def retransmission(self, data: bytes | bytearray, header: RtpHeader) -> bytes | None:
        """Rewrite a cached packet of a kept segment as an RTX retransmission.

        The packet is rewritten as it was first sent (the numbers of its segment). None if
        no kept segment sent it, or without negotiated RTX: SRTP forbids protecting the same
        packet index twice (libsrtp refuses it), so a plain re-send is impossible; such a
        subscriber recovers with a keyframe request instead.
        """
        params = self.params
        out_pt = params.payload_types.get(header.payload_type)
        if out_pt is None:
            return None
        segment = next(
            (
                s
                for s in self._segments()
                if s.src_ssrc == header.ssrc and s.holds(header.sequence_number)
            ),
            None,
        )
        if segment is None:
            return None
        rtx_pt = (
            params.rtx_payload_types.get(out_pt)
            if params.rtx_payload_types
            else params.rtx_payload_type
        )
        if params.rtx_ssrc is None or rtx_pt is None:
            return None
        out_seq = (header.sequence_number + segment.seq_offset) & _SEQ_MASK
        buf = bytearray(data)
        rewrite_rtp_header(
            buf,
            payload_type=out_pt,
            sequence_number=out_seq,
            timestamp=(header.timestamp + segment.ts_offset) & _TS_MASK,
            ssrc=params.ssrc,
        )
        if segment.pid_delta or segment.tl0_delta:
            self._shift_vp8(buf, header, segment.pid_delta, segment.tl0_delta)
        params.extensions.apply(buf, header)
        return self._wrap_rtx(buf, header, out_pt, out_seq, rtx_pt)

    def _wrap_rtx(
        self, buf: bytearray, header: RtpHeader, out_pt: int, out_seq: int, rtx_pt: int
    ) -> bytes:
        assert self.params.rtx_ssrc is not None
        seq = self._rtx_seq
        self._rtx_seq = (seq + 1) & _SEQ_MASK
        out_header = RtpHeader(
            marker=header.marker,
            payload_type=out_pt,
            sequence_number=out_seq,
            timestamp=0,
            ssrc=self.params.ssrc,
            extension_offset=header.extension_offset,
            extension_profile=header.extension_profile,
            payload_offset=header.payload_offset,
            payload_end=header.payload_end,
        )
        rtx = wrap_rtx(
            buf,
            out_header,
            payload_type=rtx_pt,
            sequence_number=seq,
            ssrc=self.params.rtx_ssrc,
        )
        return bytes(rtx)

    def padding(self, size: int, *, abs_send_time: tuple[int, int] | None = None) -> bytes | None:
        """A padding-only packet of *size* bytes on the RTX stream (to probe the link).

        None without negotiated RTX or before the first packet: padding on the media stream
        would take sequence numbers from it. See :func:`rtckit.sfu.rtp.build_padding`.
        """
        params = self.params
        rtx_pt = params.rtx_payload_type
        if rtx_pt is None and params.rtx_payload_types:
            rtx_pt = next(iter(params.rtx_payload_types.values()))
        if params.rtx_ssrc is None or rtx_pt is None or self._last_out_seq is None:
            return None
        seq = self._rtx_seq
        self._rtx_seq = (seq + 1) & _SEQ_MASK
        return build_padding(
            payload_type=rtx_pt,
            sequence_number=seq,
            timestamp=self._last_out_ts,
            ssrc=params.rtx_ssrc,
            size=size,
            abs_send_time=abs_send_time,
        )

    def rewrite_sender_report(self, report: RtcpSenderReport) -> RtcpSenderReport | None:
        """The publisher's SR as this subscriber's stream: its SSRC, timestamps and counts.

        The NTP time is kept, so the NTP-to-RTP mapping of every stream of one publisher
        stays consistent and receivers keep lip sync. None if the SR's source is not the
        current segment's.
        """
        if report.ssrc != self._src_ssrc or self._rebase:
            return None
        return RtcpSenderReport(
            ssrc=self.params.ssrc,
            ntp_timestamp=report.ntp_timestamp,
            rtp_timestamp=(report.rtp_timestamp + self._ts_offset) & _TS_MASK,
            packet_count=self.packets_sent & 0xFFFFFFFF,
            octet_count=self.octets_sent & 0xFFFFFFFF,
        )


@attrs.frozen
class _Segment:
    """The mapping of one segment of a :class:`StreamRewriter` (see its docstring)."""

    src_ssrc: int
    seq_offset: int
    ts_offset: int
    base_ext: int
    highest_ext: int
    highest_in: int
    pid_delta: int
    tl0_delta: int

    def holds(self, in_seq: int) -> bool:
        """Whether the segment forwarded the incoming sequence number *in_seq*."""
        delta = (in_seq - self.highest_in) & _SEQ_MASK
        if delta >= 0x8000:
            delta -= 0x10000
        return self.base_ext <= self.highest_ext + delta <= self.highest_ext


class PacketCache:
    """The last ``size`` packets of each source of a published track, by sequence number, for
    NACKs.

    Each source SSRC has its own ``size`` slots: the simulcast layers of a publication number
    their packets independently, and sharing slots by sequence number would let one layer
    overwrite another's packets at random (half of a layer's packets within two seconds,
    with three layers), so that losses there could not be repaired. At most
    ``max_sources`` sources are kept; a new one beyond them evicts the oldest.
    """

    __slots__ = ("_mask", "_max_sources", "_size", "_sources")

    def __init__(self, size: int = 512, *, max_sources: int = 8) -> None:
        if size < 1 or size & (size - 1):
            raise ConfigurationError(f"packet cache size must be a power of two, not {size}")
        if max_sources < 1:
            raise ConfigurationError("a packet cache keeps at least one source")
        self._size = size
        self._mask = size - 1
        self._max_sources = max_sources
        self._sources: dict[int, list[tuple[int, bytes] | None]] = {}

    def put(self, ssrc: int, sequence_number: int, data: bytes) -> None:
        """Store a packet (replacing the one ``size`` sequence numbers older of its source)."""
        slots = self._sources.get(ssrc)
        if slots is None:
            if len(self._sources) >= self._max_sources:
                del self._sources[next(iter(self._sources))]
            slots = self._sources[ssrc] = [None] * self._size
        slots[sequence_number & self._mask] = (sequence_number, data)

    def get(self, ssrc: int, sequence_number: int) -> bytes | None:
        """The packet with this source and sequence number, if still cached."""
        slots = self._sources.get(ssrc)
        if slots is None:
            return None
        entry = slots[sequence_number & self._mask]
        if entry is None or entry[0] != sequence_number:
            return None
        return entry[1]

    def clear(self) -> None:
        """Forget every packet."""
        self._sources.clear()


class KeyframeRequestLimiter:
    """At most one upstream keyframe request (PLI/FIR) per ``min_interval`` seconds.

    A request inside the interval is remembered; :meth:`poll` says when to send it, unless a
    keyframe arrived after it was made (:meth:`keyframe_seen`).
    """

    __slots__ = ("_last_sent", "_min_interval", "_pending_since", "coalesced", "sent")

    def __init__(self, min_interval: float) -> None:
        if min_interval < 0:
            raise ConfigurationError("keyframe request interval must not be negative")
        self._min_interval = min_interval
        self._last_sent: float | None = None
        self._pending_since: float | None = None
        #: requests sent upstream, and requests folded into another one
        self.sent = 0
        self.coalesced = 0

    @property
    def pending(self) -> bool:
        """True if a request waits for the interval to pass."""
        return self._pending_since is not None

    def request(self, now: float) -> bool:
        """A subscriber wants a keyframe: True if the caller must send a request upstream now."""
        if self._last_sent is None or now - self._last_sent >= self._min_interval:
            self._last_sent = now
            self._pending_since = None
            self.sent += 1
            return True
        if self._pending_since is None:
            self._pending_since = now
        self.coalesced += 1
        return False

    def poll(self, now: float) -> bool:
        """True if a remembered request must be sent upstream now."""
        if self._pending_since is None or self._last_sent is None:
            return False
        if now - self._last_sent < self._min_interval:
            return False
        self._last_sent = now
        self._pending_since = None
        self.sent += 1
        return True

    def keyframe_seen(self, now: float) -> None:
        """A keyframe arrived: it answers every request made before ``now``."""
        if self._pending_since is not None and self._pending_since <= now:
            self._pending_since = None


class BandwidthAggregator:
    """Minimum of the subscribers' bandwidth estimates, sent upstream at most every interval."""

    __slots__ = ("_estimates", "_interval", "_last_sent", "_last_value", "_max_age")

    def __init__(self, *, interval: float, max_age: float) -> None:
        if interval < 0 or max_age <= 0:
            raise ConfigurationError("bandwidth feedback interval and max age must be positive")
        self._interval = interval
        self._max_age = max_age
        self._estimates: dict[Hashable, tuple[int, float]] = {}
        self._last_sent: float | None = None
        self._last_value: int | None = None

    def update(self, key: Hashable, bitrate: int, now: float) -> None:
        """Record one subscriber's latest estimate (bits per second)."""
        self._estimates[key] = (bitrate, now)

    def remove(self, key: Hashable) -> None:
        """Forget a subscriber."""
        self._estimates.pop(key, None)

    def current(self, now: float) -> int | None:
        """The minimum fresh estimate, or None if there is none."""
        fresh = [b for b, t in self._estimates.values() if now - t <= self._max_age]
        return min(fresh) if fresh else None

    def poll(self, now: float) -> int | None:
        """The value to send upstream now, or None (nothing known, or interval not over).

        A value lower than the last one sent by more than 10% is sent at once.
        """
        value = self.current(now)
        if value is None:
            return None
        due = self._last_sent is None or now - self._last_sent >= self._interval
        dropped = self._last_value is not None and value < self._last_value * 0.9
        if not (due or dropped):
            return None
        self._last_sent = now
        self._last_value = value
        return value


class ReceptionStatistics:
    """What the SFU received from one publisher stream, for its RTCP receiver reports.

    RFC 3550 appendix A.3 (loss) and A.8 (interarrival jitter); LSR/DLSR from the last SR.
    """

    __slots__ = (
        "_base",
        "_clock_rate",
        "_cycles",
        "_expected_prior",
        "_jitter",
        "_last_arrival",
        "_last_ts",
        "_lsr",
        "_lsr_time",
        "_max_seq",
        "_received",
        "_received_prior",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self._clock_rate = clock_rate
        self._base: int | None = None
        self._max_seq = 0
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._last_arrival: float | None = None
        self._last_ts = 0
        self._lsr = 0
        self._lsr_time: float | None = None

    def add(self, sequence_number: int, timestamp: int, arrival: float) -> None:
        """Count one packet (``arrival`` in seconds)."""
        if self._base is None:
            self._base = sequence_number
            self._max_seq = sequence_number
        else:
            delta = (sequence_number - self._max_seq) & _SEQ_MASK
            if 0 < delta < 0x8000:
                if sequence_number < self._max_seq:
                    self._cycles += 0x10000
                self._max_seq = sequence_number
        self._received += 1
        if self._last_arrival is not None:
            transit_delta = (arrival - self._last_arrival) * self._clock_rate - (
                ((timestamp - self._last_ts + 0x80000000) & _TS_MASK) - 0x80000000
            )
            self._jitter += (abs(transit_delta) - self._jitter) / 16
        self._last_arrival = arrival
        self._last_ts = timestamp

    def sender_report(self, ntp_timestamp: int, now: float) -> None:
        """Note an SR from this source (for LSR/DLSR)."""
        self._lsr = (ntp_timestamp >> 16) & 0xFFFFFFFF
        self._lsr_time = now

    def report_block(self, now: float) -> RtcpReportBlock | None:
        """A reception report block, and start a new interval; None before any packet."""
        if self._base is None:
            return None
        extended_max = self._cycles + self._max_seq
        expected = extended_max - self._base + 1
        lost = expected - self._received
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self._lsr_time is not None:
            dlsr = min(0xFFFFFFFF, int((now - self._lsr_time) * 65536))
        return RtcpReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_sequence=extended_max & 0xFFFFFFFF,
            jitter=int(self._jitter),
            lsr=self._lsr,
            dlsr=dlsr,
        )


class LossTracker:
    """Sequence numbers missing from a publisher's stream, for the SFU's own upstream NACKs.

    :meth:`add` returns the numbers a new packet reveals as missing (a gap before it); a late
    or retransmitted packet fills its hole. A jump larger than ``max_gap`` is taken as a
    restart of the numbering, not as loss. Holes older than ``window`` are forgotten.
    """

    __slots__ = ("_highest", "_max_gap", "_window", "missing")

    def __init__(self, *, max_gap: int = 100, window: int = 512) -> None:
        self._highest: int | None = None
        self._max_gap = max_gap
        self._window = window
        #: sequence numbers still missing
        self.missing: set[int] = set()

    def add(self, sequence_number: int) -> tuple[int, ...]:
        """Count one packet; return the sequence numbers newly found missing."""
        highest = self._highest
        if highest is None:
            self._highest = sequence_number
            return ()
        delta = (sequence_number - highest) & _SEQ_MASK
        if delta == 0:
            return ()
        if delta >= 0x8000:
            self.missing.discard(sequence_number)  # late or retransmitted
            return ()
        self._highest = sequence_number
        if delta > self._max_gap:
            self.missing.clear()
            return ()
        new = tuple((highest + i) & _SEQ_MASK for i in range(1, delta))
        self.missing.update(new)
        if len(self.missing) > self._window:
            self.missing = {
                seq for seq in self.missing if (sequence_number - seq) & _SEQ_MASK <= self._window
            }
        return new
