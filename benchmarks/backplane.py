"""Redis backplane benchmark: CPU per post delivered node to node, against bare redis-py.

* rtckit: :class:`rtckit.backplane.redis.RedisBackplane` node ``a`` posts to node ``b``
  (100-byte payloads), until ``b``'s handler has every one;
* baseline: the same number of 100-byte messages through redis-py alone: ``PUBLISH`` in
  pipelines of the same size as the backplane's, read by a ``PubSub`` on another connection.

Both nodes (and both baseline clients) run in this process; redis-server is a child started by
:func:`rtckit.testing.redisserver.run_redis_server`. CPU is this process'
(:func:`time.process_time`) plus redis-server's (``/proc/<pid>/stat``, in clock ticks of 10 ms:
its own share is coarse), divided by the posts delivered. Rounds alternate; the best of each
counts (the machine is shared). Run ``python benchmarks/backplane.py``; it takes about ten
seconds and prints the figures.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from rtckit.backplane.base import NodeId
from rtckit.backplane.redis import RedisBackplane, RedisBackplaneConfig
from rtckit.testing.redisserver import RedisServer, run_redis_server

ROUNDS = 3
POSTS = 20_000
PAYLOAD = b"x" * 100
BATCH = 256  # the backplane's pipeline size
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _server_cpu(pid: int) -> float:
    """redis-server's CPU seconds so far (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self.done = asyncio.Event()

    def on_message(self, sender: NodeId, payload: bytes) -> None:
        self.count += 1
        if self.count == POSTS:
            self.done.set()

    def on_node_down(self, node: NodeId) -> None:
        pass

    def on_unreachable(self, node: NodeId) -> None:
        raise AssertionError(f"a post to {node} was refused: the benchmark must not drop")

    def on_state(self, up: bool) -> None:
        pass


async def _measure(server: RedisServer, run: Awaitable[None]) -> float:
    """µs of CPU (this process and redis-server) per delivered post."""
    assert server.pid is not None
    cpu, redis_cpu = time.process_time(), _server_cpu(server.pid)
    await run
    cpu, redis_cpu = time.process_time() - cpu, _server_cpu(server.pid) - redis_cpu
    return (cpu + redis_cpu) / POSTS * 1e6


async def rtckit_round(server: RedisServer) -> tuple[float, float]:
    """(µs per post all-in, of which redis-server's)."""
    counter = _Counter()
    config = {"url": server.url, "max_queued_posts": POSTS, "max_queued_bytes": 2**26}
    async with (
        RedisBackplane(RedisBackplaneConfig(node_id="a", **config)) as a,  # type: ignore[arg-type]
        RedisBackplane(RedisBackplaneConfig(node_id="b", **config)) as b,  # type: ignore[arg-type]
    ):
        await a.start(_Counter())
        await b.start(counter)
        assert server.pid is not None
        redis_before = _server_cpu(server.pid)

        async def run() -> None:
            for start in range(0, POSTS, BATCH):
                for _ in range(start, min(start + BATCH, POSTS)):
                    a.post("b", PAYLOAD)
                await asyncio.sleep(0)
            await counter.done.wait()

        total = await _measure(server, run())
        redis_share = (_server_cpu(server.pid) - redis_before) / POSTS * 1e6
    return total, redis_share


async def baseline_round(server: RedisServer) -> float:
    publisher = aioredis.Redis.from_url(server.url)
    subscriber = aioredis.Redis.from_url(server.url)
    pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("bench")
    await pubsub.get_message(timeout=1.0)
    try:

        async def read() -> None:
            received = 0
            while received < POSTS:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    received += 1

        async def run() -> None:
            reader = asyncio.create_task(read())
            for start in range(0, POSTS, BATCH):
                pipe = publisher.pipeline(transaction=False)
                for _ in range(start, min(start + BATCH, POSTS)):
                    pipe.publish("bench", PAYLOAD)
                await pipe.execute()
            await reader

        return await _measure(server, run())
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
        await publisher.aclose()


async def main() -> None:
    rtckit: list[tuple[float, float]] = []
    baseline: list[float] = []
    async with run_redis_server() as server:
        for _ in range(ROUNDS):
            rtckit.append(await rtckit_round(server))
            baseline.append(await baseline_round(server))
    best, redis_share = min(rtckit)
    floor = min(baseline)
    print(
        f"Python {platform.python_version()}, {POSTS} posts of {len(PAYLOAD)} bytes, best of "
        f"{ROUNDS}"
    )
    print(f"rtckit RedisBackplane: {best:.1f} µs CPU per post (redis-server {redis_share:.1f})")
    print(f"bare redis-py PUBLISH + PubSub: {floor:.1f} µs CPU per message")
    print(f"ratio: {best / floor:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
