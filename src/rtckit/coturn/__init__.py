"""coturn, the TURN server: its configuration, and the process that runs it.

rtckit does not relay media itself: `coturn <https://github.com/coturn/coturn>`_ does.

* :mod:`~rtckit.coturn.config` -- :class:`CoturnConfig`: a safe ``turnserver.conf``, and the
  translation to and from rtckit's ICE configuration (pure);
* :mod:`~rtckit.coturn.process` -- :class:`CoturnProcess` and :func:`run_coturn`: ``turnserver``
  as a child process (asyncio).

Every name below is importable from ``rtckit.coturn``.
"""

from __future__ import annotations

from rtckit.coturn.config import (
    CLOUD_METADATA_ADDRESSES,
    DEFAULT_DENIED_PEER_NETWORKS,
    CoturnConfig,
    IPNetwork,
)
from rtckit.coturn.process import INSTALL_HINT, CoturnProcess, Spawn, run_coturn

__all__ = [
    "CLOUD_METADATA_ADDRESSES",
    "DEFAULT_DENIED_PEER_NETWORKS",
    "INSTALL_HINT",
    "CoturnConfig",
    "CoturnProcess",
    "IPNetwork",
    "Spawn",
    "run_coturn",
]
