"""``rtckit signaling --transport auto|aiohttp|picows``: which WebSocket layer it runs, over
``ws://`` or (``--cert/--key``) ``wss://``."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from rtckit.certs import CertificateSpec, KeyType, client_ssl_context, create_self_signed
from rtckit.cli import build_parser
from rtckit.cli.signaling import picows_available, resolve_transport
from rtckit.errors import ConfigurationError
from rtckit.signaling import SignalingClient

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


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("transport", ["aiohttp", "picows"])
def test_the_banner_names_the_transport(transport: str, scheme: str, tmp_path: Path) -> None:
    """The startup line gives the URL (``wss://`` with ``--cert/--key``) and the transport;
    over ``wss://`` a client trusting the certificate joins through it."""
    if transport == "picows":
        pytest.importorskip("picows", reason="picows is not installed")
    env = {**os.environ, "PYTHONPATH": SRC}
    args = ["signaling", "--open", "--port", "0", "--transport", transport, "--loop", "asyncio"]
    own = create_self_signed(CertificateSpec(hosts=["127.0.0.1"], key_type=KeyType.EC))
    if scheme == "wss":
        files = own.save(tmp_path)
        args += ["--cert", str(files.fullchain), "--key", str(files.key)]
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
            if scheme == "wss":
                url = banner.split()[3]
                asyncio.run(_join(url, client_ssl_context(own)))
        finally:
            process.terminate()
            process.wait(10)
    assert banner.startswith(f"rtckit signaling on {scheme}://127.0.0.1:"), banner
    assert f", {transport}, asyncio loop)" in banner, banner


async def _join(url: str, context: ssl.SSLContext) -> None:
    async with asyncio.timeout(30), SignalingClient.connect(url, room="r", ssl=context) as client:
        assert client.peer_id
    await asyncio.sleep(0.25)  # aiohttp's advice: let TLS transports close before the loop ends
