"""Run each room's server-side strategy on a signaling hub (mesh: nothing; SFU/MCU: media).

:class:`RoomStrategies` watches a :class:`~rtckit.signaling.hub.SignalingHub` (or the hub of a
:class:`~rtckit.signaling.wsserver.SignalingServer`): when the first peer joins a room it builds
the room's :class:`~rtckit.topology.base.ServerStrategy` (from the room's topology in the
signaling configuration, via :func:`~rtckit.topology.base.server_strategy_for`) and calls
``start_room``; when a room created on demand closes, or on :meth:`RoomStrategies.aclose`,
it calls ``stop_room``.

.. code-block:: python

    async with SignalingServer(config) as server, RoomStrategies(server.hub):
        await server.listen("127.0.0.1", 8765)
        ...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from rtckit.signaling.state import PeerJoinedEvent, RoomClosedEvent, ServerEvent
from rtckit.topology.base import (
    ServerStrategy,
    ServerStrategyFactory,
    Topology,
    server_strategy_for,
)

if TYPE_CHECKING:
    from rtckit.signaling.config import SignalingConfig
    from rtckit.signaling.hub import SignalingHub

__all__ = ["RoomStrategies", "topology_of"]

logger = logging.getLogger(__name__)


def topology_of(config: SignalingConfig, room: str) -> Topology:
    """The topology the signaling configuration gives *room* (declared, or the default)."""
    for declared in config.rooms:
        if declared.name == room:
            return Topology.parse(declared.topology)
    return Topology.parse(config.default_topology)


class RoomStrategies:
    """Start and stop the server-side strategy of every room of *hub* (async context manager)."""

    def __init__(
        self,
        hub: SignalingHub,
        *,
        factories: Mapping[Topology | str, ServerStrategyFactory] | None = None,
    ) -> None:
        self.hub = hub
        #: per-topology factories overriding the registered ones (e.g. a configured SFU)
        self.factories = {Topology.parse(k): v for k, v in (factories or {}).items()}
        self.running: dict[str, ServerStrategy] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._remove = hub.add_listener(self._on_event)
        self._closed = False

    async def __aenter__(self) -> RoomStrategies:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: ServerEvent) -> None:
        if self._closed:
            return
        if isinstance(event, PeerJoinedEvent) and event.room not in self.running:
            topology = topology_of(self.hub.config, event.room)
            factory = self.factories.get(topology)
            strategy = (
                factory(self.hub)
                if factory is not None
                else server_strategy_for(topology, self.hub)
            )
            self.running[event.room] = strategy
            self._spawn(self._call(strategy.start_room, event.room), f"room-start-{event.room}")
        elif isinstance(event, RoomClosedEvent) and event.room in self.running:
            strategy = self.running.pop(event.room)
            self._spawn(self._call(strategy.stop_room, event.room), f"room-stop-{event.room}")

    async def _call(self, method: Callable[[str], Awaitable[None]], room: str) -> None:
        try:
            await method(room)
        except Exception:  # one room's failure must not stop the others
            logger.exception("room strategy failed for room %r", room)

    async def aclose(self) -> None:
        """Stop every running room strategy and stop watching the hub. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._remove()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        rooms, self.running = self.running, {}
        for room, strategy in rooms.items():
            await self._call(strategy.stop_room, room)
