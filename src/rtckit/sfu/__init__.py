"""Selective forwarding: publish tracks once, forward the encoded packets to subscribers.

* :mod:`rtckit.sfu.rtp` and :mod:`rtckit.sfu.forward` are pure (bytes in, bytes out);
* :mod:`rtckit.sfu.engine` wires them to aiortc connections without decoding anything;
* :mod:`rtckit.sfu.record` writes a published track to a file without transcoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
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

# Type checkers read the imports under TYPE_CHECKING instead: a module __getattr__ would make
# any name valid for them, a misspelt one too.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "rtckit.sfu.engine": [
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
            ],
        },
        # deprecated: rtckit.topology has the room events TrackPublished and TrackUnpublished
        renamed={
            "TrackPublished": "rtckit.sfu.SfuTrackPublished",
            "TrackUnpublished": "rtckit.sfu.SfuTrackUnpublished",
        },
    )
