"""Pure tests of rtckit.sfu.rtp and rtckit.sfu.forward (bytes in, bytes out)."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import RtcpPacket, RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from rtckit.errors import ConfigurationError
from rtckit.sfu.forward import (
    BandwidthAggregator,
    KeyframeRequestLimiter,
    LossTracker,
    OutputParameters,
    PacketCache,
    ReceptionStatistics,
    StreamRewriter,
)
from rtckit.sfu.rtp import (
    ExtensionRemap,
    RtcpBye,
    RtcpFir,
    RtcpNack,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpUnknown,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sr,
    h264_is_keyframe,
    is_keyframe,
    is_rtcp,
    iter_extensions,
    parse_rtcp,
    parse_rtp_header,
    rewrite_abs_send_time,
    unwrap_rtx,
    vp8_is_keyframe,
    wrap_rtx,
)


def make_packet(
    *,
    seq: int,
    ts: int,
    ssrc: int = 0x1111,
    pt: int = 96,
    marker: bool = False,
    payload: bytes = b"\x10\x00\x01\x02",
    extensions: bytes | None = None,
    profile: int = 0xBEDE,
    csrcs: tuple[int, ...] = (),
    padding: int = 0,
) -> bytes:
    first = 0x80 | len(csrcs)
    if extensions is not None:
        first |= 0x10
    if padding:
        first |= 0x20
    data = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if extensions is not None:
        ext = extensions + bytes(-len(extensions) % 4)
        data += struct.pack("!HH", profile, len(ext) // 4) + ext
    data += payload
    if padding:
        data += bytes(padding - 1) + bytes([padding])
    return data


def params(**kw: object) -> OutputParameters:
    base: dict[str, object] = {
        "ssrc": 0xABCDEF01,
        "payload_types": {96: 100},
        "clock_rate": 90000,
        "is_video": False,
        "initial_sequence_number": 1000,
        "initial_timestamp": 5000,
    }
    base.update(kw)
    return OutputParameters(**base)  # type: ignore[arg-type]


# --- RTP header ---------------------------------------------------------------------------


def test_parse_header_with_csrc_extension_padding() -> None:
    ext = bytes([0x10, 0xAA, 0x22, 1, 2, 3])  # id1 len1, id2 len3
    data = make_packet(
        seq=7, ts=9, csrcs=(1, 2), extensions=ext, padding=3, marker=True, payload=b"xyz"
    )
    h = parse_rtp_header(data)
    assert (h.marker, h.payload_type, h.sequence_number, h.timestamp, h.ssrc) == (
        True,
        96,
        7,
        9,
        0x1111,
    )
    assert data[h.payload_offset : h.payload_end] == b"xyz"
    assert list(iter_extensions(data, h)) == [
        (1, h.extension_offset + 5, 1),
        (2, h.extension_offset + 7, 3),
    ]
    # agrees with aiortc's own parser
    ref = RtpPacket.parse(data)
    assert ref.payload == b"xyz"
    assert ref.csrc == [1, 2]


def test_parse_header_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="shorter"):
        parse_rtp_header(b"\x80\x60")
    with pytest.raises(ValueError, match="version"):
        parse_rtp_header(bytes(12))
    with pytest.raises(ValueError, match="extension"):
        parse_rtp_header(b"\x90" + bytes(11))


def test_two_byte_extensions() -> None:
    ext = bytes([20, 2, 0xAB, 0xCD, 0, 3, 0])  # id20 len2, padding, id3 len0
    data = make_packet(seq=1, ts=1, extensions=ext, profile=0x1000)
    h = parse_rtp_header(data)
    found = [(i, length) for i, _, length in iter_extensions(data, h)]
    assert found == [(20, 2), (3, 0)]
    buf = bytearray(data)
    ExtensionRemap(ids={20: 5}).apply(buf, h)
    assert [(i, length) for i, _, length in iter_extensions(buf, h)] == [(5, 2)]


def test_extension_remap_and_strip_one_byte() -> None:
    ext = bytes([0x10, 0xAA, 0x32, 1, 2, 3, 0x40, 0x77])  # id1 l1, id3 l3, id4 l1
    data = make_packet(seq=1, ts=1, extensions=ext, payload=b"PAYLOAD")
    h = parse_rtp_header(data)
    buf = bytearray(data)
    remap = ExtensionRemap.by_uri(
        {"mid": 1, "abs": 3, "unknown": 4}, {"mid": 9, "abs": 3, "level": 2}
    )
    assert remap.ids == {1: 9, 3: 3}
    assert remap.key == frozenset({(1, 9), (3, 3)})
    remap.apply(buf, h)
    got = {i: bytes(buf[o : o + n]) for i, o, n in iter_extensions(buf, h)}
    assert got == {9: b"\xaa", 3: b"\x01\x02\x03"}
    assert len(buf) == len(data)
    assert buf[h.payload_offset :] == b"PAYLOAD"
    # aiortc still parses it (the stripped element became padding)
    assert RtpPacket.parse(bytes(buf)).payload == b"PAYLOAD"
    # an id the one-byte form cannot carry is stripped
    buf2 = bytearray(data)
    ExtensionRemap(ids={1: 15, 3: 3}).apply(buf2, h)
    assert [i for i, _, _ in iter_extensions(buf2, h)] == [3]


def test_abs_send_time_rewrite() -> None:
    data = make_packet(seq=1, ts=1, extensions=bytes([0x32, 0, 0, 0]))
    h = parse_rtp_header(data)
    buf = bytearray(data)
    assert rewrite_abs_send_time(buf, h, 3, 0x0123456789ABCDEF)
    assert buf[h.extension_offset + 5 : h.extension_offset + 8] == (
        ((0x0123456789ABCDEF >> 14) & 0xFFFFFF).to_bytes(3, "big")
    )
    assert not rewrite_abs_send_time(buf, h, 4, 0)


def test_rtx_roundtrip() -> None:
    data = make_packet(seq=4242, ts=77, payload=b"media", padding=2, marker=True)
    h = parse_rtp_header(data)
    rtx = wrap_rtx(data, h, payload_type=97, sequence_number=9, ssrc=0x2222)
    rh = parse_rtp_header(rtx)
    assert (rh.payload_type, rh.sequence_number, rh.ssrc, rh.marker) == (97, 9, 0x2222, True)
    assert rtx[rh.payload_offset : rh.payload_end] == b"\x10\x92media"
    back = unwrap_rtx(rtx, rh, payload_type=96, ssrc=0x1111)
    assert back == make_packet(seq=4242, ts=77, payload=b"media", marker=True)


def test_is_rtcp() -> None:
    assert is_rtcp(build_pli(1, 2))
    assert not is_rtcp(make_packet(seq=1, ts=1))


# --- keyframes ----------------------------------------------------------------------------


def test_vp8_keyframe_detection() -> None:
    # S=1 PID=0 no X, P=0 -> key
    assert vp8_is_keyframe(bytes([0x10, 0x00]))
    assert not vp8_is_keyframe(bytes([0x10, 0x01]))  # P=1: interframe
    assert not vp8_is_keyframe(bytes([0x00, 0x00]))  # not start of partition
    assert not vp8_is_keyframe(bytes([0x11, 0x00]))  # PID != 0
    # X=1, I=1 with 15-bit picture id, L=1, T=1: descriptor is 6 bytes
    assert vp8_is_keyframe(bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x40, 0x00]))
    assert not vp8_is_keyframe(bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x40, 0x01]))
    # X=1, I=1 with 7-bit picture id
    assert vp8_is_keyframe(bytes([0x90, 0x80, 0x05, 0x00]))
    assert not vp8_is_keyframe(b"")
    assert not vp8_is_keyframe(bytes([0x90, 0x80]))


def test_h264_keyframe_detection() -> None:
    assert h264_is_keyframe(bytes([0x65, 0]))  # IDR
    assert h264_is_keyframe(bytes([0x67, 0]))  # SPS
    assert not h264_is_keyframe(bytes([0x41, 0]))  # non-IDR slice
    stap = bytes([0x78]) + struct.pack("!H", 2) + b"\x67\x00" + struct.pack("!H", 2) + b"\x68\x00"
    assert h264_is_keyframe(stap)
    stap_p = bytes([0x78]) + struct.pack("!H", 2) + b"\x41\x00"
    assert not h264_is_keyframe(stap_p)
    assert h264_is_keyframe(bytes([0x7C, 0x85, 0]))  # FU-A start, IDR
    assert not h264_is_keyframe(bytes([0x7C, 0x05, 0]))  # FU-A continuation
    assert not h264_is_keyframe(bytes([0x7C, 0x81, 0]))  # FU-A start, non-IDR
    assert is_keyframe("opus", b"anything")
    assert is_keyframe("VP8", bytes([0x10, 0x00]))
    assert not is_keyframe("H264", bytes([0x41]))


# --- RTCP ---------------------------------------------------------------------------------


def test_rtcp_roundtrip_and_aiortc_agrees() -> None:
    block = RtcpReportBlock(5, 10, -3, 70000, 12, 34, 56)
    sr = RtcpSenderReport(1, 0x1122334455667788, 99, 10, 1000, (block,))
    rr = RtcpReceiverReport(2, (block,))
    compound = (
        build_sr(sr)
        + build_rr(rr)
        + build_pli(3, 4)
        + build_fir(3, 4, 7)
        + build_nack(3, 4, [10, 11, 26, 27, 65535, 0])
        + build_remb(3, 1_500_000, [4, 5])
    )
    parsed = parse_rtcp(compound)
    assert parsed[0] == sr
    assert parsed[1] == rr
    assert parsed[2] == RtcpPli(3, 4)
    assert parsed[3] == RtcpFir(3, ((4, 7),))
    nack = parsed[4]
    assert isinstance(nack, RtcpNack)
    assert set(nack.lost) == {10, 11, 26, 27, 65535, 0}
    remb = parsed[5]
    assert isinstance(remb, RtcpRemb)
    assert remb.ssrcs == (4, 5)
    assert 1_490_000 <= remb.bitrate <= 1_500_000
    # aiortc parses the same bytes
    ref = RtcpPacket.parse(compound)
    assert len(ref) == 6
    assert ref[0].sender_info.rtp_timestamp == 99  # type: ignore[union-attr]
    ref_lost = ref[4].lost  # type: ignore[union-attr]
    assert sorted(s & 0xFFFF for s in ref_lost) == sorted(nack.lost)


def test_rtcp_unknown_and_bye() -> None:
    sdes = bytes([0x81, 202, 0, 1]) + b"\x00\x00\x00\x01"
    bye = bytes([0x81, 203, 0, 1]) + struct.pack("!I", 42)
    parsed = parse_rtcp(sdes + bye)
    assert isinstance(parsed[0], RtcpUnknown)
    assert parsed[1] == RtcpBye((42,))
    with pytest.raises(ValueError, match="length"):
        parse_rtcp(bytes([0x80, 200, 0, 9]))


# --- StreamRewriter -----------------------------------------------------------------------


def test_rewriter_rewrites_header() -> None:
    rw = StreamRewriter(params())
    data = make_packet(seq=300, ts=9000, marker=True)
    out = rw.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True)
    assert out is not None
    h = parse_rtp_header(out)
    assert (h.payload_type, h.sequence_number, h.timestamp, h.ssrc, h.marker) == (
        100,
        1000,
        5000,
        0xABCDEF01,
        True,
    )
    assert out[12:] == data[12:]
    assert rw.packets_sent == 1
    assert rw.octets_sent == 4


def test_rewriter_drops_unmapped_payload_type() -> None:
    rw = StreamRewriter(params())
    data = make_packet(seq=1, ts=1, pt=111)
    assert rw.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True) is None
    assert rw.dropped == 1


@given(start=st.integers(0, 0xFFFF), count=st.integers(1, 400))
def test_rewriter_sequence_wraps(start: int, count: int) -> None:
    rw = StreamRewriter(params(initial_sequence_number=0xFFF0))
    outs = []
    for i in range(count):
        data = make_packet(seq=(start + i) & 0xFFFF, ts=i * 10)
        out = rw.rewrite(data, parse_rtp_header(data), i * 0.01, keyframe=True)
        assert out is not None
        outs.append(parse_rtp_header(out).sequence_number)
    assert outs == [(0xFFF0 + i) & 0xFFFF for i in range(count)]


def test_rewriter_continuity_across_source_switch() -> None:
    rw = StreamRewriter(params(is_video=True))
    for i in range(5):
        data = make_packet(seq=100 + i, ts=3000 * i)
        assert rw.rewrite(data, parse_rtp_header(data), i / 30, keyframe=i == 0) is not None
    last_seq = rw.last_sequence_number
    assert last_seq == 1004
    # a packet of an unannounced source is dropped
    stray = make_packet(seq=7, ts=7, ssrc=0x4444)
    assert rw.rewrite(stray, parse_rtp_header(stray), 0.5, keyframe=True) is None
    # new publisher: new SSRC, unrelated seq/ts; a delta frame first is dropped
    rw.switch(0x9999)
    delta = make_packet(seq=40000, ts=123456789, ssrc=0x9999)
    assert rw.rewrite(delta, parse_rtp_header(delta), 1.0, keyframe=False) is None
    assert rw.waiting_keyframe
    key = make_packet(seq=40001, ts=123456789, ssrc=0x9999)
    out = rw.rewrite(key, parse_rtp_header(key), 1.0 + 4 / 30, keyframe=True)
    assert out is not None
    h = parse_rtp_header(out)
    assert h.sequence_number == 1005
    # gap: last packet at 4/30 s, new one at 1 + 4/30 s -> 90000 ticks later
    assert h.timestamp == (5000 + 4 * 3000 + 90000) & 0xFFFFFFFF
    # a late packet of the old source is not forwarded
    old = make_packet(seq=105, ts=15000)
    assert rw.rewrite(old, parse_rtp_header(old), 1.2, keyframe=False) is None
    # a packet of the new source from before its segment start is not forwarded either
    early = make_packet(seq=39999, ts=123456789 - 3000, ssrc=0x9999)
    assert rw.rewrite(early, parse_rtp_header(early), 1.2, keyframe=True) is None


def test_rewriter_never_starts_a_segment_at_a_retransmission() -> None:
    """An RTX copy of an old keyframe packet, sent unasked, must not start a subscriber's stream.

    libwebrtc re-sends old packets over RTX as padding: a subscription waiting for a keyframe
    that started at such a copy would miss the packets after it (they went by before it).
    """
    for is_video in (True, False):
        rw = StreamRewriter(params(is_video=is_video))
        rw.switch(0x1111)
        old_key = make_packet(seq=200, ts=9000)
        assert (
            rw.rewrite(old_key, parse_rtp_header(old_key), 0.0, keyframe=True, retransmission=True)
            is None
        )
        assert rw.last_sequence_number is None
        assert rw.waiting_keyframe is is_video
        key = make_packet(seq=260, ts=12000)
        out = rw.rewrite(key, parse_rtp_header(key), 0.1, keyframe=True)
        assert out is not None
        assert parse_rtp_header(out).sequence_number == 1000
        # inside the segment, a retransmission is forwarded (it repairs a loss) ...
        lost = make_packet(seq=261, ts=12000)
        out = rw.rewrite(lost, parse_rtp_header(lost), 0.2, keyframe=False, retransmission=True)
        assert out is not None
        assert parse_rtp_header(out).sequence_number == 1001
        # ... and one from before the segment is not
        assert (
            rw.rewrite(old_key, parse_rtp_header(old_key), 0.2, keyframe=True, retransmission=True)
            is None
        )


def test_rewriter_pause_resume_keeps_sequence_continuous() -> None:
    rw = StreamRewriter(params(clock_rate=48000))
    data = make_packet(seq=10, ts=960)
    rw.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True)
    rw.pause()
    assert rw.paused
    data = make_packet(seq=11, ts=1920)
    assert rw.rewrite(data, parse_rtp_header(data), 0.02, keyframe=True) is None
    rw.resume()
    data = make_packet(seq=60, ts=960 * 51)
    out = rw.rewrite(data, parse_rtp_header(data), 1.0, keyframe=True)
    assert out is not None
    h = parse_rtp_header(out)
    assert h.sequence_number == 1001
    assert h.timestamp == 5000 + 48000


def test_rewriter_late_packet_same_segment_maps_to_same_number() -> None:
    rw = StreamRewriter(params())
    for seq in (10, 12, 11):
        data = make_packet(seq=seq, ts=seq)
        out = rw.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True)
        assert out is not None
        assert parse_rtp_header(out).sequence_number == 1000 + seq - 10
    assert rw.last_sequence_number == 1002


def test_rewriter_nack_lookup_and_retransmission() -> None:
    rw = StreamRewriter(params(rtx_ssrc=0x7777, rtx_payload_type=101))
    cache = PacketCache(8)
    for seq in range(65530, 65536 + 4):
        data = make_packet(seq=seq & 0xFFFF, ts=seq, payload=bytes([seq & 0xFF]) * 3)
        cache.put(0x1111, seq & 0xFFFF, data)
        rw.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True)
    # outgoing 1007 is incoming (65530 + 7) & 0xFFFF = 1
    assert rw.incoming_sequence_number(1007) == (0x1111, 1)
    assert rw.incoming_sequence_number(999) is None  # before the stream began
    assert rw.incoming_sequence_number(1010) is None  # not sent yet
    cached = cache.get(0x1111, 1)
    assert cached is not None
    rtx = rw.retransmission(cached, parse_rtp_header(cached))
    assert rtx is not None
    rh = parse_rtp_header(rtx)
    assert (rh.ssrc, rh.payload_type) == (0x7777, 101)
    assert rtx[rh.payload_offset : rh.payload_offset + 2] == struct.pack("!H", 1007)
    # without RTX nothing can be re-sent (SRTP forbids re-protecting an index)
    plain = StreamRewriter(params())
    data = make_packet(seq=5, ts=5)
    assert plain.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True) is not None
    assert plain.retransmission(data, parse_rtp_header(data)) is None


def test_a_nack_for_the_segment_before_a_switch_is_still_answered() -> None:
    """A simulcast layer switch starts a new segment; packets sent just before it were lost
    on the way and asked for after it: they are re-sent with the numbers they were sent with
    (aiortc's jitter buffer waits for such a hole until 512 packets later)."""
    rw = StreamRewriter(params(rtx_ssrc=0x7777, rtx_payload_type=101))
    old = [make_packet(ssrc=0x1111, seq=seq, ts=seq * 10) for seq in range(100, 110)]
    for data in old:
        assert rw.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True) is not None
    rw.switch(0x2222)  # to another layer, from its next keyframe
    assert rw.incoming_sequence_number(1009) == (0x1111, 109)  # waiting: still the old one
    assert not rw.sent_before_the_segment(1009)
    new = make_packet(ssrc=0x2222, seq=7000, ts=99)
    out = rw.rewrite(new, parse_rtp_header(new), 0.1, keyframe=True)
    assert out is not None
    assert parse_rtp_header(out).sequence_number == 1010
    assert rw.incoming_sequence_number(1010) == (0x2222, 7000)
    assert rw.incoming_sequence_number(1008) == (0x1111, 108)
    assert rw.incoming_sequence_number(999) is None
    assert rw.sent_before_the_segment(1008)
    assert not rw.sent_before_the_segment(1010)
    assert not rw.sent_before_the_segment(999)  # never sent by a kept segment
    rtx = rw.retransmission(old[8], parse_rtp_header(old[8]))
    assert rtx is not None
    rh = parse_rtp_header(rtx)
    assert (rh.ssrc, rh.payload_type) == (0x7777, 101)
    assert rtx[rh.payload_offset : rh.payload_offset + 2] == struct.pack("!H", 1008)
    # only the last PREVIOUS_SEGMENTS segments are kept
    for n in range(StreamRewriter.PREVIOUS_SEGMENTS):
        rw.switch(0x3000 + n)
        data = make_packet(ssrc=0x3000 + n, seq=1, ts=1)
        assert rw.rewrite(data, parse_rtp_header(data), 0.2 + n, keyframe=True) is not None
    assert rw.incoming_sequence_number(1008) is None
    assert rw.retransmission(old[8], parse_rtp_header(old[8])) is None


def test_retransmission_names_the_rtx_of_the_packets_codec() -> None:
    # Two codecs forwarded (a publisher may send either): each has its own RTX payload type.
    rw = StreamRewriter(
        params(
            payload_types={96: 100, 98: 102},
            rtx_ssrc=0x7777,
            rtx_payload_type=101,
            rtx_payload_types={100: 101, 102: 103},
        )
    )
    data = make_packet(pt=98, seq=5, ts=5)
    assert rw.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True) is not None
    rtx = rw.retransmission(data, parse_rtp_header(data))
    assert rtx is not None
    assert parse_rtp_header(rtx).payload_type == 103  # apt=102, not the first codec's RTX
    # a forwarded codec without RTX is not retransmitted
    no_rtx = StreamRewriter(
        params(payload_types={96: 100, 98: 102}, rtx_ssrc=0x7777, rtx_payload_types={100: 101})
    )
    assert no_rtx.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True) is not None
    assert no_rtx.retransmission(data, parse_rtp_header(data)) is None


def test_sender_report_rewrite() -> None:
    rw = StreamRewriter(params())
    assert rw.rewrite_sender_report(RtcpSenderReport(0x1111, 1, 2, 3, 4)) is None
    data = make_packet(seq=1, ts=10_000, payload=b"12345")
    rw.rewrite(data, parse_rtp_header(data), 0.0, keyframe=True)
    sr = rw.rewrite_sender_report(RtcpSenderReport(0x1111, 0xAA, 13_000, 99, 9999))
    assert sr == RtcpSenderReport(0xABCDEF01, 0xAA, 8000, 1, 5)
    assert rw.rewrite_sender_report(RtcpSenderReport(0x2222, 0xAA, 13_000, 99, 9999)) is None


def test_packet_cache() -> None:
    with pytest.raises(ConfigurationError):
        PacketCache(100)
    cache = PacketCache(4)
    for seq in range(6):
        cache.put(1, seq, bytes([seq]))
    assert cache.get(1, 1) is None  # overwritten by 5
    assert cache.get(1, 5) == b"\x05"
    assert cache.get(2, 5) is None
    cache.clear()
    assert cache.get(1, 5) is None


def test_packet_cache_keeps_each_source_apart() -> None:
    """Simulcast layers number their packets on their own: one must not evict another's."""
    cache = PacketCache(4, max_sources=2)
    cache.put(1, 10, b"a")
    cache.put(2, 14, b"b")  # the same slot, another layer
    assert cache.get(1, 10) == b"a"
    assert cache.get(2, 14) == b"b"
    cache.put(3, 1, b"c")  # a third source evicts the oldest
    assert cache.get(1, 10) is None
    assert (cache.get(2, 14), cache.get(3, 1)) == (b"b", b"c")
    with pytest.raises(ConfigurationError):
        PacketCache(4, max_sources=0)


def test_keyframe_limiter_coalesces() -> None:
    limiter = KeyframeRequestLimiter(0.5)
    assert limiter.request(0.0)
    assert not limiter.request(0.1)
    assert not limiter.request(0.2)
    assert limiter.pending
    assert not limiter.poll(0.3)
    assert limiter.poll(0.6)
    assert not limiter.poll(0.7)
    assert (limiter.sent, limiter.coalesced) == (2, 2)
    # a keyframe after a pending request satisfies it
    assert not limiter.request(0.8)
    limiter.keyframe_seen(0.9)
    assert not limiter.poll(2.0)
    assert limiter.request(2.0)
    with pytest.raises(ConfigurationError):
        KeyframeRequestLimiter(-1)


def test_bandwidth_aggregator() -> None:
    agg = BandwidthAggregator(interval=1.0, max_age=5.0)
    assert agg.poll(0.0) is None
    agg.update("a", 2_000_000, 0.0)
    agg.update("b", 800_000, 0.0)
    assert agg.poll(0.1) == 800_000
    agg.update("b", 790_000, 0.2)
    assert agg.poll(0.3) is None  # small change inside the interval
    agg.update("b", 300_000, 0.4)
    assert agg.poll(0.5) == 300_000  # a big drop goes at once
    agg.remove("b")
    assert agg.poll(1.6) == 2_000_000
    assert agg.current(10.0) is None  # stale
    with pytest.raises(ConfigurationError):
        BandwidthAggregator(interval=1, max_age=0)


def test_reception_statistics() -> None:
    stats = ReceptionStatistics(0x1111, 90000)
    assert stats.report_block(0.0) is None
    # 65530..65540 with 65533 and 2 lost, steady 30 fps timing (no jitter)
    seqs = [s for s in range(65530, 65541) if s not in (65533, 65538)]
    for seq in seqs:
        stats.add(seq & 0xFFFF, (seq - 65530) * 3000, (seq - 65530) / 30)
    stats.sender_report(0x0000_1234_5678_0000, 1.0)
    block = stats.report_block(1.5)
    assert block is not None
    assert block.ssrc == 0x1111
    assert block.highest_sequence == 65540  # one wrap: cycles counted
    assert block.packets_lost == 2
    assert block.fraction_lost == (2 << 8) // 11
    assert block.jitter == 0
    assert block.lsr == 0x1234_5678
    assert block.dlsr == 65536 // 2
    # next interval: no loss
    stats.add(5, 11 * 3000, 11 / 30)
    block = stats.report_block(2.0)
    assert block is not None
    assert block.fraction_lost == 0
    assert block.packets_lost == 2


def test_rewriter_strips_unmapped_extension_and_shares_block() -> None:
    remap = ExtensionRemap(ids={3: 3})  # abs-send-time kept as is, mid (1) not forwarded
    a = StreamRewriter(params(extensions=remap))
    b = StreamRewriter(params(extensions=remap, ssrc=0x2222))
    data = make_packet(seq=1, ts=1, extensions=bytes([0x10, ord("0"), 0x32, 1, 2, 3]))
    h = parse_rtp_header(data)
    cache: dict[ExtensionRemap, bytes] = {}
    out_a = a.rewrite(data, h, 0.0, keyframe=True, extension_cache=cache)
    out_b = b.rewrite(data, h, 0.0, keyframe=True, extension_cache=cache)
    assert out_a is not None
    assert out_b is not None
    assert list(cache) == [remap]
    for out in (out_a, out_b):
        got = {i: bytes(out[o : o + n]) for i, o, n in iter_extensions(out, h)}
        assert got == {3: b"\x01\x02\x03"}
    assert parse_rtp_header(out_b).ssrc == 0x2222


def test_loss_tracker() -> None:
    tracker = LossTracker(max_gap=10, window=8)
    assert tracker.add(65534) == ()
    assert tracker.add(65535) == ()
    assert tracker.add(2) == (0, 1)  # across the wrap
    assert tracker.missing == {0, 1}
    assert tracker.add(0) == ()  # retransmission fills the hole
    assert tracker.missing == {1}
    assert tracker.add(2) == ()  # duplicate
    assert tracker.add(500) == ()  # a jump: a restart, not 497 losses
    assert tracker.missing == set()
    for seq in range(501, 530, 2):
        tracker.add(seq)
    assert len(tracker.missing) <= 9
    assert max(tracker.missing) == 528


def test_padding_packet() -> None:
    """An RTP packet of padding only, as aiortc reads it: no payload, the padding counted."""
    from aiortc.rtp import HeaderExtensionsMap, RtpPacket

    from rtckit.sfu.rtp import MAX_PADDING, build_padding

    data = build_padding(
        payload_type=97,
        sequence_number=7,
        timestamp=9,
        ssrc=5,
        size=200,
        abs_send_time=(3, 1 << 40),
    )
    packet = RtpPacket.parse(data, HeaderExtensionsMap())
    assert (packet.payload_type, packet.sequence_number, packet.ssrc) == (97, 7, 5)
    assert packet.payload == b""
    assert packet.padding_size == 200
    header = parse_rtp_header(data)
    assert [found for found, _, _ in iter_extensions(data, header)] == [3]
    with pytest.raises(ValueError):
        build_padding(payload_type=97, sequence_number=7, timestamp=9, ssrc=5, size=MAX_PADDING + 1)
    # the rewriter sends it on the RTX stream, never before the first packet
    rw = StreamRewriter(params(rtx_ssrc=0x7777, rtx_payload_type=101))
    assert rw.padding(100) is None
    first = make_packet(seq=1, ts=1)
    assert rw.rewrite(first, parse_rtp_header(first), 0.0, keyframe=True) is not None
    pad = rw.padding(100)
    assert pad is not None
    assert (parse_rtp_header(pad).ssrc, parse_rtp_header(pad).payload_type) == (0x7777, 101)
    assert StreamRewriter(params()).padding(100) is None  # no RTX: no padding
