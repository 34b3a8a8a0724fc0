"""The forwarding engine with real Chromium pages (no room or signaling server yet).

One Chromium publisher (fake camera and microphone, VP8 and again H264) -> the SFU (server-side
aiortc connections in this process; SDP passed with ``page.evaluate``) -> two Chromium page
subscribers (which offer, with Chromium's own payload types and extension IDs) and one aiortc
subscriber. Every subscriber decodes video; the SFU decoded and encoded nothing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from rtckit.sfu import PublishedTrack, SfuRouter, accept_forwarding_transceiver
from rtckit.testing import require_executable
from test_sfu_forwarding import Subscriber, config, track_transceiver, wait_for

# Playwright's own --disable-features list (Chromium keeps only the last such switch), plus
# WebRtcHideLocalIpsWithMdns so that candidates carry addresses (see shared/notes/browser.md).
_DISABLED_FEATURES = ",".join(
    [
        "AvoidUnnecessaryBeforeUnloadCheckSync",
        "DestroyProfileOnBrowserClose",
        "HttpsUpgrades",
        "HttpsFirstBalancedModeAutoEnable",
        "LensOverlay",
        "MediaRouter",
        "PaintHolding",
        "ThirdPartyStoragePartitioning",
        "AvoidCorsURLLoaderRestartOnRedirect",
        "TcpPortRandomizationWin",
        "OptimizationHints",
        "NetworkTimeServiceQuerying",
        "AimEnabled",
        "PreconnectToSearch",
        "WebRtcHideLocalIpsWithMdns",
    ]
)
_CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream=fps=30",
    "--use-fake-ui-for-media-stream",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    f"--disable-features={_DISABLED_FEATURES}",
]

_GATHERED = """
async (pc) => {
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((resolve) => {
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      });
    });
  }
  return pc.localDescription.sdp;
}
"""

_PUBLISH = (
    """
async (mime) => {
  const gathered = """
    + _GATHERED
    + """;
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  const stream = await navigator.mediaDevices.getUserMedia(
    {video: {width: 640, height: 480}, audio: true});
  for (const track of stream.getTracks()) {
    const t = pc.addTransceiver(track, {direction: 'sendonly'});
    if (track.kind === 'video') {
      const codecs = RTCRtpSender.getCapabilities('video').codecs;
      t.setCodecPreferences(codecs.filter((c) =>
        c.mimeType === mime && (mime !== 'video/H264' ||
          (c.sdpFmtpLine || '').includes('packetization-mode=1'))));
    }
  }
  await pc.setLocalDescription(await pc.createOffer());
  return await gathered(pc);
}
"""
)

_SUBSCRIBE = (
    """
async () => {
  const gathered = """
    + _GATHERED
    + """;
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  pc.ontrack = (e) => {
    if (e.track.kind !== 'video') return;
    const video = document.createElement('video');
    video.muted = true; video.autoplay = true; video.playsInline = true;
    video.srcObject = new MediaStream([e.track]);
    document.body.appendChild(video);
  };
  await pc.setLocalDescription(await pc.createOffer());
  return await gathered(pc);
}
"""
)

_ANSWER = "async (sdp) => { await window.pc.setRemoteDescription({type: 'answer', sdp}); }"

_INBOUND_VIDEO = """
async () => {
  const stats = await window.pc.getStats();
  for (const s of stats.values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      return {frames: s.framesDecoded || 0, width: s.frameWidth || 0, codec: s.codecId || ''};
    }
  }
  return {frames: 0, width: 0, codec: ''};
}
"""


async def _index(request: web.Request) -> web.Response:
    return web.Response(text="<!doctype html><title>sfu</title>", content_type="text/html")


@asynccontextmanager
async def _site() -> AsyncIterator[str]:
    """A blank page at http://127.0.0.1:<port>/ (a secure context for getUserMedia)."""
    app = web.Application()
    app.router.add_get("/", _index)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        await runner.cleanup()
        sock.close()


@pytest.mark.parametrize("mime", ["video/VP8", "video/H264"])
async def test_chromium_publisher_to_chromium_and_aiortc_subscribers(mime: str) -> None:
    chromium = require_executable("chromium", hint="apt-get install chromium")
    from playwright.async_api import async_playwright

    servers: list[RTCPeerConnection] = []
    aiortc_viewer = Subscriber()
    async with _site() as url, async_playwright() as pw, SfuRouter() as router:
        browser = await pw.chromium.launch(executable_path=chromium, args=_CHROMIUM_ARGS)
        try:
            async with asyncio.timeout(90):
                # publisher page -> SFU
                publisher = await browser.new_page()
                await publisher.goto(url)
                offer = await publisher.evaluate(_PUBLISH, mime)
                server = RTCPeerConnection(config())
                servers.append(server)
                pubs: list[PublishedTrack] = []

                @server.on("track")
                def on_track(track: MediaStreamTrack) -> None:
                    pubs.append(router.publish("chromium", track_transceiver(server, track)))

                await server.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
                await server.setLocalDescription(await server.createAnswer())
                await publisher.evaluate(_ANSWER, server.localDescription.sdp)
                await wait_for(lambda: len(pubs) == 2)
                video = next(p for p in pubs if p.kind == "video")
                assert video.mime_type.lower() == mime.lower()

                # two Chromium subscribers, each offering with its own numbering
                pages = []
                for i in range(2):
                    page = await browser.new_page()
                    await page.goto(url)
                    sub_offer = await page.evaluate(_SUBSCRIBE)
                    sub_server = RTCPeerConnection(config())
                    servers.append(sub_server)
                    await sub_server.setRemoteDescription(
                        RTCSessionDescription(sdp=sub_offer, type="offer")
                    )
                    transceivers = [
                        accept_forwarding_transceiver(t) for t in sub_server.getTransceivers()
                    ]
                    await sub_server.setLocalDescription(await sub_server.createAnswer())
                    await page.evaluate(_ANSWER, sub_server.localDescription.sdp)
                    for t in transceivers:
                        pub = next(p for p in pubs if p.kind == t.kind)
                        router.subscribe(f"page{i}", pub.key, t)
                    pages.append(page)

                # and one aiortc subscriber
                await aiortc_viewer.connect(router, "aiortc", pubs)

                async def decoded(page: Any) -> dict[str, Any]:
                    result: dict[str, Any] = await page.evaluate(_INBOUND_VIDEO)
                    return result

                async def all_decoding() -> bool:
                    for page in pages:
                        if (await decoded(page))["frames"] < 15:
                            return False
                    return aiortc_viewer.frames["video"] >= 15

                while not await all_decoding():  # noqa: ASYNC110 - polling the pages' stats
                    await asyncio.sleep(0.25)
                # Chromium may scale its camera down (bandwidth/CPU adaptation): 4:3, <= 640
                for page in pages:
                    assert 160 <= (await decoded(page))["width"] <= 640
                assert aiortc_viewer.sizes
                assert all(w * 3 == h * 4 and w <= 640 for w, h in aiortc_viewer.sizes)
                stats = router.stats()
                assert stats.decoders_created == 0
                assert stats.encoders_created == 0
                assert stats.decoders_running == 0
                assert stats.encoders_running == 0
                assert stats.plis_relayed >= 1
                assert stats.packets_out > 0
        finally:
            await browser.close()
            await aiortc_viewer.close()
            for pc in servers:
                await pc.close()
