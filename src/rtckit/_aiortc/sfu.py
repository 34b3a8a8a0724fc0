"""SFU: forwarding RTP without decoding, on aiortc's senders and receivers."""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aioice.ice import StunProtocol
from aiortc import (
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters as RTCRtpReceiveParameters
from aiortc.rtp import RtcpSrPacket, RtpPacket

if TYPE_CHECKING:
    pass

if TYPE_CHECKING:
    pass
from rtckit._aiortc.ice import ice_connection
from rtckit._aiortc.rtp_routing import install_rtp_routing_on_transport
from rtckit._aiortc.srtp import widen_transport_srtp
from rtckit._aiortc.versions import missing_internal

#: How far a forwarded stream's sequence numbers jump to make an aiortc receiver skip a
#: hole it can never fill. aiortc's video receiver (``RTCRtpReceiver``, 1.14 to 1.16) puts
#: packets in a ``JitterBuffer`` of 512 slots that hands out frames only in sequence
#: order: a packet lost for good stalls it until a packet 512 numbers later overflows it
#: (tens of seconds on a low layer), and aiortc asks for no keyframe meanwhile. A packet
#: more than twice the capacity ahead empties it at once (``smart_remove`` of everything),
#: restarts it there and makes aiortc send a PLI. Other receivers take the jump as loss of
#: the skipped numbers (libwebrtc: a NACK list over 1000 is cleared, with a keyframe
#: request). Tested by tests/test_aiortc_internals.py.
AIORTC_JITTER_SKIP = 1024

# The SFU forwards RTP without decoding. It relies on:
# * RTCRtpReceiveParameters (aiortc.rtcrtpparameters; aiortc does not export it), built from the
#   negotiated codecs to start a receiver by hand;
# * RTCRtpTransceiver._codecs / ._headerExtensions: the negotiated codecs and extension IDs;
# * RTCRtpSender._ssrc / ._rtx_ssrc and RTCRtpSender._send_rtcp(list of packets);
# * RTCRtpReceiver.receive() being what starts the decoder thread, and
#   RTCDtlsTransport._register_rtp_receiver / ._unregister_rtp_receiver;
# * RTCDtlsTransport._handle_rtp_data(data, arrival_time_ms) being called with each
#   decrypted RTP packet, ._rtp_router.route_rtp(packet) (see rtckit._aiortc.rtp_routing),
#   and ._send_rtp(data) encrypting and sending RTP or RTCP; for the hot path, ._state,
#   ._tx_srtp (widened by rtckit._aiortc.srtp) and the ICE transport's aioice
#   Connection._nominated pairs;
# * the module globals aiortc.rtcrtpreceiver.get_decoder / aiortc.rtcrtpsender.get_encoder.

_sfu_logger = logging.getLogger("rtckit._aiortc")


def _sfu_require(obj: object, name: str, what: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError as exc:
        raise missing_internal(f"{what} ({type(obj).__name__}.{name})") from exc


RtpCallback = Callable[[bytes, int], Awaitable[None]]


def sfu_negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs negotiated on ``transceiver``, preferred first (``RTCRtpTransceiver._codecs``).

    The sender sends with the first; RTX entries carry ``parameters["apt"]``.
    """
    codecs: list[RTCRtpCodecParameters] = _sfu_require(transceiver, "_codecs", "negotiated codecs")
    return list(codecs)


def sfu_negotiated_header_extensions(
    transceiver: RTCRtpTransceiver,
) -> list[RTCRtpHeaderExtensionParameters]:
    """The negotiated header extensions (``RTCRtpTransceiver._headerExtensions``)."""
    exts: list[RTCRtpHeaderExtensionParameters] = _sfu_require(
        transceiver, "_headerExtensions", "negotiated header extensions"
    )
    return list(exts)


def sfu_sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """The sender's media SSRC and RTX SSRC (``RTCRtpSender._ssrc`` / ``._rtx_ssrc``).

    These are the SSRCs announced in the SDP; the remote side routes RTCP feedback by them.
    """
    ssrc: int = _sfu_require(sender, "_ssrc", "the sender SSRC")
    rtx: int = _sfu_require(sender, "_rtx_ssrc", "the sender RTX SSRC")
    return ssrc, rtx


def sfu_take_over_receiver(
    receiver: RTCRtpReceiver, on_start: Callable[[RTCRtpReceiveParameters], None]
) -> bool:
    """Make ``receiver`` start without a decoder thread; return False if it already started.

    Replaces ``receive`` on the instance: the replacement registers the receiver with its
    DTLS transport's RTP router (``RTCDtlsTransport._register_rtp_receiver``), so packets and
    RTCP are still routed to it by SSRC and payload type, and calls the *current* ``on_start``
    (the one of the latest take-over) with the parameters. It does not start aiortc's decoder
    thread nor its RTCP task, and the receiver is never marked started (so
    ``RTCRtpReceiver.stop()`` does nothing: undo with :func:`sfu_release_receiver`).

    Taken over again (a republish on a reused m-line), a receiver that aiortc already asked to
    receive (its ``receive`` ran, possibly while no publication owned it) calls ``on_start``
    at once with the parameters it got: aiortc calls ``receive`` only after a negotiation, and
    that call may come before the new owner took over. If the receiver already started the
    stock way (``__started``), its decoder thread is stopped at once (``__stop_decoder``) and
    False is returned.
    """
    install_rtp_routing_on_transport(receiver.transport)
    started = _sfu_require(receiver, "_RTCRtpReceiver__started", "the receiver started flag")
    if started:
        stop = _sfu_require(receiver, "_RTCRtpReceiver__stop_decoder", "the receiver decoder stop")
        stop()
        return False
    _sfu_require(receiver.transport, "_register_rtp_receiver", "RTP receiver registration")
    receiver._rtckit_sfu_on_start = on_start  # type: ignore[attr-defined]
    if getattr(receiver, "_rtckit_sfu_receive", None) is None:

        async def receive(parameters: RTCRtpReceiveParameters) -> None:
            receiver._rtckit_sfu_parameters = parameters  # type: ignore[attr-defined]
            if not getattr(receiver, "_rtckit_sfu_registered", False):
                receiver._rtckit_sfu_registered = True  # type: ignore[attr-defined]
                receiver.transport._register_rtp_receiver(receiver, parameters)
            current = getattr(receiver, "_rtckit_sfu_on_start", None)
            if current is not None:
                receiver._rtckit_sfu_on_start = None  # type: ignore[attr-defined]
                current(parameters)

        receiver._rtckit_sfu_receive = receive  # type: ignore[attr-defined]
        receiver.receive = receive  # type: ignore[method-assign]
    elif getattr(receiver, "_rtckit_sfu_parameters", None) is not None:
        # aiortc already called receive (this m-line was negotiated before): start now,
        # registered with the router again
        receiver._rtckit_sfu_on_start = None  # type: ignore[attr-defined]
        parameters = receiver._rtckit_sfu_parameters  # type: ignore[attr-defined]
        if not getattr(receiver, "_rtckit_sfu_registered", False):
            receiver._rtckit_sfu_registered = True  # type: ignore[attr-defined]
            receiver.transport._register_rtp_receiver(receiver, parameters)
        on_start(parameters)
    return True


def sfu_release_receiver(receiver: RTCRtpReceiver) -> None:
    """Unregister a taken-over receiver from its transport's RTP router (idempotent)."""
    receiver._rtckit_sfu_on_start = None  # type: ignore[attr-defined]
    if getattr(receiver, "_rtckit_sfu_registered", False):
        receiver.transport._unregister_rtp_receiver(receiver)
        receiver._rtckit_sfu_registered = False  # type: ignore[attr-defined]


class _RtpTap:
    """Per-transport dispatcher in front of ``RTCDtlsTransport._handle_rtp_data``."""

    def __init__(self, transport: RTCDtlsTransport) -> None:
        self.original: Callable[[bytes, int], Awaitable[None]] = transport._handle_rtp_data
        self.transport = transport
        self.callbacks: dict[RTCRtpReceiver, RtpCallback] = {}
        self.by_ssrc: dict[int, RtpCallback | None] = {}

    async def handle(self, data: bytes, arrival_time_ms: int) -> None:
        if len(data) >= 12:
            ssrc = int.from_bytes(data[8:12], "big")
            callback = self.by_ssrc.get(ssrc, _MISSING)
            if callback is _MISSING:
                callback = self._route(ssrc, data)
            if callback is not None:
                try:
                    await callback(data, arrival_time_ms)
                except Exception:
                    _sfu_logger.exception("SFU RTP callback failed")
                return
        await self.original(data, arrival_time_ms)

    def _route(self, ssrc: int, data: bytes) -> RtpCallback | None:
        """The callback of a packet of a new SSRC, found (and learned) by the transport's router."""
        transport = self.transport
        try:
            packet = RtpPacket.parse(data, transport._rtp_header_extensions_map)
        except ValueError:
            return None
        receiver: Any = transport._rtp_router.route_rtp(packet)
        if receiver is None:
            return None
        callback: RtpCallback | None = self.callbacks.get(receiver)
        if len(self.by_ssrc) >= 256:  # a remote sending random SSRCs: start over
            self.by_ssrc.clear()
        self.by_ssrc[ssrc] = callback
        return callback


_MISSING: Any = object()


def sfu_install_rtp_tap(
    transport: RTCDtlsTransport, receiver: RTCRtpReceiver, callback: RtpCallback
) -> None:
    """Deliver the decrypted RTP bytes routed to ``receiver`` to ``callback`` instead.

    Replaces ``_handle_rtp_data`` on the transport instance with a dispatcher (once per
    transport) that reads the SSRC and, for an SSRC it has not seen, parses the packet
    (``RtpPacket.parse`` with ``_rtp_header_extensions_map``) and asks the transport's router
    (an :class:`RtpRouting`, installed here if missing: by SSRC, MID, RID, payload type)
    which receiver it is for; it calls ``callback(data, arrival_time_ms)`` for tapped
    receivers, and other packets go to aiortc's original handler (which parses them).
    """
    install_rtp_routing_on_transport(transport)
    tap = getattr(transport, "_rtckit_sfu_tap", None)
    if tap is None:
        _sfu_require(transport, "_handle_rtp_data", "the decrypted RTP handler")
        tap = _RtpTap(transport)
        transport._rtckit_sfu_tap = tap  # type: ignore[attr-defined]
        transport._handle_rtp_data = tap.handle  # type: ignore[method-assign]
    tap.callbacks[receiver] = callback
    tap.by_ssrc.clear()


def sfu_uninstall_rtp_tap(transport: RTCDtlsTransport, receiver: RTCRtpReceiver) -> None:
    """Stop tapping ``receiver``'s packets (idempotent)."""
    tap: _RtpTap | None = getattr(transport, "_rtckit_sfu_tap", None)
    if tap is not None:
        tap.callbacks.pop(receiver, None)
        tap.by_ssrc.clear()


def sfu_intercept_rtcp(
    endpoint: RTCRtpSender | RTCRtpReceiver, callback: Callable[[bytes], Awaitable[None]]
) -> None:
    """Deliver the RTCP packets aiortc routes to ``endpoint`` to ``callback`` as bytes.

    Replaces ``_handle_rtcp_packet`` on the instance; aiortc's own handling (which for a
    sender would answer NACKs from its empty history and flag keyframes for an encoder that
    does not exist) no longer runs. ``bytes(packet)`` re-serializes aiortc's parsed packet.
    """
    _sfu_require(endpoint, "_handle_rtcp_packet", "the RTCP handler")

    async def handle(packet: Any) -> None:
        try:
            await callback(bytes(packet))
        except Exception:
            _sfu_logger.exception("SFU RTCP callback failed")

    endpoint._handle_rtcp_packet = handle  # type: ignore[method-assign]


def sfu_silence_sender_reports(sender: RTCRtpSender) -> None:
    """Drop the SRs a forwarding sender's own RTCP task sends (``RTCRtpSender._send_rtcp``).

    Its counters stay at zero since the SFU sends the RTP itself, so its SRs would carry a
    wrong NTP/RTP mapping; the SFU sends rewritten SRs instead. SDES and BYE still go out.
    """
    original = _sfu_require(sender, "_send_rtcp", "the sender RTCP send")

    async def send_rtcp(packets: list[Any]) -> None:
        kept = [p for p in packets if not isinstance(p, RtcpSrPacket)]
        if kept:
            await original(kept)

    sender._send_rtcp = send_rtcp  # type: ignore[method-assign]


def sfu_send_function(transport: RTCDtlsTransport) -> Callable[[bytes], Awaitable[None]]:
    """``RTCDtlsTransport._send_rtp``: SRTP/SRTCP-protect and send one RTP or RTCP packet.

    Raises :class:`ConnectionError` when the transport is not connected. The transport's
    outgoing SRTP session takes packets over 1356 bytes (:func:`widen_transport_srtp`).
    """
    send: Callable[[bytes], Awaitable[None]] = _sfu_require(transport, "_send_rtp", "RTP sending")
    widen_transport_srtp(transport)
    return send


def sfu_fast_rtp_sender(transport: RTCDtlsTransport) -> Callable[[bytes], bool]:
    """A synchronous RTP send for the forwarding hot path; returns ``send(data) -> bool``.

    ``send`` SRTP-protects with ``RTCDtlsTransport._tx_srtp`` and hands the packet straight
    to the asyncio datagram transport of the ICE connection's nominated pair
    (:func:`ice_connection`, then ``Connection._nominated[1]``, an ``aioice.ice.StunProtocol`` whose
    ``transport.sendto`` is what its ``send_data`` calls), skipping five coroutine levels of
    ``_send_rtp``. It returns False without sending when that shortcut does not apply
    (not connected, or a TURN-relayed pair whose protocol wraps data): the caller then uses
    :func:`sfu_send_function`. The DTLS transport's byte/packet statistics do not count
    packets sent this way. The transport's outgoing SRTP session takes packets over 1356 bytes
    (:func:`widen_transport_srtp`).
    """
    widen_transport_srtp(transport)
    connected = State.CONNECTED
    connection = ice_connection(transport.transport)
    _sfu_require(connection, "_nominated", "the nominated candidate pairs")
    _sfu_require(transport, "_state", "the DTLS state")

    cached: list[Any] = [None, None, None]  # pair, datagram transport, remote address

    def send(data: bytes) -> bool:
        if transport._state is not connected:
            return False
        pair = connection._nominated.get(1)
        if pair is not cached[0]:
            cached[:] = [pair, None, None]
            if pair is not None and type(pair.protocol) is StunProtocol:
                cached[1] = pair.protocol.transport
                cached[2] = pair.remote_addr
        datagrams = cached[1]
        if datagrams is None or datagrams.is_closing():
            return False
        datagrams.sendto(transport._tx_srtp.protect(data), cached[2])
        return True

    return send


def sfu_receiver_decoding(receiver: RTCRtpReceiver) -> bool:
    """True if aiortc's decoder thread runs for ``receiver`` (``__decoder_thread``)."""
    return (
        _sfu_require(receiver, "_RTCRtpReceiver__decoder_thread", "the decoder thread") is not None
    )


def sfu_sender_encoding(sender: RTCRtpSender) -> bool:
    """True if ``sender`` holds an encoder (``RTCRtpSender.__encoder``)."""
    return _sfu_require(sender, "_RTCRtpSender__encoder", "the sender encoder") is not None


class CodecCounters:
    """Process-wide counts of aiortc decoder and encoder instantiations.

    Counted by wrapping the module globals ``aiortc.rtcrtpreceiver.get_decoder`` (called by
    ``decoder_worker`` with the receiver's queue as local ``input_q``) and
    ``aiortc.rtcrtpsender.get_encoder`` (called by ``RTCRtpSender._next_encoded_frame``,
    local ``self``). Calls made for a watched receiver or sender are also reported to the
    callback given to :func:`sfu_watch_codecs`.
    """

    def __init__(self) -> None:
        self.decoders = 0
        self.encoders = 0
        self.watched: weakref.WeakKeyDictionary[Any, Callable[[str], None]] = (
            weakref.WeakKeyDictionary()
        )

    def _report(self, owner: object, kind: str) -> None:
        if owner is None:
            return
        try:
            callback = self.watched.get(owner)
        except TypeError:
            return
        if callback is not None:
            callback(kind)


_COUNTERS: CodecCounters | None = None


def sfu_codec_counters() -> CodecCounters:
    """Install (once) and return the process-wide codec instantiation counters."""
    global _COUNTERS
    if _COUNTERS is not None:
        return _COUNTERS
    counters = CodecCounters()
    receiver_module: Any = aiortc.rtcrtpreceiver
    sender_module: Any = aiortc.rtcrtpsender
    get_decoder = _sfu_require(receiver_module, "get_decoder", "the decoder factory")
    get_encoder = _sfu_require(sender_module, "get_encoder", "the encoder factory")

    def counting_get_decoder(codec: RTCRtpCodecParameters) -> Any:
        counters.decoders += 1
        counters._report(sys._getframe(1).f_locals.get("input_q"), "decoder")
        return get_decoder(codec)

    def counting_get_encoder(codec: RTCRtpCodecParameters) -> Any:
        counters.encoders += 1
        counters._report(sys._getframe(1).f_locals.get("self"), "encoder")
        return get_encoder(codec)

    receiver_module.get_decoder = counting_get_decoder
    sender_module.get_encoder = counting_get_encoder
    _COUNTERS = counters
    return counters


def sfu_watch_codecs(
    endpoint: RTCRtpSender | RTCRtpReceiver, callback: Callable[[str], None]
) -> None:
    """Report decoder/encoder instantiations made for ``endpoint`` to ``callback(kind)``.

    For a receiver the key is its decoder queue (``RTCRtpReceiver.__decoder_queue``).
    """
    counters = sfu_codec_counters()
    if isinstance(endpoint, RTCRtpReceiver):
        key = _sfu_require(endpoint, "_RTCRtpReceiver__decoder_queue", "the decoder queue")
    else:
        key = endpoint
    counters.watched[key] = callback
