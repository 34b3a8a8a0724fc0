"""Chromium pages and an aiortc participant in an SFU room, through rtckit.js and join_room.

One Chromium page publishes its fake camera (VP8, and again H264), two Chromium pages and one
aiortc participant (which publishes a test pattern) subscribe through the room API; every
subscriber decodes; the server decoded and encoded nothing. Then a page joins mid-stream and
the time to its first decoded frame of the publisher is measured (bounded at 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from rtckit.peer import SessionConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig
from rtckit.signaling.wsserver import SignalingServer
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.topology import TrackPublished, join_room
from rtckit.topology.sfu import SfuRoom, SfuServerStrategy
from rtckit.topology.strategies import RoomStrategies

# The icon link: without it Chromium asks for /favicon.ico (a 404 in the page console).
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtckit sfu</title>
<link rel="icon" href="data:,"></head>
<body><script type="module">
import * as rtc from "/ws/rtckit.js";
// Test-only: make this page publish its video with one codec (?codec=video/h264).
// setCodecPreferences orders only this page's own list; Chromium SENDS the first codec of the
// remote description's list. An SFU room sends each local track on a transceiver of its own
// (addTransceiver, never reused by a remote offer's m-line): this page offers its m-line, in
// its order, and the SFU answers in that order.
const codec = new URLSearchParams(location.search).get("codec");
if (codec) {
  const addTransceiver = RTCPeerConnection.prototype.addTransceiver;
  RTCPeerConnection.prototype.addTransceiver = function (trackOrKind, init) {
    const transceiver = addTransceiver.call(this, trackOrKind, init);
    if (typeof trackOrKind === "string" || trackOrKind.kind !== "video") return transceiver;
    const caps = RTCRtpReceiver.getCapabilities("video").codecs;
    const first = caps.filter((c) => c.mimeType.toLowerCase() === codec);
    transceiver.setCodecPreferences(first.concat(caps.filter((c) => !first.includes(c))));
    return transceiver;
  };
}
window.rtc = rtc;
window.ready = true;
</script></body></html>"""

JOIN = """async ([url, publish]) => {
  const sig = await window.rtc.connectSignaling(url, {room: "sfu"});
  const room = window.rtc.joinRoom(sig);
  window.room = room;
  window.joinedAt = performance.now();
  window.firstFrame = {};
  window.messages = [];
  window.tracks = {};
  room.addEventListener("message", ({detail}) => window.messages.push(detail));
  room.addEventListener("track", ({detail}) => {
    window.tracks[detail.participantId] = detail.kind;
  });
  if (publish) {
    const stream = await navigator.mediaDevices.getUserMedia({video: true});
    room.publish(stream.getVideoTracks()[0], stream);
  }
  return [sig.peerId, room.topology];
}"""

# frames decoded per publishing participant (inbound-rtp mid -> participant via room.remote)
FRAMES = """async () => {
  const room = window.room;
  const out = {};
  if (!room.session || !room.session.pc) return out;
  const report = await room.session.pc.getStats();
  report.forEach((s) => {
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    const entry = room.remote.get(s.mid);
    if (!entry) return;
    out[entry.participantId] = (out[entry.participantId] || 0) + (s.framesDecoded || 0);
    if (s.framesDecoded > 0 && !(entry.participantId in window.firstFrame)) {
      window.firstFrame[entry.participantId] = performance.now() - window.joinedAt;
    }
  });
  return out;
}"""

CODEC = """async () => {
  const report = await window.room.session.pc.getStats();
  const codecs = {};
  report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
  const out = [];
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0) {
      out.push(codecs[s.codecId]);
    }
  });
  return out;
}"""


@contextlib.asynccontextmanager
async def site() -> AsyncIterator[tuple[str, str, RoomStrategies]]:
    server = SignalingServer(
        SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="sfu", topology="sfu")])
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
        async with RoomStrategies(server.hub) as strategies:
            port = runner.addresses[0][1]
            yield f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/ws", strategies
    finally:
        await runner.cleanup()


async def decoding(page: object, publishers: set[str], within: float = 30) -> dict[str, int]:
    decoded: dict[str, int] = {}
    try:
        async with asyncio.timeout(within):
            while True:
                decoded = await page.evaluate(FRAMES)  # type: ignore[attr-defined]
                if publishers <= set(decoded) and all(decoded[p] > 0 for p in publishers):
                    return decoded
                await asyncio.sleep(0.1)
    except TimeoutError:
        missing = sorted(p for p in publishers if decoded.get(p, 0) == 0)
        pytest.fail(f"no frame decoded from {missing} in {within} s (decoded: {decoded})")


@pytest.mark.parametrize("codec", ["video/vp8", "video/h264"])
async def test_pages_and_aiortc_in_an_sfu_room(codec: str) -> None:
    require_executable("chromium", hint="apt-get install chromium")
    async with (
        asyncio.timeout(120),
        site() as (http_url, ws_url, strategies),
        contextlib.AsyncExitStack() as stack,
    ):
        client = await stack.enter_async_context(SignalingClient.connect(ws_url, room="sfu"))
        room = await stack.enter_async_context(join_room(client, session_config=SessionConfig()))
        assert isinstance(room, SfuRoom)
        await room.publish(TestPatternTrack(PatternConfig(width=320, height=240, fps=15)))
        published: list[TrackPublished] = []

        async def collect() -> None:
            async for event in room.events():
                if isinstance(event, TrackPublished):
                    published.append(event)  # noqa: PERF401

        task = asyncio.create_task(collect())
        stack.callback(task.cancel)
        browser = await stack.enter_async_context(launch_chromium(fps=30))
        pages = []
        ids = []
        for index in range(3):  # page 0 publishes its camera, pages 1 and 2 only subscribe
            page = await browser.new_page()
            page.on("console", lambda msg: print("page:", msg.text))
            await page.goto(f"{http_url}?codec={codec}")
            await page.wait_for_function("window.ready === true")
            peer_id, topology = await page.evaluate(JOIN, [ws_url, index == 0])
            assert topology == "sfu"
            ids.append(peer_id)
            pages.append(page)
        publisher_id = ids[0]
        started = time.monotonic()
        for page in pages[1:]:
            await decoding(page, {publisher_id, room.local_id})
        await decoding(pages[0], {room.local_id})
        print(f"SFU room ({codec}): pages decoding after {time.monotonic() - started:.2f} s")
        for page in pages[1:]:
            assert codec in [c.lower() for c in await page.evaluate(CODEC)]
        # the aiortc participant decodes the page's camera
        async with asyncio.timeout(30):
            while not any(e.participant_id == publisher_id for e in published):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            track = next(e.track for e in published if e.participant_id == publisher_id)
            frame = await track.recv()
        assert frame.width > 0
        # a page joining mid-stream decodes its first frame of the publisher quickly
        late = await browser.new_page()
        await late.goto(f"{http_url}?codec={codec}")
        await late.wait_for_function("window.ready === true")
        t0 = time.monotonic()
        await late.evaluate(JOIN, [ws_url, False])
        await decoding(late, {publisher_id}, within=10)  # generous: the machine is shared
        first = await late.evaluate("() => window.firstFrame")
        print(
            f"SFU room ({codec}): mid-stream joiner decoded its first frame "
            f"{time.monotonic() - t0:.2f} s after joining (page-measured "
            f"{first[publisher_id] / 1000:.2f} s, stats polled every 0.1 s)"
        )
        # data from the page reaches the others, with the sender's id
        await pages[0].evaluate("() => window.room.send('hi from the page')")
        for page in pages[1:]:
            await page.wait_for_function(
                f"window.messages.some(m => m.data === 'hi from the page' "
                f"&& m.participantId === '{publisher_id}')",
                timeout=10000,
            )
        strategy = strategies.running["sfu"]
        assert isinstance(strategy, SfuServerStrategy)
        stats = strategy.stats()
        assert stats is not None
        assert stats.packets_out > 0
        assert stats.decoders_created == 0
        assert stats.encoders_created == 0
        for page in [*pages, late]:
            await page.evaluate("window.room.close()")
