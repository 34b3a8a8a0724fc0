"""Signaling server benchmark: rtckit against the PeerJS server, in the same run.

Each server runs in its own process; this process drives WebSocket clients in pairs that relay
~400-byte messages to each other at a fixed offered rate for a bounded time, then measures:

* delivered messages per second and lost messages (sent but never received);
* p50/p99 latency from send to receive (same clock: the driver sends and receives);
* server CPU microseconds per relayed message (the server process's user+system CPU time
  during the measured window, from /proc, divided by the messages delivered in it);
* with 5,000 idle connected clients: server memory per client (RSS growth) and idle CPU,
  over several of rtckit's heartbeat intervals (``--idle-only`` runs just this).

Baseline: the PeerJS server (npm package ``peer``), installed into a temporary directory with
``npm install peer`` and run as ``node .../peerjs.js --port P --host 127.0.0.1`` (what
``npx peerjs`` runs, started directly so that its process is the one measured). If npm or node
is missing, the baseline is reported as not measured.

Run: ``python benchmarks/signaling.py --floor`` (about four minutes; ``--quick`` for a short
run; ``--floor`` adds bare relays on aiohttp, picows and websockets, the floor under any server
on each WebSocket layer; ``--scheme wss`` or ``both`` runs the same comparison over ``wss://``:
every server, PeerJS's included, speaks TLS with a certificate made for the run, and so do the
driver's clients).
Writes the results tables to ``docs/topics/signaling-benchmark-results.inc`` (included by
``docs/topics/signaling-benchmark.rst``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from rtckit.backplane.base import Backplane

ROOT = Path(__file__).resolve().parent.parent
# The results (method and tables), included by docs/topics/signaling-benchmark.rst, whose
# analysis of where the CPU goes is written by hand.
DOC = ROOT / "docs" / "topics" / "signaling-benchmark-results.inc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAD = "x" * 290  # makes each relayed frame about 400 bytes


# --- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class Tls:
    """The certificate the servers present over ``wss://`` and the context that trusts it."""

    cert: Path  # the certificate chain (PEM)
    key: Path  # its private key (PEM)
    client: ssl.SSLContext  # what the driver's clients connect with

    @classmethod
    def make(cls, directory: Path) -> Tls:
        """A self-signed ECDSA certificate for 127.0.0.1, saved in *directory*."""
        sys.path.insert(0, str(ROOT / "src"))
        from rtckit.certs import CertificateSpec, KeyType, client_ssl_context, create_self_signed

        own = create_self_signed(CertificateSpec(hosts=["127.0.0.1"], key_type=KeyType.EC))
        files = own.save(directory / "tls")
        return cls(cert=files.fullchain, key=files.key, client=client_ssl_context(own))

    def args(self) -> list[str]:
        """The options telling a server process of this script to speak TLS."""
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]


def server_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """In a server process: the TLS context of ``--tls-cert``/``--tls-key`` (or None)."""
    if cert is None or key is None:
        return None
    sys.path.insert(0, str(ROOT / "src"))
    from rtckit.certs import IssuedCertificate

    return IssuedCertificate.from_files(cert, key).server_ssl_context()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    url_for: Callable[[int], str]  # client index -> WebSocket URL
    loop: str  # the server's event loop: asyncio, uvloop (Python) or libuv (Node.js)
    tls: Tls | None = None  # wss:// when set

    @property
    def scheme(self) -> str:
        return "ws" if self.tls is None else "wss"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


# The benchmark starts servers with subprocess.Popen from async code on purpose: starting a
# process takes milliseconds and nothing else runs meanwhile.
async def start_rtckit(loop: str, transport: str = "aiohttp", tls: Tls | None = None) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(  # noqa: ASYNC220
        [
            sys.executable,
            __file__,
            "--serve-rtckit",
            str(port),
            "--server-loop",
            loop,
            "--server-transport",
            transport,
            *(tls.args() if tls else []),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    await wait_port(port, proc)
    name = "rtckit" if transport == "aiohttp" else f"rtckit {transport}"
    scheme = "ws" if tls is None else "wss"
    return Server(name, proc, port, lambda _i: f"{scheme}://127.0.0.1:{port}/ws", loop, tls)


def serve_rtckit(
    port: int,
    loop: str,
    transport: str = "aiohttp",
    context: ssl.SSLContext | None = None,
    *,
    redis_url: str | None = None,
    node_id: str | None = None,
    durable: bool = False,
) -> None:
    """The rtckit server process: limits raised so that the benchmark load is admitted.

    Runs on the event loop *loop* through :func:`rtckit.eventloop.run`, as ``rtckit
    signaling`` does. With *redis_url* (aiohttp only), the server is the node *node_id* of a
    cluster sharing a :class:`~rtckit.backplane.redis.RedisBackplane` (``benchmarks/cluster.py``),
    keeping its rooms' session journals in Redis if *durable*.
    """
    sys.path.insert(0, str(ROOT / "src"))
    from rtckit.eventloop import run as run_loop
    from rtckit.signaling import OpenAuth, SignalingConfig, SignalingServer

    raise_fd_limit()
    config = SignalingConfig(
        auth=OpenAuth(),
        max_messages_per_second=1e6,
        burst=1_000_000,
        max_pending=100_000,
    )

    async def run() -> None:
        if transport == "picows":
            from rtckit.signaling.fastws import PicowsSignalingServer

            server: SignalingServer | PicowsSignalingServer = PicowsSignalingServer(config)
        else:
            from rtckit.signaling.cluster import ClusterConfig

            server = SignalingServer(
                config,
                backplane(redis_url, node_id),
                cluster=ClusterConfig(durable_sessions=durable),
            )
        async with server:
            await server.listen("127.0.0.1", port, ssl=context)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run(), loop=loop)


def backplane(redis_url: str | None, node_id: str | None) -> Backplane | None:
    """A Redis backplane on *redis_url* as node *node_id* (random if None), or None."""
    if redis_url is None:
        return None
    sys.path.insert(0, str(ROOT / "src"))
    from rtckit.backplane.redis import RedisBackplane, RedisBackplaneConfig

    if node_id is None:
        return RedisBackplane(RedisBackplaneConfig(url=redis_url))
    return RedisBackplane(RedisBackplaneConfig(url=redis_url, node_id=node_id))


def peerjs_url(scheme: str, port: int) -> Callable[[int], str]:
    """Client index -> URL of a server speaking PeerJS's protocol."""
    return lambda i: f"{scheme}://127.0.0.1:{port}/peerjs?key=peerjs&id=c{i}&token=t{i}"


async def start_floor(loop: str, transport: str = "aiohttp", tls: Tls | None = None) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    flag = "--serve-floor" if transport == "aiohttp" else f"--serve-{transport}-floor"
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, __file__, flag, str(port), "--server-loop", loop]
        + (tls.args() if tls else []),
        env=env,
        stdout=subprocess.DEVNULL,
    )
    await wait_port(port, proc)
    scheme = "ws" if tls is None else "wss"
    return Server(f"{transport} floor", proc, port, peerjs_url(scheme, port), loop, tls)


def serve_floor(port: int, loop: str, context: ssl.SSLContext | None = None) -> None:
    """A bare aiohttp relay speaking PeerJS's protocol: parse, stamp ``src``, forward.

    No validation, rooms, sequence numbers or acknowledgements: the cost of aiohttp and
    asyncio alone, i.e. the floor under any aiohttp-based signaling server.
    """
    from aiohttp import web

    raise_fd_limit()
    sockets: dict[str, web.WebSocketResponse] = {}

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        me = request.query["id"]
        sockets[me] = ws
        await ws.send_str('{"type":"OPEN"}')
        try:
            async for frame in ws:
                message = json.loads(frame.data)
                message["src"] = me
                target = sockets.get(message.get("dst", ""))
                if target is not None:
                    await target.send_str(json.dumps(message))
        finally:
            sockets.pop(me, None)
        return ws

    app = web.Application()
    app.router.add_get("/peerjs", handle)
    sys.path.insert(0, str(ROOT / "src"))
    from rtckit.eventloop import loop_factory

    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        ssl_context=context,
        loop=loop_factory(loop)(),
    )


def serve_picows_floor(port: int, loop: str, context: ssl.SSLContext | None = None) -> None:
    """The same bare relay as :func:`serve_floor` on picows: the floor under any
    picows-based signaling server."""
    from picows import WSListener, WSMsgType, WSTransport, ws_create_server

    sys.path.insert(0, str(ROOT / "src"))
    from rtckit.eventloop import run as run_loop

    raise_fd_limit()
    sockets: dict[str, WSTransport] = {}

    class Relay(WSListener):
        def __init__(self, me: str) -> None:
            self.me = me

        def on_ws_connected(self, transport: WSTransport) -> None:
            sockets[self.me] = transport
            transport.send(WSMsgType.TEXT, b'{"type":"OPEN"}')

        def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                if frame.msg_type is WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()
                return
            message = json.loads(frame.get_payload_as_utf8_text())
            message["src"] = self.me
            target = sockets.get(message.get("dst", ""))
            if target is not None:
                target.send(WSMsgType.TEXT, json.dumps(message).encode())

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            sockets.pop(self.me, None)

    def route(request: Any) -> Relay:
        query = request.path.decode().partition("?")[2]
        me = dict(item.partition("=")[::2] for item in query.split("&"))["id"]
        return Relay(me)

    async def run() -> None:
        server = await ws_create_server(route, "127.0.0.1", port, use_aiofastnet=False, ssl=context)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run(), loop=loop)


def serve_websockets_floor(port: int, loop: str, context: ssl.SSLContext | None = None) -> None:
    """The same bare relay as :func:`serve_floor` on websockets' asyncio implementation
    (``websockets.asyncio.server``)."""
    from websockets.asyncio.server import ServerConnection, serve

    sys.path.insert(0, str(ROOT / "src"))
    from rtckit.eventloop import run as run_loop

    raise_fd_limit()
    sockets: dict[str, ServerConnection] = {}

    async def handle(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        query = path.partition("?")[2]
        me = dict(item.partition("=")[::2] for item in query.split("&"))["id"]
        sockets[me] = ws
        await ws.send('{"type":"OPEN"}')
        try:
            async for frame in ws:
                message = json.loads(frame)
                message["src"] = me
                target = sockets.get(message.get("dst", ""))
                if target is not None:
                    await target.send(json.dumps(message))
        finally:
            sockets.pop(me, None)

    async def run() -> None:
        async with serve(handle, "127.0.0.1", port, compression=None, ssl=context) as server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run(), loop=loop)


def install_peerjs(directory: Path) -> Path | None:
    """``npm install peer`` into *directory*; return the peerjs script, or None."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        return None
    script = directory / "node_modules" / "peer" / "dist" / "bin" / "peerjs.js"
    if not script.exists():
        result = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "peer"],
            cwd=directory,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            return None
    return script if script.exists() else None


async def start_peerjs(script: Path, tls: Tls | None = None) -> Server:
    """The PeerJS server; over ``wss://`` through Node's https server (its ``--sslkey`` and
    ``--sslcert`` options)."""
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220
        [
            "node",
            str(script),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--concurrent_limit",
            "20000",
        ]
        + (["--sslkey", str(tls.key), "--sslcert", str(tls.cert)] if tls else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await wait_port(port, proc)
    scheme = "ws" if tls is None else "wss"
    return Server("PeerJS", proc, port, peerjs_url(scheme, port), "libuv", tls)


# --- clients -----------------------------------------------------------------------------


@dataclass
class Stats:
    sent: int = 0
    received: int = 0
    window_received: int = 0
    latencies: list[float] = field(default_factory=list)
    measuring: bool = False


class Client:
    """A minimal raw-protocol client (no rtckit client code on the measured path)."""

    def __init__(self, index: int, server: Server, stats: Stats, room: str | None = None) -> None:
        self.index = index
        self.server = server
        self.stats = stats
        self.room = f"p{index // 2}" if room is None else room  # rtckit only (in pairs)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.peer_id = ""
        self.partner = ""
        self.seq = 0
        self.in_seq = 0
        self.acked = 0
        self.reader: asyncio.Task[None] | None = None

    @property
    def rtckit(self) -> bool:
        return self.server.name.startswith("rtckit")  # the others speak PeerJS's protocol

    async def connect(self, session: aiohttp.ClientSession) -> None:
        self.ws = await session.ws_connect(self.server.url_for(self.index), max_msg_size=0)
        if self.rtckit:
            await self.ws.send_str('{"type":"hello","version":1}')
            await self.ws.send_str(json.dumps({"type": "join", "room": self.room}))
            while True:
                message = json.loads((await self.ws.receive()).data)
                if message["type"] == "welcome":
                    self.peer_id = message["peer_id"]
                    break
        else:
            message = json.loads((await self.ws.receive()).data)
            assert message["type"] == "OPEN", message
            self.peer_id = f"c{self.index}"

    def start_reading(self) -> None:
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        ws, stats = self.ws, self.stats
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(frame.data)
            kind = message["type"]
            if kind in ("app", "OFFER"):
                now = time.perf_counter()
                stats.received += 1
                if stats.measuring:
                    stats.window_received += 1
                    stats.latencies.append(now - message["payload"]["t"])
                if self.rtckit:
                    self.in_seq = message["seq"]
                    if self.in_seq - self.acked >= 16:
                        self.acked = self.in_seq
                        await ws.send_str(f'{{"type":"ack","ack":{self.in_seq}}}')
            elif kind == "ping":
                await ws.send_str('{"type":"pong"}')
            elif kind == "peer-joined" and self.rtckit:
                self.in_seq = message["seq"]

    async def send(self) -> None:
        assert self.ws is not None
        payload = {"t": time.perf_counter(), "pad": PAD}
        if self.rtckit:
            self.seq += 1
            text = json.dumps(
                {"type": "app", "to": self.partner, "payload": payload, "seq": self.seq}
            )
        else:
            text = json.dumps({"type": "OFFER", "dst": self.partner, "payload": payload})
        self.stats.sent += 1
        await self.ws.send_str(text)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


@contextlib.asynccontextmanager
async def connected(server: Server, count: int, stats: Stats) -> AsyncIterator[list[Client]]:
    tls = server.tls
    connector = aiohttp.TCPConnector(limit=0, ssl=tls.client if tls else True)
    async with aiohttp.ClientSession(connector=connector) as session:
        clients = [Client(i, server, stats) for i in range(count)]
        gate = asyncio.Semaphore(50)

        async def connect(client: Client) -> None:
            async with gate:
                await client.connect(session)

        try:
            await asyncio.gather(*(connect(c) for c in clients))
            for a, b in zip(clients[::2], clients[1::2], strict=True):
                a.partner, b.partner = b.peer_id, a.peer_id
            for client in clients:
                client.start_reading()
            yield clients
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


@dataclass
class RelayResult:
    server: str
    loop: str
    scheme: str
    clients: int
    offered: float
    delivered: float
    lost: int
    p50_ms: float
    p99_ms: float
    cpu_us: float
    ratio: float = float("nan")  # cpu_us / PeerJS's in the same repetition


@dataclass
class Window:
    """What the clients saw in one measured window, and what the measured processes spent."""

    seconds: float
    received: int  # messages received in the window
    lost: int  # sent but never received (the whole run)
    p50_ms: float
    p99_ms: float
    cpu: list[float]  # CPU seconds of each measured process in the window

    @property
    def delivered(self) -> float:
        """Messages per second delivered in the window."""
        return self.received / self.seconds

    def cpu_us(self, *shares: int) -> float:
        """CPU µs per delivered message of the processes at *shares* (indexes into
        :attr:`cpu`; all of them if none)."""
        spent = [self.cpu[i] for i in shares] if shares else self.cpu
        return 1e6 * sum(spent) / max(1, self.received)


async def offer_load(
    senders: list[Client], stats: Stats, rate: float, seconds: float, pids: list[int]
) -> Window:
    """Make *senders* send *rate* messages per second in all (each to its ``partner``), warm
    up, measure for *seconds* the CPU of the processes *pids* and what the clients receive,
    then stop and wait (10 s at most) until everything sent has arrived."""
    per_client = rate / len(senders)
    stop = asyncio.Event()

    async def pump(client: Client) -> None:
        await asyncio.sleep(random.random() / per_client)
        next_at = time.perf_counter()
        while not stop.is_set():
            await client.send()
            next_at += 1.0 / per_client
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)

    pumps = [asyncio.get_running_loop().create_task(pump(c)) for c in senders]
    await asyncio.sleep(1.5)  # warm up
    cpu0, t0 = [cpu_seconds(pid) for pid in pids], time.perf_counter()
    stats.measuring = True
    await asyncio.sleep(seconds)
    stats.measuring = False
    cpu1, t1 = [cpu_seconds(pid) for pid in pids], time.perf_counter()
    stop.set()
    await asyncio.gather(*pumps)
    deadline = time.perf_counter() + 10
    while stats.received < stats.sent and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    latencies = sorted(stats.latencies) or [float("nan")]
    return Window(
        seconds=t1 - t0,
        received=stats.window_received,
        lost=stats.sent - stats.received,
        p50_ms=1000 * statistics.median(latencies),
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        cpu=[after - before for before, after in zip(cpu0, cpu1, strict=True)],
    )


async def relay(server: Server, count: int, rate: float, seconds: float) -> RelayResult:
    stats = Stats()
    async with connected(server, count, stats) as clients:
        window = await offer_load(clients, stats, rate, seconds, [server.proc.pid])
    return RelayResult(
        server=server.name,
        loop=server.loop,
        scheme=server.scheme,
        clients=count,
        offered=rate,
        delivered=window.delivered,
        lost=window.lost,
        p50_ms=window.p50_ms,
        p99_ms=window.p99_ms,
        cpu_us=window.cpu_us(),
    )


@dataclass
class IdleResult:
    server: str
    loop: str
    scheme: str
    clients: int
    rss_per_client_kb: float
    rss_total_mb: float
    idle_cpu_percent: float


def rtckit_detection() -> tuple[float, float]:
    """rtckit's default heartbeat interval, and the longest time until a peer that stops
    answering is reported left (dead-peer timeout + resume window + one tick)."""
    sys.path.insert(0, str(ROOT / "src"))
    from rtckit.signaling import OpenAuth, SignalingConfig

    config = SignalingConfig(auth=OpenAuth())
    detection = config.dead_peer_timeout + config.resume_window + config.tick_interval
    return config.heartbeat_interval, detection


# The idle window: three of rtckit's heartbeat intervals, so that every client is pinged.
IDLE_SECONDS = 3 * rtckit_detection()[0]


async def idle(server: Server, count: int, seconds: float) -> IdleResult:
    await asyncio.sleep(0.5)
    rss0 = rss_bytes(server.proc.pid)
    stats = Stats()
    async with connected(server, count, stats):
        await asyncio.sleep(3.0)
        rss1 = rss_bytes(server.proc.pid)
        cpu0 = cpu_seconds(server.proc.pid)
        await asyncio.sleep(seconds)
        cpu1 = cpu_seconds(server.proc.pid)
    return IdleResult(
        server=server.name,
        loop=server.loop,
        scheme=server.scheme,
        clients=count,
        rss_per_client_kb=(rss1 - rss0) / count / 1024,
        rss_total_mb=rss1 / 2**20,
        idle_cpu_percent=100 * (cpu1 - cpu0) / seconds,
    )


# --- report ------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [headers, *rows]:
        lines.append("   * - " + row[0])
        lines.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(lines)


def report(
    relays: list[RelayResult],
    idles: list[IdleResult],
    seconds: float,
    baseline: str,
    load: tuple[float, float],
    repeat: int,
) -> str:
    rows = [
        [
            r.server,
            r.loop,
            r.scheme,
            str(r.clients),
            f"{r.offered:.0f}",
            f"{r.delivered:.0f}",
            str(r.lost),
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.cpu_us:.1f}",
            "n/a" if r.ratio != r.ratio else f"{r.ratio:.2f}",  # NaN: no baseline
        ]
        for r in relays
    ]
    idle_rows = [
        [
            i.server,
            i.loop,
            i.scheme,
            str(i.clients),
            f"{i.rss_per_client_kb:.1f}",
            f"{i.rss_total_mb:.0f}",
            f"{i.idle_cpu_percent:.1f}",
        ]
        for i in idles
    ]
    return "\n".join(
        [
            "Written by ``python benchmarks/signaling.py`` (latest run: "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
            f"{uvloop_version()}; load average {load[0]:.1f} at the start and "
            f"{load[1]:.1f} at the end: other jobs share this machine, so CPU figures move by "
            "tens of percent between runs; compare ratios within one run).",
            "",
            "Clients in pairs relay ~400-byte messages through the server at a fixed offered "
            f"rate for {seconds:.0f} s ({repeat} runs per row, servers taking turns in a rotating "
            "order; the table "
            "shows medians and the total lost), driven from one Python process with raw WebSocket "
            "clients; each server runs in its own process and its CPU time is read from "
            "``/proc``. *loop* is the server's event loop: asyncio's own, uvloop (libuv, the "
            "``rtckit[speed]`` extra, which ``rtckit signaling`` uses when installed), or libuv "
            "under Node.js for PeerJS. *CPU/msg* is server CPU time per delivered message; "
            "*ratio* divides it by the PeerJS server's in the same repetition (median over the "
            f"repetitions; {baseline}). rtckit's figures include "
            "its per-message sequence numbers and acknowledgements (one ``ack`` frame per 16 "
            "messages each way), which PeerJS does not have. rtckit runs with its rate limit "
            "raised for the benchmark. *aiohttp floor* (with ``--floor``) is a bare aiohttp relay "
            "speaking PeerJS's protocol without any checks, sequence numbers or acknowledgements: "
            "the cost of aiohttp and the event loop alone, under any aiohttp-based server. "
            "*rtckit picows* is the same server on picows (``rtckit signaling --transport "
            "picows``, the default when picows is installed), *picows floor* and *websockets "
            "floor* the bare relay on picows and on websockets' asyncio implementation. "
            "*scheme* ``wss`` rows ran over TLS (1.3 on loopback, a self-signed ECDSA P-256 "
            "certificate made for the run): every server speaks it, PeerJS through Node's "
            "https server, rtckit through ``listen(ssl=...)``, and so do the driver's clients; "
            "their ratio divides by PeerJS's own ``wss`` run of the same repetition.",
            "",
            table(
                [
                    "server",
                    "loop",
                    "scheme",
                    "clients",
                    "offered msg/s",
                    "delivered msg/s",
                    "lost",
                    "p50 ms",
                    "p99 ms",
                    "CPU µs/msg",
                    "ratio",
                ],
                rows,
            ),
            "",
            "Idle clients: server memory growth per connected client and the server's CPU "
            f"while they stay connected, over {IDLE_SECONDS:.0f} s. rtckit pings each silent "
            f"connection every {rtckit_detection()[0]:.0f} s (a WebSocket ping frame, which the "
            "clients' WebSocket stack answers) and reports a peer that stops answering as "
            f"left within {rtckit_detection()[1]:.1f} s; the PeerJS server sends no pings.",
            "",
            table(
                [
                    "server",
                    "loop",
                    "scheme",
                    "clients",
                    "KiB/client",
                    "server RSS MiB",
                    "idle CPU %",
                ],
                idle_rows,
            ),
            "",
        ]
    )


def uvloop_version() -> str:
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        return "uvloop not installed"


def prepare_peerjs(args: argparse.Namespace, tmp: str) -> tuple[Path | None, str]:
    """Install the PeerJS server; return its script and a description of the baseline."""
    if args.no_peerjs:
        return None, "PeerJS not measured (--no-peerjs)"
    script = install_peerjs(Path(args.peerjs_dir or tmp))
    if script is None:
        return None, "PeerJS not measured: npm/node missing or `npm install peer` failed"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    package = json.loads((script.parents[2] / "package.json").read_text())
    return script, f"peer {package['version']} on Node {node.stdout.strip()}"


def median_result(results: list[RelayResult]) -> RelayResult:
    """Combine repeated runs of one scenario: medians, and the total of lost messages."""
    first = results[0]
    return RelayResult(
        server=first.server,
        loop=first.loop,
        scheme=first.scheme,
        clients=first.clients,
        offered=first.offered,
        delivered=statistics.median(r.delivered for r in results),
        lost=sum(r.lost for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        cpu_us=statistics.median(r.cpu_us for r in results),
        ratio=statistics.median(r.ratio for r in results),
    )


def python_loops(choice: str) -> list[str]:
    """The event loops to run the Python servers on, from ``--loop``."""
    if choice == "both":
        return ["asyncio", "uvloop"] if uvloop_version().startswith("uvloop ") else ["asyncio"]
    return [choice]


def schemes(choice: str) -> list[str]:
    """The schemes to run, from ``--scheme``."""
    return ["ws", "wss"] if choice == "both" else [choice]


async def main(
    args: argparse.Namespace, script: Path | None, baseline: str, directory: Path
) -> None:
    raise_fd_limit()
    load_start = os.getloadavg()[0]
    seconds = 4.0 if args.quick else args.seconds
    sizes = [100] if args.quick else [100, 1000]
    idle_count = args.idle_clients or (500 if args.quick else 5000)
    repeat = 1 if args.quick else args.repeat
    loops = python_loops(args.loop)
    runs: dict[tuple[str, str, str, int], list[RelayResult]] = {}
    idles: list[IdleResult] = []
    starters: list[Callable[[], Any]] = []
    transports = ["aiohttp", "picows"] if args.picows else ["aiohttp"]
    for scheme in schemes(args.scheme):
        tls = Tls.make(directory) if scheme == "wss" else None
        if script is not None:
            starters.append(functools.partial(start_peerjs, script, tls))
        for loop in loops:
            for transport in transports:
                starters.append(functools.partial(start_rtckit, loop, transport, tls))
                if args.floor:
                    starters.append(functools.partial(start_floor, loop, transport, tls))
            if args.floor and importlib.util.find_spec("websockets") is not None:
                starters.append(functools.partial(start_floor, loop, "websockets", tls))
    # Servers take turns within each repetition, so that they share the machine's conditions,
    # starting with a different one each time; each ratio compares with the PeerJS run of the
    # same repetition.
    for rep in range(0 if args.idle_only else repeat):
        turn = starters[rep % len(starters) :] + starters[: rep % len(starters)]
        for count in sizes:
            results = []
            for start in turn:
                server = await start()
                try:
                    result = await relay(server, count, args.rate, seconds)
                finally:
                    server.stop()
                results.append(result)
                print(result, flush=True)
            baselines = {r.scheme: r.cpu_us for r in results if r.server == "PeerJS"}
            for result in results:
                result.ratio = result.cpu_us / baselines.get(result.scheme, float("nan"))
                key = (result.server, result.loop, result.scheme, count)
                runs.setdefault(key, []).append(result)
    for start in starters:
        server = await start()
        try:
            if server.name.endswith(" floor"):
                continue
            result_idle = await idle(server, idle_count, IDLE_SECONDS)
        finally:
            server.stop()
        idles.append(result_idle)
        print(result_idle, flush=True)
    order = {
        "rtckit": 0,
        "rtckit picows": 1,
        "aiohttp floor": 2,
        "picows floor": 3,
        "websockets floor": 4,
        "PeerJS": 5,
    }
    relays = sorted(
        (median_result(results) for results in runs.values()),
        key=lambda r: (r.scheme, r.clients, order[r.server], r.loop),
    )
    idles.sort(key=lambda i: (i.scheme, order[i.server], i.loop))
    text = report(relays, idles, seconds, baseline, (load_start, os.getloadavg()[0]), repeat)
    if not (args.quick or args.idle_only):
        DOC.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-rtckit", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="short run, docs not written")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured window (6)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (3)")
    parser.add_argument("--rate", type=float, default=2000.0, help="offered msg/s (2000)")
    parser.add_argument("--no-peerjs", action="store_true", help="skip the PeerJS baseline")
    parser.add_argument(
        "--idle-only", action="store_true", help="only the idle clients (docs not written)"
    )
    parser.add_argument("--idle-clients", type=int, help="idle clients (5000; 500 with --quick)")
    parser.add_argument(
        "--floor", action="store_true", help="also measure a bare aiohttp relay (no checks)"
    )
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-picows-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--serve-websockets-floor", type=int, metavar="PORT", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--no-picows",
        dest="picows",
        action="store_false",
        default=importlib.util.find_spec("picows") is not None,
        help="skip rtckit on picows (and the picows floor); run by default if installed",
    )
    parser.add_argument("--server-transport", default="aiohttp", help=argparse.SUPPRESS)
    parser.add_argument("--peerjs-dir", help="reuse a directory where `npm install peer` ran")
    parser.add_argument(
        "--loop",
        choices=["both", "asyncio", "uvloop"],
        default="both",
        help="event loop(s) of the Python servers (both: asyncio, and uvloop if installed)",
    )
    parser.add_argument(
        "--scheme",
        choices=["ws", "wss", "both"],
        default="ws",
        help="ws:// (the default), wss:// (every server and client over TLS), or both",
    )
    parser.add_argument("--server-loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--tls-cert", help=argparse.SUPPRESS)
    parser.add_argument("--tls-key", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    context = server_context(arguments.tls_cert, arguments.tls_key)
    if arguments.serve_rtckit:
        serve_rtckit(
            arguments.serve_rtckit, arguments.server_loop, arguments.server_transport, context
        )
    elif arguments.serve_floor:
        serve_floor(arguments.serve_floor, arguments.server_loop, context)
    elif arguments.serve_picows_floor:
        serve_picows_floor(arguments.serve_picows_floor, arguments.server_loop, context)
    elif arguments.serve_websockets_floor:
        serve_websockets_floor(arguments.serve_websockets_floor, arguments.server_loop, context)
    else:
        with tempfile.TemporaryDirectory(prefix="rtckit-bench-") as directory:
            peerjs, description = prepare_peerjs(arguments, directory)
            asyncio.run(main(arguments, peerjs, description, Path(directory)))
