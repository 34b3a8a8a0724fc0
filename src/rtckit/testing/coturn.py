"""A throwaway coturn on 127.0.0.1 for tests: :func:`run_loopback_coturn`.

A thin layer over :mod:`rtckit.coturn`: one :class:`~rtckit.coturn.CoturnProcess` with TURN
REST authentication, plain UDP/TCP only (no TLS/DTLS), loopback peers allowed
(``allow_loopback_peers``), every other internal network still denied, a free listening
port and a random relay port range.

Neither aioice nor Chromium offers ``127.0.0.1`` as a host candidate, but relayed candidates
from a coturn on ``127.0.0.1`` with loopback peers allowed work: two local peers with the
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
from collections.abc import AsyncIterator, Sequence

import attrs

from rtckit.coturn import CoturnConfig, CoturnProcess
from rtckit.errors import ConfigurationError, SystemComponentError
from rtckit.ice import IceConfig, IceTransportPolicy
from rtckit.ice.turn import TurnRestAuth

__all__ = ["LoopbackCoturn", "free_port", "run_loopback_coturn", "turnutils_uclient"]

_HOST = "127.0.0.1"


@attrs.frozen(kw_only=True)
class LoopbackCoturn:
    """A running coturn started by :func:`run_loopback_coturn`."""

    host: str
    port: int
    secret: str = attrs.field(repr=False)
    realm: str
    pid: int
    config: CoturnConfig = attrs.field(repr=False)
    """What coturn runs with."""
    process: CoturnProcess = attrs.field(repr=False, eq=False)
    """The running coturn."""

    @property
    def auth(self) -> TurnRestAuth:
        """A :class:`~rtckit.ice.turn.TurnRestAuth` with this server's secret."""
        return TurnRestAuth(secrets=[self.secret])

    def uri(self, transport: str = "udp") -> str:
        """The ``turn:`` URI of this server for *transport* (``udp`` or ``tcp``), explicit."""
        return self.config.uri("turn", transport).format(explicit=True)

    def ice_config(
        self,
        *,
        user: str = "rtckit-test",
        ttl: int | None = None,
        transport_policy: IceTransportPolicy | str = IceTransportPolicy.ALL,
    ) -> IceConfig:
        """What a client of this server uses (see :meth:`rtckit.coturn.CoturnConfig.ice_config`)."""
        return self.config.ice_config(user=user, ttl=ttl, transport_policy=transport_policy)

    def log(self) -> str:
        """The server's recent log lines (for test failure messages)."""
        return "\n".join(self.process.log_tail(200))


def free_port(host: str = _HOST) -> int:
    """A port free right now on *host* for both UDP and TCP (coturn listens on both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise SystemComponentError(f"no free UDP+TCP port on {host}")


def _extra_options(extra_args: Sequence[str]) -> list[str]:
    options = []
    for argument in extra_args:
        if not argument.startswith("--"):
            raise ConfigurationError(f"extra coturn argument {argument!r} is not '--name[=value]'")
        options.append(argument[2:])
    return options


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

    *secret* is coturn's ``static-auth-secret`` (random by default). *extra_args* are more
    ``--name=value`` coturn options. Yields a :class:`LoopbackCoturn` once the server answers
    STUN; a start that fails (e.g. another process took the free port meanwhile) is retried up
    to *attempts* times. coturn is stopped by its PID and its temporary directory removed on
    exit. Raises :class:`~rtckit.errors.SystemComponentError` if ``turnserver`` is missing or
    does not start.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    if secret is None:
        secret = secrets.token_urlsafe(16)
    extra_options = _extra_options(extra_args)
    for attempt in range(1, attempts + 1):
        relay_low = random.randrange(20000, 60000 - 200)
        config = CoturnConfig(
            realm=realm,
            static_auth_secrets=[secret],
            listening_ips=[_HOST],
            listening_port=free_port(),
            relay_ips=[_HOST],
            min_port=relay_low,
            max_port=relay_low + 199,
            allow_loopback_peers=True,
            extra_options=extra_options,
            startup_timeout=startup_timeout,
        )
        process = CoturnProcess(config)
        try:
            await process.start()
        except SystemComponentError:
            if attempt == attempts:
                raise
            continue
        try:
            assert process.pid is not None
            yield LoopbackCoturn(
                host=_HOST,
                port=config.listening_port,
                secret=secret,
                realm=realm,
                pid=process.pid,
                config=config,
                process=process,
            )
        finally:
            await process.aclose()
        return


async def turnutils_uclient(
    host: str,
    port: int,
    *,
    username: str,
    password: str | None = None,
    secret: str | None = None,
    messages: int = 2,
    timeout: float = 60.0,  # noqa: ASYNC109 - a bound on a whole child process
) -> tuple[int, str]:
    """Allocate, relay *messages* and check them with coturn's own ``turnutils_uclient``.

    An independent TURN client (neither aioice nor rtckit): give *password* for a credential
    computed elsewhere, or *secret* to let it compute the TURN REST credential itself for the
    user *username*. Returns its exit status (0: allocated and relayed; coturn's refusal prints
    ``Cannot complete Allocation``) and its output. Raises
    :class:`~rtckit.errors.SystemComponentError` if it is not installed or outlives *timeout*.
    """
    if (password is None) == (secret is None):
        raise ConfigurationError("give password= or secret=")
    executable = shutil.which(
        "turnutils_uclient", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])
    )
    if executable is None:
        raise SystemComponentError("turnutils_uclient is not installed (apt-get install coturn)")
    credential = ["-w", password] if password is not None else ["-W", str(secret)]
    process = await asyncio.create_subprocess_exec(
        executable,
        *("-y", "-c", "-n", str(messages), "-u", username, *credential, "-p", str(port), host),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        raise SystemComponentError(f"turnutils_uclient did not finish within {timeout} s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")
