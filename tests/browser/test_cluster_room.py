"""Two Chromium pages connected to different nodes of one cluster (two ``rtckit demo`` apps
sharing a real redis-server) join one room and see each other's video playing: in a mesh
room the browsers connect to each other, in an SFU room both send to the SFU on the room's
home, one of them through the other node's signaling."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from browser.test_demo import _join, _remote_video_playing
from rtckit.server.app import RtcKitServer
from rtckit.server.config import AuthSettings, ClusterSettings, ServeConfig, ServerSettings
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.testing.redisserver import INSTALL_HINT, run_redis_server

TIMEOUT = 150


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("topology", ["mesh", "sfu"])
async def test_pages_on_two_nodes_see_each_other(topology: str) -> None:
    require_executable("chromium", hint="apt-get install chromium")
    require_executable("redis-server", hint=INSTALL_HINT)
    room = f"{topology}-{secrets.token_hex(3)}"
    async with asyncio.timeout(TIMEOUT), run_redis_server() as redis_server:
        config = ServeConfig(
            server=ServerSettings(host="127.0.0.1", port=0, insecure=True),
            auth=AuthSettings(mode="open"),
            cluster=ClusterSettings(redis_url=redis_server.url, namespace="pages"),
        )
        async with (
            RtcKitServer(config, demo=True) as one,
            RtcKitServer(config, demo=True) as two,
            launch_chromium(fps=15) as browser,
        ):
            pages = []
            for name, node in (("Ada", one), ("Grace", two)):
                context = await browser.new_context(viewport={"width": 1280, "height": 800})
                page = await context.new_page()
                await _join(page, f"{node.url('127.0.0.1')}?room={room}", name, topology)
                await page.wait_for_selector("#call:not([hidden])", timeout=20_000)
                pages.append(page)
            for page in pages:
                await _remote_video_playing(page, 1, topology)
                assert "2 people" in (await page.locator("#status").text_content() or "")
            # the room lives on one node (its first joiner's), the other only relays
            homes = [server.signaling.hub.state.peers(room) for server in (one, two)]
            assert [bool(peers) for peers in homes] == [True, False]
