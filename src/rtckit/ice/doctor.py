"""``rtckit doctor``: probe STUN and TURN servers the way a WebRTC peer would use them.

The servers are :class:`rtckit.ice.IceServerUri` (``stun:``, ``stuns:``, ``turn:``,
``turns:``, parsed by :func:`rtckit.ice.parse_uri`) or a whole :class:`rtckit.ice.IceConfig`,
each server probed with its own credential. For each, :func:`probe_server` checks:

* reachability (a STUN Binding with :func:`rtckit.stun.server.stun_binding`, or a TURN
  Allocate with aioice's TURN client, answered within the timeout);
* for TURN: authentication (a long-term credential, or a TURN REST credential issued by
  :class:`rtckit.ice.turn.TurnRestAuth` from the shared secret), allocation, the relayed
  address, and that the server lets the relay send to a public peer (a ChannelBind toward
  the client's own reflexive address);
* the public (server-reflexive) address the server saw.

Each failure gets a likely cause: 401 = wrong secret/password, expired REST credential or
clock skew; timeout = firewall, wrong host/port or server down; 403 = the server denies the
peer address; TLS error = certificate not trusted or wrong name; refused = nothing listens.

:func:`run_doctor` probes every server concurrently (each bounded by
:attr:`DoctorConfig.timeout`), reports progress as each probe starts and ends, and returns a
:class:`DoctorReport` whose :attr:`~DoctorReport.ok` is the exit rule of ``rtckit doctor``: if
any TURN URI was given, ok means at least one TURN server gave a working relay (a relay path is
available); with only STUN URIs, ok means at least one STUN server answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import attrs

from rtckit import _aiortc
from rtckit.errors import ConfigurationError
from rtckit.ice.config import IceConfig
from rtckit.ice.servers import IceServerUri, TurnTransport, UriScheme, parse_uri
from rtckit.stun.codec import MessageClass
from rtckit.stun.server import stun_binding

__all__ = [
    "DoctorConfig",
    "DoctorReport",
    "DoctorServer",
    "ProbeResult",
    "format_report",
    "probe_server",
    "run_doctor",
    "servers_from_ice",
    "with_all_transports",
]

Verdict = Literal["ok", "fail"]


def _to_uri(value: IceServerUri | str) -> IceServerUri:
    return value if isinstance(value, IceServerUri) else parse_uri(value)


def _default_transport(server: DoctorServer) -> Literal["udp", "tcp"]:
    if server.uri.transport is not None:
        return "tcp" if server.uri.transport is TurnTransport.TCP else "udp"
    return "tcp" if server.uri.scheme.is_secure else "udp"


@attrs.frozen(kw_only=True)
class DoctorServer:
    """One probe: a server URI, how to reach it, and its own credential.

    *transport* is how the client reaches the server: a TURN URI's own ``?transport=``, TCP
    for ``stuns:``, and UDP (default) or TCP for ``stun:`` (whose URI has no transport,
    :rfc:`7064`). A server without a credential uses :class:`DoctorConfig`'s.
    """

    uri: IceServerUri = attrs.field(converter=_to_uri)
    transport: Literal["udp", "tcp"] = attrs.field(
        default=attrs.Factory(_default_transport, takes_self=True)
    )
    username: str | None = None
    credential: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.transport not in ("udp", "tcp"):
            raise ConfigurationError(f"transport must be udp or tcp, not {self.transport!r}")
        if self.uri.scheme.is_secure and self.transport != "tcp":
            raise ConfigurationError(
                f"{self.uri}: rtckit doctor cannot probe DTLS (TLS runs over TCP)"
            )
        if self.uri.is_turn and self.transport != str(self.uri.transport):
            raise ConfigurationError(
                f"{self.uri}: a TURN URI's transport is its ?transport= ({self.uri.transport})"
            )

    @property
    def label(self) -> str:
        """``udp``, ``tcp`` or ``tls``: how the client reaches the server."""
        return "tls" if self.uri.scheme.is_secure else self.transport

    @property
    def name(self) -> str:
        """The URI as shown in reports, with its port (and TURN transport) spelled out."""
        return self.uri.format(explicit=True)


def servers_from_ice(config: IceConfig) -> tuple[DoctorServer, ...]:
    """One :class:`DoctorServer` per URI of *config*, with its server's credential."""
    return tuple(
        DoctorServer(uri=uri, username=server.username, credential=server.credential)
        for server in config.servers
        for uri in server.urls
    )


@attrs.frozen(kw_only=True)
class DoctorConfig:
    """Settings of one doctor run."""

    #: Bound, in seconds, on each server's whole probe.
    timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    #: How long to wait for a refused ChannelBind after the allocation, in seconds.
    permission_wait: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    #: The TURN credential, long-term or a REST credential issued by
    #: :meth:`rtckit.ice.turn.TurnRestAuth.issue` from the shared secret.
    username: str | None = None
    credential: str | None = attrs.field(default=None, repr=False)
    #: Extra CA bundle (PEM) trusted for ``stuns:``/``turns:``; else the default store.
    ca_file: str | None = None


@attrs.frozen(kw_only=True)
class ProbeResult:
    """What probing one server found."""

    server: DoctorServer
    verdict: Verdict
    #: Short description of what worked, or what failed.
    detail: str
    #: Likely cause of a failure (empty when ok).
    cause: str = ""
    #: STUN/TURN error code of a refusal, if any.
    error_code: int | None = None
    reflexive_address: tuple[str, int] | None = None
    relayed_address: tuple[str, int] | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


@attrs.frozen(kw_only=True)
class DoctorReport:
    """Every probe result, and the verdict for the whole configuration."""

    results: tuple[ProbeResult, ...]

    @property
    def relay_available(self) -> bool:
        """Whether at least one TURN server gave a working relay."""
        return any(r.ok and r.server.uri.is_turn for r in self.results)

    @property
    def stun_available(self) -> bool:
        """Whether at least one server (STUN or TURN) reported a reflexive address."""
        return any(r.reflexive_address is not None for r in self.results)

    @property
    def ok(self) -> bool:
        """The exit rule of ``rtckit doctor``, a relay if TURN was asked for, else STUN."""
        if any(r.server.uri.is_turn for r in self.results):
            return self.relay_available
        return self.stun_available


_CAUSES = {
    400: "400 Bad Request: the server did not understand the request (not a STUN/TURN server?)",
    401: "401 Unauthorized: wrong secret or password, expired REST credential, "
    "or clock skew between this machine and the server",
    403: "403 Forbidden: the server refuses to relay to this peer address "
    "(denied-peer-ip, or loopback peers not allowed)",
    420: "420 Unknown Attribute: the server is not a TURN server or is too old",
    437: "437 Allocation Mismatch: a stale allocation from this address; retry later",
    438: "438 Stale Nonce: the server lost its state; retry",
    441: "441 Wrong Credentials: the username changed within an allocation",
    442: "442 Unsupported Transport Protocol",
    486: "486 Allocation Quota Reached: too many allocations for this user",
    508: "508 Insufficient Capacity: the server has no relay ports left",
}


class _StunResponseError(Exception):
    """A STUN server answered a Binding request with an error response."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def _diagnose(exc: BaseException, server: DoctorServer, timeout: float) -> tuple[str, int | None]:
    """Likely cause of *exc*, and its STUN error code if any."""
    refusal = (
        (exc.code, exc.reason) if isinstance(exc, _StunResponseError) else _aiortc.stun_error(exc)
    )
    if refusal is not None:
        code, reason = refusal
        return _CAUSES.get(code, f"{code} {reason}: refused by the server"), code
    uri = server.uri
    if isinstance(exc, TimeoutError) or _aiortc.is_stun_timeout(exc):
        return (
            f"no answer within {timeout:g} s: a firewall drops {server.label.upper()} to port "
            f"{uri.port}, wrong host or port, or the server is down",
            None,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not trusted or not valid for {uri.host}: "
            f"{exc.verify_message} (pass its CA with --ca-file)",
            None,
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason}): is this port really TLS?", None
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"connection refused: nothing listens on {server.label.upper()} port {uri.port}",
            None,
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {uri.host}: {exc.strerror or exc}", None
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}", None
    return f"{type(exc).__name__}: {exc}", None


async def _stun(
    server: DoctorServer, ssl_context: ssl.SSLContext | None, budget: float
) -> tuple[str, int]:
    """The reflexive address a STUN server reports.

    Over UDP, requests go out for 80% of *budget* seconds (every 0.5 s at most), so that a
    host that said *port unreachable* is told apart from silence before the probe's deadline.
    """
    uri = server.uri
    interval = min(0.5, budget / 5)
    response = await stun_binding(
        uri.host,
        uri.port,
        transport=server.transport,
        retransmit_interval=interval,
        retransmissions=max(2, int(0.8 * budget / interval)) - 1,
        tcp_timeout=budget,
        ssl_context=ssl_context,
    )
    error = response.error_code()
    if response.message_class is MessageClass.ERROR_RESPONSE:
        code, reason = error if error is not None else (0, "no error code")
        raise _StunResponseError(code, reason)
    address = response.mapped_address()
    if address is None:
        raise _StunResponseError(0, "the answer has no XOR-MAPPED-ADDRESS")
    return address


class _RelaySink(asyncio.DatagramProtocol):
    """Receives what the TURN relay hands over; records refused sends."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.refused = asyncio.Event()
        self.closed = asyncio.Event()

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)
        self.refused.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def _turn(
    server: DoctorServer, config: DoctorConfig, ssl_context: ssl.SSLContext | None
) -> tuple[tuple[str, int], tuple[str, int], str | None, float]:
    """Allocate on *server*; return (reflexive, relayed, permission refusal, time allocated)."""
    assert server.username is not None
    assert server.credential is not None
    endpoint = _aiortc.turn_endpoint(
        _RelaySink,
        server=server.uri.address,
        username=server.username,
        password=server.credential,
        ssl=ssl_context if ssl_context is not None else False,
        transport=server.transport,
    )
    async with endpoint as (relay, sink):
        allocated = time.monotonic()
        reflexive: tuple[str, int] = relay.get_extra_info("related_address")
        relayed: tuple[str, int] = relay.get_extra_info("sockname")
        # Ask the relay to send toward a public peer (our own reflexive address): a refusal
        # arrives as error_received() within a round trip.
        relay.sendto(b"rtckit-doctor", (reflexive[0], 9))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.permission_wait):
                await sink.refused.wait()
        refusal: str | None = None
        for exc in sink.errors:
            refusal = _diagnose(exc, server, config.timeout)[0]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await sink.closed.wait()
    return reflexive, relayed, refusal, allocated


def _ssl_context(config: DoctorConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=config.ca_file)


async def probe_server(
    server: DoctorServer | IceServerUri | str, config: DoctorConfig
) -> ProbeResult:
    """Probe one server; never raises for a server-side failure (it is in the result).

    A server without a credential of its own uses *config*'s. Raises
    :class:`~rtckit.errors.ConfigurationError` for a bad URI or a TURN server without one.
    """
    server = _target(server, config)
    if server.uri.is_turn and (server.username is None or server.credential is None):
        raise ConfigurationError(
            f"{server.name}: a TURN server needs a username and credential (or a REST secret)"
        )
    ssl_context = _ssl_context(config) if server.uri.scheme.is_secure else None
    started = time.monotonic()
    try:
        async with asyncio.timeout(config.timeout):
            if server.uri.is_turn:
                reflexive, relayed, refusal, finished = await _turn(server, config, ssl_context)
            else:
                reflexive = await _stun(server, ssl_context, config.timeout)
                relayed, refusal, finished = None, None, time.monotonic()
    except (Exception, TimeoutError) as exc:  # noqa: BLE001 - every failure is diagnosed
        cause, code = _diagnose(exc, server, config.timeout)
        return ProbeResult(
            server=server,
            verdict="fail",
            detail="refused" if code is not None else "unreachable",
            cause=cause,
            error_code=code,
            elapsed=time.monotonic() - started,
        )
    elapsed = finished - started  # the permission wait is not the server's latency
    reflexive_text = f"{reflexive[0]}:{reflexive[1]}"
    if not server.uri.is_turn:
        return ProbeResult(
            server=server,
            verdict="ok",
            detail=f"reflexive {reflexive_text}",
            reflexive_address=reflexive,
            elapsed=elapsed,
        )
    assert relayed is not None
    detail = f"relay {relayed[0]}:{relayed[1]}, reflexive {reflexive_text}"
    return ProbeResult(
        server=server,
        verdict="fail" if refusal else "ok",
        detail=detail + (", relay refused" if refusal else ""),
        cause=refusal or "",
        error_code=403 if refusal and refusal.startswith("403") else None,
        reflexive_address=reflexive,
        relayed_address=relayed,
        elapsed=elapsed,
    )


def with_all_transports(servers: Iterable[DoctorServer]) -> tuple[DoctorServer, ...]:
    """*servers* plus, for each ``stun:``/``turn:`` URI, its twin over the other transport.

    ``turn:host`` (UDP) adds ``turn:host?transport=tcp`` and the reverse; ``stun:host`` is
    probed over UDP and TCP; TLS URIs are kept as they are (TLS needs its own port).
    Duplicates are dropped, order is kept.
    """
    result: list[DoctorServer] = []
    seen: set[tuple[UriScheme, str, int, str]] = set()
    for server in servers:
        variants = [server]
        if not server.uri.scheme.is_secure:
            other: Literal["udp", "tcp"] = "tcp" if server.transport == "udp" else "udp"
            uri = server.uri
            if uri.is_turn:
                uri = attrs.evolve(uri, transport=other)
            variants.append(attrs.evolve(server, uri=uri, transport=other))
        for variant in variants:
            key = (variant.uri.scheme, variant.uri.host, variant.uri.port, variant.transport)
            if key not in seen:
                seen.add(key)
                result.append(variant)
    return tuple(result)


def _target(server: str | IceServerUri | DoctorServer, config: DoctorConfig) -> DoctorServer:
    if not isinstance(server, DoctorServer):
        server = DoctorServer(uri=server)
    if server.username is None and server.credential is None:
        return attrs.evolve(server, username=config.username, credential=config.credential)
    return server


async def run_doctor(
    servers: IceConfig | Sequence[str | IceServerUri | DoctorServer],
    config: DoctorConfig,
    *,
    progress: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Probe every server concurrently; call *progress* with a line as each one starts/ends.

    *servers* is an :class:`~rtckit.ice.IceConfig` (each server with its own credential) or
    URIs and :class:`DoctorServer` objects; one without a credential of its own uses
    *config*'s.
    """
    if isinstance(servers, IceConfig):
        servers = servers_from_ice(servers)
    targets = [_target(s, config) for s in servers]
    if not targets:
        raise ConfigurationError("give at least one stun:/turn: URI")
    for target in targets:
        if target.uri.is_turn and (target.username is None or target.credential is None):
            raise ConfigurationError(
                f"{target.name} needs a credential (--username/--credential or --secret)"
            )
    total = len(targets)
    done = 0

    async def one(target: DoctorServer) -> ProbeResult:
        nonlocal done
        if progress is not None:
            progress(f"probing {target.name} over {target.label} ...")
        result = await probe_server(target, config)
        done += 1
        if progress is not None:
            progress(
                f"[{done}/{total}] {target.name} over {target.label}: "
                f"{result.verdict.upper()} ({result.elapsed * 1000:.0f} ms)"
            )
        return result

    results = await asyncio.gather(*(one(t) for t in targets))
    return DoctorReport(results=tuple(results))


def format_report(report: DoctorReport) -> str:
    """The report as a plain-text table with a verdict line at the end."""
    header = ("SERVER", "VIA", "VERDICT", "TIME", "DETAILS")
    rows = [
        (
            r.server.name,
            r.server.label,
            r.verdict.upper(),
            f"{r.elapsed * 1000:.0f} ms",
            r.detail + (f" -- likely cause: {r.cause}" if r.cause else ""),
        )
        for r in report.results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in [header, *rows]
    ]
    if any(r.server.uri.is_turn for r in report.results):
        verdict = "relay path available" if report.relay_available else "NO relay path available"
    else:
        verdict = "STUN reachable" if report.stun_available else "NO STUN server reachable"
    lines.append("")
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)
