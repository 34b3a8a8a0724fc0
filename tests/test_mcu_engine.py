"""The MCU engine with real aiortc peers on loopback.

Each participant is an aiortc peer connection sending a solid colour and a sine tone; the
engine owns one server-side peer connection per participant (direct in-process offer/answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import importlib.util
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamError

from rtckit.errors import ConfigurationError, TopologyError
from rtckit.mcu.engine import McuConfig, McuEngine, McuParticipant, PacketTrack
from rtckit.mcu.video import CompositorConfig, rgb_to_yuv

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 60, 220),
    "yellow": (230, 220, 30),
}
TONES = {"red": 440.0, "green": 660.0, "blue": 880.0, "yellow": 1100.0}
OUT_W, OUT_H = 320, 240
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mcu_loopback.py"


class ColourTrack(MediaStreamTrack):
    """Synthetic camera: a solid colour at 320x240, 15 fps."""

    kind = "video"

    def __init__(self, rgb: tuple[int, int, int]) -> None:
        super().__init__()
        img = np.zeros((240, 320, 3), dtype=np.uint8)
        img[:] = rgb
        self._frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        target = self._start + self._n / 15
        await asyncio.sleep(max(0.0, target - loop.time()))
        frame = self._frame.reformat()  # a fresh frame object each time
        frame.pts = self._n * 6000
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """Synthetic microphone: a sine tone, 20 ms mono frames at 48 kHz."""

    kind = "audio"

    def __init__(self, freq: float) -> None:
        super().__init__()
        self._freq = freq
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        target = self._start + self._n * 0.02
        await asyncio.sleep(max(0.0, target - loop.time()))
        t = (np.arange(960) + self._n * 960) / 48000
        samples = np.rint(6000 * np.sin(2 * np.pi * self._freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self._n += 1
        return frame


class Client:
    """One participant: sends its colour and tone, records what the MCU sends back."""

    def __init__(self, name: str, *, audio: bool = True) -> None:
        self.name = name
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(ColourTrack(COLOURS[name]))
        if audio:
            self.pc.addTrack(ToneTrack(TONES[name]))
        self.received_kinds: list[str] = []
        self.video_frames = 0
        self.latest: np.ndarray | None = None
        self.audio: list[np.ndarray] = []
        self.recording = False
        self.tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.received_kinds.append(track.kind)
        self.tasks.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.video_frames += 1
                    self.latest = frame.to_ndarray(format="yuv420p")
                elif isinstance(frame, av.AudioFrame) and self.recording:
                    arr = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                    self.audio.append(arr.mean(axis=1))

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def connect(
    engine: McuEngine, client: Client, *, pass_offer: bool = False
) -> RTCPeerConnection:
    """Direct offer/answer between a client and a server-side connection of the engine."""
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    await client.pc.setLocalDescription(await client.pc.createOffer())
    offer = client.pc.localDescription
    engine.attach(client.name, server, name=client.name, offer=offer if pass_offer else None)
    await server.setRemoteDescription(offer)
    await server.setLocalDescription(await server.createAnswer())
    await client.pc.setRemoteDescription(server.localDescription)
    return server


def yuv_at(frame: np.ndarray, cell: tuple[int, int, int, int]) -> tuple[float, float, float]:
    """Mean Y, U, V inside a cell (inset) of a decoded yuv420p stacked frame."""
    x, y, w, h = cell
    x, y, w, h = x + w // 4, y + h // 4, w // 2 // 2 * 2, h // 2 // 2 * 2
    height = frame.shape[0] * 2 // 3
    width = frame.shape[1]
    flat = frame.reshape(-1)
    yp = flat[: width * height].reshape(height, width)
    up = flat[width * height : width * height * 5 // 4].reshape(height // 2, width // 2)
    vp = flat[width * height * 5 // 4 :].reshape(height // 2, width // 2)
    return (
        float(yp[y : y + h, x : x + w].mean()),
        float(up[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2].mean()),
        float(vp[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2].mean()),
    )


def shows_rgb(
    frame: np.ndarray | None, cell: tuple[int, int, int, int] | None, rgb: tuple[int, int, int]
) -> bool:
    """Whether a decoded frame shows colour ``rgb`` in ``cell`` (YUV tolerance for the codec)."""
    if frame is None or cell is None:
        return False
    got = yuv_at(frame, cell)
    want = rgb_to_yuv(*rgb)
    return all(abs(g - w) <= 20 for g, w in zip(got, want, strict=True))


def shows(frame: np.ndarray | None, cell: tuple[int, int, int, int] | None, name: str) -> bool:
    return shows_rgb(frame, cell, COLOURS[name])


def tone_magnitudes(samples: np.ndarray, tones: dict[str, float] | None = None) -> dict[str, float]:
    """FFT magnitude near each tone's frequency (default: the aiortc peers' tones)."""
    windowed = samples * np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(windowed))
    freqs = np.fft.rfftfreq(samples.size, 1 / 48000)
    tones = TONES if tones is None else tones
    return {n: float(spectrum[np.abs(freqs - f) <= 5].max()) for n, f in tones.items()}


async def wait_for(cond: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not cond():  # noqa: ASYNC110 - polling decoded frames, no event to wait on
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def mcu_room(
    names: list[str],
) -> AsyncIterator[tuple[McuEngine, dict[str, Client], dict[str, RTCPeerConnection]]]:
    config = McuConfig(video=CompositorConfig(width=OUT_W, height=OUT_H, labels=False), fps=15.0)
    clients: dict[str, Client] = {}
    servers: dict[str, RTCPeerConnection] = {}
    async with McuEngine(config) as engine:
        try:
            for i, name in enumerate(names):
                clients[name] = Client(name)
                servers[name] = await connect(engine, clients[name], pass_offer=i % 2 == 1)
            yield engine, clients, servers
        finally:
            for client in clients.values():
                await client.close()
            for server in servers.values():
                await server.close()


async def test_four_participants_grid_mix_minus_and_encode_once() -> None:
    names = list(COLOURS)
    async with mcu_room(names) as (engine, clients, _servers):
        # every client sees all four colours in their cells
        def all_grids() -> bool:
            return all(
                shows(c.latest, engine.cell_of(n), n) for c in clients.values() for n in names
            )

        await wait_for(all_grids, "every client to show the 2x2 grid of colours")
        steady = engine.stats()  # every viewer is pulling from here on

        # audio: record one second at every client
        await asyncio.sleep(0.5)
        for c in clients.values():
            c.recording = True
        await wait_for(
            lambda: all(sum(a.size for a in c.audio) >= 48000 for c in clients.values()),
            "one second of audio at every client",
        )
        for c in clients.values():
            c.recording = False
        for name, c in clients.items():
            mags = tone_magnitudes(np.concatenate(c.audio)[-48000:])
            others = [m for n, m in mags.items() if n != name]
            assert min(others) > 0
            assert mags[name] < 0.05 * min(others), (name, mags)

        # exactly one video and one audio stream per participant
        for c in clients.values():
            assert sorted(c.received_kinds) == ["audio", "video"]

        # encode once: one encoder call per composed frame, delivered to four viewers
        stats = engine.stats()
        assert stats.elapsed > 0
        assert stats.participants == 4
        assert stats.viewers == 4
        assert stats.video_encodes == stats.video_frames_composed
        encodes = stats.video_encodes - steady.video_encodes
        delivered = stats.video_packets_delivered - steady.video_packets_delivered
        assert encodes > 10
        # each encoded frame went to the four viewers (a queue flush may drop a few)
        assert delivered <= 4 * encodes
        assert delivered >= 3.5 * encodes
        assert stats.video_frames_decoded > 0
        # audio: the common mix once per tick; everyone speaks, so four mix-minus streams
        assert stats.audio_encodes_common == stats.audio_ticks
        assert stats.audio_encodes_private <= 4 * stats.audio_ticks
        assert stats.audio_encodes_private > 0


async def test_join_and_leave_change_the_layout_and_the_stream_continues() -> None:
    async with mcu_room(["red", "green"]) as (engine, clients, servers):
        red = clients["red"]
        await wait_for(
            lambda: (
                shows(red.latest, engine.cell_of("green"), "green")
                and shows(red.latest, engine.cell_of("red"), "red")
            ),
            "the two-tile layout",
        )
        two_tile = engine.cell_of("green")
        layouts = engine.stats().layout_changes

        # join: blue appears in the three-tile layout, at red's end and at blue's end
        clients["blue"] = Client("blue")
        servers["blue"] = await connect(engine, clients["blue"])
        blue = clients["blue"]

        def three_tiles(c: Client) -> bool:
            return all(shows(c.latest, engine.cell_of(n), n) for n in ("red", "green", "blue"))

        await wait_for(lambda: three_tiles(red) and three_tiles(blue), "the three-tile layout")
        assert engine.cell_of("green") != two_tile
        assert engine.stats().layout_changes > layouts

        # leave: green goes, the grid goes back to two tiles, red's stream keeps flowing
        await engine.remove_participant("green")
        before = red.video_frames
        await wait_for(
            lambda: (
                shows(red.latest, engine.cell_of("blue"), "blue")
                and engine.cell_of("green") is None
                and red.video_frames > before + 10
            ),
            "the layout without green and frames still arriving",
        )
        assert engine.cell_of("blue") == two_tile
        assert engine.stats().participants == 2


async def test_participant_without_audio_gets_video_only() -> None:
    async with mcu_room(["red"]) as (engine, clients, servers):
        clients["green"] = Client("green", audio=False)
        servers["green"] = await connect(engine, clients["green"], pass_offer=True)
        green = clients["green"]
        await wait_for(
            lambda: (
                shows(green.latest, engine.cell_of("red"), "red")
                and shows(green.latest, engine.cell_of("green"), "green")
            ),
            "the video-only participant to see both tiles",
        )
        assert green.received_kinds == ["video"]
        participant = next(p for p in engine.participants if p.id == "green")
        assert participant.audio_track.readyState == "ended"
        assert participant.video_track.readyState == "live"
        assert engine.stats().viewers == 2


async def test_vanished_peer_becomes_placeholder_and_others_continue() -> None:
    """A participant whose connection dies without leaving: never stalls the others."""
    async with mcu_room(["red", "green", "blue"]) as (engine, clients, servers):
        red = clients["red"]

        def everyone() -> bool:
            return all(shows(red.latest, engine.cell_of(n), n) for n in ("red", "green", "blue"))

        await wait_for(everyone, "the three-tile layout")
        await clients["blue"].pc.close()  # no remove_participant: the peer just vanishes
        before = red.video_frames
        await wait_for(
            lambda: (
                not shows(red.latest, engine.cell_of("blue"), "blue")
                and shows(red.latest, engine.cell_of("green"), "green")
                and red.video_frames > before + 15
            ),
            "a placeholder for blue while red's stream keeps flowing",
        )
        assert engine.cell_of("blue") is not None  # still in the grid until it is removed
        # the server side of the dead connection ended blue's outgoing tracks
        await servers["blue"].close()
        blue = next(p for p in engine.participants if p.id == "blue")
        await wait_for(lambda: blue.video_track.readyState == "ended", "blue's track to end")
        assert engine.stats().viewers == 2


async def test_stopped_sender_gets_placeholder() -> None:
    config = McuConfig(
        video=CompositorConfig(width=OUT_W, height=OUT_H, labels=False),
        fps=15.0,
        stale_after=0.3,
    )
    async with McuEngine(config) as engine:
        viewer = engine.add_participant("v", name="Viewer")
        ghost = engine.add_participant("g", name="Ghost")
        frame = av.VideoFrame.from_ndarray(
            np.full((240, 320, 3), COLOURS["red"], dtype=np.uint8), format="rgb24"
        ).reformat(format="yuv420p")
        loop = asyncio.get_running_loop()
        engine.feed_video("g", frame, at=loop.time())
        async with asyncio.timeout(10):
            packets: list[av.Packet[Any]] = []
            while len(packets) < 15:
                packets.append(await viewer.video_track.recv())
        assert packets[0].is_keyframe
        decoder = av.CodecContext.create("libvpx", "r")
        decoded = [f for p in packets for f in decoder.decode(p)]
        cell = engine.cell_of("g")
        assert cell is not None
        first = decoded[0].to_ndarray()
        last = decoded[-1].to_ndarray()
        assert shows(first, cell, "red")  # fresh frame shown
        assert not shows(last, cell, "red")  # 1 s later: stale, placeholder
        assert ghost.video_track.readyState == "live"
    assert ghost.video_track.readyState == "ended"


async def test_engine_api_errors_and_idempotent_close() -> None:
    engine = McuEngine(McuConfig(max_participants=2))
    async with engine:
        engine.add_participant("a")
        with pytest.raises(TopologyError):
            engine.add_participant("a")
        engine.add_participant("b")
        with pytest.raises(TopologyError):
            engine.add_participant("c")
        with pytest.raises(TopologyError):
            engine.add_input("zzz", ColourTrack((1, 2, 3)))
        engine.add_input("a", ColourTrack((1, 2, 3)))
        await engine.remove_participant("b")
        await engine.remove_participant("b")
        assert any(t.get_name().startswith("rtckit-mcu") for t in asyncio.all_tasks())
        closed = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await closed.close()
        with pytest.raises(InvalidStateError):
            engine.attach("late", closed)
        assert "late" not in [p.id for p in engine.participants]
    await engine.aclose()
    # nothing left running: no task, no worker thread
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("rtckit-mcu")]
    assert not [t for t in threading.enumerate() if t.name.startswith("rtckit-mcu")]
    with pytest.raises(TopologyError):
        engine.add_participant(f"late-{uuid.uuid4().hex[:6]}")
    with pytest.raises(ConfigurationError):
        McuConfig(fps=0)
    with pytest.raises(ConfigurationError):
        McuConfig(max_participants=17)


async def test_packet_track_waits_for_keyframe_and_ends() -> None:
    starts: list[int] = []
    track = PacketTrack("video", max_queue=2, on_start=lambda: starts.append(1))
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 64, 48, "yuv420p"
    enc.time_base = fractions.Fraction(1, 90000)
    packets = []
    still = np.full((48, 64, 3), 90, dtype=np.uint8)
    for i in range(4):
        f = av.VideoFrame.from_ndarray(still, format="rgb24").reformat(format="yuv420p")
        f.pts = i * 3000
        packets.extend(enc.encode(f))
    key, deltas = packets[0], packets[1:]
    assert key.is_keyframe
    assert not any(d.is_keyframe for d in deltas)
    assert not track.push(key)  # nobody pulls yet: nothing is queued
    first = asyncio.create_task(track.recv())
    await asyncio.sleep(0)
    assert track.started
    assert starts == [1]
    assert not track.push(deltas[0])  # nothing before a keyframe
    assert track.push(key)
    async with asyncio.timeout(5):
        assert await first is key
    assert track.push(deltas[0])
    assert track.push(deltas[1])
    assert not track.push(deltas[2])  # queue full: flushed, waits for the next keyframe
    assert track.waiting_for_keyframe
    track.stop()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert starts == [1]
    with pytest.raises(ConfigurationError):
        PacketTrack("data")


async def test_howto_example_runs() -> None:
    """The program shown in the how-to works (three peers, frames arrive, encode once)."""
    spec = importlib.util.spec_from_file_location(f"mcu_loopback_{uuid.uuid4().hex}", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    async with asyncio.timeout(60):
        frames, stats = await module.main(seconds=2.0)
    assert frames > 5
    assert stats.participants == 3
    assert stats.video_encodes == stats.video_frames_composed


async def test_viewers_share_packets_and_only_speakers_get_their_own_audio() -> None:
    """Encode once at the object level: non-speakers and every viewer get the same packets."""
    config = McuConfig(video=CompositorConfig(width=OUT_W, height=OUT_H), fps=15.0)
    async with McuEngine(config) as engine:
        people = [engine.add_participant(n) for n in ("a", "b", "c")]
        got_video: dict[str, list[object]] = {p.id: [] for p in people}
        got_audio: dict[str, list[tuple[int, object]]] = {p.id: [] for p in people}

        async def pull(p: McuParticipant) -> None:
            async def video() -> None:
                while True:
                    got_video[p.id].append(await p.video_track.recv())

            async def audio() -> None:
                while True:
                    packet = await p.audio_track.recv()
                    assert packet.pts is not None
                    got_audio[p.id].append((packet.pts, packet))

            with contextlib.suppress(MediaStreamError):
                await asyncio.gather(video(), audio())

        pullers = [asyncio.create_task(pull(p)) for p in people]
        frame = av.VideoFrame.from_ndarray(
            np.full((240, 320, 3), COLOURS["blue"], dtype=np.uint8), format="rgb24"
        ).reformat(format="yuv420p")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(20):
                for i in range(60):  # 1.2 s: "a" talks, "b" and "c" are silent
                    t = (np.arange(960) + i * 960) / 48000
                    tone = np.rint(6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
                    for p, pcm in zip(people, (tone, tone * 0, tone * 0), strict=True):
                        af = av.AudioFrame.from_ndarray(
                            pcm.reshape(1, -1), format="s16", layout="mono"
                        )
                        af.sample_rate = 48000
                        engine.feed_audio(p.id, af)
                        engine.feed_video(p.id, frame, at=loop.time())
                    await asyncio.sleep(0.02)
                while min(len(v) for v in got_video.values()) < 5:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            await engine.aclose()
            for task in pullers:
                task.cancel()
            await asyncio.gather(*pullers, return_exceptions=True)

        stats = engine.stats()
        # video: one encode per frame, and the viewers got the very same packet objects
        assert stats.video_encodes == stats.video_frames_composed
        last = min(len(v) for v in got_video.values())
        tails = [v[-last:] for v in got_video.values()]
        assert all(x is y for x, y in zip(tails[0], tails[1], strict=True))
        assert all(x is y for x, y in zip(tails[0], tails[2], strict=True))
        # audio: only the speaker has a private stream; b and c share the common packets
        assert 0 < stats.audio_encodes_private <= stats.audio_ticks
        b = dict(got_audio["b"])
        c = dict(got_audio["c"])
        a = dict(got_audio["a"])
        common_pts = sorted(set(a) & set(b) & set(c))
        assert len(common_pts) > 20
        assert all(b[pts] is c[pts] for pts in common_pts)
        assert sum(a[pts] is not b[pts] for pts in common_pts) > 20


async def test_audio_input_of_any_rate_and_layout_is_resampled() -> None:
    async with McuEngine() as engine:
        p = engine.add_participant("a")
        t = np.arange(320) / 16000
        pcm16k = np.rint(4000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        stereo = np.repeat(pcm16k, 2).reshape(1, -1)  # packed s16 stereo, 20 ms at 16 kHz
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 16000
        for _ in range(5):
            engine.feed_audio("a", frame)
        mono48 = av.AudioFrame.from_ndarray(
            np.zeros((1, 960), dtype=np.int16), format="s16", layout="mono"
        )
        mono48.sample_rate = 48000
        engine.feed_audio("a", mono48)  # rate and layout change mid-stream
        stats = engine.stats()
        assert stats.audio_frames_decoded == 6
        assert stats.input_errors == 0
        got = p.audio.pop_frame()
        assert got is not None
        assert got.dtype == np.int16
        assert got.shape == (960,)
        assert np.abs(got).max() > 1000  # the 16 kHz tone, upsampled
