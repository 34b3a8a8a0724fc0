"""A Chromium page in an SFU room plays what GStreamer's webrtcbin publishes over WHIP.

The page joins the room through rtckit.js ``joinRoom`` and shows every remote video in a
``<video>``; webrtcbin (an independent WebRTC stack, see
``tests/integration/test_whip_webrtcbin.py``) then publishes a test pattern with an Opus tone
over WHIP: VP8, and H.264 as OBS sends it. The page's ``<video>`` of the WHIP publisher must
PLAY (a size, its clock advancing, frames rendered and decoded), and the server must have
forwarded the packets without decoding or encoding anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from rtckit.signaling import OpenAuth, RoomConfig, SignalingConfig
from rtckit.signaling.wsserver import SignalingServer
from rtckit.testing import require_executable
from rtckit.testing._webrtcbin import WebrtcbinPeer, require_webrtcbin
from rtckit.testing.browser import launch_chromium
from rtckit.topology.sfu import SfuServerStrategy
from rtckit.topology.strategies import RoomStrategies
from rtckit.whip import WhipEndpoint
from whippublish import assert_forwarded, assert_no_errors, whip_publish

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtckit whip viewer</title>
<link rel="icon" href="data:,"></head>
<body><script type="module">
import * as rtc from "/ws/rtckit.js";
window.rtc = rtc;
window.ready = true;
</script></body></html>"""

# Every remote video goes to a <video> of its own; frames rendered are counted per participant.
JOIN = """async (url) => {
  const sig = await window.rtc.connectSignaling(url, {room: "sfu"});
  const room = window.rtc.joinRoom(sig);
  window.room = room;
  window.rendered = {};
  room.addEventListener("track", ({detail}) => {
    if (detail.kind !== "video") return;
    const video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    video.dataset.participant = detail.participantId;
    video.srcObject = new MediaStream([detail.track]);
    document.body.append(video);
    window.rendered[detail.participantId] = 0;
    const count = () => {
      window.rendered[detail.participantId] += 1;
      video.requestVideoFrameCallback(count);
    };
    video.requestVideoFrameCallback(count);
    video.play().catch(() => {});
  });
  return sig.peerId;
}"""

PLAYING = """(participant) => {
  const v = document.querySelector(`video[data-participant="${participant}"]`);
  return v !== null && v.videoWidth > 0 && v.currentTime > 0;
}"""

VIDEOS = """() => [...document.querySelectorAll("video")].map((v) => ({
  participant: v.dataset.participant, width: v.videoWidth, height: v.videoHeight,
  time: v.currentTime}))"""

# frames decoded and the codec of the page's inbound video
INBOUND = """async () => {
  const report = await window.room.session.pc.getStats();
  const codecs = {};
  report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
  let frames = 0;
  const mimes = [];
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0) {
      frames += s.framesDecoded;
      mimes.push(codecs[s.codecId].toLowerCase());
    }
  });
  return {frames, mimes};
}"""


@contextlib.asynccontextmanager
async def site() -> AsyncIterator[tuple[str, str, RoomStrategies]]:
    """The page, signaling at /ws and WHIP at /whip, on one loopback HTTP server."""
    server = SignalingServer(
        SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="sfu", topology="sfu")])
    )
    app = web.Application()
    server.add_routes(app, "/ws")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    async with RoomStrategies(server.hub) as rooms, WhipEndpoint(server.hub, rooms) as whip:
        whip.add_routes(app)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            yield base, base.replace("http:", "ws:") + "/ws", rooms
        finally:
            await whip.aclose()
            await runner.cleanup()


@pytest.mark.parametrize(("video_codec", "mime"), [("vp8", "video/VP8"), ("h264", "video/H264")])
async def test_a_page_plays_what_webrtcbin_publishes_over_whip(
    video_codec: str, mime: str, caplog: pytest.LogCaptureFixture
) -> None:
    require_executable("chromium", hint="apt-get install chromium")
    require_webrtcbin()
    async with (
        asyncio.timeout(150),
        site() as (base, ws_url, rooms),
        launch_chromium(fps=15) as browser,
        aiohttp.ClientSession() as http,
    ):
        page = await browser.new_page()
        page.on("console", lambda msg: print("page:", msg.text))
        await page.goto(base + "/")
        await page.wait_for_function("window.ready === true")
        await page.evaluate(JOIN, ws_url)
        async with (
            WebrtcbinPeer(
                role="offer", send_video=True, send_audio=True, video_codec=video_codec
            ) as peer,
            whip_publish(http, f"{base}/whip/sfu", peer) as publish,
        ):
            strategy = rooms.running["sfu"]
            assert isinstance(strategy, SfuServerStrategy)
            (publisher_id,) = strategy.publishers
            try:
                await page.wait_for_function(PLAYING, arg=publisher_id, timeout=60_000)
            except Exception:
                videos = await page.evaluate(VIDEOS)
                raise AssertionError(f"the WHIP publisher does not play: {videos}") from None
            print(
                f"webrtcbin {video_codec}: POST to playing in Chromium "
                f"{time.monotonic() - publish.posted_at:.2f} s"
            )
            # and it keeps playing: frames rendered and decoded keep coming
            before = await page.evaluate(INBOUND)
            rendered = await page.evaluate(f"() => window.rendered[{publisher_id!r}]")
            await page.wait_for_function(
                f"() => window.rendered[{publisher_id!r}] > {rendered} + 15", timeout=20_000
            )
            after = await page.evaluate(INBOUND)
            assert after["frames"] > before["frames"], (before, after)
            assert after["mimes"] == [mime.lower()], after
            (width, height) = await page.evaluate(
                f"""() => {{
                const v = document.querySelector('video[data-participant="{publisher_id}"]');
                return [v.videoWidth, v.videoHeight]; }}"""
            )
            assert (width, height) == (320, 240)
            assert_forwarded(strategy, mime)
            assert_no_errors(caplog)
            async with http.delete(publish.resource) as deleted:
                assert deleted.status == 200
        await page.evaluate("window.room.close()")
