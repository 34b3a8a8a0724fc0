"""rtckit's signaling layer: protocol, room state machine, server, clients, auth.

Layers (each importing only those before it):

* :mod:`~rtckit.signaling.protocol` -- typed messages and the strict JSON codec (pure);
* :mod:`~rtckit.signaling.auth` -- room tokens (pure, PyJWT);
* :mod:`~rtckit.signaling.config` -- :class:`~rtckit.signaling.config.SignalingConfig` (pure);
* :mod:`~rtckit.signaling.state` -- the sans-I/O room/session state machine;
* :mod:`~rtckit.signaling.hub` -- its asyncio driver; :mod:`~rtckit.signaling.memory` the
  in-memory transport;
* :mod:`~rtckit.signaling.wsserver` -- the aiohttp WebSocket signaling server;
* :mod:`~rtckit.signaling.client` and :mod:`~rtckit.signaling.websocket` -- the Python client.

The names below are the ones most applications need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
    from rtckit.signaling.auth import Authenticator, Grant, OpenAuth, TokenAuth
    from rtckit.signaling.client import (
        ClientEvent,
        Disconnected,
        Reconnected,
        ReconnectPolicy,
        SignalingClient,
    )
    from rtckit.signaling.config import RoomConfig, SignalingConfig
    from rtckit.signaling.hub import EventStream, SignalingHub
    from rtckit.signaling.memory import MemoryTransport
    from rtckit.signaling.protocol import (
        PROTOCOL_VERSION,
        Answer,
        AppMessage,
        Candidate,
        CloseCode,
        EndOfCandidates,
        Error,
        ErrorCode,
        Offer,
        PeerInfo,
        PeerJoined,
        PeerLeft,
        Restart,
        Welcome,
    )
    from rtckit.signaling.state import (
        ErrorSentEvent,
        MessageEvent,
        PeerJoinedEvent,
        PeerLeftEvent,
        RoomClosedEvent,
        ServerEvent,
    )
    from rtckit.signaling.transport import ClientTransport
    from rtckit.signaling.websocket import WebSocketTransport
    from rtckit.signaling.wsserver import SignalingServer

__all__ = [
    "PROTOCOL_VERSION",
    "Answer",
    "AppMessage",
    "Authenticator",
    "Candidate",
    "ClientEvent",
    "ClientTransport",
    "CloseCode",
    "Disconnected",
    "EndOfCandidates",
    "Error",
    "ErrorCode",
    "ErrorSentEvent",
    "EventStream",
    "Grant",
    "MemoryTransport",
    "MessageEvent",
    "Offer",
    "OpenAuth",
    "PeerInfo",
    "PeerJoined",
    "PeerJoinedEvent",
    "PeerLeft",
    "PeerLeftEvent",
    "ReconnectPolicy",
    "Reconnected",
    "Restart",
    "RoomClosedEvent",
    "RoomConfig",
    "ServerEvent",
    "SignalingClient",
    "SignalingConfig",
    "SignalingHub",
    "SignalingServer",
    "TokenAuth",
    "WebSocketTransport",
    "Welcome",
]
# Type checkers read the imports under TYPE_CHECKING instead: a module __getattr__ would make
# any name valid for them, a misspelt one too.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "rtckit.signaling.auth": ["Authenticator", "Grant", "OpenAuth", "TokenAuth"],
            "rtckit.signaling.client": [
                "ClientEvent",
                "Disconnected",
                "Reconnected",
                "ReconnectPolicy",
                "SignalingClient",
            ],
            "rtckit.signaling.config": ["RoomConfig", "SignalingConfig"],
            "rtckit.signaling.hub": ["EventStream", "SignalingHub"],
            "rtckit.signaling.memory": ["MemoryTransport"],
            "rtckit.signaling.protocol": [
                "PROTOCOL_VERSION",
                "Answer",
                "AppMessage",
                "Candidate",
                "CloseCode",
                "EndOfCandidates",
                "Error",
                "ErrorCode",
                "Offer",
                "PeerInfo",
                "PeerJoined",
                "PeerLeft",
                "Restart",
                "Welcome",
            ],
            "rtckit.signaling.state": [
                "ErrorSentEvent",
                "MessageEvent",
                "PeerJoinedEvent",
                "PeerLeftEvent",
                "RoomClosedEvent",
                "ServerEvent",
            ],
            "rtckit.signaling.transport": ["ClientTransport"],
            "rtckit.signaling.websocket": ["WebSocketTransport"],
            "rtckit.signaling.wsserver": ["SignalingServer"],
        },
    )
