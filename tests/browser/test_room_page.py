"""The room page of ``rtckit demo`` in Chromium: a topology the server cannot host is greyed out
with the server's reason on the page, room kinds read with their article ("an MCU room"), and
in an MCU room the own preview sits beside the room mix, covering none of it."""

from __future__ import annotations

import asyncio

import pytest

from rtckit.server.app import RtcKitServer
from rtckit.server.config import AuthSettings, ServeConfig, ServerSettings
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.topology import Topology, base

TIMEOUT = 120
MISSING = "rtckit_test_missing_dependency"

# the boxes of the mix's picture and of the own preview, in page pixels
_BOXES = """() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; };
  return {mix: box(document.querySelector('#grid .tile.mix video')),
          local: box(document.querySelector('#grid .tile.local'))};
}"""


async def test_the_page_says_why_a_topology_is_unavailable_and_keeps_the_mix_uncovered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_executable("chromium", hint="apt-get install chromium")
    # the SFU's strategy module needs a module that is not installed (as the MCU without numpy)
    monkeypatch.setitem(base._SERVER, Topology.SFU, f"{MISSING}.sfu:SfuServerStrategy")
    config = ServeConfig(
        server=ServerSettings(host="127.0.0.1", port=0, insecure=True),
        auth=AuthSettings(mode="open"),
    )
    async with (
        asyncio.timeout(TIMEOUT),
        RtcKitServer(config, demo=True) as server,
        launch_chromium(fps=15) as browser,
    ):
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(server.url("127.0.0.1") + "?room=kinds")
        sfu = page.locator('#topology-field label:has(input[value="sfu"])')
        await sfu.locator(".reason").wait_for(timeout=20_000)
        reason = f"the SFU server needs {MISSING}, which is not installed (pip install {MISSING})"
        assert await sfu.locator(".reason").text_content() == f"Not available: {reason}"
        assert reason in (await sfu.get_attribute("title") or "")
        assert await page.locator("#topology-field .reason").count() == 1

        await page.fill("#name-input", "Ada")
        await page.check('input[name="topology"][value="mcu"]')
        await page.click("#join-button")
        await page.wait_for_selector("#call:not([hidden])", timeout=20_000)
        messages = page.locator("#messages li.system")
        await messages.first.wait_for(timeout=10_000)
        assert await messages.first.text_content() == "You joined “kinds”, an MCU room."
        assert await page.get_attribute("#topology-badge", "title") == "This room is an MCU room"

        # the mix arrives and plays; the own preview does not cover any of it
        await page.wait_for_function(
            "() => { const v = document.querySelector('#grid .tile.mix video');"
            " return v && v.videoWidth > 0 && v.currentTime > 0; }",
            timeout=60_000,
        )
        boxes = await page.evaluate(_BOXES)
        mix, local = boxes["mix"], boxes["local"]
        assert mix["right"] - mix["left"] > 400, boxes
        overlap_x = min(mix["right"], local["right"]) - max(mix["left"], local["left"])
        overlap_y = min(mix["bottom"], local["bottom"]) - max(mix["top"], local["top"])
        assert overlap_x <= 0 or overlap_y <= 0, boxes
