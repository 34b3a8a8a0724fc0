"""The demo room page in an SFU room with simulcast: what each video receives, and why.

Two Chromium pages join one SFU room through the demo page (fake camera, 640x480 at 15 fps,
three layers with the field trial of ``test_sfu_simulcast``). The viewer's stats panel names
the layer each video receives; its tile of the publisher, made narrow, asks for the low layer
(the page watches the element's size); hidden, the tile asks for none and the SFU stops
forwarding to it; shown again, the video resumes from a keyframe at the top layer. The same
pause follows when the tile is moved out of view and when the page is hidden.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from playwright.async_api import Page

from rtckit.server.app import _APP_KEY, RtcKitServer
from rtckit.server.config import AuthSettings, ServeConfig, ServerSettings
from rtckit.sfu.engine import Subscription
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.testing.labroom import SIMULCAST_TRIAL
from rtckit.topology.sfu import SfuServerStrategy

TIMEOUT = 150

# the line of the stats panel about one participant's video
LINE = """(id) => {
  const item = document.querySelector(`#stats-body li[data-participant="${id}"] .what`);
  return item ? item.textContent : null;
}"""

# the viewer's inbound video from one participant: [frames decoded, keyframes decoded, width]
INBOUND = """async (id) => {
  const room = window.rtckitPage.room;
  const report = await room.session.pc.getStats();
  let out = null;
  report.forEach((s) => {
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    const entry = room.remote.get(s.mid);
    if (entry && entry.participantId === id) {
      out = [s.framesDecoded || 0, s.keyFramesDecoded || 0, s.frameWidth || 0];
    }
  });
  return out;
}"""

# the hysteresis of the automatic quality, as rtckit.js exports it
HYSTERESIS = """async () => {
  const { qualityForWidth } = await import("/rtckit.js");
  return [
    qualityForWidth(0), qualityForWidth(100), qualityForWidth(300), qualityForWidth(600),
    qualityForWidth(250, "low"), qualityForWidth(300, "low"),
    qualityForWidth(230, "medium"), qualityForWidth(500, "medium"), qualityForWidth(600, "medium"),
    qualityForWidth(0, "high"),
  ];
}"""


def shows(width: int, height: int, layer: str) -> str:
    """The stats panel's line for a video of that frame size and layer."""
    return f"{width}\N{MULTIPLICATION SIGN}{height} · {layer}"


def is_paused(sub: Subscription) -> bool:
    return sub.paused


async def join(page: Page, url: str, name: str) -> str:
    await page.goto(url)
    await page.fill("#name-input", name)
    await page.check('input[name="topology"][value="sfu"]')
    await page.click("#join-button")
    await page.wait_for_selector("#call:not([hidden])", timeout=20_000)
    peer_id = await page.evaluate("window.rtckitPage.signaling.peerId")
    assert isinstance(peer_id, str)
    return peer_id


async def line_becomes(page: Page, peer_id: str, text: str, within: float = 25) -> None:
    seen = None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen = await page.evaluate(LINE, peer_id)
        if seen == text:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"the stats panel says {seen!r} of {peer_id}, not {text!r}")


async def test_the_demo_page_shows_layers_sizes_its_videos_and_pauses_hidden_ones() -> None:
    require_executable("chromium", hint="apt-get install chromium")
    config = ServeConfig(
        server=ServerSettings(host="127.0.0.1", port=0, insecure=True),
        auth=AuthSettings(mode="open"),
    )
    async with (
        asyncio.timeout(TIMEOUT),
        RtcKitServer(config, demo=True) as server,
        launch_chromium(fps=15, extra_args=[SIMULCAST_TRIAL]) as browser,
    ):
        url = server.url("127.0.0.1") + "?room=layers"
        pages = []
        for _ in range(2):
            context = await browser.new_context(
                viewport={"width": 1280, "height": 800}, device_scale_factor=2
            )
            pages.append(await context.new_page())
        ada, bob = pages
        ada_id = await join(ada, url, "Ada")
        await join(bob, url, "Bob")
        assert await bob.evaluate(HYSTERESIS) == [
            "off",
            "low",
            "medium",
            "high",
            "low",  # 250 is within 15 % of low's upper edge (240): no change yet
            "medium",
            "medium",  # 230 is within 15 % of medium's lower edge
            "medium",  # 500 is within 15 % of medium's upper edge (480)
            "high",
            "off",
        ]

        # Ada's tile is more than 240 CSS pixels wide on Bob's page, 480 device pixels: the top
        # layer
        video = f"document.querySelector('#grid .tile[data-peer-id=\"{ada_id}\"] video')"
        width = await bob.evaluate(f"{video}.clientWidth")
        print(f"demo simulcast: Ada's video is {width} CSS pixels wide on Bob's page")
        assert width > 480 * 1.15 / 2
        await line_becomes(bob, ada_id, shows(640, 480, "layer f (high)"))

        # a narrow tile asks for the low layer (100 CSS pixels, 200 device pixels), a wider
        # one for the middle layer, and back to its size for the top layer
        await bob.evaluate(f"{video}.style.width = '100px'")
        await line_becomes(bob, ada_id, shows(160, 120, "layer q (low)"))
        await bob.evaluate(f"{video}.style.width = '160px'")
        await line_becomes(bob, ada_id, shows(320, 240, "layer h (medium)"))
        await bob.evaluate(f"{video}.style.width = ''")
        await line_becomes(bob, ada_id, shows(640, 480, "layer f (high)"))

        # the tile hidden: the SFU forwards nothing of Ada's video to Bob
        assert server.app is not None
        app_state: Any = server.app[_APP_KEY]  # the app's private state: its strategies
        strategy = app_state.strategies["layers"]
        assert isinstance(strategy, SfuServerStrategy)
        router = strategy.router
        assert router is not None
        bob_id = await bob.evaluate("window.rtckitPage.signaling.peerId")
        (sub,) = [
            s
            for s in router.subscriptions(bob_id)
            if s.key.participant == ada_id and s.transceiver.kind == "video"
        ]
        await bob.evaluate(
            f"document.querySelector('#grid .tile[data-peer-id=\"{ada_id}\"]')"
            ".style.display = 'none'"
        )
        await line_becomes(bob, ada_id, "paused (not shown)")
        assert is_paused(sub)
        assert sub.rewriter is not None
        await asyncio.sleep(0.5)  # packets on their way when the pause came
        sent = sub.rewriter.packets_sent
        before = await bob.evaluate(INBOUND, ada_id)
        await asyncio.sleep(1.5)
        assert sub.rewriter.packets_sent == sent
        assert await bob.evaluate(INBOUND, ada_id) == before  # no frame decoded either
        # Ada's audio is not paused
        audio = [
            s
            for s in router.subscriptions(bob_id)
            if s.key.participant == ada_id and s.transceiver.kind == "audio"
        ]
        assert audio
        assert not any(s.paused for s in audio)

        # shown again: frames again, from a keyframe, at the top layer
        await bob.evaluate(
            f"document.querySelector('#grid .tile[data-peer-id=\"{ada_id}\"]').style.display = ''"
        )
        await line_becomes(bob, ada_id, shows(640, 480, "layer f (high)"))
        assert not is_paused(sub)
        async with asyncio.timeout(20):
            while True:
                after = await bob.evaluate(INBOUND, ada_id)
                if after[0] > before[0] + 10 and after[1] > before[1]:
                    break
                await asyncio.sleep(0.25)
        assert sub.rewriter.packets_sent > sent
        print(f"demo simulcast: before the pause {before}, after resuming {after}")

        # out of view (as if scrolled away; its size unchanged), then the page hidden (the
        # visibility state as a browser sets it for a background tab): paused, and back
        tile = f"document.querySelector('#grid .tile[data-peer-id=\"{ada_id}\"]')"
        hidden_page = (
            "Object.defineProperty(document, 'visibilityState', {value: 'hidden',"
            " configurable: true}); document.dispatchEvent(new Event('visibilitychange'))"
        )
        shown_page = (
            "delete document.visibilityState; document.dispatchEvent(new Event('visibilitychange'))"
        )
        for hide, show in (
            (f"{tile}.style.transform = 'translateY(5000px)'", f"{tile}.style.transform = ''"),
            (hidden_page, shown_page),
        ):
            await bob.evaluate(hide)
            await line_becomes(bob, ada_id, "paused (not shown)")
            assert is_paused(sub)
            await bob.evaluate(show)
            await line_becomes(bob, ada_id, shows(640, 480, "layer f (high)"))
            assert not is_paused(sub)

        # Ada leaves: what Bob's page was told of her video goes with her
        assert await bob.evaluate(f"window.rtckitPage.room.videoLayers.has('{ada_id}')")
        await ada.click("#leave-button")
        await bob.wait_for_function(
            f"!window.rtckitPage.room.videoLayers.has('{ada_id}')", timeout=20_000
        )
