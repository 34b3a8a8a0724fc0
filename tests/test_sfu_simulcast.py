"""Simulcast in the SFU without a browser: the preference message and its validation.

A Chromium publisher with three layers is in tests/browser/test_sfu_simulcast.py.
"""

from __future__ import annotations

import json

import pytest

from rtckit.errors import ConfigurationError
from rtckit.sfu.engine import SfuConfig, SfuRouter
from rtckit.topology.base import (
    VIDEO_LAYER_MESSAGE,
    VIDEO_OFF,
    VIDEO_QUALITY_MESSAGE,
    VideoLayerChanged,
)
from rtckit.topology.sfu import _video_layer_report, _video_quality_request


def test_a_video_quality_request_is_read() -> None:
    message = {"type": VIDEO_QUALITY_MESSAGE, "participant": "p1", "quality": "low"}
    assert _video_quality_request(json.dumps(message)) == ("p1", "low")
    assert _video_quality_request(json.dumps(message).encode()) == ("p1", "low")
    message["quality"] = VIDEO_OFF
    assert _video_quality_request(json.dumps(message)) == ("p1", "off")


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
    assert _video_layer_report(data) is None


def test_a_video_layer_report_is_read() -> None:
    report: dict[str, object] = {"type": VIDEO_LAYER_MESSAGE, "participant": "p1", "layer": "h"}
    report |= {"layers": ["q", "h", "f"], "paused": False}
    assert _video_layer_report(json.dumps(report)) == VideoLayerChanged(
        participant_id="p1", layer="h", layers=("q", "h", "f"), paused=False
    )
    for key, bad in (
        ("participant", None),
        ("layer", 3),
        ("layers", "qhf"),
        ("layers", ["q", 1]),
        ("paused", "no"),
        ("type", VIDEO_QUALITY_MESSAGE),
    ):
        assert _video_layer_report(json.dumps({**report, key: bad})) is None, key


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


# --- VP8 picture IDs across segments (a layer switch) ---------------------------------------


def vp8_packet(ssrc: int, seq: int, picture_id: int, tl0: int, *, key: bool) -> bytes:
    """An RTP packet (PT 96) with a VP8 descriptor: 15-bit picture ID, TL0PICIDX, TID."""
    import struct

    header = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, ssrc)
    descriptor = bytes([0x90, 0xE0, 0x80 | (picture_id >> 8), picture_id & 0xFF, tl0, 0x00])
    vp8 = bytes([0x00 if key else 0x01, 0, 0, 0x9D, 0x01, 0x2A])
    return header + descriptor + vp8


def forwarded_ids(out: bytes | None) -> tuple[int, int]:
    from rtckit.sfu.rtp import parse_rtp_header, vp8_ids

    assert out is not None
    header = parse_rtp_header(out)
    ids = vp8_ids(out[header.payload_offset : header.payload_end])
    assert ids is not None
    return ids.picture_id, ids.tl0picidx


def test_vp8_picture_ids_continue_across_a_switch() -> None:
    from rtckit.sfu.forward import OutputParameters, StreamRewriter
    from rtckit.sfu.rtp import parse_rtp_header

    params = OutputParameters(
        ssrc=9,
        payload_types={96: 100},
        clock_rate=90000,
        is_video=True,
        vp8_payload_types=frozenset({96}),
    )
    rewriter = StreamRewriter(params)
    rewriter.switch(1)

    def send(data: bytes, *, key: bool, now: float) -> bytes | None:
        return rewriter.rewrite(data, parse_rtp_header(data), now, keyframe=key)

    # the first segment keeps the publisher's numbers (0x7FFE wraps to 0)
    first = [vp8_packet(1, 10 + i, 0x7FFE + i, 200 + i, key=i == 0) for i in range(3)]
    assert [forwarded_ids(send(p, key=i == 0, now=0)) for i, p in enumerate(first)] == [
        (0x7FFE, 200),
        (0x7FFF, 201),
        (0, 202),
    ]
    # another layer (own numbering) from its keyframe: the numbers go on from the last ones
    rewriter.switch(2)
    assert send(vp8_packet(2, 500, 40, 9, key=False), key=False, now=0.1) is None
    second = [vp8_packet(2, 501 + i, 41 + i, 10 + i, key=i == 0) for i in range(3)]
    assert [forwarded_ids(send(p, key=i == 0, now=0.1)) for i, p in enumerate(second)] == [
        (1, 203),
        (2, 204),
        (3, 205),
    ]
    # and back: continuous again
    rewriter.switch(1)
    back = vp8_packet(1, 13, 3, 203, key=True)
    assert forwarded_ids(send(back, key=True, now=0.2)) == (4, 206)


def test_vp8_ids_of_descriptors_without_them() -> None:
    from rtckit.sfu.rtp import vp8_ids

    assert vp8_ids(b"") is None
    assert vp8_ids(bytes([0x10, 0x00])) is None  # no X bit
    assert vp8_ids(bytes([0x90, 0x80])) is None  # I bit, picture ID cut off
    assert vp8_ids(bytes([0x90, 0x80, 0x80])) is None  # 15-bit picture ID cut off
    assert vp8_ids(bytes([0x90, 0x80, 0x05, 0x00])) == (5, 7, 2, 0, -1)
