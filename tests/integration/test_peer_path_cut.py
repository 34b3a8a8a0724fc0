"""Cut a session's UDP path with iptables for a few seconds: the session recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import subprocess
import time
from collections.abc import Iterator

from rtckit.peer import PeerSession, SessionConfig, TrackAdded
from rtckit.peer.media import PatternConfig, TestPatternTrack, read_frame_counter
from rtckit.testing import peer_pair, require_executable, require_root

FAST = SessionConfig(
    heartbeat_interval=0.2, disconnected_after=0.8, restart_after=1.0, dead_peer_timeout=20
)


@contextlib.contextmanager
def udp_blackhole(address: str, port: int) -> Iterator[None]:
    """Drop every UDP datagram to or from *address*:*port* (both directions) until exit."""
    tool = "ip6tables" if ipaddress.ip_address(address).version == 6 else "iptables"
    require_executable(tool, hint="apt-get install iptables")
    tag = f"rtckit-test-{secrets.token_hex(4)}"
    rules = [
        ["INPUT", "-p", "udp", "-d", address, "--dport", str(port)],
        ["OUTPUT", "-p", "udp", "-s", address, "--sport", str(port)],
    ]
    added: list[list[str]] = []
    try:
        for rule in rules:
            spec = [*rule, "-m", "comment", "--comment", tag, "-j", "DROP"]
            subprocess.run([tool, "-I", *spec], check=True, capture_output=True)
            added.append(spec)
        yield
    finally:
        for spec in added:
            subprocess.run([tool, "-D", *spec], check=False, capture_output=True)


async def first_frame_after(track: object, deadline: float) -> int:
    async with asyncio.timeout(deadline):
        return read_frame_counter(await track.recv())  # type: ignore[attr-defined]


async def test_udp_cut_for_seconds_media_resumes() -> None:
    require_root("iptables rules")
    async with peer_pair(FAST) as (a, b):
        queue: asyncio.Queue[TrackAdded] = asyncio.Queue()

        async def collect(session: PeerSession) -> None:
            async for event in session.events():
                if isinstance(event, TrackAdded):
                    queue.put_nowait(event)

        collector = asyncio.create_task(collect(b))
        try:
            a.add_track(TestPatternTrack(PatternConfig(width=160, height=120, fps=15)))
            async with asyncio.timeout(10):
                first = await queue.get()
            before = await first_frame_after(first.track, 10)
            stats = await a.stats()
            assert stats.candidate_pair is not None
            host, port = stats.candidate_pair.local_address
            cut = time.monotonic()
            with udp_blackhole(host, port):
                async with asyncio.timeout(15):
                    replaced = await queue.get()  # the replacement connection's track
                after = await first_frame_after(replaced.track, 15)
                recovered = time.monotonic() - cut
                await asyncio.sleep(max(0.0, 3.0 - recovered))  # keep the old path cut 3 s
            assert replaced.generation == 1
            assert after > before
            assert a.recovery_time is not None
            print(
                f"UDP cut -> media again after {recovered:.2f} s (replacement took "
                f"{a.recovery_time:.3f} s)"
            )
        finally:
            collector.cancel()
            await asyncio.wait([collector])
