"""``rtckit serve`` cluster nodes as child processes, for the tests that kill or restart one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import aiohttp

from rtckit.coturn.process import _parent_death_signal
from rtckit.testing.coturn import free_port

__all__ = ["ServeNode", "env", "free_port", "write_serve_config"]

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    """This process' environment with the worktree's ``src`` first on ``PYTHONPATH``."""
    path = os.environ.get("PYTHONPATH")
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + path if path else "")}


def write_serve_config(
    path: Path,
    redis_url: str,
    port: int,
    *,
    namespace: str = "w",
    node_ttl: float = 2,
    extra: str = "",
    level: str = "warning",
) -> None:
    """A TOML file for ``rtckit serve``: plain HTTP on 127.0.0.1:*port*, open auth, logs from
    *level* up, the ``[cluster]`` on *redis_url*; *extra* is appended (more tables)."""
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ninsecure = true\n'
        f'[auth]\nmode = "open"\n[logging]\nlevel = "{level}"\n'
        f'[cluster]\nredis_url = "{redis_url}"\nnamespace = "{namespace}"\n'
        f"node_ttl = {node_ttl}\n{extra}"
    )


class ServeNode:
    """``rtckit serve --config`` in a child process, on the fixed port of its configuration;
    its stderr goes to *log* (appended across restarts)."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The signaling WebSocket's URL."""
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self, within: float = 30) -> None:
        """Start the node and wait until its ``/healthz`` says the backplane is up."""
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "rtckit", "serve", "--config", str(self.config)),
                env=env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                preexec_fn=_parent_death_signal(),
            )
        health = f"http://127.0.0.1:{self.port}/healthz"
        async with asyncio.timeout(within), aiohttp.ClientSession() as session:
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(f"rtckit serve exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(health) as response:
                        if (await response.json()).get("backplane") == "up":
                            return
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """``kill -9`` the node (by its PID) and reap it."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            await process.wait()

    async def terminate(self) -> int:
        """Send the node SIGTERM (by its PID) and return its exit status."""
        process, self.process = self.process, None
        assert process is not None, "not started"
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        return await process.wait()

    def stderr(self) -> str:
        """What the node (every run of it) wrote to stderr."""
        return self.log.read_text(errors="replace")
