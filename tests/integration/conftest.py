"""Every test of this folder carries the ``integration`` marker (tests/conftest.py checks it);
the fixtures of system components several files use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rtckit.testing import require_executable
from rtckit.testing.redisserver import INSTALL_HINT, RedisServer, run_redis_server


def pytest_itemcollected(item: pytest.Item) -> None:
    """A conftest's item hooks see only the tests under its own folder."""
    item.add_marker(pytest.mark.integration)


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A redis-server of its own on a free loopback port (skipped, or failed under
    RTCKIT_REQUIRE_SYSTEM=1, when redis-server is not installed)."""
    require_executable("redis-server", hint=INSTALL_HINT)
    async with run_redis_server() as server:
        yield server
