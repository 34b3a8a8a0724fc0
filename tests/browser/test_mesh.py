"""Two headless Chromium pages and two aiortc peers in one mesh room over real WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiortc import MediaStreamTrack

from rtckit.peer import SessionConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig
from rtckit.signaling.wsserver import SignalingServer
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.topology import TrackPublished, join_room
from rtckit.topology.mesh import MeshRoom

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtckit mesh</title></head>
<body><script type="module">
import * as rtc from "/ws/rtckit.js";
window.rtc = rtc;
window.ready = true;
</script></body></html>"""

JOIN = """async (url) => {
  const sig = await window.rtc.connectSignaling(url, {room: "mesh"});
  const room = window.rtc.joinRoom(sig);
  window.room = room;
  window.messages = [];
  room.addEventListener("message", ({detail}) => window.messages.push(detail));
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  room.publish(stream.getVideoTracks()[0], stream);
  return sig.peerId;
}"""

FRAMES = """async () => {
  const out = {};
  for (const [peerId, session] of window.room.sessions) {
    const stats = await session.stats();
    out[peerId] = stats.framesDecoded;
  }
  return out;
}"""


@contextlib.asynccontextmanager
async def site() -> AsyncIterator[tuple[str, str]]:
    server = SignalingServer(
        SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="mesh", topology="mesh")])
    )
    app = web.Application()
    server.add_routes(app, "/ws")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


async def test_two_pages_and_two_aiortc_peers_decode_each_other() -> None:
    require_executable("chromium", hint="apt-get install chromium")
    config = SessionConfig()
    small = PatternConfig(width=320, height=240, fps=15)
    async with (
        asyncio.timeout(100),
        site() as (http_url, ws_url),
        contextlib.AsyncExitStack() as stack,
    ):
        py_rooms: list[MeshRoom] = []
        py_events: list[list[TrackPublished]] = []
        for _ in range(2):
            client = await stack.enter_async_context(SignalingClient.connect(ws_url, room="mesh"))
            room = await stack.enter_async_context(join_room(client, session_config=config))
            assert isinstance(room, MeshRoom)
            await room.publish(TestPatternTrack(small))
            py_rooms.append(room)
            published: list[TrackPublished] = []
            py_events.append(published)

            async def collect(room: MeshRoom = room, into: list[Any] = published) -> None:
                async for event in room.events():  # appended as they come, not at the end
                    if isinstance(event, TrackPublished):
                        into.append(event)  # noqa: PERF401

            task = asyncio.create_task(collect())
            stack.callback(task.cancel)
        browser = await stack.enter_async_context(launch_chromium(fps=15))
        pages = []
        page_ids = []
        started = time.monotonic()
        for _ in range(2):
            page = await browser.new_page()
            page.on("console", lambda msg: print("page:", msg.text))
            await page.goto(http_url)
            await page.wait_for_function("window.ready === true")
            page_ids.append(await page.evaluate(JOIN, ws_url))
            pages.append(page)
        everyone = {room.local_id for room in py_rooms} | set(page_ids)
        assert len(everyone) == 4
        # every page decodes video from each of the three other peers
        for page, page_id in zip(pages, page_ids, strict=True):
            others = everyone - {page_id}
            decoded: dict[str, int] = {}
            while set(decoded) != others or min(decoded.values()) == 0:
                await asyncio.sleep(0.25)
                decoded = await page.evaluate(FRAMES)
            assert all(count > 0 for count in decoded.values())
        print(
            f"4-peer mesh (2 Chromium + 2 aiortc) all decoding after "
            f"{time.monotonic() - started:.2f} s"
        )
        # every aiortc peer decodes video from each of the three others
        for room, published in zip(py_rooms, py_events, strict=True):
            while {e.participant_id for e in published} != everyone - {room.local_id}:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            for participant in everyone - {room.local_id}:
                # a participant's latest track (an earlier one may have been replaced)
                latest = [e for e in published if e.participant_id == participant][-1]
                async with asyncio.timeout(20):
                    frame = await latest.track.recv()
                assert frame.width > 0
        # data messages from Python reach the pages
        py_rooms[0].send("hello pages")
        for page in pages:
            await page.wait_for_function(
                "window.messages.some(m => m.data === 'hello pages')", timeout=10000
            )
        # leave in order: Python rooms first (pages still up), then the pages
        for room in py_rooms:
            await room.aclose()
        for page in pages:
            await page.evaluate("window.room.close()")


GENERATION = """() => {
  const [session] = window.room.sessions.values();
  return session ? [session.generation, session.state] : null;
}"""


async def test_replacement_both_ways_between_a_page_and_aiortc() -> None:
    """aiortc replaces its connection, the page follows; then the page does, aiortc follows."""
    require_executable("chromium", hint="apt-get install chromium")
    async with (
        asyncio.timeout(90),
        site() as (http_url, ws_url),
        contextlib.AsyncExitStack() as stack,
    ):
        client = await stack.enter_async_context(SignalingClient.connect(ws_url, room="mesh"))
        room = await stack.enter_async_context(join_room(client, session_config=SessionConfig()))
        assert isinstance(room, MeshRoom)
        await room.publish(TestPatternTrack(PatternConfig(width=320, height=240, fps=15)))
        browser = await stack.enter_async_context(launch_chromium(fps=15))
        page = await browser.new_page()
        await page.goto(http_url)
        await page.wait_for_function("window.ready === true")
        page_id = await page.evaluate(JOIN, ws_url)

        async def page_decoding(after: int) -> int:
            """Wait until the page is connected in a generation later than *after* and
            decodes the aiortc peer's video; return that generation."""
            while True:
                state = await page.evaluate(GENERATION)
                frames = await page.evaluate(FRAMES)
                if (
                    state is not None
                    and state[0] > after
                    and state[1] == "connected"
                    and frames.get(room.local_id, 0) > 0
                ):
                    return int(state[0])
                await asyncio.sleep(0.2)

        # Generation 0, or a later one: a first connection that failed is replaced by
        # itself (seen on the loaded machine: aioice gave up on the first connection at once,
        # "no candidate pairs"); what is tested here is what follows a requested replacement.
        first = await page_decoding(-1)
        session = room.sessions[page_id]
        # 1. the aiortc side replaces its connection: the page follows to a new generation
        started = time.monotonic()
        await session.restart()
        second = await page_decoding(first)
        print(
            f"aiortc-initiated replacement: page decoding again after "
            f"{time.monotonic() - started:.2f} s (generation {first} -> {second})"
        )
        # 2. the page replaces its connection: the aiortc side follows to a new generation
        started = time.monotonic()
        await page.evaluate("() => { const [s] = window.room.sessions.values(); s.restart(); }")
        third = await page_decoding(second)
        while session.generation < third or session.state != "connected":  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        print(
            f"page-initiated replacement: decoding again after {time.monotonic() - started:.2f} s"
            f" (generation {second} -> {third})"
        )
        await room.aclose()
        await page.evaluate("window.room.close()")


class SilentTrack(MediaStreamTrack):
    """A video track that never produces a frame: negotiation only."""

    kind = "video"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


ADD_CANVAS_TRACK = """() => {
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 48;
  const [session] = window.room.sessions.values();
  session.addTrack(canvas.captureStream(1).getVideoTracks()[0]);
}"""

REMOTE_TRACKS = "() => [...window.room.sessions.values()][0].remoteTracks.size"


async def test_glare_between_a_page_and_aiortc() -> None:
    """Both sides add a track at the same moment, five times; the call survives."""
    require_executable("chromium", hint="apt-get install chromium")
    async with (
        asyncio.timeout(90),
        site() as (http_url, ws_url),
        contextlib.AsyncExitStack() as stack,
    ):
        client = await stack.enter_async_context(SignalingClient.connect(ws_url, room="mesh"))
        room = await stack.enter_async_context(join_room(client, session_config=SessionConfig()))
        assert isinstance(room, MeshRoom)
        await room.publish(TestPatternTrack(PatternConfig(width=320, height=240, fps=15)))
        browser = await stack.enter_async_context(launch_chromium(fps=15))
        page = await browser.new_page()
        await page.goto(http_url)
        await page.wait_for_function("window.ready === true")
        page_id = await page.evaluate(JOIN, ws_url)
        while page_id not in room.sessions or room.sessions[page_id].state != "connected":  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        session = room.sessions[page_id]
        while await page.evaluate(REMOTE_TRACKS) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        rounds = 5
        for i in range(1, rounds + 1):
            session.add_track(SilentTrack())
            await page.evaluate(ADD_CANVAS_TRACK)
            # the page sees our published track plus i silent ones; we see its camera + i
            while await page.evaluate(REMOTE_TRACKS) < 1 + i:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            while len(session.remote_tracks) < 1 + i:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert session.generation == 0  # glare never needed a replacement
        before = (await page.evaluate(FRAMES))[room.local_id]
        while (await page.evaluate(FRAMES))[room.local_id] <= before:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        room.send("after glare")
        await page.wait_for_function(
            "window.messages.some(m => m.data === 'after glare')", timeout=10000
        )
        await room.aclose()
        await page.evaluate("window.room.close()")
