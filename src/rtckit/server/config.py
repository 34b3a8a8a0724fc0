"""Configuration of ``rtckit serve``: a TOML file parsed into frozen, validated objects.

Pure: reads text (or a file), returns objects or raises
:class:`~rtckit.errors.ConfigurationError` naming the file, the table and the key at fault.

.. code-block:: toml

    [server]
    host = "0.0.0.0"          # HTTPS listen address
    port = 8443               # 0: any free port (likewise http_port)
    http_port = 8080          # optional: plain HTTP port that answers 308 to HTTPS

    [tls]                     # required unless [server] insecure = true
    cert = "/etc/rtckit/cert.pem"
    key = "/etc/rtckit/key.pem"

    [auth]
    mode = "token"            # "token" (default) or "open" (local demos only)
    secret_env = "RTCKIT_SIGNALING_SECRET"   # the default; or secret = "..." (not in files)

    [ice]
    urls = ["stun:stun.example.org:3478", "turn:turn.example.org:3478?transport=udp"]
    turn_secret_env = "RTCKIT_TURN_SECRET"
    turn_ttl = 86400
    policy = "all"            # or "relay"

    [http]                    # connections before the WebSocket upgrade (rtckit.httpserver)
    idle_timeout = 10         # seconds to send complete request headers / keep-alive idle
    tls_handshake_timeout = 10
    max_line_size = 8190      # request line bytes; longer: 400
    max_field_size = 8190     # header line bytes; longer: 400
    max_headers = 128         # more headers: 400

    [limits]
    max_message_bytes = 65536
    messages_per_second = 50
    max_peers_per_room = 16

    [rooms]
    default_topology = "mesh" # for rooms created on demand
    create_on_demand = true

    [[rooms.declare]]
    name = "town-hall"
    topology = "sfu"
    max_peers = 50

    [logging]
    level = "info"
    format = "json"           # or "text"

    [metrics]
    enabled = true
    path = "/metrics"

    [cluster]                 # optional: share rooms with other nodes through Redis
    redis_url = "redis://127.0.0.1:6379/0"   # or redis_url_env = "RTCKIT_REDIS_URL"
    namespace = "rtckit"      # prefix of keys and channels; one per deployment
    node_ttl = 5              # seconds of silence after which a node counts as gone
    drain_timeout = 10        # seconds SIGTERM gives the node to hand its rooms over
    durable_sessions = true   # keep sessions in Redis: clients resume when a node dies
    public_url = "https://node1.example.org:8443"  # where clients reach this node (WHIP 307)
    worker_base_port = 9001   # --workers N: worker i also listens on 9001 + i - 1
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from rtckit.errors import ConfigurationError
from rtckit.httpserver import HttpLimits
from rtckit.signaling.auth import ENV_SIGNALING_SECRET

__all__ = [
    "TOPOLOGIES",
    "AuthSettings",
    "ClusterSettings",
    "IceSettings",
    "LimitSettings",
    "LoggingSettings",
    "MetricsSettings",
    "RoomSettings",
    "RoomsSettings",
    "ServeConfig",
    "ServerSettings",
    "TlsSettings",
    "load_config",
    "parse_config",
]

TOPOLOGIES = ("mesh", "sfu", "mcu")


@attrs.frozen(kw_only=True)
class ServerSettings:
    """Where the server listens."""

    host: str = "0.0.0.0"  # noqa: S104 - a deployment binds every interface by default
    port: int = 8443
    http_port: int | None = None
    insecure: bool = False


@attrs.frozen(kw_only=True)
class TlsSettings:
    """PEM certificate chain and key for HTTPS."""

    cert: Path
    key: Path


@attrs.frozen(kw_only=True)
class AuthSettings:
    """Room-token authentication: ``token`` (required by default) or ``open``."""

    mode: Literal["token", "open"] = "token"
    secret: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class IceSettings:
    """ICE servers handed to clients, and TURN REST credentials minted per client."""

    urls: tuple[str, ...] = ()
    username: str | None = None
    credential: str | None = attrs.field(default=None, repr=False)
    turn_secret: str | None = attrs.field(default=None, repr=False)
    turn_ttl: int = 86400
    policy: Literal["all", "relay"] = "all"


@attrs.frozen(kw_only=True)
class LimitSettings:
    """Signaling limits."""

    max_message_bytes: int = 65536
    messages_per_second: float = 50.0
    max_peers_per_room: int = 16


@attrs.frozen(kw_only=True)
class RoomSettings:
    """A pre-declared room."""

    name: str
    topology: str = "mesh"
    max_peers: int | None = None


@attrs.frozen(kw_only=True)
class RoomsSettings:
    """Rooms: the topology of rooms created on demand, and pre-declared rooms."""

    default_topology: str = "mesh"
    create_on_demand: bool = True
    declared: tuple[RoomSettings, ...] = ()


@attrs.frozen(kw_only=True)
class LoggingSettings:
    """Log level and format (``json`` lines or plain ``text``)."""

    level: str = "info"
    format: Literal["json", "text"] = "json"


@attrs.frozen(kw_only=True)
class MetricsSettings:
    """The Prometheus endpoint."""

    enabled: bool = True
    path: str = "/metrics"


def check_public_url(_instance: object, _attribute: object, url: str | None) -> None:
    """Refuse a ``public_url`` that is not an absolute ``http(s)`` URL without credentials,
    query or fragment (:class:`~rtckit.errors.ConfigurationError`)."""
    if url is None:
        return
    bad = f"public_url {url!r}: expected http(s)://host[:port][/path]"
    if not (url.isascii() and url.isprintable()) or " " in url:
        raise ConfigurationError(f"{bad}, printable ASCII")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigurationError(bad) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(bad)
    if parts.username is not None or parts.query or parts.fragment or "?" in url or "#" in url:
        raise ConfigurationError(f"{bad}, without user, query or fragment")


@attrs.frozen(kw_only=True)
class ClusterSettings:
    """``[cluster]``: the Redis backplane shared by the nodes serving the same rooms."""

    redis_url: str = attrs.field(repr=False)  # may hold a password
    namespace: str = "rtckit"
    node_ttl: float = 5.0
    #: Seconds ``rtckit serve`` spends on SIGTERM handing the node's rooms over to the other
    #: nodes (:meth:`~rtckit.signaling.cluster.SignalingRouter.drain`) before it closes.
    drain_timeout: float = 10.0
    #: Keep the rooms' sessions in Redis, so that clients resume them when their room's node
    #: dies or drains (:attr:`~rtckit.signaling.cluster.ClusterConfig.durable_sessions`).
    durable_sessions: bool = True
    #: Where HTTP clients reach this node (``http(s)://host[:port][/path]``), published on
    #: the backplane: a WHIP ``POST`` for a room homed on another node is redirected (307)
    #: to that node's URL. ``None``: ``[server]``'s scheme, host (``localhost`` for a
    #: wildcard address) and port, which only works for nodes on one machine.
    public_url: str | None = attrs.field(default=None, validator=check_public_url)
    #: With ``rtckit serve --workers N``: worker *i* (1 to N) also listens on port
    #: ``worker_base_port + i - 1`` and advertises it (in :attr:`public_url`, or the URL
    #: derived from ``[server]``), since the workers' shared port reaches any of them.
    #: ``None``: the workers advertise the shared URL, and a WHIP ``POST`` for a room another
    #: worker homes is refused (503) rather than redirected.
    worker_base_port: int | None = None


@attrs.frozen(kw_only=True)
class ServeConfig:
    """The whole configuration of ``rtckit serve``."""

    server: ServerSettings = ServerSettings()
    tls: TlsSettings | None = None
    #: Timeouts and header limits of the HTTP connections (``[http]``).
    http: HttpLimits = attrs.field(factory=HttpLimits)
    auth: AuthSettings = AuthSettings()
    ice: IceSettings = IceSettings()
    limits: LimitSettings = LimitSettings()
    rooms: RoomsSettings = RoomsSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    cluster: ClusterSettings | None = None


class _Table:
    """One TOML table being read: typed getters that name the key at fault, no unknown keys."""

    def __init__(self, source: str, name: str, data: object) -> None:
        self._where = f"{source}: [{name}]"
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{self._where} must be a table")
        self._data: Mapping[str, Any] = data
        self._used: set[str] = set()

    def _get(self, key: str, kinds: tuple[type, ...], what: str) -> Any:
        self._used.add(key)
        if key not in self._data:
            return None
        value = self._data[key]
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigurationError(f"{self._where} {key}: expected {what}, got a boolean")
        if not isinstance(value, kinds):
            raise ConfigurationError(
                f"{self._where} {key}: expected {what}, got {type(value).__name__}"
            )
        return value

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self._get(key, (str,), "a string")
        return default if value is None else str(value)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key, default)
        assert value is not None
        if value not in choices:
            raise ConfigurationError(
                f"{self._where} {key}: {value!r} is not one of {', '.join(choices)}"
            )
        return value

    def integer(self, key: str, default: int | None, *, low: int, high: int) -> int | None:
        value = self._get(key, (int,), "an integer")
        if value is None:
            return default
        if not low <= value <= high:
            raise ConfigurationError(f"{self._where} {key}: {value} is not in {low}..{high}")
        return int(value)

    def number(self, key: str, default: float, *, low: float) -> float:
        value = self._get(key, (int, float), "a number")
        if value is None:
            return default
        if value < low:
            raise ConfigurationError(f"{self._where} {key}: {value} is below {low}")
        return float(value)

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self._get(key, (bool,), "true or false")
        return default if value is None else bool(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key, (list,), "a list of strings")
        if value is None:
            return ()
        if not all(isinstance(item, str) for item in value):
            raise ConfigurationError(f"{self._where} {key}: expected a list of strings")
        return tuple(value)

    def tables(self, key: str) -> list[object]:
        value = self._get(key, (list,), "an array of tables")
        return [] if value is None else list(value)

    def secret(self, key: str) -> str | None:
        """A secret given inline (``key``) or by environment variable name (``key_env``)."""
        inline = self.string(key)
        env_name = self.string(f"{key}_env")
        if inline is not None and env_name is not None:
            raise ConfigurationError(f"{self._where}: give {key} or {key}_env, not both")
        if env_name is None:
            return inline
        value = os.environ.get(env_name)
        if not value:
            raise ConfigurationError(
                f"{self._where} {key}_env: environment variable {env_name} is not set"
            )
        return value

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise ConfigurationError(f"{self._where}: unknown key(s) {', '.join(unknown)}")


def _port(table: _Table, key: str, default: int | None) -> int | None:
    """A TCP port; 0 picks any free port when the server starts (as ``rtckit demo``'s)."""
    return table.integer(key, default, low=0, high=65535)


def _size(table: _Table, key: str, default: int) -> int:
    return table.integer(key, default, low=256, high=1 << 20) or 0


def parse_config(
    text: str, *, source: str = "<config>", base_dir: Path | None = None
) -> ServeConfig:
    """Parse the TOML *text* of a ``rtckit serve`` configuration.

    Relative file paths are resolved against *base_dir* (the config file's folder). Raises
    :class:`~rtckit.errors.ConfigurationError` for bad TOML, unknown tables or keys, wrong
    types, out-of-range values, missing files and missing secrets.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from exc
    known = {
        "server",
        "tls",
        "http",
        "auth",
        "ice",
        "limits",
        "rooms",
        "logging",
        "metrics",
        "cluster",
    }
    unknown = sorted(set(document) - known)
    if unknown:
        raise ConfigurationError(f"{source}: unknown table(s) {', '.join(unknown)}")
    base = base_dir or Path.cwd()

    def table(name: str) -> _Table:
        return _Table(source, name, document.get(name, {}))

    t = table("server")
    server = ServerSettings(
        host=t.string("host", "0.0.0.0") or "0.0.0.0",  # noqa: S104
        port=8443 if (port := _port(t, "port", 8443)) is None else port,
        http_port=_port(t, "http_port", None),
        insecure=t.boolean("insecure", default=False),
    )
    t.done()
    if server.http_port and server.http_port == server.port:
        raise ConfigurationError(f"{source}: [server] http_port must differ from port")

    tls: TlsSettings | None = None
    if "tls" in document:
        t = table("tls")
        paths: dict[str, Path] = {}
        for key in ("cert", "key"):
            value = t.string(key)
            if value is None:
                raise ConfigurationError(f"{source}: [tls] {key}: missing")
            path = Path(value) if Path(value).is_absolute() else base / value
            if not path.is_file():
                raise ConfigurationError(f"{source}: [tls] {key}: file not found: {path}")
            paths[key] = path
        t.done()
        tls = TlsSettings(cert=paths["cert"], key=paths["key"])
    elif not server.insecure:
        raise ConfigurationError(
            f"{source}: [tls] cert and key are required (browsers only open the camera on a "
            "secure origin); set [server] insecure = true to serve plain HTTP behind a proxy"
        )

    t = table("http")
    default = HttpLimits()
    http = HttpLimits(
        idle_timeout=t.number("idle_timeout", default.idle_timeout, low=0.1),
        tls_handshake_timeout=t.number(
            "tls_handshake_timeout", default.tls_handshake_timeout, low=0.1
        ),
        max_line_size=_size(t, "max_line_size", default.max_line_size),
        max_field_size=_size(t, "max_field_size", default.max_field_size),
        max_headers=t.integer("max_headers", default.max_headers, low=8, high=1024) or 0,
    )
    t.done()

    t = table("auth")
    mode = t.choice("mode", ("token", "open"), "token")
    secret = t.secret("secret")
    if secret is None and mode == "token":
        # neither secret nor secret_env: the variable every rtckit command reads
        secret = os.environ.get(ENV_SIGNALING_SECRET) or None
    auth = AuthSettings(mode="open" if mode == "open" else "token", secret=secret)
    t.done()
    if auth.mode == "token" and not auth.secret:
        raise ConfigurationError(
            f"{source}: [auth] token mode needs a secret: set ${ENV_SIGNALING_SECRET}, or "
            'secret_env (or secret); mode = "open" disables tokens for local demos'
        )

    t = table("ice")
    policy = t.choice("policy", ("all", "relay"), "all")
    ice = IceSettings(
        urls=t.strings("urls"),
        username=t.string("username"),
        credential=t.secret("credential"),
        turn_secret=t.secret("turn_secret"),
        turn_ttl=t.integer("turn_ttl", 86400, low=60, high=30 * 86400) or 86400,
        policy="relay" if policy == "relay" else "all",
    )
    t.done()
    has_turn = any(url.startswith(("turn:", "turns:")) for url in ice.urls)
    if ice.policy == "relay" and not has_turn:
        raise ConfigurationError(f'{source}: [ice] policy = "relay" needs a turn: or turns: url')
    if has_turn and not (ice.turn_secret or (ice.username and ice.credential)):
        raise ConfigurationError(
            f"{source}: [ice] turn urls need turn_secret_env (REST credentials) "
            "or username and credential"
        )

    t = table("limits")
    limits = LimitSettings(
        max_message_bytes=t.integer("max_message_bytes", 65536, low=1024, high=16 * 2**20) or 0,
        messages_per_second=t.number("messages_per_second", 50.0, low=0.1),
        max_peers_per_room=t.integer("max_peers_per_room", 16, low=2, high=10_000) or 0,
    )
    t.done()

    t = table("rooms")
    default_topology = t.choice("default_topology", TOPOLOGIES, "mesh")
    create_on_demand = t.boolean("create_on_demand", default=True)
    declared_raw = t.tables("declare")
    t.done()
    declared: list[RoomSettings] = []
    names: set[str] = set()
    for index, item in enumerate(declared_raw):
        r = _Table(source, f"rooms.declare #{index + 1}", item)
        name = r.string("name")
        if not name:
            raise ConfigurationError(f"{source}: [rooms.declare #{index + 1}] name: missing")
        if name in names:
            raise ConfigurationError(f"{source}: [rooms.declare] room {name!r} declared twice")
        names.add(name)
        declared.append(
            RoomSettings(
                name=name,
                topology=r.choice("topology", TOPOLOGIES, default_topology),
                max_peers=r.integer("max_peers", None, low=2, high=10_000),
            )
        )
        r.done()
    if not create_on_demand and not declared:
        raise ConfigurationError(
            f"{source}: [rooms] create_on_demand = false needs at least one [[rooms.declare]]"
        )
    rooms = RoomsSettings(
        default_topology=default_topology,
        create_on_demand=create_on_demand,
        declared=tuple(declared),
    )

    t = table("logging")
    log_format = t.choice("format", ("json", "text"), "json")
    logging = LoggingSettings(
        level=t.choice("level", ("debug", "info", "warning", "error"), "info"),
        format="text" if log_format == "text" else "json",
    )
    t.done()

    t = table("metrics")
    metrics = MetricsSettings(
        enabled=t.boolean("enabled", default=True), path=t.string("path", "/metrics") or ""
    )
    t.done()
    if not metrics.path.startswith("/"):
        raise ConfigurationError(f"{source}: [metrics] path must start with /")

    cluster: ClusterSettings | None = None
    if "cluster" in document:
        t = table("cluster")
        redis_url = t.secret("redis_url")
        namespace = t.string("namespace", "rtckit") or ""
        node_ttl = t.number("node_ttl", 5.0, low=1.0)
        drain_timeout = t.number("drain_timeout", 10.0, low=0.0)
        durable_sessions = t.boolean("durable_sessions", default=True)
        public_url = t.string("public_url")
        worker_base_port = t.integer("worker_base_port", None, low=1, high=65535)
        t.done()
        if public_url is not None:
            try:
                check_public_url(None, None, public_url)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{source}: [cluster] {exc}") from None
        if redis_url is None:
            raise ConfigurationError(f"{source}: [cluster] redis_url (or redis_url_env): missing")
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"{source}: [cluster] redis_url must start with redis://, rediss:// or unix://"
            )
        if not namespace or not all(c.isalnum() or c in "-_." for c in namespace):
            raise ConfigurationError(
                f"{source}: [cluster] namespace: letters, digits, '-', '_' and '.' only"
            )
        cluster = ClusterSettings(
            redis_url=redis_url,
            namespace=namespace,
            node_ttl=node_ttl,
            drain_timeout=drain_timeout,
            durable_sessions=durable_sessions,
            public_url=public_url,
            worker_base_port=worker_base_port,
        )

    return ServeConfig(
        server=server,
        tls=tls,
        http=http,
        auth=auth,
        ice=ice,
        limits=limits,
        rooms=rooms,
        logging=logging,
        metrics=metrics,
        cluster=cluster,
    )


def load_config(path: str | os.PathLike[str]) -> ServeConfig:
    """Read and parse the configuration file at *path* (see :func:`parse_config`)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{file}: not UTF-8 text") from exc
    return parse_config(text, source=str(file), base_dir=file.parent)
