"""Room topologies: the abstraction (:mod:`~rtckit.topology.base`), the pure cost model
(:mod:`~rtckit.topology.cost`) and the mesh (:mod:`~rtckit.topology.mesh`).

SFU and MCU strategies register themselves with
:func:`~rtckit.topology.base.register_client_strategy` and
:func:`~rtckit.topology.base.register_server_strategy`.
"""

from __future__ import annotations

from rtckit.topology.base import (
    ClientStrategy,
    ParticipantConnectionChanged,
    ParticipantJoined,
    ParticipantLeft,
    Room,
    RoomClosed,
    RoomDataMessage,
    RoomEvent,
    ServerStrategy,
    ServerStrategyFactory,
    Topology,
    TrackPublished,
    TrackUnpublished,
    client_strategy_for,
    has_server_strategy,
    join_room,
    register_client_strategy,
    register_server_strategy,
    server_strategy_for,
    server_strategy_problem,
)
from rtckit.topology.cost import CpuModel, TopologyCost, compare, cost, cost_table

__all__ = [
    "ClientStrategy",
    "CpuModel",
    "ParticipantConnectionChanged",
    "ParticipantJoined",
    "ParticipantLeft",
    "Room",
    "RoomClosed",
    "RoomDataMessage",
    "RoomEvent",
    "ServerStrategy",
    "ServerStrategyFactory",
    "Topology",
    "TopologyCost",
    "TrackPublished",
    "TrackUnpublished",
    "client_strategy_for",
    "compare",
    "cost",
    "cost_table",
    "has_server_strategy",
    "join_room",
    "register_client_strategy",
    "register_server_strategy",
    "server_strategy_for",
    "server_strategy_problem",
]
