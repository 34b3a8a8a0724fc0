"""WHEP viewers against SFU room subscribers: server CPU per viewer, and WHEP session setup.

Two processes on loopback, so the server's CPU is measured alone:

* the *server* process runs ``rtckit serve``'s application (:func:`rtckit.server.app.create_app`:
  signaling, SFU rooms, WHIP, WHEP; plain HTTP on 127.0.0.1, open rooms, no ICE servers) and
  reports its own CPU time (``time.process_time``, all threads) when asked;
* this process holds one WHIP publisher (rtckit's :class:`~rtckit.whip.client.WhipClient`: a
  640x480 30 fps test pattern and a tone) and the viewers of one mode at a time:

  - ``whep``: N :class:`~rtckit.whip.client.WhepClient` on ``/whep/<room>`` (not decoding);
  - ``sfu``: N room members over the signaling WebSocket (``join_room``), which subscribe to
    the publisher as every member does.

Measured in one run: the server's CPU over a window with the publisher alone (the baseline),
then with N viewers of each mode; the CPU per viewer is (CPU with N - baseline) / N, and the
ratio WHEP / SFU is the figure of merit (goal: within 10%). Latency: a few decoding viewers
of each mode read the frame counter of the publisher's pattern; the time from the publisher
making the frame to a viewer decoding it, per path. Session setup: sequential WHEP sessions,
time from the ``POST`` to the first video frame received (goal: median <= 300 ms).

Run: ``python benchmarks/whep.py`` (about 90 s). Results go to
``docs/topics/whep-benchmark.rst`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from rtckit.peer import SessionConfig  # noqa: E402
from rtckit.peer.media import (  # noqa: E402
    PatternConfig,
    TestPatternTrack,
    ToneTrack,
    read_frame_counter,
)
from rtckit.signaling import SignalingClient  # noqa: E402
from rtckit.topology import TrackPublished, join_room  # noqa: E402
from rtckit.whip.client import WhepClient, WhipClient  # noqa: E402

ROOM = "bench"


# --- server process ----------------------------------------------------------------------------


async def _serve(conn: multiprocessing.connection.Connection) -> None:
    from aiohttp import web

    from rtckit.server.app import create_app
    from rtckit.server.config import (
        AuthSettings,
        RoomSettings,
        RoomsSettings,
        ServeConfig,
        ServerSettings,
    )

    config = ServeConfig(
        server=ServerSettings(insecure=True, host="127.0.0.1"),
        auth=AuthSettings(mode="open"),
        rooms=RoomsSettings(declared=(RoomSettings(name=ROOM, topology="sfu"),)),
    )
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    conn.send(runner.addresses[0][1])
    loop = asyncio.get_running_loop()
    try:
        while (await loop.run_in_executor(None, conn.recv)) == "cpu":
            conn.send(time.process_time())
    finally:
        await runner.cleanup()


def server_main(conn: multiprocessing.connection.Connection) -> None:
    asyncio.run(_serve(conn))


class ServerProcess:
    def __init__(self) -> None:
        self.conn, child = multiprocessing.get_context("spawn").Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=server_main, args=(child,), daemon=True
        )

    async def __aenter__(self) -> str:
        self.process.start()
        port = await asyncio.to_thread(self._recv, 60)
        return f"http://127.0.0.1:{port}"

    def _recv(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError("the server process did not answer")
        return self.conn.recv()

    async def cpu(self) -> float:
        self.conn.send("cpu")
        return float(await asyncio.to_thread(self._recv, 10))

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):
            self.conn.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


async def cpu_window(server: ServerProcess, seconds: float) -> float:
    """The server's CPU over *seconds*, in cores (1.0 = one core busy)."""
    cpu0, t0 = await server.cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    return (await server.cpu() - cpu0) / (time.monotonic() - t0)


# --- viewers -----------------------------------------------------------------------------------


class TimedPattern(TestPatternTrack):
    """The publisher's test pattern, remembering when it made each frame (by its counter)."""

    def __init__(self) -> None:
        super().__init__(PatternConfig(width=640, height=480, fps=30))
        self.made: dict[int, float] = {}

    async def recv(self) -> Any:
        frame = await super().recv()
        index = (self.frames_sent - 1) % 65536
        self.made[index] = time.monotonic()
        self.made.pop((index - 300) % 65536, None)  # ten seconds are plenty
        return frame


Sink = Callable[[Any], None]


async def _drain(track: Any, sink: Sink | None) -> None:
    with contextlib.suppress(Exception):
        while True:
            frame = await track.recv()
            if sink is not None:
                sink(frame)


@contextlib.asynccontextmanager
async def whep_viewers(base: str, count: int, sink: Sink | None = None) -> AsyncIterator[None]:
    """*count* WHEP viewers; with *sink*, decoding, and each video frame given to it."""
    async with contextlib.AsyncExitStack() as stack:
        viewers = [
            await stack.enter_async_context(
                WhepClient(f"{base}/whep/{ROOM}", decode=sink is not None)
            )
            for _ in range(count)
        ]
        tasks = [
            asyncio.ensure_future(_drain(track, sink))
            for viewer in viewers
            for track in viewer.tracks
            if sink is not None
        ]
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*(viewer.wait_frames(10) for viewer in viewers))
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def sfu_subscribers(base: str, count: int, sink: Sink | None = None) -> AsyncIterator[None]:
    """*count* room members; with *sink*, each video frame they decode is given to it."""
    ws = base.replace("http://", "ws://") + "/ws"
    config = SessionConfig()
    async with contextlib.AsyncExitStack() as stack:
        tasks: list[asyncio.Task[None]] = []
        for _ in range(count):
            client = await stack.enter_async_context(SignalingClient.connect(ws, room=ROOM))
            room = await stack.enter_async_context(join_room(client, session_config=config))
            first = asyncio.get_running_loop().create_future()

            async def follow(room: Any = room, first: asyncio.Future[None] = first) -> None:
                async for event in room.events():
                    if isinstance(event, TrackPublished) and event.track.kind == "video":
                        await event.track.recv()
                        if not first.done():
                            first.set_result(None)
                        tasks.append(asyncio.ensure_future(_drain(event.track, sink)))

            tasks.append(asyncio.ensure_future(follow()))
            async with asyncio.timeout(30):
                await first
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def latencies(
    base: str, pattern: TimedPattern, mode: str, count: int, seconds: float
) -> list[float]:
    """Seconds from the publisher making a frame to a viewer of *mode* decoding it."""
    found: list[float] = []

    def sink(frame: Any) -> None:
        if isinstance(frame, av.VideoFrame):
            made = pattern.made.get(read_frame_counter(frame))
            if made is not None:
                found.append(time.monotonic() - made)

    viewers = sfu_subscribers if mode == "sfu" else whep_viewers
    async with viewers(base, count, sink):
        found.clear()  # from now on: the stream is running
        await asyncio.sleep(seconds)
    return found


async def setup_times(base: str, sessions: int) -> list[float]:
    """Seconds from the POST to the first video frame, for sequential WHEP sessions."""
    times = []
    for _ in range(sessions):
        async with WhepClient(f"{base}/whep/{ROOM}") as viewer:
            async with asyncio.timeout(10):
                await viewer.wait_frames(1)
            assert viewer.first_frame_at is not None
            assert viewer.posted_at is not None
            times.append(viewer.first_frame_at - viewer.posted_at)
    return times


# --- the run -----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    pattern = TimedPattern()
    tracks = [pattern, ToneTrack()]
    server = ServerProcess()
    async with server as base:
        async with WhipClient(f"{base}/whip/{ROOM}", tracks=tracks) as publisher:
            await asyncio.sleep(args.warmup)
            sent0, t0 = await publisher.stats(), time.monotonic()
            baseline = statistics.median(
                [await cpu_window(server, args.seconds) for _ in range(args.repeat)]
            )
            sent1, elapsed = await publisher.stats(), time.monotonic() - t0
            result: dict[str, Any] = {"baseline": baseline, "viewers": args.viewers}
            result["kbps"] = {
                kind: (sent1.bytes[kind] - sent0.bytes[kind]) * 8 / elapsed / 1000
                for kind in ("video", "audio")
            }
            result["pps"] = sum(sent1.packets.values()) - sum(sent0.packets.values())
            result["pps"] /= elapsed
            cpu: dict[str, list[float]] = {"sfu": [], "whep": []}
            for index in range(args.rounds):  # the modes alternate: slow drifts hit both
                for mode, viewers in (("sfu", sfu_subscribers), ("whep", whep_viewers)):
                    async with viewers(base, args.viewers):
                        await asyncio.sleep(args.warmup)
                        cpu[mode].append(await cpu_window(server, args.seconds))
                    print(
                        f"round {index + 1} {mode}: {args.viewers} viewers, server CPU "
                        f"{cpu[mode][-1] * 100:.1f}% (baseline {baseline * 100:.1f}%)",
                        flush=True,
                    )
            for mode in ("sfu", "whep"):
                result[mode] = statistics.median(cpu[mode])
                result[f"{mode}_per_viewer"] = (result[mode] - baseline) / args.viewers
            result["ratios"] = [
                (whep - baseline) / (sfu - baseline)
                for sfu, whep in zip(cpu["sfu"], cpu["whep"], strict=True)
            ]
            for mode in ("sfu", "whep"):
                found = await latencies(base, pattern, mode, args.latency_viewers, args.seconds)
                result[f"{mode}_latency"] = found
                print(
                    f"{mode}: capture to decoded frame, median "
                    f"{statistics.median(found) * 1000:.0f} ms over {len(found)} frames",
                    flush=True,
                )
            result["setup"] = await setup_times(base, args.sessions)
        for track in tracks:
            track.stop()
    return result


def _ms(values: list[float], percentile: int) -> int:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, len(ordered) * percentile // 100)] * 1000)


def write_results(result: dict[str, Any], args: argparse.Namespace) -> None:
    setup = result["setup"]
    ratio = statistics.median(result["ratios"])
    ratios = result["ratios"]
    lines = [
        ".. This page is written by benchmarks/whep.py; do not edit it by hand.",
        "",
        "WHEP benchmark",
        "==============",
        "",
        "``benchmarks/whep.py`` compares what a WHEP viewer costs the server with what an SFU",
        "room subscriber costs it, in one run on loopback: one WHIP publisher (rtckit's",
        "``WhipClient``, a 640x480 30 fps VP8 test pattern and an Opus tone) into an SFU room of",
        "``rtckit serve``'s application in a process of its own, then N WHEP viewers",
        "(``WhepClient``, ``/whep/<room>``) or N room members over the signaling WebSocket. The",
        "server's CPU (all its threads) is measured over windows of "
        f"{args.seconds:g} s: the publisher alone",
        f"(median of {args.repeat}) is the baseline, then {args.rounds} rounds of N room "
        "subscribers and N WHEP",
        "viewers in turn; the cost of a viewer is the CPU above the baseline divided by N, the",
        "ratio the median of the rounds' ratios. The machine is a shared 2-core VM.",
        "",
        "======================================  ==============  ==================",
        f"measure ({args.viewers} viewers, median)".ljust(40)
        + "WHEP".ljust(16)
        + "SFU subscribers",
        "======================================  ==============  ==================",
        f"server CPU, % of a core                 {result['whep'] * 100:>14.1f}  "
        f"{result['sfu'] * 100:>18.1f}",
        f"per viewer, above the publisher alone   {result['whep_per_viewer'] * 100:>14.2f}  "
        f"{result['sfu_per_viewer'] * 100:>18.2f}",
        "======================================  ==============  ==================",
        "",
        f"The publisher sends {result['kbps']['video']:.0f} kbit/s of video and "
        f"{result['kbps']['audio']:.0f} kbit/s of audio",
        f"({result['pps']:.0f} packets/s); alone, it costs the server "
        f"{result['baseline'] * 100:.1f}% of a core.",
        f"A WHEP viewer costs **{ratio:.2f}x** what a room subscriber costs (goal: at most",
        f"1.1x); round by round, {min(ratios):.2f}x to {max(ratios):.2f}x. A viewer costs a "
        "few tenths",
        "of a percent of a core either way, so that spread is the machine's noise.",
        "",
        "Latency, from the publisher making a frame to a viewer decoding it (encoding,",
        "the server's forwarding, the receiver's jitter buffer and decoding), "
        f"{args.latency_viewers} decoding",
        f"viewers of each path for {args.seconds:g} s: room subscribers median "
        f"{_ms(result['sfu_latency'], 50)} ms (p95 {_ms(result['sfu_latency'], 95)} ms),",
        f"WHEP viewers median {_ms(result['whep_latency'], 50)} ms (p95 "
        f"{_ms(result['whep_latency'], 95)} ms); the medians differ by "
        f"{_ms(result['whep_latency'], 50) - _ms(result['sfu_latency'], 50):+d} ms.",
        "",
        f"Session setup, ``POST`` to the first video frame received, {len(setup)} sequential",
        f"WHEP sessions: median **{statistics.median(setup) * 1000:.0f} ms**, "
        f"min {min(setup) * 1000:.0f} ms, max {max(setup) * 1000:.0f} ms (goal: median <= 300 ms).",
        "It includes the client's gathering and the server's answer (aiortc gathers before it",
        "answers), ICE and DTLS, and the key frame the SFU asks the publisher for.",
        "",
    ]
    (ROOT / "docs" / "topics" / "whep-benchmark.rst").write_text("\n".join(lines))


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--viewers", type=int, default=10, help="viewers of each mode")
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window")
    parser.add_argument("--repeat", type=int, default=3, help="baseline windows (median)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both modes (median)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--sessions", type=int, default=15, help="WHEP sessions timed")
    parser.add_argument(
        "--latency-viewers", type=int, default=2, help="decoding viewers of each mode timed"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    t0 = time.monotonic()
    result = await measure(args)
    setup = result["setup"]
    ratio = statistics.median(result["ratios"])
    print(
        f"per viewer: whep {result['whep_per_viewer'] * 100:.2f}% vs sfu "
        f"{result['sfu_per_viewer'] * 100:.2f}% of a core -> {ratio:.2f}x; setup median "
        f"{statistics.median(setup) * 1000:.0f} ms; publisher {result['kbps']['video']:.0f} "
        f"kbit/s video; total {time.monotonic() - t0:.0f} s"
    )
    if not args.no_write:
        write_results(result, args)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
