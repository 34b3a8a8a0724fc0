"""The server's room and session state machine, sans-I/O.

:class:`SignalingState` never touches a socket or a clock. The I/O layer (the WebSocket server,
the in-memory hub) feeds it what happened and performs what it returns:

* :meth:`~SignalingState.open` a connection appeared (``trusted`` for in-process peers);
* :meth:`~SignalingState.receive_data` / :meth:`~SignalingState.receive` a frame arrived;
* :meth:`~SignalingState.touch` the transport saw a sign of life it handled itself (a
  WebSocket pong);
* :meth:`~SignalingState.closed` the connection went away;
* :meth:`~SignalingState.tick` time passed (heartbeats, timeouts, acknowledgements).

Each returns an :class:`Output`: ``actions`` (:class:`Send`, :class:`Close` and
:class:`Heartbeat`, to perform in order) and ``events`` (typed server-side events for hooks:
:class:`PeerJoinedEvent`, :class:`PeerLeftEvent`, :class:`MessageEvent`,
:class:`RoomClosedEvent`, :class:`ErrorSentEvent`).

Connection life cycle (a connection is one WebSocket; a session is one peer in one room and
can outlive its connection for ``resume_window`` seconds):

.. code-block:: text

    open --hello--> greeted --join--> joined ---bye----------------------> closed
                       |                 |--drop/dead--> detached --resume--> joined
                       '--resume---------'                   '--window expires--> removed

Delivery rules (see :doc:`/topics/signaling-protocol`): every message the server sends in a
session carries ``seq`` (1, 2, 3... per session) and stays queued until the client acknowledges
it; every relayed client message carries the client's ``seq``, duplicates are dropped, and the
server acknowledges. A message whose target leaves without acknowledging it is reported to its
sender as an ``undeliverable`` error naming the sender's ``seq``.

Limits (the protocol page's "Limits"): an acknowledgement beyond the last ``seq`` sent is
refused (``bad_ack``, in ``ack`` and in ``resume``); queued messages are bounded per session
(``max_pending``, ``max_pending_bytes``) and in total (``max_total_pending_bytes``), beyond
which relays are refused (``backlog_full``); the server's own messages are always queued, and a
session that lets them pile up is closed with 4004. ``join`` metadata and ``welcome`` are
bounded; ``resume`` checks the room token again.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import secrets
from collections import deque
from typing import Any, NamedTuple, TypeAlias

import attrs

from rtckit.backplane.journal import (
    Record,
    RoomSnapshot,
    SessionData,
    SessionSnapshot,
    encode_session,
)
from rtckit.errors import AuthError, ProtocolError, RemoteProtocolError, TopologyError
from rtckit.signaling.config import RoomConfig, SignalingConfig
from rtckit.signaling.protocol import (
    MAX_SEQ,
    PROTOCOL_VERSION,
    Ack,
    AppMessage,
    Bye,
    CloseCode,
    Error,
    ErrorCode,
    Hello,
    Join,
    Message,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    Ping,
    Pong,
    Relayed,
    Resume,
    Resumed,
    Welcome,
    decode,
    decode_frame,
    encode,
    encode_relayed,
    json_size,
    with_seq,
)

__all__ = [
    "SERVER_AGENT",
    "Action",
    "Close",
    "ConnectionId",
    "ErrorSentEvent",
    "Heartbeat",
    "MessageEvent",
    "Output",
    "PeerJoinedEvent",
    "PeerLeftEvent",
    "RoomClosedEvent",
    "Send",
    "ServerEvent",
    "SignalingState",
    "resume_token_room",
]

SERVER_AGENT = "rtckit-py/1"

ConnectionId: TypeAlias = int


def _new_resume_token(room: str) -> str:
    """A resume token: the room's name (base64url, so that a node of a cluster can tell
    where the session lives, see :func:`resume_token_room`), a dot and 32 secret characters
    (192 random bits). Clients treat it as opaque."""
    name = base64.urlsafe_b64encode(room.encode()).rstrip(b"=").decode()
    return f"{name}.{secrets.token_urlsafe(24)}"


def _session_data(session: _Session, peer_joined: str, order: int) -> SessionData:
    room = session.room
    config = room.config
    return SessionData(
        peer_joined=peer_joined,
        resume_token=session.resume_token,
        token=session.token,
        trusted=session.trusted,
        order=order,
        room_config=None
        if room.declared
        else {
            "topology": config.topology,
            "max_peers": config.max_peers,
            "ice_servers": config.ice_servers,
        },
    )


def _joined_record(session: _Session, peer_joined: str, order: int) -> Record:
    data = _session_data(session, peer_joined, order)
    return Record("J", session.room.name, session.peer_id, (encode_session(data),))


def resume_token_room(token: str) -> str | None:
    """The room a resume token was issued for, or ``None`` if *token* is not one of this
    server's form (it then names no session: ``resume`` fails with ``resume_failed``)."""
    name, dot, _secret = token.partition(".")
    if not dot or not name:
        return None
    try:
        room = base64.b64decode(
            name + "=" * (-len(name) % 4), altchars=b"-_", validate=True
        ).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return room or None


#: Permissions of which one is needed to negotiate media (offer, answer, candidates).
_MEDIA_PERMISSIONS = frozenset({"publish", "subscribe"})


class Send:
    """Send one message on connection ``conn``: ``text`` is the frame, already encoded.

    The state machine serializes each message once (a relayed message once for all its
    recipients, numbered per recipient with :func:`~rtckit.signaling.protocol.with_seq`), so
    the I/O layer only writes ``text``. :attr:`message` gives the message object (decoded
    from ``text`` on first use when the state machine did not keep one), for tests and
    in-process consumers.
    """

    __slots__ = ("_message", "conn", "text")

    def __init__(self, conn: ConnectionId, text: str, message: Message | None = None) -> None:
        self.conn = conn
        self.text = text
        self._message = message

    @classmethod
    def of(cls, conn: ConnectionId, message: Message) -> Send:
        """Return the :class:`Send` of *message* (encoded here)."""
        return cls(conn, encode(message), message)

    @property
    def message(self) -> Message:
        """The message ``text`` encodes."""
        message = self._message
        if message is None:
            text = self.text  # ASCII (encode escapes the rest): one byte per character
            message = self._message = decode(text, max_size=len(text), max_depth=len(text))
        return message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Send):
            return NotImplemented
        return self.conn == other.conn and self.text == other.text

    def __hash__(self) -> int:
        return hash((self.conn, self.text))

    def __repr__(self) -> str:
        return f"Send(conn={self.conn!r}, text={self.text!r})"


class Close(NamedTuple):
    """Close connection *conn* with WebSocket close *code* and *reason*."""

    conn: ConnectionId
    code: int
    reason: str


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _with_seq(message: Any, seq: int | None, sender: str | None = None) -> Any:
    """Copy a frozen message with ``seq`` (and ``sender`` if given) replaced.

    Same result as :func:`attrs.evolve`, without its per-call introspection.
    """
    cls = type(message)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in attrs.fields(cls))
    copy = object.__new__(cls)
    setter = object.__setattr__
    for name in names:
        setter(copy, name, getattr(message, name))
    setter(copy, "seq", seq)
    if sender is not None:
        setter(copy, "sender", sender)
    return copy


class Heartbeat(NamedTuple):
    """Send a transport-level ping on connection *conn* (a WebSocket ping frame).

    Only for connections opened with ``transport_pings=True``; the transport reports the
    answer (or any frame) with :meth:`SignalingState.touch` or a received message.
    """

    conn: ConnectionId


Action: TypeAlias = Send | Close | Heartbeat

# The server's protocol ping (no nonce: the answer's content does not matter, any frame is a
# sign of life), and the pong a client sends to it: recognized without decoding.
_PING = Ping()
_PING_TEXT = encode(_PING)
_PONG_TEXT = encode(Pong())


@attrs.frozen(kw_only=True)
class PeerJoinedEvent:
    """A peer joined *room* (*restored*: its session came with the room from another node of
    a cluster, see :meth:`SignalingState.restore_room`)."""

    room: str
    peer: PeerInfo
    restored: bool = False


@attrs.frozen(kw_only=True)
class PeerLeftEvent:
    """A peer left *room* (*reason*: ``bye``, ``timeout``, ``closed``, ``removed``)."""

    room: str
    peer_id: str
    reason: str


@attrs.frozen(kw_only=True)
class MessageEvent:
    """A message was relayed in *room* (``message.sender`` is stamped)."""

    room: str
    message: Relayed


@attrs.frozen(kw_only=True)
class RoomClosedEvent:
    """The last peer left a room created on demand (the room is gone), or a room was evicted
    from this node of a cluster (:meth:`SignalingState.evict_room`; a declared room stays
    declared, empty)."""

    room: str


@attrs.frozen(kw_only=True)
class ErrorSentEvent:
    """The server sent an ``error`` with *code* to a client (for metrics and logs)."""

    code: str
    room: str | None = None
    peer_id: str | None = None


ServerEvent: TypeAlias = (
    PeerJoinedEvent | PeerLeftEvent | MessageEvent | RoomClosedEvent | ErrorSentEvent
)


@attrs.define
class Output:
    """What the I/O layer must do: ``actions`` in order, and ``events`` for hooks."""

    actions: list[Action] = attrs.Factory(list)
    events: list[ServerEvent] = attrs.Factory(list)
    #: Session changes to store before performing ``actions``, with
    #: :attr:`SignalingState.journal` on (``None``: none).
    records: list[Record] | None = None

    def record(self, record: Record) -> None:
        """Append a journal :class:`~rtckit.backplane.journal.Record`."""
        if self.records is None:
            self.records = [record]
        else:
            self.records.append(record)

    def send(self, conn: ConnectionId, message: Message) -> None:
        """Append a :class:`Send` of *message*."""
        self.actions.append(Send(conn, encode(message), message))

    def send_text(self, conn: ConnectionId, text: str) -> None:
        """Append a :class:`Send` of an encoded message."""
        self.actions.append(Send(conn, text))

    def close(self, conn: ConnectionId, code: int, reason: str) -> None:
        """Append a :class:`Close`."""
        self.actions.append(Close(conn, code, reason))


# A message sent in a session and not acknowledged yet, kept for resume: (seq, text with its
# seq, type, sender peer id, sender's seq); the last three for undeliverable reports. A plain
# tuple of strings and numbers, which the garbage collector stops tracking: outboxes hold
# thousands of them on a busy server, for seconds.
_Pending: TypeAlias = tuple[int, str, str, str | None, int | None]

# The most with_seq adds to a message: ',"seq":' and 16 digits.
_SEQ_SIZE = len(',"seq":') + len(str(MAX_SEQ))


@attrs.define(eq=False)
class _Room:
    name: str
    config: RoomConfig
    declared: bool
    sessions: dict[str, _Session] = attrs.Factory(dict)
    joins: int = 0  # sessions ever joined (their join order, kept in the journal)


@attrs.define(eq=False)
class _Session:
    info: PeerInfo
    room: _Room
    resume_token: str
    #: The room token given in ``join``, checked again on ``resume``.
    token: str | None = None
    trusted: bool = False  # joined on an in-process connection
    restored: bool = False  # taken over from another node's journal (restore_room)
    conn: _Conn | None = None
    out_seq: int = 0
    outbox: deque[_Pending] = attrs.Factory(deque)
    outbox_bytes: int = 0  # the size of the texts in outbox
    in_seq: int = 0
    acked_in: int = 0
    ack_due: float | None = None  # when the oldest unacknowledged client message arrived
    detached_at: float | None = None

    @property
    def peer_id(self) -> str:
        return self.info.id


@attrs.define(eq=False)
class _Conn:
    id: ConnectionId
    trusted: bool
    opened_at: float
    last_recv: float
    last_ping: float
    tokens: float
    bucket_time: float
    #: The transport pings (WebSocket ping frames): tick emits Heartbeat, not a ping message.
    transport_pings: bool = False
    greeted: bool = False
    session: _Session | None = None
    #: When tick next looks at this connection (its entry in SignalingState._checks).
    check_at: float | None = None


class SignalingState:
    """Rooms, sessions and routing for one signaling server (sans-I/O).

    *config* gives the limits, the rooms and the authenticator (called synchronously on
    ``join``). Set :attr:`message_events` to get a :class:`MessageEvent` per relayed message.
    """

    def __init__(self, config: SignalingConfig) -> None:
        self.config = config
        #: Emit :class:`MessageEvent` for each relayed message (off by default, saving work).
        self.message_events = False
        #: Describe every change of a session as a journal record in the outputs (see
        #: :mod:`rtckit.backplane.journal`; a cluster's rooms turn it on).
        self.journal = False
        self._conns: dict[ConnectionId, _Conn] = {}
        self._rooms: dict[str, _Room] = {}
        self._tokens: dict[str, _Session] = {}
        self._pending_bytes = 0  # outbox_bytes summed over every session
        self._now = 0.0  # the time of the latest input
        # What tick must look at, earliest first, so that a tick costs O(what is due), not
        # O(connections): (when, conn id, conn) for each connection's next deadline (ping,
        # dead peer, handshake, pending ack; stale entries are skipped), and (when, n,
        # session) for the end of each detached session's resume window.
        self._checks: list[tuple[float, ConnectionId, _Conn]] = []
        self._expiries: list[tuple[float, int, _Session]] = []
        self._expiry_order = itertools.count()
        for room in config.rooms:
            self._rooms[room.name] = _Room(room.name, room, declared=True)

    # --- introspection -------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Open connections."""
        return len(self._conns)

    @property
    def pending_bytes(self) -> int:
        """Bytes of unacknowledged messages held across all sessions (bounded by
        :attr:`~rtckit.signaling.config.SignalingConfig.max_total_pending_bytes`, give or take
        the server's own messages)."""
        return self._pending_bytes

    def rooms(self) -> list[str]:
        """Names of existing rooms (declared, or created on demand and not empty)."""
        return list(self._rooms)

    def peers(self, room: str) -> list[PeerInfo]:
        """Members of *room* (including detached ones waiting for resume), in join order."""
        found = self._rooms.get(room)
        return [] if found is None else [s.info for s in found.sessions.values()]

    def room_of(self, conn: ConnectionId) -> str | None:
        """The room of *conn*'s session, or ``None`` if it has none."""
        state = self._conns.get(conn)
        session = None if state is None else state.session
        return None if session is None else session.room.name

    def room_topology(self, room: str) -> str | None:
        """The topology of *room*, or ``None`` if it does not exist."""
        found = self._rooms.get(room)
        return None if found is None else found.config.topology

    # --- inputs --------------------------------------------------------------------------

    def open(
        self,
        conn: ConnectionId,
        now: float,
        *,
        trusted: bool = False,
        transport_pings: bool = False,
        greeted: bool = False,
    ) -> Output:
        """A new connection *conn* (unique id chosen by the caller) was accepted.

        *transport_pings*: the transport can ping (a WebSocket): heartbeats are
        :class:`Heartbeat` actions instead of ``ping`` messages, and the transport reports
        the answers with :meth:`touch`. *greeted*: the connection already exchanged
        ``hello`` elsewhere (a connection handed over by another node of a cluster, see
        :meth:`handoff`).
        """
        if conn in self._conns:
            raise ValueError(f"connection {conn} is already open")
        self._now = now
        config = self.config
        state = self._conns[conn] = _Conn(
            id=conn,
            trusted=trusted,
            opened_at=now,
            last_recv=now,
            last_ping=now,
            tokens=float(config.burst),
            bucket_time=now,
            transport_pings=transport_pings,
            greeted=greeted,
        )
        self._schedule(state, now + min(config.handshake_timeout, config.heartbeat_interval))
        return Output()

    def greeted(self, conn: ConnectionId) -> bool:
        """Whether *conn* is open and exchanged ``hello``."""
        state = self._conns.get(conn)
        return state is not None and state.greeted

    def joined(self, conn: ConnectionId) -> bool:
        """Whether *conn* is open and has a session (joined or resumed)."""
        state = self._conns.get(conn)
        return state is not None and state.session is not None

    def handoff(self, conn: ConnectionId) -> None:
        """Forget the open connection *conn* without closing it: another node of a cluster
        serves it from now on (it opens it there with ``greeted=True``).

        Raises :class:`ValueError` if *conn* has joined (a session cannot move) or is
        unknown.
        """
        state = self._conns.get(conn)
        if state is None or state.session is not None:
            raise ValueError(f"connection {conn} is not an open connection without a session")
        del self._conns[conn]

    def reject(self, conn: ConnectionId, code: str, text: str) -> Output:
        """Answer *conn* with an ``error`` *code* that the I/O layer decided on (a cluster
        node that cannot reach the room's node answers ``unavailable``)."""
        out = Output()
        state = self._conns.get(conn)
        if state is not None:
            self._error(state, code, text, None, out)
        return out

    def evict_room(self, room: str, code: int, reason: str) -> Output:
        """Drop *room* and its sessions at once (no ``peer-left``: every member's connection
        is closed with *code*; the room now lives on another node of a cluster, where its
        clients reconnect). A declared room stays, empty; either way a
        :class:`RoomClosedEvent` says that the room's life here ended."""
        out = Output()
        found = self._rooms.get(room)
        if found is None:
            return out
        for session in list(found.sessions.values()):
            self._tokens.pop(session.resume_token, None)
            self._pending_bytes -= session.outbox_bytes
            session.outbox.clear()
            session.outbox_bytes = 0
            conn = session.conn
            session.conn = None
            if conn is not None:
                conn.session = None
                self._conns.pop(conn.id, None)
                out.close(conn.id, code, reason)
        found.sessions.clear()
        if not found.declared:
            del self._rooms[room]
        # declared or not, the room's life on this node ended (its server strategy stops)
        out.events.append(RoomClosedEvent(room=room))
        return out

    def restore_room(self, snapshot: RoomSnapshot, now: float, *, grace: float = 0.0) -> Output:
        """Take over a room from its journal (a cluster node became its home after the former
        home died or handed it over): its sessions come back detached, waiting for
        ``resume`` for ``resume_window`` seconds from *now*, with their outboxes and
        sequence numbers (*grace* seconds more: their clients may still be finding the
        room's new node). In-process participants (the former home's media server) do not
        come back: they leave (``peer-left`` "closed"), which frees their peer ids for this
        node's own. Each restored person gets a :class:`PeerJoinedEvent` with
        ``restored=True``.

        Nothing happens if the room has members here already. Raises
        :class:`~rtckit.errors.RemoteProtocolError` if a session record cannot be read.
        """
        out = Output()
        self._now = now
        name = snapshot.room
        room = self._rooms.get(name)
        if room is not None and room.sessions:
            return out
        if room is None:
            config = None
            for session in snapshot.sessions:
                config = session.data.room_config
                if config is not None:
                    break
            room_config = RoomConfig(
                name=name,
                topology=str((config or {}).get("topology", self.config.default_topology)),
                max_peers=(config or {}).get("max_peers"),
                ice_servers=(config or {}).get("ice_servers", self.config.ice_servers),
            )
            room = _Room(name, room_config, declared=False)
        restored: list[_Session] = []
        for snap in sorted(snapshot.sessions, key=lambda item: item.data.order):
            joined = decode(snap.data.peer_joined)
            if not isinstance(joined, PeerJoined) or joined.peer.id != snap.peer_id:
                raise RemoteProtocolError(f"bad session record for {snap.peer_id!r}")
            restoring = _Session(
                info=joined.peer,
                room=room,
                resume_token=snap.data.resume_token,
                token=snap.data.token,
                trusted=snap.data.trusted,
                out_seq=snap.out_seq,
                outbox=deque(snap.outbox),
                outbox_bytes=sum(len(item[1]) for item in snap.outbox),
                in_seq=snap.in_seq,
                acked_in=snap.in_seq,
                restored=True,
            )
            room.sessions[snap.peer_id] = restoring
            room.joins = max(room.joins, snap.data.order)
            self._tokens[restoring.resume_token] = restoring
            self._pending_bytes += restoring.outbox_bytes
            self._detach(restoring, now + grace)
            restored.append(restoring)
        if not room.sessions and not room.declared:
            return out
        self._rooms[name] = room
        for member in restored:
            if member.trusted:
                self._remove(member, "closed", out)
            else:
                out.events.append(PeerJoinedEvent(room=name, peer=member.info, restored=True))
        return out

    def snapshot_room(self, room: str) -> RoomSnapshot | None:
        """*room*'s sessions as a journal holds them (``None`` if it has none here)."""
        found = self._rooms.get(room)
        if found is None or not found.sessions:
            return None
        return RoomSnapshot(
            room=room,
            sessions=tuple(
                SessionSnapshot(
                    peer_id=session.peer_id,
                    data=_session_data(session, encode(PeerJoined(peer=session.info)), order),
                    out_seq=session.out_seq,
                    in_seq=session.in_seq,
                    outbox=tuple(session.outbox),
                )
                for order, session in enumerate(found.sessions.values(), 1)
            ),
        )

    def touch(self, conn: ConnectionId, now: float) -> None:
        """*conn* showed a sign of life the transport handled itself (a WebSocket pong).

        Constant time: it notes the time; :meth:`tick` reads it when the connection's
        deadline comes.
        """
        state = self._conns.get(conn)
        if state is not None:
            state.last_recv = now

    def receive_data(self, conn: ConnectionId, data: str | bytes, now: float) -> Output:
        """A text frame arrived on *conn*: decode it (strictly) and process it."""
        out = Output()
        self._now = now
        state = self._conns.get(conn)
        if state is None:
            return out
        if not self._admit(state, now, out):
            return out
        if data == _PONG_TEXT:
            return out  # the answer to the server's ping: a sign of life, nothing to do
        if data == _PING_TEXT:
            out.actions.append(Send(state.id, _PONG_TEXT))
            return out
        try:
            message, plain = decode_frame(
                data,
                max_size=self.config.max_message_size,
                max_depth=self.config.max_json_depth,
            )
        except ProtocolError as exc:
            code = str(exc.code or ErrorCode.BAD_MESSAGE)
            if code == ErrorCode.TOO_LARGE:
                self._close(state, CloseCode.MESSAGE_TOO_BIG, "message too big", now, out)
            else:
                self._error(state, code, str(exc), None, out)
            return out
        self._dispatch(state, message, now, out, plain)
        return out

    def receive(self, conn: ConnectionId, message: Message, now: float) -> Output:
        """A decoded *message* arrived on *conn* (in-process connections skip the codec)."""
        out = Output()
        self._now = now
        state = self._conns.get(conn)
        if state is not None and self._admit(state, now, out):
            self._dispatch(state, message, now, out)
        return out

    def closed(self, conn: ConnectionId, now: float) -> Output:
        """The connection *conn* is gone (closed by either side, or failed)."""
        out = Output()
        self._now = now
        state = self._conns.pop(conn, None)
        if state is not None and state.session is not None:
            self._detach(state.session, now)
        return out

    def tick(self, now: float) -> Output:
        """Time is *now*: send pings and pending acks, enforce timeouts and resume windows.

        Only the connections and sessions with a deadline at or before *now* are looked at
        (each has one entry in a heap): an idle connection costs a look per heartbeat
        interval, not per tick.
        """
        out = Output()
        self._now = now
        checks, conns = self._checks, self._conns
        while checks and checks[0][0] <= now:
            when, conn, state = heapq.heappop(checks)
            if state.check_at == when and conns.get(conn) is state:
                state.check_at = None
                self._check(state, now, out)
        expiries, window = self._expiries, self.config.resume_window
        while expiries and expiries[0][0] <= now:
            session = heapq.heappop(expiries)[2]
            detached = session.detached_at
            if (
                detached is not None
                and detached + window <= now
                and self._tokens.get(session.resume_token) is session
            ):
                self._remove(session, "timeout", out)
        return out

    def shutdown(self, now: float) -> Output:
        """Close every connection with 1001 (going away); sessions are dropped."""
        out = Output()
        for state in list(self._conns.values()):
            self._close(state, CloseCode.GOING_AWAY, "server shutting down", now, out)
        return out

    def remove_peer(self, room: str, peer_id: str) -> Output:
        """Remove *peer_id* from *room* (an application kicks it): ``peer-left`` "removed"."""
        out = Output()
        found = self._rooms.get(room)
        session = None if found is None else found.sessions.get(peer_id)
        if session is not None:
            conn = session.conn
            self._remove(session, "removed", out)
            if conn is not None:
                out.send(conn.id, Bye(reason="removed"))
                self._conns.pop(conn.id, None)
                out.close(conn.id, CloseCode.NORMAL, "removed")
        return out

    # --- internals -----------------------------------------------------------------------

    def _schedule(self, state: _Conn, when: float) -> None:
        """Have :meth:`tick` look at *state* at *when* (or earlier, if it is due earlier)."""
        check_at = state.check_at
        if check_at is None or when < check_at:
            state.check_at = when
            heapq.heappush(self._checks, (when, state.id, state))

    def _check(self, state: _Conn, now: float, out: Output) -> None:
        """A deadline of *state* may have come: act on what is due, schedule the next look."""
        config = self.config
        session = state.session
        if session is None:
            deadline = state.opened_at + config.handshake_timeout
            if deadline <= now:
                self._close(state, CloseCode.HANDSHAKE_TIMEOUT, "handshake timeout", now, out)
            else:  # a join or resume meanwhile is seen at the next look
                self._schedule(state, min(deadline, now + config.heartbeat_interval))
            return
        last = state.last_recv
        dead_at = last + config.dead_peer_timeout
        if dead_at <= now:
            self._close(state, CloseCode.HEARTBEAT_TIMEOUT, "no heartbeat", now, out)
            return
        interval = config.heartbeat_interval
        ping_at = max(last, state.last_ping) + interval
        if ping_at <= now:
            state.last_ping = now
            ping_at = now + interval
            if state.transport_pings:
                out.actions.append(Heartbeat(state.id))
            else:
                out.actions.append(Send(state.id, _PING_TEXT, _PING))
        next_at = min(dead_at, ping_at)
        if session.ack_due is not None and session.in_seq > session.acked_in:
            ack_at = session.ack_due + config.ack_delay
            if ack_at <= now:
                session.ack_due = None
                session.acked_in = session.in_seq
                out.send(state.id, Ack(ack=session.in_seq))
            else:
                next_at = min(next_at, ack_at)
        self._schedule(state, next_at)

    def _admit(self, state: _Conn, now: float, out: Output) -> bool:
        """Note liveness and apply the rate limit (a token bucket); False: refused."""
        state.last_recv = now
        if state.trusted:
            return True
        config = self.config
        state.tokens = min(
            float(config.burst),
            state.tokens + (now - state.bucket_time) * config.max_messages_per_second,
        )
        state.bucket_time = now
        if state.tokens >= 1.0:
            state.tokens -= 1.0
            return True
        self._error(state, ErrorCode.RATE_LIMITED, "too many messages", None, out)
        self._close(state, CloseCode.POLICY_VIOLATION, "rate limit exceeded", now, out)
        return False

    def _dispatch(
        self, state: _Conn, message: Message, now: float, out: Output, plain: bool = False
    ) -> None:
        """Handle *message*; *plain*: it holds plain JSON (see ``decode_frame``)."""
        session = state.session
        if isinstance(message, Relayed):
            if session is None:
                self._error(state, ErrorCode.NOT_JOINED, "join a room first", message.seq, out)
            else:
                self._relay(state, session, message, out, plain)
        elif isinstance(message, Ack):
            if session is not None and self._ack_ok(state, session, message.ack, out):
                self._trim(session, message.ack, out)
        elif isinstance(message, Ping):
            out.send(state.id, Pong(nonce=message.nonce))
        elif isinstance(message, Pong):
            pass  # liveness is any received frame
        elif isinstance(message, Hello):
            self._hello(state, message, now, out)
        elif isinstance(message, Join):
            self._join(state, message, out)
        elif isinstance(message, Resume):
            self._resume(state, message, out)
        elif isinstance(message, Bye):
            if session is not None:
                state.session = None
                self._remove(session, "bye", out)
            self._close(state, CloseCode.NORMAL, "bye", now, out)
        else:
            self._error(
                state, ErrorCode.UNEXPECTED, f"clients do not send {message.type!r}", None, out
            )

    def _hello(self, state: _Conn, message: Hello, now: float, out: Output) -> None:
        if state.greeted:
            self._error(state, ErrorCode.UNEXPECTED, "hello was already sent", None, out)
            return
        if message.version != PROTOCOL_VERSION:
            self._error(
                state,
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {message.version} is not supported "
                f"(this server speaks {PROTOCOL_VERSION})",
                None,
                out,
            )
            self._close(state, CloseCode.UNSUPPORTED_VERSION, "unsupported version", now, out)
            return
        state.greeted = True
        out.send(state.id, Hello(version=PROTOCOL_VERSION, agent=SERVER_AGENT))

    def _handshake_ok(self, state: _Conn, out: Output) -> bool:
        if not state.greeted:
            self._error(state, ErrorCode.UNEXPECTED, "send hello first", None, out)
            return False
        if state.session is not None:
            self._error(state, ErrorCode.ALREADY_JOINED, "this connection has joined", None, out)
            return False
        return True

    def _join(self, state: _Conn, message: Join, out: Output) -> None:
        if not self._handshake_ok(state, out):
            return
        if message.metadata is not None:
            limit = self.config.max_metadata_size
            try:
                size = json_size(message.metadata)
            except ProtocolError as exc:  # only from in-process senders: decoded JSON encodes
                self._error(state, ErrorCode.BAD_MESSAGE, str(exc), None, out)
                return
            if size > limit:
                self._error(
                    state, ErrorCode.TOO_LARGE, f"metadata larger than {limit} bytes", None, out
                )
                return
        try:
            grant = self.config.auth.authenticate(message.room, message.token)
        except AuthError as exc:
            self._error(state, str(exc.code or ErrorCode.AUTH_INVALID), str(exc), None, out)
            return
        room = self._rooms.get(message.room)
        if room is None:
            if not self.config.create_rooms:
                self._error(state, ErrorCode.UNKNOWN_ROOM, "no such room", None, out)
                return
            try:
                topology = self.config.topology_for(message.room, message.metadata)
            except TopologyError as exc:
                self._error(state, ErrorCode.UNKNOWN_ROOM, str(exc), None, out)
                return
            room_config = RoomConfig(
                name=message.room,
                topology=topology,
                ice_servers=self.config.ice_servers,
            )
            room = _Room(message.room, room_config, declared=False)
        max_peers = room.config.max_peers or self.config.max_peers_per_room
        if len(room.sessions) >= max_peers:
            self._error(state, ErrorCode.ROOM_FULL, f"room has {max_peers} peers", None, out)
            return
        if message.peer_id is not None:
            if not (state.trusted or "admin" in grant.permissions):
                self._error(state, ErrorCode.FORBIDDEN, "choosing a peer_id needs admin", None, out)
                return
            if message.peer_id in room.sessions:
                self._error(state, ErrorCode.PEER_ID_TAKEN, "peer_id is in use", None, out)
                return
            peer_id = message.peer_id
        else:
            peer_id = secrets.token_hex(4)
            while peer_id in room.sessions:  # pragma: no cover - 32-bit collision
                peer_id = secrets.token_hex(4)
        info = PeerInfo(
            id=peer_id,
            identity=grant.identity,
            metadata=message.metadata,
            permissions=grant.permissions,
        )
        resume_token = _new_resume_token(room.name)
        others = list(room.sessions.values())
        ice_servers = room.config.ice_servers
        if ice_servers is None:
            ice_servers = self.config.ice_servers
        welcome = Welcome(
            room=room.name,
            peer_id=peer_id,
            identity=grant.identity,
            peers=tuple(other.info for other in others),
            topology=room.config.topology,
            ice_servers=ice_servers,
            permissions=grant.permissions,
            resume_token=resume_token,
            resume_window=self.config.resume_window,
            heartbeat_interval=self.config.heartbeat_interval,
        )
        text = encode(welcome)  # ASCII: one byte per character
        if len(text) > self.config.max_message_size:
            self._error(
                state,
                ErrorCode.ROOM_FULL,
                f"the room's member list would make welcome larger than "
                f"{self.config.max_message_size} bytes",
                None,
                out,
            )
            return
        self._rooms[room.name] = room
        session = _Session(
            info=info,
            room=room,
            resume_token=resume_token,
            token=message.token,
            trusted=state.trusted,
        )
        room.sessions[peer_id] = session
        room.joins += 1
        self._tokens[resume_token] = session
        session.conn = state
        state.session = session
        joined = encode(PeerJoined(peer=info))
        if self.journal:
            out.record(_joined_record(session, joined, room.joins))
        out.actions.append(Send(state.id, text, welcome))
        for other in others:
            self._deliver_text(other, joined, PeerJoined.type, out, None, None)
        out.events.append(PeerJoinedEvent(room=room.name, peer=info))

    def _ack_ok(self, state: _Conn, session: _Session, ack: int, out: Output) -> bool:
        """Whether *ack* names a ``seq`` sent in *session*; if not, answer ``bad_ack``."""
        if ack <= session.out_seq:
            return True
        self._error(
            state,
            ErrorCode.BAD_ACK,
            f"ack {ack} is beyond the last seq sent ({session.out_seq})",
            None,
            out,
        )
        return False

    def _trim(self, session: _Session, ack: int, out: Output) -> None:
        """Forget the messages of *session*'s outbox up to ``seq`` *ack*."""
        outbox = session.outbox
        freed = 0
        while outbox and outbox[0][0] <= ack:
            freed += len(outbox.popleft()[1])
        if freed:
            session.outbox_bytes -= freed
            self._pending_bytes -= freed
            if self.journal:
                out.record(Record("A", session.room.name, session.peer_id, (ack,)))

    def _resume(self, state: _Conn, message: Resume, out: Output) -> None:
        if not self._handshake_ok(state, out):
            return
        session = self._tokens.get(message.resume_token)
        if session is None:
            self._error(state, ErrorCode.RESUME_FAILED, "unknown or expired session", None, out)
            return
        if not state.trusted:  # in-process participants are the server's own
            try:  # the token that admitted the session may have expired (or been revoked)
                self.config.auth.authenticate(session.room.name, session.token)
            except AuthError as exc:
                self._error(state, str(exc.code or ErrorCode.AUTH_INVALID), str(exc), None, out)
                return
        if session.restored and message.ack > session.out_seq:
            # the client saw messages the journal lacks (its former home served it through
            # a backplane outage): this session cannot go on consistently; it ends here
            self._remove(session, "closed", out)
            self._error(
                state,
                ErrorCode.RESUME_FAILED,
                "the session's state was lost with its former node",
                None,
                out,
            )
            return
        if not self._ack_ok(state, session, message.ack, out):
            return
        old = session.conn
        if old is not None:
            old.session = None
            self._conns.pop(old.id, None)
            out.close(old.id, CloseCode.SESSION_REPLACED, "session resumed elsewhere")
        session.conn = state
        session.detached_at = None
        state.session = session
        self._trim(session, message.ack, out)
        outbox = session.outbox
        session.acked_in = session.in_seq
        session.ack_due = None
        out.send(
            state.id,
            Resumed(room=session.room.name, peer_id=session.peer_id, ack=session.in_seq),
        )
        for pending in outbox:
            out.send_text(state.id, pending[1])

    def _relay(
        self, state: _Conn, session: _Session, message: Relayed, out: Output, plain: bool
    ) -> None:
        seq = message.seq
        if seq is None:
            self._error(state, ErrorCode.BAD_MESSAGE, "relayed messages need seq", None, out)
            return
        if seq <= session.in_seq:
            return  # a duplicate resent after resume: already processed
        session.in_seq = seq
        if self.journal:
            out.record(Record("I", session.room.name, session.peer_id, (seq,)))
        if session.ack_due is None:
            session.ack_due = state.last_recv
            self._schedule(state, state.last_recv + self.config.ack_delay)
        if session.in_seq - session.acked_in >= self.config.ack_every:
            session.ack_due = None
            session.acked_in = session.in_seq
            out.send(state.id, Ack(ack=session.in_seq))
        me = session.info.id
        if message.sender is not None and message.sender != me:
            self._error(state, ErrorCode.FORBIDDEN, "cannot speak as another peer", seq, out)
            return
        if not isinstance(message, AppMessage) and _MEDIA_PERMISSIONS.isdisjoint(
            session.info.permissions
        ):
            self._error(
                state, ErrorCode.FORBIDDEN, f"{message.type} needs publish or subscribe", seq, out
            )
            return
        room = session.room
        if message.to is None:
            targets = [other for other in room.sessions.values() if other is not session]
        elif message.to == me:
            self._error(state, ErrorCode.BAD_MESSAGE, "cannot send to yourself", seq, out)
            return
        else:
            target = room.sessions.get(message.to)
            if target is None:
                self._error(state, ErrorCode.UNKNOWN_PEER, f"no peer {message.to!r}", seq, out)
                return
            targets = [target]
        try:
            text = encode_relayed(message, me, plain=plain)  # once, for all the targets
        except ProtocolError as exc:  # only from in-process senders: decoded JSON encodes
            self._error(state, ErrorCode.BAD_MESSAGE, str(exc), seq, out)
            return
        kind = message.type
        config = self.config
        max_pending, max_bytes = config.max_pending, config.max_pending_bytes
        size = len(text) + _SEQ_SIZE
        for target in targets:
            if len(target.outbox) >= max_pending or target.outbox_bytes + size > max_bytes:
                self._error(
                    state,
                    ErrorCode.BACKLOG_FULL,
                    f"peer {target.peer_id!r} has too many unacknowledged messages",
                    seq,
                    out,
                )
                continue
            if self._pending_bytes + size > config.max_total_pending_bytes:
                self._error(
                    state,
                    ErrorCode.BACKLOG_FULL,
                    "the server holds too many unacknowledged messages",
                    seq,
                    out,
                )
                continue
            self._deliver_text(target, text, kind, out, me, seq)
        if self.message_events:
            out.events.append(MessageEvent(room=room.name, message=_with_seq(message, None, me)))

    def _deliver(self, session: _Session, message: Message, out: Output) -> None:
        """Send a server-made *message* (no ``seq`` yet) in *session*."""
        self._deliver_text(session, encode(message), message.type, out, None, None)

    def _deliver_text(
        self,
        session: _Session,
        text: str,
        kind: str,
        out: Output,
        origin: str | None,
        origin_seq: int | None,
    ) -> None:
        """Number the encoded message *text* (no ``seq`` yet) in *session*, queue, send it."""
        seq = session.out_seq = session.out_seq + 1
        sequenced = with_seq(text, seq)
        outbox = session.outbox
        outbox.append((seq, sequenced, kind, origin, origin_seq))
        if self.journal:
            out.record(
                Record(
                    "O",
                    session.room.name,
                    session.peer_id,
                    (seq, sequenced, kind, origin, origin_seq),
                )
            )
        size = len(sequenced)
        session.outbox_bytes += size
        self._pending_bytes += size
        conn = session.conn
        if conn is not None:
            out.actions.append(Send(conn.id, sequenced))
            config = self.config
            if origin is None and (
                len(outbox) > config.max_pending + config.burst
                or session.outbox_bytes > 2 * config.max_pending_bytes
            ):
                # The server's own messages are always queued (they are owed to the client),
                # even above the limits that refuse relays; a client that lets them pile up
                # beyond a burst does not acknowledge: close its connection.
                self._close(
                    conn, CloseCode.SLOW_CONSUMER, "too many unacknowledged", self._now, out
                )

    def _error(self, state: _Conn, code: str, text: str, ref: int | None, out: Output) -> None:
        error = Error(code=code, message=text, ref=ref)
        session = state.session
        if session is not None:
            self._deliver(session, error, out)
        else:
            out.send(state.id, error)
        out.events.append(
            ErrorSentEvent(
                code=code,
                room=None if session is None else session.room.name,
                peer_id=None if session is None else session.peer_id,
            )
        )

    def _close(self, state: _Conn, code: int, reason: str, now: float, out: Output) -> None:
        self._conns.pop(state.id, None)
        if state.session is not None:
            self._detach(state.session, now)
            state.session = None
        out.close(state.id, code, reason)

    def _detach(self, session: _Session, now: float) -> None:
        session.conn = None
        session.detached_at = now
        heapq.heappush(
            self._expiries,
            (now + self.config.resume_window, next(self._expiry_order), session),
        )

    def _remove(self, session: _Session, reason: str, out: Output) -> None:
        room = session.room
        if room.sessions.get(session.peer_id) is not session:
            return
        del room.sessions[session.peer_id]
        self._tokens.pop(session.resume_token, None)
        if self.journal:
            out.record(Record("L", room.name, session.peer_id))
        if session.conn is not None:
            session.conn.session = None
            session.conn = None
        for _seq, _text, kind, sender, sender_seq in session.outbox:
            if sender is None or sender_seq is None:
                continue
            origin = room.sessions.get(sender)
            if origin is not None:
                self._deliver(
                    origin,
                    Error(
                        code=ErrorCode.UNDELIVERABLE,
                        message=f"peer {session.peer_id!r} left before acknowledging {kind}",
                        ref=sender_seq,
                    ),
                    out,
                )
        session.outbox.clear()
        self._pending_bytes -= session.outbox_bytes
        session.outbox_bytes = 0
        left = encode(PeerLeft(peer_id=session.peer_id, reason=reason))
        for other in room.sessions.values():
            self._deliver_text(other, left, PeerLeft.type, out, None, None)
        out.events.append(PeerLeftEvent(room=room.name, peer_id=session.peer_id, reason=reason))
        if not room.sessions and not room.declared:
            del self._rooms[room.name]
            out.events.append(RoomClosedEvent(room=room.name))
