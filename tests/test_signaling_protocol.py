"""The signaling wire protocol: message classes and the strict JSON codec (synchronous)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtckit.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, SignalingError
from rtckit.signaling.protocol import (
    DEFAULT_MAX_SIZE,
    MESSAGE_TYPES,
    Ack,
    Answer,
    AppMessage,
    Bye,
    Candidate,
    EndOfCandidates,
    Error,
    ErrorCode,
    Hello,
    Join,
    Message,
    Offer,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    Ping,
    Pong,
    Restart,
    Resume,
    Resumed,
    Welcome,
    as_dict,
    decode,
    encode,
    encode_relayed,
    json_depth,
    json_size,
)

SAMPLES: list[Message] = [
    Hello(),
    Hello(version=1, agent="rtckit-py/1"),
    Join(room="lobby"),
    Join(room="lobby", token="a.b.c", metadata={"name": "Ada"}, peer_id="sfu"),
    Welcome(
        room="lobby",
        peer_id="p1",
        identity="ada",
        peers=(PeerInfo(id="p0", identity="bob", metadata={"x": [1]}, permissions=("publish",)),),
        topology="sfu",
        ice_servers=[{"urls": ["stun:127.0.0.1:3478"]}],
        permissions=("publish", "subscribe"),
        resume_token="tok",
        resume_window=6.0,
        heartbeat_interval=2.0,
    ),
    Resume(resume_token="tok", ack=17),
    Resumed(room="lobby", peer_id="p1", ack=3),
    PeerJoined(peer=PeerInfo(id="p2"), seq=1),
    PeerLeft(peer_id="p2", reason="bye", seq=2),
    Offer(to="p2", sdp="v=0\r\n", seq=1),
    Offer(to="p2", sender="p1", sdp="v=0\r\n", session="publish", seq=9),
    Answer(to="p1", sdp="v=0\r\n", seq=4),
    Candidate(to="p2", candidate="candidate:1 1 udp 1 10.0.0.1 9 typ host", sdp_mid="0"),
    Candidate(to="p2", candidate="c", sdp_mline_index=0, seq=5),
    EndOfCandidates(to="p2", seq=6),
    Restart(to="p2", session="s", seq=7),
    AppMessage(to=None, payload={"chat": "hé ☃"}, seq=8),
    AppMessage(to="p2", sender="p1", payload=[1, 2.5, None, True, "x"], seq=8),
    AppMessage(to="p2", payload=None, seq=1),
    Error(code="unknown_peer", message="no peer", ref=3, seq=2),
    Error(code="bad_json", message="not JSON"),
    Bye(),
    Bye(reason="done"),
    Ping(nonce=1),
    Pong(),
    Ack(ack=0),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    text = encode(message)
    assert decode(text) == message
    assert decode(text.encode()) == message
    assert json.loads(text)["type"] == message.type


def test_every_type_has_a_sample() -> None:
    assert {m.type for m in SAMPLES} == set(MESSAGE_TYPES)


def test_wire_names() -> None:
    wire = as_dict(Offer(to="b", sender="a", sdp="x", seq=3))
    assert wire == {"type": "offer", "to": "b", "from": "a", "sdp": "x", "seq": 3}
    assert "sender" not in wire
    # optional fields are omitted, and accepted as null
    assert decode('{"type":"bye","reason":null}') == Bye()
    assert encode(Bye()) == '{"type":"bye"}'


def test_null_payload_is_the_same_as_no_payload() -> None:
    assert decode('{"type":"app","to":"b","seq":1}') == AppMessage(to="b", seq=1)
    assert decode('{"type":"app","payload":null}') == AppMessage()


def _code(data: Any, **kwargs: Any) -> str | int | None:
    with pytest.raises(RemoteProtocolError) as info:  # what a peer sent: a remote error
        decode(data, **kwargs)
    assert isinstance(info.value, SignalingError)
    assert isinstance(info.value, ValueError)
    return info.value.code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("", ErrorCode.BAD_JSON),
        ("not json", ErrorCode.BAD_JSON),
        ("{", ErrorCode.BAD_JSON),
        ('{"type":"ping"', ErrorCode.BAD_JSON),
        ('{"type":"ping"} trailing', ErrorCode.BAD_JSON),
        ('{"type":"ping","nonce":NaN}', ErrorCode.BAD_JSON),
        ('{"type":"ping","nonce":Infinity}', ErrorCode.BAD_JSON),
        ('{"type":"ping","type":"pong"}', ErrorCode.BAD_JSON),
        ('{"type":"ping","nonce":' + "9" * 5000 + "}", ErrorCode.BAD_JSON),
        (b"\xff\xfe", ErrorCode.BAD_ENCODING),
        ('{"type":"app","payload":"é"}'.encode()[:-3], ErrorCode.BAD_ENCODING),  # truncated
        (b'{"type":"app","payload":"\xe2\x82"}', ErrorCode.BAD_ENCODING),
        ('{"type":"app","to":"\ud800","payload":1}', ErrorCode.BAD_ENCODING),
        ("[" * 100_000, ErrorCode.TOO_LARGE),
        ("x" * (DEFAULT_MAX_SIZE + 1), ErrorCode.TOO_LARGE),
        ("é" * (DEFAULT_MAX_SIZE // 2 + 1), ErrorCode.TOO_LARGE),  # chars fit, bytes do not
        ("[" * 5000 + "]" * 5000, ErrorCode.TOO_DEEP),
        ('{"type":"app","payload":' + "[" * 17 + "]" * 17 + "}", ErrorCode.TOO_DEEP),
        (
            '{"type":"join","room":"r","metadata":' + '{"a":' * 17 + "1" + "}" * 18,
            ErrorCode.TOO_DEEP,
        ),
        ("[]", ErrorCode.BAD_MESSAGE),
        ('"hello"', ErrorCode.BAD_MESSAGE),
        ("42", ErrorCode.BAD_MESSAGE),
        ("null", ErrorCode.BAD_MESSAGE),
        ("{}", ErrorCode.BAD_MESSAGE),
        ('{"type":1}', ErrorCode.BAD_MESSAGE),
        ('{"type":null}', ErrorCode.BAD_MESSAGE),
        ('{"type":"nope"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"Offer"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"offer","sdp":"x"}', ErrorCode.BAD_MESSAGE),  # missing to
        ('{"type":"offer","to":"b"}', ErrorCode.BAD_MESSAGE),  # missing sdp
        ('{"type":"offer","to":"b","sdp":"x","extra":1}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":"b","sdp":1}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":"","sdp":"x"}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":"' + "b" * 129 + '","sdp":"x"}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":["b"],"sdp":"x"}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":"b","sdp":"x","seq":-1}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":"b","sdp":"x","seq":1.0}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":"b","sdp":"x","seq":true}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":"b","sdp":"x","seq":9007199254740992}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":"b","sdp":"x","seq":"1"}', ErrorCode.BAD_MESSAGE),
        ('{"type":"hello"}', ErrorCode.BAD_MESSAGE),
        ('{"type":"hello","version":"1"}', ErrorCode.BAD_MESSAGE),
        ('{"type":"join","room":"r","metadata":[1]}', ErrorCode.BAD_MESSAGE),
        ('{"type":"ack"}', ErrorCode.BAD_MESSAGE),
        (
            '{"type":"candidate","to":"b","candidate":"c","sdp_mline_index":-1}',
            ErrorCode.BAD_MESSAGE,
        ),
        ('{"type":"welcome","room":"r"}', ErrorCode.BAD_MESSAGE),
        ('{"type":"peer-joined","peer":{"id":"x","bogus":1}}', ErrorCode.BAD_MESSAGE),
        ('{"type":"peer-joined","peer":"x"}', ErrorCode.BAD_MESSAGE),
        ('{"type":"error","code":"x","message":"m","ref":"1"}', ErrorCode.BAD_MESSAGE),
    ],
)
def test_bad_input(data: str | bytes, code: ErrorCode) -> None:
    assert _code(data) == code


def test_decode_refuses_non_text() -> None:
    assert _code(12) == ErrorCode.BAD_MESSAGE


def test_limits_are_parameters() -> None:
    text = encode(AppMessage(to="b", payload="x" * 100, seq=1))
    assert _code(text, max_size=50) == ErrorCode.TOO_LARGE
    deep = encode(AppMessage(to="b", payload=[[[1]]], seq=1))
    assert _code(deep, max_depth=2) == ErrorCode.TOO_DEEP
    assert decode(deep, max_depth=3) == AppMessage(to="b", payload=[[[1]]], seq=1)


def test_json_depth() -> None:
    assert json_depth(1) == 0
    assert json_depth([]) == 1
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth([[[[[[[[[[]]]]]]]]]]) == 10


def test_encode_refuses_what_decode_would_refuse() -> None:
    # what rtckit is asked to send: the caller's misuse, a local error (still a ProtocolError)
    for payload in (float("nan"), object()):
        with pytest.raises(LocalProtocolError) as info:
            encode(AppMessage(to="b", payload=payload))
        assert isinstance(info.value, ProtocolError)
        assert not isinstance(info.value, RemoteProtocolError)
        assert info.value.code == ErrorCode.BAD_MESSAGE
    with pytest.raises(LocalProtocolError):
        encode_relayed(AppMessage(payload={1, 2}), "a")
    with pytest.raises(LocalProtocolError):
        json_size({"a": float("inf")})


# --- property and fuzz tests -----------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ids = st.text(min_size=1, max_size=16)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
@settings(max_examples=400, deadline=None)
def test_decode_never_raises_anything_but_protocol_error(data: str | bytes) -> None:
    code: object = None
    try:
        message = decode(data)
    except RemoteProtocolError as exc:
        code = exc.code
    else:
        assert isinstance(message, Message)
        return
    assert code in set(ErrorCode)


@given(
    st.builds(
        AppMessage,
        to=st.none() | ids,
        sender=st.none() | ids,
        payload=json_values,
        seq=st.none() | st.integers(0, 2**53 - 1),
    )
    | st.builds(Offer, to=ids, sdp=st.text(max_size=50), session=st.none() | ids)
    | st.builds(
        Candidate,
        to=ids,
        candidate=st.text(max_size=30),
        sdp_mid=st.none() | st.text(max_size=3),
        sdp_mline_index=st.none() | st.integers(0, 10),
    )
    | st.builds(
        Join,
        room=ids,
        token=st.none() | ids,
        metadata=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    )
    | st.builds(PeerLeft, peer_id=ids, reason=st.none() | st.text(max_size=10))
)
@settings(max_examples=300, deadline=None)
def test_round_trip_property(message: Message) -> None:
    assert decode(encode(message)) == message


@given(
    st.sampled_from(sorted(MESSAGE_TYPES)),
    st.dictionaries(
        st.sampled_from(
            [
                "to",
                "from",
                "sdp",
                "seq",
                "room",
                "payload",
                "version",
                "peer",
                "ack",
                "code",
                "message",
                "peers",
                "candidate",
                "x",
            ]
        ),
        json_values,
        max_size=6,
    ),
)
@settings(max_examples=400, deadline=None)
def test_random_objects_of_every_type(kind: str, fields: dict[str, Any]) -> None:
    try:
        message = decode(json.dumps({"type": kind, **fields}))
    except ProtocolError as exc:
        error: ProtocolError | None = exc
    else:
        error = None
        assert encode(message)  # whatever decodes, encodes
    assert error is None or error.code in set(ErrorCode)


def test_bounded_fuzz_loop_over_mutated_messages() -> None:
    rng = random.Random(1234)
    corpus = [encode(m).encode() for m in SAMPLES]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(20_000):
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = bytes([rng.choice(b'{}[]",:0123456789tfn\\e\xc3\xa9 ')])
            elif op == 2:
                del data[pos : pos + rng.randint(1, 8)]
            else:
                data = data[:pos]
        try:
            decode(bytes(data))
        except ProtocolError:
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
    assert outcomes["error"] > 1000
    assert outcomes["ok"] > 10


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_too_deep_on_every_python(opener: str) -> None:
    """Depth is checked before json parses, so Python 3.11-3.13's recursion limits never decide."""
    with pytest.raises(ProtocolError) as info:
        decode(opener * 1000)
    assert info.value.code == ErrorCode.TOO_DEEP


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    message = decode('{"type":"app","payload":"' + "[" * 500 + '","seq":1}')
    assert isinstance(message, AppMessage)
