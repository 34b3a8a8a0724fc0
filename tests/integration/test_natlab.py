"""The NAT lab: real namespaces, real iptables NATs, real coturn, real aiortc peer processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import attrs
import pytest

from rtckit.coturn import CoturnConfig
from rtckit.errors import ConfigurationError
from rtckit.ice import IceConfig, IceServerUri
from rtckit.ice.turn import TurnRestAuth
from rtckit.stun.server import stun_binding
from rtckit.testing import require_executable, require_root
from rtckit.testing.natlab import (
    PUBLIC_HOST,
    LabTls,
    NatLab,
    NatType,
    PeerResult,
    cleanup_stale,
    connect_peers,
    lab_tls,
    unshare_command,
)

SECRET = "natlab-secret"
SRC = str(Path(__file__).resolve().parents[2] / "src")
STATE_DIR = Path("/run/rtckit-natlab")


def _require_lab() -> None:
    require_root("network namespaces")
    require_executable("ip", hint="apt-get install iproute2")
    require_executable("iptables", hint="apt-get install iptables")
    require_executable("turnserver", hint="apt-get install coturn")


def _namespaces() -> set[str]:
    netns = Path("/run/netns")
    return {p.name for p in netns.iterdir()} if netns.is_dir() else set()


@pytest.fixture
async def lab() -> AsyncIterator[NatLab]:
    _require_lab()
    async with NatLab() as lab:
        yield lab
    assert not {n for n in _namespaces() if n.startswith(lab.prefix)}
    assert not lab.state_file.exists()


@attrs.frozen(kw_only=True)
class LabTurn:
    """The lab's coturn: its configuration, the REST auth its clients get, its TLS files."""

    config: CoturnConfig
    auth: TurnRestAuth
    tls: LabTls

    def uri(self, scheme: str, transport: str | None = None) -> IceServerUri:
        """The one URI of this coturn with *scheme* (and *transport*)."""
        return self.config.uri(scheme, transport)

    def turn(self, scheme: str, transport: str, *, expired: bool = False) -> IceConfig:
        """A TURN-only ICE config for the peers, with a REST credential (or an expired one)."""
        auth = self.auth
        if expired:
            auth = attrs.evolve(auth, clock=lambda: time.time() - 7200)
        server = auth.ice_server([self.uri(scheme, transport)], "peer", ttl=3600)
        return IceConfig(servers=[server])


def _explain(*results: PeerResult) -> str:
    return "\n".join(
        f"{r.role}: {r.state} {r.error_type}: {r.error}\n{r.stderr[-3000:]}" for r in results
    )


# -- the lab itself ---------------------------------------------------------------------------

UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
while True:
    data, addr = s.recvfrom(100)
    s.sendto(("%s:%d" % addr).encode(), addr)
"""

UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.bind(("0.0.0.0", 5555))
for dst in sys.argv[1:]:
    try:
        s.sendto(b"x", (dst, 9999))
        print(s.recvfrom(100)[0].decode())
    except OSError:
        print("timeout")
"""


async def test_nat_mappings_and_filtering(lab: NatLab) -> None:
    cone = await lab.add_host("cone", nat="cone")
    sym = await lab.add_host("sym", nat="symmetric")
    pub = await lab.add_host("carol")
    assert cone.address == "10.0.1.2"
    assert cone.public_address != cone.address
    assert pub.nat is None
    assert pub.address == pub.public_address
    assert set(lab.namespaces) <= _namespaces()
    await lab.spawn("pub", [sys.executable, "-c", UDP_ECHO])
    await lab.spawn("carol", [sys.executable, "-c", UDP_ECHO])
    await asyncio.sleep(0.3)
    targets = [lab.public_address, pub.address]

    seen = (await lab.run("cone", [sys.executable, "-c", UDP_ASK, *targets])).stdout.split()
    # Cone: the same public port (here even the private one) toward every destination.
    assert seen == [f"{cone.public_address}:5555"] * 2

    seen = (await lab.run("sym", [sys.executable, "-c", UDP_ASK, *targets])).stdout.split()
    assert [s.split(":")[0] for s in seen] == [sym.public_address] * 2
    assert seen[0] != seen[1]  # symmetric: a new public port per destination

    # Unsolicited input to a NAT is dropped.
    probe = await lab.run("carol", [sys.executable, "-c", UDP_ASK, cone.public_address])
    assert probe.stdout.split() == ["timeout"]


async def test_host_names_are_checked(lab: NatLab) -> None:
    await lab.add_host("alice")
    with pytest.raises(ConfigurationError):
        await lab.add_host("alice")
    with pytest.raises(ConfigurationError):
        await lab.add_host("pub")
    with pytest.raises(ConfigurationError):
        await lab.add_host("Bad-Name")
    with pytest.raises(ConfigurationError):
        await lab.add_host("bob", nat="full-cone")  # type: ignore[arg-type]


def _inode(path: str) -> int:
    return Path(path).stat().st_ino


def _thread_namespace() -> int:
    return _inode("/proc/thread-self/ns/net")


async def test_inside_moves_the_calling_thread_and_back(lab: NatLab) -> None:
    await lab.add_host("alice")
    own = _thread_namespace()
    public = _inode(f"/run/netns/{lab.public_namespace}")
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.put_nowait(data)

    with pytest.raises(OSError, match="assign"):  # the lab's address is not the host's
        await loop.create_datagram_endpoint(Receiver, local_addr=(lab.public_address, 7000))
    with lab.inside(PUBLIC_HOST):
        assert _thread_namespace() == public
        transport, _ = await loop.create_datagram_endpoint(
            Receiver, local_addr=(lab.public_address, 7000)
        )
    assert _thread_namespace() == own
    try:
        # the socket stays in the public namespace: a host of the lab reaches it
        sender = f"import socket; socket.socket(2, 2).sendto(b'hi', ({lab.public_address!r}, 7000))"
        result = await lab.run("alice", [sys.executable, "-c", sender], timeout=20)
        assert result.returncode == 0, result.stderr
        async with asyncio.timeout(5):
            assert await received.get() == b"hi"
    finally:
        transport.close()
    with pytest.raises(ConfigurationError), lab.inside("nobody"):
        pass
    assert _thread_namespace() == own


async def _blast(lab: NatLab, host: str, *, bitrate: int, seconds: float) -> int:
    """Send 1000-byte datagrams from ``pub`` to *host* at *bitrate* for *seconds*; count
    those that arrive."""
    receiver = lab.socket_factory(host)(socket.AF_INET, socket.SOCK_DGRAM)
    sender = lab.socket_factory(PUBLIC_HOST)(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((lab.host(host).address, 9000))
        receiver.setblocking(False)
        count = 0
        interval = 1000 * 8 / bitrate
        started = time.monotonic()
        for sent in range(int(seconds / interval)):
            sender.sendto(bytes(1000), (lab.host(host).address, 9000))
            await asyncio.sleep(max(0.0, started + (sent + 1) * interval - time.monotonic()))
            while True:
                try:
                    receiver.recv(2000)
                except BlockingIOError:
                    break
                count += 1
        await asyncio.sleep(0.3)  # the queue drains
        while True:
            try:
                receiver.recv(2000)
            except BlockingIOError:
                return count
            count += 1


async def test_shape_downlink_limits_what_a_host_receives(lab: NatLab) -> None:
    require_executable("tc", hint="apt-get install iproute2")
    await lab.add_host("alice")
    await lab.add_host("bob", nat="cone")
    assert await lab.shaping_stats("alice") is None
    await lab.shape_downlink("alice", 400_000, queue=0.1)
    # 2 Mbit/s for 1 s toward a 400 kbit/s link: about 50 kB pass (plus the queue and the
    # burst, 8 kB), the rest is dropped
    arrived = await _blast(lab, "alice", bitrate=2_000_000, seconds=1.0)
    stats = await lab.shaping_stats("alice")
    assert stats is not None
    assert 35 <= arrived <= 80, arrived
    assert stats.sent_packets >= arrived
    assert stats.dropped >= 250 - 80, stats
    # changed in place, then lifted: everything arrives
    await lab.shape_downlink("alice", 4_000_000)
    assert await _blast(lab, "alice", bitrate=2_000_000, seconds=0.5) >= 120
    await lab.shape_downlink("alice", None)
    assert await lab.shaping_stats("alice") is None
    assert await _blast(lab, "alice", bitrate=2_000_000, seconds=0.5) >= 120
    # a host behind a NAT: its NAT's port on the bridge
    await lab.shape_downlink("bob", 100_000)
    assert await lab.shaping_stats("bob") is not None
    with pytest.raises(ConfigurationError):
        await lab.shape_downlink("alice", 1000)
    with pytest.raises(ConfigurationError):
        await lab.shape_downlink("nobody", 100_000)


CRASHING_OWNER = """
import asyncio, os, sys
sys.path.insert(0, {src!r})
from rtckit.testing.natlab import NatLab

async def main():
    lab = NatLab()
    await lab.start()
    await lab.add_host("alice", nat="cone")
    await lab.spawn("alice", ["sleep", "300"])
    print(lab.prefix, flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


async def test_cleanup_stale_after_owner_is_killed() -> None:
    _require_lab()
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_OWNER.format(src=SRC),
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert owner.stdout is not None
        async with asyncio.timeout(20):
            prefix = (await owner.stdout.readline()).decode().strip()
        assert prefix.startswith("rk")
        state = _read_state(prefix)
        assert state is not None
        [sleeper] = [int(pid) for pid in state["pids"]]
        assert {n for n in _namespaces() if n.startswith(prefix)} == set(state["namespaces"])
        # A live owner is left alone.
        assert prefix not in await cleanup_stale()
        assert _proc_state(sleeper) not in ("gone", "Z")
    finally:
        os.killpg(owner.pid, signal.SIGKILL)
        await owner.wait()
    assert prefix in await cleanup_stale()
    assert not {n for n in _namespaces() if n.startswith(prefix)}
    assert _read_state(prefix) is None
    for _ in range(100):
        if _proc_state(sleeper) in ("gone", "Z"):
            break
        await asyncio.sleep(0.05)
    assert _proc_state(sleeper) in ("gone", "Z")


async def test_cancelled_lab_still_cleans_up() -> None:
    _require_lab()
    ready = asyncio.Event()
    prefixes: list[str] = []

    async def use() -> None:
        async with NatLab() as lab:
            prefixes.append(lab.prefix)
            await lab.add_host("alice", nat="cone")
            await lab.spawn("alice", ["sleep", "300"])
            ready.set()
            await asyncio.sleep(300)

    task = asyncio.create_task(use())
    async with asyncio.timeout(20):
        await ready.wait()
    [prefix] = prefixes
    assert {n for n in _namespaces() if n.startswith(prefix)}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not {n for n in _namespaces() if n.startswith(prefix)}
    assert _read_state(prefix) is None


async def _ip(*args: str) -> int:
    proc = await asyncio.create_subprocess_exec("ip", *args, stderr=asyncio.subprocess.DEVNULL)
    async with asyncio.timeout(10):
        return await proc.wait()


async def test_cleanup_stale_only_touches_its_own_prefix(tmp_path: Path) -> None:
    _require_lab()
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    prefix = "rk" + os.urandom(3).hex()
    victim = f"victim{os.urandom(3).hex()}"
    ours = f"{prefix}-pub"
    for name in (victim, ours):
        assert await _ip("netns", "add", name) == 0
    try:
        state = {"owner_pid": dead.pid, "owner_start": None, "namespaces": [ours, victim]}
        (tmp_path / f"{prefix}.json").write_text(json.dumps(state))
        (tmp_path / "rkbroken.json").write_text("{not json")
        assert await cleanup_stale(tmp_path) == [prefix]
        assert ours not in _namespaces()
        assert victim in _namespaces()
        assert not (tmp_path / f"{prefix}.json").exists()
    finally:
        for name in (victim, ours):
            await _ip("netns", "delete", name)


def _read_state(prefix: str) -> dict[str, list[str]] | None:
    try:
        data: dict[str, list[str]] = json.loads((STATE_DIR / f"{prefix}.json").read_text())
    except FileNotFoundError:
        return None
    return data


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


INSIDE_UNSHARE = """
import asyncio, sys
sys.path.insert(0, {src!r})
from rtckit.testing.natlab import NatLab

async def main():
    async with NatLab() as lab:
        host = await lab.add_host("alice", nat="symmetric")
        route = await lab.run("alice", ["ip", "route"], check=True)
        print(lab.prefix, host.address, route.stdout.split()[2], flush=True)

asyncio.run(main())
"""


async def test_lab_inside_unshare() -> None:
    """The lab also runs inside user+network namespaces (the no-root variant), leaving nothing."""
    _require_lab()
    require_executable("unshare", hint="apt-get install util-linux")
    proc = await asyncio.create_subprocess_exec(
        *unshare_command([sys.executable, "-c", INSIDE_UNSHARE.format(src=SRC)]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    prefix, address, gateway = out.decode().split()
    assert (address, gateway) == ("10.0.1.2", "10.0.1.1")
    # Its namespaces lived under a private /run: never visible here.
    assert not {n for n in _namespaces() if n.startswith(prefix)}
    assert _read_state(prefix) is None


# -- peers across NATs ------------------------------------------------------------------------


@pytest.fixture
async def turn_lab(lab: NatLab, tmp_path: Path) -> AsyncIterator[tuple[NatLab, LabTurn]]:
    auth = TurnRestAuth(secrets=[SECRET])
    tls = lab_tls(tmp_path, lab.public_address)
    config = lab.coturn_config(auth, tls=tls)
    async with lab.run_coturn(config):
        yield lab, LabTurn(config=config, auth=auth, tls=tls)


async def test_coturn_runs_in_the_public_namespace(turn_lab: tuple[NatLab, LabTurn]) -> None:
    """coturn answers on its own address inside ``pub``, probed from there."""
    lab, turn = turn_lab
    stun = turn.uri("stun")
    transports: tuple[Literal["udp", "tcp"], ...] = ("udp", "tcp")
    for transport in transports:
        async with asyncio.timeout(5):
            response = await stun_binding(
                stun.host, stun.port, transport=transport, socket_factory=lab.socket_factory("pub")
            )
        mapped = response.mapped_address()
        assert mapped is not None
        assert mapped[0] == lab.public_address


@pytest.fixture
async def stun_lab(lab: NatLab) -> AsyncIterator[tuple[NatLab, IceServerUri]]:
    """The lab with rtckit's own STUN server (``rtckit stun``) in ``pub``."""
    async with lab.run_stun_server() as uri:
        yield lab, uri


async def test_cone_nats_connect_through_stun(stun_lab: tuple[NatLab, IceServerUri]) -> None:
    lab, stun = stun_lab
    await lab.add_host("alice", nat="cone")
    await lab.add_host("bob", nat="cone")
    ice = IceConfig.from_uris([stun])
    offer, answer = await connect_peers(lab, "alice", "bob", ice_servers=ice)
    assert offer.connected, _explain(offer, answer)
    assert answer.connected, _explain(offer, answer)
    for result in (offer, answer):
        assert "srflx" in result.local_candidate_types
        assert "relay" not in result.local_candidate_types
        # The pair's local side is the base (a host candidate); the far side is reflexive.
        assert result.remote_candidate_type == "srflx"


@pytest.mark.parametrize("alice_nat", ["symmetric", "cone"])
async def test_symmetric_nats_fail_with_stun_only(
    stun_lab: tuple[NatLab, IceServerUri], alice_nat: NatType
) -> None:
    """Symmetric against symmetric, and against a port-restricted cone, cannot use STUN."""
    lab, stun = stun_lab
    await lab.add_host("alice", nat=alice_nat)
    await lab.add_host("bob", nat="symmetric")
    ice = IceConfig.from_uris([stun])
    # ice_timeout is a backstop far above aioice's own verdict with 2 retransmissions (3.5 s):
    # state "failed" below means aioice declared the failure, not the backstop.
    offer, answer = await connect_peers(
        lab, "alice", "bob", ice_servers=ice, ice_timeout=30, stun_retries=2
    )
    for result in (offer, answer):
        assert not result.connected
        assert result.state == "failed", _explain(result)
        assert result.error_type == "IceError"
        assert result.error is not None
        assert "ICE failed" in result.error


@pytest.mark.parametrize(
    ("scheme", "transport"), [("turn", "udp"), ("turn", "tcp"), ("turns", "tcp")]
)
async def test_symmetric_nats_connect_through_turn(
    turn_lab: tuple[NatLab, LabTurn], scheme: str, transport: str
) -> None:
    lab, turn = turn_lab
    await lab.add_host("alice", nat="symmetric")
    await lab.add_host("bob", nat="symmetric")
    offer, answer = await connect_peers(
        lab,
        "alice",
        "bob",
        ice_servers=turn.turn(scheme, transport),
        env={"SSL_CERT_FILE": str(turn.tls.ca_file)},
    )
    assert offer.connected, _explain(offer, answer)
    assert answer.connected, _explain(offer, answer)
    assert offer.uses_relay
    assert answer.uses_relay
    assert "relay" in offer.local_candidate_types


async def test_expired_credential_is_a_clear_error(turn_lab: tuple[NatLab, LabTurn]) -> None:
    lab, turn = turn_lab
    await lab.add_host("alice", nat="symmetric")
    await lab.add_host("bob", nat="symmetric")
    expired = turn.turn("turn", "udp", expired=True)
    offer, answer = await connect_peers(lab, "alice", "bob", ice_servers=expired)
    assert not offer.connected
    assert offer.error_type == "TurnAuthError", _explain(offer)
    assert offer.error is not None
    assert turn.uri("turn", "udp").format(explicit=True) in offer.error
    assert "401" in offer.error
    # The other side stops at once instead of waiting for an offer that never comes.
    assert not answer.connected
    assert answer.error is not None
    assert "gave up" in answer.error


async def test_two_labs_in_parallel() -> None:
    _require_lab()
    auth = TurnRestAuth(secrets=[SECRET])

    async def one() -> tuple[str, PeerResult, PeerResult]:
        async with NatLab() as lab:
            await lab.add_host("alice", nat="cone")
            await lab.add_host("bob", nat="symmetric")
            config = lab.coturn_config(auth)
            async with lab.run_coturn(config):
                # What the clients of this coturn get: its URIs, a credential, relay only.
                ice = config.ice_config(user="peer", auth=auth, transport_policy="relay")
                offer, answer = await connect_peers(lab, "alice", "bob", ice_servers=ice)
            return lab.prefix, offer, answer

    results = await asyncio.gather(one(), one())
    assert results[0][0] != results[1][0]
    for prefix, offer, answer in results:
        assert offer.connected, _explain(offer, answer)
        assert answer.connected, _explain(offer, answer)
        assert offer.uses_relay
        assert set(offer.local_candidate_types) == {"relay"}
        # Other tests (and other engineers) may run labs meanwhile: look at ours only.
        assert not {n for n in _namespaces() if n.startswith(prefix)}


# -- rtckit doctor inside the lab -------------------------------------------------------------


async def _doctor(lab: NatLab, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    full_env = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    result = await lab.run("alice", [sys.executable, "-m", "rtckit", "doctor", *args], env=full_env)
    return result.returncode, result.stdout + result.stderr


def _arg(uri: IceServerUri) -> str:
    return uri.format(explicit=True)


async def test_doctor_green_with_the_right_secret(turn_lab: tuple[NatLab, LabTurn]) -> None:
    lab, turn = turn_lab
    alice = await lab.add_host("alice", nat="symmetric")
    status, output = await _doctor(
        lab,
        str(turn.uri("stun")),
        str(turn.uri("turn", "udp")),
        "--secret",
        SECRET,
        "--all-transports",
    )
    assert status == 0, output
    assert "relay path available" in output
    assert "FAIL" not in output
    assert f"reflexive {alice.public_address}:" in output
    assert f"relay {lab.public_address}:" in output
    assert f"turn:{lab.public_address}:3478?transport=tcp" in output
    assert "[4/4]" in output  # progress lines: STUN and TURN, each over UDP and TCP


async def test_doctor_tls_needs_the_ca(turn_lab: tuple[NatLab, LabTurn]) -> None:
    lab, turn = turn_lab
    await lab.add_host("alice", nat="cone")
    uri = _arg(turn.uri("turns"))
    status, output = await _doctor(lab, uri, "--secret", SECRET, "--ca-file", str(turn.tls.ca_file))
    assert status == 0, output
    status, output = await _doctor(lab, uri, "--secret", SECRET)
    assert status == 1, output
    assert "certificate" in output


async def test_doctor_diagnoses_a_wrong_secret(turn_lab: tuple[NatLab, LabTurn]) -> None:
    lab, turn = turn_lab
    await lab.add_host("alice", nat="cone")
    status, output = await _doctor(
        lab, _arg(turn.uri("stun")), _arg(turn.uri("turn", "udp")), "--secret", "not-the-secret"
    )
    assert status == 1, output
    assert "401" in output
    assert "wrong secret" in output
    assert "NO relay path available" in output
    # STUN alone still answers, and says so.
    assert "OK" in output


async def test_doctor_json_output(turn_lab: tuple[NatLab, LabTurn]) -> None:
    lab, turn = turn_lab
    await lab.add_host("alice", nat="cone")
    status, output = await _doctor(
        lab, _arg(turn.uri("turn", "udp")), "--secret", SECRET, "--json", "--quiet"
    )
    assert status == 0, output
    data = json.loads(output)
    assert data["relay_available"] is True
    [row] = data["results"]
    assert row["verdict"] == "ok"
    assert row["relayed_address"][0] == lab.public_address
