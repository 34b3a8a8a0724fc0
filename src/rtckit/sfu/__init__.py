"""Selective forwarding: publish tracks once, forward the encoded packets to subscribers.

* :mod:`rtckit.sfu.rtp` and :mod:`rtckit.sfu.forward` are pure (bytes in, bytes out);
* :mod:`rtckit.sfu.engine` wires them to aiortc connections without decoding anything;
* :mod:`rtckit.sfu.record` writes a published track to a file without transcoding.
"""

from __future__ import annotations

from rtckit._deprecated import renamed
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


# Deprecated names: rtckit.topology has the room events TrackPublished and TrackUnpublished.
__getattr__ = renamed(
    __name__,
    {
        "TrackPublished": ("rtckit.sfu.SfuTrackPublished", SfuTrackPublished),
        "TrackUnpublished": ("rtckit.sfu.SfuTrackUnpublished", SfuTrackUnpublished),
    },
)
