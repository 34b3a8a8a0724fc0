"""The room plumbing sits below the topologies, and the old paths of what moved still work."""

from __future__ import annotations

import subprocess
import sys

import pytest

# not "av": rtckit.peer's package imports aiortc, which imports PyAV
HEAVY = ("rtckit.sfu", "rtckit.mcu", "rtckit.topology.sfu", "rtckit.topology.mcu", "numpy")


def test_the_bridge_imports_no_media_engine() -> None:
    """In a fresh interpreter: importing the bridge (and the lifecycle of rooms) imports
    neither the SFU nor the MCU, nor numpy."""
    code = (
        "import sys, rtckit.topology.bridge, rtckit.topology.strategies\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


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
