"""The signaling router: one deployment's rooms across nodes (processes, machines) that share a
:class:`~rtckit.backplane.base.Backplane`. See :doc:`/topics/cluster` for the design.

Each room lives on one node, its *home*: the node holding the lease ``room:<name>``. The home
runs the room in its ordinary :class:`~rtckit.signaling.hub.SignalingHub`, so everything the
state machine guarantees on one node (sequence numbers, acknowledgements, presence, limits,
peer ids, the order of ``peer-joined`` and relayed messages per recipient) holds by
construction. A connection's *edge* is the node holding its WebSocket.

:class:`SignalingRouter` stands between the transports and the hub, with the hub's transport
methods (:meth:`~SignalingRouter.open`, :meth:`~SignalingRouter.feed`,
:meth:`~SignalingRouter.touch`, :meth:`~SignalingRouter.connection_lost`, the send-buffer
accounting). Until a connection has joined, its frames are served by the edge's own hub (hello,
ping, errors, the rate limit), and the router decodes them to find ``join`` and ``resume``. For
those it resolves the room's home: this node (it holds the lease, or takes it when free), where
the frame is fed as on one node; or another node, to which the edge hands the connection over
(:class:`~rtckit.signaling.relay_wire.Kind` ``OPEN``) and forwards every later frame undecoded.
The home serves it as a :class:`RemoteConnection` whose sends and closes travel back. A new
media room (SFU, MCU) is first placed on the least-loaded live node, and a draining node
(:meth:`SignalingRouter.drain`) places every room elsewhere.

A connection joined on its own edge costs one dictionary look-up more per frame than without a
router; a server without a backplane has no router at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import attrs

from rtckit.errors import (
    AuthError,
    BackplaneError,
    ConnectionClosedError,
    ProtocolError,
    RemoteProtocolError,
    TopologyError,
)
from rtckit.signaling.config import SignalingConfig
from rtckit.signaling.hub import ServerConnection, SignalingHub
from rtckit.signaling.journal_writer import JournalWriter
from rtckit.signaling.protocol import CloseCode, ErrorCode, Join, Resume, decode_frame
from rtckit.signaling.relay_wire import Kind, decode_close, encode_close, pack, unpack
from rtckit.signaling.state import resume_token_room

if TYPE_CHECKING:
    from rtckit.backplane.base import Backplane, Lease, NodeId
    from rtckit.backplane.journal import JournalStore

__all__ = ["ClusterConfig", "RemoteConnection", "SignalingRouter", "room_key"]

logger = logging.getLogger(__name__)

#: No hub connection (hub ids start at 1).
_NO_CONN = 0
#: Hand-backs in a row after which a join is answered ``unavailable`` (the room's lease moves
#: between nodes faster than the connection follows).
_MAX_HANDBACKS = 3
#: The topologies whose rooms are placed on the least-loaded node (they run a media server).
_MEDIA = frozenset({"sfu", "mcu"})


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """How the router uses the backplane."""

    #: Seconds a room's lease lasts unless renewed (the home renews it every third of it); a
    #: home that dies holds its rooms this long at most.
    lease_ttl: float = attrs.field(default=8.0, validator=_positive)
    #: Seconds to wait for the backplane when resolving a room's home; then the client gets
    #: ``unavailable``.
    resolve_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: Frames a client may send while its room's home is being resolved; more closes the
    #: connection (1008).
    max_held_frames: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    #: Seconds to wait for the backplane's list of live nodes when placing a new media room;
    #: then the room is taken on the node that received its first ``join``.
    placement_timeout: float = attrs.field(default=1.0, validator=_positive)
    #: What a media room (SFU, MCU) homed on a node adds to the load it publishes for
    #: placement, in connections (each connection served counts 1).
    media_room_load: float = attrs.field(default=10.0, validator=attrs.validators.ge(0.0))
    #: Seconds after the backplane comes back (it may have restarted empty) during which this
    #: node takes no lease for a room that no node holds: the ``join`` or ``resume`` waits,
    #: so that the room's home, if it comes back within that time, retakes the room first
    #: and its sessions are kept (0: no wait). One lease renewal interval by default.
    comeback_grace: float = attrs.field(
        default=attrs.Factory(lambda self: self.lease_ttl / 3, takes_self=True),
        validator=attrs.validators.ge(0.0),
    )
    #: Keep each room's sessions in the backplane's journal, so that another node takes the
    #: room over with them when its home dies or leaves (clients resume there without losing
    #: a message). Off: a room's sessions die with its home (its clients join again).
    durable_sessions: bool = True
    #: Seconds a journal write may take before the outputs waiting for it go out anyway
    #: (the room keeps working; its journal is rewritten whole later).
    journal_timeout: float = attrs.field(default=1.0, validator=_positive)
    #: Seconds a room's journal outlives its home's last refresh (a home refreshes it with
    #: the lease): the time its sessions can wait for another node to take the room.
    journal_ttl: float = attrs.field(default=60.0, validator=_positive)


def room_key(room: str) -> str:
    """The backplane key of *room*'s lease (escaping is the backplane's business)."""
    return f"room:{room}"


class _Link:
    """One client connection as the router knows it.

    On its edge (``edge is None``): *connection* is the transport's, *conn* its id in this
    hub while this node serves it, *home* the node serving it once handed over. On a home,
    for a connection whose edge is another node: *connection* is a :class:`RemoteConnection`
    and *edge* that node. *watch*: it has not joined, its frames are looked at.
    """

    __slots__ = (
        "avoid",
        "conn",
        "connection",
        "edge",
        "handbacks",
        "held",
        "home",
        "key",
        "tokens",
        "tokens_at",
        "transport_pings",
        "trusted",
        "watch",
    )

    def __init__(
        self,
        connection: ServerConnection,
        conn: int,
        key: int,
        edge: NodeId | None,
        *,
        trusted: bool = False,
        transport_pings: bool = True,
    ) -> None:
        self.connection = connection
        self.conn = conn
        self.key = key
        self.edge = edge
        self.home: NodeId | None = None
        self.watch = True
        self.held: list[str | bytes] | None = None
        self.handbacks = 0
        self.avoid: frozenset[NodeId] = frozenset()  # nodes that handed it back
        self.trusted = trusted
        self.transport_pings = transport_pings
        self.tokens = 0.0  # the edge's rate limit on forwarded frames (see _forward)
        self.tokens_at = 0.0


class RemoteConnection:
    """A client connection whose WebSocket is on another node (its edge), as the room's home
    serves it: a :class:`~rtckit.signaling.hub.ServerConnection` whose sends, closes and pings
    are posted to the edge."""

    __slots__ = ("_router", "edge", "key")

    def __init__(self, router: SignalingRouter, edge: NodeId, key: int) -> None:
        self._router = router
        self.edge = edge
        self.key = key

    def send_text(self, text: str) -> None:
        self._router._post(self.edge, Kind.SEND, self.key, text.encode())

    def close(self, code: int, reason: str) -> None:
        self._router._remote_closed(self, code, reason)

    def ping(self) -> None:
        self._router._post(self.edge, Kind.PING, self.key)


class SignalingRouter:
    """Route a hub's connections to their rooms' homes over *backplane* (see the module).

    An async context manager: :meth:`start` starts the hub and joins the backplane;
    :meth:`aclose` closes both. Transports call it as they call a hub.
    """

    def __init__(
        self,
        hub: SignalingHub,
        backplane: Backplane,
        config: ClusterConfig | None = None,
    ) -> None:
        self.hub = hub
        self.backplane = backplane
        self.cluster = config or ClusterConfig()
        self.node_id: NodeId = backplane.node_id
        self._links: dict[int, _Link] = {}  # this node's client connections, by key
        self._remote: dict[tuple[NodeId, int], _Link] = {}  # served here, edge elsewhere
        self._rooms: dict[str, Lease] = {}  # rooms homed here
        # until when (loop time) each room's lease surely holds: set when taken or renewed
        self._held_until: dict[str, float] = {}
        self._declared = frozenset(room.name for room in hub.config.rooms)
        self._keys = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._refused: set[NodeId] = set()  # nodes whose payloads had another version
        self._journal: JournalStore | None = None
        self._writer: JournalWriter | None = None
        self._adopting: dict[str, asyncio.Task[None]] = {}  # rooms being restored here
        self._down: dict[NodeId, float] = {}  # nodes reported down (loop time)
        self._leaving: dict[str, Lease] = {}  # rooms handed over, until their journal is written
        self._closed = False
        self._left = False  # the backplane was closed: nothing more is posted
        self._draining = False
        self._grace_until = 0.0  # loop time: see ClusterConfig.comeback_grace
        # (until when, node): media rooms this node placed on another node lately, counted
        # on that node's load in this node's view until it has published its own
        self._placed: list[tuple[float, NodeId]] = []

    # --- what transports use (the hub's interface) --------------------------------------------

    @property
    def config(self) -> SignalingConfig:
        """The hub's configuration."""
        return self.hub.config

    @property
    def closed(self) -> bool:
        """Whether the hub is closed."""
        return self.hub.closed

    def reserve(self, held: int, size: int) -> bool:
        """See :meth:`SignalingHub.reserve <rtckit.signaling.hub.SignalingHub.reserve>`."""
        return self.hub.reserve(held, size)

    def release(self, size: int) -> None:
        """See :meth:`SignalingHub.release <rtckit.signaling.hub.SignalingHub.release>`."""
        self.hub.release(size)

    def open(
        self,
        connection: ServerConnection,
        *,
        trusted: bool = False,
        transport_pings: bool = False,
    ) -> int:
        """Attach a client connection of this node; return its key (for :meth:`feed`)."""
        conn = self.hub.open(connection, trusted=trusted, transport_pings=transport_pings)
        key = next(self._keys)
        self._links[key] = _Link(
            connection, conn, key, None, trusted=trusted, transport_pings=transport_pings
        )
        return key

    def feed(self, key: int, data: str | bytes) -> None:
        """A frame arrived on the connection *key*."""
        # _frame's body, inlined: every frame of every client connection of the node comes here
        link = self._links.get(key)
        if link is None:
            return
        if link.watch:
            self._watch(link, data)
        elif link.home is None:
            self.hub.feed(link.conn, data)
        else:
            self._forward(link, data)

    def touch(self, key: int) -> None:
        """The connection *key* answered a WebSocket ping."""
        link = self._links.get(key)
        if link is None:
            return
        if link.home is None:
            self.hub.touch(link.conn)
        else:
            self._post(link.home, Kind.TOUCH, key)

    def connection_lost(self, key: int) -> None:
        """The connection *key* is gone (idempotent)."""
        link = self._links.pop(key, None)
        if link is None:
            return
        if link.home is not None:
            self._post(link.home, Kind.LOST, key)
        elif link.conn != _NO_CONN:
            self.hub.connection_lost(link.conn)

    # --- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> SignalingRouter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the hub and join the backplane (raises
        :class:`~rtckit.errors.BackplaneError` if it cannot be reached)."""
        await self.hub.start()
        if self._renewer is None:
            await self.backplane.start(self)
            if self.cluster.durable_sessions and self._writer is None:
                self._journal = self.backplane.journal(self.cluster.journal_ttl)
                self.hub.state.journal = True
                self._writer = JournalWriter(
                    self.hub,
                    self._journal,
                    lease_of=self._lease_of,
                    available=lambda: self.backplane.up,
                    on_fenced=self._fenced,
                    timeout=self.cluster.journal_timeout,
                )
                self._writer.start()
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_loop(), name="rtckit-router-leases"
            )

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called: this node takes no more rooms."""
        return self._draining

    async def drain(self) -> None:
        """Stop taking rooms and hand the rooms homed here over to the other nodes, before
        this node stops (``rtckit serve`` does it on SIGTERM).

        This node publishes an infinite load (the other nodes place no room here), places
        every room its clients join on another live node (or, if it is the last one, keeps
        them), and hands every room it homes over: its connections close with 1001, its
        journal is brought up to date and its lease is released; their clients reconnect and
        resume their sessions on the room's new home (with ``durable_sessions``; without,
        they join it again). The node keeps serving what its clients send until
        :meth:`aclose`.
        """
        self._draining = True
        self._publish_load()
        for room in list(self._rooms):
            await self._hand_over(room)

    async def aclose(self) -> None:
        """Close the client connections served elsewhere (1001), the hub (which closes the
        rest), give the rooms' leases up and leave the backplane. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for link in list(self._links.values()):
            if link.home is not None:
                self._links.pop(link.key, None)
                self._post(link.home, Kind.LOST, link.key)
                link.connection.close(CloseCode.GOING_AWAY, "server shutting down")
        if self._writer is not None:  # what waits for the journal goes out first
            await self._writer.aclose()
        await self.hub.aclose()
        tasks = [
            *self._adopting.values(),
            *self._tasks,
            *([self._renewer] if self._renewer else []),
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for lease in list(self._rooms.values()):
            with contextlib.suppress(BackplaneError):
                await self.backplane.release(lease)
        self._rooms.clear()
        self._held_until.clear()
        self._left = True
        await self.backplane.aclose()

    @property
    def rooms(self) -> list[str]:
        """The rooms homed on this node (whose lease it holds)."""
        return list(self._rooms)

    async def locate(self, room: str, *, place: bool = True) -> NodeId:
        """The node where a server-side participant of media room *room* (a WHIP publisher,
        a WHEP viewer: it joins the hub in process) must be served: the room's home.

        A room no node holds is placed as a signaling ``join`` of a media room would place
        it (the least-loaded live node; with *place* false, this node); when that is this
        node, its lease is taken (and its sessions restored from its journal) before this
        returns, so that the caller's ``join`` lands on the room's home. A room taken so
        and left empty is given up at the next lease renewal. A room the hub refuses to
        create (not declared, rooms not created on demand) is this node's: the ``join`` is
        refused here. Raises :class:`~rtckit.errors.BackplaneError` (the backplane cannot
        be reached, or answers late) and :class:`~rtckit.errors.ConnectionClosedError` (the
        router is closed).
        """
        if self._closed:
            raise ConnectionClosedError("the signaling router is closed")
        if (room in self._rooms and room not in self._adopting) or (
            not self.config.create_rooms and room not in self._declared
        ):
            return self.node_id
        if not self.backplane.up:
            raise BackplaneError("the backplane cannot be reached")
        await self._wait_for_homes(room)
        if place:
            node = await self._placement(room, frozenset(), opened=0)
            if node is not None:
                return node
        try:
            lease = await self._take(room)
        except TimeoutError:
            raise BackplaneError(f"room {room!r}: the backplane answered late") from None
        self._publish_load()
        return lease.node

    async def home(self, room: str) -> NodeId | None:
        """The node that homes media room *room* now, or ``None``: no node holds it.

        Unlike :meth:`locate`, nothing is placed and no lease is taken: for a server-side
        member that does not create a room (a WHEP viewer). A room the hub refuses to
        create is this node's, as for :meth:`locate`. Raises
        :class:`~rtckit.errors.BackplaneError` (the backplane cannot be reached, or answers
        late) and :class:`~rtckit.errors.ConnectionClosedError` (the router is closed).
        """
        if self._closed:
            raise ConnectionClosedError("the signaling router is closed")
        if room in self._rooms or (not self.config.create_rooms and room not in self._declared):
            return self.node_id
        if not self.backplane.up:
            raise BackplaneError("the backplane cannot be reached")
        try:
            async with asyncio.timeout(self.cluster.resolve_timeout):
                lease = await self.backplane.holder(room_key(room))
        except TimeoutError:
            raise BackplaneError(f"room {room!r}: the backplane answered late") from None
        return None if lease is None else lease.node

    # --- routing ---------------------------------------------------------------------------

    def _frame(self, link: _Link, data: str | bytes) -> None:
        if link.watch:
            self._watch(link, data)
        elif link.home is None:
            self.hub.feed(link.conn, data)
        else:
            self._forward(link, data)

    def _forward(self, link: _Link, data: str | bytes) -> None:
        """Post a frame of *link* to its home, within twice the rate limit (messages per
        second and burst): the home applies the limit itself (error ``rate_limited``, close
        1008) but a flood must not fill the backplane's queue towards it meanwhile, which
        would cut every connection this node shares with it."""
        home = link.home
        assert home is not None
        if not link.trusted:
            config = self.config
            now = time.monotonic()
            burst = 2.0 * config.burst
            link.tokens = min(
                burst, link.tokens + (now - link.tokens_at) * 2.0 * config.max_messages_per_second
            )
            link.tokens_at = now
            if link.tokens < 1.0:
                self._drop_link(link, CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                return
            link.tokens -= 1.0
        self._post(home, Kind.FRAME, link.key, _bytes(data))

    def _watch(self, link: _Link, data: str | bytes) -> None:
        """A frame of a connection that has not joined: route ``join`` and ``resume``."""
        held = link.held
        if held is not None:  # its room's home is being resolved
            if len(held) >= self.cluster.max_held_frames:
                self._drop_link(link, CloseCode.POLICY_VIOLATION, "too many frames")
            else:
                held.append(data)
            return
        found = self._room_of(data)
        if (
            found is None
            or (found[0] in self._rooms and found[0] not in self._adopting)
            or not self.hub.state.greeted(link.conn)
        ):
            self._serve(link, data)  # the hub answers a join before hello
            return
        room, message = found
        if not self.config.create_rooms and room not in self._declared:
            self._serve(link, data)  # the hub answers unknown_room: no lease for that
            return
        if isinstance(message, Join) and not link.trusted:
            try:  # a forged token never reaches the backplane: the hub answers it here
                self.config.auth.authenticate(room, message.token)
            except AuthError:
                self._serve(link, data)
                return
        if not self.backplane.up:
            self._unavailable(link)
            return
        link.held = []
        self._spawn(self._route(link, room, message, data))

    def _room_of(self, data: str | bytes) -> tuple[str, Join | Resume] | None:
        """The room a ``join`` or ``resume`` frame names (``None`` for any other frame, or
        one the hub will refuse anyway)."""
        config = self.config
        try:
            message, _plain = decode_frame(
                data, max_size=config.max_message_size, max_depth=config.max_json_depth
            )
        except ProtocolError:
            return None
        if isinstance(message, Join):
            return message.room, message
        if isinstance(message, Resume):
            room = resume_token_room(message.resume_token)
            return None if room is None else (room, message)
        return None

    def _serve(self, link: _Link, data: str | bytes) -> None:
        """Feed *data* to this node's hub, where *link* is served."""
        hub = self.hub
        hub.feed(link.conn, data)
        if link.watch and hub.state.joined(link.conn):
            link.watch = False
            link.handbacks = 0

    async def _take(self, room: str) -> Lease:
        """Take *room*'s lease for this node, or return its holder's; a room taken here has
        its sessions restored from its journal before this returns. Raises
        :class:`~rtckit.errors.BackplaneError` or :exc:`TimeoutError`."""
        asked = asyncio.get_running_loop().time()
        async with asyncio.timeout(self.cluster.resolve_timeout + self.cluster.lease_ttl):
            lease = await self._acquire_live(room)
            if lease.node == self.node_id:
                if self._rooms.setdefault(room, lease) == lease and room not in self._adopting:
                    self._held(room, asked)
                    if self._journal is not None and not self.hub.state.peers(room):
                        self._adopt(room, lease)
                adopting = self._adopting.get(room)
                if adopting is not None:
                    await asyncio.shield(adopting)
        return lease

    async def _resolve(self, link: _Link, room: str, data: str | bytes) -> None:
        try:
            lease: Lease | None = await self._take(room)
        except (BackplaneError, TimeoutError):
            lease = None
        held, link.held = link.held or [], None
        if not self._alive(link) or not self.hub.state.greeted(link.conn):
            # gone meanwhile (or closed by the hub, whose transport has not told yet)
            if lease is not None and lease.node == self.node_id and room not in self._rooms:
                self._spawn(self._release(lease))
            return
        if lease is None:
            self._unavailable(link)
        elif lease.node == self.node_id:
            self._serve(link, data)
            if not self.hub.state.peers(room) and self._rooms.get(room) == lease:
                del self._rooms[room]  # the join was refused: give the room up at once
                self._held_until.pop(room, None)
                self._spawn(self._release(lease))
        else:
            self._send_away(link, lease.node, data)
        for frame in held:
            if self._alive(link):
                self._frame(link, frame)

    async def _route(
        self, link: _Link, room: str, message: Join | Resume, data: str | bytes
    ) -> None:
        """Find the home of *room* for *link*'s ``join`` or ``resume`` (*data*): the node
        placement picks for a new room (:meth:`_place`), else as :meth:`_resolve` finds it."""
        await self._wait_for_homes(room)
        node = await self._place(link, room, message)
        if node is None:
            await self._resolve(link, room, data)
            self._publish_load()  # a room taken here counts at once in the published load
            return
        held, link.held = link.held or [], None
        if not self._alive(link) or not self.hub.state.greeted(link.conn):
            return
        self._send_away(link, node, data)
        for frame in held:
            if self._alive(link):
                self._frame(link, frame)

    async def _wait_for_homes(self, room: str) -> None:
        """Just after the backplane came back (:attr:`ClusterConfig.comeback_grace`), let
        a *room* that no node holds wait for the end of the grace: its home, if it comes
        back meanwhile, retakes it (the frames of the waiting connection are held)."""
        loop = asyncio.get_running_loop()
        if self._grace_until <= loop.time():
            return
        try:
            async with asyncio.timeout(self.cluster.resolve_timeout):
                if await self.backplane.holder(room_key(room)) is not None:
                    return  # its home is back: no need to wait
        except (BackplaneError, TimeoutError):
            pass
        await asyncio.sleep(max(0.0, self._grace_until - loop.time()))

    async def _place(self, link: _Link, room: str, message: Join | Resume) -> NodeId | None:
        """The node to hand *link* to, on its way to *room*, before any lease is taken; or
        ``None``: resolve the room here (:meth:`_resolve`).

        A media room (SFU, MCU: it runs a media server) that no node holds goes to the
        least-loaded live node; a mesh room stays where its first ``join`` arrives, so that
        its peers, often on one node behind a load balancer with affinity, cross no
        backplane. A draining node places every room elsewhere, and hands back every
        connection another node handed it for a room it does not home. If the backplane's
        answer fails or is late, the room is resolved here.
        """
        if link.edge is not None:  # handed over to this node: it was placed here
            return link.edge if self._draining else None  # (handed back to its edge)
        if not self._draining:
            if not isinstance(message, Join):
                return None  # a session is resumed where it lives; a new one joins anew
            try:
                if self.config.topology_for(room, message.metadata) not in _MEDIA:
                    return None
            except TopologyError:
                return None  # the hub refuses the join
        return await self._placement(room, link.avoid)

    async def _placement(
        self, room: str, avoid: frozenset[NodeId], *, opened: int = 1
    ) -> NodeId | None:
        """The holder of *room*'s lease if another node holds it, else the least-loaded live
        node but *avoid*; ``None`` for this node, or if the backplane fails or is late.
        *opened*: connections already counted in this node's load for what is placed (the
        one being placed: 1; an in-process participant not joined yet: 0)."""
        try:
            async with asyncio.timeout(self.cluster.placement_timeout):
                lease = await self.backplane.holder(room_key(room))
                if lease is not None:
                    return None if lease.node == self.node_id else lease.node
                loads = await self.backplane.live_nodes()
        except (BackplaneError, TimeoutError):
            return None
        return self._least_loaded(loads, avoid, opened)

    def _least_loaded(
        self, loads: dict[NodeId, float], avoid: frozenset[NodeId], opened: int = 1
    ) -> NodeId | None:
        """The live node with the least load in *loads* (ties: this node, then the first
        id), *avoid* and draining nodes (an infinite load) left out; ``None`` for this node
        or none. This node's own load is taken now, and a room placed on another node counts
        on its load here until that node has published it (one lease TTL), so that rooms
        created in a row spread over idle nodes."""
        now = asyncio.get_running_loop().time()
        self._placed = placed = [(until, node) for until, node in self._placed if until > now]
        # this node's own load leaves out the connection being placed (it is open here already)
        view = {**loads, self.node_id: self._load() - opened}
        for _until, node in placed:
            if node in view:
                view[node] += self.cluster.media_room_load + 1.0
        ranked = sorted(
            (load, node != self.node_id, node)
            for node, load in view.items()
            if node not in avoid and math.isfinite(load)
        )
        if not ranked or ranked[0][2] == self.node_id:
            return None
        node = ranked[0][2]
        placed.append((now + self.cluster.lease_ttl, node))
        return node

    def _load(self) -> float:
        """This node's load for placement: its connections, plus
        :attr:`ClusterConfig.media_room_load` per media room homed here; infinite while it
        drains."""
        if self._draining:
            return math.inf
        state = self.hub.state
        media = sum(1 for room in self._rooms if state.room_topology(room) in _MEDIA)
        return state.connection_count + media * self.cluster.media_room_load

    def _publish_load(self) -> None:
        self.backplane.set_load(self._load())

    async def _acquire_live(self, room: str) -> Lease:
        """Take *room*'s lease, or return its holder's; a holder reported down is waited out
        (its lease lapses within the TTL), so that a client resuming after its room's home
        died finds the room's next home rather than the dead one."""
        while True:
            lease = await self.backplane.acquire(room_key(room), self.cluster.lease_ttl)
            down_at = self._down.get(lease.node)
            if lease.node == self.node_id or down_at is None:
                return lease
            if (
                asyncio.get_running_loop().time() - down_at > 2 * self.cluster.lease_ttl
                or lease.node in await self.backplane.live_nodes()
            ):
                self._down.pop(lease.node, None)  # it came back (or its id was reused)
                return lease
            await asyncio.sleep(min(1.0, self.cluster.lease_ttl / 10))

    def _adopt(self, room: str, lease: Lease) -> None:
        """Restore *room*'s sessions from its journal (this node just took its lease)."""
        task = asyncio.get_running_loop().create_task(
            self._restore(room, lease), name=f"rtckit-router-restore {room}"
        )
        self._adopting[room] = task

        def done(task: asyncio.Task[None]) -> None:
            if self._adopting.get(room) is task:
                del self._adopting[room]
            if not task.cancelled() and (exc := task.exception()) is not None:
                logger.error("restoring room %r failed", room, exc_info=exc)

        task.add_done_callback(done)

    async def _restore(self, room: str, lease: Lease) -> None:
        assert self._journal is not None
        try:
            async with asyncio.timeout(self.cluster.resolve_timeout):
                snapshot = await self._journal.load(room)
        except (BackplaneError, TimeoutError) as exc:
            logger.warning("room %r: its journal could not be read (%s): sessions lost", room, exc)
            return
        except RemoteProtocolError as exc:
            logger.warning("room %r: its journal is unreadable (%s): sessions lost", room, exc)
            return
        if snapshot is None or self._rooms.get(room) != lease or self.hub.state.peers(room):
            return
        try:
            self.hub.restore_room(snapshot, grace=self.cluster.lease_ttl)
        except RemoteProtocolError as exc:
            logger.warning("room %r: its journal is unreadable (%s): sessions lost", room, exc)
            return
        logger.info(
            "room %r taken over with %d session(s) from its journal", room, len(snapshot.sessions)
        )

    def _lease_of(self, room: str) -> Lease | None:
        """The lease under which *room*'s journal is written here, if any."""
        return self._rooms.get(room) or self._leaving.get(room)

    def _fenced(self, room: str) -> None:
        """A journal write of *room* was refused: its lease moved on to another node."""
        if self._rooms.pop(room, None) is None:
            return
        self._held_until.pop(room, None)
        logger.warning("room %r: its lease moved on; closing it here", room)
        self.hub.evict_room(room, CloseCode.GOING_AWAY, "the room moved to another node")

    async def _adopt_orphans(self) -> None:
        """Take over the rooms whose journal outlived their home's lease, if this node is
        the least loaded live one (ties: the lowest node id)."""
        journal = self._journal
        if journal is None or not self.backplane.up or self._closed or self._draining:
            return
        if self._grace_until > asyncio.get_running_loop().time():
            return  # just back from an outage: the rooms' homes retake them first
        rooms = await journal.orphans(64)
        if not rooms:
            return
        live = await self.backplane.live_nodes()
        for node in self._down:
            live.pop(node, None)
        if live and min(live.items(), key=lambda item: (item[1], item[0]))[0] != self.node_id:
            return
        loop = asyncio.get_running_loop()
        for room in rooms:
            if room in self._rooms or self._closed:
                continue
            asked = loop.time()
            lease = await self.backplane.acquire(room_key(room), self.cluster.lease_ttl)
            if lease.node != self.node_id or room in self._rooms:
                continue
            self._rooms[room] = lease
            self._held(room, asked)
            self._adopt(room, lease)

    async def _watch_orphans(self) -> None:
        """A node went down: its rooms' leases lapse within the TTL; take them then."""
        ttl = self.cluster.lease_ttl
        deadline = asyncio.get_running_loop().time() + ttl + ttl / 3
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(BackplaneError, TimeoutError):
                async with asyncio.timeout(self.cluster.resolve_timeout):
                    await self._adopt_orphans()
            await asyncio.sleep(min(1.0, ttl / 10))

    def _alive(self, link: _Link) -> bool:
        if link.edge is None:
            return self._links.get(link.key) is link
        return self._remote.get((link.edge, link.key)) is link

    def _send_away(self, link: _Link, node: NodeId, data: str | bytes) -> None:
        """*link*'s room lives on *node*: hand the connection over to it (this node is its
        edge), or back to its edge (this node served it for another room)."""
        self.hub.handoff(link.conn)
        link.conn = _NO_CONN
        if link.edge is None:
            link.home = node
            link.watch = False
            link.tokens = 2.0 * self.config.burst
            link.tokens_at = time.monotonic()
            self._post(node, Kind.OPEN, link.key, _bytes(data))
        else:
            del self._remote[link.edge, link.key]
            self._post(link.edge, Kind.HANDBACK, link.key, _bytes(data))

    def _unavailable(self, link: _Link) -> None:
        self.hub.reject(
            link.conn, ErrorCode.UNAVAILABLE, "the room's node cannot be reached; try again"
        )

    def _drop_link(self, link: _Link, code: int, reason: str) -> None:
        """Close *link*'s client connection with *code*."""
        if link.edge is None:
            self._links.pop(link.key, None)
            if link.home is not None:
                self._post(link.home, Kind.LOST, link.key)
            elif link.conn != _NO_CONN:
                self.hub.connection_lost(link.conn)
            link.connection.close(code, reason)
        else:
            self._remote.pop((link.edge, link.key), None)
            self._post(link.edge, Kind.CLOSE, link.key, encode_close(code, reason))
            self.hub.connection_lost(link.conn)

    # --- the backplane's side --------------------------------------------------------------

    def _post(self, node: NodeId, kind: Kind, key: int, data: bytes = b"") -> None:
        if not self._left:
            self.backplane.post(node, pack(kind, key, data))

    def _remote_closed(self, remote: RemoteConnection, code: int, reason: str) -> None:
        self._remote.pop((remote.edge, remote.key), None)
        self._post(remote.edge, Kind.CLOSE, remote.key, encode_close(code, reason))

    def on_message(self, sender: NodeId, payload: bytes) -> None:
        """A payload from node *sender* (the backplane calls it)."""
        try:
            envelope = unpack(payload)
        except RemoteProtocolError as exc:
            if sender not in self._refused:
                self._refused.add(sender)
                logger.warning(
                    "refusing payloads from node %r (%s): closing its connections", sender, exc
                )
            self._forget_node(sender)
            return
        kind, key, data = envelope.kind, envelope.key, envelope.data
        if kind is Kind.SEND or kind is Kind.CLOSE or kind is Kind.PING or kind is Kind.HANDBACK:
            self._from_home(sender, kind, key, data)
        else:
            self._from_edge(sender, kind, key, data)

    def _from_home(self, home: NodeId, kind: Kind, key: int, data: bytes) -> None:
        link = self._links.get(key)
        if link is None:
            return
        if link.home != home:
            if kind is Kind.HANDBACK and link.home is None and link.conn != _NO_CONN:
                self._frame(link, data.decode(errors="replace"))  # sent before it came back
            return
        if kind is Kind.SEND:
            link.connection.send_text(data.decode(errors="replace"))
        elif kind is Kind.PING:
            link.connection.ping()
        elif kind is Kind.CLOSE:
            self._links.pop(key, None)
            link.connection.close(*decode_close(data))
        else:  # HANDBACK: serve it here again and route the frame afresh
            link.home = None
            link.avoid |= {home}  # not placed there again (it may be draining)
            link.watch = True
            link.handbacks += 1
            try:
                link.conn = self.hub.open(
                    link.connection,
                    trusted=link.trusted,
                    transport_pings=link.transport_pings,
                    greeted=True,
                )
            except ConnectionClosedError:  # the hub is closing
                self._links.pop(key, None)
                link.connection.close(CloseCode.GOING_AWAY, "server closing")
                return
            if link.handbacks > _MAX_HANDBACKS:
                self._unavailable(link)
            else:
                self._frame(link, data.decode(errors="replace"))

    def _from_edge(self, edge: NodeId, kind: Kind, key: int, data: bytes) -> None:
        link = self._remote.get((edge, key))
        if kind is Kind.OPEN:
            if link is not None:  # the edge broke the envelope's rules: end both
                self._drop_link(link, CloseCode.INTERNAL_ERROR, "connection opened twice")
                return
            if self.hub.closed:
                self._post(edge, Kind.CLOSE, key, encode_close(CloseCode.GOING_AWAY, "closing"))
                return
            remote = RemoteConnection(self, edge, key)
            conn = self.hub.open(remote, transport_pings=True, greeted=True)
            link = self._remote[edge, key] = _Link(remote, conn, key, edge)
            self._frame(link, _text(data))
        elif link is None:
            if kind is Kind.FRAME:  # handed back meanwhile (or this node restarted)
                self._post(edge, Kind.HANDBACK, key, data)
        elif kind is Kind.FRAME:
            self._frame(link, _text(data))
        elif kind is Kind.TOUCH:
            self.hub.touch(link.conn)
        elif kind is Kind.LOST:
            del self._remote[edge, key]
            self.hub.connection_lost(link.conn)

    def on_node_down(self, node: NodeId) -> None:
        """*node* died or left: drop what it served here, close what it served for us, and
        take over its rooms (with their journals) once their leases lapse."""
        self._down[node] = asyncio.get_running_loop().time()
        self._forget_node(node)
        if self._journal is not None and not self._closed:
            self._spawn(self._watch_orphans())

    def on_unreachable(self, node: NodeId) -> None:
        """What was posted to *node* may be lost: the same as its death, for the
        connections it shares with this node (their clients reconnect and resume)."""
        self._forget_node(node)

    def on_state(self, up: bool) -> None:
        """The backplane went down (every connection shared with another node is cut: rooms
        homed here keep serving local peers) or came back (leases are taken again)."""
        if not up:
            logger.warning("signaling backplane down: serving the rooms homed on this node only")
            for node in {link.home for link in self._links.values() if link.home} | {
                edge for edge, _key in self._remote
            }:
                self._forget_node(node)
        else:
            logger.info("signaling backplane up again: taking this node's rooms' leases again")
            self._grace_until = asyncio.get_running_loop().time() + self.cluster.comeback_grace
            self._spawn(self._reacquire())
            if self._writer is not None:
                self._writer.poke()

    def _forget_node(self, node: NodeId) -> None:
        for (edge, _key), link in list(self._remote.items()):
            if edge == node:
                del self._remote[edge, link.key]
                self.hub.connection_lost(link.conn)
        for link in list(self._links.values()):
            if link.home == node:
                del self._links[link.key]
                link.connection.close(CloseCode.GOING_AWAY, "the room's node is unreachable")

    # --- leases ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("signaling router task failed", exc_info=exc)  # a bug

    def _held(self, room: str, since: float) -> None:
        """The lease of *room* was taken or renewed by a call made at loop time *since*."""
        self._held_until[room] = since + self.cluster.lease_ttl

    async def _renew_loop(self) -> None:
        ttl = self.cluster.lease_ttl
        while True:
            await asyncio.sleep(ttl / 3)
            # a lease this node's own clock says has lapsed (the process was paused, or
            # starved): its media rooms close before anything else, without asking anyone
            self._fence(0.0)
            try:
                if self.backplane.up:
                    await self._renew_all(ttl)
            except BackplaneError:
                pass
            except Exception:  # pragma: no cover - a bug; keep renewing
                logger.exception("renewing the signaling rooms' leases failed")
            # the next look comes a third of the TTL from now (or a little later): fence what
            # would be left with less than that, i.e. after two renewals missed in a row
            self._fence(ttl / 2)

    async def _renew_all(self, ttl: float) -> None:
        self._publish_load()
        state = self.hub.state
        loop = asyncio.get_running_loop()
        for room, lease in list(self._rooms.items()):
            if self._rooms.get(room) is not lease:
                continue
            if not state.peers(room):  # the room emptied: give it up
                del self._rooms[room]
                self._held_until.pop(room, None)
                await self.backplane.release(lease)
                continue
            asked = loop.time()
            if await self.backplane.renew(lease, ttl):
                self._held(room, asked)
                if self._journal is not None and room not in self._adopting:
                    await self._journal.refresh(room, lease, self.cluster.journal_ttl)
            else:
                await self._retake(room, lease)
        await self._adopt_orphans()

    def _fence(self, margin: float) -> None:
        """Close the media rooms (SFU, MCU) whose lease holds for *margin* seconds or less,
        so that it may lapse before the next renewal:
        their media server stops here before another node can take the room, so that a room
        never has two. Mesh rooms keep serving their local peers (they hold no media)."""
        now = asyncio.get_running_loop().time()
        state = self.hub.state
        for room in list(self._rooms):
            if self._held_until.get(room, now) - now > margin:
                continue
            if state.room_topology(room) in (None, "mesh"):
                continue
            del self._rooms[room]
            self._held_until.pop(room, None)
            logger.warning(
                "room %r: its lease could not be renewed; closing it here before it lapses",
                room,
            )
            if self._writer is not None:
                self._writer.drop(room)
            self.hub.evict_room(room, CloseCode.GOING_AWAY, "the room's lease lapses")

    async def _hand_over(self, room: str) -> None:
        """Give *room* up so that another node takes it: close its connections with 1001
        (nothing more changes in the room here), wait until its journal holds every change
        made here, then release its lease (compare-and-delete). Its clients reconnect: their
        ``resume`` finds the lease free, or soon free, and the node that takes the room
        restores their sessions from the journal (placement skips this draining node)."""
        lease = self._rooms.pop(room, None)
        if lease is None:
            return
        self._held_until.pop(room, None)
        self._leaving[room] = lease  # its last records are still written under it
        try:
            self.hub.evict_room(room, CloseCode.GOING_AWAY, "the node is draining")
            if self._writer is not None:
                await self._writer.flush()
        finally:
            del self._leaving[room]
        await self._release(lease)

    async def _release(self, lease: Lease) -> None:
        with contextlib.suppress(BackplaneError):
            await self.backplane.release(lease)

    async def _reacquire(self) -> None:
        for room, lease in list(self._rooms.items()):
            try:
                await self._retake(room, lease)
            except BackplaneError:
                return  # down again: the next on_state(True) retries

    async def _retake(self, room: str, lease: Lease) -> None:
        """The lease of *room* may have lapsed: take it again, or give the room up (its
        connections close with 1001: their clients reconnect to its new home)."""
        asked = asyncio.get_running_loop().time()
        current = await self.backplane.acquire(room_key(room), self.cluster.lease_ttl)
        if self._rooms.get(room) is not lease:
            return
        if current.node == self.node_id:
            self._rooms[room] = current
            if current != lease:  # taken anew: its TTL starts now; its journal may be gone
                self._held(room, asked)
                if self._writer is not None:
                    self._writer.rewrite(room)
            return
        del self._rooms[room]
        self._held_until.pop(room, None)
        logger.warning("room %r moved to node %r: closing its connections here", room, current.node)
        if self._writer is not None:
            self._writer.drop(room)
        self.hub.evict_room(room, CloseCode.GOING_AWAY, "the room moved to another node")


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _text(data: bytes) -> str | bytes:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data  # the hub answers bad_encoding
