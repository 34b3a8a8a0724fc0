"""RTP routing: by SSRC, then MID, then RID; RTX SSRCs registered."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from aiortc import (
    RTCRtpCodecParameters,
)
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters

if TYPE_CHECKING:
    pass

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection
from rtckit._aiortc.simulcast import negotiate_rid_extensions
from rtckit._aiortc.transports import on_every_dtls_transport
from rtckit._aiortc.versions import get_internal

# aiortc 1.14-1.16's ``RtpRouter.route_rtp`` (aiortc.rtcdtlstransport) routes a packet by its
# SSRC, else by its payload type when exactly one receiver of the transport has it (learning
# the SSRC). It fills ``mid_table`` but never reads it, and
# ``RTCDtlsTransport._register_rtp_receiver`` registers the media SSRC of each encoding, not
# its RTX SSRC (``RTCRtpDecodingParameters.rtx.ssrc``). On a bundle with two video receivers
# (two forwarded videos from an SFU) the RTX payload type is shared, so every retransmission
# is dropped: a lost packet is never repaired, and aiortc's 512-packet video jitter buffer
# waits ~10 s before it sends a PLI. This module replaces the router of each rtckit
# connection's DTLS transports by :class:`RtpRouting`. It relies on:
# * ``aiortc.rtcdtlstransport.RtpRouter`` (subclassed) and its ``receivers``, ``senders``,
#   ``mid_table``, ``ssrc_table``, ``payload_type_table`` and ``unregister_receiver``;
# * ``RTCDtlsTransport._rtp_router`` (read by ``_handle_rtp_data`` at each packet, and by the
#   SFU's tap) and ``RTCDtlsTransport._register_rtp_receiver(receiver, parameters)``, wrapped
#   on the instance; ``RTCDtlsTransport._rtp_header_extensions_map`` (for the tap's parse);
# * the parsed ``RtpPacket.extensions.mid`` / ``rtp_stream_id`` / ``repaired_rtp_stream_id``;
# * ``RTCRtpReceiver.__rtx_ssrc`` (RTX SSRC -> media SSRC, read when unwrapping RTX),
#   completed for an RTX SSRC learned from a packet;
# * ``RTCPeerConnection.__createDtlsTransport`` (through ``on_every_dtls_transport``, so that a
#   transport created later gets the router too).

_MAX_LEARNED_SSRCS: Final = 32  # per receiver: a remote sending random SSRCs grows nothing
_RECEIVER_RTX_SSRC: Final = "_RTCRtpReceiver__rtx_ssrc"


def _is_rtx_codec(codec: RTCRtpCodecParameters) -> bool:
    return codec.mimeType.lower().endswith("/rtx")


class RtpRouting(RtpRouter):
    """aiortc's RTP router, routing by SSRC, then MID, then RID, then payload type.

    A packet goes to the receiver registered for its SSRC (media *and* RTX SSRCs of the
    remote description, see :meth:`register_parameters`). A packet of an unknown SSRC goes to
    the receiver of its MID header extension (``sdes:mid``); without a MID, to the only
    receiver registered for its RID (``rtp-stream-id`` or, for RTX, ``repaired-rtp-stream-id``:
    what simulcast streams carry); without either, as aiortc does, to the only receiver of its
    payload type. A packet with a MID no receiver has is dropped (it is not guessed by
    payload type). The receiver must accept the payload type in every case. The SSRC found
    is learned; an RTX SSRC learned so is also given to the receiver (its media SSRC: the one
    of the same RID, or the receiver's only media SSRC) so that aiortc unwraps its packets.
    At most 32 learned SSRCs are kept per receiver (the oldest is forgotten first).
    """

    def __init__(self) -> None:
        super().__init__()
        #: RID -> receivers registered for it (:meth:`register_rids`)
        self.rid_table: dict[str, set[Any]] = {}
        #: receiver -> its RTX payload types
        self.rtx_payload_types: dict[Any, frozenset[int]] = {}
        #: receiver -> its media SSRCs, each with the RID it was learned with (or None)
        self.media_ssrcs: dict[Any, dict[int, str | None]] = {}
        #: receiver -> the SSRCs learned from packets, oldest first
        self.learned: dict[Any, dict[int, None]] = {}

    @classmethod
    def replacing(cls, old: RtpRouter) -> RtpRouting:
        """A router taking over *old*'s registrations (RTX SSRCs of started receivers too)."""
        router = cls()
        router.receivers = set(old.receivers)
        router.senders = dict(old.senders)
        router.mid_table = dict(old.mid_table)
        router.ssrc_table = dict(old.ssrc_table)
        router.payload_type_table = {pt: set(r) for pt, r in old.payload_type_table.items()}
        for receiver in router.receivers:
            rtx_ssrcs: dict[int, int] = getattr(receiver, _RECEIVER_RTX_SSRC, None) or {}
            for rtx_ssrc, media_ssrc in rtx_ssrcs.items():
                router.ssrc_table[rtx_ssrc] = receiver
                router.media_ssrcs.setdefault(receiver, {})[media_ssrc] = None
        return router

    def register_parameters(self, receiver: Any, parameters: RTCRtpReceiveParameters) -> None:
        """Register what aiortc's registration leaves out: RTX SSRCs and RTX payload types."""
        self.rtx_payload_types[receiver] = frozenset(
            c.payloadType
            for c in parameters.codecs
            if _is_rtx_codec(c) and c.payloadType is not None
        )
        media = self.media_ssrcs.setdefault(receiver, {})
        for encoding in parameters.encodings:
            if encoding.ssrc:
                media.setdefault(encoding.ssrc, None)
            if encoding.rtx is not None and encoding.rtx.ssrc:
                self.ssrc_table[encoding.rtx.ssrc] = receiver

    def register_rids(self, receiver: Any, rids: list[str]) -> None:
        """Route packets of these RIDs (and RTX repairing them) to *receiver*."""
        for rid in rids:
            self.rid_table.setdefault(rid, set()).add(receiver)

    def unregister_receiver(self, receiver: Any) -> None:
        super().unregister_receiver(receiver)
        for receivers in self.rid_table.values():
            receivers.discard(receiver)
        self.rtx_payload_types.pop(receiver, None)
        self.media_ssrcs.pop(receiver, None)
        self.learned.pop(receiver, None)

    def route_rtp(self, packet: Any) -> Any:
        pt_receivers = self.payload_type_table.get(packet.payload_type)
        if not pt_receivers:
            return None
        ssrc = packet.ssrc
        known = self.ssrc_table.get(ssrc)
        if known is not None:
            return known if known in pt_receivers else None
        extensions = packet.extensions
        mid: str | None = extensions.mid
        rid: str | None = extensions.rtp_stream_id or extensions.repaired_rtp_stream_id
        receiver: Any = None
        if mid is not None:
            receiver = self.mid_table.get(mid)
        elif rid is not None:
            named = self.rid_table.get(rid)
            if named is not None and len(named) == 1:
                receiver = next(iter(named))
        if receiver is None and mid is None and len(pt_receivers) == 1:
            receiver = next(iter(pt_receivers))
        if receiver is None or receiver not in pt_receivers:
            return None
        self._learn(receiver, ssrc, packet.payload_type, rid)
        return receiver

    def _learn(self, receiver: Any, ssrc: int, payload_type: int, rid: str | None) -> None:
        self.ssrc_table[ssrc] = receiver
        media = self.media_ssrcs.setdefault(receiver, {})
        learned = self.learned.setdefault(receiver, {})
        learned[ssrc] = None
        if len(learned) > _MAX_LEARNED_SSRCS:
            oldest = next(iter(learned))
            del learned[oldest]
            if self.ssrc_table.get(oldest) is receiver:
                del self.ssrc_table[oldest]
            media.pop(oldest, None)
            rtx_map = getattr(receiver, _RECEIVER_RTX_SSRC, None)
            if isinstance(rtx_map, dict):
                rtx_map.pop(oldest, None)
        if payload_type not in self.rtx_payload_types.get(receiver, ()):
            media[ssrc] = rid
            return
        # the media SSRC this RTX SSRC repairs: the one of its RID, else the only one
        repaired = [s for s, r in media.items() if rid is None or r == rid]
        rtx_ssrcs = getattr(receiver, _RECEIVER_RTX_SSRC, None)
        if len(repaired) == 1 and isinstance(rtx_ssrcs, dict):
            rtx_ssrcs.setdefault(ssrc, repaired[0])


def install_rtp_routing_on_transport(transport: RTCDtlsTransport) -> RtpRouting:
    """Give *transport* an :class:`RtpRouting` router (idempotent); return it.

    Receivers registered before keep their registrations (and the RTX SSRCs aiortc gave
    them). Later registrations (``_register_rtp_receiver``) also register the RTX SSRCs and
    payload types.
    """
    current = get_internal(transport, "_rtp_router")
    if isinstance(current, RtpRouting):
        return current
    register = get_internal(transport, "_register_rtp_receiver")
    get_internal(transport, "_rtp_header_extensions_map")
    router = RtpRouting.replacing(current)

    def register_rtp_receiver(receiver: Any, parameters: RTCRtpReceiveParameters) -> None:
        register(receiver, parameters)
        routing = transport._rtp_router
        if isinstance(routing, RtpRouting):
            routing.register_parameters(receiver, parameters)

    transport._register_rtp_receiver = register_rtp_receiver  # type: ignore[method-assign]
    transport._rtp_router = router
    return router


def install_rtp_routing(pc: RTCPeerConnection) -> None:
    """Route *pc*'s incoming RTP with :class:`RtpRouting`, on its transports now and later.

    Call it right after creating the connection (rtckit's peer sessions and
    :func:`rtckit.peer.connection.create_peer_connection` do). Idempotent. The RID header
    extensions that routing by RID reads are negotiated from then on, by every aiortc
    connection of the process (:func:`~rtckit._aiortc.simulcast.negotiate_rid_extensions`).
    """
    negotiate_rid_extensions()
    on_every_dtls_transport(pc, install_rtp_routing_on_transport, "_rtckit_routing")
