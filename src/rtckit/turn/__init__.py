"""Deprecated: the names of ``rtckit.turn`` moved to :mod:`rtckit.ice.turn`.

Each old name still imports from here, with a :class:`DeprecationWarning` that names its new
path.
"""

from __future__ import annotations

from rtckit._deprecated import renamed
from rtckit.ice import turn as _ice_turn

__all__: list[str] = []

__getattr__ = renamed(
    __name__,
    {
        "DEFAULT_SEPARATOR": ("rtckit.ice.turn.DEFAULT_SEPARATOR", _ice_turn.DEFAULT_SEPARATOR),
        "DEFAULT_TTL": ("rtckit.ice.turn.DEFAULT_TTL", _ice_turn.DEFAULT_TTL),
        "ice_server": ("rtckit.ice.turn.ice_server", _ice_turn.ice_server),
        "password_for": ("rtckit.ice.turn.password_for", _ice_turn.password_for),
        "TurnCredentials": ("rtckit.ice.turn.TurnCredentials", _ice_turn.TurnCredentials),
        "TurnRestAuth": ("rtckit.ice.turn.TurnRestAuth", _ice_turn.TurnRestAuth),
    },
)
