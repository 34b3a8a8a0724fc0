"""Per-subscriber simulcast layer selection from the subscriber's downlink (pure, no I/O).

A :class:`LayerSelector` belongs to one subscription. Every report interval the router feeds
it what it knows and gets back the index of the layer to forward (lowest first) from
``selector.update(now, estimate, loss, bitrates, ceiling)``:

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
link. So the selector *tries* the next layer's rate for ``probe_duration``:

- with ``padding=True`` (the subscriber negotiated RTX) it stays on its layer and asks for
  padding: :attr:`LayerSelector.probe_bitrate` is the extra rate the next layer needs
  (its bitrate minus the current one's), sent by the caller as RTX
  padding packets the receiver discards. The video is not touched: a link that cannot
  carry the next layer loses some packets (repaired by NACK once the padding stops) instead
  of a layer switch that freezes the picture until the lower layer's next keyframe. The
  probe also fails at
  once when the caller reports a loss (:meth:`LayerSelector.loss_seen`, a NACK), so the
  padding stops as soon as the link overflows. Only when the probe holds does the layer
  move up (the caller switches at the new layer's keyframe);
- without padding the selector switches to the next layer itself for the probe (the
  fallback for a subscriber without RTX, which cannot be padded without touching its
  video stream), and steps back if it fails.

The probe fails on loss (``loss_high``) or when the estimate falls below ``estimate_drop``
of what it was when the probe began (the estimator saw queues grow). A probe that lasts its
window, with at least two loss reports received meanwhile, holds.

Decisions, in order:

1. never above the ceiling, never on a layer not sending (the nearest sending one below,
   else above), at once;
2. down on congestion, once the layer has been kept ``down_hold`` (reports and REMB lag
   a switch; a probe steps back at once): loss at least ``loss_high``, or an estimate below
   the current layer's bitrate and below ``estimate_drop`` of the highest estimate seen on
   this layer (a falling estimate; a low but rising one after a climb is the estimator
   catching up). The new layer is the highest one whose bitrate fits in the estimate (the
   lowest if none does; one step down on loss without an estimate);
3. up one layer, ``up_hold`` after the last move, but after congestion (a failed probe
   included) only after ``probe_interval``, doubled by each congestion up to
   ``probe_interval_max``, and set back once a layer reached by moving up has held for
   ``probe_interval_max``. The move is a probe unless the estimate already covers the next
   layer's bitrate times ``up_margin`` and no congestion is remembered (the backoff is
   not set back yet).

Besides :meth:`~LayerSelector.update`, the caller reports what it sees between reports:
:meth:`~LayerSelector.loss_seen` (a NACK: a padding probe fails) and
:meth:`~LayerSelector.unrepairable` (packets lost for good: one layer down at once, as
congestion).

So the layer cannot change up faster than ``up_hold`` nor down faster than ``down_hold``
(but on :meth:`~LayerSelector.unrepairable`), and a link that cannot carry the next layer
is probed at most every ``probe_interval_max``.
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

    #: a reported loss fraction at least this high is congestion (the layer moves down)
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
    probe_interval_max: float = attrs.field(default=3.0, validator=_positive)
    #: how long a probe lasts before the layer is kept
    probe_duration: float = attrs.field(default=2.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.probe_interval_max < self.probe_interval:
            raise ConfigurationError("probe_interval_max must be at least probe_interval")


class LayerSelector:
    """The layer of one subscription, chosen from its downlink; see the module docstring."""

    def __init__(self, policy: LayerPolicy | None = None) -> None:
        self.policy = policy or LayerPolicy()
        #: the layer chosen by the last update (None before the first)
        self.layer: int | None = None
        #: True while a probe runs that may still fail (the current layer, or padding)
        self.probing = False
        #: bit/s of padding to send now (a padding probe runs), else None
        self.probe_bitrate: float | None = None
        #: the layer a padding probe is for
        self.probe_target: int | None = None
        self._probe_since = 0.0
        self._since = 0.0
        self._peak: float | None = None
        self._probe_start_estimate: float | None = None
        #: loss reports received during the probe
        self._probe_reports = 0
        #: wait after congestion before the next move up (doubled by each congestion)
        self._interval = self.policy.probe_interval
        #: no move up before this time
        self._next_up = 0.0
        #: when a layer reached by moving up has held long enough to forget past congestion
        self._settled_at: float | None = None

    def _enter(
        self, layer: int, now: float, *, estimate: float | None, probing: bool = False
    ) -> None:
        self.layer = layer
        self._since = now
        self._peak = estimate
        self._next_up = now + self.policy.up_hold
        self._start_probe(now, estimate, probing=probing)

    def _start_probe(
        self,
        now: float,
        estimate: float | None,
        *,
        probing: bool = True,
        target: int | None = None,
        bitrate: float | None = None,
    ) -> None:
        self.probing = probing
        self.probe_target = target
        self.probe_bitrate = bitrate
        self._probe_since = now
        self._probe_start_estimate = estimate if probing else None
        self._probe_reports = 0

    def loss_seen(self, now: float) -> bool:
        """The subscriber reported a lost packet (a NACK): a padding probe fails at once.

        True if that ended a probe (the caller stops its padding).
        """
        if self.probe_target is None or self.layer is None:
            return False
        self._congested(self.layer, now, None)
        return True

    def unrepairable(
        self, now: float, bitrates: Sequence[float | None], ceiling: int
    ) -> int | None:
        """The subscriber lost packets for good (repairs lost too): congestion, now.

        One layer down at once (no ``down_hold``: the loss is certain), with the backoff of
        any congestion; a padding probe fails. Returns the layer (None before the first).
        """
        if self.layer is None:
            return None
        ceiling = max(0, min(ceiling, len(bitrates) - 1))
        lower = [i for i, rate in enumerate(bitrates) if rate is not None and i < self.layer]
        lower = [i for i in lower if i <= ceiling] or lower
        return self._congested(max(lower) if lower else self.layer, now, None)

    @staticmethod
    def _padding_rate(bitrates: Sequence[float | None], current: int, target: int) -> float:
        """The padding that makes the current layer's rate the target's."""
        return max(0.0, (bitrates[target] or 0.0) - (bitrates[current] or 0.0))

    def _congested(self, layer: int, now: float, estimate: float | None) -> int:
        """Move down to *layer* after congestion: the next move up waits, longer each time."""
        self._enter(layer, now, estimate=estimate)
        self._next_up = now + self._interval
        self._interval = min(self._interval * 2, self.policy.probe_interval_max)
        self._settled_at = None
        return layer

    def update(
        self,
        now: float,
        estimate: float | None,
        loss: float | None,
        bitrates: Sequence[float | None],
        ceiling: int,
        *,
        padding: bool = False,
    ) -> int | None:
        """The layer to forward now (index into *bitrates*), None if no layer sends.

        *padding*: the caller can probe with padding (:attr:`probe_bitrate`).
        """
        sending = [i for i, rate in enumerate(bitrates) if rate is not None]
        if not sending:
            return self.layer
        p = self.policy
        ceiling = max(0, min(ceiling, len(bitrates) - 1))
        allowed = [i for i in sending if i <= ceiling] or [min(sending)]
        current = self.layer
        if current is None or current not in allowed:
            # first call, preference lowered, or the layer stopped: nearest allowed one
            below = [i for i in allowed if current is None or i <= current]
            start = max(below or allowed)
            self._enter(start, now, estimate=estimate)
            return start
        if estimate is not None and (self._peak is None or estimate > self._peak):
            self._peak = estimate
        rate = bitrates[current] or 0.0
        lossy = loss is not None and loss >= p.loss_high
        lower = [i for i in allowed if i < current]
        if self.probing:
            start_estimate = self._probe_start_estimate
            dropped = (
                estimate is not None
                and start_estimate is not None
                and estimate < start_estimate * p.estimate_drop
            )
            target = self.probe_target
            if lossy or dropped:
                # a padding probe leaves the layer as it is; a switched one steps back
                back = current if target is not None else max(lower or [current])
                return self._congested(back, now, estimate)
            if target is not None and (target not in allowed or target <= current):
                self._start_probe(now, estimate, probing=False)  # ceiling lowered, or stopped
                return current
            if loss is not None:
                self._probe_reports += 1
            # the first report may predate the probe: a probe holds with two clean ones
            # (or, from a subscriber that reports no loss, twice the window)
            elapsed = now - self._probe_since
            if elapsed < p.probe_duration or (
                self._probe_reports < 2 and elapsed < 2 * p.probe_duration
            ):
                if target is not None:
                    self.probe_bitrate = self._padding_rate(bitrates, current, target)
                return current
            self.probing = False  # the probe held: keep the layer (or move to its target)
            self._settled_at = now + p.probe_interval_max
            if target is not None:
                self._enter(target, now, estimate=estimate)
                self._settled_at = now + p.probe_interval_max
                # the padding proved the link carries the target: the probe for the next
                # layer starts at once (it lasts probe_duration before any move)
                self._next_up = now
                above = [i for i in allowed if i > target]
                if padding and above:
                    rate = self._padding_rate(bitrates, target, min(above))
                    self._start_probe(now, estimate, target=min(above), bitrate=rate)
                return target
        if self._settled_at is not None and now >= self._settled_at:
            self._interval, self._settled_at = p.probe_interval, None
        falling = (
            estimate is not None
            and self._peak is not None
            and estimate < rate
            and estimate < self._peak * p.estimate_drop
        )
        if (lossy or falling) and now - self._since >= p.down_hold:
            if not lower:
                return current
            if estimate is None:
                target = max(lower)  # loss alone: one step down
            else:
                fits = [i for i in lower if (bitrates[i] or 0.0) <= estimate]
                target = max(fits) if fits else min(lower)
            return self._congested(target, now, estimate)
        higher = [i for i in allowed if i > current]
        if not higher or now < self._next_up:
            return current
        up = min(higher)
        # after congestion the estimate has proved too optimistic (a loss-only link, a
        # policer): every move up is then a probe until a layer holds again
        probing = (
            estimate is None
            or estimate < (bitrates[up] or 0.0) * p.up_margin
            or self._interval > p.probe_interval
        )
        if probing and padding:
            self._next_up = now + p.up_hold
            rate = self._padding_rate(bitrates, current, up)
            self._start_probe(now, estimate, target=up, bitrate=rate)
            return current
        self._enter(up, now, estimate=estimate, probing=probing)
        if not probing:
            self._settled_at = now + p.probe_interval_max
        return up
