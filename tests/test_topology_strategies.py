"""The rooms' server-side life cycle (:class:`~rtckit.topology.strategies.RoomStrategies`),
without the app: real signaling hub, real clients over in-memory transports, recording
strategies in place of the SFU and MCU (what they do is tested in their own files)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from rtckit.signaling import (
    MemoryTransport,
    OpenAuth,
    RoomConfig,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
)
from rtckit.topology import ServerStrategyFactory, Topology
from rtckit.topology.base import MCU_PEER_ID, SFU_PEER_ID
from rtckit.topology.strategies import RoomStrategies

TIMEOUT = 10


class Recorder:
    """The start/stop calls of every recording strategy, in order; stops can be held."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []  # (what, topology, room)
        self.release_stop = asyncio.Event()
        self.release_stop.set()
        self.busy = 0  # start/stop calls running right now
        self.overlaps = 0  # calls that began while another was running

    def factory(self, topology: Topology) -> ServerStrategyFactory:
        recorder = self

        class Recording:
            def __init__(self, hub: Any) -> None:
                self.hub = hub
                self.topology = topology

            async def _call(self, what: str, room: str) -> None:
                recorder.overlaps += recorder.busy > 0
                recorder.busy += 1
                try:
                    recorder.calls.append((f"{what}-begin", topology.value, room))
                    if what == "stop":
                        await recorder.release_stop.wait()
                    await asyncio.sleep(0.01)
                    recorder.calls.append((f"{what}-end", topology.value, room))
                finally:
                    recorder.busy -= 1

            async def start_room(self, room: str) -> None:
                await self._call("start", room)

            async def stop_room(self, room: str) -> None:
                await self._call("stop", room)

        return Recording

    def factories(self) -> dict[Topology | str, ServerStrategyFactory]:
        return {t: self.factory(t) for t in Topology}

    async def until(self, *call: str) -> None:
        async with asyncio.timeout(TIMEOUT):
            while call not in self.calls:  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.01)


def chosen(room: str, metadata: Mapping[str, Any] | None) -> str:
    del room
    wanted = (metadata or {}).get("topology")
    return wanted if isinstance(wanted, str) else "mesh"


async def settle(strategies: RoomStrategies) -> None:
    async with asyncio.timeout(TIMEOUT):
        while strategies.tasks:  # noqa: ASYNC110 - bounded by the timeout
            await asyncio.sleep(0.01)


async def test_a_room_gets_the_strategy_of_the_topology_its_creator_chose() -> None:
    """The room's topology is the hub's (its creator chose it), not the config's default."""
    recorder = Recorder()
    config = SignalingConfig(auth=OpenAuth(), default_topology="mesh", choose_topology=chosen)
    async with (
        SignalingHub(config) as hub,
        RoomStrategies(hub, factories=recorder.factories()) as strategies,
        SignalingClient.connect(MemoryTransport(hub), room="a", metadata={"topology": "sfu"}),
        SignalingClient.connect(MemoryTransport(hub), room="b", metadata={"topology": "mcu"}),
        SignalingClient.connect(MemoryTransport(hub), room="c"),
    ):
        await recorder.until("start-end", "sfu", "a")
        await recorder.until("start-end", "mcu", "b")
        await recorder.until("start-end", "mesh", "c")
        assert strategies.running["a"].topology is Topology.SFU
        assert strategies.topology_for("a") is Topology.SFU
        assert strategies.topology_for("b") is Topology.MCU


async def test_the_last_person_leaving_stops_the_strategy_of_a_declared_room() -> None:
    """A declared room outlives its people; its strategy does not: it stops with the last
    person and a new one starts with the next."""
    recorder = Recorder()
    config = SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="hall", topology="sfu")])
    async with (
        SignalingHub(config) as hub,
        RoomStrategies(hub, factories=recorder.factories()) as strategies,
    ):
        async with (
            SignalingClient.connect(MemoryTransport(hub), room="hall"),
            SignalingClient.connect(MemoryTransport(hub), room="hall"),
        ):
            await recorder.until("start-end", "sfu", "hall")
            first = strategies.running["hall"]
        await recorder.until("stop-end", "sfu", "hall")
        assert "hall" in hub.state.rooms()  # declared: still there
        assert "hall" not in strategies.running
        async with SignalingClient.connect(MemoryTransport(hub), room="hall"):
            await settle(strategies)
            assert strategies.running["hall"] is not first
        await settle(strategies)
    assert [what for what, _, _ in recorder.calls].count("start-begin") == 2
    assert [what for what, _, _ in recorder.calls].count("stop-end") == 2


async def test_server_peers_are_not_people() -> None:
    """The SFU's or MCU's own connection neither starts a room's strategy nor keeps it
    running once the people are gone."""
    recorder = Recorder()
    config = SignalingConfig(auth=OpenAuth(), default_topology="sfu")
    async with (
        SignalingHub(config) as hub,
        RoomStrategies(hub, factories=recorder.factories()) as strategies,
        SignalingClient.connect(MemoryTransport(hub, trusted=True), room="r", peer_id=SFU_PEER_ID),
        SignalingClient.connect(MemoryTransport(hub, trusted=True), room="r", peer_id=MCU_PEER_ID),
    ):
        await asyncio.sleep(0.1)
        assert recorder.calls == []
        assert strategies.running == {}
        async with SignalingClient.connect(MemoryTransport(hub), room="r"):
            await recorder.until("start-end", "sfu", "r")
            assert strategies.people("r") != []
        # the person left; the server peers are still in the room
        await recorder.until("stop-end", "sfu", "r")
        assert {p.id for p in hub.peers("r")} == {SFU_PEER_ID, MCU_PEER_ID}
        assert strategies.running == {}


async def test_start_and_stop_of_a_room_never_run_at_the_same_time() -> None:
    """Someone joins while the room's old strategy is still stopping: the new strategy
    starts only once the old one has stopped."""
    recorder = Recorder()
    config = SignalingConfig(auth=OpenAuth(), default_topology="mcu")
    async with (
        SignalingHub(config) as hub,
        RoomStrategies(hub, factories=recorder.factories()) as strategies,
    ):
        async with SignalingClient.connect(MemoryTransport(hub), room="r"):
            await recorder.until("start-end", "mcu", "r")
            recorder.release_stop.clear()  # the coming stop hangs until released
        await recorder.until("stop-begin", "mcu", "r")
        async with SignalingClient.connect(MemoryTransport(hub), room="r"):
            await asyncio.sleep(0.2)
            assert recorder.calls.count(("start-begin", "mcu", "r")) == 1
            recorder.release_stop.set()
            await settle(strategies)
        await settle(strategies)
    assert recorder.overlaps == 0
    assert [what for what, _, _ in recorder.calls] == [
        "start-begin",
        "start-end",
        "stop-begin",
        "stop-end",
        "start-begin",
        "start-end",
        "stop-begin",
        "stop-end",
    ]


async def test_closing_cancels_a_strategy_that_does_not_stop_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    config = SignalingConfig(auth=OpenAuth(), default_topology="sfu")
    async with SignalingHub(config) as hub:
        strategies = RoomStrategies(hub, factories=recorder.factories(), stop_timeout=0.2)
        async with SignalingClient.connect(MemoryTransport(hub), room="r"):
            await recorder.until("start-end", "sfu", "r")
            recorder.release_stop.clear()  # the stop hangs
            async with asyncio.timeout(TIMEOUT):
                await strategies.aclose()
        assert not strategies.tasks
        assert "did not stop in time" in caplog.text
        await strategies.aclose()  # idempotent
