"""Deprecated: the names of ``rtckit.rtcconfig`` moved to :mod:`rtckit.ice.aiortc` and
:mod:`rtckit.peer.connection`.

Each old name still imports from here, with a :class:`DeprecationWarning` that names its new
path.
"""

from __future__ import annotations

from rtckit._deprecated import renamed
from rtckit.ice import aiortc as _ice_aiortc
from rtckit.peer import connection as _peer_connection

__all__: list[str] = []

__getattr__ = renamed(
    __name__,
    {
        "aiortc_has_transport_policy": (
            "rtckit.ice.aiortc.aiortc_has_transport_policy",
            _ice_aiortc.aiortc_has_transport_policy,
        ),
        "AiortcSelection": ("rtckit.ice.aiortc.AiortcSelection", _ice_aiortc.AiortcSelection),
        "create_peer_connection": (
            "rtckit.peer.connection.create_peer_connection",
            _peer_connection.create_peer_connection,
        ),
        "RtcKitPeerConnection": (
            "rtckit.peer.connection.RtcKitPeerConnection",
            _peer_connection.RtcKitPeerConnection,
        ),
        "select_for_aiortc": ("rtckit.ice.aiortc.select_for_aiortc", _ice_aiortc.select_for_aiortc),
        "to_aiortc": ("rtckit.ice.aiortc.to_aiortc", _ice_aiortc.to_aiortc),
    },
)
