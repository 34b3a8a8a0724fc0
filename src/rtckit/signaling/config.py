"""Configuration of the signaling server and its room state machine (pure data)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from rtckit.errors import ConfigurationError
from rtckit.signaling.auth import Authenticator
from rtckit.signaling.protocol import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE, MAX_ID_LENGTH

__all__ = ["TOPOLOGIES", "RoomConfig", "SignalingConfig"]

#: Topology names a room can declare (carried to clients in ``welcome``).
TOPOLOGIES: tuple[str, ...] = ("mesh", "sfu", "mcu")


def _rooms(value: Iterable[RoomConfig]) -> tuple[RoomConfig, ...]:
    return tuple(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


_positive = attrs.validators.gt(0)
_positive_time = attrs.validators.gt(0.0)


def _check_name(_instance: object, _attribute: object, value: str) -> None:
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ConfigurationError(f"room name must have 1 to {MAX_ID_LENGTH} characters")


def _check_topology(_instance: object, _attribute: object, value: str) -> None:
    if value not in TOPOLOGIES:
        raise ConfigurationError(f"topology must be one of {TOPOLOGIES}, not {value!r}")


def _check_auth(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, Authenticator):
        raise ConfigurationError("auth must be an Authenticator (TokenAuth, OpenAuth...)")


@attrs.frozen(kw_only=True)
class RoomConfig:
    """A pre-declared room (it exists even when empty)."""

    name: str = attrs.field(validator=_check_name)
    topology: str = attrs.field(default="mesh", validator=_check_topology)
    #: Overrides ``SignalingConfig.max_peers_per_room`` for this room.
    max_peers: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    #: ``RTCIceServer`` dictionaries sent in ``welcome``; ``None``: the server default.
    ice_servers: Any = None


@attrs.frozen(kw_only=True)
class SignalingConfig:
    """Everything the signaling server enforces. ``auth`` has no default on purpose.

    Times are in seconds. With the defaults a peer that vanishes without ``bye`` is removed
    (others get ``peer-left``) at most ``dead_peer_timeout + resume_window + tick`` = 14.5 s
    later; a peer whose connection drops cleanly is removed after ``resume_window``. The
    heartbeat is one ping per silent connection per ``heartbeat_interval`` (a WebSocket ping
    frame on WebSocket connections): as long as the dead-peer timeout allows, since idle
    connections cost CPU in proportion to it.
    """

    #: Who may join, :class:`~rtckit.signaling.auth.TokenAuth` or, for demos,
    #: :class:`~rtckit.signaling.auth.OpenAuth`.
    auth: Authenticator = attrs.field(validator=_check_auth)
    #: Pre-declared rooms.
    rooms: tuple[RoomConfig, ...] = attrs.field(default=(), converter=_rooms)
    #: Create a room when someone joins a name that is not declared.
    create_rooms: bool = True
    #: Topology of rooms created on demand.
    default_topology: str = attrs.field(default="mesh", validator=_check_topology)
    #: Chooses the topology of a room created on demand, from the room name and the first
    #: joiner's ``metadata`` (e.g. ``rtckit demo`` lets the creator pick). It returns a name of
    #: :data:`TOPOLOGIES`, or raises :class:`~rtckit.errors.TopologyError` to refuse the join
    #: (its message goes to the client in an ``unknown_room`` error). ``None``:
    #: :attr:`default_topology`.
    choose_topology: Callable[[str, Mapping[str, Any] | None], str] | None = attrs.field(
        default=None, eq=False
    )
    #: ``RTCIceServer`` dictionaries given to clients in ``welcome`` (JSON list).
    ice_servers: Any = None
    max_peers_per_room: int = attrs.field(default=50, validator=_positive)
    #: Largest message in bytes; the server closes with 1009 above it.
    max_message_size: int = attrs.field(default=DEFAULT_MAX_SIZE, validator=_positive)
    max_json_depth: int = attrs.field(default=DEFAULT_MAX_DEPTH, validator=_positive)
    #: Largest ``metadata`` of a ``join``, in bytes of compact JSON; above it the join is
    #: refused with ``too_large``. Every ``welcome`` lists the other peers with their metadata:
    #: with the defaults, 50 peers with 1 KiB each fit in one 64 KiB message. A join whose
    #: ``welcome`` would still exceed ``max_message_size`` is refused with ``room_full``.
    max_metadata_size: int = attrs.field(default=1024, validator=_positive)
    #: Sustained messages per second per connection; above it, error then close 1008.
    max_messages_per_second: float = attrs.field(default=100.0, validator=_positive_time)
    #: Messages a connection may send in a burst above the sustained rate.
    burst: int = attrs.field(default=200, validator=_positive)
    #: Seconds a new connection has to send ``hello`` and ``join``/``resume``.
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive_time)
    #: Seconds of silence from a client after which the server pings it (and again every
    #: this many seconds while it stays silent).
    heartbeat_interval: float = attrs.field(default=6.0, validator=_positive_time)
    #: Seconds of silence after which a connection is considered dead and closed (the
    #: client has ``dead_peer_timeout - heartbeat_interval`` to answer a ping).
    dead_peer_timeout: float = attrs.field(default=9.0, validator=_positive_time)
    #: Seconds a session survives without a connection, waiting for ``resume``.
    resume_window: float = attrs.field(default=5.0, validator=attrs.validators.ge(0.0))
    #: Unacknowledged messages kept per session; beyond it relays are refused (backlog_full).
    max_pending: int = attrs.field(default=1024, validator=_positive)
    #: Bytes of unacknowledged messages kept per session; beyond it relays are refused
    #: (backlog_full). The server's own messages (``peer-left``, ``error``...) are always
    #: queued; one that finds more than ``max_pending + burst`` messages or twice
    #: ``max_pending_bytes`` queued closes the connection with 4004 (slow consumer).
    max_pending_bytes: int = attrs.field(default=2 * 1024 * 1024, validator=_positive)
    #: Bytes of unacknowledged messages kept across all sessions; beyond it relays are
    #: refused (backlog_full).
    max_total_pending_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive)
    #: Bytes a connection may hold waiting for the client to read them (the WebSocket's
    #: write buffer, the in-memory transport's queue); beyond it the connection is closed
    #: with 4004 (slow consumer). Larger than twice ``max_pending_bytes``, so that the resend
    #: after ``resume`` fits.
    max_send_buffer: int = attrs.field(default=8 * 1024 * 1024, validator=_positive)
    #: Bytes all connections together may hold waiting for their clients to read them; a
    #: connection that would pass it is closed with 4004.
    max_total_send_buffer: int = attrs.field(default=64 * 1024 * 1024, validator=_positive)
    #: Seconds a connection closed as a slow consumer has to take its close frame before
    #: its socket is dropped.
    close_timeout: float = attrs.field(default=2.0, validator=_positive_time)
    #: The server acknowledges a client's messages at least every this many messages...
    ack_every: int = attrs.field(default=16, validator=_positive)
    #: ... and at most this many seconds after the oldest unacknowledged one arrived.
    ack_delay: float = attrs.field(default=5.0, validator=attrs.validators.ge(0.0))
    #: Period of the server's timer (heartbeats, timeouts, acks).
    tick_interval: float = attrs.field(default=0.5, validator=_positive_time)
    #: Browser origins allowed to connect (``Origin`` header). Empty means the same origin as
    #: the server's ``Host`` only; ``"*"`` allows any. Clients without ``Origin`` are not
    #: browsers and are always allowed.
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    def topology_for(self, room: str, metadata: Mapping[str, Any] | None = None) -> str:
        """The topology *room* has, or would have if a ``join`` with *metadata* created it: a
        declared room's, else :attr:`choose_topology`'s choice, else :attr:`default_topology`.

        Raises :class:`~rtckit.errors.TopologyError` when :attr:`choose_topology` refuses the
        room.
        """
        for declared in self.rooms:
            if declared.name == room:
                return declared.topology
        if self.choose_topology is not None:
            return self.choose_topology(room, metadata)
        return self.default_topology

    def __attrs_post_init__(self) -> None:
        names = [room.name for room in self.rooms]
        if len(set(names)) != len(names):
            raise ConfigurationError("two declared rooms have the same name")
        if self.dead_peer_timeout <= self.heartbeat_interval:
            raise ConfigurationError("dead_peer_timeout must be longer than heartbeat_interval")
        if self.max_send_buffer <= 2 * self.max_pending_bytes:
            raise ConfigurationError(
                "max_send_buffer must be larger than twice max_pending_bytes (a resume resends "
                "up to that much at once)"
            )
