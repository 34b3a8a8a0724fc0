"""The MCU engine with two Chromium pages and two aiortc peers (four participants).

Each browser page sends a canvas of a known colour (``captureStream``) and an oscillator tone
(WebAudio), so what it sends is as checkable as the aiortc peers' synthetic tracks. SDP is
exchanged in-process through ``page.evaluate`` (no signaling server needed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtckit.mcu.engine import McuConfig, McuEngine
from rtckit.mcu.video import CompositorConfig
from rtckit.testing import require_executable
from test_mcu_engine import (
    COLOURS,
    OUT_H,
    OUT_W,
    TONES,
    Client,
    connect,
    shows,
    tone_magnitudes,
    yuv_at,
)

# Playwright's own --disable-features list (Chromium keeps only the last such switch), plus
# WebRtcHideLocalIpsWithMdns; see /work/shared/notes/browser.md.
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
_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    f"--disable-features={_DISABLED_FEATURES}",
]

BROWSER_COLOURS = {"magenta": (230, 40, 220), "cyan": (40, 220, 230)}
# Not on a harmonic or low-order intermodulation product of the other tones (440 and 660 Hz
# make 880, 1100, 1320, 1540, 1760...), which glitches under heavy CPU load can produce.
BROWSER_TONES = {"magenta": 1250.0, "cyan": 1730.0}

_START = """
async ({rgb, freq}) => {
  const canvas = document.createElement('canvas');
  canvas.width = 320; canvas.height = 240;
  const ctx = canvas.getContext('2d');
  const draw = () => { ctx.fillStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
                       ctx.fillRect(0, 0, 320, 240); };
  draw(); setInterval(draw, 33);
  const video = canvas.captureStream(30);
  const ac = new AudioContext({sampleRate: 48000});
  await ac.resume();
  const osc = ac.createOscillator(); osc.frequency.value = freq;
  const gain = ac.createGain(); gain.gain.value = 0.2;
  const dest = ac.createMediaStreamDestination();
  osc.connect(gain); gain.connect(dest); osc.start();
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTrack(video.getVideoTracks()[0], video);
  pc.addTrack(dest.stream.getAudioTracks()[0], dest.stream);
  window.mcu = {pc, ac, kinds: [], video: null, analyser: null};
  pc.ontrack = (e) => {
    window.mcu.kinds.push(e.track.kind);
    const stream = new MediaStream([e.track]);
    if (e.track.kind === 'video') {
      const v = document.createElement('video');
      v.muted = true; v.playsInline = true; v.srcObject = stream; v.play();
      window.mcu.video = v;
    } else {
      const a = new Audio(); a.muted = true; a.srcObject = stream; a.play();
      const analyser = ac.createAnalyser();
      analyser.fftSize = 16384; analyser.smoothingTimeConstant = 0.5;
      ac.createMediaStreamSource(stream).connect(analyser);
      window.mcu.analyser = analyser;
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
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

_PIXELS = """
(points) => {
  const v = window.mcu.video;
  if (!v || v.videoWidth === 0) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(v, 0, 0);
  return points.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
}
"""

_SPECTRUM = """
(freqs) => {
  const an = window.mcu.analyser;
  if (!an) return null;
  const data = new Float32Array(an.frequencyBinCount);
  an.getFloatFrequencyData(data);
  const binHz = window.mcu.ac.sampleRate / an.fftSize;
  // per tone: [peak dB at its bin, median and 90th percentile (dB) of the bins 40-120 Hz
  // to either side]
  return freqs.map((f) => {
    const i = Math.round(f / binHz);
    const peak = Math.max(data[i - 1], data[i], data[i + 1]);
    const side = [];
    for (let d = Math.round(40 / binHz); d <= Math.round(120 / binHz); d++) {
      side.push(data[i - d], data[i + d]);
    }
    side.sort((a, b) => a - b);
    return [peak, side[Math.floor(side.length / 2)], side[Math.floor(side.length * 0.9)]];
  });
}
"""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    path = require_executable("chromium", hint="apt-get install chromium")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, args=_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def join_from_page(engine: McuEngine, page: Any, name: str) -> RTCPeerConnection:
    offer_sdp = await page.evaluate(
        _START, {"rgb": list(BROWSER_COLOURS[name]), "freq": BROWSER_TONES[name]}
    )
    offer = RTCSessionDescription(sdp=offer_sdp, type="offer")
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    engine.attach(name, server, name=name, offer=offer)
    await server.setRemoteDescription(offer)
    await server.setLocalDescription(await server.createAnswer())
    await page.evaluate(
        "(sdp) => window.mcu.pc.setRemoteDescription({type: 'answer', sdp})",
        server.localDescription.sdp,
    )
    return server


def _rgb_close(got: list[int], want: tuple[int, int, int]) -> bool:
    return all(abs(g - w) <= 45 for g, w in zip(got, want, strict=True))


async def test_two_browsers_and_two_aiortc_peers_in_one_mcu() -> None:
    config = McuConfig(video=CompositorConfig(width=OUT_W, height=OUT_H, labels=False), fps=15)
    servers: list[RTCPeerConnection] = []
    clients: dict[str, Client] = {}
    async with chromium() as browser, McuEngine(config) as engine:
        try:
            pages = {}
            for name in ("red", "green"):
                clients[name] = Client(name)
                servers.append(await connect(engine, clients[name], pass_offer=True))
            for name in BROWSER_COLOURS:
                pages[name] = await browser.new_page()
                servers.append(await join_from_page(engine, pages[name], name))
            all_colours = {**{n: COLOURS[n] for n in clients}, **BROWSER_COLOURS}

            def centres() -> list[tuple[int, int]]:
                out = []
                for n in all_colours:
                    cell = engine.cell_of(n)
                    assert cell is not None
                    out.append((cell[0] + cell[2] // 2, cell[1] + cell[3] // 2))
                return out

            # every browser sees the four colours in the grid (aiortc peers' and browsers')
            async with asyncio.timeout(30):
                for page in pages.values():
                    while True:
                        if all(engine.cell_of(n) is not None for n in all_colours):
                            got = await page.evaluate(_PIXELS, centres())
                            if got is not None and all(
                                _rgb_close(g, w)
                                for g, w in zip(got, all_colours.values(), strict=True)
                            ):
                                break
                        await asyncio.sleep(0.1)

            # every aiortc peer sees the browsers' colours too (YUV comparison)
            async with asyncio.timeout(30):
                while not all(  # noqa: ASYNC110 - polling decoded frames
                    shows(c.latest, engine.cell_of(n), n) for c in clients.values() for n in clients
                ):
                    await asyncio.sleep(0.05)

            # ... and the browsers' pictures in the browsers' cells. Chrome converts its
            # canvas to YUV with its own matrix, so compare with the YUV the engine received
            # from that browser rather than with a BT.601 conversion of the canvas colour.
            # The aiortc peers' latest frames may still be the mix from before the browsers'
            # video reached the engine: wait for a mix that shows them (bounded).
            def mismatches() -> list[tuple[str, str, tuple[float, ...], tuple[float, ...]]]:
                out: list[tuple[str, str, tuple[float, ...], tuple[float, ...]]] = []
                for n in BROWSER_COLOURS:
                    source = next(p for p in engine.participants if p.id == n).latest_video
                    assert source is not None
                    arr = source.to_ndarray(format="yuv420p")
                    sent = yuv_at(arr, (0, 0, source.width, source.height))
                    cell = engine.cell_of(n)
                    assert cell is not None
                    for c in clients.values():
                        assert c.latest is not None
                        got = yuv_at(c.latest, cell)
                        if not all(abs(g - w) <= 20 for g, w in zip(got, sent, strict=True)):
                            out.append((c.name, n, got, sent))
                return out

            for _ in range(200):  # up to 10 s
                if not (wrong := mismatches()):
                    break
                await asyncio.sleep(0.05)
            assert not wrong, wrong

            # audio at the aiortc peers: the other three tones, not their own
            await asyncio.sleep(0.5)
            for c in clients.values():
                c.recording = True
            async with asyncio.timeout(30):
                while not all(  # noqa: ASYNC110 - polling received audio
                    sum(a.size for a in c.audio) >= 48000 for c in clients.values()
                ):
                    await asyncio.sleep(0.05)
            tones = {**TONES, **BROWSER_TONES}
            for name, c in clients.items():
                mags = tone_magnitudes(np.concatenate(c.audio)[-48000:], tones)
                others = [m for n, m in mags.items() if n != name and n in all_colours]
                assert min(others) > 0, (name, mags)
                assert mags[name] < 0.05 * min(others), (name, mags)

            # audio in the browsers (WebAudio analyser, dB): a clear peak at every other
            # tone's frequency, none at its own (judged against the nearby noise floor, which
            # CPU starvation on a busy machine raises with clicks and gaps)
            freqs = [tones[n] for n in all_colours]
            for name, page in pages.items():
                async with asyncio.timeout(30):
                    while True:
                        levels = await page.evaluate(_SPECTRUM, freqs)
                        if levels is not None:
                            # others: peak above the median floor; own: above the floor's
                            # 90th percentile (a max of 3 noise bins often tops the median)
                            prominence = {
                                n: peak - (p90 if n == name else median)
                                for n, (peak, median, p90) in zip(all_colours, levels, strict=True)
                            }
                            if min(v for n, v in prominence.items() if n != name) > 20:
                                break
                        await asyncio.sleep(0.2)
                assert prominence[name] < 6, (name, prominence, levels)
                own_peak = levels[list(all_colours).index(name)][0]
                others = [lv[0] for n, lv in zip(all_colours, levels, strict=True) if n != name]
                assert own_peak < min(others) - 15, (name, levels)

            # exactly one video and one audio stream per participant
            for page in pages.values():
                kinds = await page.evaluate("() => window.mcu.kinds")
                assert sorted(kinds) == ["audio", "video"]
            for c in clients.values():
                assert sorted(c.received_kinds) == ["audio", "video"]
            stats = engine.stats()
            assert stats.viewers == 4
            assert stats.video_encodes == stats.video_frames_composed
        finally:
            for c in clients.values():
                await c.close()
            for s in servers:
                await s.close()
