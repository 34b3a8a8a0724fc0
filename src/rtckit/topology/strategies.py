"""Run each room's server-side strategy on a signaling hub (mesh: nothing; SFU/MCU: media).

:class:`RoomStrategies` watches a :class:`~rtckit.signaling.hub.SignalingHub` (or the hub of a
:class:`~rtckit.signaling.wsserver.SignalingServer`) and owns the life cycle of every room's
:class:`~rtckit.topology.base.ServerStrategy`:

* when the first **person** joins a room it builds the strategy of the room's topology (the
  topology the hub gave the room: declared, the default, or the one its creator chose through
  :attr:`~rtckit.signaling.config.SignalingConfig.choose_topology`), from *factories* or the
  registry (:func:`~rtckit.topology.base.server_strategy_for`), and calls ``start_room``;
* when the last person leaves, when the room closes, or on :meth:`RoomStrategies.aclose`, it
  calls ``stop_room``;
* server peers (:data:`~rtckit.topology.base.SERVER_PEER_IDS`: the SFU's and the MCU's own
  connection to the room) are not people: they neither start a room nor keep it running;
* the starts and stops of one room run one after the other, never at the same time (a room
  re-created while its old strategy stops does not get two servers in it); different rooms
  do not wait for each other. A strategy that fails is logged; the other rooms go on.

The application server (:mod:`rtckit.server.app`) runs its rooms with it; so can any program.

.. code-block:: python

    async with SignalingServer(config) as server, RoomStrategies(server.hub):
        await server.listen("127.0.0.1", 8765)
        ...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING

from rtckit.errors import ConfigurationError, TopologyError
from rtckit.signaling.state import PeerJoinedEvent, PeerLeftEvent, RoomClosedEvent, ServerEvent
from rtckit.topology.base import (
    SERVER_PEER_IDS,
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
    """The topology the signaling configuration gives *room* (declared, or the default).

    A room created on demand may have another one, chosen by its creator:
    :meth:`RoomStrategies.topology_for` asks the hub first.
    """
    for declared in config.rooms:
        if declared.name == room:
            return Topology.parse(declared.topology)
    return Topology.parse(config.default_topology)


class RoomStrategies:
    """Start and stop the server-side strategy of every room of *hub* (async context manager).

    See the module documentation for the policy. *factories* override the registered
    strategy of some topologies (e.g. a configured SFU); *server_peers* are the peer ids that
    are not people. :meth:`aclose` gives the rooms' strategies *stop_timeout* seconds to stop,
    then cancels what is left.
    """

    def __init__(
        self,
        hub: SignalingHub,
        *,
        factories: Mapping[Topology | str, ServerStrategyFactory] | None = None,
        server_peers: Collection[str] = SERVER_PEER_IDS,
        stop_timeout: float = 10.0,
    ) -> None:
        if stop_timeout <= 0:
            raise ConfigurationError(f"stop_timeout must be positive, not {stop_timeout!r}")
        self.hub = hub
        #: seconds :meth:`aclose` gives the strategies to stop before it cancels them
        self.stop_timeout = stop_timeout
        #: per-topology factories overriding the registered ones (e.g. a configured SFU)
        self.factories = {Topology.parse(k): v for k, v in (factories or {}).items()}
        self.server_peers = frozenset(server_peers)
        #: the strategy of every room that has people in it (room name -> strategy)
        self.running: dict[str, ServerStrategy] = {}
        # start and stop tasks not finished yet
        self.tasks: set[asyncio.Task[None]] = set()
        # the last start/stop task of each room: the next one waits for it
        self._last: dict[str, asyncio.Task[None]] = {}
        self._remove = hub.add_listener(self._on_event)
        self._closed = False

    async def __aenter__(self) -> RoomStrategies:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def people(self, room: str) -> list[str]:
        """The peer ids of the people in *room* (server peers are not)."""
        return [peer.id for peer in self.hub.peers(room) if peer.id not in self.server_peers]

    def topology_for(self, room: str) -> Topology:
        """The topology of *room*: the one the hub gave it (its creator's choice, if the
        configuration lets creators choose), or the configuration's for a room not there."""
        topology = self.hub.state.room_topology(room)
        if topology is None:
            return topology_of(self.hub.config, room)
        return Topology.parse(topology)

    def _on_event(self, event: ServerEvent) -> None:
        if self._closed:
            return
        if isinstance(event, PeerJoinedEvent):
            if event.peer.id not in self.server_peers and event.room not in self.running:
                self._start(event.room)
        elif isinstance(event, PeerLeftEvent):
            if not self.people(event.room):
                # the last person left: the server peer leaves too, and the room can close
                self._stop(event.room)
        elif isinstance(event, RoomClosedEvent):
            self._stop(event.room)

    def _build(self, room: str) -> ServerStrategy:
        topology = self.topology_for(room)
        factory = self.factories.get(topology)
        return factory(self.hub) if factory is not None else server_strategy_for(topology, self.hub)

    def _start(self, room: str) -> None:
        try:
            strategy = self._build(room)
        except (TopologyError, ImportError):
            logger.exception("room %r has no server strategy", room)
            return
        self.running[room] = strategy
        self._spawn(room, strategy.start_room, f"start {strategy.topology} room {room}")

    def _stop(self, room: str) -> None:
        strategy = self.running.pop(room, None)
        if strategy is not None:
            self._spawn(room, strategy.stop_room, f"stop {strategy.topology} room {room}")

    def _spawn(self, room: str, method: Callable[[str], Awaitable[None]], what: str) -> None:
        """Run ``method(room)`` once the previous start or stop of *room* is done."""
        previous = self._last.get(room)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await method(room)
            except Exception:  # one room's failure must not stop the others
                logger.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(run(), name=f"rtckit-room {what}")
        self.tasks.add(task)
        self._last[room] = task

        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            if self._last.get(room) is task:
                del self._last[room]

        task.add_done_callback(done)

    async def aclose(self) -> None:
        """Stop every running room strategy and stop watching the hub. Idempotent; no task
        is left running (a strategy still stopping after :attr:`stop_timeout` is cancelled)."""
        if not self._closed:
            self._closed = True
            self._remove()
            for room in list(self.running):
                self._stop(room)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout
        while self.tasks:
            left = deadline - loop.time()
            if left <= 0:
                logger.warning("%d room strategies did not stop in time", len(self.tasks))
                for task in self.tasks:
                    task.cancel()
                await asyncio.wait(set(self.tasks))
                break
            await asyncio.wait(set(self.tasks), timeout=left)
