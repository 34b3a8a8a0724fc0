"""The rtckit server app (``rtckit demo`` / ``rtckit serve``): composition, ICE config,
metrics wired to signaling, topology choice, token auth, HTTPS and the 308 redirect."""

from __future__ import annotations

import asyncio
import re
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rtckit.certs import ensure_dev_certificate
from rtckit.errors import AuthError, ConfigurationError, RoomError
from rtckit.ice.turn import TurnRestAuth
from rtckit.server import app as app_module
from rtckit.server.app import (
    _APP_KEY,
    RtcKitServer,
    app_signaling,
    available_topologies,
    browser_ice_config,
    check_topologies,
    create_app,
)
from rtckit.server.config import (
    AuthSettings,
    IceSettings,
    RoomSettings,
    RoomsSettings,
    ServeConfig,
    ServerSettings,
    TlsSettings,
    parse_config,
)
from rtckit.server.metrics import Metrics
from rtckit.signaling import SignalingClient, TokenAuth, WebSocketTransport
from rtckit.signaling.browser import client_modules
from rtckit.signaling.protocol import AppMessage

TIMEOUT = 30
SECRET = "test-secret-0123456789-abcdefghij-klmnop"
TURN_SECRET = "turn-secret-for-tests"

OPEN = ServeConfig(server=ServerSettings(insecure=True), auth=AuthSettings(mode="open"))


Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def _client(
    config: ServeConfig, *, metrics: Metrics | None = None, demo: bool = False
) -> AsyncIterator[Client]:
    app = create_app(config, metrics=metrics, demo=demo)
    async with TestClient(TestServer(app)) as client:
        yield client


def _ws_url(client: Client) -> str:
    return str(client.make_url("/ws")).replace("http://", "ws://", 1)


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starting with {line_start!r} in:\n{text}")


async def test_page_static_files_and_client_module() -> None:
    async with asyncio.timeout(TIMEOUT), _client(OPEN) as client:
        page = await client.get("/")
        assert page.status == 200
        assert page.content_type == "text/html"
        html = await page.text()
        assert 'src="room.js"' in html
        assert 'id="join-form"' in html
        for name, kind in (
            ("room.js", "text/javascript"),
            ("room.css", "text/css"),
            ("whep.html", "text/html"),
            ("whep-player.js", "text/javascript"),
        ):
            response = await client.get(f"/{name}")
            assert response.status == 200
            assert response.content_type == kind
        room_js = await (await client.get("/room.js")).text()
        assert 'from "/rtckit.js"' in room_js
        module = await client.get("/rtckit.js")
        assert module.status == 200
        assert module.content_type == "text/javascript"
        assert "RtcKitSignaling" in await module.text()
        assert (await client.get("/ws/rtckit.js")).status == 200
        # the modules the entry imports, at its folder under both paths
        for name, text in client_modules().items():
            for path in (f"/{name}", f"/ws/{name}"):
                served = await client.get(path)
                assert served.status == 200, path
                assert served.content_type == "text/javascript"
                assert await served.text() == text
        assert (await client.get("/rtckit/nothing.js")).status == 404
        assert (await client.get("/rtckit/..%2fconfig.py")).status == 404
        assert (await client.get("/nothing.html")).status == 404
        assert (await client.get("/../config.py")).status == 404


async def test_config_json_for_the_demo() -> None:
    async with asyncio.timeout(TIMEOUT), _client(OPEN, demo=True) as client:
        response = await client.get("/config.json")
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
        assert body["iceServers"] == []
        assert body["iceTransportPolicy"] == "all"
        assert body["auth"] == "open"
        assert body["chooseTopology"] is True
        assert body["topologies"] == available_topologies()
        assert body["topologies"]["mesh"] is True
        assert body["unavailableTopologies"] == {}
        assert body["signalingPath"] == "/ws"


async def test_config_json_mints_turn_credentials_per_client() -> None:
    config = ServeConfig(
        server=ServerSettings(insecure=True),
        auth=AuthSettings(mode="open"),
        ice=IceSettings(
            urls=("stun:stun.example.org:3479", "turn:turn.example.org:3479?transport=tcp"),
            turn_secret=TURN_SECRET,
            turn_ttl=600,
            policy="relay",
        ),
    )
    async with asyncio.timeout(TIMEOUT), _client(config) as client:
        first = await (await client.get("/config.json")).json()
        second = await (await client.get("/config.json")).json()
    assert first["iceTransportPolicy"] == "relay"
    stun, turn = first["iceServers"]
    assert stun == {"urls": ["stun:stun.example.org:3479"]}
    assert turn["urls"] == ["turn:turn.example.org:3479?transport=tcp"]
    verified = TurnRestAuth(secrets=[TURN_SECRET]).verify(turn["username"], turn["credential"])
    assert verified.user.startswith("web-")
    assert second["iceServers"][1]["username"] != turn["username"]
    with pytest.raises(Exception, match="forged"):
        TurnRestAuth(secrets=["another secret"]).verify(turn["username"], turn["credential"])


def test_browser_ice_config_static_turn_credentials() -> None:
    config = ServeConfig(
        server=ServerSettings(insecure=True),
        auth=AuthSettings(mode="open"),
        ice=IceSettings(urls=("turn:t.example.org",), username="u", credential="p"),
    )
    (server,) = browser_ice_config(config).to_browser()["iceServers"]
    assert server["username"] == "u"
    assert server["credential"] == "p"


async def test_healthz_and_metrics_follow_signaling() -> None:
    metrics = Metrics()
    async with asyncio.timeout(TIMEOUT), _client(OPEN, metrics=metrics) as client:
        health = await (await client.get("/healthz")).json()
        assert health == {
            "status": "ok",
            "rooms": 0,
            "peers": 0,
            "connections": 0,
            "media_servers": 0,
        }
        url = _ws_url(client)
        async with (
            SignalingClient.connect(url, room="r1", metadata={"name": "a"}) as a,
            SignalingClient.connect(url, room="r1", metadata={"name": "b"}) as b,
        ):
            await a.send_app(None, {"chat": "hello"})
            event = await b.next_event()
            while not isinstance(event, AppMessage):
                event = await b.next_event()
            assert event.payload == {"chat": "hello"}
            health = await (await client.get("/healthz")).json()
            assert health["rooms"] == 1
            assert health["peers"] == 2
            text = await (await client.get("/metrics")).text()
            assert _metric(text, "rtckit_rooms ") == 1
            assert _metric(text, 'rtckit_peers{topology="mesh"}') == 2
            assert _metric(text, 'rtckit_signaling_messages_total{type="app"}') == 1
            assert _metric(text, "rtckit_connections_total ") == 2
        for _ in range(100):
            text = await (await client.get("/metrics")).text()
            if _metric(text, 'rtckit_peers{topology="mesh"}') == 0:
                break
            await asyncio.sleep(0.05)
        assert _metric(text, 'rtckit_peers{topology="mesh"}') == 0
        assert _metric(text, "rtckit_rooms ") == 0


async def test_metrics_can_be_disabled_or_moved() -> None:
    config = parse_config(
        '[server]\ninsecure = true\n[auth]\nmode = "open"\n[metrics]\nenabled = false\n'
    )
    async with asyncio.timeout(TIMEOUT), _client(config) as client:
        assert (await client.get("/metrics")).status == 404
    config = parse_config(
        '[server]\ninsecure = true\n[auth]\nmode = "open"\n[metrics]\npath = "/internal/m"\n'
    )
    async with asyncio.timeout(TIMEOUT), _client(config) as client:
        assert (await client.get("/internal/m")).status == 200


async def test_demo_lets_the_creator_choose_the_topology(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an app that hosts mesh and SFU rooms only (as a build without numpy has no MCU)
    monkeypatch.setattr(app_module, "APP_TOPOLOGIES", frozenset({"mesh", "sfu"}))
    async with asyncio.timeout(TIMEOUT), _client(OPEN, demo=True) as client:
        url = _ws_url(client)
        with pytest.raises(RoomError, match=r"cannot host MCU rooms \(this app does not"):
            async with SignalingClient.connect(url, room="r-mcu", metadata={"topology": "mcu"}):
                pass
        async with SignalingClient.connect(url, room="s", metadata={"topology": "sfu"}) as s:
            assert s.topology == "sfu"
        async with SignalingClient.connect(url, room="m", metadata={"topology": "mesh"}) as a:
            assert a.topology == "mesh"
            # the room exists: a later joiner's wish does not change it
            async with SignalingClient.connect(url, room="m", metadata={"topology": "sfu"}) as b:
                assert b.topology == "mesh"
        with pytest.raises(RoomError, match="unknown topology"):
            async with SignalingClient.connect(url, room="x", metadata={"topology": "p2p"}):
                pass
        text = await (await client.get("/metrics")).text()
        assert _metric(text, 'rtckit_errors_total{code="unknown_room"}') >= 1


#: A module that is not installed, standing in for a strategy's missing dependency (numpy).
MISSING = "rtckit_test_missing_dependency"


async def test_a_topology_whose_strategy_does_not_import_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rtckit.topology import Topology, base

    monkeypatch.setitem(base._SERVER, Topology.MCU, f"{MISSING}.mcu:McuServerStrategy")
    reason = f"the MCU server needs {MISSING}, which is not installed (pip install {MISSING})"
    assert available_topologies() == {"mesh": True, "sfu": True, "mcu": False}
    assert app_module.unavailable_topologies() == {"mcu": reason}
    async with asyncio.timeout(TIMEOUT), _client(OPEN, demo=True) as client:
        body = await (await client.get("/config.json")).json()
        # the room page shows the reason next to the greyed-out choice
        assert body["unavailableTopologies"] == {"mcu": reason}
        with pytest.raises(RoomError, match=re.escape(f"cannot host MCU rooms ({reason})")):
            async with SignalingClient.connect(
                _ws_url(client), room="m", metadata={"topology": "mcu"}
            ):
                pass


async def test_serve_ignores_the_joiners_topology_wish() -> None:
    config = ServeConfig(
        server=ServerSettings(insecure=True),
        auth=AuthSettings(mode="open"),
        rooms=RoomsSettings(declared=(RoomSettings(name="hall", topology="mesh"),)),
    )
    async with asyncio.timeout(TIMEOUT), _client(config) as client:
        url = _ws_url(client)
        async with SignalingClient.connect(url, room="r", metadata={"topology": "p2p"}) as a:
            assert a.topology == "mesh"
        body = await (await client.get("/config.json")).json()
        assert body["chooseTopology"] is False
        assert body["rooms"] == [{"name": "hall", "topology": "mesh"}]


def test_rooms_of_a_topology_without_strategy_are_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_module, "APP_TOPOLOGIES", frozenset({"mesh"}))
    assert available_topologies() == {"mesh": True, "sfu": False, "mcu": False}
    topology = "mcu"
    declared = ServeConfig(
        server=ServerSettings(insecure=True),
        auth=AuthSettings(mode="open"),
        rooms=RoomsSettings(declared=(RoomSettings(name="hall", topology=topology),)),
    )
    with pytest.raises(ConfigurationError, match=r"'hall'.*cannot host"):
        check_topologies(declared)
    with pytest.raises(ConfigurationError, match="default_topology"):
        create_app(
            ServeConfig(
                server=ServerSettings(insecure=True),
                auth=AuthSettings(mode="open"),
                rooms=RoomsSettings(default_topology=topology),
            )
        )


async def test_token_config_refuses_joins_without_a_valid_token(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(
        f'[server]\ninsecure = true\n[auth]\nsecret = "{SECRET}"\n',
        encoding="utf-8",
    )
    from rtckit.server.config import load_config

    config = load_config(path)
    assert config.auth.mode == "token"
    tokens = TokenAuth(secret=SECRET)
    async with asyncio.timeout(TIMEOUT), _client(config) as client:
        url = _ws_url(client)
        body = await (await client.get("/config.json")).json()
        assert body["auth"] == "token"
        with pytest.raises(AuthError):
            async with SignalingClient.connect(url, room="r"):
                pass
        with pytest.raises(AuthError):
            async with SignalingClient.connect(url, room="r", token="not.a.token"):
                pass
        forged = TokenAuth(secret="x" * 40).mint(room="r", identity="eve")
        with pytest.raises(AuthError):
            async with SignalingClient.connect(url, room="r", token=forged):
                pass
        wrong_room = tokens.mint(room="other", identity="ada")
        with pytest.raises(AuthError):
            async with SignalingClient.connect(url, room="r", token=wrong_room):
                pass
        good = tokens.mint(room="r", identity="ada")
        async with SignalingClient.connect(url, room="r", token=good) as ada:
            assert ada.identity == "ada"
        text = await (await client.get("/metrics")).text()
        assert _metric(text, 'rtckit_errors_total{code="auth_required"}') == 1
        assert _metric(text, 'rtckit_errors_total{code="auth_invalid"}') >= 2


# --- RtcKitServer: HTTPS, redirect, shutdown --------------------------------------------------


def _tls_config(tmp_path: Path) -> tuple[ServeConfig, ssl.SSLContext]:
    dev = ensure_dev_certificate(tmp_path / "certs", ["localhost", "127.0.0.1"])
    config = ServeConfig(
        server=ServerSettings(host="127.0.0.1", port=0, http_port=0),
        tls=TlsSettings(cert=dev.files.fullchain, key=dev.files.key),
        auth=AuthSettings(mode="open"),
    )
    return config, dev.ca.client_ssl_context()


async def test_https_server_redirect_and_clean_shutdown(tmp_path: Path) -> None:
    config, client_ssl = _tls_config(tmp_path)
    before = asyncio.all_tasks()
    ca_der = b"0\x82fake-der-for-the-test"
    async with asyncio.timeout(TIMEOUT):
        async with RtcKitServer(config, demo=True, ca_certificate=ca_der) as server:
            assert server.secure
            port, http_port = server.port, server.http_port
            assert http_port is not None
            assert server.url() == f"https://localhost:{port}/"
            connector = aiohttp.TCPConnector(ssl=client_ssl)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(f"https://localhost:{port}/healthz") as response:
                    assert response.status == 200
                    assert (await response.json())["status"] == "ok"
                async with session.get(
                    f"http://127.0.0.1:{http_port}/room/x?name=a%20b&y=1", allow_redirects=False
                ) as response:
                    assert response.status == 308
                    assert (
                        response.headers["Location"]
                        == f"https://127.0.0.1:{port}/room/x?name=a%20b&y=1"
                    )
                async with session.post(
                    f"http://127.0.0.1:{http_port}/x", allow_redirects=False
                ) as response:
                    assert response.status == 308
                for base in (f"http://127.0.0.1:{http_port}", f"https://localhost:{port}"):
                    async with session.get(f"{base}/ca.crt") as response:
                        assert response.status == 200
                        assert response.content_type == "application/x-x509-ca-cert"
                        assert await response.read() == ca_der
                # a WebSocket join over wss:// with the local CA
                transport = WebSocketTransport(f"wss://localhost:{port}/ws", session=session)
                async with SignalingClient.connect(transport, room="tls") as peer:
                    assert peer.topology == "mesh"
                    await server.aclose()  # closing with a peer connected
                    await server.aclose()  # idempotent
        await asyncio.sleep(0)
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://127.0.0.1:{http_port}/")


async def test_server_reports_busy_ports_and_bad_tls_as_configuration_errors(
    tmp_path: Path,
) -> None:
    config, _ = _tls_config(tmp_path)
    async with asyncio.timeout(TIMEOUT), RtcKitServer(config) as first:
        busy = ServeConfig(
            server=ServerSettings(host="127.0.0.1", port=first.port),
            tls=config.tls,
            auth=AuthSettings(mode="open"),
        )
        with pytest.raises(ConfigurationError, match="cannot listen"):
            async with RtcKitServer(busy):
                pass
    assert config.tls is not None
    bad = ServeConfig(
        server=ServerSettings(host="127.0.0.1", port=0),
        tls=TlsSettings(cert=config.tls.key, key=config.tls.key),
        auth=AuthSettings(mode="open"),
    )
    with pytest.raises(ConfigurationError, match=r"\[tls\] cannot load"):
        async with RtcKitServer(bad):
            pass


async def test_the_demo_runs_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``pip install .`` has no extras: the demo must work, ``serve`` must say what is missing
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "rtckit.server.metrics", raising=False)
    async with asyncio.timeout(TIMEOUT), _client(OPEN, demo=True) as client:
        assert (await client.get("/metrics")).status == 404
        async with SignalingClient.connect(_ws_url(client), room="r") as peer:
            assert peer.topology == "mesh"
        assert (await client.get("/healthz")).status == 200
    with pytest.raises(ConfigurationError, match=r"rtckit\[metrics\]"):
        create_app(OPEN)


async def test_limits_from_the_config_reach_signaling() -> None:
    config = parse_config(
        '[server]\ninsecure = true\n[auth]\nmode = "open"\n[limits]\nmax_peers_per_room = 2\n'
        '[rooms]\ncreate_on_demand = false\n[[rooms.declare]]\nname = "duo"\n'
    )
    async with asyncio.timeout(TIMEOUT), _client(config) as client:
        url = _ws_url(client)
        with pytest.raises(RoomError, match="no such room"):
            async with SignalingClient.connect(url, room="elsewhere"):
                pass
        async with (
            SignalingClient.connect(url, room="duo"),
            SignalingClient.connect(url, room="duo"),
        ):
            with pytest.raises(RoomError, match="2 peers"):
                async with SignalingClient.connect(url, room="duo"):
                    pass


@pytest.mark.parametrize(
    ("topology", "server_peer"), [("sfu", "rtckit-sfu"), ("mcu", "rtckit-mcu")]
)
async def test_demo_sfu_and_mcu_rooms_run_their_server_and_stop_it_when_empty(
    topology: str, server_peer: str
) -> None:
    """The server joins an SFU/MCU room with the first person (not counted as a peer), and
    leaves when the last person does: the room closes, no strategy or task is left."""
    assert available_topologies()[topology]
    metrics = Metrics()
    app = create_app(OPEN, metrics=metrics, demo=True)
    state: Any = app[_APP_KEY]  # the app's private state: its running strategies and tasks
    async with asyncio.timeout(TIMEOUT):
        async with TestClient(TestServer(app)) as client:
            url = _ws_url(client)
            async with SignalingClient.connect(
                url, room=f"r-{topology}", metadata={"topology": topology}
            ) as a:
                assert a.topology == topology
                async for _event in a:
                    if server_peer in a.peers:
                        break
                assert topology in str(type(state.strategies[f"r-{topology}"])).lower()
                text = await (await client.get("/metrics")).text()
                assert _metric(text, f'rtckit_peers{{topology="{topology}"}}') == 1
            while state.strategies or state.tasks:  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.05)
            while (await (await client.get("/healthz")).json())["rooms"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            text = await (await client.get("/metrics")).text()
            assert _metric(text, f'rtckit_peers{{topology="{topology}"}}') == 0
        assert not state.tasks


async def test_a_declared_sfu_room_with_tokens_gets_its_server_back_with_each_new_visit() -> None:
    """``rtckit serve``: a declared SFU room outlives its visitors. The SFU joins with the first
    person (minting its own token), leaves with the last, and comes back with the next one."""
    config = ServeConfig(
        server=ServerSettings(insecure=True),
        auth=AuthSettings(mode="token", secret=SECRET),
        rooms=RoomsSettings(declared=(RoomSettings(name="hall", topology="sfu"),)),
    )
    tokens = TokenAuth(secret=SECRET)
    app = create_app(config, metrics=Metrics())
    state: Any = app[_APP_KEY]  # the app's private state: its running strategies and tasks
    async with asyncio.timeout(TIMEOUT), TestClient(TestServer(app)) as client:
        url = _ws_url(client)
        for visit in range(2):
            token = tokens.mint(room="hall", identity=f"ada-{visit}")
            async with SignalingClient.connect(url, room="hall", token=token) as ada:
                assert ada.topology == "sfu"
                async for _event in ada:
                    if "rtckit-sfu" in ada.peers:
                        break
                health = await (await client.get("/healthz")).json()
                assert (health["rooms"], health["peers"]) == (1, 1)  # the SFU is not a person
            while state.strategies or state.tasks:  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.05)
            assert not app_signaling(app).hub.state.peers("hall")
