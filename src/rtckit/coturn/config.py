"""coturn's configuration, rendered safely by rtckit (pure, no I/O).

* :class:`~rtckit.coturn.CoturnConfig` describes a coturn instance (TURN REST secret
  authentication, realm, ports, TLS from PEM files such as ``rtckit.certs`` writes) and
  renders it as ``turnserver.conf`` text (:meth:`~rtckit.coturn.CoturnConfig.render`) or
  command-line flags (:meth:`~rtckit.coturn.CoturnConfig.argv`);
* it refuses relaying to internal addresses by default:
  :data:`~rtckit.coturn.config.DEFAULT_DENIED_PEER_NETWORKS` becomes ``denied-peer-ip`` lines, so a
  TURN client cannot use the relay to reach private networks, loopback, link-local,
  carrier-grade NAT, multicast or the cloud metadata service
  (:data:`~rtckit.coturn.config.CLOUD_METADATA_ADDRESSES`, which no exception can allow);
* it translates between coturn's configuration and rtckit's ICE configuration:
  :meth:`~rtckit.coturn.CoturnConfig.from_ice` builds the coturn that serves an
  :class:`~rtckit.ice.IceConfig` (or a :class:`~rtckit.ice.turn.TurnRestAuth`),
  :meth:`~rtckit.coturn.CoturnConfig.ice_config` gives the :class:`~rtckit.ice.IceConfig` its
  clients use (URIs and a REST credential).

Labs that relay between peers on loopback or private addresses opt in with
``allow_loopback_peers=True`` or ``allowed_peer_ips=[...]``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from rtckit.errors import ConfigurationError, CredentialError
from rtckit.ice.config import IceConfig, IceTransportPolicy
from rtckit.ice.servers import IceServerUri, TurnTransport, UriScheme
from rtckit.ice.turn import DEFAULT_SEPARATOR, TurnRestAuth

__all__ = [
    "CLOUD_METADATA_ADDRESSES",
    "DEFAULT_DENIED_PEER_NETWORKS",
    "CoturnConfig",
    "IPNetwork",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
"""An IPv4 or IPv6 network (a single address is a /32 or /128)."""


_DENIED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this network' (0.0.0.0 reaches the TURN host itself)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "carrier-grade NAT shared space (RFC 6598); Alibaba's metadata"),
    ("127.0.0.0/8", "loopback: services on the TURN host itself"),
    ("169.254.0.0/16", "link-local, which holds the cloud metadata service 169.254.169.254"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, and the broadcast address 255.255.255.255"),
    ("::1/128", "IPv6 loopback"),
    ("::ffff:0:0/96", "IPv4-mapped IPv6: would reach every IPv4 range above"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215): may translate to private IPv4"),
    ("fc00::/7", "IPv6 unique local (private), including AWS metadata fd00:ec2::254"),
    ("fe80::/10", "IPv6 link-local"),
    ("ff00::/8", "IPv6 multicast"),
)


DEFAULT_DENIED_PEER_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(network) for network, _ in _DENIED
)
"""Peer networks coturn refuses to relay to unless a lab opts in.

IPv4: ``0.0.0.0/8``, ``10.0.0.0/8``, ``100.64.0.0/10``, ``127.0.0.0/8``, ``169.254.0.0/16``,
``172.16.0.0/12``, ``192.168.0.0/16``, ``224.0.0.0/4``, ``240.0.0.0/4``. IPv6: ``::1/128``,
``::ffff:0:0/96`` (IPv4-mapped), ``64:ff9b:1::/48``, ``fc00::/7``, ``fe80::/10``, ``ff00::/8``.
The how-to guide "Run coturn with rtckit" says why each is there.
"""


CLOUD_METADATA_ADDRESSES: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.169.254/32"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
"""Cloud instance metadata services (AWS, GCP, Azure, OpenStack...; AWS over IPv6).

Always denied: an ``allowed_peer_ips`` entry containing one is refused.
"""


_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

# Values rendered into turnserver.conf: no whitespace, quotes, comment signs or control
# characters, so a value can never start a second option.


_SAFE_VALUE = re.compile(r"[!$-&(-~]+")


def _networks(value: Iterable[Any]) -> tuple[IPNetwork, ...]:
    if isinstance(value, str):
        value = [value]
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in value)
    except ValueError as exc:
        raise ConfigurationError(f"not an IP address or network: {exc}") from None


def _strings(value: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(item) for item in value)


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _check_ips(_instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for item in value:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ConfigurationError(f"{attribute.name}: {item!r} is not an IP address") from None


def _check_port(_instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= 65535:
        raise ConfigurationError(f"{attribute.name} must be a port 1-65535, not {value!r}")


def _check_safe(_instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _SAFE_VALUE.fullmatch(value):
        raise ConfigurationError(
            f"{attribute.name} must be non-empty printable ASCII without spaces, quotes or '#'"
        )


def _check_secrets(
    _instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    if not value:
        raise ConfigurationError("at least one static auth secret is needed (TURN REST auth)")
    for secret in value:
        _check_safe(_instance, attribute, secret)


def _check_optional_positive(
    _instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and value <= 0:
        raise ConfigurationError(f"{attribute.name} must be positive, not {value!r}")


def _check_path(_instance: object, attribute: attrs.Attribute[Any], value: Path | None) -> None:
    if value is not None and not _SAFE_VALUE.fullmatch(str(value)):
        raise ConfigurationError(f"{attribute.name}: {str(value)!r} has spaces or odd characters")


def _check_extra(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    for option in value:
        name, _, argument = option.partition("=")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or (
            argument and not _SAFE_VALUE.fullmatch(argument)
        ):
            raise ConfigurationError(f"extra option {option!r} is not 'name' or 'name=value'")


def _check_separator(_instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if len(value) != 1 or value.isdigit() or not _SAFE_VALUE.fullmatch(value):
        raise ConfigurationError(f"{attribute.name} must be one printable non-digit character")


def _check_external_ip(_instance: object, _attribute: object, value: str | None) -> None:
    if value is None:
        return
    try:
        for part in value.split("/", 1):
            ipaddress.ip_address(part)
    except ValueError:
        raise ConfigurationError(
            f"external_ip {value!r} is 'public-ip' or 'public-ip/private-ip'"
        ) from None


def _range(network: IPNetwork) -> str | None:
    """coturn's ``ip`` or ``ip-ip`` form of *network*.

    coturn 4.6 reads an all-zero address in a range as "any address": ``denied-peer-ip=0.0.0.0``
    or ``=::`` denies every peer. So a range starting at zero starts one address later, and
    the zero address alone is left out: coturn refuses zero peers itself (its fix for
    CVE-2020-26262) unless loopback peers are allowed.
    """
    first, last = network.network_address, network.broadcast_address
    if int(first) == 0:
        if first == last:
            return None
        first += 1
    return _address(first) if first == last else f"{_address(first)}-{_address(last)}"


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """*ip* as text, the same on every Python version.

    Python 3.13 writes IPv4-mapped IPv6 addresses as ``::ffff:1.2.3.4``, 3.11/3.12 as
    ``::ffff:102:304``; coturn reads both, and rtckit always writes the hexadecimal form.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        value = int(ip.ipv4_mapped)
        return f"::ffff:{value >> 16:x}:{value & 0xFFFF:x}"
    return str(ip)


@attrs.frozen(kw_only=True)
class CoturnConfig:
    """A coturn instance: what :meth:`render` writes to ``turnserver.conf``.

    Authentication is always TURN REST (``use-auth-secret``): clients present a username
    ``"<expiry>:<user>"`` and the password ``base64(HMAC-SHA1(secret, username))`` (see
    ``rtckit.ice.turn``). Several secrets may be given to rotate them.

    The last three fields only concern :class:`CoturnProcess` and are not rendered.
    """

    realm: str = attrs.field(validator=_check_safe)
    """The TURN realm (e.g. your domain)."""
    static_auth_secrets: tuple[str, ...] = attrs.field(converter=_strings, validator=_check_secrets)
    """REST API shared secrets (coturn ``static-auth-secret``); the first signs new credentials."""
    rest_api_separator: str = attrs.field(default=DEFAULT_SEPARATOR, validator=_check_separator)
    """Between expiry time and user in REST usernames (coturn ``rest-api-separator``)."""
    listening_ips: tuple[str, ...] = attrs.field(
        default=("127.0.0.1",), converter=_strings, validator=_check_ips
    )
    """Addresses to listen on (by default loopback only, so that the server is not reachable
    from other machines until you choose an address)."""
    listening_port: int = attrs.field(default=3478, validator=_check_port)
    """STUN/TURN port for UDP and TCP."""
    tls_listening_port: int = attrs.field(default=5349, validator=_check_port)
    """TURN over TLS port (used when a certificate is given)."""
    relay_ips: tuple[str, ...] = attrs.field(default=(), converter=_strings, validator=_check_ips)
    """Addresses relayed traffic leaves from (the listening addresses when empty)."""
    external_ip: str | None = attrs.field(default=None, validator=_check_external_ip)
    """``"public"`` or ``"public/private"`` when coturn is behind a 1:1 NAT (cloud VMs)."""
    min_port: int = attrs.field(default=49152, validator=_check_port)
    """Lowest relay port."""
    max_port: int = attrs.field(default=65535, validator=_check_port)
    """Highest relay port."""
    tls_cert: Path | None = attrs.field(
        default=None, converter=_optional_path, validator=_check_path
    )
    """PEM certificate (chain) for TURN over TLS; with :attr:`tls_key`."""
    tls_key: Path | None = attrs.field(
        default=None, converter=_optional_path, validator=_check_path
    )
    """PEM private key (unencrypted) for :attr:`tls_cert`."""
    udp: bool = True
    """Accept clients over UDP."""
    tcp: bool = True
    """Accept clients over TCP."""
    dtls: bool = False
    """Accept clients over DTLS (needs a certificate; aiortc does not use TURN over DTLS)."""
    tcp_relay: bool = True
    """Allow TCP relay allocations (RFC 6062)."""
    denied_peer_ips: tuple[IPNetwork, ...] = attrs.field(
        default=DEFAULT_DENIED_PEER_NETWORKS, converter=_networks
    )
    """Peer networks coturn will not relay to (``denied-peer-ip``)."""
    allowed_peer_ips: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_networks)
    """Exceptions for labs (``allowed-peer-ip``), which win over :attr:`denied_peer_ips`.
    Cloud metadata addresses cannot be allowed."""
    allow_loopback_peers: bool = False
    """Relay to loopback peers (``allow-loopback-peers``); for tests on one machine only."""
    fingerprint: bool = True
    """Add FINGERPRINT to TURN messages (browsers expect it)."""
    cli: bool = False
    """coturn's telnet admin CLI; off (``no-cli``)."""
    rfc5780: bool = False
    """NAT behaviour discovery (needs two addresses); off (``no-rfc5780``)."""
    stun_backward_compatibility: bool = False
    """Answer RFC 3489 requests without the magic cookie; off."""
    software_attribute: bool = False
    """Reveal coturn's version in SOFTWARE; off (``no-software-attribute``)."""
    secure_stun: bool = False
    """Require authentication for plain STUN Binding requests too."""
    stale_nonce: int | None = attrs.field(default=600, validator=_check_optional_positive)
    """Nonce lifetime in seconds; ``None`` keeps coturn's default."""
    user_quota: int | None = attrs.field(default=None, validator=_check_optional_positive)
    """Concurrent allocations per user."""
    total_quota: int | None = attrs.field(default=None, validator=_check_optional_positive)
    """Concurrent allocations in total."""
    max_bps: int | None = attrs.field(default=None, validator=_check_optional_positive)
    """Bandwidth cap per session, bytes per second."""
    verbose: bool = False
    """coturn's moderate verbose logging."""
    extra_options: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, validator=_check_extra
    )
    """More ``name`` or ``name=value`` options, rendered last (no validation beyond syntax)."""
    executable: str = "turnserver"
    """The coturn binary, a name looked up on ``PATH`` (and ``/usr/sbin``) or a path."""
    startup_timeout: float = attrs.field(default=10.0, validator=_check_optional_positive)
    """Seconds :class:`CoturnProcess` waits for the first STUN answer."""
    stop_timeout: float = attrs.field(default=5.0, validator=_check_optional_positive)
    """Seconds between SIGTERM and SIGKILL when stopping."""

    def __attrs_post_init__(self) -> None:
        if self.min_port > self.max_port:
            raise ConfigurationError(f"min_port {self.min_port} > max_port {self.max_port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("tls_cert and tls_key go together")
        if self.dtls and self.tls_cert is None:
            raise ConfigurationError("DTLS needs tls_cert and tls_key")
        if not (self.udp or self.tcp or self.tls_cert is not None):
            raise ConfigurationError("coturn needs at least one of UDP, TCP or TLS listeners")
        for allowed in self.allowed_peer_ips:
            for metadata in CLOUD_METADATA_ADDRESSES:
                if metadata.version == allowed.version and metadata.subnet_of(allowed):  # type: ignore[arg-type]
                    raise ConfigurationError(
                        f"allowed_peer_ips {allowed} contains the cloud metadata address "
                        f"{metadata.network_address}, which is never allowed"
                    )

    @property
    def tls(self) -> bool:
        """Whether TURN over TLS is served (a certificate is configured)."""
        return self.tls_cert is not None

    def effective_denied_peer_ips(self) -> tuple[IPNetwork, ...]:
        """The denied networks rendered: :attr:`denied_peer_ips` plus the metadata addresses,
        without loopback when :attr:`allow_loopback_peers` is set."""
        networks: list[IPNetwork] = []
        for network in (*self.denied_peer_ips, *CLOUD_METADATA_ADDRESSES):
            if self.allow_loopback_peers and any(
                network.version == loopback.version and network.subnet_of(loopback)  # type: ignore[arg-type]
                for loopback in _LOOPBACK
            ):
                continue
            if network not in networks:
                networks.append(network)
        return tuple(networks)

    def options(self) -> list[tuple[str, str | None]]:
        """The options as ``(name, value)`` pairs (value ``None`` for flags), in order."""
        options: list[tuple[str, str | None]] = []
        add = options.append
        options.extend(("listening-ip", ip) for ip in self.listening_ips)
        add(("listening-port", str(self.listening_port)))
        options.extend(("relay-ip", ip) for ip in self.relay_ips)
        if self.external_ip is not None:
            add(("external-ip", self.external_ip))
        add(("min-port", str(self.min_port)))
        add(("max-port", str(self.max_port)))
        add(("realm", self.realm))
        add(("use-auth-secret", None))
        options.extend(("static-auth-secret", secret) for secret in self.static_auth_secrets)
        if self.rest_api_separator != DEFAULT_SEPARATOR:
            add(("rest-api-separator", self.rest_api_separator))
        if self.tls_cert is not None and self.tls_key is not None:
            add(("tls-listening-port", str(self.tls_listening_port)))
            add(("cert", str(self.tls_cert)))
            add(("pkey", str(self.tls_key)))
            add(("no-tlsv1", None))
            add(("no-tlsv1_1", None))
        else:
            add(("no-tls", None))
        for enabled, flag in (
            (self.dtls, "no-dtls"),
            (self.udp, "no-udp"),
            (self.tcp, "no-tcp"),
            (self.tcp_relay, "no-tcp-relay"),
            (self.cli, "no-cli"),
            (self.rfc5780, "no-rfc5780"),
            (self.stun_backward_compatibility, "no-stun-backward-compatibility"),
            (self.software_attribute, "no-software-attribute"),
        ):
            if not enabled:
                add((flag, None))
        for enabled, flag in (
            (self.fingerprint, "fingerprint"),
            (self.secure_stun, "secure-stun"),
            (self.verbose, "verbose"),
            (self.allow_loopback_peers, "allow-loopback-peers"),
        ):
            if enabled:
                add((flag, None))
        add(("no-multicast-peers", None))
        for name, number in (
            ("stale-nonce", self.stale_nonce),
            ("user-quota", self.user_quota),
            ("total-quota", self.total_quota),
            ("max-bps", self.max_bps),
        ):
            if number is not None:
                add((name, str(number)))
        for name, networks in (
            ("denied-peer-ip", self.effective_denied_peer_ips()),
            ("allowed-peer-ip", self.allowed_peer_ips),
        ):
            for network in networks:
                text = _range(network)
                if text is not None:
                    add((name, text))
        for option in self.extra_options:
            name, sep, argument = option.partition("=")
            add((name, argument if sep else None))
        return options

    def render(self, extra: Iterable[tuple[str, str | None]] = ()) -> str:
        """``turnserver.conf`` text; *extra* options (e.g. pidfile, log) are appended.

        The text holds the REST secrets: store it readable by coturn only (mode 0600).
        """
        lines = [
            "# turnserver.conf rendered by rtckit.coturn.CoturnConfig.render()",
            "# TURN REST authentication: use-auth-secret + static-auth-secret.",
            "# denied-peer-ip keeps relays away from internal networks; see rtckit docs.",
        ]
        for name, value in (*self.options(), *extra):
            lines.append(name if value is None else f"{name}={value}")
        return "\n".join(lines) + "\n"

    def argv(self, extra: Iterable[tuple[str, str | None]] = ()) -> list[str]:
        """The same options as ``turnserver`` command-line flags (``--name=value``).

        Start with ``turnserver -n <flags>``. Beware: secrets on a command line are visible
        to every local user (``ps``); :class:`CoturnProcess` uses a 0600 file instead.
        """
        return [
            f"--{name}" if value is None else f"--{name}={value}"
            for name, value in (*self.options(), *extra)
        ]

    def uris(self, *, host: str | None = None) -> list[IceServerUri]:
        """The ICE server URIs clients use for this instance.

        ``stun:`` and ``turn:`` (UDP, then TCP) on :attr:`listening_port`, ``turns:`` on
        :attr:`tls_listening_port` when TLS is configured. *host* defaults to the public part
        of :attr:`external_ip`, else the first listening address (a wildcard becomes
        loopback); give a DNS name when the TLS certificate is for one.
        """
        if host is None:
            host = self.external_ip.split("/", 1)[0] if self.external_ip else self.listening_ips[0]
            host = _client_host(host)
        port = self.listening_port
        uris = [IceServerUri(scheme=UriScheme.STUN, host=host, port=port)]
        if self.udp:
            uris.append(IceServerUri(scheme=UriScheme.TURN, host=host, port=port))
        if self.tcp:
            uris.append(IceServerUri(scheme=UriScheme.TURN, host=host, port=port, transport="tcp"))
        if self.tls:
            uris.append(
                IceServerUri(scheme=UriScheme.TURNS, host=host, port=self.tls_listening_port)
            )
        return uris

    def uri(
        self, scheme: UriScheme | str, transport: str | None = None, *, host: str | None = None
    ) -> IceServerUri:
        """The one URI of :meth:`uris` with *scheme* (and, for ``turn:``, *transport*).

        Raises :class:`~rtckit.errors.ConfigurationError` if this coturn does not serve it.
        """
        matches = [
            uri
            for uri in self.uris(host=host)
            if uri.scheme == scheme and (transport is None or uri.transport == transport)
        ]
        if len(matches) != 1:
            wanted = f"{scheme}:" + (f" over {transport}" if transport else "")
            raise ConfigurationError(f"this coturn serves no single {wanted} URI")
        return matches[0]

    def urls(self, *, host: str | None = None) -> list[str]:
        """:meth:`uris` as text, each with its port and TURN transport spelled out."""
        return [uri.format(explicit=True) for uri in self.uris(host=host)]

    def ice_config(
        self,
        *,
        user: str = "rtckit",
        auth: TurnRestAuth | None = None,
        ttl: int | None = None,
        host: str | None = None,
        transport_policy: IceTransportPolicy | str = IceTransportPolicy.ALL,
    ) -> IceConfig:
        """The :class:`~rtckit.ice.IceConfig` a client of this coturn uses.

        Its servers are :meth:`uris` (*host* as there): one per STUN URI, and one holding the
        TURN URIs with a TURN REST credential issued for *user*, valid *ttl* seconds. *auth*
        issues it (default: a :class:`~rtckit.ice.turn.TurnRestAuth` with
        :attr:`static_auth_secrets`); its first secret must be one of them and its separator
        :attr:`rest_api_separator`, else coturn would refuse the credential. The reverse of
        :meth:`from_ice`.
        """
        if auth is None:
            auth = TurnRestAuth(secrets=self.static_auth_secrets, separator=self.rest_api_separator)
        elif auth.secrets[0] not in {secret.encode() for secret in self.static_auth_secrets}:
            raise ConfigurationError(
                "the TurnRestAuth signs with a secret this coturn does not know: "
                "coturn would refuse its credentials (401)"
            )
        elif auth.separator != self.rest_api_separator:
            raise ConfigurationError(
                f"the TurnRestAuth separator {auth.separator!r} is not this coturn's "
                f"rest-api-separator {self.rest_api_separator!r}"
            )
        credentials = auth.issue(user, ttl=ttl)
        return IceConfig.from_uris(
            self.uris(host=host),
            username=credentials.username,
            credential=credentials.password,
            transport_policy=transport_policy,
        )

    @classmethod
    def from_ice(
        cls,
        source: IceConfig | TurnRestAuth,
        *,
        realm: str,
        auth: TurnRestAuth | None = None,
        **changes: Any,
    ) -> CoturnConfig:
        """A safe coturn configuration serving what rtckit's ICE configuration describes.

        *source* is either

        * a :class:`~rtckit.ice.turn.TurnRestAuth`: its secrets (newest first) and separator
          become :attr:`static_auth_secrets` and :attr:`rest_api_separator`; the rest keeps
          the defaults; or
        * an :class:`~rtckit.ice.IceConfig` (the one clients get) with *auth*, the
          ``TurnRestAuth`` that issues its credentials. Its ``stun:``/``turn:``/``turns:`` URIs
          give the listening addresses (IP literals; pass ``listening_ips=`` when they name
          hosts), :attr:`listening_port` and :attr:`tls_listening_port`, and which listeners
          are on (:attr:`udp` for ``stun:`` and ``turn:...?transport=udp``, :attr:`tcp` for
          ``turn:...?transport=tcp``, TLS for ``turns:``/``stuns:``, which needs
          ``tls_cert=``/``tls_key=``, e.g. files from :mod:`rtckit.certs`). Each TURN
          server's credential must have been issued with *auth*'s secrets (expiry aside).

        *changes* set or override any other field (``allow_loopback_peers=True`` for a lab,
        ``min_port``...). Everything else keeps the safe defaults: REST authentication only,
        internal peer addresses denied. The reverse is :meth:`ice_config`.
        """
        uris: tuple[IceServerUri, ...] = ()
        if isinstance(source, TurnRestAuth):
            if auth is not None:
                raise ConfigurationError("from_ice(): the TurnRestAuth is given twice")
            auth = source
        elif isinstance(source, IceConfig):
            if auth is None:
                raise ConfigurationError(
                    "from_ice(): coturn needs the REST secrets, pass auth=TurnRestAuth(...)"
                )
            _check_issued_by(source, auth)
            uris = source.uris
        else:
            raise ConfigurationError(
                f"from_ice() takes an IceConfig or a TurnRestAuth, not {type(source).__name__}"
            )
        try:
            secrets = [secret.decode() for secret in auth.secrets]
        except UnicodeDecodeError:
            raise ConfigurationError("coturn's REST secrets must be text") from None
        arguments: dict[str, Any] = {
            "realm": realm,
            "static_auth_secrets": secrets,
            "rest_api_separator": auth.separator,
            **_listeners(uris, changes),
        }
        arguments.update(changes)
        secure = [uri for uri in uris if uri.scheme.is_secure]
        if secure and arguments.get("tls_cert") is None:
            raise ConfigurationError(
                f"{secure[0]} needs TLS: give tls_cert= and tls_key= (PEM files, e.g. from "
                "rtckit.certs)"
            )
        return cls(**arguments)


def _check_issued_by(config: IceConfig, auth: TurnRestAuth) -> None:
    """Raise unless every TURN credential of *config* is one *auth* could have issued."""
    timeless = attrs.evolve(auth, clock=lambda: 0.0)  # expiry is not the question here
    for server in config.servers:
        if not server.has_turn:
            continue
        assert server.username is not None
        assert server.credential is not None
        try:
            timeless.verify(server.username, server.credential)
        except CredentialError as exc:
            turn = next(str(uri) for uri in server.urls if uri.is_turn)
            raise ConfigurationError(
                f"the credential for {turn} was not issued with these REST secrets: {exc}"
            ) from None


def _listeners(uris: Sequence[IceServerUri], changes: dict[str, Any]) -> dict[str, Any]:
    """The listener fields of :class:`CoturnConfig` that serve *uris* (nothing if empty)."""
    if not uris:
        return {}
    derived: dict[str, Any] = {}
    if "listening_ips" not in changes:
        names = [uri.host for uri in uris if not _is_ip(uri.host)]
        if names:
            raise ConfigurationError(
                f"coturn listens on IP addresses, not on {names[0]!r}: pass listening_ips=[...]"
            )
        derived["listening_ips"] = list(dict.fromkeys(uri.host for uri in uris))
    for field, secure in (("listening_port", False), ("tls_listening_port", True)):
        ports = sorted({uri.port for uri in uris if uri.scheme.is_secure == secure})
        if len(ports) > 1:
            raise ConfigurationError(
                f"coturn has one {field.replace('_', ' ')}, the URIs use {ports}"
            )
        if ports:
            derived[field] = ports[0]
    plain = [uri for uri in uris if not uri.scheme.is_secure]
    derived["udp"] = any(uri.transport in (None, TurnTransport.UDP) for uri in plain)
    derived["tcp"] = any(uri.transport is TurnTransport.TCP for uri in plain)
    derived["dtls"] = any(
        uri.scheme is UriScheme.TURNS and uri.transport is TurnTransport.UDP for uri in uris
    )
    return derived


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _client_host(host: str) -> str:
    """Where a local client reaches a server listening on *host* (wildcards -> loopback)."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host
