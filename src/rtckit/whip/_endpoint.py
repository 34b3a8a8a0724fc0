"""The HTTP handling WHIP and WHEP endpoints share (aiohttp): one session resource per offer.

:class:`HttpEndpoint` reads requests and answers them; every protocol decision is
:mod:`rtckit.whip.protocol`'s. A subclass (:class:`~rtckit.whip.server.WhipEndpoint`,
:class:`~rtckit.whip.whep.WhepEndpoint`) says which permission a token needs, how an offer is
checked, which rooms it serves, and opens a session for an accepted offer (:meth:`_open`);
this base does the rest: CORS and preflights, bearer tokens, bodies and their limits, the
``201`` with ``Location``, ``ETag`` and ``Link``, trickle ``PATCH``, ``DELETE``, and the end
of every session (its resource then answers 404; where :attr:`HttpEndpoint.late_delete` is
set, except to a ``DELETE`` from its owner for *delete_grace* seconds after the client closed
its connection, or it failed: 200, since browser clients close first, then send the
``DELETE``; see :class:`~rtckit.whip.protocol.WhipConfig`).
In a cluster, a ``POST`` for a room homed on another node is answered ``307`` to that node
before a session is opened, and the ``Location`` of a ``201`` is absolute
(:mod:`rtckit.whip.cluster`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

import attrs
from aiohttp import web
from multidict import CIMultiDict

from rtckit.errors import AuthError, WhipError
from rtckit.topology._http_peer import HttpPeer
from rtckit.topology.base import Topology
from rtckit.whip import protocol as wp
from rtckit.whip.cluster import ClusterRedirect, moved
from rtckit.whip.protocol import WhipConfig

if TYPE_CHECKING:
    from rtckit.signaling.hub import SignalingHub
    from rtckit.topology.strategies import RoomStrategies

__all__ = ["HttpEndpoint", "HttpSession", "PostedOffer"]

logger = logging.getLogger(__name__)

_EXPOSED = "Location, ETag, Link, Accept-Post, Allow"
_ALLOWED_HEADERS = "Authorization, Content-Type, If-Match"


@attrs.frozen(kw_only=True)
class PostedOffer:
    """An offer accepted so far (token, body, room's kind): what a session is opened with."""

    request: web.Request
    room: str
    token: str | None
    sdp: str
    summary: wp.OfferSummary


class HttpSession:
    """One session of an endpoint: its resource, its token, and its connection (*peer*)."""

    def __init__(
        self, *, resource_id: str, room: str, token: str | None, peer: HttpPeer, ufrag: str | None
    ) -> None:
        self.resource_id = resource_id
        self.room = room
        self.token = token
        self.peer = peer
        self.ufrag = ufrag
        self.etag = wp.new_etag()
        self.mids: tuple[str, ...] = ()
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def participant_id(self) -> str:
        """The id of its connection in the room."""
        return self.peer.participant_id

    async def _release(self) -> None:
        """Free what the session holds besides its connection (called once, at its end)."""


SessionT = TypeVar("SessionT", bound=HttpSession)


class HttpEndpoint(Generic[SessionT]):
    """The endpoints of one kind (WHIP or WHEP) on the rooms of *hub*, run by *rooms*.

    *ice_servers* returns the ``RTCIceServer`` dicts a client gets as ``Link`` headers (called
    for each answer, so TURN REST credentials are minted per session); ``None``: none.
    *redirect*: in a cluster, sends a ``POST`` for a room homed on another node there
    (``307``), and makes the session resources' ``Location`` absolute
    (:mod:`rtckit.whip.cluster`).
    """

    #: the protocol's name in problem details and logs
    kind: ClassVar[str] = "WHIP"
    #: the token permission a new session needs
    permission: ClassVar[str] = "publish"
    #: the route of a session resource under the prefix
    resource_route: ClassVar[str] = "/{room}/{resource}"
    #: whether the owner's DELETE of a session whose client hung up (closed its connection,
    #: or it failed) answers 200 for ``delete_grace`` seconds rather than 404
    late_delete: ClassVar[bool] = False
    #: the configuration without one given
    default_config: ClassVar[type[WhipConfig]] = WhipConfig
    #: whether a ``POST`` for a room with no home places it (in a cluster): a WHIP publisher
    #: opens a room, a WHEP viewer does not
    places_rooms: ClassVar[bool] = True

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
        self.rooms = rooms
        self.redirect = redirect
        self.config = config or self.default_config()
        self.ice_servers = ice_servers
        #: the sessions by resource id
        self.sessions: dict[str, SessionT] = {}
        # sessions whose client hung up, oldest first: resource id -> (room, token, until when
        # a DELETE of it answers 200); see WhipConfig.delete_grace
        self._ended: OrderedDict[str, tuple[str, str | None, float]] = OrderedDict()
        self._pending = 0  # POSTs being answered (they count against max_sessions)
        self._closed = False

    def add_routes(self, app: web.Application) -> None:
        """Mount the endpoint and its session resources on *app*."""
        prefix = self.config.prefix
        app.router.add_route("*", prefix + "/{room}", self._endpoint)
        app.router.add_route("*", prefix + self.resource_route, self._resource)

    def location(self, session: SessionT) -> str:
        """The path of *session*'s resource (its ``Location``)."""
        return self.config.prefix + self.resource_route.format(
            room=session.room, resource=session.resource_id
        )

    async def aclose(self) -> None:
        """End every session and refuse new ones (503). Idempotent; no task of a session is
        left running."""
        self._closed = True
        for session in list(self.sessions.values()):
            await self._end(session)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- what a subclass says -----------------------------------------------------------------

    def _parse(self, offer: str) -> wp.OfferSummary:
        raise NotImplementedError

    def _check_topology(self, room: str) -> None:
        raise NotImplementedError

    def _refuse_mesh(self, room: str, what: str) -> None:
        """Refuse (409) a mesh room: it has no media server (*what*: which one it lacks)."""
        if self.rooms.topology_for(room) is Topology.MESH:
            raise wp.problem(
                409,
                f"room {room!r} is a mesh room: its members send media to each other, there "
                f"is no media server {what}",
            )

    async def _open(self, offer: PostedOffer) -> SessionT:
        """Answer *offer* with a new session (registered with :meth:`_register`)."""
        raise NotImplementedError

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
        if self.permission not in grant.permissions:
            raise wp.problem(403, f"the token does not have the {self.permission!r} permission")
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
                if request.method == "DELETE" and self._ended_just_now(request):
                    return web.Response(status=200, headers=self._headers())
                raise wp.problem(404, f"no such {self.kind} session (it ended, or never existed)")
            if request.method == "OPTIONS":
                return self._preflight(request, allow)
            if request.method not in ("PATCH", "DELETE"):
                raise wp.problem(405, f"{request.method} is not allowed here")
            self._check_owner(session.token, request)
            if request.method == "DELETE":
                await self._end(session)
                return web.Response(status=200, headers=self._headers())
            return await self._patch(session, request)
        except WhipError as error:
            return self._problem(error, allow if error.status == 405 else None)

    def _check_owner(self, owner: str | None, request: web.Request) -> None:
        """A session created with a token (*owner*) is used with that token only."""
        if owner is None:
            return
        token = wp.parse_bearer(request.headers.get("Authorization"))
        if token is None:
            raise wp.problem(401, "this session needs the bearer token that created it")
        if not secrets.compare_digest(token, owner):
            raise wp.problem(403, "this session was created with another token")

    def _ended_just_now(self, request: web.Request) -> bool:
        """Whether the resource of *request* (a DELETE) is of a session whose client hung up
        less than ``delete_grace`` ago; if so it is forgotten (a second DELETE: 404)."""
        now = asyncio.get_running_loop().time()
        while self._ended and next(iter(self._ended.values()))[2] <= now:
            self._ended.popitem(last=False)
        ended = self._ended.get(request.match_info["resource"])
        if ended is None or ended[0] != request.match_info["room"]:
            return False
        self._check_owner(ended[1], request)
        del self._ended[request.match_info["resource"]]
        return True

    async def _post(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        token = self._authenticate(room, request)
        text = await self._read_body(request, wp.SDP_TYPE)
        summary = self._parse(text)
        self._check_topology(room)
        if self.redirect is not None:
            location = await self.redirect.location(
                room,
                request.rel_url.raw_path,
                request.rel_url.raw_query_string,
                place=self.places_rooms,
            )
            if location is not None:
                return self._redirected(location)
        if self._closed:
            raise wp.problem(503, "the server is closing")
        if len(self.sessions) + self._pending >= self.config.max_sessions:
            raise wp.problem(
                503, f"this server takes {self.config.max_sessions} {self.kind} sessions"
            )
        self._pending += 1
        try:
            session = await self._open(
                PostedOffer(request=request, room=room, token=token, sdp=text, summary=summary)
            )
        finally:
            self._pending -= 1
        headers = self._headers()
        location = self.location(session)
        if self.redirect is not None:  # this node's: a client may have come through another
            location = self.redirect.absolute(location)
        headers["Location"] = location
        headers["ETag"] = session.etag
        self._links(headers)
        return web.Response(
            status=201, text=session.peer.answer, content_type=wp.SDP_TYPE, headers=headers
        )

    async def _patch(self, session: SessionT, request: web.Request) -> web.Response:
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
        peer = session.peer
        for candidate in fragment.candidates:
            await peer.add_candidate(
                candidate.candidate, mid=candidate.mid, index=candidate.mline_index
            )
        if fragment.end_of_candidates:
            await peer.add_candidate(None, mid=None, index=0)
        return web.Response(status=204, headers=self._headers())

    # -- session life ----------------------------------------------------------------------

    def _register(self, session: SessionT, *tasks: Coroutine[Any, Any, None]) -> None:
        """Keep *session* (its resource answers) and run *tasks* for it, and a watcher that
        ends it when its connection ends."""
        self.sessions[session.resource_id] = session
        loop = asyncio.get_running_loop()
        name = f"{self.kind.lower()}-{session.participant_id}"
        session.tasks = [
            *(loop.create_task(task, name=name) for task in tasks),
            loop.create_task(self._watch(session), name=f"{name}-watch"),
        ]

    async def _watch(self, session: SessionT) -> None:
        reason = await session.peer.wait_ended()
        if reason != "closed":
            logger.info(
                "%s session %s of room %s ended: %s",
                self.kind,
                session.participant_id,
                session.room,
                reason,
                extra={"room": session.room, "peer": session.participant_id},
            )
        await self._end(session, hung_up=reason in ("connection closed", "connection failed"))

    async def _end(self, session: SessionT, *, hung_up: bool = False) -> None:
        """End *session*; *hung_up*: its client closed the connection (or vanished), and a
        DELETE of its resource answers 200 for ``delete_grace`` seconds."""
        if self.sessions.pop(session.resource_id, None) is None:
            return
        if hung_up and self.late_delete:
            until = asyncio.get_running_loop().time() + self.config.delete_grace
            self._ended[session.resource_id] = (session.room, session.token, until)
            while len(self._ended) > self.config.max_sessions:
                self._ended.popitem(last=False)
        await session.peer.aclose()
        await session._release()
        others = [task for task in session.tasks if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others)
