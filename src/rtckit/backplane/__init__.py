"""Backplanes: what the nodes (processes, machines) of one rtckit deployment share.

* :mod:`~rtckit.backplane.base` -- the :class:`~rtckit.backplane.base.Backplane` interface:
  messages between nodes, node liveness, leases with fencing epochs.
* :mod:`~rtckit.backplane.redis` -- :class:`~rtckit.backplane.redis.RedisBackplane`, the
  backplane on redis-server (the ``redis`` extra; imported only from its own module).
* :mod:`~rtckit.backplane.keys` -- the Redis key names, user-supplied parts escaped.
* :mod:`~rtckit.backplane.memory` -- several nodes in one process
  (:class:`~rtckit.backplane.memory.MemoryBroker`), for tests and examples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
    from rtckit.backplane.base import Backplane, BackplaneHandler, Lease, NodeId

__all__ = ["Backplane", "BackplaneHandler", "Lease", "NodeId"]

__getattr__, __dir__ = lazy_exports(
    __name__, {"rtckit.backplane.base": ["Backplane", "BackplaneHandler", "Lease", "NodeId"]}
)
