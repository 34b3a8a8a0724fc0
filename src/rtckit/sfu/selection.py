"""Per-subscriber simulcast layer selection from the subscriber's downlink (pure, no I/O).

A :class:`LayerSelector` belongs to one subscription. Every report interval the router feeds
it what it knows and gets back the index of the layer to forward (lowest first)::

    index = selector.update(now, estimate, loss, bitrates, ceiling)

- ``estimate``: the subscriber's bandwidth estimate in bit/s (its last REMB), None if it
  sends none (or it is stale);
- ``loss``: the fraction of packets the subscriber reported lost (0..1) in its last receiver
  report, None if none came since the last call;
- ``bitrates``: the measured incoming bitrate of each layer, lowest first, None for a layer
  not sending (never seen, or stopped);
- ``ceiling``: the highest layer the subscriber asked for (its preference).

Why probing: the only estimate a browser subscriber gives aiortc's SFU is REMB (aiortc
does not negotiate transport-wide congestion control), and Chromium's receive-side estimator
never reports much more than 1.5 times what it receives. A subscriber moved down to a layer
of 150 kbit/s therefore never announces the 500 kbit/s the next layer needs, however fast its
link. So the selector *tries* the next layer: after ``probe_interval`` on a layer below the
ceiling without congestion, it moves one layer up for ``probe_duration``. The probe fails on
loss (``loss_high``) or when the estimate falls below ``estimate_drop`` of what it was when
the probe began (the estimator saw queues grow); it then steps back and the next probe waits
twice as long (up to ``probe_interval_max``). A probe that lasts its window keeps the layer.
Probing with the real layer costs no padding and tests exactly the load that would be
kept, at the price of a short burst of loss on a link that cannot carry it.

Decisions, in order:

1. never above the ceiling, never on a layer not sending (the nearest sending one below,
   else above);
2. down on congestion, once the layer has been kept ``down_hold`` (reports and REMB lag
   a switch): loss at least ``loss_high``, or an estimate below the current layer's bitrate
   and below ``estimate_drop`` of the highest estimate seen on this layer (a falling
   estimate; a low but rising one after a climb is the estimator catching up). The new
   layer is the highest one whose bitrate fits in the estimate (the lowest if none does;
   one step down on loss without an estimate);
3. up without a probe when the estimate already covers the next layer's bitrate times
   ``up_margin`` and the current layer has been kept ``up_hold``;
4. else probe as above.

A probe fails at once, without waiting ``down_hold``. Every other move waits ``down_hold``
or ``up_hold`` after the last one: the selection cannot oscillate faster than that, and a
failed probe doubles the wait before the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from rtckit.errors import ConfigurationError

__all__ = ["LayerPolicy", "LayerSelector"]


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ConfigurationError(f"{attribute.name} must be positive, not {value!r}")


def _fraction(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 < value < 1:
        raise ConfigurationError(f"{attribute.name} must be between 0 and 1, not {value!r}")


@attrs.frozen(kw_only=True)
class LayerPolicy:
    """Tuning of :class:`LayerSelector`. Times in seconds, ratios of bit rates."""

    #: a reported loss fraction at least this high is congestion: move down
    loss_high: float = attrs.field(default=0.1, validator=_fraction)
    #: an estimate this far below its peak on the layer (or below the probe's start) falls
    estimate_drop: float = attrs.field(default=0.85, validator=_fraction)
    #: move up without a probe when the estimate is this many times the next layer's bitrate
    up_margin: float = attrs.field(default=1.2, validator=_positive)
    #: a layer is kept this long before any move up
    up_hold: float = attrs.field(default=1.0, validator=_positive)
    #: a layer is kept this long before a move down (a failing probe steps back at once)
    down_hold: float = attrs.field(default=1.0, validator=_positive)
    #: time on a layer below the ceiling before trying the next one up
    probe_interval: float = attrs.field(default=2.0, validator=_positive)
    #: the longest wait between probes, after failed probes doubled it
    probe_interval_max: float = attrs.field(default=4.0, validator=_positive)
    #: how long a probe lasts before the layer is kept
    probe_duration: float = attrs.field(default=1.5, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.probe_interval_max < self.probe_interval:
            raise ConfigurationError("probe_interval_max must be at least probe_interval")


class LayerSelector:
    """The layer of one subscription, chosen from its downlink; see the module docstring."""

    def __init__(self, policy: LayerPolicy | None = None) -> None:
        self.policy = policy or LayerPolicy()
        #: the layer chosen by the last update (None before the first)
        self.layer: int | None = None
        #: True while the current layer is a probe that may still fail
        self.probing = False
        self._since = 0.0
        self._peak: float | None = None
        self._probe_start_estimate: float | None = None
        self._interval = self.policy.probe_interval
        self._next_probe = 0.0

    def _enter(self, layer: int, now: float, *, probing: bool, estimate: float | None) -> None:
        self.layer = layer
        self.probing = probing
        self._since = now
        self._peak = estimate
        self._probe_start_estimate = estimate if probing else None
        if not probing:
            self._next_probe = now + self._interval

    def update(
        self,
        now: float,
        estimate: float | None,
        loss: float | None,
        bitrates: Sequence[float | None],
        ceiling: int,
    ) -> int | None:
        """The layer to forward now (index into *bitrates*), None if no layer sends."""
        sending = [i for i, rate in enumerate(bitrates) if rate is not None]
        if not sending:
            return self.layer
        p = self.policy
        ceiling = max(0, min(ceiling, len(bitrates) - 1))
        allowed = [i for i in sending if i <= ceiling] or [min(sending)]
        top = max(allowed)
        current = self.layer
        if current is None or current not in allowed:
            # first call, preference lowered, or the layer stopped: nearest allowed one
            start = top if current is None else max([i for i in allowed if i <= current] or allowed)
            self._enter(start, now, probing=False, estimate=estimate)
            return start
        if estimate is not None and (self._peak is None or estimate > self._peak):
            self._peak = estimate
        rate = bitrates[current] or 0.0
        lossy = loss is not None and loss >= p.loss_high
        if self.probing:
            start_estimate = self._probe_start_estimate
            falling = (
                estimate is not None
                and start_estimate is not None
                and estimate < start_estimate * p.estimate_drop
            )
            if lossy or falling:
                self._interval = min(self._interval * 2, p.probe_interval_max)
                below = max([i for i in allowed if i < current] or [current])
                self._enter(below, now, probing=False, estimate=estimate)
                return below
            if now - self._since < p.probe_duration:
                return current
            self.probing = False  # the probe held: keep the layer
            self._interval = p.probe_interval
            self._next_probe = now + p.up_hold
        falling = (
            estimate is not None
            and self._peak is not None
            and estimate < rate
            and estimate < self._peak * p.estimate_drop
        )
        if (lossy or falling) and now - self._since >= p.down_hold:
            lower = [i for i in allowed if i < current]
            if not lower:
                return current
            if estimate is None:
                target = max(lower)  # loss alone: one step down
            else:
                fits = [i for i in lower if (bitrates[i] or 0.0) <= estimate]
                target = max(fits) if fits else min(lower)
            self._enter(target, now, probing=False, estimate=estimate)
            return target
        higher = [i for i in allowed if i > current]
        if not higher or now - self._since < p.up_hold:
            return current
        up = min(higher)
        if estimate is not None and estimate >= (bitrates[up] or 0.0) * p.up_margin:
            self._interval = p.probe_interval
            self._enter(up, now, probing=False, estimate=estimate)
            return up
        if now >= self._next_probe:
            self._enter(up, now, probing=True, estimate=estimate)
            return up
        return current
