"""The only module of rtckit that touches aiortc's and aioice's private internals.

Everything here relies on names that aiortc/aioice do not promise to keep (underscore
attributes, undocumented submodules, name-mangled fields). Each touch is one small function
whose docstring says exactly what it relies on, and ``tests/test_aiortc_internals.py`` has a
test per function that fails loudly when an upgrade moves it.

Supported versions: ``aiortc>=1.14,<1.17`` and ``aioice>=0.10,<0.14``.
:func:`check_versions` raises :class:`~rtckit.errors.InternalsError` outside that range.

Several parts of rtckit append their own section here, each under a
``# --- <topic> ---`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aioice.stun
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aioice.ice import StunProtocol
from aiortc import (
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter, State
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpReceiveParameters
from aiortc.rtp import RtcpSrPacket, RtpPacket

from rtckit.errors import ConfigurationError, IceError, InternalsError, TurnAuthError

if TYPE_CHECKING:
    import aioice
    from aioice import Candidate, Connection
    from aioice.turn import TurnTransport
    from aiortc import RTCIceGatherer, RTCIceTransport

__all__ = [
    "DTLS_CIPHERS",
    "SUPPORTED_AIOICE",
    "SUPPORTED_AIORTC",
    "CodecCounters",
    "RtpRouting",
    "add_trickled_candidate",
    "allocate_turn",
    "bound_gathering",
    "check_versions",
    "create_stable_offer",
    "force_relay_policy",
    "ice_connection",
    "ice_transports",
    "install_rtp_routing",
    "install_rtp_routing_on_transport",
    "is_stun_timeout",
    "mark_sctp_bundled",
    "nominated_pairs",
    "on_keyframe_request",
    "resume_connect",
    "rollback_local_offer",
    "selected_pair_info",
    "set_stun_retransmissions",
    "settle_unoffered_transceivers",
    "sfu_codec_counters",
    "sfu_fast_rtp_sender",
    "sfu_install_rtp_tap",
    "sfu_intercept_rtcp",
    "sfu_negotiated_codecs",
    "sfu_negotiated_header_extensions",
    "sfu_receiver_decoding",
    "sfu_release_receiver",
    "sfu_send_function",
    "sfu_sender_encoding",
    "sfu_sender_ssrcs",
    "sfu_silence_sender_reports",
    "sfu_take_over_receiver",
    "sfu_uninstall_rtp_tap",
    "sfu_watch_codecs",
    "stun_error",
    "stun_transaction_timeout",
    "turn_endpoint",
    "widen_dtls_ciphers",
]

SUPPORTED_AIORTC: Final = ((1, 14), (1, 17))
"""aiortc versions rtckit's internals support: ``>=1.14,<1.17``."""
SUPPORTED_AIOICE: Final = ((0, 10), (0, 14))
"""aioice versions rtckit's internals support: ``>=0.10,<0.14``."""


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def check_versions(*, aiortc_version: str | None = None, aioice_version: str | None = None) -> None:
    """Raise :class:`~rtckit.errors.InternalsError` unless aiortc/aioice are supported.

    The versions default to the installed distributions' (read with :mod:`importlib.metadata`).
    """
    for name, given, (low, high) in (
        ("aiortc", aiortc_version, SUPPORTED_AIORTC),
        ("aioice", aioice_version, SUPPORTED_AIOICE),
    ):
        text = given if given is not None else metadata.version(name)
        version = _version_tuple(text)
        if not low <= version[:2] < high:
            raise InternalsError(
                f"rtckit supports {name}>={low[0]}.{low[1]},<{high[0]}.{high[1]} "
                f"(it relies on some of its internals), but {name} {text} is installed"
            )


def _missing(what: str, exc: BaseException | None = None) -> InternalsError:
    error = InternalsError(
        f"aiortc/aioice internals moved: {what} (supported: aiortc>=1.14,<1.17, aioice<0.14)"
    )
    if exc is not None:
        error.__cause__ = exc
    return error


# --- ICE / TURN ---


def ice_connection(transport: RTCIceGatherer | RTCIceTransport) -> Connection:
    """Return the :class:`aioice.Connection` behind an aiortc ICE gatherer or transport.

    Relies on: ``RTCIceGatherer._connection`` and ``RTCIceTransport._connection`` (the aioice
    connection, set in their ``__init__``).
    """
    from aioice import Connection

    connection = getattr(transport, "_connection", None)
    if not isinstance(connection, Connection):
        raise _missing(f"{type(transport).__name__}._connection is not an aioice.Connection")
    return connection


def force_relay_policy(gatherer: RTCIceGatherer) -> None:
    """Make *gatherer* gather relayed candidates only, as ``iceTransportPolicy: "relay"``.

    For aiortc < 1.16, whose ``RTCConfiguration`` has no ``iceTransportPolicy``. Must be
    called before the gatherer starts gathering (its ``state`` is ``"new"``).

    Relies on: ``RTCIceGatherer._connection`` and ``aioice.Connection._transport_policy``
    (read by ``gather_candidates``, compared with ``aioice.TransportPolicy.RELAY``).
    """
    from aioice import TransportPolicy

    connection = ice_connection(gatherer)
    if not hasattr(connection, "_transport_policy"):
        raise _missing("aioice.Connection has no _transport_policy")
    if gatherer.state != "new":
        raise IceError(
            "cannot switch an ICE gatherer to relay-only after gathering started "
            f"(state {gatherer.state!r})"
        )
    connection._transport_policy = TransportPolicy.RELAY


def nominated_pairs(transport: RTCIceTransport) -> list[tuple[Candidate, Candidate]]:
    """Return the ``(local, remote)`` candidates of each nominated (selected) pair.

    aiortc's ``getStats()`` has no candidate-pair statistics, so this is the way to tell
    whether a connection goes through a relay. Empty before ICE completes.

    Relies on: ``aioice.Connection._nominated`` (a dict component -> ``CandidatePair``) and
    ``CandidatePair.local_candidate`` / ``remote_candidate``.
    """
    nominated: Any = getattr(ice_connection(transport), "_nominated", None)
    if not isinstance(nominated, dict):
        raise _missing("aioice.Connection._nominated is not a dict")
    try:
        return [
            (pair.local_candidate, pair.remote_candidate)
            for _component, pair in sorted(nominated.items())
        ]
    except AttributeError as exc:
        raise _missing("aioice.CandidatePair has no local_candidate/remote_candidate", exc) from exc


def stun_error(exc: BaseException) -> tuple[int, str] | None:
    """The ``(code, reason)`` of a STUN/TURN error response aioice raised, else ``None``.

    Relies on: ``aioice.stun.TransactionFailed`` and its
    ``response.attributes["ERROR-CODE"]`` (a ``(code, reason)`` tuple).
    """
    if not isinstance(exc, aioice.stun.TransactionFailed):
        return None
    code, reason = exc.response.attributes.get("ERROR-CODE", (0, "no error code"))
    return int(code), str(reason)


def is_stun_timeout(exc: BaseException) -> bool:
    """Whether *exc* is aioice giving up on an unanswered STUN/TURN transaction.

    Relies on: ``aioice.stun.TransactionTimeout``.
    """
    return isinstance(exc, aioice.stun.TransactionTimeout)


_P = TypeVar("_P", bound=asyncio.DatagramProtocol)


@contextlib.asynccontextmanager
async def turn_endpoint(
    protocol_factory: Callable[[], _P],
    *,
    server: tuple[str, int],
    username: str,
    password: str,
    transport: str = "udp",
    ssl: bool | SSLContext = False,
) -> AsyncIterator[tuple[TurnTransport, _P]]:
    """Hold a TURN allocation on *server* for the ``async with`` block, with aioice's client.

    Yields the relay transport (``get_extra_info("sockname")``: the relayed address,
    ``get_extra_info("related_address")``: the client's reflexive address; ``sendto`` asks
    the server to relay) and the protocol receiving what the relay hands over. Failures are
    aioice's own exceptions (see :func:`stun_error`, :func:`is_stun_timeout`) or
    :class:`OSError`/:class:`ssl.SSLError`. The allocation is released on exit.

    Relies on: ``aioice.turn.create_turn_endpoint`` (undocumented submodule; its signature
    ``(protocol_factory, server_addr, username, password, ..., ssl, transport)``).
    """
    try:
        from aioice import turn
    except ImportError as exc:  # pragma: no cover - depends on the installed aioice
        raise _missing("aioice.turn cannot be imported", exc) from exc
    relay, protocol = await turn.create_turn_endpoint(
        protocol_factory,
        server_addr=server,
        username=username,
        password=password,
        ssl=ssl,
        transport=transport,
    )
    try:
        yield relay, protocol
    finally:
        relay.close()


class _ProbeProtocol(asyncio.DatagramProtocol):
    """Receives nothing; tells when the TURN allocation is gone."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def allocate_turn(
    *,
    server: tuple[str, int],
    username: str,
    password: str,
    transport: str = "udp",
    ssl: bool = False,
    timeout: float = 5.0,  # noqa: ASYNC109 - a bound on a probe of several round trips
) -> tuple[str, int]:
    """Create a TURN allocation on *server*, delete it, and return the relayed address.

    Raises :class:`~rtckit.errors.TurnAuthError` if the server answers 401 (wrong, forged or expired
    credentials) and :class:`~rtckit.errors.IceError` for any other failure or after *timeout*.

    Relies on what :func:`turn_endpoint` and :func:`stun_error` rely on.
    """
    name = f"turn{'s' if ssl else ''}:{server[0]}:{server[1]}?transport={transport}"
    try:
        async with asyncio.timeout(timeout):
            endpoint = turn_endpoint(
                _ProbeProtocol,
                server=server,
                username=username,
                password=password,
                ssl=ssl,
                transport=transport,
            )
            async with endpoint as (relay, protocol):
                relayed: tuple[str, int] = relay.get_extra_info("sockname")
            await protocol.closed
    except TimeoutError as exc:
        raise IceError(f"TURN server {name} did not answer within {timeout} s") from exc
    except (aioice.stun.TransactionError, OSError) as exc:
        error = stun_error(exc)
        if error is None:
            raise IceError(f"TURN server {name} cannot be used: {exc}") from exc
        code, reason = error
        if code == 401:
            raise TurnAuthError(
                f"TURN server {name} refused the credentials for {username!r}: "
                f"401 {reason} (wrong, forged or expired)"
            ) from exc
        raise IceError(f"TURN server {name} refused the allocation: {code} {reason}") from exc
    return relayed


# --- natlab / ice timeouts ---


def set_stun_retransmissions(count: int) -> int:
    """Set how many times aioice retransmits a STUN request; return the previous count.

    Relies on the module global ``aioice.stun.RETRY_MAX`` (default 6), which
    ``aioice.stun.Transaction.__init__`` reads whenever no explicit ``retransmissions`` is
    given: every ICE connectivity check, STUN binding and TURN request of the process.
    With the default, one unanswered check gives up after 63.5 s, so a hopeless ICE attempt
    (symmetric NAT on both sides, no TURN) takes about a minute to be declared failed;
    ``set_stun_retransmissions(2)`` makes that 3.5 s. This is process-wide: set it once at
    start-up (the NAT lab's peer processes do), not per connection.
    """
    if not 0 <= count <= 10:
        raise ConfigurationError(f"STUN retransmissions must be 0..10, not {count}")
    previous = getattr(aioice.stun, "RETRY_MAX", None)
    if not isinstance(previous, int):
        raise InternalsError("aioice.stun.RETRY_MAX is gone: cannot bound ICE check timeouts")
    aioice.stun.RETRY_MAX = count
    return previous


def stun_transaction_timeout(retransmissions: int | None = None) -> float:
    """Seconds after which one unanswered aioice STUN transaction gives up.

    Relies on ``aioice.stun.RETRY_RTO`` (initial timeout, doubled at each try) and
    ``aioice.stun.RETRY_MAX`` (used when *retransmissions* is ``None``).
    """
    rto = getattr(aioice.stun, "RETRY_RTO", None)
    count: int = retransmissions if retransmissions is not None else aioice.stun.RETRY_MAX
    if not isinstance(rto, int | float):
        raise InternalsError("aioice.stun.RETRY_RTO is gone")
    return float(rto) * float(2 ** (count + 1) - 1)


# --- sfu ---
# The SFU forwards RTP without decoding. It relies on:
# * RTCRtpTransceiver._codecs / ._headerExtensions: the negotiated codecs and extension IDs;
# * RTCRtpSender._ssrc / ._rtx_ssrc and RTCRtpSender._send_rtcp(list of packets);
# * RTCRtpReceiver.receive() being what starts the decoder thread, and
#   RTCDtlsTransport._register_rtp_receiver / ._unregister_rtp_receiver;
# * RTCDtlsTransport._handle_rtp_data(data, arrival_time_ms) being called with each
#   decrypted RTP packet, ._rtp_router.route_rtp(packet) (see the RTP routing section),
#   and ._send_rtp(data) encrypting and sending RTP or RTCP; for the hot path, ._state,
#   ._tx_srtp and the ICE transport's aioice Connection._nominated pairs;
# * the module globals aiortc.rtcrtpreceiver.get_decoder / aiortc.rtcrtpsender.get_encoder.

_sfu_logger = logging.getLogger("rtckit._aiortc")


def _sfu_require(obj: object, name: str, what: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError as exc:
        raise _missing(f"{what} ({type(obj).__name__}.{name})") from exc


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

    Raises :class:`ConnectionError` when the transport is not connected.
    """
    send: Callable[[bytes], Awaitable[None]] = _sfu_require(transport, "_send_rtp", "RTP sending")
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
    packets sent this way.
    """
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


# --- peer sessions: rollback, bundling, restart, nominated pair ---

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from rtckit.peer.stats import CandidatePairInfo

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


def selected_pair_info(pc: RTCPeerConnection) -> CandidatePairInfo | None:
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
        connection = _get(gatherer, "_connection")
        method = _get(connection, "get_component_candidates")
        if isinstance(method, functools.partial):
            method = method.func
        connection.get_component_candidates = functools.partial(method, timeout=timeout)
        count += 1
    return count


# --- mcu ---


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback()`` whenever the remote side asks ``sender`` for a keyframe.

    Relies on ``RTCRtpSender._handle_rtcp_packet`` calling ``self._send_keyframe()`` when an
    RTCP PLI or FIR arrives (aiortc 1.9-1.16). On the pre-encoded packet path that call only
    sets a flag nobody reads, so the MCU wraps the method on this one instance: the original
    still runs, then ``callback``. Raises :class:`~rtckit.errors.InternalsError` if the method
    is gone.
    """
    original = getattr(sender, "_send_keyframe", None)
    if not callable(original):
        raise InternalsError("aiortc RTCRtpSender has no _send_keyframe() any more")

    def hook() -> None:
        original()
        callback()

    setattr(sender, "_send_keyframe", hook)  # noqa: B010 - instance override is the point


# --- peer: stable re-offers ---

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
    saved = {t: list(_get(t, "_codecs")) for t in transceivers if t.mid in negotiated_mids}
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
        _get(transceiver, "_codecs")
        _get(transceiver, "_headerExtensions")
        transceiver._codecs = codecs
        transceiver._headerExtensions = extensions
    return RTCSessionDescription(sdp=str(description), type="offer")


# --- peer: trickled candidates on bundled transports ---


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


# --- RTP routing: by SSRC, then MID, then RID; RTX SSRCs registered ---
# aiortc 1.14-1.16's ``RtpRouter.route_rtp`` (aiortc.rtcdtlstransport) routes a packet by its
# SSRC, else by its payload type when exactly one receiver of the transport has it (learning
# the SSRC). It fills ``mid_table`` but never reads it, and
# ``RTCDtlsTransport._register_rtp_receiver`` registers the media SSRC of each encoding, not
# its RTX SSRC (``RTCRtpDecodingParameters.rtx.ssrc``). On a bundle with two video receivers
# (two forwarded videos from an SFU) the RTX payload type is shared, so every retransmission
# is dropped: a lost packet is never repaired, and aiortc's 512-packet video jitter buffer
# waits ~10 s before it sends a PLI. This section replaces the router of each rtckit
# connection's DTLS transports by :class:`RtpRouting`. It relies on:
# * ``aiortc.rtcdtlstransport.RtpRouter`` (subclassed) and its ``receivers``, ``senders``,
#   ``mid_table``, ``ssrc_table``, ``payload_type_table`` and ``unregister_receiver``;
# * ``RTCDtlsTransport._rtp_router`` (read by ``_handle_rtp_data`` at each packet, and by the
#   SFU's tap) and ``RTCDtlsTransport._register_rtp_receiver(receiver, parameters)``, wrapped
#   on the instance; ``RTCDtlsTransport._rtp_header_extensions_map`` (for the tap's parse);
# * the parsed ``RtpPacket.extensions.mid`` / ``rtp_stream_id`` / ``repaired_rtp_stream_id``;
# * ``RTCRtpReceiver.__rtx_ssrc`` (RTX SSRC -> media SSRC, read when unwrapping RTX),
#   completed for an RTX SSRC learned from a packet;
# * ``RTCPeerConnection.__createDtlsTransport`` (wrapped on the instance, so that a transport
#   created later gets the router too).

_MAX_LEARNED_SSRCS: Final = 32  # per receiver: a remote sending random SSRCs grows nothing
_RECEIVER_RTX_SSRC: Final = "_RTCRtpReceiver__rtx_ssrc"
_CREATE_DTLS_TRANSPORT: Final = "_RTCPeerConnection__createDtlsTransport"


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
    current = _get(transport, "_rtp_router")
    if isinstance(current, RtpRouting):
        return current
    register = _get(transport, "_register_rtp_receiver")
    _get(transport, "_rtp_header_extensions_map")
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
    :func:`rtckit.rtcconfig.create_peer_connection` do). Idempotent.
    """
    create = _get(pc, _CREATE_DTLS_TRANSPORT)
    if not getattr(create, "_rtckit_routing", False):

        def create_dtls_transport() -> RTCDtlsTransport:
            transport: RTCDtlsTransport = create()
            install_rtp_routing_on_transport(transport)
            return transport

        create_dtls_transport._rtckit_routing = True  # type: ignore[attr-defined]
        setattr(pc, _CREATE_DTLS_TRANSPORT, create_dtls_transport)
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for transport in transports:
        install_rtp_routing_on_transport(transport)


# --- DTLS: peers with an RSA certificate ---

DTLS_CIPHERS: Final = (
    # aiortc 1.16's own list, in its order (ECDSA: what aiortc's certificate can serve) ...
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
    # ... then the same suites for a peer whose certificate is RSA (GStreamer's webrtcbin)
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)
"""The OpenSSL cipher list of rtckit's DTLS contexts (see :func:`widen_dtls_ciphers`)."""


class _InteropCertificate(aiortc.RTCCertificate):
    """aiortc's certificate, whose DTLS contexts also offer the ECDHE-RSA suites."""

    def _create_ssl_context(self, srtp_profiles: Any) -> Any:
        context = super()._create_ssl_context(srtp_profiles)
        context.set_cipher_list(DTLS_CIPHERS.encode())
        return context


def widen_dtls_ciphers(pc: RTCPeerConnection) -> None:
    """Let *pc*'s DTLS handshakes succeed with peers whose certificate is RSA.

    Cause: aiortc (1.14 to 1.16 at least) sets the cipher list of every DTLS context to four
    ECDHE-**ECDSA** suites only (``RTCCertificate._create_ssl_context``). Its own certificate
    is ECDSA, so as the DTLS *server* that is all it could use anyway; but as the DTLS
    *client* its ClientHello then offers nothing a server with an RSA certificate can pick,
    and the handshake fails with "no shared cipher". Browsers use ECDSA certificates, so they
    never hit this; GStreamer's ``webrtcbin`` (many encoders and WHIP clients) uses RSA. aiortc
    is the client whenever it answers an ``actpass`` offer (``a=setup:active``) and whenever
    it offers and the answer says ``a=setup:passive``: rtckit's sessions, MCU and SFU (which
    offer and re-offer) are both sides of that.

    This swaps the connection's certificate (same key and certificate, so the same
    fingerprint) for a subclass whose contexts use :data:`DTLS_CIPHERS`: aiortc's ECDSA
    suites first, then the same suites with RSA authentication. Call it right after creating
    *pc*, before it creates any transport (``addTransceiver``, ``createDataChannel``,
    ``setRemoteDescription``): a DTLS transport keeps the certificate it was created with.

    Relies on: the name-mangled ``RTCPeerConnection.__certificates`` list (read when each
    DTLS transport is created), ``RTCCertificate._key`` / ``._cert`` and
    ``RTCCertificate._create_ssl_context(srtp_profiles)`` returning a pyOpenSSL
    ``SSL.Context``. Raises :class:`~rtckit.errors.InternalsError` if they moved and
    ``ValueError`` if *pc* already has a transport.
    """
    if pc.getTransceivers() or pc.sctp is not None:
        raise ValueError("widen_dtls_ciphers() must run before the connection has a transport")
    certificates = _get(pc, f"{_PC}certificates")
    if not isinstance(certificates, list) or not all(
        isinstance(c, aiortc.RTCCertificate) for c in certificates
    ):
        raise _missing("RTCPeerConnection.__certificates is no list of RTCCertificate")
    if not callable(getattr(aiortc.RTCCertificate, "_create_ssl_context", None)):
        raise _missing("RTCCertificate._create_ssl_context")
    for index, certificate in enumerate(certificates):
        if not isinstance(certificate, _InteropCertificate):
            certificates[index] = _InteropCertificate(
                key=_get(certificate, "_key"), cert=_get(certificate, "_cert")
            )
