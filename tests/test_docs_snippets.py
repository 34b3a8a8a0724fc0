"""Every code block of the README, the docs and the rendered docstrings is run or checked.

A page cannot drift from the code: the blocks are extracted by parsing the pages
(``tests/docsnippets.py``), so a new block is picked up by itself and this file FAILS until it
is handled:

* ``python`` blocks run, a page's blocks in order in one namespace as a reader follows the
  page (top-level ``await`` allowed). Inside an ``async with`` body, ``...`` ("serve until
  done") runs the rest of the page, so a server block stays up for the client blocks after it.
  Blocks listed in :data:`PYTHON` as ``participant`` run twice at once (two participants of
  the room) until each has received a media frame; ``serve`` blocks (a server that runs
  until cancelled) run for :data:`SERVE_SECONDS` and must still be serving. Blocks that
  cannot run (they need root, a remote host or a reader's objects) are listed as ``compile``
  with the reason: they are compiled, their imports run, and every name they use must be
  defined by the page, imported, a builtin, or named in :data:`CONTEXT`.
* ``toml`` blocks load with :mod:`rtckit.server.config` (the secrets and TLS files they name
  are provided).
* shell blocks listed in :data:`SHELL_RUN` run in bash in a temporary directory with the
  worktree's ``rtckit``; those in :data:`SHELL_PARSE` (servers that run until Ctrl-C, probes of
  remote hosts) have every ``rtckit`` command line parsed by rtckit's argparse parser.
* ``html``/``javascript`` blocks import only what ``rtckit.js`` exports and listen only for
  events it emits.
* ``literalinclude`` files exist and a test under ``tests/`` runs them.
* ``>>>`` blocks run as doctests.
* Everything else (output samples, diagrams, other tools' commands) is in :data:`NOT_RUN`
  with the reason.

Network: nothing here leaves the machine. Servers bind loopback (or all interfaces on a free
port), peers use the ICE servers of the room's ``welcome`` (none), and blocks that would reach
``*.example.org`` or a public address are compile-only.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import doctest
import importlib
import os
import re
import shlex
import subprocess
import symtable
import sys
import textwrap
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from docsnippets import ROOT, Block, all_blocks
from jsmodules import exports
from rtckit.cli import build_parser
from rtckit.server.config import parse_config
from rtckit.signaling.browser import client_modules
from rtckit.testing._system import require_executable
from rtckit.testing.coturn import free_port

Key = tuple[str, str]  # (source, a stable snippet of the block's text)

#: Python blocks (``code-block:: python`` run by default; ``::`` blocks only when listed):
#: "run", "participant: why", or "compile: why it cannot run".
PYTHON: dict[Key, str] = {
    ("docs/howto/coturn.rst", 'listening_ips=["203.0.113.9"]'): (
        "compile: starts coturn listening on 203.0.113.9, an address this machine lacks"
    ),
    ("docs/howto/coturn.rst", "async with run_coturn(config):"): (
        "compile: starts coturn for TLS clients with the operator's certificate files"
    ),
    ("docs/howto/coturn.rst", "async with NatLab() as lab:"): (
        "compile: the NAT lab needs root and network namespaces (tests/integration/test_natlab.py)"
    ),
    ("docs/howto/doctor.rst", "doctor = [sys.executable"): (
        "compile: an excerpt of a NAT-lab test (root, namespaces; tests/integration/test_natlab.py)"
    ),
    ("docs/howto/doctor.rst", "report = await run_doctor("): (
        "compile: probes turn.example.org, a remote host"
    ),
    ("docs/howto/https-certificates.rst", "web.run_app(app, port=8443"): (
        "compile: serves the reader's app until Ctrl-C"
    ),
    ("docs/howto/https-certificates.rst", "async with session.get("): (
        "compile: a fragment inside the reader's aiohttp client session"
    ),
    ("docs/howto/https-certificates.rst", "https_redirect_middleware(8443)"): (
        "compile: a fragment, the reader's application"
    ),
    ("docs/howto/mcu-room.rst", "join_room(client) as room,"): (
        "participant: a room member publishing and receiving until it is stopped"
    ),
    ("docs/howto/mesh-call.rst", "join_room(client) as room,"): (
        "participant: a room member publishing and receiving until it is stopped"
    ),
    ("docs/howto/sfu-room.rst", "join_room(client) as room,"): (
        "participant: a room member publishing and receiving until it is stopped"
    ),
    ("docs/howto/room-tokens.rst", "SignalingClient.connect(url"): (
        "compile: connects to the reader's server at url"
    ),
    ("docs/howto/turn-credentials.rst", "except TurnAuthError:"): (
        "compile: gathering would contact turn.example.org, a remote host"
    ),
    ("docs/topics/mcu.rst", "engine.attach(peer_id, pc"): (
        "compile: a fragment of a server's offer handler (tests/test_mcu_engine.py runs it)"
    ),
    ("docs/topics/nat-traversal.rst", "filter_sdp_candidates(remote.sdp"): (
        "compile: a fragment of a remote-offer handler"
    ),
    ("docs/topics/nat-traversal.rst", "async with NatLab() as lab:"): (
        "compile: the NAT lab needs root and network namespaces (tests/integration/test_natlab.py)"
    ),
    ("docs/topics/sfu-forwarding.rst", "router = SfuRouter(SfuConfig())"): (
        "compile: a summary of the router's calls across a server's handlers"
    ),
    ("rtckit.coturn.process.CoturnProcess", "async with CoturnProcess(config)"): (
        "compile: starts coturn on every interface with the default ports"
    ),
    ("rtckit.eventloop", 'run(main(), loop="auto")'): (
        "compile: starts its own event loop (tests/test_eventloop.py runs run())"
    ),
    ("rtckit.mcu.engine", "engine.attach(peer_id, pc"): "compile: a fragment (McuConfig(...))",
    ("rtckit.peer.events", "async for event in session.events():"): (
        "compile: a fragment, the reader's session"
    ),
    ("rtckit.server.app.RtcKitServer", "async with RtcKitServer(config)"): (
        "compile: serves until the reader's stop_event"
    ),
    ("rtckit.signaling.client", "async with SignalingClient.connect("): (
        "compile: a client of a server the reader runs, answering offers forever"
    ),
    ("rtckit.signaling.hub.EventStream", "with server.subscribe() as events:"): (
        "compile: a fragment, the reader's server"
    ),
    ("rtckit.signaling.wsserver", "web.run_app(app)"): "compile: serves until Ctrl-C",
    ("rtckit.signaling.wsserver", 'await server.listen("127.0.0.1", 8765)'): "run",
    ("rtckit.signaling.fastws.PicowsSignalingServer", "async with PicowsSignalingServer("): "run",
    ("rtckit.backplane.memory", "broker = MemoryBroker(node_ttl=3.0)"): "run",
    ("docs/topics/cluster.rst", "broker = MemoryBroker()"): "run",
    ("rtckit.stun.server", "await asyncio.Event().wait()"): (
        "serve: serves until cancelled (it is cancelled after SERVE_SECONDS)"
    ),
    ("rtckit.testing.browser.launch_chromium", "async with launch_chromium()"): (
        "compile: needs Chromium and a page server (tests/browser/test_launcher.py)"
    ),
    ("rtckit.testing.conformance", "async def test_my_transport"): (
        "compile: a test module for the reader's own transport"
    ),
    ("rtckit.testing.natlab", "async with NatLab() as lab:"): (
        "compile: the NAT lab needs root and network namespaces (tests/integration/test_natlab.py)"
    ),
    ("rtckit.testing.proxy", "async with TcpProxy("): "compile: a fragment of a test",
    ("rtckit.topology.base", "async with join_room(client) as room:"): (
        "compile: a room member of the reader's server at url"
    ),
    ("rtckit.ice.turn", 'auth = TurnRestAuth(secrets=["s3cret"]'): "run",
    ("rtckit.whip.client.WhipClient", "async with WhipClient(url"): (
        "compile: publishes to the reader's endpoint (docs/howto/whip.rst runs one)"
    ),
    ("rtckit.whip.client.WhepClient", "async with WhepClient(url"): (
        "compile: plays the reader's endpoint (tests/test_whip_client.py records one)"
    ),
    ("rtckit.backplane.redis.RedisBackplane", "await backplane.start(handler)"): (
        "compile: a fragment, the reader's Redis and handler (docs/howto/cluster.rst runs one)"
    ),
    ("rtckit.testing.redisserver", "async with run_redis_server() as server:"): (
        "compile: a fragment of an outage test (tests/integration/test_backplane_redis.py)"
    ),
}

#: Python blocks that need a system executable (skipped without it, unless
#: RTCKIT_REQUIRE_SYSTEM=1); the page's earlier blocks still run.
PYTHON_NEEDS: dict[Key, str] = {
    ("docs/howto/cluster.rst", "run_redis_server()"): "redis-server",
    ("docs/howto/turn-credentials.rst", "run_loopback_coturn()"): "turnserver",
}

#: Names a page gives in prose (or a test around the excerpt) for its compile-only blocks.
CONTEXT: dict[str, set[str]] = {
    "docs/howto/coturn.rst": {"secret", "new_secret", "old_secret"},
    "docs/howto/doctor.rst": {"lab", "secret", "sys", "TurnRestAuth"},
    "docs/howto/https-certificates.rst": {
        "app",
        "session",
        "ca",
        "web",
        "https_redirect_middleware",
    },
    "docs/howto/room-tokens.rst": {"url"},
    "docs/topics/mcu.rst": {"peer_id", "pc", "display_name", "offer"},
    "docs/topics/nat-traversal.rst": {
        "remote",
        "log",
        "pc",
        "secret",
        "TurnRestAuth",
        "NatLab",
        "connect_peers",
    },
    "docs/topics/sfu-forwarding.rst": {
        "SfuRouter",
        "SfuConfig",
        "participant_id",
        "transceiver",
        "add_forwarding_transceiver",
        "pc_of_subscriber",
        "subscriber_id",
        "accept_forwarding_transceiver",
        "transceiver_created_by_the_offer",
        "channel",
    },
    "rtckit.backplane.redis.RedisBackplane": {"url", "handler"},
    "rtckit.coturn.process.CoturnProcess": {"secret"},
    "rtckit.eventloop": {"main"},
    "rtckit.mcu.engine": {"peer_id", "pc"},
    "rtckit.peer.events": {"session"},
    "rtckit.server.app.RtcKitServer": {"config", "stop_event"},
    "rtckit.signaling.client": {"answer_sdp"},
    "rtckit.signaling.hub.EventStream": {"server"},
    "rtckit.signaling.wsserver": {"SECRET"},
    "rtckit.testing.conformance": {"MyTransport"},
    "rtckit.testing.natlab": {"secret", "connect_peers"},
    "rtckit.testing.proxy": {"server_port"},
    "rtckit.testing.redisserver": {"RedisBackplaneConfig"},
    "rtckit.topology.base": {"url", "SignalingClient", "TestPatternTrack"},
    "rtckit.whip.client.WhipClient": {"url", "token", "asyncio", "open_source"},
    "rtckit.whip.client.WhepClient": {"url"},
}

#: Python run before a page's blocks: what the page's prose says the reader has.
SETUP: dict[str, str] = {
    "rtckit.signaling.wsserver": "config = SignalingConfig(auth=OpenAuth())",
    "rtckit.signaling.fastws.PicowsSignalingServer": (
        "from rtckit.signaling.fastws import PicowsSignalingServer\n"
        "config = SignalingConfig(auth=OpenAuth())"
    ),
    "rtckit.topology.strategies": (
        "from rtckit.signaling import OpenAuth, SignalingConfig, SignalingServer\n"
        "config = SignalingConfig(auth=OpenAuth())"
    ),
    # the page's clients get credentials from $RTCKIT_TURN_SECRET: the new secret
    "docs/howto/coturn.rst": (
        "new_secret, old_secret = __import__('os').environ['RTCKIT_TURN_SECRET'], 'o' * 32"
    ),
}

#: Environment a page's blocks run with (the page tells the reader to set it).
ENV: dict[str, dict[str, str]] = {
    "docs/howto/coturn.rst": {
        "RTCKIT_ICE_SERVERS": "stun:203.0.113.9 turn:203.0.113.9 turns:203.0.113.9:443",
        "RTCKIT_TURN_SECRET": "t" * 32,
    },
    "docs/howto/room-tokens.rst": {"RTCKIT_SIGNALING_SECRET": "s" * 43},
    "docs/howto/deploy.rst": {"RTCKIT_SIGNALING_SECRET": "s" * 43},
}

#: Python run after a page's blocks (close what the page leaves open).
TEARDOWN: dict[str, str] = {
    "docs/howto/mesh-call.rst": "await server.close()",
    "docs/howto/turn-credentials.rst": "await pc.close()",
}

#: Shell blocks run in bash in a temporary directory (``$ `` lines only when prompts are
#: shown), after the page's earlier run blocks; value: executables they need besides rtckit.
SHELL_RUN: dict[Key, tuple[str, ...]] = {
    ("docs/howto/deploy.rst", 'export RTCKIT_SIGNALING_SECRET="$(python'): (),
    ("docs/howto/deploy.rst", 'rtckit token --secret="$RTCKIT_SIGNALING_SECRET"'): (),
    ("docs/howto/deploy.rst", "$ rtckit serve --config /etc/rtckit/serve.toml --check"): (),
    ("docs/howto/https-certificates.rst", "--host 127.0.0.1 --out certs"): (),
    ("docs/howto/https-certificates.rst", "rtckit cert create --ca ~/.local/share"): (),
    ("docs/howto/https-certificates.rst", "export KEYSTORE_PASSWORD=change-me-please"): (),
    ("docs/howto/https-certificates.rst", "keytool -list -v -keystore"): ("keytool",),
    ("docs/howto/room-tokens.rst", 'python -c "import secrets'): (),
    ("docs/howto/room-tokens.rst", 'rtckit token --secret="$RTCKIT_SIGNALING_SECRET"'): (),
    ("docs/howto/turn-credentials.rst", "$ RTCKIT_TURN_SECRET=S3CRET rtckit turn"): (),
    ("docs/tutorial/getting-started.rst", "rtckit cert create --host localhost"): (),
}

#: Shell blocks whose ``rtckit`` command lines are parsed (not run), with the reason.
SHELL_PARSE: dict[Key, str] = {
    ("docs/howto/cluster.rst", "rtckit serve --config serve.toml --workers 4"): (
        "runs until Ctrl-C against the operator's Redis (tests/integration/test_serve_cluster.py "
        "runs --workers 2 against its own)"
    ),
    ("README.md", "pip install . && rtckit demo"): "installs packages; the demo runs until Ctrl-C",
    ("docs/tutorial/demo.rst", "pip install . && rtckit demo"): (
        "installs packages; the demo runs until Ctrl-C"
    ),
    ("docs/howto/coturn.rst", "openssl rand -base64 32 > turn-secret"): (
        "starts coturn on 203.0.113.9, an address this machine lacks"
    ),
    ("docs/howto/coturn.rst", 'RTCKIT_ICE_SERVERS="stun:203.0.113.9'): (
        "starts coturn on 203.0.113.9 with the operator's certificate"
    ),
    ("docs/howto/coturn.rst", "--tls-cert certs/turn.example.org.pem"): (
        "starts coturn on 203.0.113.9 with the operator's certificate"
    ),
    ("docs/howto/deploy.rst", 'export RTCKIT_TURN_SECRET="$(python'): (
        "starts coturn, as a deployment does"
    ),
    ("docs/howto/doctor.rst", "$ rtckit doctor stun:turn.example.org"): "probes remote servers",
    ("docs/howto/doctor.rst", "$ rtckit doctor --ice-config ice.json"): "probes remote servers",
    ("docs/howto/whep.rst", "rtckit whep play http://127.0.0.1:8090/whep/stage/alice"): (
        "plays the reader's server (tests/test_whip_client.py runs the CLI)"
    ),
    ("docs/howto/whip.rst", "rtckit whip publish http://127.0.0.1:8080/whip/stage"): (
        "publishes for a minute to the reader's server (tests/test_whip_client.py runs the CLI)"
    ),
    ("docs/howto/room-tokens.rst", "rtckit signaling --host 127.0.0.1 --port 8765"): (
        "serves until Ctrl-C"
    ),
    ("docs/reference/stun.rst", "$ rtckit stun --host 0.0.0.0 --port 3478 --tcp"): (
        "serves until Ctrl-C"
    ),
    ("docs/tutorial/signaling.rst", "rtckit signaling --host 127.0.0.1 --port 8765 --open"): (
        "serves until Ctrl-C"
    ),
    ("docs/tutorial/signaling.rst", "rtckit signaling --open --cert fullchain.pem"): (
        "serves until Ctrl-C (tests/test_cli_signaling_transport.py runs --cert/--key)"
    ),
    ("docs/howto/deploy.rst", "rtckit signaling --host 0.0.0.0 --cert /etc/rtckit/cert.pem"): (
        "serves until Ctrl-C, with the operator's certificate files"
    ),
}

#: Blocks neither run nor parsed, with the reason.
NOT_RUN: dict[Key, str] = {
    ("docs/howto/deploy.rst", "rtckit signaling on ws://"): (
        "rtckit signaling's start-up line (tests/test_cli_signaling_transport.py checks it)"
    ),
    ("README.md", "pip install nox && nox"): "installs packages and runs every test session",
    ("docs/howto/run-tests.rst", "pip install nox && nox"): (
        "installs packages and runs every test session"
    ),
    ("docs/tutorial/getting-started.rst", "pip install nox && nox"): (
        "installs packages and runs every test session"
    ),
    ("docs/tutorial/getting-started.rst", "pip install ."): "installs packages",
    ("docs/howto/run-tests.rst", "apt-get install --no-install-recommends"): (
        "installs system packages (test_documented_packages_are_what_ci_installs compares them)"
    ),
    ("docs/howto/coturn.rst", "apt-get install coturn"): "installs a system package",
    ("docs/howto/cluster.rst", "redis-server --bind 10.0.0.5"): (
        "redis-server's own command line, serving on the operator's private address"
    ),
    ("docs/howto/coturn.rst", "turnutils_uclient"): "coturn's client, probing a remote server",
    ("docs/howto/turn-credentials.rst", "turnserver --use-auth-secret"): (
        "coturn's own command line, with '...' for the operator's options"
    ),
    ("docs/howto/turn-credentials.rst", 'RTCKIT_ICE_SERVERS="turn:turn.example.org'): (
        "environment settings, no command (tests/test_ice.py covers IceConfig.from_env)"
    ),
    ("docs/howto/deploy.rst", "https://meet.example.org/?room=standup&token="): "a URL sample",
    ("docs/howto/deploy.rst", "scrape_configs:"): "Prometheus' configuration",
    ("docs/howto/deploy.rst", '"logger": "rtckit.server"'): "a log line sample",
    ("docs/howto/deploy.rst", "[Unit]"): "a systemd unit",
    ("docs/howto/https-certificates.rst", "sudo cp ca/ca.pem"): "changes the system trust store",
    ("docs/howto/https-certificates.rst", 'certutil -d sql:$HOME/.pki/nssdb -A -t "C,,"'): (
        "changes the user's browser trust store"
    ),
    ("docs/howto/https-certificates.rst", "sudo security add-trusted-cert"): "macOS only",
    ("docs/howto/https-certificates.rst", "certutil -addstore -f ROOT"): "Windows only",
    ("docs/howto/https-certificates.rst", "keytool -genkey -alias NAME"): (
        "the keytool command that rtckit cert create replaces (asks questions on a terminal)"
    ),
    ("docs/topics/mcu.rst", "aiortc receiver (decode, thread)"): "a diagram",
    ("docs/topics/sfu-benchmark.rst", "function calls in"): "a profile's output",
    ("docs/topics/signaling-protocol.rst", "hello {version: 1}"): "a diagram",
    ("docs/tutorial/demo.rst", "rtckit demo: a video room, served over HTTPS"): (
        "rtckit demo's output (addresses and paths differ per machine)"
    ),
    ("docs/tutorial/signaling.rst", "alice is 274bd2c1"): (
        "the example's output (tests/test_signaling_examples.py checks it)"
    ),
    ("rtckit.errors", "RtcKitError"): "the exception tree (tests/test_package.py keeps it true)",
    ("rtckit.peer.negotiation", "have-local-offer"): "a transition table",
    ("rtckit.signaling.state", "open --hello--> greeted"): "a state diagram",
    ("rtckit.signaling.relay_wire", "version (1 byte) | kind (1 byte)"): "a byte layout",
    ("rtckit.stun.codec", "Magic Cookie"): "the header layout of RFC 5389",
    ("rtckit.testing.natlab", "198.51.100.0/24"): "a network diagram",
}

#: The examples the docs include, and the test that runs each.
INCLUDED_EXAMPLES = {
    "examples/mcu_loopback.py": "tests/test_mcu_engine.py",
    "examples/room_call.py": "tests/test_peer_examples.py",
    "examples/signaling_memory.py": "tests/test_signaling_examples.py",
    "examples/signaling_websocket.py": "tests/test_signaling_examples.py",
    "examples/signaling_browser.py": "tests/test_signaling_examples.py",
}

#: The README's Quickstart, exactly.
QUICKSTART = ["pip install . && rtckit demo", "pip install nox && nox"]

FIXED_PORTS = ("8765", "8443", "8080", "3478")  # replaced by free ports when a page runs
PAGE_TIMEOUT = 120.0  # seconds, a whole page (peers on a loaded 2-core machine)
SHELL_TIMEOUT = 60.0
SERVE_SECONDS = 1.0  # how long a "serve" block runs before it is cancelled


BLOCKS = all_blocks()


def _entry(table: dict[Key, Any], block: Block) -> Key | None:
    found = [key for key in table if key[0] == block.source and key[1] in block.text]
    assert len(found) <= 1, f"{block}: several entries match: {found}"
    return found[0] if found else None


def _kind(block: Block) -> str:
    """python, toml, shell-run, shell-parse, js, include, doctest, not-run or unhandled."""
    tables: list[tuple[str, dict[Key, Any]]] = [
        ("python", PYTHON),
        ("shell-run", SHELL_RUN),
        ("shell-parse", SHELL_PARSE),
        ("not-run", NOT_RUN),
    ]
    kinds = [kind for kind, table in tables if _entry(table, block) is not None]
    assert len(kinds) <= 1, f"{block}: in several tables: {kinds}"
    if kinds:
        return kinds[0]
    automatic = {
        "python": "python",
        "toml": "toml",
        "html": "js",
        "javascript": "js",
        "include": "include",
        "doctest": "doctest",
    }
    return automatic.get(block.language, "unhandled")


def test_every_block_is_run_or_listed() -> None:
    """A new block must be handled: run, checked, or listed here with a reason."""
    unhandled = [str(block) for block in BLOCKS if _kind(block) == "unhandled"]
    assert not unhandled, "code blocks neither run nor listed:\n" + "\n".join(unhandled)
    for table in (PYTHON, PYTHON_NEEDS, SHELL_RUN, SHELL_PARSE, NOT_RUN):
        for key in table:
            matches = [b for b in BLOCKS if b.source == key[0] and key[1] in b.text]
            assert len(matches) == 1, f"{key} matches {len(matches)} blocks, not 1"
    for source in (*CONTEXT, *SETUP, *ENV, *TEARDOWN):
        assert any(block.source == source for block in BLOCKS), f"stale entry {source}"


def test_inventory_is_complete() -> None:
    """The extractor sees every kind of block (a broken parser must not pass silently)."""
    languages = {block.language for block in BLOCKS}
    assert {"python", "toml", "::", "include", "doctest", "html", "sh"} <= languages
    assert len(BLOCKS) > 100
    # a `::` block in a docstring rendered by autodoc is found too
    assert any(b.source == "rtckit.ice.turn" for b in BLOCKS)


# --- Python ---------------------------------------------------------------------------------


def _python_sources() -> list[str]:
    sources: list[str] = []
    for block in BLOCKS:
        if _kind(block) == "python" and block.source not in sources:
            sources.append(block.source)
    return sources


def _mode(block: Block) -> str:
    key = _entry(PYTHON, block)
    return "run" if key is None else PYTHON[key].split(":")[0]


def _free_names(code: str) -> set[str]:
    """Names *code* reads without binding them (code wrapped in a function for symtable)."""
    wrapped = "async def __snippet__():\n" + textwrap.indent(code, "    ") + "\n    pass\n"
    table = symtable.symtable(wrapped, "<snippet>", "exec")
    free: set[str] = set()

    def walk(scope: symtable.SymbolTable) -> None:
        for symbol in scope.get_symbols():
            if symbol.is_global() and symbol.is_referenced() and not symbol.is_assigned():
                free.add(symbol.get_name())
        for child in scope.get_children():
            walk(child)

    walk(table.get_children()[0])
    return free


def _bound_names(code: str) -> set[str]:
    wrapped = "async def __snippet__():\n" + textwrap.indent(code, "    ") + "\n    pass\n"
    scope = symtable.symtable(wrapped, "<snippet>", "exec").get_children()[0]
    return {symbol.get_name() for symbol in scope.get_symbols() if symbol.is_local()}


class _ServeUntilDone(ast.NodeTransformer):
    """``...`` directly in an ``async with`` body: ``await __rest_of_page__()``."""

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        self.generic_visit(node)
        for index, statement in enumerate(node.body):
            if (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Constant)
                and statement.value.value is Ellipsis
            ):
                call = ast.parse("await __rest_of_page__()", mode="exec").body[0]
                node.body[index] = ast.copy_location(call, statement)
        return node


def _compile(code: str, filename: str) -> Any:
    tree = ast.fix_missing_locations(_ServeUntilDone().visit(ast.parse(code)))
    return compile(tree, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


async def _exec(code: Any, namespace: dict[str, Any]) -> None:
    result = eval(code, namespace)  # noqa: S307 - the docs' own code, as a reader runs it
    if asyncio.iscoroutine(result):
        await result


def _namespace(source: str) -> dict[str, Any]:
    """A page starts empty; a docstring has its module's and its package's names."""
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    if source.startswith("rtckit."):
        parts = source.split(".")
        modules = []
        for end in range(len(parts), 1, -1):
            with contextlib.suppress(ImportError):
                modules.append(importlib.import_module(".".join(parts[:end])))
        for module in reversed(modules):
            namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
            # a lazy package (rtckit._lazy) binds its names on first use: resolve them all
            namespace.update({k: getattr(module, k) for k in getattr(module, "__all__", ())})
    return namespace


async def _run_participants(code: Any, namespace: dict[str, Any], name: str) -> None:
    """Two participants run the block until each has a media frame from the other."""
    copies = [dict(namespace, print=lambda *args: None) for _ in range(2)]
    tasks = [asyncio.create_task(_exec(code, copy)) for copy in copies]
    try:
        async with asyncio.timeout(PAGE_TIMEOUT / 2):
            while not all("frame" in copy for copy in copies):
                for task in tasks:
                    if task.done():
                        task.result()  # an error ends the test; a return is a failure below
                        pytest.fail(f"{name}: a participant stopped before a frame arrived")
                await asyncio.sleep(0.1)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _run_page(source: str, blocks: list[Block]) -> None:
    namespace = _namespace(source)
    known = set(namespace) | set(dir(builtins)) | CONTEXT.get(source, set())
    ports = {port: str(free_port()) for port in FIXED_PORTS}
    if source in SETUP:
        await _exec(_compile(SETUP[source], f"{source}:setup"), namespace)
    steps: list[Callable[[], Awaitable[None]]] = []

    for number, block in enumerate(blocks):
        name = f"{source} block {number + 1} ({block!s})"
        mode = _mode(block)
        text = block.text
        for fixed, free in ports.items():
            text = text.replace(fixed, free)
        missing = _free_names(text) - known - set(namespace)
        assert not missing, f"{name}: undefined names {sorted(missing)}"
        known |= _bound_names(text)
        code = _compile(text, name)
        if mode == "compile":
            imports: list[ast.stmt] = [
                s for s in ast.parse(text).body if isinstance(s, ast.Import | ast.ImportFrom)
            ]
            exec(compile(ast.Module(imports, []), name, "exec"), namespace)  # noqa: S102
            continue

        needs = _entry(PYTHON_NEEDS, block)

        async def step(
            code: Any = code, mode: str = mode, name: str = name, needs: Key | None = needs
        ) -> None:
            if needs is not None:
                require_executable(PYTHON_NEEDS[needs])
            if mode == "participant":
                await _run_participants(code, namespace, name)
            elif mode == "serve":
                serving = asyncio.create_task(_exec(code, namespace))
                done, _ = await asyncio.wait([serving], timeout=SERVE_SECONDS)
                if done:
                    serving.result()  # an error ends the test
                    pytest.fail(f"{name}: stopped serving by itself")
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
            else:
                await _exec(code, namespace)

        steps.append(step)

    async def rest_of_page() -> None:
        while steps:
            await steps.pop(0)()

    namespace["__rest_of_page__"] = rest_of_page
    async with asyncio.timeout(PAGE_TIMEOUT):
        try:
            await rest_of_page()
        finally:
            if source in TEARDOWN:
                await _exec(_compile(TEARDOWN[source], f"{source}:teardown"), namespace)


@pytest.mark.parametrize("source", _python_sources())
def test_python_blocks(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [block for block in BLOCKS if block.source == source and _kind(block) == "python"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in ENV.get(source, {}).items():
        monkeypatch.setenv(name, value)
    asyncio.run(_run_page(source, blocks))


# --- TOML -----------------------------------------------------------------------------------


def _prepared_toml(text: str, folder: Path) -> str:
    """The TOML with its TLS files made (in *folder*) and its secret variables set."""
    from rtckit.certs import CertificateSpec, create_self_signed

    document = tomllib.loads(text)
    tls = document.get("tls", {})
    if tls:
        create_self_signed(CertificateSpec(hosts=["localhost"])).save(folder)
        text = text.replace(f'"{tls["cert"]}"', f'"{folder / "cert.pem"}"')
        text = text.replace(f'"{tls["key"]}"', f'"{folder / "key.pem"}"')
    return text


def _secret_envs(text: str) -> list[str]:
    return re.findall(r'^\s*\w*secret_env\s*=\s*"(\w+)"', text, re.MULTILINE)


TOML_BLOCKS = [block for block in BLOCKS if _kind(block) == "toml"]


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=str)
def test_toml_blocks_load(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _secret_envs(block.text):
        monkeypatch.setenv(name, "x" * 43)
    config = parse_config(_prepared_toml(block.text, tmp_path), source=str(block))
    assert config.server.port > 0


def test_toml_secret_variables_are_the_documented_ones() -> None:
    """The TOML blocks name the variable the CLI and the docs use for room tokens."""
    for block in TOML_BLOCKS:
        document = tomllib.loads(block.text)
        secret_env = document.get("auth", {}).get("secret_env")
        assert secret_env in (None, "RTCKIT_SIGNALING_SECRET"), block


# --- shell ----------------------------------------------------------------------------------


def _commands(block: Block) -> Iterator[str]:
    """The command lines of a shell block (``$ `` lines when it shows prompts)."""
    lines = block.text.replace("\\\n", " ").splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    for line in lines:
        if prompted and not line.startswith("$ "):
            continue
        line = line.removeprefix("$ ").strip()
        if line and not line.startswith("#"):
            yield line


def _rtckit_argvs(command: str) -> Iterator[list[str]]:
    words = shlex.split(command)
    current: list[str] = []
    for word in [*words, "&&"]:
        if word in ("&&", "||", ";", "|"):
            while current and re.fullmatch(r"\w+=.*", current[0]):
                current.pop(0)  # VAR=value prefixes
            if current and current[0] == "rtckit":
                yield current[1:]
            current = []
        else:
            current.append(word)


SHELL_PARSE_BLOCKS = [block for block in BLOCKS if _kind(block) == "shell-parse"]


@pytest.mark.parametrize("block", SHELL_PARSE_BLOCKS, ids=str)
def test_shell_commands_parse(block: Block) -> None:
    argvs = [argv for command in _commands(block) for argv in _rtckit_argvs(command)]
    assert argvs, f"{block}: no rtckit command to parse"
    for argv in argvs:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{block}: rtckit {shlex.join(argv)} does not parse ({exc})")


SHELL_RUN_BLOCKS = [block for block in BLOCKS if _kind(block) == "shell-run"]


def _toml_of(source: str) -> str:
    [block] = [b for b in TOML_BLOCKS if b.source == source]
    return block.text


@pytest.mark.parametrize("block", SHELL_RUN_BLOCKS, ids=str)
def test_shell_blocks_run(block: Block, tmp_path: Path) -> None:
    key = _entry(SHELL_RUN, block)
    assert key is not None
    for executable in SHELL_RUN[key]:
        require_executable(executable)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "rtckit"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m rtckit "$@"\n')
    wrapper.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    path = [str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PATH": os.pathsep.join(path),
        "PYTHONPATH": str(ROOT / "src"),
        **ENV.get(block.source, {}),
    }
    earlier = [b for b in SHELL_RUN_BLOCKS if b.source == block.source]
    script = ["set -eu"]
    for previous in earlier[: earlier.index(block) + 1]:
        script.extend(_commands(previous))
    text = "\n".join(script)
    if "/etc/rtckit/serve.toml" in text:  # the page's TOML block, as the reader saved it
        toml = _toml_of(block.source)
        for name in _secret_envs(toml):
            env.setdefault(name, "x" * 43)
        (work / "serve.toml").write_text(_prepared_toml(toml, work))
        text = text.replace("/etc/rtckit/serve.toml", str(work / "serve.toml"))
    result = subprocess.run(
        ["bash", "-c", text],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{block}:\n{text}\n{result.stdout}\n{result.stderr}"
    # a shown output: each line's label (up to ':') is in what the commands printed
    if any(line.startswith("$ ") for line in block.text.splitlines()):
        for line in block.text.splitlines():
            if line.startswith(("$ ", " ")) or ":" not in line:
                continue
            label = line.split(":")[0] + ":"
            assert label in result.stdout, f"{block}: {label!r} not printed:\n{result.stdout}"


def test_documented_packages_are_what_ci_installs() -> None:
    """run-tests.rst's apt-get line names exactly the packages .ci/run installs."""
    [block] = [b for b in BLOCKS if b.source == "docs/howto/run-tests.rst" and "apt-get" in b.text]
    [command] = _commands(block)
    documented = [word for word in shlex.split(command)[2:] if not word.startswith("-")]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    match = re.search(r"^apt_packages=\(([^)]*)\)", ci, re.MULTILINE)
    assert match is not None
    assert sorted(documented) == sorted(match.group(1).split())


def test_documented_extras_exist() -> None:
    """Every extra the docs name exists, and getting-started lists them all (and no other)."""
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    texts = [p.read_text(encoding="utf-8") for p in (ROOT / "docs").rglob("*.rst")]
    texts += [p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py")]
    named = {name for text in texts for name in re.findall(r"rtckit\[(\w+)\]", text)}
    named |= {name for text in texts for name in re.findall(r"``(\w+)`` extra\b", text)}
    assert named <= extras, f"extras named in the docs but not in pyproject.toml: {named - extras}"
    page = (ROOT / "docs/tutorial/getting-started.rst").read_text(encoding="utf-8")
    paragraph = page.split("The optional extras")[1].split("\n\n")[0]
    assert set(re.findall(r"``(\w+)`` \(", paragraph)) == extras


def test_every_extra_is_used() -> None:
    """An extra installs only what rtckit imports (no extra for a feature not built yet)."""
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py"))
    for extra, requirements in optional.items():
        for requirement in requirements:
            module = re.split(r"[<>=;\[ ]", requirement)[0].replace("-", "_")
            imported = rf"^\s*(?:import|from) {module}\b"
            assert re.search(imported, source, re.MULTILINE), f"extra {extra}: {module} unused"


def test_readme_quickstart() -> None:
    """The README's commands are exactly the documented two, and ``rtckit demo`` parses."""
    commands = [b.text.strip() for b in BLOCKS if b.source == "README.md"]
    assert commands == QUICKSTART
    result = subprocess.run(
        [sys.executable, "-m", "rtckit", "demo", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: rtckit demo" in result.stdout


# --- JavaScript, included files, doctests ---------------------------------------------------

# rtckit.js is an entry that re-exports from the modules beside it: names are looked up
# through its re-exports, events and methods in all of its modules.
RTCKIT_MODULES = client_modules()
RTCKIT_EXPORTS = exports(RTCKIT_MODULES)
RTCKIT_JS = "\n".join(RTCKIT_MODULES.values())


JS_BLOCKS = [
    b for b in BLOCKS if _kind(b) == "js" or (_kind(b) == "include" and "<script" in b.included)
]
EVENT_TARGET = {"addEventListener", "removeEventListener", "dispatchEvent"}


@pytest.mark.parametrize("block", JS_BLOCKS, ids=str)
def test_javascript_uses_what_rtckit_js_has(block: Block) -> None:
    """A page's script imports what rtckit.js exports, and its events and methods exist."""
    text = block.included or block.text
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", text, re.DOTALL)
    script = "\n".join(scripts) if scripts else text
    imports = re.findall(r'import \{([^}]*)\} from "[^"]*/rtckit\.js"', script)
    names = [name.strip() for group in imports for name in group.split(",") if name.strip()]
    for name in names:
        assert name in RTCKIT_EXPORTS, f"{block}: {name} not exported by rtckit.js"
    for event in re.findall(r'\b(?:room|sig|signaling)\.addEventListener\("([\w-]+)"', script):
        assert f'"{event}"' in RTCKIT_JS, f"{block}: rtckit.js never emits {event!r}"
    for method in set(re.findall(r"\b(?:room|sig|signaling|RtcKitSignaling)\.(\w+)\(", script)):
        if method in EVENT_TARGET:
            continue
        defined = rf"^\s+(?:static )?(?:async )?{method}\("
        assert re.search(defined, RTCKIT_JS, re.MULTILINE), f"{block}: no method {method}()"


@pytest.mark.parametrize("block", [b for b in BLOCKS if _kind(b) == "include"], ids=str)
def test_included_files_exist_and_are_tested(block: Block) -> None:
    assert block.include is not None
    assert block.include.is_file(), f"{block}: {block.include} does not exist"
    name = block.include.relative_to(ROOT).as_posix()
    assert name in INCLUDED_EXAMPLES, f"{block}: which test runs {name}?"
    test = (ROOT / INCLUDED_EXAMPLES[name]).read_text(encoding="utf-8")
    assert block.include.name in test, f"{INCLUDED_EXAMPLES[name]} does not run {name}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if _kind(b) == "doctest"], ids=str)
def test_doctests(block: Block) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.text, _namespace(block.source), str(block), None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0
    assert runner.tries > 0


def test_secrets_from_variables_are_passed_with_an_equals_sign() -> None:
    """A generated secret (``secrets.token_urlsafe``) begins with ``-`` one time in 64, which
    argparse takes for an option: ``--secret "$X"`` failed that way in this file's shell run."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in [*(ROOT / "docs").rglob("*.rst"), ROOT / "README.md"]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"--[\w-]*secret\s+\"?\$", line)
    ]
    assert offenders == []
