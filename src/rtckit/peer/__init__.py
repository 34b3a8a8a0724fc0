"""Peer sessions on aiortc: perfect negotiation, connection replacement, typed events.

* :mod:`rtckit.peer.negotiation`: the pure perfect-negotiation state machine;
* :mod:`rtckit.peer.signaller`: the messages a session exchanges, and the ``Signaller`` protocol;
* :mod:`rtckit.peer.session`: :class:`~rtckit.peer.session.PeerSession`, the asyncio layer on
  aiortc;
* :mod:`rtckit.peer.events`: the typed events it emits;
* :mod:`rtckit.peer.stats`: typed statistics snapshots;
* :mod:`rtckit.peer.media` (imports numpy): test pattern, tone, files,
  recording. It is not imported here.
"""

from __future__ import annotations

from rtckit._deprecated import renamed
from rtckit.peer.events import (
    ConnectionReplaced,
    ConnectionStateChanged,
    DataChannelOpened,
    DataMessage,
    PeerEvent,
    QualityChanged,
    SessionClosed,
    StatsUpdated,
    TrackAdded,
    TrackRemoved,
)
from rtckit.peer.negotiation import Negotiator, polite_for
from rtckit.peer.session import DataChannel, PeerSession, SessionConfig
from rtckit.peer.signaller import (
    Description,
    PeerCandidate,
    PeerMessage,
    PeerRestart,
    Signaller,
    message_from_dict,
    message_to_dict,
)
from rtckit.peer.stats import CandidatePairInfo, Quality, StatsSnapshot

__all__ = [
    "CandidatePairInfo",
    "ConnectionReplaced",
    "ConnectionStateChanged",
    "DataChannel",
    "DataChannelOpened",
    "DataMessage",
    "Description",
    "Negotiator",
    "PeerCandidate",
    "PeerEvent",
    "PeerMessage",
    "PeerRestart",
    "PeerSession",
    "Quality",
    "QualityChanged",
    "SessionClosed",
    "SessionConfig",
    "Signaller",
    "StatsSnapshot",
    "StatsUpdated",
    "TrackAdded",
    "TrackRemoved",
    "message_from_dict",
    "message_to_dict",
    "polite_for",
]

# Deprecated names: rtckit.signaling.protocol has the wire messages Candidate and Restart.
__getattr__ = renamed(
    __name__,
    {
        "Candidate": ("rtckit.peer.PeerCandidate", PeerCandidate),
        "Restart": ("rtckit.peer.PeerRestart", PeerRestart),
    },
)
