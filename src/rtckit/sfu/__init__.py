"""Selective forwarding: publish tracks once, forward the encoded packets to subscribers.

* :mod:`rtckit.sfu.rtp` and :mod:`rtckit.sfu.forward` are pure (bytes in, bytes out);
* :mod:`rtckit.sfu.engine` wires them to aiortc connections without decoding anything;
* :mod:`rtckit.sfu.record` writes a published track to a file without transcoding.
"""

from __future__ import annotations

from rtckit.sfu.engine import (
    DEFAULT_FORWARDED_EXTENSIONS,
    ForwardingTrack,
    PacketSink,
    PublishedTrack,
    SfuConfig,
    SfuEvent,
    SfuRouter,
    SfuStats,
    SfuTrackPublished,
    SfuTrackUnpublished,
    Subscription,
    SubscriptionPaused,
    SubscriptionResumed,
    TrackKey,
    TrackSubscribed,
    TrackUnsubscribed,
    accept_forwarding_transceiver,
    add_forwarding_transceiver,
)

__all__ = [
    "DEFAULT_FORWARDED_EXTENSIONS",
    "ForwardingTrack",
    "PacketSink",
    "PublishedTrack",
    "SfuConfig",
    "SfuEvent",
    "SfuRouter",
    "SfuStats",
    "SfuTrackPublished",
    "SfuTrackUnpublished",
    "Subscription",
    "SubscriptionPaused",
    "SubscriptionResumed",
    "TrackKey",
    "TrackSubscribed",
    "TrackUnsubscribed",
    "accept_forwarding_transceiver",
    "add_forwarding_transceiver",
]


def __getattr__(name: str) -> object:
    """``TrackPublished`` and ``TrackUnpublished``, renamed (with a DeprecationWarning)."""
    if name in ("TrackPublished", "TrackUnpublished"):
        from rtckit.sfu import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
