"""``rtckit doctor``: probe STUN and TURN servers the way a WebRTC peer would use them.

For each ICE server URI (``stun:``, ``stuns:``, ``turn:``, ``turns:``, with ``?transport=udp``
or ``tcp``), :func:`probe_server` uses aioice's own STUN and TURN client code to check:

* reachability (a STUN Binding, or a TURN Allocate, answered within the timeout);
* for TURN: authentication (long-term credential or a TURN REST credential minted from the
  shared secret), allocation, the relayed address, and that the server lets the relay send to
  a public peer (a ChannelBind toward the client's own reflexive address);
* the public (server-reflexive) address the server saw.

Each failure gets a likely cause: 401 = wrong secret/password, expired REST credential or
clock skew; timeout = firewall, wrong host/port or server down; 403 = the server denies the
peer address; TLS error = certificate not trusted or wrong name; refused = nothing listens.

:func:`run_doctor` probes every server concurrently (each bounded by
:attr:`DoctorConfig.timeout`) and returns a :class:`DoctorReport` whose :attr:`~DoctorReport.ok`
is the exit rule of ``rtckit doctor``: if any TURN URI was given, ok means at least one TURN
server gave a working relay (a relay path is available); with only STUN URIs, ok means at least
one STUN server answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from typing import Literal, cast
from urllib.parse import parse_qs

import aioice.stun
import aioice.turn
import attrs

from rtckit.errors import ConfigurationError

__all__ = [
    "DoctorConfig",
    "DoctorReport",
    "DoctorServer",
    "IceServerUri",
    "ProbeResult",
    "format_report",
    "load_ice_config",
    "mint_rest_credential",
    "parse_ice_uri",
    "probe_server",
    "run_doctor",
    "with_all_transports",
]

Verdict = Literal["ok", "fail"]

_DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "stuns": 5349, "turns": 5349}


@attrs.frozen(kw_only=True)
class IceServerUri:
    """A parsed ``stun:``/``stuns:``/``turn:``/``turns:`` URI (RFC 7064, RFC 7065)."""

    uri: str
    scheme: Literal["stun", "stuns", "turn", "turns"]
    host: str
    port: int
    #: ``"udp"`` or ``"tcp"`` (the TLS schemes are always ``"tcp"``).
    transport: Literal["udp", "tcp"]

    @property
    def is_turn(self) -> bool:
        return self.scheme in ("turn", "turns")

    @property
    def secure(self) -> bool:
        return self.scheme in ("stuns", "turns")

    @property
    def label(self) -> str:
        """``udp``, ``tcp`` or ``tls``: how the client reaches the server."""
        return "tls" if self.secure else self.transport


def parse_ice_uri(uri: str) -> IceServerUri:
    """Parse one ICE server URI; raise :class:`~rtckit.errors.ConfigurationError` if bad.

    Kept minimal on purpose: the one place to switch to the parser of ``rtckit.ice``.
    """
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme not in _DEFAULT_PORTS:
        raise ConfigurationError(f"ICE server URI {uri!r}: scheme must be stun/stuns/turn/turns")
    hostport, _, query = rest.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    transports = params.pop("transport", ["tcp" if scheme.endswith("s") else "udp"])
    if params or len(transports) != 1 or transports[0] not in ("udp", "tcp"):
        raise ConfigurationError(f"ICE server URI {uri!r}: only ?transport=udp|tcp is allowed")
    transport = transports[0]
    if scheme.endswith("s") and transport != "tcp":
        raise ConfigurationError(f"ICE server URI {uri!r}: TLS runs over TCP only")
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
        if not bracket or (tail and not tail.startswith(":")):
            raise ConfigurationError(f"ICE server URI {uri!r}: bad IPv6 literal")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigurationError(f"ICE server URI {uri!r}: bad IPv6 literal") from None
    else:
        host, _, port_text = hostport.partition(":")
    if not host or "/" in host or "@" in host:
        raise ConfigurationError(f"ICE server URI {uri!r}: missing or bad host")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigurationError(f"ICE server URI {uri!r}: bad port {port_text!r}")
        port = int(port_text)
    else:
        port = _DEFAULT_PORTS[scheme]
    return IceServerUri(
        uri=uri,
        scheme=scheme,  # type: ignore[arg-type]
        host=host,
        port=port,
        transport=transport,  # type: ignore[arg-type]
    )


@attrs.frozen(kw_only=True)
class DoctorServer:
    """A server to probe with its own credential (overriding :class:`DoctorConfig`'s)."""

    uri: IceServerUri
    username: str | None = None
    credential: str | None = None


def load_ice_config(text: str) -> tuple[DoctorServer, ...]:
    """Read an ICE configuration in the browser's JSON shape.

    Either ``{"iceServers": [...]}`` or the list itself; each entry has ``urls`` (a string or a
    list) and optionally ``username`` and ``credential``. (The place to switch to the
    configuration objects of ``rtckit.ice``.)
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"ICE configuration is not JSON: {exc}") from exc
    entries = data.get("iceServers") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ConfigurationError("ICE configuration: expected a list of iceServers")
    servers: list[DoctorServer] = []
    for entry in entries:
        if not isinstance(entry, dict) or "urls" not in entry:
            raise ConfigurationError(f"ICE configuration: entry {entry!r} has no urls")
        urls = entry["urls"] if isinstance(entry["urls"], list) else [entry["urls"]]
        username, credential = entry.get("username"), entry.get("credential")
        if not all(isinstance(v, str | None) for v in (username, credential)):
            raise ConfigurationError("ICE configuration: username/credential must be strings")
        for url in urls:
            if not isinstance(url, str):
                raise ConfigurationError(f"ICE configuration: url {url!r} is not a string")
            servers.append(
                DoctorServer(uri=parse_ice_uri(url), username=username, credential=credential)
            )
    return tuple(servers)


def mint_rest_credential(
    secret: str, *, user: str = "rtckit-doctor", ttl: float = 600.0, now: float | None = None
) -> tuple[str, str]:
    """A TURN REST credential ``(username, password)`` for coturn's ``use-auth-secret``.

    ``username = "<expiry unix time>:<user>"``, ``password = base64(HMAC-SHA1(secret,
    username))``. (Kept local so that ``rtckit.turn`` can replace it.)
    """
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@attrs.frozen(kw_only=True)
class DoctorConfig:
    """Settings of one doctor run."""

    #: Bound, in seconds, on each server's whole probe.
    timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    #: How long to wait for a refused ChannelBind after the allocation, in seconds.
    permission_wait: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    #: Long-term credential for TURN (or minted from a secret by the caller).
    username: str | None = None
    credential: str | None = None
    #: Extra CA bundle (PEM) trusted for ``stuns:``/``turns:``; else the default store.
    ca_file: str | None = None


@attrs.frozen(kw_only=True)
class ProbeResult:
    """What probing one server found."""

    server: IceServerUri
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
        return any(r.ok and r.server.is_turn for r in self.results)

    @property
    def stun_available(self) -> bool:
        """Whether at least one server (STUN or TURN) reported a reflexive address."""
        return any(r.reflexive_address is not None for r in self.results)

    @property
    def ok(self) -> bool:
        """The exit rule of ``rtckit doctor``, a relay if TURN was asked for, else STUN."""
        if any(r.server.is_turn for r in self.results):
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


def _diagnose(exc: BaseException, server: IceServerUri, timeout: float) -> tuple[str, int | None]:
    """Likely cause of *exc*, and its STUN error code if any."""
    if isinstance(exc, aioice.stun.TransactionFailed):
        code = exc.response.error_code
        reason = exc.response.attributes.get("ERROR-CODE", (code, ""))[1]
        cause = _CAUSES.get(code or 0, f"{code} {reason}: refused by the server")
        return cause, code
    if isinstance(exc, TimeoutError | aioice.stun.TransactionTimeout):
        return (
            f"no answer within {timeout:g} s: a firewall drops {server.label.upper()} to port "
            f"{server.port}, wrong host or port, or the server is down",
            None,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not trusted or not valid for {server.host}: "
            f"{exc.verify_message} (pass its CA with --ca-file)",
            None,
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason}): is this port really TLS?", None
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"connection refused: nothing listens on {server.label.upper()} port {server.port}",
            None,
        )
    if isinstance(exc, OSError) and exc.errno is None and "getaddrinfo" in str(exc).lower():
        return f"cannot resolve host {server.host}", None
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}", None
    return f"{type(exc).__name__}: {exc}", None


class _StunDatagramClient(asyncio.DatagramProtocol):
    """A UDP endpoint that feeds responses to :class:`aioice.stun.Transaction` objects."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.transactions: dict[bytes, aioice.stun.Transaction] = {}
        self.error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = aioice.stun.parse_message(data)
        except ValueError:
            return
        transaction = self.transactions.get(message.transaction_id)
        if transaction is not None:
            transaction.response_received(message, addr)

    def error_received(self, exc: Exception) -> None:
        self.error = exc  # e.g. ICMP port unreachable -> ConnectionRefusedError

    def send_stun(self, message: aioice.stun.Message, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(message), addr)


def _binding_request() -> aioice.stun.Message:
    request = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
    )
    request.add_fingerprint()
    return request


async def _stun_udp(server: IceServerUri) -> tuple[str, int]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        _StunDatagramClient, remote_addr=(server.host, server.port)
    )
    try:
        request = _binding_request()
        remote = transport.get_extra_info("peername")
        transaction = aioice.stun.Transaction(request, remote, client)
        client.transactions[request.transaction_id] = transaction
        task = asyncio.ensure_future(transaction.run())
        while not task.done():
            await asyncio.wait([task], timeout=0.05)
            if client.error is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise client.error
        response, _ = task.result()
    finally:
        transport.close()
    address: tuple[str, int] = response.attributes["XOR-MAPPED-ADDRESS"]
    return address


async def _stun_stream(server: IceServerUri, ssl_context: ssl.SSLContext | None) -> tuple[str, int]:
    reader, writer = await asyncio.open_connection(server.host, server.port, ssl=ssl_context)
    try:
        request = _binding_request()
        writer.write(bytes(request))
        await writer.drain()
        while True:
            header = await reader.readexactly(20)
            (length,) = struct.unpack("!H", header[2:4])
            message = aioice.stun.parse_message(header + await reader.readexactly(length))
            if message.transaction_id != request.transaction_id:
                continue
            if message.message_class == aioice.stun.Class.ERROR:
                raise aioice.stun.TransactionFailed(message)
            address: tuple[str, int] = message.attributes["XOR-MAPPED-ADDRESS"]
            return address
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


class _RelaySink(asyncio.DatagramProtocol):
    """Receives what the TURN relay hands over; records refused sends and the close."""

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
    server: IceServerUri, config: DoctorConfig, ssl_context: ssl.SSLContext | None
) -> tuple[tuple[str, int], tuple[str, int], str | None, float]:
    """Allocate on *server*; return (reflexive, relayed, permission refusal, time allocated)."""
    relay, sink = await aioice.turn.create_turn_endpoint(
        _RelaySink,
        server_addr=(server.host, server.port),
        username=config.username,
        password=config.credential,
        ssl=ssl_context if server.secure else False,
        transport=server.transport,
    )
    allocated = time.monotonic()
    try:
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
        return reflexive, relayed, refusal, allocated
    finally:
        relay.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await sink.closed.wait()


def _ssl_context(config: DoctorConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=config.ca_file)


async def probe_server(server: IceServerUri | str, config: DoctorConfig) -> ProbeResult:
    """Probe one server; never raises for a server-side failure (it is in the result)."""
    if isinstance(server, str):
        server = parse_ice_uri(server)
    if server.is_turn and (config.username is None or config.credential is None):
        raise ConfigurationError(
            f"{server.uri}: a TURN server needs a username and credential (or a REST secret)"
        )
    ssl_context = _ssl_context(config) if server.secure else None
    started = time.monotonic()
    try:
        async with asyncio.timeout(config.timeout):
            if server.is_turn:
                reflexive, relayed, refusal, finished = await _turn(server, config, ssl_context)
            elif server.transport == "udp":
                reflexive, relayed, refusal = await _stun_udp(server), None, None
                finished = time.monotonic()
            else:
                reflexive, relayed, refusal = await _stun_stream(server, ssl_context), None, None
                finished = time.monotonic()
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
    if not server.is_turn:
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


def with_all_transports(servers: Sequence[DoctorServer]) -> tuple[DoctorServer, ...]:
    """*servers* plus, for each ``stun:``/``turn:`` URI, its twin over the other transport.

    ``turn:host`` (UDP) adds ``turn:host?transport=tcp`` and the reverse; TLS URIs are kept
    as they are (TLS needs its own port). Duplicates are dropped, order is kept.
    """
    result: list[DoctorServer] = []
    seen: set[tuple[str, str, int, str]] = set()
    for server in servers:
        uri = server.uri
        variants = [uri]
        if not uri.secure:
            other: Literal["udp", "tcp"] = "tcp" if uri.transport == "udp" else "udp"
            host = f"[{uri.host}]" if ":" in uri.host else uri.host
            variants.append(
                attrs.evolve(
                    uri, uri=f"{uri.scheme}:{host}:{uri.port}?transport={other}", transport=other
                )
            )
        for variant in variants:
            key = (variant.scheme, variant.host, variant.port, variant.transport)
            if key not in seen:
                seen.add(key)
                result.append(attrs.evolve(server, uri=variant))
    return tuple(result)


def _target(server: str | IceServerUri | DoctorServer, config: DoctorConfig) -> DoctorServer:
    if isinstance(server, DoctorServer):
        if server.username is None and server.credential is None:
            return attrs.evolve(server, username=config.username, credential=config.credential)
        return server
    uri = parse_ice_uri(server) if isinstance(server, str) else server
    return DoctorServer(uri=uri, username=config.username, credential=config.credential)


async def run_doctor(
    servers: Sequence[str | IceServerUri | DoctorServer],
    config: DoctorConfig,
    *,
    progress: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Probe every server concurrently; call *progress* with a line as each one starts/ends.

    A :class:`DoctorServer` without a credential of its own uses *config*'s.
    """
    targets = [_target(s, config) for s in servers]
    if not targets:
        raise ConfigurationError("give at least one stun:/turn: URI")
    for target in targets:
        if target.uri.is_turn and (target.username is None or target.credential is None):
            raise ConfigurationError(
                f"{target.uri.uri} needs a credential (--username/--credential or --secret)"
            )
    total = len(targets)
    done = 0

    async def one(target: DoctorServer) -> ProbeResult:
        nonlocal done
        server = target.uri
        if progress is not None:
            progress(f"probing {server.uri} over {server.label} ...")
        own = attrs.evolve(config, username=target.username, credential=target.credential)
        result = await probe_server(server, own)
        done += 1
        if progress is not None:
            progress(
                f"[{done}/{total}] {server.uri}: {result.verdict.upper()} "
                f"({result.elapsed * 1000:.0f} ms)"
            )
        return result

    results = await asyncio.gather(*(one(t) for t in targets))
    return DoctorReport(results=tuple(results))


def format_report(report: DoctorReport) -> str:
    """The report as a plain-text table with a verdict line at the end."""
    header = ("SERVER", "VIA", "VERDICT", "TIME", "DETAILS")
    rows = [
        (
            r.server.uri,
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
    if any(r.server.is_turn for r in report.results):
        verdict = "relay path available" if report.relay_available else "NO relay path available"
    else:
        verdict = "STUN reachable" if report.stun_available else "NO STUN server reachable"
    lines.append("")
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)
