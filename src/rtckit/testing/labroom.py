"""Chromium pages in an SFU room served inside a NAT lab: simulcast on real, shapeable links.

:class:`LabRoom` gives each named host of a :class:`~rtckit.testing.natlab.NatLab` (no NAT, on
the lab's bridge) its own Chromium, launched through the lab's launcher
(:meth:`~rtckit.testing.natlab.NatLab.chromium_launcher`) with Chromium's fake camera at the
room's frame rate, and runs the ``rtckit`` server (signaling, SFU rooms, ``rtckit.js``) in this
process with its sockets in the lab's public namespace
(:meth:`~rtckit.testing.natlab.NatLab.inside`), so that the caller reads the SFU's state
(:attr:`LabRoom.router`) while the pages join the room through ``rtckit.js``. A host's
downlink is then shaped with :meth:`~rtckit.testing.natlab.NatLab.shape_downlink`.

A publishing page sends its fake camera pinned to 640x360 at 15 fps, video only; rtckit.js
publishes it in three layers q/h/f (160, 320 and 640 pixels wide), which libwebrtc allows at
that size only with :data:`SIMULCAST_TRIAL` (its default is two layers below 960x540).
:meth:`LabRoom.inbound` reads a subscribing page's ``inbound-rtp`` statistics of a
publisher's video, :meth:`LabRoom.outbound` a publishing page's per-layer ones.

``tests/browser/test_sfu_simulcast_netns.py`` and ``benchmarks/simulcast_link.py`` use it.
Needs root, ``ip``, ``tc``, the system Chromium and Playwright (the ``browser`` dependency
group, imported only when a room starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rtckit.errors import ConfigurationError, TopologyError
from rtckit.server.app import _APP_KEY, RtcKitServer
from rtckit.server.config import AuthSettings, RoomsSettings, ServeConfig, ServerSettings
from rtckit.sfu.engine import PublishedTrack, SfuRouter, Subscription
from rtckit.testing.browser import HOST_RESOLVER_RULES, launch_chromium
from rtckit.testing.natlab import PUBLIC_HOST, NatLab
from rtckit.topology.sfu import SfuServerStrategy

__all__ = ["INBOUND", "OUTBOUND", "SIMULCAST_TRIAL", "LabRoom", "steady_rates"]

#: Chromium's switch that lets rtckit.js send three layers of a 640x360 capture
SIMULCAST_TRIAL = "--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/"

# the page: rtckit.js from the server, then join the room (publishing the pinned camera, or
# asking for a quality of the publisher's video before connecting)
_JOIN = """async ([url, room, publish, publisher, quality]) => {
  window.rtc = await import("/rtckit.js");
  const sig = await window.rtc.connectSignaling(url, {room});
  window.room = window.rtc.joinRoom(sig);
  if (quality) window.room.setVideoQuality(publisher, quality);
  if (publish) {
    const stream = await navigator.mediaDevices.getUserMedia({video: {
      width: {exact: 640}, height: {exact: 360}, frameRate: {exact: 15}}});
    window.room.publish(stream.getVideoTracks()[0], stream);
  }
  return sig.peerId;
}"""

#: The page script that gives the publisher's per-rid [frame width, frames encoded,
#: limitation, media bytes sent (without retransmissions: libwebrtc probes its uplink with
#: unasked ones), target bit/s], and its selected candidate pair's
#: ``availableOutgoingBitrate``
OUTBOUND = """async () => {
  const report = await window.room.session.pc.getStats();
  const layers = {};
  let available = null;
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      layers[s.rid || ""] = [s.frameWidth || 0, s.framesEncoded || 0,
        s.qualityLimitationReason, (s.bytesSent || 0) - (s.retransmittedBytesSent || 0),
        s.targetBitrate || 0];
    }
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = report.get(s.selectedCandidatePairId);
      if (pair && pair.availableOutgoingBitrate !== undefined) {
        available = pair.availableOutgoingBitrate;
      }
    }
  });
  return {layers, available, at: performance.now()};
}"""

#: The page script that gives a subscriber's inbound video from the publisher given as
#: argument (null before it arrives); ``frozen`` is Chromium's ``totalFreezesDuration`` in
#: seconds
INBOUND = """async (publisher) => {
  const room = window.room;
  if (!room.session || !room.session.pc) return null;
  const report = await room.session.pc.getStats();
  let out = null;
  report.forEach((s) => {
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    const entry = room.remote.get(s.mid);
    if (!entry || entry.participantId !== publisher) return;
    out = {width: s.frameWidth || 0, decoded: s.framesDecoded || 0,
      freezes: s.freezeCount || 0, frozen: s.totalFreezesDuration || 0,
      lost: s.packetsLost || 0, received: s.packetsReceived || 0, bytes: s.bytesReceived || 0,
      nacks: s.nackCount || 0, plis: s.pliCount || 0, keyframes: s.keyFramesDecoded || 0};
  });
  return out;
}"""


def _show_error(name: str, error: object) -> None:
    print(f"{name}: {error}")


class LabRoom:
    """An SFU room served inside *lab*, and one Chromium page per host of *hosts*.

    An async context manager: entering it adds the hosts to the lab, starts the server in the
    lab's public namespace and a browser in each host; the calling thread stays in the public
    namespace until the exit (so that the server's later sockets, a subscriber's ICE ones,
    are there too). *directory* holds the browsers' launchers and homes.
    """

    def __init__(
        self,
        lab: NatLab,
        hosts: Sequence[str],
        directory: Path,
        *,
        room: str = "sfu",
        fps: int = 15,
    ) -> None:
        self.lab = lab
        self.hosts = tuple(hosts)
        self.directory = directory
        self.room = room
        self.fps = fps
        #: each host's page, by host name (once entered)
        self.pages: dict[str, Any] = {}
        self.origin = ""
        self.ws_url = ""
        self._server: RtcKitServer | None = None
        self._stack = contextlib.ExitStack()
        self._async_stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        for name in self.hosts:
            await self.lab.add_host(name)
        address = self.lab.public_address
        config = ServeConfig(
            server=ServerSettings(host=address, port=0, insecure=True),
            auth=AuthSettings(mode="open"),
            rooms=RoomsSettings(default_topology="sfu"),
        )
        self._stack.enter_context(self.lab.inside(PUBLIC_HOST))
        try:
            stack = self._async_stack
            self._server = await stack.enter_async_context(RtcKitServer(config))
            self.origin = self._server.url(address).rstrip("/")
            self.ws_url = self.origin.replace("http", "ws", 1) + "/ws"
            args = [
                SIMULCAST_TRIAL,
                # the server by IP address: excluded from the rule that resolves no name
                f"--host-resolver-rules={HOST_RESOLVER_RULES}, EXCLUDE {address}",
                # the camera on plain HTTP (a secure context is localhost or HTTPS)
                f"--unsafely-treat-insecure-origin-as-secure={self.origin}",
            ]
            for name in self.hosts:
                launcher = self.lab.chromium_launcher(name, self.directory)
                browser = await stack.enter_async_context(
                    launch_chromium(executable_path=str(launcher), fps=self.fps, extra_args=args)
                )
                page: Any = await browser.new_page()
                page.on("pageerror", functools.partial(_show_error, name))
                await page.goto(self.origin + "/config.json")  # the origin of rtckit.js
                self.pages[name] = page
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for page in self.pages.values():
                with contextlib.suppress(Exception):
                    await page.evaluate("window.room && window.room.close()")
            await self._async_stack.aclose()
        finally:
            self.pages = {}
            self._stack.close()

    async def join(
        self,
        name: str,
        *,
        publish: bool = False,
        publisher: str | None = None,
        quality: str | None = None,
    ) -> str:
        """*name*'s page joins the room, publishing its camera with *publish*, asking for
        *quality* of *publisher*'s video if given; returns its participant id."""
        joined = await self.pages[name].evaluate(
            _JOIN, [self.ws_url, self.room, publish, publisher, quality]
        )
        return str(joined)

    async def inbound(self, name: str, publisher: str) -> dict[str, Any] | None:
        """*name*'s inbound video statistics from *publisher* (see :data:`INBOUND`)."""
        stats = await self.pages[name].evaluate(INBOUND, publisher)
        return None if stats is None else dict(stats)

    async def outbound(self, name: str) -> dict[str, Any]:
        """*name*'s outbound video statistics (see :data:`OUTBOUND`)."""
        return dict(await self.pages[name].evaluate(OUTBOUND))

    async def wait_width(
        self, name: str, publisher: str, width: int, within: float, *, step: float = 0.2
    ) -> float:
        """Seconds until *name* decodes *publisher*'s video *width* pixels wide, frames rising.

        Raises :class:`TimeoutError` (with the last statistics) after *within* seconds.
        """
        started = time.monotonic()
        seen = None
        first = None
        while time.monotonic() < started + within:
            seen = await self.inbound(name, publisher)
            if seen is not None and seen["width"] == width:
                if first is None:
                    first = seen["decoded"]
                elif seen["decoded"] > first:
                    return time.monotonic() - started
            else:
                first = None
            await asyncio.sleep(step)
        raise TimeoutError(
            f"{name!r}: no {width}-pixel frames decoded within {within} s (last stats: {seen})"
        )

    @property
    def router(self) -> SfuRouter:
        """The room's SFU router (the room must have people in it)."""
        if self._server is None or self._server.app is None:
            raise ConfigurationError("LabRoom.router needs an entered LabRoom")
        state: Any = self._server.app[_APP_KEY]  # the app's private state: its strategies
        strategy = state.strategies.get(self.room)
        router = strategy.router if isinstance(strategy, SfuServerStrategy) else None
        if router is None:
            raise TopologyError(f"room {self.room!r} has no running SFU (nobody in it yet?)")
        return router

    def video_subscription(self, subscriber: str, publisher: str) -> Subscription:
        """*subscriber*'s subscription to *publisher*'s video."""
        (sub,) = [
            s
            for s in self.router.subscriptions(subscriber)
            if s.key.participant == publisher and s.transceiver.kind == "video"
        ]
        return sub

    def video_publication(self, publisher: str) -> PublishedTrack:
        """*publisher*'s simulcast video publication."""
        (pub,) = [
            p
            for k, p in self.router.publications.items()
            if k.participant == publisher and p.layers
        ]
        return pub


async def steady_rates(pub: PublishedTrack, *, within: int = 15) -> list[float]:
    """*pub*'s layer bitrates as the SFU measures them, once two readings 1 s apart agree.

    The encoders ramp up over their first seconds, and the SFU smooths its figures. Raises
    :class:`TimeoutError` if they do not settle within *within* readings.
    """
    previous: list[float] = []
    for _ in range(within):
        rates = [rate or 0.0 for rate in pub.layer_bitrates()]
        if len(rates) == len(previous) and all(
            old > 0 and abs(new - old) < 0.1 * old for new, old in zip(rates, previous, strict=True)
        ):
            return rates
        previous = rates
        await asyncio.sleep(1)
    raise TimeoutError(f"the layers' bitrates do not settle: {previous}")
