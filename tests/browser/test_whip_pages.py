"""WHIP and WHEP in Chromium against ``rtckit demo``'s server (RtcKitServer, room tokens).

* An independent browser WHIP client, the npm package ``whip-whep`` (vendored unmodified in
  ``tests/data/whip-whep``, see its README), publishes the fake camera from a page of another
  origin (CORS, bearer token, trickle by ``PATCH``) into an SFU room; an aiortc member of the room
  decodes its video; the library's ``stop()`` (``DELETE``) makes the publisher leave.
  The library's WHEP client, in another page, plays that publisher (named by its token
  identity) in a ``<video>``.
* The demo page shows a WHIP publisher (a bare aiortc connection, video only, there before
  the page) as a participant labelled "WHIP", plays its video (the rtckit.js fix of
  docs/topics/browser-quirks.rst), and links to the WHEP player page (``whep.html``), naming
  the publisher by its token identity; the player page plays the publisher, and the room, and
  DELETEs its session on ``pagehide``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtckit.peer import SessionConfig
from rtckit.peer.media import PatternConfig, TestPatternTrack
from rtckit.server.app import RtcKitServer
from rtckit.server.config import (
    AuthSettings,
    RoomSettings,
    RoomsSettings,
    ServeConfig,
    ServerSettings,
)
from rtckit.signaling import SignalingClient, TokenAuth
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.topology import ParticipantJoined, ParticipantLeft, TrackPublished, join_room

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Response

TIMEOUT = 150  # Chromium encodes, aiortc decodes, on 2 shared cores
LIBRARY = Path(__file__).parents[1] / "data" / "whip-whep"
SECRET = "w" * 40
ROOM = "stage"

# The page of another origin that publishes with the library (the icon link: no favicon 404).
LIBRARY_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>whip-whep</title>
<link rel="icon" href="data:,"></head><body><script type="module">
import { WHIPClient } from "/lib/whip.js";
import { WHEPClient } from "/lib/whep.js";
window.publish = async (url, token) => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true });
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: [] });
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  const whip = new WHIPClient();
  await whip.publish(pc, url, token);
  window.whip = whip;
  window.pc = pc;
  return whip.resourceURL.href;
};
window.view = async (url, token) => {
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: [] });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  const video = document.createElement("video");
  Object.assign(video, { muted: true, autoplay: true, playsInline: true });
  document.body.append(video);
  pc.ontrack = ({ track, streams }) => {
    if (track.kind === "video") video.srcObject = streams[0] || new MediaStream([track]);
  };
  const whep = new WHEPClient();
  await whep.view(pc, url, token);
  window.video = video;
  return whep.resourceURL.href;
};
window.ready = true;
</script></body></html>"""


def test_the_vendored_library_is_the_one_its_readme_names() -> None:
    readme = (LIBRARY / "README").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^  (\S+)\s+sha256 ([0-9a-f]{64})$", readme, re.MULTILINE))
    assert set(listed) == {"whip-whep-1.2.0.tgz", "whip.js", "whep.js", "LICENSE"}
    for name in ("whip.js", "whep.js", "LICENSE"):
        assert hashlib.sha256((LIBRARY / name).read_bytes()).hexdigest() == listed[name], name


def _config(auth: str = "token") -> ServeConfig:
    return ServeConfig(
        server=ServerSettings(host="127.0.0.1", port=0, insecure=True),
        auth=AuthSettings(mode="token", secret=SECRET)
        if auth == "token"
        else AuthSettings(mode="open"),
        rooms=RoomsSettings(declared=(RoomSettings(name=ROOM, topology="sfu"),)),
    )


def _token(identity: str, *permissions: str) -> str:
    return TokenAuth(secret=SECRET).mint(room=ROOM, identity=identity, permissions=permissions)


@contextlib.asynccontextmanager
async def _library_site() -> AsyncIterator[str]:
    """The library's page and modules, from an origin of their own on loopback."""
    app = web.Application()

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=LIBRARY_PAGE, content_type="text/html")

    async def module(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.Response(
            text=(LIBRARY / name).read_text(encoding="utf-8"), content_type="text/javascript"
        )

    app.router.add_get("/", index)
    app.router.add_get("/lib/{name:(whip|whep)\\.js}", module)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


def _watch_errors(page: Page) -> list[str]:
    """The page's uncaught errors and console errors (a failed PATCH is one of them)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.request.method} {r.url}: {r.status}") if r.status >= 400 else None
        ),
    )
    return errors


_PLAYING = "(v) => ({width: v.videoWidth, time: v.currentTime})"


async def _plays(page: Page, selector: str, within: float = 60) -> dict[str, Any]:
    """The size of the video *selector* shows once it plays (its clock advances)."""
    video = page.locator(selector)
    first: dict[str, Any] = {"width": 0, "time": 0}
    try:
        async with asyncio.timeout(within):
            while first["width"] == 0:
                first = await video.evaluate(_PLAYING)
                await asyncio.sleep(0.2)
            later = first
            while later["time"] <= first["time"]:
                await asyncio.sleep(0.2)
                later = await video.evaluate(_PLAYING)
    except TimeoutError:
        pytest.fail(f"{selector} does not play in {within} s: {first}")
    return first


async def _library_page(browser: Browser, url: str, errors: list[str]) -> Page:
    """A new page of the library's site, loaded; its errors go to *errors*."""
    page = await browser.new_page()
    errors += _watch_errors(page)
    await page.goto(url)
    await page.wait_for_function("window.ready === true")
    return page


class _Member:
    """An aiortc member of the room: what it saw join, leave and be published."""

    def __init__(self) -> None:
        self.joined: list[ParticipantJoined] = []
        self.left: list[str] = []
        self.published: list[TrackPublished] = []

    async def run(self, room: Any) -> None:
        async for event in room.events():
            if isinstance(event, ParticipantJoined):
                self.joined.append(event)
            elif isinstance(event, ParticipantLeft):
                self.left.append(event.participant_id)
            elif isinstance(event, TrackPublished):
                self.published.append(event)

    async def track_of(self, participant: str, within: float = 60) -> Any:
        async with asyncio.timeout(within):
            while True:
                for event in self.published:
                    if event.participant_id == participant:
                        return event.track
                await asyncio.sleep(0.1)


async def test_the_npm_whip_client_publishes_a_camera_into_an_sfu_room() -> None:
    require_executable("chromium", hint="apt-get install chromium")
    member = _Member()
    async with (
        asyncio.timeout(TIMEOUT),
        RtcKitServer(_config(), demo=True) as server,
        _library_site() as page_url,
        contextlib.AsyncExitStack() as stack,
    ):
        ws_url = server.url("127.0.0.1").replace("http://", "ws://") + "ws"
        client = await stack.enter_async_context(
            SignalingClient.connect(ws_url, room=ROOM, token=_token("viewer", "subscribe"))
        )
        room = await stack.enter_async_context(join_room(client, session_config=SessionConfig()))
        task = asyncio.create_task(member.run(room))
        stack.callback(task.cancel)
        browser = await stack.enter_async_context(launch_chromium(fps=15))
        errors: list[str] = []
        page = await _library_page(browser, page_url, errors)
        whip_url = f"{server.url('127.0.0.1')}whip/{ROOM}"
        resource = await page.evaluate(
            "([url, token]) => window.publish(url, token)", [whip_url, _token("cam", "publish")]
        )
        assert resource.startswith(f"{server.url('127.0.0.1')}whip/{ROOM}/")
        await page.wait_for_function("window.pc.connectionState === 'connected'", timeout=30_000)
        async with asyncio.timeout(30):
            while not member.joined:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        (publisher,) = member.joined
        assert publisher.participant_id.startswith("whip-")
        assert publisher.metadata == {"rtckit_role": "whip"}
        track = await member.track_of(publisher.participant_id)
        sizes = [((frame := await track.recv()).width, frame.height) for _ in range(10)]
        assert sizes[-1] == (640, 480), sizes  # Chromium's fake camera, decoded by aiortc
        # the library's WHEP client plays that publisher, named by its token identity
        viewer = await _library_page(browser, page_url, errors)
        whep_url = f"{server.url('127.0.0.1')}whep/{ROOM}/cam"
        session = await viewer.evaluate(
            "([url, token]) => window.view(url, token)", [whep_url, _token("tv", "subscribe")]
        )
        assert session.startswith(f"{server.url('127.0.0.1')}whep/{ROOM}/~/")
        assert (await _plays(viewer, "video"))["width"] == 640
        await viewer.close()
        await page.evaluate("window.whip.stop()")  # DELETE
        async with asyncio.timeout(20):
            while publisher.participant_id not in member.left:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert not errors, errors
        async with aiohttp.ClientSession() as http, http.delete(resource) as gone:
            assert gone.status == 404


async def _aiortc_whip_publisher(
    http: aiohttp.ClientSession, url: str, token: str | None
) -> tuple[RTCPeerConnection, str]:
    """The docs' bare aiortc WHIP client (docs/howto/whip.rst), with a token if given."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(
        TestPatternTrack(PatternConfig(width=320, height=240, fps=15)), direction="sendonly"
    )
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=pc.localDescription.sdp, headers=headers) as response:
        assert response.status == 201, await response.text()
        location = response.headers["Location"]
        answer = await response.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc, location


_TILE = """(label) => {
  const tile = [...document.querySelectorAll('#grid .tile')]
    .find((t) => t.querySelector('.role')?.textContent === label);
  if (!tile) return null;
  const video = tile.querySelector('video');
  const link = tile.querySelector('a.whep-link');
  return {name: tile.querySelector('.name').textContent, id: tile.dataset.peerId,
          width: video.videoWidth, time: video.currentTime,
          link: link ? link.getAttribute('href') : null};
}"""


@pytest.mark.parametrize("auth", ["token", "open"])
async def test_the_demo_page_shows_a_whip_publisher_and_links_to_whep(auth: str) -> None:
    """Names: with tokens, the identities (the page's differs from the name it types);
    without, the WHIP publisher's peer id and the page's metadata name."""
    require_executable("chromium", hint="apt-get install chromium")
    tokens = auth == "token"
    async with (
        asyncio.timeout(TIMEOUT),
        RtcKitServer(_config(auth), demo=True) as server,
        aiohttp.ClientSession() as http,
        contextlib.AsyncExitStack() as stack,
    ):
        base = server.url("127.0.0.1")
        pc, _location = await _aiortc_whip_publisher(
            http, f"{base}whip/{ROOM}", _token("obs", "publish") if tokens else None
        )
        stack.push_async_callback(pc.close)
        browser = await stack.enter_async_context(launch_chromium(fps=15))
        page = await browser.new_page()
        errors = _watch_errors(page)
        ada = _token("ada-1", "publish", "subscribe")
        query = f"&token={ada}" if tokens else ""
        await page.goto(f"{base}?room={ROOM}{query}")
        await page.fill("#name-input", "Ada")
        await page.click("#join-button")
        await page.wait_for_selector("#call:not([hidden])", timeout=20_000)
        first: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(60):
                while first is None or first["width"] == 0:
                    first = await page.evaluate(_TILE, "WHIP")
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pytest.fail(f"no WHIP tile playing in 60 s: {first}")
        assert first["id"].startswith("whip-")
        publisher = "obs" if tokens else first["id"]  # its token identity, else its peer id
        assert first["name"] == publisher
        await asyncio.sleep(1)
        later = await page.evaluate(_TILE, "WHIP")
        assert later["time"] > first["time"], (first, later)  # playing
        assert first["width"] == 320
        link = f"/whep.html?room={ROOM}&participant={publisher}{query}"
        assert first["link"] == link
        room_link = await page.get_attribute("#whep-button", "href")
        assert room_link == f"/whep.html?room={ROOM}{query}"
        # the page's own tile: its token identity, else the name it joined with
        own = await page.get_attribute("#grid .tile.local a.whep-link", "href")
        me = "ada-1" if tokens else "Ada"
        assert own == f"/whep.html?room={ROOM}&participant={me}{query}"
        # the player page plays the publisher, then the room (its first publisher of video:
        # the WHIP one), and ends its session when it goes away
        for href in (link, room_link):
            player = await browser.new_page()
            errors += _watch_errors(player)
            await player.goto(base + href.lstrip("/"))
            assert (await _plays(player, "#video"))["width"] == 320, href
            assert await player.text_content("#status") == "Playing"
            resource = await player.evaluate("window.rtckitWhep.resource")
            assert resource.startswith(f"{base}whep/{ROOM}/~/"), resource

            # leaving the page (its pagehide event) DELETEs the session; the event is sent
            # here, the page stays, so that the request can be seen (a keepalive request sent
            # while a page unloads is not reported to Playwright; and a browser closes the
            # connection of a page it leaves, which ends the session even without a DELETE)
            def is_delete(response: Response, resource: str = resource) -> bool:
                return response.request.method == "DELETE" and response.url == resource

            async with player.expect_response(is_delete, timeout=10_000) as deleted:
                await player.evaluate(
                    "window.dispatchEvent(new PageTransitionEvent('pagehide', {persisted: false}))"
                )
            assert (await deleted.value).status == 200
            async with http.options(resource) as probe:
                assert probe.status == 404
            await player.close()
        assert not errors, errors


async def test_the_room_link_of_an_mcu_room_plays_the_mix() -> None:
    require_executable("chromium", hint="apt-get install chromium")
    async with (
        asyncio.timeout(TIMEOUT),
        RtcKitServer(_config("open"), demo=True) as server,
        launch_chromium(fps=15) as browser,
    ):
        base = server.url("127.0.0.1")
        page = await browser.new_page()
        errors = _watch_errors(page)
        await page.goto(f"{base}?room=mixed")
        await page.fill("#name-input", "Ada")
        await page.check('input[name="topology"][value="mcu"]')
        await page.click("#join-button")
        await page.wait_for_selector("#call:not([hidden])", timeout=20_000)
        assert await page.get_attribute("#whep-button", "href") == "/whep.html?room=mixed"
        assert await page.locator("#grid .tile a.whep-link").count() == 0  # one mix, no one
        player = await browser.new_page()
        errors += _watch_errors(player)
        await player.goto(f"{base}whep.html?room=mixed")
        assert (await _plays(player, "#video"))["width"] > 0  # the room's composite picture
        assert not errors, errors
