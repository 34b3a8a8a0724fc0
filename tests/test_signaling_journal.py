"""The session journal, sans-I/O: the records a journaling state machine writes, the journal
they build (JournalImage), and a second state machine taking the room over from it."""

from __future__ import annotations

import pytest

from rtckit.backplane.journal import (
    JournalImage,
    Record,
    RoomSnapshot,
    SessionData,
    decode_session,
    encode_session,
)
from rtckit.errors import RemoteProtocolError
from rtckit.signaling.protocol import (
    Ack,
    AppMessage,
    Bye,
    ErrorCode,
    Hello,
    Message,
    PeerJoined,
    PeerLeft,
    Resume,
    Resumed,
)
from rtckit.signaling.state import Output, PeerJoinedEvent, PeerLeftEvent
from test_signaling_state import Harness, errors


class Journaled(Harness):
    """A Harness whose state machine journals; every output's records go to one journal."""

    def __init__(self, **config: object) -> None:
        super().__init__(**config)
        self.state.journal = True
        self.journals: dict[str, JournalImage] = {}
        self.records: list[Record] = []

    def apply(self, out: Output) -> Output:
        for record in out.records or ():
            self.records.append(record)
            self.journals.setdefault(record.room, JournalImage(record.room)).apply([record])
        return super().apply(out)

    def snapshot(self, room: str = "r") -> RoomSnapshot:
        snapshot = self.journals[room].snapshot()
        assert snapshot is not None
        return snapshot


def take_over(
    first: Journaled, now: float = 0.0, grace: float = 0.0, **config: object
) -> Journaled:
    """Another node's state machine takes room "r" over from *first*'s journal (the store
    holds that journal: the new home's records apply on top of it)."""
    second = Journaled(**config)
    second.now = now
    snapshot = first.snapshot()
    second.journals["r"] = JournalImage.of(snapshot)
    second.apply(second.state.restore_room(snapshot, now, grace=grace))
    return second


def resume(h: Harness, token: str, ack: int) -> tuple[int, list[Message]]:
    conn = h.open()
    h.send(conn, Hello())
    h.send(conn, Resume(resume_token=token, ack=ack))
    return conn, list(h.take(conn))


def test_session_data_roundtrip_and_bad_records() -> None:
    data = SessionData(
        peer_joined='{"type":"peer-joined"}',
        resume_token="x.y",
        token=None,
        trusted=False,
        order=3,
        room_config={"topology": "sfu", "max_peers": None, "ice_servers": None},
    )
    assert decode_session(encode_session(data)) == data
    for bad in ("", "[]", '{"p": 1}', '{"p":"a","r":"b","t":null,"s":"no","o":1,"c":null}'):
        with pytest.raises(RemoteProtocolError):
            decode_session(bad)


def test_no_records_without_journaling() -> None:
    h = Harness()
    a, _ = h.join()
    _b, wb = h.join()
    out = h.send(a, AppMessage(to=wb.peer_id, payload=1, seq=1))
    assert out.records is None


def test_records_follow_every_change_of_a_session() -> None:
    h = Journaled()
    a, wa = h.join()
    b, wb = h.join()
    h.send(a, AppMessage(to=wb.peer_id, payload="hi", seq=1))
    got = h.take(b)
    h.send(b, Ack(ack=max(m.seq or 0 for m in got if hasattr(m, "seq"))))
    ops = [(r.op, r.peer) for r in h.records]
    assert ops[:2] == [("J", wa.peer_id), ("J", wb.peer_id)]
    assert ("O", wa.peer_id) in ops  # peer-joined of b, in a's outbox
    assert ("I", wa.peer_id) in ops  # a's seq 1 processed
    assert ops[-1] == ("A", wb.peer_id)  # b acknowledged: its outbox is empty again
    journal = h.journals["r"]
    assert journal.outboxes[wb.peer_id] == []
    assert journal.in_seq[wa.peer_id] == 1
    h.send(b, Bye())
    assert h.records[-1].op == "O"  # peer-left of b, in a's outbox, after b's "L"
    assert wb.peer_id not in journal.data


def test_the_journal_refuses_records_out_of_order() -> None:
    journal = JournalImage("r")
    with pytest.raises(ValueError, match="did not join"):
        journal.apply([Record("O", "r", "p", (1, "t", "app", None, None))])
    journal.apply([Record("J", "r", "p", ("{}",))])
    with pytest.raises(ValueError, match="seq 2 after 0"):
        journal.apply([Record("O", "r", "p", (2, "t", "app", None, None))])


def test_another_node_takes_the_room_over_and_sessions_resume_exactly_once() -> None:
    first = Journaled()
    a, wa = first.join()
    b, wb = first.join()
    first.send(a, AppMessage(to=wb.peer_id, payload=1, seq=1))
    got = [m for m in first.take(b) if isinstance(m, AppMessage)]
    first.send(b, Ack(ack=got[-1].seq or 0))
    for i in range(2, 6):  # b receives these but does not acknowledge them
        first.send(a, AppMessage(to=wb.peer_id, payload=i, seq=i))
    seen = [m for m in first.take(b) if isinstance(m, AppMessage)]
    assert [m.payload for m in seen] == [2, 3, 4, 5]
    b_last = seen[1].seq or 0  # b's client got 2 and 3 before its node died
    # the home dies; another node takes the room over from the journal
    second = take_over(first, now=100.0)
    restored = [e for e in second.events if isinstance(e, PeerJoinedEvent)]
    assert [(e.peer.id, e.restored) for e in restored] == [(wa.peer_id, True), (wb.peer_id, True)]
    c, messages = resume(second, wb.resume_token, b_last)
    assert messages[1] == Resumed(room="r", peer_id=wb.peer_id, ack=0)
    assert [m.payload for m in messages[2:] if isinstance(m, AppMessage)] == [4, 5]
    d, messages = resume(second, wa.resume_token, 0)
    assert messages[1] == Resumed(room="r", peer_id=wa.peer_id, ack=5)
    # a resends 5 (processed before the death: dropped) and 6 (new)
    second.take(c)
    second.send(d, AppMessage(to=wb.peer_id, payload=5, seq=5))
    second.send(d, AppMessage(to=wb.peer_id, payload=6, seq=6))
    assert [m.payload for m in second.take(c) if isinstance(m, AppMessage)] == [6]


def test_restored_sessions_expire_after_the_window_and_grace() -> None:
    first = Journaled(resume_window=5.0)
    first.join()
    first.join()
    second = take_over(first, grace=10.0, resume_window=5.0)
    second.tick(14.0)
    assert second.state.peers("r") != []
    second.tick(15.5)
    assert second.state.peers("r") == []
    assert [e.reason for e in second.events if isinstance(e, PeerLeftEvent)] == ["timeout"] * 2


def test_the_former_homes_media_server_leaves_and_frees_its_peer_id() -> None:
    first = Journaled()
    _a, wa = first.join()
    first.join(peer_id="sfu", trusted=True)
    second = take_over(first)
    assert [p.id for p in second.state.peers("r")] == [wa.peer_id]
    assert second.records[-2:][0] == Record("L", "r", "sfu")
    c, messages = resume(second, wa.resume_token, 0)
    left = [m for m in messages if isinstance(m, PeerLeft)]
    assert [(m.peer_id, m.reason) for m in left] == [("sfu", "closed")]
    _e, welcome = second.join(peer_id="sfu", trusted=True)  # this node's own server joins
    assert welcome.peer_id == "sfu"
    assert any(isinstance(m, PeerJoined) for m in second.take(c))


def test_a_client_ahead_of_the_journal_cannot_resume() -> None:
    first = Journaled()
    a, _wa = first.join()
    b, wb = first.join()
    snapshot = first.snapshot()  # written before a's message reached the journal
    first.send(a, AppMessage(to=wb.peer_id, payload=1, seq=1))
    ahead = max(m.seq or 0 for m in first.take(b) if isinstance(m, AppMessage))
    second = Journaled()
    second.journals["r"] = JournalImage.of(snapshot)
    second.apply(second.state.restore_room(snapshot, 0.0))
    _c, messages = resume(second, wb.resume_token, ahead)
    assert errors(messages) == [ErrorCode.RESUME_FAILED]  # it joins again as a new peer
    assert wb.peer_id not in [p.id for p in second.state.peers("r")]


def test_a_room_already_served_is_not_restored_and_bad_records_are_refused() -> None:
    first = Journaled()
    first.join()
    second = Journaled()
    second.join()
    out = second.state.restore_room(first.snapshot(), 0.0)
    assert out.records is None
    assert out.events == []
    assert len(second.state.peers("r")) == 1
    snapshot = first.snapshot()
    bad = snapshot.sessions[0]
    broken = RoomSnapshot(
        room="r",
        sessions=(
            type(bad)(
                peer_id="someone-else",
                data=bad.data,
                out_seq=bad.out_seq,
                in_seq=bad.in_seq,
                outbox=bad.outbox,
            ),
        ),
    )
    with pytest.raises(RemoteProtocolError):
        Journaled().state.restore_room(broken, 0.0)


def test_snapshot_and_image_agree() -> None:
    h = Journaled()
    a, _wa = h.join()
    b, wb = h.join()
    for i in range(1, 4):
        h.send(a, AppMessage(to=wb.peer_id, payload=i, seq=i))
    h.send(b, Ack(ack=2))
    assert h.state.snapshot_room("r") == h.snapshot()
    assert JournalImage.of(h.snapshot()).snapshot() == h.snapshot()
