"""An MCU room: a local signaling server with the MCU, N Python peers, and a page for browsers.

    python examples/mcu_room.py --peers 3 --seconds 10

Starts rtckit's signaling server on 127.0.0.1 with the room "demo" declared as ``mcu`` and the
server-side room strategies running (the MCU joins the room as ``rtckit-mcu``), serves a small
page at the printed URL (open it in Chromium/Firefox on this machine to join with your camera),
and joins N aiortc peers that each publish a test pattern and a tone. The peers' code is the
mesh example's: only the room's declared topology differs. Every peer prints how many frames
it decoded from each sender (one sender here: the MCU's composite) and the MCU prints that it
encoded each composite frame once for all viewers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import Counter

from aiohttp import web

from rtckit.mcu.engine import McuConfig
from rtckit.mcu.video import CompositorConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack, ToneTrack
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig
from rtckit.signaling.server import SignalingServer
from rtckit.topology import RoomDataMessage, Topology, TrackPublished, join_room
from rtckit.topology.mcu import McuRoomConfig, McuServerStrategy
from rtckit.topology.server import RoomStrategies

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtckit mcu</title></head>
<body><h1>rtckit MCU room</h1><div id="videos"></div><pre id="layout"></pre>
<script type="module">
import { connectSignaling, joinRoom } from "/ws/rtckit.js";
const signaling = await connectSignaling(`ws://${location.host}/ws`, { room: "demo" });
const room = joinRoom(signaling);            // an McuRoom, because the server says so
const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
for (const track of stream.getTracks()) room.publish(track, stream);
room.addEventListener("track", ({ detail }) => {   // one video (the grid), one audio (the mix)
  const media = document.createElement(detail.kind === "video" ? "video" : "audio");
  media.autoplay = true; media.playsInline = true;
  media.srcObject = new MediaStream([detail.track]);
  document.getElementById("videos").append(media);
});
room.addEventListener("layout", ({ detail }) => {
  document.getElementById("layout").textContent = detail.layout.join(" | ");
});
room.addEventListener("message", ({ detail }) => console.log(detail.participantId, detail.data));
room.send("hello from a browser");
</script></body></html>"""


async def run_peer(url: str, name: str, seconds: float, tone: float) -> None:
    async with (
        SignalingClient.connect(url, room="demo", metadata={"name": name}) as client,
        join_room(client) as room,
    ):
        await room.publish(TestPatternTrack(PatternConfig(width=320, height=240, fps=15)))
        await room.publish(ToneTrack(tone))
        room.send(f"hello from {name}")
        frames: Counter[str] = Counter()

        async def count(event: TrackPublished) -> None:
            with contextlib.suppress(Exception):
                while True:
                    await event.track.recv()
                    frames[event.participant_id] += 1

        counters: list[asyncio.Task[None]] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for event in room.events():
                    if isinstance(event, TrackPublished) and event.kind == "video":
                        counters.append(asyncio.create_task(count(event)))
                    elif isinstance(event, RoomDataMessage):
                        print(f"{name} <- {event.participant_id}: {event.data!r}")
        for task in counters:
            task.cancel()
        await asyncio.gather(*counters, return_exceptions=True)
        print(f"{name} ({room.local_id}) decoded frames: {dict(frames)}")


async def main(peers: int, seconds: float, port: int) -> None:
    config = SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="demo", topology="mcu")])
    server = SignalingServer(config)
    app = web.Application()
    server.add_routes(app, "/ws")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    bound = runner.addresses[0][1]
    print(f"open http://127.0.0.1:{bound}/ to join from a browser")
    mcu = McuRoomConfig(engine=McuConfig(video=CompositorConfig(width=640, height=480), fps=15))
    try:
        async with RoomStrategies(
            server.hub, factories={Topology.MCU: lambda hub: McuServerStrategy(hub, config=mcu)}
        ) as strategies:
            url = f"ws://127.0.0.1:{bound}/ws"
            reporter = asyncio.create_task(report(strategies, seconds - 1))
            await asyncio.gather(
                *(run_peer(url, f"py{i}", seconds, 440.0 + 220 * i) for i in range(peers))
            )
            await reporter
    finally:
        await runner.cleanup()


async def report(strategies: RoomStrategies, after: float) -> None:
    """Print the MCU's counters shortly before the peers leave."""
    await asyncio.sleep(after)
    strategy = strategies.running.get("demo")
    engine = strategy.engine if isinstance(strategy, McuServerStrategy) else None
    if engine is not None:
        stats = engine.stats()
        print(
            f"MCU: {stats.participants} participants, {stats.video_frames_composed} composites,"
            f" {stats.video_encodes} encodes, {stats.video_packets_delivered} frames delivered"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    options = parser.parse_args()
    asyncio.run(main(options.peers, options.seconds, options.port))
