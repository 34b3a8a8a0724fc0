"""rtckit against an independent WebRTC stack: GStreamer's webrtcbin, whose certificate is RSA.

webrtcbin runs in a child process under Debian's Python (see rtckit.testing._webrtcbin) and
sends a VP8 test pattern or receives one. Host candidates only, no STUN/TURN server: nothing
leaves the machine. aiortc alone offers only ECDHE-ECDSA suites, so every case where aiortc is
the DTLS client failed with "no shared cipher" before rtckit._aiortc.widen_dtls_ciphers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from rtckit.peer import PeerSession, SessionConfig
from rtckit.peer.events import TrackAdded
from rtckit.peer.media import PatternConfig, TestPatternTrack
from rtckit.peer.signaller import Description, PeerMessage
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig
from rtckit.signaling import protocol as sp
from rtckit.signaling.wsserver import SignalingServer
from rtckit.testing._webrtcbin import WebrtcbinPeer, require_webrtcbin
from rtckit.topology import TrackPublished, join_room
from rtckit.topology.bridge import SignalingSignaller, peer_message_from_signaling
from rtckit.topology.sfu import SFU_PEER_ID, SfuServerStrategy, sfu_strategy_factory
from rtckit.topology.strategies import RoomStrategies

SESSION = SessionConfig(heartbeat_interval=0.5, disconnected_after=5.0, restart_after=8.0)
CONNECT_WITHIN = 30.0
COUNT_FOR = 4.0
MIN_FRAMES = 30  # of about 120 sent in COUNT_FOR seconds at 30 fps; far above a stall


@pytest.fixture(autouse=True)
def _webrtcbin() -> None:
    require_webrtcbin()


def _setup(sdp: str) -> set[str]:
    return set(re.findall(r"^a=setup:(\w+)", sdp, re.MULTILINE))


def _assert_rsa_and_fingerprint(peer: WebrtcbinPeer) -> None:
    """webrtcbin's own certificate is RSA, and it is the one its SDP announced."""
    report = peer.report("dtls")
    assert report is not None
    certificate = x509.load_pem_x509_certificate(report["certificate"].encode())
    assert isinstance(certificate.public_key(), rsa.RSAPublicKey)
    der = base64.b64decode("".join(report["certificate"].strip().splitlines()[1:-1]))
    digest = hashlib.sha256(der).hexdigest().upper()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    assert any(f"a=fingerprint:sha-256 {fingerprint}" in d["sdp"] for d in peer.descriptions)


async def _pump(peer: WebrtcbinPeer, session: PeerSession) -> None:
    async for message in peer.messages():
        await session.receive(message)


class Recorder:
    """A signaller to webrtcbin that keeps what the session sent."""

    def __init__(self, peer: WebrtcbinPeer) -> None:
        self.peer = peer
        self.sent: list[PeerMessage] = []

    @property
    def connected(self) -> bool:
        return self.peer.connected

    async def send(self, message: PeerMessage) -> None:
        self.sent.append(message)
        await self.peer.send(message)

    def answer_setup(self) -> set[str]:
        answers = [m for m in self.sent if isinstance(m, Description) and m.type == "answer"]
        assert answers
        return _setup(answers[0].sdp)


@contextlib.asynccontextmanager
async def _session_with(
    peer: WebrtcbinPeer, *, polite: bool
) -> AsyncIterator[tuple[PeerSession, Recorder]]:
    recorder = Recorder(peer)
    session = PeerSession(recorder, polite=polite, config=SESSION, name="rtckit")
    pump = asyncio.create_task(_pump(peer, session))
    try:
        async with session:
            yield session, recorder
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def _wait_connected(session: PeerSession, peer: WebrtcbinPeer) -> None:
    """Wait for the session to connect; fail at once, with its reason, if webrtcbin fails."""
    connected = asyncio.create_task(session.wait_connected(CONNECT_WITHIN))
    failed = asyncio.create_task(peer.wait_for(lambda _: False, CONNECT_WITHIN + 1))
    done, pending = await asyncio.wait({connected, failed}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()


async def _count_frames(track: Any, seconds: float) -> int:
    frames = 0
    deadline = time.monotonic() + seconds
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while time.monotonic() < deadline:
                await track.recv()
                frames += 1
    return frames


async def _remote_video(session: PeerSession) -> Any:
    async with asyncio.timeout(CONNECT_WITHIN):
        async for event in session.events():
            if isinstance(event, TrackAdded) and event.kind == "video":
                return event.track
    raise AssertionError("the session ended without a video track")


@pytest.mark.parametrize("keep_dtls_role", [True, False], ids=["kept-roles", "webrtcbin-roles"])
async def test_webrtcbin_offers_and_an_rtckit_session_answers(keep_dtls_role: bool) -> None:
    """webrtcbin offers ``actpass``, sending video; an rtckit session answers ``active``.

    kept-roles (webrtcbin's answers keep the roles of the first exchange): aiortc stays the
    DTLS client; without widen_dtls_ciphers webrtcbin's DTLS server finds no shared cipher
    and the session never connects. webrtcbin-roles: the
    session re-offers at once (its own changes) and webrtcbin 1.22 answers that ``active``
    although it is the server, so the roles may flip before the handshake; it connects
    either way.
    """
    async with (
        WebrtcbinPeer(
            role="offer", send_video=True, heartbeat=True, keep_dtls_role=keep_dtls_role
        ) as peer,
        _session_with(peer, polite=True) as (session, recorder),
    ):
        await _wait_connected(session, peer)
        track = await _remote_video(session)
        frames = await _count_frames(track, COUNT_FOR)
        await peer.wait_for(lambda _: peer.report("dtls"), CONNECT_WITHIN)
        assert _setup(peer.descriptions[0]["sdp"]) == {"actpass"}
        assert recorder.answer_setup() == {"active"}
        if keep_dtls_role:
            assert peer.report("dtls")["client"] is False  # type: ignore[index]
        _assert_rsa_and_fingerprint(peer)
        assert frames >= MIN_FRAMES, f"{frames} frames in {COUNT_FOR} s"
        assert session.state == "connected"


@pytest.mark.parametrize(
    ("answer_setup", "webrtcbin_client"),
    [("passive", False), (None, True)],
    ids=["passive", "active"],
)
async def test_an_rtckit_session_offers_and_webrtcbin_answers(
    answer_setup: str | None, webrtcbin_client: bool
) -> None:
    """rtckit offers ``actpass``; webrtcbin answers ``passive`` (aiortc is the DTLS client:
    failed before the fix) or ``active`` as it does by itself (aiortc is the server, with its
    ECDSA certificate, which worked already). The video goes from rtckit to webrtcbin, which
    decodes it.
    """
    async with (
        WebrtcbinPeer(
            role="answer", heartbeat=True, answer_setup=answer_setup, keep_dtls_role=True
        ) as peer,
        _session_with(peer, polite=False) as (session, _),
    ):
        session.add_track(TestPatternTrack(PatternConfig(width=320, height=240, fps=30)))
        await _wait_connected(session, peer)
        await peer.wait_for(lambda _: peer.frames >= 1, CONNECT_WITHIN)
        start = peer.frames
        await asyncio.sleep(COUNT_FOR)
        frames = peer.frames - start
        report = peer.report("dtls")
        assert report is not None
        assert report["client"] is webrtcbin_client
        assert _setup(peer.descriptions[0]["sdp"]) == {answer_setup or "active"}
        _assert_rsa_and_fingerprint(peer)
        assert frames >= MIN_FRAMES, f"{frames} frames in {COUNT_FOR} s"
        assert session.state == "connected"


@pytest.fixture
async def sfu_server() -> AsyncIterator[SignalingServer]:
    """A signaling server on loopback whose room ``sfu`` runs the SFU strategy."""
    config = SignalingConfig(
        auth=OpenAuth(), rooms=[RoomConfig(name="sfu", topology="sfu")], default_topology="sfu"
    )
    server = SignalingServer(config)
    async with server:
        await server.listen("127.0.0.1", 0)
        factory = sfu_strategy_factory(session_config=SESSION)
        async with RoomStrategies(server.hub, factories={"sfu": factory}) as strategies:
            server.strategies = strategies  # type: ignore[attr-defined]
            yield server


async def _bridge(client: SignalingClient, peer: WebrtcbinPeer) -> None:
    """Carry the SFU's peer messages between signaling and webrtcbin, both ways."""
    signaller = SignalingSignaller(client, SFU_PEER_ID)

    async def to_webrtcbin() -> None:
        async for event in client:
            if isinstance(event, sp.Relayed) and event.sender == SFU_PEER_ID:
                message = peer_message_from_signaling(event)
                if message is not None:
                    await peer.send(message)

    async def to_sfu() -> None:
        async for message in peer.messages():
            await signaller.send(message)

    await asyncio.gather(to_webrtcbin(), to_sfu())


async def test_webrtcbin_publishes_into_an_sfu_room(sfu_server: SignalingServer) -> None:
    """webrtcbin joins an SFU room and publishes; an aiortc participant receives its video.

    The SFU offers first (``actpass``); webrtcbin answers ``passive``, so the SFU's aiortc is
    the DTLS client (failed before the fix), then re-offers to add its video. The SFU
    forwards it without decoding.
    """
    async with contextlib.AsyncExitStack() as stack:
        viewer_client = await stack.enter_async_context(
            SignalingClient.connect(sfu_server.url, room="sfu")
        )
        viewer = await stack.enter_async_context(join_room(viewer_client, session_config=SESSION))
        peer = await stack.enter_async_context(
            WebrtcbinPeer(
                role="answer", heartbeat=True, answer_setup="passive", keep_dtls_role=True
            )
        )
        client = await stack.enter_async_context(
            SignalingClient.connect(sfu_server.url, room="sfu")
        )
        bridge = asyncio.create_task(_bridge(client, peer))
        stack.push_async_callback(_cancel, bridge)

        await peer.wait_for(lambda _: peer.report("dtls"), CONNECT_WITHIN)
        await peer.publish()
        track = None
        async with asyncio.timeout(CONNECT_WITHIN):
            async for event in viewer.events():
                if isinstance(event, TrackPublished) and event.participant_id == client.peer_id:
                    track = event.track
                    break
        assert track is not None
        async with asyncio.timeout(CONNECT_WITHIN):
            await track.recv()
        frames = await _count_frames(track, COUNT_FOR)

        assert _setup(peer.descriptions[0]["sdp"]) == {"passive"}
        assert peer.report("dtls")["client"] is False  # type: ignore[index]
        _assert_rsa_and_fingerprint(peer)
        assert frames >= MIN_FRAMES, f"{frames} frames in {COUNT_FOR} s"
        strategy = sfu_server.strategies.running["sfu"]  # type: ignore[attr-defined]
        assert isinstance(strategy, SfuServerStrategy)
        stats = strategy.stats()
        assert stats is not None
        assert stats.publications == 1
        assert stats.decoders_created == 0


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
