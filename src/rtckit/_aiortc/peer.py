"""Peer sessions: rollback, bundling, restart, nominated pair, stable re-offers, trickle."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc import (
    RTCRtpCodecParameters,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from rtckit.errors import InternalsError

if TYPE_CHECKING:
    from aioice import Candidate
    from aiortc import RTCIceTransport

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection
from rtckit._aiortc.versions import get_internal

# --- rollback, bundling, restart, nominated pair ---

_PC = "_RTCPeerConnection__"
_TRANSCEIVER_MID = "_RTCRtpTransceiver__mid"
_TRANSCEIVER_MLINE = "_RTCRtpTransceiver__mline_index"


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
        get_internal(pc, _PC + "currentLocalDescription"),
        get_internal(pc, _PC + "currentRemoteDescription"),
        get_internal(pc, _PC + "pendingRemoteDescription"),
    ]
    known = {m.rtp.muxId for d in others if d is not None for m in d.media}
    if not known:
        raise InternalsError("aiortc cannot roll back the first offer of a connection")
    pending = get_internal(pc, _PC + "pendingLocalDescription")
    seen: set[str] = get_internal(pc, _PC + "seenMids")
    new_mids = set() if pending is None else {m.rtp.muxId for m in pending.media} - known
    for transceiver in pc.getTransceivers():
        if transceiver.mid in new_mids:
            get_internal(transceiver, _TRANSCEIVER_MID)
            setattr(transceiver, _TRANSCEIVER_MID, None)
            setattr(transceiver, _TRANSCEIVER_MLINE, None)
    sctp = pc.sctp
    if sctp is not None and sctp.mid in new_mids:
        sctp.mid = None
    seen.difference_update(new_mids)
    setattr(pc, _PC + "pendingLocalDescription", None)
    get_internal(pc, _PC + "setSignalingState")("stable")


def ice_transports(pc: RTCPeerConnection) -> list[Any]:
    """The distinct ``RTCIceTransport`` objects of *pc* (public attributes only, no internals).

    Kept here because the result is used with :func:`selected_pair_info`.
    """
    found: list[Any] = []
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        if ice not in found:
            found.append(ice)
    if pc.sctp is not None and pc.sctp.transport.transport not in found:
        found.append(pc.sctp.transport.transport)
    return found


def selected_pair(pc: RTCPeerConnection) -> tuple[Candidate, Candidate] | None:
    """The nominated ICE pair (local, remote) of *pc*'s (bundled) transport, or ``None``.

    ``None`` before nomination. Relies on ``RTCIceTransport._connection`` (the aioice
    ``Connection``) and on aioice's ``Connection._nominated`` (component -> ``CandidatePair``)
    with the pair's public ``local_candidate`` and ``remote_candidate``.
    """
    for ice in ice_transports(pc):
        connection = get_internal(ice, "_connection")
        nominated: dict[int, Any] = get_internal(connection, "_nominated")
        pair = nominated.get(1)
        if pair is not None:
            return pair.local_candidate, pair.remote_candidate
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
    await get_internal(pc, _PC + "connect")()


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
    get_internal(sctp, "_bundled")
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
        if transceiver.mid is None and get_internal(transceiver, "_offerDirection") is None:
            transceiver._offerDirection = "inactive"


def bound_gathering(pc: RTCPeerConnection, timeout: float) -> int:
    """Cap the wait for STUN/TURN answers while gathering to *timeout* seconds.

    aioice's ``Connection.get_component_candidates(component, addresses, timeout=5)`` waits up
    to ``timeout`` for server-reflexive and relayed candidates, and aiortc calls it with the
    default from ``setLocalDescription``: an unreachable STUN server costs 5 s per connection.
    This binds a smaller ``timeout`` on the aioice ``Connection`` of each ICE gatherer of *pc*
    that has not gathered yet (relies on ``RTCIceGatherer._connection`` and that method's
    signature); host candidates are unaffected. Returns how many gatherers were bounded.
    """
    import functools

    count = 0
    for ice in ice_transports(pc):
        gatherer = ice.iceGatherer
        if gatherer.state != "new":
            continue
        connection = get_internal(gatherer, "_connection")
        method = get_internal(connection, "get_component_candidates")
        if isinstance(method, functools.partial):
            method = method.func
        connection.get_component_candidates = functools.partial(method, timeout=timeout)
        count += 1
    return count


# --- stable re-offers ---

_EXTENSION_IDS: Final = range(1, 15)  # one-byte RTP header extension ids (RFC 8285)
_DYNAMIC_PAYLOAD_TYPES: Final = range(96, 128)
_BROWSER_EXTENSION_IDS: Final = {
    # Chrome's numbering (the same in all its offers, audio and video): used for an extension
    # the session has not numbered yet, because Chrome checks a new id against every id its
    # transport registered, including those of its own offer rolled back in a glare.
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": 1,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 2,
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01": 3,
    "urn:ietf:params:rtp-hdrext:sdes:mid": 4,
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 10,
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id": 11,
}


def _codec_key(codec: RTCRtpCodecParameters, apt: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
    """What identifies a codec across m-lines (RTX: with the key of its ``apt`` codec)."""
    parameters = {k: v for k, v in codec.parameters.items() if k != "apt"}
    return (
        codec.mimeType.lower(),
        codec.clockRate,
        codec.channels or None,
        tuple(sorted((str(k), str(v)) for k, v in parameters.items())),
        apt,
    )


def _negotiated_media(pc: RTCPeerConnection) -> list[Any]:
    """The ``aiortc.sdp.MediaDescription`` objects of *pc*'s remote then local description."""
    import aiortc.sdp

    found: list[Any] = []
    for description in (pc.remoteDescription, pc.localDescription):
        if description is not None:
            found.extend(aiortc.sdp.SessionDescription.parse(description.sdp).media)
    return found


def _renumber_codecs(
    codecs: list[RTCRtpCodecParameters],
    payload_types: dict[tuple[Any, ...], int],
    used_types: set[int],
) -> list[RTCRtpCodecParameters]:
    """A new m-line's codecs, with the session's payload type for a known codec, else a free one.

    RTX codecs follow their ``apt`` codec (aiortc lists each right after it).
    """
    import dataclasses

    renumbered: dict[int, int] = {}
    keys: dict[int, tuple[Any, ...]] = {}
    result: list[RTCRtpCodecParameters] = []
    for codec in codecs:
        assert codec.payloadType is not None
        apt = codec.parameters.get("apt")
        key = _codec_key(codec, keys.get(apt) if isinstance(apt, int) else None)
        keys[codec.payloadType] = _codec_key(codec)
        number = payload_types.get(key)
        if number is None:
            number = codec.payloadType
            if number in used_types and number in _DYNAMIC_PAYLOAD_TYPES:
                free = [p for p in _DYNAMIC_PAYLOAD_TYPES if p not in used_types]
                if not free:
                    raise InternalsError(f"no RTP payload type left for {codec}")
                number = free[0]
            payload_types[key] = number
        used_types.add(number)
        renumbered[codec.payloadType] = number
        parameters = dict(codec.parameters)
        if isinstance(apt, int) and apt in renumbered:
            parameters["apt"] = renumbered[apt]
        result.append(dataclasses.replace(codec, payloadType=number, parameters=parameters))
    return result


async def create_stable_offer(pc: RTCPeerConnection) -> RTCSessionDescription:
    """``pc.createOffer()``, keeping what the current session negotiated (JSEP re-offers).

    aiortc's ``createOffer`` resets every transceiver's codecs and RTP header extensions to
    its defaults (``CODECS``/``HEADER_EXTENSIONS``, sdes:mid is id 1). After a browser's
    offer that is a reassignment Chrome refuses ("RTP extension ID reassignment not
    supported"), and the sender keeps the payload types it started with. This offer instead:

    - gives every m-line already negotiated (its mid in the remote or local description)
      the codecs it negotiated, with their payload types;
    - numbers every header extension (of every m-line, new ones too: they share the BUNDLE
      transport) with the id the session already uses for that URI, or else an id no m-line
      of the session uses, Chrome's own number for it when free (a first offer made in a
      glare with a browser's must not reuse an id of the browser's offer);
    - gives a new m-line's codecs the session's payload type for the same codec, or else a
      free one (RTX ``apt`` follows its codec);
    - keeps mids as aiortc allocates them (existing m-lines keep theirs, new ones take mids
      the connection never saw).

    Relies on: the private ``RTCRtpTransceiver._codecs`` and ``_headerExtensions`` (what
    ``createOffer`` overwrites and ``setLocalDescription``/``__connect`` then use for the
    sender and receiver parameters), and on ``aiortc.sdp.SessionDescription.parse``/``str``
    with ``MediaDescription.kind``, ``fmt``, ``rtp.muxId``, ``rtp.codecs`` and
    ``rtp.headerExtensions``.
    """
    import aiortc.sdp

    media_known = _negotiated_media(pc)
    negotiated_mids = {m.rtp.muxId for m in media_known}
    extension_ids: dict[str, int] = {}
    used_ids: set[int] = set()
    payload_types: dict[tuple[Any, ...], int] = {}
    used_types: set[int] = set()
    for media in media_known:
        for extension in media.rtp.headerExtensions:
            if extension.uri not in extension_ids and extension.id not in used_ids:
                extension_ids[extension.uri] = extension.id
            used_ids.add(extension.id)
        by_type = {c.payloadType: c for c in media.rtp.codecs}
        for codec in media.rtp.codecs:
            apt = codec.parameters.get("apt")
            target = by_type.get(apt) if isinstance(apt, int) else None
            key = _codec_key(codec, None if target is None else _codec_key(target))
            payload_types.setdefault(key, codec.payloadType)
            used_types.add(codec.payloadType)

    def extension_id(uri: str) -> int:
        if uri not in extension_ids:
            preferred = _BROWSER_EXTENSION_IDS.get(uri)
            reserved = set(_BROWSER_EXTENSION_IDS.values())
            free = [i for i in _EXTENSION_IDS if i not in used_ids]
            free.sort(key=lambda i: (i != preferred, i in reserved, i))
            if not free:
                raise InternalsError("no RTP header extension id left for " + uri)
            extension_ids[uri] = free[0]
            used_ids.add(free[0])
        return extension_ids[uri]

    transceivers = pc.getTransceivers()
    saved = {t: list(get_internal(t, "_codecs")) for t in transceivers if t.mid in negotiated_mids}
    offer = await pc.createOffer()
    description = aiortc.sdp.SessionDescription.parse(offer.sdp)
    for index, media in enumerate(description.media):
        if media.kind not in ("audio", "video"):
            continue
        transceiver = next((t for t in transceivers if t.mid == media.rtp.muxId), None)
        if transceiver is None:  # new: createOffer gave it this m-line, not yet its mid
            transceiver = next(t for t in transceivers if t._get_mline_index() == index)
        codecs = saved.get(transceiver) or _renumber_codecs(
            media.rtp.codecs, payload_types, used_types
        )
        extensions = [
            RTCRtpHeaderExtensionParameters(id=extension_id(e.uri), uri=e.uri)
            for e in media.rtp.headerExtensions
        ]
        media.rtp.codecs = codecs
        media.fmt = [c.payloadType for c in codecs]
        media.rtp.headerExtensions = extensions
        get_internal(transceiver, "_codecs")
        get_internal(transceiver, "_headerExtensions")
        transceiver._codecs = codecs
        transceiver._headerExtensions = extensions
    return RTCSessionDescription(sdp=str(description), type="offer")


# --- trickled candidates on bundled transports ---


async def add_trickled_candidate(pc: RTCPeerConnection, candidate: aiortc.RTCIceCandidate) -> None:
    """Add a trickled remote *candidate* to *pc*, reaching the ICE transport even when bundled.

    aiortc 1.16's ``addIceCandidate`` hands a candidate to the ICE transport of the m-line it
    names only if that transceiver / SCTP transport is not flagged as bundled (its private
    ``_bundled``); otherwise it only records the candidate in the remote description. A
    session's connection is max-bundle with its SCTP transport marked bundled
    (:func:`mark_sctp_bundled`) and every transceiver created bundled onto it, so *every*
    trickled candidate was dropped there: aioice saw only the end-of-candidates marker, and
    failed at once ("Components {1} have no candidate pairs") unless a check from the remote
    side had already given it a peer-reflexive candidate. A peer that trickles (a browser)
    then lost a race on each new connection.

    This calls ``addIceCandidate`` (it keeps the remote description's candidate list), then
    gives the candidate to the ICE transport that the named m-line uses now through the
    public ``RTCIceTransport.addRemoteCandidate`` (aioice ignores a candidate it has already).
    The m-line is found by ``sdpMid``, else by ``sdpMLineIndex`` in the remote description.
    Raises ``ValueError`` if the candidate names no m-line of *pc*.
    """
    import aiortc.sdp

    await pc.addIceCandidate(candidate)
    mid = candidate.sdpMid
    remote = pc.remoteDescription
    if mid is None and candidate.sdpMLineIndex is not None and remote is not None:
        media = aiortc.sdp.SessionDescription.parse(remote.sdp).media
        if 0 <= candidate.sdpMLineIndex < len(media):
            mid = media[candidate.sdpMLineIndex].rtp.muxId
    transport: RTCIceTransport | None = None
    for transceiver in pc.getTransceivers():
        if mid is not None and transceiver.mid == mid:
            transport = transceiver.receiver.transport.transport
    sctp = pc.sctp
    if sctp is not None and mid is not None and sctp.mid == mid:
        transport = sctp.transport.transport
    if transport is None:
        raise ValueError(
            f"candidate for an unknown m-line (mid {candidate.sdpMid!r}, "
            f"index {candidate.sdpMLineIndex!r})"
        )
    await transport.addRemoteCandidate(candidate)
