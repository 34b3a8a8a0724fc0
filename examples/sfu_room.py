"""An SFU video call: a signaling server with an SFU, N Python peers, and a page for browsers.

    python examples/sfu_room.py --peers 3 --seconds 10

Starts rtckit's signaling server on 127.0.0.1 (room "demo", topology sfu) with the SFU room
strategy (the server joins the room and forwards media without decoding it), serves a small
page at the printed URL (open it in Chromium/Firefox on this machine to join with your camera),
and joins N aiortc peers that each publish a synthetic test pattern. Every peer prints how
many frames it decoded from each other participant; the server prints its counters.

The participants' code (``run_peer`` and the page) is exactly the one of
``examples/mesh_call.py``: only the room's topology on the server differs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import Counter

from aiohttp import web

from rtckit.peer.media import PatternConfig, TestPatternTrack
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig
from rtckit.signaling.server import SignalingServer
from rtckit.topology import RoomDataMessage, TrackPublished, join_room
from rtckit.topology.server import RoomStrategies
from rtckit.topology.sfu import SfuServerStrategy, sfu_strategy_factory

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtckit sfu</title></head>
<body><h1>rtckit SFU call</h1><div id="videos"></div>
<script type="module">
import { connectSignaling, joinRoom } from "/ws/rtckit.js";
const signaling = await connectSignaling(`ws://${location.host}/ws`, { room: "demo" });
const room = joinRoom(signaling);            // sfu, because the server says so
const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
for (const track of stream.getTracks()) room.publish(track, stream);
room.addEventListener("track", ({ detail }) => {
  if (detail.kind !== "video") return;
  const video = document.createElement("video");
  video.autoplay = true; video.muted = true; video.playsInline = true;
  video.srcObject = new MediaStream([detail.track]);
  document.getElementById("videos").append(video);
});
room.addEventListener("message", ({ detail }) => console.log(detail.participantId, detail.data));
room.send("hello from a browser");
</script></body></html>"""


async def run_peer(url: str, name: str, seconds: float) -> None:
    async with (
        SignalingClient.connect(url, room="demo", metadata={"name": name}) as client,
        join_room(client) as room,
    ):
        await room.publish(TestPatternTrack(PatternConfig(width=320, height=240, fps=15)))
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
    config = SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="demo", topology="sfu")])
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
    forwarded = 0

    def count_forwarded(packets: int) -> None:  # e.g. Metrics.forwarded_packets.inc
        nonlocal forwarded
        forwarded += packets

    factory = sfu_strategy_factory(on_forwarded=count_forwarded)
    try:
        async with RoomStrategies(server.hub, factories={"sfu": factory}) as strategies:
            url = f"ws://127.0.0.1:{bound}/ws"
            await asyncio.gather(*(run_peer(url, f"py{i}", seconds) for i in range(peers)))
            sfu = strategies.running["demo"]
            assert isinstance(sfu, SfuServerStrategy)
            stats = sfu.stats()
            if stats is not None:
                print(
                    f"server: {stats.packets_out} packets forwarded "
                    f"(callback saw {forwarded} so far), {stats.decoders_created} decoders, "
                    f"{stats.encoders_created} encoders"
                )
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    options = parser.parse_args()
    asyncio.run(main(options.peers, options.seconds, options.port))
