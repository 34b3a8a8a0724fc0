"""The sans-I/O room/session state machine, driven synchronously with injected time."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from rtckit.errors import ConfigurationError
from rtckit.signaling.auth import OpenAuth, TokenAuth
from rtckit.signaling.config import RoomConfig, SignalingConfig
from rtckit.signaling.protocol import (
    Ack,
    Answer,
    AppMessage,
    Bye,
    Candidate,
    CloseCode,
    EndOfCandidates,
    Error,
    ErrorCode,
    Hello,
    Join,
    Message,
    Offer,
    PeerJoined,
    PeerLeft,
    Ping,
    Pong,
    Restart,
    Resume,
    Resumed,
    Welcome,
    encode,
)
from rtckit.signaling.state import (
    Close,
    Heartbeat,
    MessageEvent,
    Output,
    PeerJoinedEvent,
    PeerLeftEvent,
    RoomClosedEvent,
    Send,
    SignalingState,
    resume_token_room,
)

SECRET = "0123456789abcdef-0123456789abcdef-test-secret"


class Harness:
    """Drive a SignalingState; collect what each connection received."""

    def __init__(self, **config: Any) -> None:
        config.setdefault("auth", OpenAuth())
        self.state = SignalingState(SignalingConfig(**config))
        self.now = 0.0
        self.inbox: dict[int, list[Message]] = {}
        self.closes: dict[int, tuple[int, str]] = {}
        self.events: list[object] = []
        self._next = 0

    def apply(self, out: Output) -> Output:
        for action in out.actions:
            if isinstance(action, Send):
                # what goes on the wire must encode
                assert encode(action.message)
                self.inbox.setdefault(action.conn, []).append(action.message)
            else:
                assert isinstance(action, Close)
                self.closes[action.conn] = (action.code, action.reason)
        self.events.extend(out.events)
        return out

    def open(self, *, trusted: bool = False) -> int:
        self._next += 1
        self.inbox[self._next] = []
        self.apply(self.state.open(self._next, self.now, trusted=trusted))
        return self._next

    def send(self, conn: int, message: Message) -> Output:
        return self.apply(self.state.receive(conn, message, self.now))

    def send_raw(self, conn: int, data: str | bytes) -> Output:
        return self.apply(self.state.receive_data(conn, data, self.now))

    def tick(self, now: float) -> Output:
        self.now = now
        return self.apply(self.state.tick(now))

    def drop(self, conn: int) -> None:
        self.apply(self.state.closed(conn, self.now))

    def take(self, conn: int) -> list[Message]:
        messages, self.inbox[conn] = self.inbox[conn], []
        return messages

    def join(self, room: str = "r", **kwargs: Any) -> tuple[int, Welcome]:
        conn = self.open(trusted=kwargs.pop("trusted", False))
        self.send(conn, Hello())
        self.send(conn, Join(room=room, **kwargs))
        messages = self.take(conn)
        assert isinstance(messages[0], Hello)
        welcome = messages[1]
        assert isinstance(welcome, Welcome), messages
        return conn, welcome


def errors(messages: list[Message]) -> list[str]:
    return [m.code for m in messages if isinstance(m, Error)]


def test_join_welcome_and_peer_joined() -> None:
    h = Harness()
    a, wa = h.join(metadata={"name": "a"})
    assert wa.peers == ()
    assert wa.topology == "mesh"
    assert wa.resume_window == 5.0
    _, wb = h.join()
    assert [p.id for p in wb.peers] == [wa.peer_id]
    assert wb.peers[0].metadata == {"name": "a"}
    (joined,) = h.take(a)
    assert isinstance(joined, PeerJoined)
    assert joined.peer.id == wb.peer_id
    assert joined.seq == 1
    assert h.state.peers("r")[1].id == wb.peer_id
    assert [type(e) for e in h.events] == [PeerJoinedEvent, PeerJoinedEvent]


def test_relay_stamps_sender_and_sequences() -> None:
    h = Harness()
    a, wa = h.join()
    b, wb = h.join()
    h.take(a)
    for i, message in enumerate(
        [
            Offer(to=wb.peer_id, sdp="o", seq=1),
            Answer(to=wb.peer_id, sdp="a", seq=2),
            Candidate(to=wb.peer_id, candidate="c", sdp_mid="0", seq=3),
            EndOfCandidates(to=wb.peer_id, seq=4),
            Restart(to=wb.peer_id, seq=5),
            AppMessage(to=wb.peer_id, payload={"i": 1}, seq=6),
        ]
    ):
        h.send(a, message)
        (got,) = h.take(b)
        assert type(got) is type(message)
        assert got.sender == wa.peer_id
        assert got.seq == i + 1  # b's own sequence
    assert h.take(a) == []


def test_broadcast_app_reaches_everyone_else() -> None:
    h = Harness()
    conns = [h.join()[0] for _ in range(4)]
    for conn in conns:
        h.take(conn)
    h.send(conns[0], AppMessage(to=None, payload="hi", seq=1))
    assert h.take(conns[0]) == []
    for conn in conns[1:]:
        (got,) = h.take(conn)
        assert isinstance(got, AppMessage)
        assert got.payload == "hi"


def test_cannot_speak_as_another_peer() -> None:
    h = Harness()
    a, _ = h.join()
    b, wb = h.join()
    _, wc = h.join()
    for conn in (a, b):
        h.take(conn)
    h.send(a, Offer(to=wb.peer_id, sender=wc.peer_id, sdp="x", seq=1))
    assert errors(h.take(a)) == [ErrorCode.FORBIDDEN]
    assert h.take(b) == []


def test_messages_before_join_are_refused() -> None:
    h = Harness()
    conn = h.open()
    h.send(conn, Offer(to="x", sdp="x", seq=1))
    h.send(conn, Hello())
    h.send(conn, AppMessage(to=None, payload=1, seq=2))
    messages = h.take(conn)
    assert errors(messages) == [ErrorCode.NOT_JOINED, ErrorCode.NOT_JOINED]
    assert isinstance(messages[1], Hello)


def test_join_before_hello_and_double_hello() -> None:
    h = Harness()
    conn = h.open()
    h.send(conn, Join(room="r"))
    h.send(conn, Hello())
    h.send(conn, Hello())
    assert errors(h.take(conn)) == [ErrorCode.UNEXPECTED, ErrorCode.UNEXPECTED]


def test_unsupported_version_closes() -> None:
    h = Harness()
    conn = h.open()
    h.send(conn, Hello(version=2))
    assert errors(h.take(conn)) == [ErrorCode.UNSUPPORTED_VERSION]
    assert h.closes[conn][0] == CloseCode.UNSUPPORTED_VERSION


def test_duplicate_join() -> None:
    h = Harness()
    a, _ = h.join()
    h.send(a, Join(room="r"))
    h.send(a, Join(room="other"))
    assert errors(h.take(a)) == [ErrorCode.ALREADY_JOINED, ErrorCode.ALREADY_JOINED]


def test_unknown_room_when_rooms_are_declared() -> None:
    h = Harness(create_rooms=False, rooms=[RoomConfig(name="sfu-room", topology="sfu")])
    conn = h.open()
    h.send(conn, Hello())
    h.send(conn, Join(room="elsewhere"))
    assert errors(h.take(conn)) == [ErrorCode.UNKNOWN_ROOM]
    h.send(conn, Join(room="sfu-room"))
    welcome = h.take(conn)[0]
    assert isinstance(welcome, Welcome)
    assert welcome.topology == "sfu"


def test_room_full() -> None:
    h = Harness(max_peers_per_room=2, rooms=[RoomConfig(name="tiny", max_peers=1)])
    h.join()
    h.join()
    conn = h.open()
    h.send(conn, Hello())
    h.send(conn, Join(room="r"))
    h.send(conn, Join(room="tiny"))
    h.send(conn, Join(room="tiny"))
    assert errors(h.take(conn))[0] == ErrorCode.ROOM_FULL
    # joined "tiny" (1 place), then the connection has joined
    assert h.state.peers("tiny")[0].id


def test_unknown_peer_error_refers_to_seq() -> None:
    h = Harness()
    a, _ = h.join()
    h.send(a, Offer(to="ghost", sdp="x", seq=7))
    (error,) = h.take(a)
    assert isinstance(error, Error)
    assert error.code == ErrorCode.UNKNOWN_PEER
    assert error.ref == 7
    assert error.seq == 1  # errors in a session are sequenced too


def test_send_to_self_and_missing_seq() -> None:
    h = Harness()
    a, wa = h.join()
    h.send(a, Offer(to=wa.peer_id, sdp="x", seq=1))
    h.send(a, Offer(to=wa.peer_id, sdp="x"))
    assert errors(h.take(a)) == [ErrorCode.BAD_MESSAGE, ErrorCode.BAD_MESSAGE]


def test_client_must_not_send_server_messages() -> None:
    h = Harness()
    a, wa = h.join()
    h.send(a, wa)
    h.send(a, PeerLeft(peer_id="x"))
    h.send(a, Error(code="x", message="y"))
    h.send(a, Resumed(room="r", peer_id="x", ack=0))
    assert errors(h.take(a)) == [ErrorCode.UNEXPECTED] * 4


def test_bad_frames_get_errors_and_connection_survives() -> None:
    h = Harness()
    a, _ = h.join()
    b, wb = h.join()
    h.take(a)
    bad: list[str | bytes] = [b"\xff", "nope", "[]", '{"type":"zzz"}', '{"type":"offer"}']
    for data in [*bad, "[" * 5000]:
        h.send_raw(a, data)
    assert errors(h.take(a)) == [
        ErrorCode.BAD_ENCODING,
        ErrorCode.BAD_JSON,
        ErrorCode.BAD_MESSAGE,
        ErrorCode.UNKNOWN_TYPE,
        ErrorCode.BAD_MESSAGE,
        ErrorCode.TOO_DEEP,
    ]
    assert a not in h.closes
    h.send_raw(a, encode(AppMessage(to=wb.peer_id, payload=1, seq=1)))
    assert isinstance(h.take(b)[0], AppMessage)


def test_oversize_frame_closes_1009() -> None:
    h = Harness(max_message_size=1000)
    a, _ = h.join()
    h.send_raw(a, "x" * 1001)
    assert h.closes[a][0] == CloseCode.MESSAGE_TOO_BIG


def test_rate_limit_error_then_close_1008() -> None:
    h = Harness(max_messages_per_second=10, burst=5)
    a, _ = h.join()  # hello + join used 2 tokens
    for _ in range(3):
        h.send(a, Ping())
    assert a not in h.closes
    h.send(a, Ping())
    assert errors(h.take(a)) == [ErrorCode.RATE_LIMITED]
    assert h.closes[a][0] == CloseCode.POLICY_VIOLATION


def test_rate_limit_refills_over_time() -> None:
    h = Harness(max_messages_per_second=10, burst=5)
    a, _ = h.join()
    for i in range(100):
        h.now = 1.0 + i * 0.2  # 5 per second, under the limit
        h.send(a, Ping())
    assert a not in h.closes


def test_trusted_connections_skip_rate_limit_and_choose_peer_id() -> None:
    h = Harness(max_messages_per_second=1, burst=2)
    sfu, welcome = h.join(peer_id="sfu", trusted=True)
    assert welcome.peer_id == "sfu"
    for _ in range(50):
        h.send(sfu, Ping())
    assert sfu not in h.closes
    conn = h.open()
    h.send(conn, Hello())
    h.send(conn, Join(room="r", peer_id="sfu"))
    assert errors(h.take(conn)) == [ErrorCode.FORBIDDEN]


def test_admin_may_choose_peer_id_but_not_a_taken_one() -> None:
    auth = TokenAuth(secret=SECRET, clock=lambda: 1000.0)
    h = Harness(auth=auth)
    token = auth.mint(room="r", identity="boss", permissions=["admin", "publish"])
    _, welcome = h.join(token=token, peer_id="boss")
    assert welcome.peer_id == "boss"
    assert welcome.identity == "boss"
    conn = h.open()
    h.send(conn, Hello())
    h.send(conn, Join(room="r", token=token, peer_id="boss"))
    assert errors(h.take(conn)) == [ErrorCode.PEER_ID_TAKEN]


def test_media_messages_need_publish_or_subscribe() -> None:
    auth = TokenAuth(secret=SECRET, clock=lambda: 1000.0)
    h = Harness(auth=auth)
    a, _ = h.join(token=auth.mint(room="r", identity="a", permissions=[]))
    b, wb = h.join(token=auth.mint(room="r", identity="b"))
    h.take(a)
    h.send(a, Offer(to=wb.peer_id, sdp="x", seq=1))
    h.send(a, AppMessage(to=wb.peer_id, payload="chat is fine", seq=2))
    assert errors(h.take(a)) == [ErrorCode.FORBIDDEN]
    assert [type(m) for m in h.take(b)] == [AppMessage]


def test_auth_errors_keep_connection_open() -> None:
    auth = TokenAuth(secret=SECRET, clock=lambda: 1000.0)
    h = Harness(auth=auth)
    conn = h.open()
    h.send(conn, Hello())
    h.send(conn, Join(room="r"))
    h.send(conn, Join(room="r", token="garbage"))
    h.send(conn, Join(room="r", token=auth.mint(room="other", identity="x")))
    h.send(conn, Join(room="r", token=auth.mint(room="r", identity="x")))
    messages = h.take(conn)
    assert errors(messages) == [
        ErrorCode.AUTH_REQUIRED,
        ErrorCode.AUTH_INVALID,
        ErrorCode.AUTH_WRONG_ROOM,
    ]
    assert isinstance(messages[-1], Welcome)
    assert messages[-1].identity == "x"


def test_bye_removes_and_closes_normally() -> None:
    h = Harness()
    a, wa = h.join()
    b, _ = h.join()
    h.take(a)
    h.send(a, Bye())
    assert h.closes[a] == (CloseCode.NORMAL, "bye")
    (left,) = h.take(b)
    assert isinstance(left, PeerLeft)
    assert (left.peer_id, left.reason) == (wa.peer_id, "bye")
    h.send(b, Bye())
    assert RoomClosedEvent(room="r") in h.events
    assert h.state.rooms() == []


def test_declared_rooms_survive_being_empty() -> None:
    h = Harness(rooms=[RoomConfig(name="keep")])
    a, _ = h.join(room="keep")
    h.send(a, Bye())
    assert h.state.rooms() == ["keep"]
    assert h.state.room_topology("keep") == "mesh"


def test_ack_trims_and_acks_are_sent() -> None:
    h = Harness(ack_every=4)
    a, _ = h.join()
    _, wb = h.join()
    h.take(a)
    for seq in range(1, 5):
        h.send(a, AppMessage(to=wb.peer_id, payload=seq, seq=seq))
    acks = [m for m in h.take(a) if isinstance(m, Ack)]
    assert acks == [Ack(ack=4)]
    h.send(a, AppMessage(to=wb.peer_id, payload=5, seq=5))
    h.tick(4.9)  # acks of a few messages wait for ack_delay (5 s)
    assert [m for m in h.take(a) if isinstance(m, Ack)] == []
    h.tick(5.0)
    assert [m for m in h.take(a) if isinstance(m, Ack)] == [Ack(ack=5)]
    h.tick(20.0)
    assert [m for m in h.take(a) if isinstance(m, Ack)] == []


def test_duplicates_are_dropped() -> None:
    h = Harness()
    a, _ = h.join()
    b, wb = h.join()
    h.take(a)
    h.send(a, AppMessage(to=wb.peer_id, payload=1, seq=1))
    h.send(a, AppMessage(to=wb.peer_id, payload=1, seq=1))
    h.send(a, AppMessage(to=wb.peer_id, payload=2, seq=3))
    h.send(a, AppMessage(to=wb.peer_id, payload=2, seq=2))
    assert [m.payload for m in h.take(b) if isinstance(m, AppMessage)] == [1, 2]


def test_resume_delivers_everything_exactly_once_in_order() -> None:
    h = Harness()
    a, wa = h.join()
    b, wb = h.join()
    h.take(a)
    h.send(a, AppMessage(to=wb.peer_id, payload=0, seq=1))
    received = [m for m in h.take(b) if isinstance(m, AppMessage)]
    h.send(b, Ack(ack=received[-1].seq or 0))
    h.drop(b)  # b's connection drops
    for i in range(1, 6):
        h.send(a, AppMessage(to=wb.peer_id, payload=i, seq=i + 1))
    h.tick(3.0)
    c = h.open()
    h.send(c, Hello())
    h.send(c, Resume(resume_token=wb.resume_token, ack=1))
    messages = h.take(c)
    assert isinstance(messages[0], Hello)
    assert messages[1] == Resumed(room="r", peer_id=wb.peer_id, ack=0)
    payloads = [m.payload for m in messages[2:] if isinstance(m, AppMessage)]
    assert payloads == [1, 2, 3, 4, 5]
    # b did not leave: no peer-left anywhere
    assert not any(isinstance(m, PeerLeft) for m in h.take(a))
    # and the resumed session works both ways
    h.send(c, AppMessage(to=wa.peer_id, payload="back", seq=1))
    assert [m.payload for m in h.take(a) if isinstance(m, AppMessage)] == ["back"]


def test_resume_tells_client_what_server_processed() -> None:
    h = Harness()
    a, wa = h.join()
    b, wb = h.join()
    h.send(b, AppMessage(to=wa.peer_id, payload=1, seq=1))
    h.send(b, AppMessage(to=wa.peer_id, payload=2, seq=2))
    h.drop(b)
    c = h.open()
    h.send(c, Hello())
    h.send(c, Resume(resume_token=wb.resume_token, ack=0))
    resumed = h.take(c)[1]
    assert resumed == Resumed(room="r", peer_id=wb.peer_id, ack=2)
    # client resends 2 (already processed) and 3: only 3 goes through
    h.take(a)
    h.send(c, AppMessage(to=wa.peer_id, payload=2, seq=2))
    h.send(c, AppMessage(to=wa.peer_id, payload=3, seq=3))
    assert [m.payload for m in h.take(a) if isinstance(m, AppMessage)] == [3]


def test_resume_replaces_a_still_open_connection() -> None:
    h = Harness()
    a, wa = h.join()
    c = h.open()
    h.send(c, Hello())
    h.send(c, Resume(resume_token=wa.resume_token, ack=0))
    assert h.closes[a][0] == CloseCode.SESSION_REPLACED
    assert isinstance(h.take(c)[1], Resumed)


def test_resume_with_unknown_token() -> None:
    h = Harness()
    conn = h.open()
    h.send(conn, Hello())
    h.send(conn, Resume(resume_token="nope", ack=0))
    assert errors(h.take(conn)) == [ErrorCode.RESUME_FAILED]


def test_window_expiry_removes_peer_and_reports_undelivered() -> None:
    h = Harness(resume_window=5.0)
    a, _ = h.join()
    b, wb = h.join()
    h.take(a)
    h.drop(b)
    h.send(a, Offer(to=wb.peer_id, sdp="x", seq=1))
    h.send(a, Candidate(to=wb.peer_id, candidate="c", seq=2))
    h.send(a, Pong())
    h.tick(4.9)
    assert not [m for m in h.take(a) if isinstance(m, Error | PeerLeft)]
    h.tick(5.0)
    messages = h.take(a)
    undeliverable = [m for m in messages if isinstance(m, Error)]
    assert [(m.code, m.ref) for m in undeliverable] == [
        (ErrorCode.UNDELIVERABLE, 1),
        (ErrorCode.UNDELIVERABLE, 2),
    ]
    left = [m for m in messages if isinstance(m, PeerLeft)]
    assert [(m.peer_id, m.reason) for m in left] == [(wb.peer_id, "timeout")]
    assert PeerLeftEvent(room="r", peer_id=wb.peer_id, reason="timeout") in h.events
    # the token is dead now
    c = h.open()
    h.send(c, Hello())
    h.send(c, Resume(resume_token=wb.resume_token, ack=0))
    assert errors(h.take(c)) == [ErrorCode.RESUME_FAILED]


def test_acknowledged_messages_are_not_reported() -> None:
    h = Harness(resume_window=1.0)
    a, _ = h.join()
    b, wb = h.join()
    h.take(a)
    h.send(a, Offer(to=wb.peer_id, sdp="x", seq=1))
    offer = h.take(b)[0]
    h.send(b, Ack(ack=offer.seq or 0))  # type: ignore[attr-defined]
    h.drop(b)
    h.tick(2.0)
    assert errors(h.take(a)) == []


def test_backlog_full() -> None:
    h = Harness(max_pending=3)
    a, _ = h.join()
    b, wb = h.join()
    h.take(a)
    for seq in range(1, 6):
        h.send(a, AppMessage(to=wb.peer_id, payload=seq, seq=seq))
    errs = [m for m in h.take(a) if isinstance(m, Error)]
    assert [(e.code, e.ref) for e in errs] == [
        (ErrorCode.BACKLOG_FULL, 4),
        (ErrorCode.BACKLOG_FULL, 5),
    ]
    h.send(b, Ack(ack=3))
    h.send(a, AppMessage(to=wb.peer_id, payload=6, seq=6))
    assert [m.payload for m in h.take(b) if isinstance(m, AppMessage)] == [1, 2, 3, 6]


def test_handshake_timeout() -> None:
    h = Harness(handshake_timeout=3.0)
    conn = h.open()
    h.send(conn, Hello())
    h.tick(2.9)
    assert conn not in h.closes
    h.tick(3.0)
    assert h.closes[conn][0] == CloseCode.HANDSHAKE_TIMEOUT


def test_heartbeat_pings_and_dead_peer_removal_within_15_seconds() -> None:
    h = Harness()  # defaults: heartbeat 6, dead 9, resume window 5
    a, _ = h.join()
    b, _ = h.join()
    h.take(a)
    t = 0.0
    left_at = None
    while t < 20 and left_at is None:
        t += 0.5
        h.tick(t)
        h.send(a, Pong())  # a stays alive; b vanished silently
        if any(isinstance(m, PeerLeft) for m in h.take(a)):
            left_at = t
    assert any(isinstance(m, Ping) for m in h.take(b))
    assert h.closes[b][0] == CloseCode.HEARTBEAT_TIMEOUT
    assert left_at is not None
    assert left_at <= 15.0
    assert a not in h.closes


class _CountingState(SignalingState):
    """Counts how many connections tick looks at."""

    looks = 0

    def _check(self, state: Any, now: float, out: Output) -> None:
        self.looks += 1
        super()._check(state, now, out)


def test_transport_pings_and_tick_cost_per_due_connection() -> None:
    config = SignalingConfig(auth=OpenAuth(), heartbeat_interval=3.0, dead_peer_timeout=8.0)
    state = _CountingState(config)
    count = 500
    for conn in range(1, count + 1):
        state.open(conn, 0.0, transport_pings=True)
        state.receive(conn, Hello(), 0.0)
        state.receive(conn, Join(room=f"r{conn}"), 0.0)
    for step in range(1, 6):  # nothing is due before the heartbeat interval: no looks
        assert state.tick(step * 0.5).actions == []
    assert state.looks == 0
    out = state.tick(3.0)  # each idle connection gets one transport ping
    assert out.actions == [Heartbeat(conn) for conn in range(1, count + 1)]
    assert state.looks == count
    for conn in range(2, count + 1):  # the transport saw their pongs; conn 1 stays silent
        state.touch(conn, 3.1)
    for step in range(7, 12):  # 3.5 .. 5.5: nothing due
        assert state.tick(step * 0.5).actions == []
    assert state.looks == count
    actions = [a for step in range(12, 16) for a in state.tick(step * 0.5).actions]
    # 6.0 .. 7.5: conn 1 pinged again, the others once (at most two looks each)
    assert sorted(a.conn for a in actions if isinstance(a, Heartbeat)) == list(range(1, count + 1))
    assert len(actions) == count
    assert state.looks <= 3 * count
    assert Close(1, CloseCode.HEARTBEAT_TIMEOUT, "no heartbeat") in state.tick(8.0).actions


def test_pending_ack_is_sent_after_ack_delay_whatever_the_heartbeat_interval() -> None:
    h = Harness(heartbeat_interval=30.0, dead_peer_timeout=60.0, ack_delay=1.0)
    a, _ = h.join()
    _, wb = h.join()
    h.take(a)
    h.now = 0.2
    h.send(a, AppMessage(to=wb.peer_id, payload=1, seq=1))
    h.tick(1.1)
    assert [m for m in h.take(a) if isinstance(m, Ack)] == []
    h.tick(1.2)
    assert [m for m in h.take(a) if isinstance(m, Ack)] == [Ack(ack=1)]


def test_server_pings_carry_no_nonce_and_pongs_skip_the_decoder() -> None:
    h = Harness(heartbeat_interval=3.0, dead_peer_timeout=8.0)
    a, _ = h.join()
    h.tick(3.0)
    (ping,) = h.take(a)
    assert ping == Ping()
    assert h.send_raw(a, '{"type":"pong"}').actions == []
    assert h.send_raw(a, '{"type":"ping"}').actions == [Send(a, '{"type":"pong"}')]
    h.tick(10.0)  # the pong at 3.0 was a sign of life: pinged again, not closed
    assert a not in h.closes


def test_ping_gets_pong() -> None:
    h = Harness()
    a, _ = h.join()
    h.send(a, Ping(nonce=42))
    assert h.take(a) == [Pong(nonce=42)]


def test_message_events_only_when_asked() -> None:
    h = Harness()
    a, _ = h.join()
    _, wb = h.join()
    h.send(a, AppMessage(to=wb.peer_id, payload=1, seq=1))
    assert not [e for e in h.events if isinstance(e, MessageEvent)]
    h.state.message_events = True
    h.send(a, AppMessage(to=wb.peer_id, payload=2, seq=2))
    (event,) = [e for e in h.events if isinstance(e, MessageEvent)]
    assert event.room == "r"
    assert isinstance(event.message, AppMessage)
    assert event.message.payload == 2


def test_remove_peer() -> None:
    h = Harness()
    a, _ = h.join()
    b, wb = h.join()
    h.take(a)
    h.apply(h.state.remove_peer("r", wb.peer_id))
    assert h.take(b) == [Bye(reason="removed")]
    assert h.closes[b][0] == CloseCode.NORMAL
    left = h.take(a)[0]
    assert isinstance(left, PeerLeft)
    assert left.reason == "removed"


def test_shutdown_closes_everyone() -> None:
    h = Harness()
    a, _ = h.join()
    b = h.open()
    h.apply(h.state.shutdown(1.0))
    assert h.closes[a][0] == h.closes[b][0] == CloseCode.GOING_AWAY
    assert h.state.connection_count == 0


def test_open_twice_is_a_bug() -> None:
    h = Harness()
    conn = h.open()
    with pytest.raises(ValueError, match="already open"):
        h.state.open(conn, 0.0)


def test_frames_for_unknown_connections_are_ignored() -> None:
    h = Harness()
    assert h.state.receive_data(99, "{}", 0.0).actions == []
    assert h.state.receive(99, Ping(), 0.0).actions == []
    assert h.state.closed(99, 0.0).actions == []


def test_config_validation() -> None:
    with pytest.raises(ConfigurationError):
        SignalingConfig(auth="open")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="a"), RoomConfig(name="a")])
    with pytest.raises(ConfigurationError):
        SignalingConfig(auth=OpenAuth(), heartbeat_interval=5, dead_peer_timeout=5)
    with pytest.raises(ConfigurationError):
        RoomConfig(name="x", topology="star")
    with pytest.raises(ValueError, match="must be > 0"):
        SignalingConfig(auth=OpenAuth(), max_peers_per_room=0)
    with pytest.raises(ConfigurationError, match="twice max_pending_bytes"):
        SignalingConfig(auth=OpenAuth(), max_pending_bytes=1000, max_send_buffer=2000)
    with pytest.raises(ValueError, match="must be > 0"):
        SignalingConfig(auth=OpenAuth(), max_total_send_buffer=0)
    config = SignalingConfig(auth=OpenAuth())
    assert attrs.evolve(config, resume_window=0).resume_window == 0


# --- limits: acknowledgements, buffered bytes, welcome size, resume auth ---------------------


def test_ack_beyond_what_was_sent_is_refused_and_trims_nothing() -> None:
    h = Harness(max_pending=5)
    a, _ = h.join()
    b, wb = h.join()
    h.take(a)
    for seq in range(1, 4):
        h.send(a, AppMessage(to=wb.peer_id, payload=seq, seq=seq))
    h.take(b)
    h.send(b, Ack(ack=2**53 - 1))  # "I processed everything you will ever send"
    assert errors(h.take(b)) == [ErrorCode.BAD_ACK]
    # the outbox still holds the 3 relayed messages and the error: 1 more fits, not 2
    h.send(a, AppMessage(to=wb.peer_id, payload=4, seq=4))
    h.send(a, AppMessage(to=wb.peer_id, payload=5, seq=5))
    assert [(e.code, e.ref) for e in h.take(a) if isinstance(e, Error)] == [
        (ErrorCode.BACKLOG_FULL, 5)
    ]
    # an ack of exactly what was sent is fine
    h.send(b, Ack(ack=5))
    assert errors(h.take(b)) == []


def ack_all(h: Harness, conn: int) -> None:
    """Acknowledge everything *conn* received (so that only other outboxes count)."""
    seqs = [getattr(m, "seq", None) for m in h.take(conn)]
    h.send(conn, Ack(ack=max((s for s in seqs if s is not None), default=0)))


def test_resume_with_an_ack_beyond_what_was_sent_is_refused() -> None:
    h = Harness()
    a, _ = h.join()
    b, wb = h.join()
    h.send(a, AppMessage(to=wb.peer_id, payload=1, seq=1))
    h.drop(b)
    c = h.open()
    h.send(c, Hello())
    h.send(c, Resume(resume_token=wb.resume_token, ack=10**9))
    messages = h.take(c)
    assert errors(messages) == [ErrorCode.BAD_ACK]
    assert not any(isinstance(m, Resumed) for m in messages)
    # the session is intact: an honest resume gets everything
    h.send(c, Resume(resume_token=wb.resume_token, ack=0))
    assert [m.payload for m in h.take(c) if isinstance(m, AppMessage)] == [1]


def test_pending_bytes_bound_relays() -> None:
    h = Harness(max_pending_bytes=1000, max_message_size=1000, max_send_buffer=3000)
    a, _ = h.join()
    b, wb = h.join()
    h.take(a)
    for seq in range(1, 11):
        h.send(a, AppMessage(to=wb.peer_id, payload="x" * 200, seq=seq))
    refused = [e.ref for e in h.inbox[a] if isinstance(e, Error)]
    delivered = [m for m in h.take(b) if isinstance(m, AppMessage)]
    assert len(delivered) == 3  # 1000 bytes hold 3 of about 250 bytes
    assert refused == list(range(4, 11))
    ack_all(h, a)
    assert 750 < h.state.pending_bytes <= 1000


def test_total_pending_bytes_bound_relays_across_sessions() -> None:
    h = Harness(max_total_pending_bytes=2000)
    a, _ = h.join()
    targets = [h.join()[1].peer_id for _ in range(4)]
    h.take(a)
    seq = 0
    for target in targets:
        for _ in range(5):
            seq += 1
            h.send(a, AppMessage(to=target, payload="x" * 200, seq=seq))
    refused = [e for e in h.inbox[a] if isinstance(e, Error)]
    assert refused
    assert {e.code for e in refused} == {ErrorCode.BACKLOG_FULL}
    ack_all(h, a)
    assert h.state.pending_bytes <= 2000


def test_server_messages_piling_up_close_the_connection_4004() -> None:
    """Errors to a client that never acknowledges them: its own outbox is bounded too."""
    h = Harness(max_pending=5, burst=3)
    a, wa = h.join(trusted=True)  # no rate limit
    for seq in range(1, 9):  # each gets unknown_peer, kept until a acknowledges it
        h.send(a, AppMessage(to="nobody", payload=seq, seq=seq))
    assert a not in h.closes  # up to max_pending + burst
    h.send(a, AppMessage(to="nobody", payload=9, seq=9))
    assert h.closes[a][0] == CloseCode.SLOW_CONSUMER
    assert errors(h.take(a)) == [ErrorCode.UNKNOWN_PEER] * 9
    # the session survives for resume; the resent errors can then be acknowledged
    c = h.open()
    h.send(c, Hello())
    h.send(c, Resume(resume_token=wa.resume_token, ack=9))
    assert isinstance(h.take(c)[1], Resumed)


def test_metadata_is_limited() -> None:
    h = Harness(max_metadata_size=100)
    conn = h.open()
    h.send(conn, Hello())
    h.send(conn, Join(room="r", metadata={"name": "x" * 100}))
    assert errors(h.take(conn)) == [ErrorCode.TOO_LARGE]
    h.send(conn, Join(room="r", metadata={"name": "x" * 80}))
    assert isinstance(h.take(conn)[-1], Welcome)


def test_welcome_never_exceeds_the_message_size_limit() -> None:
    """A welcome stays within 64 KiB: of 4 peers with 60 KiB of metadata each (a 234 KiB
    welcome for the last), the room takes those whose welcome fits and refuses the others."""
    h = Harness(max_metadata_size=61_000)
    sizes: list[int] = []
    refused: list[str] = []
    for _ in range(4):
        conn = h.open()
        h.send(conn, Hello())
        h.send(conn, Join(room="r", metadata={"blob": "x" * 60_000}))
        messages = h.take(conn)
        sizes.extend(len(encode(m)) for m in messages if isinstance(m, Welcome))
        refused.extend(errors(messages))
    assert len(sizes) == 2
    assert max(sizes) <= 64 * 1024
    assert refused == [ErrorCode.ROOM_FULL] * 2  # the first two fit, not a third
    assert len(h.state.peers("r")) == 2


def test_resume_checks_the_token_again() -> None:
    clock = [1000.0]
    auth = TokenAuth(secret=SECRET, clock=lambda: clock[0])
    h = Harness(auth=auth, resume_window=60.0, heartbeat_interval=20.0, dead_peer_timeout=30.0)
    a, wa = h.join(token=auth.mint(room="r", identity="ann", ttl=10))
    h.drop(a)
    clock[0] += 11  # the token expired while the connection was down
    c = h.open()
    h.send(c, Hello())
    h.send(c, Resume(resume_token=wa.resume_token, ack=0))
    messages = h.take(c)
    assert errors(messages) == [ErrorCode.AUTH_EXPIRED]
    assert not any(isinstance(m, Resumed) for m in messages)


def test_trusted_resume_skips_the_token_check() -> None:
    """In-process participants (an SFU with a token it minted itself) are the server's own."""
    clock = [1000.0]
    auth = TokenAuth(secret=SECRET, clock=lambda: clock[0])
    h = Harness(auth=auth, resume_window=60.0, heartbeat_interval=20.0, dead_peer_timeout=30.0)
    a, wa = h.join(token=auth.mint(room="r", identity="sfu", ttl=10), trusted=True)
    h.drop(a)
    clock[0] += 11
    c = h.open(trusted=True)
    h.send(c, Hello())
    h.send(c, Resume(resume_token=wa.resume_token, ack=0))
    assert isinstance(h.take(c)[1], Resumed)


# --- what the cluster router uses -----------------------------------------------------------


@pytest.mark.parametrize("room", ["r", "a:b", "a*", "é" * 128, "x.y"])
def test_resume_tokens_carry_their_room(room: str) -> None:
    h = Harness()
    _, welcome = h.join(room)
    token = welcome.resume_token
    assert resume_token_room(token) == room
    assert len(token) <= 1024
    assert len(token.rpartition(".")[2]) == 32  # the secret: 192 random bits
    _, again = h.join(room)
    assert again.resume_token != token


@pytest.mark.parametrize("token", ["", "nodot", ".secret", "%%%.secret", "_w.secret"])
def test_foreign_resume_tokens_name_no_room(token: str) -> None:
    assert resume_token_room(token) is None


def test_handoff_forgets_a_greeted_connection_without_closing_it() -> None:
    h = Harness()
    conn = h.open()
    assert not h.state.greeted(conn)
    h.send(conn, Hello())
    assert h.state.greeted(conn)
    assert not h.state.joined(conn)
    h.state.handoff(conn)
    assert h.state.connection_count == 0
    assert h.closes == {}
    assert h.tick(100.0).actions == []  # no handshake timeout for a connection served elsewhere
    with pytest.raises(ValueError, match="not an open connection"):
        h.state.handoff(conn)
    joined, _ = h.join()
    with pytest.raises(ValueError, match="not an open connection"):
        h.state.handoff(joined)


def test_a_connection_opened_greeted_joins_without_hello() -> None:
    h = Harness()
    h.apply(h.state.open(7, h.now, greeted=True))
    h.inbox[7] = []
    h.send(7, Join(room="r"))
    (welcome,) = h.take(7)
    assert isinstance(welcome, Welcome)
    assert h.state.joined(7)


def test_reject_answers_an_error_and_keeps_the_connection() -> None:
    h = Harness()
    conn = h.open()
    h.send(conn, Hello())
    h.take(conn)
    h.apply(h.state.reject(conn, ErrorCode.UNAVAILABLE, "try again"))
    assert errors(h.take(conn)) == ["unavailable"]
    assert h.closes == {}
    h.send(conn, Join(room="r"))
    assert isinstance(h.take(conn)[0], Welcome)


def test_evict_room_closes_its_members_without_peer_left() -> None:
    h = Harness(rooms=(RoomConfig(name="kept"),))
    a, _ = h.join()
    b, wb = h.join()
    h.join("other")
    k, _ = h.join("kept")
    h.drop(b)  # detached: its session goes too
    h.take(a)
    h.apply(h.state.evict_room("r", CloseCode.GOING_AWAY, "moved"))
    assert h.closes == {a: (CloseCode.GOING_AWAY, "moved")}
    assert h.take(a) == []
    assert "r" not in h.state.rooms()
    assert h.events[-1] == RoomClosedEvent(room="r")
    assert h.state.peers("other") != []
    h.apply(h.state.evict_room("kept", CloseCode.GOING_AWAY, "moved"))
    assert h.closes[k] == (CloseCode.GOING_AWAY, "moved")
    assert h.state.rooms().count("kept") == 1  # declared: stays, empty
    assert h.state.peers("kept") == []
    assert h.events[-1] == RoomClosedEvent(room="kept")  # its life on this node ended
    fresh = h.open()
    h.send(fresh, Hello())
    h.send(fresh, Resume(resume_token=wb.resume_token, ack=0))
    assert errors(h.take(fresh)) == ["resume_failed"]
    h.apply(h.state.evict_room("other", CloseCode.GOING_AWAY, "moved"))
    assert h.state.pending_bytes == 0  # every evicted outbox was subtracted
    h.tick(100.0)  # b's resume window passes: nothing left to report
    assert not [e for e in h.events if isinstance(e, PeerLeftEvent)]
