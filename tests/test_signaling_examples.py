"""The signaling examples the tutorial includes run and print what it says."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from rtckit.signaling import AppMessage, SignalingClient
from rtckit.testing.coturn import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("signaling_memory.py", ["bob got an offer from", "alice got {'chat': 'hi everyone'}"]),
        ("signaling_websocket.py", ["serving ws://127.0.0.1:", "bob got {'ping': 1}"]),
    ],
)
def test_example_runs(name: str, expected: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout


async def test_browser_example_serves_its_page_and_greets_a_newcomer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """examples/signaling_browser.py: the page, rtckit.js, and the Python peer's greeting.

    A Python client stands in for a browser tab (the page's script is checked against
    rtckit.js by tests/test_docs_snippets.py).
    """
    spec = importlib.util.spec_from_file_location(
        "signaling_browser_example", ROOT / "examples" / "signaling_browser.py"
    )
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    port = free_port()
    server = asyncio.create_task(example.main(port))
    try:
        async with asyncio.timeout(30):
            async with aiohttp.ClientSession() as session:
                while True:  # until the example listens
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/") as response:
                            page = await response.text()
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
                assert 'import { RtcKitSignaling } from "/ws/rtckit.js"' in page
                async with session.get(f"http://127.0.0.1:{port}/ws/rtckit.js") as response:
                    assert response.status == 200
                    assert "RtcKitSignaling" in await response.text()
                signaling_js = f"http://127.0.0.1:{port}/ws/rtckit/signaling.js"
                async with session.get(signaling_js) as response:
                    assert response.status == 200
                    assert "export class RtcKitSignaling" in await response.text()
            url = f"ws://127.0.0.1:{port}/ws"
            async with SignalingClient.connect(url, room="lobby") as tab:
                async for event in tab:
                    if isinstance(event, AppMessage):
                        assert event.payload == "welcome from Python"
                        await tab.send_app(event.sender, "hi from a tab")
                        break
                said = ""
                while "says" not in said:  # the example prints what the Python peer hears
                    said += capsys.readouterr().out
                    await asyncio.sleep(0.05)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
