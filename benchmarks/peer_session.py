"""Peer-session timings: setup (offer to connected) and recovery by connection replacement.

Run: ``python benchmarks/peer_session.py [--rounds N]``. Bounded in time (about 30 s with the
defaults). Figures are medians over the rounds, printed as ratios against a baseline measured
in the same run: plain aiortc, offer/answer by hand to ``connected``. Writes the latest table
to ``docs/topics/peer-session-benchmark.rst``.

Measured:

* ``aiortc baseline``: two bare ``RTCPeerConnection`` objects with one data channel;
* ``session setup``: :class:`rtckit.peer.PeerSession` pair (heartbeat + perfect negotiation)
  from the first offer to ``connected``;
* ``requested restart``: ``restart()`` on a connected session until the replacement
  connection is ``connected``;
* ``path loss recovery``: an ICE transport killed under a live session (as a vanished path
  looks to aiortc), until video frames flow again on the replacement connection
  (includes heartbeat-silence detection: ``restart_after`` = 1 s here).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from aiortc import RTCConfiguration, RTCPeerConnection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from rtckit.peer import PeerSession, SessionConfig, TrackAdded  # noqa: E402
from rtckit.peer.media import PatternConfig, TestPatternTrack  # noqa: E402
from rtckit.testing import peer_pair  # noqa: E402

FAST = SessionConfig(heartbeat_interval=0.2, disconnected_after=0.8, restart_after=1.0)


async def aiortc_baseline() -> float:
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()

    @a.on("connectionstatechange")
    def _() -> None:
        if a.connectionState == "connected":
            connected.set()

    a.createDataChannel("x")
    start = time.perf_counter()
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    async with asyncio.timeout(10):
        await connected.wait()
    elapsed = time.perf_counter() - start
    await a.close()
    await b.close()
    return elapsed


async def session_setup_and_restart() -> tuple[float, float]:
    async with peer_pair(FAST) as (a, b):
        await a.wait_connected()
        await b.wait_connected()
        assert a.setup_time is not None
        setup = a.setup_time
        await a.restart()
        async with asyncio.timeout(10):
            async for event in a.events():
                if getattr(event, "state", None) == "connected" and a.generation == 1:
                    break
        assert a.recovery_time is not None
        return setup, a.recovery_time


async def path_loss_recovery() -> float:
    async with peer_pair(FAST) as (a, b):
        tracks: asyncio.Queue[TrackAdded] = asyncio.Queue()

        async def collect(session: PeerSession) -> None:
            async for event in session.events():
                if isinstance(event, TrackAdded):
                    tracks.put_nowait(event)

        collector = asyncio.create_task(collect(b))
        try:
            a.add_track(TestPatternTrack(PatternConfig(width=160, height=120, fps=30)))
            async with asyncio.timeout(10):
                first = await tracks.get()
                await first.track.recv()
            pc = a.peer_connection
            assert pc is not None
            assert pc.sctp is not None
            cut = time.perf_counter()
            await pc.sctp.transport.transport.stop()
            async with asyncio.timeout(15):
                replaced = await tracks.get()
                await replaced.track.recv()
            return time.perf_counter() - cut
        finally:
            collector.cancel()
            await asyncio.wait([collector])


async def main(rounds: int) -> list[tuple[str, float, float]]:
    baseline = [await aiortc_baseline() for _ in range(rounds)]
    setups, restarts = [], []
    for _ in range(rounds):
        setup, restart = await session_setup_and_restart()
        setups.append(setup)
        restarts.append(restart)
    losses = [await path_loss_recovery() for _ in range(max(1, rounds // 4))]
    base = statistics.median(baseline)
    rows = [
        ("aiortc baseline (offer to connected)", base, 1.0),
        ("session setup (offer to connected)", statistics.median(setups), 0.0),
        ("requested restart (replacement to connected)", statistics.median(restarts), 0.0),
        ("path loss recovery (cut to video frames again)", statistics.median(losses), 0.0),
    ]
    return [(name, value, value / base) for name, value, _ in rows]


def write_table(rows: list[tuple[str, float, float]], rounds: int) -> str:
    lines = [
        "Peer session benchmark",
        "======================",
        "",
        "Latest results of ``python benchmarks/peer_session.py`` (median of "
        f"{rounds} rounds; aiortc 1.16 peers in one process on a 2-core VM, host candidates).",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - measure",
        "     - median",
        "     - ratio to baseline",
    ]
    for name, value, ratio in rows:
        lines += [f"   * - {name}", f"     - {value * 1000:.1f} ms", f"     - {ratio:.2f}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    options = parser.parse_args()
    results = asyncio.run(main(options.rounds))
    for name, value, ratio in results:
        print(f"{name:50s} {value * 1000:8.1f} ms  x{ratio:.2f}")
    target = ROOT / "docs" / "topics" / "peer-session-benchmark.rst"
    target.write_text(write_table(results, options.rounds), encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)}")
