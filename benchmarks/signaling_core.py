"""Signaling core benchmark: :class:`~rtckit.signaling.state.SignalingState` alone, no transport.

What one relayed message costs the sans-I/O core: a frame's bytes go in through
``receive_data``, the state machine checks and routes it, and each :class:`Send` it returns is
turned into the bytes a transport would write (``text.encode()``). No sockets, no event loop,
no hub: what remains is the codec (strict decode, one serialization per relayed message), the
sequence numbers, the outbox kept for resume, the acknowledgements, the rate limit, and the
timer (``tick`` every ``tick_interval`` of simulated time).

Workloads, each on a fresh state machine per repetition:

* ``pairs``: peers in rooms of two, each sending ~400-byte ``app`` messages to its partner,
  the receivers acknowledging every 16 messages (as the clients of ``benchmarks/signaling.py``
  do, so that the figures compare);
* ``candidates``: the same with ``candidate`` messages (~150 bytes), the bulk of real
  signaling traffic;
* ``broadcast``: a room of 10 peers, each ``app`` message sent to the 9 others.

Baseline, measured in the same run on the same frames (the acks included): ``json.loads`` of
each frame, then ``json.dumps`` and ``encode()`` of the result, once: parsing and serializing
the same JSON without any check, stamp or sequence number. The ratio (core / baseline) moves
less between runs than the µs on this shared machine.

Run ``python benchmarks/signaling_core.py`` (about fifteen seconds; ``--quick`` for a few;
``--profile`` adds a cProfile of the ``pairs`` workload). Prints the table; writes nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import platform
import pstats
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from rtckit.signaling import OpenAuth, SignalingConfig
from rtckit.signaling.protocol import Hello, Join, encode
from rtckit.signaling.state import Send, SignalingState

PAD = "x" * 290  # makes each app frame about 400 bytes, as in benchmarks/signaling.py
CANDIDATE = "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0"
RATE = 50.0  # messages per second per connection (simulated time): under the default limit
ACK_EVERY = 16  # the clients acknowledge every this many messages they receive

Frame = tuple[int, bytes]  # (connection, frame)


@dataclass(frozen=True)
class Workload:
    name: str
    peers: int
    room_size: int
    kind: str  # "app" or "candidate"
    broadcast: bool


WORKLOADS = (
    Workload("pairs", peers=100, room_size=2, kind="app", broadcast=False),
    Workload("candidates", peers=100, room_size=2, kind="candidate", broadcast=False),
    Workload("broadcast", peers=10, room_size=10, kind="app", broadcast=True),
)


class Room:
    """A fresh state machine with the workload's peers joined, and the frames they send."""

    def __init__(self, work: Workload, messages: int) -> None:
        self.work = work
        self.state = SignalingState(SignalingConfig(auth=OpenAuth()))
        self.ids: dict[int, str] = {}
        out_seq: dict[int, int] = {}
        for conn in range(1, work.peers + 1):
            self.state.open(conn, 0.0)
            self.state.receive_data(conn, encode(Hello()).encode(), 0.0)
            room = f"r{(conn - 1) // work.room_size}"
            self.state.receive_data(conn, encode(Join(room=room)).encode(), 0.0)
        for conn in range(1, work.peers + 1):
            session = self.state._conns[conn].session
            assert session is not None
            self.ids[conn] = session.peer_id
            out_seq[conn] = session.out_seq  # the peer-joined messages each one got
        self.frames = self._frames(messages, out_seq)
        self.deliveries = messages * (work.room_size - 1 if work.broadcast else 1)

    def _members(self, conn: int) -> list[int]:
        first = (conn - 1) // self.work.room_size * self.work.room_size + 1
        return [other for other in range(first, first + self.work.room_size) if other != conn]

    def _frames(self, messages: int, out_seq: dict[int, int]) -> list[Frame]:
        """The frames the peers send, in order: relayed messages and the receivers' acks."""
        work = self.work
        seq = dict.fromkeys(self.ids, 0)
        received = dict.fromkeys(self.ids, 0)
        frames: list[Frame] = []
        for index in range(messages):
            sender = index % work.peers + 1
            targets = self._members(sender)
            seq[sender] += 1
            message: dict[str, object] = {"type": work.kind}
            if not work.broadcast:
                message["to"] = self.ids[targets[index // work.peers % len(targets)]]
                targets = [targets[index // work.peers % len(targets)]]
            if work.kind == "app":
                message["payload"] = {"t": index * 1e-3, "pad": PAD}
            else:
                message.update(candidate=CANDIDATE, sdp_mid="0", sdp_mline_index=0)
            message["seq"] = seq[sender]
            frames.append((sender, json.dumps(message).encode()))
            for target in targets:
                out_seq[target] += 1
                received[target] += 1
                if received[target] % ACK_EVERY == 0:
                    frames.append((target, f'{{"type":"ack","ack":{out_seq[target]}}}'.encode()))
        return frames

    def run(self) -> float:
        """Feed every frame; return the seconds it took. Checks that all went through."""
        state = self.state
        step = 1.0 / (RATE * self.work.peers)
        tick_every = state.config.tick_interval
        now = next_tick = 1.0
        sent = errors = 0
        gc.collect()
        start = time.perf_counter()
        for conn, frame in self.frames:
            now += step
            if now >= next_tick:
                next_tick = now + tick_every
                for action in state.tick(now).actions:
                    if isinstance(action, Send):
                        action.text.encode()
            out = state.receive_data(conn, frame, now)
            for action in out.actions:
                if isinstance(action, Send):
                    action.text.encode()
                    sent += 1
            errors += len(out.events)
        elapsed = time.perf_counter() - start
        # Every message delivered, the server's own acks on top, and no error on the way.
        assert errors == 0, f"{errors} errors"
        assert sent >= self.deliveries, (sent, self.deliveries)
        return elapsed


def baseline(room: Room) -> float:
    """Seconds to parse each frame with json.loads and serialize it with json.dumps, once."""
    loads, dumps = json.loads, json.dumps
    gc.collect()
    start = time.perf_counter()
    for _conn, frame in room.frames:
        dumps(loads(frame)).encode()
    return time.perf_counter() - start


@dataclass
class Figures:
    core: list[float]  # µs per relayed message, one per repetition
    base: list[float]

    def line(self, name: str) -> str:
        core, base = statistics.median(self.core), statistics.median(self.base)
        return (
            f"{name:<11} {core:6.2f} µs/msg (spread {min(self.core):.2f}-{max(self.core):.2f})"
            f"   baseline {base:5.2f} µs   ratio {core / base:4.2f}"
        )


def measure(work: Workload, messages: int, repeat: int) -> Figures:
    figures = Figures([], [])
    for _ in range(repeat):
        room = Room(work, messages)
        figures.base.append(baseline(room) / messages * 1e6)
        figures.core.append(room.run() / messages * 1e6)
    return figures


def profile(messages: int, top: int) -> None:
    room = Room(WORKLOADS[0], messages)
    profiler = cProfile.Profile()
    profiler.runcall(room.run)
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of 'pairs'")
    args = parser.parse_args(argv)
    messages, repeat = (2_000, 3) if args.quick else (20_000, 7)
    print(
        f"Python {platform.python_version()} {platform.machine()}: {messages:,} relayed "
        f"messages x {repeat} repetitions per workload; median µs per relayed message"
    )
    for work in WORKLOADS:
        print(measure(work, messages, repeat).line(work.name), flush=True)
    if args.profile:
        profile(messages, 25)


if __name__ == "__main__":
    main()
