"""The servers the hostile-input suite attacks: one factory per server and transport.

A factory starts a real server process on loopback (as a user runs it) and returns a
:class:`Target`: its HTTP endpoints and WebSocket URL, its captured log, its process (for RSS
and open file descriptors) and the limits it was started with. To run every case against a new
server or transport (a faster WebSocket layer, say), write one more factory and add it to
:data:`FACTORIES`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from rtckit.certs import ensure_dev_certificate
from rtckit.signaling.auth import TokenAuth

SRC = str(Path(__file__).resolve().parents[2] / "src")
TESTS = str(Path(__file__).resolve().parents[1])
SECRET = "hostile-suite-secret-" + "x" * 24
#: Rooms every target declares (rooms are not created on demand): the canary's, and the one
#: attackers join.
CANARY_ROOM = "canary"
ATTACK_ROOM = "hall"
#: A room that holds more peers than one ``welcome`` can list (with the largest metadata).
CROWD_ROOM = "crowd"
CROWD_PEERS = 64
#: The short timeouts the targets run with, so that the cases finish quickly.
IDLE_TIMEOUT = 2.0
TLS_HANDSHAKE_TIMEOUT = 2.0
#: The signaling message limit the targets run with (``max_message_bytes``).
MAX_MESSAGE_BYTES = 65536
#: Peers a room holds on every target.
MAX_PEERS = 16
START_TIMEOUT = 60.0


@attrs.frozen(kw_only=True)
class Endpoint:
    """One listening HTTP port; *tls* is the client context when it speaks HTTPS."""

    name: str
    host: str
    port: int
    tls: ssl.SSLContext | None = None


@attrs.define(kw_only=True)
class Target:
    """A running server under attack."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: Every HTTP listener; the first one also serves the WebSocket.
    endpoints: list[Endpoint]
    ws_path: str = "/ws"
    #: Whether every log line is a JSON object (``rtckit serve``'s JSON log mode).
    json_logs: bool = True
    idle_timeout: float = IDLE_TIMEOUT
    tls_handshake_timeout: float | None = None
    #: Peers the attack room holds (``max_peers_per_room``).
    max_peers: int = MAX_PEERS
    #: Peers :data:`CROWD_ROOM` holds.
    crowd_peers: int = CROWD_PEERS
    #: The CA file clients must trust (TLS targets).
    ca_file: Path | None = None
    auth: TokenAuth = attrs.field(factory=lambda: TokenAuth(secret=SECRET))
    #: Whether plain HTTP connections stay open after an answer (keep-alive); the picows
    #: transport answers every plain HTTP request with ``Connection: close``.
    keep_alive: bool = True
    #: RSS once the server runs and the canary is in (the memory bound is relative to it).
    rss_start: int = 0

    @property
    def main(self) -> Endpoint:
        return self.endpoints[0]

    @property
    def ws_url(self) -> str:
        ep = self.main
        return f"{'wss' if ep.tls else 'ws'}://{ep.host}:{ep.port}{self.ws_path}"

    def token(self, room: str, identity: str) -> str:
        return self.auth.mint(room=room, identity=identity, ttl=3600)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def logs_since(self, offset: int) -> str:
        with self.log_path.open("rb") as file:
            file.seek(offset)
            return file.read().decode("utf-8", "replace")

    def rss(self) -> int:
        """Resident memory of the server process in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def fds(self) -> int:
        """Open file descriptors of the server process (each connection holds one)."""
        return sum(1 for _ in Path(f"/proc/{self.process.pid}/fd").iterdir())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    path = os.environ.get("PYTHONPATH")
    full_env = {**os.environ, **env, "PYTHONPATH": SRC + (os.pathsep + path if path else "")}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "rtckit", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )


def _wait_listening(target: Target) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(target.endpoints)
    while pending:
        if not target.alive():
            raise AssertionError(f"{target.name} ended early:\n{target.logs_since(0)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{target.name} did not start:\n{target.logs_since(0)}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection((pending[0].host, pending[0].port), timeout=1),
        ):
            pending.pop(0)
            continue
        time.sleep(0.1)


def start_app(folder: Path) -> Target:
    """``rtckit serve``: HTTPS with the plain-HTTP redirect port, room tokens, JSON logs."""
    dev = ensure_dev_certificate(folder / "certs", ["localhost", "127.0.0.1"])
    port, http_port = _free_port(), _free_port()
    config = folder / "serve.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nhttp_port = {http_port}\n'
        f'[tls]\ncert = "{dev.files.fullchain}"\nkey = "{dev.files.key}"\n'
        f"[http]\nidle_timeout = {IDLE_TIMEOUT}\n"
        f"tls_handshake_timeout = {TLS_HANDSHAKE_TIMEOUT}\n"
        '[auth]\nsecret_env = "RTCKIT_HOSTILE_SECRET"\n'
        f"[limits]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n"
        f"max_peers_per_room = {MAX_PEERS}\n"
        "[rooms]\ncreate_on_demand = false\n"
        f'[[rooms.declare]]\nname = "{CANARY_ROOM}"\n'
        f'[[rooms.declare]]\nname = "{ATTACK_ROOM}"\n'
        f'[[rooms.declare]]\nname = "{CROWD_ROOM}"\nmax_peers = {CROWD_PEERS}\n'
        '[logging]\nlevel = "info"\nformat = "json"\n',
        encoding="utf-8",
    )
    log_path = folder / "app.log"
    process = _spawn(
        ["serve", "--config", str(config)], log_path, {"RTCKIT_HOSTILE_SECRET": SECRET}
    )
    client_tls = dev.ca.client_ssl_context()
    target = Target(
        name="app",
        process=process,
        log_path=log_path,
        endpoints=[
            Endpoint(name="https", host="127.0.0.1", port=port, tls=client_tls),
            Endpoint(name="http-redirect", host="127.0.0.1", port=http_port),
        ],
        tls_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
        ca_file=dev.ca_file,
    )
    _wait_listening(target)
    return target


def start_signaling(folder: Path, transport: str = "aiohttp", *, tls: bool = False) -> Target:
    """``rtckit signaling --transport aiohttp``: plain WebSocket (with *tls*, ``wss://`` with
    ``--cert/--key`` and a short ``--tls-handshake-timeout``), room tokens, JSON logs, its
    default event loop. Its ``--max-peers`` holds for every room: :data:`CROWD_PEERS`."""
    port = _free_port()
    name = "signaling" if transport == "aiohttp" else f"signaling-{transport}"
    if tls:
        name += "-tls"
        dev = ensure_dev_certificate(folder / "certs", ["localhost", "127.0.0.1"])
        tls_args = [
            "--cert",
            str(dev.files.fullchain),
            "--key",
            str(dev.files.key),
            "--tls-handshake-timeout",
            str(TLS_HANDSHAKE_TIMEOUT),
        ]
    log_path = folder / f"{name}.log"
    process = _spawn(
        [
            "signaling",
            "--port",
            str(port),
            "--secret",
            SECRET,
            "--no-create-rooms",
            "--room",
            CANARY_ROOM,
            "--room",
            ATTACK_ROOM,
            "--room",
            CROWD_ROOM,
            "--max-peers",
            str(CROWD_PEERS),
            "--idle-timeout",
            str(IDLE_TIMEOUT),
            "--log-format",
            "json",
            "--transport",
            transport,
            *(tls_args if tls else []),
        ],
        log_path,
        {},
    )
    target = Target(
        name=name,
        process=process,
        log_path=log_path,
        endpoints=[
            Endpoint(
                name="https" if tls else "http",
                host="127.0.0.1",
                port=port,
                tls=dev.ca.client_ssl_context() if tls else None,
            )
        ],
        keep_alive=transport == "aiohttp",
        max_peers=CROWD_PEERS,
        tls_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if tls else None,
        ca_file=dev.ca_file if tls else None,
    )
    _wait_listening(target)
    return target


def start_signaling_picows(folder: Path) -> Target:
    """``rtckit signaling --transport picows`` (the fast WebSocket layer), as
    :func:`start_signaling`. picows is in the test dependency group: without it this target
    fails to start, it does not skip."""
    return start_signaling(folder, "picows")


def start_stun(folder: Path) -> Target:
    """``rtckit stun --tcp`` on 127.0.0.1 with its default limits (the STUN cases' target;
    its one endpoint is the UDP and TCP port). Its log is plain text."""
    log_path = folder / "stun.log"
    process = _spawn(["stun", "--host", "127.0.0.1", "--port", "0", "--tcp"], log_path, {})
    deadline = time.monotonic() + START_TIMEOUT
    ports: dict[str, int] = {}
    while len(ports) < 2:
        if process.poll() is not None or time.monotonic() > deadline:
            log = log_path.read_text(encoding="utf-8", errors="replace")
            raise AssertionError(f"rtckit stun did not start:\n{log}")
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("rtckit stun: listening on "):
                kind, address = line.split()[-2:]
                ports[kind] = int(address.rpartition(":")[2])
        time.sleep(0.1)
    assert ports["udp"] == ports["tcp"], ports
    return Target(
        name="stun",
        process=process,
        log_path=log_path,
        endpoints=[Endpoint(name="stun", host="127.0.0.1", port=ports["udp"])],
        json_logs=False,
        idle_timeout=1.0,
    )


def start_signaling_tls(folder: Path) -> Target:
    """``rtckit signaling --cert/--key`` on aiohttp (:func:`start_signaling` with TLS)."""
    return start_signaling(folder, tls=True)


def start_signaling_picows_tls(folder: Path) -> Target:
    """``rtckit signaling --cert/--key --transport picows``."""
    return start_signaling(folder, "picows", tls=True)


#: Server factories: every case runs against each of them.
FACTORIES: dict[str, Callable[[Path], Target]] = {
    "app": start_app,
    "signaling": start_signaling,
    "signaling-picows": start_signaling_picows,
}
#: Standalone signaling over ``wss://``: the TLS cases (and those naming them) run on these
#: too, not every case (the app already runs every case over TLS, on the aiohttp layer).
TLS_FACTORIES: dict[str, Callable[[Path], Target]] = {
    "signaling-tls": start_signaling_tls,
    "signaling-picows-tls": start_signaling_picows_tls,
}
#: The factories whose server has a TLS port (the TLS cases run on these only).
TLS_TARGETS = ["app", *TLS_FACTORIES]
#: Every factory.
ALL_TARGETS = [*FACTORIES, *TLS_FACTORIES]


def bad_log_lines(text: str, *, json_logs: bool) -> list[str]:
    """Lines of *text* that break the log contract: a traceback, or (in JSON mode) a line that
    is not one JSON object. The ``rtckit signaling`` banner on stdout is allowed."""
    bad = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("rtckit signaling "):
            continue
        if "Traceback" in line:
            bad.append(line)
        elif json_logs:
            try:
                entry = json.loads(line)
            except ValueError:
                bad.append(line)
                continue
            if not isinstance(entry, dict) or "exception" in entry:
                bad.append(line)
    return bad
