"""Pages that all publish in an SFU or MCU room PLAY what they receive, not only decode it.

Regression test for a stall of the rooms' second and later pages: their remote video decoded
(getStats ``framesDecoded`` grew) but no frame reached the track, so the ``<video>`` showing it
stayed empty (``readyState`` 0, ``videoWidth`` 0). Cause: Chromium's rollback of a local offer
(the polite side's answer to glare) leaves the video receivers of sendrecv m-lines decoding into
nothing, and a polite side that re-offers blindly after its first answer collides with the
server's own re-offer (see ``docs/topics/browser-quirks.rst``). A page's
camera shares its m-lines with what the server sends it whenever the page joins after someone
already published (SFU) or always (MCU), so every page but the first was hit.

Three pages join one room through rtckit.js ``joinRoom`` and publish camera and microphone.
Each page shows every remote video track in a ``<video>`` element; every one must report a size
and advance its clock (frames delivered to the track), and frames must keep arriving through
``requestVideoFrameCallback``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from rtckit.signaling import OpenAuth, RoomConfig, SignalingConfig
from rtckit.signaling.wsserver import SignalingServer
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.topology.strategies import RoomStrategies

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtckit playback</title></head>
<body><script type="module">
import * as rtc from "/ws/rtckit.js";
window.rtc = rtc;
window.ready = true;
</script></body></html>"""

# Every remote video track goes to a <video> of its own; rendered frames are counted per track.
JOIN = """async ([url, room]) => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const sig = await window.rtc.connectSignaling(url, {room});
  const joined = window.rtc.joinRoom(sig);
  window.room = joined;
  window.rendered = new Map();  // track id -> frames rendered by its <video>
  joined.addEventListener("track", ({detail}) => {
    if (detail.kind !== "video") return;
    const video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    video.dataset.participant = detail.participantId;
    video.srcObject = new MediaStream([detail.track]);
    document.body.append(video);
    window.rendered.set(detail.track.id, 0);
    const count = () => {
      window.rendered.set(detail.track.id, window.rendered.get(detail.track.id) + 1);
      video.requestVideoFrameCallback(count);
    };
    video.requestVideoFrameCallback(count);
    video.play().catch(() => {});
  });
  joined.addEventListener("trackremoved", ({detail}) => {
    window.rendered.delete(detail.track.id);
    for (const video of document.querySelectorAll("video")) {
      if (video.srcObject && video.srcObject.getTracks().includes(detail.track)) video.remove();
    }
  });
  for (const track of stream.getTracks()) joined.publish(track, stream);
  return sig.peerId;
}"""

VIDEOS = """() => [...document.querySelectorAll("video")].map((v) => ({
  participant: v.dataset.participant, width: v.videoWidth, time: v.currentTime,
  ready: v.readyState}))"""

DECODED = """async () => {
  let frames = 0;
  const pc = window.room.session && window.room.session.pc;
  if (pc) (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded || 0;
  });
  return frames;
}"""

RENDERED = "() => [...window.rendered.values()]"


@contextlib.asynccontextmanager
async def site(topology: str) -> AsyncIterator[tuple[str, str]]:
    server = SignalingServer(
        SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="room", topology=topology)])
    )
    app = web.Application()
    server.add_routes(app, "/ws")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with RoomStrategies(server.hub):
            port = runner.addresses[0][1]
            yield f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("topology", "remote_videos"), [("sfu", 2), ("mcu", 1)])
async def test_every_page_plays_what_it_receives(topology: str, remote_videos: int) -> None:
    require_executable("chromium", hint="apt-get install chromium")
    async with (
        asyncio.timeout(150),
        site(topology) as (http_url, ws_url),
        launch_chromium(fps=15) as browser,
    ):
        pages = []
        for _ in range(3):
            page = await (await browser.new_context()).new_page()
            await page.goto(http_url)
            await page.wait_for_function("window.ready === true")
            await page.evaluate(JOIN, [ws_url, "room"])
            pages.append(page)
        for index, page in enumerate(pages):
            try:
                await page.wait_for_function(
                    f"""() => {{
                        const v = [...document.querySelectorAll("video")];
                        return v.length === {remote_videos}
                            && v.every((e) => e.videoWidth > 0 && e.currentTime > 0);
                    }}""",
                    timeout=60_000,
                )
            except Exception:
                videos = await page.evaluate(VIDEOS)
                decoded = await page.evaluate(DECODED)
                raise AssertionError(
                    f"page {index} ({topology}): videos {videos}, frames decoded {decoded}"
                ) from None
        # and frames keep reaching every track
        for index, page in enumerate(pages):
            before = await page.evaluate(RENDERED)
            await page.wait_for_function(
                f"""() => {{
                    const before = {before};
                    const now = [...window.rendered.values()];
                    return now.length === before.length && now.every((n, i) => n > before[i] + 5);
                }}""",
                timeout=20_000,
            )
            assert len(before) == remote_videos, index
        for page in pages:
            await page.evaluate("window.room.close()")
