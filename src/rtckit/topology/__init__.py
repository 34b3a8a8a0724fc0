"""Room topologies: the abstraction (:mod:`~rtckit.topology.base`), the pure cost model
(:mod:`~rtckit.topology.cost`), the plumbing every room shares
(:mod:`~rtckit.topology.bridge`), the rooms' server-side life cycle
(:mod:`~rtckit.topology.strategies`), and the mesh, SFU and MCU themselves
(:mod:`~rtckit.topology.mesh`, :mod:`~rtckit.topology.sfu`, :mod:`~rtckit.topology.mcu`).

The mesh, SFU and MCU strategies are found through a lazy registry in
:mod:`~rtckit.topology.base`: the SFU and MCU modules (and numpy and PyAV with them) are
imported only when a room of theirs is used. Nothing registers itself on import;
:func:`~rtckit.topology.base.register_client_strategy` and
:func:`~rtckit.topology.base.register_server_strategy` replace a built-in strategy.
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
    VideoLayerChanged,
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
    "VideoLayerChanged",
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
