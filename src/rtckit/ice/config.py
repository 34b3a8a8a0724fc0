"""ICE configuration: STUN/TURN servers and the transport policy (pure, no I/O).

The objects here describe *which* STUN and TURN servers a peer may use and whether it may use
only relayed candidates. They are built from URI strings (:rfc:`7064`, :rfc:`7065`), from the
browser's ``RTCConfiguration`` shape (a dict or JSON text) or from environment variables, and
turned back into the browser shape with :meth:`~rtckit.ice.IceConfig.to_browser`. Converting
them to aiortc objects is :mod:`rtckit.ice.aiortc`'s job; the servers themselves are in
:mod:`rtckit.ice.servers`.

An explicitly empty server list means *host candidates only*: rtckit never adds a default
public STUN server.

Environment variables read by :meth:`~rtckit.ice.IceConfig.from_env`:

``RTCKIT_ICE_SERVERS``
    Either JSON (a list of ``{"urls", "username", "credential"}`` objects, or a whole browser
    ``RTCConfiguration`` object with ``iceServers``) or STUN/TURN URIs separated by commas or
    whitespace. Unset or empty: no ICE servers (host candidates only).
``RTCKIT_TURN_USERNAME``, ``RTCKIT_TURN_CREDENTIAL``
    Static TURN credentials, given to every server with a ``turn:``/``turns:`` URI that has
    none of its own.
``RTCKIT_TURN_SECRET``
    A coturn ``static-auth-secret``: time-limited TURN REST credentials are issued with it
    (see :mod:`rtckit.ice.turn`) for every TURN server without credentials. Cannot be combined with
    ``RTCKIT_TURN_USERNAME``/``RTCKIT_TURN_CREDENTIAL``.
``RTCKIT_TURN_USER``
    The user part of issued REST usernames (default ``rtckit``).
``RTCKIT_TURN_TTL``
    Lifetime in seconds of issued REST credentials (default 86400).
``RTCKIT_ICE_TRANSPORT_POLICY``
    ``all`` (default) or ``relay``.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from rtckit.errors import ConfigurationError
from rtckit.ice.servers import IceServer, IceServerUri, _bad, parse_uri
from rtckit.ice.turn import TurnRestAuth

__all__ = [
    "ENV_ICE_SERVERS",
    "ENV_ICE_TRANSPORT_POLICY",
    "ENV_TURN_CREDENTIAL",
    "ENV_TURN_SECRET",
    "ENV_TURN_TTL",
    "ENV_TURN_USER",
    "ENV_TURN_USERNAME",
    "IceConfig",
    "IceConfigWarning",
    "IceTransportPolicy",
]

ENV_ICE_SERVERS: Final = "RTCKIT_ICE_SERVERS"
ENV_TURN_USERNAME: Final = "RTCKIT_TURN_USERNAME"
ENV_TURN_CREDENTIAL: Final = "RTCKIT_TURN_CREDENTIAL"
ENV_TURN_SECRET: Final = "RTCKIT_TURN_SECRET"  # noqa: S105 - a variable name, no secret
ENV_TURN_USER: Final = "RTCKIT_TURN_USER"
ENV_TURN_TTL: Final = "RTCKIT_TURN_TTL"
ENV_ICE_TRANSPORT_POLICY: Final = "RTCKIT_ICE_TRANSPORT_POLICY"


class IceConfigWarning(UserWarning):
    """Part of an ICE configuration cannot be used and was left out (e.g. by aiortc)."""


class IceTransportPolicy(enum.StrEnum):
    """Which candidates ICE may use, as the browser's ``iceTransportPolicy``."""

    ALL = "all"
    """Host, server-reflexive and relayed candidates."""
    RELAY = "relay"
    """Only candidates relayed by a TURN server (hides the peers' addresses from each other)."""


def _to_policy(value: IceTransportPolicy | str) -> IceTransportPolicy:
    if isinstance(value, IceTransportPolicy):
        return value
    try:
        return IceTransportPolicy(str(value).lower())
    except ValueError:
        raise _bad("ICE transport policy", value, "expected 'all' or 'relay'") from None


def _to_servers(value: Iterable[IceServer | Mapping[str, Any]]) -> tuple[IceServer, ...]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise _bad("ICE server list", value, "expected a list of ICE servers")
    return tuple(
        item if isinstance(item, IceServer) else IceServer.from_dict(item) for item in value
    )


# Browser RTCConfiguration members rtckit accepts and ignores (they are not about ICE servers).


_IGNORED_BROWSER_KEYS: Final = frozenset(
    {"bundlePolicy", "rtcpMuxPolicy", "iceCandidatePoolSize", "certificates", "peerIdentity"}
)


@attrs.frozen(kw_only=True)
class IceConfig:
    """The ICE servers a peer may use and its transport policy.

    ``IceConfig()`` has no server at all: host candidates only. With
    :attr:`IceTransportPolicy.RELAY`, at least one TURN server is required.
    """

    servers: tuple[IceServer, ...] = attrs.field(default=(), converter=_to_servers)
    transport_policy: IceTransportPolicy = attrs.field(
        default=IceTransportPolicy.ALL, converter=_to_policy
    )

    def __attrs_post_init__(self) -> None:
        if self.transport_policy is IceTransportPolicy.RELAY and not any(
            server.has_turn for server in self.servers
        ):
            raise ConfigurationError(
                "iceTransportPolicy 'relay' needs at least one turn: or turns: server, "
                "otherwise no candidate can be gathered"
            )

    @property
    def uris(self) -> tuple[IceServerUri, ...]:
        """Every URI of every server, in order."""
        return tuple(uri for server in self.servers for uri in server.urls)

    @classmethod
    def from_uris(
        cls,
        uris: Iterable[str | IceServerUri],
        *,
        username: str | None = None,
        credential: str | None = None,
        transport_policy: IceTransportPolicy | str = IceTransportPolicy.ALL,
    ) -> IceConfig:
        """One server per STUN URI, and one server holding all TURN URIs with the credentials."""
        parsed = [uri if isinstance(uri, IceServerUri) else parse_uri(uri) for uri in uris]
        servers = [IceServer(urls=[uri]) for uri in parsed if not uri.is_turn]
        turn = [uri for uri in parsed if uri.is_turn]
        if turn:
            servers.append(IceServer(urls=turn, username=username, credential=credential))
        return cls(servers=servers, transport_policy=transport_policy)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IceConfig:
        """Build from the browser ``RTCConfiguration`` shape.

        ``{"iceServers": [{"urls": ..., "username": ..., "credential": ...}],
        "iceTransportPolicy": "relay"}``. A missing ``iceServers`` means no server.
        """
        if not isinstance(data, Mapping):
            raise _bad("RTCConfiguration", data, "expected an object with 'iceServers'")
        unknown = set(data) - {"iceServers", "iceTransportPolicy"} - _IGNORED_BROWSER_KEYS
        if unknown:
            raise _bad("RTCConfiguration", dict(data), f"unknown keys {sorted(unknown)}")
        return cls(
            servers=data.get("iceServers", ()),
            transport_policy=data.get("iceTransportPolicy", IceTransportPolicy.ALL),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> IceConfig:
        """Build from JSON: an ``RTCConfiguration`` object or a bare ``iceServers`` list."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"invalid ICE configuration JSON: {exc}") from None
        if isinstance(data, list):
            return cls(servers=data)
        return cls.from_dict(data)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> IceConfig:
        """Build from the ``RTCKIT_*`` environment variables listed in :mod:`rtckit.ice.config`.

        *environ* defaults to ``os.environ``; *clock* (for issued REST credentials)
        to ``time.time()``.
        """
        env = os.environ if environ is None else environ
        raw = env.get(ENV_ICE_SERVERS, "").strip()
        policy = env.get(ENV_ICE_TRANSPORT_POLICY, "").strip() or IceTransportPolicy.ALL
        try:
            policy = _to_policy(policy)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{ENV_ICE_TRANSPORT_POLICY}: {exc}") from None
        servers: list[IceServer | dict[str, Any]]
        try:
            if raw.startswith(("[", "{")):
                data = json.loads(raw)
                if isinstance(data, Mapping):
                    if "iceTransportPolicy" in data and ENV_ICE_TRANSPORT_POLICY not in env:
                        policy = _to_policy(data["iceTransportPolicy"])
                    data = data.get("iceServers", [])
                if not isinstance(data, list):
                    raise _bad("ICE server list", data, "expected a JSON list")
                servers = [dict(item) if isinstance(item, Mapping) else item for item in data]
            else:
                uris = [parse_uri(part) for part in re.split(r"[,\s]+", raw) if part]
                stun = [{"urls": [str(uri)]} for uri in uris if not uri.is_turn]
                turn = [str(uri) for uri in uris if uri.is_turn]
                servers = [*stun, *([{"urls": turn}] if turn else [])]
        except ValueError as exc:
            raise ConfigurationError(f"{ENV_ICE_SERVERS}: {exc}") from None
        servers = _fill_turn_credentials(servers, env, clock)
        try:
            return cls(servers=servers, transport_policy=policy)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{ENV_ICE_SERVERS}: {exc}") from None

    def to_browser(self) -> dict[str, Any]:
        """Return the browser ``RTCConfiguration`` dict (``iceServers``, ``iceTransportPolicy``)."""
        return {
            "iceServers": [server.to_browser() for server in self.servers],
            "iceTransportPolicy": str(self.transport_policy),
        }

    def to_json(self, **kwargs: Any) -> str:
        """Return :meth:`to_browser` as JSON text; *kwargs* go to ``json.dumps()``."""
        return json.dumps(self.to_browser(), **kwargs)


def _fill_turn_credentials(
    servers: list[IceServer | dict[str, Any]],
    env: Mapping[str, str],
    clock: Callable[[], float] | None,
) -> list[IceServer | dict[str, Any]]:
    """Give TURN servers without credentials the static or REST credentials from *env*."""
    username = env.get(ENV_TURN_USERNAME) or None
    credential = env.get(ENV_TURN_CREDENTIAL) or None
    secret = env.get(ENV_TURN_SECRET) or None
    if secret is not None and (username is not None or credential is not None):
        raise ConfigurationError(
            f"{ENV_TURN_SECRET} cannot be combined with {ENV_TURN_USERNAME}/"
            f"{ENV_TURN_CREDENTIAL}: choose REST credentials or static ones"
        )
    if (username is None) != (credential is None):
        raise ConfigurationError(
            f"{ENV_TURN_USERNAME} and {ENV_TURN_CREDENTIAL} must be set together"
        )
    if secret is not None:
        ttl_text = env.get(ENV_TURN_TTL, "").strip() or "86400"
        if not ttl_text.isdigit() or int(ttl_text) <= 0:
            raise _bad(ENV_TURN_TTL, ttl_text, "expected a positive number of seconds")
        auth_kwargs: dict[str, Any] = {"secrets": [secret], "ttl": int(ttl_text)}
        if clock is not None:
            auth_kwargs["clock"] = clock
        issued = TurnRestAuth(**auth_kwargs).issue(env.get(ENV_TURN_USER) or "rtckit")
        username, credential = issued.username, issued.password
    if username is None:
        return servers
    out: list[IceServer | dict[str, Any]] = []
    for server in servers:
        if isinstance(server, dict) and "username" not in server and "credential" not in server:
            urls = server.get("urls", [])
            texts = [urls] if isinstance(urls, str) else list(urls)
            if any(isinstance(u, str) and u.strip().lower().startswith("turn") for u in texts):
                server = {**server, "username": username, "credential": credential}
        out.append(server)
    return out
