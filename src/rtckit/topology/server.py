"""Deprecated: :mod:`rtckit.topology.strategies` (run each room's server-side strategy).

The module was renamed because three modules of rtckit were called ``server``; this name says
what it runs. Importing a name from here warns and gives the one of
:mod:`rtckit.topology.strategies`.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["RoomStrategies", "topology_of"]  # noqa: F822 - served by __getattr__


def __getattr__(name: str) -> Any:
    if name in __all__:
        warnings.warn(
            f"rtckit.topology.server is deprecated; import {name} from rtckit.topology.strategies",
            DeprecationWarning,
            stacklevel=2,
        )
        from rtckit.topology import strategies

        return getattr(strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
