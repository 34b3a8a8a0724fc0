"""``rtckit signaling --transport auto|aiohttp|picows``: which WebSocket layer it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtckit.cli import build_parser
from rtckit.cli.signaling import picows_available, resolve_transport
from rtckit.errors import ConfigurationError

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_resolve_transport() -> None:
    assert resolve_transport("aiohttp") == "aiohttp"
    assert resolve_transport("auto") == ("picows" if picows_available() else "aiohttp")
    with pytest.raises(ConfigurationError, match="transport must be one of"):
        resolve_transport("tornado")
    assert build_parser().parse_args(["signaling", "--open"]).transport == "auto"


def test_picows_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rtckit.cli.signaling.picows_available", lambda: False)
    assert resolve_transport("auto") == "aiohttp"
    with pytest.raises(ConfigurationError, match=r"picows .*rtckit\[speed\]"):
        resolve_transport("picows")


@pytest.mark.parametrize("transport", ["aiohttp", "picows"])
def test_the_banner_names_the_transport(transport: str) -> None:
    if transport == "picows":
        pytest.importorskip("picows", reason="picows is not installed")
    env = {**os.environ, "PYTHONPATH": SRC}
    args = ["signaling", "--open", "--port", "0", "--transport", transport, "--loop", "asyncio"]
    with subprocess.Popen(
        [sys.executable, "-m", "rtckit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
        finally:
            process.terminate()
            process.wait(10)
    assert banner.startswith("rtckit signaling on ws://127.0.0.1:"), banner
    assert f", {transport}, asyncio loop)" in banner, banner
