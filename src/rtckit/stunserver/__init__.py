"""Deprecated alias of :mod:`rtckit.stun.server`."""

from __future__ import annotations

from rtckit._moved import moved_names, same_names

__all__ = [
    "DEFAULT_PORT",
    "SocketFactory",
    "StunServer",
    "StunServerConfig",
    "stun_binding",
]

__getattr__ = moved_names(__name__, same_names("rtckit.stun.server", __all__))
