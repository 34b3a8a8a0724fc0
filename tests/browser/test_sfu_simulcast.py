"""A Chromium page publishing simulcast in an SFU room; aiortc subscribers choose their layer.

The page publishes its fake camera at 640x360, 15 fps, with rtckit.js's three layers (q/h/f,
160x90, 320x180, 640x360). Chromium limits a 640x360 capture to two layers by default
(libwebrtc's simulcast format table); labroom's SIMULCAST_TRIAL lifts that limit so that three
layers run without the CPU cost of a 1280x720 capture on a loaded machine. Two aiortc
participants subscribe: one asks for "low" and decodes 160-pixel frames, one keeps "high"
and decodes 640-pixel frames, then switches high -> low -> high with frames decoding across
each switch. An aiortc participant publishes a test pattern (no simulcast) that the page
decodes. The page's outbound stats show three layers sending, also after the SFU re-offers
(another participant publishes). A packet dropped on one layer is repaired by NACK/RTX on it.
When the page stops its top layer, the "high" subscriber moves to the middle one, and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from browser.test_sfu_room import decoding, site
from rtckit.peer import SessionConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack
from rtckit.sfu.rtp import parse_rtp_header
from rtckit.signaling import SignalingClient
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.testing.labroom import SIMULCAST_TRIAL
from rtckit.topology import TrackPublished, join_room
from rtckit.topology.sfu import SfuRoom, SfuServerStrategy

JOIN = """async ([url]) => {
  const sig = await window.rtc.connectSignaling(url, {room: "sfu"});
  const room = window.rtc.joinRoom(sig);
  window.room = room;
  window.firstFrame = {};
  window.joinedAt = performance.now();
  const stream = await navigator.mediaDevices.getUserMedia({video: {
    width: {exact: 640}, height: {exact: 360}, frameRate: {exact: 15}}});
  room.publish(stream.getVideoTracks()[0], stream);
  return sig.peerId;
}"""

# a page that only watches, asking for the publisher's low layer before it is connected
VIEW = """async ([url, publisher]) => {
  const sig = await window.rtc.connectSignaling(url, {room: "sfu"});
  const room = window.rtc.joinRoom(sig);
  window.room = room;
  room.setVideoQuality(publisher, "low");
  return sig.peerId;
}"""

# the width of the frames a page decodes, by publishing participant
WIDTHS = """async () => {
  const room = window.room;
  const out = {};
  if (!room.session || !room.session.pc) return out;
  const report = await room.session.pc.getStats();
  report.forEach((s) => {
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    const entry = room.remote.get(s.mid);
    if (entry && s.framesDecoded > 0) out[entry.participantId] = s.frameWidth;
  });
  return out;
}"""

# turn the page's top layer off or on (as Chromium's own adaptation would stop it)
TOP_LAYER = """async (active) => {
  const sender = window.room.session.pc.getSenders().find((s) => s.track?.kind === "video");
  const parameters = sender.getParameters();
  parameters.encodings.find((e) => e.rid === "f").active = active;
  await sender.setParameters(parameters);
}"""

# the page's outbound video streams: rid -> [frame width, frames encoded, limitation]
OUTBOUND = """async () => {
  const report = await window.room.session.pc.getStats();
  const out = {};
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      out[s.rid || ""] = [s.frameWidth || 0, s.framesEncoded || 0, s.qualityLimitationReason];
    }
  });
  return out;
}"""


async def subscriber(
    stack: contextlib.AsyncExitStack, ws_url: str
) -> tuple[SfuRoom, asyncio.Queue[TrackPublished]]:
    client = await stack.enter_async_context(SignalingClient.connect(ws_url, room="sfu"))
    room = await stack.enter_async_context(join_room(client, session_config=SessionConfig()))
    assert isinstance(room, SfuRoom)
    published: asyncio.Queue[TrackPublished] = asyncio.Queue()

    async def collect() -> None:
        async for event in room.events():
            if isinstance(event, TrackPublished):
                published.put_nowait(event)

    task = asyncio.create_task(collect())
    stack.callback(task.cancel)
    return room, published


async def track_of(published: asyncio.Queue[TrackPublished], participant: str) -> Any:
    async with asyncio.timeout(30):
        while True:
            event = await published.get()
            if event.participant_id == participant and event.kind == "video":
                return event.track


async def frames_of_width(track: Any, width: int, *, within: float = 15) -> tuple[float, float]:
    """Read frames until 10 in a row are *width* wide; (seconds taken, longest frame gap)."""
    started = last = time.monotonic()
    gap = 0.0
    in_a_row = 0
    seen: list[int] = []
    try:
        async with asyncio.timeout(within):
            while in_a_row < 10:
                frame = await track.recv()
                now = time.monotonic()
                gap, last = max(gap, now - last), now
                seen = [*seen[-9:], frame.width]
                in_a_row = in_a_row + 1 if frame.width == width else 0
    except TimeoutError:
        pytest.fail(f"no run of {width}-pixel frames in {within} s (last widths {seen})")
    return time.monotonic() - started, gap


async def test_simulcast_publisher_and_subscribers_choosing_layers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_executable("chromium", hint="apt-get install chromium")
    async with (
        asyncio.timeout(150),
        site() as (http_url, ws_url, strategies),
        contextlib.AsyncExitStack() as stack,
    ):
        low_room, low_published = await subscriber(stack, ws_url)
        high_room, high_published = await subscriber(stack, ws_url)
        # a non-simulcast publisher in the same room
        await high_room.publish(TestPatternTrack(PatternConfig(width=320, height=240, fps=15)))
        browser = await stack.enter_async_context(
            launch_chromium(fps=15, extra_args=[SIMULCAST_TRIAL])
        )
        page = await browser.new_page()
        page.on("console", lambda msg: print("page:", msg.text))
        await page.goto(http_url)
        await page.wait_for_function("window.ready === true")
        publisher = await page.evaluate(JOIN, [ws_url])
        low_room.set_video_quality(publisher, "low")

        low_track = await track_of(low_published, publisher)
        high_track = await track_of(high_published, publisher)
        took, _ = await frames_of_width(low_track, 160, within=30)
        print(f"simulcast: 'low' subscriber decodes 160x90 after {took:.2f} s")
        took, _ = await frames_of_width(high_track, 640, within=30)
        print(f"simulcast: 'high' subscriber decodes 640x360 after {took:.2f} s")

        # the page sends three layers, not limited by CPU
        async with asyncio.timeout(20):
            while True:
                outbound = await page.evaluate(OUTBOUND)
                if len(outbound) == 3 and all(v[0] > 0 and v[1] > 0 for v in outbound.values()):
                    break
                await asyncio.sleep(0.5)
        print(f"simulcast: publisher outbound {outbound}")
        assert sorted(v[0] for v in outbound.values()) == [160, 320, 640]
        assert all(v[2] != "cpu" for v in outbound.values()), outbound

        # high -> low -> high: frames keep decoding, each switch at a keyframe of the layer
        strategy = strategies.running["sfu"]
        assert isinstance(strategy, SfuServerStrategy)
        stats = strategy.stats()
        assert stats is not None
        keyframes = stats.keyframes_in
        caplog.clear()
        for quality, width in (("low", 160), ("high", 640)):
            high_room.set_video_quality(publisher, quality)
            took, gap = await frames_of_width(high_track, width)
            print(
                f"simulcast: switch to {quality}: {width}-pixel frames after {took:.2f} s, "
                f"longest gap between frames {gap:.2f} s"
            )
            assert gap < 3.0  # the old layer plays until the new one's keyframe
            router = strategy.router
            assert router is not None
            (sub,) = [
                s
                for s in router.subscriptions(high_room.local_id)
                if s.key.participant == publisher and s.transceiver.kind == "video"
            ]
            assert sub.layer == {"low": "q", "high": "f"}[quality]
            stats = strategy.stats()
            assert stats is not None
            assert stats.keyframes_in > keyframes
            keyframes = stats.keyframes_in

        # a page asks with rtckit.js: "low" (sent before it connected), then "medium"
        viewer = await browser.new_page()
        await viewer.goto(http_url)
        await viewer.wait_for_function("window.ready === true")
        await viewer.evaluate(VIEW, [ws_url, publisher])
        for quality, width in (("low", 160), ("medium", 320)):
            if quality != "low":
                await viewer.evaluate(f"window.room.setVideoQuality('{publisher}', '{quality}')")
            await viewer.wait_for_function(
                f"({WIDTHS})().then((w) => w['{publisher}'] === {width})", timeout=20000
            )
        print("simulcast: a page asking low then medium decodes 160 then 320 pixels wide")

        # aiortc's decoder failed on nothing ("failed to decode" warnings)
        assert not [r for r in caplog.records if r.name == "aiortc.rtcrtpreceiver"]

        # a packet lost on the middle layer (which no subscriber receives now) is asked for
        # by the SFU itself, on that layer's SSRC, and repaired into the cache by RTX
        router = strategy.router
        assert router is not None
        (pub,) = [p for k, p in router.publications.items() if k.participant == publisher]
        middle = pub.layer_ssrcs["h"]
        lost: list[int] = []

        def drop_one(data: bytes) -> bool:
            header = parse_rtp_header(data)
            if lost or header.ssrc != middle or header.payload_type not in pub.codecs:
                return True
            lost.append(header.sequence_number)
            return False

        pub.set_receive_filter(drop_one)
        async with asyncio.timeout(10):
            while not lost or pub.cache.get(middle, lost[0]) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        pub.set_receive_filter(None)

        # the page decodes the aiortc participant's (single-layer) pattern
        await decoding(page, {high_room.local_id})
        # another publication: the SFU re-offers to the page, which keeps its three layers
        await low_room.publish(TestPatternTrack(PatternConfig(width=320, height=240, fps=15)))
        await decoding(page, {low_room.local_id})
        remote = await page.evaluate("() => window.room.session.pc.remoteDescription")
        assert remote["type"] == "offer"
        assert "a=simulcast:recv q;h;f" in remote["sdp"]
        before = await page.evaluate(OUTBOUND)
        await asyncio.sleep(2)
        after = await page.evaluate(OUTBOUND)
        print(f"simulcast: after the re-offer, publisher outbound {after}")
        assert len(after) == 3
        assert all(after[rid][1] > before[rid][1] for rid in after), (before, after)
        # the page stops its top layer: the 'high' subscriber falls to the middle one (no
        # freeze), and climbs back when the layer sends again
        for active, width in ((False, 320), (True, 640)):
            await page.evaluate(TOP_LAYER, active)
            took, gap = await frames_of_width(high_track, width, within=15)
            print(
                f"simulcast: top layer active={active}: {width}-pixel frames after {took:.2f} s,"
                f" longest gap between frames {gap:.2f} s"
            )
            assert gap < 3.0

        stats = strategy.stats()
        assert stats is not None
        assert stats.decoders_created == 0
        assert stats.encoders_created == 0
        await page.evaluate("window.room.close()")
