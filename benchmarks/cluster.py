"""Cluster benchmark: what a message costs when its room's peers sit on different nodes.

Processes: a redis-server (:func:`rtckit.testing.redisserver.run_redis_server`), two rtckit
signaling nodes (aiohttp :class:`~rtckit.signaling.SignalingServer` with a
:class:`~rtckit.backplane.redis.RedisBackplane`, each a process of this script, started afresh
for each measurement) and this process, the load driver: the raw-protocol clients of
``benchmarks/signaling.py``, at a fixed offered rate below saturation. Clients sit in rooms of
2 to 10 peers; half of each room's peers (every other one) send ~400-byte messages, each to a
fixed peer of the other half. A room's *home* is the node where its first peer joined (it
takes the room's lease); rooms alternate between the two nodes as homes. Placements:

* ``local``: every peer of a room on its home (the relay of one node, in a cluster);
* ``home-to-edge``: senders on the home, receivers on the other node (each message crosses
  the backplane once, home to edge);
* ``edge-to-home``: senders on the other node, receivers on the home (once, edge to home);
* ``outbox``: ``home-to-edge`` with the rooms' session journals on (``durable_sessions``:
  each session's outbox kept as a Redis stream, written before the frames go out); the other
  placements run without it;
* ``serve``/``serve-workers``: the same load (``local`` seats, one URL) on ``rtckit serve``
  as one process without ``[cluster]``, and as ``--workers 2`` with ``[cluster]`` (the kernel
  spreads connections over the workers, so a room's peers often sit on two workers).

Figures per measurement: CPU µs per delivered message summed over every measured process
(the nodes or the supervisor and its workers, and redis-server; not the driver), redis-server's
own share, p50/p99 latency (the driver sends and receives, one clock). Each repetition runs
every placement once in a rotating order; ratios (cross / local, workers / one process) are
taken within a repetition, then their median and range are reported.

Run: ``python benchmarks/cluster.py`` (about four minutes: 5 repetitions of 6 s windows);
``--quick`` for a smoke run that writes nothing. Writes
``docs/topics/cluster-benchmark-results.inc`` (included by docs/topics/cluster-benchmark.rst).
``--profile DIR`` runs one ``home-to-edge`` measurement with both nodes under cProfile and
writes their statistics to DIR (nothing else measured, nothing written to docs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import itertools
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import aiohttp
import signaling as bench  # benchmarks/signaling.py: its servers' helpers and its clients

sys.path.insert(0, str(bench.ROOT / "src"))

from rtckit.testing.redisserver import RedisServer, run_redis_server

DOC = bench.ROOT / "docs" / "topics" / "cluster-benchmark-results.inc"
NODES = 2
CROSS = ("home-to-edge", "edge-to-home")
SERVE = ("serve", "serve-workers")
OUTBOX = "outbox"
PLACEMENTS = ("local", *CROSS, OUTBOX, *SERVE)
#: Share of a core a capacity plan lets one process use (the scaling estimate).
UTILISATION = 0.7
#: Deployments of the scaling estimate: (rooms, peers per room, messages/s sent per peer).
DEPLOYMENTS = ((1_000, 2, 1.0), (10_000, 4, 1.0), (10_000, 10, 1.0), (100_000, 4, 1.0))


# --- the load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seat:
    """One client: its room, the node it connects to and whom it sends to."""

    room: str
    node: int  # index into the deployment's URLs
    first: bool  # the room's first joiner: its node becomes the room's home
    sends: bool
    partner: int  # index of the seat it sends to


def seats(placement: str, count: int, tag: str) -> list[Seat]:
    """*count* clients in rooms of 2 to 10 peers (named after *tag*, so that no run meets
    the leases of another), seated for *placement*.

    In each room, peers 0, 2, 4... (side 0) sit on the home, and each sends to peer k ^ 1
    (or k - 1, for the last of an odd room), which is on side 1; ``edge-to-home`` reverses
    the direction. Cross placements seat side 1 on the other node.
    """
    out: list[Seat] = []
    sizes = itertools.cycle(range(2, 11))
    for number in itertools.count():
        left = count - len(out)
        if left <= 0:
            return out
        size = min(next(sizes), left)
        size += 1 if left - size == 1 else 0  # no room of one
        home, base = number % NODES, len(out)
        for k in range(size):
            side = k % 2
            crosses = placement in CROSS or placement == OUTBOX
            node = home if not crosses or side == 0 else (home + 1) % NODES
            partner = k - 1 if side == 1 or k + 1 == size else k + 1
            sends = side == (1 if placement == "edge-to-home" else 0)
            out.append(Seat(f"{tag}-{number}", node, k == 0, sends, base + partner))
    raise AssertionError("unreachable")


@dataclass
class Deployment:
    """The processes serving one measurement and the URL of each node."""

    servers: list[bench.Server]  # what this script started (stopped by stop())
    urls: list[str]  # index: Seat.node
    pids: list[int]  # whose CPU counts; redis-server's last when there is one
    redis: bool

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


async def start_node(
    redis_url: str, node_id: str, loop: str, profile: Path | None = None, *, durable: bool = False
) -> bench.Server:
    """An rtckit node of this script (``--serve-node``) on a free port."""
    port = bench.free_port()
    argv = [sys.executable, __file__, "--serve-node", str(port), "--redis-url", redis_url]
    argv += ["--node-id", node_id, "--server-loop", loop]
    argv += ["--durable"] if durable else []
    argv += ["--profile", str(profile)] if profile is not None else []
    env = {**os.environ, "PYTHONPATH": str(bench.ROOT / "src")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
    await bench.wait_port(port, proc)
    return bench.Server(f"node {node_id}", proc, port, lambda _i: ws_url(port), loop)


def serve_node(
    port: int, loop: str, redis_url: str, node_id: str, profile: str | None, durable: bool
) -> None:
    """A node process: :func:`signaling.serve_rtckit` with a backplane (and the session
    journal if *durable*); under cProfile with *profile* (its statistics written there when
    SIGTERM stops it)."""
    if profile is None:
        bench.serve_rtckit(port, loop, redis_url=redis_url, node_id=node_id, durable=durable)
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # the SIGTERM that stops it
            bench.serve_rtckit(port, loop, redis_url=redis_url, node_id=node_id, durable=durable)
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


async def start_cluster(
    redis: RedisServer, tag: str, loop: str, profile: Path | None = None, *, durable: bool = False
) -> Deployment:
    assert redis.pid is not None
    servers: list[bench.Server] = []
    try:
        for name in "ab"[:NODES]:
            out = None if profile is None else profile / f"node-{name}.pstats"
            servers.append(await start_node(redis.url, f"{name}-{tag}", loop, out, durable=durable))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return Deployment(
        servers,
        [ws_url(s.port) for s in servers],
        [s.proc.pid for s in servers] + [redis.pid],
        redis=True,
    )


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


async def start_serve(redis: RedisServer, workers: int, loop: str, directory: Path) -> Deployment:
    """``rtckit serve`` as one process (no ``[cluster]``) or as *workers* workers sharing the
    port through ``[cluster]`` on *redis*; the supervisor and its workers are measured."""
    port = bench.free_port()
    config = directory / f"serve-{workers}.toml"
    text = f'[server]\nhost = "127.0.0.1"\nport = {port}\ninsecure = true\n'
    text += '[auth]\nmode = "open"\n[logging]\nlevel = "warning"\n[metrics]\nenabled = false\n'
    if workers > 1:
        text += f'[cluster]\nredis_url = "{redis.url}"\nnamespace = "serve{time.time_ns()}"\n'
    config.write_text(text)
    argv = [sys.executable, "-m", "rtckit", "serve", "--config", str(config), "--loop", loop]
    argv += ["--workers", str(workers)] if workers > 1 else []
    env = {**os.environ, "PYTHONPATH": str(bench.ROOT / "src")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
    server = bench.Server(f"serve {workers}", proc, port, lambda _i: ws_url(port), loop)
    try:
        await bench.wait_port(port, proc)
        pids = [proc.pid]
        if workers > 1:
            for _ in range(300):  # until every worker is up (each listens on the port)
                if len(children(proc.pid)) == workers:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # the last one to start has joined the backplane
            pids += children(proc.pid)
            assert redis.pid is not None
            pids.append(redis.pid)
    except BaseException:
        server.stop()
        raise
    return Deployment([server], [ws_url(port)] * NODES, pids, redis=workers > 1)


@contextlib.asynccontextmanager
async def seated(
    deployment: Deployment, plan: list[Seat], stats: bench.Stats
) -> AsyncIterator[list[bench.Client]]:
    """The clients of *plan* connected and joined (each room's first peer before the others,
    so that its node is the room's home), reading; yields the senders."""
    urls = deployment.urls
    server = bench.Server(
        "rtckit cluster", deployment.servers[0].proc, 0, lambda i: urls[plan[i].node], "?"
    )
    clients = [bench.Client(i, server, stats, seat.room) for i, seat in enumerate(plan)]
    gate = asyncio.Semaphore(50)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def connect(client: bench.Client) -> None:
            async with gate:
                await client.connect(session)

        try:
            for wave in (True, False):
                await asyncio.gather(
                    *(
                        connect(c)
                        for c, seat in zip(clients, plan, strict=True)
                        if seat.first is wave
                    )
                )
            for client, seat in zip(clients, plan, strict=True):
                client.partner = clients[seat.partner].peer_id
                client.start_reading()
            yield [c for c, seat in zip(clients, plan, strict=True) if seat.sends]
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Measured:
    placement: str
    repetition: int
    window: bench.Window
    redis: bool  # the last of window.cpu is redis-server's

    @property
    def all_in_us(self) -> float:
        return self.window.cpu_us()

    @property
    def redis_us(self) -> float:
        return self.window.cpu_us(len(self.window.cpu) - 1) if self.redis else 0.0


async def measure(
    args: argparse.Namespace, redis: RedisServer, placement: str, rep: int, directory: Path
) -> Measured:
    tag = f"r{rep}-{placement}-{time.time_ns()}"
    if placement in SERVE:
        deployment = await start_serve(
            redis, 2 if placement == "serve-workers" else 1, args.loop, directory
        )
    else:
        deployment = await start_cluster(redis, tag, args.loop, durable=placement == OUTBOX)
    try:
        stats = bench.Stats()
        plan = seats("local" if placement in SERVE else placement, args.clients, tag)
        async with seated(deployment, plan, stats) as senders:
            window = await bench.offer_load(
                senders, stats, args.rate, seconds(args), deployment.pids
            )
    finally:
        deployment.stop()
    result = Measured(placement, rep, window, deployment.redis)
    print(
        f"rep {rep} {placement:13} {window.delivered:6.0f} msg/s lost {window.lost} "
        f"p50 {window.p50_ms:.2f} ms p99 {window.p99_ms:.2f} ms "
        f"all-in {result.all_in_us:.1f} µs/msg, redis-server {result.redis_us:.1f}",
        flush=True,
    )
    return result


def seconds(args: argparse.Namespace) -> float:
    return 3.0 if args.quick else float(args.seconds)


# --- report ------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 1) -> str:
    """Median and range: ``12.3 (11.0-14.1)``."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    low, high = min(values), max(values)
    return f"{statistics.median(values):.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def by_placement(results: list[Measured]) -> dict[str, dict[int, Measured]]:
    table: dict[str, dict[int, Measured]] = {}
    for result in results:
        table.setdefault(result.placement, {})[result.repetition] = result
    return table


def paired(
    table: dict[str, dict[int, Measured]],
    over: str,
    under: str,
    value: Callable[[Measured, Measured], float],
) -> list[float]:
    """*value*(over, under) for each repetition that measured both."""
    reps = sorted(set(table.get(over, {})) & set(table.get(under, {})))
    return [value(table[over][rep], table[under][rep]) for rep in reps]


@dataclass(frozen=True)
class Costs:
    """The measured figures the scaling estimate is fed with (medians, µs per message)."""

    local: float  # all-in, every peer on its room's home
    hop: float  # added by one crossing of the backplane (cross - local, all-in)
    redis_hop: float  # redis-server's share of one crossing

    @classmethod
    def of(cls, table: dict[str, dict[int, Measured]]) -> Costs:
        local = statistics.median(m.all_in_us for m in table["local"].values())
        cross = [m for placement in CROSS for m in table[placement].values()]
        hop = statistics.median(m.all_in_us for m in cross) - local
        return cls(local, max(0.0, hop), statistics.median(m.redis_us for m in cross))


def hops(nodes: int) -> float:
    """Backplane crossings per message when a load balancer seats peers on any of *nodes*
    nodes at random: the sender is off its room's home with probability 1 - 1/nodes, and so
    is the receiver, and each costs one crossing (two peers on the same non-home node still
    talk through the home)."""
    return 2 * (1 - 1 / nodes)


def plan_deployment(costs: Costs, rate: float, *, affinity: bool) -> tuple[int, float, float]:
    """(nodes, node cores, Redis cores) for *rate* messages/s: the fewest nodes (one process
    per core) whose cores, at :data:`UTILISATION`, carry the load they make. *affinity*: the
    load balancer seats each room's peers on its home (hash of the room name), no crossing."""
    for nodes in itertools.count(1):
        crossings = 0.0 if affinity else hops(nodes)
        node_us = costs.local + crossings * (costs.hop - costs.redis_hop)
        node_cores = rate * node_us / 1e6
        if node_cores <= nodes * UTILISATION:
            return nodes, node_cores, rate * crossings * costs.redis_hop / 1e6
    raise AssertionError("unreachable")


def scaling(costs: Costs) -> str:
    rows = []
    for rooms, peers, per_peer in DEPLOYMENTS:
        rate = rooms * peers * per_peer
        spread_nodes, spread_cores, redis_cores = plan_deployment(costs, rate, affinity=False)
        affine_nodes, _cores, _redis = plan_deployment(costs, rate, affinity=True)
        rows.append(
            [
                f"{rooms:,}",
                str(peers),
                f"{per_peer:g}",
                f"{rate:,.0f}",
                f"{spread_nodes} ({spread_cores:.1f} cores)",
                f"{redis_cores:.2f} ({max(1, math.ceil(redis_cores / UTILISATION))})",
                str(affine_nodes),
            ]
        )
    saturation = 1e6 / (2 * costs.redis_hop) if costs.redis_hop > 0 else float("inf")
    return "\n".join(
        [
            "Scaling estimate, fed with this run's medians: a message costs "
            f"{costs.local:.1f} µs of CPU all-in when sender and receiver sit on the room's "
            f"home, and each crossing of the backplane adds {costs.hop:.1f} µs, of which "
            f"{costs.redis_hop:.1f} µs in redis-server. A load balancer that seats peers on "
            "any of *K* nodes at random makes 2(1 - 1/K) crossings per message (the sender "
            "off the home, the receiver off the home: each one crossing); one that seats a "
            "room's peers on its home (a hash of the room's name in the URL) makes none. "
            f"Nodes are counted as one process per core busy at most {UTILISATION:.0%}; "
            "*Redis cores* is redis-server's CPU (in brackets, the Redis instances it takes at "
            f"{UTILISATION:.0%}). One redis-server (single-threaded) saturates at about "
            f"**{saturation:,.0f} messages/s** when nearly every message crosses twice "
            f"(1 / (2 x {costs.redis_hop:.1f} µs)), twice that when each crosses once. The "
            "backplane uses one Redis: beyond that, spreading nodes' channels over several "
            "Redis instances is not built, and room affinity at the load balancer is the way "
            "to grow. Signaling traffic is bursty (an offer, an answer and a few dozen ICE "
            "candidates per join, then little): size for the joins per second times their "
            "messages.",
            "",
            bench.table(
                [
                    "rooms",
                    "peers/room",
                    "msg/s per peer",
                    "msg/s",
                    "node processes, random seats",
                    "Redis cores (instances)",
                    "node processes, room affinity",
                ],
                rows,
            ),
        ]
    )


def report(results: list[Measured], args: argparse.Namespace, load: tuple[float, float]) -> str:
    table = by_placement(results)
    rows = []
    for placement in PLACEMENTS:
        measured = list(table.get(placement, {}).values())
        if not measured:
            continue
        rows.append(
            [
                placement,
                f"{statistics.median(m.window.delivered for m in measured):.0f}",
                str(sum(m.window.lost for m in measured)),
                spread([m.window.p50_ms for m in measured], 2),
                spread([m.window.p99_ms for m in measured], 2),
                spread([m.all_in_us for m in measured]),
                spread([m.redis_us for m in measured]) if measured[0].redis else "-",
            ]
        )
    ratio_rows = []
    for placement in (*CROSS, OUTBOX):
        ratios = paired(table, placement, "local", lambda o, u: o.all_in_us / u.all_in_us)
        deltas = paired(table, placement, "local", lambda o, u: o.window.p99_ms - u.window.p99_ms)
        ratio = statistics.median(ratios)
        delta = statistics.median(deltas)
        met = "met" if ratio <= 2 and delta <= 1 else "not met"
        ratio_rows.append([f"{placement} / local", spread(ratios, 2), spread(deltas, 2), met])
    workers = paired(table, "serve-workers", "serve", lambda o, u: o.all_in_us / u.all_in_us)
    workers_p99 = paired(
        table, "serve-workers", "serve", lambda o, u: o.window.p99_ms - u.window.p99_ms
    )
    ratio_rows.append(
        ["serve --workers 2 / serve", spread(workers, 2), spread(workers_p99, 2), "(no goal)"]
    )
    return "\n".join(
        [
            "Written by ``python benchmarks/cluster.py`` (latest run: "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared by "
            "the driver, the nodes and redis-server, "
            f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
            f"{bench.uvloop_version()} (nodes on {args.loop}), {redis_version()}; load "
            f"average {load[0]:.1f} at the start and {load[1]:.1f} at the end: other jobs "
            "share this machine, so compare ratios within the run).",
            "",
            f"{args.clients} clients in rooms of 2 to 10 peers, half of them sending ~400-byte "
            f"messages to a peer of the other half, {args.rate:.0f} messages/s offered in all, "
            f"{seconds(args):.0f} s measured after 1.5 s of warm-up, {args.repeat} "
            "repetitions (every placement once per repetition, in a rotating order); figures "
            "are medians with their range in brackets. *all-in* is the CPU time of every "
            "measured process (both nodes, or ``rtckit serve``'s supervisor and workers, and "
            "redis-server; not the driver) per delivered message; *redis-server* its own "
            "share (read from ``/proc`` in 10 ms clock ticks: coarse at this load).",
            "",
            bench.table(
                [
                    "placement",
                    "delivered msg/s",
                    "lost",
                    "p50 ms",
                    "p99 ms",
                    "all-in µs/msg",
                    "redis-server µs/msg",
                ],
                rows,
            ),
            "",
            "Ratios within each repetition (median and range): all-in CPU per message, and the "
            "p99 latency added. Goals: a cross-node message costs at most 2x a local one "
            "all-in and adds at most 1 ms p99.",
            "",
            bench.table(["comparison", "CPU ratio", "p99 added ms", "goal"], ratio_rows),
            "",
            scaling(Costs.of(table)),
            "",
        ]
    )


def redis_version() -> str:
    out = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout
    words = [w for w in out.split() if w.startswith("v=")]
    return f"redis-server {words[0][2:]}" if words else "redis-server"


async def main(args: argparse.Namespace, directory: Path) -> None:
    bench.raise_fd_limit()
    load_start = os.getloadavg()[0]
    results: list[Measured] = []
    async with run_redis_server() as redis:
        if args.profile is not None:
            await profile(args, redis, Path(args.profile))
            return
        repeat = 1 if args.quick else args.repeat
        for rep in range(repeat):
            order = PLACEMENTS[rep % len(PLACEMENTS) :] + PLACEMENTS[: rep % len(PLACEMENTS)]
            results.extend([await measure(args, redis, p, rep, directory) for p in order])
    text = report(results, args, (load_start, os.getloadavg()[0]))
    if not args.quick:
        DOC.write_text(text, encoding="utf-8")
    print(text)


async def profile(args: argparse.Namespace, redis: RedisServer, directory: Path) -> None:
    """One ``home-to-edge`` measurement (with the session journals: ``--durable``) with both
    nodes under cProfile (into *directory*, which exists)."""
    tag = f"profile-{time.time_ns()}"
    deployment = await start_cluster(redis, tag, args.loop, directory, durable=args.durable)
    try:
        stats = bench.Stats()
        async with seated(deployment, seats("home-to-edge", args.clients, tag), stats) as senders:
            window = await bench.offer_load(
                senders, stats, args.rate, seconds(args), deployment.pids
            )
    finally:
        deployment.stop()
    print(f"profiled: {window.delivered:.0f} msg/s; statistics in {directory}/node-*.pstats")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run, docs not written")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured window (6)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (5)")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered msg/s (1000)")
    parser.add_argument("--clients", type=int, default=100, help="clients (100)")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="uvloop" if bench.uvloop_version().startswith("uvloop ") else "asyncio",
        help="the nodes' event loop (uvloop when installed)",
    )
    parser.add_argument("--profile", metavar="DIR", help="profile both nodes once (cProfile)")
    parser.add_argument("--serve-node", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--node-id", help=argparse.SUPPRESS)
    parser.add_argument("--server-loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument(
        "--durable", action="store_true", help="with --profile: the session journals on"
    )
    arguments = parser.parse_args()
    if arguments.serve_node:
        serve_node(
            arguments.serve_node,
            arguments.server_loop,
            arguments.redis_url,
            arguments.node_id,
            arguments.profile,
            arguments.durable,
        )
    else:
        if arguments.clients < 2:
            parser.error("--clients must be at least 2")
        if arguments.profile is not None:
            Path(arguments.profile).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rtckit-cluster-bench-") as tmp:
            asyncio.run(main(arguments, Path(tmp)))
