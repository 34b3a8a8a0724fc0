"""SFU rooms of real aiortc participants over rtckit signaling on loopback WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest

from rtckit.errors import TopologyError
from rtckit.peer import SessionConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack, ToneTrack, read_frame_counter
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig
from rtckit.signaling.wsserver import SignalingServer
from rtckit.topology import (
    ParticipantJoined,
    ParticipantLeft,
    Room,
    RoomDataMessage,
    RoomEvent,
    Topology,
    TrackPublished,
    TrackUnpublished,
    VideoLayerChanged,
    join_room,
)
from rtckit.topology.base import VIDEO_OFF
from rtckit.topology.bridge import open_envelope, seal_envelope
from rtckit.topology.sfu import (
    SFU_PEER_ID,
    SfuRoom,
    SfuServerStrategy,
    participant_of_msid,
    sfu_strategy_factory,
)
from rtckit.topology.strategies import RoomStrategies

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


class Server:
    """A signaling server on loopback with SFU room strategies and a forwarded counter."""

    def __init__(self) -> None:
        self.forwarded = 0
        config = SignalingConfig(
            auth=OpenAuth(),
            rooms=[
                RoomConfig(name="mesh", topology="mesh"),
                RoomConfig(name="sfu", topology="sfu"),
            ],
            default_topology="sfu",
        )
        self.server = SignalingServer(config)
        self.strategies: RoomStrategies | None = None

    def count(self, packets: int) -> None:
        self.forwarded += packets

    def sfu(self, room: str = "sfu") -> SfuServerStrategy:
        assert self.strategies is not None
        strategy = self.strategies.running[room]
        assert isinstance(strategy, SfuServerStrategy)
        return strategy


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    async with srv.server:
        await srv.server.listen("127.0.0.1", 0)
        factory = sfu_strategy_factory(session_config=FAST, on_forwarded=srv.count)
        async with RoomStrategies(srv.server.hub, factories={"sfu": factory}) as strategies:
            srv.strategies = strategies
            yield srv


@contextlib.asynccontextmanager
async def member(server: Server, room: str = "sfu") -> AsyncIterator[tuple[SignalingClient, Room]]:
    async with (
        SignalingClient.connect(server.server.url, room=room) as client,
        join_room(client, session_config=FAST) as joined,
    ):
        yield client, joined


async def first_frame(track: Any, within: float = 20) -> Any:
    async with asyncio.timeout(within):
        return await track.recv()


def test_envelopes_and_msid() -> None:
    assert open_envelope(seal_envelope("ab", "hi\x00there")) == ("ab", "hi\x00there")
    assert open_envelope(seal_envelope("", b"\x00\x01")) == ("", b"\x00\x01")
    assert open_envelope("no envelope") is None
    assert participant_of_msid("stream 3f2a~12") == "3f2a"
    assert participant_of_msid("stream a~b~7") == "a~b"
    assert participant_of_msid("stream random-uuid") is None
    assert participant_of_msid(None) is None


async def app(room: Room, name: str, others: int) -> dict[str, Any]:
    """The application: the SAME function runs in a mesh room and in an SFU room."""
    await room.publish(TestPatternTrack(SMALL))
    tracks: dict[str, Any] = {}
    messages: dict[str, str | bytes] = {}
    joined: set[str] = set()
    sent = False
    async with asyncio.timeout(30):
        async for event in room.events():
            if isinstance(event, ParticipantJoined):
                joined.add(event.participant_id)
            elif isinstance(event, TrackPublished):
                tracks[event.participant_id] = event.track
            elif isinstance(event, RoomDataMessage):
                messages[event.participant_id] = event.data
            if len(joined) == others and not sent:
                await asyncio.sleep(0.5)  # everyone's room channel is being set up
                room.send(f"hello from {name}")
                sent = True
            if len(tracks) == others and len(messages) == others:
                break
    frames = {pid: await first_frame(track) for pid, track in tracks.items()}
    return {"joined": joined, "messages": messages, "frames": frames}


@pytest.mark.parametrize("topology", ["mesh", "sfu"])
async def test_same_app_code_in_mesh_and_sfu_rooms(server: Server, topology: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        rooms = [(await stack.enter_async_context(member(server, topology)))[1] for _ in range(3)]
        assert all(room.topology is Topology(topology) for room in rooms)
        results = await asyncio.gather(*(app(room, f"p{i}", 2) for i, room in enumerate(rooms)))
        ids = [room.local_id for room in rooms]
        for room, result in zip(rooms, results, strict=True):
            others = set(ids) - {room.local_id}
            assert result["joined"] == others
            assert SFU_PEER_ID not in room.participants
            assert set(result["messages"]) == others
            assert set(result["frames"]) == others
            for frame in result["frames"].values():
                assert frame.width == SMALL.width
                assert read_frame_counter(frame) >= 0
        if topology == "sfu":
            assert all(isinstance(room, SfuRoom) for room in rooms)
            stats = server.sfu().stats()
            assert stats is not None
            assert stats.publications == 3
            assert stats.subscriptions == 6
            assert stats.packets_out > 0
            assert stats.decoders_created == 0
            assert stats.encoders_created == 0
            assert stats.decoders_running == 0
            assert stats.encoders_running == 0
            assert server.sfu().data_messages_relayed >= 6


@pytest.mark.parametrize("topology", ["mesh", "sfu"])
async def test_a_message_to_an_unknown_participant_is_a_topology_error(
    server: Server, topology: str
) -> None:
    """Every topology answers the same: a TopologyError naming who is unknown."""
    async with member(server, topology) as (_, alice), member(server, topology) as (_, bob):
        async with asyncio.timeout(10):
            while bob.local_id not in alice.participants:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        alice.send("hello", to=bob.local_id)  # a participant: fine
        with pytest.raises(TopologyError, match="unknown participant 'nobody'"):
            alice.send("hello", to="nobody")


async def test_leave_ends_tracks_and_publisher_comes_back(server: Server) -> None:
    async with member(server) as (_, alice), member(server) as (_, bob):
        logs = {"alice": RoomLog(alice), "bob": RoomLog(bob)}
        await alice.publish(TestPatternTrack(SMALL))
        await bob.publish(TestPatternTrack(SMALL))
        async with member(server) as (_, carol):
            await carol.publish(TestPatternTrack(SMALL))
            carol_id = carol.local_id
            for log in logs.values():
                await log.wait(
                    lambda events: any(
                        isinstance(e, TrackPublished) and e.participant_id == carol_id
                        for e in events
                    )
                )
            carol_tracks = [
                e.track
                for log in logs.values()
                for e in log.of(TrackPublished)
                if e.participant_id == carol_id
            ]
            for track in carol_tracks:
                await first_frame(track)
        # carol left: participant-left, her tracks end, nothing is forwarded from her
        for log in logs.values():
            await log.wait(
                lambda events: any(
                    isinstance(e, ParticipantLeft) and e.participant_id == carol_id for e in events
                )
            )
            assert any(
                isinstance(e, TrackUnpublished) and e.participant_id == carol_id for e in log.events
            )
        for track in carol_tracks:
            assert track.readyState == "ended"
        sfu = server.sfu()
        assert sfu.router is not None
        assert all(key.participant != carol_id for key in sfu.router.publications)
        assert all(
            sub.key.participant != carol_id and sub.subscriber != carol_id
            for sub in sfu.router.subscriptions()
        )
        # alice and bob still receive each other
        bob_id = bob.local_id
        alice_from_bob = [
            e.track for e in logs["alice"].of(TrackPublished) if e.participant_id == bob_id
        ]
        await first_frame(alice_from_bob[-1])

        # carol comes back (a new participant): the others get her new track and decode it
        async with member(server) as (_, carol2):
            await carol2.publish(TestPatternTrack(SMALL))
            new_id = carol2.local_id
            for log in logs.values():
                await log.wait(
                    lambda events: any(
                        isinstance(e, TrackPublished) and e.participant_id == new_id for e in events
                    )
                )
                track = next(e.track for e in log.of(TrackPublished) if e.participant_id == new_id)
                frame = await first_frame(track)
                assert frame.width == SMALL.width
            stats = sfu.stats()
            assert stats is not None
            assert stats.decoders_created == 0
            assert stats.encoders_created == 0
        for log in logs.values():
            await log.aclose()
    # everyone left: the room's SFU stops, and reports what it forwarded
    assert server.strategies is not None
    async with asyncio.timeout(10):
        while "sfu" in server.strategies.running or server.strategies.tasks:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert server.forwarded > 0


async def test_on_demand_room_closes_when_everyone_left(server: Server) -> None:
    async with member(server, "adhoc") as (_, alice):
        assert alice.topology is Topology.SFU
        assert isinstance(server.sfu("adhoc"), SfuServerStrategy)
    async with asyncio.timeout(10):
        while "adhoc" in server.server.hub.state.rooms() or (  # noqa: ASYNC110
            server.strategies is not None and "adhoc" in server.strategies.running
        ):
            await asyncio.sleep(0.05)


async def test_unpublish_and_publish_again_reuses_the_m_line(server: Server) -> None:
    async with (
        member(server) as (_, alice),
        member(server) as (_, bob),
        member(server) as (
            _,
            carol,
        ),
    ):
        log = RoomLog(bob)
        carol_log = RoomLog(carol)
        first = TestPatternTrack(SMALL)
        await alice.publish(first)
        await log.wait(lambda events: len(log.of(TrackPublished)) == 1)
        track = log.of(TrackPublished)[0].track
        await first_frame(track)
        router = server.sfu().router
        assert router is not None
        (to_bob,) = router.subscriptions(bob.local_id)
        rewriter = to_bob.rewriter
        assert rewriter is not None
        sent_before = rewriter.last_sequence_number
        assert sent_before is not None
        await alice.unpublish(first)
        await log.wait(lambda events: len(log.of(TrackUnpublished)) == 1)
        assert log.of(TrackUnpublished)[0].participant_id == alice.local_id
        assert track.readyState == "ended"
        # publish again: the server reuses the idle m-line and sender towards bob; the
        # forwarded stream continues (SRTP would drop a sequence going back) and decodes
        other_size = PatternConfig(width=176, height=144, fps=10)
        await alice.publish(TestPatternTrack(other_size))
        await log.wait(lambda events: len(log.of(TrackPublished)) == 2)
        again = log.of(TrackPublished)[1]
        assert again.participant_id == alice.local_id
        async with asyncio.timeout(20):  # frames of the new source (its own size) decode
            while (await again.track.recv()).width != other_size.width:
                pass
        assert isinstance(bob, SfuRoom)
        assert bob.session is not None
        pc = bob.session.peer_connection
        assert pc is not None
        assert [t.kind for t in pc.getTransceivers()] == ["video"]  # one m-line, reused
        (to_bob_again,) = router.subscriptions(bob.local_id)
        assert to_bob_again is not to_bob
        assert to_bob_again.rewriter is rewriter  # the same outgoing stream continues
        last = rewriter.last_sequence_number
        assert last is not None
        assert (last - sent_before) % 65536 < 30000  # went forward, not back to the start
        stats = server.sfu().stats()
        assert stats is not None
        assert stats.decoders_created == 0
        assert stats.encoders_created == 0
        # a message to one participant reaches only them
        await asyncio.sleep(0.5)
        alice.send("just for bob", to=bob.local_id)
        alice.send(b"\x00\x01 for all")
        await log.wait(
            lambda events: (
                {e.data for e in log.of(RoomDataMessage)} == {"just for bob", b"\x00\x01 for all"}
            )
        )
        await carol_log.wait(
            lambda events: any(e.data == b"\x00\x01 for all" for e in carol_log.of(RoomDataMessage))
        )
        assert all(e.data != "just for bob" for e in carol_log.of(RoomDataMessage))
        assert all(e.participant_id == alice.local_id for e in log.of(RoomDataMessage))
        await log.aclose()
        await carol_log.aclose()


async def test_a_lost_packet_is_repaired_at_a_subscriber_of_two_videos(server: Server) -> None:
    """One packet lost towards a participant receiving two videos is repaired by RTX at once.

    Both forwarded videos share the RTX payload type on the participant's connection; aiortc's
    own RTP router dropped every retransmission then, and the video froze until aiortc's
    512-packet jitter buffer gave up and asked for a keyframe (tens of seconds at 10 fps).
    """
    async with (
        member(server) as (_, alice),
        member(server) as (_, bob),
        member(server) as (_, carol),
    ):
        log = RoomLog(carol)
        await alice.publish(TestPatternTrack(SMALL))
        await bob.publish(TestPatternTrack(SMALL))
        await log.wait(lambda events: len(log.of(TrackPublished)) == 2)
        tracks = {e.participant_id: e.track for e in log.of(TrackPublished)}
        arrivals: dict[str, list[int]] = {alice.local_id: [], bob.local_id: []}

        async def read(track: Any, frames: list[int]) -> None:
            with contextlib.suppress(Exception):
                while True:
                    frames.append(read_frame_counter(await track.recv()))

        readers = [asyncio.create_task(read(tracks[p], arrivals[p])) for p in arrivals]
        try:
            async with asyncio.timeout(20):
                while min(len(frames) for frames in arrivals.values()) < 5:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            router = server.sfu().router
            assert router is not None
            (to_carol,) = [
                s for s in router.subscriptions(carol.local_id) if s.key.participant == bob.local_id
            ]
            rewriter = to_carol.rewriter
            assert rewriter is not None
            media_pts = set(rewriter.params.payload_types.values())
            dropped: list[int] = []

            def keep(data: bytes) -> bool:
                if dropped or 192 <= data[1] <= 223 or (data[1] & 0x7F) not in media_pts:
                    return True  # RTCP, RTX, or the chosen packet was dropped already
                dropped.append(int.from_bytes(data[2:4], "big"))
                return False

            stats = router.stats()
            to_carol.set_send_filter(keep)
            bob_frames = arrivals[bob.local_id]
            async with asyncio.timeout(5):
                while not dropped:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            seen = len(bob_frames)
            # repaired at once: ten more frames (1 s at 10 fps) within 4 s
            async with asyncio.timeout(4):
                while len(bob_frames) < seen + 10:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            after = router.stats()
            assert after.nacks_answered > stats.nacks_answered
            assert bob_frames[-1] - bob_frames[seen - 1] >= 10
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await log.aclose()


async def test_a_video_asked_off_is_paused_and_resumes_at_a_keyframe(server: Server) -> None:
    async with member(server) as (alice_client, alice), member(server) as (_, bob):
        assert isinstance(bob, SfuRoom)
        bob_log = RoomLog(bob)
        await alice.publish(TestPatternTrack(SMALL))
        await alice.publish(ToneTrack())
        alice_id = alice.local_id

        def published(kind: str) -> list[Any]:
            return [
                e.track
                for e in bob_log.of(TrackPublished)
                if e.participant_id == alice_id and e.kind == kind
            ]

        await bob_log.wait(lambda _: published("video") and published("audio"))
        (track,) = published("video")
        await first_frame(track)
        sfu = server.sfu()
        assert sfu.router is not None
        (sub,) = [
            s
            for s in sfu.router.subscriptions(bob.local_id)
            if s.key.participant == alice_id and s.transceiver.kind == "video"
        ]
        (audio,) = [
            s
            for s in sfu.router.subscriptions(bob.local_id)
            if s.key.participant == alice_id and s.transceiver.kind == "audio"
        ]
        assert sub.rewriter is not None

        def layer_reports() -> list[VideoLayerChanged]:
            return bob_log.of(VideoLayerChanged)

        # what bob receives is reported to him on the room channel (no simulcast: no layer),
        # as an event, not as a data message
        await bob_log.wait(lambda _: len(layer_reports()) == 1)
        report = VideoLayerChanged(participant_id=alice_id, layer=None, layers=(), paused=False)
        assert layer_reports() == [report]
        assert bob.video_layers == {alice_id: report}
        assert not [e for e in bob_log.of(RoomDataMessage) if e.participant_id == SFU_PEER_ID]

        with pytest.raises(TopologyError, match="low, medium, high, off"):
            bob.set_video_quality(alice_id, "hidden")
        bob.set_video_quality(alice_id, VIDEO_OFF)
        async with asyncio.timeout(10):
            while not sub.paused:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await bob_log.wait(lambda _: len(layer_reports()) == 2)
        assert layer_reports()[1].paused
        await asyncio.sleep(0.3)  # a packet on its way when the pause came
        sent = sub.rewriter.packets_sent
        await asyncio.sleep(1.0)  # 10 frames of the pattern at 10 fps
        assert sub.rewriter.packets_sent == sent
        assert not audio.paused  # the audio plays on

        stats = sfu.stats()
        assert stats is not None
        keyframes = stats.keyframes_in
        bob.set_video_quality(alice_id, "high")
        async with asyncio.timeout(10):
            while sub.rewriter.packets_sent <= sent + 20:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        frame = await first_frame(track)
        assert frame.width == SMALL.width
        stats = sfu.stats()
        assert stats is not None
        assert stats.keyframes_in > keyframes  # resumed at a keyframe asked for it
        await bob_log.wait(lambda _: len(layer_reports()) == 3)
        assert not layer_reports()[2].paused
        # alice leaves: what bob was told of her video goes with her
        await alice_client.aclose()
        await bob_log.wait(
            lambda events: any(
                isinstance(e, ParticipantLeft) and e.participant_id == alice_id for e in events
            )
        )
        assert bob.video_layers == {}
        await bob_log.aclose()
