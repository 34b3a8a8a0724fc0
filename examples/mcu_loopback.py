"""Three aiortc peers in an MCU on loopback: each sends a colour and a tone, each gets the grid.

Run: ``python examples/mcu_loopback.py`` (needs the ``media`` extra). Prints how many
composite frames the first participant received and the engine's stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import sys
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from rtckit.mcu.engine import McuConfig, McuEngine, McuStats
from rtckit.mcu.video import CompositorConfig

PEOPLE = {
    "Ada": ((200, 40, 40), 440.0),
    "Bob": ((40, 160, 60), 660.0),
    "Cy": ((40, 60, 200), 880.0),
}


class Colour(MediaStreamTrack):
    """A solid-colour 320x240 camera at 15 fps."""

    kind = "video"

    def __init__(self, rgb: tuple[int, int, int]) -> None:
        super().__init__()
        img = np.full((240, 320, 3), rgb, dtype=np.uint8)
        self._frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / 15)
        frame = self._frame.reformat()
        frame.pts, frame.time_base = self._n * 6000, fractions.Fraction(1, 90000)
        self._n += 1
        return frame


class Tone(MediaStreamTrack):
    """A sine tone microphone, 20 ms frames."""

    kind = "audio"

    def __init__(self, freq: float) -> None:
        super().__init__()
        self._freq, self._n = freq, 0

    async def recv(self) -> av.AudioFrame:
        await asyncio.sleep(0.02)
        t = (np.arange(960) + self._n * 960) / 48000
        pcm = np.rint(5000 * np.sin(2 * np.pi * self._freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, self._n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self._n += 1
        return frame


async def main(seconds: float = 3.0) -> tuple[int, McuStats]:
    config = McuConfig(video=CompositorConfig(width=640, height=480), fps=15)
    pcs: list[RTCPeerConnection] = []
    readers: list[asyncio.Task[None]] = []
    received = [0]

    async def count_frames(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                if isinstance(await track.recv(), av.VideoFrame):
                    received[0] += 1

    async with McuEngine(config) as engine:
        try:
            for i, (name, (rgb, freq)) in enumerate(PEOPLE.items()):
                client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs += [client, server]
                client.addTrack(Colour(rgb))
                client.addTrack(Tone(freq))
                if i == 0:  # watch what the first participant receives
                    client.on(
                        "track", lambda t: readers.append(asyncio.create_task(count_frames(t)))
                    )
                await client.setLocalDescription(await client.createOffer())
                offer = client.localDescription
                engine.attach(name, server, name=name, offer=offer)  # before the answer
                await server.setRemoteDescription(offer)
                await server.setLocalDescription(await server.createAnswer())
                await client.setRemoteDescription(server.localDescription)
            await asyncio.sleep(seconds)
            stats = engine.stats()
        finally:
            for pc in pcs:
                await pc.close()
            for task in readers:
                task.cancel()
    return received[0], stats


if __name__ == "__main__":
    frames, stats = asyncio.run(main())
    print(f"the first participant received {frames} composite frames")
    print(stats)
