"""A typed statistics snapshot of one peer session (pure: built from aiortc's report objects).

aiortc's ``getStats()`` reports RTP streams (``inbound-rtp``, ``outbound-rtp``,
``remote-inbound-rtp``, ``remote-outbound-rtp``) and transports, but no candidate pair and no
frame counters. :func:`snapshot_from_report` sums the streams, and the session adds the ICE
nominated pair it reads from aioice (``rtckit._aiortc.selected_pair``).

Frame counters (``frames_sent``/``frames_received``) are ``None`` when the source (aiortc)
does not count frames; browsers report them in their own ``getStats``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = ["CandidatePairInfo", "Quality", "StatsSnapshot", "quality_of", "snapshot_from_report"]


class Quality(enum.StrEnum):
    """A rough call quality from loss and round-trip time."""

    GOOD = "good"
    FAIR = "fair"
    POOR = "poor"
    UNKNOWN = "unknown"


@attrs.frozen(kw_only=True)
class CandidatePairInfo:
    """The ICE candidate pair that carries the session's packets."""

    local_type: str
    remote_type: str
    local_address: tuple[str, int]
    remote_address: tuple[str, int]
    protocol: str

    @property
    def relayed(self) -> bool:
        """Whether either end of the pair is a TURN relay candidate."""
        return "relay" in (self.local_type, self.remote_type)

    @classmethod
    def from_candidates(cls, local: Any, remote: Any) -> CandidatePairInfo:
        """Build from the (local, remote) ends of a pair: aioice candidates.

        Each end needs ``type``, ``host``, ``port`` and ``transport``; the session gets them
        from ``rtckit._aiortc.selected_pair``.
        """
        return cls(
            local_type=local.type,
            remote_type=remote.type,
            local_address=(local.host, local.port),
            remote_address=(remote.host, remote.port),
            protocol=local.transport,
        )


@attrs.frozen(kw_only=True)
class StatsSnapshot:
    """Counters of one session at one moment (totals since the connection started)."""

    timestamp: float
    bytes_sent: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    frames_sent: int | None = None
    frames_received: int | None = None
    round_trip_time: float | None = None
    fraction_lost: float | None = None
    jitter: float | None = None
    inbound_streams: int = 0
    outbound_streams: int = 0
    candidate_pair: CandidatePairInfo | None = None


def snapshot_from_report(
    stats: Iterable[Any],
    *,
    timestamp: float,
    candidate_pair: CandidatePairInfo | None = None,
    frames_received: int | None = None,
) -> StatsSnapshot:
    """Sum aiortc stats objects (the values of an ``RTCStatsReport``) into a snapshot."""
    bytes_sent = bytes_received = packets_sent = packets_received = lost = 0
    inbound = outbound = 0
    rtts: list[float] = []
    fractions: list[float] = []
    jitters: list[float] = []
    for item in stats:
        kind = getattr(item, "type", "")
        if kind == "inbound-rtp":
            inbound += 1
            packets_received += int(item.packetsReceived)
            lost += max(0, int(item.packetsLost))
            jitters.append(float(item.jitter))
        elif kind == "outbound-rtp":
            outbound += 1
            packets_sent += int(item.packetsSent)
        elif kind == "remote-inbound-rtp":
            # aiortc leaves roundTripTime None until a report echoes one of its SRs
            if getattr(item, "roundTripTime", None) is not None:
                rtts.append(float(item.roundTripTime))
            if getattr(item, "fractionLost", None) is not None:
                fractions.append(float(item.fractionLost))
        elif kind == "transport":
            # aiortc reports one transport per sender/receiver, all the same bundled one.
            bytes_sent = max(bytes_sent, int(item.bytesSent))
            bytes_received = max(bytes_received, int(item.bytesReceived))
    return StatsSnapshot(
        timestamp=timestamp,
        bytes_sent=bytes_sent,
        bytes_received=bytes_received,
        packets_sent=packets_sent,
        packets_received=packets_received,
        packets_lost=lost,
        frames_received=frames_received,
        round_trip_time=max(rtts) if rtts else None,
        fraction_lost=max(fractions) if fractions else None,
        jitter=max(jitters) if jitters else None,
        inbound_streams=inbound,
        outbound_streams=outbound,
        candidate_pair=candidate_pair,
    )


def quality_of(snapshot: StatsSnapshot) -> Quality:
    """``poor`` above 10% loss or 400 ms RTT, ``fair`` above 2% or 150 ms, else ``good``."""
    if snapshot.fraction_lost is None and snapshot.round_trip_time is None:
        return Quality.UNKNOWN
    loss = snapshot.fraction_lost or 0.0
    rtt = snapshot.round_trip_time or 0.0
    if loss > 0.10 or rtt > 0.400:
        return Quality.POOR
    if loss > 0.02 or rtt > 0.150:
        return Quality.FAIR
    return Quality.GOOD
