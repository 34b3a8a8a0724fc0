"""coturn, the TURN server: its configuration, and the process that runs it.

rtckit does not relay media itself: `coturn <https://github.com/coturn/coturn>`_ does.

* :mod:`~rtckit.coturn.config` -- :class:`CoturnConfig`: a safe ``turnserver.conf``, and the
  translation to and from rtckit's ICE configuration (pure);
* :mod:`~rtckit.coturn.process` -- :class:`CoturnProcess` and :func:`run_coturn`: ``turnserver``
  as a child process (asyncio).

Every name below is importable from ``rtckit.coturn``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
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
# Type checkers read the imports under TYPE_CHECKING instead: a module __getattr__ would make
# any name valid for them, a misspelt one too.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "rtckit.coturn.config": [
                "CLOUD_METADATA_ADDRESSES",
                "DEFAULT_DENIED_PEER_NETWORKS",
                "CoturnConfig",
                "IPNetwork",
            ],
            "rtckit.coturn.process": ["INSTALL_HINT", "CoturnProcess", "Spawn", "run_coturn"],
        },
    )
