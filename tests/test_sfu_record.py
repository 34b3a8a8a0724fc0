"""Depacketizing (pure) and recording a published track without transcoding (real peers)."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import pytest

from rtckit.errors import ConfigurationError, TopologyError
from rtckit.sfu import SfuRouter, TrackKey
from rtckit.sfu.depacketize import FrameAssembler, h264_depacketize, vp8_payload_offset
from rtckit.sfu.record import TrackRecorder
from rtckit.sfu.rtp import RtpHeader
from test_sfu_forwarding import HEIGHT, WIDTH, connect_publisher, wait_for


def header(seq: int, ts: int, *, marker: bool) -> RtpHeader:
    return RtpHeader(
        marker=marker,
        payload_type=96,
        sequence_number=seq,
        timestamp=ts,
        ssrc=1,
        extension_offset=-1,
        extension_profile=0,
        payload_offset=12,
        payload_end=12,
    )


def test_vp8_descriptor_lengths() -> None:
    assert vp8_payload_offset(bytes([0x10])) == 1
    assert vp8_payload_offset(bytes([0x90, 0x80, 0x05])) == 3
    assert vp8_payload_offset(bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x40])) == 6
    with pytest.raises(ValueError, match="empty"):
        vp8_payload_offset(b"")


def test_h264_depacketize() -> None:
    fu = bytearray()
    assert h264_depacketize(b"\x65abc", fu) == b"\x00\x00\x00\x01\x65abc"
    stap = b"\x78" + struct.pack("!H", 2) + b"\x67\x01" + struct.pack("!H", 2) + b"\x68\x02"
    assert h264_depacketize(stap, fu) == b"\x00\x00\x00\x01\x67\x01\x00\x00\x00\x01\x68\x02"
    assert h264_depacketize(bytes([0x7C, 0x85]) + b"AA", fu) == b""
    assert h264_depacketize(bytes([0x7C, 0x05]) + b"BB", fu) == b""
    assert h264_depacketize(bytes([0x7C, 0x45]) + b"CC", fu) == b"\x00\x00\x00\x01\x65AABBCC"
    with pytest.raises(ValueError, match="without start"):
        h264_depacketize(bytes([0x7C, 0x05]) + b"BB", bytearray())


def test_assembler_drops_broken_frames_until_keyframe() -> None:
    asm = FrameAssembler("vp8")
    key = bytes([0x10, 0x00]) + b"K"
    delta = bytes([0x10, 0x01]) + b"D"
    cont = bytes([0x00]) + b"x"
    # a delta frame before any keyframe is dropped
    assert asm.add(header(1, 100, marker=True), delta) is None
    frame = asm.add(header(2, 200, marker=False), key)
    assert frame is None
    frame = asm.add(header(3, 200, marker=True), cont)
    assert frame is not None
    assert frame.keyframe
    assert frame.data == b"\x00Kx"
    # packet 5 lost: the frame of ts 300 is broken, and the next delta is dropped too
    assert asm.add(header(4, 300, marker=False), delta) is None
    assert asm.add(header(6, 300, marker=True), cont) is None
    assert asm.needs_keyframe
    assert asm.add(header(7, 400, marker=True), delta) is None
    ok = asm.add(header(8, 500, marker=True), key)
    assert ok is not None
    assert ok.keyframe
    assert asm.dropped == 3
    opus = FrameAssembler("audio/opus")
    frame = opus.add(header(1, 960, marker=False), b"\xfc\x01")
    assert frame is not None
    assert frame.data == b"\xfc\x01"
    with pytest.raises(ConfigurationError):
        FrameAssembler("video/AV1")


@pytest.mark.parametrize(
    ("codec", "suffix"), [("video/VP8", ".webm"), ("video/VP8", ".ivf"), ("video/H264", ".mp4")]
)
async def test_record_video_without_transcoding(tmp_path: Path, codec: str, suffix: str) -> None:
    async with SfuRouter() as router:
        pub_pc, server, pubs = await connect_publisher(router, "alice", video_codec=codec)
        try:
            await wait_for(lambda: len(pubs) == 2)
            video = TrackKey("alice", "video")
            audio = TrackKey("alice", "audio")
            with pytest.raises(ConfigurationError, match="cannot go in"):
                await TrackRecorder(router, video, tmp_path / "x.ogg").start()
            with pytest.raises(TopologyError):
                await TrackRecorder(router, TrackKey("bob", "video"), tmp_path / "y.webm").start()
            path = tmp_path / f"video{suffix}"
            audio_path = tmp_path / "audio.webm"
            async with (
                TrackRecorder(router, video, path) as recorder,
                TrackRecorder(router, audio, audio_path) as audio_recorder,
            ):
                await wait_for(
                    lambda: recorder.frames_written >= 30 and audio_recorder.frames_written >= 50
                )
            assert router.stats().decoders_created == 0
        finally:
            await pub_pc.close()
            await server.close()
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) >= 25
    assert (frames[0].width, frames[0].height) == (WIDTH, HEIGHT)
    with av.open(str(audio_path)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert samples >= 48000 * 50 // 50 - 960
