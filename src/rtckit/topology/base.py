"""The topology abstraction: the server decides a room's topology, clients follow it.

A room's topology (:class:`Topology`) is chosen by the SERVER (``RoomConfig.topology`` of
``rtckit.signaling``) and announced to every client in the signaling ``welcome``. Two
strategy interfaces plug each topology in:

* :class:`ClientStrategy` -- "how do I connect, given the room's topology": it turns a joined
  ``rtckit.signaling.SignalingClient`` into a :class:`Room`. Mesh opens a peer session to
  every other peer; SFU and MCU clients open one session to the media server.
* :class:`ServerStrategy` -- "what does the server do for this room": nothing but signaling
  for mesh; forward or mix media for SFU and MCU.

Applications only see :class:`Room` and its events, so the same code works whatever the
topology::

    async with SignalingClient.connect(url, room="standup") as client:
        async with join_room(client) as room:        # mesh, sfu or mcu: the server decided
            await room.publish(TestPatternTrack())
            async for event in room.events():
                ...

The registry of strategies is lazy: the built-in mesh, SFU and MCU strategies are listed
here by module and name, and a module is imported the first time a room of its topology
needs it (so that numpy and PyAV, which the SFU and MCU need, stay optional). Importing the
SFU or MCU module registers nothing. :func:`register_client_strategy` and
:func:`register_server_strategy` replace the strategy of a topology (a test double, a
configured server); :class:`~rtckit.topology.strategies.RoomStrategies` also takes
per-topology factories.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from rtckit.errors import TopologyError

if TYPE_CHECKING:
    from rtckit.peer.session import SessionConfig
    from rtckit.topology._http_peer import HttpPeer

__all__ = [
    "MCU_PEER_ID",
    "PUBLISHER_ROLE",
    "SERVER_PEER_IDS",
    "SFU_PEER_ID",
    "VIDEO_LAYER_MESSAGE",
    "VIDEO_OFF",
    "VIDEO_QUALITY_MESSAGE",
    "ClientStrategy",
    "ParticipantConnectionChanged",
    "ParticipantJoined",
    "ParticipantLeft",
    "PublishingStrategy",
    "Room",
    "RoomClosed",
    "RoomDataMessage",
    "RoomEvent",
    "ServerStrategy",
    "ServerStrategyFactory",
    "Topology",
    "TrackPublished",
    "TrackUnpublished",
    "VideoLayerChanged",
    "client_strategy_for",
    "has_server_strategy",
    "join_room",
    "register_client_strategy",
    "register_server_strategy",
    "server_strategy_for",
    "server_strategy_problem",
]


#: The peer id the SFU takes in the rooms it serves (:mod:`rtckit.topology.sfu`).
SFU_PEER_ID = "rtckit-sfu"
#: type of the room-channel message (JSON, addressed to :data:`SFU_PEER_ID`) asking the SFU
#: for a simulcast layer of one participant's video: ``{"type", "participant", "quality"}``
VIDEO_QUALITY_MESSAGE = "rtckit.video-quality"
#: the ``quality`` of a :data:`VIDEO_QUALITY_MESSAGE` that pauses the video (not shown): the
#: SFU forwards none of it until another quality is asked for, then resumes at a keyframe
VIDEO_OFF = "off"
#: type of the room-channel message (JSON, from :data:`SFU_PEER_ID`) telling a participant what
#: the SFU forwards it of one participant's video, sent when that changes:
#: ``{"type", "participant", "layer", "layers", "paused"}`` (``layer``: the RID forwarded, or
#: null without simulcast; ``layers``: the publication's RIDs, lowest first)
VIDEO_LAYER_MESSAGE = "rtckit.video-layer"
#: The peer id the MCU takes in the rooms it serves (:mod:`rtckit.topology.mcu`).
MCU_PEER_ID = "rtckit-mcu"
#: The peer ids server strategies take in the rooms they serve. They are not people (not
#: counted as participants; a room with only them in it is empty, see
#: :class:`~rtckit.topology.strategies.RoomStrategies`).
SERVER_PEER_IDS: frozenset[str] = frozenset({SFU_PEER_ID, MCU_PEER_ID})
#: The ``rtckit_role`` in the signaling metadata of a send-only member (a WHIP publisher):
#: the media server does not open a session to it over signaling; its strategy's
#: ``add_publisher`` connects it (:class:`PublishingStrategy`).
PUBLISHER_ROLE = "whip"


class Topology(enum.StrEnum):
    """How media flows in a room."""

    #: Every peer sends to and receives from every other peer directly (N-1 connections).
    MESH = "mesh"
    #: Every peer sends once to a selective forwarding unit that forwards to the others.
    SFU = "sfu"
    #: Every peer sends once to a multipoint control unit that mixes and sends one stream back.
    MCU = "mcu"

    @classmethod
    def parse(cls, value: str | Topology) -> Topology:
        """The topology named *value*; :class:`~rtckit.errors.TopologyError` if unknown."""
        try:
            return cls(value)
        except ValueError:
            raise TopologyError(f"unknown topology {value!r}") from None


# --- room events (the same for every topology) ---------------------------------------------


@attrs.frozen(kw_only=True)
class ParticipantJoined:
    """Someone joined the room (*metadata* is what they gave when joining)."""

    participant_id: str
    metadata: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ParticipantLeft:
    """Someone left the room; their tracks are gone."""

    participant_id: str
    reason: str | None = None


@attrs.frozen(kw_only=True)
class TrackPublished:
    """A remote *track* from *participant_id* is available (an aiortc ``MediaStreamTrack``)."""

    participant_id: str
    track: Any
    kind: str


@attrs.frozen(kw_only=True)
class TrackUnpublished:
    """A remote track is no longer sent."""

    participant_id: str
    track: Any
    kind: str


@attrs.frozen(kw_only=True)
class RoomDataMessage:
    """A data message from *participant_id* (sent with :meth:`Room.send`)."""

    participant_id: str
    data: str | bytes


@attrs.frozen(kw_only=True)
class VideoLayerChanged:
    """What the SFU forwards of *participant_id*'s video to this participant changed.

    *layer* is the RID of the simulcast layer forwarded (None without simulcast, or before
    the first), *layers* the publication's RIDs, lowest first; *paused* is True while the
    video is asked ``"off"`` (:meth:`rtckit.topology.sfu.SfuRoom.set_video_quality`).
    """

    participant_id: str
    layer: str | None
    layers: tuple[str, ...]
    paused: bool


@attrs.frozen(kw_only=True)
class ParticipantConnectionChanged:
    """The media connection to *participant_id* changed state (see ``ConnectionStateChanged``)."""

    participant_id: str
    state: str


@attrs.frozen(kw_only=True)
class RoomClosed:
    """The room object is closed (left, or the signaling client is gone)."""

    reason: str


RoomEvent = (
    ParticipantJoined
    | ParticipantLeft
    | TrackPublished
    | TrackUnpublished
    | RoomDataMessage
    | ParticipantConnectionChanged
    | VideoLayerChanged
    | RoomClosed
)


@runtime_checkable
class Room(Protocol):
    """What an application holds after :func:`join_room`, whatever the topology."""

    @property
    def topology(self) -> Topology:
        """The room's topology, as the server announced it."""

    @property
    def local_id(self) -> str:
        """This participant's id."""

    @property
    def participants(self) -> Mapping[str, Mapping[str, Any] | None]:
        """The other participants (id -> metadata)."""

    async def publish(self, track: Any) -> None:
        """Send *track* to the room."""

    async def unpublish(self, track: Any) -> None:
        """Stop sending *track*."""

    def send(self, data: str | bytes, *, to: str | None = None) -> None:
        """Send a data message to every participant, or to *to* only."""

    def events(self) -> AsyncIterator[RoomEvent]:
        """The room's events until it is closed."""

    async def aclose(self) -> None:
        """Leave: close every media connection (the signaling client stays the caller's)."""


class ClientStrategy(Protocol):
    """Turns a joined signaling client into a started :class:`Room` for one topology."""

    async def __call__(
        self, client: Any, *, session_config: SessionConfig | None, **options: Any
    ) -> Room:
        """Start and return the room for *client* (already joined)."""


@runtime_checkable
class ServerStrategy(Protocol):
    """What the server runs for a room of one topology (started/stopped with the room)."""

    topology: Topology

    async def start_room(self, room: str) -> None:
        """The room now exists: start whatever media work it needs."""

    async def stop_room(self, room: str) -> None:
        """The room is gone: stop its media work."""


@runtime_checkable
class PublishingStrategy(Protocol):
    """A server strategy whose room takes send-only members (WHIP publishers): the SFU
    forwards their media, the MCU mixes it. A publisher is an
    :class:`~rtckit.topology._http_peer.HttpPeer`, the connection class WHEP viewers share: its
    media goes into the room, nothing is sent to it, it is never renegotiated."""

    async def add_publisher(
        self, participant_id: str, offer: str, *, connect_timeout: float = ...
    ) -> HttpPeer:
        """Answer *offer* from the room's participant *participant_id*, which only
        publishes; it ends if it is not connected within *connect_timeout* seconds. Raises
        :class:`~rtckit.errors.TopologyError` if the room's media server is not running,
        :class:`~rtckit.errors.NegotiationError` if the offer cannot be answered."""


#: Builds a room's server strategy, given the signaling hub it serves (strategies that take
#: part in the room, like an SFU, join it through the hub; others ignore it).
ServerStrategyFactory = Callable[[Any], ServerStrategy]

_CLIENT: dict[Topology, ClientStrategy | str] = {
    Topology.MESH: "rtckit.topology.mesh:open_mesh",
    Topology.SFU: "rtckit.topology.sfu:open_sfu",
    Topology.MCU: "rtckit.topology.mcu:open_mcu",
}
_SERVER: dict[Topology, ServerStrategyFactory | str] = {
    Topology.MESH: "rtckit.topology.mesh:MeshServerStrategy",
    Topology.SFU: "rtckit.topology.sfu:SfuServerStrategy",
    Topology.MCU: "rtckit.topology.mcu:McuServerStrategy",
}


def _load(target: Any) -> Any:
    if isinstance(target, str):
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)
    return target


def register_client_strategy(topology: Topology | str, strategy: ClientStrategy) -> None:
    """Make :func:`join_room` use *strategy* for rooms of *topology* (instead of the built-in
    one)."""
    _CLIENT[Topology.parse(topology)] = strategy


def register_server_strategy(topology: Topology | str, factory: ServerStrategyFactory) -> None:
    """Make :func:`server_strategy_for` build *factory(hub)* for rooms of *topology* (instead
    of the built-in one)."""
    _SERVER[Topology.parse(topology)] = factory


def client_strategy_for(topology: Topology | str) -> ClientStrategy:
    """The client strategy registered for *topology*.

    Raises :class:`~rtckit.errors.TopologyError` if there is none.
    """
    parsed = Topology.parse(topology)
    if parsed not in _CLIENT:
        raise TopologyError(f"no client strategy for {parsed.value!r} rooms is registered")
    strategy: ClientStrategy = _load(_CLIENT[parsed])
    return strategy


def server_strategy_for(topology: Topology | str, hub: Any = None) -> ServerStrategy:
    """A new server strategy for a room of *topology* on the signaling *hub*.

    *hub* is the :class:`~rtckit.signaling.hub.SignalingHub` the room lives on (strategies
    that join the room, such as the SFU, need it). Raises
    :class:`~rtckit.errors.TopologyError` if no strategy is registered.
    """
    parsed = Topology.parse(topology)
    if parsed not in _SERVER:
        raise TopologyError(f"no server strategy for {parsed.value!r} rooms is registered")
    factory: ServerStrategyFactory = _load(_SERVER[parsed])
    return factory(hub)


def has_server_strategy(topology: Topology | str) -> bool:
    """Whether a server strategy is registered for *topology* and its module imports (an
    optional dependency of a strategy, such as numpy for the MCU, may be missing), without
    building one (the SFU and MCU factories need a hub). :func:`server_strategy_problem`
    says why not."""
    return server_strategy_problem(topology) is None


def server_strategy_problem(topology: Topology | str) -> str | None:
    """Why no server strategy for *topology* can be built here, or ``None`` if one can: none
    is registered, or its module does not import (the reason names the missing module)."""
    parsed = Topology.parse(topology)
    target = _SERVER.get(parsed)
    if target is None:
        return f"no {parsed.value} server strategy is registered"
    try:
        _load(target)
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing:
            return f"the {parsed.value.upper()} server does not import: {exc}"
        return (
            f"the {parsed.value.upper()} server needs {missing}, which is not installed "
            f"(pip install {missing})"
        )
    except AttributeError as exc:
        return f"the {parsed.value.upper()} server does not import: {exc}"
    return None


@contextlib.asynccontextmanager
async def join_room(
    client: Any, *, session_config: SessionConfig | None = None, **options: Any
) -> AsyncIterator[Room]:
    """Open the room of a joined signaling *client* with the strategy of its topology.

    The topology comes from the server's ``welcome`` (``client.topology``); *options* go to
    the strategy. The room is closed on exit; the signaling client is not.
    """
    strategy = client_strategy_for(client.topology)
    room = await strategy(client, session_config=session_config, **options)
    try:
        yield room
    finally:
        await room.aclose()
