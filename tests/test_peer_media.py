"""Synthetic media sources and recording."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest

from rtckit.errors import ConfigurationError, SystemComponentError
from rtckit.peer.media import (
    PatternConfig,
    Recorder,
    TestPatternTrack,
    ToneTrack,
    open_camera,
    open_file,
    read_frame_counter,
)


async def test_pattern_counts_frames_and_moves() -> None:
    track = TestPatternTrack()
    frames = [await track.recv() for _ in range(3)]
    assert [read_frame_counter(f) for f in frames] == [0, 1, 2]
    assert (frames[0].width, frames[0].height) == (640, 480)
    assert [f.pts for f in frames] == [0, 3000, 6000]  # 90 kHz / 30 fps
    below_counter = slice(100, None)
    first = frames[0].to_ndarray(format="rgb24")[below_counter]
    third = frames[2].to_ndarray(format="rgb24")[below_counter]
    assert not np.array_equal(first, third)  # the bars move


async def test_solid_colour_and_counter_survive_vp8() -> None:
    track = TestPatternTrack(PatternConfig(width=320, height=240, colour=(0, 128, 255)))
    image = track.render(4321)
    assert tuple(image[-1, -1]) == (0, 128, 255)
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 320, 240, "yuv420p"
    decoder = av.CodecContext.create("vp8", "r")
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    packets = codec.encode(frame) + codec.encode(None)
    decoded = [f for p in packets for f in decoder.decode(p)]
    assert read_frame_counter(decoded[0]) == 4321


async def test_tone_is_a_sine_at_48k() -> None:
    track = ToneTrack(1000, volume=0.5)
    frame = await track.recv()
    samples = frame.to_ndarray()[0].astype(float)
    assert frame.sample_rate == 48000
    assert len(samples) == 960
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * 48000 / len(samples)
    assert abs(peak_hz - 1000) < 60
    assert 0.4 * 32767 < samples.max() < 0.6 * 32767
    with pytest.raises(ConfigurationError):
        ToneTrack(30000)


def test_pattern_config_validation() -> None:
    with pytest.raises(ConfigurationError):
        PatternConfig(width=641)
    with pytest.raises(ConfigurationError):
        PatternConfig(fps=0)


async def test_record_pattern_and_tone_then_play_back(tmp_path: Path) -> None:
    path = tmp_path / "call.mp4"
    video = TestPatternTrack(PatternConfig(width=160, height=120, fps=15))
    async with Recorder(path, tracks=(video, ToneTrack())):
        await asyncio.sleep(1.0)
    assert path.stat().st_size > 0
    player = open_file(path)
    try:
        assert player.video is not None
        assert player.audio is not None
        async with asyncio.timeout(10):
            frame = await player.video.recv()
        assert isinstance(frame, av.VideoFrame)
        assert frame.width == 160
    finally:
        if player.video is not None:
            player.video.stop()
        if player.audio is not None:
            player.audio.stop()


def test_missing_devices_and_files() -> None:
    with pytest.raises(SystemComponentError):
        open_camera("/dev/video-does-not-exist")
    with pytest.raises(ConfigurationError):
        open_file("/nonexistent/file.mp4")
