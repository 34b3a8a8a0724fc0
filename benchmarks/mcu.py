"""Benchmark of the MCU engine: compose + encode once vs. encode per viewer.

Runs :class:`rtckit.mcu.engine.McuEngine` with N synthetic participants (4, 9, 16) sending
640x480 at 30 fps and a tone each (everyone "speaking": the worst case for audio), output
640x480 (and 1280x720) at 30 fps, for a few seconds each, and reports:

* real-time factor: composite frames produced per second / target frame rate;
* CPU: process CPU time (all threads) per wall second, in cores, and per participant;
  "incl. decode" adds the cost of decoding every input (VP8 640x480 at 30 fps and Opus at
  50 packets/s per participant), measured separately in the same run on the same content,
  because the benchmark feeds decoded frames directly (no network, no RTP);
* added latency: mean age of the input pictures when their composite is handed to the
  viewers (sampling wait + compose + encode), from the engine's stats;
* the same with a naive baseline engine that encodes the composite once *per viewer*.

Every viewer's packets are drained through aiortc's own VP8/Opus packetizer (``pack``), the
per-viewer work a real sender does before RTP/SRTP.

Run: ``python benchmarks/mcu.py`` (about 4 minutes; ``--quick`` for a short run; each case is
run ``--repeat`` times, default 2, and the best run is reported). Writes
``docs/topics/mcu-benchmark.rst`` and ``docs/topics/mcu-benchmark.svg``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing rtckit

from rtckit.mcu.audio import AudioMixer  # noqa: E402
from rtckit.mcu.engine import (  # noqa: E402
    SCALING_ALGORITHMS,
    EncodedPacket,
    McuConfig,
    McuEngine,
    OpusStreamEncoder,
    Vp8StreamEncoder,
    swscale_tile,
)
from rtckit.mcu.video import (  # noqa: E402
    Compositor,
    CompositorConfig,
    I420Image,
    Tile,
    scale_nearest,
)

IN_W, IN_H, IN_FPS = 640, 480, 30
CYCLE = 30  # distinct synthetic input frames (one second of motion)
LOAD_AT_START = os.getloadavg()[0]


def synthetic_frames() -> list[av.VideoFrame]:
    """One second of a moving test pattern: gradient, textured noise, a moving square."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 40, size=(IN_H, IN_W + CYCLE * 8), dtype=np.uint8)
    yy, xx = np.mgrid[0:IN_H, 0:IN_W]
    frames = []
    for i in range(CYCLE):
        img = np.zeros((IN_H, IN_W, 3), dtype=np.uint8)
        img[..., 0] = (xx * 255 // IN_W).astype(np.uint8)
        img[..., 1] = (yy * 255 // IN_H).astype(np.uint8)
        img[..., 2] = 128
        img = img + noise[:, i * 8 : i * 8 + IN_W, None]
        x0 = 40 + i * 16
        img[180:300, x0 : x0 + 120] = (250, 250, 250)
        frames.append(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p"))
    return frames


def measure_decode(frames: list[av.VideoFrame]) -> tuple[float, float]:
    """CPU seconds to decode one 640x480 VP8 frame and one 20 ms Opus packet (aiortc's decoders)."""
    enc = Vp8StreamEncoder(IN_W, IN_H, bitrate=1_000_000)
    packets = []
    for i in range(CYCLE * 3):
        img = I420Image.from_stacked(frames[i % CYCLE].to_ndarray().astype(np.uint8, copy=False))
        packets.extend(enc.encode(img, i * 3000))
    dec = Vp8Decoder()
    t0 = time.thread_time()
    for i, p in enumerate(packets):
        dec.decode(JitterFrame(data=bytes(p), timestamp=i * 3000))
    vp8 = (time.thread_time() - t0) / len(packets)
    opus = OpusStreamEncoder(bitrate=48000)
    tone = np.rint(6000 * np.sin(2 * np.pi * 440 * np.arange(960 * 100) / 48000)).astype(np.int16)
    opackets = [p for k in range(100) for p in opus.encode(tone[k * 960 : (k + 1) * 960], k)]
    odec = OpusDecoder()
    t0 = time.thread_time()
    for i, p in enumerate(opackets):
        odec.decode(JitterFrame(data=bytes(p), timestamp=i * 960))
    return vp8, (time.thread_time() - t0) / len(opackets)


def measure_scalers(frames: list[av.VideoFrame]) -> dict[str, float]:
    """Wall ms to scale a 640x480 frame into a 3x3-grid tile (212x158), per algorithm."""
    out: dict[str, float] = {}
    reps = 200
    for name in SCALING_ALGORITHMS:
        t0 = time.perf_counter()
        for i in range(reps):
            swscale_tile(frames[i % CYCLE], 212, 158, scaling=name)
        out[f"swscale {name}"] = 1000 * (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for i in range(reps):
        img = I420Image.from_stacked(frames[i % CYCLE].to_ndarray().astype(np.uint8, copy=False))
        scale_nearest(img, 212, 158)
    out["numpy nearest (incl. frame to ndarray)"] = 1000 * (time.perf_counter() - t0) / reps
    return out


def measure_encoder_threads(frames: list[av.VideoFrame]) -> dict[int, float]:
    """Wall ms per 1280x720 VP8 encode of a 9-tile composite, by libvpx thread count."""
    comp: Compositor[str] = Compositor(
        CompositorConfig(width=1280, height=720), scaler=swscale_tile
    )
    images = [
        comp.compose([Tile(f"p{k}", f"User {k}", frames[(i + 3 * k) % CYCLE]) for k in range(9)])
        .stacked()
        .copy()
        for i in range(CYCLE)
    ]
    out: dict[int, float] = {}
    for threads in (1, 2):
        enc = Vp8StreamEncoder(1280, 720, bitrate=1_500_000, threads=threads)
        t0 = time.perf_counter()
        for i in range(60):
            enc.encode(I420Image.from_stacked(images[i % CYCLE]), i * 3000)
        out[threads] = 1000 * (time.perf_counter() - t0) / 60
    return out


class FlipTrack(MediaStreamTrack):
    """A 320x240 camera at 30 fps that flips between dark and bright every ``period`` s."""

    kind = "video"

    def __init__(self, period: float = 0.5) -> None:
        super().__init__()
        self._frames = [
            av.VideoFrame.from_ndarray(
                np.full((240, 320, 3), v, dtype=np.uint8), format="rgb24"
            ).reformat(format="yuv420p")
            for v in (30, 220)
        ]
        self._period = period
        self._n = 0
        self._start: float | None = None
        self._state = 0
        self.flips: list[float] = []
        """``loop.time()`` at which the first frame of each new state was handed to aiortc."""

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._n / 30 - loop.time()))
        state = int((loop.time() - self._start) / self._period) % 2
        if state != self._state:
            self._state = state
            self.flips.append(loop.time())
        frame = self._frames[state].reformat()
        frame.pts = self._n * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


class StillTrack(MediaStreamTrack):
    """A 320x240 mid-grey camera at 30 fps (the other participants of the latency room)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._frame = av.VideoFrame.from_ndarray(
            np.full((240, 320, 3), 128, dtype=np.uint8), format="rgb24"
        ).reformat(format="yuv420p")
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / 30)
        frame = self._frame.reformat()
        frame.pts = self._n * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


def _flip_delays(flips: list[float], seen: list[tuple[float, bool]]) -> list[float]:
    """For each flip, the delay until the watcher first saw the new state."""
    delays = []
    for i, t in enumerate(flips):
        bright = i % 2 == 0  # the first flip goes dark -> bright
        later = [at for at, b in seen if at >= t and b == bright]
        if later:
            delays.append(later[0] - t)
    return delays


async def _watch(
    track: MediaStreamTrack,
    region: Callable[[int, int], tuple[int, int, int, int]],
    seen: list[tuple[float, bool]],
) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await track.recv()
            if not isinstance(frame, av.VideoFrame):
                continue
            x, y, w, h = region(frame.width, frame.height)
            luma = frame.to_ndarray(format="gray")[y : y + h, x : x + w]
            seen.append((loop.time(), float(luma.mean()) > 125))


async def _pair(a: RTCPeerConnection, b: RTCPeerConnection) -> None:
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)


async def measure_e2e(seconds: float) -> tuple[float, float]:
    """Median glass-to-glass delay (ms) of a brightness flip: direct peer-to-peer vs. via MCU.

    Real aiortc peers on loopback. Direct: the flipping peer sends to the watcher. MCU: four
    participants (one flipping, three still) through the engine at 640x480, 30 fps; the
    watcher looks at the flipping participant's cell in the composite it receives.
    """
    cfg = RTCConfiguration(iceServers=[])
    pcs: list[RTCPeerConnection] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        # direct
        sender, watcher = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
        pcs += [sender, watcher]
        flip = FlipTrack()
        sender.addTrack(flip)
        watcher.addTransceiver("video", direction="recvonly")
        seen: list[tuple[float, bool]] = []
        watcher.on(
            "track",
            lambda t: tasks.append(
                asyncio.create_task(_watch(t, lambda w, h: (w // 4, h // 4, w // 2, h // 2), seen))
            ),
        )
        await _pair(watcher, sender)
        await asyncio.sleep(seconds)
        direct = _flip_delays(flip.flips, seen)[1:]
        for pc in pcs:
            await pc.close()
        pcs.clear()

        # through the MCU
        config = McuConfig(video=CompositorConfig(width=640, height=480, labels=False), fps=30.0)
        async with McuEngine(config) as engine:
            flip = FlipTrack()
            seen = []
            for k in range(4):
                client, server = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
                pcs += [client, server]
                client.addTrack(flip if k == 0 else StillTrack())
                if k == 1:

                    def cell(w: int, h: int) -> tuple[int, int, int, int]:
                        c = engine.cell_of("p0") or (0, 0, w, h)
                        return (c[0] + c[2] // 4, c[1] + c[3] // 4, c[2] // 2, c[3] // 2)

                    client.on(
                        "track",
                        lambda t: (
                            tasks.append(asyncio.create_task(_watch(t, cell, seen)))
                            if t.kind == "video"
                            else None
                        ),
                    )
                await client.setLocalDescription(await client.createOffer())
                engine.attach(f"p{k}", server, offer=client.localDescription)
                await server.setRemoteDescription(client.localDescription)
                await server.setLocalDescription(await server.createAnswer())
                await client.setRemoteDescription(server.localDescription)
            await asyncio.sleep(seconds)
            via_mcu = _flip_delays(flip.flips, seen)[1:]
    finally:
        for pc in pcs:
            await pc.close()
        for task in tasks:
            task.cancel()
    return 1000 * float(np.median(direct)), 1000 * float(np.median(via_mcu))


class BeepTrack(MediaStreamTrack):
    """A microphone that plays a 660 Hz tone for ``period`` s, then silence, and so on."""

    kind = "audio"

    def __init__(self, period: float = 0.5) -> None:
        super().__init__()
        self._period = period
        self._n = 0
        self._start: float | None = None
        self._on = False
        self.onsets: list[float] = []
        """``loop.time()`` at which the first loud frame of each beep was handed to aiortc."""

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._n * 0.02 - loop.time()))
        on = int((loop.time() - self._start) / self._period) % 2 == 1
        if on and not self._on:
            self.onsets.append(loop.time())
        self._on = on
        t = (np.arange(960) + self._n * 960) / 48000
        pcm = np.rint((6000 if on else 0) * np.sin(2 * np.pi * 660 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self._n += 1
        return frame


async def _listen(track: MediaStreamTrack, heard: list[tuple[float, bool]]) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await track.recv()
            if isinstance(frame, av.AudioFrame):
                pcm = frame.to_ndarray().astype(np.float64)
                heard.append((loop.time(), float(np.sqrt(np.mean(pcm * pcm))) > 500))


def _onset_delays(onsets: list[float], heard: list[tuple[float, bool]]) -> list[float]:
    delays = []
    for t in onsets:
        later = [at for at, loud in heard if at >= t and loud]
        if later:
            delays.append(later[0] - t)
    return delays


async def measure_audio_e2e(seconds: float) -> tuple[float, float]:
    """Median delay (ms) from a beep's start handed to the sender to the first loud frame a
    listener decodes: direct peer to peer vs. through the MCU (two participants)."""
    cfg = RTCConfiguration(iceServers=[])
    pcs: list[RTCPeerConnection] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        sender, listener = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
        pcs += [sender, listener]
        beep = BeepTrack()
        sender.addTrack(beep)
        listener.addTransceiver("audio", direction="recvonly")
        heard: list[tuple[float, bool]] = []
        listener.on("track", lambda t: tasks.append(asyncio.create_task(_listen(t, heard))))
        await _pair(listener, sender)
        await asyncio.sleep(seconds)
        direct = _onset_delays(beep.onsets, heard)[1:]
        for pc in pcs:
            await pc.close()
        pcs.clear()

        config = McuConfig(video=CompositorConfig(width=320, height=240, labels=False), fps=15.0)
        async with McuEngine(config) as engine:
            beep = BeepTrack()
            heard = []
            for k in range(2):
                client, server = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
                pcs += [client, server]
                if k == 0:
                    client.addTrack(beep)
                else:
                    client.addTransceiver("audio", direction="recvonly")
                    client.on(
                        "track",
                        lambda t: tasks.append(asyncio.create_task(_listen(t, heard))),
                    )
                await client.setLocalDescription(await client.createOffer())
                engine.attach(f"p{k}", server, offer=client.localDescription)
                await server.setRemoteDescription(client.localDescription)
                await server.setLocalDescription(await server.createAnswer())
                await client.setRemoteDescription(server.localDescription)
            await asyncio.sleep(seconds)
            via_mcu = _onset_delays(beep.onsets, heard)[1:]
    finally:
        for pc in pcs:
            await pc.close()
        for task in tasks:
            task.cancel()
    return 1000 * float(np.median(direct)), 1000 * float(np.median(via_mcu))


def measure_audio_mixing(n: int = 16, ticks: int = 150) -> list[tuple[int, float, float, float]]:
    """CPU per 20 ms tick of mixing + Opus for ``n`` listeners with S speakers.

    Returns (S, shared encodes per tick, shared ms per tick, naive ms per tick): "shared" is
    the engine's scheme (common mix once, one mix-minus per speaker); "naive" encodes one
    mix-minus per listener, every tick.
    """
    out = []
    pcm = [
        np.rint(4000 * np.sin(2 * np.pi * (300 + 50 * k) * np.arange(960 * ticks) / 48000))
        .astype(np.int16)
        .reshape(ticks, 960)
        for k in range(n)
    ]
    silent = np.zeros(960, dtype=np.int16)
    for speakers in (1, 3, n):
        keys = [f"p{k}" for k in range(n)]
        mixer: AudioMixer[str] = AudioMixer()
        common = OpusStreamEncoder(bitrate=48000)
        private: dict[str, OpusStreamEncoder] = {}
        encodes = 0
        t0 = time.thread_time()
        for i in range(ticks):
            frames = {k: (pcm[j][i] if j < speakers else silent) for j, k in enumerate(keys)}
            result = mixer.mix(frames)
            common.encode(result.common, i * 960)
            encodes += 1
            for who, mix in result.mix_minus.items():
                enc = private.get(who) or private.setdefault(who, OpusStreamEncoder(bitrate=48000))
                enc.encode(mix, i * 960)
                encodes += 1
        shared_ms = 1000 * (time.thread_time() - t0) / ticks
        naive_enc = {k: OpusStreamEncoder(bitrate=48000) for k in keys}
        t0 = time.thread_time()
        for i in range(ticks):
            frames = {k: (pcm[j][i] if j < speakers else silent) for j, k in enumerate(keys)}
            total = np.zeros(960, dtype=np.float32)
            for f in frames.values():
                total += f
            for k, f in frames.items():
                mix = np.clip(total - f, -32768, 32767).astype(np.int16)
                naive_enc[k].encode(mix, i * 960)
        naive_ms = 1000 * (time.thread_time() - t0) / ticks
        out.append((speakers, encodes / ticks, shared_ms, naive_ms))
    return out


class PerViewerEngine(McuEngine):
    """Naive baseline: composes once but encodes the composite separately for every viewer."""

    def __init__(self, config: McuConfig) -> None:
        super().__init__(config)
        self._encoders: dict[str, Vp8StreamEncoder] = {}
        self._per_viewer: dict[str, list[EncodedPacket]] = {}
        self.viewer_encodes = 0

    def _compose_and_encode(
        self, tiles: list[Tile[str]], pts: int, keyframe: bool
    ) -> list[EncodedPacket]:
        t0 = time.perf_counter()
        image = self._compositor.compose(tiles)
        t1 = time.perf_counter()
        out: dict[str, list[EncodedPacket]] = {}
        for tile in tiles:
            enc = self._encoders.get(tile.key)
            if enc is None:
                cfg = self.config
                enc = self._encoders[tile.key] = Vp8StreamEncoder(
                    cfg.video.width, cfg.video.height, bitrate=cfg.video_bitrate, fps=cfg.fps
                )
            out[tile.key] = enc.encode(image, pts, keyframe=keyframe)
            self.viewer_encodes += 1
        self._compose_seconds += t1 - t0
        self._encode_seconds += time.perf_counter() - t1
        self._per_viewer = out
        return next(iter(out.values()), [])

    def _distribute_video(self, packets: list[EncodedPacket]) -> None:
        for participant in self.participants:
            for packet in self._per_viewer.get(participant.id, []):
                participant.video_track.push(packet)


@attrs.frozen
class Result:
    mode: str
    participants: int
    out: str
    rtf: float
    cores: float
    cores_with_decode: float
    cpu_ms_per_frame: float
    cores_needed: float
    encode_ms: float
    compose_ms: float
    age_ms: float
    video_encodes_per_frame: float
    audio_encodes_per_tick: float


async def drain(track: Any, packer: Any) -> None:
    with contextlib.suppress(Exception):
        while True:
            packer.pack(await track.recv())


async def run_case(
    mode: str,
    n: int,
    out_size: tuple[int, int],
    seconds: float,
    frames: list[av.VideoFrame],
    decode_costs: tuple[float, float],
) -> Result:
    config = McuConfig(
        video=CompositorConfig(width=out_size[0], height=out_size[1], labels=True),
        fps=30.0,
        video_bitrate=1_500_000 if out_size[0] > 640 else 1_000_000,
    )
    engine = McuEngine(config) if mode == "shared" else PerViewerEngine(config)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    tone = [
        np.rint(4000 * np.sin(2 * np.pi * (300 + 110 * k) * np.arange(960) / 48000)).astype(
            np.int16
        )
        for k in range(n)
    ]

    async def feed_video() -> None:
        start = loop.time()
        i = 0
        while True:
            await asyncio.sleep(max(0.0, start + i / IN_FPS - loop.time()))
            now = loop.time()
            for k in range(n):
                engine.feed_video(f"p{k}", frames[(i + 3 * k) % CYCLE], at=now)
            i += 1

    async def feed_audio() -> None:
        start = loop.time()
        i = 0
        while True:
            await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))
            for k in range(n):
                frame = av.AudioFrame.from_ndarray(
                    tone[k].reshape(1, -1), format="s16", layout="mono"
                )
                frame.sample_rate = 48000
                frame.time_base = fractions.Fraction(1, 48000)
                engine.feed_audio(f"p{k}", frame)
            i += 1

    async with engine:
        for k in range(n):
            p = engine.add_participant(f"p{k}", name=f"User {k}")
            tasks.append(asyncio.create_task(drain(p.video_track, Vp8Encoder())))
            tasks.append(asyncio.create_task(drain(p.audio_track, OpusEncoder())))
        tasks.append(asyncio.create_task(feed_video()))
        tasks.append(asyncio.create_task(feed_audio()))
        await asyncio.sleep(1.0)  # warm up
        s0 = engine.stats()
        vencodes0 = engine.viewer_encodes if isinstance(engine, PerViewerEngine) else 0
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        c1, w1 = time.process_time(), time.perf_counter()
        s1 = engine.stats()
        vencodes1 = engine.viewer_encodes if isinstance(engine, PerViewerEngine) else 0
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    wall = w1 - w0
    frames_out = s1.video_frames_composed - s0.video_frames_composed
    cores = (c1 - c0) / wall
    vp8_dec, opus_dec = decode_costs
    decode_cores = n * (IN_FPS * vp8_dec + 50 * opus_dec)
    encodes = s1.video_encodes - s0.video_encodes if mode == "shared" else vencodes1 - vencodes0
    ticks = s1.audio_ticks - s0.audio_ticks
    audio_encodes = (s1.audio_encodes_common - s0.audio_encodes_common) + (
        s1.audio_encodes_private - s0.audio_encodes_private
    )
    return Result(
        mode=mode,
        participants=n,
        out=f"{out_size[0]}x{out_size[1]}",
        rtf=frames_out / (wall * config.fps),
        cores=cores,
        cores_with_decode=cores + decode_cores,
        cpu_ms_per_frame=1000 * (c1 - c0) / max(frames_out, 1),
        cores_needed=config.fps * (c1 - c0) / max(frames_out, 1) + decode_cores,
        encode_ms=1000 * (s1.encode_seconds - s0.encode_seconds) / max(frames_out, 1),
        compose_ms=1000 * (s1.compose_seconds - s0.compose_seconds) / max(frames_out, 1),
        age_ms=1000 * s1.video_input_age_mean,
        video_encodes_per_frame=encodes / max(frames_out, 1),
        audio_encodes_per_tick=audio_encodes / max(ticks, 1),
    )


def svg_chart(results: list[Result], path: Path) -> None:
    """A small bar chart (no plotting dependency): real-time factor per case and mode."""
    cases = [r for r in results if r.mode == "shared"]
    width, height, left, bottom, top = 720, 300, 60, 50, 20
    plot_h = height - bottom - top
    group_w = (width - left - 20) / max(len(cases), 1)
    bar_w = group_w / 3
    ymax = 1.2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick / ymax)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" '
            f'stroke="{"#c00" if tick == 1.0 else "#ddd"}"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    for i, case in enumerate(cases):
        x0 = left + i * group_w + bar_w / 2
        for j, mode in enumerate(("shared", "per-viewer")):
            match = [
                r
                for r in results
                if r.mode == mode and r.participants == case.participants and r.out == case.out
            ]
            if not match:
                continue
            rtf = min(match[0].rtf, ymax)
            h = plot_h * rtf / ymax
            colour = "#2a7ab0" if mode == "shared" else "#d98c2b"
            parts.append(
                f'<rect x="{x0 + j * bar_w:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{colour}"/>'
            )
        parts.append(
            f'<text x="{x0 + bar_w:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
            f"N={case.participants}</text>"
        )
        parts.append(
            f'<text x="{x0 + bar_w:.1f}" y="{height - bottom + 30}" text-anchor="middle">'
            f"{case.out}</text>"
        )
    parts.append(
        f'<text x="{left}" y="{height - 4}">real-time factor (1.0 = 30 fps out): '
        '<tspan fill="#2a7ab0">■ encode once</tspan>  '
        '<tspan fill="#d98c2b">■ encode per viewer</tspan></text>'
    )
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def rst_table(
    results: list[Result],
    decode_costs: tuple[float, float],
    seconds: float,
    scalers: dict[str, float],
    threads: dict[int, float],
    e2e: tuple[float, float],
    audio_e2e: tuple[float, float],
    repeat: int,
    audio_mixing: list[tuple[int, float, float, float]],
) -> str:
    vp8_dec, opus_dec = decode_costs
    head = (
        "mode",
        "N",
        "output",
        "RTF",
        "cores",
        "cores incl. decode",
        "CPU ms / output frame",
        "cores needed for 30 fps",
        "per participant",
        "VP8 encodes / frame",
        "encode ms / frame",
        "compose ms / frame",
        "added latency ms",
        "Opus encodes / 20 ms",
    )
    rows = [
        (
            "encode once" if r.mode == "shared" else "per viewer",
            str(r.participants),
            r.out,
            f"{r.rtf:.2f}",
            f"{r.cores:.2f}",
            f"{r.cores_with_decode:.2f}",
            f"{r.cpu_ms_per_frame:.1f}",
            f"{r.cores_needed:.2f}",
            f"{100 * r.cores_with_decode / r.participants:.1f} %",
            f"{r.video_encodes_per_frame:.2f}",
            f"{r.encode_ms:.1f}",
            f"{r.compose_ms:.1f}",
            f"{r.age_ms:.0f}",
            f"{r.audio_encodes_per_tick:.1f}",
        )
        for r in results
    ]
    lines = [
        "MCU benchmark results",
        "=====================",
        "",
        "Latest run of ``python benchmarks/mcu.py`` (generated file: do not edit by hand).",
        f"Machine: {platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}, "
        f"PyAV {av.__version__}; {seconds:.0f} s measured per case after 1 s warm-up, "
        f"best of {repeat} runs per case. "
        "Inputs: 640x480 at 30 fps per participant (moving textured pattern), every "
        "participant sending a tone (all speaking); output at 30 fps.",
        "",
        f"Decode cost measured in the same run and added in *cores incl. decode*: VP8 640x480 "
        f"{1000 * vp8_dec:.2f} ms per frame, Opus {1000 * opus_dec:.3f} ms per 20 ms packet "
        "(aiortc's decoders, one thread).",
        "",
        ".. image:: mcu-benchmark.svg",
        "   :alt: real-time factor per case, encode once vs. encode per viewer",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
    ]
    for row in (head, *rows):
        lines.append("   * - " + row[0])
        lines.extend(f"     - {cell}" for cell in row[1:])
    lines.append("")
    lines.append(
        "RTF: composite frames produced per second / 30. cores: process CPU seconds per wall "
        "second (all threads; 2.0 = both cores of this machine). CPU ms / output frame: process "
        "CPU per composite produced (everything: feeding, mixing, composing, encoding, "
        "packetizing for every viewer), the figure least disturbed by other load on the "
        "machine. cores needed for 30 fps: CPU ms / output frame x 30 plus the decode cost, "
        "an estimate of real-time capacity that does not depend on how much CPU other "
        "processes left us (real time on this machine needs it below 2.0). "
        "per participant: cores incl. "
        "decode / N. added latency: mean age of the input pictures when their composite is "
        "handed to the viewers (sampling wait, compose, encode); the network, aiortc's jitter "
        "buffer (+1 frame) and the viewer's decode come on top."
    )
    lines += [
        "",
        "Reading the baseline: encoding per viewer costs about N times the shared encode "
        "while it keeps up; once it falls behind, its figures get worse than N times (many "
        "encoders thrash the caches of this small machine and compete with everything else "
        "for the two cores). Either way the engine's own "
        "video encode cost does not depend on the number of viewers (one VP8 encode per "
        "output frame in every row), and its remaining per-viewer cost is packetizing "
        "(aiortc's ``pack``) plus, in a real deployment, SRTP and ``sendto`` per packet "
        "(about 130 µs per packet per the media-path notes).",
    ]
    lines += [
        "",
        "End to end with real aiortc peers on loopback (median delay from a brightness flip "
        "handed to the sender's track until a receiver decodes a frame showing it): "
        f"direct peer to peer **{e2e[0]:.0f} ms**, through the MCU (4 participants, "
        f"640x480 at 30 fps) **{e2e[1]:.0f} ms**, so the MCU adds about "
        f"**{e2e[1] - e2e[0]:.0f} ms** (its receive jitter buffer and decode, sampling, "
        "compose, encode, a second hop). Audio, the same way with a beep (from the first "
        "loud 20 ms frame handed to the sender until the listener decodes a loud frame): "
        f"direct **{audio_e2e[0]:.0f} ms**, through the MCU **{audio_e2e[1]:.0f} ms** "
        f"(+{audio_e2e[1] - audio_e2e[0]:.0f} ms: a second jitter buffer and Opus "
        "decode/encode, the input buffer and the 20 ms mixing clock).",
        "",
        "Audio for 16 listeners, mixing + Opus CPU per 20 ms tick (one thread, same run): the "
        "engine encodes the common mix once plus one mix-minus per speaker; the naive way "
        "encodes a mix-minus for every listener.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - speakers",
        "     - Opus encodes / tick",
        "     - engine ms / tick",
        "     - one encode per listener, ms / tick",
    ]
    for speakers, enc, shared_ms, naive_ms in audio_mixing:
        lines += [
            f"   * - {speakers}",
            f"     - {enc:.0f}",
            f"     - {shared_ms:.2f}",
            f"     - {naive_ms:.2f}",
        ]
    lines += [
        "",
        "Scaling one 640x480 input into a 212x158 tile (wall ms, same run):",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - scaler",
        "     - ms per tile",
    ]
    for name, ms in scalers.items():
        lines += [f"   * - {name}", f"     - {ms:.3f}"]
    lines += [
        "",
        "libvpx threads, 1280x720 composite of 9 tiles (wall ms per encode, same run): "
        + ", ".join(f"{t} thread(s): {ms:.1f} ms" for t, ms in threads.items())
        + ".",
        "",
        f"Load average (1 min) when the run started: {LOAD_AT_START:.2f}, when it ended: "
        f"{os.getloadavg()[0]:.2f} (other work on the "
        "machine makes these figures noisy; compare rows of the same run).",
        "",
    ]
    return "\n".join(lines)


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per case, 640x480 only")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per case")
    parser.add_argument("--no-write", action="store_true", help="do not write the docs page")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per case; the best one is reported"
    )
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    sizes = [(640, 480)] if args.quick else [(640, 480), (1280, 720)]
    frames = synthetic_frames()
    decode_costs = measure_decode(frames)
    print(
        f"decode: VP8 640x480 {1000 * decode_costs[0]:.2f} ms/frame, "
        f"Opus {1000 * decode_costs[1]:.3f} ms/packet"
    )
    scalers = measure_scalers(frames)
    threads = measure_encoder_threads(frames)
    print("scalers (ms per tile):", {k: round(v, 3) for k, v in scalers.items()})
    print("1280x720 encode ms by libvpx threads:", {k: round(v, 1) for k, v in threads.items()})
    e2e = await measure_e2e(4.0 if args.quick else 8.0)
    print(f"glass-to-glass flip delay, median: direct {e2e[0]:.0f} ms, via MCU {e2e[1]:.0f} ms")
    audio_mixing = measure_audio_mixing()
    for row in audio_mixing:
        print(
            f"audio, 16 listeners, {row[0]} speaking: {row[1]:.0f} Opus encodes/tick, "
            f"{row[2]:.2f} ms/tick shared vs {row[3]:.2f} ms/tick one encode per listener"
        )
    audio_e2e = await measure_audio_e2e(4.0 if args.quick else 8.0)
    print(f"beep onset delay, median: direct {audio_e2e[0]:.0f} ms, via MCU {audio_e2e[1]:.0f} ms")
    results: list[Result] = []
    for size in sizes:
        for n in (4, 9, 16):
            if size[0] > 640 and n == 4:
                continue
            for mode in ("shared", "per-viewer"):
                runs = [
                    await run_case(mode, n, size, seconds, frames, decode_costs)
                    for _ in range(args.repeat)
                ]
                # best of the repeats: other processes on a shared machine only slow us down
                r = max(runs, key=lambda x: (x.rtf, -x.cpu_ms_per_frame))
                results.append(r)
                print(
                    f"{r.mode:>10} N={n:2d} {r.out:>9}: RTF {r.rtf:.2f}, "
                    f"{r.cores:.2f} cores ({r.cores_with_decode:.2f} incl. decode, "
                    f"{r.cpu_ms_per_frame:.1f} CPU ms/frame, "
                    f"{r.cores_needed:.2f} cores needed at 30 fps, "
                    f"{100 * r.cores_with_decode / n:.1f}% per participant), "
                    f"encodes/frame {r.video_encodes_per_frame:.2f}, "
                    f"encode {r.encode_ms:.1f} ms, compose {r.compose_ms:.1f} ms, "
                    f"latency {r.age_ms:.0f} ms, opus/tick {r.audio_encodes_per_tick:.1f}",
                    flush=True,
                )
    for shared in (r for r in results if r.mode == "shared"):
        naive = next(
            r
            for r in results
            if r.mode == "per-viewer"
            and r.participants == shared.participants
            and r.out == shared.out
        )
        print(
            f"N={shared.participants} {shared.out}: per-viewer encoding costs "
            f"{naive.encode_ms / max(shared.encode_ms, 1e-9):.1f}x the shared encode per frame; "
            f"RTF {shared.rtf:.2f} vs {naive.rtf:.2f}"
        )
    if not args.no_write:
        topics = ROOT / "docs" / "topics"
        (topics / "mcu-benchmark.rst").write_text(
            rst_table(
                results,
                decode_costs,
                seconds,
                scalers,
                threads,
                e2e,
                audio_e2e,
                args.repeat,
                audio_mixing,
            )
        )
        svg_chart(results, topics / "mcu-benchmark.svg")
        print(f"wrote {topics / 'mcu-benchmark.rst'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
