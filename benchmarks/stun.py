"""STUN server benchmark: rtckit's Binding responder against baselines measured in the same run.

* codec: :func:`rtckit.stun.codec.handle_request` against aioice doing the same work (parse the
  request, build a response with XOR-MAPPED-ADDRESS and FINGERPRINT, serialize);
* UDP: Binding round trips per second through :class:`rtckit.stun.server.StunServer` on
  127.0.0.1, against an asyncio UDP echo server (the cost of asyncio and the kernel alone).

Run ``python benchmarks/stun.py``; it takes about ten seconds and writes the table to
``docs/topics/stun-benchmark.rst``.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aioice.stun

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from rtckit.stun.codec import binding_request, handle_request
from rtckit.stun.server import StunServer, StunServerConfig

ROUNDS = 5  # rtckit and baseline alternate; the best round of each counts (the machine is shared)
CODEC_SECONDS = 0.4  # per round
UDP_SECONDS = 0.5  # per round
IN_FLIGHT = 32
OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "topics" / "stun-benchmark.rst"


def _rate(work: Callable[[], None], seconds: float) -> float:
    """Calls of *work* per second, over about *seconds*."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            work()
        count += 200
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def codec_rates() -> tuple[float, float]:
    request = binding_request()
    source = ("203.0.113.7", 40000)

    def rtckit_answer() -> None:
        handle_request(request, source)

    def aioice_answer() -> None:
        message = aioice.stun.parse_message(request)
        response = aioice.stun.Message(
            message_method=aioice.stun.Method.BINDING,
            message_class=aioice.stun.Class.RESPONSE,
            transaction_id=message.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = source
        response.attributes["SOFTWARE"] = "aioice"
        response.add_fingerprint()
        bytes(response)

    ours, theirs = 0.0, 0.0
    for _ in range(ROUNDS):
        ours = max(ours, _rate(rtckit_answer, CODEC_SECONDS))
        theirs = max(theirs, _rate(aioice_answer, CODEC_SECONDS))
    return ours, theirs


class _Echo(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    """Keeps IN_FLIGHT requests outstanding; counts answers."""

    transport: asyncio.DatagramTransport

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.answers = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for _ in range(IN_FLIGHT):
            self.transport.sendto(self.request)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.answers += 1
        self.transport.sendto(self.request)


async def _round_trips(port: int) -> float:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        lambda: _Client(binding_request()), remote_addr=("127.0.0.1", port)
    )
    try:
        start = time.perf_counter()
        await asyncio.sleep(UDP_SECONDS)
        return client.answers / (time.perf_counter() - start)
    finally:
        transport.close()


async def udp_rates() -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    stun, echo = 0.0, 0.0
    # One source at full speed is what is measured: without the per-source rate limit, which
    # would answer this client 50 times a second.
    config = StunServerConfig(bind=[("127.0.0.1", 0)], udp_rate_limit=None)
    async with StunServer(config) as server:
        transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
        try:
            for _ in range(ROUNDS):
                stun = max(stun, await _round_trips(server.udp_addresses[0][1]))
                echo = max(echo, await _round_trips(transport.get_extra_info("sockname")[1]))
        finally:
            transport.close()
        assert server.stats.internal_errors == 0
    return stun, echo


def main() -> None:
    rtckit_codec, aioice_codec = codec_rates()
    stun_udp, echo_udp = asyncio.run(udp_rates())
    rows = [
        ("Answer one Binding request (pure)", "aioice parse + build", rtckit_codec, aioice_codec),
        ("UDP round trips, 127.0.0.1", "asyncio UDP echo", stun_udp, echo_udp),
    ]
    for name, baseline, value, base in rows:
        print(f"{name}: {value:,.0f}/s; {baseline}: {base:,.0f}/s; ratio {value / base:.2f}")
    table = "\n".join(
        f"   * - {name}\n     - {baseline}\n     - {value / base:.2f}\n     - {value:,.0f}/s"
        for name, baseline, value, base in rows
    )
    OUTPUT.write_text(
        f"""STUN server benchmark
=====================

``python benchmarks/stun.py`` measures rtckit's STUN Binding responder against baselines
measured in the same run, on the same machine; ratios above 1 mean rtckit is faster than the
baseline. Each side runs {ROUNDS} alternating rounds and its best round counts. Latest run:
Python {platform.python_version()}, {platform.machine()}, {IN_FLIGHT} requests in flight for
the UDP row.

.. list-table::
   :header-rows: 1

   * - What
     - Baseline
     - Ratio to baseline
     - rtckit
{table}

The UDP baseline is an asyncio echo server: the difference is what parsing the request and
building the answer costs on top of asyncio and the kernel. The UDP row runs the server
without its per-source rate limit (``udp_rate_limit=None``), which by default answers one
source at most 50 times a second.
""",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
