"""Reassemble encoded frames from RTP payloads (VP8, H264, Opus): pure, no decoding.

Used by recording: a :class:`FrameAssembler` is fed the packets of one stream in arrival
order and yields whole encoded frames. A frame with a missing packet is dropped, and video
then waits for the next keyframe (the caller may ask the publisher for one).
"""

from __future__ import annotations

import struct

import attrs

from rtckit.errors import ConfigurationError
from rtckit.sfu.rtp import RtpHeader, is_keyframe

__all__ = ["EncodedFrame", "FrameAssembler", "h264_depacketize", "vp8_payload_offset"]

_START_CODE = b"\x00\x00\x00\x01"


@attrs.frozen
class EncodedFrame:
    """One encoded frame: RTP timestamp, keyframe flag, bitstream (Annex B for H264)."""

    timestamp: int
    keyframe: bool
    data: bytes


def vp8_payload_offset(payload: bytes | bytearray) -> int:
    """Length of the VP8 payload descriptor (RFC 7741 section 4.2) at the start of ``payload``."""
    if not payload:
        raise ValueError("empty VP8 payload")
    pos = 1
    if payload[0] & 0x80:
        if len(payload) < 2:
            raise ValueError("truncated VP8 payload descriptor")
        ext = payload[1]
        pos = 2
        if ext & 0x80:
            if pos >= len(payload):
                raise ValueError("truncated VP8 picture ID")
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:
            pos += 1
        if ext & 0x30:
            pos += 1
    if pos > len(payload):
        raise ValueError("truncated VP8 payload descriptor")
    return pos


def h264_depacketize(payload: bytes | bytearray, fu_buffer: bytearray) -> bytes:
    """Annex B bytes for one H264 RTP payload (RFC 6184, packetization mode 1).

    FU-A fragments are gathered in ``fu_buffer``; the NAL unit is returned (with its start
    code) by the fragment carrying the end bit, and b"" before it.
    """
    if not payload:
        raise ValueError("empty H264 payload")
    nal_type = payload[0] & 0x1F
    if 1 <= nal_type <= 23:
        return _START_CODE + bytes(payload)
    if nal_type == 24:  # STAP-A
        out = bytearray()
        pos = 1
        while pos + 2 <= len(payload):
            (size,) = struct.unpack_from("!H", payload, pos)
            pos += 2
            if size == 0 or pos + size > len(payload):
                raise ValueError("bad STAP-A NAL size")
            out += _START_CODE + payload[pos : pos + size]
            pos += size
        return bytes(out)
    if nal_type == 28:  # FU-A
        if len(payload) < 2:
            raise ValueError("truncated FU-A")
        fu_header = payload[1]
        if fu_header & 0x80:
            fu_buffer.clear()
            fu_buffer.append((payload[0] & 0xE0) | (fu_header & 0x1F))
        elif not fu_buffer:
            raise ValueError("FU-A continuation without start")
        fu_buffer += payload[2:]
        if fu_header & 0x40:
            nal = _START_CODE + bytes(fu_buffer)
            fu_buffer.clear()
            return nal
        return b""
    raise ValueError(f"unsupported H264 NAL unit type {nal_type}")


class FrameAssembler:
    """Gather one stream's packets into encoded frames (``codec``: vp8, h264, opus)."""

    def __init__(self, codec: str) -> None:
        name = codec.lower().split("/")[-1]
        if name not in ("vp8", "h264", "opus"):
            raise ConfigurationError(f"cannot depacketize {codec}")
        self.codec = name
        self._video = name != "opus"
        self._timestamp: int | None = None
        self._parts: list[bytes] = []
        self._keyframe = False
        self._broken = False
        self._need_keyframe = self._video
        self._expected_seq: int | None = None
        self._fu = bytearray()
        #: frames dropped because a packet was missing or malformed
        self.dropped = 0

    @property
    def needs_keyframe(self) -> bool:
        """True while video waits for a keyframe (at the start and after a loss)."""
        return self._need_keyframe

    def add(self, header: RtpHeader, payload: bytes) -> EncodedFrame | None:
        """Feed one packet (in arrival order); return a frame when one is complete."""
        if not self._video:
            return EncodedFrame(header.timestamp, True, payload) if payload else None
        seq = header.sequence_number
        lost = self._expected_seq is not None and seq != self._expected_seq
        if self._expected_seq is not None and (seq - self._expected_seq) & 0xFFFF >= 0x8000:
            return None  # late or duplicate packet
        self._expected_seq = (seq + 1) & 0xFFFF
        if header.timestamp != self._timestamp:
            if self._parts:
                self.dropped += 1  # the previous frame never got its marker bit
            self._start(header.timestamp)
            if lost and not self._frame_start(payload):
                self._broken = True  # the lost packets were this frame's first ones
        elif lost:
            self._broken = True
        if is_keyframe(self.codec, payload):
            self._keyframe = True
        try:
            if self.codec == "vp8":
                self._parts.append(payload[vp8_payload_offset(payload) :])
            else:
                self._parts.append(h264_depacketize(payload, self._fu))
        except ValueError:
            self._broken = True
        if not header.marker:
            return None
        frame = b"".join(self._parts)
        keyframe, broken = self._keyframe, self._broken
        self._start(None)
        if broken:
            self.dropped += 1
            self._need_keyframe = True
            return None
        if self._need_keyframe and not keyframe:
            self.dropped += 1
            return None
        self._need_keyframe = False
        return EncodedFrame(header.timestamp, keyframe, frame)

    def _frame_start(self, payload: bytes) -> bool:
        if not payload:
            return False
        if self.codec == "vp8":
            return bool(payload[0] & 0x10) and not payload[0] & 0x07
        if payload[0] & 0x1F == 28:
            return len(payload) > 1 and bool(payload[1] & 0x80)
        return True

    def _start(self, timestamp: int | None) -> None:
        self._timestamp = timestamp
        self._parts = []
        self._keyframe = False
        self._broken = False
        self._fu.clear()
