"""rtckit.eventloop: choosing asyncio's loop or uvloop for the servers."""

from __future__ import annotations

import argparse
import asyncio
import inspect

import aiohttp
import pytest

from rtckit.errors import ConfigurationError
from rtckit.eventloop import (
    LOOP_CHOICES,
    add_loop_argument,
    loop_factory,
    loop_name,
    resolve_loop,
    run,
    uvloop_available,
)
from rtckit.signaling import OpenAuth, SignalingConfig, SignalingServer


def test_resolve_loop() -> None:
    assert resolve_loop("asyncio") == "asyncio"
    assert resolve_loop("auto") == ("uvloop" if uvloop_available() else "asyncio")
    with pytest.raises(ConfigurationError, match="event loop must be one of"):
        resolve_loop("trio")


def test_uvloop_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rtckit.eventloop.uvloop_available", lambda: False)
    assert resolve_loop("auto") == "asyncio"
    with pytest.raises(ConfigurationError, match=r"rtckit\[speed\]"):
        resolve_loop("uvloop")


def test_run_on_asyncio_returns_the_result() -> None:
    async def main() -> str:
        await asyncio.sleep(0)
        return loop_name()

    assert run(main(), loop="asyncio") == "asyncio"


def test_run_with_a_bad_choice_closes_the_coroutine() -> None:
    async def main() -> None:
        raise AssertionError("never runs")

    coro = main()
    with pytest.raises(ConfigurationError):
        run(coro, loop="nope")
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"


def test_loop_argument() -> None:
    parser = argparse.ArgumentParser()
    add_loop_argument(parser)
    assert parser.parse_args([]).loop == "auto"
    assert parser.parse_args(["--loop", "asyncio"]).loop == "asyncio"
    assert set(LOOP_CHOICES) == {"auto", "asyncio", "uvloop"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--loop", "other"])
    opt_in = argparse.ArgumentParser()
    add_loop_argument(opt_in, default="asyncio")  # rtckit serve and demo: uvloop opt-in
    assert opt_in.parse_args([]).loop == "asyncio"
    assert opt_in.parse_args(["--loop", "uvloop"]).loop == "uvloop"


def test_loop_name_of_a_given_loop() -> None:
    loop = loop_factory("asyncio")()
    try:
        assert loop_name(loop) == "asyncio"
    finally:
        loop.close()


def test_signaling_server_relays_on_uvloop() -> None:
    pytest.importorskip("uvloop")

    async def main() -> tuple[str, list[str], list[str]]:
        async with asyncio.timeout(20):
            config = SignalingConfig(auth=OpenAuth())
            async with SignalingServer(config) as server, aiohttp.ClientSession() as session:
                await server.listen("127.0.0.1", 0)
                sockets = []
                peer_ids = []
                for _ in range(2):
                    ws = await session.ws_connect(server.url)
                    await ws.send_str('{"type":"hello","version":1}')
                    await ws.send_str('{"type":"join","room":"uv"}')
                    await ws.receive_json()  # hello
                    welcome = await ws.receive_json()
                    sockets.append(ws)
                    peer_ids.append(welcome["peer_id"])
                await sockets[1].send_str(
                    f'{{"type":"app","to":"{peer_ids[0]}","payload":"on uvloop","seq":1}}'
                )
                got: list[str] = []
                while len(got) < 2:  # peer-joined, then the message
                    got.append(await sockets[0].receive_str())
                for ws in sockets:
                    await ws.close()
                return loop_name(), got, peer_ids

    name, got, (first, second) = run(main(), loop="uvloop")
    assert name == "uvloop"
    assert '"type":"peer-joined"' in got[0]
    assert (
        got[1] == f'{{"type":"app","to":"{first}","from":"{second}","payload":"on uvloop","seq":2}}'
    )


def test_command_line_defaults() -> None:
    from rtckit.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["signaling", "--open"]).loop == "auto"
    assert parser.parse_args(["serve", "--config", "x.toml"]).loop == "asyncio"
    assert parser.parse_args(["demo"]).loop == "asyncio"
    assert parser.parse_args(["demo", "--loop", "uvloop"]).loop == "uvloop"
