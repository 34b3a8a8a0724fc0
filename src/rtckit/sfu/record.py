"""Record a published track to a file without transcoding (PyAV muxing only).

The recorder is a packet sink of the publication: frames are reassembled from the RTP
payloads (:mod:`rtckit.sfu.depacketize`) and muxed as they are. Containers:

=========  ================================
codec      containers (by file suffix)
=========  ================================
VP8        ``.webm``, ``.mkv``, ``.ivf``
H264       ``.mp4``, ``.mkv``
Opus       ``.webm``, ``.mkv``, ``.ogg``
=========  ================================

One file holds one track. A recorder follows its :class:`~rtckit.sfu.engine.TrackKey`: if the
participant publishes again, recording continues in the same file with timestamps advanced
by the wall-clock gap. Muxing runs in the event loop (a few kilobytes per frame).
"""

from __future__ import annotations

import asyncio
import fractions
import struct
from pathlib import Path
from types import TracebackType

import av

from rtckit.errors import ConfigurationError, TopologyError
from rtckit.sfu.depacketize import FrameAssembler
from rtckit.sfu.engine import PublishedTrack, SfuRouter, TrackKey
from rtckit.sfu.rtp import RtpHeader

__all__ = ["CONTAINERS", "TrackRecorder"]

#: file suffixes allowed per codec (lower-case codec name)
CONTAINERS: dict[str, frozenset[str]] = {
    "vp8": frozenset({".webm", ".mkv", ".ivf"}),
    "h264": frozenset({".mp4", ".mkv"}),
    "opus": frozenset({".webm", ".mkv", ".ogg"}),
}

_OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, 0, 0)


class TrackRecorder:
    """Write the track ``key`` of ``router`` to ``path`` (see the module docstring).

    Use as an async context manager, or call :meth:`start` and :meth:`aclose`.
    """

    def __init__(self, router: SfuRouter, key: TrackKey, path: str | Path) -> None:
        self.router = router
        self.key = key
        self.path = Path(path)
        #: frames written, and frames dropped (loss, or waiting for a keyframe)
        self.frames_written = 0
        self._assembler: FrameAssembler | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.stream.Stream | None = None
        self._publication: PublishedTrack | None = None
        self._clock_rate = 90000
        self._source: int | None = None
        self._ts_offset = 0  # added to the unwrapped RTP timestamp
        self._last_ext_ts: int | None = None
        self._last_pts = -1
        self._last_wall = 0.0
        self._closed = False
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def frames_dropped(self) -> int:
        """Frames not written because a packet was lost (or no keyframe came yet)."""
        return self._assembler.dropped if self._assembler is not None else 0

    async def __aenter__(self) -> TrackRecorder:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open the file and start recording (the track must be published)."""
        pub = self.router.publications.get(self.key)
        if pub is None:
            raise TopologyError(f"{self.key} is not published")
        codec = pub.mime_type.split("/")[-1].lower()
        allowed = CONTAINERS.get(codec)
        if allowed is None:
            raise ConfigurationError(f"recording {pub.mime_type} is not supported")
        if self.path.suffix.lower() not in allowed:
            raise ConfigurationError(
                f"{pub.mime_type} cannot go in a {self.path.suffix or 'suffix-less'} file; "
                f"use one of {sorted(allowed)}"
            )
        self._clock_rate = next(iter(pub.codecs.values())).clockRate
        self._assembler = FrameAssembler(codec)
        container = av.open(str(self.path), "w")
        stream = container.add_stream(codec, rate=self._clock_rate if codec == "opus" else 30)
        stream.time_base = fractions.Fraction(1, self._clock_rate)
        if codec == "opus":
            stream.codec_context.extradata = _OPUS_HEAD
        self._container = container
        self._stream = stream
        self.router._recorders.setdefault(self.key, []).append(self)
        self._attach(pub)
        await pub.request_keyframe()

    def _attach(self, pub: PublishedTrack) -> None:
        if self._publication is not None and self._on_packet in self._publication.sinks:
            self._publication.sinks.remove(self._on_packet)
        self._publication = pub
        pub.sinks.append(self._on_packet)

    def _on_packet(self, data: bytes, header: RtpHeader, keyframe: bool) -> None:
        if self._closed or self._assembler is None:
            return
        if header.ssrc != self._source:
            self._new_source(header)
        waiting = self._assembler.needs_keyframe
        frame = self._assembler.add(header, data[header.payload_offset : header.payload_end])
        if self._assembler.needs_keyframe and not waiting and self._publication is not None:
            # a frame was lost: ask for a keyframe rather than wait for the next one
            task = asyncio.ensure_future(self._publication.request_keyframe())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if frame is None:
            return
        ext = self._unwrap(frame.timestamp)
        pts = ext + self._ts_offset
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        self._last_wall = self.router.clock()
        packet = av.Packet(frame.data)
        packet.pts = packet.dts = pts
        packet.time_base = fractions.Fraction(1, self._clock_rate)
        assert self._container is not None
        assert self._stream is not None
        packet.stream = self._stream
        if frame.keyframe:
            packet.is_keyframe = True
        self._container.mux(packet)
        self.frames_written += 1

    def _unwrap(self, timestamp: int) -> int:
        last = self._last_ext_ts
        if last is None:
            ext = timestamp
        else:
            delta = (timestamp - last) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            ext = last + delta
        self._last_ext_ts = ext
        return ext

    def _new_source(self, header: RtpHeader) -> None:
        self._source = header.ssrc
        self._last_ext_ts = None
        ext = self._unwrap(header.timestamp)
        if self._last_pts < 0:
            self._ts_offset = -ext
        else:
            gap = max(1, round((self.router.clock() - self._last_wall) * self._clock_rate))
            self._ts_offset = self._last_pts + gap - ext

    async def aclose(self) -> None:
        """Stop recording and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._publication is not None and self._on_packet in self._publication.sinks:
            self._publication.sinks.remove(self._on_packet)
        recorders = self.router._recorders.get(self.key, [])
        if self in recorders:
            recorders.remove(self)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._container is not None:
            self._container.close()
            self._container = None
