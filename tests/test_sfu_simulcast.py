"""Simulcast in the SFU without a browser: the preference message and its validation.

A Chromium publisher with three layers is in tests/browser/test_sfu_simulcast.py.
"""

from __future__ import annotations

import json

import pytest

from rtckit.errors import ConfigurationError
from rtckit.sfu.engine import SfuConfig, SfuRouter
from rtckit.topology.base import VIDEO_QUALITY_MESSAGE
from rtckit.topology.sfu import _video_quality_request


def test_a_video_quality_request_is_read() -> None:
    message = {"type": VIDEO_QUALITY_MESSAGE, "participant": "p1", "quality": "low"}
    assert _video_quality_request(json.dumps(message)) == ("p1", "low")
    assert _video_quality_request(json.dumps(message).encode()) == ("p1", "low")


@pytest.mark.parametrize(
    "data",
    [
        "",
        "not json",
        b"\xff\xfe",
        "[]",
        "3",
        json.dumps({"type": "other", "participant": "p1", "quality": "low"}),
        json.dumps({"type": VIDEO_QUALITY_MESSAGE, "participant": 7, "quality": "low"}),
        json.dumps({"type": VIDEO_QUALITY_MESSAGE, "participant": "p1", "quality": "ultra"}),
        json.dumps({"type": VIDEO_QUALITY_MESSAGE, "participant": "p1", "quality": ["low"]}),
        json.dumps({"type": VIDEO_QUALITY_MESSAGE, "participant": "p1"}),
    ],
)
def test_anything_else_is_not_a_request(data: str | bytes) -> None:
    assert _video_quality_request(data) is None


async def test_set_quality_refuses_an_unknown_quality() -> None:
    from aiortc import RTCPeerConnection

    from rtckit.sfu.engine import TrackKey, add_forwarding_transceiver

    pc = RTCPeerConnection()
    try:
        async with SfuRouter() as router:
            transceiver = add_forwarding_transceiver(pc, "video")
            sub = router.subscribe("viewer", TrackKey("publisher", "video"), transceiver)
            with pytest.raises(ConfigurationError, match="low, medium, high"):
                router.set_quality(sub, "ultra")
            router.set_quality(sub, "low")  # kept for a publication to come
            assert sub.quality == "low"
            assert sub.layer is None
    finally:
        await pc.close()


def test_the_uplink_bitrate_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        SfuConfig(simulcast_uplink_bitrate=0)
