"""rtckit.testing.coturn: the loopback coturn helper itself."""

from __future__ import annotations

import asyncio
import os

import pytest

from rtckit import SystemComponentError
from rtckit.testing import require_executable
from rtckit.testing.coturn import _StunProbe, run_loopback_coturn, stun_binding_request

pytestmark = pytest.mark.integration


async def _answers_stun(host: str, port: int) -> bool:
    request, transaction_id = stun_binding_request()
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(
        lambda: _StunProbe(transaction_id), remote_addr=(host, port)
    )
    try:
        transport.sendto(request)
        async with asyncio.timeout(2):
            await probe.answered
    except TimeoutError:
        return False
    finally:
        transport.close()
    return True


async def test_runs_answers_and_cleans_up() -> None:
    require_executable("turnserver", hint="apt-get install coturn")
    async with run_loopback_coturn(secret="s") as server:
        assert server.host == "127.0.0.1"
        assert await _answers_stun(server.host, server.port)
        assert server.uri("tcp") == f"turn:127.0.0.1:{server.port}?transport=tcp"
        assert server.auth.secrets == (b"s",)
        assert "secret" not in repr(server)
        workdir = server.log_path.parent
        assert workdir.is_dir()
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
