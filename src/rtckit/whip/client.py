"""WHIP and WHEP clients on aiortc: publish to a WHIP endpoint, play from a WHEP endpoint.

:class:`WhipClient` publishes tracks (a test pattern and a tone, a file, a camera:
:func:`open_source`); :class:`WhepClient` plays, counts the frames it receives and can record
them to a file without transcoding (:class:`~rtckit.whip.recording.EncodedRecorder`). Both
are async context managers that own an aiohttp session and an aiortc peer connection, and do
the exchange of RFC 9725 (WHEP: the same exchange, receive-only):

1. ``OPTIONS`` on the endpoint URL, with the bearer token: the ICE servers of its
   ``Link: <...>; rel="ice-server"`` headers (TURN username and credential included,
   :func:`~rtckit.whip.protocol.parse_ice_server_links`). ICE servers passed to the client
   replace those; none at all gives an empty list (host candidates only), never aiortc's
   default STUN server. The ``Link`` headers of the ``201`` come after gathering: they are
   kept (``ice_servers_answered``) but cannot be used, as aiortc does not restart ICE;
2. the offer, with every candidate (aiortc gathers before it offers, so the client never
   trickles), ``POST``-ed with the token; a refusal raises :class:`~rtckit.errors.WhipError`
   with the server's status and the ``detail`` of its problem body;
   a ``307``/``308`` (a cluster node sending the request to the room's home) is followed with
   the same body and token, up to 5 times (aiohttp's own redirects would drop the token on the
   way to another node);
3. the answer applied, ``Location`` and ``ETag`` kept, and the connection awaited
   (``connect_timeout``: :class:`~rtckit.errors.IceError` if it does not connect);
4. on exit, ``DELETE`` of the session resource, then the connection closed.

aiortc uses one STUN and one TURN URL (:mod:`rtckit.ice.aiortc` warns about the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import aiohttp
import attrs
import av
from aiortc import MediaStreamTrack, RTCRtpCodecParameters, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from yarl import URL

from rtckit import _aiortc
from rtckit.errors import ConfigurationError, IceError, NegotiationError, WhipError
from rtckit.ice import IceConfig
from rtckit.peer.connection import RtcKitPeerConnection, create_peer_connection
from rtckit.whip import protocol as wp
from rtckit.whip.recording import EncodedRecorder

__all__ = [
    "MediaSource",
    "PlayStats",
    "PublishStats",
    "WhepClient",
    "WhipClient",
    "WhipClientConfig",
    "open_source",
]

logger = logging.getLogger(__name__)

_MAX_ANSWER = 256 * 1024  # longest SDP answer read (an answer is a few kilobytes)
_MAX_REDIRECTS = 5  # 307/308 of a POST followed (a cluster node sends one: to the room's home)


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen(kw_only=True)
class WhipClientConfig:
    """Timeouts of a WHIP/WHEP client (seconds): *request_timeout* for each HTTP request,
    *connect_timeout* for ICE and DTLS after the answer, *gather_timeout* for the answers of
    STUN/TURN servers while gathering."""

    request_timeout: float = attrs.field(default=10.0, validator=_positive)
    connect_timeout: float = attrs.field(default=20.0, validator=_positive)
    gather_timeout: float = attrs.field(default=3.0, validator=_positive)


def _joined(base: URL, location: str | None) -> URL:
    """*location* (a ``Location`` header) resolved against the URL *base* answered it."""
    if not location:
        raise wp.problem(502, f"{base} answered without a Location")
    try:
        joined = base.join(URL(location))
    except ValueError:
        raise wp.problem(502, f"the Location {location[:80]!r} is no URL") from None
    if joined.scheme not in ("http", "https") or not joined.host:
        raise wp.problem(502, f"the Location {location[:80]!r} is no http(s) URL")
    return joined


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of *response*, at most *limit* + 1 bytes of it (it may come in many chunks)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await response.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def _refusal(response: aiohttp.ClientResponse) -> WhipError:
    """The :class:`WhipError` of a refused request: the problem body's ``detail`` (RFC 9457),
    else the start of a text body, else the reason phrase."""
    body = await _read_bounded(response, 16 * 1024)
    title = response.reason or "Error"
    detail = ""
    if response.content_type == wp.PROBLEM_TYPE:
        with contextlib.suppress(ValueError, AttributeError):
            problem = json.loads(body)
            detail = str(problem.get("detail") or "")
            title = str(problem.get("title") or title)
    if not detail:
        detail = body.decode(errors="replace").strip().splitlines()[0][:200] if body.strip() else ""
    return WhipError(detail or title, status=response.status, title=title)


class _Session:
    """The HTTP exchange and the peer connection shared by :class:`WhipClient` and
    :class:`WhepClient` (see the module documentation)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ice_servers: Sequence[Mapping[str, Any]] | None = None,
        config: WhipClientConfig | None = None,
    ) -> None:
        self.url = URL(url)
        if self.url.scheme not in ("http", "https") or not self.url.host:
            raise ConfigurationError(f"not an http(s) URL: {url!r}")
        self.token = token
        self.config = config or WhipClientConfig()
        self._given_ice_servers = None if ice_servers is None else list(ice_servers)
        #: the ICE servers the connection gathered with (given, else from ``OPTIONS``)
        self.ice_servers: list[dict[str, Any]] = []
        #: the ICE servers of the ``201``'s ``Link`` headers (too late to gather with)
        self.ice_servers_answered: list[dict[str, Any]] = []
        #: the session resource (absolute URL) and its entity tag, once created
        self.location: URL | None = None
        self.etag: str | None = None
        #: ``time.monotonic()`` when the offer was posted and when the connection came up
        self.posted_at: float | None = None
        self.connected_at: float | None = None
        self.pc: RtcKitPeerConnection | None = None
        self._http: aiohttp.ClientSession | None = None
        self._up = asyncio.Event()
        self._ended = asyncio.Event()
        self._closed = False

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    async def _options(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with http.options(self.url, headers=self._headers()) as response:
            if response.status >= 300:  # OPTIONS is optional: the POST will say what is wrong
                return []
            return wp.parse_ice_server_links(response.headers.getall("Link", []))

    def _add_transceivers(self, pc: RtcKitPeerConnection) -> None:
        raise NotImplementedError

    def _answered(self, pc: RtcKitPeerConnection) -> None:
        """Called once the answer is applied, before the connection is up."""

    async def start(self) -> None:
        """Create the session (see the module documentation)."""
        if self.pc is not None or self._closed:
            raise ConfigurationError("a WHIP/WHEP client starts once")
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout)
        self._http = http = aiohttp.ClientSession(timeout=timeout)
        try:
            if self._given_ice_servers is not None:
                self.ice_servers = [dict(server) for server in self._given_ice_servers]
            else:
                self.ice_servers = await self._options(http)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # logged below, not raised at the caller's line
                self.pc = pc = create_peer_connection(IceConfig(servers=self.ice_servers))
            for uri, why in pc.aiortc_selection.dropped:
                logger.warning("ICE server %s left out: %s", uri, why)
            pc.on("connectionstatechange", self._state_changed)
            self._add_transceivers(pc)
            _aiortc.bound_gathering(pc, self.config.gather_timeout)
            await pc.setLocalDescription(await pc.createOffer())
            self.posted_at = time.monotonic()
            answer = await self._post(http, pc.localDescription.sdp)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            except (ValueError, AttributeError, KeyError) as exc:
                raise NegotiationError(f"the server's answer cannot be applied: {exc}") from exc
            self._answered(pc)
            await self._wait_connected(pc)
        except BaseException:
            await self.aclose()
            raise

    async def _post(self, http: aiohttp.ClientSession, offer: str) -> str:
        headers = self._headers(wp.SDP_TYPE)
        url = self.url
        for _hop in range(_MAX_REDIRECTS + 1):
            # redirects are followed here, not by aiohttp: it would drop the bearer token on
            # the way to another node (another origin), and the room's home checks it again
            async with http.post(
                url, data=offer.encode(), headers=headers, allow_redirects=False
            ) as response:
                if response.status in (307, 308):
                    url = _joined(url, response.headers.get("Location"))
                    continue
                return await self._created(url, response)
        raise wp.problem(502, f"more than {_MAX_REDIRECTS} redirects from {self.url}")

    async def _created(self, url: URL, response: aiohttp.ClientResponse) -> str:
        """The answer of the ``201`` from *url*; its ``Location`` and ``ETag`` kept."""
        if response.status != 201:
            raise await _refusal(response)
        self.location = _joined(url, response.headers.get("Location"))
        self.etag = response.headers.get("ETag")
        self.ice_servers_answered = wp.parse_ice_server_links(response.headers.getall("Link", []))
        if response.content_type != wp.SDP_TYPE:
            raise wp.problem(502, f"the answer is {response.content_type}, not {wp.SDP_TYPE}")
        body = await _read_bounded(response, _MAX_ANSWER)
        if len(body) > _MAX_ANSWER:
            raise wp.problem(502, f"the answer has more than {_MAX_ANSWER} bytes")
        return body.decode(errors="replace")

    def _state_changed(self) -> None:
        assert self.pc is not None
        state = self.pc.connectionState
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
            self._up.set()
        if state in ("failed", "closed"):
            self._ended.set()

    async def _wait_connected(self, pc: RtcKitPeerConnection) -> None:
        waits = [asyncio.ensure_future(self._up.wait()), asyncio.ensure_future(self._ended.wait())]
        try:
            await asyncio.wait(
                waits, timeout=self.config.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()
        if self._ended.is_set():
            raise IceError(f"the connection to {self.url} {pc.connectionState}")
        if not self._up.is_set():
            raise IceError(f"no connection to {self.url} within {self.config.connect_timeout} s")

    @property
    def connected(self) -> bool:
        """True while the connection is up."""
        return self.pc is not None and self.pc.connectionState == "connected"

    async def wait_ended(self) -> None:
        """Wait until the connection fails or closes (the server ended the session)."""
        await self._ended.wait()

    async def aclose(self) -> None:
        """``DELETE`` the session resource (a failure is logged), close the connection and the
        HTTP session. Idempotent."""
        if self._closed:
            return
        self._closed = True
        http, self._http = self._http, None
        if http is not None:
            if self.location is not None:
                try:
                    async with http.delete(self.location, headers=self._headers()) as response:
                        if response.status >= 300 and response.status != 404:
                            logger.warning("DELETE %s: %s", self.location, response.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    logger.warning("DELETE %s failed: %s", self.location, exc)
            await http.close()
        if self.pc is not None:
            await self.pc.close()
        self._ended.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@attrs.frozen(kw_only=True)
class PublishStats:
    """What a :class:`WhipClient` sent, by kind: RTP packets and bytes, and frames where the
    track counts them (rtckit's test pattern and tone do)."""

    packets: Mapping[str, int]
    bytes: Mapping[str, int]
    frames: Mapping[str, int]


class MediaSource:
    """Tracks to publish, and what to close when done (a ``MediaPlayer``)."""

    def __init__(
        self, tracks: Sequence[MediaStreamTrack], player: MediaPlayer | None = None
    ) -> None:
        self.tracks = tuple(tracks)
        self.player = player

    def close(self) -> None:
        """Stop the tracks (and the player's demuxing thread). Idempotent."""
        for track in self.tracks:
            track.stop()


def open_source(spec: str) -> MediaSource:
    """The source a ``--source`` names: ``test`` (a test pattern and a 440 Hz tone),
    ``camera:/dev/videoN`` (a V4L2 camera, video only) or the path of a media file (its
    audio and video, decoded and re-encoded by aiortc)."""
    from rtckit.peer.media import PatternConfig, TestPatternTrack, ToneTrack, open_camera, open_file

    if spec == "test":
        return MediaSource([TestPatternTrack(PatternConfig(width=640, height=480)), ToneTrack()])
    if spec.startswith("camera:"):
        player = open_camera(spec.removeprefix("camera:") or "/dev/video0")
        if player.video is None:
            raise ConfigurationError(f"{spec!r} gives no video")
        return MediaSource([player.video], player)
    player = open_file(spec)
    tracks = [track for track in (player.audio, player.video) if track is not None]
    if not tracks:
        raise ConfigurationError(f"{spec!r} has no audio or video")
    return MediaSource(tracks, player)


class WhipClient(_Session):
    """Publish *tracks* (at most one audio and one video) to the WHIP endpoint *url*.

    .. code-block:: python

        async with WhipClient(url, token=token, tracks=open_source("test").tracks) as client:
            await asyncio.sleep(10)
            print(await client.stats())
    """

    def __init__(
        self,
        url: str,
        *,
        tracks: Sequence[MediaStreamTrack],
        token: str | None = None,
        ice_servers: Sequence[Mapping[str, Any]] | None = None,
        config: WhipClientConfig | None = None,
    ) -> None:
        super().__init__(url, token=token, ice_servers=ice_servers, config=config)
        kinds = [track.kind for track in tracks]
        if not kinds or sorted(set(kinds)) != sorted(kinds):
            raise ConfigurationError("publish one audio and/or one video track")
        self.tracks = tuple(tracks)

    def _add_transceivers(self, pc: RtcKitPeerConnection) -> None:
        for track in self.tracks:
            pc.addTransceiver(track, direction="sendonly")

    async def stats(self) -> PublishStats:
        """RTP packets and bytes sent so far, by kind."""
        packets: dict[str, int] = {}
        sent: dict[str, int] = {}
        if self.pc is not None:
            for report in (await self.pc.getStats()).values():
                if getattr(report, "type", None) == "outbound-rtp":
                    packets[report.kind] = packets.get(report.kind, 0) + report.packetsSent
                    sent[report.kind] = sent.get(report.kind, 0) + report.bytesSent
        frames: dict[str, int] = {}
        for track in self.tracks:
            count = getattr(track, "frames_sent", None)
            if isinstance(count, int):
                frames[track.kind] = count
        return PublishStats(packets=packets, bytes=sent, frames=frames)


@attrs.frozen(kw_only=True)
class PlayStats:
    """What a :class:`WhepClient` received: encoded frames and their bytes, by kind, and the
    frames written to its recording."""

    frames: Mapping[str, int]
    bytes: Mapping[str, int]
    recorded: Mapping[str, int]


class WhepClient(_Session):
    """Play the WHEP endpoint *url*: receive its audio and video.

    Frames are counted when reassembled, before any decoder (``rtckit._aiortc``'s tap):
    :attr:`frames` and :attr:`bytes` by kind, :meth:`wait_frames`, :attr:`first_frame_at`.
    With *record*, they are written to that file as they are (VP8/Opus into WebM, Matroska,
    IVF or Ogg: :class:`~rtckit.whip.recording.EncodedRecorder`). With *decode* (off by
    default) they are also decoded, and :attr:`tracks` yield ``av`` frames.

    .. code-block:: python

        async with WhepClient(url, record="room.webm") as player:
            await player.wait_frames(300)
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        record: str | Path | None = None,
        decode: bool = False,
        ice_servers: Sequence[Mapping[str, Any]] | None = None,
        config: WhipClientConfig | None = None,
    ) -> None:
        super().__init__(url, token=token, ice_servers=ice_servers, config=config)
        self.record_path = None if record is None else Path(record)
        if self.record_path is not None:
            EncodedRecorder(self.record_path)  # refuse a bad suffix before any request
        self.decode = decode
        #: encoded frames received, by kind
        self.frames: dict[str, int] = {"audio": 0, "video": 0}
        #: their bytes, by kind
        self.bytes: dict[str, int] = {"audio": 0, "video": 0}
        #: ``time.monotonic()`` of the first frame received (of any kind)
        self.first_frame_at: float | None = None
        #: the recorder, once the answer said which kinds come (with *record*)
        self.recorder: EncodedRecorder | None = None
        #: why the recording stopped early (the file is finished up to there), if it did
        self.record_error: Exception | None = None
        self._changed = asyncio.Event()

    def _add_transceivers(self, pc: RtcKitPeerConnection) -> None:
        for kind in ("audio", "video"):
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            tap = functools.partial(self._frame, kind)
            _aiortc.tap_encoded_frames(transceiver.receiver, tap, decode=self.decode)

    def _answered(self, pc: RtcKitPeerConnection) -> None:
        kinds = tuple(
            t.kind for t in pc.getTransceivers() if t.currentDirection in ("recvonly", "sendrecv")
        )
        if self.record_path is not None and kinds:
            self.recorder = EncodedRecorder(self.record_path, kinds=kinds)

    def _frame(self, kind: str, codec: RTCRtpCodecParameters, data: bytes, ts: int) -> None:
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        self.frames[kind] += 1
        self.bytes[kind] += len(data)
        if self.recorder is not None:
            try:
                self.recorder.add(kind, codec.name, data, ts, channels=codec.channels or 2)
            except (av.FFmpegError, OSError, ValueError) as exc:
                # called from aiortc's RTP handling: an exception would end the connection
                logger.warning("recording to %s stopped: %s", self.recorder.path, exc)
                self.record_error = exc
                self.recorder.close()
        self._changed.set()

    @property
    def tracks(self) -> list[MediaStreamTrack]:
        """The received tracks (frames only with *decode*)."""
        if self.pc is None:
            return []
        return [
            t.receiver.track
            for t in self.pc.getTransceivers()
            if t.currentDirection in ("recvonly", "sendrecv")
        ]

    async def wait_frames(self, count: int, kind: str = "video") -> None:
        """Wait until *count* frames of *kind* were received;
        :class:`~rtckit.errors.IceError` if the connection ends before."""
        while self.frames[kind] < count:
            if self._ended.is_set():
                raise IceError(f"the session ended after {self.frames[kind]} {kind} frames")
            self._changed.clear()
            ended = asyncio.ensure_future(self._ended.wait())
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait([ended, changed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                changed.cancel()

    def stats(self) -> PlayStats:
        """Frames and bytes received so far, and frames recorded."""
        recorded = dict(self.recorder.written) if self.recorder is not None else {}
        return PlayStats(frames=dict(self.frames), bytes=dict(self.bytes), recorded=recorded)

    async def aclose(self) -> None:
        """End the session (``DELETE``, the connection closed; idempotent) and finish the
        recording."""
        await super().aclose()
        if self.recorder is not None:
            self.recorder.close()
