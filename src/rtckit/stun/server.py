"""An embedded STUN server (RFC 8489 Binding over UDP and TCP) and a small STUN client.

The protocol work is :func:`rtckit.stun.codec.handle_request`; this module only moves bytes:

* UDP: one datagram is one message;
* TCP: messages follow each other on the stream with no extra framing (RFC 8489 section
  6.2.2; the RFC 4571 length prefix is *not* used), so each is framed by the length in its
  header. A stream that does not start with a STUN header is closed.

Malformed input is dropped and counted in :attr:`StunServer.stats`, never raised.

Abuse limits (all in :class:`StunServerConfig`): over UDP, where a source address is not
checked, each source (:func:`rtckit.stun.codec.source_key`) gets at most
:attr:`~StunServerConfig.udp_rate_limit` responses; over TCP, a source holds at most
:attr:`~StunServerConfig.max_tcp_connections_per_source` of the
:attr:`~StunServerConfig.max_tcp_connections`, and a message must arrive whole within
:attr:`~StunServerConfig.tcp_message_timeout` of its first byte.

.. code-block:: python

    async with StunServer(StunServerConfig(bind=[("127.0.0.1", 3478)], tcp=True)) as server:
        print(server.udp_addresses, server.tcp_addresses)
        await asyncio.Event().wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal, Self, cast

import attrs

from rtckit.errors import ConfigurationError, StunFormatError, SystemComponentError
from rtckit.stun.codec import (
    HEADER_LENGTH,
    MessageClass,
    RateLimit,
    SourceRateLimiter,
    StunMessage,
    StunStats,
    TransportAddress,
    binding_request,
    format_transport_address,
    handle_request,
    is_stun_header,
    message_length,
    new_transaction_id,
    parse_message,
    source_key,
)

__all__ = ["DEFAULT_PORT", "SocketFactory", "StunServer", "StunServerConfig", "stun_binding"]

DEFAULT_PORT = 3478
"""The IANA port of STUN over UDP and TCP."""

logger = logging.getLogger(__name__)

_BIND_ATTEMPTS = 20  # tries to find one free port for both UDP and TCP when port 0 is asked


def _to_bind(value: Iterable[Iterable[Any]]) -> tuple[TransportAddress, ...]:
    pairs: list[TransportAddress] = []
    for item in value:
        host, port = tuple(item)
        pairs.append((str(host), int(port)))
    return tuple(pairs)


def _check_bind(_instance: object, _attribute: object, value: tuple[TransportAddress, ...]) -> None:
    if not value:
        raise ConfigurationError("a STUN server binds at least one address")
    for host, port in value:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigurationError(f"bind host {host!r} is not an IP address") from None
        if not 0 <= port <= 0xFFFF:
            raise ConfigurationError(f"bind port {port!r} is out of range")


def _check_software(_instance: object, _attribute: object, value: str | None) -> None:
    if value is not None and len(value) >= 128:
        raise ConfigurationError("SOFTWARE is shorter than 128 characters")


def _check_positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ConfigurationError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen(kw_only=True)
class StunServerConfig:
    """What a :class:`StunServer` listens on and how it answers."""

    bind: tuple[TransportAddress, ...] = attrs.field(
        default=(("127.0.0.1", DEFAULT_PORT),), converter=_to_bind, validator=_check_bind
    )
    """``(ip, port)`` pairs to listen on; IPv6 literals allowed; port 0 picks a free port
    (the same one for UDP and TCP)."""
    udp: bool = True
    """Listen on UDP."""
    tcp: bool = False
    """Listen on TCP as well."""
    software: str | None = attrs.field(default=None, validator=_check_software)
    """SOFTWARE attribute of every response; ``None`` (the default) leaves it out
    (:data:`rtckit.stun.codec.DEFAULT_SOFTWARE` is ``"rtckit"``)."""
    udp_rate_limit: RateLimit | None = attrs.field(factory=RateLimit)
    """Responses per source over UDP (a token bucket per source); ``None``: no limit."""
    tcp_idle_timeout: float = attrs.field(default=30.0, validator=_check_positive)
    """Seconds a TCP connection may stay silent between messages."""
    tcp_message_timeout: float = attrs.field(default=5.0, validator=_check_positive)
    """Seconds a message on TCP may take to arrive whole, from its first byte (a header
    announcing 65532 bytes and then nothing is closed after this, not the idle timeout)."""
    max_tcp_connections: int = attrs.field(default=256, validator=_check_positive)
    """Concurrent TCP connections; more are closed at once."""
    max_tcp_connections_per_source: int = attrs.field(default=8, validator=_check_positive)
    """Concurrent TCP connections from one source (:func:`rtckit.stun.codec.source_key`); must be
    below :attr:`max_tcp_connections`, so that no source can take them all."""

    def __attrs_post_init__(self) -> None:
        if not (self.udp or self.tcp):
            raise ConfigurationError("a STUN server listens on UDP, TCP or both")
        if self.tcp and self.max_tcp_connections_per_source >= self.max_tcp_connections:
            raise ConfigurationError(
                "max_tcp_connections_per_source must be below max_tcp_connections "
                "(one source could otherwise take every connection)"
            )


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: StunServer) -> None:
        self._server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's selector transport does not subclass DatagramTransport; it has sendto().
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        reply = self._server._answer(data, addr, udp=True)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable from a client that went away): nothing to do.
        logger.debug("STUN UDP socket error: %s", exc)


class StunServer:
    """An asyncio STUN server answering Binding requests on UDP and/or TCP.

    Use it as an async context manager, or call :meth:`start` and :meth:`aclose`.
    """

    def __init__(self, config: StunServerConfig | None = None) -> None:
        self.config = config if config is not None else StunServerConfig()
        self.stats = StunStats()
        """Counters over every transport (see :class:`rtckit.stun.codec.StunStats`)."""
        limit = self.config.udp_rate_limit
        self._udp_limiter = None if limit is None else SourceRateLimiter(limit)
        self._tcp_per_source: dict[str, int] = {}
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._tcp_tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    @property
    def udp_addresses(self) -> list[TransportAddress]:
        """The ``(ip, port)`` each UDP socket is bound to (actual ports, also for port 0)."""
        return [_sockname(transport.get_extra_info("sockname")) for transport in self._udp]

    @property
    def tcp_addresses(self) -> list[TransportAddress]:
        """The ``(ip, port)`` each TCP listener is bound to."""
        return [_sockname(sock.getsockname()) for server in self._tcp for sock in server.sockets]

    async def start(self) -> None:
        """Bind every address. Raises :class:`~rtckit.errors.SystemComponentError` if one
        cannot be bound (in use, or not an address of this machine)."""
        if self._started:
            return
        self._started = True
        try:
            for host, port in self.config.bind:
                await self._bind(host, port)
        except BaseException:
            await self.aclose()
            raise

    async def _bind(self, host: str, port: int) -> None:
        attempts = _BIND_ATTEMPTS if port == 0 and self.config.udp and self.config.tcp else 1
        for attempt in range(attempts):
            udp: asyncio.DatagramTransport | None = None
            try:
                chosen = port
                if self.config.udp:
                    udp = await self._bind_udp(host, port)
                    chosen = _sockname(udp.get_extra_info("sockname"))[1]
                if self.config.tcp:
                    server = await asyncio.start_server(self._serve_tcp, host, chosen)
                    self._tcp.append(server)
            except OSError as exc:
                if udp is not None:
                    udp.close()
                if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    continue
                where = format_transport_address(host, port)
                raise SystemComponentError(f"cannot listen on {where}: {exc}") from exc
            if udp is not None:
                self._udp.append(udp)
            return

    async def _bind_udp(self, host: str, port: int) -> asyncio.DatagramTransport:
        # IPv6 sockets are IPv6-only, as asyncio makes TCP listeners: "::" and "0.0.0.0"
        # can then be bound side by side on one port.
        ipv6 = ipaddress.ip_address(host).version == 6
        sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if ipv6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
        return transport

    def _answer(self, data: bytes, addr: tuple[Any, ...], *, udp: bool) -> bytes | None:
        limiter = self._udp_limiter if udp else None
        try:
            return handle_request(
                data,
                addr,
                stats=self.stats,
                software=self.config.software,
                limiter=limiter,
                now=asyncio.get_running_loop().time() if limiter is not None else None,
            )
        except Exception:
            # handle_request never raises on any input (it is fuzzed); if a bug proves
            # otherwise, the server keeps serving and the counter tells.
            self.stats.internal_errors += 1
            logger.exception("STUN server failed to answer %d bytes from %s", len(data), addr)
            return None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        config = self.config
        peer = writer.get_extra_info("peername")
        source = source_key(str(peer[0])) if peer else ""
        held = self._tcp_per_source.get(source, 0)
        if (
            self._closed
            or len(self._tcp_tasks) >= config.max_tcp_connections
            or held >= config.max_tcp_connections_per_source
        ):
            self.stats.tcp_refused += 1
            writer.close()
            return
        self._tcp_tasks.add(task)
        self._tcp_per_source[source] = held + 1
        try:
            while True:
                async with asyncio.timeout(config.tcp_idle_timeout):
                    first = await reader.readexactly(1)
                try:
                    async with asyncio.timeout(config.tcp_message_timeout):
                        message = await self._read_message(reader, first)
                except TimeoutError:
                    self.stats.tcp_timeouts += 1
                    break
                if message is None:
                    break
                reply = self._answer(message, peer, udp=False)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client went away, or was idle too long
        except asyncio.CancelledError:
            # aclose() cancels the open connections. Python 3.11's start_server calls
            # task.exception() on a handler task that ended cancelled, which raises and logs
            # a traceback per connection: end normally instead.
            if not self._closed:
                raise
        except Exception:
            self.stats.internal_errors += 1
            logger.exception("STUN TCP connection from %s failed", peer)
        finally:
            self._tcp_tasks.discard(task)
            left = self._tcp_per_source.pop(source, 1) - 1
            if left > 0:
                self._tcp_per_source[source] = left
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_message(self, reader: asyncio.StreamReader, first: bytes) -> bytes | None:
        """The rest of a TCP message whose *first* byte came; ``None`` if it is not STUN."""
        header = first + await reader.readexactly(HEADER_LENGTH - 1)
        if not is_stun_header(header):
            # Framing is lost: nothing after this can be trusted to be STUN.
            self.stats.received += 1
            self.stats.malformed += 1
            return None
        return header + await reader.readexactly(message_length(header) - HEADER_LENGTH)

    async def aclose(self) -> None:
        """Stop listening and close every TCP connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        tasks = list(self._tcp_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._tcp:
            await server.wait_closed()

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


def _sockname(name: tuple[Any, ...]) -> TransportAddress:
    return str(name[0]), int(name[1])


SocketFactory = Callable[[socket.AddressFamily, socket.SocketKind], socket.socket]
"""Makes a client socket of a family and type, e.g. one inside another network namespace
(:meth:`rtckit.testing.natlab.NatLab.socket_factory`)."""


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.answer: asyncio.Future[StunMessage] = asyncio.get_running_loop().create_future()
        self.refused = False

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            message = parse_message(data)
        except StunFormatError:
            return
        if (
            message.transaction_id == self.transaction_id
            and message.message_class
            in (MessageClass.SUCCESS_RESPONSE, MessageClass.ERROR_RESPONSE)
            and not self.answer.done()
        ):
            self.answer.set_result(message)

    def error_received(self, exc: Exception) -> None:
        # ECONNREFUSED from an ICMP port unreachable: keep retrying until the last try (the
        # server may be starting), then say so instead of a bare timeout.
        logger.debug("STUN client socket error: %s", exc)
        if isinstance(exc, ConnectionRefusedError):
            self.refused = True


async def _resolve(
    host: str, port: int, kind: socket.SocketKind
) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The first address *host* resolves to (an IP literal resolves to itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
    if not infos:  # pragma: no cover - getaddrinfo raises rather than answer nothing
        raise OSError(f"cannot resolve {host!r}")
    family, _type, _proto, _name, address = infos[0]
    return family, address


def _client_socket(
    family: socket.AddressFamily, kind: socket.SocketKind, factory: SocketFactory | None
) -> socket.socket:
    sock = socket.socket(family, kind) if factory is None else factory(family, kind)
    sock.setblocking(False)
    return sock


async def stun_binding(
    host: str,
    port: int = DEFAULT_PORT,
    *,
    transport: Literal["udp", "tcp"] = "udp",
    retransmit_interval: float = 0.25,
    retransmissions: int = 6,
    tcp_timeout: float = 39.5,
    software: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    socket_factory: SocketFactory | None = None,
) -> StunMessage:
    """Send a Binding request to a STUN server at *host*; return its response.

    *host* is an IP address or a name (the first address it resolves to is used). The
    response may be a success or an error response; read the reflexive address with
    :meth:`~rtckit.stun.codec.StunMessage.mapped_address` and the error with
    :meth:`~rtckit.stun.codec.StunMessage.error_code`. Over UDP the request is sent, then
    retransmitted *retransmissions* times, *retransmit_interval* seconds apart (a fixed
    interval: this is a probe for local and lab servers, not RFC 8489's doubling). Over TCP
    it is sent once on a fresh connection, inside TLS with *ssl_context* (``stuns:``; the
    certificate must be valid for *host*), and the answer awaited *tcp_timeout* seconds
    (RFC 8489's Ti). *socket_factory* makes the client socket (e.g. inside another network
    namespace). Wrap the call in ``asyncio.timeout()`` for a tighter bound.

    Raises :class:`TimeoutError` when nothing answers, :class:`ConnectionRefusedError` when
    nothing answered over UDP and the host said *port unreachable*, :class:`OSError` when a
    TCP connection cannot be opened, :class:`ssl.SSLError` when TLS fails,
    :class:`~rtckit.errors.StunFormatError` when a TCP peer answers something that is not
    STUN.
    """
    if ssl_context is not None and transport != "tcp":
        raise ConfigurationError("STUN over TLS runs over TCP: pass transport='tcp'")
    transaction_id = new_transaction_id()
    request = binding_request(transaction_id, software=software)
    if transport == "tcp":
        async with asyncio.timeout(tcp_timeout):
            return await _binding_tcp(
                host, port, request, transaction_id, ssl_context, socket_factory
            )
    loop = asyncio.get_running_loop()
    family, address = await _resolve(host, port, socket.SOCK_DGRAM)
    sock = _client_socket(family, socket.SOCK_DGRAM, socket_factory)
    try:
        sock.connect(address)
        udp, protocol = await loop.create_datagram_endpoint(
            lambda: _ClientProtocol(transaction_id), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    try:
        for _ in range(1 + retransmissions):
            udp.sendto(request)
            done, _pending = await asyncio.wait({protocol.answer}, timeout=retransmit_interval)
            if done:
                return protocol.answer.result()
    finally:
        udp.close()
    if protocol.refused:
        where = format_transport_address(host, port)
        raise ConnectionRefusedError(f"{where} refused STUN over UDP (port unreachable)")
    raise TimeoutError(f"no STUN answer from {format_transport_address(host, port)} over UDP")


async def _binding_tcp(
    host: str,
    port: int,
    request: bytes,
    transaction_id: bytes,
    ssl_context: ssl.SSLContext | None,
    socket_factory: SocketFactory | None,
) -> StunMessage:
    loop = asyncio.get_running_loop()
    family, address = await _resolve(host, port, socket.SOCK_STREAM)
    sock = _client_socket(family, socket.SOCK_STREAM, socket_factory)
    try:
        await loop.sock_connect(sock, address)
        reader, writer = await asyncio.open_connection(
            sock=sock,
            ssl=ssl_context,
            server_hostname=host if ssl_context is not None else None,
        )
    except BaseException:
        sock.close()
        raise
    try:
        writer.write(request)
        await writer.drain()
        while True:
            header = await reader.readexactly(HEADER_LENGTH)
            if not is_stun_header(header):
                raise StunFormatError("the TCP peer answered something that is not STUN")
            body = await reader.readexactly(message_length(header) - HEADER_LENGTH)
            message = parse_message(header + body)
            if message.transaction_id == transaction_id:
                return message
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
