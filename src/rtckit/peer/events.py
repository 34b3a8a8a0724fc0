"""Typed, frozen events a :class:`~rtckit.peer.session.PeerSession` emits.

Consume them with ``async for event in session.events():``; the iteration ends when the
session is closed. Match on the class::

    async for event in session.events():
        match event:
            case TrackAdded(track=track):
                ...
            case DataMessage(label="chat", data=data):
                ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from rtckit.peer.stats import StatsSnapshot

__all__ = [
    "ConnectionReplaced",
    "ConnectionStateChanged",
    "DataChannelOpened",
    "DataMessage",
    "PeerEvent",
    "QualityChanged",
    "SessionClosed",
    "StatsUpdated",
    "TrackAdded",
    "TrackRemoved",
]


@attrs.frozen(kw_only=True)
class TrackAdded:
    """The remote side started sending *track* (an aiortc ``MediaStreamTrack``)."""

    track: Any
    kind: str
    mid: str | None
    generation: int


@attrs.frozen(kw_only=True)
class TrackRemoved:
    """The remote side stopped sending *track* (removed it, or the connection was replaced)."""

    track: Any
    kind: str
    mid: str | None
    generation: int


@attrs.frozen(kw_only=True)
class DataChannelOpened:
    """A data channel the remote side created is open for the first time."""

    label: str


@attrs.frozen(kw_only=True)
class DataMessage:
    """A message arrived on the data channel *label*."""

    label: str
    data: str | bytes


@attrs.frozen(kw_only=True)
class ConnectionStateChanged:
    """The session's connection state changed.

    States: ``new``, ``connecting``, ``connected``, ``disconnected`` (no heartbeat for
    ``disconnected_after``), ``failed``, ``restarting`` (the connection is being replaced),
    ``closed``.
    """

    state: str
    generation: int


@attrs.frozen(kw_only=True)
class ConnectionReplaced:
    """The ``RTCPeerConnection`` was replaced (rtckit's ICE restart on aiortc).

    *reason* is ``"requested"``, ``"failed"``, ``"disconnected"``, ``"remote"`` or
    ``"bad-offer"`` (a remote offer was applied but could not be answered).
    """

    generation: int
    reason: str


@attrs.frozen(kw_only=True)
class StatsUpdated:
    """A periodic statistics snapshot (only when ``stats_interval`` is configured)."""

    stats: StatsSnapshot


@attrs.frozen(kw_only=True)
class QualityChanged:
    """The rough call quality (``good``, ``fair``, ``poor``) changed."""

    quality: str
    stats: StatsSnapshot


@attrs.frozen(kw_only=True)
class SessionClosed:
    """The session is closed; *reason* is ``"local"``, ``"peer-timeout"`` or ``"error"``."""

    reason: str


PeerEvent = (
    TrackAdded
    | TrackRemoved
    | DataChannelOpened
    | DataMessage
    | ConnectionStateChanged
    | ConnectionReplaced
    | StatsUpdated
    | QualityChanged
    | SessionClosed
)
