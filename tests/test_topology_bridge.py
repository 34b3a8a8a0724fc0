"""The room plumbing sits below the topologies, and the old paths of what moved still work."""

from __future__ import annotations

import pytest

from test_lazy_imports import loaded_by

MEDIA = ("rtckit.sfu", "rtckit.mcu", "rtckit.topology.sfu", "rtckit.topology.mcu", "numpy", "av")
# the media stack and the transports: the bridge only translates messages
STACK = (*MEDIA, "aiortc", "aioice", "aiohttp")


def test_the_bridge_imports_no_media_engine_nor_aiortc() -> None:
    """In a fresh interpreter: importing the bridge imports neither the SFU nor the MCU, nor
    numpy, PyAV, aiortc or aiohttp."""
    assert set(loaded_by("rtckit.topology.bridge")) & set(STACK) == set()


def test_the_lifecycle_of_rooms_imports_no_media_engine() -> None:
    """Nor does the rooms' life cycle on a server, which uses the bridge."""
    loaded = loaded_by("rtckit.topology.bridge", "rtckit.topology.strategies")
    assert set(loaded) & set(MEDIA) == set()


def test_the_old_module_path_of_room_strategies_warns_and_names_the_new_one() -> None:
    from rtckit.topology import server, strategies

    with pytest.warns(DeprecationWarning, match=r"rtckit\.topology\.strategies"):
        assert server.RoomStrategies is strategies.RoomStrategies
    with pytest.warns(DeprecationWarning, match=r"rtckit\.topology\.strategies"):
        assert server.topology_of is strategies.topology_of
    with pytest.raises(AttributeError):
        server.nothing  # noqa: B018


def test_names_that_moved_from_the_mesh_warn_and_name_the_bridge() -> None:
    from rtckit.topology import bridge, mesh

    with pytest.warns(DeprecationWarning, match=r"rtckit\.topology\.bridge"):
        assert mesh.generation_from_session is bridge.generation_from_session
    with pytest.warns(DeprecationWarning, match=r"rtckit\.topology\.bridge"):
        assert mesh.log_dropped is bridge.log_dropped
    with pytest.raises(AttributeError):
        mesh.nothing  # noqa: B018
