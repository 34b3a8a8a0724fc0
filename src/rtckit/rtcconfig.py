"""Turn an :class:`~rtckit.ice.IceConfig` into aiortc objects, deliberately and loudly.

aiortc (up to 1.16 at least) builds its ICE agent from *one* STUN URL and *one* TURN URL:
``connection_kwargs()`` in ``aiortc/rtcicetransport.py`` keeps the first ``stun:`` URL and the
first usable ``turn:``/``turns:`` URL and silently ignores the rest, including every
``stuns:`` URL, TURN over DTLS (``turns:...?transport=udp``) and hosts given as IPv6 literals
(its URI pattern cannot parse ``[::1]``). :func:`select_for_aiortc` makes that choice itself,
in the configuration's order, and :func:`to_aiortc` emits an :class:`~rtckit.ice.IceConfigWarning`
for everything left out. An empty server list gives ``RTCConfiguration(iceServers=[])``: host
candidates only, never aiortc's default public STUN server.

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

import dataclasses
import logging
import warnings
from typing import Any

import attrs
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from rtckit import _aiortc
from rtckit.errors import ConfigurationError, IceError, TurnAuthError
from rtckit.ice import (
    IceConfig,
    IceConfigWarning,
    IceServer,
    IceServerUri,
    IceTransportPolicy,
    TurnTransport,
    UriScheme,
)

__all__ = [
    "AiortcSelection",
    "RtcKitPeerConnection",
    "aiortc_has_transport_policy",
    "create_peer_connection",
    "select_for_aiortc",
    "to_aiortc",
]

logger = logging.getLogger(__name__)


def aiortc_has_transport_policy() -> bool:
    """Whether the installed aiortc's ``RTCConfiguration`` has ``iceTransportPolicy`` (1.16+)."""
    return any(f.name == "iceTransportPolicy" for f in dataclasses.fields(RTCConfiguration))


@attrs.frozen(kw_only=True)
class AiortcSelection:
    """What aiortc can use of an :class:`~rtckit.ice.IceConfig`, and what it cannot."""

    stun: IceServerUri | None
    """The one STUN URI aiortc will use."""
    turn: IceServerUri | None
    """The one TURN URI aiortc will use."""
    turn_server: IceServer | None
    """The server :attr:`turn` belongs to (holds its credentials)."""
    dropped: tuple[tuple[IceServerUri, str], ...]
    """Every URI left out, with the reason."""


def _unusable_reason(uri: IceServerUri) -> str | None:
    if uri.is_ipv6:
        return "aiortc cannot parse an IPv6 address literal in an ICE URI"
    if uri.scheme is UriScheme.STUNS:
        return "aiortc does not support stuns: (STUN over TLS)"
    if uri.scheme is UriScheme.TURNS and uri.transport is TurnTransport.UDP:
        return "aiortc does not support TURN over DTLS (turns: with transport=udp)"
    return None


def select_for_aiortc(config: IceConfig) -> AiortcSelection:
    """Pick the first usable STUN URI and the first usable TURN URI, in configuration order."""
    stun: IceServerUri | None = None
    turn: IceServerUri | None = None
    turn_server: IceServer | None = None
    dropped: list[tuple[IceServerUri, str]] = []
    for server in config.servers:
        for uri in server.urls:
            reason = _unusable_reason(uri)
            if reason is not None:
                dropped.append((uri, reason))
            elif not uri.is_turn:
                if stun is None:
                    stun = uri
                else:
                    dropped.append((uri, f"aiortc uses one STUN server, {stun} comes first"))
            elif turn is None:
                turn, turn_server = uri, server
            else:
                dropped.append((uri, f"aiortc uses one TURN server, {turn} comes first"))
    if config.transport_policy is IceTransportPolicy.RELAY and turn is None:
        raise ConfigurationError(
            "iceTransportPolicy 'relay' needs a TURN URI aiortc can use, but none is left: "
            + "; ".join(f"{uri}: {why}" for uri, why in dropped)
        )
    return AiortcSelection(stun=stun, turn=turn, turn_server=turn_server, dropped=tuple(dropped))


def _warn_dropped(selection: AiortcSelection, stacklevel: int) -> None:
    for uri, why in selection.dropped:
        warnings.warn(
            f"ICE server URI {str(uri)!r} left out: {why}", IceConfigWarning, stacklevel=stacklevel
        )


def _to_rtc_configuration(config: IceConfig, selection: AiortcSelection) -> RTCConfiguration:
    servers: list[RTCIceServer] = []
    if selection.stun is not None:
        servers.append(RTCIceServer(urls=[selection.stun.format(explicit=True)]))
    if selection.turn is not None and selection.turn_server is not None:
        servers.append(
            RTCIceServer(
                urls=[selection.turn.format(explicit=True)],
                username=selection.turn_server.username,
                credential=selection.turn_server.credential,
            )
        )
    kwargs: dict[str, Any] = {"iceServers": servers}
    if config.transport_policy is IceTransportPolicy.RELAY and aiortc_has_transport_policy():
        from aiortc import RTCIceTransportPolicy

        kwargs["iceTransportPolicy"] = RTCIceTransportPolicy.RELAY
    return RTCConfiguration(**kwargs)


def to_aiortc(config: IceConfig) -> RTCConfiguration:
    """Return the aiortc ``RTCConfiguration`` for *config*, warning about what it leaves out.

    Emits one :class:`~rtckit.ice.IceConfigWarning` per URI aiortc cannot use (see
    :func:`select_for_aiortc`). With the relay policy and an aiortc older than 1.16, the result
    cannot express the policy: use :func:`create_peer_connection`, which applies it.
    """
    selection = select_for_aiortc(config)
    _warn_dropped(selection, stacklevel=3)
    if config.transport_policy is IceTransportPolicy.RELAY and not aiortc_has_transport_policy():
        warnings.warn(
            "this aiortc's RTCConfiguration has no iceTransportPolicy: the relay policy is "
            "applied only by rtckit.rtcconfig.create_peer_connection()",
            IceConfigWarning,
            stacklevel=2,
        )
    return _to_rtc_configuration(config, selection)


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
        super().__init__(configuration=_to_rtc_configuration(ice_config, selection))
        _aiortc.widen_dtls_ciphers(self)
        _aiortc.install_rtp_routing(self)
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
    _warn_dropped(selection, stacklevel=3)
    return RtcKitPeerConnection(
        ice_config,
        check_turn=check_turn,
        turn_check_timeout=turn_check_timeout,
        _selection=selection,
    )
