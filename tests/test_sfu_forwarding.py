"""The SFU forwarding engine with real aiortc peers on loopback.

One aiortc publisher -> server-side aiortc connections in this process (the SFU) -> aiortc
subscribers. Subscribers decode; the SFU's counters show it decoded and encoded nothing.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from rtckit import _aiortc
from rtckit.ice import IceConfig
from rtckit.peer.connection import create_peer_connection
from rtckit.sfu import (
    ForwardingTrack,
    PublishedTrack,
    SfuConfig,
    SfuRouter,
    SfuTrackPublished,
    Subscription,
    TrackKey,
    TrackSubscribed,
    accept_forwarding_transceiver,
    add_forwarding_transceiver,
)
from rtckit.sfu.rtp import build_nack, is_keyframe, parse_rtp_header

WIDTH, HEIGHT = 320, 240


def config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[])


class SyntheticVideo(MediaStreamTrack):
    """Moving gradient frames at 30 fps."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._n = 0
        self._start: float | None = None
        base = np.linspace(0, 255, WIDTH, dtype=np.uint8)
        self._base = np.tile(base, (HEIGHT, 1))

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._n / 30
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        img = np.stack([np.roll(self._base, self._n * 4, axis=1)] * 3, axis=-1)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self._n * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return frame


def track_transceiver(pc: RTCPeerConnection, track: MediaStreamTrack) -> RTCRtpTransceiver:
    for t in pc.getTransceivers():
        if t.receiver.track is track:
            return t
    raise AssertionError("no transceiver for track")


async def connect_publisher(
    router: SfuRouter, participant: str, *, video_codec: str = "video/VP8", audio: bool = True
) -> tuple[RTCPeerConnection, RTCPeerConnection, list[PublishedTrack]]:
    """A publisher peer and its server-side connection; returns (publisher, server, pubs)."""
    pub_pc = RTCPeerConnection(config())
    t = pub_pc.addTransceiver(SyntheticVideo(), direction="sendonly")
    caps = RTCRtpSender.getCapabilities("video").codecs
    t.setCodecPreferences(
        [c for c in caps if c.mimeType.lower() in (video_codec.lower(), "video/rtx")]
    )
    if audio:
        pub_pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    server = RTCPeerConnection(config())
    pubs: list[PublishedTrack] = []

    @server.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        pubs.append(router.publish(participant, track_transceiver(server, track)))

    await pub_pc.setLocalDescription(await pub_pc.createOffer())
    await server.setRemoteDescription(pub_pc.localDescription)
    await server.setLocalDescription(await server.createAnswer())
    await pub_pc.setRemoteDescription(server.localDescription)
    return pub_pc, server, pubs


class Subscriber:
    """An aiortc subscriber peer that decodes and counts what it receives.

    With ``rtckit=True`` its connection is rtckit's (:func:`create_peer_connection`, whose
    RTP routing registers RTX SSRCs); otherwise a bare aiortc one.
    """

    def __init__(self, *, rtckit: bool = False) -> None:
        self.pc = create_peer_connection(IceConfig()) if rtckit else RTCPeerConnection(config())
        self.server = RTCPeerConnection(config())
        self.frames: dict[str, int] = {"video": 0, "audio": 0}
        #: frames decoded per m-line (mid)
        self.frames_by_mid: dict[str, int] = {}
        self.sizes: set[tuple[int, int]] = set()
        self.tasks: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            mid = next(t.mid for t in self.pc.getTransceivers() if t.receiver.track is track)
            assert mid is not None
            self.tasks.append(asyncio.ensure_future(self._consume(track, mid)))

    async def _consume(self, track: MediaStreamTrack, mid: str) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames[track.kind] += 1
                self.frames_by_mid[mid] = self.frames_by_mid.get(mid, 0) + 1
                if isinstance(frame, av.VideoFrame):
                    self.sizes.add((frame.width, frame.height))
        except Exception:  # noqa: S110 - MediaStreamError when the track ends
            pass

    async def negotiate(self, pubs: list[PublishedTrack]) -> list[RTCRtpTransceiver]:
        """Add one forwarding transceiver per publication to the server side, and negotiate."""
        transceivers = [
            add_forwarding_transceiver(self.server, p.kind, mime_type=p.mime_type) for p in pubs
        ]
        await self.server.setLocalDescription(await self.server.createOffer())
        await self.pc.setRemoteDescription(self.server.localDescription)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.server.setRemoteDescription(self.pc.localDescription)
        return transceivers

    async def connect(
        self, router: SfuRouter, name: str, pubs: list[PublishedTrack]
    ) -> list[Subscription]:
        transceivers = await self.negotiate(pubs)
        return [router.subscribe(name, p.key, t) for p, t in zip(pubs, transceivers, strict=True)]

    async def close(self) -> None:
        await self.pc.close()
        await self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def wait_for(predicate: Any, limit: float = 20.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - polling counters updated by aiortc tasks
            await asyncio.sleep(0.05)


@pytest.fixture
async def router() -> AsyncIterator[SfuRouter]:
    async with SfuRouter() as r:
        yield r


@pytest.mark.parametrize("codec", ["video/VP8", "video/H264"])
async def test_fan_out_without_decoding(router: SfuRouter, codec: str) -> None:
    pub_pc, server, pubs = await connect_publisher(router, "alice", video_codec=codec)
    subs = [Subscriber() for _ in range(3)]
    try:
        await wait_for(lambda: len(pubs) == 2)
        assert {p.mime_type.lower() for p in pubs} == {codec.lower(), "audio/opus"}
        for i, sub in enumerate(subs):
            await sub.connect(router, f"sub{i}", pubs)
        await wait_for(
            lambda: all(s.frames["video"] >= 10 and s.frames["audio"] >= 10 for s in subs)
        )
        for sub in subs:
            assert sub.sizes == {(WIDTH, HEIGHT)}
        stats = router.stats()
        assert stats.publications == 2
        assert stats.subscriptions == 6
        assert stats.packets_out > stats.packets_in
        assert stats.decoders_created == 0
        assert stats.encoders_created == 0
        assert stats.decoders_running == 0
        assert stats.encoders_running == 0
        assert stats.plis_relayed >= 1
        assert stats.keyframes_in >= 1
        # SRs were rewritten for the subscribers; their REMB estimates (from the
        # abs-send-time the SFU rewrote) were aggregated and relayed to the publisher
        await wait_for(lambda: router.stats().sender_reports_forwarded > 0)
        await wait_for(lambda: router.stats().rembs_relayed > 0)
        await wait_for(lambda: router.stats().receiver_reports_sent > 0)
    finally:
        for sub in subs:
            await sub.close()
        await pub_pc.close()
        await server.close()


async def test_mid_stream_join_gets_keyframe(router: SfuRouter) -> None:
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    first, late = Subscriber(), Subscriber()
    try:
        await wait_for(lambda: len(pubs) == 1)
        await first.connect(router, "first", pubs)
        await wait_for(lambda: first.frames["video"] >= 30)
        plis_before = router.stats().plis_relayed
        keyframes_before = router.stats().keyframes_in
        [sub] = await late.connect(router, "late", pubs)
        await wait_for(lambda: late.frames["video"] >= 5)
        stats = router.stats()
        assert stats.plis_relayed > plis_before
        assert stats.keyframes_in > keyframes_before
        assert sub.rewriter is not None
        assert not sub.rewriter.waiting_keyframe
        assert late.sizes == {(WIDTH, HEIGHT)}
    finally:
        await first.close()
        await late.close()
        await pub_pc.close()
        await server.close()


def h264_listed_first(sdp: str) -> str:
    """The video m-line's codecs reordered, H264 (and its RTX) first.

    Chromium answers so when it prefers H264 (``setCodecPreferences``), while it sends the
    first codec of the *offer*: the SFU negotiates H264 first and receives VP8. (aiortc reads
    the order of the ``a=rtpmap`` lines, Chromium of the ``m=`` line: both are reordered.)
    """
    lines = sdp.split("\r\n")
    h264 = {line.split()[0].split(":")[1] for line in lines if " H264/" in line}
    h264 |= {
        line.split()[0].split(":")[1]
        for line in lines
        if line.startswith("a=fmtp:") and any(f"apt={pt}" in line for pt in h264)
    }
    video = next(i for i, line in enumerate(lines) if line.startswith("m=video"))
    end = next((i for i in range(video + 1, len(lines)) if lines[i].startswith("m=")), len(lines))
    head, pts = lines[video].split()[:3], lines[video].split()[3:]
    lines[video] = " ".join(head + sorted(pts, key=lambda pt: pt not in h264))
    slots = [
        i
        for i in range(video + 1, end)
        if lines[i].startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"))
    ]
    codec_lines = sorted(
        (lines[i] for i in slots), key=lambda line: line.split()[0].split(":")[1] not in h264
    )
    for i, line in zip(slots, codec_lines, strict=True):
        lines[i] = line
    return "\r\n".join(lines)


async def test_publisher_sending_another_codec_than_the_first_negotiated(
    router: SfuRouter,
) -> None:
    server = RTCPeerConnection(config())
    transceiver = server.addTransceiver("video", direction="recvonly")
    pub_pc = RTCPeerConnection(config())
    viewer = Subscriber()
    try:
        await server.setLocalDescription(await server.createOffer())
        await pub_pc.setRemoteDescription(server.localDescription)
        pub_pc.addTrack(SyntheticVideo())  # sends the offer's first codec: VP8
        await pub_pc.setLocalDescription(await pub_pc.createAnswer())
        answer = h264_listed_first(pub_pc.localDescription.sdp)
        assert answer != pub_pc.localDescription.sdp
        await server.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        pub = router.publish("alice", transceiver)
        assert pub.mime_type == "video/H264"  # the first negotiated codec
        await wait_for(lambda: router.stats().packets_in > 0)
        assert pub.mime_type == "video/VP8"  # the codec received
        [sub] = await viewer.connect(router, "viewer", [pub])
        await wait_for(lambda: viewer.frames["video"] >= 5)
        assert sub.rewriter is not None
        assert not sub.rewriter.waiting_keyframe
        assert router.stats().keyframes_in >= 1
        assert viewer.sizes == {(WIDTH, HEIGHT)}
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_a_repeated_nack_is_answered_once_per_interval() -> None:
    """aiortc's receiver lists every packet still missing in each NACK it sends; answering
    each copy would multiply the traffic on a link that is losing packets already. (Without
    the SFU's own repeats, ``repair_retries``, which count as retransmissions too.)"""
    router = SfuRouter(SfuConfig(repair_retries=0))
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber()
    try:
        await wait_for(lambda: len(pubs) == 1)
        [sub] = await viewer.connect(router, "viewer", pubs)
        await wait_for(lambda: viewer.frames["video"] >= 5)
        rewriter = sub.rewriter
        assert rewriter is not None
        media_pts = set(rewriter.params.payload_types.values())
        sent: list[int] = []

        def record(data: bytes) -> bool:
            if not 192 <= data[1] <= 223 and data[1] & 0x7F in media_pts:
                sent.append(parse_rtp_header(data).sequence_number)
            return True

        sub.set_send_filter(record)
        await wait_for(lambda: len(sent) >= 5)
        nack = build_nack(1, rewriter.params.ssrc, [sent[-2]])
        answered = router.stats().nacks_answered
        await sub._on_rtcp(nack)
        await sub._on_rtcp(nack)
        assert router.stats().nacks_answered == answered + 1
        await asyncio.sleep(router.config.retransmission_interval)
        await sub._on_rtcp(nack)
        assert router.stats().nacks_answered == answered + 2
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()
        await router.aclose()


async def test_loss_repaired_by_nack(router: SfuRouter) -> None:
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    lossy = Subscriber()
    try:
        await wait_for(lambda: len(pubs) == 1)
        [sub] = await lossy.connect(router, "lossy", pubs)
        rng = random.Random(5)  # deterministic 5% loss of media packets
        dropped: list[int] = []

        def keep(data: bytes) -> bool:
            if data[1] >= 192 and data[1] <= 223:
                return True  # RTCP
            if rng.random() < 0.05:
                dropped.append(parse_rtp_header(data).sequence_number)
                return False
            return True

        sub.set_send_filter(keep)
        await wait_for(lambda: lossy.frames["video"] >= 60 and len(dropped) >= 5)
        await wait_for(lambda: router.stats().nacks_answered >= 3)
        stats = router.stats()
        assert stats.nacks_received > 0
        frames = lossy.frames["video"]
        await wait_for(lambda: lossy.frames["video"] >= frames + 15)
    finally:
        await lossy.close()
        await pub_pc.close()
        await server.close()


def lose_three_packets(sub: Subscription, repair_lost: Callable[[int], bool]) -> set[int]:
    """Drop three media packets in a row sent to *sub*, and each retransmission of them for
    which ``repair_lost(sequence number)`` is True; returns the lost numbers (filled later)."""
    rewriter = sub.rewriter
    assert rewriter is not None
    media_pts = set(rewriter.params.payload_types.values())
    rtx_pts = {rewriter.params.rtx_payload_type, *rewriter.params.rtx_payload_types.values()}
    lost: set[int] = set()

    def keep(data: bytes) -> bool:
        if 192 <= data[1] <= 223:
            return True  # RTCP
        header = parse_rtp_header(data)
        if header.payload_type in media_pts and len(lost) < 3:
            lost.add(header.sequence_number)
            return False
        if header.payload_type in rtx_pts and header.payload_end - header.payload_offset > 2:
            osn = struct.unpack_from("!H", data, header.payload_offset)[0]
            return osn not in lost or not repair_lost(osn)
        return True

    sub.set_send_filter(keep)
    return lost


async def test_a_lost_retransmission_is_sent_again(router: SfuRouter) -> None:
    """aiortc's receiver asks for a missing packet once, when the gap appears; if the
    retransmission is lost too, its jitter buffer waits for the hole until 512 packets later
    (seconds of frozen picture). The SFU sends the retransmission again until a NACK no
    longer lists it (``SfuConfig.repair_retries``)."""
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber(rtckit=True)
    try:
        await wait_for(lambda: len(pubs) == 1)
        [sub] = await viewer.connect(router, "viewer", pubs)
        await wait_for(lambda: viewer.frames["video"] >= 10)
        first_repairs: set[int] = set()

        def first_repair_lost(osn: int) -> bool:
            if osn in first_repairs:
                return False
            first_repairs.add(osn)
            return True

        lost = lose_three_packets(sub, first_repair_lost)
        await wait_for(lambda: first_repairs == lost and len(lost) == 3, limit=5)
        frames = viewer.frames["video"]
        await wait_for(lambda: viewer.frames["video"] >= frames + 10, limit=3)
        assert router.stats().retransmissions_repeated >= 3
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_a_hole_that_cannot_be_repaired_restarts_the_stream_at_a_keyframe(
    router: SfuRouter,
) -> None:
    """Three packets lost with every retransmission of them: once the repeats are used up,
    the stream goes on from a keyframe (asked for at once), its sequence numbers skipping
    past the hole so that aiortc's jitter buffer does not wait for it (512 packets)."""
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber(rtckit=True)
    try:
        await wait_for(lambda: len(pubs) == 1)
        [sub] = await viewer.connect(router, "viewer", pubs)
        await wait_for(lambda: viewer.frames["video"] >= 10)
        lost = lose_three_packets(sub, lambda _: True)
        await wait_for(lambda: len(lost) == 3, limit=5)
        frames = viewer.frames["video"]
        restarted = time.monotonic()
        await wait_for(lambda: viewer.frames["video"] >= frames + 10, limit=4)
        took = time.monotonic() - restarted
        stats = router.stats()
        assert stats.keyframe_restarts == 1
        assert stats.retransmissions_repeated >= 3
        print(f"stream restarted at a keyframe; 10 frames {took:.2f} s after the loss")
        # the receiver reports count the skipped numbers as lost: the SFU does not
        sub._loss = None

        def loss() -> float | None:
            return sub._loss

        await wait_for(lambda: loss() is not None, limit=3)
        assert (loss() or 0.0) < 0.2
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


def retries(sub: Subscription) -> bool:
    """Whether *sub* retries its NACKs (a function: mypy keeps no narrowing of a call)."""
    return sub.renacks


async def test_a_receiver_that_asks_again_itself_gets_no_repeats_nor_restarts(
    router: SfuRouter,
) -> None:
    """libwebrtc, Firefox and GStreamer ask again for a packet still missing, and for a
    keyframe when they give up: seen doing so (a NACK listing only packets already asked
    for), a subscriber gets no repeated retransmissions and no restart, which for such a
    receiver would only cost a keyframe after a repair that did arrive."""
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber(rtckit=True)
    try:
        await wait_for(lambda: len(pubs) == 1)
        [sub] = await viewer.connect(router, "viewer", pubs)
        await wait_for(lambda: viewer.frames["video"] >= 10)
        assert not sub.renacks
        rewriter = sub.rewriter
        assert rewriter is not None
        assert rewriter.last_sequence_number is not None
        asked = [(rewriter.last_sequence_number - 3) & 0xFFFF]
        media_ssrc = rewriter.params.ssrc
        await sub._on_rtcp(build_nack(1234, media_ssrc, asked))
        assert not retries(sub)  # a first NACK says nothing of the receiver
        await sub._on_rtcp(build_nack(1234, media_ssrc, asked))
        assert retries(sub)  # the same packet again, nothing new: it retries itself
        # a packet sent before the last keyframe the stream restarted from is obsolete for it
        pub = sub.publication
        assert pub is not None
        before = rewriter.last_sequence_number
        rewriter.switch(pub.source_ssrc)  # a new segment, from the next keyframe
        await pub.request_keyframe()
        await wait_for(lambda: rewriter.sent_before_the_segment(before), limit=5)
        answered = router.stats().nacks_answered
        await sub._on_rtcp(build_nack(1234, media_ssrc, [before]))
        stats = router.stats()
        assert (stats.nacks_obsolete, stats.nacks_answered) == (1, answered)
        lost = lose_three_packets(sub, lambda _: True)
        await wait_for(lambda: len(lost) == 3, limit=5)
        await asyncio.sleep(1.5)  # the repeats would be used up within 0.6 s
        stats = router.stats()
        assert stats.retransmissions_repeated == 0
        assert stats.keyframe_restarts == 0
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_a_subscriber_flooding_nacks_keeps_its_state_bounded(router: SfuRouter) -> None:
    """A hostile (or broken) subscriber asks for every recent packet, and more, again and
    again, each NACK with a new number (so it never looks like a retrying receiver): the
    retransmissions followed for it stay bounded (``_MAX_REPAIRS``), a garbled RTCP packet
    is dropped, and its video goes on."""
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber(rtckit=True)
    try:
        await wait_for(lambda: len(pubs) == 1)
        [sub] = await viewer.connect(router, "viewer", pubs)
        await wait_for(lambda: viewer.frames["video"] >= 10)
        rewriter = sub.rewriter
        assert rewriter is not None
        await wait_for(lambda: rewriter.packets_sent >= 400, limit=20)  # all 400 cached
        last = rewriter.last_sequence_number
        assert last is not None
        ssrc = rewriter.params.ssrc
        for i in range(200):
            lost = [(last - j) & 0xFFFF for j in range(400)] + [(last + 1000 + i) & 0xFFFF]
            await sub._on_rtcp(build_nack(1234, ssrc, lost))
        await sub._on_rtcp(b"\x81\xcd\x00\xff" + b"\x00" * 8)  # claims 1 KB, has 12 bytes
        assert router.stats().nacks_received == 200
        assert 0 < len(sub._repairs) <= 256
        assert not retries(sub)
        frames = viewer.frames["video"]
        await wait_for(lambda: viewer.frames["video"] >= frames + 10, limit=5)
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_probe_padding_is_paced_bounded_and_leaves_the_video_alone(
    router: SfuRouter,
) -> None:
    """While a layer selector probes (``probe_bitrate``), the subscriber gets RTX packets of
    padding only at that rate: aiortc's receiver counts them for its estimate and discards
    them, the video keeps decoding without a loss, and the padding stops with the probe
    and when the subscription pauses."""
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber(rtckit=True)
    try:
        await wait_for(lambda: len(pubs) == 1)
        [sub] = await viewer.connect(router, "viewer", pubs)
        await wait_for(lambda: viewer.frames["video"] >= 10)
        selector = sub._selector
        assert selector is not None
        nacks = router.stats().nacks_received
        frames = viewer.frames["video"]
        start = router.stats().padding_bytes_sent
        began = time.monotonic()
        selector.probe_bitrate, selector.probe_target = 400_000.0, 1
        sub._update_padding()
        await asyncio.sleep(1.5)
        sent = router.stats().padding_bytes_sent - start
        rate = sent * 8 / (time.monotonic() - began)
        print(f"padding {rate / 1000:.0f} kbit/s for a probe of 400 kbit/s")
        assert 300_000 < rate <= 440_000
        assert viewer.frames["video"] >= frames + 20  # still decoding
        assert router.stats().nacks_received == nacks  # and nothing was lost
        # a small rate is sent too (less than a packet per tick)
        selector.probe_bitrate = 40_000.0
        start, began = router.stats().padding_bytes_sent, time.monotonic()
        await asyncio.sleep(1.0)
        rate = (router.stats().padding_bytes_sent - start) * 8 / (time.monotonic() - began)
        assert 25_000 < rate <= 50_000
        # a probe asking for more than the bound gets the bound
        selector.probe_bitrate = 50_000_000.0
        start, began = router.stats().padding_bytes_sent, time.monotonic()
        await asyncio.sleep(1.0)
        rate = (router.stats().padding_bytes_sent - start) * 8 / (time.monotonic() - began)
        assert rate <= router.config.probe_padding_max * 1.1
        # the probe ends: the padding stops
        selector.probe_bitrate = None
        await asyncio.sleep(0.1)
        assert sub._padding_task is None
        stopped = router.stats().padding_packets_sent
        await asyncio.sleep(0.2)
        assert router.stats().padding_packets_sent == stopped
        # a paused subscription gets none
        selector.probe_bitrate = 400_000.0
        router.pause(sub)
        sub._update_padding()
        await asyncio.sleep(0.2)
        assert router.stats().padding_packets_sent == stopped
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_publisher_leaves_and_comes_back(router: SfuRouter) -> None:
    events: list[Any] = []

    async def collect() -> None:
        events.extend([event async for event in router.events()])

    collector = asyncio.ensure_future(collect())
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber()
    pub_pc2: RTCPeerConnection | None = None
    server2: RTCPeerConnection | None = None
    try:
        await wait_for(lambda: len(pubs) == 1)
        [sub] = await viewer.connect(router, "viewer", pubs)
        await wait_for(lambda: viewer.frames["video"] >= 15)
        assert sub.rewriter is not None
        first_source = pubs[0].source_ssrc
        # the publisher leaves
        await pub_pc.close()
        await server.close()
        router.unpublish(TrackKey("alice", "video"))
        assert TrackKey("alice", "video") not in router.publications
        last_seq = sub.rewriter.last_sequence_number
        assert last_seq is not None
        sent_before = sub.rewriter.packets_sent
        await asyncio.sleep(0.3)
        assert sub.rewriter.packets_sent == sent_before  # no stale forwarding
        frames_before = viewer.frames["video"]
        # ... and comes back on a new connection
        pub_pc2, server2, pubs2 = await connect_publisher(router, "alice", audio=False)
        await wait_for(lambda: len(pubs2) == 1)
        assert sub.publication is pubs2[0]
        await wait_for(lambda: viewer.frames["video"] >= frames_before + 15)
        assert pubs2[0].source_ssrc != first_source
        assert viewer.sizes == {(WIDTH, HEIGHT)}
        # continuous sequence numbers: the subscriber's receiver saw (almost) no loss
        receiver = viewer.pc.getTransceivers()[0].receiver
        report = await receiver.getStats()
        inbound = [s for s in report.values() if s.type == "inbound-rtp"]
        assert len(inbound) == 1
        assert inbound[0].packetsLost < 20
        assert sub.rewriter.packets_sent > sent_before
        assert router.stats().decoders_created == 0
    finally:
        await viewer.close()
        if pub_pc2 is not None and server2 is not None:
            await pub_pc2.close()
            await server2.close()
        await pub_pc.close()
        await server.close()
        await router.aclose()
        await asyncio.wait_for(collector, 5)
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("SfuTrackPublished") == 2
    assert "SfuTrackUnpublished" in kinds
    assert any(isinstance(e, SfuTrackPublished) and e.republished for e in events)
    assert any(isinstance(e, TrackSubscribed) for e in events)


async def test_pause_resume(router: SfuRouter) -> None:
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber()
    try:
        await wait_for(lambda: len(pubs) == 1)
        [sub] = await viewer.connect(router, "viewer", pubs)
        await wait_for(lambda: viewer.frames["video"] >= 10)
        router.pause(sub)
        assert sub.rewriter is not None
        sent = sub.rewriter.packets_sent
        await asyncio.sleep(0.3)
        assert sub.rewriter.packets_sent == sent
        frames = viewer.frames["video"]
        await router.resume(sub)
        await wait_for(lambda: viewer.frames["video"] >= frames + 10)
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_data_channel_relay(router: SfuRouter) -> None:
    peers = []
    received: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    opened: list[str] = []
    try:
        for name in ("a", "b", "c"):
            client = RTCPeerConnection(config())
            server = RTCPeerConnection(config())
            channel = client.createDataChannel("chat")
            peers.append((client, server))

            @channel.on("message")
            def on_message(message: str, name: str = name) -> None:
                received[name].append(message)

            @channel.on("open")
            def on_open(name: str = name) -> None:
                opened.append(name)

            @server.on("datachannel")
            def on_channel(ch: Any, name: str = name) -> None:
                router.add_data_channel(name, ch)

            await client.setLocalDescription(await client.createOffer())
            await server.setRemoteDescription(client.localDescription)
            await server.setLocalDescription(await server.createAnswer())
            await client.setRemoteDescription(server.localDescription)
            peers[-1] = (client, server)
            setattr(client, "_test_channel", channel)  # noqa: B010
        await wait_for(lambda: len(opened) == 3 and len(router._channels) == 3)
        peers[0][0]._test_channel.send("hello from a")  # type: ignore[attr-defined]
        await wait_for(lambda: received["b"] and received["c"])
        assert received == {"a": [], "b": ["hello from a"], "c": ["hello from a"]}
        assert router.stats().data_messages_relayed == 2
    finally:
        for client, server in peers:
            await client.close()
            await server.close()


async def test_forwarding_track_is_idle() -> None:
    track = ForwardingTrack("video")
    waiter = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    track.stop()
    with pytest.raises(MediaStreamError):
        await waiter


def munge(sdp: str, payload_types: dict[int, int], extension_ids: dict[int, int]) -> str:
    """Renumber payload types and extension IDs in an SDP, as a browser's choice would."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("m=video"):
            parts = line.split(" ")
            line = " ".join(parts[:3] + [str(payload_types.get(int(p), int(p))) for p in parts[3:]])
        for old, new in payload_types.items():
            for prefix in ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"):
                if line.startswith(f"{prefix}{old} "):
                    line = f"{prefix}{new} " + line[len(f"{prefix}{old} ") :]
            line = line.replace(f"apt={old}", f"apt={new}")
        for old, new in extension_ids.items():
            if line.startswith(f"a=extmap:{old} "):
                line = f"a=extmap:{new} " + line[len(f"a=extmap:{old} ") :]
        out.append(line)
    return "\r\n".join(out) + "\r\n"


async def test_subscriber_with_other_payload_types_and_extension_ids(router: SfuRouter) -> None:
    """A browser-like subscriber offers, with its own payload types and extension IDs."""
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber()
    try:
        await wait_for(lambda: len(pubs) == 1)
        viewer.pc.addTransceiver("video", direction="recvonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        viewer.pc.getTransceivers()[0].setCodecPreferences(
            [c for c in caps if c.mimeType in ("video/VP8", "video/rtx")]
        )
        offer = await viewer.pc.createOffer()
        assert "a=rtpmap:97 VP8/90000" in offer.sdp
        assert "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time" in offer.sdp
        munged = munge(offer.sdp, {97: 120, 98: 121}, {1: 4, 3: 9})
        await viewer.pc.setLocalDescription(RTCSessionDescription(sdp=munged, type="offer"))
        await viewer.server.setRemoteDescription(viewer.pc.localDescription)
        transceiver = accept_forwarding_transceiver(viewer.server.getTransceivers()[0])
        await viewer.server.setLocalDescription(await viewer.server.createAnswer())
        assert "a=rtpmap:120 VP8/90000" in viewer.server.localDescription.sdp
        await viewer.pc.setRemoteDescription(viewer.server.localDescription)
        sub = router.subscribe("viewer", pubs[0].key, transceiver)
        await wait_for(lambda: viewer.frames["video"] >= 10)
        assert sub.rewriter is not None
        params = sub.rewriter.params
        assert params.payload_types == {97: 120}
        assert params.rtx_payload_type == 121
        # abs-send-time moved from ID 3 to 9; mid is not forwarded
        assert dict(params.extensions.ids) == {3: 9}
        # the subscriber's bandwidth estimator read abs-send-time at ID 9: it sent REMB
        await wait_for(lambda: router.stats().rembs_relayed > 0)
        assert viewer.sizes == {(WIDTH, HEIGHT)}
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_publish_after_the_receiver_started(router: SfuRouter) -> None:
    """Publishing late stops aiortc's decoder thread and forwards from then on."""
    pub_pc = RTCPeerConnection(config())
    pub_pc.addTransceiver(SyntheticVideo(), direction="sendonly")
    server = RTCPeerConnection(config())
    viewer = Subscriber()
    try:
        await pub_pc.setLocalDescription(await pub_pc.createOffer())
        await server.setRemoteDescription(pub_pc.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        await pub_pc.setRemoteDescription(server.localDescription)
        await wait_for(lambda: server.connectionState == "connected")
        transceiver = server.getTransceivers()[0]
        await wait_for(lambda: _aiortc.sfu_receiver_decoding(transceiver.receiver))
        pub = router.publish("alice", transceiver)
        assert not _aiortc.sfu_receiver_decoding(transceiver.receiver)
        await viewer.connect(router, "viewer", [pub])
        await wait_for(lambda: viewer.frames["video"] >= 10)
        stats = router.stats()
        assert stats.decoders_running == 0
        assert stats.encoders_created == 0
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_publisher_path_loss_repaired_by_upstream_nack(router: SfuRouter) -> None:
    """Loss between publisher and SFU: the SFU NACKs upstream, the publisher sends RTX."""
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber()
    try:
        await wait_for(lambda: len(pubs) == 1)
        [_sub] = await viewer.connect(router, "viewer", pubs)
        await wait_for(lambda: viewer.frames["video"] >= 10)
        rng = random.Random(11)  # deterministic 5% loss of the publisher's media packets
        pubs[0].set_receive_filter(lambda data: rng.random() >= 0.05)
        await wait_for(lambda: router.stats().retransmissions_in >= 3)
        stats = router.stats()
        assert stats.nacks_generated >= 1
        frames = viewer.frames["video"]
        await wait_for(lambda: viewer.frames["video"] >= frames + 15)
        pubs[0].set_receive_filter(None)
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_subscription_never_starts_at_a_retransmitted_keyframe_packet(
    router: SfuRouter,
) -> None:
    """A publisher re-sends an old keyframe packet over RTX, unasked by the SFU (libwebrtc
    sends such padding when it starts): a new subscription must not start there.

    The test makes the aiortc publisher re-send the first packet of a keyframe the SFU
    forwarded before the subscription existed (it NACKs the publisher itself, on the
    publisher's path). While that RTX packet arrives, the publisher's other packets are held
    back, so it is the first packet the subscription could start at. Started there, the
    subscriber would miss the rest of that keyframe (it went by before the subscription).
    """
    pub_pc, server, pubs = await connect_publisher(router, "alice", audio=False)
    viewer = Subscriber()
    try:
        await wait_for(lambda: len(pubs) == 1 and pubs[0].source_ssrc is not None)
        pub = pubs[0]
        vp8 = {pt for pt, c in pub.codecs.items() if c.mimeType.lower() == "video/vp8"}
        keyframes: list[int] = []
        hold = False

        def receive(data: bytes) -> bool:
            header = parse_rtp_header(data)
            if header.payload_type in pub.rtx_apt:
                return True
            payload = data[header.payload_offset : header.payload_end]
            if header.payload_type in vp8 and is_keyframe("vp8", payload):
                keyframes.append(header.sequence_number)
            return not hold

        pub.set_receive_filter(receive)
        [transceiver] = await viewer.negotiate(pubs)
        await wait_for(lambda: transceiver.sender.transport.state == "connected")
        # a keyframe goes by before the subscription exists
        await pub.request_keyframe()
        await wait_for(lambda: bool(keyframes))
        old = keyframes[-1]
        assert pub.source_ssrc is not None
        await wait_for(lambda: pub.cache.get(pub.source_ssrc, old) is not None)
        hold = True
        sub = router.subscribe("viewer", pub.key, transceiver)
        assert sub.ready
        rewriter = sub.rewriter
        assert rewriter is not None
        assert rewriter.waiting_keyframe
        # the publisher re-sends the old keyframe packet over RTX
        retransmissions = router.stats().retransmissions_in
        rtcp_ssrc, _ = _aiortc.sfu_sender_ssrcs(pub.transceiver.sender)
        send = _aiortc.sfu_send_function(pub.transceiver.receiver.transport)
        await send(build_nack(rtcp_ssrc, pub.source_ssrc, [old]))
        await wait_for(lambda: router.stats().retransmissions_in > retransmissions)
        assert rewriter.waiting_keyframe, "the subscription started at a retransmitted packet"
        assert rewriter.last_sequence_number is None
        # the subscription starts at the next keyframe the publisher sends (not re-sends)
        hold = False
        await wait_for(lambda: viewer.frames["video"] >= 5)
        first = rewriter.incoming_sequence_number(rewriter.params.initial_sequence_number)
        assert first is not None
        assert first[1] != old
        assert first[1] in keyframes
    finally:
        await viewer.close()
        await pub_pc.close()
        await server.close()


async def test_retransmission_reaches_a_subscriber_of_two_videos(router: SfuRouter) -> None:
    """Two forwarded videos on one subscriber connection share the RTX payload type.

    aiortc's own RTP router drops every RTX packet then (it never registers RTX SSRCs, and
    two receivers have that payload type): a lost packet stalls the video until aiortc's
    512-packet jitter buffer gives up and asks for a keyframe (~10 s). With rtckit's routing
    the SFU's RTX answer to the subscriber's NACK repairs it at once.
    """
    alice_pc, alice_server, alice_pubs = await connect_publisher(router, "alice", audio=False)
    bob_pc, bob_server, bob_pubs = await connect_publisher(router, "bob", audio=False)
    viewer = Subscriber(rtckit=True)
    try:
        await wait_for(lambda: len(alice_pubs) == 1 and len(bob_pubs) == 1)
        subs = await viewer.connect(router, "viewer", alice_pubs + bob_pubs)
        mids = [s.transceiver.mid for s in subs]
        await wait_for(lambda: all(viewer.frames_by_mid.get(m or "", 0) >= 10 for m in mids))
        sub = subs[1]
        rewriter = sub.rewriter
        assert rewriter is not None
        media_pts = set(rewriter.params.payload_types.values())
        dropped: list[int] = []

        def keep(data: bytes) -> bool:
            if dropped or 192 <= data[1] <= 223:
                return True  # RTCP, or the chosen packet was dropped already
            header = parse_rtp_header(data)
            if header.payload_type in media_pts:
                dropped.append(header.sequence_number)  # one chosen packet, lost once
                return False
            return True

        answered = router.stats().nacks_answered
        requests = router.stats().keyframe_requests_received
        sub.set_send_filter(keep)
        await wait_for(lambda: bool(dropped))
        frames = viewer.frames_by_mid[mids[1] or ""]
        # repaired by the SFU's retransmission: frames keep coming, well before aiortc's
        # jitter buffer would give up on the hole (512 packets, several seconds here)
        await wait_for(lambda: viewer.frames_by_mid[mids[1] or ""] >= frames + 15, limit=5.0)
        assert router.stats().nacks_answered > answered
        assert router.stats().keyframe_requests_received == requests
        # the retransmission reached the subscriber's receiver of that video (aiortc lists the
        # streams of a receiver under one stats id: the RTX stream, seen last, is the one left)
        receiver = viewer.pc.getTransceivers()[1].receiver
        inbound = [s for s in (await receiver.getStats()).values() if s.type == "inbound-rtp"]
        assert rewriter.params.rtx_ssrc in {s.ssrc for s in inbound}
    finally:
        await viewer.close()
        for pc in (alice_pc, alice_server, bob_pc, bob_server):
            await pc.close()
