"""Simulcast lines in SDP (rtckit.peer.simulcast): read from a remote offer, written to ours."""

from __future__ import annotations

from rtckit.peer.simulcast import MAX_LAYERS, add_simulcast_recv, simulcast_send_layers

# the video m-line of Chromium's offer for rtckit.js's three layers (trimmed)
OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=sendrecv",
        "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=mid:1",
        "a=rtpmap:96 VP8/90000",
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=simulcast:send q;h;f",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=sendrecv",
        "a=mid:2",
        "",
    ]
)

ANSWER = "\r\n".join(
    [
        "v=0",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=mid:1",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=recvonly",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:2",
        "a=recvonly",
        "",
    ]
)


def test_layers_of_a_browser_offer_in_simulcast_order() -> None:
    assert simulcast_send_layers(OFFER) == {"1": ("q", "h", "f")}
    assert simulcast_send_layers(OFFER.replace("\r\n", "\n")) == {"1": ("q", "h", "f")}


def test_paused_and_alternative_layers_count_by_their_first_rid() -> None:
    sdp = OFFER.replace("a=simulcast:send q;h;f", "a=simulcast:send ~q;h,x;f")
    assert simulcast_send_layers(sdp) == {"1": ("q", "h", "f")}


def test_no_simulcast_without_rid_lines_or_with_one_layer() -> None:
    assert simulcast_send_layers(OFFER.replace("a=rid:", "a=x-rid:")) == {}
    one = OFFER.replace("a=simulcast:send q;h;f", "a=simulcast:send q")
    assert simulcast_send_layers(one) == {}
    receiving = OFFER.replace(" send", " recv")
    assert simulcast_send_layers(receiving) == {}


def test_hostile_rids_and_endless_lists_are_not_simulcast() -> None:
    bad = OFFER.replace("q;h;f", "q;h;f" + "%0a").replace("a=rid:f send", "a=rid:f%0a send")
    assert simulcast_send_layers(bad) == {}
    rids = [f"r{i}" for i in range(1000)]
    lines = "\r\n".join(f"a=rid:{r} send" for r in rids)
    endless = OFFER.replace(
        "a=simulcast:send q;h;f", lines + "\r\na=simulcast:send " + ";".join(rids)
    )
    assert simulcast_send_layers(endless) == {}
    at_most = OFFER.replace(
        "a=simulcast:send q;h;f", lines + "\r\na=simulcast:send " + ";".join(rids[:MAX_LAYERS])
    )
    assert simulcast_send_layers(at_most) == {"1": tuple(rids[:MAX_LAYERS])}


def test_answer_receives_the_layers_after_its_mid_line() -> None:
    answer = add_simulcast_recv(ANSWER, {"1": ("q", "h", "f")})
    lines = answer.split("\r\n")
    at = lines.index("a=mid:1")
    assert lines[at + 1 : at + 5] == [
        "a=rid:q recv",
        "a=rid:h recv",
        "a=rid:f recv",
        "a=simulcast:recv q;h;f",
    ]
    assert answer.endswith("\r\n")
    assert answer.count("a=simulcast") == 1  # not on the audio m-line
    assert add_simulcast_recv(answer, {"1": ("q", "h", "f")}) == answer  # once only


def test_nothing_added_to_a_sending_m_line_or_without_layers() -> None:
    assert add_simulcast_recv(ANSWER, {}) == ANSWER
    sending = ANSWER.replace("a=recvonly", "a=sendonly")
    assert add_simulcast_recv(sending, {"1": ("q", "h")}) == sending
    assert add_simulcast_recv(ANSWER, {"7": ("q", "h")}) == ANSWER
