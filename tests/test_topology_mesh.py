"""Mesh rooms of real aiortc peers over rtckit signaling (in-memory transport)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar, TypeVar

import pytest
from aiortc.mediastreams import MediaStreamError

from rtckit.errors import RemoteProtocolError, TopologyError
from rtckit.peer import SessionConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack, read_frame_counter
from rtckit.signaling import (
    MemoryTransport,
    OpenAuth,
    RoomConfig,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
)
from rtckit.topology import (
    ParticipantJoined,
    ParticipantLeft,
    Room,
    RoomDataMessage,
    RoomEvent,
    Topology,
    TrackPublished,
    TrackUnpublished,
    join_room,
    register_server_strategy,
    server_strategy_for,
)
from rtckit.topology.bridge import generation_from_session
from rtckit.topology.mesh import MeshRoom
from rtckit.topology.strategies import RoomStrategies, topology_of

E = TypeVar("E")
SMALL = PatternConfig(width=160, height=120, fps=10)
FAST = SessionConfig(heartbeat_interval=0.25, disconnected_after=1.0, restart_after=2.0)


class RoomLog:
    def __init__(self, room: Room) -> None:
        self.room = room
        self.events: list[RoomEvent] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.room.events():
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def wait(self, predicate: Any, within: float = 20) -> None:
        async with asyncio.timeout(within), self._changed:
            while not predicate(self.events):
                await self._changed.wait()

    def of(self, cls: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, cls)]

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _decoded_from(log: RoomLog, participant: str) -> Any:
    """A decoded frame of *participant*'s latest published track. A track may end when its
    connection is replaced (seen once on a loaded machine): then it must have been
    unpublished, and a newer one published, which is read instead (a few times at most)."""
    for _attempt in range(3):
        published = [e for e in log.of(TrackPublished) if e.participant_id == participant]
        track, seen = published[-1].track, len(published)
        try:
            async with asyncio.timeout(20):
                return await track.recv()
        except MediaStreamError:
            await log.wait(
                lambda events, track=track: any(
                    isinstance(e, TrackUnpublished) and e.track is track for e in events
                )
            )
            await log.wait(
                lambda events, seen=seen: (
                    len(
                        [
                            e
                            for e in events
                            if isinstance(e, TrackPublished) and e.participant_id == participant
                        ]
                    )
                    > seen
                )
            )
    raise AssertionError(f"every track of {participant} ended before it gave a frame")


@pytest.fixture
async def hub() -> AsyncIterator[SignalingHub]:
    config = SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="mesh", topology="mesh")])
    async with SignalingHub(config) as hub:
        yield hub


@contextlib.asynccontextmanager
async def member(hub: SignalingHub, name: str) -> AsyncIterator[tuple[SignalingClient, MeshRoom]]:
    # trusted: lets the test choose readable peer ids
    transport = MemoryTransport(hub, trusted=True)
    async with (
        SignalingClient.connect(transport, room="mesh", peer_id=name) as client,
        join_room(client, session_config=FAST) as room,
    ):
        assert isinstance(room, MeshRoom)
        yield client, room


async def test_three_peers_exchange_data_and_video_then_one_leaves(hub: SignalingHub) -> None:
    async with contextlib.AsyncExitStack() as stack:
        rooms: dict[str, MeshRoom] = {}
        logs: dict[str, RoomLog] = {}
        clients: dict[str, SignalingClient] = {}
        for name in ("alice", "bob", "carol"):
            client, room = await stack.enter_async_context(member(hub, name))
            assert room.topology is Topology.MESH
            clients[name], rooms[name] = client, room
            logs[name] = RoomLog(room)
            await room.publish(TestPatternTrack(SMALL))
        for log in logs.values():  # everyone has seen everyone join
            await log.wait(
                lambda events: len([e for e in events if isinstance(e, ParticipantJoined)]) == 2
            )
        for name, room in rooms.items():
            room.send(f"hello from {name}")
        # every pair: data both ways, and decoded video from both others
        for name, log in logs.items():
            others = {n for n in rooms if n != name}
            await log.wait(
                lambda events, others=others: (
                    {e.participant_id for e in events if isinstance(e, RoomDataMessage)} >= others
                )
            )
            await log.wait(
                lambda events, others=others: (
                    {e.participant_id for e in events if isinstance(e, TrackPublished)} >= others
                )
            )
            for other in others:
                frame = await _decoded_from(log, other)
                assert read_frame_counter(frame) >= 0
                assert frame.width == SMALL.width
            messages = {e.participant_id: e.data for e in log.of(RoomDataMessage)}
            assert messages == {n: f"hello from {n}" for n in others}
            assert set(rooms[name].sessions) == others  # N-1 sessions each
        assert {e.participant_id for e in logs["alice"].of(ParticipantJoined)} == {"bob", "carol"}

        # carol leaves: the others get ParticipantLeft and close their sessions to her
        carol_sessions = [rooms[n].sessions["carol"] for n in ("alice", "bob")]
        await logs["carol"].aclose()
        await rooms["carol"].aclose()
        await clients["carol"].aclose()
        for name in ("alice", "bob"):
            await logs[name].wait(
                lambda events: any(
                    isinstance(e, ParticipantLeft) and e.participant_id == "carol" for e in events
                )
            )
            assert set(rooms[name].sessions) == {"alice", "bob"} - {name}
            assert "carol" not in rooms[name].participants
        assert all(session.closed for session in carol_sessions)
        # alice and bob still talk
        rooms["alice"].send("still here")
        await logs["bob"].wait(
            lambda events: any(
                isinstance(e, RoomDataMessage) and e.data == "still here" for e in events
            )
        )
        for log in logs.values():
            await log.aclose()


async def test_no_task_left_after_the_room_closes(hub: SignalingHub) -> None:
    before = set(asyncio.all_tasks())
    async with member(hub, "alice") as (_, alice), member(hub, "bob") as (_, bob):
        await alice.publish(TestPatternTrack(SMALL))
        log = RoomLog(bob)
        await log.wait(lambda events: any(isinstance(e, TrackPublished) for e in events))
        await log.aclose()
    await asyncio.sleep(0.1)  # let cancelled aiortc internals finish
    left = [t.get_name() for t in asyncio.all_tasks() - before if not t.done()]
    assert [name for name in left if name.startswith(("peer-", "mesh-"))] == []


async def test_rejoining_peer_reconnects_to_everyone(hub: SignalingHub) -> None:
    async with member(hub, "alice") as (_, alice), member(hub, "bob") as (_, _bob):
        log = RoomLog(alice)
        await log.wait(lambda events: any(isinstance(e, ParticipantJoined) for e in events))
        async with member(hub, "carol") as (_, carol):
            await carol.publish(TestPatternTrack(SMALL))
            await log.wait(lambda events: len(log.of(TrackPublished)) == 1)
        await log.wait(lambda events: len(log.of(ParticipantLeft)) == 1)
        async with member(hub, "carol") as (_, carol):
            await carol.publish(TestPatternTrack(SMALL))
            await log.wait(lambda events: len(log.of(TrackPublished)) == 2)
            carol.send("back")
            await log.wait(
                lambda events: any(
                    isinstance(e, RoomDataMessage) and e.data == "back" for e in events
                )
            )
            assert set(alice.sessions) == {"bob", "carol"}
        await log.aclose()


def test_generation_from_session_field() -> None:
    assert generation_from_session("g12") == 12
    assert generation_from_session(None) == 0
    with pytest.raises(RemoteProtocolError):  # not a generation: dropped, not taken as 0
        generation_from_session("sfu-publish")


async def test_strategies_registry() -> None:
    strategy = server_strategy_for("mesh")
    assert strategy.topology is Topology.MESH
    await strategy.start_room("x")
    await strategy.stop_room("x")
    with pytest.raises(TopologyError):
        Topology.parse("p2p")


class RecordingStrategy:
    """A server strategy that records what the hub asked of it."""

    topology = Topology.SFU
    calls: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, hub: object = None) -> None:
        self.hub = hub

    async def start_room(self, room: str) -> None:
        self.calls.append(("start", room))

    async def stop_room(self, room: str) -> None:
        self.calls.append(("stop", room))


async def test_room_strategies_follow_the_rooms_of_a_hub() -> None:
    config = SignalingConfig(
        auth=OpenAuth(),
        rooms=[RoomConfig(name="mesh", topology="mesh"), RoomConfig(name="big", topology="sfu")],
        default_topology="sfu",
    )
    assert topology_of(config, "mesh") is Topology.MESH
    assert topology_of(config, "elsewhere") is Topology.SFU
    from rtckit.topology import base

    previous = base._SERVER[Topology.SFU]
    register_server_strategy("sfu", RecordingStrategy)
    try:
        async with SignalingHub(config) as hub, RoomStrategies(hub) as strategies:
            async with (
                SignalingClient.connect(MemoryTransport(hub), room="big"),
                SignalingClient.connect(MemoryTransport(hub), room="adhoc"),
            ):
                async with asyncio.timeout(5):
                    while len(RecordingStrategy.calls) < 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                assert isinstance(strategies.running["big"], RecordingStrategy)
            async with asyncio.timeout(5):  # "adhoc" was created on demand: it closes
                while ("stop", "adhoc") not in RecordingStrategy.calls:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        assert sorted(RecordingStrategy.calls) == [
            ("start", "adhoc"),
            ("start", "big"),
            ("stop", "adhoc"),
            ("stop", "big"),
        ]
    finally:
        base._SERVER[Topology.SFU] = previous


async def test_published_track_survives_a_session_replacement(hub: SignalingHub) -> None:
    """The relay-fed track keeps flowing after the session to a peer replaces its connection."""
    async with member(hub, "alice") as (_, alice), member(hub, "bob") as (_, bob):
        source = TestPatternTrack(SMALL)
        await alice.publish(source)
        log = RoomLog(bob)
        await log.wait(lambda events: len(log.of(TrackPublished)) == 1)
        async with asyncio.timeout(20):
            await log.of(TrackPublished)[0].track.recv()
        await alice.sessions["bob"].restart()
        await log.wait(lambda events: len(log.of(TrackPublished)) == 2)
        latest = log.of(TrackPublished)[-1]
        async with asyncio.timeout(20):
            frame = await latest.track.recv()
        assert read_frame_counter(frame) > 0
        assert source.readyState == "live"
        await log.aclose()
