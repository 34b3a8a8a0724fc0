"""The server's lean relay path: one serialization per relayed message, numbered per recipient.

These tests pin that the fast path sends exactly the bytes the plain codec would
(``encode`` of the stamped, numbered message), that resume resends the same bytes, and that
bad input still gets typed errors.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtckit.errors import ProtocolError
from rtckit.signaling import OpenAuth, SignalingConfig
from rtckit.signaling import protocol as sp
from rtckit.signaling.protocol import (
    RELAYED_TYPES,
    Ack,
    Answer,
    AppMessage,
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
    Relayed,
    Restart,
    Resume,
    encode,
    encode_relayed,
    with_seq,
)
from rtckit.signaling.state import Send, SignalingState

CANDIDATE = "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),  # any code points, lone surrogates included
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ids = st.text(min_size=1, max_size=16)
seqs = st.none() | st.integers(0, 2**53 - 1)
relayed = (
    st.builds(AppMessage, to=st.none() | ids, sender=st.none() | ids, payload=json_values, seq=seqs)
    | st.builds(
        Offer,
        to=ids,
        sender=st.none() | ids,
        sdp=st.text(max_size=50),
        session=st.none() | ids,
        seq=seqs,
    )
    | st.builds(Answer, to=ids, sdp=st.text(max_size=50), session=st.none() | ids, seq=seqs)
    | st.builds(
        Candidate,
        to=ids,
        sender=st.none() | ids,
        candidate=st.text(max_size=30),
        sdp_mid=st.none() | st.text(max_size=3),
        sdp_mline_index=st.none() | st.integers(0, 10),
        session=st.none() | ids,
        seq=seqs,
    )
    | st.builds(EndOfCandidates, to=ids, session=st.none() | ids, seq=seqs)
    | st.builds(Restart, to=ids, sender=st.none() | ids, seq=seqs)
)


# --- protocol helpers ----------------------------------------------------------------------


@given(relayed, ids)
@settings(max_examples=300, deadline=None)
def test_encode_relayed_is_encode_of_the_stamped_message(message: Relayed, sender: str) -> None:
    assert encode_relayed(message, sender) == encode(
        attrs.evolve(message, sender=sender, seq=None)  # type: ignore[misc]
    )


@given(relayed, st.integers(0, 2**53 - 1))
@settings(max_examples=300, deadline=None)
def test_with_seq_is_encode_with_that_seq(message: Relayed, seq: int) -> None:
    bare = attrs.evolve(message, seq=None)  # type: ignore[misc]
    assert with_seq(encode(bare), seq) == encode(attrs.evolve(message, seq=seq))  # type: ignore[misc]


def test_seq_is_the_last_field_of_every_class_that_has_one() -> None:
    classes: list[Any] = list(sp.MESSAGE_TYPES.values())
    with_a_seq = [cls for cls in classes if "seq" in attrs.fields_dict(cls)]
    assert set(RELAYED_TYPES) | {PeerJoined, PeerLeft, Error} <= set(with_a_seq)
    for cls in with_a_seq:
        assert attrs.fields(cls)[-1].name == "seq", cls


def test_server_made_messages_number_like_encode() -> None:
    peer = PeerInfo(id="p1", identity="ann", metadata={"n": "é"}, permissions=("publish",))
    for message in (
        PeerJoined(peer=peer),
        PeerLeft(peer_id="p1", reason="bye"),
        Error(code=ErrorCode.UNDELIVERABLE, message="gone", ref=3),
    ):
        assert with_seq(encode(message), 7) == encode(attrs.evolve(message, seq=7))


def test_relayed_fields_need_no_conversion() -> None:
    # encode_relayed dumps attribute values as they are: true only for these field kinds
    classes: list[Any] = list(RELAYED_TYPES)
    for cls in classes:
        for field in attrs.fields(cls):
            kind, _optional = field.metadata[sp._KIND]
            assert kind in {"id", "str", "int", "json"}, (cls, field.name, kind)


def test_encode_relayed_errors_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError) as info:
        encode_relayed(AppMessage(to="b", payload=float("nan")), "a")
    assert info.value.code == ErrorCode.BAD_MESSAGE
    cycle: list[Any] = []
    cycle.append(cycle)
    for message in (AppMessage(to="b", payload=cycle), AppMessage(to="b", payload=object())):
        with pytest.raises(ProtocolError):
            encode_relayed(message, "a")
        with pytest.raises(ProtocolError):
            encode(message)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_dumps_is_the_json_encoder(value: Any) -> None:
    reference = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    assert sp._dumps({"v": value}) == reference.encode({"v": value})


def _outcome(parse: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", parse(text)
    except ProtocolError as exc:
        return "protocol", (exc.code, str(exc))
    except ValueError as exc:
        return type(exc).__name__, str(exc)
    except RecursionError:
        return "recursion", None


texts = st.one_of(
    st.text(max_size=80),
    json_values.map(json.dumps),
    st.tuples(
        st.sampled_from(["", " ", "\n"]), json_values, st.sampled_from(["", " ", "x", "}"])
    ).map(lambda t: t[0] + json.dumps({"type": "app", "payload": t[1]}) + t[2]),
    st.sampled_from(['{"a":1,"a":2}', '{"a":NaN}', '{"a":1', "{}", "{} ", " {}", "{", '{"a":[]}}']),
)


@given(texts)
@settings(max_examples=500, deadline=None)
def test_parse_gives_what_the_decoder_gives(text: str) -> None:
    assert _outcome(sp._parse, text) == _outcome(sp._DECODER.decode, text)


# --- the state machine's sends ---------------------------------------------------------------


class _Peers:
    """A state machine with *count* joined peers; collects each connection's Sends."""

    def __init__(self, count: int, **config: Any) -> None:
        self.state = SignalingState(
            SignalingConfig(auth=OpenAuth(), **{"max_messages_per_second": 1e6, **config})
        )
        self.sent: dict[int, list[Send]] = {}
        self.ids: dict[int, str] = {}
        for conn in range(1, count + 1):
            self.state.open(conn, 0.0)
            self.feed(conn, Hello())
            self.feed(conn, Join(room="r", metadata={"name": f"p{conn}"}))
            welcome = next(s.message for s in self.sent[conn] if s.message.type == "welcome")
            self.ids[conn] = welcome.peer_id  # type: ignore[attr-defined]
        self.sent.clear()

    def feed(self, conn: int, message: Message | str) -> None:
        text = message if isinstance(message, str) else encode(message)
        for action in self.state.receive_data(conn, text, 0.0).actions:
            if isinstance(action, Send):
                self.sent.setdefault(action.conn, []).append(action)

    def take(self, conn: int) -> list[Send]:
        return self.sent.pop(conn, [])


def test_a_relayed_message_is_sent_as_encode_would() -> None:
    peers = _Peers(2)
    payload = {"text": "héllo \ud800", "n": [1, 2.5, None, True], "deep": {"a": {"b": []}}}
    # the client's own spacing and key order do not matter: the server re-serializes
    text = json.dumps({"seq": 1, "payload": payload, "to": peers.ids[2], "type": "app"}, indent=1)
    peers.feed(1, text)
    (send,) = peers.take(2)
    expected = AppMessage(to=peers.ids[2], sender=peers.ids[1], payload=payload, seq=1)
    assert send.text == encode(expected)
    assert send.message == expected


def test_broadcast_serializes_once_and_numbers_per_recipient() -> None:
    peers = _Peers(4)
    # the recipients' own counters differ: they have seen different numbers of joins
    peers.feed(1, AppMessage(payload={"x": 1}, seq=1))
    for conn in (2, 3, 4):
        (send,) = peers.take(conn)
        seq = 4 - conn + 1  # peer-joined messages before: 2 for peer 2, 1 for 3, 0 for 4
        expected = AppMessage(sender=peers.ids[1], payload={"x": 1}, seq=seq)
        assert send.text == encode(expected), conn
    assert [s.message for s in peers.take(1)] == []


def test_every_relayed_type_goes_out_byte_for_byte() -> None:
    peers = _Peers(2)
    to = peers.ids[2]
    messages: list[Relayed] = [
        Offer(to=to, sdp="v=0\r\n", session="pub", seq=1),
        Answer(to=to, sdp="v=0\r\n", seq=2),
        Candidate(to=to, candidate="candidate:1 1 udp 1 ::1 9 typ host", sdp_mid="0", seq=3),
        Candidate(to=to, candidate="c", sdp_mline_index=0, session="s", seq=4),
        EndOfCandidates(to=to, seq=5),
        Restart(to=to, seq=6),
        AppMessage(to=to, payload=None, seq=7),
    ]
    for message in messages:
        peers.feed(1, message)
    sends = peers.take(2)
    assert [s.text for s in sends] == [
        encode(attrs.evolve(m, sender=peers.ids[1], seq=n))  # type: ignore[misc]
        for n, m in enumerate(messages, start=1)
    ]


def test_resume_resends_the_same_bytes() -> None:
    peers = _Peers(2)
    peers.feed(1, AppMessage(to=peers.ids[2], payload="one", seq=1))
    peers.feed(1, AppMessage(to=peers.ids[2], payload="two", seq=2))
    first = [s.text for s in peers.take(2)]
    token = None
    state = peers.state
    peers.state.closed(2, 0.0)  # the connection drops; the session waits for resume
    for session in state._tokens.values():
        if session.peer_id == peers.ids[2]:
            token = session.resume_token
    assert token is not None
    state.open(9, 0.0)
    peers.feed(9, Hello())
    peers.feed(9, Resume(resume_token=token, ack=0))
    resent = [s.text for s in peers.take(9)][2:]  # after hello and resumed
    assert resent == first


def test_undeliverable_still_names_the_message_type() -> None:
    peers = _Peers(2, resume_window=1.0)
    peers.feed(1, Offer(to=peers.ids[2], sdp="x", seq=1))
    peers.take(1)
    peers.state.closed(2, 0.0)
    out = peers.state.tick(2.0)  # resume window over: peer 2 is removed
    error = next(a.message for a in out.actions if isinstance(a, Send) and a.conn == 1)
    assert isinstance(error, Error)
    assert error.code == ErrorCode.UNDELIVERABLE
    assert error.ref == 1
    assert "offer" in error.message


def test_bad_relayed_input_still_gets_typed_errors() -> None:
    peers = _Peers(2)
    to = peers.ids[2]
    cases = {
        json.dumps({"type": "app", "to": to, "seq": 1, "extra": 1}): ErrorCode.BAD_MESSAGE,
        json.dumps({"type": "offer", "to": to, "seq": 2}): ErrorCode.BAD_MESSAGE,
        json.dumps({"type": "offer", "to": to, "sdp": 5, "seq": 3}): ErrorCode.BAD_MESSAGE,
        json.dumps({"type": "app", "to": "nobody", "seq": 4}): ErrorCode.UNKNOWN_PEER,
        json.dumps({"type": "app", "to": to, "from": "me", "seq": 5}): ErrorCode.FORBIDDEN,
        json.dumps({"type": "app", "to": to, "payload": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}): (
            ErrorCode.TOO_DEEP
        ),
        '{"type":"app","to":"' + to + '","seq":6,"seq":7}': ErrorCode.BAD_JSON,
        '{"type":"app","to":"' + to + '","payload":NaN,"seq":8}': ErrorCode.BAD_JSON,
        '{"type":"app","to":"' + to + '","seq":9} trailing': ErrorCode.BAD_JSON,
    }
    for text, code in cases.items():
        peers.feed(1, text)
        errors = [s.message for s in peers.take(1) if s.message.type == "error"]
        assert [e.code for e in errors] == [code], text  # type: ignore[attr-defined]
    assert peers.take(2) == []


def test_an_in_process_sender_with_an_unencodable_payload_gets_an_error() -> None:
    peers = _Peers(2)
    out = peers.state.receive(1, AppMessage(to=peers.ids[2], payload=float("nan"), seq=1), 0.0)
    sends = [a for a in out.actions if isinstance(a, Send)]
    assert [s.conn for s in sends] == [1]
    error = sends[0].message
    assert isinstance(error, Error)
    assert error.code == ErrorCode.BAD_MESSAGE
    assert error.ref == 1


def test_send_keeps_the_message_it_was_given() -> None:
    ack = Ack(ack=3)
    send = Send.of(5, ack)
    assert send.text == encode(ack)
    assert send.message is ack
    assert send == Send(5, encode(ack))
    assert send != Send(6, encode(ack))
    assert "Send(conn=5" in repr(send)
    lazy = Send(5, encode(ack))
    assert lazy.message == ack  # decoded from the text on first use


# --- the typed decoder (msgspec) -------------------------------------------------------------


@st.composite
def message_texts(draw: st.DrawFn) -> str:
    """The text of a relayed message or an ack, some with a repeated key, an explicit null,
    an unknown or ill-typed field, escaped or raw non-ASCII."""
    message: Message = draw(relayed | st.builds(Ack, ack=st.integers(0, 2**53 - 1)))
    pairs: list[tuple[str, Any]] = list(sp.as_dict(message).items())
    if draw(st.booleans()):
        key = draw(st.sampled_from([key for key, _value in pairs]))
        pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(json_values)))
    if draw(st.booleans()):
        key = draw(st.sampled_from(["to", "from", "seq", "ack", "payload", "sdp", "extra"]))
        pairs.append((key, draw(st.none() | json_values)))
    ascii_only = draw(st.booleans())
    body = ",".join(
        f"{json.dumps(key, ensure_ascii=ascii_only)}:{json.dumps(value, ensure_ascii=ascii_only)}"
        for key, value in pairs
    )
    return "{" + body + "}"


NESTED_REPEATS = [
    '{"type":"app","payload":{"a":1,"a":2}}',
    '{"type":"app","payload":[{"a":{"b":1,"b":1}}]}',
    '{"type":"app","payload":{"a":"x:y","a":"z"}}',
    # an escaped colon would make up for the colon of the dropped pair
    '{"type":"app","payload":{"b":"\\u003a","a":1,"a":2}}',
    '{"type":"app","payload":{"b":"\\u003A","a":1,"a":2}}',
    '{"type":"app","type":"app","seq":1}',
    '{"type":"app","type":"offer","to":"b","sdp":"x","seq":1}',
]


def _typed_agrees(text: str, max_depth: int = sp.DEFAULT_MAX_DEPTH) -> Message | None:
    """Run the typed decoder on *text*; what it accepts, the json path must give too."""
    assert sp._typed is not None
    brackets = text.count("[") + text.count("{")
    found = sp._typed(text, max_depth, brackets)
    if found is not None:
        expected = sp._decode_text(text, max_depth)
        assert type(found) is type(expected)
        assert found == expected
    return found


@given(message_texts() | texts | st.sampled_from(NESTED_REPEATS))
@settings(max_examples=1000, deadline=None)
def test_the_typed_decoder_accepts_only_what_the_json_path_accepts(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # decode refuses a lone surrogate before parsing
    _typed_agrees(text)
    _typed_agrees(text, max_depth=1)


def test_the_typed_decoder_refuses_repeated_keys() -> None:
    for text in NESTED_REPEATS:
        assert _typed_agrees(text) is None, text
        with pytest.raises(ProtocolError) as info:
            sp.decode(text)
        assert info.value.code == ErrorCode.BAD_JSON, text


def test_the_typed_decoder_takes_the_usual_messages() -> None:
    payload = {"t": 0.25, "pad": "x" * 290, "list": [1, None, True, {"k": "v:w"}]}
    for text in (
        json.dumps({"type": "app", "to": "b7", "payload": payload, "seq": 1}),
        json.dumps({"type": "app", "payload": "héllo", "seq": 2}, ensure_ascii=False),
        encode(Offer(to="b7", sdp="v=0\r\na=group:BUNDLE 0\r\n", seq=3)),
        encode(Candidate(to="b7", candidate=CANDIDATE, sdp_mid="0", sdp_mline_index=0, seq=4)),
        encode(EndOfCandidates(to="b7", seq=5)),
        encode(Ack(ack=7)),
    ):
        found = _typed_agrees(text)
        assert found is not None, text
        assert found == sp.decode(text)


def test_the_typed_decoder_leaves_the_limits_to_the_json_path() -> None:
    deep = json.dumps({"type": "app", "payload": [[[["x"]]]], "seq": 1})
    assert _typed_agrees(deep, max_depth=4) is not None
    assert _typed_agrees(deep, max_depth=3) is None
    with pytest.raises(ProtocolError) as info:
        sp.decode(deep, max_depth=3)
    assert info.value.code == ErrorCode.TOO_DEEP
    for text, code in (
        ('{"type":"app","seq":1e400}', ErrorCode.BAD_MESSAGE),
        ('{"type":"app","payload":1e400,"seq":1}', None),  # the json path takes it (inf)
        ('{"type":"app","to":"' + "x" * 129 + '","seq":1}', ErrorCode.BAD_MESSAGE),
        ('{"type":"offer","to":null,"sdp":"x","seq":1}', ErrorCode.BAD_MESSAGE),
        ('{"type":"app","seq":-1}', ErrorCode.BAD_MESSAGE),
        ('{"type":"app","seq":1.0}', ErrorCode.BAD_MESSAGE),
        ('{"type":"app","seq":true}', ErrorCode.BAD_MESSAGE),
        ('{"type":"app","to":"b","seq":1,"extra":1}', ErrorCode.BAD_MESSAGE),
        ('{"type":"hello","version":1}', None),
    ):
        assert _typed_agrees(text) is None, text
        if code is None:
            sp.decode(text)
        else:
            with pytest.raises(ProtocolError) as info:
                sp.decode(text)
            assert info.value.code == code, text


@pytest.mark.parametrize("char", ["x", "é", "\U0001f600"])
def test_the_typed_decoder_counts_id_lengths_in_characters(char: str) -> None:
    longest = json.dumps({"type": "app", "to": char * 128, "seq": 1}, ensure_ascii=False)
    assert _typed_agrees(longest) is not None
    too_long = json.dumps({"type": "app", "to": char * 129, "seq": 1}, ensure_ascii=False)
    assert _typed_agrees(too_long) is None
    with pytest.raises(ProtocolError) as info:
        sp.decode(too_long)
    assert info.value.code == ErrorCode.BAD_MESSAGE


@given(message_texts(), ids)
@settings(max_examples=500, deadline=None)
def test_a_typed_message_is_relayed_as_encode_would(text: str, sender: str) -> None:
    try:
        message, plain = sp.decode_frame(text)
    except ProtocolError:
        return
    if isinstance(message, Relayed):
        assert encode_relayed(message, sender, plain=plain) == encode(
            attrs.evolve(message, sender=sender, seq=None)  # type: ignore[misc]
        )


def test_plain_relayed_text_is_escaped_as_the_json_module_does() -> None:
    sdp = "v=0\r\n" + "".join(chr(code) for code in range(128)) + "é\u2028😀"
    for message in (
        Offer(to="b7", sdp=sdp, session="s", seq=1),
        Candidate(to="b7", candidate=sdp, sdp_mid="0\x7f", sdp_mline_index=3, seq=2),
        Restart(to="b7", seq=3),
    ):
        decoded, plain = sp.decode_frame(json.dumps(sp.as_dict(message), ensure_ascii=False))
        assert plain
        assert decoded == message
        assert isinstance(decoded, Relayed)
        assert encode_relayed(decoded, "a1", plain=True) == encode(
            attrs.evolve(message, sender="a1", seq=None)
        )
