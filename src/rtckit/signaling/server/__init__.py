"""Deprecated alias of :mod:`rtckit.signaling.wsserver`, the WebSocket signaling server."""

from __future__ import annotations

from rtckit._moved import moved_names, same_names

__all__ = ["CLIENT_SCRIPT", "SignalingServer", "client_script"]

__getattr__ = moved_names(__name__, same_names("rtckit.signaling.wsserver", __all__))
