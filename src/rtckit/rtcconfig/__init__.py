"""Deprecated alias of :mod:`rtckit.ice.aiortc` and :mod:`rtckit.peer.connection`."""

from __future__ import annotations

from rtckit._moved import moved_names, same_names

__all__ = [
    "AiortcSelection",
    "RtcKitPeerConnection",
    "aiortc_has_transport_policy",
    "create_peer_connection",
    "select_for_aiortc",
    "to_aiortc",
]

__getattr__ = moved_names(
    __name__,
    same_names("rtckit.ice.aiortc", __all__)
    | same_names("rtckit.peer.connection", ["RtcKitPeerConnection", "create_peer_connection"]),
)
