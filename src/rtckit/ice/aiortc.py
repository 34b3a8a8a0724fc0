"""Turn an :class:`~rtckit.ice.IceConfig` into aiortc objects, deliberately and loudly.

aiortc (up to 1.16 at least) builds its ICE agent from *one* STUN URL and *one* TURN URL:
``connection_kwargs()`` in ``aiortc/rtcicetransport.py`` keeps the first ``stun:`` URL and the
first usable ``turn:``/``turns:`` URL and silently ignores the rest, including every
``stuns:`` URL, TURN over DTLS (``turns:...?transport=udp``) and hosts given as IPv6 literals
(its URI pattern cannot parse ``[::1]``). :func:`select_for_aiortc` makes that choice itself,
in the configuration's order, and :func:`to_aiortc` emits an :class:`~rtckit.ice.IceConfigWarning`
for everything left out. An empty server list gives ``RTCConfiguration(iceServers=[])``: host
candidates only, never aiortc's default public STUN server.

A peer connection that applies the whole configuration is
:func:`rtckit.peer.connection.create_peer_connection`.
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
)

from rtckit.errors import ConfigurationError
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
    "aiortc_has_transport_policy",
    "rtc_configuration",
    "select_for_aiortc",
    "to_aiortc",
    "warn_dropped",
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


def warn_dropped(selection: AiortcSelection, *, stacklevel: int) -> None:
    """Emit one :class:`~rtckit.ice.IceConfigWarning` per URI that *selection* left out."""
    for uri, why in selection.dropped:
        warnings.warn(
            f"ICE server URI {str(uri)!r} left out: {why}", IceConfigWarning, stacklevel=stacklevel
        )


def rtc_configuration(config: IceConfig, selection: AiortcSelection) -> RTCConfiguration:
    """Return aiortc's ``RTCConfiguration`` with the servers *selection* chose from *config*."""
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
    cannot express the policy: use :func:`~rtckit.peer.connection.create_peer_connection`, which
    applies it.
    """
    selection = select_for_aiortc(config)
    warn_dropped(selection, stacklevel=3)
    if config.transport_policy is IceTransportPolicy.RELAY and not aiortc_has_transport_policy():
        warnings.warn(
            "this aiortc's RTCConfiguration has no iceTransportPolicy: the relay policy is "
            "applied only by rtckit.peer.connection.create_peer_connection()",
            IceConfigWarning,
            stacklevel=2,
        )
    return rtc_configuration(config, selection)
