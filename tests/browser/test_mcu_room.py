"""An MCU room with two Chromium pages (rtckit.js) and two aiortc participants (join_room).

The pages publish Chromium's fake camera and microphone; the aiortc participants publish a
known colour and a known tone each. Everybody gets exactly one video and one audio stream
from the MCU; the aiortc participants see both aiortc colours in their grid cells and hear
the other's tone but not their own; when a page leaves, the layout changes and the stream
goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import attrs
import numpy as np
from aiohttp import web

from rtckit.peer import SessionConfig
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig
from rtckit.signaling.wsserver import SignalingServer
from rtckit.testing import require_executable
from rtckit.testing.browser import launch_chromium
from rtckit.topology import Topology, join_room
from rtckit.topology.mcu import MCU_PEER_ID, McuRoom, McuServerStrategy
from rtckit.topology.strategies import RoomStrategies
from test_mcu_engine import COLOURS, ColourTrack, ToneTrack, shows, wait_for
from test_topology_mcu import SMALL_MCU, Participant

# default heartbeat timings: a busy 2-core machine running Chromium must not look like a dead path
BROWSER_MCU = attrs.evolve(SMALL_MCU, session=SessionConfig())

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtckit mcu</title></head>
<body><script type="module">
import * as rtc from "/ws/rtckit.js";
window.rtc = rtc;
window.ready = true;
</script></body></html>"""

# The same app code as for a mesh or SFU room: connect, joinRoom, publish, listen.
JOIN = """async (url) => {
  const sig = await window.rtc.connectSignaling(url, {room: "mcu"});
  const room = window.rtc.joinRoom(sig);
  window.sig = sig;
  window.room = room;
  window.tracks = [];
  window.messages = [];
  // the remote tracks now received (a connection replacement ends tracks and adds new ones)
  room.addEventListener("track", ({detail}) => {
    window.tracks.push([detail.participantId, detail.kind, detail.track]);
  });
  room.addEventListener("trackremoved", ({detail}) => {
    window.tracks = window.tracks.filter((t) => t[2] !== detail.track);
  });
  room.addEventListener("message", ({detail}) => window.messages.push(detail));
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  for (const track of stream.getTracks()) room.publish(track, stream);
  return [sig.peerId, room.topology];
}"""

DECODED = """async () => {
  const room = window.room;
  if (!room.session || !room.session.pc) return 0;
  let frames = 0;
  (await room.session.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded || 0;
  });
  return frames;
}"""


# Chromium's fake microphone beeps at 400 Hz (short bursts, so its energy spreads tens of Hz
# around 400 Hz and its odd harmonics): the aiortc tones here sit on even multiples instead.
PAGE_SAFE_TONES = {"red": 1600.0, "green": 2400.0}


def peak_to_floor(samples: np.ndarray, freq: float) -> float:
    """A tone's FFT peak (within 5 Hz) over the median magnitude 20-150 Hz away from it."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1 / 48000)
    distance = np.abs(freqs - freq)
    peak = float(spectrum[distance <= 5].max())
    floor = float(np.median(spectrum[(distance >= 20) & (distance <= 150)]))
    return peak / max(floor, 1e-9)


@contextlib.asynccontextmanager
async def site() -> AsyncIterator[tuple[str, str, RoomStrategies]]:
    server = SignalingServer(
        SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="mcu", topology="mcu")])
    )
    app = web.Application()
    server.add_routes(app, "/ws")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    try:
        async with RoomStrategies(
            server.hub,
            factories={Topology.MCU: lambda hub: McuServerStrategy(hub, config=BROWSER_MCU)},
        ) as strategies:
            port = runner.addresses[0][1]
            yield f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/ws", strategies
    finally:
        await runner.cleanup()


async def test_two_pages_and_two_aiortc_participants_in_an_mcu_room() -> None:
    require_executable("chromium", hint="apt-get install chromium")

    async with (
        asyncio.timeout(150),
        site() as (http_url, ws_url, strategies),
        contextlib.AsyncExitStack() as stack,
    ):
        people: dict[str, Participant] = {}
        for name in ("red", "green"):
            client = await stack.enter_async_context(
                SignalingClient.connect(ws_url, room="mcu", metadata={"name": name})
            )
            room = await stack.enter_async_context(
                join_room(client, session_config=SessionConfig())
            )
            assert isinstance(room, McuRoom)
            await room.publish(ColourTrack(COLOURS[name]))
            await room.publish(ToneTrack(PAGE_SAFE_TONES[name]))
            people[name] = Participant(name, client, room)
            stack.push_async_callback(people[name].aclose)
        browser = await stack.enter_async_context(launch_chromium(fps=15))
        pages = []
        page_ids = []
        for _ in range(2):
            page = await browser.new_page()
            await page.goto(http_url)
            await page.wait_for_function("window.ready === true")
            peer_id, topology = await page.evaluate(JOIN, ws_url)
            assert topology == "mcu"
            pages.append(page)
            page_ids.append(peer_id)

        strategy = strategies.running["mcu"]
        assert isinstance(strategy, McuServerStrategy)
        ids = {name: p.room.local_id for name, p in people.items()}

        def cell(peer_id: str) -> tuple[int, int, int, int] | None:
            engine = strategy.engine
            return None if engine is None else engine.cell_of(peer_id)

        def colours_shown(p: Participant) -> bool:
            return all(shows(p.latest, cell(ids[n]), n) for n in ("red", "green"))

        await wait_for(lambda: len(strategy.members) == 4, "four participants at the MCU", 40)
        await wait_for(
            lambda: all(colours_shown(p) for p in people.values()),
            "both aiortc colours in the grid at the aiortc participants",
            60,
        )
        # pages decode the composite: exactly one video and one audio track, from the MCU
        for page in pages:
            async with asyncio.timeout(40):
                while await page.evaluate(DECODED) < 10:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            tracks = await page.evaluate("() => window.tracks.map((t) => [t[0], t[1]])")
            assert sorted(tracks) == [[MCU_PEER_ID, "audio"], [MCU_PEER_ID, "video"]]
            await page.wait_for_function("window.room.layout.length === 4", timeout=10000)
        for p in people.values():
            assert sorted(p.live()) == [(MCU_PEER_ID, "audio"), (MCU_PEER_ID, "video")]
            assert set(p.room.participants) == set(ids.values()) - {p.room.local_id} | set(page_ids)

        # mix-minus at the aiortc participants
        for p in people.values():
            p.recording = True
        await wait_for(
            lambda: all(sum(a.size for a in p.audio) >= 48000 for p in people.values()),
            "one second of audio at the aiortc participants",
        )
        for p in people.values():
            p.recording = False
            samples = np.concatenate(p.audio)[-48000:]
            other = "green" if p.name == "red" else "red"
            # the pages' fake microphones beep (broadband): compare each tone's peak with the
            # spectrum around it rather than with the other tone
            own = peak_to_floor(samples, PAGE_SAFE_TONES[p.name])
            heard = peak_to_floor(samples, PAGE_SAFE_TONES[other])
            assert heard > 10, (p.name, own, heard)
            assert own < 4, (p.name, own, heard)

        # a data message from a page reaches everyone else with the page's id
        await pages[0].evaluate("() => window.room.send('hi from a page')")
        await pages[1].wait_for_function(
            f"window.messages.some(m => m.data === 'hi from a page' "
            f"&& m.participantId === '{page_ids[0]}')",
            timeout=10000,
        )
        people["red"].room.send("hi from red")
        await pages[0].wait_for_function(
            f"window.messages.some(m => m.data === 'hi from red' "
            f"&& m.participantId === '{ids['red']}')",
            timeout=10000,
        )

        # a page leaves mid-call: three tiles, the stream goes on
        await pages[1].evaluate("() => { window.room.close(); window.sig.close(); }")
        before = people["red"].video_frames
        await wait_for(
            lambda: (
                cell(page_ids[1]) is None
                and len(strategy.members) == 3
                and colours_shown(people["red"])
                and people["red"].video_frames > before + 10
            ),
            "the layout without the page that left",
            40,
        )
        await pages[0].wait_for_function("window.room.layout.length === 3", timeout=10000)
        frames = await pages[0].evaluate(DECODED)
        async with asyncio.timeout(20):
            while await pages[0].evaluate(DECODED) < frames + 10:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        await pages[0].evaluate("() => { window.room.close(); window.sig.close(); }")
