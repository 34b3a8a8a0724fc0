"""rtckit's WHIP and WHEP clients (:mod:`rtckit.whip.client`) and their CLI, on loopback.

WhipClient publishes into an SFU room of a real :class:`~rtckit.whip.WhipEndpoint` (the
server of tests/test_whip_server.py) where a real room member receives it. WhepClient plays
from a small WHEP endpoint written here on a bare aiortc peer (a test pattern and a tone),
and records what it receives without transcoding; the file is read back with PyAV.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtckit.errors import WhipError
from rtckit.peer.media import TestPatternTrack, ToneTrack, read_frame_counter
from rtckit.stun.server import StunServer, StunServerConfig
from rtckit.topology import ParticipantLeft, TrackPublished, TrackUnpublished
from rtckit.whip.client import WhepClient, WhipClient, WhipClientConfig, open_source
from rtckit.whip.recording import EncodedRecorder, vp8_key_frame_size
from test_whip_server import SMALL, Server, member, running, serving

SRC = Path(__file__).resolve().parents[1] / "src"


@contextlib.asynccontextmanager
async def whip_server(*, token_auth: bool = True) -> AsyncIterator[tuple[Server, list[str]]]:
    """The WHIP endpoint of test_whip_server, announcing a real STUN server on loopback."""
    config = StunServerConfig(bind=[("127.0.0.1", 0)], udp_rate_limit=None)
    async with running(token_auth=token_auth) as server, StunServer(config) as stun:
        host, port = stun.udp_addresses[0]
        urls = [f"stun:{host}:{port}"]
        assert server.whip is not None
        server.whip.ice_servers = lambda: [{"urls": urls}]
        yield server, urls


async def test_whip_client_publishes_into_an_sfu_room() -> None:
    async with whip_server() as (server, stun_urls), member(server) as (_room, log):
        token = server.token("publish", identity="camera-1")
        source = open_source("test")
        client = WhipClient(f"{server.base}/whip/sfu", token=token, tracks=source.tracks)
        try:
            async with client:
                # the ICE servers came from OPTIONS, and the offer was gathered with them
                assert client.ice_servers == [{"urls": stun_urls}]
                assert client.ice_servers_answered == client.ice_servers
                assert client.pc is not None
                assert "typ srflx" in client.pc.localDescription.sdp
                assert client.location is not None
                assert str(client.location).startswith(f"{server.base}/whip/sfu/")
                assert client.etag
                (publisher_id,) = server.sfu().publishers
                kinds = set()
                for _ in range(2):
                    published = await log.wait_for(TrackPublished, publisher_id)
                    log.events.remove(published)
                    kinds.add(published.track.kind)
                    if published.track.kind == "video":
                        async with asyncio.timeout(30):
                            frame = await published.track.recv()
                        assert read_frame_counter(frame) >= 0
                assert kinds == {"audio", "video"}
                stats = await client.stats()
                assert stats.packets["video"] > 0
                assert stats.bytes["audio"] > 0
                assert stats.frames["video"] > 0
            # leaving the block DELETEs the session: the publisher leaves the room
            await log.wait_for(TrackUnpublished, publisher_id)
            await log.wait_for(ParticipantLeft, publisher_id)
            assert server.sfu().publishers == {}
            assert client.pc is not None
            assert client.pc.connectionState == "closed"
            await client.aclose()  # twice: nothing more to do
        finally:
            source.close()


async def test_a_refused_post_raises_the_servers_problem() -> None:
    async with whip_server() as (server, _):
        tracks = [TestPatternTrack(SMALL)]
        with pytest.raises(WhipError) as caught:
            async with WhipClient(f"{server.base}/whip/sfu", tracks=tracks):
                pass
        assert caught.value.status == 401
        assert caught.value.title == "Unauthorized"
        assert "token" in str(caught.value)
        token = server.token("subscribe")
        with pytest.raises(WhipError) as caught:
            async with WhipClient(f"{server.base}/whip/sfu", token=token, tracks=tracks):
                pass
        assert caught.value.status == 403
        assert "publish" in str(caught.value)  # the problem detail names what is missing
        assert server.whip is not None
        assert server.whip.sessions == {}


async def test_without_announced_ice_servers_the_client_gathers_with_none() -> None:
    """No Link header: an explicit empty list (host candidates), not aiortc's default
    STUN server."""
    async with running() as server:
        assert server.whip is not None
        server.whip.ice_servers = None
        client = WhipClient(f"{server.base}/whip/sfu", tracks=[TestPatternTrack(SMALL)])
        async with client:
            assert client.ice_servers == []
            assert client.pc is not None
            assert client.pc.ice_config.servers == ()
            assert client.pc.aiortc_selection.stun is None
            assert "typ srflx" not in client.pc.localDescription.sdp


# --- a WHEP endpoint on a bare aiortc peer ----------------------------------------------------


class TinyWhep:
    """``POST /whep/<room>`` answered by an aiortc peer sending a test pattern and a tone;
    ``DELETE`` of its resource; answers chosen by the test (``created``)."""

    def __init__(self) -> None:
        self.peers: dict[str, RTCPeerConnection] = {}
        self.deleted: list[str] = []
        self.headers: dict[str, str] = {}
        self.chunked = False
        self.hang_up = False
        self.base = ""

    async def post(self, request: web.Request) -> web.StreamResponse:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        pc.addTrack(TestPatternTrack(SMALL))
        pc.addTrack(ToneTrack())
        await pc.setLocalDescription(await pc.createAnswer())
        resource = secrets.token_urlsafe(8)
        self.peers[resource] = pc
        headers = {"Location": f"/whep/room/~/{resource}", "ETag": '"e1"', **self.headers}
        if self.hang_up:  # an answer, and nobody behind it
            await pc.close()
        if self.chunked:  # the answer in 100-byte pieces, each sent on its own
            response = web.StreamResponse(status=201, headers=headers)
            response.content_type = "application/sdp"
            await response.prepare(request)
            answer = pc.localDescription.sdp.encode()
            for start in range(0, len(answer), 100):
                await response.write(answer[start : start + 100])
                await asyncio.sleep(0.01)
            await response.write_eof()
            return response
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers=headers,
        )

    async def delete(self, request: web.Request) -> web.Response:
        pc = self.peers.pop(request.match_info["id"], None)
        if pc is None:
            return web.Response(status=404)
        self.deleted.append(request.match_info["id"])
        await pc.close()
        return web.Response(status=200)

    async def aclose(self) -> None:
        for pc in self.peers.values():
            await pc.close()


@pytest.fixture
async def whep() -> AsyncIterator[TinyWhep]:
    tiny = TinyWhep()
    app = web.Application()
    app.router.add_post("/whep/room", tiny.post)
    app.router.add_delete("/whep/room/~/{id}", tiny.delete)
    async with serving(app) as tiny.base:
        try:
            yield tiny
        finally:
            await tiny.aclose()


def _decoded(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with av.open(str(path)) as container:
        for stream in container.streams:
            counts[stream.type] = 0
        for packet in container.demux():
            for _frame in packet.decode():
                counts[packet.stream.type] += 1
    return counts


@pytest.mark.parametrize("suffix", [".webm", ".mkv", ".ivf", ".ogg"])
async def test_whep_client_counts_and_records_without_transcoding(
    whep: TinyWhep, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"play{suffix}"
    client = WhepClient(f"{whep.base}/whep/room", record=path)
    async with client:
        assert client.ice_servers == []  # OPTIONS refused (405): none
        assert client.location is not None
        assert client.location.path.startswith("/whep/room/~/")
        await client.wait_frames(30)
        async with asyncio.timeout(20):
            while client.frames["audio"] < 50:  # noqa: ASYNC110 (frames come from a tap)
                await asyncio.sleep(0.05)
        assert client.first_frame_at is not None
        assert client.posted_at is not None
        assert client.first_frame_at > client.posted_at
        assert client.tracks  # not decoded: the tracks give nothing, but they exist
    assert whep.deleted  # DELETE on exit
    stats = client.stats()
    assert stats.bytes["video"] > 0
    recorder = client.recorder
    assert recorder is not None
    decoded = _decoded(path)
    for kind in recorder.kinds:
        # every frame received after the recording started is in the file, and decodes
        assert recorder.written[kind] > 0
        assert recorder.written[kind] + recorder.skipped[kind] == stats.frames[kind]
        assert decoded[kind] >= recorder.written[kind] - 2
    assert set(decoded) == set(recorder.kinds)


async def test_whep_client_decodes_when_asked(whep: TinyWhep) -> None:
    async with WhepClient(f"{whep.base}/whep/room", decode=True) as client:
        (video,) = [track for track in client.tracks if track.kind == "video"]
        async with asyncio.timeout(20):
            frame = await video.recv()
        assert isinstance(frame, av.VideoFrame)
        assert (frame.width, frame.height) == (SMALL.width, SMALL.height)


async def test_an_answer_in_many_chunks_is_read_whole(whep: TinyWhep) -> None:
    whep.chunked = True
    async with WhepClient(f"{whep.base}/whep/room") as client:
        await client.wait_frames(5)


async def test_a_session_that_never_connects_is_an_ice_error_and_deleted(
    whep: TinyWhep,
) -> None:
    from rtckit.errors import IceError

    whep.hang_up = True
    client = WhepClient(f"{whep.base}/whep/room", config=WhipClientConfig(connect_timeout=1.5))
    with pytest.raises(IceError, match=r"within 1.5 s"):
        await client.start()
    assert whep.deleted  # the session the server created is not left behind


async def test_a_201_without_location_is_the_servers_fault() -> None:
    async def no_location(request: web.Request) -> web.Response:
        return web.Response(status=201, text="v=0\r\n", content_type="application/sdp")

    async def too_long(request: web.Request) -> web.Response:
        headers = {"Location": "/whep/room/~/x"}
        body = "v=0\r\n" + "a=x\r\n" * 100_000
        return web.Response(status=201, text=body, content_type="application/sdp", headers=headers)

    app = web.Application()
    app.router.add_post("/whep/room", no_location)
    app.router.add_post("/whep/long", too_long)
    async with serving(app) as base:
        with pytest.raises(WhipError) as caught:
            await WhepClient(f"{base}/whep/long").start()
        assert caught.value.status == 502
        assert "more than" in str(caught.value)
        client = WhepClient(f"{base}/whep/room")
        with pytest.raises(WhipError) as caught:
            await client.start()
        assert caught.value.status == 502
        assert "Location" in str(caught.value)
        assert client.pc is not None
        assert client.pc.connectionState == "closed"


def test_recorder_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    from rtckit.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"\.webm"):
        EncodedRecorder(tmp_path / "x.mp4")
    with pytest.raises(ConfigurationError, match="holds none"):
        EncodedRecorder(tmp_path / "x.ivf", kinds=("audio",))
    with pytest.raises(ConfigurationError, match="positive"):
        WhipClientConfig(connect_timeout=0)
    recorder = EncodedRecorder(tmp_path / "x.webm", kinds=("video",))
    recorder.add("video", "VP8", b"\x01" * 20, 0)  # an inter frame before any key frame
    recorder.add("video", "H264", b"\x00" * 20, 0)
    recorder.add("audio", "opus", b"\x00" * 20, 0)
    recorder.close()
    recorder.close()
    assert recorder.skipped == {"audio": 1, "video": 2}
    assert not (tmp_path / "x.webm").exists()
    assert vp8_key_frame_size(b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01") == (640, 480)
    assert vp8_key_frame_size(b"\x11\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01") is None
    assert vp8_key_frame_size(b"\x10\x02") is None


# --- the command line, as a subprocess ---------------------------------------------------------


async def rtckit(
    *args: str, within: float = 60, interrupt: asyncio.Event | None = None
) -> tuple[int, str, str]:
    """Run ``rtckit *args``; with *interrupt*, send it SIGINT (Ctrl-C) when that is set."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtckit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(within):
            if interrupt is not None:
                await interrupt.wait()
                process.send_signal(signal.SIGINT)
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_whip_publish() -> None:
    async with whip_server() as (server, _), member(server) as (_room, log):
        url = f"{server.base}/whip/sfu"
        token = server.token("publish", identity="cli")
        run = asyncio.ensure_future(
            rtckit("whip", "publish", url, "--token", token, "--duration", "4")
        )
        try:
            async with asyncio.timeout(60):
                while not server.sfu().publishers:  # noqa: ASYNC110 (another process)
                    await asyncio.sleep(0.05)
            (publisher_id,) = server.sfu().publishers
            await log.wait_for(TrackPublished, publisher_id)
            status, out, err = await run
        finally:
            run.cancel()
        assert status == 0, err
        first, last = out.splitlines()
        assert first.startswith(f"rtckit whip: publishing, session {url}/")
        assert last.startswith("rtckit whip: done; sent video ")
        assert " bytes" in last
        await log.wait_for(ParticipantLeft, publisher_id)
        assert server.sfu().publishers == {}

        status, out, err = await rtckit("whip", "publish", url, "--token", "not-a-token")
        assert status == 3
        assert out == ""
        (line,) = err.splitlines()
        assert line.startswith("rtckit whip: refused: 401 Unauthorized: the token is refused")


async def test_cli_whip_publish_a_file_until_ctrl_c(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    _clip(path, frames=150)
    async with whip_server(token_auth=False) as (server, _), member(server) as (_room, log):
        url = f"{server.base}/whip/sfu"
        published = asyncio.Event()
        run = asyncio.ensure_future(
            rtckit("whip", "publish", url, "--source", str(path), interrupt=published)
        )
        try:
            async with asyncio.timeout(60):
                while not server.sfu().publishers:  # noqa: ASYNC110 (another process)
                    await asyncio.sleep(0.05)
            (publisher_id,) = server.sfu().publishers
            track = (await log.wait_for(TrackPublished, publisher_id)).track
            async with asyncio.timeout(30):
                await track.recv()
            published.set()
            status, out, err = await run
        finally:
            run.cancel()
        assert status == 0, err
        assert out.splitlines()[-1].startswith("rtckit whip: done; sent video ")
        await log.wait_for(ParticipantLeft, publisher_id)  # Ctrl-C DELETEs the session
        assert server.whip is not None
        assert server.whip.sessions == {}


async def test_cli_whep_play_records(whep: TinyWhep, tmp_path: Path) -> None:
    path = tmp_path / "room.webm"
    url = f"{whep.base}/whep/room"
    status, out, err = await rtckit("whep", "play", url, "--frames", "30", "--record", str(path))
    assert status == 0, err
    first, last = out.splitlines()
    assert first.startswith(f"rtckit whep: playing, session {whep.base}/whep/room/~/")
    assert last.startswith("rtckit whep: received video ")
    assert f"to {path}" in last
    assert _decoded(path)["video"] >= 25
    assert whep.deleted

    status, out, err = await rtckit("whep", "play", url, "--frames", "100000", "--duration", "1")
    assert status == 4
    assert "of 100000 video frames" in err

    status, out, err = await rtckit("whep", "play", f"{whep.base}/nowhere")
    assert status == 3
    assert err.startswith("rtckit whep: refused: 404 Not Found")
    assert "Traceback" not in err

    status, _, err = await rtckit("whep", "play", url, "--record", str(tmp_path / "x.mp4"))
    assert status == 2
    (line,) = err.splitlines()
    assert line.startswith("rtckit: error: cannot record to 'x.mp4'")


# --- WhipClient publishes, WhepClient plays, through rtckit's own endpoints ---------------------


async def test_whep_client_plays_what_whip_client_publishes_through_an_sfu_room(
    tmp_path: Path,
) -> None:
    from test_whep_server import running as whip_and_whep

    async with whip_and_whep(token_auth=True) as server:
        assert server.whep is not None
        server.whep.ice_servers = None  # host candidates only (its STUN URL has no server)
        source = open_source("test")
        publish = WhipClient(
            server.url("/whip/sfu"),
            token=server.token("publish", identity="camera-1"),
            tracks=source.tracks,
        )
        path = tmp_path / "camera-1.webm"
        try:
            async with publish:
                play = WhepClient(
                    server.url("/whep/sfu/camera-1"),
                    token=server.token("subscribe", identity="viewer"),
                    record=path,
                )
                async with play:
                    assert play.ice_servers == []
                    assert play.location is not None
                    assert play.location.path.startswith("/whep/sfu/~/")
                    await play.wait_frames(30)
                    await play.wait_frames(25, kind="audio")
                    assert play.first_frame_at is not None
                    assert play.posted_at is not None
                assert server.whep.sessions == {}  # DELETE on exit
                # the command line too, on the room's default (its first video publisher)
                token = server.token("subscribe", identity="cli")
                status, out, err = await rtckit(
                    "whep", "play", server.url("/whep/sfu"), "--token", token, "--frames", "20"
                )
                assert status == 0, err
                assert out.splitlines()[-1].startswith("rtckit whep: received video ")
                assert server.whep.sessions == {}
        finally:
            source.close()
        recorder = play.recorder
        assert recorder is not None
        assert set(recorder.kinds) == {"audio", "video"}
        decoded = _decoded(path)
        for kind in ("audio", "video"):
            assert decoded[kind] >= recorder.written[kind] - 2 > 0

        refused = WhepClient(server.url("/whep/sfu"), token=server.token("publish"))
        with pytest.raises(WhipError) as caught:
            await refused.start()
        assert caught.value.status == 403


def _clip(path: Path, frames: int = 60) -> None:
    """A VP8 clip of *frames* frames at 15 fps, 160x120 (what a user would publish)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=15)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for index in range(frames):
            picture = np.full((120, 160, 3), index * 4 % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


async def test_whip_client_publishes_a_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    _clip(path)
    async with whip_server(token_auth=False) as (server, _), member(server) as (_room, log):
        source = open_source(str(path))
        try:
            assert [track.kind for track in source.tracks] == ["video"]
            async with WhipClient(f"{server.base}/whip/sfu", tracks=source.tracks):
                (publisher_id,) = server.sfu().publishers
                published = await log.wait_for(TrackPublished, publisher_id)
                async with asyncio.timeout(30):
                    frame = await published.track.recv()
                assert isinstance(frame, av.VideoFrame)
                assert (frame.width, frame.height) == (160, 120)
        finally:
            source.close()


def test_sources_that_cannot_open(tmp_path: Path) -> None:
    from rtckit.errors import ConfigurationError, SystemComponentError

    with pytest.raises(SystemComponentError, match="no camera at /dev/video-none"):
        open_source("camera:/dev/video-none")
    with pytest.raises(ConfigurationError, match="no media file"):
        open_source(str(tmp_path / "missing.webm"))
    with pytest.raises(ConfigurationError, match="one audio and/or one video"):
        WhipClient("http://127.0.0.1:9/whip/x", tracks=[ToneTrack(), ToneTrack()])
    with pytest.raises(ConfigurationError, match="not an http"):
        WhipClient("ftp://127.0.0.1/whip/x", tracks=[ToneTrack()])


async def test_whep_client_records_an_mcu_rooms_mix(tmp_path: Path) -> None:
    from test_whep_server import member as mcu_member
    from test_whep_server import running as whip_and_whep

    path = tmp_path / "mix.mkv"
    async with (
        whip_and_whep() as server,
        mcu_member(server, "red", room="mcu", tone=440.0),
    ):
        assert server.whep is not None
        server.whep.ice_servers = None
        async with WhepClient(server.url("/whep/mcu"), record=path) as play:
            await play.wait_frames(15)
            await play.wait_frames(25, kind="audio")
    recorder = play.recorder
    assert recorder is not None
    decoded = _decoded(path)
    for kind in ("audio", "video"):
        assert decoded[kind] >= recorder.written[kind] - 2 > 0
