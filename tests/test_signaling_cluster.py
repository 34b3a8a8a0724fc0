"""The signaling router over real WebSocket servers on loopback, nodes sharing a MemoryBroker:
order across nodes, resume after an edge's death, a home's death, limits and peer ids across
nodes, room names, a backplane outage, foreign envelope versions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from cluster_nodes import exchange, next_of, offer_right_after_welcome, raw_join
from rtckit.backplane.base import Lease
from rtckit.backplane.memory import MemoryBackplane, MemoryBroker
from rtckit.errors import BackplaneError, RoomError
from rtckit.signaling import (
    AppMessage,
    Disconnected,
    Error,
    OpenAuth,
    PeerJoined,
    PeerLeft,
    Reconnected,
    ReconnectPolicy,
    RoomConfig,
    SignalingClient,
    SignalingConfig,
    SignalingServer,
    TokenAuth,
)
from rtckit.signaling.cluster import ClusterConfig, room_key
from rtckit.signaling.protocol import ErrorCode, Hello, Join, Welcome, decode, encode
from rtckit.signaling.relay_wire import Envelope, Kind, decode_close, pack, unpack
from rtckit.testing.proxy import TcpProxy
from rtckit.topology import Topology
from rtckit.topology.strategies import RoomStrategies

SECRET = "0123456789abcdef-0123456789abcdef-test-secret"
FAST_RECONNECT = ReconnectPolicy(initial_delay=0.01, max_delay=0.2)
TIMEOUT = 60


async def until(cond: Callable[[], bool], what: str, limit: float = 20) -> None:
    try:
        async with asyncio.timeout(limit):
            while not cond():  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


class Cluster:
    """Nodes ``a``, ``b``, ... of one MemoryBroker, each a listening SignalingServer."""

    def __init__(self, broker: MemoryBroker, nodes: dict[str, SignalingServer]) -> None:
        self.broker = broker
        self.nodes = nodes

    def url(self, node: str) -> str:
        return self.nodes[node].url

    def home(self, room: str) -> str | None:
        for lease in self.broker.leases():
            if lease.key == room_key(room):
                return lease.node
        return None


@contextlib.asynccontextmanager
async def cluster(
    names: str = "ab",
    *,
    node_ttl: float = 1.0,
    max_queue: int = 10_000,
    cluster_config: ClusterConfig | None = None,
    **overrides: Any,
) -> AsyncIterator[Cluster]:
    broker = MemoryBroker(node_ttl=node_ttl, max_queue=max_queue)
    config = SignalingConfig(**{"auth": OpenAuth(), **overrides})
    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for name in names:
            server = SignalingServer(config, MemoryBackplane(broker, name), cluster=cluster_config)
            nodes[name] = await stack.enter_async_context(server)
            await server.listen("127.0.0.1", 0)
        yield Cluster(broker, nodes)


async def test_offer_right_after_welcome_across_nodes_1000_times() -> None:
    """A peer on node b offers to a peer on node a (the room's home) right after its welcome:
    peer-joined always comes first, nothing is dropped."""
    async with (
        asyncio.timeout(240),
        cluster(max_messages_per_second=1e6, burst=1_000_000) as nodes,
    ):
        await offer_right_after_welcome(nodes.nodes["a"], nodes.nodes["b"], 1000)


@pytest.mark.parametrize("edge_dies", [True, False], ids=["edge-dies", "cut"])
async def test_resume_after_the_edge_dies_loses_and_duplicates_nothing(edge_dies: bool) -> None:
    """The client's connection to node b (the room lives on a) breaks: b dies and the client
    resumes on a, or only the connection is cut and it resumes through b again."""
    total = 400
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(max_messages_per_second=1e6, burst=1_000_000, max_pending=100_000) as nodes,
    ):
        home = await SignalingClient.connect(nodes.url("a"), room="resume")
        b_port = int(nodes.url("b").split(":")[2].split("/")[0])
        a_port = int(nodes.url("a").split(":")[2].split("/")[0])
        async with TcpProxy("127.0.0.1", b_port) as balancer:
            away = await SignalingClient.connect(
                f"ws://127.0.0.1:{balancer.port}/ws", room="resume", reconnect=FAST_RECONNECT
            )
            try:
                await next_of(home, PeerJoined)

                def edge_goes() -> None:
                    if edge_dies:
                        nodes.broker.kill("b")  # the edge dies...
                        balancer.target = ("127.0.0.1", a_port)  # ...moved on
                    balancer.cut()

                seen = await exchange(home, away, total, edge_goes)
                assert seen.errors == []
                assert seen.resumed == [True]
                assert seen.got[away.peer_id] == list(range(total))
                assert seen.got[home.peer_id] == list(range(total))
            finally:
                await away.aclose()
                await home.aclose()


async def test_a_homes_death_loses_and_duplicates_nothing() -> None:
    """The room lives on b; its two talkers are connected to a. b dies in the middle of their
    exchange: a takes the room over from its journal once b's lease lapses, both resume their
    sessions there, and each receives every message once, in order."""
    total = 300
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(
            cluster_config=ClusterConfig(lease_ttl=2.0),
            max_messages_per_second=1e6,
            burst=1_000_000,
            max_pending=100_000,
        ) as nodes,
    ):
        host = await SignalingClient.connect(nodes.url("b"), room="journal")
        x = await SignalingClient.connect(nodes.url("a"), room="journal", reconnect=FAST_RECONNECT)
        y = await SignalingClient.connect(nodes.url("a"), room="journal", reconnect=FAST_RECONNECT)
        try:
            assert nodes.home("journal") == "b"
            ids = (x.peer_id, y.peer_id)
            seen = await exchange(x, y, total, lambda: nodes.broker.kill("b"), pause=0.005)
            assert seen.errors == []
            assert seen.resumed == [True, True]
            assert (x.peer_id, y.peer_id) == ids
            assert seen.got[x.peer_id] == list(range(total))
            assert seen.got[y.peer_id] == list(range(total))
            assert nodes.home("journal") == "a"
        finally:
            for client in (x, y, host):
                with contextlib.suppress(Exception):
                    await client.aclose()


async def test_a_dead_homes_rooms_are_taken_over_without_waiting_for_a_join() -> None:
    """Nobody comes back after b (the home) dies: a takes the room over by itself once b's
    lease lapses, with its sessions waiting for resume; they leave after the resume window
    (and its grace) when no client resumes them."""
    ttl = 2.0
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(cluster_config=ClusterConfig(lease_ttl=ttl), resume_window=1.0) as nodes,
    ):
        host = await SignalingClient.connect(nodes.url("b"), room="orphan")
        guest = await SignalingClient.connect(
            nodes.url("a"), room="orphan", reconnect=ReconnectPolicy(enabled=False)
        )
        try:
            assert nodes.home("orphan") == "b"
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            nodes.broker.kill("b")
            a = nodes.nodes["a"].hub.state
            await until(lambda: nodes.home("orphan") == "a", "a takes the room over", limit=10)
            took = loop.time() - killed_at
            assert took < ttl + 1.0 + 1.5  # the lease's TTL, a's notice (node TTL), a poll
            await until(lambda: len(a.peers("orphan")) == 2, "the sessions restored", limit=2)
            await until(lambda: a.peers("orphan") == [], "nobody resumed", limit=ttl + 3)
            await until(lambda: nodes.home("orphan") is None, "the room given up", limit=ttl)
        finally:
            for client in (guest, host):
                with contextlib.suppress(Exception):
                    await client.aclose()


async def test_a_flood_from_a_handed_over_connection_stays_off_the_backplane() -> None:
    """A client on b (its room lives on a) floods: b stops forwarding and closes it (1008)
    before the backplane's queue towards a fills, so b's other connections to a stay up."""
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(max_queue=1000) as nodes,
        aiohttp.ClientSession() as session,
    ):
        host = await SignalingClient.connect(nodes.url("a"), room="flood")
        calm = await SignalingClient.connect(nodes.url("b"), room="flood")
        try:
            ws, _welcome = await raw_join(session, nodes.url("b"), "flood")
            frame = encode(AppMessage(to=host.peer_id, payload="x", seq=1))
            for _ in range(5000):
                await ws.send_str(frame)
            closed = await ws.receive()
            while closed.type == aiohttp.WSMsgType.TEXT:
                closed = await ws.receive()
            assert ws.close_code == 1008
            await calm.send_app(host.peer_id, "still here")
            event = await host.next_event()
            while not (isinstance(event, AppMessage) and event.sender == calm.peer_id):
                assert not isinstance(event, PeerLeft) or event.peer_id != calm.peer_id
                event = await host.next_event()
            assert event.payload == "still here"
            assert calm.connected
        finally:
            await host.aclose()
            await calm.aclose()


async def test_a_killed_node_has_its_peers_reported_left_within_15_s() -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(
            node_ttl=3.0,
            cluster_config=ClusterConfig(lease_ttl=2.0),
            # heartbeats alone would take 35 s: the node's death must be what tells
            heartbeat_interval=10.0,
            dead_peer_timeout=30.0,
        ) as nodes,
    ):
        home = await SignalingClient.connect(nodes.url("a"), room="stay")
        doomed = await SignalingClient.connect(nodes.url("b"), room="stay")
        # a room homed on b, with a peer on a: its connection is closed with the reconnect
        # code, and the client resumes its session on a, which takes the room over with
        # its journal once b's lease lapses
        there = await SignalingClient.connect(nodes.url("b"), room="moving")
        mover = await SignalingClient.connect(
            nodes.url("a"), room="moving", reconnect=FAST_RECONNECT
        )
        try:
            assert nodes.home("stay") == "a"
            assert nodes.home("moving") == "b"
            await next_of(home, PeerJoined)
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            nodes.broker.kill("b")
            left = await next_of(home, PeerLeft)
            assert left.peer_id == doomed.peer_id
            assert loop.time() - killed_at < 15
            mover_id = mover.peer_id
            again = await next_of(mover, Reconnected)
            assert again.resumed  # its session outlived b, in the room's journal
            assert mover.peer_id == mover_id
            assert nodes.home("moving") == "a"
        finally:
            for client in (home, mover):
                await client.aclose()
            for client in (doomed, there):
                with contextlib.suppress(Exception):
                    await client.aclose()


async def test_max_peers_and_peer_ids_hold_across_nodes() -> None:
    auth = TokenAuth(secret=SECRET)
    async with asyncio.timeout(TIMEOUT), cluster(auth=auth, max_peers_per_room=2) as nodes:

        def token(room: str, *permissions: str) -> str:
            return auth.mint(
                room=room, identity="t", permissions=("publish", "subscribe", *permissions)
            )

        first = await SignalingClient.connect(
            nodes.url("a"), room="ids", token=token("ids", "admin"), peer_id="p1"
        )
        try:
            with pytest.raises(RoomError) as taken:
                await SignalingClient.connect(
                    nodes.url("b"), room="ids", token=token("ids", "admin"), peer_id="p1"
                )
            assert taken.value.code == ErrorCode.PEER_ID_TAKEN
            second = await SignalingClient.connect(nodes.url("b"), room="ids", token=token("ids"))
            try:
                with pytest.raises(RoomError) as full:
                    await SignalingClient.connect(nodes.url("b"), room="ids", token=token("ids"))
                assert full.value.code == ErrorCode.ROOM_FULL
            finally:
                await second.aclose()
            with pytest.raises(Exception, match="auth_"):  # refused on the edge
                await SignalingClient.connect(nodes.url("b"), room="ids", token="forged")
        finally:
            await first.aclose()


async def test_three_nodes_one_room() -> None:
    """The room lives on a; peers connected to b and c talk through it, both ways."""
    async with asyncio.timeout(TIMEOUT), cluster("abc") as nodes:
        clients = [await SignalingClient.connect(nodes.url(n), room="tri") for n in "abc"]
        try:
            assert nodes.home("tri") == "a"
            for sender in clients:
                await sender.send_app(None, sender.peer_id)
            for receiver in clients:
                got: set[object] = set()
                while len(got) < 2:
                    got.add((await next_of(receiver, AppMessage)).payload)
                assert got == {c.peer_id for c in clients} - {receiver.peer_id}
        finally:
            for client in clients:
                await client.aclose()


@pytest.mark.parametrize("room", ["a*", "a:b"])
async def test_room_names_with_key_characters(room: str) -> None:
    async with asyncio.timeout(TIMEOUT), cluster() as nodes:
        one = await SignalingClient.connect(nodes.url("b"), room=room)
        two = await SignalingClient.connect(nodes.url("a"), room=room)
        try:
            assert nodes.home(room) == "b"
            await two.send_app(one.peer_id, "hi")
            message = await next_of(one, AppMessage)
            assert (message.sender, message.payload) == (two.peer_id, "hi")
        finally:
            await one.aclose()
            await two.aclose()


async def test_declared_rooms_across_nodes() -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(create_rooms=False, rooms=(RoomConfig(name="lobby", max_peers=2),)) as nodes,
    ):
        one = await SignalingClient.connect(nodes.url("a"), room="lobby")
        two = await SignalingClient.connect(nodes.url("b"), room="lobby")
        try:
            assert list(two.peers) == [one.peer_id]
            with pytest.raises(RoomError) as full:
                await SignalingClient.connect(nodes.url("b"), room="lobby")
            assert full.value.code == ErrorCode.ROOM_FULL
            with pytest.raises(RoomError) as unknown:
                await SignalingClient.connect(nodes.url("b"), room="nope")
            assert unknown.value.code == ErrorCode.UNKNOWN_ROOM
            assert nodes.home("nope") is None  # refused without taking a lease
        finally:
            await one.aclose()
            await two.aclose()
        await until(lambda: nodes.home("lobby") is None, "the empty room's lease given up")


async def test_a_refused_join_gives_the_lease_up_at_once() -> None:
    auth = TokenAuth(secret=SECRET)
    async with asyncio.timeout(TIMEOUT), cluster(auth=auth, max_peers_per_room=2) as nodes:
        token = auth.mint(room="solo", identity="t", permissions=("publish", "subscribe"))
        with pytest.raises(Exception, match="forbidden"):  # choosing a peer id needs admin
            await SignalingClient.connect(nodes.url("b"), room="solo", token=token, peer_id="me")
        assert nodes.home("solo") is None


class Recorder:
    """A node's backplane handler that keeps what it receives (a fake node)."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def on_message(self, sender: str, payload: bytes) -> None:
        self.payloads.append(payload)

    def on_node_down(self, node: str) -> None:
        pass

    def on_unreachable(self, node: str) -> None:
        pass

    def on_state(self, up: bool) -> None:
        pass


class SlowBackplane(MemoryBackplane):
    """Leases take *delay* seconds (a distant backplane)."""

    delay = 0.3

    async def acquire(self, key: str, ttl: float) -> Lease:
        await asyncio.sleep(self.delay)
        return await super().acquire(key, ttl)


@pytest.mark.parametrize("ending", ["client-leaves", "handshake-timeout", "too-many-frames"])
async def test_a_connection_that_ends_while_its_room_is_resolved(
    ending: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker()
    config = SignalingConfig(auth=OpenAuth(), handshake_timeout=0.1, heartbeat_interval=0.05)
    quick = ClusterConfig(lease_ttl=0.6)  # an emptied room's lease goes within 0.2 s
    slow = ClusterConfig(lease_ttl=60)  # b's leases do not lapse during the test
    async with (
        asyncio.timeout(TIMEOUT),
        SignalingServer(config, MemoryBackplane(broker, "a"), cluster=quick) as a,
        SignalingServer(config, SlowBackplane(broker, "b"), cluster=slow) as b,
        aiohttp.ClientSession() as session,
    ):
        await a.listen("127.0.0.1", 0)
        await b.listen("127.0.0.1", 0)
        for room in ("there", "free"):  # one room homed on a, one homed nowhere
            ws = await session.ws_connect(b.url)
            await ws.send_str(encode(Hello()))
            await ws.send_str(encode(Join(room=room)))
            if ending == "client-leaves":
                await ws.close()
            elif ending == "too-many-frames":
                for _ in range(40):
                    await ws.send_str(encode(Hello()))
            if room == "free":
                await asyncio.sleep(0.5)
            else:
                async with SignalingClient.connect(a.url, room="there"):
                    await asyncio.sleep(0.5)
            await ws.close()
        await until(lambda: broker.leases() == [], "every lease given up")
        assert a.hub.state.connection_count == 0
        assert b.hub.state.connection_count == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_failed_join_at_the_home_then_a_join_homed_elsewhere_is_handed_back() -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(max_peers_per_room=2) as nodes,
        aiohttp.ClientSession() as session,
    ):
        full = await SignalingClient.connect(nodes.url("a"), room="full")
        fuller = await SignalingClient.connect(nodes.url("a"), room="full")
        other = await SignalingClient.connect(nodes.url("b"), room="other")
        try:
            ws = await session.ws_connect(nodes.url("b"))
            await ws.send_str(encode(Hello()))
            await ws.send_str(encode(Join(room="full")))  # homed on a: refused there
            assert isinstance(decode((await ws.receive()).data), Hello)
            refused = decode((await ws.receive()).data)
            assert isinstance(refused, Error)
            assert refused.code == ErrorCode.ROOM_FULL
            await ws.send_str(encode(Join(room="other")))  # a hands it back to b
            welcome = decode((await ws.receive()).data)
            assert isinstance(welcome, Welcome), welcome
            assert welcome.room == "other"
            assert [peer.id for peer in welcome.peers] == [other.peer_id]
            await ws.close()
        finally:
            for client in (full, fuller, other):
                await client.aclose()


async def test_join_before_hello_is_refused_on_the_edge() -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        cluster() as nodes,
        aiohttp.ClientSession() as session,
    ):
        there = await SignalingClient.connect(nodes.url("a"), room="elsewhere")
        try:
            ws = await session.ws_connect(nodes.url("b"))
            await ws.send_str(encode(Join(room="elsewhere")))
            refused = decode((await ws.receive()).data)
            assert isinstance(refused, Error)
            assert refused.code == ErrorCode.UNEXPECTED
            await ws.close()
            assert there.peers == {}
        finally:
            await there.aclose()


async def test_backplane_outage_keeps_local_rooms_and_refuses_remote_joins() -> None:
    async with asyncio.timeout(TIMEOUT), cluster() as nodes:
        x = await SignalingClient.connect(nodes.url("a"), room="local")
        y = await SignalingClient.connect(nodes.url("a"), room="local")
        z = await SignalingClient.connect(nodes.url("b"), room="remote")
        # a peer of b's room connected to a: cut by the outage, it resumes once it ends
        cut = await SignalingClient.connect(nodes.url("a"), room="remote", reconnect=FAST_RECONNECT)
        try:
            await next_of(z, PeerJoined)
            nodes.broker.set_up(False)
            await next_of(cut, Disconnected)
            await y.send_app(x.peer_id, "during the outage")
            message = await next_of(x, AppMessage)
            assert message.payload == "during the outage"
            with pytest.raises(RoomError) as refused:
                await SignalingClient.connect(nodes.url("a"), room="remote")
            assert refused.value.code == ErrorCode.UNAVAILABLE
            await asyncio.sleep(0.5)  # the cut client tries to resume meanwhile
            nodes.broker.set_up(True)
            await until(lambda: nodes.home("local") == "a", "a takes its room's lease again")
            back = await next_of(cut, Reconnected)
            assert back.resumed
            await cut.send_app(z.peer_id, "after the outage")
            assert (await next_of(z, AppMessage)).payload == "after the outage"
            w = await SignalingClient.connect(nodes.url("a"), room="remote")
            try:
                assert set(w.peers) == {z.peer_id, cut.peer_id}
            finally:
                await w.aclose()
        finally:
            for client in (x, y, z, cut):
                await client.aclose()


async def test_a_room_taken_over_during_its_homes_cut_closes_there_when_it_returns() -> None:
    """Node a (the room's home) loses the backplane alone: its local peers keep talking; b
    takes the room once a's lease expires and its peer joins again there; when a returns it
    finds the room taken, closes its copy (1001), and its peers join the room on b."""
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(node_ttl=0.5, cluster_config=ClusterConfig(lease_ttl=1.0)) as nodes,
    ):
        clients = [
            await SignalingClient.connect(nodes.url(node), room="r", reconnect=FAST_RECONNECT)
            for node in "aab"
        ]
        x, y, z = clients
        try:
            assert nodes.home("r") == "a"
            nodes.broker.set_up(False, node="a")
            await x.send_app(y.peer_id, "during the cut")
            assert (await next_of(y, AppMessage)).payload == "during the cut"
            # b takes the room over with its journal (as it was before the cut)
            assert (await next_of(z, Reconnected)).resumed
            assert nodes.home("r") == "b"
            nodes.broker.set_up(True, node="a")
            # x resumes on b. y got a message during the cut that b's journal lacks: it
            # resumes only if x's client, which resends what a had not acknowledged, gave b
            # that message first (then b numbers it as a did); else it joins again
            assert (await next_of(x, Reconnected)).resumed
            await next_of(y, Reconnected)
            await until(
                lambda: all(len(client.peers) == 2 for client in clients), "one room of three"
            )
            assert nodes.home("r") == "b"
            await y.send_app(z.peer_id, "together again")
            assert (await next_of(z, AppMessage)).payload == "together again"
        finally:
            for client in clients:
                await client.aclose()


async def test_a_payload_of_another_version_is_refused_once_per_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with asyncio.timeout(TIMEOUT), cluster("a") as nodes:
        a = nodes.nodes["a"]
        recorder = Recorder()
        async with MemoryBackplane(nodes.broker, "z") as z:
            await z.start(recorder)
            z.post("a", pack(Kind.OPEN, 7, encode(Join(room="v")).encode()))
            await until(lambda: a.hub.state.connection_count == 1, "a serves z's connection")
            await until(lambda: len(recorder.payloads) == 1, "the welcome")
            for _ in range(3):
                z.post("a", b"\x02" + pack(Kind.FRAME, 7, b"{}")[1:])  # version 2
            await until(lambda: a.hub.state.connection_count == 0, "z's connections dropped")
            z.post("a", b"\x01")  # shorter than a header
            await asyncio.sleep(0.1)
        refusals = [r for r in caplog.records if "refusing payloads" in r.getMessage()]
        assert len(refusals) == 1
        assert "version 2" in refusals[0].getMessage()
        assert all(record.exc_info is None for record in caplog.records)


async def test_a_home_answers_envelopes_for_connections_it_does_not_serve() -> None:
    """A frame for a connection the home does not know (handed back meanwhile, or the home
    restarted) goes back to its edge; a second OPEN for a served key is refused."""
    async with asyncio.timeout(TIMEOUT), cluster("a") as nodes:
        recorder = Recorder()
        async with MemoryBackplane(nodes.broker, "z") as z:
            await z.start(recorder)
            frame = encode(AppMessage(to=None, payload=1, seq=1)).encode()
            z.post("a", pack(Kind.FRAME, 5, frame))
            z.post("a", pack(Kind.TOUCH, 5))
            z.post("a", pack(Kind.LOST, 5))
            await until(lambda: len(recorder.payloads) == 1, "the hand-back")
            assert unpack(recorder.payloads[0]) == Envelope(Kind.HANDBACK, 5, frame)
            z.post("a", pack(Kind.OPEN, 6, encode(Join(room="q")).encode()))
            z.post("a", pack(Kind.OPEN, 6, encode(Join(room="q")).encode()))
            await until(lambda: len(recorder.payloads) == 2, "the refusal")
            refusal = unpack(recorder.payloads[1])
            assert refusal.kind is Kind.CLOSE
            assert decode_close(refusal.data) == (1011, "connection opened twice")
            await asyncio.sleep(0.05)
            assert nodes.nodes["a"].hub.state.connection_count == 0  # neither is served
            assert nodes.nodes["a"].hub.peers("q") == []


async def test_picows_nodes_relay_across_nodes() -> None:
    pytest.importorskip("picows", reason="picows is not installed (pip install 'rtckit[speed]')")
    from rtckit.signaling.fastws import PicowsSignalingServer

    broker = MemoryBroker()
    config = SignalingConfig(auth=OpenAuth())
    async with (
        asyncio.timeout(TIMEOUT),
        PicowsSignalingServer(config, MemoryBackplane(broker, "a")) as a,
        SignalingServer(config, MemoryBackplane(broker, "b")) as b,
    ):
        await a.listen("127.0.0.1", 0)
        await b.listen("127.0.0.1", 0)
        one = await SignalingClient.connect(a.url, room="mixed")
        two = await SignalingClient.connect(b.url, room="mixed")
        try:
            await two.send_app(one.peer_id, "from b")
            await one.send_app(two.peer_id, "from a")
            assert (await next_of(one, AppMessage)).payload == "from b"
            assert (await next_of(two, AppMessage)).payload == "from a"
        finally:
            await one.aclose()
            await two.aclose()


class _MediaServer:
    """A server strategy standing in for an SFU: it notes when its rooms run."""

    topology = Topology.SFU

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self._log = log

    async def start_room(self, room: str) -> None:
        self._log.append(("start", room))

    async def stop_room(self, room: str) -> None:
        self._log.append(("stop", room))


async def test_a_media_room_that_cannot_renew_its_lease_stops_before_it_lapses() -> None:
    """Fencing: during a's cut from the backplane, a's media room (SFU) is closed and its media
    server stopped while a's lease still holds, so that b can never run a second one; a's mesh
    room keeps serving a's peers."""
    log: list[tuple[str, str]] = []
    ttl = 1.5
    rooms = (RoomConfig(name="media", topology="sfu"), RoomConfig(name="talk", topology="mesh"))
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(node_ttl=0.5, cluster_config=ClusterConfig(lease_ttl=ttl), rooms=rooms) as nodes,
        RoomStrategies(nodes.nodes["a"].hub, factories={"sfu": lambda _hub: _MediaServer(log)}),
    ):
        viewer = await SignalingClient.connect(nodes.url("a"), room="media")
        x = await SignalingClient.connect(nodes.url("a"), room="talk")
        y = await SignalingClient.connect(nodes.url("a"), room="talk")
        try:
            await until(lambda: log == [("start", "media")], "a's media server starts")
            lease = next(le for le in nodes.broker.leases() if le.key == room_key("media"))
            loop = asyncio.get_running_loop()
            cut_at = loop.time()
            nodes.broker.set_up(False, node="a")
            await until(lambda: ("stop", "media") in log, "a's media server stops", limit=2 * ttl)
            stopped_at = loop.time()
            # stopped before a's last renewal (at most ttl/3 before the cut) could lapse
            assert stopped_at < cut_at + ttl
            assert nodes.home("media") == "a"  # the lease still held when the room closed
            assert nodes.nodes["a"].hub.state.peers("media") == []
            await x.send_app(y.peer_id, "mesh rooms keep talking")
            assert (await next_of(y, AppMessage)).payload == "mesh rooms keep talking"
            # the lease lapses (b may take the room over at once, with a new epoch)
            await until(lambda: nodes.home("media") != "a", "the lease lapses", limit=2 * ttl)
            assert lease.node == "a"
        finally:
            for client in (viewer, x, y):
                await client.aclose()


async def test_a_home_paused_past_its_lease_closes_its_media_room_before_asking_anyone() -> None:
    """A home frozen longer than its lease (a pause, as with SIGSTOP: here the whole event
    loop blocks) may have lost its media room to another node meanwhile: it closes the room
    and stops its media server at its first look at the clock, before any backplane call
    could tell it whether the room moved, so that two media servers never run at once."""
    log: list[tuple[str, str]] = []
    ttl = 0.9
    rooms = (RoomConfig(name="media", topology="sfu"),)
    async with (
        asyncio.timeout(TIMEOUT),
        cluster(node_ttl=5.0, cluster_config=ClusterConfig(lease_ttl=ttl), rooms=rooms) as nodes,
        RoomStrategies(nodes.nodes["a"].hub, factories={"sfu": lambda _hub: _MediaServer(log)}),
    ):
        viewer = await SignalingClient.connect(nodes.url("a"), room="media")
        try:
            await until(lambda: log == [("start", "media")], "a's media server starts")
            router = nodes.nodes["a"].router
            assert router is not None
            backplane = router.backplane
            for name in ("acquire", "renew", "holder"):
                method = getattr(backplane, name)

                async def noted(*args: Any, _name: str = name, _method: Any = method) -> Any:
                    log.append(("call", _name))
                    return await _method(*args)

                setattr(backplane, name, noted)
            time.sleep(1.5 * ttl)  # noqa: ASYNC251 - the pause: nothing of a runs meanwhile
            await until(lambda: ("stop", "media") in log, "a's media server stops", limit=ttl)
            # closed on a's own clock, before asking the backplane anything (a may take the
            # room again afterwards, under a new lease, from its journal)
            assert log[:2] == [("start", "media"), ("stop", "media")]
        finally:
            await viewer.aclose()


async def test_media_rooms_are_placed_on_the_least_loaded_node() -> None:
    """Media rooms created one after the other from node a spread over a, b and c (each new
    one goes where the load is least, a first on a tie); their peers, all connected to a,
    talk through the chosen home."""
    async with asyncio.timeout(TIMEOUT), cluster("abc", default_topology="sfu") as nodes:
        clients = [await SignalingClient.connect(nodes.url("a"), room=f"r{i}") for i in range(4)]
        try:
            assert [nodes.home(f"r{i}") for i in range(4)] == ["a", "b", "c", "a"]
            other = await SignalingClient.connect(nodes.url("a"), room="r1")
            try:
                await other.send_app(clients[1].peer_id, "via b")
                assert (await next_of(clients[1], AppMessage)).payload == "via b"
                assert nodes.nodes["b"].hub.state.peers("r1") != []
            finally:
                await other.aclose()
        finally:
            for client in clients:
                await client.aclose()


async def test_mesh_rooms_stay_on_the_node_of_their_first_joiner() -> None:
    rooms = (RoomConfig(name="declared-sfu", topology="sfu"),)
    async with asyncio.timeout(TIMEOUT), cluster("abc", rooms=rooms) as nodes:
        clients = [await SignalingClient.connect(nodes.url("a"), room=f"m{i}") for i in range(3)]
        media = await SignalingClient.connect(nodes.url("a"), room="declared-sfu")
        try:
            assert [nodes.home(f"m{i}") for i in range(3)] == ["a", "a", "a"]
            assert nodes.home("declared-sfu") == "b"  # a homes three mesh rooms
        finally:
            for client in (*clients, media):
                await client.aclose()


@pytest.mark.parametrize("failure", ["error", "timeout"])
async def test_placement_falls_back_to_the_local_node(failure: str) -> None:
    """The live nodes cannot be listed (an error, or no answer within placement_timeout):
    new media rooms are taken where their first join arrives."""
    config = ClusterConfig(placement_timeout=0.2)
    async with (
        asyncio.timeout(TIMEOUT),
        cluster("ab", default_topology="mcu", cluster_config=config) as nodes,
    ):
        router = nodes.nodes["a"].router
        assert router is not None

        async def failing() -> dict[str, float]:
            if failure == "timeout":
                await asyncio.sleep(3600)
            raise BackplaneError("no list")

        router.backplane.live_nodes = failing  # type: ignore[method-assign]
        clients = [await SignalingClient.connect(nodes.url("a"), room=f"x{i}") for i in range(2)]
        try:
            assert [nodes.home(f"x{i}") for i in range(2)] == ["a", "a"]
        finally:
            for client in clients:
                await client.aclose()


async def test_a_draining_node_hands_its_rooms_over() -> None:
    """Node a drains: the room it homes is handed over (its connections closed with 1001,
    its journal written, its lease released); its clients, on a and on b, reconnect and
    resume their sessions on b, where it is served; a room joined through a while it drains
    is placed on b."""
    async with asyncio.timeout(TIMEOUT), cluster("ab") as nodes:
        x = await SignalingClient.connect(nodes.url("a"), room="talk", reconnect=FAST_RECONNECT)
        y = await SignalingClient.connect(nodes.url("b"), room="talk", reconnect=FAST_RECONNECT)
        try:
            await next_of(x, PeerJoined)
            assert nodes.home("talk") == "a"
            router = nodes.nodes["a"].router
            assert router is not None
            await router.drain()
            assert router.rooms == []
            assert router.draining
            ids = (x.peer_id, y.peer_id)
            for client in (x, y):
                assert (await next_of(client, Reconnected)).resumed  # kept by the journal
            assert (x.peer_id, y.peer_id) == ids
            await until(lambda: len(x.peers) == 1 and len(y.peers) == 1, "one room of two")
            assert nodes.home("talk") == "b"
            assert router.rooms == []
            await x.send_app(y.peer_id, "after the drain")
            assert (await next_of(y, AppMessage)).payload == "after the drain"
            late = await SignalingClient.connect(nodes.url("a"), room="new")
            try:
                assert nodes.home("new") == "b"  # a mesh room too: a takes no room
                assert router.rooms == []
            finally:
                await late.aclose()
        finally:
            for client in (x, y):
                await client.aclose()


async def test_a_draining_node_hands_back_a_room_placed_on_it() -> None:
    """Node b still sees a's load from before a started to drain (a publishes its infinite
    load with its next liveness refresh) and places a new media room on a: a hands the
    connection back, and b places it elsewhere rather than on a again."""
    config = ClusterConfig(media_room_load=0.0)
    async with (
        asyncio.timeout(TIMEOUT),
        # a's liveness (and load) is refreshed every 10 s: b keeps seeing a's load of 0
        cluster("ab", node_ttl=30.0, cluster_config=config, default_topology="sfu") as nodes,
    ):
        busy = [await SignalingClient.connect(nodes.url("b"), room="busy") for _ in range(5)]
        try:
            router = nodes.nodes["a"].router
            assert router is not None
            await router.drain()
            placer = nodes.nodes["b"].router
            assert placer is not None
            assert (await placer.backplane.live_nodes())["a"] == 0.0
            media = await SignalingClient.connect(nodes.url("b"), room="placed")
            try:
                assert nodes.home("placed") == "b"
            finally:
                await media.aclose()
        finally:
            for client in busy:
                await client.aclose()


async def test_after_an_empty_restart_an_edge_back_first_leaves_the_room_to_its_home() -> None:
    """The backplane restarts empty (a redis-server without persistence) and node b (an edge)
    reconnects before node a (the room's home): the resume of b's client waits for the
    comeback grace, a retakes the room meanwhile, and the session is kept."""
    config = ClusterConfig(lease_ttl=3.0, comeback_grace=1.0)
    async with asyncio.timeout(TIMEOUT), cluster(cluster_config=config) as nodes:
        x = await SignalingClient.connect(nodes.url("a"), room="r", reconnect=FAST_RECONNECT)
        y = await SignalingClient.connect(nodes.url("b"), room="r", reconnect=FAST_RECONNECT)
        try:
            await next_of(x, PeerJoined)
            assert nodes.home("r") == "a"
            broker = nodes.broker
            broker.set_up(False)
            broker.set_up(False, node="a")  # a will come back later than b
            await next_of(y, Disconnected)
            await asyncio.sleep(0.2)
            broker.set_up(True, empty=True)  # restarted with nothing: no lease, no node
            assert broker.leases() == []
            await asyncio.sleep(0.3)  # b is back alone: y's resume reaches it
            broker.set_up(True, node="a")
            assert (await next_of(y, Reconnected)).resumed
            assert nodes.home("r") == "a"
            await y.send_app(x.peer_id, "kept")
            assert (await next_of(x, AppMessage)).payload == "kept"
        finally:
            for client in (x, y):
                await client.aclose()


async def test_locate_places_a_media_room_for_an_in_process_participant() -> None:
    """SignalingRouter.locate (a WHIP publisher's POST): the home of a homed room; for a room
    no node holds, the node placement picks (no lease taken yet) or, with place=False, this
    node, which takes the lease at once; a room the hub would refuse is this node's (the join
    is refused here, no lease); an unreachable backplane is a BackplaneError.
    SignalingRouter.home (a WHEP viewer's POST) answers the same home but places and takes
    nothing: None for a room no node holds."""
    rooms = (RoomConfig(name="declared-sfu", topology="sfu"),)
    async with (
        asyncio.timeout(TIMEOUT),
        cluster("ab", default_topology="sfu", rooms=rooms) as nodes,
        SignalingClient.connect(nodes.url("b"), room="busy") as busy,
    ):
        a, b = nodes.nodes["a"].router, nodes.nodes["b"].router
        assert a is not None
        assert b is not None
        assert nodes.home("busy") == "b"
        assert await a.locate("busy") == "b"
        assert await b.locate("busy") == "b"
        assert (await a.home("busy"), await b.home("busy")) == ("b", "b")
        assert await a.home("fresh") is None
        assert await b.locate("fresh") == "a"  # b homes a media room: a is less loaded
        assert nodes.home("fresh") is None  # placed, not taken: a takes it when asked
        assert await b.locate("fresh", place=False) == "b"
        assert nodes.home("fresh") == "b"
        assert "fresh" in b.rooms
        assert busy.peer_id in [p.id for p in nodes.nodes["b"].hub.state.peers("busy")]

        nodes.broker.set_up(False)
        with pytest.raises(BackplaneError):
            await a.locate("other")
        with pytest.raises(BackplaneError):
            await a.home("other")
        nodes.broker.set_up(True)

    async with (
        asyncio.timeout(TIMEOUT),
        cluster("ab", rooms=rooms, create_rooms=False) as nodes,
    ):
        a = nodes.nodes["a"].router
        assert a is not None
        assert await a.locate("undeclared") == "a"
        assert await a.home("undeclared") == "a"
        assert nodes.home("undeclared") is None
