"""The pure simulcast layer selector: tables of situations and a no-oscillation property."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtckit.errors import ConfigurationError
from rtckit.sfu.selection import LayerPolicy, LayerSelector

RATES = (150_000.0, 500_000.0, 1_500_000.0)


def run(
    selector: LayerSelector,
    start: float,
    end: float,
    estimate: float | None,
    loss: float | None = 0.0,
    rates: tuple[float | None, ...] = RATES,
    ceiling: int = 2,
    step: float = 0.5,
) -> list[tuple[float, int | None]]:
    """Feed the same conditions every *step* seconds; the layers chosen, with their times."""
    out = []
    now = start
    while now < end:
        out.append((now, selector.update(now, estimate, loss, rates, ceiling)))
        now += step
    return out


def test_starts_at_the_ceiling_and_stays_on_a_good_link() -> None:
    sel = LayerSelector()
    assert {layer for _, layer in run(sel, 0, 30, 2_500_000)} == {2}
    sel = LayerSelector()
    assert {layer for _, layer in run(sel, 0, 30, 2_500_000, ceiling=0)} == {0}


def test_the_preference_is_a_ceiling_at_once() -> None:
    sel = LayerSelector()
    run(sel, 0, 5, 2_500_000)
    assert sel.update(5, 2_500_000, 0, RATES, 1) == 1
    assert sel.update(5.5, 2_500_000, 0, RATES, 0) == 0
    # raised again: climbs after up_hold, without a probe since the estimate covers it
    assert sel.update(6, 2_500_000, 0, RATES, 2) == 0
    assert sel.update(7, 2_500_000, 0, RATES, 2) == 1
    assert sel.update(8, 2_500_000, 0, RATES, 2) == 2
    assert not sel.probing


def test_a_stopped_layer_is_left_for_the_nearest_lower_one() -> None:
    sel = LayerSelector()
    run(sel, 0, 3, 2_500_000)
    assert sel.update(3, 2_500_000, 0, (150_000, 500_000, None), 2) == 1
    assert sel.update(3.5, 2_500_000, 0, (None, None, None), 2) == 1  # nothing sends: keep
    assert sel.update(4, 2_500_000, 0, (150_000, None, None), 2) == 0


def test_loss_moves_down_one_step_at_a_time_without_an_estimate() -> None:
    sel = LayerSelector()
    assert sel.update(0, None, None, RATES, 2) == 2
    assert sel.update(0.5, None, 0.3, RATES, 2) == 2  # down_hold: the report may predate
    assert sel.update(1.0, None, 0.3, RATES, 2) == 1
    assert sel.update(1.5, None, 0.3, RATES, 2) == 1
    assert sel.update(2.0, None, 0.3, RATES, 2) == 0
    assert sel.update(3.0, None, 0.3, RATES, 2) == 0


def test_a_falling_estimate_moves_down_to_the_layer_that_fits() -> None:
    sel = LayerSelector()
    run(sel, 0, 5, 2_000_000)
    assert sel.update(5, 400_000, 0, RATES, 2) == 0  # 500k does not fit in 400k
    sel = LayerSelector()
    run(sel, 0, 5, 2_000_000)
    assert sel.update(5, 700_000, 0.0, RATES, 2) == 1


def test_a_low_estimate_that_rises_is_not_congestion() -> None:
    """After a climb, REMB starts near the old layer's rate and catches up: no move down."""
    sel = LayerSelector()
    run(sel, 0, 3, 300_000, ceiling=0)
    layers = [sel.update(3 + i, 300_000 + 60_000 * i, 0, RATES, 1) for i in range(10)]
    assert layers[-1] == 1
    assert layers.index(1) <= 3
    assert all(layer == 1 for layer in layers[layers.index(1) :])


def test_a_constrained_subscriber_climbs_back_by_probing_within_10_s() -> None:
    """REMB never exceeds 1.5 times what the subscriber receives: only probes can climb."""
    sel = LayerSelector()
    now = 0.0
    received = RATES[2]
    link = 300_000.0
    timeline = []
    while now < 60:
        if now >= 30:
            link = 10_000_000.0  # the shaping is lifted
        estimate = min(1.5 * received, link * 0.9)
        loss = 0.3 if received > link else 0.0
        layer = sel.update(now, estimate, loss, RATES, 2)
        assert layer is not None
        received = RATES[layer]
        timeline.append((now, layer))
        now += 0.5
    shaped = [layer for t, layer in timeline if 5 <= t < 30]
    assert shaped.count(0) / len(shaped) > 0.6  # mostly on the bottom layer, probing up
    assert 2 not in shaped
    back = next(t for t, layer in timeline if t >= 30 and layer == 2)
    assert back - 30 <= 10
    assert all(layer == 2 for t, layer in timeline if t >= back)


def test_failed_probes_back_off() -> None:
    policy = LayerPolicy(probe_interval_max=16)
    sel = LayerSelector(policy)
    starts: list[float] = []
    now = 0.0
    layer: int | None = 0
    while now < 80:
        estimate = 200_000.0
        loss = 0.3 if layer == 1 else 0.0
        layer = sel.update(now, estimate, loss, RATES, 1)
        if layer == 1 and sel.probing and (not starts or now - starts[-1] > 0.5):
            starts.append(now)
        now += 0.5
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps
    assert gaps[:3] == sorted(gaps[:3])
    assert gaps[0] < gaps[2]
    assert max(gaps) <= policy.probe_interval_max + 1


def test_policy_validation() -> None:
    with pytest.raises(ConfigurationError):
        LayerPolicy(loss_high=1.5)
    with pytest.raises(ConfigurationError):
        LayerPolicy(probe_interval=5, probe_interval_max=2)
    with pytest.raises(ConfigurationError):
        LayerPolicy(up_hold=0)


conditions = st.tuples(
    st.one_of(st.none(), st.floats(0, 5_000_000)),
    st.one_of(st.none(), st.floats(0, 1)),
    st.integers(0, 2),
)


@given(
    st.lists(conditions, min_size=1, max_size=80),
    st.booleans(),
    st.lists(st.booleans(), max_size=80),
)
def test_never_above_the_ceiling_and_never_faster_than_the_holds(
    steps: list[tuple[float | None, float | None, int]], padding: bool, nacks: list[bool]
) -> None:
    """Also with padding probes, and NACKs (``loss_seen``) coming at any time."""
    policy = LayerPolicy()
    sel = LayerSelector(policy)
    last_change = None
    previous = None
    for i, (estimate, loss, ceiling) in enumerate(steps):
        now = i * 0.25
        if i < len(nacks) and nacks[i]:
            sel.loss_seen(now)
        layer = sel.update(now, estimate, loss, RATES, ceiling, padding=padding)
        assert layer is not None
        assert layer <= ceiling
        rate = sel.probe_bitrate
        if rate is not None:
            assert padding
            assert sel.probe_target is not None
            assert sel.probe_target > layer
            assert 0 <= rate <= max(RATES)
        if previous is not None and layer != previous:
            if last_change is not None and layer > previous:
                # up: only after up_hold on the layer
                assert now - last_change >= policy.up_hold
            last_change = now
        previous = layer


@given(st.floats(0, 5_000_000), st.floats(0, 0.09))
def test_steady_conditions_settle(estimate: float, loss: float) -> None:
    """Under constant conditions the layer settles: only failed probes move it afterwards."""
    sel = LayerSelector()
    layers = [layer for _, layer in run(sel, 0, 60, estimate, loss)]
    changes = sum(1 for a, b in itertools.pairwise(layers) if a != b)
    # a probe up and its step back are two changes, at most one probe per 4 s after backoff
    assert changes <= 2 * (60 / LayerPolicy().probe_interval_max) + 4
    if estimate >= RATES[2] * 1.2:
        assert set(layers) == {2}


# --- probing with padding (the subscriber negotiated RTX) -----------------------------------


def padding(sel: LayerSelector) -> float | None:
    """The padding asked for (a function: mypy keeps no narrowing of a call's result)."""
    return sel.probe_bitrate


def probing(sel: LayerSelector) -> bool:
    return sel.probing


def test_a_padding_probe_keeps_the_layer_and_asks_for_the_missing_rate() -> None:
    sel = LayerSelector()
    run(sel, 0, 3, 300_000, ceiling=0)  # on the bottom layer
    assert sel.update(3, 300_000, 0.0, RATES, 2, padding=True) == 0
    assert sel.probing
    assert sel.probe_target == 1
    assert sel.probe_bitrate == RATES[1] - RATES[0]
    # clean reports for the window (probe_duration, 2 s): the probe holds, the layer moves
    # up; with the ceiling at the middle layer no further probe follows
    layers = [sel.update(3 + 0.5 * i, 300_000, 0.0, RATES, 1, padding=True) for i in range(1, 5)]
    assert layers == [0, 0, 0, 1]
    assert padding(sel) is None
    assert not probing(sel)


def test_a_held_padding_probe_starts_the_next_one_without_waiting() -> None:
    """The padding proved the link: the probe for the layer above starts with the move,
    not ``up_hold`` later (the climb from the bottom takes two probes)."""
    sel = LayerSelector()
    run(sel, 0, 3, 300_000, ceiling=0)
    sel.update(3, 300_000, 0.0, RATES, 2, padding=True)
    layers = [sel.update(3 + 0.5 * i, 300_000, 0.0, RATES, 2, padding=True) for i in range(1, 5)]
    assert layers == [0, 0, 0, 1]  # held at 5, and the probe for the top layer runs
    assert sel.probe_target == 2
    assert sel.probe_bitrate == RATES[2] - RATES[1]
    layers = [sel.update(5 + 0.5 * i, 300_000, 0.0, RATES, 2, padding=True) for i in range(1, 5)]
    assert layers == [1, 1, 1, 2]  # on the top layer 4 s after the first probe began
    assert padding(sel) is None


def test_a_padding_probe_that_loses_packets_stops_without_touching_the_layer() -> None:
    sel = LayerSelector()
    run(sel, 0, 3, 300_000, ceiling=0)
    assert sel.update(3, 300_000, 0.0, RATES, 2, padding=True) == 0
    assert padding(sel) is not None
    assert sel.loss_seen(3.2)  # a NACK: the link overflows
    assert padding(sel) is None
    assert not probing(sel)
    assert sel.layer == 0
    assert not sel.loss_seen(3.3)  # no probe any more: nothing to end
    # and a lossy receiver report does the same
    sel = LayerSelector()
    run(sel, 0, 3, 300_000, ceiling=0)
    sel.update(3, 300_000, 0.0, RATES, 2, padding=True)
    assert sel.update(3.5, 300_000, 0.3, RATES, 2, padding=True) == 0
    assert padding(sel) is None


def test_a_padding_probe_ends_when_the_ceiling_drops_below_its_target() -> None:
    sel = LayerSelector()
    run(sel, 0, 3, 300_000, ceiling=0)
    sel.update(3, 300_000, 0.0, RATES, 2, padding=True)
    assert sel.probe_target == 1
    assert sel.update(3.5, 300_000, 0.0, RATES, 0, padding=True) == 0
    assert padding(sel) is None


def test_a_constrained_subscriber_never_leaves_its_layer_for_a_probe() -> None:
    """With padding, a link that carries the bottom layer only keeps the bottom layer all
    along (the probes fail on loss, the video is never switched), and climbs back within
    10 s once the link is free."""
    sel = LayerSelector()
    link = 300_000.0
    timeline = []
    now = 0.0
    while now < 60:
        if now >= 30:
            link = 10_000_000.0
        layer = sel.layer if sel.layer is not None else 2
        sent = RATES[layer] + (sel.probe_bitrate or 0.0)
        loss = 0.3 if sent > link else 0.0
        if loss and padding(sel) is not None:
            sel.loss_seen(now)  # the NACKs of the lost packets
        estimate = min(1.5 * sent, link * 0.9)
        result = sel.update(now, estimate, loss, RATES, 2, padding=True)
        assert result is not None
        timeline.append((now, result))
        now += 0.5
    shaped = [layer for t, layer in timeline if 5 <= t < 30]
    assert set(shaped) == {0}
    back = next(t for t, layer in timeline if t >= 30 and layer == 2)
    assert back - 30 <= 10
    assert all(layer == 2 for t, layer in timeline if t >= back)


def test_a_loss_for_good_moves_down_at_once_and_backs_off() -> None:
    sel = LayerSelector()
    run(sel, 0, 5, 2_500_000)
    assert sel.layer == 2
    assert sel.unrepairable(5.1, RATES, 2) == 1  # no down_hold
    assert sel.unrepairable(5.2, RATES, 2) == 0
    assert sel.unrepairable(5.3, RATES, 2) == 0  # the bottom: stays
    # and the next move up waits the backoff (not up_hold)
    layers = [sel.update(5.5 + 0.5 * i, 2_500_000, 0.0, RATES, 2) for i in range(4)]
    assert layers[:3] == [0, 0, 0]
    assert LayerSelector().unrepairable(0, RATES, 2) is None  # no layer yet
    sel = LayerSelector()
    run(sel, 0, 3, 300_000, ceiling=0)
    sel.update(3, 300_000, 0.0, RATES, 2, padding=True)
    assert sel.probe_target == 1
    assert sel.unrepairable(3.1, RATES, 2) == 0
    assert padding(sel) is None  # the padding probe failed
