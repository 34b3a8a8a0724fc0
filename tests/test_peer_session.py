"""PeerSession between real aiortc peers in this process (host candidates on this machine)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import attrs
import pytest
from aiortc import MediaStreamTrack

from rtckit.errors import ConfigurationError, PeerError
from rtckit.ice.candidates import CandidatePolicy
from rtckit.peer import (
    ConnectionReplaced,
    DataMessage,
    PeerEvent,
    PeerSession,
    SessionClosed,
    SessionConfig,
    StatsUpdated,
    TrackAdded,
    TrackRemoved,
)
from rtckit.peer.media import PatternConfig, TestPatternTrack, read_frame_counter
from rtckit.peer.signaller import Description, PeerCandidate, PeerMessage
from rtckit.testing import DirectSignaller, peer_pair

E = TypeVar("E")

FAST = SessionConfig(
    heartbeat_interval=0.2, disconnected_after=0.8, restart_after=1.0, dead_peer_timeout=20
)
SMALL = PatternConfig(width=160, height=120, fps=15)


class EventLog:
    """Collects a session's events in a background task (so nothing is missed)."""

    def __init__(self, session: PeerSession) -> None:
        self.session = session
        self.events: list[PeerEvent] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.session.events():
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def wait_for(self, cls: type[E], *, count: int = 1, within: float = 10) -> list[E]:
        async with asyncio.timeout(within), self._changed:
            while True:
                found: list[E] = [e for e in self.events if isinstance(e, cls)]
                if len(found) >= count:
                    return found
                await self._changed.wait()

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class SilentTrack(MediaStreamTrack):
    """A track that never produces a frame: negotiation only, no encoder load."""

    def __init__(self, kind: str = "video") -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Event().wait()


async def frames(track: MediaStreamTrack, count: int, within: float = 10) -> list[int]:
    """Receive *count* frames and return their drawn counters."""
    async with asyncio.timeout(within):
        return [read_frame_counter(await track.recv()) for _ in range(count)]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[PeerSession, PeerSession]]:
    async with peer_pair(FAST) as (a, b):
        yield a, b


async def test_data_and_video_flow(pair: tuple[PeerSession, PeerSession]) -> None:
    a, b = pair
    log_a, log_b = EventLog(a), EventLog(b)
    a.add_track(TestPatternTrack(SMALL))
    chat = a.create_data_channel("chat")
    await a.wait_connected()
    chat.send("hello")
    [added] = await log_b.wait_for(TrackAdded)
    assert added.kind == "video"
    counters = await frames(added.track, 5)
    assert counters == sorted(counters)
    [message] = await log_b.wait_for(DataMessage)
    assert message == DataMessage(label="chat", data="hello")
    b.send("chat", b"back")
    [reply] = await log_a.wait_for(DataMessage)
    assert reply.data == b"back"
    assert a.setup_time is not None
    stats = await b.stats()
    assert stats.packets_received > 0
    assert stats.candidate_pair is not None
    assert stats.candidate_pair.local_type == "host"
    await log_a.aclose()
    await log_b.aclose()


async def test_remove_track_renegotiates(pair: tuple[PeerSession, PeerSession]) -> None:
    a, b = pair
    log_b = EventLog(b)
    track = SilentTrack()
    a.add_track(track)
    [added] = await log_b.wait_for(TrackAdded)
    a.remove_track(track)
    [removed] = await log_b.wait_for(TrackRemoved)
    assert removed.track is added.track
    assert b.remote_tracks == ()
    with pytest.raises(PeerError):
        a.remove_track(track)
    await log_b.aclose()


async def test_glare_repeated_both_sides_renegotiate_at_once(
    pair: tuple[PeerSession, PeerSession],
) -> None:
    """Ten rounds: both sides add a track in the same instant; the call survives."""
    a, b = pair
    log_a, log_b = EventLog(a), EventLog(b)
    video = TestPatternTrack(SMALL)
    a.add_track(video)
    await a.wait_connected()
    [first] = await log_b.wait_for(TrackAdded)
    rounds = 10
    for i in range(1, rounds + 1):
        # odd rounds: same kind on both sides; even rounds: audio against video
        a.add_track(SilentTrack("video"))
        b.add_track(SilentTrack("video" if i % 2 else "audio"))
        await log_a.wait_for(TrackAdded, count=i)
        await log_b.wait_for(TrackAdded, count=i + 1)
    assert len(a.remote_tracks) == rounds
    assert len(b.remote_tracks) == rounds + 1
    with pytest.raises(PeerError):
        a.send("after-glare", "x")
    channel = b.create_data_channel("after-glare")
    channel.send("still alive")
    [message] = await log_a.wait_for(DataMessage)
    assert message.data == "still alive"
    counters = await frames(first.track, 3)
    assert counters[-1] > 0
    assert a.generation == b.generation == 0  # glare never needed a replacement
    await log_a.aclose()
    await log_b.aclose()


async def test_requested_restart_replaces_connection(
    pair: tuple[PeerSession, PeerSession],
) -> None:
    a, b = pair
    log_a, log_b = EventLog(a), EventLog(b)
    source = TestPatternTrack(SMALL)
    a.add_track(source)
    chat = a.create_data_channel("chat")
    [before] = await log_b.wait_for(TrackAdded)
    await frames(before.track, 2)
    old_pc = a.peer_connection
    await b.restart()  # the polite side asks; the impolite side offers the new connection
    [replaced] = await log_a.wait_for(ConnectionReplaced)
    assert replaced.reason == "remote"
    [_, after] = await log_b.wait_for(TrackAdded, count=2)
    assert after.generation == 1
    counters = await frames(after.track, 3)
    assert counters == sorted(counters)
    assert a.peer_connection is not old_pc
    await a.wait_connected()
    chat.send("same channel")  # the app's DataChannel object survives the replacement
    [message] = await log_b.wait_for(DataMessage)
    assert message.data == "same channel"
    assert b.recovery_time is not None
    assert source.readyState == "live"  # the application's track survives the replacement
    await log_a.aclose()
    await log_b.aclose()


async def test_cut_ice_transport_recovers(pair: tuple[PeerSession, PeerSession]) -> None:
    """Kill the impolite side's ICE transport: it restarts by itself and media resumes."""
    a, b = pair
    log_b = EventLog(b)
    a.add_track(TestPatternTrack(SMALL))
    [before] = await log_b.wait_for(TrackAdded)
    last = (await frames(before.track, 2))[-1]
    pc = a.peer_connection
    assert pc is not None
    cut = time.monotonic()
    await pc.getTransceivers()[0].receiver.transport.transport.stop()
    [_, after] = await log_b.wait_for(TrackAdded, count=2, within=15)
    counters = await frames(after.track, 2, within=15)
    recovered = time.monotonic() - cut
    assert counters[-1] > last
    assert a.generation == b.generation == 1
    print(f"ICE cut -> media again: {recovered:.3f} s")
    await log_b.aclose()


async def test_changes_after_the_remote_closed_are_skipped_quietly(
    pair: tuple[PeerSession, PeerSession], caplog: pytest.LogCaptureFixture
) -> None:
    """The remote side left: aiortc closes our connection by itself; a change queued for it
    afterwards (an SFU removing a departed publisher's track) is skipped, not an error."""
    a, b = pair
    log_b = EventLog(b)
    track = SilentTrack()
    a.add_track(track)
    await log_b.wait_for(TrackAdded)
    await a.wait_connected()
    pc = a.peer_connection
    assert pc is not None
    await b.close()  # DTLS close_notify: aiortc then closes a's connection
    async with asyncio.timeout(10):
        while pc.signalingState != "closed":  # noqa: ASYNC110 - bounded by the timeout
            await asyncio.sleep(0.02)
    caplog.set_level(logging.DEBUG, logger="rtckit.peer.session")
    a.remove_track(track)
    async with asyncio.timeout(5):
        while not any("remove_track" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    [record] = [r for r in caplog.records if "remove_track" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "skipped: the connection is closed" in record.getMessage()
    await log_b.aclose()


@pytest.mark.parametrize(("open_timeout", "replaced"), [(10.0, False), (0.5, True)])
async def test_silence_before_the_heartbeat_channel_opens(
    open_timeout: float, replaced: bool
) -> None:
    """A loaded machine: the loop stalls right after DTLS connects, before SCTP is set up.

    Heartbeats cannot flow before the heartbeat channel opens (seconds after ``connected`` on
    a busy machine), so that wait is not silence: the session used to replace such healthy
    new connections. A channel that does not open within ``heartbeat_open_timeout`` still is.
    """
    config = SessionConfig(
        heartbeat_interval=0.2,
        disconnected_after=1.0,
        restart_after=1.2,
        dead_peer_timeout=20,
        heartbeat_open_timeout=open_timeout,
    )
    async with peer_pair(config) as (a, b):
        log_a = EventLog(a)
        chat = a.create_data_channel("chat")
        pc = a.peer_connection
        assert pc is not None
        stalled: list[float] = []

        def stall() -> None:  # runs in aiortc's DTLS handshake, before the SCTP start
            if pc.connectionState == "connected" and not stalled:
                stalled.append(time.monotonic())
                time.sleep(2.0)  # blocks the event loop, as a busy machine does

        pc.on("connectionstatechange", stall)
        await a.wait_connected()
        if replaced:
            [replacement] = await log_a.wait_for(ConnectionReplaced, within=10)
            assert replacement.reason == "disconnected"
        else:
            chat.send("after the stall")  # the SCTP association works
            log_b = EventLog(b)
            [message] = await log_b.wait_for(DataMessage, within=10)
            assert message.data == "after the stall"
            await asyncio.sleep(3 * config.heartbeat_interval)  # a few heartbeats
            assert stalled
            assert a.replacements == b.replacements == 0
            assert a.state == b.state == "connected"
            await log_b.aclose()
        await log_a.aclose()


async def test_dead_peer_detected_and_cleaned_up() -> None:
    config = SessionConfig(
        heartbeat_interval=0.1, disconnected_after=0.4, restart_after=0.5, dead_peer_timeout=1.5
    )
    sig_a, sig_b = DirectSignaller(), DirectSignaller()
    a = PeerSession(sig_a, polite=False, config=config, name="a")
    b = PeerSession(sig_b, polite=True, config=config, name="b")
    sig_a.target, sig_b.target = b, a
    async with a, b:
        log_a = EventLog(a)
        await a.wait_connected()
        # b vanishes: no signaling, no packets (its ICE transport is gone without a goodbye)
        sig_a.connected = sig_b.connected = False
        pc = b.peer_connection
        assert pc is not None
        await pc.sctp.transport.transport.stop()  # type: ignore[union-attr]
        [closed] = await log_a.wait_for(SessionClosed, within=10)
        assert closed.reason == "peer-timeout"
        assert a.closed
        assert a.peer_connection is None
        await asyncio.sleep(0.05)  # the watchdog that closed the session returns
        assert [
            t
            for t in asyncio.all_tasks()
            if t.get_name().startswith("peer-") and t.get_name().endswith("-a") and not t.done()
        ] == []
        await log_a.aclose()


async def test_close_is_idempotent_and_leaves_no_task() -> None:
    before = set(asyncio.all_tasks())
    async with peer_pair(FAST) as (a, b):
        await a.wait_connected()
    await a.close()
    await b.close()
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert [t.get_name() for t in left if t.get_name().startswith("peer-")] == []
    with pytest.raises(PeerError):
        a.add_track(SilentTrack())


def test_config_is_validated() -> None:
    with pytest.raises(ConfigurationError):
        SessionConfig(heartbeat_interval=0)
    assert SessionConfig().rtc_configuration().iceServers == []


async def test_periodic_stats_and_quality_events() -> None:
    config = SessionConfig(stats_interval=0.2)
    async with peer_pair(config) as (a, b):
        log = EventLog(b)
        a.add_track(TestPatternTrack(SMALL))
        [snapshot] = (await log.wait_for(StatsUpdated, count=1))[:1]
        assert snapshot.stats.timestamp > 0
        await log.wait_for(TrackAdded)
        updates = await log.wait_for(StatsUpdated, count=8)
        assert updates[-1].stats.packets_received > 0
        assert updates[-1].stats.inbound_streams == 1
        await log.aclose()


class InjectingSignaller(DirectSignaller):
    """Adds one extra host candidate line to every description it delivers."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.line = f"a=candidate:9 1 udp 2130706431 {address} 9 typ host"

    async def send(self, message: PeerMessage) -> None:
        if isinstance(message, Description):
            sdp = message.sdp.replace("a=end-of-candidates", self.line + "\r\na=end-of-candidates")
            message = attrs.evolve(message, sdp=sdp)
        await super().send(message)


@pytest.mark.parametrize(
    ("address", "policy", "kept"),
    [
        ("127.0.0.1", CandidatePolicy(), False),
        ("169.254.169.254", CandidatePolicy(allow_link_local=True), False),
        ("127.0.0.1", CandidatePolicy(allow_loopback=True), True),
    ],
)
async def test_remote_candidates_follow_the_candidate_policy(
    address: str, policy: CandidatePolicy, *, kept: bool
) -> None:
    """A remote peer cannot make a session probe loopback or cloud metadata."""
    config = attrs.evolve(FAST, candidate_policy=policy)
    sig_a, sig_b = InjectingSignaller(address), DirectSignaller()
    a = PeerSession(sig_a, polite=False, config=config, name="a")
    b = PeerSession(sig_b, polite=True, config=config, name="b")
    sig_a.target, sig_b.target = b, a
    async with a, b:
        a.create_data_channel("chat")
        await a.wait_connected()
        await b.wait_connected()
        pc = b.peer_connection
        assert pc is not None
        assert pc.sctp is not None
        remote = {(c.ip, c.port) for c in pc.sctp.transport.transport.getRemoteCandidates()}
        assert remote, "a's own candidates arrive"
        assert ((address, 9) in remote) is kept


async def test_bad_remote_descriptions_and_candidates_cost_one_line_each(
    pair: tuple[PeerSession, PeerSession], caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage SDP and candidates from the remote side: a warning line each, no traceback,
    and the session still negotiates afterwards."""
    a, b = pair
    a.create_data_channel("chat")
    await a.wait_connected()
    await b.wait_connected()
    caplog.set_level(logging.DEBUG, logger="rtckit")
    generation = a.generation
    garbage = ["garbage", "v=0\r\n", "\x00" * 50, "v=0\r\nm=audio 9 RTP/AVP 0\r\n" * 50]
    for sdp in garbage:
        await a.receive(Description(type="offer", sdp=sdp, generation=generation))
        await a.receive(Description(type="answer", sdp=sdp, generation=generation))
        await a.receive(PeerCandidate(candidate=sdp, generation=generation))
    log_b = EventLog(b)
    a.add_track(SilentTrack())  # negotiation still works
    await log_b.wait_for(TrackAdded)
    assert a.generation == generation
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [r.getMessage() for r in loud]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    failed_offers = [w for w in warnings if "remote offer" in w and "NegotiationError" in w]
    assert len(failed_offers) == len(garbage), warnings
    assert all("\n" not in w and len(w) < 400 for w in warnings), warnings
    await log_b.aclose()


async def test_remote_candidates_before_a_description_are_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Candidates wait for the remote description, but not without bound."""
    session = PeerSession(DirectSignaller(), polite=True, config=FAST, name="lone")
    async with session:
        line = "candidate:1 1 udp 2130706431 192.0.2.1 {port} typ host"
        for port in range(1000, 6000):
            await session.receive(PeerCandidate(candidate=line.format(port=port)))
        async with asyncio.timeout(10):
            while session._ops.qsize():  # noqa: ASYNC110 - the worker drains the queue
                await asyncio.sleep(0.02)
        assert len(session._pending_candidates) <= 201
    dropping = [r for r in caplog.records if "dropping the rest" in r.getMessage()]
    assert len(dropping) == 1


async def test_an_offer_that_cannot_be_answered_replaces_the_connection(
    pair: tuple[PeerSession, PeerSession], caplog: pytest.LogCaptureFixture
) -> None:
    """aiortc applies an offer with an m-line kind it does not know, then cannot answer it
    (and cannot roll a remote offer back): the connection is replaced, not left waiting in
    have-remote-offer with every later change stuck."""
    a, b = pair
    a.create_data_channel("chat")
    await a.wait_connected()
    await b.wait_connected()
    log_a, log_b = EventLog(a), EventLog(b)
    async with asyncio.timeout(10):
        while a.peer_connection is None or a.peer_connection.signalingState != "stable":  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    pc_b = b.peer_connection
    assert pc_b is not None
    offer = (await pc_b.createOffer()).sdp + (
        "m=text 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:7\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 00\r\na=setup:actpass\r\n"
    )
    caplog.set_level(logging.DEBUG, logger="rtckit")
    await a.receive(Description(type="offer", sdp=offer, generation=a.generation))
    [replaced] = await log_a.wait_for(ConnectionReplaced, within=20)
    assert replaced.reason == "bad-offer"
    a.add_track(SilentTrack())  # the new connection negotiates
    await log_b.wait_for(TrackAdded, within=20)
    await a.wait_connected(timeout=20)
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [r.getMessage() for r in loud]
    await log_a.aclose()
    await log_b.aclose()
