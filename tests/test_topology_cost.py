"""The pure mesh/SFU/MCU cost model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtckit.errors import ConfigurationError, TopologyError
from rtckit.topology import CpuModel, Topology, compare, cost, cost_table


def test_seed_trade_offs_for_five_peers() -> None:
    mesh, sfu, mcu = compare(5, 1000)
    assert (mesh.client_up_streams, mesh.client_down_streams) == (4, 4)
    assert (sfu.client_up_streams, sfu.client_down_streams) == (1, 4)
    assert (mcu.client_up_streams, mcu.client_down_streams) == (1, 1)
    assert mesh.client_up_kbps == 4000
    assert mesh.server_out_streams == 0
    assert mesh.server_cpu == 0
    assert (sfu.server_in_streams, sfu.server_out_streams) == (5, 20)
    assert sfu.server_decodes == 0
    assert (mcu.server_in_streams, mcu.server_out_streams) == (5, 5)
    assert (mcu.server_decodes, mcu.server_encodes) == (5, 5)
    assert mcu.server_cpu > sfu.server_cpu > mesh.server_cpu
    assert mesh.client_cpu > sfu.client_cpu > mcu.client_cpu
    assert mesh.client_connections == 4
    assert sfu.client_connections == mcu.client_connections == 1


def test_shared_mix_encodes_once() -> None:
    personal = cost("mcu", 6)
    shared = cost("mcu", 6, mcu_personal_mix=False)
    assert shared.server_encodes == 1
    assert shared.server_cpu < personal.server_cpu


def test_alone_in_a_room_costs_nothing() -> None:
    for item in compare(1):
        assert item.client_up_streams == item.client_down_streams == 0
        assert item.server_out_streams == 0


@given(n=st.integers(min_value=2, max_value=200), kbps=st.floats(min_value=10, max_value=1e5))
def test_bandwidth_is_streams_times_bitrate(n: int, kbps: float) -> None:
    mesh, sfu, mcu = compare(n, kbps)
    for item in (mesh, sfu, mcu):
        assert item.client_up_kbps == pytest.approx(item.client_up_streams * kbps)
        assert item.server_out_kbps == pytest.approx(item.server_out_streams * kbps)
    # total media leaving clients equals total media arriving at clients in mesh
    assert mesh.client_up_streams * n == mesh.client_down_streams * n
    # an SFU sends every stream to every other peer
    assert sfu.server_out_streams == n * (n - 1)
    assert sfu.client_down_kbps == mesh.client_down_kbps


def test_validation() -> None:
    with pytest.raises(ConfigurationError):
        cost("mesh", 0)
    with pytest.raises(ConfigurationError):
        cost("sfu", 3, 0)
    with pytest.raises(TopologyError):
        cost("star", 3)
    with pytest.raises(ConfigurationError):
        CpuModel(encode=-1)


def test_table_has_header_and_three_rows_per_size() -> None:
    rows = cost_table([2, 4])
    assert rows[0][0] == "N"
    assert len(rows) == 1 + 2 * 3
    assert {row[1] for row in rows[1:]} == {t.value for t in Topology}
