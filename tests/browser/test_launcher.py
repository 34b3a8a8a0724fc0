"""The reusable Chromium launcher in :mod:`rtckit.testing.browser` runs a real Chromium."""

from __future__ import annotations

import asyncio

from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium


async def test_launch_and_run_script() -> None:
    require_executable("chromium", hint="apt-get install chromium")
    async with asyncio.timeout(60), launch_chromium() as browser:
        page = await browser.new_page()
        assert await page.evaluate("1 + 41") == 42
        assert await page.evaluate("navigator.userAgent.includes('HeadlessChrome')")
