"""Run coturn's ``turnserver`` as a child process, with a :class:`~rtckit.coturn.CoturnConfig`.

:class:`~rtckit.coturn.CoturnProcess` and :func:`~rtckit.coturn.run_coturn` start
``turnserver``, wait until it answers a STUN Binding request on its own listening address, and
stop it by PID; a *spawn* hook starts it elsewhere, e.g. in a network namespace of
:class:`rtckit.testing.natlab.NatLab`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from rtckit.coturn.config import CoturnConfig, _client_host
from rtckit.errors import ConfigurationError, SystemComponentError
from rtckit.stun.server import SocketFactory, stun_binding

__all__ = [
    "INSTALL_HINT",
    "CoturnProcess",
    "Spawn",
    "run_coturn",
]

INSTALL_HINT = "apt-get install coturn"
"""How to install coturn on Debian and Ubuntu."""


Spawn = Callable[[Sequence[str]], Awaitable[asyncio.subprocess.Process]]
"""Starts a command line as a child process whose standard output is a pipe (standard error
merged into it or discarded), e.g. inside a network namespace
(``lambda argv: lab.spawn("pub", argv, stderr=asyncio.subprocess.STDOUT)``)."""


_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when rtckit's process dies.

    Without it, a ``kill -9`` of the Python process would leave coturn running. Resolved
    before the fork, so the child only makes one system call. ``None`` off Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    death_signal = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, death_signal)

    return preexec


def _find_executable(name: str) -> str:
    if os.sep in name:
        if Path(name).is_file() and os.access(name, os.X_OK):
            return name
        found = None
    else:
        search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
        found = shutil.which(name, path=search)
    if found is None:
        raise SystemComponentError(
            f"coturn's {name!r} was not found; install coturn: {INSTALL_HINT}"
        )
    return found


class CoturnProcess:
    """coturn as a child process: started in a private temp dir, stopped by PID.

    .. code-block:: python

        config = CoturnConfig(realm="example.org", static_auth_secrets=[secret])
        async with CoturnProcess(config) as turn:
            print(turn.pid, config.urls())

    :meth:`start` writes ``turnserver.conf`` (mode 0600; with a pidfile, a SQLite userdb and
    logging to stdout) into a fresh temp dir, runs ``turnserver -c <conf>`` (``-c`` also keeps
    coturn from reading ``/etc/turnserver.conf``; never add ``-n``, with which coturn ignores
    ``-c``), and returns once coturn answers a STUN Binding request on its first listening
    address. Raises :class:`~rtckit.errors.SystemComponentError` if coturn is not installed
    (with the install hint), exits early, or does not answer within ``startup_timeout`` (with
    the log tail).

    *spawn* starts the command line elsewhere, e.g. in a network namespace (see
    :data:`~rtckit.coturn.process.Spawn`); *socket_factory* then makes the probe's sockets where
    coturn listens (:meth:`rtckit.testing.natlab.NatLab.run_coturn` passes both). By default
    coturn is a plain child process.

    :meth:`aclose` stops coturn by its PID: SIGTERM, then SIGKILL after ``stop_timeout``. On
    Linux a coturn started without *spawn* also gets SIGTERM if the Python process dies
    without closing it (even by ``kill -9``), so no orphan keeps the ports (Linux sends it
    when the thread that started coturn ends: start it from the thread running the event
    loop, as asyncio does).
    """

    def __init__(
        self,
        config: CoturnConfig,
        *,
        log_lines: int = 200,
        on_log: Callable[[str], None] | None = None,
        spawn: Spawn | None = None,
        socket_factory: SocketFactory | None = None,
    ) -> None:
        self.config = config
        self._log: collections.deque[str] = collections.deque(maxlen=log_lines)
        self._on_log = on_log
        self._spawn = spawn
        self._socket_factory = socket_factory
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._directory: Path | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The PID of ``turnserver`` once started."""
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """coturn's exit status once it has exited, else ``None``."""
        return None if self._process is None else self._process.returncode

    @property
    def config_path(self) -> Path | None:
        """The ``turnserver.conf`` written for this run (removed by :meth:`aclose`)."""
        return None if self._directory is None else self._directory / "turnserver.conf"

    def log_tail(self, lines: int = 30) -> list[str]:
        """The last *lines* lines coturn logged."""
        return list(self._log)[-lines:]

    async def start(self) -> None:
        """Start coturn and wait until it answers (see the class docstring)."""
        if self._process is not None or self._closed:
            raise SystemComponentError("a CoturnProcess is started once")
        if not (self.config.udp or self.config.tcp):
            raise ConfigurationError(
                "CoturnProcess checks coturn is up over UDP or TCP: enable one of them"
            )
        executable = _find_executable(self.config.executable)
        for path in (self.config.tls_cert, self.config.tls_key):
            if path is not None and not path.is_file():
                raise ConfigurationError(f"TLS file {path} does not exist")
        self._directory = Path(tempfile.mkdtemp(prefix="rtckit-coturn-"))
        runtime: list[tuple[str, str | None]] = [
            ("pidfile", str(self._directory / "turnserver.pid")),
            ("userdb", str(self._directory / "turndb.sqlite")),
            ("log-file", "stdout"),
            ("simple-log", None),
        ]
        conf = self._directory / "turnserver.conf"
        descriptor = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(self.config.render(runtime))
        try:
            self._process = await self._launch(executable, conf)
            self._reader = asyncio.create_task(self._read_log(self._process))
            await self._wait_ready(self._process)
        except BaseException:
            await self.aclose()
            raise

    async def _launch(self, executable: str, conf: Path) -> asyncio.subprocess.Process:
        if self._spawn is None:
            return await asyncio.create_subprocess_exec(
                executable,
                "-c",
                str(conf),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self._directory,
                preexec_fn=_parent_death_signal(),
            )
        process = await self._spawn([executable, "-c", str(conf)])
        if process.stdout is None:
            process.kill()
            await process.wait()
            raise ConfigurationError("a CoturnProcess spawn hook must pipe stdout")
        return process

    async def _read_log(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            self._log.append(text)
            if self._on_log is not None:
                self._on_log(text)

    def _describe_failure(self, what: str) -> SystemComponentError:
        tail = "\n".join(self.log_tail())
        name = Path(self.config.executable).name
        return SystemComponentError(f"coturn ({name}) {what}; last log lines:\n{tail}")

    async def _wait_ready(self, process: asyncio.subprocess.Process) -> None:
        config = self.config
        host = _client_host(config.listening_ips[0])
        transport: Literal["udp", "tcp"] = "udp" if config.udp else "tcp"
        port = config.listening_port
        exited = asyncio.create_task(process.wait())
        probe: asyncio.Task[Any] | None = None
        try:
            async with asyncio.timeout(config.startup_timeout):
                while not exited.done():
                    probe = asyncio.create_task(
                        stun_binding(
                            host,
                            port,
                            transport=transport,
                            retransmit_interval=0.05,
                            retransmissions=3,
                            tcp_timeout=1.0,
                            socket_factory=self._socket_factory,
                        )
                    )
                    await asyncio.wait({probe, exited}, return_when=asyncio.FIRST_COMPLETED)
                    if probe.done() and probe.exception() is None:
                        return
                    if not exited.done():
                        await asyncio.sleep(0.05)
                if self._reader is not None:  # let the last log lines arrive
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1):
                            await asyncio.shield(self._reader)
                raise self._describe_failure(
                    f"exited with status {process.returncode} before answering"
                )
        except TimeoutError:
            raise self._describe_failure(
                f"did not answer STUN on {transport} {host}:{port} "
                f"within {config.startup_timeout} s"
            ) from None
        finally:
            for task in (probe, exited):
                if task is not None and not task.done():
                    task.cancel()
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task

    async def wait(self) -> int:
        """Wait until coturn exits by itself; return its exit status."""
        if self._process is None:
            raise SystemComponentError("coturn was not started")
        return await self._process.wait()

    async def aclose(self) -> None:
        """Stop coturn (SIGTERM, then SIGKILL after ``stop_timeout``); remove the temp dir.

        Safe to call twice.
        """
        if self._closed:
            return
        self._closed = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                async with asyncio.timeout(self.config.stop_timeout):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._reader is not None:
            try:
                async with asyncio.timeout(2):
                    await asyncio.shield(self._reader)
            except TimeoutError:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def run_coturn(
    config: CoturnConfig,
    *,
    on_log: Callable[[str], None] | None = None,
    spawn: Spawn | None = None,
    socket_factory: SocketFactory | None = None,
) -> AsyncIterator[CoturnProcess]:
    """Run coturn for the duration of an ``async with`` block (see :class:`CoturnProcess`)."""
    async with CoturnProcess(
        config, on_log=on_log, spawn=spawn, socket_factory=socket_factory
    ) as process:
        yield process
