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
    Subscription,
    SubscriptionPaused,
    SubscriptionResumed,
    TrackKey,
    TrackPublished,
    TrackSubscribed,
    TrackUnpublished,
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
    "Subscription",
    "SubscriptionPaused",
    "SubscriptionResumed",
    "TrackKey",
    "TrackPublished",
    "TrackSubscribed",
    "TrackUnpublished",
    "TrackUnsubscribed",
    "accept_forwarding_transceiver",
    "add_forwarding_transceiver",
]
