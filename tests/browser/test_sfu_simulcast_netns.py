"""Simulcast over real links: a Chromium publisher and Chromium subscribers in namespaces.

Each browser runs in its own host of a :class:`~rtckit.testing.natlab.NatLab` (no NAT) on
the lab's bridge, through the lab's Chromium launcher; the ``rtckit`` server (signaling and
SFU) runs in this process with its sockets in the lab's public namespace
(:meth:`~rtckit.testing.natlab.NatLab.inside`), so the test reads the SFU's state. The
publisher sends its fake camera, pinned to 640x360 at 15 fps, in three layers (the field
trial of ``test_sfu_simulcast``), video only. Three subscribers join one after another:

* ``free``: an unthrottled link, receives the top layer (640 pixels wide);
* ``slow``: its downlink shaped by ``tc`` (a token bucket with a 200 ms queue on the bridge
  port toward it, between the bottom and the middle layer's bitrate), receives the bottom
  layer most of the time with frames still decoding, and never the top one; once the
  shaping is lifted it decodes 640-pixel frames again within 10 s;
* ``low``: asks for "low" (``room.setVideoQuality``), receives 160 pixels.

The publisher's outbound stats show its three layers sending, not limited by CPU, and its
``availableOutgoingBitrate`` at least what they send, after each subscriber joined.

What a Chromium subscriber tells the SFU of its downlink: the SFU's description offers
``goog-remb`` (with ``nack``, ``nack pli``) and the abs-send-time extension, not
transport-cc (aiortc does not negotiate it), so Chromium sends REMB, from its receive-side
estimator on the SFU's send times, besides receiver reports with their loss fraction, NACK
and PLI. The selector reads both (``Subscription.estimate``, the reports' fraction lost):
the test checks that REMB arrives from the shaped subscriber. The shaped subscriber's
layer, REMB, loss, NACK/PLI, freezes and queue drops are printed second by second.

Four browsers (one encoding three small layers, three decoding one each) and the SFU fit on
two cores: the publisher's ``qualityLimitationReason`` is checked after each join.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rtckit.sfu.engine import Subscription
from rtckit.testing import require_executable, require_root
from rtckit.testing.labroom import LabRoom, steady_rates
from rtckit.testing.natlab import NatLab

TIMEOUT = 120
#: how long the shaped subscriber is watched on its link, and its longest stall allowed there
WATCH = 15.0
MAX_STALL = 2.0
#: how long the shaped subscriber may take to reach the bottom layer after joining
SETTLE = 20.0
#: the issue's bound on the climb back to the top layer once the link is free
CLIMB = 10.0

# the subscriber's negotiated feedback for video: rtcp-fb and header extensions of the
# SFU's description
FEEDBACK = """() => {
  const sdp = window.room.session.pc.remoteDescription.sdp;
  const video = sdp.split("\\r\\nm=").filter((m) => m.startsWith("video"));
  const lines = video.flatMap((m) => m.split("\\r\\n"));
  return lines.filter((l) => l.startsWith("a=rtcp-fb:") || l.startsWith("a=extmap:"));
}"""


@pytest.fixture
async def lab() -> AsyncIterator[NatLab]:
    require_root("network namespaces")
    require_executable("ip", hint="apt-get install iproute2")
    require_executable("tc", hint="apt-get install iproute2")
    require_executable("chromium", hint="apt-get install chromium")
    async with NatLab() as lab:
        yield lab


async def check_publisher(room: LabRoom, when: str) -> None:
    """Three layers sending, not limited by CPU; availableOutgoingBitrate covers their sum."""
    for _ in range(10):
        before = await room.outbound("camera")
        await asyncio.sleep(2)
        after = await room.outbound("camera")
        seconds = (after["at"] - before["at"]) / 1000
        layers = {}
        for rid, (width, frames, limitation, sent, target) in after["layers"].items():
            old = before["layers"].get(rid, [0, 0, None, 0, 0])
            layers[rid] = (
                width,
                frames - old[1],
                limitation,
                (sent - old[3]) * 8 / seconds,
                target,
            )
        if len(layers) == 3 and all(v[1] > 0 for v in layers.values()):
            break
    sending = sum(v[3] for v in layers.values())
    shown = ", ".join(
        f"{rid}: {v[0]} px {v[1] / seconds:.0f} fps {v[3] / 1000:.0f} kbit/s"
        f" (target {v[4] / 1000:.0f}, limited by {v[2]})"
        for rid, v in sorted(layers.items(), key=lambda item: item[1][0])
    )
    available = after["available"]
    print(
        f"netns: publisher {when}: {shown}; sum {sending / 1000:.0f} kbit/s,"
        f" availableOutgoingBitrate {available and available / 1000:.0f} kbit/s"
    )
    assert sorted(v[0] for v in layers.values()) == [160, 320, 640], layers
    assert all(v[1] > 0 for v in layers.values()), layers
    assert all(v[2] != "cpu" for v in layers.values()), layers
    assert available is not None
    assert available >= sending


async def decoded(room: LabRoom, name: str, publisher: str) -> dict[str, Any]:
    stats = await room.inbound(name, publisher)
    assert stats is not None, f"{name!r}: no inbound video from the publisher"
    return stats


class Timeline:
    """What the shaped subscriber got, second by second: printed for the record."""

    def __init__(self, room: LabRoom, sub: Subscription, publisher: str) -> None:
        self.room, self.sub, self.publisher = room, sub, publisher
        self.started = time.monotonic()
        self.rows: list[str] = []
        self.estimates: list[float] = []

    async def sample(self, note: str = "") -> dict[str, Any]:
        stats = await decoded(self.room, "slow", self.publisher)
        queue = await self.room.lab.shaping_stats("slow")
        now = time.monotonic()
        estimate = self.sub.estimate(now)
        counters = self.room.router.stats()
        if estimate is not None:
            self.estimates.append(estimate)
        self.rows.append(
            f"{now - self.started:5.1f} s  layer {self.sub.layer}  REMB "
            f"{'-' if estimate is None else f'{estimate / 1000:.0f}k'}  decoded"
            f" {stats['width']} px x {stats['decoded']}  lost {stats['lost']}"
            f"  nacks {stats['nacks']}  plis {stats['plis']}  freezes {stats['freezes']}"
            f" ({stats['frozen']:.1f} s)  queue drops {'-' if queue is None else queue.dropped}"
            f"  SFU restarts {counters.keyframe_restarts} padding {counters.padding_packets_sent}"
            f"{' probing' if self.sub._selector and self.sub._selector.probing else ''} {note}"
        )
        return stats

    def show(self) -> None:
        print("netns: the shaped subscriber, second by second:")
        for row in self.rows:
            print("  " + row)


async def test_layers_over_shaped_links(lab: NatLab, tmp_path: Path) -> None:
    started = time.monotonic()
    names = ("camera", "free", "slow", "low")
    async with asyncio.timeout(TIMEOUT), LabRoom(lab, names, tmp_path) as room:
        print(f"netns: lab and four browsers ready after {time.monotonic() - started:.1f} s")

        camera = await room.join("camera", publish=True)
        free = await room.join("free", publisher=camera)
        took = await room.wait_width("free", camera, 640, 30)
        print(f"netns: 'free' decodes 640 px {took:.1f} s after joining")
        await check_publisher(room, "with one subscriber")

        # The shaped link. Chromium's fake camera is easy to encode: its layers take about
        # 60, 105 and 200 kbit/s (measured here by the SFU), far less than a real camera
        # (the issue's ~300 kbit/s link would carry all three). The link is set between
        # the bottom and the middle layer: their mean, measured now. Each layer adds
        # 15-20 packets/s of IP, UDP and SRTP overhead (~40 bytes each, ~6 kbit/s): the
        # bottom layer fits with room for repairs and RTCP, the middle one does not.
        pub = room.video_publication(camera)
        q, h, f = await steady_rates(pub)
        assert q * 1.3 < h < f, (q, h, f)  # the layers leave a link between q and h
        link = int((q + h) / 2)
        print(
            f"netns: layers measured by the SFU: {q / 1000:.0f}, {h / 1000:.0f},"
            f" {f / 1000:.0f} kbit/s; 'slow' link {link / 1000:.0f} kbit/s, 200 ms queue"
        )
        await lab.shape_downlink("slow", link, queue=0.2)
        slow = await room.join("slow", publisher=camera)
        await check_publisher(room, "with two subscribers")
        feedback = await room.pages["slow"].evaluate(FEEDBACK)
        print(f"netns: feedback a subscriber negotiates: {feedback}")

        sub = room.video_subscription(slow, camera)
        timeline = Timeline(room, sub, camera)
        try:
            # down to the bottom layer
            try:
                async with asyncio.timeout(SETTLE):
                    while (await timeline.sample())["width"] != 160 or sub.layer != "q":  # noqa: ASYNC110
                        await asyncio.sleep(1)
            except TimeoutError:
                pytest.fail(f"'slow' not on 160-pixel frames of layer q after {SETTLE} s")
            timeline.rows[-1] += "(settled on q)"

            low = await room.join("low", publisher=camera, quality="low")
            took = await room.wait_width("low", camera, 160, 20)
            print(f"netns: 'low' decodes 160 px {took:.1f} s after joining")
            await check_publisher(room, "with three subscribers")
            assert room.video_subscription(low, camera).layer == "q"

            # kept on the bottom layer, frames still decoding
            widths: list[int] = []
            layers: list[str | None] = []
            stall = longest = 0.0
            previous = await decoded(room, "slow", camera)
            first = previous
            at = time.monotonic()
            while time.monotonic() < at + WATCH:
                await asyncio.sleep(0.5)
                stats = await decoded(room, "slow", camera)
                stall = 0.0 if stats["decoded"] > previous["decoded"] else stall + 0.5
                longest = max(longest, stall)
                widths.append(stats["width"])
                layers.append(sub.layer)
                previous = stats
                if len(widths) % 2 == 0:
                    await timeline.sample()
            fps = (previous["decoded"] - first["decoded"]) / WATCH
            queue = await lab.shaping_stats("slow")
            assert queue is not None
            print(
                f"netns: 'slow' over {WATCH} s on its link: layers"
                f" {''.join(x or '-' for x in layers)}, 160-pixel frames"
                f" {widths.count(160) / len(widths):.0%}, {fps:.1f} frames/s decoded,"
                f" longest stall {longest:.1f} s, freezes"
                f" {previous['freezes'] - first['freezes']}"
                f" ({previous['frozen'] - first['frozen']:.1f} s),"
                f" {previous['lost'] - first['lost']} packets lost, queue drops"
                f" {queue.dropped}"
            )
            # Chromium reports its downlink with REMB (the SFU offers goog-remb, no
            # transport-cc) and with the loss of its receiver reports: the selector
            # reads both (Subscription.estimate, the reports' fraction lost)
            assert any("goog-remb" in line for line in feedback)
            assert not any("transport-cc" in line for line in feedback)
            assert timeline.estimates, "no REMB from the shaped subscriber"
            assert widths.count(160) >= 0.6 * len(widths), widths
            assert layers.count("q") >= 0.6 * len(layers), layers
            assert "f" not in layers, layers
            assert longest < MAX_STALL, (longest, widths)
            assert fps >= 7.5, fps  # half the camera's 15 fps

            # the unthrottled one kept the top layer, the "low" one the bottom one
            assert (await decoded(room, "free", camera))["width"] == 640
            estimate = room.video_subscription(free, camera).estimate(time.monotonic())
            print(f"netns: 'free' on layer f, its REMB {estimate}")
            assert room.video_subscription(low, camera).layer == "q"
            assert (await decoded(room, "low", camera))["width"] == 160

            # the shaping lifted: back to 640 pixels within 10 s
            await lab.shape_downlink("slow", None)
            lifted = time.monotonic()
            timeline.rows.append(f"{lifted - timeline.started:5.1f} s  shaping lifted")
            try:
                async with asyncio.timeout(CLIMB):
                    while (await timeline.sample())["width"] != 640:  # noqa: ASYNC110
                        await asyncio.sleep(0.5)
            except TimeoutError:
                pytest.fail(f"'slow' not back on 640-pixel frames {CLIMB} s after the lift")
            print(f"netns: 'slow' decodes 640 px {time.monotonic() - lifted:.1f} s later")
        finally:
            timeline.show()
    print(f"netns: whole test {time.monotonic() - started:.1f} s")
