"""ICE server configuration: STUN/TURN URIs, servers, transport policy (pure, no I/O).

The objects here describe *which* STUN and TURN servers a peer may use and whether it may use
only relayed candidates. They are built from URI strings (:rfc:`7064`, :rfc:`7065`), from the
browser's ``RTCConfiguration`` shape (a dict or JSON text) or from environment variables, and
turned back into the browser shape with :meth:`IceConfig.to_browser`. Converting them to aiortc
objects is :mod:`rtckit.rtcconfig`'s job.

An explicitly empty server list means *host candidates only*: rtckit never adds a default
public STUN server.

Environment variables read by :meth:`IceConfig.from_env`:

``RTCKIT_ICE_SERVERS``
    Either JSON (a list of ``{"urls", "username", "credential"}`` objects, or a whole browser
    ``RTCConfiguration`` object with ``iceServers``) or STUN/TURN URIs separated by commas or
    whitespace. Unset or empty: no ICE servers (host candidates only).
``RTCKIT_TURN_USERNAME``, ``RTCKIT_TURN_CREDENTIAL``
    Static TURN credentials, given to every server with a ``turn:``/``turns:`` URI that has
    none of its own.
``RTCKIT_TURN_SECRET``
    A coturn ``static-auth-secret``: time-limited TURN REST credentials are issued with it
    (see :mod:`rtckit.turn`) for every TURN server without credentials. Cannot be combined with
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
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from rtckit.errors import ConfigurationError

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "ENV_ICE_SERVERS",
    "ENV_ICE_TRANSPORT_POLICY",
    "ENV_TURN_CREDENTIAL",
    "ENV_TURN_SECRET",
    "ENV_TURN_TTL",
    "ENV_TURN_USER",
    "ENV_TURN_USERNAME",
    "IceConfig",
    "IceConfigWarning",
    "IceServer",
    "IceServerUri",
    "IceTransportPolicy",
    "TurnTransport",
    "UriScheme",
    "parse_uri",
]

DEFAULT_PORT: Final = 3478
"""Default port of ``stun:`` and ``turn:`` URIs."""
DEFAULT_TLS_PORT: Final = 5349
"""Default port of ``stuns:`` and ``turns:`` URIs."""

ENV_ICE_SERVERS: Final = "RTCKIT_ICE_SERVERS"
ENV_TURN_USERNAME: Final = "RTCKIT_TURN_USERNAME"
ENV_TURN_CREDENTIAL: Final = "RTCKIT_TURN_CREDENTIAL"
ENV_TURN_SECRET: Final = "RTCKIT_TURN_SECRET"  # noqa: S105 - a variable name, no secret
ENV_TURN_USER: Final = "RTCKIT_TURN_USER"
ENV_TURN_TTL: Final = "RTCKIT_TURN_TTL"
ENV_ICE_TRANSPORT_POLICY: Final = "RTCKIT_ICE_TRANSPORT_POLICY"


class IceConfigWarning(UserWarning):
    """Part of an ICE configuration cannot be used and was left out (e.g. by aiortc)."""


class UriScheme(enum.StrEnum):
    """Scheme of a STUN (:rfc:`7064`) or TURN (:rfc:`7065`) URI."""

    STUN = "stun"
    STUNS = "stuns"
    TURN = "turn"
    TURNS = "turns"

    @property
    def is_turn(self) -> bool:
        """Whether this is ``turn`` or ``turns``."""
        return self in (UriScheme.TURN, UriScheme.TURNS)

    @property
    def is_secure(self) -> bool:
        """Whether this is ``stuns`` or ``turns`` (TLS, or DTLS for ``turns`` over UDP)."""
        return self in (UriScheme.STUNS, UriScheme.TURNS)


class TurnTransport(enum.StrEnum):
    """The ``?transport=`` of a TURN URI: how the client reaches the TURN server."""

    UDP = "udp"
    TCP = "tcp"


class IceTransportPolicy(enum.StrEnum):
    """Which candidates ICE may use, as the browser's ``iceTransportPolicy``."""

    ALL = "all"
    """Host, server-reflexive and relayed candidates."""
    RELAY = "relay"
    """Only candidates relayed by a TURN server (hides the peers' addresses from each other)."""


def _bad(what: str, value: object, why: str) -> ConfigurationError:
    return ConfigurationError(f"invalid {what} {value!r}: {why}")


def _to_scheme(value: UriScheme | str) -> UriScheme:
    if isinstance(value, UriScheme):
        return value
    try:
        return UriScheme(str(value).lower())
    except ValueError:
        raise _bad("ICE URI scheme", value, "expected one of stun, stuns, turn, turns") from None


def _to_transport(value: TurnTransport | str | None) -> TurnTransport | None:
    if value is None or isinstance(value, TurnTransport):
        return value
    try:
        return TurnTransport(str(value).lower())
    except ValueError:
        raise _bad("TURN transport", value, "expected udp or tcp") from None


def _to_policy(value: IceTransportPolicy | str) -> IceTransportPolicy:
    if isinstance(value, IceTransportPolicy):
        return value
    try:
        return IceTransportPolicy(str(value).lower())
    except ValueError:
        raise _bad("ICE transport policy", value, "expected 'all' or 'relay'") from None


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _normalize_host(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _bad("ICE server host", value, "the host is empty")
    if value.startswith("[") and value.endswith("]"):
        raise _bad("ICE server host", value, "give the IPv6 address without brackets")
    if "%" in value:
        raise _bad("ICE server host", value, "IPv6 zone identifiers are not supported")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if ":" in value:
        raise _bad("ICE server host", value, "not a valid IPv6 address")
    if len(value) > 253 or not all(_LABEL.fullmatch(label) for label in value.split(".")):
        raise _bad("ICE server host", value, "not a valid host name or IP address")
    return value


def _default_port(uri: IceServerUri) -> int:
    return DEFAULT_TLS_PORT if uri.scheme.is_secure else DEFAULT_PORT


def _default_transport(uri: IceServerUri) -> TurnTransport | None:
    if uri.scheme is UriScheme.TURN:
        return TurnTransport.UDP
    if uri.scheme is UriScheme.TURNS:
        return TurnTransport.TCP
    return None


@attrs.frozen(kw_only=True)
class IceServerUri:
    """One STUN or TURN URI, e.g. ``turn:turn.example.org:3478?transport=tcp``.

    *host* is a host name or an IP address (an IPv6 address without brackets: ``::1``).
    *port* defaults to 3478, or 5349 for ``stuns``/``turns``. *transport* exists only for TURN
    URIs and defaults to ``udp`` for ``turn`` and ``tcp`` for ``turns``; it is ``None`` for
    STUN URIs, which take no query (:rfc:`7064`). ``str(uri)`` formats the URI, leaving out the
    default port and transport.
    """

    scheme: UriScheme = attrs.field(converter=_to_scheme)
    host: str = attrs.field(converter=_normalize_host)
    port: int = attrs.field(default=attrs.Factory(_default_port, takes_self=True))
    transport: TurnTransport | None = attrs.field(
        default=attrs.Factory(_default_transport, takes_self=True), converter=_to_transport
    )

    @port.validator
    def _check_port(self, _attribute: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise _bad(f"port in {self.scheme}: URI", value, "expected an integer 1-65535")

    @transport.validator
    def _check_transport(self, _attribute: object, value: TurnTransport | None) -> None:
        if not self.scheme.is_turn and value is not None:
            raise _bad(
                f"transport for {self.scheme}: URI",
                str(value),
                "STUN URIs take no transport (RFC 7064)",
            )
        if self.scheme.is_turn and value is None:
            raise _bad(f"transport for {self.scheme}: URI", value, "expected udp or tcp")

    @classmethod
    def parse(cls, text: str) -> IceServerUri:
        """Parse a STUN/TURN URI, as :func:`parse_uri`."""
        return parse_uri(text)

    @property
    def is_turn(self) -> bool:
        """Whether this is a ``turn:`` or ``turns:`` URI."""
        return self.scheme.is_turn

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, the host without brackets."""
        return (self.host, self.port)

    @property
    def is_ipv6(self) -> bool:
        """Whether the host is an IPv6 address literal."""
        return ":" in self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        text = f"{self.scheme}:{host}"
        if self.port != _default_port(self):
            text += f":{self.port}"
        if self.transport is not None and self.transport != _default_transport(self):
            text += f"?transport={self.transport}"
        return text

    def format(self, *, explicit: bool = False) -> str:
        """Return the URI text; with *explicit*, always include the port and TURN transport."""
        if not explicit:
            return str(self)
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        text = f"{self.scheme}:{host}:{self.port}"
        if self.transport is not None:
            text += f"?transport={self.transport}"
        return text


def parse_uri(text: str) -> IceServerUri:
    """Parse a STUN/TURN URI (:rfc:`7064`, :rfc:`7065`) into an :class:`IceServerUri`.

    Raises :class:`~rtckit.errors.ConfigurationError` with the offending text for a bad scheme, an
    ``//authority`` or ``user@`` part, a bad host or port, a query on a STUN URI or an unknown
    TURN transport.
    """
    if not isinstance(text, str):
        raise _bad("ICE server URI", text, "expected a string")
    original = text
    text = text.strip()
    scheme_text, sep, rest = text.partition(":")
    if not sep:
        raise _bad("ICE server URI", original, "missing scheme (stun:, stuns:, turn:, turns:)")
    try:
        scheme = _to_scheme(scheme_text)
    except ConfigurationError:
        raise _bad(
            "ICE server URI",
            original,
            f"unknown scheme {scheme_text!r}, expected stun, stuns, turn or turns",
        ) from None
    if rest.startswith("//"):
        raise _bad(
            "ICE server URI",
            original,
            f"{scheme}: URIs have no '//' (write {scheme}:host:port, RFC 7064/7065)",
        )
    hostport, qmark, query = rest.partition("?")
    if "@" in hostport:
        raise _bad(
            "ICE server URI",
            original,
            "credentials do not go in the URI; give username and credential separately",
        )
    transport: TurnTransport | None = None
    if qmark:
        if not scheme.is_turn:
            raise _bad("ICE server URI", original, f"{scheme}: URIs take no query (RFC 7064)")
        key, eq, value = query.partition("=")
        if key.lower() != "transport" or not eq:
            raise _bad("ICE server URI", original, "the only query allowed is ?transport=udp|tcp")
        try:
            transport = _to_transport(value)
        except ConfigurationError:
            raise _bad(
                "ICE server URI", original, f"unknown transport {value!r}, expected udp or tcp"
            ) from None
    port_text: str | None = None
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise _bad("ICE server URI", original, "unclosed '[' around the IPv6 address")
        version: int
        try:
            version = ipaddress.ip_address(host).version
        except ValueError:
            version = 0
        if version != 6:
            raise _bad("ICE server URI", original, f"{host!r} in brackets is not an IPv6 address")
        if after:
            if not after.startswith(":"):
                raise _bad("ICE server URI", original, "unexpected text after ']'")
            port_text = after[1:]
    else:
        if hostport.count(":") > 1:
            raise _bad("ICE server URI", original, "an IPv6 address must be in brackets")
        host, colon, port_part = hostport.partition(":")
        if colon:
            port_text = port_part
    if not host:
        raise _bad("ICE server URI", original, "the host is empty")
    kwargs: dict[str, Any] = {"scheme": scheme, "host": host}
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit():
            raise _bad("ICE server URI", original, f"port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise _bad("ICE server URI", original, f"port {port} is out of range 1-65535")
        kwargs["port"] = port
    if transport is not None:
        kwargs["transport"] = transport
    try:
        return IceServerUri(**kwargs)
    except ConfigurationError as exc:
        raise ConfigurationError(f"invalid ICE server URI {original!r}: {exc}") from None


def _to_uris(value: object) -> tuple[IceServerUri, ...]:
    items: Iterable[object]
    if isinstance(value, str | IceServerUri):
        items = [value]
    elif isinstance(value, Iterable) and not isinstance(value, bytes | Mapping):
        items = value
    else:
        raise _bad("ICE server urls", value, "expected a URI string or a list of them")
    uris = tuple(item if isinstance(item, IceServerUri) else parse_uri(item) for item in items)  # type: ignore[arg-type]
    if not uris:
        raise _bad("ICE server urls", value, "an ICE server needs at least one URI")
    return uris


def _optional_str(what: str) -> Callable[[object, attrs.Attribute[str | None], object], None]:
    def check(_instance: object, _attribute: attrs.Attribute[str | None], value: object) -> None:
        if value is not None and not isinstance(value, str):
            raise _bad(what, value, "expected a string")

    return check


@attrs.frozen(kw_only=True)
class IceServer:
    """A STUN/TURN server reachable at one or more URIs, with TURN credentials.

    Every server with a ``turn:``/``turns:`` URI needs *username* and *credential*
    (for coturn's REST API, see :func:`rtckit.turn.ice_server`). The credential is hidden from
    ``repr()``.
    """

    urls: tuple[IceServerUri, ...] = attrs.field(converter=_to_uris)
    username: str | None = attrs.field(default=None, validator=_optional_str("TURN username"))
    credential: str | None = attrs.field(
        default=None, repr=False, validator=_optional_str("TURN credential")
    )

    def __attrs_post_init__(self) -> None:
        turn = [str(uri) for uri in self.urls if uri.is_turn]
        if turn and (not self.username or not self.credential):
            missing = "username" if not self.username else "credential"
            raise ConfigurationError(
                f"TURN server {turn[0]!r} has no {missing}: TURN needs a username and a "
                "credential (see rtckit.turn for coturn REST credentials)"
            )

    @property
    def has_turn(self) -> bool:
        """Whether any URI of this server is ``turn:``/``turns:``."""
        return any(uri.is_turn for uri in self.urls)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IceServer:
        """Build from one browser ``RTCIceServer`` dict (``urls``, ``username``, ``credential``)."""
        if not isinstance(data, Mapping):
            raise _bad("ICE server", data, "expected an object with 'urls'")
        unknown = set(data) - {"urls", "username", "credential", "credentialType"}
        if "url" in unknown:
            raise _bad("ICE server", dict(data), "'url' is obsolete, use 'urls'")
        if unknown:
            raise _bad("ICE server", dict(data), f"unknown keys {sorted(unknown)}")
        if "urls" not in data:
            raise _bad("ICE server", dict(data), "missing 'urls'")
        credential_type = data.get("credentialType", "password")
        if credential_type != "password":
            raise _bad("ICE server credentialType", credential_type, "only 'password' is supported")
        return cls(
            urls=data["urls"], username=data.get("username"), credential=data.get("credential")
        )

    def to_browser(self) -> dict[str, Any]:
        """Return the browser ``RTCIceServer`` dict."""
        out: dict[str, Any] = {"urls": [str(uri) for uri in self.urls]}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


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
        """Build from the ``RTCKIT_*`` environment variables listed in :mod:`rtckit.ice`.

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
        from rtckit.turn import TurnRestAuth  # turn.py imports this module

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
