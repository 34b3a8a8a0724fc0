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

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
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

# Type checkers read the imports under TYPE_CHECKING instead: a module __getattr__ would make
# any name valid for them, a misspelt one too.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "rtckit.peer.events": [
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
            ],
            "rtckit.peer.negotiation": ["Negotiator", "polite_for"],
            "rtckit.peer.session": ["DataChannel", "PeerSession", "SessionConfig"],
            "rtckit.peer.signaller": [
                "Description",
                "PeerCandidate",
                "PeerMessage",
                "PeerRestart",
                "Signaller",
                "message_from_dict",
                "message_to_dict",
            ],
            "rtckit.peer.stats": ["CandidatePairInfo", "Quality", "StatsSnapshot"],
        },
        # deprecated: rtckit.signaling.protocol has the wire messages Candidate and Restart
        renamed={"Candidate": "rtckit.peer.PeerCandidate", "Restart": "rtckit.peer.PeerRestart"},
    )
