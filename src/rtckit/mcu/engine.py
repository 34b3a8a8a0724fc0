"""The MCU engine: decoded aiortc tracks in, one mixed audio and one composed video stream out.

How it runs
-----------
* **Inputs are sampled, never awaited by the mix.** One reader task per remote track keeps the
  latest decoded :class:`av.VideoFrame` of each participant, and appends decoded audio
  (resampled to 48 kHz mono int16) to a small per-participant buffer
  (:attr:`McuConfig.audio_buffer_frames`, 60 ms by default; older samples are dropped).
* **Two clocks drive the output.** The video clock ticks at :attr:`McuConfig.fps`; each tick
  composes the grid from whatever is latest (a participant silent for
  :attr:`McuConfig.stale_after` seconds gets a placeholder) and encodes it **once** with
  PyAV's libvpx (VP8). A tick that overruns makes the clock skip ticks, counted in
  :attr:`McuStats.video_ticks_skipped`: the output frame rate drops, nothing queues up.
  The audio clock ticks every 20 ms: :class:`~rtckit.mcu.audio.AudioMixer` gives the common
  mix plus one mix-minus per speaker; the common mix is Opus-encoded once and shared by every
  non-speaker, each speaker's mix-minus is encoded by its own encoder.
* **Encoded packets are shared.** Each participant has one outgoing video and one outgoing
  audio :class:`PacketTrack`. Their ``recv()`` returns ``av.Packet`` objects, which
  aiortc's :class:`~aiortc.RTCRtpSender` only packetizes (``encoder.pack``), so the same VP8
  frame goes to every viewer with no per-viewer encode.
* **Keyframes on request.** A viewer's video track drops frames until the first keyframe; a
  new viewer, an overflowing viewer queue, or a viewer's RTCP PLI/FIR (hooked through
  ``rtckit._aiortc.on_keyframe_request``) makes the *shared* encoder's next frame a
  keyframe (at most one forced keyframe per :attr:`McuConfig.keyframe_min_interval`).
* The output resolution never changes; a join or leave only changes the grid drawn on it, so
  the encoded stream continues without renegotiation.

Compose and encode run in a dedicated worker thread (one for video, one for audio), so the
event loop keeps receiving packets while libvpx works.

For a room strategy
-------------------
::

    async with McuEngine(McuConfig(...)) as engine:
        participant = engine.attach(peer_id, pc, name="Alice")  # before the SDP exchange
        ...
        await engine.remove_participant(peer_id)

or, without a peer connection at hand, :meth:`McuEngine.add_participant` then
:meth:`McuEngine.add_input` for each remote track, sending
:attr:`McuParticipant.video_track` / :attr:`McuParticipant.audio_track` with your own senders
and calling :meth:`McuEngine.request_keyframe` on a PLI.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fractions
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeAlias

import attrs
import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

from rtckit._aiortc import on_keyframe_request
from rtckit._aiortc.sdp import SdpDescription
from rtckit.errors import ConfigurationError, NegotiationError, TopologyError
from rtckit.mcu.audio import FRAME_SAMPLES, SAMPLE_RATE, AudioMixer, MixerConfig
from rtckit.mcu.video import MAX_PARTICIPANTS, Compositor, CompositorConfig, I420Image, Tile

__all__ = [
    "AUDIO_TIME_BASE",
    "SCALING_ALGORITHMS",
    "VIDEO_TIME_BASE",
    "EncodedPacket",
    "McuConfig",
    "McuEngine",
    "McuOutput",
    "McuParticipant",
    "McuStats",
    "OpusStreamEncoder",
    "PacketTrack",
    "Vp8StreamEncoder",
    "swscale_tile",
]

logger = logging.getLogger(__name__)

EncodedPacket: TypeAlias = "av.Packet[Any]"
"""An encoded frame as PyAV gives it (the type :class:`PacketTrack` yields)."""

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
"""Time base of the video packets the engine emits (the RTP clock of VP8)."""
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
"""Time base of the audio packets the engine emits (the RTP clock of Opus)."""


SCALING_ALGORITHMS = {
    "area": "AREA",
    "bilinear": "BILINEAR",
    "fast_bilinear": "FAST_BILINEAR",
    "bicubic": "BICUBIC",
    "point": "POINT",
}
"""Names accepted by :attr:`McuConfig.scaling`, mapped to swscale's interpolation names."""


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{attr.name} must be positive, got {value}")


def _positive_int(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ConfigurationError(f"{attr.name} must be >= 1, got {value}")


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ConfigurationError(f"{attr.name} must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class McuConfig:
    """Settings of :class:`McuEngine`."""

    video: CompositorConfig = attrs.field(factory=CompositorConfig)
    """The output canvas (resolution, gaps, labels)."""
    fps: float = attrs.field(default=15.0, validator=_positive)
    """Output frame rate of the composite."""
    video_bitrate: int = attrs.field(default=1_000_000, validator=_positive_int)
    """Target bitrate of the shared VP8 encoder, bits per second."""
    encoder_threads: int = attrs.field(default=1, validator=_positive_int)
    """libvpx threads of the shared video encoder. On the busy 2-core benchmark machine, 2
    threads were sometimes a little faster and often several times slower than 1."""
    scaling: str = attrs.field(
        default="area", validator=attrs.validators.in_(tuple(SCALING_ALGORITHMS))
    )
    """The swscale algorithm that scales inputs into tiles, ``"area"`` (best for downscaling),
    ``"bilinear"``, ``"fast_bilinear"``, ``"bicubic"`` or ``"point"`` (fastest, blocky)."""
    mixer: MixerConfig = attrs.field(factory=MixerConfig)
    """Audio mixer settings (speaking gate, limiter)."""
    audio_bitrate: int = attrs.field(default=48000, validator=_positive_int)
    """Bitrate of each Opus encoder, bits per second."""
    stale_after: float = attrs.field(default=1.0, validator=_positive)
    """Seconds without a video frame after which a participant shows its placeholder."""
    audio_buffer_frames: int = attrs.field(default=3, validator=_positive_int)
    """Most 20 ms frames buffered per audio input; older samples are dropped."""
    audio_prebuffer_frames: int = attrs.field(default=1, validator=_non_negative)
    """Extra 20 ms frames an input must buffer before it (re)starts playing after running dry."""
    keyframe_min_interval: float = attrs.field(default=0.25, validator=_non_negative)
    """Least seconds between two forced keyframes; requests in between are deferred."""
    viewer_queue_packets: int = attrs.field(default=8, validator=_positive_int)
    """Packets queued per viewer before the queue is flushed (and, for video, a keyframe asked)."""
    max_participants: int = attrs.field(default=MAX_PARTICIPANTS, validator=_positive_int)
    """Participants the engine accepts (the grid draws at most 16)."""

    def __attrs_post_init__(self) -> None:
        if self.max_participants > MAX_PARTICIPANTS:
            raise ConfigurationError(
                f"max_participants must be <= {MAX_PARTICIPANTS}, got {self.max_participants}"
            )


@attrs.frozen(kw_only=True)
class McuStats:
    """Counters of one engine since it started (a snapshot; see :meth:`McuEngine.stats`).

    Encode-once shows as ``video_encodes == video_frames_composed`` whatever ``viewers`` is,
    while ``video_packets_delivered`` grows with the number of viewers.
    """

    elapsed: float
    """Seconds since the engine started (divide a counter's change by this one's for rates)."""
    participants: int
    """Participants now in the engine."""
    viewers: int
    """Outgoing video tracks now fed."""
    video_ticks: int
    """Video clock ticks that produced a frame."""
    video_ticks_skipped: int
    """Video clock ticks dropped because compose and encode overran."""
    video_frames_composed: int
    """Composite frames drawn."""
    video_encodes: int
    """Calls of the shared VP8 encoder (one per composed frame)."""
    video_keyframes: int
    """Keyframes the shared encoder produced."""
    video_keyframe_requests: int
    """Keyframe requests received (new viewers, PLI/FIR, queue overflow)."""
    video_packets_delivered: int
    """Encoded video frames handed to viewer tracks (sum over viewers)."""
    video_frames_dropped: int
    """Encoded video frames not delivered (viewer waiting for a keyframe, or queue flushed)."""
    video_frames_decoded: int
    """Decoded input video frames received from remote tracks."""
    video_scales: int
    """Input frames scaled into tiles (cache misses of the compositor)."""
    layout_changes: int
    """Times the grid changed (joins, leaves)."""
    compose_seconds: float
    """Wall time spent composing, in the worker thread."""
    encode_seconds: float
    """Wall time spent in the VP8 encoder, in the worker thread."""
    video_input_age_mean: float
    """Mean age, in seconds, of the input pictures in each composite when it is handed to
    the viewers (sampling wait + compose + encode): the latency the MCU adds to video."""
    audio_ticks: int
    """20 ms audio clock ticks mixed."""
    audio_ticks_skipped: int
    """Audio ticks dropped because the loop was late."""
    audio_encodes_common: int
    """Opus encodes of the common mix (one per tick)."""
    audio_encodes_private: int
    """Opus encodes of speakers' mix-minus streams."""
    audio_packets_delivered: int
    """Opus packets handed to listener tracks (sum over listeners)."""
    audio_frames_decoded: int
    """Decoded input audio frames received from remote tracks."""
    audio_samples_dropped: int
    """Input samples dropped because a buffer was full."""
    input_errors: int
    """Input frames that could not be used (and were skipped)."""


class PacketTrack(MediaStreamTrack):
    """An outgoing track whose ``recv()`` returns pre-encoded ``av.Packet`` objects.

    Fed by the engine; one per participant and kind. Nothing is queued before the first
    ``recv()`` (aiortc's sender starts pulling once DTLS is up), which calls ``on_start``: the
    engine uses it to ask the shared encoder for a keyframe exactly when a viewer starts. A
    video track holds back everything until the first keyframe, so a viewer always starts
    on a decodable frame.
    """

    def __init__(
        self,
        kind: str,
        *,
        max_queue: int = 8,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("audio", "video"):
            raise ConfigurationError(f"kind must be 'audio' or 'video', got {kind!r}")
        self.kind = kind
        self._queue: asyncio.Queue[EncodedPacket | None] = asyncio.Queue()
        self._max_queue = max_queue
        self._on_start = on_start
        self.started = False
        """True once a consumer called ``recv()``."""
        self.waiting_for_keyframe = kind == "video"
        """True until a keyframe is queued (video only)."""

    def push(self, packet: EncodedPacket) -> bool:
        """Queue ``packet``; returns False if it was dropped.

        Dropped: the track has ended, nobody pulls yet, or (video) no keyframe came yet. A
        full queue (the sender is not keeping up) is flushed; a video track then waits for
        the next keyframe again.
        """
        if self.readyState != "live" or not self.started:
            return False
        if self.waiting_for_keyframe:
            if not packet.is_keyframe:
                return False
            self.waiting_for_keyframe = False
        if self._queue.qsize() >= self._max_queue:
            while not self._queue.empty():
                self._queue.get_nowait()
            if self.kind == "video" and not packet.is_keyframe:
                self.waiting_for_keyframe = True
                return False
        self._queue.put_nowait(packet)
        return True

    async def recv(self) -> EncodedPacket:
        """The next packet.

        Raises :class:`aiortc.mediastreams.MediaStreamError` once the track is stopped.
        """
        if self.readyState != "live":
            raise MediaStreamError
        if not self.started:
            self.started = True
            if self._on_start is not None:
                self._on_start()
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        """End the track (idempotent); a pending ``recv()`` then raises ``MediaStreamError``."""
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()


class Vp8StreamEncoder:
    """One libvpx VP8 encoder (PyAV) turning I420 images into packets with given timestamps.

    Settings follow aiortc's own VP8 encoder (realtime deadline, no lag, CBR), so the
    packets suit aiortc's VP8 packetizer and browsers alike.
    """

    def __init__(
        self, width: int, height: int, *, bitrate: int, threads: int = 1, fps: float = 30.0
    ) -> None:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width = width
        codec.height = height
        codec.bit_rate = bitrate
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        codec.gop_size = 3000
        codec.qmin = 2
        codec.qmax = 56
        codec.options = {
            "bufsize": str(bitrate),
            "cpu-used": "-6",
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "noise-sensitivity": "4",
            "overshoot-pct": "15",
            "partitions": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
        }
        codec.thread_count = threads
        self._codec = codec
        self._frame_ticks = max(1, round(VIDEO_TIME_BASE.denominator / fps))
        self.encodes = 0
        """Frames encoded."""

    def encode(self, image: I420Image, pts: int, *, keyframe: bool = False) -> list[EncodedPacket]:
        """Encode one image; the packets carry ``pts`` (in :data:`VIDEO_TIME_BASE`).

        libvpx itself sees evenly spaced frames at the nominal frame rate, whatever gaps
        ``pts`` has: when an overloaded clock skips frames, rate control must not hand the
        skipped frames' bits (and CPU) to the next one, which would feed the overload.
        """
        frame = av.VideoFrame.from_ndarray(image.stacked(), format="yuv420p")
        frame.pts = self.encodes * self._frame_ticks
        frame.time_base = VIDEO_TIME_BASE
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        packets = list(self._codec.encode(frame))
        self.encodes += 1
        for p in packets:
            p.pts = pts
            p.time_base = VIDEO_TIME_BASE
        return packets


class OpusStreamEncoder:
    """One libopus encoder (PyAV): 20 ms int16 mono frames in, one packet out per frame."""

    def __init__(self, *, bitrate: int) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = bitrate
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = SAMPLE_RATE
        codec.time_base = AUDIO_TIME_BASE
        codec.options = {"application": "voip"}
        self._codec = codec
        self.encodes = 0
        """Frames encoded."""

    def encode(self, samples: npt.NDArray[np.int16], pts: int) -> list[EncodedPacket]:
        """Encode one frame at ``pts`` (in :data:`AUDIO_TIME_BASE`)."""
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TIME_BASE
        packets = list(self._codec.encode(frame))
        self.encodes += 1
        for p in packets:
            p.pts = pts
            p.time_base = AUDIO_TIME_BASE
        return packets


def swscale_tile(
    frame: av.VideoFrame, width: int, height: int, *, scaling: str = "area"
) -> I420Image:
    """Scale a decoded frame to a tile with swscale and wrap it as I420.

    ``scaling`` is one of :data:`SCALING_ALGORITHMS`.
    """
    out = frame.reformat(
        width=width,
        height=height,
        format="yuv420p",
        interpolation=SCALING_ALGORITHMS[scaling],
    )
    return I420Image.from_stacked(out.to_ndarray().astype(np.uint8, copy=False))


class _AudioInput:
    """Per-participant audio buffer: decoded samples in, 20 ms frames out."""

    def __init__(self, max_frames: int, prebuffer: int) -> None:
        self._buf: deque[npt.NDArray[np.int16]] = deque()
        self._size = 0
        self._max = max_frames * FRAME_SAMPLES
        self._prebuffer = prebuffer * FRAME_SAMPLES
        self._playing = False
        self.dropped = 0

    def append(self, samples: npt.NDArray[np.int16]) -> None:
        self._buf.append(samples)
        self._size += samples.size
        while self._size > self._max:
            excess = self._size - self._max
            head = self._buf[0]
            if head.size <= excess:
                self._buf.popleft()
                self._size -= head.size
                self.dropped += head.size
            else:
                self._buf[0] = head[excess:]
                self._size -= excess
                self.dropped += excess

    def pop_frame(self) -> npt.NDArray[np.int16] | None:
        need = FRAME_SAMPLES + (0 if self._playing else self._prebuffer)
        if self._size < need:
            self._playing = False
            return None
        self._playing = True
        parts: list[npt.NDArray[np.int16]] = []
        want = FRAME_SAMPLES
        while want:
            head = self._buf[0]
            if head.size <= want:
                parts.append(self._buf.popleft())
                want -= head.size
            else:
                parts.append(head[:want])
                self._buf[0] = head[want:]
                want = 0
        self._size -= FRAME_SAMPLES
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class McuParticipant:
    """One participant of the MCU: its outgoing tracks and the state of its inputs.

    Created by :meth:`McuEngine.add_participant` or :meth:`McuEngine.attach`.
    """

    def __init__(
        self,
        participant_id: str,
        name: str,
        config: McuConfig,
        *,
        on_video_start: Callable[[], None] | None = None,
    ) -> None:
        self.id = participant_id
        """The participant's key in the engine."""
        self.name = name
        """Display name drawn on its tile."""
        self.video_track = PacketTrack(
            "video", max_queue=config.viewer_queue_packets, on_start=on_video_start
        )
        """The composite, pre-encoded, to send to this participant."""
        self.audio_track = PacketTrack("audio", max_queue=config.viewer_queue_packets)
        """The mix of everyone else, pre-encoded, to send to this participant."""
        self.latest_video: av.VideoFrame | None = None
        """The latest decoded picture received from this participant."""
        self.latest_video_at = -math.inf
        """``loop.time()`` when :attr:`latest_video` arrived."""
        self.audio = _AudioInput(config.audio_buffer_frames, config.audio_prebuffer_frames)
        """Buffered input audio, 48 kHz mono int16 (used by the engine)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)


class McuOutput:
    """The room's full mix for someone who is not in it (a WHEP viewer): the composite video
    and the mix of every participant's audio (not a mix-minus), the same encoded packets as
    the participants get (:meth:`McuEngine.add_output`)."""

    def __init__(self, output_id: str, config: McuConfig, *, on_video_start: Callable[[], None]):
        self.id = output_id
        self.video_track = PacketTrack(
            "video", max_queue=config.viewer_queue_packets, on_start=on_video_start
        )
        """The composite, pre-encoded."""
        self.audio_track = PacketTrack("audio", max_queue=config.viewer_queue_packets)
        """The full mix, pre-encoded (the one every participant who is not speaking hears)."""


class McuEngine:
    """Mixes audio and composes video for up to 16 participants, encoding each stream once.

    An async context manager: ``async with McuEngine(config) as engine`` starts the clocks;
    :meth:`aclose` (idempotent) stops them, ends every outgoing track and cancels the input
    readers. Must be used from one event loop.
    """

    def __init__(self, config: McuConfig | None = None) -> None:
        self.config = config if config is not None else McuConfig()
        self._participants: dict[str, McuParticipant] = {}
        self._outputs: dict[str, McuOutput] = {}
        self._closed_event = asyncio.Event()
        self._compositor: Compositor[str] = Compositor(
            self.config.video,
            scaler=functools.partial(swscale_tile, scaling=self.config.scaling),
        )
        self._mixer: AudioMixer[str] = AudioMixer(self.config.mixer)
        self._video_encoder = Vp8StreamEncoder(
            self.config.video.width,
            self.config.video.height,
            bitrate=self.config.video_bitrate,
            threads=self.config.encoder_threads,
            fps=self.config.fps,
        )
        self._common_opus = OpusStreamEncoder(bitrate=self.config.audio_bitrate)
        self._private_opus: dict[str, OpusStreamEncoder] = {}
        self._video_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rtckit-mcu-video"
        )
        self._audio_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rtckit-mcu-audio"
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._started_at = 0.0
        self._closed = False
        self._keyframe_pending = True
        self._last_keyframe_at = -math.inf
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "video_ticks",
                "video_ticks_skipped",
                "video_frames_composed",
                "video_encodes",
                "video_keyframes",
                "video_keyframe_requests",
                "video_packets_delivered",
                "video_frames_dropped",
                "video_frames_decoded",
                "audio_ticks",
                "audio_ticks_skipped",
                "audio_encodes_common",
                "audio_encodes_private",
                "audio_packets_delivered",
                "audio_frames_decoded",
                "input_errors",
            ),
            0,
        )
        self._compose_seconds = 0.0
        self._encode_seconds = 0.0
        self._removed_audio_dropped = 0
        self._audio_forget: list[str] = []
        self._age_sum = 0.0
        self._age_count = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the video and audio clocks (idempotent)."""
        if self._closed:
            raise TopologyError("the MCU engine is closed")
        if self._started:
            return
        self._started = True
        self._started_at = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._video_clock(), name="rtckit-mcu-video-clock"),
            asyncio.create_task(self._audio_clock(), name="rtckit-mcu-audio-clock"),
        ]

    async def aclose(self) -> None:
        """Stop the clocks, end every outgoing track, cancel the readers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for pid in list(self._participants):
            await self.remove_participant(pid)
        for oid in list(self._outputs):
            self.remove_output(oid)
        self._closed_event.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._video_pool.shutdown)
        await loop.run_in_executor(None, self._audio_pool.shutdown)

    # --- participants ------------------------------------------------------------------------

    @property
    def participants(self) -> Sequence[McuParticipant]:
        """Participants in join order (the grid order)."""
        return tuple(self._participants.values())

    def add_participant(self, participant_id: str, *, name: str | None = None) -> McuParticipant:
        """Add a participant; send its :attr:`~McuParticipant.video_track` and
        :attr:`~McuParticipant.audio_track` to it and feed its remote tracks to
        :meth:`add_input`. Raises :class:`~rtckit.errors.TopologyError` if the id is taken,
        the engine is full or closed."""
        if self._closed:
            raise TopologyError("the MCU engine is closed")
        if participant_id in self._participants:
            raise TopologyError(f"participant {participant_id!r} is already in the MCU")
        if len(self._participants) >= self.config.max_participants:
            raise TopologyError(f"the MCU is full ({self.config.max_participants} participants)")
        participant = McuParticipant(
            participant_id,
            name or participant_id,
            self.config,
            on_video_start=self.request_keyframe,  # the new viewer starts on a keyframe
        )
        self._participants[participant_id] = participant
        return participant

    def add_input(self, participant_id: str, track: MediaStreamTrack) -> None:
        """Read a remote (decoded) audio or video track of a participant."""
        participant = self._participants.get(participant_id)
        if participant is None:
            raise TopologyError(f"unknown participant {participant_id!r}")
        if track.kind == "video":
            coro = self._read_video(participant, track)
        elif track.kind == "audio":
            coro = self._read_audio(participant, track)
        else:
            raise TopologyError(f"cannot mix a {track.kind!r} track")
        task = asyncio.create_task(coro, name=f"rtckit-mcu-in-{participant_id}-{track.kind}")
        participant._tasks.add(task)
        task.add_done_callback(participant._tasks.discard)

    def attach(
        self,
        participant_id: str,
        pc: RTCPeerConnection,
        *,
        name: str | None = None,
        offer: RTCSessionDescription | None = None,
    ) -> McuParticipant:
        """Wire a server-side peer connection to the engine, before its SDP exchange.

        Adds the participant, adds its outgoing tracks to ``pc`` (VP8 and Opus preferred),
        hooks RTCP keyframe requests of the video sender, and feeds every remote track
        ``pc`` announces to :meth:`add_input`. Call it before ``pc.createOffer()`` when the
        server offers, or before ``pc.setRemoteDescription(offer)`` when it answers.

        When ``pc`` answers, pass the participant's ``offer``: outgoing tracks are then added
        only for the kinds (audio, video) the offer has m-lines for, because aiortc cannot
        answer an offer that lacks a kind the answerer already added a track for. A kind the
        participant does not negotiate has its outgoing track ended at once.
        """
        kinds = {"audio", "video"}
        if offer is not None:
            try:
                parsed = SdpDescription.parse(offer.sdp)
            except (ValueError, IndexError) as exc:
                raise NegotiationError(f"cannot parse the participant's offer: {exc}") from exc
            kinds = {m.kind for m in parsed.media} & kinds
        participant = self.add_participant(participant_id, name=name)
        try:
            for track in (participant.video_track, participant.audio_track):
                if track.kind not in kinds:
                    track.stop()
                    continue
                sender = pc.addTrack(track)
                mime = "video/VP8" if track.kind == "video" else "audio/opus"
                self._prefer_codec(pc, sender, mime)
                if track.kind == "video":
                    on_keyframe_request(sender, self.request_keyframe)
        except BaseException:
            # e.g. a closed peer connection: leave no half-attached participant behind
            del self._participants[participant_id]
            participant.video_track.stop()
            participant.audio_track.stop()
            raise

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if participant_id in self._participants:
                self.add_input(participant_id, track)

        return participant

    @staticmethod
    def _prefer_codec(pc: RTCPeerConnection, sender: RTCRtpSender, mime: str) -> None:
        kind = mime.split("/")[0]
        caps = RTCRtpSender.getCapabilities(kind).codecs
        wanted = [c for c in caps if c.mimeType.lower() in (mime.lower(), f"{kind}/rtx")]
        for transceiver in pc.getTransceivers():
            if transceiver.sender is sender:
                transceiver.setCodecPreferences(wanted)

    async def remove_participant(self, participant_id: str) -> None:
        """Remove a participant: end its outgoing tracks, stop reading its inputs.

        Unknown ids are ignored (removal is idempotent). The grid re-lays out on the next tick.
        """
        participant = self._participants.pop(participant_id, None)
        if participant is None:
            return
        participant.video_track.stop()
        participant.audio_track.stop()
        tasks = list(participant._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._removed_audio_dropped += participant.audio.dropped
        self._audio_forget.append(participant_id)  # the audio worker drops its state

    def add_output(self, output_id: str) -> McuOutput:
        """A full-mix output (:class:`McuOutput`) for a viewer who is not a participant: send
        its tracks; it is not drawn and adds nothing to the mix. No encoder is added: its
        video is the composite every participant gets, its audio the common mix. Raises
        :class:`~rtckit.errors.TopologyError` if the id is taken or the engine is closed."""
        if self._closed:
            raise TopologyError("the MCU engine is closed")
        if output_id in self._outputs:
            raise TopologyError(f"output {output_id!r} is already in the MCU")
        output = McuOutput(output_id, self.config, on_video_start=self.request_keyframe)
        self._outputs[output_id] = output
        return output

    def remove_output(self, output_id: str) -> None:
        """End an output's tracks (unknown ids are ignored)."""
        output = self._outputs.pop(output_id, None)
        if output is not None:
            output.video_track.stop()
            output.audio_track.stop()

    @property
    def outputs(self) -> Sequence[McuOutput]:
        """The full-mix outputs."""
        return tuple(self._outputs.values())

    async def wait_closed(self) -> None:
        """Wait until the engine is closed (:meth:`aclose`)."""
        await self._closed_event.wait()

    def request_keyframe(self) -> None:
        """Make the shared video encoder's next frame (or the next allowed one) a keyframe."""
        self._counters["video_keyframe_requests"] += 1
        self._keyframe_pending = True

    def stats(self) -> McuStats:
        """A snapshot of the counters."""
        c = self._counters
        return McuStats(
            elapsed=time.monotonic() - self._started_at if self._started else 0.0,
            participants=len(self._participants),
            viewers=sum(p.video_track.readyState == "live" for p in self._participants.values()),
            video_ticks=c["video_ticks"],
            video_ticks_skipped=c["video_ticks_skipped"],
            video_frames_composed=c["video_frames_composed"],
            video_encodes=c["video_encodes"],
            video_keyframes=c["video_keyframes"],
            video_keyframe_requests=c["video_keyframe_requests"],
            video_packets_delivered=c["video_packets_delivered"],
            video_frames_dropped=c["video_frames_dropped"],
            video_frames_decoded=c["video_frames_decoded"],
            video_scales=self._compositor.scales,
            layout_changes=self._compositor.layout_version,
            compose_seconds=self._compose_seconds,
            encode_seconds=self._encode_seconds,
            video_input_age_mean=self._age_sum / self._age_count if self._age_count else 0.0,
            audio_ticks=c["audio_ticks"],
            audio_ticks_skipped=c["audio_ticks_skipped"],
            audio_encodes_common=c["audio_encodes_common"],
            audio_encodes_private=c["audio_encodes_private"],
            audio_packets_delivered=c["audio_packets_delivered"],
            audio_frames_decoded=c["audio_frames_decoded"],
            input_errors=c["input_errors"],
            audio_samples_dropped=self._removed_audio_dropped
            + sum(p.audio.dropped for p in self._participants.values()),
        )

    def cell_of(self, participant_id: str) -> tuple[int, int, int, int] | None:
        """(x, y, width, height) of a participant's cell in the last composed layout."""
        rect = self._compositor.cell_of(participant_id)
        return None if rect is None else (rect.x, rect.y, rect.width, rect.height)

    # --- inputs ------------------------------------------------------------------------------

    async def _read_video(self, participant: McuParticipant, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.feed_video(participant.id, frame, at=loop.time())

    async def _read_audio(self, participant: McuParticipant, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                try:
                    self.feed_audio(participant.id, frame)
                except (ValueError, av.FFmpegError):
                    # one bad frame must not end the participant's audio
                    self._counters["input_errors"] += 1
                    logger.warning("MCU: dropped an audio frame of %s", participant.id)

    def feed_video(self, participant_id: str, frame: av.VideoFrame, *, at: float) -> None:
        """Offer a decoded video frame of a participant (``at``: its ``loop.time()``).

        The reader tasks call this; benchmarks and custom inputs may call it directly.
        """
        participant = self._participants.get(participant_id)
        if participant is None:
            return
        participant.latest_video = frame
        participant.latest_video_at = at
        self._counters["video_frames_decoded"] += 1

    def feed_audio(self, participant_id: str, frame: av.AudioFrame) -> None:
        """Offer a decoded audio frame of a participant (any rate and layout)."""
        participant = self._participants.get(participant_id)
        if participant is None:
            return
        self._counters["audio_frames_decoded"] += 1
        frame.pts = None
        try:
            resampled = participant._resampler.resample(frame)
        except ValueError:
            # the input changed rate or layout mid-stream: start a fresh resampler
            participant._resampler = av.AudioResampler(
                format="s16", layout="mono", rate=SAMPLE_RATE
            )
            resampled = participant._resampler.resample(frame)
        for out in resampled:
            participant.audio.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))

    # --- video clock -------------------------------------------------------------------------

    def _tiles(self, now: float) -> list[Tile[str]]:
        stale = self.config.stale_after
        return [
            Tile(
                p.id,
                p.name,
                p.latest_video if now - p.latest_video_at <= stale else None,
            )
            for p in self._participants.values()
        ]

    def _compose_and_encode(
        self, tiles: list[Tile[str]], pts: int, keyframe: bool
    ) -> list[EncodedPacket]:
        t0 = time.perf_counter()
        image = self._compositor.compose(tiles)
        t1 = time.perf_counter()
        packets = self._video_encoder.encode(image, pts, keyframe=keyframe)
        t2 = time.perf_counter()
        self._compose_seconds += t1 - t0
        self._encode_seconds += t2 - t1
        return packets

    async def _video_clock(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.config.fps
        start = loop.time()
        tick = 0
        while True:
            scheduled = start + tick * period
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay >= period:
                missed = int(-delay // period)
                tick += missed
                self._counters["video_ticks_skipped"] += missed
                continue
            tick += 1
            if not self._participants:
                continue
            now = loop.time()
            keyframe = (
                self._keyframe_pending
                and now - self._last_keyframe_at >= self.config.keyframe_min_interval
            )
            if keyframe:
                self._keyframe_pending = False
                self._last_keyframe_at = now
            pts = round((scheduled - start) / VIDEO_TIME_BASE)
            tiles = self._tiles(now)
            fed_at = [
                p.latest_video_at
                for p, t in zip(self._participants.values(), tiles, strict=True)
                if t.source is not None
            ]
            try:
                packets = await loop.run_in_executor(
                    self._video_pool, self._compose_and_encode, tiles, pts, keyframe
                )
            except (ValueError, av.FFmpegError):
                logger.exception("MCU video compose/encode failed; skipping a frame")
                continue
            self._counters["video_ticks"] += 1
            self._counters["video_frames_composed"] += 1
            # the encoder's own call count, read on the loop so a snapshot never sees an
            # encode whose frame is still in flight
            self._counters["video_encodes"] = self._video_encoder.encodes
            self._distribute_video(packets)
            sent_at = loop.time()
            self._age_sum += sum(sent_at - t for t in fed_at)
            self._age_count += len(fed_at)

    def _distribute_video(self, packets: list[EncodedPacket]) -> None:
        for packet in packets:
            if packet.is_keyframe:
                self._counters["video_keyframes"] += 1
            tracks = [p.video_track for p in self._participants.values()]
            for track in tracks + [o.video_track for o in self._outputs.values()]:
                if track.readyState != "live" or not track.started:
                    continue  # this participant does not receive video (yet)
                waiting = track.waiting_for_keyframe
                if track.push(packet):
                    self._counters["video_packets_delivered"] += 1
                else:
                    self._counters["video_frames_dropped"] += 1
                    if track.waiting_for_keyframe and not waiting:
                        self.request_keyframe()  # its queue overflowed

    # --- audio clock -------------------------------------------------------------------------

    def _mix_and_encode(
        self, frames: dict[str, npt.NDArray[np.int16] | None], pts: int
    ) -> tuple[list[EncodedPacket], dict[str, list[EncodedPacket]]]:
        while self._audio_forget:
            gone_id = self._audio_forget.pop()
            self._mixer.forget(gone_id)
            self._private_opus.pop(gone_id, None)
        result = self._mixer.mix(frames)
        common = self._common_opus.encode(result.common, pts)
        private: dict[str, list[EncodedPacket]] = {}
        for speaker, samples in result.mix_minus.items():
            encoder = self._private_opus.get(speaker)
            if encoder is None:
                encoder = self._private_opus[speaker] = OpusStreamEncoder(
                    bitrate=self.config.audio_bitrate
                )
            private[speaker] = encoder.encode(samples, pts)
        for gone in set(self._private_opus) - set(result.mix_minus):
            del self._private_opus[gone]  # a new speaking stretch starts a fresh encoder
        return common, private

    async def _audio_clock(self) -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_SAMPLES / SAMPLE_RATE
        start = loop.time()
        tick = 0
        while True:
            scheduled = start + tick * period
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay >= 5 * period:
                missed = int(-delay // period)
                tick += missed
                self._counters["audio_ticks_skipped"] += missed
                continue
            pts = tick * FRAME_SAMPLES
            tick += 1
            if not self._participants:
                continue
            frames = {p.id: p.audio.pop_frame() for p in self._participants.values()}
            try:
                common, private = await loop.run_in_executor(
                    self._audio_pool, self._mix_and_encode, frames, pts
                )
            except (ValueError, av.FFmpegError):
                logger.exception("MCU audio mix/encode failed; skipping a frame")
                continue
            self._counters["audio_ticks"] += 1
            self._counters["audio_encodes_common"] += 1
            self._counters["audio_encodes_private"] += len(private)
            for participant in self._participants.values():
                if not participant.audio_track.started:
                    continue
                for packet in private.get(participant.id, common):
                    if participant.audio_track.push(packet):
                        self._counters["audio_packets_delivered"] += 1
            for output in self._outputs.values():
                for packet in common if output.audio_track.started else ():
                    if output.audio_track.push(packet):
                        self._counters["audio_packets_delivered"] += 1
