"""A NAT traversal lab made of Linux network namespaces (needs root, ``ip`` and ``iptables``).

:class:`NatLab` builds, inside one process-private set of namespaces::

                      198.51.100.0/24  (documentation range, never routed off the machine)
      pub ── br0 198.51.100.1 ──┬── nat-alice (wan 198.51.100.11) ── alice 10.0.1.2
      (coturn, STUN,            ├── nat-bob   (wan 198.51.100.12) ── bob   10.0.2.2
       signaling live here)     └── carol 198.51.100.13  (a host without NAT)

* ``pub`` holds a bridge; servers (coturn, a STUN server, signaling) run there and listen on
  :attr:`NatLab.public_address`. Its default route points at a neighbour that does not exist,
  so a packet toward an unroutable address (a peer's private host candidate) is silently lost
  instead of failing with ``Network is unreachable`` (which makes coturn drop a whole
  allocation).
* Each NAT namespace masquerades its LAN behind its WAN address. ``"cone"`` keeps source ports
  (endpoint-independent mapping with port-restricted filtering: STUN is enough between two
  of them); ``"symmetric"`` uses ``--random-fully`` so every destination gets a new public
  port (against a symmetric NAT, STUN is not enough: TURN is needed). The NAT drops
  unsolicited input on its WAN side *before* conntrack confirms an entry, otherwise an early
  ICE check from the other side would claim the mapping and the NAT's own later outgoing
  packet would lose its port.
* Each host namespace has one interface ``eth0`` and a default route via its NAT.
* IPv4 only: IPv6 is disabled in every namespace of the lab.

Every namespace name starts with a random per-lab prefix (``rk`` and six hex digits), and every
interface is created directly inside its namespace with a short name (``br0``, ``wan``,
``lan``, ``eth0``, ``v<n>``) that is only unique within that namespace: two labs run side by
side without touching each other or the host's own interfaces.

Cleanup: closing the lab kills every process it started (by process group) and any process
still inside its namespaces, then deletes the namespaces, which deletes their interfaces.
Before it creates anything, a lab writes a state file ``/run/rtckit-natlab/<prefix>.json``
naming its owner PID, its namespaces and its processes; :func:`cleanup_stale` (called at every
lab start) removes the leftovers of labs whose owner process is gone, e.g. after ``kill -9``.

Without root, run the whole program that uses the lab through :func:`unshare_command`: inside
a new user namespace it is root over its own network namespaces, with a private ``/run``, and
everything it made disappears when it exits.

Servers run in ``pub``: :meth:`NatLab.run_coturn` runs :mod:`rtckit.coturn`'s coturn there,
:meth:`NatLab.run_stun_server` rtckit's own STUN server. A server can also run in the calling
process: inside a :meth:`NatLab.inside` block the event loop's thread is in ``pub``, so an
rtckit server started there (aiohttp, aiortc's ICE sockets) serves the lab while the test
reads its state. :meth:`NatLab.chromium_launcher` runs Chromium on a host, and
:meth:`NatLab.shape_downlink` limits what a host receives (``tc``), as a slow access link
does. Example::

    auth = TurnRestAuth(secrets=[secret])
    async with NatLab() as lab:
        await lab.add_host("alice", nat="symmetric")
        await lab.add_host("bob", nat="symmetric")
        config = lab.coturn_config(auth)
        async with lab.run_coturn(config):
            ice = config.ice_config(auth=auth, transport_policy="relay")
            offer, answer = await connect_peers(lab, "alice", "bob", ice_servers=ice)
        assert offer.connected and offer.uses_relay
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import attrs

from rtckit import coturn as _coturn
from rtckit.certs import CertificateSpec, KeyType, LocalCA
from rtckit.errors import ConfigurationError, SystemComponentError
from rtckit.ice import IceConfig, IceServer, IceServerUri, UriScheme
from rtckit.ice.turn import TurnRestAuth
from rtckit.stun.server import SocketFactory

__all__ = [
    "DEFAULT_STATE_DIR",
    "PUBLIC_HOST",
    "IceServers",
    "LabHost",
    "LabTls",
    "NatLab",
    "NatType",
    "PeerResult",
    "RunResult",
    "ShapingStats",
    "cleanup_stale",
    "connect_peers",
    "lab_tls",
    "run_peer",
    "unshare_command",
]

NatType = Literal["cone", "symmetric"]

#: Name of the public namespace, usable as a host name in :meth:`NatLab.run` / :meth:`NatLab.spawn`.
PUBLIC_HOST = "pub"

#: Where labs register themselves so that :func:`cleanup_stale` can find leftovers.
DEFAULT_STATE_DIR = Path("/run/rtckit-natlab")

# The directory that holds the rtckit package, so child processes import this very rtckit.
_SRC_DIR = str(Path(__file__).resolve().parents[2])

_PUBLIC_NET = "198.51.100"
_PUBLIC_PREFIXLEN = 24
_BLACKHOLE_GATEWAY = "192.0.2.254"
_BLACKHOLE_LLADDR = "02:00:00:00:00:fe"
_MAX_HOSTS = 200
_HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_PREFIX = re.compile(r"^rk[0-9a-f]{6}$")
_NAT_TYPES = ("cone", "symmetric")


@attrs.frozen(kw_only=True)
class LabHost:
    """A host of the lab, as :meth:`NatLab.add_host` made it."""

    #: Name given to :meth:`NatLab.add_host`.
    name: str
    #: Network namespace the host's processes run in.
    namespace: str
    #: The host's own address (private behind a NAT, public otherwise).
    address: str
    #: The address the public network sees (the NAT's WAN address, or :attr:`address`).
    public_address: str
    #: ``"cone"``, ``"symmetric"``, or ``None`` for a host directly on the public network.
    nat: NatType | None
    #: Namespace of the host's NAT, or ``None``.
    nat_namespace: str | None


@attrs.frozen(kw_only=True)
class ShapingStats:
    """Counters of the queue :meth:`NatLab.shape_downlink` put toward a host (``tc -s``)."""

    #: bytes and packets that left the queue toward the host
    sent_bytes: int
    sent_packets: int
    #: packets dropped because the queue was full
    dropped: int
    #: bytes waiting in the queue now
    backlog_bytes: int


@attrs.frozen(kw_only=True)
class RunResult:
    """The outcome of :meth:`NatLab.run`."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def _process_start_time(pid: int) -> int | None:
    """Start time of *pid* in clock ticks since boot (field 22 of ``/proc/<pid>/stat``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _inode(path: str) -> int | None:
    try:
        return Path(path).stat().st_ino
    except OSError:
        return None


def _owner_alive(pid: int, start_time: int | None) -> bool:
    current = _process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


async def _exec(
    argv: Sequence[str], *, limit: float, check: bool = True, stdin: str | None = None
) -> RunResult:
    """Run *argv* to completion within *limit* seconds; raise on failure if *check*."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise SystemComponentError(
            f"{argv[0]} is not installed (apt-get install iproute2 iptables)"
        ) from exc
    return await _collect(proc, argv, limit=limit, check=check, stdin=stdin)


async def _collect(
    proc: asyncio.subprocess.Process,
    argv: Sequence[str],
    *,
    limit: float,
    check: bool,
    stdin: str | None = None,
    where: str = "",
) -> RunResult:
    """Wait for *proc* (running *argv*) within *limit* s, killing its group after that."""
    command = " ".join(argv) + (f" in {where}" if where else "")
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    except TimeoutError:
        _kill_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise SystemComponentError(f"{command} did not finish within {limit} s") from None
    result = RunResult(
        argv=tuple(argv),
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        raise SystemComponentError(
            f"{command} failed with status {result.returncode}: {result.stderr.strip()}"
        )
    return result


async def _namespace_pids(namespace: str) -> list[int]:
    result = await _exec(["ip", "netns", "pids", namespace], limit=10, check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def _kill_group(pid: int, sig: int) -> None:
    """Send *sig* to the process group led by *pid* (each spawned process leads its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _existing_namespaces() -> set[str]:
    netns = Path("/run/netns")
    return {p.name for p in netns.iterdir()} if netns.is_dir() else set()


def _read_states(state_dir: Path) -> list[tuple[Path, dict[str, object]]]:
    """Every readable lab state file under *state_dir*."""
    states: list[tuple[Path, dict[str, object]]] = []
    if not state_dir.is_dir():
        return states
    for path in sorted(state_dir.glob("rk*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict):
            states.append((path, state))
    return states


async def _destroy_namespaces(namespaces: Sequence[str]) -> None:
    """Kill every process inside *namespaces*, then delete them (and so their interfaces)."""
    existing = _existing_namespaces()
    for namespace in namespaces:
        if namespace not in existing:
            continue
        for _ in range(3):
            pids = await _namespace_pids(namespace)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.05)
        await _exec(["ip", "netns", "delete", namespace], limit=10, check=False)


def _parse_state(
    prefix: str, state: dict[str, object]
) -> tuple[int, int | None, list[str], list[int]] | None:
    """(owner PID, owner start time, namespaces, PIDs) of a state file, or None if malformed.

    Only namespaces named after the file's own prefix are returned, so a damaged or foreign
    file can never make cleanup delete someone else's namespace.
    """
    owner, start = state.get("owner_pid"), state.get("owner_start")
    namespaces, pids = state.get("namespaces"), state.get("pids", [])
    if (
        not _PREFIX.match(prefix)
        or not isinstance(owner, int)
        or not isinstance(start, int | None)
        or not isinstance(namespaces, list)
        or not isinstance(pids, list)
    ):
        return None
    own = [n for n in namespaces if isinstance(n, str) and n.startswith(f"{prefix}-")]
    return owner, start, own, [p for p in pids if isinstance(p, int)]


async def cleanup_stale(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Remove the namespaces and processes of labs whose owner process has died.

    Reads the state files under *state_dir*; a lab whose owner PID is gone (or was reused by
    another process, told apart by its start time) has its processes killed and namespaces
    deleted. Returns the prefixes of the labs cleaned up. Labs of live processes are left alone,
    so this is safe to call while other labs run.
    """
    cleaned: list[str] = []
    for path, state in _read_states(state_dir):
        parsed = _parse_state(path.stem, state)
        if parsed is None:
            continue
        owner, start, namespaces, pids = parsed
        if _owner_alive(owner, start):
            continue
        # A recorded PID is only the lab's if it still lives in one of the lab's namespaces
        # (a reused PID elsewhere is left alone); kill its whole process group.
        inodes = {_inode(f"/run/netns/{name}") for name in namespaces} - {None}
        for pid in pids:
            if _inode(f"/proc/{pid}/ns/net") in inodes:
                _kill_group(pid, signal.SIGKILL)
        await _destroy_namespaces(namespaces)
        path.unlink(missing_ok=True)
        cleaned.append(path.stem)
    return cleaned


_CLONE_NEWNET = 0x40000000


@functools.cache
def _setns() -> Callable[[int, int], int]:
    function: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).setns
    return function


def _enter_namespace(descriptor: int, what: str) -> None:
    """Move the calling thread into the network namespace open as *descriptor*."""
    if _setns()(descriptor, _CLONE_NEWNET) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"setns into {what}: {os.strerror(number)}")


def _socket_in_namespace(
    namespace: str, family: socket.AddressFamily, kind: socket.SocketKind
) -> socket.socket:
    """A socket created inside network namespace *namespace* (it stays there for good).

    A socket belongs to the network namespace of the thread that creates it: a short-lived
    thread enters the namespace (``setns``), creates the socket and ends, so the calling
    thread never changes namespace.
    """
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            descriptor = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _enter_namespace(descriptor, namespace)
                made.append(socket.socket(family, kind))
            finally:
                os.close(descriptor)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            failed.append(exc)

    thread = threading.Thread(target=work, name=f"rtckit-netns-{namespace}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


@attrs.frozen(kw_only=True)
class LabTls:
    """TLS files for a lab server, from :func:`lab_tls`."""

    #: The lab CA's certificate, to trust (``SSL_CERT_FILE`` for aiortc, ``--ca-file``).
    ca_file: Path
    #: The server's certificate chain (PEM), e.g. coturn's ``tls_cert``.
    cert_file: Path
    #: The server's private key (PEM, unencrypted, mode 0600).
    key_file: Path


def lab_tls(directory: Path, host: str) -> LabTls:
    """Create a one-day lab CA and a certificate for *host* (an IP or name) in *directory*.

    Made with :mod:`rtckit.certs` (ECDSA keys: fast to generate).
    """
    ca = LocalCA.create(common_name="rtckit natlab CA", days=1, key_type=KeyType.EC)
    issued = ca.issue(CertificateSpec(hosts=[host], days=1, key_type=KeyType.EC))
    files = issued.save(directory)
    return LabTls(ca_file=ca.save(directory), cert_file=files.fullchain, key_file=files.key)


class NatLab:
    """An async context manager that builds a NAT lab and tears it all down on exit.

    :param state_dir: where the lab registers itself for crash cleanup.
    :param command_timeout: bound, in seconds, on each ``ip``/``iptables`` command.
    :param terminate_grace: seconds a spawned process gets after SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        *,
        state_dir: Path = DEFAULT_STATE_DIR,
        command_timeout: float = 10.0,
        terminate_grace: float = 2.0,
    ) -> None:
        if command_timeout <= 0 or terminate_grace < 0:
            raise ConfigurationError("command_timeout must be > 0 and terminate_grace >= 0")
        self._state_dir = state_dir
        self._command_timeout = command_timeout
        self._terminate_grace = terminate_grace
        self.prefix = "rk" + secrets.token_hex(3)
        self._hosts: dict[str, LabHost] = {}
        #: each host's port on the bridge (in ``pub``): its downlink leaves through it
        self._ports: dict[str, str] = {}
        self._namespaces: list[str] = []
        self._processes: list[asyncio.subprocess.Process] = []
        self._started = False
        self._closed = False
        self._lock = asyncio.Lock()

    # -- public properties --------------------------------------------------------------------

    @property
    def public_namespace(self) -> str:
        """Namespace of the public network (servers run here)."""
        return f"{self.prefix}-{PUBLIC_HOST}"

    @property
    def public_address(self) -> str:
        """Address of the public namespace on the bridge, where servers listen."""
        return f"{_PUBLIC_NET}.1"

    @property
    def hosts(self) -> Mapping[str, LabHost]:
        """The hosts added so far, by name."""
        return dict(self._hosts)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace this lab created, in creation order."""
        return tuple(self._namespaces)

    @property
    def state_file(self) -> Path:
        """The registry file of this lab."""
        return self._state_dir / f"{self.prefix}.json"

    def host(self, name: str) -> LabHost:
        """Return the host called *name*."""
        try:
            return self._hosts[name]
        except KeyError:
            raise ConfigurationError(f"no host {name!r} in this lab") from None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Clean up stale labs, register this one and build the public network."""
        if self._started:
            raise ConfigurationError("this NatLab was already started")
        if os.geteuid() != 0:
            raise SystemComponentError("NatLab needs root (network namespaces, iptables)")
        self._started = True
        await cleanup_stale(self._state_dir)
        try:
            await self._build_public()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Kill every process, delete every namespace and the state file. Idempotent."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        teardown = asyncio.ensure_future(self._teardown())
        try:
            await asyncio.shield(teardown)
        except asyncio.CancelledError:
            # Finish the cleanup even when cancelled (e.g. a test timeout), then re-raise.
            await teardown
            raise

    async def _teardown(self) -> None:
        running = [p for p in self._processes if p.returncode is None]
        for proc in running:
            _kill_group(proc.pid, signal.SIGTERM)
        if running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._terminate_grace):
                    await asyncio.gather(*(p.wait() for p in running))
        for proc in running:
            if proc.returncode is None:
                _kill_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await proc.wait()
        await _destroy_namespaces(list(reversed(self._namespaces)))
        self.state_file.unlink(missing_ok=True)

    # -- registry -----------------------------------------------------------------------------

    def _save_state(self, pending_namespace: str | None = None) -> None:
        namespaces = list(self._namespaces)
        if pending_namespace is not None:
            namespaces.append(pending_namespace)
        self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = {
            "prefix": self.prefix,
            "owner_pid": os.getpid(),
            "owner_start": _process_start_time(os.getpid()),
            "created": time.time(),
            "namespaces": namespaces,
            "pids": [p.pid for p in self._processes if p.returncode is None],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    async def _add_namespace(self, namespace: str) -> None:
        # Registered before it exists: a crash right after creation still leaves a record.
        self._save_state(pending_namespace=namespace)
        await self._ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        await self._ip("-n", namespace, "link", "set", "lo", "up")
        await self._sysctl(
            namespace,
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        )

    # -- building -----------------------------------------------------------------------------

    async def _ip(self, *args: str) -> None:
        await _exec(["ip", *args], limit=self._command_timeout)

    async def _sysctl(self, namespace: str, *settings: str) -> None:
        await _exec(
            ["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", *settings],
            limit=self._command_timeout,
        )

    async def _build_public(self) -> None:
        pub = self.public_namespace
        await self._add_namespace(pub)
        await self._ip("-n", pub, "link", "add", "br0", "type", "bridge")
        await self._ip(
            "-n", pub, "addr", "add", f"{self.public_address}/{_PUBLIC_PREFIXLEN}", "dev", "br0"
        )
        await self._ip("-n", pub, "link", "set", "br0", "up")
        # Fix 2 of the notes: a default route toward a neighbour that swallows everything.
        await self._ip("-n", pub, "link", "add", "bh0", "type", "veth", "peer", "name", "bh1")
        await self._ip("-n", pub, "link", "set", "bh0", "up")
        await self._ip("-n", pub, "link", "set", "bh1", "up")
        await self._ip(
            "-n", pub, "neigh", "add", _BLACKHOLE_GATEWAY, "lladdr", _BLACKHOLE_LLADDR,
            "dev", "bh0", "nud", "permanent",
        )  # fmt: skip
        await self._ip(
            "-n", pub, "route", "add", "default", "via", _BLACKHOLE_GATEWAY, "dev", "bh0", "onlink"
        )

    async def add_host(self, name: str, *, nat: NatType | None = None) -> LabHost:
        """Add a host called *name*, behind a NAT of type *nat* or (``None``) on the public net.

        *name*: lowercase letters and digits, starting with a letter, at most 12 characters.
        """
        if not self._started or self._closed:
            raise ConfigurationError("add_host() needs a started, open NatLab")
        if not _HOST_NAME.match(name) or name == PUBLIC_HOST:
            raise ConfigurationError(
                f"host name {name!r}: use 1-12 lowercase letters/digits, not {PUBLIC_HOST!r}"
            )
        if nat is not None and nat not in _NAT_TYPES:
            raise ConfigurationError(f"nat must be 'cone', 'symmetric' or None, not {nat!r}")
        async with self._lock:
            if name in self._hosts:
                raise ConfigurationError(f"host {name!r} already exists")
            index = len(self._hosts) + 1
            if index > _MAX_HOSTS:
                raise ConfigurationError(f"a NatLab holds at most {_MAX_HOSTS} hosts")
            host = await self._build_host(name, index, nat)
            self._hosts[name] = host
            self._ports[name] = f"v{index}"
            return host

    async def _plug_into_bridge(self, namespace: str, ifname: str, index: int) -> None:
        """Create veth *ifname* in *namespace*, its peer ``v<index>`` on ``pub``'s bridge."""
        pub = self.public_namespace
        port = f"v{index}"
        await self._ip(
            "link", "add", ifname, "netns", namespace, "type", "veth",
            "peer", "name", port, "netns", pub,
        )  # fmt: skip
        await self._ip("-n", pub, "link", "set", port, "master", "br0", "up")

    async def _attach_public(self, namespace: str, ifname: str, index: int, address: str) -> None:
        """Plug *namespace* into the public network as *address*, its default route via pub."""
        await self._plug_into_bridge(namespace, ifname, index)
        await self._ip(
            "-n", namespace, "addr", "add", f"{address}/{_PUBLIC_PREFIXLEN}", "dev", ifname
        )
        await self._ip("-n", namespace, "link", "set", ifname, "up")
        await self._ip("-n", namespace, "route", "add", "default", "via", self.public_address)

    async def _build_host(self, name: str, index: int, nat: NatType | None) -> LabHost:
        public_address = f"{_PUBLIC_NET}.{10 + index}"
        host_ns = f"{self.prefix}-{name}"
        if nat is None:
            await self._add_namespace(host_ns)
            await self._attach_public(host_ns, "eth0", index, public_address)
            return LabHost(
                name=name,
                namespace=host_ns,
                address=public_address,
                public_address=public_address,
                nat=None,
                nat_namespace=None,
            )

        nat_ns = f"{self.prefix}-nat-{name}"
        lan_gateway = f"10.0.{index}.1"
        address = f"10.0.{index}.2"
        await self._add_namespace(nat_ns)
        await self._add_namespace(host_ns)
        await self._attach_public(nat_ns, "wan", index, public_address)
        await self._ip(
            "link", "add", "lan", "netns", nat_ns, "type", "veth",
            "peer", "name", "eth0", "netns", host_ns,
        )  # fmt: skip
        await self._ip("-n", nat_ns, "addr", "add", f"{lan_gateway}/24", "dev", "lan")
        await self._ip("-n", nat_ns, "link", "set", "lan", "up")
        await self._ip("-n", host_ns, "addr", "add", f"{address}/24", "dev", "eth0")
        await self._ip("-n", host_ns, "link", "set", "eth0", "up")
        await self._ip("-n", host_ns, "route", "add", "default", "via", lan_gateway)
        await self._sysctl(nat_ns, "net.ipv4.ip_forward=1")
        await _exec(
            ["ip", "netns", "exec", nat_ns, "iptables-restore"],
            limit=self._command_timeout,
            stdin=_nat_ruleset(nat),
        )
        return LabHost(
            name=name,
            namespace=host_ns,
            address=address,
            public_address=public_address,
            nat=nat,
            nat_namespace=nat_ns,
        )

    # -- processes ----------------------------------------------------------------------------

    def _namespace_of(self, host: str) -> str:
        if host == PUBLIC_HOST:
            return self.public_namespace
        return self.host(host).namespace

    async def spawn(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = asyncio.subprocess.DEVNULL,
        stdout: int | None = asyncio.subprocess.PIPE,
        stderr: int | None = asyncio.subprocess.PIPE,
    ) -> asyncio.subprocess.Process:
        """Start *argv* inside *host*'s namespace (``"pub"`` for the public one).

        The process leads its own process group; closing the lab terminates that group.
        *env* replaces the environment (default: this process's environment).
        """
        if not self._started or self._closed:
            raise ConfigurationError("spawn() needs a started, open NatLab")
        if not argv:
            raise ConfigurationError("spawn() needs a non-empty argv")
        namespace = self._namespace_of(host)
        proc = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            namespace,
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        self._processes.append(proc)
        self._save_state()
        return proc

    async def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a per-command bound reads better here
        check: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run *argv* inside *host*'s namespace to completion (killed after *timeout* s)."""
        proc = await self.spawn(host, argv, env=env)
        return await _collect(proc, argv, limit=timeout, check=check, where=host)

    def socket_factory(self, host: str) -> SocketFactory:
        """A factory of sockets inside *host*'s namespace (``"pub"`` for the public one).

        The sockets work from this process's event loop, e.g. for
        :func:`rtckit.stun.server.stun_binding`'s *socket_factory*.
        """
        return functools.partial(_socket_in_namespace, self._namespace_of(host))

    @contextlib.contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """Move the calling thread into *host*'s namespace for the block (``"pub"``: public).

        Sockets made in the block belong to that namespace and stay there after it, and the
        interfaces listed in the block are the namespace's: an rtckit server started in the
        block on the event loop's thread (aiohttp's listening socket, aiortc's ICE candidates
        and sockets) serves the lab from this very process, where a test can read its state.
        Processes and threads started from the thread in the block (an executor's workers
        too) start in the namespace and stay there. Only the calling thread moves
        (``setns``); it moves back at the end of the block. Blocks may nest.
        """
        if not self._started or self._closed:
            raise ConfigurationError("inside() needs a started, open NatLab")
        target = os.open(f"/run/netns/{self._namespace_of(host)}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            os.close(target)
            raise
        try:
            _enter_namespace(target, host)
            try:
                yield
            finally:
                _enter_namespace(own, "the thread's own namespace")
        finally:
            os.close(target)
            os.close(own)

    async def shape_downlink(
        self,
        host: str,
        bitrate: int | None,
        *,
        queue: float = 0.1,
        burst: int = 3028,
    ) -> None:
        """Limit what *host* receives from the public network to *bitrate* bit/s (None: lift it).

        A token bucket filter (``tc qdisc replace ... tbf``) on the bridge port toward the
        host (for a host behind a NAT, toward its NAT): packets beyond the rate wait in a queue
        that holds *queue* seconds at that rate and are dropped when it is full, as at the
        bottleneck of a real access link. *burst*: bytes that may pass at once after a quiet
        spell (at least one full Ethernet frame, 1514). What the host sends is not limited.

        Lifting the limit delivers what waits in the queue, as when a real bottleneck
        clears (the rate is raised first, then the queue removed once empty): deleting a
        full queue at once would drop its packets, a loss no recovering link causes.
        """
        if bitrate is not None and (bitrate < 8000 or queue <= 0 or burst < 1514):
            raise ConfigurationError(
                "shape_downlink() needs bitrate >= 8000 bit/s, queue > 0 and burst >= 1514"
            )
        port = self._port_of(host)

        async def tc(*args: str) -> None:
            argv = ["ip", "netns", "exec", self.public_namespace, "tc", "qdisc", *args]
            await _exec(argv, limit=self._command_timeout)

        def tbf(rate: str, size: int) -> tuple[str, ...]:
            latency = f"{queue * 1000:.0f}ms"
            return ("replace", "dev", port, "root", "tbf", "rate", rate, "burst", str(size),
                    "latency", latency)  # fmt: skip

        if bitrate is not None:
            await tc(*tbf(f"{bitrate}bit", burst))
        elif await self.shaping_stats(host) is not None:
            # changed in place (tbf keeps its queue), drained at 1 Gbit/s, then removed
            await tc(*tbf("1gbit", 250_000))
            await asyncio.sleep(0.05)
            await tc("del", "dev", port, "root")

    async def shaping_stats(self, host: str) -> ShapingStats | None:
        """The counters of *host*'s downlink queue, None while it is not shaped."""
        port = self._port_of(host)
        result = await _exec(
            ["ip", "netns", "exec", self.public_namespace, "tc", "-j", "-s", "qdisc", "show",
             "dev", port],
            limit=self._command_timeout,
        )  # fmt: skip
        for qdisc in json.loads(result.stdout or "[]"):
            if qdisc.get("kind") == "tbf":
                return ShapingStats(
                    sent_bytes=int(qdisc["bytes"]),
                    sent_packets=int(qdisc["packets"]),
                    dropped=int(qdisc["drops"]),
                    backlog_bytes=int(qdisc["backlog"]),
                )
        return None

    def _port_of(self, host: str) -> str:
        self.host(host)  # a clear error for an unknown host
        return self._ports[host]

    def chromium_launcher(self, host: str, directory: Path, *, trust: Path | None = None) -> Path:
        """Write a launcher that runs the system Chromium inside *host*'s namespace.

        Give it to :func:`rtckit.testing.browser.launch_chromium` as *executable_path*: it
        runs ``exec ip netns exec <namespace> /usr/bin/chromium``, so Playwright's pipes to
        the browser survive. The browser gets a fresh ``$HOME`` under *directory*; with *trust*
        (a CA certificate, e.g. :attr:`LabTls.ca_file`) the NSS database there trusts that CA,
        which Chromium checks ``turns:`` and HTTPS certificates against (``certutil``, from
        ``libnss3-tools``). Pages reach the lab's servers by IP address: pass
        ``--host-resolver-rules`` with ``EXCLUDE`` of those addresses, or Chromium's rule
        that resolves no name refuses them too.
        """
        namespace = self._namespace_of(host)
        home = directory / f"home-{host}"
        nssdb = home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True)
        if trust is not None:
            certutil = shutil.which("certutil")
            if certutil is None:
                raise SystemComponentError(
                    "certutil is not installed (apt-get install libnss3-tools)"
                )
            for argv in (
                [certutil, "-d", f"sql:{nssdb}", "-N", "--empty-password"],
                [certutil, "-d", f"sql:{nssdb}", "-A", "-n", "rtckit-lab", "-t", "CP,,",
                 "-i", str(trust)],
            ):  # fmt: skip
                done = subprocess.run(argv, check=False, capture_output=True, timeout=30)
                if done.returncode != 0:
                    raise SystemComponentError(
                        f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}"
                    )
        launcher = directory / f"chromium-in-{host}"
        launcher.write_text(
            f'#!/bin/sh\nHOME={home} exec ip netns exec {namespace} /usr/bin/chromium "$@"\n'
        )
        launcher.chmod(0o755)
        return launcher

    def coturn_config(
        self, auth: TurnRestAuth, *, tls: LabTls | None = None, **changes: Any
    ) -> _coturn.CoturnConfig:
        """A coturn configuration for :meth:`run_coturn` in ``pub``.

        :meth:`rtckit.coturn.CoturnConfig.from_ice` with *auth*'s secrets, realm ``lab.test``,
        listening and relaying on :attr:`public_address`, relay ports 49160-49260, TLS with
        *tls*'s files (port 5349), and the default denied peer networks (so coturn answers
        ``403`` toward a peer's private host candidate instead of trying to relay to it).
        *changes* override any field.
        """
        arguments: dict[str, Any] = {
            "realm": "lab.test",
            "listening_ips": [self.public_address],
            "relay_ips": [self.public_address],
            "min_port": 49160,
            "max_port": 49260,
        }
        if tls is not None:
            arguments.update(tls_cert=tls.cert_file, tls_key=tls.key_file)
        arguments.update(changes)
        return _coturn.CoturnConfig.from_ice(auth, **arguments)

    @contextlib.asynccontextmanager
    async def run_coturn(
        self,
        config: _coturn.CoturnConfig,
        *,
        host: str = PUBLIC_HOST,
        on_log: Callable[[str], None] | None = None,
    ) -> AsyncIterator[_coturn.CoturnProcess]:
        """Run coturn with *config* inside *host*'s namespace (default ``"pub"``).

        :func:`rtckit.coturn.run_coturn`, started through :meth:`spawn` and probed from inside
        the namespace, on coturn's own listening address.
        """

        async def spawn(argv: Sequence[str]) -> asyncio.subprocess.Process:
            return await self.spawn(host, argv, stderr=asyncio.subprocess.STDOUT)

        async with _coturn.run_coturn(
            config, on_log=on_log, spawn=spawn, socket_factory=self.socket_factory(host)
        ) as process:
            yield process

    @contextlib.asynccontextmanager
    async def run_stun_server(
        self, *, host: str = PUBLIC_HOST, port: int = 3478, startup_timeout: float = 10.0
    ) -> AsyncIterator[IceServerUri]:
        """Run rtckit's STUN server (``python -m rtckit stun``) in *host*'s namespace.

        It listens on the host's address (:attr:`public_address` for ``"pub"``), UDP and TCP;
        yields its ``stun:`` URI once it listens, and stops it on exit.
        """
        address = self.public_address if host == PUBLIC_HOST else self.host(host).address
        argv = [
            sys.executable, "-m", "rtckit", "stun",
            "--host", address, "--port", str(port), "--tcp",
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_SRC_DIR, os.environ.get("PYTHONPATH", "")) if p
        )
        proc = await self.spawn(host, argv, env=env, stderr=asyncio.subprocess.STDOUT)
        assert proc.stdout is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(startup_timeout):
                while len([line for line in seen if "listening on" in line]) < 2:
                    line = (await proc.stdout.readline()).decode(errors="replace")
                    if not line:
                        raise SystemComponentError(
                            "rtckit stun exited while starting: " + "".join(seen)
                        )
                    seen.append(line)
        except TimeoutError:
            raise SystemComponentError(
                f"rtckit stun did not listen within {startup_timeout} s: " + "".join(seen)
            ) from None
        try:
            yield IceServerUri(scheme=UriScheme.STUN, host=address, port=port)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(self._terminate_grace + 1):
                        await proc.communicate()
                except TimeoutError:
                    _kill_group(proc.pid, signal.SIGKILL)
                    await proc.wait()


def unshare_command(argv: Sequence[str]) -> list[str]:
    """Wrap *argv* so that it runs a :class:`NatLab` without root (``unshare`` from util-linux).

    The command runs in new user, mount, network and PID namespaces (``unshare -Urmnpf
    --kill-child --mount-proc``) where it is root, with a fresh tmpfs on ``/run`` for
    ``/run/netns`` and the lab registry. Everything it starts lives in those namespaces, so
    killing the outer process kills all of it and leaves nothing behind. The kernel must allow
    unprivileged user namespaces, and *argv*'s program must be readable by the calling user.
    """
    if not argv:
        raise ConfigurationError("unshare_command() needs a non-empty argv")
    return [
        "unshare", "-Urmnpf", "--kill-child", "--mount-proc",
        "sh", "-c", 'mount -t tmpfs tmpfs /run && exec "$@"', "sh", *argv,
    ]  # fmt: skip


def _nat_ruleset(nat: NatType) -> str:
    """The ``iptables-restore`` input of a NAT namespace (WAN ``wan``, LAN ``lan``)."""
    random = " --random-fully" if nat == "symmetric" else ""
    return (
        "*nat\n"
        ":PREROUTING ACCEPT [0:0]\n"
        ":INPUT ACCEPT [0:0]\n"
        ":OUTPUT ACCEPT [0:0]\n"
        ":POSTROUTING ACCEPT [0:0]\n"
        f"-A POSTROUTING -o wan -j MASQUERADE{random}\n"
        "COMMIT\n"
        "*filter\n"
        ":INPUT ACCEPT [0:0]\n"
        ":FORWARD DROP [0:0]\n"
        ":OUTPUT ACCEPT [0:0]\n"
        # Fix 1 of the notes: unsolicited input on the WAN side never confirms a conntrack
        # entry, so it cannot steal the mapping of a later outgoing packet.
        "-A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
        "-A INPUT -i wan -j DROP\n"
        "-A FORWARD -i lan -o wan -j ACCEPT\n"
        "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
        "COMMIT\n"
    )


@attrs.frozen(kw_only=True)
class PeerResult:
    """What one aiortc peer process of :func:`connect_peers` reported."""

    role: Literal["offer", "answer"]
    #: ICE connected *and* a data channel message went through.
    connected: bool
    #: Final ``RTCPeerConnection.connectionState``.
    state: str
    #: Types of the local candidates gathered (``host``, ``srflx``, ``relay``).
    local_candidate_types: tuple[str, ...]
    #: Types of the nominated pair's candidates, when connected.
    local_candidate_type: str | None
    remote_candidate_type: str | None
    local_candidate: str | None
    remote_candidate: str | None
    #: Seconds to gather candidates (create + set the local description).
    gather_seconds: float | None
    #: Seconds from having both descriptions to ``connectionState == "connected"``.
    connect_seconds: float | None
    #: Seconds from having both descriptions to the first data channel round trip.
    data_seconds: float | None
    #: Name of the rtckit error class on failure (``IceError``, ``TurnAuthError``...).
    error_type: str | None
    error: str | None
    stderr: str = ""

    @property
    def uses_relay(self) -> bool:
        """Whether the nominated pair goes through a TURN relay on either side."""
        return "relay" in (self.local_candidate_type, self.remote_candidate_type)


IceServers = IceConfig | Sequence[IceServer]
"""What :func:`connect_peers` takes as ICE servers: an :class:`~rtckit.ice.IceConfig` (with
its transport policy), or a list of :class:`~rtckit.ice.IceServer` (policy ``all``)."""


def _ice_config(servers: IceServers) -> IceConfig:
    return servers if isinstance(servers, IceConfig) else IceConfig(servers=servers)


def _peer_result(proc_out: bytes, proc_err: bytes, role: str) -> PeerResult:
    stderr = proc_err.decode(errors="replace")
    lines = [line for line in proc_out.decode(errors="replace").splitlines() if line.strip()]
    try:
        data: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise SystemComponentError(
            f"the {role} peer printed no result; stderr:\n{stderr[-2000:]}"
        ) from None
    return PeerResult(
        role=data["role"],
        connected=bool(data["connected"]),
        state=str(data["state"]),
        local_candidate_types=tuple(data["local_candidate_types"]),
        local_candidate_type=data["local_candidate_type"],
        remote_candidate_type=data["remote_candidate_type"],
        local_candidate=data["local_candidate"],
        remote_candidate=data["remote_candidate"],
        gather_seconds=data["gather_seconds"],
        connect_seconds=data["connect_seconds"],
        data_seconds=data["data_seconds"],
        error_type=data["error_type"],
        error=data["error"],
        stderr=stderr,
    )


async def run_peer(
    lab: NatLab,
    host: str,
    role: Literal["offer", "answer"],
    signal_dir: Path,
    *,
    ice_servers: IceServers,
    env: Mapping[str, str] | None = None,
    timeout: float = 40.0,  # noqa: ASYNC109 - passed down to the peer process
    ice_timeout: float = 20.0,
    stun_retries: int | None = 2,
) -> PeerResult:
    """Run one aiortc peer process on *host* until it reports; see :func:`connect_peers`.

    The other side may be anything that speaks the same file signaling in *signal_dir*:
    ``offer.json`` / ``answer.json`` holding ``{"type": ..., "sdp": ...}`` (or
    ``{"abort": reason}``), a data channel on which the offerer sends ``ping`` and the
    answerer replies ``pong``, and ``done.json`` written by the offerer at the end. A browser
    page driven by a test is such a side.
    """
    peer_env = dict(os.environ)
    peer_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_SRC_DIR, os.environ.get("PYTHONPATH", "")) if p
    )
    peer_env.update(env or {})
    argv = [
        sys.executable, "-m", "rtckit.testing._natpeer", "--role", role,
        "--signal-dir", str(signal_dir), "--label", host,
        "--timeout", str(timeout), "--ice-timeout", str(ice_timeout),
    ]  # fmt: skip
    if stun_retries is not None:
        argv += ["--stun-retries", str(stun_retries)]
    argv += ["--ice-config", _ice_config(ice_servers).to_json()]
    proc = await lab.spawn(host, argv, env=peer_env)
    try:
        async with asyncio.timeout(timeout + 15):
            out, err = await proc.communicate()
    except TimeoutError:
        _kill_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise SystemComponentError(
            f"the {role} peer on {host} did not report within {timeout + 15:g} s"
        ) from None
    return _peer_result(out, err, role)


async def connect_peers(
    lab: NatLab,
    offer_host: str,
    answer_host: str,
    *,
    ice_servers: IceServers,
    answer_ice_servers: IceServers | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 40.0,  # noqa: ASYNC109 - passed down to the peer processes
    ice_timeout: float = 20.0,
    stun_retries: int | None = 2,
) -> tuple[PeerResult, PeerResult]:
    """Run an aiortc peer process on each host, connect them, return both results.

    Each peer is ``python -m rtckit.testing._natpeer`` inside its host's namespace; they
    exchange offer and answer through files, so no signaling server is needed. The ICE
    configuration is exactly *ice_servers* (and *answer_ice_servers* for the answerer, default
    the same): an :class:`~rtckit.ice.IceConfig` (e.g. from
    :meth:`rtckit.coturn.CoturnConfig.ice_config`, relay policy included) or a list of
    servers; never an implicit public STUN server. The peers use it through
    :func:`rtckit.peer.connection.create_peer_connection`, so a refused TURN credential is a
    ``TurnAuthError`` naming the server. *env* is added to the peers' environment
    (e.g. ``SSL_CERT_FILE`` for a lab CA). *ice_timeout* bounds ICE; *stun_retries* sets
    aioice's STUN retransmissions in the peers (2: a dead pair fails after 3.5 s; ``None``:
    aioice's default, 63.5 s).
    """
    signal_dir = Path(tempfile.mkdtemp(prefix=f"{lab.prefix}-signal-"))
    options: dict[str, Any] = {
        "env": env,
        "timeout": timeout,
        "ice_timeout": ice_timeout,
        "stun_retries": stun_retries,
    }
    answer_servers = ice_servers if answer_ice_servers is None else answer_ice_servers
    try:
        offer, answer = await asyncio.gather(
            run_peer(lab, offer_host, "offer", signal_dir, ice_servers=ice_servers, **options),
            run_peer(lab, answer_host, "answer", signal_dir, ice_servers=answer_servers, **options),
        )
        return offer, answer
    finally:
        shutil.rmtree(signal_dir, ignore_errors=True)
