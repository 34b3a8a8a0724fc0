"""The rtckit application server: the room page, signaling, ICE config, health and metrics.

:func:`create_app` composes one aiohttp application:

=====================  ===============================================================
``/``                  the room page (``index.html``, ``room.css``, ``room.js``)
``/whep.html``         a WHEP player page (``?room=..&participant=..``), linked from the room page
``/rtckit.js``         the browser client ES module (also at ``/ws/rtckit.js``); the modules
                       it imports at ``/rtckit/`` (:mod:`rtckit.signaling.browser`)
``/ws``                the signaling WebSocket (:class:`~rtckit.signaling.wsserver.SignalingServer`)
``/config.json``       what the page needs: ICE servers (with TURN REST credentials minted
                       for this client), auth mode, topologies this server can host, rooms
``/healthz``           ``{"status": "ok", ...}`` while the server runs
``/metrics``           Prometheus metrics (path and presence from the config)
``/whip/<room>``       WHIP ingest into SFU and MCU rooms (:mod:`rtckit.whip.server`), with the
                       server's room tokens (``[auth]``: ``publish`` permission) and ICE
                       servers (TURN REST credentials minted per answer)
``/whep/<room>``       WHEP egress from the SFU and MCU rooms (:mod:`rtckit.whip.whep`),
                       with the same tokens (``subscribe`` permission) and ICE servers
=====================  ===============================================================

:class:`RtcKitServer` runs it over HTTPS (plus the HTTP to HTTPS 308 redirect on
``http_port``) as an async context manager; ``rtckit demo`` and ``rtckit serve`` are thin
command lines around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import secrets
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from rtckit.errors import ConfigurationError, TopologyError
from rtckit.https import redirect_response
from rtckit.httpserver import LimitedSite, runner_options
from rtckit.ice import IceConfig, IceServer
from rtckit.ice.turn import TurnRestAuth
from rtckit.peer.session import SessionConfig
from rtckit.server.config import ServeConfig
from rtckit.signaling import OpenAuth, RoomConfig, SignalingConfig, SignalingServer, TokenAuth
from rtckit.signaling.auth import Authenticator
from rtckit.signaling.browser import client_routes, serve_client_module
from rtckit.signaling.cluster import ClusterConfig
from rtckit.signaling.protocol import PeerInfo
from rtckit.signaling.state import (
    ErrorSentEvent,
    MessageEvent,
    PeerJoinedEvent,
    PeerLeftEvent,
    RoomClosedEvent,
    ServerEvent,
)
from rtckit.topology import (
    ServerStrategy,
    ServerStrategyFactory,
    Topology,
    server_strategy_problem,
)
from rtckit.topology.base import SERVER_PEER_IDS
from rtckit.topology.strategies import RoomStrategies
from rtckit.whip.cluster import ClusterRedirect
from rtckit.whip.server import WhipEndpoint
from rtckit.whip.whep import WhepEndpoint

if TYPE_CHECKING:
    from rtckit.backplane.base import Backplane
    from rtckit.server.metrics import Metrics

__all__ = [
    "APP_TOPOLOGIES",
    "SERVER_PEER_IDS",
    "STATIC_FILES",
    "RtcKitServer",
    "app_signaling",
    "available_topologies",
    "browser_ice_config",
    "check_topologies",
    "create_app",
    "new_backplane",
    "new_metrics",
    "signaling_config",
    "topology_unavailable",
    "unavailable_topologies",
]

logger = logging.getLogger("rtckit.server")

#: The room page's files (in ``rtckit/server/static``) and their content types.
STATIC_FILES: Mapping[str, str] = {
    "index.html": "text/html",
    "room.css": "text/css",
    "room.js": "text/javascript",
    "whep.html": "text/html",
    "whep-player.js": "text/javascript",
}

_NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

_APP_KEY = web.AppKey("rtckit_state", object)


def _static(name: str) -> str:
    return (importlib.resources.files("rtckit.server") / "static" / name).read_text(
        encoding="utf-8"
    )


#: The topologies the app server hosts, all three. Mesh is signaling only; in SFU rooms the
#: server forwards every publication to everyone (:mod:`rtckit.topology.sfu`); in MCU rooms it
#: composes one picture and mixes the sound (:mod:`rtckit.topology.mcu`, which needs numpy,
#: without which MCU rooms are refused with a clear error).
APP_TOPOLOGIES: frozenset[str] = frozenset(topology.value for topology in Topology)


def available_topologies() -> dict[str, bool]:
    """Which topologies this server can host: those of :data:`APP_TOPOLOGIES` with a registered
    server strategy whose module imports (the MCU's needs numpy)."""
    unavailable = unavailable_topologies()
    return {topology.value: topology.value not in unavailable for topology in Topology}


def unavailable_topologies() -> dict[str, str]:
    """The topologies this server cannot host, each with the reason (the room page shows it)."""
    reasons: dict[str, str] = {}
    for topology in Topology:
        if topology.value not in APP_TOPOLOGIES:
            reasons[topology.value] = "this app does not host them"
        elif (problem := server_strategy_problem(topology)) is not None:
            reasons[topology.value] = problem
    return reasons


def _people(peers: list[PeerInfo]) -> list[PeerInfo]:
    """*peers* without the SFU/MCU server's own peer."""
    return [peer for peer in peers if peer.id not in SERVER_PEER_IDS]


def topology_unavailable(topology: str) -> TopologyError:
    """The error refusing a room of *topology* this server cannot host, saying why."""
    why = unavailable_topologies().get(topology) or "it is not available here"
    return TopologyError(
        f"this server cannot host {topology.upper()} rooms ({why}); mesh rooms work"
    )


def check_topologies(config: ServeConfig) -> None:
    """Raise :class:`~rtckit.errors.ConfigurationError` if *config* asks for a topology (default
    or declared room) this server cannot host."""
    available = available_topologies()
    wanted = {config.rooms.default_topology: "[rooms] default_topology"}
    for room in config.rooms.declared:
        wanted.setdefault(room.topology, f"[[rooms.declare]] {room.name!r}")
    for topology, where in wanted.items():
        if not available.get(topology, False):
            raise ConfigurationError(f"{where}: {topology_unavailable(topology)}")


def signaling_config(config: ServeConfig, *, creator_chooses: bool = False) -> SignalingConfig:
    """The :class:`~rtckit.signaling.config.SignalingConfig` for a server configured by *config*.

    With *creator_chooses* (``rtckit demo``) the first joiner of a room picks its topology
    with ``metadata.topology``; a topology this server cannot host is refused.
    """
    auth: Authenticator
    if config.auth.mode == "open":
        auth = OpenAuth()
    else:
        if not config.auth.secret:
            raise ConfigurationError("[auth] token mode needs a secret")
        auth = TokenAuth(secret=config.auth.secret)
    default = config.rooms.default_topology
    available = available_topologies()  # strategies register at import time

    def pick(room: str, metadata: Mapping[str, Any] | None) -> str:
        wanted = default
        if creator_chooses and metadata is not None:
            asked = metadata.get("topology")
            if isinstance(asked, str) and asked:
                wanted = Topology.parse(asked).value
        if not available.get(wanted, False):
            raise topology_unavailable(wanted)
        logger.info("room %s created (%s)", room, wanted, extra={"room": room, "topology": wanted})
        return wanted

    return SignalingConfig(
        auth=auth,
        rooms=[
            RoomConfig(name=room.name, topology=room.topology, max_peers=room.max_peers)
            for room in config.rooms.declared
        ],
        create_rooms=config.rooms.create_on_demand,
        default_topology=default,
        choose_topology=pick,
        max_peers_per_room=config.limits.max_peers_per_room,
        max_message_size=config.limits.max_message_bytes,
        max_messages_per_second=config.limits.messages_per_second,
    )


def browser_ice_config(config: ServeConfig, *, user: str | None = None) -> IceConfig:
    """The ICE configuration for one browser: STUN URLs as they are, TURN URLs with static
    credentials or with a TURN REST credential minted now for *user* (random if ``None``)."""
    ice = config.ice
    stun = [url for url in ice.urls if not url.startswith(("turn:", "turns:"))]
    turn = [url for url in ice.urls if url.startswith(("turn:", "turns:"))]
    servers: list[IceServer] = []
    if stun:
        servers.append(IceServer(urls=stun))
    if turn:
        if ice.turn_secret:
            rest = TurnRestAuth(secrets=[ice.turn_secret], ttl=ice.turn_ttl)
            servers.append(rest.ice_server(turn, user or f"web-{secrets.token_hex(4)}"))
        else:
            servers.append(IceServer(urls=turn, username=ice.username, credential=ice.credential))
    return IceConfig(servers=servers, transport_policy=ice.policy)


def new_metrics(*, required: bool) -> Metrics | None:
    """A new :class:`~rtckit.server.metrics.Metrics`, or ``None`` without prometheus-client.

    With *required* (``rtckit serve`` with ``[metrics] enabled``) its absence is a
    :class:`~rtckit.errors.ConfigurationError` naming the extra to install.
    """
    try:
        from rtckit.server.metrics import Metrics
    except ImportError as exc:
        if required:
            raise ConfigurationError(
                "[metrics] enabled needs prometheus-client: pip install 'rtckit[metrics]' "
                "(or set enabled = false)"
            ) from exc
        logger.info("metrics off: prometheus-client is not installed")
        return None
    return Metrics()


def new_backplane(config: ServeConfig) -> Backplane | None:
    """The Redis backplane of ``[cluster]``, or ``None`` for a single node.

    A :class:`~rtckit.errors.ConfigurationError` names the ``redis`` extra if redis-py is
    missing; Redis is first reached when the app starts.
    """
    cluster = config.cluster
    if cluster is None:
        return None
    try:
        from rtckit.backplane.redis import RedisBackplane, RedisBackplaneConfig
    except ImportError as exc:
        raise ConfigurationError("[cluster] needs redis-py: pip install 'rtckit[redis]'") from exc
    return RedisBackplane(
        RedisBackplaneConfig(
            url=cluster.redis_url, namespace=cluster.namespace, node_ttl=cluster.node_ttl
        )
    )


def public_url(
    config: ServeConfig,
    port: int | None = None,
    *,
    secure: bool | None = None,
    own_port: int | None = None,
) -> str:
    """The public base URL of a cluster node configured by *config*: ``[cluster]
    public_url``, else ``[server]``'s host (``localhost`` for a wildcard address) and *port*
    (default ``[server] port``; ``""`` while it is 0: not bound yet), over HTTPS if *secure*
    (default: with ``[tls]``). *own_port*: a worker's own port, which replaces the port of
    either."""
    cluster = config.cluster
    if cluster is not None and cluster.public_url is not None:
        url = cluster.public_url.rstrip("/")
        if own_port is None:
            return url
        parts = urlsplit(url)
        host = parts.hostname or ""
        shown = f"[{host}]" if ":" in host else host
        return urlunsplit(parts._replace(netloc=f"{shown}:{own_port}"))
    server = config.server
    port = own_port or (server.port if port is None else port)
    if not port:
        return ""
    host = "localhost" if server.host in ("0.0.0.0", "::", "") else server.host  # noqa: S104
    shown = f"[{host}]" if ":" in host else host
    secure = config.tls is not None if secure is None else secure
    return f"{'https' if secure else 'http'}://{shown}:{port}"


class _State:
    """What the handlers of one app share."""

    def __init__(
        self,
        config: ServeConfig,
        signaling: SignalingServer,
        metrics: Metrics | None,
        *,
        demo: bool,
    ) -> None:
        self.config = config
        self.signaling = signaling
        self.metrics = metrics
        self.demo = demo
        self.topologies = available_topologies()
        self.unavailable = unavailable_topologies()
        # the topology of each room with people (for the peers gauge once a room is gone)
        self._room_topology: dict[str, str] = {}
        #: the rooms' server strategies: started with a room's first person, stopped after
        #: its last (the policy of :class:`~rtckit.topology.strategies.RoomStrategies`)
        self.rooms = RoomStrategies(signaling.hub, factories=self._factories())
        #: in a cluster: WHIP and WHEP requests for a room homed on another node go there (307)
        self.redirect: ClusterRedirect | None = None
        if signaling.router is not None:
            self.redirect = ClusterRedirect(signaling.router, public_url(config))  # see start
        #: WHIP ingest into the SFU and MCU rooms
        self.whip = WhipEndpoint(
            signaling.hub,
            self.rooms,
            ice_servers=self._whip_ice_servers,
            redirect=self.redirect,
        )
        #: WHEP egress from the SFU and MCU rooms
        self.whep = WhepEndpoint(
            signaling.hub,
            self.rooms,
            ice_servers=lambda: self._whip_ice_servers("whep"),
            redirect=self.redirect,
        )

    @property
    def strategies(self) -> dict[str, ServerStrategy]:
        """The server strategy of every room with people in it."""
        return self.rooms.running

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The rooms' start and stop tasks not finished yet."""
        return self.rooms.tasks

    # --- signaling events -> metrics, logs ------------------------------------------------

    def on_event(self, event: ServerEvent) -> None:
        self._count(event)
        state = self.signaling.hub.state
        if isinstance(event, PeerJoinedEvent):
            topology = state.room_topology(event.room) or "mesh"
            logger.info(
                "peer %s joined room %s (%s)",
                event.peer.id,
                event.room,
                topology,
                extra={"room": event.room, "peer": event.peer.id, "topology": topology},
            )
        elif isinstance(event, PeerLeftEvent):
            logger.info(
                "peer %s left room %s (%s)",
                event.peer_id,
                event.room,
                event.reason,
                extra={"room": event.room, "peer": event.peer_id, "reason": event.reason},
            )
        elif isinstance(event, ErrorSentEvent):
            logger.info(
                "signaling error %s sent",
                event.code,
                extra={"code": event.code, "room": event.room, "peer": event.peer_id},
            )

    def _count(self, event: ServerEvent) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        state = self.signaling.hub.state
        if isinstance(event, PeerJoinedEvent | PeerLeftEvent):
            peer_id = event.peer.id if isinstance(event, PeerJoinedEvent) else event.peer_id
            if peer_id in SERVER_PEER_IDS:
                return  # the SFU/MCU's own connection to the room is not a person
            topology = state.room_topology(event.room) or self._room_topology.get(event.room)
            topology = topology or "mesh"
            gauge = metrics.peers.labels(topology=topology)
            if isinstance(event, PeerJoinedEvent):
                self._room_topology[event.room] = topology
                gauge.inc()
            else:
                gauge.dec()
        if isinstance(event, PeerLeftEvent | RoomClosedEvent) and not _people(
            state.peers(event.room)
        ):
            self._room_topology.pop(event.room, None)
        if isinstance(event, PeerJoinedEvent | PeerLeftEvent | RoomClosedEvent):
            metrics.rooms.set(len([room for room in state.rooms() if _people(state.peers(room))]))
        elif isinstance(event, MessageEvent):
            metrics.messages.labels(type=event.message.type).inc()
        elif isinstance(event, ErrorSentEvent):
            metrics.errors.labels(code=event.code).inc()

    def _session_config(self) -> SessionConfig:
        """The server side's peer sessions: the ICE servers the pages get (TURN credentials
        minted for the server), never aiortc's default public STUN server."""
        return SessionConfig(ice=browser_ice_config(self.config, user="rtckit-server"))

    def _factories(self) -> dict[Topology | str, ServerStrategyFactory]:
        """The SFU and MCU of this app: its ICE servers, its metrics. Each module is imported
        when its first room starts (numpy and PyAV stay optional)."""
        metrics = self.metrics

        def sfu(hub: Any) -> ServerStrategy:
            from rtckit.topology.sfu import SfuServerStrategy

            return SfuServerStrategy(
                hub,
                session_config=self._session_config(),
                on_forwarded=None if metrics is None else metrics.forwarded_packets.inc,
            )

        def mcu(hub: Any) -> ServerStrategy:
            from rtckit.topology.mcu import McuRoomConfig, McuServerStrategy

            return McuServerStrategy(hub, config=McuRoomConfig(session=self._session_config()))

        return {Topology.SFU: sfu, Topology.MCU: mcu}

    def _whip_ice_servers(self, kind: str = "whip") -> list[dict[str, Any]]:
        """The ICE servers of a WHIP or WHEP session (TURN REST user ``<kind>-<random>``)."""
        servers: list[dict[str, Any]] = browser_ice_config(
            self.config, user=f"{kind}-{secrets.token_hex(4)}"
        ).to_browser()["iceServers"]
        return servers

    async def aclose(self) -> None:
        await self.whip.aclose()
        await self.whep.aclose()
        await self.rooms.aclose()

    # --- handlers -----------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name") or "index.html"
        content_type = STATIC_FILES.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        return web.Response(text=_static(name), content_type=content_type, headers=_NO_CACHE)

    async def script(self, request: web.Request) -> web.Response:
        return serve_client_module(request)

    async def client_config(self, request: web.Request) -> web.Response:
        config = self.config
        ice = browser_ice_config(config).to_browser()
        body = {
            "iceServers": ice["iceServers"],
            "iceTransportPolicy": ice["iceTransportPolicy"],
            "signalingPath": "/ws",
            "auth": config.auth.mode,
            "demo": self.demo,
            "chooseTopology": self.demo,
            "defaultTopology": config.rooms.default_topology,
            "topologies": self.topologies,
            "unavailableTopologies": self.unavailable,
            "createRooms": config.rooms.create_on_demand,
            "rooms": [
                {"name": room.name, "topology": room.topology} for room in config.rooms.declared
            ],
        }
        del request
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def healthz(self, _request: web.Request) -> web.Response:
        state = self.signaling.hub.state
        rooms = [room for room in state.rooms() if _people(state.peers(room))]
        router = self.signaling.router
        closing = self.signaling.hub.closed
        # a draining node is about to stop: a load balancer should send it no one new (503)
        draining = router is not None and router.draining
        body: dict[str, Any] = {
            "status": "closing" if closing else "draining" if draining else "ok",
            "rooms": len(rooms),
            "peers": sum(len(_people(state.peers(room))) for room in rooms),
            "connections": state.connection_count,
            "media_servers": len(self.rooms.running),
        }
        if router is not None:  # one node of a cluster: these figures are this node's
            up = router.backplane.up
            body["node"] = router.backplane.node_id
            body["pid"] = os.getpid()
            body["backplane"] = "up" if up else "down"
            if not up and not (closing or draining):
                body["status"] = "degraded"  # local rooms still served: not a 503
        return web.json_response(
            body, status=503 if closing or draining else 200, headers={"Cache-Control": "no-store"}
        )


def create_app(
    config: ServeConfig,
    *,
    metrics: Metrics | None = None,
    demo: bool = False,
) -> web.Application:
    """The aiohttp application of an rtckit server configured by *config*.

    *demo* lets the first joiner of a room choose its topology (``rtckit demo``), and runs
    without metrics when prometheus-client is missing. The app owns its signaling server: it
    starts and stops with the app.
    """
    check_topologies(config)
    if metrics is None and config.metrics.enabled:
        metrics = new_metrics(required=not demo)
    signaling = SignalingServer(
        signaling_config(config, creator_chooses=demo),
        new_backplane(config),
        cluster=None
        if config.cluster is None
        else ClusterConfig(durable_sessions=config.cluster.durable_sessions),
    )
    state = _State(config, signaling, metrics, demo=demo)
    if state.metrics is not None and signaling.router is not None:
        backplane = signaling.router.backplane
        state.metrics.track_backplane(lambda: backplane.up)
    counted = state.metrics

    @web.middleware
    async def count_connections(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            counted is not None
            and request.path == "/ws"
            and request.headers.get("Upgrade", "").lower() == "websocket"
        ):
            counted.connections.inc()
        return await handler(request)

    app = web.Application(client_max_size=64 * 1024, middlewares=[count_connections])
    app[_APP_KEY] = state
    app.router.add_get("/", state.page)
    app.router.add_get(
        "/{name:(index\\.html|room\\.css|room\\.js|whep\\.html|whep-player\\.js)}", state.page
    )
    for route in client_routes("/"):
        app.router.add_get(route, state.script)
    app.router.add_get("/config.json", state.client_config)
    app.router.add_get("/healthz", state.healthz)
    if config.metrics.enabled and state.metrics is not None:
        app.router.add_get(config.metrics.path, state.metrics.handle)
    signaling.add_routes(app, path="/ws")
    state.whip.add_routes(app)
    state.whep.add_routes(app)
    remove = signaling.add_listener(state.on_event)

    async def on_shutdown(_app: web.Application) -> None:
        remove()
        await state.aclose()

    app.on_shutdown.append(on_shutdown)
    return app


def app_signaling(app: web.Application) -> SignalingServer:
    """The signaling server of an app made by :func:`create_app`."""
    state = app[_APP_KEY]
    assert isinstance(state, _State)
    return state.signaling


def _ca_response(der: bytes) -> web.Response:
    return web.Response(
        body=der,
        content_type="application/x-x509-ca-cert",
        headers={"Content-Disposition": 'attachment; filename="rtckit-demo-ca.crt"'},
    )


class RtcKitServer:
    """Run :func:`create_app` over HTTPS (or plain HTTP when insecure), and the redirect.

    .. code-block:: python

        async with RtcKitServer(config) as server:
            print(server.url)
            await stop_event.wait()

    *ssl_context* overrides the certificate files of ``config.tls``. *ca_certificate* (DER)
    is served at ``/ca.crt``, on the HTTP port too (not redirected), so that a phone can
    install the local CA of ``rtckit demo`` before it trusts the HTTPS site. Port 0 in the
    config picks a free port (see :attr:`port`, :attr:`http_port`). Closing stops accepting,
    closes every signaling connection (1001), stops room strategies and leaves no task behind.
    *reuse_port*: bind with ``SO_REUSEPORT``, so that several processes (``rtckit serve
    --workers N``) share the ports. *worker*: this process is worker *worker* (1 to N) of
    ``rtckit serve --workers N``; with ``[cluster] worker_base_port`` it also listens on a
    port of its own, which it advertises as its public URL (0: not a worker).
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        demo: bool = False,
        ca_certificate: bytes | None = None,
        shutdown_timeout: float = 2.0,
        reuse_port: bool = False,
        worker: int = 0,
    ) -> None:
        self.config = config
        self._worker = worker
        self._reuse_port = reuse_port
        self.metrics: Metrics | None = None
        self._demo = demo
        self._ssl = ssl_context
        self._ca = ca_certificate
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._redirect: web.AppRunner | None = None
        self._port: int | None = None
        self._http_port: int | None = None
        self.app: web.Application | None = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._ssl is not None:
            return self._ssl
        tls = self.config.tls
        if tls is None:
            if not self.config.server.insecure:
                raise ConfigurationError("TLS certificate and key are required")
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(tls.cert, tls.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"[tls] cannot load {tls.cert} / {tls.key}: {getattr(exc, 'strerror', None) or exc}"
            ) from exc
        return context

    @property
    def secure(self) -> bool:
        """Whether the server speaks HTTPS."""
        return self._ssl is not None or self.config.tls is not None

    async def start(self) -> None:
        """Bind and start serving (done by ``async with``)."""
        if self._runner is not None:
            return
        context = self._ssl_context()
        server = self.config.server
        self.app = create_app(self.config, demo=self._demo)
        state = self.app[_APP_KEY]
        assert isinstance(state, _State)
        self.metrics = state.metrics
        cluster = self.config.cluster
        own_port = None
        if cluster is not None and cluster.worker_base_port and self._worker > 0:
            own_port = cluster.worker_base_port + self._worker - 1
        secure = context is not None
        if state.redirect is not None:  # published from the node's first heartbeat on
            state.redirect.set_public_url(public_url(self.config, secure=secure, own_port=own_port))
        if self._ca is not None:
            ca = self._ca

            async def ca_file(_request: web.Request) -> web.Response:
                return _ca_response(ca)

            self.app.router.add_get("/ca.crt", ca_file)
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=logging.getLogger("rtckit.server.access"),
            shutdown_timeout=self._shutdown_timeout,
            **runner_options(self.config.http),
        )
        await runner.setup()
        try:
            site = LimitedSite(
                runner,
                server.host,
                server.port,
                ssl_context=context,
                tls_handshake_timeout=self.config.http.tls_handshake_timeout,
                reuse_port=self._reuse_port,
            )
            try:
                await site.start()
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}"
                ) from exc
            self._port = int(runner.addresses[0][1])
            if own_port is not None:
                await self._listen(runner, server.host, own_port, context)
            if state.redirect is not None and not state.redirect.public_url:  # port 0: bound now
                url = public_url(self.config, self._port, secure=secure, own_port=own_port)
                state.redirect.set_public_url(url)
            if server.http_port is not None and context is not None:
                await self._start_redirect(server.host, server.http_port)
        except BaseException:
            await runner.cleanup()
            if self._redirect is not None:
                await self._redirect.cleanup()
                self._redirect = None
            raise
        self._runner = runner
        logger.info(
            "serving on %s",
            self.url(server.host if server.host not in ("0.0.0.0", "::") else "localhost"),  # noqa: S104
            extra={
                "host": server.host,
                "port": self._port,
                "http_port": self.http_port,
                "tls": context is not None,
                "auth": self.config.auth.mode,
            },
        )

    async def _listen(
        self, runner: web.AppRunner, host: str, port: int, context: ssl.SSLContext | None
    ) -> None:
        """Serve the app on *port* too (a worker's own port), not shared with other processes."""
        try:
            await LimitedSite(
                runner,
                host,
                port,
                ssl_context=context,
                tls_handshake_timeout=self.config.http.tls_handshake_timeout,
            ).start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} (worker {self._worker}'s own port): "
                f"{exc.strerror or exc}"
            ) from exc

    async def _start_redirect(self, host: str, port: int) -> None:
        https_port = self.port
        ca = self._ca

        @web.middleware
        async def redirect(request: web.Request, handler: Handler) -> web.StreamResponse:
            del handler  # every request is answered here
            if ca is not None and request.path == "/ca.crt" and request.method in ("GET", "HEAD"):
                return _ca_response(ca)
            return redirect_response(request, https_port)

        runner = web.AppRunner(
            web.Application(middlewares=[redirect]),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self._shutdown_timeout,
            **runner_options(self.config.http),
        )
        await runner.setup()
        self._redirect = runner
        try:
            await LimitedSite(runner, host, port, reuse_port=self._reuse_port).start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} (HTTP redirect): {exc.strerror or exc}"
            ) from exc
        self._http_port = int(runner.addresses[0][1])

    @property
    def port(self) -> int:
        """The HTTPS (or HTTP, when insecure) port."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def http_port(self) -> int | None:
        """The port of the HTTP to HTTPS redirect, if any."""
        return self._http_port

    def url(self, host: str = "localhost") -> str:
        """The page's URL at *host*."""
        scheme = "https" if self.secure else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{self.port}/"

    @property
    def signaling(self) -> SignalingServer:
        """The signaling server (after :meth:`start`)."""
        if self.app is None:
            raise RuntimeError("the server is not started")
        return app_signaling(self.app)

    async def drain(self) -> bool:
        """Hand the rooms of this node over to the other nodes of its cluster
        (:meth:`SignalingRouter.drain <rtckit.signaling.cluster.SignalingRouter.drain>`)
        within ``[cluster] drain_timeout``; ``False`` without a cluster or if it took longer.
        The server keeps serving until :meth:`aclose`."""
        router = self.signaling.router
        cluster = self.config.cluster
        if router is None or cluster is None:
            return False
        timeout = cluster.drain_timeout
        logger.info("draining: handing this node's rooms over")
        try:
            async with asyncio.timeout(timeout):
                await router.drain()
        except TimeoutError:
            logger.warning("draining took more than %s s: stopping anyway", timeout)
            return False
        logger.info("drained")
        return True

    async def aclose(self) -> None:
        """Stop serving; idempotent."""
        redirect, self._redirect = self._redirect, None
        runner, self._runner = self._runner, None
        self._http_port = None
        if redirect is not None:
            await redirect.cleanup()
        if runner is not None:
            with contextlib.suppress(TimeoutError):
                await runner.cleanup()
        logger.info("stopped")

    close = aclose

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
