"""The browser client's modules: what the entry exports, the constants it shares with Python,
and how the servers serve the modules (every one, and nothing else).

The browser itself loads them in tests/browser/test_signaling.py
(``test_standalone_server_serves_every_module``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from yarl import URL

import rtckit.signaling.client as signaling_client
from jsmodules import ENTRY_EXPORTS, constants, exports, without_comments
from rtckit.peer import session
from rtckit.signaling import OpenAuth, SignalingConfig, SignalingServer
from rtckit.signaling.browser import (
    CLIENT_SCRIPT,
    client_module,
    client_modules,
    client_routes,
    client_script,
)
from rtckit.signaling.protocol import PROTOCOL_VERSION, CloseCode, ErrorCode
from rtckit.topology import Topology, bridge
from rtckit.topology.base import (
    MCU_PEER_ID,
    SFU_PEER_ID,
    VIDEO_LAYER_MESSAGE,
    VIDEO_OFF,
    VIDEO_QUALITY_MESSAGE,
)

CONSTANTS_MODULE = "rtckit/constants.js"

#: Every constant of rtckit/constants.js and its Python source.
PYTHON_CONSTANTS: dict[str, Any] = {
    "PROTOCOL_VERSION": PROTOCOL_VERSION,
    "ErrorCode": {code.name: code.value for code in ErrorCode},
    "CloseCode": {code.name: int(code) for code in CloseCode},
    "FINAL_CLOSE_CODES": {int(code) for code in signaling_client._FINAL_CLOSE_CODES},
    "Topology": {topology.name: topology.value for topology in Topology},
    "HEARTBEAT_LABEL": session.HEARTBEAT_LABEL,
    "HEARTBEAT_CHANNEL_ID": session.HEARTBEAT_CHANNEL_ID,
    "HEARTBEAT_PAYLOAD": session._HEARTBEAT,
    "ROOM_CHANNEL_LABEL": bridge.ROOM_CHANNEL_LABEL,
    "ROOM_CHANNEL_ID": bridge.ROOM_CHANNEL_ID,
    "SFU_PEER_ID": SFU_PEER_ID,
    "MCU_PEER_ID": MCU_PEER_ID,
    "VIDEO_QUALITY_MESSAGE": VIDEO_QUALITY_MESSAGE,
    "VIDEO_OFF": VIDEO_OFF,
    "VIDEO_LAYER_MESSAGE": VIDEO_LAYER_MESSAGE,
}
#: Constants only the browser has: its own agent string (the Python client's differs).
JS_ONLY = {"CLIENT_AGENT": "rtckit-js/1"}


def test_modules_entry_first_then_the_folder() -> None:
    modules = client_modules()
    assert next(iter(modules)) == CLIENT_SCRIPT == "rtckit.js"
    assert set(modules) == {
        "rtckit.js",
        "rtckit/constants.js",
        "rtckit/peer.js",
        "rtckit/rooms.js",
        "rtckit/signaling.js",
    }
    assert modules[CLIENT_SCRIPT] == client_script()
    for name, text in modules.items():
        assert client_module(name) == text


@pytest.mark.parametrize(
    "name",
    [
        "",
        "rtckit",
        "rtckit/",
        "rtckit/nothing.js",
        "rtckit/../rtckit.js",
        "./rtckit.js",
        "../server.py",
        "rtckit/../../server.py",
        "/etc/passwd",
        "/rtckit.js",
        "RTCKIT.JS",
        "rtckit\\peer.js",
    ],
)
def test_client_module_finds_only_the_modules(name: str) -> None:
    assert client_module(name) is None


def test_entry_exports_what_it_always_did() -> None:
    modules = client_modules()
    exported = exports(modules)
    assert set(exported) == ENTRY_EXPORTS
    # the entry only re-exports: the code is in the folder's modules
    assert set(exported.values()) == set(modules) - {CLIENT_SCRIPT}


def test_modules_import_only_served_siblings() -> None:
    modules = client_modules()
    for name, text in modules.items():
        for source in re.findall(r'^\s*(?:import|export)\b[^;]*?from "([^"]+)";', text, re.M):
            assert source.startswith("./"), f"{name} imports {source}: not relative"
            folder = name.rpartition("/")[0]
            target = f"{folder}/{source[2:]}" if folder else source[2:]
            assert target in modules, f"{name} imports {source}, which is not served"


def test_constants_match_python() -> None:
    found = constants(client_modules()[CONSTANTS_MODULE])
    assert set(found) == set(PYTHON_CONSTANTS) | set(JS_ONLY), "a constant without a check"
    for name, expected in {**PYTHON_CONSTANTS, **JS_ONLY}.items():
        assert found[name] == expected, name


def test_constants_are_not_repeated_in_other_modules() -> None:
    """The other modules import the shared strings rather than repeat them."""
    found = constants(client_modules()[CONSTANTS_MODULE])
    strings: set[str] = set()
    for value in found.values():
        if isinstance(value, str):
            strings.add(value)
        elif isinstance(value, dict):
            strings.update(v for v in value.values() if isinstance(v, str))
    for name, text in client_modules().items():
        if name == CONSTANTS_MODULE:
            continue
        code = without_comments(text)
        repeated = sorted(s for s in strings if f'"{s}"' in code or f"'{s}'" in code)
        assert not repeated, f"{name} repeats {repeated}"


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ('Object.freeze({\n  A: "a",\n  B_C: 2,\n})', {"A": "a", "B_C": 2}),
        ("new Set([1008, 4002])", {1008, 4002}),
        ('"\\u0000rtckit-hb"', "\x00rtckit-hb"),
    ],
)
def test_constants_reader(literal: str, expected: object) -> None:
    assert constants(f"// a comment\nexport const X = {literal};\n") == {"X": expected}


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    # encoded=True: send the path as written (no client-side normalisation of .. or %2f)
    async with session.get(URL(url, encoded=True), allow_redirects=False) as response:
        return response.status, response.content_type, await response.text()


HOSTILE_PATHS = [
    "rtckit/..%2frtckit.js",
    "rtckit/..%2f..%2fserver.py",
    "rtckit/%2fetc%2fpasswd",
    "rtckit/%2e%2e%2fbrowser.py",
    "rtckit/nothing.js",
    "rtckit/constants.js.map",
    "rtckit/",
    "rtckit",
    "static/rtckit.js",
    "rtckit/rtckit/peer.js",
]


async def test_standalone_server_serves_every_module_and_nothing_else() -> None:
    async with asyncio.timeout(20), SignalingServer(SignalingConfig(auth=OpenAuth())) as server:
        host, port = await server.listen("127.0.0.1", 0)
        base = f"http://{host}:{port}/ws"
        async with aiohttp.ClientSession() as http:
            for name, text in client_modules().items():
                assert await _get(http, f"{base}/{name}") == (200, "text/javascript", text)
            for path in HOSTILE_PATHS:
                status, _type, _body = await _get(http, f"{base}/{path}")
                assert status == 404, path


def test_routes_for_a_directory() -> None:
    assert client_routes("/ws") == ("/ws/rtckit.js", "/ws/rtckit/{module}")
    assert client_routes("/ws/") == ("/ws/rtckit.js", "/ws/rtckit/{module}")
    assert client_routes("/") == ("/rtckit.js", "/rtckit/{module}")
