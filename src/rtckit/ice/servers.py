"""STUN and TURN servers: their URIs (:rfc:`7064`, :rfc:`7065`) and credentials (pure, no I/O).

:func:`~rtckit.ice.parse_uri` reads one ``stun:``/``stuns:``/``turn:``/``turns:`` URI into
an :class:`~rtckit.ice.IceServerUri`; an :class:`~rtckit.ice.IceServer` is the browser's
``RTCIceServer``: URIs with an optional username and credential.
:class:`~rtckit.ice.IceConfig` (in :mod:`rtckit.ice.config`) combines servers with a
transport policy.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from rtckit.errors import ConfigurationError

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "IceServer",
    "IceServerUri",
    "TurnTransport",
    "UriScheme",
    "parse_uri",
]

DEFAULT_PORT: Final = 3478
"""Default port of ``stun:`` and ``turn:`` URIs."""


DEFAULT_TLS_PORT: Final = 5349
"""Default port of ``stuns:`` and ``turns:`` URIs."""


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
    (for coturn's REST API, see :func:`rtckit.ice.turn.ice_server`). The credential is hidden from
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
                "credential (see rtckit.ice.turn for coturn REST credentials)"
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
