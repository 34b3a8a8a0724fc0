"""WHIP ingest endpoints for aiohttp: publish into the SFU rooms of a signaling hub.

:class:`WhipEndpoint` mounts, under :attr:`WhipConfig.prefix <rtckit.whip.protocol.WhipConfig>`
(``/whip``):

* ``POST /whip/<room>`` and ``OPTIONS /whip/<room>`` (the endpoint);
* ``PATCH``, ``DELETE`` and ``OPTIONS /whip/<room>/<id>`` (a session resource).

Every decision is :mod:`rtckit.whip.protocol`'s; this layer reads requests, and wires a
session to the room:

1. the bearer token is checked with the hub's own authenticator (the room tokens of
   :class:`~rtckit.signaling.auth.TokenAuth`: ``publish`` permission required);
2. the publisher joins the room through signaling, in process, as a participant with the
   metadata ``{"rtckit_role": "whip"}`` (other members see it join and leave; a room is created
   on demand if the hub's configuration does so; it keeps the room running);
3. the room's :class:`~rtckit.topology.sfu.SfuServerStrategy` (from the
   :class:`~rtckit.topology.strategies.RoomStrategies` that runs the hub's rooms) answers the
   offer (:meth:`~rtckit.topology.sfu.SfuServerStrategy.add_publisher`); the answer carries all
   of the server's candidates (aiortc gathers before it answers), so the server never trickles;
4. when the session ends (``DELETE``, its connection failed, it never connected within
   ``connect_timeout``, the room stopped) the publisher leaves the room and its resource
   answers 404.

In a cluster, a ``POST`` for a room homed on another node is answered ``307`` to that node
(:mod:`rtckit.whip.cluster`) before step 2, and the ``Location`` of a ``201`` is absolute.

Mesh rooms (no media server) and MCU rooms are refused with 409 and a problem body saying so.
One signaling event reader per session drains what the room tells the in-process participant,
so nothing accumulates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from aiohttp import web
from multidict import CIMultiDict

from rtckit.errors import (
    AuthError,
    NegotiationError,
    RoomError,
    SignalingError,
    TopologyError,
    WhipError,
)
from rtckit.signaling.client import SignalingClient
from rtckit.signaling.memory import MemoryTransport
from rtckit.signaling.protocol import ErrorCode
from rtckit.topology.base import Topology
from rtckit.topology.sfu import PUBLISHER_ROLE, SfuPublisher, SfuServerStrategy
from rtckit.whip import protocol as wp
from rtckit.whip.cluster import ClusterRedirect, moved
from rtckit.whip.protocol import WhipConfig

if TYPE_CHECKING:
    from rtckit.signaling.hub import SignalingHub
    from rtckit.topology.strategies import RoomStrategies

__all__ = ["WhipEndpoint", "WhipSession"]

logger = logging.getLogger(__name__)

_EXPOSED = "Location, ETag, Link, Accept-Post, Allow"
_ALLOWED_HEADERS = "Authorization, Content-Type, If-Match"


class WhipSession:
    """One WHIP publisher: its resource, its participant in the room and its connection."""

    def __init__(
        self,
        *,
        resource_id: str,
        room: str,
        token: str | None,
        client: SignalingClient,
        publisher: SfuPublisher,
        ufrag: str | None,
    ) -> None:
        self.resource_id = resource_id
        self.room = room
        self.token = token
        self.client = client
        self.publisher = publisher
        self.ufrag = ufrag
        self.etag = wp.new_etag()
        self.mids: tuple[str, ...] = ()
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def participant_id(self) -> str:
        """The publisher's peer id in the room."""
        return self.publisher.participant_id


class WhipEndpoint:
    """WHIP ingest into the SFU rooms of *hub*, run by *rooms* (see the module documentation).

    *ice_servers* returns the ``RTCIceServer`` dicts a client gets as ``Link`` headers (called
    for each answer, so TURN REST credentials are minted per session); ``None``: none.
    *redirect*: in a cluster, sends a ``POST`` for a room homed on another node there
    (``307``), and makes the session resources' ``Location`` absolute
    (:mod:`rtckit.whip.cluster`).
    """

    def __init__(
        self,
        hub: SignalingHub,
        rooms: RoomStrategies,
        *,
        config: WhipConfig | None = None,
        ice_servers: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
        redirect: ClusterRedirect | None = None,
    ) -> None:
        self.hub = hub
        self.redirect = redirect
        self.rooms = rooms
        self.config = config or WhipConfig()
        self.ice_servers = ice_servers
        #: the sessions by resource id
        self.sessions: dict[str, WhipSession] = {}
        self._pending = 0  # POSTs being answered (they count against max_sessions)
        self._closed = False

    def add_routes(self, app: web.Application) -> None:
        """Mount the endpoint and its session resources on *app*."""
        prefix = self.config.prefix
        app.router.add_route("*", prefix + "/{room}", self._endpoint)
        app.router.add_route("*", prefix + "/{room}/{resource}", self._resource)

    async def aclose(self) -> None:
        """End every session (their publishers leave their rooms) and refuse new ones (503).
        Idempotent; no task of a session is left running."""
        self._closed = True
        for session in list(self.sessions.values()):
            await self._end(session)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- responses ------------------------------------------------------------------------

    def _headers(self) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        headers["Access-Control-Allow-Origin"] = self.config.allow_origin
        headers["Access-Control-Expose-Headers"] = _EXPOSED
        return headers

    def _links(self, headers: CIMultiDict[str]) -> None:
        if self.ice_servers is not None:
            for link in wp.ice_server_links(self.ice_servers()):
                headers.add("Link", link)

    def _problem(self, error: WhipError, allow: str | None = None) -> web.Response:
        headers = self._headers()
        if error.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if allow is not None:
            headers["Allow"] = allow
        return web.Response(
            status=error.status,
            body=wp.problem_body(error),
            content_type=wp.PROBLEM_TYPE,
            headers=headers,
        )

    def _redirected(self, location: str) -> web.Response:
        response = self._problem(moved(location))
        response.headers["Location"] = location
        return response

    def _preflight(self, request: web.Request, allow: str) -> web.Response:
        headers = self._headers()
        headers["Allow"] = allow
        headers["Access-Control-Allow-Methods"] = allow
        headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
        headers["Access-Control-Max-Age"] = "600"
        if "POST" in allow:
            headers["Accept-Post"] = wp.SDP_TYPE
        if "PATCH" in allow:
            headers["Accept-Patch"] = wp.TRICKLE_TYPE
        if "POST" in allow and "Access-Control-Request-Method" not in request.headers:
            # a client's own OPTIONS (not a CORS preflight, which has no credentials): the ICE
            # servers, TURN credentials included, only for a token the room admits
            with contextlib.suppress(WhipError):
                self._authenticate(request.match_info["room"], request)
                self._links(headers)
        return web.Response(status=204, headers=headers)

    # -- requests --------------------------------------------------------------------------

    async def _read_body(self, request: web.Request, content_type: str) -> str:
        wp.check_content_type(request.headers.get("Content-Type"), content_type)
        limit = self.config.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise wp.problem(413, f"the body has more than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # a body may come in many chunks; never more than limit + 1 bytes
            chunk = await request.content.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return wp.check_body(b"".join(chunks), limit)

    def _authenticate(self, room: str, request: web.Request) -> str | None:
        token = wp.parse_bearer(request.headers.get("Authorization"))
        try:
            grant = self.hub.config.auth.authenticate(room, token)
        except AuthError as exc:
            raise wp.problem(401, f"the token is refused: {exc}") from None
        if "publish" not in grant.permissions:
            raise wp.problem(403, "the token does not allow publishing")
        return token

    async def _endpoint(self, request: web.Request) -> web.StreamResponse:
        allow = "OPTIONS, POST"
        try:
            if request.method == "OPTIONS":
                return self._preflight(request, allow)
            if request.method != "POST":
                raise wp.problem(405, f"{request.method} is not allowed here")
            return await self._post(request)
        except WhipError as error:
            return self._problem(error, allow if error.status == 405 else None)

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        allow = "OPTIONS, PATCH, DELETE"
        try:
            session = self.sessions.get(request.match_info["resource"])
            if session is None or session.room != request.match_info["room"]:
                raise wp.problem(404, "no such WHIP session (it ended, or never existed)")
            if request.method == "OPTIONS":
                return self._preflight(request, allow)
            if request.method not in ("PATCH", "DELETE"):
                raise wp.problem(405, f"{request.method} is not allowed here")
            self._check_owner(session, request)
            if request.method == "DELETE":
                await self._end(session)
                return web.Response(status=200, headers=self._headers())
            return await self._patch(session, request)
        except WhipError as error:
            return self._problem(error, allow if error.status == 405 else None)

    def _check_owner(self, session: WhipSession, request: web.Request) -> None:
        """A session created with a token is used with that token only."""
        if session.token is None:
            return
        token = wp.parse_bearer(request.headers.get("Authorization"))
        if token is None:
            raise wp.problem(401, "this session needs the bearer token that created it")
        if not secrets.compare_digest(token, session.token):
            raise wp.problem(403, "this session was created with another token")

    async def _post(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        token = self._authenticate(room, request)
        text = await self._read_body(request, wp.SDP_TYPE)
        summary = wp.parse_offer(text)
        self._check_topology(room)
        if self.redirect is not None:
            location = await self.redirect.location(
                room, request.rel_url.raw_path, request.rel_url.raw_query_string
            )
            if location is not None:
                return self._redirected(location)
        if self._closed:
            raise wp.problem(503, "the server is closing")
        if len(self.sessions) + self._pending >= self.config.max_sessions:
            raise wp.problem(503, f"this server takes {self.config.max_sessions} WHIP sessions")
        self._pending += 1
        try:
            session = await self._start(room, token, text, summary)
        finally:
            self._pending -= 1
        headers = self._headers()
        location = f"{self.config.prefix}/{room}/{session.resource_id}"
        if self.redirect is not None:  # this node's: a client may have come through another
            location = self.redirect.absolute(location)
        headers["Location"] = location
        headers["ETag"] = session.etag
        self._links(headers)
        return web.Response(
            status=201, text=session.publisher.answer, content_type=wp.SDP_TYPE, headers=headers
        )

    def _check_topology(self, room: str) -> None:
        topology = self.rooms.topology_for(room)
        if topology is Topology.MESH:
            raise wp.problem(
                409,
                f"room {room!r} is a mesh room: its members send media to each other, there "
                "is no media server to publish into (WHIP publishes into SFU rooms)",
            )
        if topology is not Topology.SFU:
            raise wp.problem(
                409,
                f"room {room!r} is an {topology.value.upper()} room: WHIP publishes into "
                "SFU rooms only",
            )

    async def _start(
        self, room: str, token: str | None, offer: str, summary: wp.OfferSummary
    ) -> WhipSession:
        peer_id = f"whip-{secrets.token_hex(4)}"
        client = SignalingClient(
            MemoryTransport(self.hub, trusted=True),
            room=room,
            token=token,
            peer_id=peer_id,
            metadata={"rtckit_role": PUBLISHER_ROLE},
        )
        try:
            await client.start()
        except AuthError as exc:
            raise wp.problem(401, f"the token is refused: {exc}") from None
        except RoomError as exc:
            status = 503 if getattr(exc, "code", None) == ErrorCode.ROOM_FULL else 404
            raise wp.problem(status, f"room {room!r}: {exc}") from None
        except SignalingError as exc:
            raise wp.problem(400, f"cannot join room {room!r}: {exc}") from None
        try:
            publisher = await self._publish(room, peer_id, offer)
        except BaseException:
            await client.aclose()
            raise
        session = WhipSession(
            resource_id=wp.new_resource_id(),
            room=room,
            token=token,
            client=client,
            publisher=publisher,
            ufrag=summary.ufrag,
        )
        session.mids = summary.mids
        self.sessions[session.resource_id] = session
        loop = asyncio.get_running_loop()
        session.tasks = [
            loop.create_task(self._drain(session), name=f"whip-drain-{peer_id}"),
            loop.create_task(self._watch(session), name=f"whip-watch-{peer_id}"),
        ]
        logger.info(
            "WHIP publisher %s joined room %s (%s)",
            peer_id,
            room,
            "+".join(summary.kinds),
            extra={"room": room, "peer": peer_id},
        )
        return session

    async def _publish(self, room: str, peer_id: str, offer: str) -> SfuPublisher:
        """The room's SFU answers *offer* from its new participant *peer_id*."""
        self._check_topology(room)  # a room created just now may have another topology
        strategy = self.rooms.running.get(room)
        if not isinstance(strategy, SfuServerStrategy):
            raise wp.problem(503, f"the media server of room {room!r} is not running")
        try:
            return await strategy.add_publisher(
                peer_id, offer, connect_timeout=self.config.connect_timeout
            )
        except NegotiationError as exc:
            raise wp.problem(400, f"the offer cannot be answered: {exc}") from None
        except TopologyError as exc:
            raise wp.problem(503, str(exc)) from None

    async def _patch(self, session: WhipSession, request: web.Request) -> web.Response:
        wp.check_content_type(request.headers.get("Content-Type"), wp.TRICKLE_TYPE)
        wp.check_if_match(request.headers.get("If-Match"), session.etag)
        fragment = wp.parse_sdp_fragment(await self._read_body(request, wp.TRICKLE_TYPE))
        if (
            fragment.ufrag is not None
            and session.ufrag is not None
            and (fragment.ufrag != session.ufrag)
        ):
            raise wp.problem(422, "new ICE credentials ask for an ICE restart: not supported")
        for candidate in fragment.candidates:
            if candidate.mid is not None and candidate.mid not in session.mids:
                raise wp.problem(400, f"the fragment names m-line {candidate.mid!r}: not offered")
            if candidate.mid is None and candidate.mline_index >= len(session.mids):
                raise wp.problem(400, "the fragment has more m-lines than the offer")
        publisher = session.publisher
        for candidate in fragment.candidates:
            await publisher.add_candidate(
                candidate.candidate, mid=candidate.mid, index=candidate.mline_index
            )
        if fragment.end_of_candidates:
            await publisher.add_candidate(None, mid=None, index=0)
        return web.Response(status=204, headers=self._headers())

    # -- session life ----------------------------------------------------------------------

    async def _drain(self, session: WhipSession) -> None:
        """Read (and drop) what the room tells the publisher's participant; if the room
        removes it, end the session."""
        with contextlib.suppress(SignalingError):
            async for _event in session.client:
                pass
        await self._end(session)

    async def _watch(self, session: WhipSession) -> None:
        reason = await session.publisher.wait_ended()
        if reason != "closed":
            logger.info(
                "WHIP publisher %s of room %s ended: %s",
                session.participant_id,
                session.room,
                reason,
                extra={"room": session.room, "peer": session.participant_id},
            )
        await self._end(session)

    async def _end(self, session: WhipSession) -> None:
        if self.sessions.pop(session.resource_id, None) is None:
            return
        await session.publisher.aclose()
        await session.client.aclose()
        others = [task for task in session.tasks if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others)
