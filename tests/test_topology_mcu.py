"""MCU rooms: the server joins through signaling, aiortc participants use ``join_room``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from rtckit.mcu.engine import McuConfig
from rtckit.mcu.video import CompositorConfig
from rtckit.signaling import (
    MemoryTransport,
    OpenAuth,
    RoomConfig,
    SignalingClient,
    SignalingConfig,
    SignalingHub,
)
from rtckit.topology import (
    ParticipantLeft,
    Room,
    RoomDataMessage,
    RoomEvent,
    Topology,
    TrackPublished,
    TrackUnpublished,
    join_room,
    server_strategy_for,
)
from rtckit.topology.mcu import (
    MCU_PEER_ID,
    McuRoom,
    McuRoomConfig,
    McuServerStrategy,
)
from rtckit.topology.strategies import RoomStrategies
from test_mcu_engine import COLOURS, TONES, ColourTrack, ToneTrack, shows, tone_magnitudes, wait_for
from test_topology_mesh import FAST

E = TypeVar("E")
SMALL_MCU = McuRoomConfig(
    engine=McuConfig(video=CompositorConfig(width=320, height=240, labels=False), fps=15.0),
    session=FAST,
)


def small_mcu(hub: Any) -> McuServerStrategy:
    return McuServerStrategy(hub, config=SMALL_MCU)


@contextlib.asynccontextmanager
async def server(*rooms: RoomConfig) -> AsyncIterator[tuple[SignalingHub, RoomStrategies]]:
    config = SignalingConfig(auth=OpenAuth(), rooms=list(rooms))
    async with (
        SignalingHub(config) as hub,
        RoomStrategies(hub, factories={Topology.MCU: small_mcu}) as strategies,
    ):
        yield hub, strategies


class Participant:
    """An application participant: publishes a colour and a tone, records what it gets."""

    def __init__(self, name: str, client: SignalingClient, room: Room) -> None:
        self.name = name
        self.client = client
        self.room = room
        self.events: list[RoomEvent] = []
        self.latest: np.ndarray | None = None
        self.video_frames = 0
        self.audio: list[np.ndarray] = []
        self.recording = False
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: set[Any] = set()
        self._watch = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for event in self.room.events():
            self.events.append(event)
            if isinstance(event, TrackPublished) and event.track not in self._seen:
                self._seen.add(event.track)
                self._tasks.append(asyncio.create_task(self._read(event.track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.video_frames += 1
                    self.latest = frame.to_ndarray(format="yuv420p")
                elif isinstance(frame, av.AudioFrame) and self.recording:
                    arr = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                    self.audio.append(arr.mean(axis=1))

    def of(self, cls: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, cls)]

    def published(self) -> list[TrackPublished]:
        return self.of(TrackPublished)

    def live(self) -> list[tuple[str, str]]:
        """(participant, kind) of the remote tracks received now (published, not unpublished)."""
        gone = {id(e.track) for e in self.of(TrackUnpublished)}
        return [(e.participant_id, e.kind) for e in self.published() if id(e.track) not in gone]

    async def aclose(self) -> None:
        for task in [self._watch, *self._tasks]:
            task.cancel()
        for task in [self._watch, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def participant(
    hub: SignalingHub, room: str, name: str, *, media: bool = True
) -> AsyncIterator[Participant]:
    transport = MemoryTransport(hub, trusted=True)  # readable peer ids
    async with (
        SignalingClient.connect(transport, room=room, peer_id=name, metadata={"name": name}) as c,
        join_room(c, session_config=FAST) as joined,
    ):
        p = Participant(name, c, joined)
        try:
            if media:
                await joined.publish(ColourTrack(COLOURS[name]))
                await joined.publish(ToneTrack(TONES[name]))
            yield p
        finally:
            await p.aclose()


def mcu_room(p: Participant) -> McuRoom:
    assert isinstance(p.room, McuRoom)
    return p.room


def test_mcu_strategies_are_registered() -> None:
    strategy = server_strategy_for("mcu", None)
    assert isinstance(strategy, McuServerStrategy)
    assert strategy.topology is Topology.MCU


async def test_mcu_room_grid_mix_minus_join_leave_and_data() -> None:
    async with (
        server(RoomConfig(name="mcu", topology="mcu")) as (hub, strategies),
        contextlib.AsyncExitStack() as stack,
    ):
        people = {
            name: await stack.enter_async_context(participant(hub, "mcu", name))
            for name in ("red", "green", "blue")
        }
        strategy = strategies.running["mcu"]
        assert isinstance(strategy, McuServerStrategy)

        def cell(name: str) -> tuple[int, int, int, int] | None:
            engine = strategy.engine
            return None if engine is None else engine.cell_of(name)

        def grid(p: Participant, names: tuple[str, ...]) -> bool:
            return all(shows(p.latest, cell(n), n) for n in names)

        three = ("red", "green", "blue")
        await wait_for(lambda: all(grid(p, three) for p in people.values()), "the 3-tile grid", 40)
        for p in people.values():
            assert isinstance(p.room, McuRoom)
            assert p.room.topology is Topology.MCU
            assert set(p.room.participants) == set(three) - {p.name}
            # exactly one video and one audio stream, from the MCU
            assert sorted(p.live()) == [(MCU_PEER_ID, "audio"), (MCU_PEER_ID, "video")]
            assert p.room.layout == three

        # mix-minus: each hears the two others, not itself
        for p in people.values():
            p.recording = True
        await wait_for(
            lambda: all(sum(a.size for a in p.audio) >= 48000 for p in people.values()),
            "one second of audio everywhere",
        )
        for p in people.values():
            p.recording = False
            mags = tone_magnitudes(np.concatenate(p.audio)[-48000:], {n: TONES[n] for n in three})
            others = [m for n, m in mags.items() if n != p.name]
            assert min(others) > 0
            # own tone at least 20 dB under the quietest other (measured: 25-40 dB; the speaker's
            # stream switching encoders under heavy load leaves a trace)
            assert mags[p.name] < 0.1 * min(others), (p.name, mags)

        # data messages: relayed with the original sender, broadcast and targeted
        people["red"].room.send("hello all")
        people["green"].room.send(b"\x01bytes", to="blue")

        def got(p: Participant, sender: str, data: str | bytes) -> bool:
            return any(e.participant_id == sender and e.data == data for e in p.of(RoomDataMessage))

        await wait_for(
            lambda: (
                got(people["green"], "red", "hello all")
                and got(people["blue"], "red", "hello all")
                and got(people["blue"], "green", b"\x01bytes")
            ),
            "the relayed data messages",
        )
        assert not got(people["red"], "red", "hello all")
        assert not got(people["red"], "green", b"\x01bytes")

        # join mid-call: yellow appears, the others' stream continues
        people["yellow"] = await stack.enter_async_context(participant(hub, "mcu", "yellow"))
        four = (*three, "yellow")
        await wait_for(lambda: all(grid(p, four) for p in people.values()), "the 4-tile grid", 40)
        assert mcu_room(people["red"]).layout == four
        # still the one composite and the one mix
        assert sorted(people["red"].live()) == [(MCU_PEER_ID, "audio"), (MCU_PEER_ID, "video")]

        # leave mid-call: green goes; red's stream continues with the new layout
        green = people.pop("green")
        await green.room.aclose()
        await green.client.aclose()
        before = people["red"].video_frames
        rest = ("red", "blue", "yellow")
        await wait_for(
            lambda: (
                cell("green") is None
                and all(grid(p, rest) for p in people.values())
                and people["red"].video_frames > before + 10
            ),
            "the layout without green",
            40,
        )
        await wait_for(
            lambda: any(e.participant_id == "green" for e in people["red"].of(ParticipantLeft)),
            "red to see green leave",
        )
        assert mcu_room(people["red"]).layout == rest
        assert sorted(people["red"].live()) == [(MCU_PEER_ID, "audio"), (MCU_PEER_ID, "video")]

    # the room emptied: the MCU left and its engine stopped
    assert strategy.engine is None
    assert strategy.client is None


async def test_engine_stops_when_the_room_empties_and_restarts_for_the_next() -> None:
    async with server(RoomConfig(name="mcu", topology="mcu")) as (hub, strategies):
        async with participant(hub, "mcu", "red") as red:
            strategy = strategies.running["mcu"]
            assert isinstance(strategy, McuServerStrategy)
            await wait_for(lambda: red.video_frames > 5, "the composite at red")
            first = strategy.engine
            assert first is not None
        await wait_for(lambda: strategy.engine is None, "the engine to stop")
        assert [p.id for p in hub.peers("mcu")] == []
        # a declared room outlives its participants: the MCU comes back with the next one
        # (RoomStrategies stopped the room's strategy with the last person, starts a new one)
        await wait_for(lambda: "mcu" not in strategies.running, "the strategy to stop")
        async with participant(hub, "mcu", "blue") as blue:
            await wait_for(lambda: "mcu" in strategies.running, "a strategy for blue")
            again = strategies.running["mcu"]
            assert isinstance(again, McuServerStrategy)
            assert again is not strategy

            def blue_shown() -> bool:
                engine = again.engine
                return engine is not None and shows(blue.latest, engine.cell_of("blue"), "blue")

            await wait_for(blue_shown, "blue in the grid")
            assert again.engine is not first
        await wait_for(lambda: again.engine is None, "the engine to stop again")
        assert strategy.engine is None


async def app(
    hub: SignalingHub, room: str, name: str, expect: int, finished: set[str]
) -> dict[str, Any]:
    """Application code that knows nothing about the topology.

    It stays in the room until every participant (*expect* others) has seen what it waits for
    (each adds its name to *finished*): leaving ends its media to the others, so a participant
    that left as soon as it was satisfied itself would leave the others short of its frames.
    """
    transport = MemoryTransport(hub, trusted=True)
    async with (
        SignalingClient.connect(transport, room=room, peer_id=name) as client,
        join_room(client, session_config=FAST) as joined,
    ):
        await joined.publish(ColourTrack(COLOURS[name]))
        await joined.publish(ToneTrack(TONES[name]))
        greeted: set[str] = set()
        frames: dict[str, int] = {}
        videos: list[str] = []
        audios: list[str] = []
        tasks: list[asyncio.Task[None]] = []

        async def count(sender: str, track: MediaStreamTrack) -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    if isinstance(await track.recv(), av.VideoFrame):
                        frames[sender] = frames.get(sender, 0) + 1

        async def follow() -> None:
            async for event in joined.events():
                if isinstance(event, TrackPublished):
                    (videos if event.kind == "video" else audios).append(event.participant_id)
                    if event.kind == "video":
                        tasks.append(asyncio.create_task(count(event.participant_id, event.track)))
                elif isinstance(event, RoomDataMessage):
                    greeted.add(event.participant_id)

        tasks.append(asyncio.create_task(follow()))
        try:
            async with asyncio.timeout(60):
                while len(finished) <= expect:
                    if (
                        len(greeted) == expect
                        and len(frames) == len(set(videos)) > 0
                        and min(frames.values()) > 3
                    ):
                        finished.add(name)
                    # repeated until everyone is done: others may not listen yet, and a
                    # connection replacement loses the messages in flight
                    joined.send(f"hello from {name}")
                    await asyncio.sleep(0.2)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {"topology": joined.topology, "greeted": greeted, "videos": videos, "audios": audios}


@pytest.mark.parametrize(
    "topology",
    [
        "mesh",
        "sfu",
        "mcu",
    ],
)
async def test_same_app_code_in_mesh_sfu_and_mcu_rooms(topology: str) -> None:
    async with server(RoomConfig(name="r", topology=topology)) as (hub, _strategies):
        names = ("red", "green", "blue")
        finished: set[str] = set()
        results = await asyncio.gather(*(app(hub, "r", n, len(names) - 1, finished) for n in names))
    for name, result in zip(names, results, strict=True):
        others = set(names) - {name}
        assert result["topology"] == topology
        assert result["greeted"] == others
        if topology in ("mesh", "sfu"):  # a track per other participant
            assert set(result["videos"]) == others
            assert set(result["audios"]) == others
        else:  # one composite and one mix, from the MCU
            assert set(result["videos"]) == {MCU_PEER_ID}
            assert set(result["audios"]) == {MCU_PEER_ID}
