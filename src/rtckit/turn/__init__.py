"""Deprecated alias of :mod:`rtckit.ice.turn`."""

from __future__ import annotations

from rtckit._moved import moved_names, same_names

__all__ = [
    "DEFAULT_SEPARATOR",
    "DEFAULT_TTL",
    "TurnCredentials",
    "TurnRestAuth",
    "ice_server",
    "password_for",
]

__getattr__ = moved_names(__name__, same_names("rtckit.ice.turn", __all__))
