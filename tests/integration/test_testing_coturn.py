"""rtckit.testing.coturn: the loopback coturn helper itself."""

from __future__ import annotations

import asyncio
import os

import pytest

from rtckit import SystemComponentError
from rtckit.stun.codec import MessageClass
from rtckit.stun.server import stun_binding
from rtckit.testing import require_executable
from rtckit.testing.coturn import run_loopback_coturn


async def test_runs_answers_and_cleans_up() -> None:
    require_executable("turnserver", hint="apt-get install coturn")
    async with run_loopback_coturn(secret="s") as server:
        assert server.host == "127.0.0.1"
        async with asyncio.timeout(5):
            response = await stun_binding(server.host, server.port)
        assert response.message_class is MessageClass.SUCCESS_RESPONSE
        assert server.uri("tcp") == f"turn:127.0.0.1:{server.port}?transport=tcp"
        assert server.auth.secrets == (b"s",)
        assert "secret" not in repr(server)
        assert server.config.allow_loopback_peers
        config_path = server.process.config_path
        assert config_path is not None
        workdir = config_path.parent
        assert workdir.is_dir()
        assert "Listener address to use: 127.0.0.1" in server.log()
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)
    assert not workdir.exists()


async def test_a_server_that_does_not_start_is_reported() -> None:
    require_executable("turnserver", hint="apt-get install coturn")
    with pytest.raises(SystemComponentError, match="turnserver"):
        async with run_loopback_coturn(
            extra_args=["--listening-ip=192.0.2.123"], startup_timeout=1.0, attempts=1
        ):
            pytest.fail("must not start")
