"""Media sources and sinks for apps and tests (with numpy).

* :class:`TestPatternTrack`: a synthetic video track (solid colour or moving bars) with the
  frame number drawn as digits and as a 16-bit barcode that survives VP8 compression
  (:func:`read_frame_counter` reads it back from a decoded frame);
* :class:`ToneTrack`: a sine tone, 48 kHz mono;
* :func:`open_file`, :func:`open_camera`, :func:`open_microphone`: aiortc ``MediaPlayer``
  tracks from files and devices;
* :class:`Recorder`: records tracks to a file (aiortc ``MediaRecorder``), as an async
  context manager.

numpy is imported by this module only; ``import rtckit`` never imports it.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiortc
import attrs
import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer, MediaRecorder

from rtckit.errors import ConfigurationError, SystemComponentError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "PatternConfig",
    "Recorder",
    "TestPatternTrack",
    "ToneTrack",
    "open_camera",
    "open_file",
    "open_microphone",
    "read_frame_counter",
]

_VIDEO_CLOCK = 90000
_BARCODE_BITS = 16
_BARCODE_HEIGHT = 24

# 3x5 bitmaps of the digits 0-9, one string of 15 bits per digit (row by row).
_DIGITS = (
    "111101101101111",
    "010110010010111",
    "111001111100111",
    "111001111001111",
    "101101111001001",
    "111100111001111",
    "111100111101111",
    "111001001001001",
    "111101111101111",
    "111101111001111",
)


def _positive_int(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ConfigurationError(f"{attribute.name} must be > 0, got {value}")


@attrs.frozen(kw_only=True)
class PatternConfig:
    """What :class:`TestPatternTrack` draws.

    *colour* set: a solid colour (RGB); ``None``: moving colour bars.
    """

    width: int = attrs.field(default=640, validator=_positive_int)
    height: int = attrs.field(default=480, validator=_positive_int)
    fps: int = attrs.field(default=30, validator=_positive_int)
    colour: tuple[int, int, int] | None = None
    counter: bool = True

    def __attrs_post_init__(self) -> None:
        if self.width % 2 or self.height % 2:
            raise ConfigurationError("width and height must be even (YUV 4:2:0)")
        if self.width < _BARCODE_BITS * 4 or self.height < _BARCODE_HEIGHT * 3:
            raise ConfigurationError("the pattern needs at least 64x72 pixels")


_BARS = np.array(
    [
        (255, 255, 255),
        (255, 255, 0),
        (0, 255, 255),
        (0, 255, 0),
        (255, 0, 255),
        (255, 0, 0),
        (0, 0, 255),
        (16, 16, 16),
    ],
    dtype=np.uint8,
)


class TestPatternTrack(MediaStreamTrack):
    """A synthetic video track: colour bars moving one bar-width per second, frame counter.

    Frames are paced in real time at *fps*; the first frame is sent at once.
    """

    kind = "video"
    __test__ = False  # not a pytest test class

    def __init__(self, config: PatternConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else PatternConfig()
        width, height = self.config.width, self.config.height
        if self.config.colour is None:
            bar = max(1, width // len(_BARS))
            columns = np.arange(width * 2) // bar % len(_BARS)
            row = _BARS[columns]
            self._base: NDArray[np.uint8] = np.repeat(row[np.newaxis, :, :], height, axis=0)
        else:
            self._base = np.empty((height, width * 2, 3), dtype=np.uint8)
            self._base[:, :] = np.array(self.config.colour, dtype=np.uint8)
        self.frames_sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        """The next frame (blocks until its time)."""
        config = self.config
        index = self.frames_sent
        if self._start is None:
            self._start = time.monotonic()
        else:
            delay = self._start + index / config.fps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        image = self.render(index)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index * _VIDEO_CLOCK // config.fps
        frame.time_base = fractions.Fraction(1, _VIDEO_CLOCK)
        self.frames_sent += 1
        return frame

    def render(self, index: int) -> NDArray[np.uint8]:
        """The RGB image of frame *index* (height x width x 3)."""
        config = self.config
        width = config.width
        shift = (index * (width // len(_BARS))) // config.fps % width
        image = np.ascontiguousarray(self._base[:, shift : shift + width])
        if config.counter:
            _draw_barcode(image, index)
            _draw_number(image, index)
        return image


def _draw_barcode(image: NDArray[np.uint8], value: int) -> None:
    width = image.shape[1]
    cell = width // _BARCODE_BITS
    for bit in range(_BARCODE_BITS):
        on = (value >> (_BARCODE_BITS - 1 - bit)) & 1
        image[:_BARCODE_HEIGHT, bit * cell : (bit + 1) * cell] = 255 if on else 0


def _draw_number(image: NDArray[np.uint8], value: int) -> None:
    height, width = image.shape[:2]
    scale = max(2, height // 60)
    text = str(value)
    digit_w, gap = 3 * scale, scale
    total = len(text) * (digit_w + gap) + gap
    top = _BARCODE_HEIGHT + scale * 2
    left = max(0, (width - total) // 2)
    image[top - scale : top + 6 * scale, left : left + total] = 0
    for position, char in enumerate(text):
        bits = _DIGITS[int(char)]
        x0 = left + gap + position * (digit_w + gap)
        for i, bit in enumerate(bits):
            if bit == "1":
                r, c = divmod(i, 3)
                y = top + r * scale
                x = x0 + c * scale
                image[y : y + scale, x : x + scale] = 255


def read_frame_counter(frame: Any) -> int:
    """Read the frame number a :class:`TestPatternTrack` drew, from a (decoded) ``av`` frame."""
    image = frame.to_ndarray(format="rgb24") if hasattr(frame, "to_ndarray") else frame
    width = image.shape[1]
    cell = width // _BARCODE_BITS
    value = 0
    for bit in range(_BARCODE_BITS):
        block = image[4 : _BARCODE_HEIGHT - 4, bit * cell + 4 : (bit + 1) * cell - 4]
        value = (value << 1) | int(block.mean() > 127)
    return value


class ToneTrack(MediaStreamTrack):
    """A sine tone: *frequency* Hz at *volume* (0..1), 48 kHz mono s16, 20 ms frames."""

    kind = "audio"
    sample_rate = 48000
    samples_per_frame = 960

    def __init__(self, frequency: float = 440.0, *, volume: float = 0.3) -> None:
        super().__init__()
        if not 0 < frequency < self.sample_rate / 2:
            raise ConfigurationError(f"frequency must be in (0, 24000) Hz, got {frequency}")
        if not 0 <= volume <= 1:
            raise ConfigurationError(f"volume must be in [0, 1], got {volume}")
        self.frequency = frequency
        self.volume = volume
        self.frames_sent = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms of tone (blocks until its time)."""
        index = self.frames_sent
        n = self.samples_per_frame
        if self._start is None:
            self._start = time.monotonic()
        else:
            delay = self._start + index * n / self.sample_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        t = (np.arange(n) + index * n) / self.sample_rate
        samples = (np.sin(2 * math.pi * self.frequency * t) * self.volume * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = index * n
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self.frames_sent += 1
        return frame


def open_file(path: str | Path, *, loop: bool = False) -> MediaPlayer:
    """A ``MediaPlayer`` on a media file (``player.audio`` / ``player.video`` are tracks)."""
    if not Path(path).is_file():
        raise ConfigurationError(f"no media file {str(path)!r}")
    return MediaPlayer(str(path), loop=loop)


def open_camera(
    device: str = "/dev/video0", *, width: int = 640, height: int = 480, fps: int = 30
) -> MediaPlayer:
    """A ``MediaPlayer`` on a V4L2 camera (Linux); ``player.video`` is the track."""
    if not Path(device).exists():
        raise SystemComponentError(f"no camera at {device}")
    return MediaPlayer(
        device,
        format="v4l2",
        options={"video_size": f"{width}x{height}", "framerate": str(fps)},
    )


def open_microphone(device: str = "default", *, backend: str = "pulse") -> MediaPlayer:
    """A ``MediaPlayer`` on a microphone (``pulse`` or ``alsa``); ``player.audio`` is the track."""
    try:
        return MediaPlayer(device, format=backend)
    except Exception as exc:  # av raises various OSError/FFmpeg errors
        raise SystemComponentError(f"cannot open microphone {device!r} ({backend}): {exc}") from exc


class Recorder:
    """Record tracks to *path* (container from the suffix, e.g. ``.mp4``, ``.webm``, ``.wav``).

    ``async with Recorder(path) as rec: rec.add(track)``; adding after start is not supported
    by aiortc, so add tracks before entering or pass them as *tracks*.
    """

    def __init__(
        self, path: str | Path, *, tracks: tuple[aiortc.MediaStreamTrack, ...] = ()
    ) -> None:
        self.path = Path(path)
        self._recorder = MediaRecorder(str(self.path))
        self._started = False
        self._stopped = False
        for track in tracks:
            self.add(track)

    def add(self, track: aiortc.MediaStreamTrack) -> None:
        """Record *track* too."""
        if self._started:
            raise ConfigurationError("add tracks before starting the recorder")
        self._recorder.addTrack(track)

    async def start(self) -> None:
        """Start recording."""
        if not self._started:
            self._started = True
            await self._recorder.start()

    async def stop(self) -> None:
        """Stop and finalise the file. Idempotent."""
        if self._started and not self._stopped:
            self._stopped = True
            await self._recorder.stop()

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
