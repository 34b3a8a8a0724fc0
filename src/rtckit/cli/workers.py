"""``rtckit serve --workers N``: N worker processes sharing one port (``SO_REUSEPORT``).

The kernel spreads new connections over the workers; the workers share rooms through the
``[cluster]`` backplane (Redis), so two browsers in one room may land on different workers.
This process only supervises: it starts the workers (``rtckit serve --worker``), restarts one
that dies (at most :data:`MAX_RESTARTS` per worker in :data:`RESTART_WINDOW` seconds, then it
stops them all and fails), and forwards Ctrl-C (SIGINT: the workers stop at once) and SIGTERM
(they hand their rooms over to the other nodes first, within ``[cluster] drain_timeout``) to
them. On
Linux the workers also get SIGTERM when the supervisor itself dies (``kill -9``): none is
left behind holding the port. Each worker finds its number (1 to N, kept when it is
restarted) in the environment variable :data:`WORKER_INDEX_ENV`: with ``[cluster]
worker_base_port`` it listens on a port of its own too (see
:attr:`~rtckit.server.config.ClusterSettings.worker_base_port`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rtckit.coturn.process import _parent_death_signal
from rtckit.errors import ConfigurationError
from rtckit.server.config import ServeConfig

__all__ = [
    "MAX_RESTARTS",
    "RESTART_WINDOW",
    "STOP_TIMEOUT",
    "WORKER_INDEX_ENV",
    "check_workers",
    "supervise",
    "worker_command",
]

#: A worker that dies more than this many times in :data:`RESTART_WINDOW` seconds stops all.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: Seconds a worker has to exit after SIGINT, or after SIGTERM and its drain timeout, before
#: it is killed.
STOP_TIMEOUT = 15.0
_POLL = 0.2
#: The environment variable that gives each worker its number, 1 to N.
WORKER_INDEX_ENV = "RTCKIT_WORKER_INDEX"


def check_workers(config: ServeConfig, workers: int) -> None:
    """Refuse a configuration that *workers* processes cannot share."""
    if workers < 1:
        raise ConfigurationError(f"--workers must be at least 1, not {workers}")
    if workers == 1:
        return
    if config.cluster is None:
        raise ConfigurationError(
            f"--workers {workers} shares rooms through Redis: add a [cluster] table with "
            "redis_url (docs/howto/cluster.rst)"
        )
    server = config.server
    if server.port == 0 or server.http_port == 0:
        raise ConfigurationError(
            f"--workers {workers} needs fixed ports: port 0 would give each worker its own"
        )
    base = config.cluster.worker_base_port
    if base is not None:
        ports = range(base, base + workers)
        if ports[-1] > 65535 or server.port in ports or server.http_port in ports:
            raise ConfigurationError(
                f"--workers {workers}: [cluster] worker_base_port {base} gives the workers "
                f"ports {base} to {ports[-1]}, which must be free ports other than [server]'s"
            )


def supervise(
    command: Sequence[str], workers: int, out: TextIO, *, drain_timeout: float = 0.0
) -> int:
    """Run *workers* copies of *command* until SIGINT/SIGTERM, which it forwards to them (a
    SIGTERM'ed worker may drain for *drain_timeout* seconds); return the exit status."""
    stopping = False
    forward = signal.SIGTERM

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping, forward
        stopping = True
        forward = signal.Signals(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    procs: list[subprocess.Popen[bytes]] = []
    deaths: list[deque[float]] = [deque() for _ in range(workers)]
    status = 0
    die_with_me = _parent_death_signal()

    def start(index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, WORKER_INDEX_ENV: str(index + 1)}
        return subprocess.Popen(list(command), preexec_fn=die_with_me, env=env)

    try:
        procs = [start(index) for index in range(workers)]
        print(
            f"rtckit serve: {workers} workers (pids {', '.join(str(p.pid) for p in procs)})",
            file=out,
            flush=True,
        )
        while not stopping:
            time.sleep(_POLL)
            for index, proc in enumerate(procs):
                code = proc.poll()
                if code is None or stopping:
                    continue
                now = time.monotonic()
                recent = deaths[index]
                recent.append(now)
                while recent and recent[0] < now - RESTART_WINDOW:
                    recent.popleft()
                if len(recent) > MAX_RESTARTS:
                    print(
                        f"rtckit serve: worker {index + 1} exited {len(recent)} times in "
                        f"{RESTART_WINDOW:.0f} s (last status {code}); stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    status = 1
                    stopping = True
                    break
                print(
                    f"rtckit serve: worker {index + 1} (pid {proc.pid}) exited with status "
                    f"{code}; restarting it",
                    file=sys.stderr,
                    flush=True,
                )
                procs[index] = start(index)
    finally:
        grace = STOP_TIMEOUT + (drain_timeout if forward == signal.SIGTERM else 0.0)
        _stop_all(procs, forward, grace)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("rtckit serve: stopped", file=out, flush=True)
    return status


def _stop_all(
    procs: Sequence[subprocess.Popen[bytes]], signum: signal.Signals, grace: float
) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signum)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_command(config_path: Path, loop: str) -> list[str]:
    """The command line of one worker."""
    return [
        sys.executable,
        "-m",
        "rtckit",
        "serve",
        "--config",
        str(config_path),
        "--loop",
        loop,
        "--worker",
    ]
