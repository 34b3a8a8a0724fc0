"""What every hostile case checks, the canary, and raw-socket helpers for the attacks.

A case runs inside ``async with hostile_case(target, canary):``. On the way out it waits for
the server to drop what the attack opened, then asserts:

* the server process is still running;
* the canary (:mod:`hostile.canary`: two signaling clients in their own room and their own
  process, bouncing a message off each other every :data:`CANARY_PERIOD` through the server)
  kept its round trip under the issue's bar during the case: at least :data:`MIN_SAMPLES`
  samples, none lost, at most :data:`SLOW_SHARE` of them over :data:`RTT_BAR` (100 ms, the
  issue's bar), every one under :data:`RTT_MAX`. One sample in ten may hit a scheduling hiccup
  of a loaded 2-core machine (other processes run too); a server that an attack blocks or
  slows misses many samples, not one;
* the server's open file descriptors return to what they were before the case (every
  connection it accepted is closed);
* its RSS stays under :data:`RSS_CEILING` above what it was when the suite started on it. Not
  tighter: asyncio gives each TLS connection a 256 KiB buffer and the allocator keeps freed
  memory, so 200 pending TLS handshakes raise RSS by some 50 MiB for good; a leak the cases
  feed accumulates past the ceiling over the suite, and the descriptor check catches a leaked
  connection at once;
* the log gained no traceback and, in JSON log mode, only JSON objects
  (:func:`~hostile.targets.bad_log_lines`).

Each case asserts the answer it expects itself (an HTTP status, a close code, a signaling
error, or silence and a close).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from hostile.canary import PERIOD
from hostile.targets import CANARY_ROOM, SRC, TESTS, Endpoint, Target, bad_log_lines

CANARY_PERIOD = PERIOD
RTT_BAR = 0.100
SLOW_SHARE = 0.1
RTT_MAX = 0.500
#: A case lasts at least this many canary round trips.
MIN_SAMPLES = 10
RSS_CEILING = 128 * 2**20
FD_SLACK = 2
#: Longest a single case may run (attack plus settling), seconds.
CASE_BUDGET = 45.0


class Canary:
    """Runs :mod:`hostile.canary` against *target* in a process of its own and collects its
    round trips; *module* names another canary speaking the same output (e.g.
    :mod:`hostile.stun_canary`), started with *arguments*."""

    def __init__(
        self, target: Target, module: str = "hostile.canary", arguments: list[str] | None = None
    ) -> None:
        self.target = target
        self._module = module
        self._arguments = arguments
        self.samples: list[tuple[float, float]] = []  # (monotonic time, round trip or inf)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._read, name="hostile-canary", daemon=True)

    def start(self) -> None:
        target = self.target
        if self._arguments is None:
            arguments = [
                target.ws_url,
                target.token(CANARY_ROOM, "canary-ping"),
                target.token(CANARY_ROOM, "canary-echo"),
            ]
            if target.ca_file is not None:
                arguments.append(str(target.ca_file))
        else:
            arguments = self._arguments
        args = [sys.executable, "-m", self._module, *arguments]
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, TESTS])},
        )
        self._thread.start()
        if not self._ready.wait(60):
            raise AssertionError(f"canary did not start: {self.failure}")

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._thread.join(5)
        if process.stdout is not None:
            process.stdout.close()

    @property
    def failure(self) -> str | None:
        """Why the canary stopped, if it did."""
        process = self._process
        if process is None or process.poll() is None:
            return None
        return f"canary exited with status {process.returncode}"

    def since(self, start: float) -> list[float]:
        with self._lock:
            return [rtt for when, rtt in self.samples if when >= start]

    def _read(self) -> None:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "ready":
                self._ready.set()
                continue
            when, rtt = line.split()
            with self._lock:
                self.samples.append((float(when), float(rtt)))


@asynccontextmanager
async def hostile_case(
    target: Target, canary: Canary, *, settle: float | None = None
) -> AsyncIterator[None]:
    """Run the body (the attack) and check the server afterwards (see the module docstring).

    *settle* bounds the wait for the server to close what the attack opened (default: the
    target's idle timeout plus 3 s).
    """
    assert target.alive(), f"{target.name} is down before the case"
    log_offset = target.log_size()
    fds_before = target.fds()
    start = time.monotonic()
    async with asyncio.timeout(CASE_BUDGET):
        yield
        settle_for = target.idle_timeout + 3.0 if settle is None else settle
        deadline = time.monotonic() + settle_for
        # polls: /proc and another thread's samples have no event to wait on
        while target.fds() > fds_before + FD_SLACK and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        while len(canary.since(start)) < MIN_SAMPLES and canary.failure is None:  # noqa: ASYNC110
            await asyncio.sleep(CANARY_PERIOD / 2)
    samples = canary.since(start)
    fds_after = target.fds()
    rss_after = target.rss()
    logs = target.logs_since(log_offset)
    assert target.alive(), f"{target.name} died:\n{logs[-4000:]}"
    assert canary.failure is None, canary.failure
    bad = bad_log_lines(logs, json_logs=target.json_logs)
    assert not bad, "log lines breaking the contract:\n" + "\n".join(bad[:20])
    assert fds_after <= fds_before + FD_SLACK, (
        f"{target.name} still holds {fds_after - fds_before} more descriptors after the case"
    )
    assert rss_after <= target.rss_start + RSS_CEILING, (
        f"{target.name} RSS {rss_after / 2**20:.1f} MiB, started at "
        f"{target.rss_start / 2**20:.1f} MiB (ceiling +{RSS_CEILING / 2**20:.0f} MiB)"
    )
    assert samples, "the canary made no round trip during the case"
    lost = [rtt for rtt in samples if rtt == float("inf")]
    assert not lost, f"canary lost {len(lost)} of {len(samples)} round trips"
    slow = sorted(rtt for rtt in samples if rtt >= RTT_BAR)
    assert len(slow) <= SLOW_SHARE * len(samples), (
        f"{len(slow)} of {len(samples)} canary round trips over {RTT_BAR * 1000:.0f} ms: "
        + ", ".join(f"{rtt * 1000:.0f}" for rtt in slow)
    )
    assert max(samples) < RTT_MAX, f"canary round trip max {max(samples) * 1000:.1f} ms"


# --- raw connections -------------------------------------------------------------------------


async def open_raw(
    endpoint: Endpoint, *, tls: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to *endpoint* (TLS if the endpoint speaks it and *tls*)."""
    context: ssl.SSLContext | None = endpoint.tls if tls else None
    return await asyncio.open_connection(
        endpoint.host,
        endpoint.port,
        ssl=context,
        server_hostname=endpoint.host if context else None,
    )


async def read_to_close(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took (inf: still open
    after *limit* seconds)."""
    start = time.monotonic()
    data = b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        return data, float("inf")
    except (ConnectionError, ssl.SSLError):
        pass
    return data, time.monotonic() - start


def close_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


async def http_exchange(endpoint: Endpoint, request: bytes, limit: float = 10.0) -> bytes:
    """Send *request* and return everything the server answers until it closes."""
    reader, writer = await open_raw(endpoint)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        data, took = await read_to_close(reader, limit)
        assert took != float("inf"), "the server left the connection open"
        return data
    finally:
        close_quietly(writer)


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response."""
    line = response.split(b"\r\n", 1)[0]
    parts = line.split()
    assert len(parts) >= 2, f"not HTTP: {response[:200]!r}"
    assert parts[0].startswith(b"HTTP/1."), f"not HTTP: {response[:200]!r}"
    return int(parts[1])


def upgrade_request(target: Target, *, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    ep = target.main
    return (
        f"GET {target.ws_path} HTTP/1.1\r\nHost: {ep.host}:{ep.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def raw_websocket(
    target: Target,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket on the target's signaling path, upgraded by hand (frames are then ours to
    write, well-formed or not)."""
    reader, writer = await open_raw(target.main)
    writer.write(upgrade_request(target))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert status_of(head) == 101, head
    return reader, writer


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One client WebSocket frame; *length* overrides the announced payload length."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame: its opcode and payload."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return head[0] & 0x0F, await reader.readexactly(size)


async def read_close_code(reader: asyncio.StreamReader, limit: float = 10.0) -> int | None:
    """Read server frames until a close frame; return its code (None: closed without one)."""
    try:
        async with asyncio.timeout(limit):
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


@asynccontextmanager
async def websocket(target: Target) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """An aiohttp WebSocket client on *target* (no message size limit, pings answered)."""
    connector = aiohttp.TCPConnector(ssl=target.main.tls or False, limit=0)
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.ws_connect(target.ws_url, max_msg_size=0, autoping=True) as ws,
        ):
            yield ws
    finally:
        if target.main.tls is not None:
            # aiohttp's advice: give TLS transports a moment to close before the loop ends
            await asyncio.sleep(0.25)
