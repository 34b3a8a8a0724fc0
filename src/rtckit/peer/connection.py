"""The peer-connection factory: an aiortc ``RTCPeerConnection`` that honours an ICE config.

:func:`create_peer_connection` returns an :class:`RtcKitPeerConnection`, which also

* applies ``iceTransportPolicy: "relay"`` (through aiortc's own ``iceTransportPolicy`` from
  aiortc 1.16, through ``rtckit._aiortc`` before);
* detects refused TURN credentials. aioice raises ``TransactionFailed (401)`` while gathering,
  aiortc swallows it, and the peer would offer an SDP without relayed candidates (without any
  candidate with the relay policy) and stay in ``new`` forever. After gathering,
  :meth:`RtcKitPeerConnection.setLocalDescription` looks at the candidates; if the TURN server
  gave none, it asks the server once more for an allocation with the same credentials and
  raises :class:`~rtckit.errors.TurnAuthError` naming the server on a 401;
* completes DTLS handshakes with peers whose certificate is RSA, such as GStreamer's
  ``webrtcbin`` (``rtckit._aiortc.widen_dtls_ciphers``; aiortc alone offers only
  ECDSA suites when it is the DTLS client).
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import (
    RTCPeerConnection,
    RTCSessionDescription,
)

from rtckit import _aiortc
from rtckit.errors import IceError, TurnAuthError
from rtckit.ice import (
    IceConfig,
    IceTransportPolicy,
    UriScheme,
)
from rtckit.ice.aiortc import (
    AiortcSelection,
    aiortc_has_transport_policy,
    rtc_configuration,
    select_for_aiortc,
    warn_dropped,
)

__all__ = ["RtcKitPeerConnection", "create_peer_connection"]

logger = logging.getLogger(__name__)


class RtcKitPeerConnection(RTCPeerConnection):
    """An aiortc ``RTCPeerConnection`` that honours an :class:`~rtckit.ice.IceConfig` fully.

    Create it with :func:`create_peer_connection`. It behaves like its base class, except that
    :meth:`setLocalDescription` applies the relay policy on old aiortc versions and raises
    :class:`~rtckit.errors.TurnAuthError` when the TURN server refused the credentials, and
    incoming RTP is routed by SSRC, MID and RID with RTX SSRCs registered
    (``rtckit._aiortc.RtpRouting``).
    """

    def __init__(
        self,
        ice_config: IceConfig,
        *,
        check_turn: bool = True,
        turn_check_timeout: float = 5.0,
        _selection: AiortcSelection | None = None,
    ) -> None:
        selection = _selection if _selection is not None else select_for_aiortc(ice_config)
        super().__init__(configuration=rtc_configuration(ice_config, selection))
        _aiortc.widen_dtls_ciphers(self)
        _aiortc.install_rtp_routing(self)
        _aiortc.guard_receive(self)
        self.ice_config = ice_config
        """The configuration this connection was created with."""
        self.aiortc_selection = selection
        """What aiortc uses of :attr:`ice_config`."""
        self._rtckit_check_turn = check_turn
        self._rtckit_turn_check_timeout = turn_check_timeout
        self._rtckit_force_relay = (
            ice_config.transport_policy is IceTransportPolicy.RELAY
            and not aiortc_has_transport_policy()
        )

    def _rtckit_gatherers(self) -> list[Any]:
        gatherers: list[Any] = []
        transports = [t.sender.transport for t in self.getTransceivers()]
        if self.sctp is not None:
            transports.append(self.sctp.transport)
        for dtls in transports:
            gatherer = dtls.transport.iceGatherer
            if all(gatherer is not g for g in gatherers):
                gatherers.append(gatherer)
        return gatherers

    async def setLocalDescription(  # noqa: N802 - aiortc's (W3C) method name
        self,
        sessionDescription: RTCSessionDescription | None = None,  # noqa: N803
    ) -> None:
        """Like aiortc's, then raise :class:`~rtckit.errors.TurnAuthError` if TURN refused us."""
        if self._rtckit_force_relay:
            for gatherer in self._rtckit_gatherers():
                if gatherer.state == "new":
                    _aiortc.force_relay_policy(gatherer)
        await super().setLocalDescription(sessionDescription)
        if self._rtckit_check_turn:
            await self._rtckit_check_relay_candidates()

    async def _rtckit_check_relay_candidates(self) -> None:
        selection = self.aiortc_selection
        if selection.turn is None or selection.turn_server is None:
            return
        gatherers = [g for g in self._rtckit_gatherers() if g.state == "completed"]
        if not gatherers:
            return
        self._rtckit_check_turn = False  # check once: each transport gathers only once
        if all(any(c.type == "relay" for c in g.getLocalCandidates()) for g in gatherers):
            return
        turn, server = selection.turn, selection.turn_server
        assert server.username is not None
        assert server.credential is not None
        relay_only = self.ice_config.transport_policy is IceTransportPolicy.RELAY
        try:
            await _aiortc.allocate_turn(
                server=turn.address,
                username=server.username,
                password=server.credential,
                transport=str(turn.transport),
                ssl=turn.scheme is UriScheme.TURNS,
                timeout=self._rtckit_turn_check_timeout,
            )
        except TurnAuthError:
            raise
        except IceError as exc:
            if relay_only:
                raise IceError(
                    f"no relayed candidate from {turn} with iceTransportPolicy 'relay': {exc}"
                ) from exc
            logger.warning("no relayed candidate from %s: %s", turn, exc)
            return
        if relay_only:
            raise IceError(
                f"no relayed candidate was gathered from {turn}, although it answers now"
            )
        logger.warning("no relayed candidate was gathered from %s (it answers now)", turn)


def create_peer_connection(
    ice_config: IceConfig,
    *,
    check_turn: bool = True,
    turn_check_timeout: float = 5.0,
) -> RtcKitPeerConnection:
    """Return a peer connection that uses *ice_config* as fully as aiortc allows.

    Warns (:class:`~rtckit.ice.IceConfigWarning`) about every URI aiortc cannot use, applies
    the relay policy, and with *check_turn*, makes ``setLocalDescription`` raise
    :class:`~rtckit.errors.TurnAuthError` when the TURN server refuses the credentials (checked with
    one more allocation attempt bounded by *turn_check_timeout* seconds, only when gathering
    produced no relayed candidate). Raises :class:`~rtckit.errors.InternalsError` if the installed
    aiortc/aioice are not supported.
    """
    _aiortc.check_versions()
    selection = select_for_aiortc(ice_config)
    warn_dropped(selection, stacklevel=3)
    return RtcKitPeerConnection(
        ice_config,
        check_turn=check_turn,
        turn_check_timeout=turn_check_timeout,
        _selection=selection,
    )
