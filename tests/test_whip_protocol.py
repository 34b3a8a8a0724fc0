"""The WHIP protocol core (:mod:`rtckit.whip.protocol`): every refusal with its status, bytes in."""

from __future__ import annotations

import json

import pytest

from rtckit.errors import ConfigurationError, RtcKitError, WhipError
from rtckit.whip import protocol as wp
from rtckit.whip.protocol import WhipConfig

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:0123456789abcdef01234567",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=sendonly",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=mid:1",
        "a=sendrecv",
        "a=rtpmap:96 VP8/90000",
        "",
    ]
)


def status_of(call: object, *args: object) -> int:
    assert callable(call)
    with pytest.raises(WhipError) as caught:
        call(*args)
    assert isinstance(caught.value, RtcKitError)
    assert str(caught.value)  # a detail that says why
    return caught.value.status


def test_problem_body_is_rfc9457_json() -> None:
    error = wp.problem(422, "ICE restart is not supported")
    body = json.loads(wp.problem_body(error))
    assert body == {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "ICE restart is not supported",
    }
    assert wp.problem(409, "mesh").title == "Conflict"


def test_content_types() -> None:
    wp.check_content_type("application/sdp", wp.SDP_TYPE)
    wp.check_content_type("Application/SDP; charset=utf-8", wp.SDP_TYPE)
    assert status_of(wp.check_content_type, "text/plain", wp.SDP_TYPE) == 415
    assert status_of(wp.check_content_type, None, wp.SDP_TYPE) == 415
    assert status_of(wp.check_content_type, "application/sdp", wp.TRICKLE_TYPE) == 415


def test_body_limits() -> None:
    assert wp.check_body(b"v=0", 10) == "v=0"
    assert status_of(wp.check_body, b"x" * 11, 10) == 413
    assert status_of(wp.check_body, b"\xff\xfe", 10) == 400


def test_bearer_tokens() -> None:
    assert wp.parse_bearer(None) is None
    assert wp.parse_bearer("Bearer abc.def-ghi_jkl") == "abc.def-ghi_jkl"
    assert wp.parse_bearer("bearer  tok==") == "tok=="
    for bad in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Bearer a\x00b", ""):
        assert status_of(wp.parse_bearer, bad) == 401


def test_if_match_rules() -> None:
    etag = wp.new_etag()
    assert etag.startswith('"')
    assert etag.endswith('"')
    wp.check_if_match(etag, etag)
    wp.check_if_match(f'"other", {etag}', etag)
    assert status_of(wp.check_if_match, None, etag) == 428
    assert status_of(wp.check_if_match, '"other"', etag) == 412
    assert status_of(wp.check_if_match, "*", etag) == 422  # ICE restart: not in place


def test_resource_ids_and_etags_are_unguessable() -> None:
    ids = {wp.new_resource_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 22 and i.replace("-", "").replace("_", "").isalnum() for i in ids)
    assert len({wp.new_etag() for _ in range(200)}) == 200


def test_offer_accepted() -> None:
    summary = wp.parse_offer(OFFER)
    assert summary.kinds == ("audio", "video")
    assert summary.mids == ("0", "1")
    assert summary.ufrag == "abcd"


@pytest.mark.parametrize(
    ("change", "status"),
    [
        (lambda o: "", 400),
        (lambda o: "hello", 400),
        (lambda o: o.replace("o=- 1 2 IN IP4 127.0.0.1\r\n", ""), 400),
        (lambda o: o.replace("s=-", "garbage line"), 400),
        (lambda o: o.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=audio 9"), 400),
        (lambda o: o.replace("a=mid:1\r\n", ""), 400),
        (lambda o: o.split("m=audio")[0], 422),  # nothing to publish
        (lambda o: o.replace("a=sendonly", "a=recvonly"), 422),
        (lambda o: o.replace("a=sendrecv", "a=inactive"), 422),
        (lambda o: o.replace("m=audio", "m=video"), 422),  # two video m-lines
        (lambda o: o + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n", 422),
    ],
)
def test_offer_refused(change: object, status: int) -> None:
    assert callable(change)
    assert status_of(wp.parse_offer, change(OFFER)) == status


CANDIDATE = "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host"


def test_sdp_fragment() -> None:
    fragment = wp.parse_sdp_fragment(
        "a=ice-ufrag:abcd\r\na=ice-pwd:secret\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
        f"a=mid:0\r\na={CANDIDATE}\r\na=end-of-candidates\r\n"
    )
    assert (fragment.ufrag, fragment.pwd, fragment.end_of_candidates) == ("abcd", "secret", True)
    assert fragment.candidates == (
        wp.TrickledCandidate(candidate=CANDIDATE, mid="0", mline_index=0),
    )
    # the candidate's m-line is found by its index when the fragment has no a=mid
    anonymous = wp.parse_sdp_fragment(f"m=audio 9 RTP/AVP 0\na={CANDIDATE}\n")
    assert anonymous.candidates[0].mid is None
    assert anonymous.candidates[0].mline_index == 0
    assert not anonymous.end_of_candidates


def test_sdp_fragment_refused() -> None:
    assert status_of(wp.parse_sdp_fragment, f"a={CANDIDATE}\n") == 400  # before any m-line
    assert status_of(wp.parse_sdp_fragment, "m=audio 9 RTP/AVP 0\nnot sdp\n") == 400
    flood = "m=audio 9 RTP/AVP 0\n" + f"a={CANDIDATE}\n" * 65
    assert status_of(wp.parse_sdp_fragment, flood) == 400


def test_ice_server_links() -> None:
    links = wp.ice_server_links(
        [
            {"urls": "stun:stun.example.org:3478"},
            {
                "urls": ["turn:turn.example.org?transport=udp", "turns:turn.example.org"],
                "username": "1700000000:web",
                "credential": 'pa"ss\\word',
            },
        ]
    )
    assert links == [
        '<stun:stun.example.org:3478>; rel="ice-server"',
        '<turn:turn.example.org?transport=udp>; rel="ice-server"; username="1700000000:web"; '
        'credential="pa\\"ss\\\\word"; credential-type="password"',
        '<turns:turn.example.org>; rel="ice-server"; username="1700000000:web"; '
        'credential="pa\\"ss\\\\word"; credential-type="password"',
    ]
    assert wp.ice_server_links([]) == []
    for bad in (
        {"urls": "stun:a>b"},
        {"urls": "stun:a\r\nSet-Cookie: x"},
        {"urls": "turn:t", "username": "u\r\n", "credential": "p"},
    ):
        with pytest.raises(ConfigurationError):
            wp.ice_server_links([bad])


def test_ice_server_links_round_trip() -> None:
    servers: list[dict[str, object]] = [
        {"urls": ["stun:stun.example.org:3478"]},
        {
            "urls": ["turn:turn.example.org?transport=udp"],
            "username": "1700000000:web",
            "credential": 'pa"ss\\wo;rd, x',
        },
        {"urls": ["turns:turn.example.org"], "username": "u", "credential": "p"},
    ]
    links = wp.ice_server_links(servers)
    assert wp.parse_ice_server_links(links) == servers
    # several links in one field value, other relations skipped, token values, any case
    joined = ", ".join([*links, '<https://example.org/x>; rel="next"'])
    assert wp.parse_ice_server_links([joined]) == servers
    assert wp.parse_ice_server_links(
        ['<stun:a:1>;REL=ice-server , <turn:b>; rel="other ice-server"; username=u']
    ) == [{"urls": ["stun:a:1"]}, {"urls": ["turn:b"]}]  # no credential: none kept
    assert wp.parse_ice_server_links([]) == []
    # a credential type other than password is not usable by an RTCIceServer
    oauth = '<turn:c>; rel="ice-server"; username="u"; credential="t"; credential-type="oauth"'
    assert wp.parse_ice_server_links([oauth]) == [{"urls": ["turn:c"]}]


@pytest.mark.parametrize(
    "value",
    [
        "stun:a; rel=ice-server",
        "<stun:a",
        '<stun:a>; rel="ice-server',
        "<stun:a> rel=ice-server",
        "<stun:a>; =x",
        "<stun:a>; rel=",
        '<stun a>; rel="ice-server"',
    ],
)
def test_malformed_links_are_the_servers_fault(value: str) -> None:
    assert status_of(wp.parse_ice_server_links, [value]) == 502


def test_config_validation() -> None:
    assert WhipConfig().prefix == "/whip"
    for bad in ({"prefix": "whip"}, {"prefix": "/"}, {"max_sessions": 0}, {"connect_timeout": 0}):
        with pytest.raises((ConfigurationError, ValueError)):
            WhipConfig(**bad)


def test_whep_offers_receive() -> None:
    recvonly = OFFER.replace("a=sendonly", "a=recvonly").replace("a=sendrecv", "a=recvonly")
    summary = wp.parse_whep_offer(recvonly)
    assert (summary.kinds, summary.mids, summary.ufrag) == (("audio", "video"), ("0", "1"), "abcd")
    # sendrecv is accepted (nothing is received on it); a WHIP offer is not a WHEP offer
    assert wp.parse_whep_offer(OFFER.replace("a=sendonly", "a=sendrecv")).kinds == (
        "audio",
        "video",
    )
    assert status_of(wp.parse_whep_offer, OFFER) == 422
    assert status_of(wp.parse_offer, recvonly) == 422
    assert status_of(wp.parse_whep_offer, recvonly.replace("m=audio", "m=application")) == 422
    assert status_of(wp.parse_whep_offer, "hello") == 400
    assert status_of(wp.parse_whep_offer, recvonly.replace("a=mid:1", "a=x")) == 400


def test_whep_config() -> None:
    config = wp.WhepConfig()
    assert (config.prefix, config.max_sessions) == ("/whep", 64)
    assert isinstance(config, WhipConfig)  # the same limits, another prefix
    with pytest.raises(ConfigurationError):
        wp.WhepConfig(prefix="whep")
