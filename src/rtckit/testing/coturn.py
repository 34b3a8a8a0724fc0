"""A throwaway coturn on 127.0.0.1 for tests: :func:`run_loopback_coturn`.

Minimal and test-oriented: one ``turnserver`` child process with TURN REST authentication
(``--use-auth-secret``), plain UDP/TCP only (no TLS/DTLS), loopback peers allowed, a free
listening port, its own temporary directory for the user database, pid file and log. Full
coturn management for deployments is a different module.

Neither aioice nor Chromium offers ``127.0.0.1`` as a host candidate, but relayed candidates
from a coturn on ``127.0.0.1`` with ``--allow-loopback-peers`` work: two local peers with the
relay policy connect through it without any traffic leaving the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs

from rtckit.errors import SystemComponentError
from rtckit.turn import TurnRestAuth

__all__ = ["LoopbackCoturn", "run_loopback_coturn", "stun_binding_request"]

_MAGIC_COOKIE = 0x2112A442


@attrs.frozen(kw_only=True)
class LoopbackCoturn:
    """A running coturn started by :func:`run_loopback_coturn`."""

    host: str
    port: int
    secret: str = attrs.field(repr=False)
    realm: str
    pid: int
    log_path: Path

    @property
    def auth(self) -> TurnRestAuth:
        """A :class:`~rtckit.turn.TurnRestAuth` with this server's secret."""
        return TurnRestAuth(secrets=[self.secret])

    def uri(self, transport: str = "udp") -> str:
        """The ``turn:`` URI of this server for *transport* (``udp`` or ``tcp``)."""
        return f"turn:{self.host}:{self.port}?transport={transport}"

    def log(self) -> str:
        """The server's log so far (for test failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def stun_binding_request() -> tuple[bytes, bytes]:
    """Return a STUN Binding request (:rfc:`5389`) and its transaction id."""
    transaction_id = os.urandom(12)
    return struct.pack("!HHI", 0x0001, 0, _MAGIC_COOKIE) + transaction_id, transaction_id


class _StunProbe(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.answered = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        if len(data) >= 20 and data[8:20] == self.transaction_id and not self.answered.done():
            self.answered.set_result(None)


async def _wait_until_answering(
    host: str, port: int, process: asyncio.subprocess.Process, within: float
) -> None:
    request, transaction_id = stun_binding_request()
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(
        lambda: _StunProbe(transaction_id), remote_addr=(host, port)
    )
    try:
        async with asyncio.timeout(within):
            while True:
                if process.returncode is not None:
                    raise SystemComponentError(
                        f"turnserver exited with status {process.returncode} while starting"
                    )
                transport.sendto(request)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(probe.answered), 0.05)
                    return
    finally:
        transport.close()


def _free_port(host: str) -> int:
    """A port free for both UDP and TCP on *host* (coturn listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise SystemComponentError("no free UDP+TCP port on 127.0.0.1")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        async with asyncio.timeout(5):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def _start(
    executable: str,
    *,
    host: str,
    secret: str,
    realm: str,
    workdir: Path,
    startup_timeout: float,
    extra_args: Sequence[str],
) -> tuple[asyncio.subprocess.Process, LoopbackCoturn]:
    """Start one turnserver and wait until it answers; stop it again if it does not."""
    log_path = workdir / "turnserver.log"
    port = _free_port(host)
    relay_low = random.randrange(20000, 60000 - 200)
    argv = [
        executable,
        "-n",
        "--no-cli",
        f"--log-file={log_path}",
        "--simple-log",
        f"--listening-ip={host}",
        f"--relay-ip={host}",
        f"--listening-port={port}",
        f"--min-port={relay_low}",
        f"--max-port={relay_low + 199}",
        f"--realm={realm}",
        "--fingerprint",
        "--no-tls",
        "--no-dtls",
        "--no-rfc5780",
        "--no-multicast-peers",
        "--allow-loopback-peers",
        f"--pidfile={workdir / 'turnserver.pid'}",
        f"--userdb={workdir / 'turndb.sqlite'}",
        "--use-auth-secret",
        f"--static-auth-secret={secret}",
        *extra_args,
    ]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    server = LoopbackCoturn(
        host=host, port=port, secret=secret, realm=realm, pid=process.pid, log_path=log_path
    )
    try:
        await _wait_until_answering(host, port, process, startup_timeout)
    except TimeoutError:
        await _stop(process)
        raise SystemComponentError(
            f"turnserver on {host}:{port} did not answer within {startup_timeout} s; "
            f"log:\n{server.log()[-2000:]}"
        ) from None
    except SystemComponentError as exc:
        await _stop(process)
        raise SystemComponentError(f"{exc}; log:\n{server.log()[-2000:]}") from None
    except BaseException:
        await _stop(process)
        raise
    return process, server


@contextlib.asynccontextmanager
async def run_loopback_coturn(
    *,
    secret: str | None = None,
    realm: str = "rtckit.test",
    startup_timeout: float = 5.0,
    attempts: int = 3,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[LoopbackCoturn]:
    """Run coturn on 127.0.0.1 with TURN REST auth for the duration of the ``async with``.

    *secret* is coturn's ``static-auth-secret`` (random by default; it is visible on the
    process's command line, which is fine for tests only). Yields a :class:`LoopbackCoturn`
    once the server answers STUN; a start that fails (e.g. another process took the free port
    meanwhile) is retried up to *attempts* times. The process is terminated (by its pid) and its
    temporary directory removed on exit. Raises :class:`~rtckit.errors.SystemComponentError` if
    ``turnserver`` is missing or does not start.
    """
    executable = shutil.which(
        "turnserver", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    )
    if executable is None:
        raise SystemComponentError("turnserver is not installed (apt-get install coturn)")
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    if secret is None:
        secret = secrets.token_urlsafe(16)
    workdir = Path(tempfile.mkdtemp(prefix="rtckit-coturn-"))
    process: asyncio.subprocess.Process | None = None
    try:
        for attempt in range(1, attempts + 1):
            try:
                process, server = await _start(
                    executable,
                    host="127.0.0.1",
                    secret=secret,
                    realm=realm,
                    workdir=workdir,
                    startup_timeout=startup_timeout,
                    extra_args=extra_args,
                )
                break
            except SystemComponentError:
                if attempt == attempts:
                    raise
        yield server
    finally:
        if process is not None:
            await _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
