"""A throwaway redis-server on 127.0.0.1 for tests: :func:`run_redis_server`.

No persistence (no RDB snapshot, no AOF), in a temporary directory, on a free loopback port,
stopped by its PID. :class:`RedisServer` can be stopped and started again on the same port
(an outage) or paused with ``SIGSTOP`` and resumed (a server that hangs)::

    async with run_redis_server() as server:
        config = RedisBackplaneConfig(url=server.url)
        ...
        await server.stop()  # Redis is gone
        await server.start()  # back, empty, same port
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from rtckit.coturn.process import _parent_death_signal
from rtckit.errors import SystemComponentError
from rtckit.testing.coturn import free_port

__all__ = ["INSTALL_HINT", "RedisServer", "run_redis_server"]

INSTALL_HINT = "apt-get install redis-server"
"""How to install redis-server on Debian and Ubuntu."""

_HOST = "127.0.0.1"


async def _ping(port: int) -> bool:
    """Whether a Redis answers ``PING`` on *port* (plain RESP, no client library)."""
    try:
        reader, writer = await asyncio.open_connection(_HOST, port)
    except OSError:
        return False
    try:
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        await writer.drain()
        return await reader.readline() == b"+PONG\r\n"
    except OSError:
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class RedisServer:
    """A redis-server child process on ``127.0.0.1:port`` (see :func:`run_redis_server`)."""

    def __init__(self, executable: str, directory: Path, *, startup_timeout: float) -> None:
        self._executable = executable
        self._directory = directory
        self._startup_timeout = startup_timeout
        self.port = free_port(_HOST)
        """The TCP port, the same across :meth:`stop` and :meth:`start`."""
        self._process: asyncio.subprocess.Process | None = None
        self._paused = False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs."""
        return self._process.pid if self._process is not None else None

    def log(self) -> str:
        """The server's log (for test failure messages)."""
        path = self._directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def start(self) -> None:
        """Start the server (again) on :attr:`port` and wait until it answers ``PING``."""
        if self._process is not None:
            raise RuntimeError("redis-server is running")
        argv = [
            self._executable,
            *("--bind", _HOST, "--port", str(self.port), "--dir", str(self._directory)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--logfile", str(self._directory / "redis.log")),
        ]
        self._process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_parent_death_signal(),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout
        while not await _ping(self.port):
            if self._process.returncode is not None or loop.time() > deadline:
                await self.stop()
                raise SystemComponentError(
                    f"redis-server did not answer on {_HOST}:{self.port} within "
                    f"{self._startup_timeout} s:\n{self.log()[-2000:]}"
                )
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop the server by its PID (resumed first if paused) and wait for it to exit.
        Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if self._paused:
                    os.kill(process.pid, signal.SIGCONT)
                process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        self._paused = False

    def pause(self) -> None:
        """Freeze the server (``SIGSTOP``): connections stay open, nothing is answered."""
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        os.kill(self._process.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused server go on (``SIGCONT``)."""
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        os.kill(self._process.pid, signal.SIGCONT)
        self._paused = False


@contextlib.asynccontextmanager
async def run_redis_server(
    *, executable: str = "redis-server", startup_timeout: float = 10.0
) -> AsyncIterator[RedisServer]:
    """Run redis-server on a free port of 127.0.0.1 for the duration of the ``async with``.

    Raises :class:`~rtckit.errors.SystemComponentError` if *executable* is missing or does not
    start. The server is stopped by its PID and its directory removed on exit.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    path = shutil.which(executable, path=search)
    if path is None:
        raise SystemComponentError(f"{executable} was not found: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="rtckit-redis-") as directory:
        server = RedisServer(path, Path(directory), startup_timeout=startup_timeout)
        try:
            await server.start()
            yield server
        finally:
            await server.stop()
