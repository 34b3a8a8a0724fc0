"""rtckit.backplane.redis without a redis-server: configuration and a Redis that is not there
(tests/integration/test_backplane_redis.py runs it against a real redis-server)."""

from __future__ import annotations

import math
import socket

import pytest

from backplanes import Recorder
from rtckit.backplane.redis import RedisBackplane, RedisBackplaneConfig
from rtckit.errors import BackplaneError, ConfigurationError


def test_defaults() -> None:
    config = RedisBackplaneConfig(node_ttl=6.0)
    assert config.heartbeat_interval == 2.0
    assert config.namespace == "rtckit"
    other = RedisBackplaneConfig()
    assert config.node_id != other.node_id
    assert config.node_id.isascii()
    assert config.node_id.isprintable()
    assert ":" not in config.node_id


@pytest.mark.parametrize(
    "options",
    [
        {"url": "http://127.0.0.1:6379"},
        {"namespace": "a:b"},
        {"namespace": "a*"},
        {"namespace": ""},
        {"node_id": "a:b"},
        {"node_id": ""},
        {"node_id": "tab\there"},
        {"node_id": "é"},
        {"node_ttl": 3.0, "heartbeat_interval": 3.0},
        {"reconnect_min": 2.0, "reconnect_max": 1.0},
    ],
)
def test_bad_configuration(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RedisBackplaneConfig(**options)  # type: ignore[arg-type]


def test_logged_url_has_no_password() -> None:
    config = RedisBackplaneConfig(url="redis://user:hunter2@db.example.org:6380/1?password=x")
    assert config.safe_url == "redis://user:***@db.example.org:6380/1"
    assert "hunter2" not in repr(config)
    assert "user:***@db.example.org" in repr(config)
    assert RedisBackplaneConfig(url="redis://:pw@h/0").safe_url == "redis://:***@h/0"
    assert RedisBackplaneConfig(url="redis://h:1/0").safe_url == "redis://h:1/0"


def _closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_start_fails_clearly_when_redis_is_unreachable() -> None:
    url = f"redis://:hunter2@127.0.0.1:{_closed_port()}/0"
    backplane = RedisBackplane(RedisBackplaneConfig(url=url, command_timeout=1.0))
    with pytest.raises(BackplaneError, match=r"cannot reach Redis at redis://:\*\*\*@127") as info:
        await backplane.start(Recorder())
    assert "hunter2" not in str(info.value)
    assert not backplane.up
    await backplane.aclose()
    await backplane.aclose()


async def test_calls_before_start_are_refused() -> None:
    backplane = RedisBackplane(RedisBackplaneConfig(url="redis://127.0.0.1:1/0"))
    with pytest.raises(BackplaneError, match="down"):
        await backplane.acquire("room", 1.0)
    with pytest.raises(ValueError, match="load"):
        backplane.set_load(-1.0)
    with pytest.raises(ValueError, match="load"):
        backplane.set_load(math.nan)
    backplane.set_load(math.inf)  # draining
