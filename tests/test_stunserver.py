"""The asyncio STUN server (rtckit.stun.server) against independent clients, and ``rtckit stun``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aioice.stun
import pytest
from aioice import ice
from aioice.candidate import Candidate

from rtckit import ConfigurationError, SystemComponentError
from rtckit.cli import build_parser
from rtckit.stun.codec import (
    DEFAULT_SOFTWARE,
    HEADER_LENGTH,
    MessageClass,
    RateLimit,
    binding_request,
    new_transaction_id,
    parse_message,
)
from rtckit.stun.server import SocketFactory, StunServer, StunServerConfig, stun_binding

SRC = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture
async def server() -> AsyncIterator[StunServer]:
    config = StunServerConfig(bind=[("127.0.0.1", 0), ("::1", 0)], tcp=True)
    async with StunServer(config) as running:
        yield running


async def _udp_socket(host: str) -> tuple[asyncio.DatagramTransport, asyncio.Queue[bytes]]:
    """A plain UDP client socket whose datagrams land in a queue."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
            queue.put_nowait(data)

    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(
        Receiver, local_addr=(host, 0), family=family
    )
    return transport, queue


# --- independent clients ---------------------------------------------------------------------


async def test_aioice_gathers_a_server_reflexive_candidate(server: StunServer) -> None:
    """aioice's own srflx gathering code (server_reflexive_candidate) against the server."""
    connection = ice.Connection(ice_controlling=True)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: ice.StunProtocol(connection), local_addr=("127.0.0.1", 0)
    )
    try:
        local_port = transport.get_extra_info("sockname")[1]
        protocol.local_candidate = Candidate(
            foundation="1",
            component=1,
            transport="udp",
            priority=1,
            host="127.0.0.1",
            port=local_port,
            type="host",
        )
        async with asyncio.timeout(10):
            candidate, _ = await ice.server_reflexive_candidate(protocol, server.udp_addresses[0])
    finally:
        await protocol.close()
        await connection.close()
    assert candidate.type == "srflx"
    assert (candidate.host, candidate.port) == ("127.0.0.1", local_port)
    assert server.stats.success_responses == 1


async def test_aioice_transaction_over_ipv6(server: StunServer) -> None:
    """aioice's STUN transaction (with retransmissions) over IPv6, parsed by aioice."""
    connection = ice.Connection(ice_controlling=True)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: ice.StunProtocol(connection), local_addr=("::1", 0)
    )
    try:
        local_port = transport.get_extra_info("sockname")[1]
        request = aioice.stun.Message(
            message_method=aioice.stun.Method.BINDING,
            message_class=aioice.stun.Class.REQUEST,
        )
        request.add_fingerprint()
        async with asyncio.timeout(10):
            response, _ = await protocol.request(request, server.udp_addresses[1])
    finally:
        await protocol.close()
        await connection.close()
    assert response.message_class == aioice.stun.Class.RESPONSE
    assert response.attributes["XOR-MAPPED-ADDRESS"] == ("::1", local_port)
    assert "SOFTWARE" not in response.attributes
    assert "FINGERPRINT" in response.attributes  # the request had one; aioice checked it


# --- our own client, UDP and TCP ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("family", [0, 1], ids=["ipv4", "ipv6"])
async def test_stun_binding_client(server: StunServer, transport: str, family: int) -> None:
    addresses = server.udp_addresses if transport == "udp" else server.tcp_addresses
    host, port = addresses[family]
    async with asyncio.timeout(10):
        response = await stun_binding(host, port, transport=transport)  # type: ignore[arg-type]
    assert response.message_class is MessageClass.SUCCESS_RESPONSE
    mapped = response.mapped_address()
    assert mapped is not None
    assert mapped[0] == host
    assert response.software() is None  # only when configured


async def test_software_when_configured() -> None:
    config = StunServerConfig(bind=[("127.0.0.1", 0)], software=DEFAULT_SOFTWARE)
    async with StunServer(config) as server, asyncio.timeout(10):
        response = await stun_binding(*server.udp_addresses[0])
    assert response.software() == "rtckit"


async def test_udp_and_tcp_share_the_port(server: StunServer) -> None:
    assert server.udp_addresses == server.tcp_addresses
    assert [host for host, _ in server.udp_addresses] == ["127.0.0.1", "::1"]


async def test_ipv4_and_ipv6_wildcards_share_a_port() -> None:
    """IPv6 sockets are IPv6-only, so "0.0.0.0" and "::" bind one port side by side."""
    async with StunServer(StunServerConfig(bind=[("0.0.0.0", 0)], tcp=True)) as ipv4:
        port = ipv4.udp_addresses[0][1]
        async with StunServer(StunServerConfig(bind=[("::", port)], tcp=True)) as ipv6:
            assert ipv6.udp_addresses == ipv6.tcp_addresses == [("::", port)]
            async with asyncio.timeout(10):
                from_ipv4 = await stun_binding("127.0.0.1", port)
                from_ipv6 = await stun_binding("::1", port, transport="tcp")
    assert from_ipv4.mapped_address() is not None
    assert from_ipv6.mapped_address() is not None
    assert from_ipv4.mapped_address()[0] == "127.0.0.1"  # type: ignore[index]
    assert from_ipv6.mapped_address()[0] == "::1"  # type: ignore[index]
    assert (ipv4.stats.success_responses, ipv6.stats.success_responses) == (1, 1)


async def test_tcp_framing_pipelined_and_split(server: StunServer) -> None:
    host, port = server.tcp_addresses[0]
    ids = [new_transaction_id() for _ in range(3)]
    requests = [binding_request(tid) for tid in ids]
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            local_port = writer.get_extra_info("sockname")[1]
            writer.write(requests[0] + requests[1])  # two messages in one segment
            await writer.drain()
            for byte in requests[2]:  # one message a byte at a time
                writer.write(bytes([byte]))
                await writer.drain()
            answers = []
            for _ in ids:
                header = await reader.readexactly(20)
                body = await reader.readexactly(struct.unpack_from("!H", header, 2)[0])
                answers.append(parse_message(header + body))
        finally:
            writer.close()
            await writer.wait_closed()
    assert [answer.transaction_id for answer in answers] == ids
    assert {answer.mapped_address() for answer in answers} == {("127.0.0.1", local_port)}


async def test_tcp_garbage_closes_the_connection_and_is_counted(server: StunServer) -> None:
    host, port = server.tcp_addresses[0]
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: stun\r\n\r\n")
            await writer.drain()
            assert await reader.read() == b""  # closed by the server
        finally:
            writer.close()
            await writer.wait_closed()
        assert server.stats.malformed == 1
        response = await stun_binding(host, port, transport="tcp")
    assert response.message_class is MessageClass.SUCCESS_RESPONSE


async def test_udp_malformed_datagrams_are_counted_and_service_continues(
    server: StunServer,
) -> None:
    host, port = server.udp_addresses[0]
    transport, queue = await _udp_socket(host)
    try:
        good = binding_request()
        # (no empty datagram: asyncio's sendto() silently skips those)
        garbage = [b"\x00", good[:-1], b"\xff" * 40, good[:4] + bytes(4) + good[8:]]
        for datagram in garbage:
            transport.sendto(datagram, (host, port))
        transport.sendto(good, (host, port))
        async with asyncio.timeout(10):
            answer = await queue.get()
    finally:
        transport.close()
    assert parse_message(answer).transaction_id == good[8:20]
    assert server.stats.malformed == len(garbage)
    assert server.stats.success_responses == 1
    assert server.stats.internal_errors == 0
    assert queue.empty()


async def test_unknown_method_over_udp_gets_400(server: StunServer) -> None:
    host, port = server.udp_addresses[0]
    transport, queue = await _udp_socket(host)
    try:
        allocate = aioice.stun.Message(
            message_method=aioice.stun.Method.ALLOCATE,
            message_class=aioice.stun.Class.REQUEST,
        )
        transport.sendto(bytes(allocate), (host, port))
        async with asyncio.timeout(10):
            answer = aioice.stun.parse_message(await queue.get())
    finally:
        transport.close()
    assert answer.message_class == aioice.stun.Class.ERROR
    assert answer.error_code == 400


# --- lifecycle -------------------------------------------------------------------------------


async def test_close_is_idempotent_and_drops_open_tcp_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = StunServer(StunServerConfig(bind=[("127.0.0.1", 0)], tcp=True))
    await server.start()
    host, port = server.tcp_addresses[0]
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(binding_request()[:10])  # half a header: the handler is mid-read
        await writer.drain()
        await asyncio.sleep(0.05)
        await server.aclose()
        await server.aclose()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
    assert not server._tcp_tasks
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, port)
    # Python 3.11's start_server logs a traceback for a handler task that ends cancelled
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [r.getMessage() for r in loud]


async def test_tcp_idle_timeout_and_connection_limit() -> None:
    config = StunServerConfig(
        bind=[("127.0.0.1", 0)],
        udp=False,
        tcp=True,
        tcp_idle_timeout=0.3,
        max_tcp_connections=2,
        max_tcp_connections_per_source=1,
    )
    async with StunServer(config) as server:
        assert server.udp_addresses == []
        host, port = server.tcp_addresses[0]
        async with asyncio.timeout(10):
            first_reader, first_writer = await asyncio.open_connection(host, port)
            await asyncio.sleep(0.05)
            second_reader, second_writer = await asyncio.open_connection(host, port)
            assert await second_reader.read() == b""  # over the limit: closed at once
            assert await first_reader.read() == b""  # idle: closed after the timeout
            for writer in (first_writer, second_writer):
                writer.close()
                await writer.wait_closed()


def _bound_to(host: str) -> SocketFactory:
    """A client socket factory: sockets bound to *host* (another loopback source)."""

    def factory(family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
        sock = socket.socket(family, kind)
        sock.bind((host, 0))
        return sock

    return factory


# A header announcing the largest body, then nothing: a connection held at no cost.
HOLD = struct.pack("!HHI12s", 0x0001, 65532, 0x2112A442, bytes(12))


async def _hold(
    host: str, port: int, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = _bound_to(source)(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(HOLD)
    await writer.drain()
    return reader, writer


async def test_tcp_one_source_cannot_take_every_connection() -> None:
    """One source holding connections (a header, then nothing) cannot lock others out."""
    config = StunServerConfig(
        bind=[("127.0.0.1", 0)],
        udp=False,
        tcp=True,
        max_tcp_connections=8,
        max_tcp_connections_per_source=3,
        tcp_message_timeout=30,
    )
    async with StunServer(config) as server, asyncio.timeout(20):
        host, port = server.tcp_addresses[0]
        held = [await _hold(host, port, "127.0.0.2") for _ in range(20)]
        await asyncio.sleep(0.2)
        assert len(server._tcp_tasks) == 3
        assert server.stats.tcp_refused == 17
        response = await stun_binding(
            host, port, transport="tcp", socket_factory=_bound_to("127.0.0.3")
        )
        mapped = response.mapped_address()
        assert mapped is not None
        assert mapped[0] == "127.0.0.3"
        for _reader, writer in held:
            writer.close()


async def test_tcp_incomplete_message_is_closed_within_the_message_timeout() -> None:
    config = StunServerConfig(
        bind=[("127.0.0.1", 0)], udp=False, tcp=True, tcp_idle_timeout=30, tcp_message_timeout=0.3
    )
    async with StunServer(config) as server, asyncio.timeout(10):
        host, port = server.tcp_addresses[0]
        loop = asyncio.get_running_loop()
        for partial in (HOLD, HOLD[: HEADER_LENGTH // 2], binding_request()[:-1]):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(partial)
            await writer.drain()
            start = loop.time()
            assert await reader.read() == b""  # closed by the server
            assert 0.25 <= loop.time() - start < 3
            writer.close()
        assert server.stats.tcp_timeouts == 3
        # a complete message still gets its answer, then the connection waits for the next
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(binding_request())
        header = await reader.readexactly(HEADER_LENGTH)
        assert header[:2] == b"\x01\x01"
        writer.close()


async def test_udp_responses_are_rate_limited_per_source() -> None:
    config = StunServerConfig(bind=[("127.0.0.1", 0)], udp_rate_limit=RateLimit(rate=1, burst=5))
    async with StunServer(config) as server:
        host, port = server.udp_addresses[0]
        noisy, noisy_replies = await _udp_socket("127.0.0.2")
        quiet, quiet_replies = await _udp_socket("127.0.0.3")
        try:
            for _ in range(20):
                noisy.sendto(binding_request(), (host, port))
            quiet.sendto(binding_request(), (host, port))
            async with asyncio.timeout(10):
                await quiet_replies.get()
                while server.stats.received < 21:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert noisy_replies.qsize() == 5
            assert server.stats.rate_limited == 15
        finally:
            noisy.close()
            quiet.close()


async def test_port_in_use_is_a_system_component_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(SystemComponentError, match="cannot listen"):
            async with StunServer(StunServerConfig(bind=[("127.0.0.1", port)])):
                pass


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bind": []},
        {"bind": [("localhost", 3478)]},
        {"bind": [("127.0.0.1", 70000)]},
        {"udp": False, "tcp": False},
        {"software": "x" * 128},
        {"tcp_idle_timeout": 0},
        {"tcp_message_timeout": 0},
        {"tcp": True, "max_tcp_connections": 8, "max_tcp_connections_per_source": 8},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        StunServerConfig(**kwargs)  # type: ignore[arg-type]


async def test_client_times_out_when_nobody_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with pytest.raises(TimeoutError):
            await stun_binding("127.0.0.1", port, retransmit_interval=0.05, retransmissions=2)


async def test_client_says_refused_when_the_port_is_closed() -> None:
    """ICMP port unreachable on every try: ConnectionRefusedError, not a bare timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(ConnectionRefusedError, match="port unreachable"):
        await stun_binding("127.0.0.1", port, retransmit_interval=0.05, retransmissions=2)


async def test_client_resolves_names_and_uses_a_socket_factory(server: StunServer) -> None:
    # "localhost" resolves to 127.0.0.1 or ::1 first: use the server's port on that one.
    first = socket.getaddrinfo("localhost", 0, type=socket.SOCK_DGRAM)[0][4][0]
    [(host, port)] = [address for address in server.udp_addresses if address[0] == first]
    made: list[socket.socket] = []

    def factory(family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
        made.append(socket.socket(family, kind))
        return made[-1]

    for transport in ("udp", "tcp"):
        response = await stun_binding(
            "localhost",
            port,
            transport=transport,
            socket_factory=factory,
        )
        assert response.mapped_address() is not None
    assert [sock.type for sock in made] == [socket.SOCK_DGRAM, socket.SOCK_STREAM]
    with pytest.raises(ConfigurationError, match="TCP"):
        await stun_binding(host, port, ssl_context=ssl.create_default_context())


# --- the command line --------------------------------------------------------------------------


def test_cli_registers_stun() -> None:
    args = build_parser().parse_args(["stun", "--port", "0", "--tcp", "--host", "::1"])
    assert (args.command, args.port, args.tcp, args.host) == ("stun", 0, True, ["::1"])


async def test_cli_serves_until_interrupted() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtckit",
        "stun",
        "--port",
        "0",
        "--tcp",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            lines = [(await process.stdout.readline()).decode() for _ in range(2)]
            assert lines[0].startswith("rtckit stun: listening on udp 127.0.0.1:"), lines
            assert lines[1].startswith("rtckit stun: listening on tcp 127.0.0.1:"), lines
            port = int(lines[0].rsplit(":", 1)[1])
            udp = await stun_binding("127.0.0.1", port)
            tcp = await stun_binding("127.0.0.1", port, transport="tcp")
            assert udp.mapped_address() is not None
            assert tcp.mapped_address() is not None
            process.send_signal(signal.SIGINT)
            rest, errors = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, errors.decode()
    assert "stopped; received=2 requests=2 success_responses=2" in rest.decode()


@pytest.mark.parametrize(
    ("host", "family"), [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]
)
async def test_cli_names_a_busy_address_as_it_is_written(host: str, family: int) -> None:
    """``127.0.0.1:3478`` and ``[::1]:3478``; no counters from a server that never ran."""
    with socket.socket(family, socket.SOCK_DGRAM) as busy:
        busy.bind((host, 0))
        port = busy.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rtckit",
            "stun",
            "--host",
            host,
            "--port",
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
        async with asyncio.timeout(30):
            out, errors = await process.communicate()
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert process.returncode == 2
    assert f"cannot listen on {shown}: " in errors.decode()
    assert "[127.0.0.1]" not in errors.decode()
    assert out.decode() == ""
