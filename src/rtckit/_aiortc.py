"""Every touch of aiortc's and aioice's private internals, in one place.

Each function is small, says in its docstring what it relies on, and has a test in
``tests/test_aiortc_internals.py`` that fails loudly (:class:`~rtckit.errors.InternalsError`)
when an aiortc/aioice upgrade moves it. Several parts of rtckit append their own section here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rtckit.errors import InternalsError

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from rtckit.peer.stats import CandidatePairInfo

__all__ = [
    "ice_transports",
    "mark_sctp_bundled",
    "resume_connect",
    "rollback_local_offer",
    "selected_candidate_pair",
    "settle_unoffered_transceivers",
]


# --- peer sessions: rollback, ICE transports, nominated pair (helper "peer") ---------------

_PC = "_RTCPeerConnection__"
_TRANSCEIVER_MID = "_RTCRtpTransceiver__mid"
_TRANSCEIVER_MLINE = "_RTCRtpTransceiver__mline_index"


def _get(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError as exc:
        raise InternalsError(
            f"{type(obj).__module__}.{type(obj).__qualname__} has no attribute {name!r}: "
            "the installed aiortc/aioice changed an internal rtckit relies on"
        ) from exc


def rollback_local_offer(pc: RTCPeerConnection) -> None:
    """Roll back a local *re*-offer (``have-local-offer`` -> ``stable``); aiortc has no rollback.

    Relies on the name-mangled ``RTCPeerConnection`` attributes ``__signalingState``,
    ``__pendingLocalDescription``, ``__currentLocalDescription``,
    ``__currentRemoteDescription``, ``__pendingRemoteDescription``, ``__seenMids``, the
    method ``__setSignalingState`` and ``RTCRtpTransceiver.__mid``/``__mline_index``. It
    undoes what ``setLocalDescription(offer)`` did: the pending description is dropped and
    the mids it gave to new transceivers (and to a new SCTP transport) are released, so that
    the remote offer can associate them. ICE role and gathering are left as they are: this is
    why only a re-offer (after a first completed negotiation) can be rolled back;
    :class:`rtckit.peer.negotiation.Negotiator` never asks for more.
    """
    if pc.signalingState != "have-local-offer":
        raise InternalsError(f"rollback in signaling state {pc.signalingState!r}")
    # aiortc keeps an applied remote offer as "pending" and an applied local offer as
    # "pending" until replaced: every description but the offer being rolled back counts.
    others = [
        _get(pc, _PC + "currentLocalDescription"),
        _get(pc, _PC + "currentRemoteDescription"),
        _get(pc, _PC + "pendingRemoteDescription"),
    ]
    known = {m.rtp.muxId for d in others if d is not None for m in d.media}
    if not known:
        raise InternalsError("aiortc cannot roll back the first offer of a connection")
    pending = _get(pc, _PC + "pendingLocalDescription")
    seen: set[str] = _get(pc, _PC + "seenMids")
    new_mids = set() if pending is None else {m.rtp.muxId for m in pending.media} - known
    for transceiver in pc.getTransceivers():
        if transceiver.mid in new_mids:
            _get(transceiver, _TRANSCEIVER_MID)
            setattr(transceiver, _TRANSCEIVER_MID, None)
            setattr(transceiver, _TRANSCEIVER_MLINE, None)
    sctp = pc.sctp
    if sctp is not None and sctp.mid in new_mids:
        sctp.mid = None
    seen.difference_update(new_mids)
    setattr(pc, _PC + "pendingLocalDescription", None)
    _get(pc, _PC + "setSignalingState")("stable")


def ice_transports(pc: RTCPeerConnection) -> list[Any]:
    """The distinct ``RTCIceTransport`` objects of *pc* (public attributes only, no internals).

    Kept here because the result is used with :func:`selected_candidate_pair`.
    """
    found: list[Any] = []
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        if ice not in found:
            found.append(ice)
    if pc.sctp is not None and pc.sctp.transport.transport not in found:
        found.append(pc.sctp.transport.transport)
    return found


def selected_candidate_pair(pc: RTCPeerConnection) -> CandidatePairInfo | None:
    """The nominated ICE pair of *pc*'s (bundled) transport, or ``None`` before nomination.

    Relies on ``RTCIceTransport._connection`` (the aioice ``Connection``) and on aioice's
    ``Connection._nominated`` (component -> ``CandidatePair``) with the pair's public
    ``local_candidate``, ``remote_candidate``, ``local_addr``, ``remote_addr``.
    """
    from rtckit.peer.stats import CandidatePairInfo

    for ice in ice_transports(pc):
        connection = _get(ice, "_connection")
        nominated: dict[int, Any] = _get(connection, "_nominated")
        pair = nominated.get(1)
        if pair is None:
            continue
        local, remote = pair.local_candidate, pair.remote_candidate
        return CandidatePairInfo(
            local_type=local.type,
            remote_type=remote.type,
            local_address=(local.host, local.port),
            remote_address=(remote.host, remote.port),
            protocol=local.transport,
        )
    return None


async def resume_connect(pc: RTCPeerConnection) -> None:
    """Start the senders/receivers that aiortc skipped because DTLS was still connecting.

    aiortc starts RTP senders and receivers in the private ``RTCPeerConnection.__connect``,
    run after each ``setLocalDescription``/``setRemoteDescription``, and only for transports
    whose DTLS state is already ``connected``. A renegotiation completed while the DTLS
    handshake is in progress therefore leaves new transceivers unstarted, for good. Running
    ``__connect`` again once connected starts them; it is idempotent (``send``/``receive``
    and the ICE/DTLS/SCTP starts are guarded), and aiortc itself runs it repeatedly.
    """
    await _get(pc, _PC + "connect")()


def mark_sctp_bundled(pc: RTCPeerConnection) -> None:
    """Mark *pc*'s SCTP transport as already bundled (call right after the first data channel).

    With ``bundlePolicy=max-bundle`` every transceiver created after the SCTP transport
    shares its DTLS/ICE transport, but ``RTCSctpTransport._bundled`` stays ``False`` when the
    SCTP transport was created first. When a later description makes the data m-line a
    bundle "slave" (a remote offer that lists media first, or a re-created connection whose
    first m-line is a track), ``setRemoteDescription`` then "replaces" the SCTP transport by
    the primary one and stops the old one, which is the very same shared transport: the
    connection never starts. Relies on the private ``RTCSctpTransport._bundled`` flag.
    """
    sctp = pc.sctp
    if sctp is None:
        raise InternalsError("mark_sctp_bundled() needs a data channel first")
    _get(sctp, "_bundled")
    sctp._bundled = True


def settle_unoffered_transceivers(pc: RTCPeerConnection) -> None:
    """Let an answer be set while local transceivers wait to be offered (call before it).

    ``setLocalDescription(answer)`` computes every transceiver's current direction from its
    private ``RTCRtpTransceiver._offerDirection``, which stays ``None`` for a transceiver the
    remote offer did not contain (a track added locally while the remote side was offering):
    aiortc 1.16 then raises ``ValueError: None is not in list``. Such a transceiver takes no
    part in this exchange, so it is given ``"inactive"``; the next local offer negotiates it.
    """
    for transceiver in pc.getTransceivers():
        if transceiver.mid is None and _get(transceiver, "_offerDirection") is None:
            transceiver._offerDirection = "inactive"
