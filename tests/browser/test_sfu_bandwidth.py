"""A Chromium simulcast publisher; the SFU picks each aiortc subscriber's layer from its link.

The page publishes 640x360 at 15 fps in three layers (see test_sfu_simulcast.py). Two aiortc
subscribers keep the preference "high". One has a free link and decodes 640-pixel frames.
The other's link is limited to 80 kbit/s by a policer on the SFU's send path (packets over
the budget are dropped, as a shaped link would): the SFU moves it down to the 160-pixel layer
and keeps it there, and it climbs back to the top layer within 10 s once the limit is
lifted (the SFU probes the next layer up). The publisher's layers are not limited by CPU.

What is checked while limited: the layer forwarded, packets still sent, probes made with
padding (the video is not switched for them), and frames still decoded by the limited
subscriber: the SFU repeats retransmissions lost on the limited link, and restarts its stream
at a keyframe past a hole that stays (aiortc's jitter buffer would wait for it for tens of
seconds, without asking for a keyframe).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

from browser.test_sfu_room import site
from browser.test_sfu_simulcast import (
    JOIN,
    OUTBOUND,
    frames_of_width,
    subscriber,
    track_of,
)
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.testing.labroom import SIMULCAST_TRIAL
from rtckit.topology.sfu import SfuServerStrategy

#: Chromium's fake camera is easy to encode: its layers take about 60, 105 and 200 kbit/s
#: (measured by the SFU), so the limit that leaves room for the bottom layer only is far
#: lower than the issue's 300 kbit/s for real cameras
LINK_BITRATE = 80_000


class Policer:
    """A token bucket: a link of *bitrate* bit/s with a 300 ms burst; excess packets drop."""

    def __init__(self, bitrate: float) -> None:
        self.bitrate = bitrate
        self.depth = bitrate * 0.3 / 8
        self.tokens = self.depth
        self.at = time.monotonic()
        self.dropped = 0
        self.offered = 0  # bytes

    def __call__(self, data: bytes) -> bool:
        now = time.monotonic()
        self.offered += len(data)
        self.tokens = min(self.depth, self.tokens + (now - self.at) * self.bitrate / 8)
        self.at = now
        if len(data) > self.tokens:
            self.dropped += 1
            return False
        self.tokens -= len(data)
        self.passed = getattr(self, "passed", 0) + len(data)
        return True


async def test_a_constrained_subscriber_gets_the_bottom_layer_and_climbs_back() -> None:
    require_executable("chromium", hint="apt-get install chromium")
    async with (
        asyncio.timeout(180),
        site() as (http_url, ws_url, strategies),
        contextlib.AsyncExitStack() as stack,
    ):
        free_room, free_published = await subscriber(stack, ws_url)
        slow_room, slow_published = await subscriber(stack, ws_url)
        browser = await stack.enter_async_context(
            launch_chromium(fps=15, extra_args=[SIMULCAST_TRIAL])
        )
        page = await browser.new_page()
        await page.goto(http_url)
        await page.wait_for_function("window.ready === true")
        publisher = await page.evaluate(JOIN, [ws_url])
        free_track = await track_of(free_published, publisher)
        slow_track = await track_of(slow_published, publisher)
        await frames_of_width(free_track, 640, within=30)
        await frames_of_width(slow_track, 640, within=30)

        strategy = strategies.running["sfu"]
        assert isinstance(strategy, SfuServerStrategy)
        router = strategy.router
        assert router is not None
        (sub,) = [
            s
            for s in router.subscriptions(slow_room.local_id)
            if s.key.participant == publisher and s.transceiver.kind == "video"
        ]
        policer = Policer(LINK_BITRATE)
        frame_times: list[float] = []

        async def read_frames() -> None:
            while True:
                await slow_track.recv()
                frame_times.append(time.monotonic())

        reader = asyncio.create_task(read_frames())
        padding_before = router.stats().padding_packets_sent
        sub.set_send_filter(policer)
        # the SFU moves it down within a few seconds, then keeps it low: probes of the next
        # layer fail (loss) and step back; packets keep flowing to it
        async with asyncio.timeout(15):
            while sub.layer != "q":  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        print(f"bandwidth: limited to {LINK_BITRATE} bit/s, on the bottom layer")
        rewriter = sub.rewriter
        assert rewriter is not None
        sent = rewriter.packets_sent
        offered, started = policer.offered, time.monotonic()
        layers: list[str | None] = []
        for _ in range(40):
            await asyncio.sleep(0.25)
            layers.append(sub.layer)
        # what the SFU sent towards the limited link: the bottom layer, probes, repairs; not
        # the publisher's unasked re-sent packets (libwebrtc pads with tens per second)
        offered_rate = (policer.offered - offered) * 8 / (time.monotonic() - started)
        print(f"bandwidth: offered to the limited link: {offered_rate / 1000:.0f} kbit/s")
        assert offered_rate < 2 * LINK_BITRATE
        print(f"bandwidth: 10 s limited: layers {''.join(x or '-' for x in layers)}")
        assert layers.count("q") >= 0.6 * len(layers)
        assert "f" not in layers
        assert rewriter.packets_sent > sent + 100  # still forwarding (15 fps)
        assert router.stats().padding_packets_sent > padding_before  # probes pad
        # and the limited subscriber still decodes: frozen (frame gaps over 200 ms) for less
        # than a third of the 10 s on the bottom layer (a loss on the policed link costs up to
        # about 1.5 s before the stream restarts at a keyframe)
        ended = time.monotonic()
        reader.cancel()
        times = [started, *(t for t in frame_times if started <= t <= ended), ended]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        frozen = sum(g for g in gaps if g > 0.2)
        print(f"bandwidth: limited subscriber frozen {frozen:.2f} s of {ended - started:.1f} s")
        assert frozen < (ended - started) / 3
        # the free subscriber kept the top layer all along
        (free_sub,) = [
            s
            for s in router.subscriptions(free_room.local_id)
            if s.key.participant == publisher and s.transceiver.kind == "video"
        ]
        assert free_sub.layer == "f"
        await frames_of_width(free_track, 640, within=5)

        sub.set_send_filter(None)
        lifted = time.monotonic()
        async with asyncio.timeout(10):
            while sub.layer != "f":  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        print(f"bandwidth: limit lifted, top layer after {time.monotonic() - lifted:.2f} s")
        took, _ = await frames_of_width(slow_track, 640, within=40)
        print(f"bandwidth: 640-pixel frames decoded {took:.2f} s later")

        outbound = await page.evaluate(OUTBOUND)
        print(f"bandwidth: publisher outbound {outbound}")
        assert all(v[2] != "cpu" for v in outbound.values()), outbound
        await page.evaluate("window.room.close()")
