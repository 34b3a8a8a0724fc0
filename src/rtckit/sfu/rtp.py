"""RTP and RTCP wire handling for forwarding: parse just enough, rewrite in place.

Pure module: no asyncio, no aiortc. Everything works on ``bytes`` / ``bytearray``.

Forwarding touches each packet once per subscriber, so this module never builds a full
packet object: :func:`parse_rtp_header` reads the fixed header, the CSRC list and the
position of the header extension block into a small :class:`RtpHeader`, and the rewrite
functions patch a ``bytearray`` copy of the packet with ``struct.pack_into``.

RTCP feedback (SR, RR, PLI, FIR, NACK, REMB, BYE) is parsed into small frozen objects by
:func:`parse_rtcp` and built back with the ``build_*`` functions.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

import attrs

__all__ = [
    "MAX_PADDING",
    "RTCP_BYE",
    "RTCP_PSFB",
    "RTCP_RR",
    "RTCP_RTPFB",
    "RTCP_SDES",
    "RTCP_SR",
    "ExtensionRemap",
    "RtcpBye",
    "RtcpFir",
    "RtcpNack",
    "RtcpPli",
    "RtcpReceiverReport",
    "RtcpRemb",
    "RtcpReportBlock",
    "RtcpSenderReport",
    "RtcpUnknown",
    "RtpHeader",
    "Vp8Ids",
    "build_fir",
    "build_nack",
    "build_padding",
    "build_pli",
    "build_remb",
    "build_rr",
    "build_sr",
    "h264_is_keyframe",
    "is_keyframe",
    "is_rtcp",
    "iter_extensions",
    "parse_rtcp",
    "parse_rtp_header",
    "rewrite_abs_send_time",
    "rewrite_rtp_header",
    "shift_vp8_ids",
    "unwrap_rtx",
    "vp8_ids",
    "vp8_is_keyframe",
    "wrap_rtx",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_RTPFB = 205
RTCP_PSFB = 206

_RTPFB_NACK = 1
_PSFB_PLI = 1
_PSFB_FIR = 4
_PSFB_APP = 15

_ONE_BYTE_PROFILE = 0xBEDE
_TWO_BYTE_PROFILE_MASK = 0xFFF0
_TWO_BYTE_PROFILE = 0x1000

_FIXED = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!BHII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def is_rtcp(data: bytes | bytearray) -> bool:
    """Tell RTCP from RTP on a multiplexed port (RFC 5761: packet types 192-223)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class RtpHeader(NamedTuple):
    """The parts of an RTP header forwarding needs, with byte offsets into the packet.

    A named tuple: built once per incoming packet, it must be cheap to create.
    """

    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    #: offset of the header extension block's 4-byte preamble, or -1 without extensions
    extension_offset: int
    #: the extension profile (0xBEDE one-byte, 0x100x two-byte), 0 without extensions
    extension_profile: int
    #: offset of the first payload byte
    payload_offset: int
    #: offset one past the last payload byte (padding excluded)
    payload_end: int


def parse_rtp_header(data: bytes | bytearray) -> RtpHeader:
    """Parse the fixed header, CSRCs and extension bounds; raise :class:`ValueError` if bad."""
    size = len(data)
    if size < 12:
        raise ValueError("RTP packet shorter than its fixed header")
    first, second, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
    if first >> 6 != 2:
        raise ValueError("RTP version is not 2")
    pos = 12 + (first & 0x0F) * 4
    ext_offset = -1
    profile = 0
    if first & 0x10:
        if pos + 4 > size:
            raise ValueError("RTP header extension truncated")
        ext_offset = pos
        profile, words = struct.unpack_from("!HH", data, pos)
        pos += 4 + words * 4
    end = size
    if first & 0x20:
        if size == 0 or data[-1] == 0:
            raise ValueError("RTP padding length is invalid")
        end -= data[-1]
    if pos > end:
        raise ValueError("RTP header longer than the packet")
    return RtpHeader(
        bool(second & 0x80), second & 0x7F, seq, ts, ssrc, ext_offset, profile, pos, end
    )


def rewrite_rtp_header(
    buf: bytearray, *, payload_type: int, sequence_number: int, timestamp: int, ssrc: int
) -> None:
    """Overwrite payload type (keeping the marker bit), sequence number, timestamp, SSRC."""
    struct.pack_into(
        "!BHII",
        buf,
        1,
        (buf[1] & 0x80) | payload_type,
        sequence_number,
        timestamp,
        ssrc,
    )


def iter_extensions(data: bytes | bytearray, header: RtpHeader) -> Iterator[tuple[int, int, int]]:
    """Yield ``(id, value_offset, value_length)`` for each header extension element.

    Handles the one-byte (RFC 8285 section 4.2) and two-byte (section 4.3) forms; padding
    bytes are skipped; an unknown profile yields nothing.
    """
    if header.extension_offset < 0:
        return
    pos = header.extension_offset + 4
    end = header.payload_offset
    profile = header.extension_profile
    if profile == _ONE_BYTE_PROFILE:
        while pos < end:
            byte = data[pos]
            if byte == 0:
                pos += 1
                continue
            x_id = byte >> 4
            length = (byte & 0x0F) + 1
            if x_id == 15:
                return
            if pos + 1 + length > end:
                return
            yield x_id, pos + 1, length
            pos += 1 + length
    elif profile & _TWO_BYTE_PROFILE_MASK == _TWO_BYTE_PROFILE:
        while pos < end:
            x_id = data[pos]
            if x_id == 0:
                pos += 1
                continue
            if pos + 2 > end:
                return
            length = data[pos + 1]
            if pos + 2 + length > end:
                return
            yield x_id, pos + 2, length
            pos += 2 + length


@attrs.frozen(eq=False)
class ExtensionRemap:
    """Map header extension IDs from an incoming stream to one outgoing stream.

    ``ids`` maps incoming ID to outgoing ID; an incoming ID absent from it (or an outgoing ID
    the one-byte form cannot carry, above 14) is stripped. Stripping is done in place by
    turning the element into padding bytes (zero), which RFC 8285 allows between elements,
    so the packet keeps its length and no byte moves.

    Compared and hashed by identity: a forwarder keeps one instance per distinct map, so the
    rewritten extension block of a packet can be computed once for all subscribers sharing
    it (:meth:`block`).
    """

    ids: Mapping[int, int]

    @classmethod
    def by_uri(cls, incoming: Mapping[str, int], outgoing: Mapping[str, int]) -> ExtensionRemap:
        """Build the map from two ``uri -> id`` negotiations; one-sided URIs are stripped."""
        return cls(ids={x_id: outgoing[uri] for uri, x_id in incoming.items() if uri in outgoing})

    @property
    def key(self) -> frozenset[tuple[int, int]]:
        """The map as a hashable value (to share one instance among equal maps)."""
        return frozenset(self.ids.items())

    def block(self, data: bytes | bytearray, header: RtpHeader) -> bytes:
        """The packet's extension elements (after the 4-byte preamble), remapped."""
        start = header.extension_offset + 4
        out = bytearray(data[start : header.payload_offset])
        ids = self.ids
        one_byte = header.extension_profile == _ONE_BYTE_PROFILE
        for x_id, value_offset, length in iter_extensions(data, header):
            new_id = ids.get(x_id)
            pos = value_offset - start
            if one_byte:
                if new_id is None or new_id > 14:
                    out[pos - 1 : pos + length] = bytes(length + 1)
                elif new_id != x_id:
                    out[pos - 1] = (new_id << 4) | (length - 1)
            elif new_id is None:
                out[pos - 2 : pos + length] = bytes(length + 2)
            elif new_id != x_id:
                out[pos - 2] = new_id
        return bytes(out)

    def apply(self, buf: bytearray, header: RtpHeader) -> None:
        """Rewrite or strip the extension IDs of ``buf`` in place."""
        if header.extension_offset >= 0:
            buf[header.extension_offset + 4 : header.payload_offset] = self.block(buf, header)


def rewrite_abs_send_time(buf: bytearray, header: RtpHeader, x_id: int, ntp_time: int) -> bool:
    """Set the abs-send-time extension ``x_id`` (6.18 fixed point seconds) from a 64-bit NTP time.

    Returns False if the packet carries no such extension.
    """
    for found, value_offset, length in iter_extensions(buf, header):
        if found == x_id and length == 3:
            buf[value_offset : value_offset + 3] = _abs_send_time(ntp_time)
            return True
    return False


def _abs_send_time(ntp_time: int) -> bytes:
    """The 3-byte abs-send-time value (6.18 fixed point seconds) of a 64-bit NTP time."""
    return ((ntp_time >> 14) & 0xFFFFFF).to_bytes(3, "big")


def wrap_rtx(
    data: bytes | bytearray,
    header: RtpHeader,
    *,
    payload_type: int,
    sequence_number: int,
    ssrc: int,
) -> bytearray:
    """Build an RTX retransmission (RFC 4588) of an already rewritten packet.

    The original sequence number goes in front of the payload; payload type, sequence number
    and SSRC become the RTX stream's. Padding is dropped.
    """
    out = bytearray(data[: header.payload_offset])
    out[0] &= 0xDF  # no padding in the copy
    out += _U16.pack(header.sequence_number)
    out += data[header.payload_offset : header.payload_end]
    struct.pack_into("!BH", out, 1, (out[1] & 0x80) | payload_type, sequence_number)
    _U32.pack_into(out, 8, ssrc)
    return out


#: the most padding one RTP packet carries (its count is one byte)
MAX_PADDING = 255


def build_padding(
    *,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    size: int,
    abs_send_time: tuple[int, int] | None = None,
) -> bytes:
    """An RTP packet with no payload, only *size* bytes of padding (1 to ``MAX_PADDING``).

    On an RTX stream, what libwebrtc sends to probe a link: receivers count its bytes for
    their bandwidth estimate and discard it (aiortc drops an RTX packet of under two payload
    bytes). *abs_send_time*: ``(extension id, 64-bit NTP time)`` to carry the abs-send-time
    header extension, without which aiortc's estimator ignores the packet.
    """
    if not 1 <= size <= MAX_PADDING:
        raise ValueError(f"padding must be 1 to {MAX_PADDING} bytes, not {size}")
    first = 0xA0  # version 2, padding
    extension = b""
    if abs_send_time is not None:
        x_id, ntp_time = abs_send_time
        first |= 0x10
        extension = (
            struct.pack("!HH", 0xBEDE, 1) + bytes([(x_id << 4) | 2]) + _abs_send_time(ntp_time)
        )
    header = struct.pack(
        "!BBHII", first, payload_type & 0x7F, sequence_number & 0xFFFF, timestamp, ssrc
    )
    return header + extension + bytes(size - 1) + bytes([size])


def unwrap_rtx(
    data: bytes | bytearray, header: RtpHeader, *, payload_type: int, ssrc: int
) -> bytearray:
    """Turn an RTX packet back into the original packet (sequence number from the payload)."""
    if header.payload_end - header.payload_offset < 2:
        raise ValueError("RTX packet without original sequence number")
    (seq,) = _U16.unpack_from(data, header.payload_offset)
    out = bytearray(data[: header.payload_offset])
    out[0] &= 0xDF
    out += data[header.payload_offset + 2 : header.payload_end]
    struct.pack_into("!BHII", out, 1, (out[1] & 0x80) | payload_type, seq, header.timestamp, ssrc)
    return out


# --- keyframes --------------------------------------------------------------------------------


def vp8_is_keyframe(payload: bytes | bytearray | memoryview) -> bool:
    """True if this VP8 RTP payload (RFC 7741) starts a key frame.

    The payload descriptor is skipped (X, I with 7/15-bit picture ID, L, T/K); the packet must
    be the start of partition 0 (S=1, PID=0) and the VP8 header's P bit must be 0.
    """
    size = len(payload)
    if size < 1:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x07:
        return False
    pos = 1
    if first & 0x80:
        if size < 2:
            return False
        ext = payload[1]
        pos = 2
        if ext & 0x80:
            if pos >= size:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:
            pos += 1
        if ext & 0x30:
            pos += 1
    if pos >= size:
        return False
    return not payload[pos] & 0x01


class Vp8Ids(NamedTuple):
    """The picture ID and TL0PICIDX of a VP8 payload descriptor (RFC 7741 section 4.2).

    Offsets are from the start of the payload, -1 when the field is absent; ``picture_id_bits``
    is 7 or 15 (0: absent).
    """

    picture_id: int
    picture_id_bits: int
    picture_id_offset: int
    tl0picidx: int
    tl0picidx_offset: int


def vp8_ids(payload: bytes | bytearray | memoryview) -> Vp8Ids | None:
    """The picture ID and TL0PICIDX of a VP8 RTP payload, None if it has neither."""
    size = len(payload)
    if size < 2 or not payload[0] & 0x80:
        return None
    ext = payload[1]
    pos = 2
    pid = pid_bits = 0
    pid_at = tl0_at = -1
    tl0 = 0
    if ext & 0x80:
        if pos >= size:
            return None
        pid_at = pos
        if payload[pos] & 0x80:
            if pos + 1 >= size:
                return None
            pid, pid_bits = ((payload[pos] & 0x7F) << 8) | payload[pos + 1], 15
            pos += 2
        else:
            pid, pid_bits = payload[pos] & 0x7F, 7
            pos += 1
    if ext & 0x40:
        if pos >= size:
            return None
        tl0, tl0_at = payload[pos], pos
    if pid_at < 0 and tl0_at < 0:
        return None
    return Vp8Ids(pid, pid_bits, pid_at, tl0, tl0_at)


def shift_vp8_ids(
    buf: bytearray, payload_offset: int, ids: Vp8Ids, picture_id_delta: int, tl0_delta: int
) -> None:
    """Add the deltas to the picture ID (modulo its width) and TL0PICIDX of a VP8 packet."""
    if ids.picture_id_bits == 15:
        at = payload_offset + ids.picture_id_offset
        value = (ids.picture_id + picture_id_delta) & 0x7FFF
        buf[at] = 0x80 | (value >> 8)
        buf[at + 1] = value & 0xFF
    elif ids.picture_id_bits == 7:
        buf[payload_offset + ids.picture_id_offset] = (ids.picture_id + picture_id_delta) & 0x7F
    if ids.tl0picidx_offset >= 0:
        buf[payload_offset + ids.tl0picidx_offset] = (ids.tl0picidx + tl0_delta) & 0xFF


_H264_KEY_NALS = frozenset({5, 7})


def h264_is_keyframe(payload: bytes | bytearray | memoryview) -> bool:
    """True if this H264 RTP payload (RFC 6184) carries an IDR slice or an SPS.

    Looks into single NAL units, STAP-A aggregates and the first fragment of FU-A.
    """
    size = len(payload)
    if size < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in _H264_KEY_NALS:
        return True
    if nal_type == 24:  # STAP-A
        pos = 1
        while pos + 2 < size:
            (length,) = _U16.unpack_from(payload, pos)
            if length == 0:
                return False
            if payload[pos + 2] & 0x1F in _H264_KEY_NALS:
                return True
            pos += 2 + length
        return False
    if nal_type == 28:  # FU-A
        return size >= 2 and bool(payload[1] & 0x80) and payload[1] & 0x1F in _H264_KEY_NALS
    return False


def is_keyframe(codec: str, payload: bytes | bytearray | memoryview) -> bool:
    """Keyframe test by codec name (``"vp8"``, ``"h264"``); audio and others are always key."""
    name = codec.lower()
    if name == "vp8":
        return vp8_is_keyframe(payload)
    if name == "h264":
        return h264_is_keyframe(payload)
    return True


# --- RTCP -------------------------------------------------------------------------------------


@attrs.frozen
class RtcpReportBlock:
    """One reception report block of an SR or RR."""

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int


@attrs.frozen
class RtcpSenderReport:
    """RTCP SR (RFC 3550 section 6.4.1)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[RtcpReportBlock, ...] = ()


@attrs.frozen
class RtcpReceiverReport:
    """RTCP RR (RFC 3550 section 6.4.2)."""

    ssrc: int
    reports: tuple[RtcpReportBlock, ...] = ()


@attrs.frozen
class RtcpNack:
    """Generic NACK (RFC 4585 section 6.2.1), expanded to the lost sequence numbers."""

    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...]


@attrs.frozen
class RtcpPli:
    """Picture Loss Indication (RFC 4585 section 6.3.1)."""

    sender_ssrc: int
    media_ssrc: int


@attrs.frozen
class RtcpFir:
    """Full Intra Request (RFC 5104 section 4.3.1): ``(ssrc, command sequence number)`` pairs."""

    sender_ssrc: int
    entries: tuple[tuple[int, int], ...]


@attrs.frozen
class RtcpRemb:
    """Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb)."""

    sender_ssrc: int
    bitrate: int
    ssrcs: tuple[int, ...]


@attrs.frozen
class RtcpBye:
    """RTCP BYE."""

    sources: tuple[int, ...]


@attrs.frozen
class RtcpUnknown:
    """Any other RTCP packet (SDES, APP, XR, transport-cc...), kept as raw bytes."""

    packet_type: int
    data: bytes


AnyRtcp = (
    RtcpSenderReport
    | RtcpReceiverReport
    | RtcpNack
    | RtcpPli
    | RtcpFir
    | RtcpRemb
    | RtcpBye
    | RtcpUnknown
)

_BLOCK = struct.Struct("!IB3sIIII")


def _parse_blocks(data: bytes, pos: int, count: int) -> tuple[RtcpReportBlock, ...]:
    blocks = []
    for _ in range(count):
        ssrc, fraction, lost3, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        lost = int.from_bytes(lost3, "big", signed=True)
        blocks.append(RtcpReportBlock(ssrc, fraction, lost, highest, jitter, lsr, dlsr))
        pos += 24
    return tuple(blocks)


def _parse_remb(sender: int, fci: bytes) -> RtcpRemb | None:
    if len(fci) < 8 or fci[0:4] != b"REMB":
        return None
    count = fci[4]
    exponent = fci[5] >> 2
    mantissa = ((fci[5] & 0x03) << 16) | (fci[6] << 8) | fci[7]
    if len(fci) < 8 + 4 * count:
        return None
    ssrcs = struct.unpack_from(f"!{count}I", fci, 8)
    return RtcpRemb(sender_ssrc=sender, bitrate=mantissa << exponent, ssrcs=tuple(ssrcs))


def parse_rtcp(data: bytes | bytearray) -> list[AnyRtcp]:
    """Parse a compound RTCP packet; raise :class:`ValueError` if the framing is broken."""
    data = bytes(data)
    out: list[AnyRtcp] = []
    pos = 0
    size = len(data)
    while pos < size:
        if size - pos < 4:
            raise ValueError("RTCP packet truncated")
        first, ptype, words = struct.unpack_from("!BBH", data, pos)
        if first >> 6 != 2:
            raise ValueError("RTCP version is not 2")
        end = pos + 4 + words * 4
        if end > size:
            raise ValueError("RTCP packet length is invalid")
        count = first & 0x1F
        body = data[pos + 4 : end]
        if first & 0x20 and body:
            body = body[: len(body) - body[-1]]
        out.append(_parse_one(ptype, count, body, data[pos:end]))
        pos = end
    return out


def _parse_one(ptype: int, count: int, body: bytes, raw: bytes) -> AnyRtcp:
    try:
        if ptype == RTCP_SR and len(body) >= 24 + 24 * count:
            ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body, 0)
            return RtcpSenderReport(
                ssrc, ntp, rtp_ts, packets, octets, _parse_blocks(body, 24, count)
            )
        if ptype == RTCP_RR and len(body) >= 4 + 24 * count:
            (ssrc,) = _U32.unpack_from(body, 0)
            return RtcpReceiverReport(ssrc, _parse_blocks(body, 4, count))
        if ptype == RTCP_BYE and len(body) >= 4 * count:
            return RtcpBye(tuple(struct.unpack_from(f"!{count}I", body, 0)))
        if ptype == RTCP_RTPFB and count == _RTPFB_NACK and len(body) >= 8:
            sender, media = struct.unpack_from("!II", body, 0)
            lost: list[int] = []
            for pos in range(8, len(body) - 3, 4):
                pid, blp = struct.unpack_from("!HH", body, pos)
                lost.append(pid)
                lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
            return RtcpNack(sender, media, tuple(lost))
        if ptype == RTCP_PSFB and len(body) >= 8:
            sender, media = struct.unpack_from("!II", body, 0)
            if count == _PSFB_PLI:
                return RtcpPli(sender, media)
            if count == _PSFB_FIR:
                entries = tuple(
                    (struct.unpack_from("!I", body, p)[0], body[p + 4])
                    for p in range(8, len(body) - 7, 8)
                )
                return RtcpFir(sender, entries)
            if count == _PSFB_APP:
                remb = _parse_remb(sender, body[8:])
                if remb is not None:
                    return remb
    except struct.error:
        pass
    return RtcpUnknown(ptype, raw)


def _rtcp(ptype: int, count: int, body: bytes) -> bytes:
    return struct.pack("!BBH", 0x80 | count, ptype, len(body) // 4) + body


def _pack_blocks(blocks: Iterable[RtcpReportBlock]) -> bytes:
    return b"".join(
        _BLOCK.pack(
            b.ssrc,
            b.fraction_lost,
            max(-0x800000, min(0x7FFFFF, b.packets_lost)).to_bytes(3, "big", signed=True),
            b.highest_sequence,
            b.jitter,
            b.lsr,
            b.dlsr,
        )
        for b in blocks
    )


def build_sr(report: RtcpSenderReport) -> bytes:
    """Serialize an SR."""
    body = struct.pack(
        "!IQIII",
        report.ssrc,
        report.ntp_timestamp,
        report.rtp_timestamp,
        report.packet_count & 0xFFFFFFFF,
        report.octet_count & 0xFFFFFFFF,
    )
    return _rtcp(RTCP_SR, len(report.reports), body + _pack_blocks(report.reports))


def build_rr(report: RtcpReceiverReport) -> bytes:
    """Serialize an RR."""
    body = _U32.pack(report.ssrc) + _pack_blocks(report.reports)
    return _rtcp(RTCP_RR, len(report.reports), body)


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """Serialize a PLI."""
    return _rtcp(RTCP_PSFB, _PSFB_PLI, struct.pack("!II", sender_ssrc, media_ssrc))


def build_fir(sender_ssrc: int, media_ssrc: int, command_seq: int) -> bytes:
    """Serialize a FIR with one entry."""
    body = struct.pack("!IIIB3x", sender_ssrc, 0, media_ssrc, command_seq & 0xFF)
    return _rtcp(RTCP_PSFB, _PSFB_FIR, body)


def build_nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    """Serialize a generic NACK covering ``lost`` (packed into PID + bitmask pairs)."""
    seqs = list(dict.fromkeys(s & 0xFFFF for s in lost))
    if not seqs:
        raise ValueError("a NACK needs at least one sequence number")
    base = seqs[0]
    items: list[tuple[int, int]] = []
    for seq in sorted(seqs, key=lambda s: (s - base) & 0xFFFF):
        if items:
            pid, blp = items[-1]
            delta = (seq - pid) & 0xFFFF
            if 1 <= delta <= 16:
                items[-1] = (pid, blp | 1 << (delta - 1))
                continue
        items.append((seq, 0))
    body = struct.pack("!II", sender_ssrc, media_ssrc) + b"".join(
        struct.pack("!HH", pid, blp) for pid, blp in items
    )
    return _rtcp(RTCP_RTPFB, _RTPFB_NACK, body)


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Iterable[int]) -> bytes:
    """Serialize a REMB (18-bit mantissa, 6-bit exponent)."""
    targets = tuple(ssrcs)
    bitrate = max(0, bitrate)
    exponent = 0
    while bitrate >= 1 << 18:
        bitrate >>= 1
        exponent += 1
    fci = b"REMB" + bytes(
        [len(targets), exponent << 2 | bitrate >> 16, (bitrate >> 8) & 0xFF, bitrate & 0xFF]
    )
    fci += b"".join(_U32.pack(s) for s in targets)
    return _rtcp(RTCP_PSFB, _PSFB_APP, struct.pack("!II", sender_ssrc, 0) + fci)
