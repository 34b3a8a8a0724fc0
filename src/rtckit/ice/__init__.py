"""ICE: which STUN and TURN servers a peer uses, with what credentials, and checks of them.

Layers (each importing only those before it):

* :mod:`~rtckit.ice.servers` -- STUN/TURN URIs and servers (pure);
* :mod:`~rtckit.ice.turn` -- time-limited TURN REST credentials, coturn's ``use-auth-secret``
  (pure);
* :mod:`~rtckit.ice.config` -- :class:`IceConfig`: servers and the transport policy, from the
  browser's ``RTCConfiguration`` or the ``RTCKIT_*`` environment variables (pure);
* :mod:`~rtckit.ice.candidates` -- ICE candidates in SDP and the policy that filters them (pure);
* :mod:`~rtckit.ice.aiortc` -- an :class:`IceConfig` as aiortc's ``RTCConfiguration``, saying
  what aiortc cannot use;
* :mod:`~rtckit.ice.doctor` -- probes of STUN and TURN servers over the network (asyncio).

The names below (the servers and the configuration) are importable from ``rtckit.ice``;
importing it pulls in neither asyncio nor aiortc.
"""

from __future__ import annotations

from rtckit.ice.config import (
    ENV_ICE_SERVERS,
    ENV_ICE_TRANSPORT_POLICY,
    ENV_TURN_CREDENTIAL,
    ENV_TURN_SECRET,
    ENV_TURN_TTL,
    ENV_TURN_USER,
    ENV_TURN_USERNAME,
    IceConfig,
    IceConfigWarning,
    IceTransportPolicy,
)
from rtckit.ice.servers import (
    DEFAULT_PORT,
    DEFAULT_TLS_PORT,
    IceServer,
    IceServerUri,
    TurnTransport,
    UriScheme,
    parse_uri,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "ENV_ICE_SERVERS",
    "ENV_ICE_TRANSPORT_POLICY",
    "ENV_TURN_CREDENTIAL",
    "ENV_TURN_SECRET",
    "ENV_TURN_TTL",
    "ENV_TURN_USER",
    "ENV_TURN_USERNAME",
    "IceConfig",
    "IceConfigWarning",
    "IceServer",
    "IceServerUri",
    "IceTransportPolicy",
    "TurnTransport",
    "UriScheme",
    "parse_uri",
]
