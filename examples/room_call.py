"""A video room in any topology: a local signaling server, N Python peers, a page for browsers.

    python examples/room_call.py --topology mesh --peers 3 --seconds 10
    python examples/room_call.py --topology sfu
    python examples/room_call.py --topology mcu

Starts rtckit's signaling server on 127.0.0.1 with the room "demo" declared in the chosen
topology and, for SFU and MCU, the server-side room strategy (the server joins the room as
``rtckit-sfu`` or ``rtckit-mcu``). It serves a small page at the printed URL (open it in
Chromium or Firefox on this machine to join with your camera) and joins N aiortc peers that
each publish a synthetic test pattern and a tone.

The participants' code (``run_peer`` and the page) does not change with the topology: only the
server's room declaration does. Every peer greets each other one on the data channel once its
connection toward them is up, and prints the greetings it gets and how many frames it decoded
from each sender
(everyone else in mesh and SFU rooms; the MCU's composite alone in an MCU room), and the server
prints its counters: packets forwarded without a decoder or encoder (SFU), composites encoded
once for every viewer (MCU).
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
from rtckit.signaling.wsserver import SignalingServer
from rtckit.topology import (
    ParticipantConnectionChanged,
    ParticipantJoined,
    ParticipantLeft,
    RoomDataMessage,
    ServerStrategyFactory,
    Topology,
    TrackPublished,
    join_room,
)
from rtckit.topology.mcu import McuRoomConfig, McuServerStrategy
from rtckit.topology.sfu import SfuServerStrategy, sfu_strategy_factory
from rtckit.topology.strategies import RoomStrategies

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtckit room</title></head>
<body><h1>rtckit room</h1><p id="topology"></p><div id="videos"></div>
<script type="module">
import { connectSignaling, joinRoom } from "/ws/rtckit.js";
const signaling = await connectSignaling(`ws://${location.host}/ws`, { room: "demo" });
const room = joinRoom(signaling);            // mesh, SFU or MCU: the server says which
document.getElementById("topology").textContent = `topology: ${signaling.topology}`;
const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
for (const track of stream.getTracks()) room.publish(track, stream);
room.addEventListener("track", ({ detail }) => {
  const media = document.createElement(detail.kind === "video" ? "video" : "audio");
  media.autoplay = true; media.playsInline = true;
  media.srcObject = new MediaStream([detail.track]);
  document.getElementById("videos").append(media);
});
room.addEventListener("message", ({ detail }) => console.log(detail.participantId, detail.data));
room.send("hello from a browser");
</script></body></html>"""


async def run_peer(url: str, name: str, seconds: float, tone: float) -> None:
    """One participant: the same code whatever the room's topology."""
    async with (
        SignalingClient.connect(url, room="demo", metadata={"name": name}) as client,
        join_room(client) as room,
    ):
        await room.publish(TestPatternTrack(PatternConfig(width=320, height=240, fps=15)))
        await room.publish(ToneTrack(tone))
        frames: Counter[str] = Counter()
        greeted: set[str] = set()
        connected: set[str] = set()  # the ends of our media connections that are up

        def greet() -> None:
            """Say hello to each participant once our connection toward them is up: theirs in
            a mesh; in SFU and MCU rooms our one connection, to the server (no participant)."""
            via_server = any(peer not in room.participants for peer in connected)
            for peer in room.participants:
                if peer not in greeted and (via_server or peer in connected):
                    greeted.add(peer)
                    room.send(f"hello from {name}", to=peer)

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
                    elif isinstance(event, ParticipantConnectionChanged):
                        if event.state == "connected":
                            connected.add(event.participant_id)
                        else:
                            connected.discard(event.participant_id)
                        greet()
                    elif isinstance(event, ParticipantJoined):
                        greet()
                    elif isinstance(event, ParticipantLeft):
                        connected.discard(event.participant_id)
        for task in counters:
            task.cancel()
        await asyncio.gather(*counters, return_exceptions=True)
        print(f"{name} ({room.local_id}, {room.topology}) decoded frames: {dict(frames)}")


def report(strategies: RoomStrategies, forwarded: int) -> None:
    """Print what the server-side strategy of the room did (nothing to say in a mesh)."""
    strategy = strategies.running.get("demo")
    if isinstance(strategy, SfuServerStrategy):
        stats = strategy.stats()
        if stats is not None:
            print(
                f"SFU: {stats.packets_out} packets forwarded (callback saw {forwarded}), "
                f"{stats.decoders_created} decoders, {stats.encoders_created} encoders"
            )
    elif isinstance(strategy, McuServerStrategy) and strategy.engine is not None:
        mcu = strategy.engine.stats()
        print(
            f"MCU: {mcu.participants} participants, {mcu.video_frames_composed} composites, "
            f"{mcu.video_encodes} encodes, {mcu.video_packets_delivered} frames delivered"
        )


async def main(topology: Topology, peers: int, seconds: float, port: int) -> None:
    config = SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="demo", topology=topology)])
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
    print(f"open http://127.0.0.1:{bound}/ to join the {topology} room from a browser")

    forwarded = 0

    def count_forwarded(packets: int) -> None:  # e.g. Metrics.forwarded_packets.inc
        nonlocal forwarded
        forwarded += packets

    mcu = McuRoomConfig(engine=McuConfig(video=CompositorConfig(width=640, height=480), fps=15))
    factories: dict[Topology | str, ServerStrategyFactory] = {
        Topology.SFU: sfu_strategy_factory(on_forwarded=count_forwarded),
        Topology.MCU: lambda hub: McuServerStrategy(hub, config=mcu),
    }
    try:
        async with RoomStrategies(server.hub, factories=factories) as strategies:
            url = f"ws://127.0.0.1:{bound}/ws"
            peers_done = asyncio.gather(
                *(run_peer(url, f"py{i}", seconds, 440.0 + 220 * i) for i in range(peers))
            )
            # the server's counters, read while everyone is still in the room
            await asyncio.sleep(max(seconds - 1, 0))
            report(strategies, forwarded)
            await peers_done
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", choices=[t.value for t in Topology], default="mesh")
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    options = parser.parse_args()
    asyncio.run(main(Topology(options.topology), options.peers, options.seconds, options.port))
