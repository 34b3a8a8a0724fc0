"""``rtckit demo`` and ``rtckit serve`` as a user runs them: real subprocesses on free ports,
stopped with SIGINT/SIGTERM; configuration errors exit with status 2 and a clear message."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from rtckit.certs import LocalCA
from rtckit.cli import main
from rtckit.errors import ConnectionClosedError
from rtckit.signaling import ReconnectPolicy, SignalingClient, WebSocketTransport

TIMEOUT = 60
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": SRC + (os.pathsep + path if path else "")}


class Running:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output: list[str] = []

    async def read_until(self, pattern: str) -> re.Match[str]:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise AssertionError("process ended early:\n" + "".join(self.output))
            text = line.decode()
            self.output.append(text)
            found = re.search(pattern, text)
            if found:
                return found

    def children(self) -> list[str]:
        pid = self.process.pid
        path = Path(f"/proc/{pid}/task/{pid}/children")
        return path.read_text().split() if path.exists() else []

    async def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        assert self.process.stdout is not None
        rest = await self.process.stdout.read()
        self.output.append(rest.decode())
        return await self.process.wait()


@asynccontextmanager
async def _run(*args: str) -> AsyncIterator[Running]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtckit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=_env(),
    )
    try:
        yield Running(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_demo_serves_https_redirects_http_and_stops_cleanly(
    tmp_path: Path, signum: int
) -> None:
    certs = tmp_path / "certs"
    async with (
        asyncio.timeout(TIMEOUT),
        _run(
            "demo",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--http-port",
            "0",
            "--cert-dir",
            str(certs),
        ) as demo,
    ):
        port = int((await demo.read_until(r"https://localhost:(\d+)/")).group(1))
        http_port = int((await demo.read_until(r"http://\.\.\.:(\d+)/ redirects")).group(1))
        await demo.read_until("Ctrl-C")
        text = "".join(demo.output)
        assert "created now" in text
        assert str(certs / "ca.pem") in text
        assert "certutil" in text
        assert "no tokens" in text
        ca = LocalCA.load(certs)
        connector = aiohttp.TCPConnector(ssl=ca.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(f"https://localhost:{port}/") as response:
                assert response.status == 200
                assert "Join a room" in await response.text()
            async with session.get(
                f"http://127.0.0.1:{http_port}/?room=standup", allow_redirects=False
            ) as response:
                assert response.status == 308
                assert response.headers["Location"] == f"https://127.0.0.1:{port}/?room=standup"
            # a peer is connected over wss:// when the signal comes
            transport = WebSocketTransport(f"wss://localhost:{port}/ws", session=session)
            policy = ReconnectPolicy(enabled=False)
            async with SignalingClient.connect(transport, room="r", reconnect=policy) as peer:
                assert peer.topology == "mesh"
                assert demo.children() == []
                status = await demo.stop(signum)
                with contextlib.suppress(ConnectionClosedError):
                    async with asyncio.timeout(10):
                        async for _event in peer:  # until the server's "going away"
                            pass
                assert peer.closed
    assert status == 0, "".join(demo.output)
    assert "Traceback" not in "".join(demo.output)


async def test_demo_reuses_its_certificate(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    for expected in ("created now", "reused"):
        async with (
            asyncio.timeout(TIMEOUT),
            _run(
                "demo",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--http-port",
                "0",
                "--cert-dir",
                str(certs),
            ) as demo,
        ):
            await demo.read_until("Ctrl-C")
            assert expected in "".join(demo.output)
            assert await demo.stop(signal.SIGINT) == 0


async def test_demo_without_tls_binds_loopback_only(tmp_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT), _run("demo", "--no-tls", "--port", "0") as demo:
        port = int((await demo.read_until(r"http://127\.0\.0\.1:(\d+)/")).group(1))
        await demo.read_until("Ctrl-C")
        assert "localhost only" in "".join(demo.output)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/config.json") as response,
        ):
            assert (await response.json())["demo"] is True
        assert await demo.stop(signal.SIGINT) == 0


def test_demo_without_tls_refuses_a_lan_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--no-tls", "--host", "192.0.2.7"]) == 2
    assert "127.0.0.1 only" in capsys.readouterr().err


def _free_port() -> int:
    # the config format wants a real port; a port just freed by the kernel is one
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _token_config(tmp_path: Path) -> Path:
    path = tmp_path / "serve.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {_free_port()}\ninsecure = true\n'
        '[auth]\nsecret_env = "RTCKIT_TEST_SERVE_SECRET"\n'
        '[[rooms.declare]]\nname = "hall"\n'
        '[logging]\nformat = "json"\n',
        encoding="utf-8",
    )
    return path


async def test_serve_runs_from_a_config_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = _token_config(tmp_path)
    os.environ["RTCKIT_TEST_SERVE_SECRET"] = "s" * 40
    try:
        async with asyncio.timeout(TIMEOUT), _run("serve", "--config", str(config)) as serve:
            found = await serve.read_until(r'"message": "serving.*"port": (\d+)')
            port = int(found.group(1))
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/config.json") as response,
            ):
                body = await response.json()
            assert body["auth"] == "token"
            assert body["rooms"] == [{"name": "hall", "topology": "mesh"}]
            assert await serve.stop(signal.SIGTERM) == 0
    finally:
        del os.environ["RTCKIT_TEST_SERVE_SECRET"]


def test_serve_check_and_bad_configurations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _token_config(tmp_path)
    assert main(["serve", "--config", str(config)]) == 2
    assert "RTCKIT_TEST_SERVE_SECRET is not set" in capsys.readouterr().err
    monkeypatch.setenv("RTCKIT_TEST_SERVE_SECRET", "s" * 40)
    assert main(["serve", "--config", str(config), "--check"]) == 0
    out = capsys.readouterr().out
    assert "auth: token" in out
    assert "hall (mesh)" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "eighty"\n', encoding="utf-8")
    assert main(["serve", "--config", str(bad)]) == 2
    assert "[server] port: expected an integer" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_readme_quickstart_runs_the_demo() -> None:
    """The README's Quickstart has two commands: install + ``rtckit demo``, then nox."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quickstart, flags=re.DOTALL)
    assert commands == ["pip install . && rtckit demo", "pip install nox && nox"]


def test_demo_refuses_a_topology_it_cannot_host(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtckit.server import app

    # an app without MCU rooms (as a build without numpy)
    monkeypatch.setattr(app, "APP_TOPOLOGIES", frozenset({"mesh", "sfu"}))
    assert main(["demo", "--topology", "mcu", "--no-tls", "--port", "0"]) == 2
    assert "--topology mcu" in capsys.readouterr().err
