"""``rtckit serve --workers N``: what it refuses, and its supervisor (real processes: workers
that die are restarted, a worker that keeps dying stops everything, SIGTERM stops all)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rtckit.cli.workers import MAX_RESTARTS, check_workers
from rtckit.errors import ConfigurationError
from rtckit.server.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
OPEN = "[server]\ninsecure = true\nport = 8443\n[auth]\nmode = 'open'\n"
CLUSTER = "[cluster]\nredis_url = 'redis://127.0.0.1:6379/0'\n"


def test_workers_need_a_cluster_and_fixed_ports() -> None:
    check_workers(parse_config(OPEN), 1)  # one process: nothing to share
    with pytest.raises(ConfigurationError, match=r"--workers 2 shares rooms through Redis"):
        check_workers(parse_config(OPEN), 2)
    check_workers(parse_config(OPEN + CLUSTER), 2)
    with pytest.raises(ConfigurationError, match="needs fixed ports"):
        check_workers(parse_config(OPEN.replace("8443", "0") + CLUSTER), 2)
    with pytest.raises(ConfigurationError, match="at least 1"):
        check_workers(parse_config(OPEN), 0)


def test_worker_ports_must_not_take_the_shared_ones() -> None:
    check_workers(parse_config(OPEN + CLUSTER + "worker_base_port = 9001\n"), 4)
    for base in ("8442", "65535"):  # 8442 + 1 is [server] port; 65535 + 1 is no port
        with pytest.raises(ConfigurationError, match="worker_base_port"):
            check_workers(parse_config(OPEN + CLUSTER + f"worker_base_port = {base}\n"), 2)


SUPERVISOR = """
import sys
from rtckit.cli.workers import supervise
child = [sys.executable, "-c", sys.argv[2]]
sys.exit(supervise(child, int(sys.argv[1]), sys.stdout))
"""

# A worker: notes its pid in the folder, then sleeps until SIGTERM or SIGINT, and notes that
# it stopped and on which signal.
WORKER = """
import os, pathlib, signal, sys, time
folder = pathlib.Path({folder!r})
(folder / f"{{os.getpid()}}.up").touch()
def stop(signum, _frame):
    (folder / f"{{os.getpid()}}.down").write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
time.sleep(60)
"""


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + path if path else "")}


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _pids(folder: Path, suffix: str) -> set[int]:
    return {int(p.stem) for p in folder.glob(f"*.{suffix}")}


@contextlib.contextmanager
def _supervisor(folder: Path) -> Iterator[subprocess.Popen[str]]:
    """A supervisor of two :data:`WORKER` processes noting themselves in *folder* (killed
    on exit if still running). It has a session of its own: the workers get signals from it
    alone, as from a service manager."""
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, "2", WORKER.format(folder=str(folder))],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield supervisor
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def test_supervisor_restarts_a_dead_worker_and_stops_all_on_sigterm(tmp_path: Path) -> None:
    with _supervisor(tmp_path) as supervisor:
        _wait_for(lambda: len(_pids(tmp_path, "up")) == 2)
        first = _pids(tmp_path, "up")
        victim = min(first)
        os.kill(victim, signal.SIGKILL)  # a worker crashes
        _wait_for(lambda: len(_pids(tmp_path, "up")) == 3)
        supervisor.send_signal(signal.SIGTERM)
        out, _ = supervisor.communicate(timeout=30)
    assert supervisor.returncode == 0
    assert "2 workers" in out
    assert out.rstrip().endswith("rtckit serve: stopped")
    # every live worker got SIGTERM (it drains) and stopped; the killed one did not
    assert _pids(tmp_path, "down") == _pids(tmp_path, "up") - {victim}
    assert {p.read_text() for p in tmp_path.glob("*.down")} == {"SIGTERM"}


def test_sigint_reaches_the_workers_as_sigint(tmp_path: Path) -> None:
    """Ctrl-C stops the workers at once: they get SIGINT, not the SIGTERM that drains."""
    with _supervisor(tmp_path) as supervisor:
        _wait_for(lambda: len(_pids(tmp_path, "up")) == 2)
        supervisor.send_signal(signal.SIGINT)
        supervisor.communicate(timeout=30)
    assert supervisor.returncode == 0
    assert _pids(tmp_path, "down") == _pids(tmp_path, "up")
    assert {p.read_text() for p in tmp_path.glob("*.down")} == {"SIGINT"}


def test_a_worker_that_keeps_dying_stops_the_supervisor(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SUPERVISOR, "1", "import sys; sys.exit(3)"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"exited {MAX_RESTARTS + 1} times" in result.stderr
    assert result.stderr.count("restarting it") == MAX_RESTARTS


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """kill -9 of the supervisor: its workers get SIGTERM (Linux) instead of living on."""
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, "2", WORKER.format(folder=str(tmp_path))],
        env=_env(),
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: len(_pids(tmp_path, "up")) == 2)
        supervisor.kill()
        supervisor.wait()
        _wait_for(lambda: _pids(tmp_path, "down") == _pids(tmp_path, "up"), timeout=10)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        for pid in _pids(tmp_path, "up") - _pids(tmp_path, "down"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # a worker this test started, left behind
