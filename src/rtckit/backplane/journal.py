"""The session journal of a clustered room: what a room's home writes down so that another node
can take the room over with its sessions (sans-I/O: records, snapshots and their codec).

On one node a room's sessions live in memory. In a cluster (:mod:`rtckit.signaling.cluster`)
the room's home may die; its sessions' outboxes must survive it, so that the clients resume on
the room's next home without losing or duplicating a message. With journaling on
(:attr:`SignalingState.journal <rtckit.signaling.state.SignalingState.journal>`) the state
machine describes each change of a session as a :class:`Record` in its
:class:`~rtckit.signaling.state.Output`; the I/O layer stores the records (one atomic step per
batch, fenced by the room's lease: see :class:`JournalStore`) **before** it performs the
output's sends, so that a client never holds a ``seq`` or an ``ack`` that the journal lacks.

Records, per session (``room``, ``peer``):

* ``J`` joined: the session's fixed part (:func:`encode_session`);
* ``O`` a message queued in its outbox: ``seq``, the text sent, its type, and the sender's peer
  id and ``seq`` for relayed messages;
* ``A`` its client acknowledged up to ``seq`` (the outbox is trimmed);
* ``I`` the last client ``seq`` processed (duplicates resent after a resume are dropped);
* ``L`` it left (everything of it is deleted; the room's journal with its last session).

A :class:`RoomSnapshot` is what :meth:`JournalStore.load` reads back, and what
:meth:`SignalingState.restore_room <rtckit.signaling.state.SignalingState.restore_room>` turns
into detached sessions waiting for ``resume``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import attrs

from rtckit.errors import RemoteProtocolError

if TYPE_CHECKING:
    from rtckit.backplane.base import Lease

__all__ = [
    "JournalImage",
    "JournalStore",
    "Pending",
    "Record",
    "RoomSnapshot",
    "SessionData",
    "SessionSnapshot",
    "decode_session",
    "encode_session",
]


class Record(NamedTuple):
    """One change of session *peer* of *room*: *op* is ``J``, ``O``, ``A``, ``I`` or ``L``
    (see the module), *args* its operands (strings and integers; ``None`` for an absent
    sender)."""

    op: str
    room: str
    peer: str
    args: tuple[str | int | None, ...] = ()


@attrs.frozen(kw_only=True)
class SessionData:
    """The fixed part of a session (written once, at ``join``)."""

    #: ``peer-joined`` as others got it (it holds the peer's
    #: :class:`~rtckit.signaling.protocol.PeerInfo`).
    peer_joined: str
    resume_token: str
    #: The room token given in ``join`` (checked again on ``resume``), or ``None``.
    token: str | None
    #: Whether it joined on an in-process connection (the room's media server), which
    #: another node does not restore.
    trusted: bool
    #: Join order in the room.
    order: int
    #: The room's settings when it was created on demand (topology, max_peers, ice_servers);
    #: ``None`` for a declared room.
    room_config: dict[str, Any] | None


def encode_session(data: SessionData) -> str:
    """The JSON text of *data*."""
    return json.dumps(
        {
            "p": data.peer_joined,
            "r": data.resume_token,
            "t": data.token,
            "s": data.trusted,
            "o": data.order,
            "c": data.room_config,
        },
        separators=(",", ":"),
    )


def decode_session(text: str | bytes) -> SessionData:
    """Parse what :func:`encode_session` wrote (raises
    :class:`~rtckit.errors.RemoteProtocolError` if it is not that)."""
    try:
        raw = json.loads(text)
        peer_joined, resume_token = raw["p"], raw["r"]
        token, trusted, order, room_config = raw["t"], raw["s"], raw["o"], raw["c"]
    except (ValueError, TypeError, KeyError) as exc:
        raise RemoteProtocolError(f"bad session record: {exc}") from exc
    if not (
        isinstance(peer_joined, str)
        and isinstance(resume_token, str)
        and (token is None or isinstance(token, str))
        and isinstance(trusted, bool)
        and isinstance(order, int)
        and (room_config is None or isinstance(room_config, dict))
    ):
        raise RemoteProtocolError("bad session record: a field has the wrong type")
    return SessionData(
        peer_joined=peer_joined,
        resume_token=resume_token,
        token=token,
        trusted=trusted,
        order=order,
        room_config=room_config,
    )


#: One queued message, as the tuple (seq, text sent, type, sender peer id, sender's seq).
Pending = tuple[int, str, str, str | None, int | None]


@attrs.frozen(kw_only=True)
class SessionSnapshot:
    """One session as its room's journal holds it."""

    peer_id: str
    data: SessionData
    out_seq: int
    in_seq: int
    #: The unacknowledged messages, in ``seq`` order.
    outbox: tuple[Pending, ...]


@attrs.frozen(kw_only=True)
class RoomSnapshot:
    """A room's sessions as its journal holds them, in join order."""

    room: str
    sessions: tuple[SessionSnapshot, ...]


class JournalStore(Protocol):
    """Where a cluster keeps its rooms' journals (a backplane provides it:
    :meth:`MemoryBackplane.journal <rtckit.backplane.memory.MemoryBackplane.journal>`,
    :meth:`RedisBackplane.journal <rtckit.backplane.redis.RedisBackplane.journal>`).

    Every write names the room's lease (``room:<name>``) and is refused for that room unless
    the lease is still held with that epoch (fencing): a former home cannot write after the
    room passed on.
    """

    async def write(self, batches: Sequence[tuple[str, Lease, Sequence[Record]]]) -> set[str]:
        """Apply each ``(room, lease, records)`` atomically, in order; return the rooms
        whose write was refused because the lease is no longer held with that value (nothing
        of theirs was applied). Raises :class:`~rtckit.errors.BackplaneError` if the store
        cannot be reached (then any part may have been applied or not)."""
        ...

    async def load(self, room: str) -> RoomSnapshot | None:
        """*room*'s journal, or ``None`` if it has none."""
        ...

    async def refresh(self, room: str, lease: Lease, ttl: float) -> bool:
        """Keep *room*'s journal for *ttl* more seconds if *lease* still holds."""
        ...

    async def replace(self, room: str, lease: Lease, snapshot: RoomSnapshot | None) -> bool:
        """Replace *room*'s journal with *snapshot* (``None``: delete it) if *lease* holds (after
        an outage during which records could not be written)."""
        ...

    async def orphans(self, limit: int) -> list[str]:
        """Up to *limit* rooms that have a journal and whose lease nobody holds."""
        ...


class JournalImage:
    """A room's journal applied in memory (what :class:`JournalStore` implementations keep,
    here as Python objects: the in-memory store uses it, and tests compare others with it).
    """

    __slots__ = ("acked", "data", "in_seq", "out_seq", "outboxes", "room")

    def __init__(self, room: str) -> None:
        self.room = room
        self.data: dict[str, str] = {}
        self.out_seq: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        self.in_seq: dict[str, int] = {}
        self.outboxes: dict[str, list[Pending]] = {}

    def apply(self, records: Sequence[Record]) -> None:
        """Apply *records* in order (raises :class:`ValueError` for a record that does not
        follow: a ``seq`` out of order, a session not joined)."""
        for op, _room, peer, args in records:
            if op == "J":
                self.data[peer] = str(args[0])
                self.out_seq[peer] = self.acked[peer] = self.in_seq[peer] = 0
                self.outboxes[peer] = []
                continue
            if peer not in self.data:
                raise ValueError(f"record {op} for session {peer!r}, which did not join")
            if op == "O":
                seq, text, kind, origin, origin_seq = args
                if not isinstance(seq, int) or seq != self.out_seq[peer] + 1:
                    raise ValueError(f"seq {seq} after {self.out_seq[peer]} for {peer!r}")
                self.out_seq[peer] = seq
                self.outboxes[peer].append(
                    (
                        seq,
                        str(text),
                        str(kind),
                        None if origin is None else str(origin),
                        origin_seq if isinstance(origin_seq, int) else None,
                    )
                )
            elif op == "A":
                ack = int(args[0] or 0)
                if ack > self.acked[peer]:
                    self.acked[peer] = ack
                    self.outboxes[peer] = [p for p in self.outboxes[peer] if p[0] > ack]
            elif op == "I":
                self.in_seq[peer] = int(args[0] or 0)
            elif op == "L":
                for table in (self.data, self.out_seq, self.acked, self.in_seq, self.outboxes):
                    del table[peer]
            else:
                raise ValueError(f"unknown record {op!r}")

    def snapshot(self) -> RoomSnapshot | None:
        """The journal as a :class:`RoomSnapshot` (``None`` when no session is in it)."""
        if not self.data:
            return None
        return RoomSnapshot(
            room=self.room,
            sessions=tuple(
                SessionSnapshot(
                    peer_id=peer,
                    data=decode_session(text),
                    out_seq=self.out_seq[peer],
                    in_seq=self.in_seq[peer],
                    outbox=tuple(self.outboxes[peer]),
                )
                for peer, text in self.data.items()
            ),
        )

    @classmethod
    def of(cls, snapshot: RoomSnapshot) -> JournalImage:
        """The journal that holds *snapshot*."""
        image = cls(snapshot.room)
        for session in snapshot.sessions:
            peer = session.peer_id
            image.data[peer] = encode_session(session.data)
            image.out_seq[peer] = session.out_seq
            image.in_seq[peer] = session.in_seq
            image.acked[peer] = session.outbox[0][0] - 1 if session.outbox else session.out_seq
            image.outboxes[peer] = list(session.outbox)
        return image
