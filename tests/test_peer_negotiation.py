"""The pure perfect-negotiation machine, driven synchronously."""

from __future__ import annotations

import importlib

import pytest

from rtckit.errors import LocalProtocolError, NegotiationError, RemoteProtocolError
from rtckit.peer.negotiation import (
    ApplyRemoteDescription,
    DropDescription,
    IgnoreOffer,
    MakeAnswer,
    MakeOffer,
    NegotiationState,
    Negotiator,
    Nothing,
    SendDescription,
    Wait,
    polite_for,
)
from rtckit.peer.signaller import (
    Description,
    PeerCandidate,
    PeerRestart,
    message_from_dict,
    message_to_dict,
)


def established(*, polite: bool) -> Negotiator:
    n = Negotiator(polite=polite, established=True)
    return n


def test_impolite_offers_first_and_completes() -> None:
    n = Negotiator(polite=False)
    assert n.local_change() == MakeOffer()
    assert n.making_offer
    assert n.offer_made() == SendDescription(type="offer")
    assert n.state.value == "have-local-offer"
    assert n.remote_description("answer") == ApplyRemoteDescription(type="answer")
    assert n.is_setting_remote_answer_pending
    assert n.remote_applied("answer") == Nothing()
    assert n.state is NegotiationState.STABLE
    assert n.established
    assert n.negotiated == n.changes == 1


def test_polite_waits_for_first_offer_then_offers_its_changes() -> None:
    n = Negotiator(polite=True)
    assert isinstance(n.local_change(), Wait)
    assert n.remote_description("offer") == ApplyRemoteDescription(type="offer")
    assert n.remote_applied("offer") == MakeAnswer()
    assert n.answer_made() == SendDescription(type="answer")
    # its own change is still pending: it offers now
    assert n.next_step() == MakeOffer()


def test_changes_during_offer_trigger_another_offer() -> None:
    n = Negotiator(polite=False)
    assert n.local_change() == MakeOffer()
    assert isinstance(n.local_change(), Wait)  # while making the offer
    n.offer_made()
    assert isinstance(n.local_change(), Wait)  # while waiting for the answer
    n.remote_description("answer")
    assert n.remote_applied("answer") == MakeOffer()  # changes 2 and 3 remain
    assert n.offering == 3


def test_glare_impolite_ignores_polite_rolls_back() -> None:
    impolite, polite = established(polite=False), established(polite=True)
    assert impolite.local_change() == MakeOffer()
    assert polite.local_change() == MakeOffer()
    impolite.offer_made()
    polite.offer_made()
    # both offers cross on the wire
    assert impolite.remote_description("offer") == IgnoreOffer()
    assert impolite.accept_candidate_errors()
    decision = polite.remote_description("offer")
    assert decision == ApplyRemoteDescription(type="offer", rollback=True)
    polite.rolled_back()
    assert polite.state is NegotiationState.STABLE
    assert polite.remote_applied("offer") == MakeAnswer()
    assert polite.answer_made() == SendDescription(type="answer")
    # the impolite side gets its answer, the polite side offers its change again
    assert impolite.remote_description("answer") == ApplyRemoteDescription(type="answer")
    assert impolite.remote_applied("answer") == Nothing()
    assert polite.next_step() == MakeOffer()
    polite.offer_made()
    assert impolite.remote_description("offer") == ApplyRemoteDescription(type="offer")
    assert not impolite.accept_candidate_errors()
    assert impolite.remote_applied("offer") == MakeAnswer()
    impolite.answer_made()
    polite.remote_description("answer")
    assert polite.remote_applied("answer") == Nothing()
    assert polite.negotiated == polite.changes
    assert impolite.negotiated == impolite.changes


def test_stale_answer_is_dropped() -> None:
    n = established(polite=True)
    assert isinstance(n.remote_description("answer"), DropDescription)


def test_failures_keep_changes_pending() -> None:
    n = Negotiator(polite=False)
    n.local_change()
    assert n.offer_failed() == Nothing()
    assert n.next_step() == MakeOffer()
    n.offer_made()
    n.remote_description("answer")
    assert n.remote_failed("answer") == Nothing()
    assert not n.is_setting_remote_answer_pending


def test_misuse_is_reported() -> None:
    n = Negotiator(polite=False)
    with pytest.raises(NegotiationError):
        n.offer_made()
    with pytest.raises(NegotiationError):
        n.answer_made()
    with pytest.raises(NegotiationError):
        n.remote_description("pranswer")


def test_polite_for_is_antisymmetric() -> None:
    assert polite_for("alice", "bob") is True
    assert polite_for("bob", "alice") is False
    with pytest.raises(NegotiationError):
        polite_for("x", "x")


@pytest.mark.parametrize(
    "message",
    [
        Description(type="offer", sdp="v=0\r\n", generation=2),
        PeerCandidate(candidate="candidate:1 1 udp 1 1.2.3.4 5 typ host", sdp_mid="0"),
        PeerCandidate(candidate="", sdp_mline_index=0, generation=1),
        PeerRestart(generation=3),
    ],
)
def test_messages_round_trip(message: object) -> None:
    assert message_from_dict(message_to_dict(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"kind": "nope"},
        {"kind": "description", "type": "rollback", "sdp": ""},
        {"kind": "description", "type": "offer"},
        {"kind": "candidate", "candidate": 3},
        {"kind": "candidate", "candidate": "", "sdpMLineIndex": True},
        {"kind": "restart", "generation": -1},
        {"kind": "restart", "generation": "1"},
    ],
)
def test_bad_messages_are_protocol_errors(data: object) -> None:
    with pytest.raises(RemoteProtocolError):  # what the other side sent: a remote error
        message_from_dict(data)


def test_a_negative_generation_made_locally_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        PeerRestart(generation=-1)
    with pytest.raises(LocalProtocolError):
        PeerCandidate(candidate="", generation=-1)


def test_stats_snapshot_sums_streams_and_tolerates_missing_rtt() -> None:
    from types import SimpleNamespace

    from rtckit.peer.stats import Quality, quality_of, snapshot_from_report

    report = [
        SimpleNamespace(type="inbound-rtp", packetsReceived=10, packetsLost=1, jitter=0.01),
        SimpleNamespace(type="inbound-rtp", packetsReceived=5, packetsLost=-1, jitter=0.02),
        SimpleNamespace(type="outbound-rtp", packetsSent=7),
        SimpleNamespace(type="remote-inbound-rtp", roundTripTime=None, fractionLost=0.0),
        SimpleNamespace(type="remote-inbound-rtp", roundTripTime=0.2, fractionLost=0.05),
        SimpleNamespace(type="transport", bytesSent=100, bytesReceived=200),
    ]
    snap = snapshot_from_report(report, timestamp=1.0)
    assert (snap.packets_received, snap.packets_lost, snap.packets_sent) == (15, 1, 7)
    assert (snap.bytes_sent, snap.bytes_received) == (100, 200)
    assert snap.round_trip_time == 0.2
    assert snap.inbound_streams == 2
    assert quality_of(snap) is Quality.FAIR
    assert quality_of(snapshot_from_report([], timestamp=0)) is Quality.UNKNOWN


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("rtckit.peer.negotiation", "SignalingState", "NegotiationState"),
        ("rtckit.peer.signaller", "Candidate", "PeerCandidate"),
        ("rtckit.peer.signaller", "Restart", "PeerRestart"),
        ("rtckit.peer", "Candidate", "PeerCandidate"),
        ("rtckit.peer", "Restart", "PeerRestart"),
    ],
)
def test_renamed_names_still_import_with_a_warning(module: str, old: str, new: str) -> None:
    imported = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is deprecated: use .*\.{new}$"):
        value = getattr(imported, old)
    assert value is getattr(imported, new)
    assert old not in imported.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nonexistent'"):
        getattr(imported, "Nonexistent")  # noqa: B009
