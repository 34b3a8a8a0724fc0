"""rtckit.testing.redisserver: a throwaway redis-server that tests can stop, restart, pause."""

from __future__ import annotations

import asyncio
import os

import pytest

from rtckit.errors import SystemComponentError
from rtckit.testing import require_executable
from rtckit.testing.redisserver import INSTALL_HINT, RedisServer, _ping, run_redis_server


async def _answers(server: RedisServer) -> bool:
    try:
        async with asyncio.timeout(0.5):
            return await _ping(server.port)
    except TimeoutError:
        return False


async def test_stop_start_pause_resume(redis_server: RedisServer) -> None:
    port, pid = redis_server.port, redis_server.pid
    assert redis_server.url == f"redis://127.0.0.1:{port}/0"
    assert await _answers(redis_server)
    await redis_server.stop()
    assert redis_server.pid is None
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not await _answers(redis_server)
    await redis_server.start()
    assert redis_server.port == port
    assert await _answers(redis_server)
    redis_server.pause()
    assert not await _answers(redis_server)  # connects, never answers
    redis_server.resume()
    assert await _answers(redis_server)
    redis_server.pause()  # stopping a paused server works too
    await redis_server.stop()
    await redis_server.stop()


async def test_the_server_and_its_directory_go_away() -> None:
    require_executable("redis-server", hint=INSTALL_HINT)
    async with run_redis_server() as server:
        directory, pid = server._directory, server.pid
        assert directory.is_dir()
        assert "Ready to accept connections" in server.log()
    assert not directory.exists()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_missing_executable_is_reported() -> None:
    with pytest.raises(SystemComponentError, match="apt-get install redis-server"):
        async with run_redis_server(executable="rtckit-no-such-redis-server"):
            pytest.fail("must not start")
