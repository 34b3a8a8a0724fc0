"""rtckit: WebRTC applications in Python, on aiortc.

Layers, from the bottom up:

* pure cores, no I/O: ICE/TURN configuration, STUN messages, coturn configuration,
  certificates, the signaling protocol, topology planning;
* every touch of aiortc's private internals: ``rtckit._aiortc``;
* thin asyncio adapters: signaling server and client, peer sessions on aiortc, the STUN
  server, the coturn process;
* topologies: mesh, SFU, MCU;
* applications: the ``rtckit`` command line (``demo``, ``serve``, ``cert``, ``turn``...).

The architecture topic of the documentation lists the modules of each layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
    from rtckit.errors import (
        AuthError,
        BackplaneError,
        CertificateError,
        CertificateExpiredError,
        ConfigurationError,
        ConnectionClosedError,
        CredentialError,
        IceError,
        InternalsError,
        LocalProtocolError,
        NegotiationError,
        PeerError,
        ProtocolError,
        RemoteProtocolError,
        RoomError,
        RtcKitError,
        SignalingError,
        StunFormatError,
        SystemComponentError,
        TopologyError,
        TurnAuthError,
        WhipError,
    )
    from rtckit.ice import IceConfig, IceConfigWarning, IceServer, IceServerUri, IceTransportPolicy
    from rtckit.ice.turn import TurnCredentials, TurnRestAuth
    from rtckit.signaling import (
        OpenAuth,
        SignalingClient,
        SignalingConfig,
        SignalingServer,
        TokenAuth,
    )
    from rtckit.topology.base import Topology, join_room

__version__ = "0.1.0.dev0"

__all__ = [
    "AuthError",
    "BackplaneError",
    "CertificateError",
    "CertificateExpiredError",
    "ConfigurationError",
    "ConnectionClosedError",
    "CredentialError",
    "IceConfig",
    "IceConfigWarning",
    "IceError",
    "IceServer",
    "IceServerUri",
    "IceTransportPolicy",
    "InternalsError",
    "LocalProtocolError",
    "NegotiationError",
    "OpenAuth",
    "PeerError",
    "ProtocolError",
    "RemoteProtocolError",
    "RoomError",
    "RtcKitError",
    "SignalingClient",
    "SignalingConfig",
    "SignalingError",
    "SignalingServer",
    "StunFormatError",
    "SystemComponentError",
    "TokenAuth",
    "Topology",
    "TopologyError",
    "TurnAuthError",
    "TurnCredentials",
    "TurnRestAuth",
    "WhipError",
    "__version__",
    "join_room",
]
# Type checkers read the imports under TYPE_CHECKING instead: a module __getattr__ would make
# any name valid for them, a misspelt one too.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "rtckit.errors": [
                "AuthError",
                "BackplaneError",
                "CertificateError",
                "CertificateExpiredError",
                "ConfigurationError",
                "ConnectionClosedError",
                "CredentialError",
                "IceError",
                "InternalsError",
                "LocalProtocolError",
                "NegotiationError",
                "PeerError",
                "ProtocolError",
                "RemoteProtocolError",
                "RoomError",
                "RtcKitError",
                "SignalingError",
                "StunFormatError",
                "SystemComponentError",
                "TopologyError",
                "TurnAuthError",
                "WhipError",
            ],
            "rtckit.ice": [
                "IceConfig",
                "IceConfigWarning",
                "IceServer",
                "IceServerUri",
                "IceTransportPolicy",
            ],
            "rtckit.ice.turn": ["TurnCredentials", "TurnRestAuth"],
            "rtckit.signaling": [
                "OpenAuth",
                "SignalingClient",
                "SignalingConfig",
                "SignalingServer",
                "TokenAuth",
            ],
            "rtckit.topology.base": ["Topology", "join_room"],
        },
    )
