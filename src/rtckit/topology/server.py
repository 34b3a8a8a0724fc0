"""Deprecated: :mod:`rtckit.topology.strategies` (run each room's server-side strategy).

Three modules of rtckit were called ``server``; this one is now named after what it runs.
Each name still imports from here, with a :class:`DeprecationWarning` naming its new path.
"""

from __future__ import annotations

from rtckit._deprecated import renamed
from rtckit.topology import strategies

__all__: list[str] = []

__getattr__ = renamed(
    __name__,
    {
        name: (f"rtckit.topology.strategies.{name}", getattr(strategies, name))
        for name in ("RoomStrategies", "topology_of")
    },
)
