"""Record received encoded frames to a file without transcoding (PyAV muxing only).

:class:`EncodedRecorder` takes the frames a receiver reassembles before its decoder (see
:class:`rtckit.whip.client.WhepClient`, which taps them) and muxes them as they are: VP8 video
and Opus audio, into WebM or Matroska (``.webm``, ``.mkv``: both kinds), IVF (``.ivf``: VP8
only) or Ogg (``.ogg``, ``.opus``: Opus only). Nothing is decoded or encoded.

* A container needs the video size before its header: with video, the file starts at the
  first VP8 key frame (its size is read from the frame, RFC 6386 section 9.1); frames received
  before it are counted in :attr:`EncodedRecorder.skipped`.
* Each stream's timestamps are its RTP timestamps; streams are aligned by the arrival time of
  their first recorded frame.
* A codec other than VP8 or Opus, or a kind the container does not hold, is not recorded
  (counted in :attr:`EncodedRecorder.skipped`).
"""

from __future__ import annotations

import fractions
import struct
import time
from pathlib import Path
from typing import Any, Final

import av

from rtckit.errors import ConfigurationError

__all__ = ["EncodedRecorder", "vp8_key_frame_size"]

#: the kinds each container (by file suffix) records
_CONTAINERS: Final = {
    ".webm": ("webm", ("audio", "video")),
    ".mkv": ("matroska", ("audio", "video")),
    ".ivf": ("ivf", ("video",)),
    ".ogg": ("ogg", ("audio",)),
    ".opus": ("ogg", ("audio",)),
}
_CODECS: Final = {"video": "vp8", "audio": "opus"}
_CLOCKS: Final = {"video": 90000, "audio": 48000}


def vp8_key_frame_size(frame: bytes) -> tuple[int, int] | None:
    """The ``(width, height)`` of a VP8 key frame, ``None`` for an inter frame or a frame too
    short or without the key frame start code (RFC 6386 section 9.1)."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width, height = struct.unpack_from("<HH", frame, 6)
    return width & 0x3FFF, height & 0x3FFF


def _opus_head(channels: int) -> bytes:
    # RFC 7845 section 5.1: magic, version 1, channels, pre-skip, input rate, gain, family 0
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, 312, 48000, 0, 0)


class EncodedRecorder:
    """Mux encoded VP8/Opus frames into *path* (the container from its suffix, see the module).

    *kinds*: the kinds to record (those the session receives); a kind the container cannot
    hold is left out. :meth:`add` one frame at a time, then :meth:`close` (idempotent) to
    finish the file. Counters: :attr:`written` and :attr:`skipped` frames by kind.
    """

    def __init__(self, path: str | Path, *, kinds: tuple[str, ...] = ("audio", "video")) -> None:
        self.path = Path(path)
        container = _CONTAINERS.get(self.path.suffix.lower())
        if container is None:
            raise ConfigurationError(
                f"cannot record to {self.path.name!r}: the file must end with "
                + ", ".join(_CONTAINERS)
            )
        self._format, holds = container
        #: the kinds recorded
        self.kinds = tuple(kind for kind in kinds if kind in holds)
        if not self.kinds:
            raise ConfigurationError(f"a {self.path.suffix} file holds none of {kinds}")
        #: frames written to the file, by kind
        self.written: dict[str, int] = dict.fromkeys(("audio", "video"), 0)
        #: frames not written (before the first key frame, another codec, after close)
        self.skipped: dict[str, int] = dict.fromkeys(("audio", "video"), 0)
        self._container: Any = None
        self._streams: dict[str, Any] = {}
        self._first: dict[str, tuple[int, int]] = {}  # kind -> (first RTP ts, offset in clock)
        self._last: dict[str, int] = {}
        self._started_at = 0.0
        self._audio_channels = 2
        self._closed = False

    def add(self, kind: str, codec: str, data: bytes, timestamp: int, channels: int = 2) -> None:
        """Record one encoded frame of *kind* (``audio``/``video``) in *codec* (``VP8``,
        ``opus``: case-insensitive) with its RTP *timestamp*."""
        if self._closed or kind not in self.kinds or codec.lower() != _CODECS[kind]:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return
        if self._container is None:
            size = vp8_key_frame_size(data) if kind == "video" else None
            if "video" in self.kinds and size is None:
                self.skipped[kind] += 1  # waiting for the first key frame
                return
            if kind == "audio":
                self._audio_channels = channels
            self._open(size)
        stream = self._streams[kind]
        if kind not in self._first:
            offset = round((time.monotonic() - self._started_at) * _CLOCKS[kind])
            self._first[kind] = (timestamp, offset)
        first, offset = self._first[kind]
        pts = max(timestamp - first + offset, self._last.get(kind, -1) + 1)
        self._last[kind] = pts
        packet = av.Packet(data)
        packet.stream = stream
        packet.pts = packet.dts = pts
        packet.time_base = stream.time_base
        if kind == "video" and not data[0] & 1:
            packet.is_keyframe = True
        self._container.mux(packet)
        self.written[kind] += 1

    def _open(self, size: tuple[int, int] | None) -> None:
        self._container = av.open(str(self.path), mode="w", format=self._format)
        for kind in self.kinds:
            if kind == "video":
                stream = self._container.add_stream("vp8")
                assert size is not None
                stream.width, stream.height = size
            else:
                stream = self._container.add_stream("opus", rate=48000)
                stream.codec_context.extradata = _opus_head(self._audio_channels)
            stream.time_base = fractions.Fraction(1, _CLOCKS[kind])
            self._streams[kind] = stream
        self._started_at = time.monotonic()

    def close(self) -> None:
        """Finish the file (nothing is written if no frame was recorded). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            self._container.close()
